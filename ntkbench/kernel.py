"""Empirical neural tangent kernels (eNTKs) of Equinox models.

The eNTK of a model f(x; θ) with K outputs on inputs x1 (N1 samples) and x2 (N2 samples) is

    Θ(x, x')_{kl} = <∂f_k(x)/∂θ, ∂f_l(x')/∂θ>,

returned as (N1, N2, K, K) with ``outputs="full"`` or summed over k = l to (N1, N2) with
``outputs="trace"``. Three independent methods compute it:

- ``"jacobian"``: per-sample Jacobians (N, K, P) leaf by leaf, contracted with matmuls.
- ``"ntvp"``: per-sample Jacobian rows of x2 pushed forward through the model on x1 with
  ``jax.jvp`` (kernel-vector products); never forms the Jacobian of x1.
- ``"structured"``: layer-wise rules. A tapped layer (``eqx.nn.Linear``; ``eqx.nn.Conv*``
  with ``groups=1`` and zero padding; ``eqx.nn.Embedding``), called at the top level or
  per token inside one ``jax.vmap``, any number of times, maps "tokens" x_t (inputs, conv
  patches, one-hot ids) linearly, so the Jacobian of its weight is Σ_t g_t ⊗ x_t and its
  kernel block is Σ_{t,s} (x_t·x'_s + 1 for a bias)(g_t·g'_s) from the token Gram and the
  cotangent Gram (for an embedding x_t·x'_s = [id_t == id'_s]). Memory per sample is
  (K, T, d_out) + (T, d_in), never (K, d_out·d_in). The cotangents g come from a zero
  perturbation added to each layer's output, in one backward sweep with K cotangents;
  inside a vmap, ``jax.custom_batching.custom_vmap`` hands the tap the whole token batch.
  Per layer a cost model picks this token-Gram route or Jacobian contraction (cheaper when
  T² exceeds roughly d_in·d_out / (d_in/K + d_out)); convolutions on the Jacobian route
  form it from patches, and a strided convolution passes its K cotangents back by phases
  (stride-1 convolutions, not XLA's transpose over zero-dilated cotangents). Everything
  else (norms, attention-free parameters, layers in scan/jit/nested vmaps, weights read
  directly) falls back to per-leaf Jacobians.

``"auto"`` takes the method with the fewest estimated FLOPs (:func:`costs`) whose features
fit ``memory_limit`` and picks a ``block_size`` when the tiles would not; when no features
fit, ``ntvp`` tile by tile. A symmetric kernel (``x2=None``) whose features fit is
contracted as the upper triangle of static tiles, mirrored (:func:`_triangle`), where
that measured faster than one product (:func:`_triangle_block`): full outputs of at least
320 Jacobian rows (N·K), traced outputs of wide per-sample Jacobians, and traced outputs of
models whose parameters are all on the Gram route (an MLP) from N = 256. A full kernel of
2²⁴ entries or more ((N·K)², 64 MB in float32) has these tiles written into it in place
by a loop rather than concatenated (one copy of the output fewer).

Everything is compiled once per (model structure, shapes, options) with ``eqx.filter_jit``.
With ``block_size`` the kernel is assembled from (block_size × block_size) tiles inside one
``lax.fori_loop``; any N works (inputs are zero-padded, the padding is cut off), and the
symmetric case ``x2=None`` computes each off-diagonal tile once and mirrors it.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import weakref
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jax.custom_batching import custom_vmap
from jaxtyping import Array, Float

__all__ = ["entk", "entk_diag", "as_model", "costs", "structured_features", "structured_vjp", "check_inputs"]

Outputs = Literal["trace", "full"]
Method = Literal["auto", "jacobian", "ntvp", "structured"]
_METHODS = ("auto", "jacobian", "ntvp", "structured")
_OUTPUTS = ("trace", "full")
_DEFAULT_MEMORY_LIMIT = 2 * 1024**3  # bytes


# ---------------------------------------------------------------------------
# Models: Equinox modules or (apply_fn, params)
# ---------------------------------------------------------------------------


class _Applied(eqx.Module):
    """Wraps ``(apply_fn, params)`` as a model called on one sample."""

    apply_fn: Callable = eqx.field(static=True)
    params: Any

    def __call__(self, x):
        return self.apply_fn(self.params, x)


def as_model(model: Any) -> eqx.Module:
    """Return ``model`` as a callable pytree of one sample; validates it.

    Accepts an Equinox module (any callable pytree with inexact array leaves) or a pair
    ``(apply_fn, params)`` with ``apply_fn(params, x)``.

    Example
    -------
    >>> import jax.numpy as jnp
    >>> m = as_model((lambda p, x: p["w"] @ x, {"w": jnp.ones((2, 3))}))
    >>> m(jnp.ones(3)).shape
    (2,)
    """
    if isinstance(model, tuple):
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


def _kind(node) -> str | None:
    t = type(node)
    if t is eqx.nn.Linear:
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


_FULL_TOKEN_GRAM_PENALTY = 8.0


def _layer_cost(L: _Layer, k: int, n1: int, n2: int, full: bool) -> dict[str, tuple[float, float, float]]:
    """(FLOPs, feature bytes per sample / itemsize, transient per sample pair / itemsize)
    of both routes for one tapped layer over an n1 × n2 kernel."""
    t, di, do = L.tokens, L.d_in, L.d_out
    xg = 1 if L.kind == "embedding" else di  # input Gram cost per token pair
    p = do * (di + L.bias)
    if full:
        gram = n1 * n2 * (t * t * (xg + k * do) + k * k * t * do)
        gram_tmp = t * t + k * t * do + k * k
        jac = n1 * n2 * k * k * p
    else:
        gram = n1 * n2 * t * t * (xg + k * do)
        gram_tmp = 2 * t * t
        jac = n1 * n2 * k * p
    form = k * t * do * (1 if L.kind == "embedding" else di)
    jac += (n1 + n2) * form
    feat_gram = t * (1 if L.kind == "embedding" else di) + k * t * do
    if full and t > 1:
        # the full-output token Grams are per-pair batched matmuls with tiny dimensions
        # (T, K): measured ~8x below the matmul rate the Jacobian contraction reaches
        gram *= _FULL_TOKEN_GRAM_PENALTY
    return {"gram": (gram, feat_gram, gram_tmp), "jac": (jac, k * p, k * k if full else 1)}


def _with_routes(layers: list[_Layer], k: int, n1: int, n2: int, full: bool) -> list[_Layer]:
    out = []
    for L in layers:
        c = _layer_cost(L, k, n1, n2, full)
        out.append(L._replace(route="gram" if c["gram"][0] <= c["jac"][0] else "jac"))
    return out


# ---------------------------------------------------------------------------
# Per-sample features
# ---------------------------------------------------------------------------


def _n_outputs(model, x_shape, x_dtype) -> int:
    out = jax.eval_shape(lambda x: model(x), jax.ShapeDtypeStruct(x_shape, x_dtype))
    return math.prod(jnp.shape(out))


def _jacobian_features(model) -> Callable:
    """x (one sample) -> list of per-leaf Jacobians, each (K, p_leaf)."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def f(p, x):
        return jnp.ravel(eqx.combine(p, static)(x))

    def feats(x):
        jac = jax.jacrev(f)(params, x)
        return [j.reshape(j.shape[0], -1) for j in jax.tree_util.tree_leaves(jac)]

    return feats


