"""Per-sample features: per-leaf Jacobians, and the ``"structured"`` token and cotangent
features of the tapped layers (each layer's route chosen by its cost)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ntkbench.kernel._model import _n_outputs
from ntkbench.kernel._stateful import tappable
from ntkbench.kernel._taps import _TAPES, _Layer, _layers, _probe, _Tap, _tap, _Tape

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
    model = tappable(model, x_shape, x_dtype)
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


def _pad(x: Array, n: int) -> Array:
    if x.shape[0] == n:
        return x
    return jnp.concatenate([x, jnp.zeros((n - x.shape[0], *x.shape[1:]), x.dtype)])
