"""Spectra of the eNTK without forming the N×N kernel.

For a model f(x; θ) with C outputs and P parameters on N inputs, let J be the Jacobian of
the outputs on the batch, (N·C) × P, with row blocks J_c (N × P) for output c. Then

- the full kernel is K_full = J Jᵀ ((N·C) × (N·C), row index ``i * C + c``);
- the traced kernel is K_trace = Σ_c J_c J_cᵀ (N × N), what ``entk(..., outputs="trace")``
  returns.

Both are applied to vectors as K v = J (Jᵀ v): one reverse-mode pass (``jax.vjp``) gives
Jᵀ v, one forward-mode pass (``jax.jvp``) gives J u. The traced kernel needs C of each
(vmapped, sharing one forward pass); the full kernel needs one. The data are processed in
blocks of ``block_size`` samples inside one ``lax.scan``, so memory is bounded by one
block's activations plus C parameter-sized vectors, whatever N.

Faster, when the features fit in memory (``matvec="features"``, or ``"auto"`` under
``memory_limit``): the structured eNTK rule of ``ntkbench.kernel`` gives, per sample, the
input x and output cotangents g_k of each linear / conv / embedding layer (and per-leaf
Jacobians of all other parameters). They are computed once for all N samples; then per
product, for each layer, M_k = Σ_i v_i Σ_t x̃_it ⊗ g_ikt (x̃ = [x, 1] with a bias) and
(K v)_i = Σ_k Σ_t x̃_itᵀ M_k g_ikt — two matmuls, ≈ 4 P N FLOPs for an MLP instead of
≈ 12 P N, at the cost of storing the features (≈ 16 kB per sample for a 64-1000-1000-1 MLP).

On top of kernel-vector products:

- :func:`top_eigenvalues` — the k largest eigenvalues (and eigenvectors) by Lanczos with full
  reorthogonalisation (``matfree``), by LOBPCG (``jax.experimental.sparse.linalg``), or by
  the Gram trick: K = M Mᵀ and the D × D matrix Mᵀ M have the same non-zero eigenvalues,
  with M = J (D = P) for the full kernel and M = [J_1 … J_C] (D = C·P) for the traced one;
  Mᵀ M is accumulated over blocks and is the cheaper route when D < N (·C).
- :func:`entropy_estimate` — the von Neumann entropy S = −Σ p ln p, p = λ / Tr K, by
  stochastic Lanczos quadrature (``matfree``) of tr(K ln K), with Tr K computed exactly
  from per-sample gradient norms: S = ln Tr K − tr(K ln K) / Tr K, with a standard error
  over the probes.

Example
-------
>>> import jax, equinox as eqx
>>> from ntkbench.linalg import top_eigenvalues, entropy_estimate
>>> model = eqx.nn.MLP(4, 2, 16, 2, key=jax.random.key(0))
>>> x = jax.random.normal(jax.random.key(1), (100, 4))
>>> top_eigenvalues(model, x, 3).shape
(3,)
>>> s, err = entropy_estimate(model, x, num_probes=8, key=jax.random.key(2))
"""

from __future__ import annotations

import functools
import math
import operator
import warnings
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, cast

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = [
    "kernel_matvec",
    "gram_matrix",
    "top_eigenvalues",
    "entropy_estimate",
    "EntropyEstimate",
]

_OUTPUTS = ("trace", "full")
_METHODS = ("auto", "lanczos", "lobpcg", "gram")
_MATVECS = ("auto", "features", "jvp")
_MEMORY_LIMIT = 3 * 2**30  # bytes of cached features "auto" allows
_DEFAULT_BLOCK = 1024
_GRAM_MAX_DIM = 8192  # "auto" uses the Gram trick only up to this D (D² floats in memory)


class EntropyEstimate(NamedTuple):
    """Stochastic estimate of the eNTK entropy (natural log) and its standard error."""

    entropy: Array
    stderr: Array


# ---------------------------------------------------------------------------
# Validation and set-up
# ---------------------------------------------------------------------------


def _as_model(model: Any) -> eqx.Module:
    from ntkbench.kernel import as_model

    return as_model(model)


def _check_x(x) -> Array:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"x: expected an array of shape (N, ...), got {type(x).__name__}")
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x: expected a batch of shape (N, ...) with N >= 1, got shape {x.shape}")
    return x


def _check_outputs(outputs: Any) -> Literal["trace", "full"]:
    if outputs not in _OUTPUTS:
        raise ValueError(f"outputs: expected one of {_OUTPUTS}, got {outputs!r}")
    return outputs


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return value


def _check_optional_positive_int(value: Any, name: str) -> int | None:
    return None if value is None else _check_positive_int(value, name)


def _split(model):
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def batch_fn(p, xb):  # (B, ...) -> (B, C)
        m = eqx.combine(p, static)
        return jax.vmap(lambda xi: jnp.ravel(m(xi)))(xb)

    return params, batch_fn


