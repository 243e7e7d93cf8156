"""The kernel functions: :func:`entk` (compiled per model structure, shapes and options)
and :func:`entk_diag`."""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ntkbench.kernel._features import _jacobian_features, structured_features
from ntkbench.kernel._model import _METHODS, _OUTPUTS, Method, Outputs, as_model, check_inputs
from ntkbench.kernel._plan import (
    _FLAX_CHOICES,
    _PLANS,
    _flax_call,
    _plan_key,
    _Rebuild,
    _resolve_method,
    _Static,
    _store_flax_choice,
    _store_plan,
)
from ntkbench.kernel._stateful import tappable
from ntkbench.kernel._taps import _has_tappable_linear
from ntkbench.kernel._tiling import _contract_jacobian, _contract_structured, _feature_kernel, _ntvp_kernel

_DEFAULT_MEMORY_LIMIT = 2 * 1024**3  # bytes


def _symmetrize(K):
    Kt = K.transpose(1, 0, 3, 2) if K.ndim == 4 else K.T
    return 0.5 * (K + Kt)


@eqx.filter_jit
def _entk_checked(model, x1, x2, outputs: str, method: str, block_size: int | None, feature_block: int | None = None):
    """The kernel (exactly symmetric when ``x2`` is None) and whether it is all finite, in
    one compiled call (no extra dispatches: they cost as much as the kernel at small N)."""
    K = _entk_jit(model, x1, x2, outputs, method, block_size, feature_block)
    if x2 is None:  # exactly symmetric, whatever the round-off of the tiles
        K = _symmetrize(K)
    return K, jnp.all(jnp.isfinite(K))


@functools.partial(jax.jit, static_argnums=(1, 4, 5, 6, 7))
def _entk_params(params, static: _Static, x1, x2, outputs: str, method: str, block_size, feature_block):
    """:func:`_entk_checked` with the model as (array leaves, static part): dispatched by
    ``jax.jit`` alone, without partitioning the model on every call."""
    return _entk_checked(eqx.combine(params, static.value), x1, x2, outputs, method, block_size, feature_block)


@functools.partial(jax.jit, static_argnums=(1, 4, 5, 6, 7))
def _entk_leaves(leaves, rebuild: _Rebuild, x1, x2, outputs: str, method: str, block_size, feature_block):
    """:func:`_entk_checked` of a Flax model given as its array leaves and how to rebuild
    it: the model rebuilt, split and regrouped (``as_model``) inside the trace, so a
    repeated call costs one ``jax.jit`` dispatch."""
    model = as_model(rebuild.model(leaves))
    return _entk_checked(model, x1, x2, outputs, method, block_size, feature_block)


@eqx.filter_jit
def _entk_jit(model, x1, x2, outputs: str, method: str, block_size: int | None, feature_block: int | None = None):
    """The kernel; ``block_size``: tile size; ``feature_block``: samples per batch of
    feature computation (default ``block_size``: the memory bound applies to both)."""
    full = outputs == "full"
    if feature_block is None:
        feature_block = block_size
    if method == "ntvp":
        return _ntvp_kernel(model, x1, x2, full, block_size)
    if method == "structured":
        n1 = x1.shape[0]
        n2 = n1 if x2 is None else x2.shape[0]
        feats, layers = structured_features(model, x1.shape[1:], x1.dtype, n1, n2, full)
        contract = _contract_structured(layers)
    else:
        feats, contract = _jacobian_features(model), _contract_jacobian
    return _feature_kernel(feats, contract, x1, x2, full, block_size, feature_block)


