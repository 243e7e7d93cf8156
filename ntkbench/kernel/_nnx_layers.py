"""Flax layers (NNX ``nnx.Linear``, ``nnx.Conv``, ``nnx.Embed``; linen's ``nn.Dense``,
``nn.Conv``, ``nn.Embed``) seen as Equinox layers (``_taps.FlaxDense``, ``eqx.nn.Conv``,
``eqx.nn.Embedding``), so that the structured method taps them as it taps Equinox's (see
``_taps``).

A plain linear layer (computing in its parameters' dtype with JAX's own ``dot_general``,
default precision and dtype promotion) computes ``x @ kernel + bias`` on the last axis of
its input: a ``_taps.FlaxDense`` on each row (an ``eqx.nn.Linear`` in Flax's layout, so
no kernel is transposed). A plain convolution
(channels last, no groups, input dilation or mask, zero padding given as numbers,
``"VALID"``, or ``"SAME"`` at stride 1 or at an input size known in advance) is an
``eqx.nn.Conv`` (channels first) with the kernel's axes moved and the padding written out.
A plain embedding (``embedding`` table of its dtype) looks rows up as ``eqx.nn.Embedding``
does (ids outside the table: Flax fills NaN, Equinox clamps). So the wrappers
(``_stateful._NNX``, ``_stateful._Linen``) carry each such layer's parameters as the
Equinox layer (the pytree node the taps replace) instead of in the Flax variables, and
make the Flax layer's ``__call__`` call that Equinox layer: on the one sample of a batch
of one at the top level, or on every row / image / id inside one ``jax.vmap`` (the token
batch the taps read). The Flax variables themselves hold placeholders: the Equinox
layer's arrays when it is not tapped (so that code reading ``layer.kernel`` or
``embed.attend`` directly is still differentiated), and for a tapped layer a guard that
raises the taps' ``_DirectAccess`` when read, so the probe leaves that layer to the
Jacobian route, as it does for an Equinox weight read outside its layer."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from ntkbench.kernel._taps import FlaxDense, _DirectAccess, _Tap


class Plain(NamedTuple):
    """A plain Flax layer at ``path``: ``kind`` "linear", "conv" or "embed"; for a
    convolution its stride, explicit padding pairs and dilation per spatial axis."""

    path: tuple
    kind: str
    stride: tuple[int, ...] = ()
    padding: tuple[tuple[int, int], ...] = ()
    dilation: tuple[int, ...] = ()


_PLAIN: dict[Any, tuple[Plain, ...]] = {}  # graphdef -> plain_layers (the graph walk costs ~0.4 ms)


def names(plain: Plain) -> tuple[str, ...]:
    """The Flax variable names of a plain layer's parameters: (kernel, bias) or (embedding,)."""
    return ("embedding",) if plain.kind == "embed" else ("kernel", "bias")


def default_arithmetic(node: Any, param_dtype: Any) -> bool:
    """Whether the Flax layer ``node`` computes as its Equinox twin: in its parameters'
    dtype, default precision, JAX's own contraction and Flax's own dtype promotion."""
    from flax.linen import dtypes as linen_dtypes
    from flax.nnx.nn import dtypes as nnx_dtypes

    dtype = getattr(node, "dtype", None)
    if dtype is not None and jnp.dtype(dtype) != jnp.dtype(param_dtype):
        return False
    if getattr(node, "precision", None) is not None:
        return False
    if getattr(node, "promote_dtype", None) not in (None, nnx_dtypes.promote_dtype, linen_dtypes.promote_dtype):
        return False
    ops = {"dot_general": (None, jax.lax.dot_general), "conv_general_dilated": (None, jax.lax.conv_general_dilated)}
    if any(getattr(node, name, None) not in allowed for name, allowed in ops.items()):
        return False
    cls_attrs = ("dot_general_cls", "conv_general_dilated_cls", "preferred_element_type")
    return all(getattr(node, name, None) is None for name in cls_attrs)


def _per_axis(value: Any, nd: int) -> tuple[int, ...] | None:
    if value is None:
        return (1,) * nd
    if isinstance(value, int):
        return (value,) * nd
    value = tuple(value)
    return value if len(value) == nd and all(isinstance(v, int) for v in value) else None


def conv(
    node: Any, spatial: tuple[int, ...] | None = None
) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...], tuple[int, ...]] | None:
    """(stride, padding pairs, dilation) of a plain ``nnx.Conv`` or ``nn.Conv``, else
    None; ``spatial``: the input's spatial size when known (then "SAME" at a stride too)."""
    ks = (node.kernel_size,) if isinstance(node.kernel_size, int) else tuple(node.kernel_size)
    nd = len(ks)
    stride, dilation = _per_axis(node.strides, nd), _per_axis(node.kernel_dilation, nd)
    if stride is None or dilation is None or _per_axis(node.input_dilation, nd) != (1,) * nd:
        return None
    if node.feature_group_count != 1 or node.mask is not None:
        return None
    pad = node.padding
    if pad == "VALID":
        pairs = ((0, 0),) * nd
    elif pad == "SAME" and spatial is not None:
        dilated = tuple((k - 1) * d + 1 for k, d in zip(ks, dilation, strict=True))
        pairs = tuple((int(lo), int(hi)) for lo, hi in jax.lax.padtype_to_pads(spatial, dilated, stride, "SAME"))
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
    """The plain ``nnx.Linear``, ``nnx.Conv`` and ``nnx.Embed`` layers of ``module`` (whose
    graph is ``graphdef``: the answer is cached per graph, which holds the layers' types
    and static attributes), computing in their parameters' dtype at the default precision."""
    from flax import nnx

    try:
        return _PLAIN[graphdef]
    except KeyError:
        pass
    except TypeError:  # an unhashable graph
        graphdef = None
    found = []
    for path, node in nnx.iter_graph(module):
        if type(node) not in (nnx.Linear, nnx.Conv, nnx.Embed) or not default_arithmetic(node, node.param_dtype):
            continue
        if type(node) is nnx.Linear:
            found.append(Plain(path, "linear"))
        elif type(node) is nnx.Embed:
            found.append(Plain(path, "embed"))
        elif (pads := conv(node)) is not None:
            found.append(Plain(path, "conv", *pads))
    layers = tuple(found)
    if graphdef is not None:
        if len(_PLAIN) >= 256:
            _PLAIN.clear()
        _PLAIN[graphdef] = layers
    return layers