def _n_outputs(model, x) -> int:
    out = eqx.filter_eval_shape(lambda m, xi: jnp.ravel(m(xi)), model, x[0])
    return out.shape[0]


def _n_params(model) -> int:
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array)))


def _dtype(model, x):
    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    return jnp.result_type(*leaves, x.dtype) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.result_type(*leaves)


def _blocks(x: Array, block_size: int | None) -> tuple[Array, int]:
    """Pad x to a multiple of the block size (repeating x[0]) and reshape to (nb, bs, ...)."""
    n = x.shape[0]
    bs = min(n, block_size or _DEFAULT_BLOCK)
    nb = -(-n // bs)
    pad = nb * bs - n
    if pad:
        x = jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad, *x.shape[1:]))])
    return x.reshape(nb, bs, *x.shape[1:]), bs


# ---------------------------------------------------------------------------
# Jᵀ v and J u over blocks (traced inside jit)
# ---------------------------------------------------------------------------


def _tree_zeros(params, lead: tuple[int, ...]):
    return jax.tree_util.tree_map(lambda p: jnp.zeros(lead + p.shape, p.dtype), params)


def _jt(params, batch_fn, xb, vb, outputs: str, n_out: int):
    """Jᵀ v. vb: (nb, bs) for trace -> C-stacked params; (nb, bs, C) for full -> params."""
    eye = jnp.eye(n_out, dtype=vb.dtype)

    def body(acc, blk):
        xblk, vblk = blk
        _, vjp = jax.vjp(lambda p: batch_fn(p, xblk), params)
        if outputs == "trace":
            cot = vblk[None, :, None] * eye[:, None, :]  # (C, bs, C): v ⊗ e_c
            (g,) = jax.vmap(vjp)(cot)
        else:
            (g,) = vjp(vblk)
        return jax.tree_util.tree_map(jnp.add, acc, g), None

    lead = (n_out,) if outputs == "trace" else ()
    acc, _ = jax.lax.scan(body, _tree_zeros(params, lead), (xb, vb))
    return acc


def _j(params, batch_fn, xb, u, outputs: str):
    """J u. Trace: u C-stacked -> Σ_c J_c u_c, (nb, bs). Full: u params -> (nb, bs, C)."""

    def body(_, xblk):
        _, jvp = jax.linearize(lambda p: batch_fn(p, xblk), params)
        if outputs == "trace":
            t = jax.vmap(jvp)(u)  # (C, bs, C)
            return None, jnp.einsum("cic->i", t)
        return None, jvp(u)

    _, out = jax.lax.scan(body, None, xb)
    return out


def _kv(model, xb, n: int, outputs: str, n_out: int, v):
    """K v for one vector: v (n,) trace / (n*C,) full, unpadded and flat."""
    params, batch_fn = _split(model)
    nb, bs = xb.shape[:2]
    if outputs == "trace":
        vb = jnp.pad(v, (0, nb * bs - n)).reshape(nb, bs)
    else:
        vb = jnp.pad(v.reshape(n, n_out), ((0, nb * bs - n), (0, 0))).reshape(nb, bs, n_out)
    u = _jt(params, batch_fn, xb, vb, outputs, n_out)
    out = _j(params, batch_fn, xb, u, outputs)
    return out.reshape(nb * bs, -1)[:n].reshape(v.shape)


# ---------------------------------------------------------------------------
# Kernel operators: K v by jvp/vjp, or from cached per-layer features
# ---------------------------------------------------------------------------


class _JvpOperator(eqx.Module):
    """K v = J (Jᵀ v) by one vjp and one jvp per block of samples (memory: one block).

    ``xb`` (nb, bs, ...) is the padded, blocked input; ``n`` the number of real samples."""

    model: eqx.Module
    xb: Array
    n: int = eqx.field(static=True)
    outputs: str = eqx.field(static=True)
    n_out: int = eqx.field(static=True)

    def __call__(self, v: Array) -> Array:
        return _kv(self.model, self.xb, self.n, self.outputs, self.n_out, v)


class _GramSpec(NamedTuple):
    """Static description of one token-Gram layer's features (X, G) in a feature operator."""

    embedding: bool
    bias: bool
    vocab: int  # embedding vocabulary (0 for a dense layer)