def _conv_patches(layer, x: Array) -> Array:
    """Patches of a convolution layer's recorded input x (size, C_in, *spatial):
    (size, C_in·k·k, *out_spatial)."""
    return jax.lax.conv_general_dilated_patches(
        x, layer.kernel_size, layer.stride, layer.padding, rhs_dilation=layer.dilation
    )


def _cat(arrays: list, axis: int) -> Array:
    return arrays[0] if len(arrays) == 1 else jnp.concatenate(arrays, axis)


def _tokens(L: _Layer, layer, xs: list, gs: list) -> list[Array]:
    """Recorded inputs and eps-cotangents of one layer's calls -> X (T, d_in) (token ids
    (T,) for an embedding) and G (K, T, d_out)."""
    X, G = [], []
    for c, x, g in zip(L.calls, xs, gs, strict=True):
        k = g.shape[0]
        if L.kind == "conv":
            X.append(jnp.moveaxis(_conv_patches(layer, x), 1, -1).reshape(-1, L.d_in))
            G.append(jnp.moveaxis(g, 2, -1).reshape(k, -1, L.d_out))
        elif L.kind == "embedding":
            X.append(x.reshape(c.size))
            G.append(g.reshape(k, c.size, L.d_out))
        else:
            X.append(x.reshape(c.size, L.d_in))
            G.append(g.reshape(k, c.size, L.d_out))
    return [_cat(X, 0), _cat(G, 1)]


def _conv_jacobian(L: _Layer, layer, xs: list, gs: list, full: bool) -> list[Array]:
    """Per-sample Jacobian of a convolution's weight and bias from its patches and output
    cotangents, Σ_t g_t ⊗ x_t: (K, d_out·d_in [+ d_out]).

    Two forms, by what XLA's CPU backend makes of them (2-core CPU, a CNN with an
    18 432-weight convolution, best of 5-9 alternating runs):

    - traced outputs: tokens X (T, d_in) with a constant-1 column for the bias and
      G (K, T, d_out), as for the Gram route, in one einsum. (With the bias block as a
      leaf of its own, XLA fused the weight block's einsum into the kernel's matmul, which
      contracts over K·P: 2x slower at N = 512; appending it instead costs a copy.)
    - full outputs: the layouts the convolution gives, channels first (patches (d_in, T),
      cotangents (K, d_out, T)), and the bias block (K, d_out) as a leaf of its own:
      54 vs 67-72 ms at N = 32, the same at N = 512.
    """
    if not full:
        X, G = _tokens(L, layer, xs, gs)
        if L.bias:  # a constant-1 input column: Σ_t g_t is the bias block
            X = jnp.concatenate([X, jnp.ones((X.shape[0], 1), X.dtype)], axis=1)
        return [jnp.einsum("kto,ti->koi", G, X).reshape(G.shape[0], -1)]
    X, G = [], []
    for x, g in zip(xs, gs, strict=True):
        k = g.shape[0]
        patches = _conv_patches(layer, x)  # (size, d_in, *out_spatial)
        if patches.shape[0] == 1:
            X.append(patches.reshape(L.d_in, -1))
            G.append(g.reshape(k, L.d_out, -1))
        else:  # calls inside a vmap: tokens are (size, positions)
            X.append(jnp.moveaxis(patches, 1, 0).reshape(L.d_in, -1))
            G.append(jnp.moveaxis(g, 2, 1).reshape(k, L.d_out, -1))
    X, G = _cat(X, 1), _cat(G, 2)
    jw = jnp.einsum("kot,it->koi", G, X).reshape(G.shape[0], -1)
    return [jw, G.sum(2)] if L.bias else [jw]


