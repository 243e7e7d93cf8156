"""What the kernel functions take: models (an Equinox module, ``(apply_fn, params)``, a
Flax NNX module, a linen module with its variables, an Equinox model with its state),
batches of inputs, and the ``outputs``/``method`` options."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ntkbench.kernel._stateful import stateful_model

Outputs = Literal["trace", "full"]
Method = Literal["auto", "jacobian", "ntvp", "structured"]
_METHODS = ("auto", "jacobian", "ntvp", "structured")
_OUTPUTS = ("trace", "full")


class _Applied(eqx.Module):
    """Wraps ``(apply_fn, params)`` as a model called on one sample."""

    apply_fn: Callable = eqx.field(static=True)
    params: Any

    def __call__(self, x):
        return self.apply_fn(self.params, x)

    def user_model(self) -> tuple[Callable, Any]:
        """``(apply_fn, params)``, the form it was given in."""
        return self.apply_fn, self.params


def as_model(model: Any) -> eqx.Module:
    """Return ``model`` as a callable pytree of one sample; validates it.

    Accepts an Equinox module (any callable pytree with inexact array leaves; all of them
    are parameters), a pair ``(apply_fn, params)`` with ``apply_fn(params, x)`` (all
    inexact leaves of ``params`` are parameters), or a model with state, whose trainable
    parameters only are the returned model's inexact leaves and whose state is held fixed,
    in inference mode (see ``ntkbench.kernel._stateful``): a Flax NNX module (``nnx.Param``
    trained), ``(linen_module, variables)`` (``variables["params"]`` trained; also
    ``(linen_module.apply, variables)``), ``(eqx_model, eqx.nn.State)``.

    Example
    -------
    >>> import jax.numpy as jnp
    >>> m = as_model((lambda p, x: p["w"] @ x, {"w": jnp.ones((2, 3))}))
    >>> m(jnp.ones(3)).shape
    (2,)
    """
    stateful = stateful_model(model)
    if stateful is not None:
        model = stateful
    elif isinstance(model, tuple):
        if len(model) != 2 or not callable(model[0]):
            raise TypeError(
                "model: expected an Equinox module or a pair (apply_fn, params) with "
                f"apply_fn(params, x); got a tuple of length {len(model)}"
            )
        model = _Applied(model[0], model[1])
    if not callable(model):
        raise TypeError(
            f"model: expected an Equinox module called on one sample, or (apply_fn, params); got {type(model).__name__}"
        )
    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    if not leaves:
        raise TypeError("model: has no inexact (floating-point) array parameters to differentiate")
    return cast(eqx.Module, model)  # a callable pytree: an Equinox module or _Applied


def _n_outputs(model, x_shape, x_dtype) -> int:
    out = jax.eval_shape(lambda x: model(x), jax.ShapeDtypeStruct(x_shape, x_dtype))
    return math.prod(jnp.shape(out))


def _n_params(model) -> int:
    return sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array)))


def check_inputs(
    x1: Any, x2: Any, block_size: Any
) -> tuple[Float[Array, "n1 ..."], Float[Array, "n2 ..."] | None, int | None]:
    """The kernel functions' argument checks: ``x1`` (N1, ...) and ``x2`` (N2, ...) or None
    as JAX arrays (``x2`` cast to ``x1``'s dtype; N1, N2 >= 1; the same per-sample shape),
    ``block_size`` a positive int or None. Bad input raises ``TypeError``/``ValueError``
    naming the argument.

    Example
    -------
    >>> x1, x2, block = check_inputs([[1.0, 2.0], [3.0, 4.0]], None, 8)
    >>> x1.shape, x2, block
    ((2, 2), None, 8)
    """

    def as_array(x, name):
        if not isinstance(x, jax.Array):
            if isinstance(x, np.ndarray) and x.dtype.kind not in "biuf":
                raise TypeError(f"{name}: expected real (float, int or bool) inputs, got dtype {x.dtype}")
            try:
                x = jnp.asarray(x)
            except TypeError as e:
                raise TypeError(f"{name}: expected an array (N, ...), got {type(x).__name__}") from e
        if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == bool):
            raise TypeError(f"{name}: expected real (float, int or bool) inputs, got dtype {x.dtype}")
        return x

    x1 = as_array(x1, "x1")
    if x1.ndim == 0:
        raise ValueError("x1: expected a batch (N, ...) with a leading sample axis, got a scalar")
    if x1.shape[0] == 0:
        raise ValueError("x1: empty batch (N = 0); the eNTK needs at least one sample")
    if x2 is not None:
        x2 = as_array(x2, "x2")
        if x2.ndim == 0 or x2.shape[0] == 0:
            raise ValueError(f"x2: expected a non-empty batch (N2, ...), got shape {x2.shape}")
        if x2.shape[1:] != x1.shape[1:]:
            raise ValueError(f"x2: per-sample shape {x2.shape[1:]} does not match x1's {x1.shape[1:]}")
        if x2.dtype != x1.dtype:
            x2 = x2.astype(x1.dtype)
    if block_size is not None:
        if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
            raise ValueError(f"block_size: expected a positive integer or None, got {block_size!r}")
        block_size = int(block_size)
    return x1, x2, block_size