class _FeatureOperator(eqx.Module):
    """K v contracted from per-sample features cached once for all N samples.

    ``feats`` holds, blocked as (nb, bs, ...), for each token-Gram layer X (T, d_in) (ids
    (T,) for an embedding) and G (K, T, d_out), then per-leaf Jacobians (K, p). Padded
    samples carry v = 0 and their outputs are dropped. One product costs ≈ 4 P N FLOPs for
    an MLP (two matmuls per layer) instead of ≈ 12 P N by jvp/vjp."""

    feats: list
    grams: tuple = eqx.field(static=True)  # _GramSpec per token-Gram layer
    n: int = eqx.field(static=True)
    outputs: str = eqx.field(static=True)
    n_out: int = eqx.field(static=True)

    def __call__(self, v: Array) -> Array:
        nb, bs = self.feats[0].shape[:2]
        full = self.outputs == "full"
        pad = nb * bs - self.n
        if full:
            vb = jnp.pad(v.reshape(self.n, self.n_out), ((0, pad), (0, 0))).reshape(nb, bs, self.n_out)
        else:
            vb = jnp.pad(v, (0, pad)).reshape(nb, bs)
        m = 2 * len(self.grams)
        # (token-Gram pairs (X, G), Jacobians), each (nb, bs, ...): scanned over blocks
        blocks = ([(self.feats[2 * i], self.feats[2 * i + 1]) for i in range(len(self.grams))], self.feats[m:])

        def moments(fs, vblk):  # one block's Σ_i v_i ⊗ features_i, per layer / leaf
            grams = [_gram_moment(s, X, G, vblk, full) for s, (X, G) in zip(self.grams, fs[0], strict=True)]
            return grams + [_jac_moment(J, vblk, full) for J in fs[1]]

        first = jax.tree_util.tree_map(lambda a: a[0], (blocks, vb))
        init = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(moments, *first))

        def step(acc, blk):
            return jax.tree_util.tree_map(jnp.add, acc, moments(*blk)), None

        acc, _ = jax.lax.scan(step, init, (blocks, vb))

        def apply(_, fs):
            grams = zip(self.grams, fs[0], acc[: len(self.grams)], strict=True)
            terms = [_gram_apply(s, X, G, mom, full) for s, (X, G), mom in grams]
            terms += [_jac_apply(J, mom, full) for J, mom in zip(fs[1], acc[len(self.grams) :], strict=True)]
            return None, functools.reduce(operator.add, terms)

        _, out = jax.lax.scan(apply, None, blocks)  # (nb, bs) or (nb, bs, K)
        return out.reshape(nb * bs, -1)[: self.n].reshape(v.shape)


def _gram_moment(s: _GramSpec, X: Array, G: Array, v: Array, full: bool):
    """One block's Σ_i v_i Σ_t x̃_it ⊗ g_ikt of a token-Gram layer.

    X (b, T, d_in) / ids (b, T), G (b, K, T, d_out), v (b,) trace / (b, K) full. Returns
    (weight moment, bias moment): dense trace ((d_in, K·d_out), (K·d_out,)), full
    ((d_in, d_out), (d_out,)); embedding trace (V, K·d_out), full (V, d_out)."""
    b, k, t, o = G.shape
    if full:
        w = jnp.einsum("bk,bkto->bto", v, G).reshape(b * t, o)  # Σ_k v_ik g_ikt
    else:
        g = G.transpose(0, 2, 1, 3).reshape(b * t, k * o)
        w = jnp.repeat(v, t)[:, None] * g
    if s.embedding:
        return jnp.zeros((s.vocab, w.shape[1]), w.dtype).at[X.reshape(b * t)].add(w)
    xf = X.reshape(b * t, -1)
    mom = xf.T @ w
    return (mom, jnp.sum(w, axis=0)) if s.bias else mom


def _gram_apply(s: _GramSpec, X: Array, G: Array, mom, full: bool) -> Array:
    """(K v)_i (trace, (b,)) or (K v)_ik (full, (b, K)) of one token-Gram layer from its moment."""
    b, k, t, o = G.shape
    if s.embedding:
        c = mom[X.reshape(b * t)]
    else:
        xf = X.reshape(b * t, -1)
        c = xf @ mom[0] + mom[1][None] if s.bias else xf @ mom
    if full:  # c (b·t, d_out)
        return jnp.einsum("bto,bkto->bk", c.reshape(b, t, o), G)
    g = G.transpose(0, 2, 1, 3).reshape(b, t * k * o)
    return jnp.sum(c.reshape(b, t * k * o) * g, axis=1)


def _jac_moment(J: Array, v: Array, full: bool) -> Array:
    """Σ_j v_j J_jk (trace, (K·p,)) or Σ_jl v_jl J_jl (full, (p,)); J (b, K, p)."""
    b, k, p = J.shape
    if full:
        return v.reshape(b * k) @ J.reshape(b * k, p)
    return v @ J.reshape(b, k * p)


def _jac_apply(J: Array, mom: Array, full: bool) -> Array:
    b, k, p = J.shape
    if full:
        return (J.reshape(b * k, p) @ mom).reshape(b, k)
    return J.reshape(b, k * p) @ mom


def _feature_layout(model, x: Array, full: bool):
    """(feature map, gram specs) of ``kernel.structured_features`` for this model; routes
    as for the N × N kernel. None when the model has no structured layer."""
    from ntkbench.kernel import structured_features

    n = x.shape[0]
    try:
        feats_fn, layers = structured_features(model, x.shape[1:], x.dtype, n, n, full)
    except Exception:  # noqa: BLE001 - models the structured rule cannot trace: jvp path
        return None
    if not layers:
        return None
    grams = tuple(
        _GramSpec(L.kind == "embedding", bool(L.bias), L.d_in if L.kind == "embedding" else 0)
        for L in layers
        if L.route == "gram"
    )
    return feats_fn, grams