def structured_features(
    model: eqx.Module, x_shape: tuple[int, ...], x_dtype: Any, n1: int = 1, n2: int = 1, full: bool = False
) -> tuple[Callable[[Array], list[Array]], list[_Layer]]:
    """The per-sample feature map of the ``"structured"`` method and the layers it taps.

    Parameters
    ----------
    model:
        An Equinox model called on one sample (``as_model`` applied), K outputs.
    x_shape, x_dtype:
        Shape and dtype of ONE sample.
    n1, n2:
        Batch sizes of the kernel the features are for; with ``full`` (``outputs="full"``)
        they steer each layer's route (``_layer_cost``), not the shapes.

    Returns
    -------
    (feats, layers)
        ``feats(x)`` maps one sample ``x`` (``x_shape``) to a list of arrays: first, for
        each layer in ``layers`` whose ``route == "gram"``, its tokens ``X (T, d_in)`` and
        cotangents ``G (K, T, d_out)`` (T tokens: calls × positions); then the Jacobian
        blocks ``(K, p)`` of convolutions on the ``"jac"`` route and of every other
        parameter leaf. ``layers`` lists the tapped layers (fields ``kind`` "linear" /
        "conv" / "embedding", ``tokens``, ``d_in`` (vocabulary size for an embedding),
        ``d_out``, ``bias``, ``route``); only layers whose token-Gram route is cheaper
        than contracting their Jacobian, and convolutions, are tapped. ``feats`` is
        traceable and batches with ``jax.vmap`` (a leading (N,) axis on each array).

    Example
    -------
    >>> import jax, jax.numpy as jnp, equinox as eqx
    >>> model = eqx.nn.MLP(4, 3, 16, 2, key=jax.random.key(0))
    >>> feats, layers = structured_features(model, (4,), jnp.float32)
    >>> [(L.kind, L.route, L.d_in, L.d_out) for L in layers]
    [('linear', 'gram', 4, 16), ('linear', 'gram', 16, 16), ('linear', 'gram', 16, 3)]
    >>> [f.shape for f in feats(jnp.ones(4))][:2]
    [(1, 4), (3, 1, 16)]
    """
    k = _n_outputs(model, x_shape, x_dtype)
    forward, layers = _structured_vjp(model, x_shape, x_dtype, k, n1, n2, full)

    def feats(x):
        out, backward = forward(x)
        return backward(jnp.eye(out.shape[0], dtype=out.dtype))

    return feats, layers


def structured_vjp(
    model: eqx.Module, x_shape: tuple[int, ...], x_dtype: Any, cotangents: int
) -> tuple[Callable[[Array], tuple[Array, Callable[[Array], list[Array]]]], list[_Layer]]:
    """The structured features of :func:`structured_features` for ANY cotangents of the
    output, not only the K basis vectors: what per-sample gradient norms along given
    output directions need (Hutchinson probes, the loss residual).

    Parameters
    ----------
    model, x_shape, x_dtype:
        As for :func:`structured_features`.
    cotangents:
        M, the number of cotangent vectors per sample; each layer's route (token Grams or
        Jacobian blocks) is chosen for the diagonal of M cotangents.

    Returns
    -------
    (forward, layers)
        ``forward(x)`` maps one sample to ``(out, backward)``: ``out`` (K,) the flattened
        output, ``backward(V)`` with V (M, K) returns the feature list of
        :func:`structured_features` with M in place of K (tokens ``X (T, d_in)`` and
        cotangents ``G (M, T, d_out)`` for each ``"gram"`` layer, then the blocks
        ``(M, p)`` of the others). The gradient of V_m·f(x) has the squared norm
        Σ_{t,s} (x_t·x_s [+ 1 for a bias])(g_mt·g_ms) on a ``"gram"`` layer (the token-Gram
        or "ghost norm" identity; x_t·x_s = [id_t == id_s] for an embedding) plus
        ‖block_m‖² on the rest. Traceable; batches with ``jax.vmap``.

    Example
    -------
    >>> import jax, jax.numpy as jnp, equinox as eqx
    >>> model = eqx.nn.MLP(4, 3, 16, 2, key=jax.random.key(0))
    >>> forward, layers = structured_vjp(model, (4,), jnp.float32, cotangents=2)
    >>> out, backward = forward(jnp.ones(4))
    >>> [f.shape for f in backward(jnp.ones((2, 3)))][:2]
    [(1, 4), (2, 1, 16)]
    """
    if isinstance(cotangents, bool) or not isinstance(cotangents, (int, np.integer)) or cotangents < 1:
        raise ValueError(f"cotangents: expected a positive integer, got {cotangents!r}")
    return _structured_vjp(model, x_shape, x_dtype, int(cotangents), 1, 1, False)


