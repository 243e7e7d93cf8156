"""Flax NNX ``nnx.Linear`` and ``nnx.Conv`` layers seen as ``eqx.nn.Linear`` and
``eqx.nn.Conv`` ones, so that the structured method taps them as it taps Equinox's (see
``_taps``).

A plain ``nnx.Linear`` (computing in its parameters' dtype, default precision) computes
``x @ kernel + bias`` on the last axis of its input: an ``eqx.nn.Linear`` with ``weight =
kernelᵀ`` on each row. A plain ``nnx.Conv`` (channels last, no groups, input dilation or
mask, zero padding given as numbers, or ``"SAME"`` at stride 1, or ``"VALID"``) is an
``eqx.nn.Conv`` (channels first) with the kernel's axes moved and the padding written out.
So the NNX wrapper (``_stateful._NNX``) carries each such layer's parameters as the
Equinox layer (the pytree node the taps replace) instead of in its NNX state, and in the
merged module it makes the NNX layer call that Equinox layer: on the one sample of a batch
of one at the top level, or on every row / image inside one ``jax.vmap`` (the token batch
the taps read). The merged module's own kernel and bias are placeholders: the Equinox
layer's arrays when it is not tapped (so that code reading ``layer.kernel`` directly is
still differentiated), and for a tapped layer a guard that raises the taps'
``_DirectAccess`` when read, so the probe leaves that layer to the Jacobian route, as it
does for an Equinox weight read outside its layer."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from ntkbench.kernel._taps import _DirectAccess, _Tap


class Plain(NamedTuple):
    """A plain NNX layer at ``path``: ``kind`` "linear" or "conv"; for a convolution its
    stride, explicit padding pairs and dilation per spatial axis."""

    path: tuple
    kind: str
    stride: tuple[int, ...] = ()
    padding: tuple[tuple[int, int], ...] = ()
    dilation: tuple[int, ...] = ()


_PLAIN: dict[Any, tuple[Plain, ...]] = {}  # graphdef -> plain_layers (the graph walk costs ~0.4 ms)


def _per_axis(value: Any, nd: int) -> tuple[int, ...] | None:
    if value is None:
        return (1,) * nd
    if isinstance(value, int):
        return (value,) * nd
    value = tuple(value)
    return value if len(value) == nd and all(isinstance(v, int) for v in value) else None


def _conv(node: Any) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...], tuple[int, ...]] | None:
    """(stride, padding pairs, dilation) of a plain ``nnx.Conv``, else None."""
    ks = tuple(node.kernel_size)
    nd = len(ks)
    stride, dilation = _per_axis(node.strides, nd), _per_axis(node.kernel_dilation, nd)
    if stride is None or dilation is None or _per_axis(node.input_dilation, nd) != (1,) * nd:
        return None
    if node.feature_group_count != 1 or node.mask is not None:
        return None
    pad = node.padding
    if pad == "VALID":
        pairs = ((0, 0),) * nd
    elif pad == "SAME" and stride == (1,) * nd:
        total = [(k - 1) * d for k, d in zip(ks, dilation, strict=True)]
        pairs = tuple((t // 2, t - t // 2) for t in total)
    elif isinstance(pad, int):
        pairs = ((pad, pad),) * nd
    elif isinstance(pad, (tuple, list)) and len(pad) == nd:
        if all(isinstance(p, int) for p in pad):
            pairs = tuple((p, p) for p in pad)
        elif all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pad):
            pairs = tuple((int(lo), int(hi)) for lo, hi in pad)
        else:
            return None
    else:  # "SAME" at a stride (depends on the input size), "CIRCULAR", "CAUSAL", ...
        return None
    return stride, pairs, dilation


def plain_layers(module: Any, graphdef: Any) -> tuple[Plain, ...]:
    """The plain ``nnx.Linear`` and ``nnx.Conv`` layers of ``module`` (whose graph is
    ``graphdef``: the answer is cached per graph, which holds the layers' types and static
    attributes), computing in their parameters' dtype at the default precision."""
    from flax import nnx

    try:
        return _PLAIN[graphdef]
    except KeyError:
        pass
    except TypeError:  # an unhashable graph
        graphdef = None
    found = []
    for path, node in nnx.iter_graph(module):
        if type(node) not in (nnx.Linear, nnx.Conv):
            continue
        if node.dtype not in (None, node.param_dtype) or node.precision is not None:
            continue
        if type(node) is nnx.Linear:
            found.append(Plain(path, "linear"))
        elif (conv := _conv(node)) is not None:
            found.append(Plain(path, "conv", *conv))
    layers = tuple(found)
    if graphdef is not None:
        if len(_PLAIN) >= 256:
            _PLAIN.clear()
        _PLAIN[graphdef] = layers
    return layers