def _feature_bytes(feats_fn, x: Array, n_padded: int) -> int:
    shapes = jax.eval_shape(feats_fn, jax.ShapeDtypeStruct(x.shape[1:], x.dtype))
    return n_padded * sum(math.prod(s.shape) * jnp.dtype(s.dtype).itemsize for s in shapes)


@eqx.filter_jit
def _features_jit(model, xb, n: int, full: bool):
    """Features of all blocks, (nb, bs, ...) each; routes chosen as in ``_feature_layout``."""
    from ntkbench.kernel import structured_features

    feats_fn, _ = structured_features(model, xb.shape[2:], xb.dtype, n, n, full)
    return jax.lax.map(jax.vmap(feats_fn), xb)


def _operator(model, x: Array, outputs: str, block_size: int | None, matvec: str, memory_limit):
    """The K v operator for ``matvec`` ("auto": features when the model has structured
    layers and they fit ``memory_limit`` bytes, else jvp/vjp)."""
    if matvec not in _MATVECS:
        raise ValueError(f"matvec: expected one of {_MATVECS}, got {matvec!r}")
    if isinstance(memory_limit, bool) or not isinstance(memory_limit, (int, float)) or memory_limit <= 0:
        raise ValueError(f"memory_limit: expected a positive number of bytes, got {memory_limit!r}")
    n, n_out = x.shape[0], _n_outputs(model, x)
    xb, _ = _blocks(x, block_size)
    if matvec != "jvp":
        layout = _feature_layout(model, x, outputs == "full")
        if layout is None and matvec == "features":
            raise ValueError(
                "matvec: 'features' needs a model with structured (linear, conv, "
                "embedding) layers the structured eNTK rule can tap"
            )
        if layout is not None:
            feats_fn, grams = layout
            size = _feature_bytes(feats_fn, x, xb.shape[0] * xb.shape[1])
            if matvec == "features" or size <= memory_limit:
                feats = _features_jit(model, xb, n, outputs == "full")
                return _FeatureOperator(list(feats), grams, n, outputs, n_out)
    return _JvpOperator(model, xb, n, outputs, n_out)


@eqx.filter_jit
def _matvec_jit(op, v):
    return op(v)


def kernel_matvec(
    model: Any,
    x: Float[Array, "n ..."],
    *,
    outputs: Literal["trace", "full"] = "trace",
    block_size: int | None = None,
    matvec: Literal["auto", "features", "jvp"] = "auto",
    memory_limit: float = _MEMORY_LIMIT,
) -> Callable[[Array], Array]:
    """Kernel-vector products K v = J (Jᵀ v) of the eNTK of ``model`` on ``x``, no N×N matrix.

    Parameters
    ----------
    model : Equinox module called on one sample, or ``(apply_fn, params)``.
    x : (N, ...) inputs.
    outputs : ``"trace"`` — K_trace = Σ_c J_c J_cᵀ, v of shape (N,); ``"full"`` — the
        (N·C) × (N·C) kernel, v of shape (N, C) (entry [i, c] is sample i, output c).
    block_size : samples per block (default min(N, 1024)); bounds peak memory.
    matvec : how K v is computed. ``"jvp"``: one vjp and one jvp through the model per
        block (≈ 12 P N FLOPs, memory one block). ``"features"``: per-layer features of all
        N samples (inputs and output cotangents of each linear / conv / embedding layer,
        ``ntkbench.kernel``'s structured rule, Jacobians for the other parameters) are
        computed once and contracted per product (≈ 4 P N FLOPs for an MLP; memory the
        features). ``"auto"``: features when the model has such layers and they fit in
        ``memory_limit`` bytes, else jvp.
    memory_limit : bytes the cached features may take with ``matvec="auto"`` (default 3 GiB).

    Returns
    -------
    A function v -> K v (same shape as v), compiled once on first call; one vector per
    call (``jax.vmap`` it for a block of vectors).

    Example
    -------
    >>> import jax, jax.numpy as jnp, equinox as eqx
    >>> model = eqx.nn.MLP(3, 2, 8, 1, key=jax.random.key(0))
    >>> x = jnp.ones((5, 3))
    >>> kernel_matvec(model, x)(jnp.ones(5)).shape
    (5,)
    >>> kernel_matvec(model, x, outputs="full")(jnp.ones((5, 2))).shape
    (5, 2)
    """
    model = _as_model(model)
    x = _check_x(x)
    outputs = _check_outputs(outputs)
    block_size = _check_optional_positive_int(block_size, "block_size")
    n, n_out = x.shape[0], _n_outputs(model, x)
    op = _operator(model, x, outputs, block_size, matvec, memory_limit)
    expected = (n,) if outputs == "trace" else (n, n_out)

    def kv(v: Array) -> Array:
        v = jnp.asarray(v)
        if v.shape != expected:
            raise ValueError(f"v: expected shape {expected} for outputs={outputs!r}, got {v.shape}")
        return _matvec_jit(op, v.reshape(-1)).reshape(expected)

    return kv


