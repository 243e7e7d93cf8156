"""Models with state: a Flax NNX module, a Flax linen module with its variables, an Equinox
model with its ``eqx.nn.State``, each as a callable pytree of one sample whose inexact
array leaves are its trainable parameters only.

The kernel functions differentiate every inexact (floating-point) array leaf of the model
they are given. State that is not trained (BatchNorm running statistics: NNX's
``nnx.BatchStat``, linen's ``batch_stats`` collection, Equinox's ``eqx.nn.State``) must
enter the forward pass but not the kernel. Here it is carried *frozen*: each of its
floating-point arrays is stored as its bits in an unsigned integer array of the same
width (``lax.bitcast_convert_type``, no copy of the values), which every part of the
engine (method choice, features, costs, ``train``, ``Watch``) passes through as a fixed
array, and turned back into the float array inside the forward pass. The kernel is that of
the model in inference mode: NNX modules are put in evaluation mode (``module.eval()``:
``use_running_average=True``, ``deterministic=True``) and Equinox models in inference
mode (``eqx.nn.inference_mode``) before they are called; a linen module is applied as it
is, so its ``__call__`` must use the running statistics (``use_running_average=True`` or
a ``train=False`` argument bound with ``functools.partial(module.apply, train=False)``).

Flax models are written for batches: they are called on a batch of one sample,
``model(x[None])[0]``. Flax itself is imported only when the model is a Flax model (it is
an optional dependency, ``pip install ntkbench[flax]``)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

_BITS = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}


class _Frozen(eqx.Module):
    """A floating-point array held fixed: its bits as an unsigned integer array."""

    bits: jax.Array
    dtype: Any = eqx.field(static=True)


def freeze(tree: Any) -> Any:
    """``tree`` with every floating-point array leaf replaced by a ``_Frozen`` one (not an
    inexact array, so never differentiated); other leaves as they are."""

    def one(a):
        if not eqx.is_inexact_array(a) or jnp.issubdtype(jnp.result_type(a), jnp.complexfloating):
            return a
        a = jnp.asarray(a)
        return _Frozen(jax.lax.bitcast_convert_type(a, _BITS[a.dtype.itemsize]), a.dtype)

    return jax.tree_util.tree_map(one, tree)


def thaw(tree: Any) -> Any:
    """The inverse of :func:`freeze`."""
    is_frozen = lambda n: isinstance(n, _Frozen)  # noqa: E731
    return jax.tree_util.tree_map(
        lambda n: jax.lax.bitcast_convert_type(n.bits, n.dtype) if is_frozen(n) else n, tree, is_leaf=is_frozen
    )


def _one_sample(y: Any) -> Any:
    """The output of a Flax model called on a batch of one sample, without the batch axis."""
    shape = jnp.shape(y)
    if len(shape) == 0 or shape[0] != 1:
        raise ValueError(
            "model: a Flax model is called on a batch of one sample, x[None] of shape (1, ...), and must "
            f"return (1, ...); it returned shape {shape}"
        )
    return y[0]


class _NNX(eqx.Module):
    """A Flax NNX module split into its graph, its ``nnx.Param`` leaves (trained) and the
    rest of its state (frozen); called in evaluation mode on a batch of one sample. Its
    plain ``nnx.Linear`` and ``nnx.Conv`` layers' parameters are carried as Equinox layers
    (``layers``, described by ``plains``), which the structured method taps
    (``_nnx_layers``)."""

    graphdef: Any = eqx.field(static=True)
    params: Any
    rest: Any
    layers: tuple[Any, ...] = ()
    plains: tuple[Any, ...] = eqx.field(static=True, default=())

    def __call__(self, x):
        from flax import nnx

        from ntkbench.kernel import _nnx_layers

        states = [self.params, thaw(self.rest)]
        if self.layers:
            held = []
            for plain, layer in zip(self.plains, self.layers, strict=True):
                kernel, bias = _nnx_layers.placeholders(layer)
                held.append((plain.path + ("kernel",), nnx.Param(kernel)))
                if bias is not None:
                    held.append((plain.path + ("bias",), nnx.Param(bias)))
            states.append(nnx.from_flat_state(held))
        module = nnx.merge(self.graphdef, *states)
        entries = {plain.path: (plain, layer) for plain, layer in zip(self.plains, self.layers, strict=True)}
        _nnx_layers.redirect(module, entries)
        module.eval()
        return _one_sample(module(x[None]))


def _split_nnx(model: Any) -> _NNX:
    """``model`` (an NNX module) as ``_NNX``: its plain Linear and Conv layers' parameters
    as Equinox layers, its other ``nnx.Param`` as they are, the rest frozen."""
    from flax import nnx

    from ntkbench.kernel import _nnx_layers

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    candidates = {plain.path: plain for plain in _nnx_layers.plain_layers(model, graphdef)}
    if not candidates:
        return _NNX(graphdef, params, freeze(rest))
    found: dict[tuple, dict[str, Any]] = {}
    entries = list(nnx.to_flat_state(params))
    for path, var in entries:
        if path[:-1] in candidates and path[-1] in ("kernel", "bias"):
            found.setdefault(path[:-1], {})[path[-1]] = var.get_value()
    plains = tuple(candidates[p] for p in found if "kernel" in found[p])
    carried = {plain.path for plain in plains}
    kept = [(path, var) for path, var in entries if not (path[:-1] in carried and path[-1] in ("kernel", "bias"))]
    layers = _nnx_layers.as_eqx_layers(
        plains, tuple(found[p.path]["kernel"] for p in plains), tuple(found[p.path].get("bias") for p in plains)
    )
    return _NNX(graphdef, nnx.from_flat_state(kept), freeze(rest), layers, plains)


class _Linen(eqx.Module):
    """A Flax linen module's ``apply`` with its variables: ``params`` trained, the other
    collections frozen; applied (not mutating) to a batch of one sample."""

    apply: Callable = eqx.field(static=True)
    params: Any
    rest: Any

    def __call__(self, x):
        return _one_sample(self.apply({"params": self.params, **thaw(self.rest)}, x[None]))


class _EqxState(eqx.Module):
    """An Equinox model called as ``model(x, state)`` (returning ``(y, state)``) in
    inference mode, its ``eqx.nn.State`` frozen."""

    model: Any
    state: Any

    def __call__(self, x):
        out = self.model(x, thaw(self.state))
        return out[0] if isinstance(out, tuple) else out


def _linen_apply(f: Any) -> Callable | None:
    """``f``'s linen ``apply`` when ``f`` is a linen module, its bound ``apply``, or a
    ``functools.partial`` of it (keyword arguments such as ``train=False``), else None."""
    linen = sys.modules.get("flax.linen")
    if linen is None:
        return None
    if isinstance(f, linen.Module):
        return f.apply
    inner = f.func if isinstance(f, functools.partial) else f
    owner = getattr(inner, "__self__", None)
    if isinstance(owner, linen.Module) and getattr(inner, "__name__", "") == "apply":
        return f
    return None


def stateful_model(model: Any) -> eqx.Module | None:
    """``model`` as a callable pytree of one sample whose inexact leaves are its trainable
    parameters, when it is a model with state; else None (an Equinox module or an
    ``(apply_fn, params)`` pair, taken as they are).

    - a Flax NNX module: ``nnx.Param`` differentiated; ``nnx.BatchStat`` and all other
      state fixed; called in evaluation mode on ``x[None]``;
    - ``(linen_module, variables)``, ``(linen_module.apply, variables)`` or
      ``(functools.partial(linen_module.apply, train=False), variables)``:
      ``variables["params"]`` differentiated, the other collections (``batch_stats``, ...)
      fixed; applied to ``x[None]``;
    - ``(eqx_model, state)`` with an ``eqx.nn.State``: the model's parameters
      differentiated, the state fixed; called as ``model(x, state)`` (its first output) in
      ``eqx.nn.inference_mode``.

    Example
    -------
    >>> import jax, jax.numpy as jnp, equinox as eqx
    >>> bn, state = eqx.nn.make_with_state(eqx.nn.BatchNorm)(3, "batch", mode="batch")
    >>> m = stateful_model((bn, state))
    >>> [l.shape for l in jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_inexact_array))]
    [(3,), (3,)]
    >>> m(jnp.ones(3)).shape
    (3,)
    """
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(model, nnx.Module):
        return _split_nnx(model)
    if not (isinstance(model, tuple) and len(model) == 2):
        return None
    first, second = model
    if isinstance(second, eqx.nn.State):
        if not isinstance(first, eqx.Module):
            raise TypeError(
                f"model: (model, state) with an eqx.nn.State needs an Equinox model, got {type(first).__name__}"
            )
        # a StateIndex's initial value (a model not built by make_with_state) is not trained
        is_index = lambda n: isinstance(n, eqx.nn.StateIndex)  # noqa: E731
        first = jax.tree_util.tree_map(lambda n: freeze(n) if is_index(n) else n, first, is_leaf=is_index)
        return _EqxState(eqx.nn.inference_mode(first), freeze(second))
    apply = _linen_apply(first)
    if apply is None:
        return None
    if not isinstance(second, Mapping) or "params" not in second:
        got = sorted(second) if isinstance(second, Mapping) else type(second).__name__
        raise TypeError(
            f"model: (linen module, variables) needs the variables of module.init, a mapping with a 'params' "
            f"collection; got {got}"
        )
    rest = {k: v for k, v in second.items() if k != "params"}
    return _Linen(apply, second["params"], freeze(rest))


def is_mutable(model: Any) -> bool:
    """Whether ``model`` may change in place between calls (a Flax NNX module), so that no
    plan may be cached per model object."""
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(model, nnx.Module)