@jax.jit
def _transposed(kernels: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
    """Every kernel as an Equinox weight, in one dispatch: (d_in, d_out) → (d_out, d_in);
    (*k, C_in, C_out) → (C_out, C_in, *k)."""
    return tuple(k.T if k.ndim == 2 else jnp.moveaxis(k, (-1, -2), (0, 1)) for k in kernels)


def _linear(weight: jax.Array, bias: jax.Array | None) -> eqx.nn.Linear:
    """An ``eqx.nn.Linear`` built field by field (``__init__`` would draw weights)."""
    layer = object.__new__(eqx.nn.Linear)
    fields = {"weight": weight, "bias": bias, "in_features": weight.shape[1], "out_features": weight.shape[0]}
    for name, value in {**fields, "use_bias": bias is not None}.items():
        object.__setattr__(layer, name, value)
    return layer


@functools.lru_cache(maxsize=256)
def _conv_skeleton(plain: Plain, c_in: int, c_out: int, kernel: tuple[int, ...], use_bias: bool) -> eqx.nn.Conv:
    return eqx.filter_eval_shape(
        eqx.nn.Conv,
        len(kernel),
        c_in,
        c_out,
        kernel,
        plain.stride,
        plain.padding,
        plain.dilation,
        use_bias=use_bias,
        key=jax.random.key(0),
    )


def as_eqx_layers(plains: tuple[Plain, ...], kernels: tuple, biases: tuple) -> tuple[Any, ...]:
    """The Equinox layers of the plain NNX layers ``plains`` with these kernels and biases
    (None: no bias)."""
    layers = []
    for plain, weight, bias in zip(plains, _transposed(tuple(kernels)), biases, strict=True):
        if plain.kind == "linear":
            layers.append(_linear(weight, bias))
            continue
        skeleton = _conv_skeleton(plain, weight.shape[1], weight.shape[0], weight.shape[2:], bias is not None)
        if bias is None:
            layers.append(eqx.tree_at(lambda m: m.weight, skeleton, weight))
        else:
            shaped = jnp.reshape(bias, (-1,) + (1,) * (weight.ndim - 2))
            layers.append(eqx.tree_at(lambda m: (m.weight, m.bias), skeleton, (weight, shaped)))
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
    ``layer`` (an Equinox layer, or a ``_Tap`` of one), in NNX's layout."""
    if isinstance(layer, _Tap):
        return _Guard(layer.idx), _Guard(layer.idx) if layer.layer.use_bias else None
    weight, bias = layer.weight, layer.bias
    if weight.ndim == 2:
        return weight.T, bias
    return jnp.moveaxis(weight, (0, 1), (-1, -2)), None if bias is None else jnp.reshape(bias, (-1,))


def _samples(layer: Any, sample_ndim: int, channels_last: bool, x: jax.Array) -> jax.Array:
    """``layer`` (one sample of ``sample_ndim`` axes) on the trailing axes of ``x``: the one
    sample of a batch of one directly, more inside one ``jax.vmap``; a convolution's
    channels moved from last (NNX) to first (Equinox) and back."""
    lead = x.shape[: x.ndim - sample_ndim]
    rows = jnp.reshape(x, (-1, *x.shape[x.ndim - sample_ndim :]))

    def one(xi):
        if channels_last:
            return jnp.moveaxis(layer(jnp.moveaxis(xi, -1, 0)), 0, -1)
        return layer(xi)

    y = one(rows[0])[None] if rows.shape[0] == 1 else jax.vmap(one)(rows)
    return jnp.reshape(y, (*lead, *y.shape[1:]))


def redirect(module: Any, layers: dict[tuple, tuple[Plain, Any]]) -> None:
    """Make each NNX layer of the merged ``module`` at a path of ``layers`` call that
    path's Equinox layer (or its tap)."""
    from flax import nnx

    for path, node in nnx.iter_graph(module):
        entry = layers.get(path)
        if entry is None or type(node) not in (nnx.Linear, nnx.Conv):
            continue
        plain, layer = entry
        if plain.kind == "linear":
            call = functools.partial(_samples, layer, 1, False)
        else:
            call = functools.partial(_samples, layer, len(plain.stride) + 1, True)
        node.__class__ = _redirected_class(type(node))
        object.__setattr__(node, "_ntkbench_call", call)


@functools.cache
def _redirected_class(base: type) -> type:
    """An ``nnx.Linear`` / ``nnx.Conv`` whose call is the ``_ntkbench_call`` set on the
    instance."""

    class _Redirected(base):
        def __call__(self, inputs: jax.Array, *args: Any, **kwargs: Any) -> jax.Array:
            return object.__getattribute__(self, "_ntkbench_call")(inputs)

    _Redirected.__name__ = _Redirected.__qualname__ = f"_Redirected{base.__name__}"
    return _Redirected
