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

_PATHS: dict[Any, tuple[tuple, ...]] = {}  # graphdef -> plain_linear_paths (the graph walk costs ~0.4 ms)


def plain_linear_paths(module: Any, graphdef: Any) -> tuple[tuple, ...]:
    """Paths of the ``nnx.Linear`` layers of ``module`` (whose graph is ``graphdef``: the
    answer is cached per graph, which holds the layers' types and static attributes) that
    compute ``x @ kernel + bias`` in their parameters' dtype (``dtype`` None or
    ``param_dtype``, no ``precision``)."""
    from flax import nnx

    try:
        return _PATHS[graphdef]
    except KeyError:
        pass
    except TypeError:  # an unhashable graph
        graphdef = None
    paths = tuple(
        path
        for path, node in nnx.iter_graph(module)
        if type(node) is nnx.Linear and node.dtype in (None, node.param_dtype) and node.precision is None
    )
    if graphdef is not None:
        if len(_PATHS) >= 256:
            _PATHS.clear()
        _PATHS[graphdef] = paths
    return paths


@jax.jit
def _transposed(kernels: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
    """Every kernel (d_in, d_out) as an Equinox weight (d_out, d_in), in one dispatch."""
    return tuple(k.T for k in kernels)


def as_eqx_linears(kernels: tuple[jax.Array, ...], biases: tuple[jax.Array | None, ...]) -> tuple[eqx.nn.Linear, ...]:
    """The ``eqx.nn.Linear`` layers of ``nnx.Linear`` kernels (d_in, d_out) and biases
    (None: no bias). Built field by field: ``eqx.nn.Linear.__init__`` would draw weights."""
    layers = []
    for weight, bias in zip(_transposed(tuple(kernels)), biases, strict=True):
        layer = object.__new__(eqx.nn.Linear)
        for name, value in (
            ("weight", weight),
            ("bias", bias),
            ("in_features", weight.shape[1]),
            ("out_features", weight.shape[0]),
            ("use_bias", bias is not None),
        ):
            object.__setattr__(layer, name, value)
        layers.append(layer)
    return tuple(layers)


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