# ---------------------------------------------------------------------------
# Gram trick
# ---------------------------------------------------------------------------


@eqx.filter_jit
def _gram_jit(model, xb, n: int, outputs: str, n_out: int):
    params, batch_fn = _split(model)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    nb, bs = xb.shape[:2]
    mask = (jnp.arange(nb * bs) < n).reshape(nb, bs).astype(flat.dtype)

    def body(g, blk):
        xblk, mblk = blk
        jac = jax.jacrev(lambda q: batch_fn(unravel(q), xblk))(flat)  # (bs, C, P)
        jac = jac * mblk[:, None, None]
        if outputs == "trace":
            m = jac.reshape(bs, -1)  # rows [J_1(x_i) … J_C(x_i)], (bs, C·P)
        else:
            m = jac.reshape(-1, jac.shape[-1])  # (bs·C, P)
        return g + m.T @ m, None

    dim = flat.size * (n_out if outputs == "trace" else 1)
    g, _ = jax.lax.scan(body, jnp.zeros((dim, dim), flat.dtype), (xb, mask))
    return g


def gram_matrix(
    model: Any,
    x: Float[Array, "n ..."],
    *,
    outputs: Literal["trace", "full"] = "full",
    block_size: int | None = None,
) -> Float[Array, "d d"]:
    """The D × D Gram matrix Mᵀ M whose non-zero eigenvalues are those of the eNTK.

    ``outputs="full"``: M = J ((N·C) × P), D = P, Mᵀ M = Σ_i Σ_c ∇f_c(x_i) ∇f_c(x_i)ᵀ.
    ``outputs="trace"``: M = [J_1 … J_C] (N × C·P), D = C·P, so that M Mᵀ = Σ_c J_c J_cᵀ.
    Parameters are flattened in ``jax.flatten_util.ravel_pytree`` order (output-major for
    trace). Accumulated over blocks of ``block_size`` samples (memory: one block's Jacobian
    plus D² floats). Worth it when D is smaller than the kernel's side N (·C).

    Example
    -------
    >>> import jax, jax.numpy as jnp, equinox as eqx
    >>> model = eqx.nn.MLP(2, 1, 3, 1, key=jax.random.key(0))  # P = 13
    >>> gram_matrix(model, jnp.ones((50, 2))).shape
    (13, 13)
    """
    model = _as_model(model)
    x = _check_x(x)
    outputs = _check_outputs(outputs)
    block_size = _check_optional_positive_int(block_size, "block_size")
    xb, _ = _blocks(x, block_size)
    return _gram_jit(model, xb, x.shape[0], outputs, _n_outputs(model, x))


@eqx.filter_jit
def _gram_vectors_jit(model, xb, n: int, outputs: str, n_out: int, w, lam):
    """Kernel eigenvectors J w / sqrt(λ) from Gram eigenvectors w (D, k)."""
    params, batch_fn = _split(model)
    _, unravel = jax.flatten_util.ravel_pytree(params)

    def one(wi):
        if outputs == "trace":
            u = jax.vmap(unravel)(wi.reshape(n_out, -1))
        else:
            u = unravel(wi)
        out = _j(params, batch_fn, xb, u, outputs)
        return out.reshape(xb.shape[0] * xb.shape[1], -1)[:n].reshape(-1)

    vecs = jax.lax.map(one, w.T).T  # (n_kernel, k)
    return vecs / jnp.sqrt(lam)[None, :]


# ---------------------------------------------------------------------------
# Top eigenvalues
# ---------------------------------------------------------------------------


@eqx.filter_jit
def _lanczos_jit(op, v0, m: int) -> tuple[Array, Array, Array, Array]:
    from matfree import decomp

    tridiag = decomp.tridiag_sym(m, materialize=True, reortho="full", custom_vjp=False)

    dyn, static = eqx.partition(op, eqx.is_array)

    def mv(v, dyn):
        return eqx.combine(dyn, static)(v)

    q, t, r, _ = tridiag(mv, v0, dyn)  # q: (m, n_kernel) rows = Lanczos vectors
    theta, s = jnp.linalg.eigh(t)
    theta, s = theta[::-1], s[:, ::-1]  # descending
    resid = jnp.linalg.norm(r) * jnp.abs(s[-1, :])  # ‖K y − θ y‖ for each Ritz pair
    return theta, s, cast(Array, q), resid  # materialize=True: q is the (m, n) array


@eqx.filter_jit
def _lobpcg_jit(op, x0, iters: int, tol):
    from jax.experimental.sparse.linalg import lobpcg_standard

    def mv(block):  # (n_kernel, k)
        return jax.vmap(op, in_axes=1, out_axes=1)(block)

    return lobpcg_standard(mv, x0, m=iters, tol=tol)