@jax.jit
def _transposed(kernels: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
    """Every convolution kernel as an Equinox weight, in one dispatch: (*k, C_in, C_out) →
    (C_out, C_in, *k)."""
    return tuple(jnp.moveaxis(k, (-1, -2), (0, 1)) for k in kernels)


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


def _embedding(weight: jax.Array) -> eqx.nn.Embedding:
    """An ``eqx.nn.Embedding`` of the table ``weight`` (num_embeddings, features), built
    field by field."""
    layer = object.__new__(eqx.nn.Embedding)
    for name, value in {"weight": weight, "num_embeddings": weight.shape[0], "embedding_size": weight.shape[1]}.items():
        object.__setattr__(layer, name, value)
    return layer


def as_eqx_layers(plains: tuple[Plain, ...], kernels: tuple, biases: tuple) -> tuple[Any, ...]:
    """The Equinox layers of the plain Flax layers ``plains`` with these kernels (an
    embedding's table) and biases (None: no bias)."""
    moved = iter(_transposed(tuple(k for plain, k in zip(plains, kernels, strict=True) if plain.kind == "conv")))
    weights = [next(moved) if plain.kind == "conv" else k for plain, k in zip(plains, kernels, strict=True)]
    layers = []
    for plain, weight, bias in zip(plains, weights, biases, strict=True):
        if plain.kind == "embed":
            layers.append(_embedding(weight))
            continue
        if plain.kind == "linear":
            layers.append(FlaxDense(weight, bias, bias is not None))
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

    def __init__(self, idx: int, shape: tuple[int, ...], dtype: Any) -> None:
        self.idx = idx
        self.shape, self.dtype = shape, dtype  # reading them is no use of the values
        self.ndim = len(shape)

    def __getattr__(self, name: str) -> Any:
        raise _DirectAccess(self.idx)

    def __getitem__(self, item: Any) -> Any:
        raise _DirectAccess(self.idx)

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise _DirectAccess(self.idx)

    def __jax_array__(self) -> Any:
        raise _DirectAccess(self.idx)


def placeholders(layer: Any) -> dict[str, Any]:
    """The Flax variables (name → value; no bias: absent) of a layer carried as ``layer``
    (an Equinox layer, or a ``_Tap`` of one), in Flax's layout."""
    if isinstance(layer, _Tap):
        inner, idx = layer.layer, layer.idx
        shape, dtype = inner.weight.shape, inner.weight.dtype
        if isinstance(inner, eqx.nn.Embedding):
            return {"embedding": _Guard(idx, shape, dtype)}
        if isinstance(inner, FlaxDense):
            kernel, d_out = _Guard(idx, shape, dtype), shape[1]
        else:
            kernel, d_out = _Guard(idx, (*shape[2:], shape[1], shape[0]), dtype), shape[0]
        return {"kernel": kernel, **({"bias": _Guard(idx, (d_out,), dtype)} if inner.use_bias else {})}
    if isinstance(layer, eqx.nn.Embedding):
        return {"embedding": layer.weight}
    if isinstance(layer, FlaxDense):
        kernel, bias = layer.weight, layer.bias
    else:
        kernel = jnp.moveaxis(layer.weight, (0, 1), (-1, -2))
        bias = None if layer.bias is None else jnp.reshape(layer.bias, (-1,))
    return {"kernel": kernel} if bias is None else {"kernel": kernel, "bias": bias}


def call(plain: Plain, layer: Any) -> Any:
    """The Flax layer's call (on a batch, channels last) through ``layer``, its Equinox
    layer or the tap of one."""
    if plain.kind == "linear":
        return functools.partial(_samples, layer, 1, False)
    if plain.kind == "embed":
        return functools.partial(_samples, layer, 0, False)
    return functools.partial(_samples, layer, len(plain.stride) + 1, True)


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
        if entry is None or type(node) not in (nnx.Linear, nnx.Conv, nnx.Embed):
            continue
        node.__class__ = _redirected_class(type(node))
        object.__setattr__(node, "_ntkbench_call", call(*entry))


@functools.cache
def _redirected_class(base: type) -> type:
    """An ``nnx.Linear`` / ``nnx.Conv`` / ``nnx.Embed`` whose call is the
    ``_ntkbench_call`` set on the instance (its other methods, ``attend``, as they are)."""

    class _Redirected(base):
        def __call__(self, inputs: jax.Array, *args: Any, **kwargs: Any) -> jax.Array:
            return object.__getattribute__(self, "_ntkbench_call")(inputs)

    _Redirected.__name__ = _Redirected.__qualname__ = f"_Redirected{base.__name__}"
    return _Redirected