def entk(
    model: Any,
    x1: Float[Array, "n1 ..."],
    x2: Float[Array, "n2 ..."] | None = None,
    *,
    outputs: Outputs = "trace",
    method: Method = "auto",
    block_size: int | None = None,
    memory_limit: int | None = None,
    check_finite: bool = True,
) -> Float[Array, "n1 n2"] | Float[Array, "n1 n2 k k"]:
    """Empirical neural tangent kernel of ``model`` between the batches x1 and x2.

    Parameters
    ----------
    model
        An Equinox module called on ONE sample (``model(x)``), whose inexact array leaves
        are the parameters; or a pair ``(apply_fn, params)`` with ``apply_fn(params, x)``.
        A model with state: a Flax NNX module, ``(linen_module, variables)`` (or
        ``(functools.partial(linen_module.apply, train=False), variables)``), an Equinox
        model with its state ``(model, eqx.nn.State)``; only the trainable parameters
        (``nnx.Param``, ``variables["params"]``, the Equinox model's arrays) are
        differentiated, and the kernel is of the model in inference mode, its state
        (BatchNorm running statistics, ...) held fixed: NNX modules are called after
        ``.eval()``, Equinox ones under ``eqx.nn.inference_mode``, a linen module as its
        ``apply`` is given. Flax models are called on a batch of one sample,
        ``model(x[None])[0]``. The structured method taps Equinox's layers and Flax's
        plain dense, convolution and embedding layers (NNX's ``nnx.Linear``,
        ``nnx.Conv``, ``nnx.Embed``; linen's ``nn.Dense``, ``nn.Conv``, ``nn.Embed``: no
        groups, mask or input dilation; zero padding given as numbers, ``"VALID"`` or
        ``"SAME"``); other layers take the per-leaf Jacobian route. A repeated call on an
        NNX module reads its arrays afresh (it may have changed in place) in one compiled
        call.
        The output may have any shape; it is flattened to K outputs (a scalar gives K = 1).
    x1
        (N1, ...) batch of inputs.
    x2
        (N2, ...) batch with the same per-sample shape, or None for the symmetric kernel of
        x1 (each off-diagonal tile is computed once).
    outputs
        ``"trace"`` → (N1, N2), summed over the K outputs; ``"full"`` → (N1, N2, K, K).
    method
        ``"jacobian"``, ``"ntvp"``, ``"structured"`` or ``"auto"`` (see the module docs).
        All agree to round-off.
    block_size
        Samples per tile; any N works. Bounds the size of each kernel tile and, for
        ``ntvp``, the peak memory; ``jacobian`` and ``structured`` still keep the per-sample
        features of all N1 + N2 samples (``auto`` counts them against ``memory_limit``).
    memory_limit
        Bytes ``auto`` may plan for (default 2 GiB): it takes the cheapest method (by
        estimated FLOPs, see :func:`costs`) whose stored features fit, and a ``block_size``
        (unless given) that keeps the tiles within the limit; if no features fit, ``ntvp``.
    check_finite
        Raise ``ValueError`` if the kernel holds NaN or Inf (default True).

    Returns
    -------
    The kernel, (N1, N2) or (N1, N2, K, K), in the parameters' dtype.

    Example
    -------
    >>> import jax, equinox as eqx, ntkbench as nb
    >>> model = eqx.nn.MLP(8, 3, 32, 2, key=jax.random.key(0))
    >>> x = jax.random.normal(jax.random.key(1), (10, 8))
    >>> nb.entk(model, x).shape, nb.entk(model, x[:4], x, outputs="full").shape
    ((10, 10), (4, 10, 3, 3))
    """
    if not isinstance(check_finite, (bool, np.bool_)):
        raise TypeError(f"check_finite: expected True or False, got {check_finite!r}")
    key = _plan_key(model, x1, x2, outputs, method, block_size, memory_limit)
    try:
        plan = _PLANS.get(key) if key is not None else None
    except TypeError:  # an unhashable argument: the checks below name it
        plan = key = None
    if plan is not None and plan[0]() is model:  # the same model and shapes again: no checks, no partition
        K, finite = _entk_params(plan[1], plan[2], x1, x2, outputs, *plan[3:])
        return _finite_or_raise(K, finite, check_finite, x1, x2)
    flax = _flax_call(model, x1, x2, outputs, method, block_size, memory_limit)  # a Flax model: read afresh
    if flax is not None and flax[2] in _FLAX_CHOICES:  # its structure and shapes again
        K, finite = _entk_leaves(flax[0], flax[1], x1, x2, outputs, *_FLAX_CHOICES[flax[2]])
        return _finite_or_raise(K, finite, check_finite, x1, x2)
    if outputs not in _OUTPUTS:
        raise ValueError(f"outputs: expected one of {_OUTPUTS}, got {outputs!r}")
    if method not in _METHODS:
        raise ValueError(f"method: expected one of {_METHODS}, got {method!r}")
    if memory_limit is not None and (
        isinstance(memory_limit, bool) or not isinstance(memory_limit, (int, np.integer)) or memory_limit < 1
    ):
        raise ValueError(f"memory_limit: expected a positive number of bytes or None, got {memory_limit!r}")
    checked = as_model(model)
    x1, x2, block_size = check_inputs(x1, x2, block_size)
    choice = _resolve_method(checked, x1, x2, method, memory_limit or _DEFAULT_MEMORY_LIMIT, outputs, block_size)
    if flax is not None:
        _store_flax_choice(flax[2], choice)
        K, finite = _entk_leaves(flax[0], flax[1], x1, x2, outputs, *choice)
        return _finite_or_raise(K, finite, check_finite, x1, x2)
    plan = _store_plan(key, model, checked, choice)
    if plan is None:
        K, finite = _entk_checked(checked, x1, x2, outputs, *choice)
    else:
        K, finite = _entk_params(plan[1], plan[2], x1, x2, outputs, *plan[3:])
    return _finite_or_raise(K, finite, check_finite, x1, x2)