def _ritz_errors(theta, resid):
    """Error bound per Ritz value: min(residual, residual² / gap to the other Ritz values)."""
    diff = jnp.abs(theta[:, None] - theta[None, :]) + jnp.diag(jnp.full(theta.shape, jnp.inf))
    gap = jnp.min(diff, axis=1)
    return jnp.minimum(resid, resid**2 / gap)


def top_eigenvalues(
    model: Any,
    x: Float[Array, "n ..."],
    k: int,
    *,
    outputs: Literal["trace", "full"] = "trace",
    method: Literal["auto", "lanczos", "lobpcg", "gram"] = "auto",
    vectors: bool = False,
    block_size: int | None = None,
    key: Array | None = None,
    tol: float | None = None,
    max_matvecs: int | None = None,
    matvec: Literal["auto", "features", "jvp"] = "auto",
    memory_limit: float = _MEMORY_LIMIT,
    depth: int | None = None,
):
    """The k largest eigenvalues of the eNTK of ``model`` on ``x``, without the N×N kernel.

    Parameters
    ----------
    model : Equinox module called on one sample, or ``(apply_fn, params)``.
    x : (N, ...) inputs.
    k : how many eigenvalues, 1 ≤ k ≤ N (trace) or N·C (full).
    outputs : ``"trace"`` (N × N kernel Σ_c J_c J_cᵀ) or ``"full"`` ((N·C) × (N·C)).
    method : ``"lanczos"`` (matfree Lanczos, full reorthogonalisation; the Krylov depth
        doubles until every Ritz value's error bound is below ``tol`` relative to it),
        ``"lobpcg"`` (jax.experimental.sparse.linalg.lobpcg_standard, needs N ≥ 5k),
        ``"gram"`` (eigh of the D × D Gram matrix, D = P full / C·P trace), ``"auto"``
        (gram when D ≤ min(kernel side, 8192), else lanczos).
    vectors : also return eigenvectors, as columns (N, k) for trace, (N·C, k) for full with
        row index ``i * C + c``.
    block_size : samples per block (default min(N, 1024)).
    key : PRNG key of the random start vector(s) (default ``jax.random.key(0)``).
    tol : relative accuracy of the eigenvalues, as an a-posteriori Ritz error bound
        (default 1e-4 in float32, 1e-10 in float64).
    max_matvecs : cap on the Lanczos depth (default the kernel side).
    depth : the first Lanczos depth tried (default 2k + 20; it doubles while any of the top
        k Ritz values misses ``tol``). Each step is one K v, so a depth that converges at
        once is the cost: fast-decaying eNTK spectra often need less than 2k + 20 (e.g.
        k + 56 = 120 for k = 64 on the MLPs of ``benchmarks/kernel_free_scaling.py``),
        and a depth that is too small costs a restart at twice the depth.
    matvec, memory_limit : how K v is computed, as in :func:`kernel_matvec` (not used by
        ``method="gram"``).

    Returns
    -------
    eigenvalues (k,) in descending order; with ``vectors=True`` ``(eigenvalues, eigenvectors)``.

    Example
    -------
    >>> import jax, equinox as eqx
    >>> model = eqx.nn.MLP(4, 1, 16, 2, key=jax.random.key(0))
    >>> x = jax.random.normal(jax.random.key(1), (64, 4))
    >>> top_eigenvalues(model, x, 4, method="lanczos").shape
    (4,)
    """
    model = _as_model(model)
    x = _check_x(x)
    outputs = _check_outputs(outputs)
    if method not in _METHODS:
        raise ValueError(f"method: expected one of {_METHODS}, got {method!r}")
    block_size = _check_optional_positive_int(block_size, "block_size")
    max_matvecs = _check_optional_positive_int(max_matvecs, "max_matvecs")
    n, n_out = x.shape[0], _n_outputs(model, x)
    side = n if outputs == "trace" else n * n_out
    k = _check_positive_int(k, "k")
    if k > side:
        raise ValueError(f"k: at most the kernel size {side} (N={n}, outputs={outputs!r}), got {k}")
    if tol is not None and not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol: expected a positive number, got {tol!r}")
    dtype = _dtype(model, x)
    if tol is None:
        tol = 1e-10 if dtype == jnp.float64 else 1e-4
    key = jax.random.key(0) if key is None else key
    dim = _n_params(model) * (n_out if outputs == "trace" else 1)
    if method == "auto":
        method = "gram" if dim <= min(side, _GRAM_MAX_DIM) else "lanczos"
    xb, _ = _blocks(x, block_size)

    if method == "gram":
        if vectors and k > dim:
            raise ValueError(
                f"k: with method='gram' and vectors=True, at most the Gram size {dim}; "
                f"the other {side - dim} eigenvalues are exactly zero"
            )
        g = _gram_jit(model, xb, n, outputs, n_out)
        lam, w = jnp.linalg.eigh(g)
        lam, w = lam[::-1][: min(k, dim)], w[:, ::-1][:, : min(k, dim)]
        lam = jnp.concatenate([lam, jnp.zeros(k - lam.shape[0], lam.dtype)])
        if not vectors:
            return lam
        return lam, _gram_vectors_jit(model, xb, n, outputs, n_out, w, lam)

    if method == "lobpcg":
        if side < 5 * k:
            raise ValueError(f"k: method='lobpcg' needs the kernel size {side} >= 5·k = {5 * k}")
        x0 = jax.random.normal(key, (side, k), dtype)
        iters = max_matvecs or 200
        theta, u, _ = _lobpcg_jit(_operator(model, x, outputs, block_size, matvec, memory_limit), x0, iters, tol)
        return (theta, u) if vectors else theta

    cap = min(side, max_matvecs or side)
    depth = _check_optional_positive_int(depth, "depth")
    if depth is not None and depth < k:
        raise ValueError(f"depth: at least k = {k} Lanczos steps, got {depth}")
    op = _operator(model, x, outputs, block_size, matvec, memory_limit)
    lam, vecs, converged, rel_err, m = _lanczos_top(op, side, k, key, tol, cap, dtype, vectors, depth)
    if not converged and m < side:
        warnings.warn(
            f"top_eigenvalues: not converged to tol={tol} within {m} Lanczos steps "
            f"(max relative error bound {rel_err:.2e}); raise max_matvecs or tol",
            RuntimeWarning,
            stacklevel=2,
        )
    return (lam, vecs) if vectors else lam