def _structured_vjp(model, x_shape, x_dtype, k: int, n1: int, n2: int, full: bool):
    """(forward, layers) of :func:`structured_vjp`, routes chosen for k cotangents per
    sample over an n1 × n2 kernel (``full``: all k × k output pairs)."""
    calls = _probe(model, x_shape, x_dtype)
    # convolutions stay tapped on the "jac" route too: a Jacobian from patches is cheaper
    # than the convolution's own weight gradient under vmap
    layers = [L for L in _with_routes(_layers(model, calls), k, n1, n2, full) if L.route == "gram" or L.kind == "conv"]
    calls = {L.idx: L.calls for L in layers}
    model_t, _ = _tap(model, frozenset(calls))
    is_tap = lambda n: isinstance(n, _Tap)  # noqa: E731
    # parameters other than the tapped layers'
    spec = jax.tree_util.tree_map(lambda n: False if is_tap(n) else eqx.is_inexact_array(n), model_t, is_leaf=is_tap)
    others, static = eqx.partition(model_t, spec)
    taps = {n.idx: n for n in jax.tree_util.tree_leaves(model_t, is_leaf=is_tap) if is_tap(n)}
    eps0 = {i: [jnp.zeros((c.size, *c.y.shape), c.y.dtype) for c in cs] for i, cs in calls.items()}

    def f(eps, p, x):
        tape = _Tape(eps, calls=calls)
        _TAPES.append(tape)
        try:
            out = jnp.ravel(eqx.combine(p, static)(x))
        finally:
            _TAPES.pop()
        return out, {i: [tape.inputs[(i, c)] for c in range(len(cs))] for i, cs in calls.items()}

    def forward(x):
        out, vjp_fn, xs = jax.vjp(lambda e, p: f(e, p, x), eps0, others, has_aux=True)

        def backward(V):
            g_eps, g_other = jax.vmap(vjp_fn)(V)
            grams, rest = [], []
            for L in layers:
                layer = taps[L.idx].layer
                if L.route == "gram":
                    grams += _tokens(L, layer, xs[L.idx], g_eps[L.idx])
                else:
                    rest += _conv_jacobian(L, layer, xs[L.idx], g_eps[L.idx], full)
            rest += [j.reshape(j.shape[0], -1) for j in jax.tree_util.tree_leaves(g_other)]
            return grams + rest

        return out, backward

    return forward, layers


