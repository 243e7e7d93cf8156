"""Layer taps of the ``"structured"`` method: which layers the rule applies to (a probe of
the model's calls) and the stand-in that records their inputs and perturbs their outputs."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap
from jaxtyping import Array

# ---------------------------------------------------------------------------
# Tapping layers for the structured method
# ---------------------------------------------------------------------------
#
# A tapped layer (``eqx.nn.Linear``, ``eqx.nn.Conv*`` with groups=1 and zero padding,
# ``eqx.nn.Embedding``) is a linear map of its input's "tokens": one token for a linear
# called at the top level, T tokens for one applied per token inside ``jax.vmap``, T·P
# patches for a convolution with P output positions, T one-hot vectors for an embedding.
# Its weight's Jacobian for one output k is Σ_t g_kt ⊗ x_t (g: cotangent of the layer's
# output at token t), so its kernel block needs only the tokens X (T, d_in) and the
# cotangents G (K, T, d_out) of each sample. G comes from differentiating with respect to
# a zero perturbation ``eps`` (T, d_out) added to the layer's output. Inside a vmap the
# tap sees one token; ``jax.custom_batching.custom_vmap`` hands it the whole (T, ...)
# batch at the level above the vmap, where it records X and adds eps row by row.

_CONVS = (eqx.nn.Conv, eqx.nn.Conv1d, eqx.nn.Conv2d, eqx.nn.Conv3d)


class FlaxDense(eqx.Module):
    """A dense layer in Flax's layout: ``x @ weight + bias`` on one token, ``weight``
    (d_in, d_out). Flax's ``nnx.Linear`` / ``nn.Dense`` are carried as this rather than as
    an ``eqx.nn.Linear`` of the transposed kernel: the transpose would be a copy of every
    kernel in every call (≈ 0.1 ms per call on the 64-512-512-10 MLP)."""

    weight: jax.Array
    bias: jax.Array | None
    use_bias: bool = eqx.field(static=True)

    def __call__(self, x, *, key=None):
        y = x @ self.weight
        return y + self.bias if self.use_bias else y


def _kind(node) -> str | None:
    t = type(node)
    if t is eqx.nn.Linear or t is FlaxDense:
        return "linear"
    if t is eqx.nn.Embedding:
        return "embedding"
    if t in _CONVS and node.groups == 1 and node.padding_mode == "ZEROS":
        return "conv"
    return None


class _DirectAccess(Exception):
    def __init__(self, idx: int):
        self.idx = idx


class _Call(NamedTuple):
    """One call of a tapped layer, as the probe saw it."""

    size: int  # tokens of this call: 1 at the top level, the axis size inside a vmap
    depth: int  # 0: top level; 1: inside one jax.vmap
    x: jax.ShapeDtypeStruct  # one token's input
    y: jax.ShapeDtypeStruct  # one token's output


class _Tape:
    """Per-trace record of the tapped layers: calls (probe) or inputs and perturbations."""

    def __init__(self, eps: dict | None, top_trace: Any = None, calls: dict | None = None):
        self.eps = eps  # None while probing; else {idx: [eps per call, (size, *y)]}
        self.top_trace = top_trace
        self.calls: dict[int, list[_Call]] = calls if calls is not None else {}
        self.count: dict[int, int] = {}
        self.inputs: dict[tuple[int, int], Array] = {}  # (idx, call) -> (size, *x)
        self.bad: set[int] = set()


_TAPES: list[_Tape] = []


def _vmap_levels(found: list) -> Callable:
    """x -> dummy; records (axis size, trace of the unbatched x) for every enclosing vmap
    under which x is batched (innermost first)."""

    @custom_vmap
    def f(x):
        return jnp.zeros((), jnp.int32)

    @f.def_vmap
    def rule(axis_size, in_batched, x):
        found.append((axis_size, getattr(x, "_trace", None)))
        f(x)  # enclosing vmaps, if any
        return jnp.zeros((axis_size,), jnp.int32), True

    return f


def _token_io(tape: _Tape, key: tuple[int, int], x, y, eps):
    """Inside one vmap: record the whole (T, ...) input and add eps (T, ...) to y."""

    @custom_vmap
    def f(x, y, eps):
        return y + eps[0]

    @f.def_vmap
    def rule(axis_size, in_batched, x, y, eps):
        if axis_size != eps.shape[0] or in_batched[2]:
            raise RuntimeError("ntkbench: tapped layer called differently than probed")
        if not in_batched[0]:
            x = jnp.broadcast_to(x, (axis_size, *jnp.shape(x)))
        if not in_batched[1]:
            y = jnp.broadcast_to(y, (axis_size, *jnp.shape(y)))
        tape.inputs[key] = x
        return y + eps, True

    return f(x, y, eps)


class _Tap(eqx.Module):
    """Stand-in for a tapped layer: same forward; records inputs, adds perturbations."""

    layer: Any
    idx: int = eqx.field(static=True)
    kind: str = eqx.field(static=True)

    @property
    def weight(self):  # direct use of the weight outside __call__ defeats the rule
        raise _DirectAccess(self.idx)

    @property
    def bias(self):
        raise _DirectAccess(self.idx)

    def __getattr__(self, name):  # other attributes (in_features, ...) of the layer
        if name.startswith("__") or name in ("layer", "idx", "kind"):
            raise AttributeError(name)
        return getattr(self.layer, name)

    def __call__(self, x, *, key=None):
        tape = _TAPES[-1]
        if tape.eps is not None and self.kind == "conv" and _phase_transpose_applies(self.layer):
            y = _strided_conv(self.layer, x)
        else:
            y = self.layer(x)
        if self.kind != "embedding":  # the recorded input: int8/bool/float16 Grams would overflow or round
            x = _promoted(x, self.layer)
        if tape.eps is None:  # probing
            found: list = []
            _vmap_levels(found)(x)
            trace = found[0][1] if found else getattr(x, "_trace", None)
            if len(found) > 1 or (trace is not None and trace is not tape.top_trace):
                tape.bad.add(self.idx)  # nested vmaps, scan, jit, ...: fall back
            size = found[0][0] if found else 1
            sds = lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a))  # noqa: E731
            tape.calls.setdefault(self.idx, []).append(_Call(size, len(found), sds(x), sds(y)))
            return y
        c = tape.count.get(self.idx, 0)
        tape.count[self.idx] = c + 1
        eps = tape.eps[self.idx][c]
        if tape.calls[self.idx][c].depth == 0:
            tape.inputs[(self.idx, c)] = jnp.asarray(x)[None]
            return y + eps[0]
        return _token_io(tape, (self.idx, c), x, y, eps)


def _promoted(x, layer):
    """``x`` in the dtype the layer computes in (that of ``x`` with the layer's weight), so
    the layer input recorded for the structured kernel is never narrower than the layer's
    arithmetic."""
    weight = getattr(layer, "weight", None)
    x = jnp.asarray(x)
    if weight is None:
        return x
    dtype = jnp.result_type(x, weight)
    return x if x.dtype == dtype else x.astype(dtype)


def _phase_transpose_applies(layer) -> bool:
    """A strided convolution without dilation: its input cotangent is cheaper by phases."""
    return max(layer.stride) > 1 and max(layer.dilation) == 1


def _conv_pads(layer, spatial: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """A convolution layer's padding as explicit (low, high) pairs for input ``spatial``."""
    if isinstance(layer.padding, str):
        return tuple(jax.lax.padtype_to_pads(spatial, layer.kernel_size, layer.stride, layer.padding))
    return tuple(tuple(p) for p in layer.padding)


def _phase_transpose(w: Array, g: Array, spatial: tuple[int, ...], stride, pads) -> Array:
    """Input cotangent (C_in, *spatial) of a stride-s, dilation-1 convolution of weight w
    (C_out, C_in, *k) from its output cotangent g (C_out, *O), by phases: input position
    s·a + r receives Σ_k W_kᵀ g[a − q_k] over the taps k ≡ r + low (mod s), q_k =
    (k − low − r)/s, a stride-1 convolution of g with those taps only (exactly the
    convolution's own FLOPs). The s^d phases are then interleaved (depth to space) and
    cropped. (One convolution with all phases as output channels, zero taps included,
    measured slower: 34 vs 21 ms for a 3×3 stride-2 layer at N = 32, K = 10.)"""
    nd = len(spatial)
    c_in = w.shape[1]
    ks = w.shape[2:]
    out_sp = g.shape[1:]
    A = [-(-spatial[i] // stride[i]) for i in range(nd)]  # phase grid, padded to equal size
    wt = jnp.swapaxes(w, 0, 1)  # (C_in, C_out, *k)
    phases = []
    for r in itertools.product(*(range(s) for s in stride)):
        taps = [[k for k in range(ks[i]) if (k - pads[i][0] - r[i]) % stride[i] == 0] for i in range(nd)]
        if not all(taps):  # kernel smaller than the stride: this phase gets nothing
            phases.append(jnp.zeros((c_in, *A), g.dtype))
            continue
        sub = wt
        for i in range(nd):  # offset j holds the tap of the largest shift first
            sub = jnp.take(sub, jnp.asarray(taps[i][::-1]), axis=2 + i)
        q_max = [(taps[i][-1] - pads[i][0] - r[i]) // stride[i] for i in range(nd)]
        conv_pads = [(q_max[i], A[i] - out_sp[i] - q_max[i] + len(taps[i]) - 1) for i in range(nd)]
        phases.append(jax.lax.conv_general_dilated(g[None], sub, (1,) * nd, conv_pads)[0])
    out = jnp.stack(phases, 0).reshape(*stride, c_in, *A)  # (s_1, .., s_d, C_in, *A)
    perm = [nd] + [a for i in range(nd) for a in (nd + 1 + i, i)]
    out = out.transpose(perm).reshape(c_in, *(A[i] * stride[i] for i in range(nd)))
    return out[(slice(None),) + tuple(slice(0, h) for h in spatial)]


def _strided_conv(layer, x: Array) -> Array:
    """``layer(x)`` for a strided convolution (groups = 1, dilation 1, zero padding) whose
    input cotangent is computed by phases (:func:`_phase_transpose`).

    XLA transposes a stride-s convolution as a convolution over the cotangent dilated with
    s − 1 zeros between entries, multiplying those zeros too (s^d times the work); with K
    cotangents per sample that backward pass was the largest cost of a CNN's features."""
    spatial = x.shape[1:]
    pads = _conv_pads(layer, spatial)
    stride = layer.stride

    @jax.custom_vjp
    def conv(x, w):
        return jax.lax.conv_general_dilated(x[None], w, stride, pads)[0]

    def fwd(x, w):
        return conv(x, w), w

    def bwd(w, g):
        return _phase_transpose(w, g, spatial, stride, pads), None

    conv.defvjp(fwd, bwd)
    y = conv(x, layer.weight)
    return y + layer.bias if layer.use_bias else y


def _tap(model, keep: frozenset[int] | None = None):
    """Replace the tappable layers of ``model`` whose traversal index is in ``keep`` (all
    when None) by ``_Tap``; returns (model, number of tappable layers)."""
    counter = [0]
    is_layer = lambda n: _kind(n) is not None  # noqa: E731

    def swap(node):
        kind = _kind(node)
        if kind is not None:
            i = counter[0]
            counter[0] += 1
            if keep is None or i in keep:
                return _Tap(node, i, kind)
        return node

    return jax.tree_util.tree_map(swap, model, is_leaf=is_layer), counter[0]


def _probe(model, x_shape, x_dtype) -> dict[int, tuple[_Call, ...]]:
    """The tappable layers the structured rule applies to, with their calls: every call at
    the top level or inside one ``jax.vmap`` of the model (not in scan/jit/nested vmaps),
    and the weights never read directly. Layers never called are left out."""
    _, n_layers = _tap(model)
    keep = set(range(n_layers))
    for _ in range(n_layers + 1):
        if not keep:
            break
        tapped, _ = _tap(model, frozenset(keep))
        params, static = eqx.partition(tapped, eqx.is_inexact_array)
        holder: list[_Tape] = []

        def run(p, x, static=static, holder=holder):
            tape = _Tape(None, top_trace=getattr(x, "_trace", None))
            _TAPES.append(tape)
            try:
                eqx.combine(p, static)(x)
            finally:
                _TAPES.pop()
            holder.append(tape)
            return 0.0

        try:
            jax.eval_shape(run, params, jax.ShapeDtypeStruct(x_shape, x_dtype))
        except _DirectAccess as e:
            keep.discard(e.idx)
            continue
        except Exception:
            # a Flax layer's placeholder (``_nnx_layers._Guard``) passed into a JAX
            # transform (``nnx.remat``, ...), which refuses it: which layer is not known,
            # so none is tapped (the model's own errors show again on the untapped route)
            return {}
        tape = holder[0]
        bad = tape.bad | {i for i in keep if i not in tape.calls}
        if not bad & keep:
            return {i: tuple(tape.calls[i]) for i in sorted(keep)}
        keep -= bad
    return {}


def _tappable(model, n_layers: int, x_shape, x_dtype) -> frozenset[int]:
    """Indices of the layers the structured rule applies to (see ``_probe``)."""
    del n_layers
    return frozenset(_probe(model, x_shape, x_dtype))


class _Layer(NamedTuple):
    """A tapped layer as the kernel sees it: tokens (T, d_in) and cotangents (K, T, d_out)."""

    idx: int
    kind: str
    calls: tuple[_Call, ...]
    tokens: int
    d_in: int  # vocabulary size for an embedding
    d_out: int
    bias: bool
    route: str = "gram"  # "gram": token Grams; "jac": per-sample weight gradients


def _layers(model, calls: dict) -> list[_Layer]:
    is_tap = lambda n: isinstance(n, _Tap)  # noqa: E731
    tapped, _ = _tap(model, frozenset(calls))
    taps = {n.idx: n for n in jax.tree_util.tree_leaves(tapped, is_leaf=is_tap) if is_tap(n)}
    out = []
    for i, cs in calls.items():
        layer = taps[i].layer
        kind = taps[i].kind
        if kind == "conv":
            positions = math.prod(cs[0].y.shape[1:])
            tokens = sum(c.size for c in cs) * positions
            d_in = layer.in_channels * math.prod(layer.kernel_size)
            d_out, bias = layer.out_channels, layer.use_bias
        elif kind == "embedding":
            tokens = sum(c.size for c in cs)
            d_in, d_out, bias = layer.num_embeddings, layer.embedding_size, False
        else:
            tokens = sum(c.size for c in cs)
            d_in, d_out = math.prod(cs[0].x.shape), math.prod(cs[0].y.shape)
            bias = layer.use_bias
        out.append(_Layer(i, kind, cs, tokens, d_in, d_out, bias))
    return out


def _has_tappable_linear(model, x_shape, x_dtype) -> bool:
    return bool(_probe(model, x_shape, x_dtype))