def _lanczos_top(op, side, k, key, tol, cap, dtype, vectors, depth=None):
    """Lanczos with a Krylov depth that doubles (from ``depth``, default 2k + 20) until the
    top k converge."""
    m = min(cap, depth if depth is not None else max(2 * k + 20, 40))
    v0 = jax.random.normal(key, (side,), dtype)
    while True:
        theta, s, q, resid = _lanczos_jit(op, v0, m)
        if not bool(jnp.all(jnp.isfinite(theta))):
            raise FloatingPointError(
                "top_eigenvalues: Lanczos produced NaN/Inf (the kernel may have rank < "
                f"{m}; try method='gram' or a smaller k)"
            )
        rel = _ritz_errors(theta, resid)[:k] / jnp.abs(theta[:k])
        converged = bool(jnp.all(rel <= tol))
        if converged or m >= cap:
            break
        m = min(cap, 2 * m)
    vecs = q.T @ s[:, :k] if vectors else None
    return theta[:k], vecs, converged, float(jnp.max(rel)), m


# ---------------------------------------------------------------------------
# Entropy by stochastic Lanczos quadrature
# ---------------------------------------------------------------------------


def _xlogx(t):
    safe = jnp.where(t > 0, t, 1.0)
    return jnp.where(t > 0, t * jnp.log(safe), 0.0)


@eqx.filter_jit
def _slq_jit(op, probes, u, order: int, probe_batch: int):
    from matfree import decomp, funm

    integrand = funm.monte_carlo_funm_sym(
        funm.dense_funm_sym_eigh(_xlogx),
        decomp.tridiag_sym(order, materialize=True, reortho="full", custom_vjp=False),
    )

    dyn, static = eqx.partition(op, eqx.is_array)

    def project(v):  # (I − U Uᵀ) v
        return v - u @ (u.T @ v)

    def mv(v, dyn):
        return project(eqx.combine(dyn, static)(project(v)))

    samples = jax.lax.map(lambda v: integrand(mv, project(v), dyn), probes, batch_size=probe_batch)
    return jnp.mean(samples), jnp.std(samples, ddof=1) / jnp.sqrt(samples.shape[0])