def _batched(feats: Callable, x: Array, block: int) -> list[Array]:
    """Apply a one-sample feature map to all of x, ``block`` samples at a time."""
    n = x.shape[0]
    if block >= n:
        return jax.vmap(feats)(x)
    nb = -(-n // block)
    xp = _pad(x, nb * block).reshape(nb, block, *x.shape[1:])
    out = jax.lax.map(jax.vmap(feats), xp)
    return [o.reshape(nb * block, *o.shape[2:])[:n] for o in out]


# ---------------------------------------------------------------------------
# Contractions: features of two sample blocks -> kernel tile
# ---------------------------------------------------------------------------


def _gram_jac(a: Array, b: Array, full: bool) -> Array:
    """a (n1, K, p), b (n2, K, p) -> (n1, n2) traced or (n1, n2, K, K) full."""
    n1, k, _ = a.shape
    n2 = b.shape[0]
    if not full:
        return a.reshape(n1, -1) @ b.reshape(n2, -1).T
    g = a.reshape(n1 * k, -1) @ b.reshape(n2 * k, -1).T
    return g.reshape(n1, k, n2, k).transpose(0, 2, 1, 3)


def _contract_jacobian(fa: list, fb: list, full: bool) -> Array:
    return functools.reduce(operator.add, [_gram_jac(a, b, full) for a, b in zip(fa, fb, strict=True)])


def _gram_tokens(xa, xb, ga, gb, bias: bool, embedding: bool, full: bool) -> Array:
    """Kernel block of one tapped layer from tokens and cotangents of two sample blocks:
    Σ_{t,s} (x_t·x'_s + bias)(g_t·g'_s); for an embedding x_t·x'_s = [id_t == id'_s].
    xa (n1, T, d_in) or ids (n1, T); ga (n1, K, T, d_out)."""
    n1, k, t1, o = ga.shape
    n2, t2 = gb.shape[0], gb.shape[2]
    if embedding:
        xx = (xa[:, None, :, None] == xb[None, :, None, :]).astype(ga.dtype)
    else:
        xx = jnp.einsum("ati,bsi->abts", xa, xb)
    if bias:
        xx = xx + 1.0
    if t1 == 1 and t2 == 1:
        xx, gg = xx[:, :, 0, 0], _gram_jac(ga[:, :, 0], gb[:, :, 0], full)
        return xx[:, :, None, None] * gg if full else xx * gg
    if not full:
        ra = ga.transpose(0, 2, 1, 3).reshape(n1 * t1, k * o)
        rb = gb.transpose(0, 2, 1, 3).reshape(n2 * t2, k * o)
        gg = (ra @ rb.T).reshape(n1, t1, n2, t2)
        return jnp.einsum("atbs,abts->ab", gg, xx)
    # H[a,b,t,l,o] = Σ_s xx[a,b,t,s] g'[b,l,s,o]; K[a,b,k,l] = Σ_{t,o} g[a,k,t,o] H[a,b,t,l,o]
    h = jnp.einsum("abts,blso->abtlo", xx, gb)
    return jnp.einsum("akto,abtlo->abkl", ga, h)


def _contract_structured(layers: list[_Layer]) -> Callable:
    grams = [L for L in layers if L.route == "gram"]  # the others come as Jacobians

    def contract(fa: list, fb: list, full: bool) -> Array:
        terms = []
        for i, L in enumerate(grams):
            xa, ga, xb, gb = fa[2 * i], fa[2 * i + 1], fb[2 * i], fb[2 * i + 1]
            terms.append(_gram_tokens(xa, xb, ga, gb, L.bias, L.kind == "embedding", full))
        m = 2 * len(grams)
        if len(fa) > m:
            terms.append(_contract_jacobian(fa[m:], fb[m:], full))
        return functools.reduce(operator.add, terms)

    return contract


# ---------------------------------------------------------------------------
# Assembling tiles
# ---------------------------------------------------------------------------


def _pad(x: Array, n: int) -> Array:
    if x.shape[0] == n:
        return x
    return jnp.concatenate([x, jnp.zeros((n - x.shape[0], *x.shape[1:]), x.dtype)])


def _tiles(tile_fn: Callable, n1: int, n2: int, block: int, symmetric: bool, full: bool, k: int, dtype):
    """Assemble the kernel from tiles; ``tile_fn(i, j)`` gives tile (block, block[, K, K])
    of rows i*block.. and columns j*block.. (padded arrays)."""
    nb1, nb2 = -(-n1 // block), -(-n2 // block)
    if symmetric:
        pairs = [(i, j) for i in range(nb1) for j in range(i, nb2)]
    else:
        pairs = [(i, j) for i in range(nb1) for j in range(nb2)]
    pairs = jnp.asarray(pairs, dtype=jnp.int32)
    shape = (nb1 * block, nb2 * block) + ((k, k) if full else ())
    out = jnp.zeros(shape, dtype)
    zero = jnp.zeros((), jnp.int32)
    zeros = (zero, zero) if full else ()

    def body(p, out):
        i, j = pairs[p, 0], pairs[p, 1]
        tile = tile_fn(i, j)
        out = jax.lax.dynamic_update_slice(out, tile, (i * block, j * block) + zeros)
        if symmetric:
            mirrored = tile.transpose(1, 0, 3, 2) if full else tile.T
            out = jax.lax.dynamic_update_slice(out, mirrored, (j * block, i * block) + zeros)
        return out

    out = jax.lax.fori_loop(0, len(pairs), body, out)
    return out[:n1, :n2]


def _slice_rows(feats: list, i, block: int) -> list:
    return [jax.lax.dynamic_slice_in_dim(f, i * block, block) for f in feats]


def _triangle(contract: Callable, feats: list, n: int, block: int, full: bool) -> Array:
    """Symmetric kernel of ``feats`` (all n samples) from the upper triangle of
    ``block``-row tiles, each a static slice, the lower tiles mirrored: about half the
    FLOPs of one n × n product and no dynamic slicing (cf. :func:`_tiles`, which bounds
    memory per tile instead). nb(nb + 1)/2 tiles for nb = ⌈n / block⌉."""
    starts = list(range(0, n, block))
    rows = [[f[a : a + block] for f in feats] for a in starts]
    nb = len(starts)
    upper = {(i, j): contract(rows[i], rows[j], full) for i in range(nb) for j in range(i, nb)}
    mirror = (lambda t: t.transpose(1, 0, 3, 2)) if full else (lambda t: t.T)  # noqa: E731
    return jnp.concatenate(
        [
            jnp.concatenate([upper[i, j] if j >= i else mirror(upper[j, i]) for j in range(nb)], axis=1)
            for i in range(nb)
        ],
        axis=0,
    )


def _feature_kernel(feats_fn, contract, x1, x2, full, block, feature_block=None):
    """Kernel from per-sample features: features of ``feature_block`` samples at a time (all
    at once if None), contracted in ``block`` × ``block`` tiles (one product if None)."""
    n1 = x1.shape[0]
    symmetric = x2 is None
    n2 = n1 if symmetric else x2.shape[0]
    fb = feature_block or max(n1, n2)
    f1 = _batched(feats_fn, x1, fb)
    f2 = f1 if symmetric else _batched(feats_fn, x2, fb)
    if block is None or block >= max(n1, n2):
        return contract(f1, f2, full)
    k = f1[-1].shape[1]
    if symmetric and fb >= n1 and not (full and (n1 * k) ** 2 >= _IN_PLACE_ELEMENTS):
        return _triangle(contract, f1, n1, block, full)  # features held anyway: static tiles
    # a large full kernel: tiles written in place by a loop (a concatenation of static
    # tiles copies the output again: 1.23 vs 0.97 s for MLP 64-512-512-10 at N = 1024)
    nb1, nb2 = -(-n1 // block), -(-n2 // block)
    f1p = [_pad(f, nb1 * block) for f in f1]
    f2p = f1p if symmetric else [_pad(f, nb2 * block) for f in f2]
    dtype = f1[-1].dtype
    tile = lambda i, j: contract(_slice_rows(f1p, i, block), _slice_rows(f2p, j, block), full)  # noqa: E731
    return _tiles(tile, n1, n2, block, symmetric, full, k, dtype)


def _ntvp_kernel(model, x1, x2, full, block):
    """Rows of J(x2) pushed forward with jvp through the model on x1 (no J(x1))."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    n1, n2 = x1.shape[0], x2.shape[0]

    def f1(p, x):
        return jnp.ravel(eqx.combine(p, static)(x))

    def fbatch(p, xs):
        return jax.vmap(lambda x: f1(p, x))(xs)

    def tile(xa, xb):
        # (nb, K, *leaf) Jacobian rows of xb, as nb*K tangents
        jac = jax.vmap(jax.jacrev(f1), in_axes=(None, 0))(params, xb)
        nb_, k = xb.shape[0], jax.tree_util.tree_leaves(jac)[0].shape[1]
        tangents = jax.tree_util.tree_map(lambda j: j.reshape(nb_ * k, *j.shape[2:]), jac)
        push = lambda t: jax.jvp(lambda p: fbatch(p, xa), (params,), (t,))[1]  # noqa: E731
        cols = jax.lax.map(push, tangents, batch_size=min(nb_ * k, 64))  # (nb*K, na, K)
        cols = cols.reshape(nb_, k, xa.shape[0], k).transpose(2, 0, 3, 1)  # (na, nb, K, K)
        return cols if full else jnp.trace(cols, axis1=2, axis2=3)

    if block is None or block >= max(n1, n2):
        return tile(x1, x2)
    nb1, nb2 = -(-n1 // block), -(-n2 // block)
    x1p = _pad(x1, nb1 * block)
    x2p = x1p if symmetric else _pad(x2, nb2 * block)
    k = _n_outputs(model, x1.shape[1:], x1.dtype)
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    t = lambda i, j: tile(  # noqa: E731
        jax.lax.dynamic_slice_in_dim(x1p, i * block, block),
        jax.lax.dynamic_slice_in_dim(x2p, j * block, block),
    )
    return _tiles(t, n1, n2, block, symmetric, full, k, dtype)


# ---------------------------------------------------------------------------
# Method choice: a cost model (FLOPs and bytes) under a memory budget
# ---------------------------------------------------------------------------


def _n_params(model) -> int:
    return sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array)))


def _has_tappable_linear(model, x_shape, x_dtype) -> bool:
    return bool(_probe(model, x_shape, x_dtype))


class _Cost(NamedTuple):
    flops: float  # contraction + feature formation, whole kernel
    feature: float  # bytes per sample kept for the whole kernel (features)
    pair: float  # bytes per sample pair of a tile's intermediates and output
    jac_row: float = 0.0  # bytes per sample of the per-sample Jacobians it contracts


def costs(model: Any, x1, x2=None, *, outputs: Outputs = "trace") -> dict[str, _Cost]:
    """Estimated cost of each method for this kernel: FLOPs, feature bytes per sample,
    tile bytes per sample pair. What ``method="auto"`` decides on.

    Example
    -------
    >>> import jax, equinox as eqx
    >>> m = eqx.nn.MLP(8, 3, 32, 2, key=jax.random.key(0))
    >>> c = costs(m, jax.numpy.ones((10, 8)))
    >>> c["structured"].flops < c["jacobian"].flops < c["ntvp"].flops
    True
    """
    model = as_model(model)
    x1 = jnp.asarray(x1)
    shape, dtype = x1.shape[1:], x1.dtype
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else jnp.shape(x2)[0]
    nfeat = n1 if x2 is None else n1 + n2
    full = outputs == "full"
    k = _n_outputs(model, shape, dtype)
    kk = k * k if full else 1
    p = _n_params(model)
    item = jnp.dtype(jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))[0].dtype).itemsize
    layers = _with_routes(_layers(model, _probe(model, shape, dtype)), k, n1, n2, full)
    # forward FLOPs of one sample: 2 per weight use (tokens × weights for the layers)
    use = {L.idx: 2.0 * L.tokens * L.d_out * (1 if L.kind == "embedding" else L.d_in + L.bias) for L in layers}
    fwd = sum(use.values()) + 2.0 * (p - sum(L.d_out * (L.d_in + L.bias) for L in layers))
    layers = [L for L in layers if L.route == "gram"]  # the others: Jacobian contraction
    p_tapped = sum(L.d_out * (L.d_in + L.bias) for L in layers)
    fwd_tapped = sum(use[L.idx] for L in layers)
    backprop = 2.0 * fwd * k  # K backward passes: input and weight cotangents
    out = {
        "jacobian": _Cost(n1 * n2 * (kk if full else k) * p + nfeat * backprop, k * p * item, kk * item, k * p * item),
        # every tile pushes the Jacobian rows of its columns through its rows with jvp
        "ntvp": _Cost(n1 * n2 * k * 2.0 * fwd + nfeat * backprop, k * p * item, kk * item),
    }
    if layers:
        # one backward pass with K cotangents; tapped layers need only input cotangents
        flops = nfeat * k * (2.0 * fwd - fwd_tapped)
        feat, pair = 0.0, kk
        for L in layers:
            route = _layer_cost(L, k, n1, n2, full)["gram"]
            flops += route[0]
            feat += route[1]
            pair += route[2]
        flops += n1 * n2 * (kk if full else k) * (p - p_tapped)
        feat += k * (p - p_tapped)
        out["structured"] = _Cost(flops, feat * item, pair * item, k * (p - p_tapped) * item)
    return out


def _choose(model, x1, x2, outputs: Outputs, memory_limit: int, block_size: int | None):
    """(method, block_size, feature_block) for ``method="auto"``: the fewest FLOPs among
    the methods whose features fit ``memory_limit``; a block size (for tiles and feature
    batches) when they would not; a triangle of tiles with one feature batch when that is
    faster (:func:`_triangle_block`)."""
    c = costs(model, x1, x2, outputs=outputs)
    k_out = _n_outputs(model, x1.shape[1:], x1.dtype)
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    nfeat = n1 if x2 is None else n1 + n2
    n = max(n1, n2)
    for method in sorted(c, key=lambda m: c[m].flops):
        cost = c[method]
        if method == "ntvp":  # memory per tile only: the largest tile that fits
            b = n
            while b > 1 and b * b * cost.pair + b * cost.feature > memory_limit:
                b = (b + 1) // 2
            b = block_size or (None if b >= n else b)
            return method, b, b
        room = memory_limit - nfeat * cost.feature
        if room <= 0:
            continue
        if block_size is not None:
            return method, block_size, block_size
        b = n  # tile intermediates + transient features of one block must fit
        while b > 1 and b * b * cost.pair + b * cost.feature > room:
            b = (b + 1) // 2
        tri = _triangle_block(n, k_out, outputs == "full", cost) if x2 is None else None
        if tri is not None and tri <= b:  # features in one batch, upper tiles mirrored
            return method, tri, n
        if b < n:  # memory-bound: tiles and feature batches of b samples
            return method, b, b
        return method, None, None
    raise AssertionError("unreachable: ntvp always fits")


#: a full kernel of at least this many entries ((N·K)², 64 MB in float32) is assembled in
#: place by :func:`_tiles` rather than concatenated by :func:`_triangle`
_IN_PLACE_ELEMENTS = 2**24
_GRAM_TILE = 128  # traced, Gram-route layers only (an MLP): samples per triangle tile ...
_JAC_ROW_BYTES = 2**20  # traced: per-sample Jacobian bytes above which a triangle pays
_TILE_MIN_N = 256  # ... and the smallest N where it does
_TRIANGLE_ROWS = 640  # full outputs: Jacobian rows (samples × outputs) per triangle tile
_TRIANGLE_MIN_ROWS = 160  # ... and the fewest rows per tile worth a triangle


def _triangle_block(n: int, k: int, full: bool, cost: _Cost) -> int | None:
    """Tile size (samples) at which a symmetric kernel of ``n`` samples and ``k`` outputs
    is faster as the upper triangle of tiles (:func:`_triangle`) than as one product, or
    None where one product wins.

    Measured on the 2-core CPU (best of 3, benchmarks/RESULTS.md has the ratios vs
    neural-tangents):

    - full outputs, ``n·k`` ≥ 2·160 rows: tiles of 640 rows, or two when that is fewer.
      MLP 64-512-512-10 N = 32: 2.3 vs 2.65 ms; N = 128: 20 vs 28 ms; N = 512: 325 vs
      697 ms. CNN N = 128: 453 vs 538 ms; N = 512: 4.5 vs 8.0 s (4 tiles of 1280 rows:
      5.0 s). Transformer block N = 32: 72-75 vs 94 ms; N = 512: 8.6 vs 18.0 s. (CNN
      N = 32, where the features dominate: 65-67 vs 56-71 ms, within the noise.)
    - traced outputs: only for wide per-sample Jacobians (``cost.jac_row`` above
      ``_JAC_ROW_BYTES``, e.g. a transformer block with K·P = 5·10⁵ floats) at N ≥ 256,
      in 2 × 2 tiles: transformer N = 512: 2.0 vs 4.6 s. A CNN's 0.8 MB rows are faster
      in one product (1.6 vs 1.9 s at N = 512). Models whose every parameter is on the
      Gram route (an MLP; ``cost.jac_row == 0``) at N ≥ 256: tiles of 128 samples. MLP
      64-512-512-10 contraction alone, N = 256: 8.0-8.7 vs 9.5 ms; N = 512: 25-27 vs
      32-34 ms; N = 1024: 102 vs 143-148 ms.

    Full kernels of at least ``_IN_PLACE_ELEMENTS`` entries write these tiles in place
    (:func:`_tiles`) instead of concatenating them (:func:`_feature_kernel`).
    """
    if full:
        return min(-(-_TRIANGLE_ROWS // k), -(-n // 2)) if n * k >= 2 * _TRIANGLE_MIN_ROWS else None
    if n >= _TILE_MIN_N and cost.jac_row > _JAC_ROW_BYTES:
        return -(-n // 2)
    if n >= 2 * _GRAM_TILE and cost.jac_row == 0:
        return _GRAM_TILE
    return None


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


_CHOICES: dict = {}


class _Static:
    """A model's non-array part as a ``jax.jit`` static argument, its hash computed once
    (equal structures share one compiled kernel; a repeated call hashes nothing)."""

    __slots__ = ("value", "_hash")

    def __init__(self, value: Any) -> None:
        self.value = value
        self._hash = hash(value)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, _Static) and self._hash == other._hash and self.value == other.value)


@functools.partial(jax.jit, static_argnums=(1, 4, 5, 6, 7))
def _entk_params(params, static: _Static, x1, x2, outputs: str, method: str, block_size, feature_block):
    """:func:`_entk_checked` with the model as (array leaves, static part): dispatched by
    ``jax.jit`` alone, without partitioning the model on every call."""
    return _entk_checked(eqx.combine(params, static.value), x1, x2, outputs, method, block_size, feature_block)


#: (id(model), shapes, options) -> (weakref to the model, params, _Static, method, block
#: sizes): the steady-state plan of :func:`entk` for a model object called again (checks,
#: method choice and partition done once; an Equinox model is immutable).
_PLANS: dict = {}
_PLANS_MAX = 256


def _plan_key(model: Any, x1: Any, x2: Any, outputs: Any, method: Any, block_size: Any, memory_limit: Any):
    """The plan key of a call whose inputs are JAX arrays (``x2`` None or of ``x1``'s
    dtype), else None."""
    if not isinstance(x1, jax.Array) or (x2 is not None and not (isinstance(x2, jax.Array) and x2.dtype == x1.dtype)):
        return None
    return (id(model), x1.shape, x1.dtype, None if x2 is None else x2.shape, outputs, method, block_size, memory_limit)


def _store_plan(key: Any, model: Any, checked: Any, choice: tuple) -> tuple | None:
    """Make (and, for a weak-referenceable concrete model, remember) the plan of a call."""
    params, static = eqx.partition(checked, eqx.is_array)
    try:
        plan_static = _Static(static)
    except TypeError:  # unhashable static fields: the plain filter_jit path
        return None
    plan = (None, params, plan_static, *choice)
    if key is None or any(isinstance(leaf, Tracer) for leaf in jax.tree_util.tree_leaves(params)):
        return plan
    try:
        ref = weakref.ref(model)
    except TypeError:  # e.g. an (apply_fn, params) tuple: rebuilt every call anyway
        return plan
    if len(_PLANS) >= _PLANS_MAX:
        for k in [k for k, v in _PLANS.items() if v[0]() is None] or list(_PLANS):
            del _PLANS[k]
    _PLANS[key] = plan = (ref, *plan[1:])
    return plan


def _resolve_method(
    model, x1, x2, method: str, memory_limit: int, outputs: Outputs = "trace", block_size: int | None = None
) -> tuple[str, int | None, int | None]:
    """Check the model applies to one sample of x1 and resolve ``"auto"`` to (method,
    block_size, feature_block); cached per (model structure, shapes), so repeated calls
    (e.g. while training) cost nothing."""
    leaves, treedef = jax.tree_util.tree_flatten(model)
    leaf_shapes = tuple((l.shape, str(l.dtype)) if hasattr(l, "shape") else None for l in leaves)
    key = (
        treedef,
        leaf_shapes,
        x1.shape,
        str(x1.dtype),
        None if x2 is None else x2.shape,
        method,
        memory_limit,
        outputs,
        block_size,
    )
    try:
        return _CHOICES[key]
    except KeyError:
        pass
    except TypeError:  # unhashable static fields: no caching
        key = None
    try:
        jax.eval_shape(model, jax.ShapeDtypeStruct(x1.shape[1:], x1.dtype))
    except Exception as e:  # a shape error inside the model: name the input
        raise ValueError(f"x1: the model cannot be applied to one sample of shape {x1.shape[1:]}: {e}") from e
    choice = (method, block_size, block_size)
    if method == "auto":
        choice = _choose(model, x1, x2, outputs, memory_limit, block_size)
    if key is not None:
        _CHOICES[key] = choice
    return choice


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
    method = "structured" if _has_tappable_linear(model, x.shape[1:], x.dtype) else "jacobian"
    return _diag_jit(model, x, method, block_size)
