"""Flax NNX ``nnx.Linear`` layers seen as ``eqx.nn.Linear`` ones, so that the structured
method taps them as it taps Equinox's (see ``_taps``).

A plain ``nnx.Linear`` (computing in its parameters' dtype, default precision) computes ``x @ kernel + bias``
on the last axis of its input, the function of an ``eqx.nn.Linear`` with ``weight =
kernelᵀ`` applied to each row. So the NNX wrapper (``_stateful._NNX``) carries each such
layer's parameters as an ``eqx.nn.Linear`` (the pytree node the taps replace) instead of
in its NNX state, and in the merged module it makes the NNX layer call that Equinox layer:
on the one row of a batch of one at the top level, or on every row inside one
``jax.vmap`` (the token batch the taps read). The merged module's own kernel and bias are
placeholders: the Equinox layer's arrays when it is not tapped (so that code reading
``layer.kernel`` directly is still differentiated), and for a tapped layer a guard that
raises the taps' ``_DirectAccess`` when read, so the probe leaves that layer to the
Jacobian route, as it does for an Equinox weight read outside its layer."""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ntkbench.kernel._taps import _DirectAccess, _Tap


def plain_linear_paths(module: Any) -> tuple[tuple, ...]:
    """Paths of the ``nnx.Linear`` layers of ``module`` that compute ``x @ kernel + bias``
    in their parameters' dtype (``dtype`` None or ``param_dtype``, no ``precision``)."""
    from flax import nnx

    return tuple(
        path
        for path, node in nnx.iter_graph(module)
        if type(node) is nnx.Linear and node.dtype in (None, node.param_dtype) and node.precision is None
    )


@functools.lru_cache(maxsize=256)
def _skeleton(d_in: int, d_out: int, use_bias: bool) -> eqx.nn.Linear:
    """An ``eqx.nn.Linear`` of these sizes whose arrays are shapes only (nothing drawn)."""
    return eqx.filter_eval_shape(eqx.nn.Linear, d_in, d_out, use_bias=use_bias, key=jax.random.key(0))


def as_eqx_linear(kernel: jax.Array, bias: jax.Array | None) -> eqx.nn.Linear:
    """The ``eqx.nn.Linear`` of an ``nnx.Linear``'s kernel (d_in, d_out) and bias."""
    d_in, d_out = kernel.shape
    layer = _skeleton(d_in, d_out, bias is not None)
    if bias is None:
        return eqx.tree_at(lambda m: m.weight, layer, kernel.T)
    return eqx.tree_at(lambda m: (m.weight, m.bias), layer, (kernel.T, bias))


class _Guard:
    """The kernel or bias of a tapped layer in the merged NNX module: any use of it means
    the weight is read outside the layer's call (the structured rule does not hold)."""

    def __init__(self, idx: int) -> None:
        self.idx = idx

    def __getattr__(self, name: str) -> Any:
        raise _DirectAccess(self.idx)

    def __getitem__(self, item: Any) -> Any:
        raise _DirectAccess(self.idx)

    def __jax_array__(self) -> Any:
        raise _DirectAccess(self.idx)


def placeholders(layer: Any) -> tuple[Any, Any]:
    """(kernel, bias) values for the merged module's own variables of a layer carried as
    ``layer`` (an ``eqx.nn.Linear``, or a ``_Tap`` of one)."""
    if isinstance(layer, _Tap):
        return _Guard(layer.idx), _Guard(layer.idx) if layer.layer.use_bias else None
    return layer.weight.T, layer.bias


def _rows(layer: Any, x: jax.Array) -> jax.Array:
    """``layer`` (one row (d_in,) → (d_out,)) on the last axis of ``x``: the one row of a
    batch of one directly, more rows inside one ``jax.vmap``."""
    lead = x.shape[:-1]
    rows = jnp.reshape(x, (-1, x.shape[-1]))
    y = layer(rows[0])[None] if rows.shape[0] == 1 else jax.vmap(layer)(rows)
    return jnp.reshape(y, (*lead, y.shape[-1]))


def redirect(module: Any, layers: dict[tuple, Any]) -> None:
    """Make each ``nnx.Linear`` of the merged ``module`` at a path of ``layers`` call that
    path's Equinox layer (or its tap) on its rows."""
    from flax import nnx

    for path, node in nnx.iter_graph(module):
        layer = layers.get(path)
        if layer is not None and type(node) is nnx.Linear:
            node.__class__ = _redirected_class()
            object.__setattr__(node, "_ntkbench_call", functools.partial(_rows, layer))


@functools.cache
def _redirected_class() -> type:
    """An ``nnx.Linear`` whose call is the ``_ntkbench_call`` set on the instance."""
    from flax import nnx

    class _RedirectedLinear(nnx.Linear):
        def __call__(self, inputs: jax.Array, *args: Any, **kwargs: Any) -> jax.Array:
            return object.__getattribute__(self, "_ntkbench_call")(inputs)

    return _RedirectedLinear