def entropy_estimate(
    model: Any,
    x: Float[Array, "n ..."],
    *,
    num_probes: int = 16,
    lanczos_order: int = 30,
    key: Array | None = None,
    outputs: Literal["trace", "full"] = "trace",
    deflate: int | None = None,
    block_size: int | None = None,
    probe_batch: int = 1,
    trace: float | Array | None = None,
    eigenpairs: tuple[Array, Array] | None = None,
    matvec: Literal["auto", "features", "jvp"] = "auto",
    memory_limit: float = _MEMORY_LIMIT,
) -> EntropyEstimate:
    """Von Neumann entropy of the eNTK by stochastic Lanczos quadrature, with an error bar.

    S = −Σ p ln p with p_i = λ_i / Tr K equals ln Tr K − tr(K ln K) / Tr K.

    - Tr K is exact, from per-sample gradient norms (``ntkbench.kernel.entk_diag``), unless
      ``trace`` is given.
    - tr f(K), f(λ) = λ ln λ, is split as Σ_{i≤r} f(λ_i) + tr f(P K P): the top r = ``deflate``
      eigenpairs come from Lanczos (:func:`top_eigenvalues`), P = I − U Uᵀ projects them out,
      and the remainder is estimated with ``num_probes`` Rademacher probes z as the mean of
      (Pz)ᵀ f(PKP) (Pz), each by ``lanczos_order`` Lanczos steps (Gauss quadrature;
      ``matfree``). Deflation matters: an eNTK's top eigenvector carries most of Tr K, and
      without it the probe variance is of the order of the estimate itself.

    Parameters
    ----------
    model, x, outputs, block_size : as in :func:`top_eigenvalues`.
    num_probes : number of random probes (≥ 2, for the error bar).
    lanczos_order : Lanczos steps per probe; matvecs ≈ probes × order (+ the deflation).
    key : PRNG key (default ``jax.random.key(0)``).
    deflate : number of top eigenpairs treated exactly (default min(16, side − order, side/4)).
    probe_batch : probes processed together (faster, memory × probe_batch).
    trace : Tr K if already known.
    eigenpairs : ``(eigenvalues (r,), eigenvectors (side, r))`` already computed by
        :func:`top_eigenvalues` with ``vectors=True``; used for the deflation instead of a
        new Lanczos run (``deflate`` is then ignored).
    matvec, memory_limit : how K v is computed, as in :func:`kernel_matvec`.

    Returns
    -------
    ``EntropyEstimate(entropy, stderr)``, a pair of scalars (natural log). ``stderr`` is the
    standard error over probes; it does not include the quadrature bias, which is small
    once ``lanczos_order`` resolves the spectrum.

    Example
    -------
    >>> import jax, equinox as eqx
    >>> model = eqx.nn.MLP(4, 1, 16, 2, key=jax.random.key(0))
    >>> x = jax.random.normal(jax.random.key(1), (64, 4))
    >>> s, err = entropy_estimate(model, x, num_probes=4, lanczos_order=10)
    >>> bool(0 < s < jax.numpy.log(64))
    True
    """
    model = _as_model(model)
    x = _check_x(x)
    outputs = _check_outputs(outputs)
    block_size = _check_optional_positive_int(block_size, "block_size")
    num_probes = _check_positive_int(num_probes, "num_probes")
    if num_probes < 2:
        raise ValueError(f"num_probes: at least 2 for a standard error, got {num_probes}")
    lanczos_order = _check_positive_int(lanczos_order, "lanczos_order")
    probe_batch = _check_positive_int(probe_batch, "probe_batch")
    n, n_out = x.shape[0], _n_outputs(model, x)
    side = n if outputs == "trace" else n * n_out
    if lanczos_order > side:
        raise ValueError(f"lanczos_order: at most the kernel size {side}, got {lanczos_order}")
    if eigenpairs is not None:
        lam_given, u_given = (jnp.asarray(a) for a in eigenpairs)
        if lam_given.ndim != 1 or u_given.shape != (side, lam_given.shape[0]):
            raise ValueError(
                f"eigenpairs: expected (eigenvalues (r,), eigenvectors ({side}, r)), got shapes "
                f"{lam_given.shape} and {u_given.shape}"
            )
        if lam_given.shape[0] + lanczos_order > side:
            raise ValueError(f"eigenpairs: r + lanczos_order must be at most the kernel size {side}")
        deflate = 0
    elif deflate is None:
        deflate = max(0, min(16, side - lanczos_order, side // 4))
    elif isinstance(deflate, bool) or not isinstance(deflate, int) or deflate < 0:
        raise ValueError(f"deflate: expected a non-negative integer, got {deflate!r}")
    elif deflate + lanczos_order > side:
        raise ValueError(
            f"deflate: deflate + lanczos_order must be at most the kernel size {side}, got {deflate} + {lanczos_order}"
        )
    dtype = _dtype(model, x)
    key = jax.random.key(0) if key is None else key
    key_defl, key_probe = jax.random.split(key)
    if trace is None:
        from ntkbench.kernel import entk_diag

        trace = jnp.sum(entk_diag(model, x, block_size=block_size))
    trace = jnp.asarray(trace, dtype)
    if not bool(jnp.isfinite(trace)) or not bool(trace > 0):
        raise ValueError(f"trace: the kernel trace must be positive and finite, got {float(trace)}")
    op = _operator(model, x, outputs, block_size, matvec, memory_limit)
    if eigenpairs is not None:
        u, head = u_given.astype(dtype), jnp.sum(_xlogx(lam_given.astype(dtype)))
    elif deflate:
        tol = 1e-10 if dtype == jnp.float64 else 1e-4
        lam, u, *_ = _lanczos_top(op, side, deflate, key_defl, tol, side, dtype, True)
        head = jnp.sum(_xlogx(lam))
    else:
        u, head = jnp.zeros((side, 0), dtype), jnp.zeros((), dtype)
    probes = jax.random.rademacher(key_probe, (num_probes, side), dtype)
    mean, sem = _slq_jit(op, probes, u, lanczos_order, min(probe_batch, num_probes))
    return EntropyEstimate(jnp.log(trace) - (head + mean) / trace, sem / trace)