def _finite_or_raise(K: Any, finite: Any, check_finite: bool, x1: Any, x2: Any) -> Any:
    """``K``, or ``ValueError`` when ``check_finite`` and it holds NaN/Inf (naming a
    non-finite input, else the model)."""
    if check_finite and not bool(finite):
        for name, x in (("x1", x1), ("x2", x2)):  # blame the inputs when they are the cause
            if x is not None and jnp.issubdtype(x.dtype, jnp.inexact) and not bool(jnp.all(jnp.isfinite(x))):
                raise ValueError(
                    f"{name}: contains NaN or Inf; expected finite inputs (pass check_finite=False to get "
                    "the kernel anyway)"
                )
        raise ValueError(
            "model: its eNTK on these inputs contains NaN or Inf; check the model's "
            "parameters and outputs (pass check_finite=False to get the kernel anyway)"
        )
    return K


@eqx.filter_jit
def _diag_jit(model, x, method: str, block_size: int | None):
    if method == "structured":
        feats, layers = structured_features(model, x.shape[1:], x.dtype)
        contract = _contract_structured(layers)
    else:
        feats, contract = _jacobian_features(model), _contract_jacobian

    def one(xi):
        f = [a[None] for a in feats(xi)]
        return contract(f, f, False)[0, 0]

    return jax.lax.map(one, x, batch_size=block_size or min(x.shape[0], 256))


def entk_diag(model: Any, x: Float[Array, "n ..."], *, block_size: int | None = None) -> Float[Array, " n"]:
    """Diagonal of the traced eNTK, K_ii = Σ_k ‖∂f_k(x_i)/∂θ‖², without the N×N kernel.

    Example
    -------
    >>> import jax, equinox as eqx
    >>> model = eqx.nn.MLP(4, 2, 8, 1, key=jax.random.key(0))
    >>> entk_diag(model, jax.numpy.ones((3, 4))).shape
    (3,)
    """
    model = as_model(model)
    x, _, block_size = check_inputs(x, None, block_size)
    model = tappable(model, x.shape[1:], x.dtype)
    method = "structured" if _has_tappable_linear(model, x.shape[1:], x.dtype) else "jacobian"
    return _diag_jit(model, x, method, block_size)
