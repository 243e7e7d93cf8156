"""Measures on eNTKs and their spectra: entropy, trace, effective rank, alignment, ...

All functions take arrays and return arrays (JAX), batched over leading axes where that is
natural (a kernel argument is (..., N, N); an eigenvalue argument is (..., N)). A kernel
with NaN or Inf is reported with a ``ValueError`` naming the argument, never silently
turned into a number.
"""

from __future__ import annotations

import functools
import math
import operator
import warnings
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, overload

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jaxtyping import Array, Float

__all__ = [
    "spectrum",
    "entropy",
    "trace",
    "effective_rank",
    "kernel_alignment",
    "kernel_distance",
    "relative_change",
    "residual_projection",
    "cosine_normalize",
    "magnitude_entropy",
    "kernel_regression",
    "flatten_full",
    "lnp",
    "LNP",
]

_CLIP = 1e-14  # relative: eigenvalues below _CLIP * max are round-off


def _kernel(K: Any, name: str = "K", *, check_finite: bool = True) -> Array:
    if not isinstance(K, (jax.Array, np.ndarray)):
        try:
            K = jnp.asarray(K)
        except TypeError as e:
            raise TypeError(f"{name}: expected a square array (..., N, N), got {type(K).__name__}") from e
    K = jnp.asarray(K)
    if K.ndim < 2 or K.shape[-1] != K.shape[-2]:
        raise ValueError(f"{name}: expected a square kernel (..., N, N), got shape {K.shape}")
    if K.shape[-1] == 0:
        raise ValueError(f"{name}: empty kernel (N = 0)")
    if not jnp.issubdtype(K.dtype, jnp.inexact):
        K = K.astype(jnp.result_type(float))
    if check_finite and not isinstance(K, Tracer) and not bool(jnp.all(jnp.isfinite(K))):
        raise ValueError(f"{name}: the kernel contains NaN or Inf")
    return K


def _eigenvalues(eigenvalues: Any, name: str = "eigenvalues") -> Array:
    lam = jnp.asarray(eigenvalues)
    if lam.ndim < 1 or lam.shape[-1] == 0:
        raise ValueError(f"{name}: expected eigenvalues (..., N) with N ≥ 1, got shape {lam.shape}")
    if not jnp.issubdtype(lam.dtype, jnp.inexact):
        lam = lam.astype(jnp.result_type(float))
    if not isinstance(lam, Tracer) and not bool(jnp.all(jnp.isfinite(lam))):
        raise ValueError(f"{name}: contains NaN or Inf")
    return lam


def _lapack_eigvalsh(sym: Array) -> Array:
    """Ascending eigenvalues by LAPACK's ?syevd WITHOUT eigenvectors (jobz = "N"), on the
    CPU; ``jnp.linalg.eigvalsh`` asks ?syevd for the eigenvectors too (N = 128 float32:
    0.46 vs 0.77 ms), which a recording pays every time."""
    target = _lapack.prepare_lapack_call("syevd_ffi", sym.dtype)  # what jnp.linalg calls
    out = (
        jax.ShapeDtypeStruct(sym.shape, sym.dtype),  # the input, overwritten (not eigenvectors)
        jax.ShapeDtypeStruct(sym.shape[:-1], sym.dtype),
        jax.ShapeDtypeStruct(sym.shape[:-2], jnp.int32),
    )
    call = jax.ffi.ffi_call(target, out, input_output_aliases={0: 0}, vmap_method="broadcast_all")
    _, w, info = call(sym, mode=np.uint8(ord("N")), uplo=np.uint8(ord("L")))
    return jnp.where((info == 0)[..., None], w, jnp.nan)  # as jnp.linalg: NaN where LAPACK failed


@jax.custom_jvp
def _eigvalsh(sym: Array) -> Array:
    """``jnp.linalg.eigvalsh`` of a symmetric (..., N, N) array (ascending), without the
    eigenvectors on the CPU for float32/float64; differentiable like it."""
    if sym.dtype not in (jnp.float32, jnp.float64) or not _HAS_LAPACK_FFI:
        return jnp.linalg.eigvalsh(sym)
    return jax.lax.platform_dependent(sym, cpu=_lapack_eigvalsh, default=jnp.linalg.eigvalsh)


@_eigvalsh.defjvp
def _eigvalsh_jvp(primals, tangents):
    (sym,), (dsym,) = primals, tangents
    lam, V = jnp.linalg.eigh(sym)  # dλ_j = v_jᵀ dK v_j
    return lam, jnp.einsum("...ij,...ik,...kj->...j", V, dsym, V)


try:  # the FFI targets jaxlib registers for jnp.linalg on the CPU (private: checked here)
    from jax._src.lib import lapack as _lapack  # pyright: ignore[reportPrivateImportUsage]

    _HAS_LAPACK_FFI = callable(getattr(_lapack, "prepare_lapack_call", None)) and hasattr(jax, "ffi")
except ImportError:  # pragma: no cover - a jaxlib without it: jnp.linalg.eigvalsh
    _HAS_LAPACK_FFI = False


def flatten_full(K: Float[Array, "n1 n2 k k"]) -> Float[Array, "n1*k n2*k"]:
    """Flatten a full kernel (N1, N2, K, K) sample-major to (N1·K, N2·K).

    Example
    -------
    >>> flatten_full(jnp.ones((2, 3, 4, 4))).shape
    (8, 12)
    """
    K = jnp.asarray(K)
    if K.ndim != 4 or K.shape[2] != K.shape[3]:
        raise ValueError(f"K: expected a full kernel (N1, N2, K, K), got shape {K.shape}")
    n1, n2, k, _ = K.shape
    return K.transpose(0, 2, 1, 3).reshape(n1 * k, n2 * k)


@overload
def spectrum(
    K: Float[Array, "... n n"], k: int | None = None, vectors: Literal[False] = False
) -> Float[Array, "... k"]: ...
@overload
def spectrum(
    K: Float[Array, "... n n"], k: int | None = None, *, vectors: Literal[True]
) -> tuple[Float[Array, "... k"], Float[Array, "... n k"]]: ...
@overload
def spectrum(
    K: Float[Array, "... n n"], k: int | None = None, vectors: bool = False
) -> Float[Array, "... k"] | tuple[Float[Array, "... k"], Float[Array, "... n k"]]: ...
def spectrum(
    K: Float[Array, "... n n"], k: int | None = None, vectors: bool = False
) -> Float[Array, "... k"] | tuple[Float[Array, "... k"], Float[Array, "... n k"]]:
    """Eigenvalues of a symmetric kernel in DESCENDING order (eigen_index 0 = largest).

    Parameters
    ----------
    K : (..., N, N) symmetric kernel (symmetrised as (K + Kᵀ)/2 against round-off).
    k : keep the top k (default: all N).
    vectors : also return the eigenvectors, as columns (..., N, k), paired with the
        eigenvalues: ``K @ V[:, i] == λ[i] * V[:, i]``.

    Example
    -------
    >>> lam, V = spectrum(jnp.diag(jnp.array([1.0, 3.0, 2.0])), vectors=True)
    >>> lam.tolist()
    [3.0, 2.0, 1.0]
    """
    K = _kernel(K)
    n = K.shape[-1]
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n):
        raise ValueError(f"k: expected an integer in [1, {n}] or None, got {k!r}")
    sym = 0.5 * (K + jnp.swapaxes(K, -1, -2))
    if vectors:
        lam, V = jnp.linalg.eigh(sym)
        lam, V = lam[..., ::-1], V[..., ::-1]
        if k is not None:
            lam, V = lam[..., :k], V[..., :k]
        return lam, V
    lam = _eigvalsh(sym)[..., ::-1]
    return lam if k is None else lam[..., :k]


def _probabilities(lam: Array) -> Array:
    top = jnp.max(jnp.abs(lam), axis=-1, keepdims=True)
    lam = jnp.where(lam > _CLIP * top, lam, 0.0)
    total = jnp.sum(lam, axis=-1, keepdims=True)
    return lam / jnp.where(total > 0, total, 1.0)


def _shannon(p: Array) -> Array:
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)


def _undefined_where_zero(S: Array, total: Array, what: str) -> Array:
    """NaN where the distribution has no mass (``total`` ≤ 0: an all-zero spectrum, a kernel
    without gradient), with a ``RuntimeWarning`` when the values are concrete (not traced):
    such an entropy is undefined, and a silent 0 would read as "one direction dominates"."""
    empty = total <= 0
    if not isinstance(empty, Tracer) and bool(jnp.any(empty)):
        warnings.warn(
            f"{what}: the spectrum is all zero (a kernel without gradient, e.g. a dead network); "
            "its entropy is undefined and returned as NaN",
            RuntimeWarning,
            stacklevel=3,
        )
    return jnp.where(empty, jnp.nan, S)


def entropy(eigenvalues: Float[Array, "... n"], normalize: bool = False) -> Float[Array, "..."]:
    """Von Neumann entropy S = −Σ p_i ln p_i of p_i = λ_i / Σλ (natural log).

    Eigenvalues below 1e-14 × the largest (round-off, including tiny negatives) count as 0,
    so round-off never makes it NaN. ``normalize=True`` divides by ln N (N = number of
    eigenvalues), giving S / ln N ∈ [0, 1].

    An all-zero spectrum (nothing above round-off: a kernel without gradient, e.g. a dead
    network) has no distribution p: the entropy is NaN, with a ``RuntimeWarning`` when
    called outside ``jit`` -- never a silent 0. NaN or Inf eigenvalues raise ``ValueError``.

    Example
    -------
    >>> float(entropy(jnp.ones(4), normalize=True))
    1.0
    """
    lam = _eigenvalues(eigenvalues)
    top = jnp.max(jnp.abs(lam), axis=-1)
    total = jnp.sum(jnp.where(lam > _CLIP * top[..., None], lam, 0.0), axis=-1)
    S = _undefined_where_zero(_shannon(_probabilities(lam)), total, "entropy")
    if normalize:
        n = lam.shape[-1]
        S = S / jnp.log(n) if n > 1 else jnp.zeros_like(S)
    return S


def effective_rank(eigenvalues: Float[Array, "... n"]) -> Float[Array, "..."]:
    """Effective rank exp(S) (Roy & Vetterli): between 1 (rank one) and N (flat).

    Example
    -------
    >>> round(float(effective_rank(jnp.ones(5))), 6)
    5.0
    """
    return jnp.exp(entropy(eigenvalues))


def trace(K: Float[Array, "... n n"], normalize: bool = False) -> Float[Array, "..."]:
    """Tr K; with ``normalize=True`` Tr K / N (the mean squared gradient norm).

    Example
    -------
    >>> float(trace(2 * jnp.eye(3), normalize=True))
    2.0
    """
    K = _kernel(K)
    t = jnp.trace(K, axis1=-2, axis2=-1)
    return t / K.shape[-1] if normalize else t


def kernel_alignment(K1: Float[Array, "... n n"], K2: Float[Array, "... n n"]) -> Float[Array, "..."]:
    """Frobenius cosine ⟨K1, K2⟩_F / (‖K1‖_F ‖K2‖_F) ∈ [−1, 1].

    Example
    -------
    >>> float(kernel_alignment(jnp.eye(2), 3 * jnp.eye(2)))
    1.0
    """
    K1, K2 = _kernel(K1, "K1"), _kernel(K2, "K2")
    if K1.shape[-1] != K2.shape[-1]:
        raise ValueError(f"K2: shape {K2.shape} does not match K1's {K1.shape}")
    num = jnp.sum(K1 * K2, axis=(-2, -1))
    den = jnp.linalg.norm(K1, axis=(-2, -1)) * jnp.linalg.norm(K2, axis=(-2, -1))
    return jnp.clip(num / den, -1.0, 1.0)  # round-off can push |cos| just past 1


def kernel_distance(K1: Float[Array, "... n n"], K2: Float[Array, "... n n"]) -> Float[Array, "..."]:
    """1 − kernel_alignment(K1, K2): 0 for kernels equal up to scale.

    Example
    -------
    >>> float(kernel_distance(jnp.eye(2), jnp.eye(2)))
    0.0
    """
    return 1.0 - kernel_alignment(K1, K2)


def relative_change(K0: Float[Array, "... n n"], K: Float[Array, "... n n"]) -> Float[Array, "..."]:
    """‖K − K0‖_F / ‖K0‖_F: how far a kernel moved from a reference (e.g. initialization).

    Example
    -------
    >>> float(relative_change(jnp.eye(2), 2 * jnp.eye(2)))
    1.0
    """
    K0, K = _kernel(K0, "K0"), _kernel(K, "K")
    if K0.shape[-1] != K.shape[-1]:
        raise ValueError(f"K: shape {K.shape} does not match K0's {K0.shape}")
    return jnp.linalg.norm(K - K0, axis=(-2, -1)) / jnp.linalg.norm(K0, axis=(-2, -1))


def residual_projection(
    eigenvectors: Float[Array, "n k"], residual: Float[Array, "n ..."], weights: bool = False
) -> Float[Array, "k ..."]:
    """Project a residual on kernel eigenvectors: c_k = v_kᵀ r.

    With ``weights=True`` returns the spectral weights w_k = Σ (v_kᵀ r)² / ‖r‖² (summed
    over any trailing output axes of r), which sum to 1 over a complete eigenbasis.

    Parameters
    ----------
    eigenvectors : (N, k) columns from ``spectrum(K, vectors=True)``.
    residual : (N,) or (N, C) — e.g. f(x) − y on the kernel's samples.

    Example
    -------
    >>> V = jnp.eye(3)
    >>> residual_projection(V, jnp.array([1.0, 0.0, 1.0]), weights=True).tolist()
    [0.5, 0.0, 0.5]
    """
    V = jnp.asarray(eigenvectors)
    r = jnp.asarray(residual)
    if V.ndim != 2:
        raise ValueError(f"eigenvectors: expected (N, k) columns, got shape {V.shape}")
    if r.ndim < 1 or r.shape[0] != V.shape[0]:
        raise ValueError(f"residual: expected a leading axis of length N = {V.shape[0]}, got shape {r.shape}")
    c = jnp.tensordot(V, r, axes=([0], [0]))
    if not weights:
        return c
    w = c**2
    if w.ndim > 1:
        w = w.reshape(w.shape[0], -1).sum(axis=1)
    return w / jnp.sum(r**2)


def cosine_normalize(K: Float[Array, "... n n"]) -> Float[Array, "... n n"]:
    """K_ij / sqrt(K_ii K_jj): unit diagonal, keeps only the angles between gradients.

    Example
    -------
    >>> cosine_normalize(jnp.array([[4.0, 2.0], [2.0, 1.0]])).tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """
    K = _kernel(K)
    d = jnp.diagonal(K, axis1=-2, axis2=-1)
    if not isinstance(d, Tracer) and bool(jnp.any(d <= 0)):
        raise ValueError("K: cosine normalisation needs a positive diagonal (K_ii > 0)")
    s = jnp.sqrt(d)
    return K / (s[..., :, None] * s[..., None, :])


def magnitude_entropy(K: Float[Array, "... n n"], normalize: bool = False) -> Float[Array, "..."]:
    """Shannon entropy of q_i = sqrt(K_ii) / Σ_j sqrt(K_jj) (how evenly gradient norms are
    spread over samples); ``normalize=True`` divides by ln N. Round-off negatives on the
    diagonal count as 0; an all-zero diagonal gives NaN with a ``RuntimeWarning`` (see
    :func:`entropy`).

    Example
    -------
    >>> round(float(magnitude_entropy(jnp.eye(4), normalize=True)), 6)
    1.0
    """
    K = _kernel(K)
    s = jnp.sqrt(jnp.clip(jnp.diagonal(K, axis1=-2, axis2=-1), 0.0))
    total = jnp.sum(s, axis=-1, keepdims=True)
    q = s / jnp.where(total > 0, total, 1.0)
    S = _undefined_where_zero(_shannon(q), total[..., 0], "magnitude_entropy")
    n = K.shape[-1]
    return S / jnp.log(n) if normalize and n > 1 else S


def kernel_regression(
    K_train: Float[Array, "n n"],
    y_train: Float[Array, "n ..."],
    K_test_train: Float[Array, "m n"],
    ridge: float = 0.0,
) -> Float[Array, "m ..."]:
    """Kernel (ridge) regression predictions K_test,train (K_train + ridge·I)⁻¹ y_train.

    ``ridge=0`` uses the least-squares (pseudo-inverse) solution, so a singular K_train is
    fine. This is the infinite-training-time prediction of a linearised network trained by
    gradient flow on MSE from zero output.

    Example
    -------
    >>> K = jnp.eye(2); y = jnp.array([1.0, 2.0])
    >>> kernel_regression(K, y, K).tolist()
    [1.0, 2.0]
    """
    K = _kernel(K_train, "K_train")
    y = jnp.asarray(y_train)
    Kt = jnp.asarray(K_test_train)
    n = K.shape[-1]
    if y.shape[0] != n:
        raise ValueError(f"y_train: expected a leading axis of length {n}, got shape {y.shape}")
    if Kt.ndim != 2 or Kt.shape[1] != n:
        raise ValueError(f"K_test_train: expected shape (M, {n}), got {Kt.shape}")
    if ridge < 0:
        raise ValueError(f"ridge: expected ≥ 0, got {ridge}")
    if ridge > 0:
        alpha = jnp.linalg.solve(K + ridge * jnp.eye(n, dtype=K.dtype), y)
    else:
        alpha = jnp.linalg.lstsq(K, y)[0]
    return Kt @ alpha


# ---------------------------------------------------------------------------
# Loss–network–position decomposition (papers/reach.md)
# ---------------------------------------------------------------------------


class LNP(NamedTuple):
    """The loss–network–position decomposition ‖∇_θ L‖² = χ_loss · χ_net · χ_pos of one
    batch of B samples with K outputs each (all fields scalar arrays).

    chi_loss: ‖u‖² / B with u_i = ∂l_i/∂f(x_i) (the generalized residual).
    chi_net: Tr K / B, the mean per-sample squared gradient norm Σ_c ‖∇_θ f_c(x_i)‖² (exact,
        or a Hutchinson estimate).
    chi_pos: ‖∇_θ L‖² / (χ_loss χ_net) = uᵀ K u / (‖u‖² Tr K), the spectral position (the
        residual-weighted mean of λ/Tr K); carries the Hutchinson error of χ_net.
    grad_sq: ‖∇_θ L‖² of the mean loss L = (1/B) Σ_i l_i (exact: one backward pass).
    chi_net_se: standard error of the Hutchinson χ_net over its probes (0 when exact).
    """

    chi_loss: Array
    chi_net: Array
    chi_pos: Array
    grad_sq: Array
    chi_net_se: Array


#: ``probes="auto"`` computes χ_net exactly for models with at most this many outputs per
#: sample (K backward passes per sample), else by Hutchinson with ``_AUTO_PROBES`` probes
_EXACT_MAX_OUTPUTS = 64
_AUTO_PROBES = 4
_LNP_MEMORY = 2 * 1024**3  # bytes of per-sample features one block of samples may hold


def _lnp_mse(f, y):
    """½‖f − y‖² of one sample (integer y one-hot encoded)."""
    y = jnp.asarray(y)
    if jnp.issubdtype(y.dtype, jnp.integer) and y.shape != f.shape:
        y = jax.nn.one_hot(y, f.shape[-1], dtype=f.dtype)
    return 0.5 * jnp.sum((f - jnp.reshape(y, f.shape)) ** 2)


def _lnp_ce(f, y):
    """Softmax cross-entropy with integer labels, averaged over the positions of (T, V)."""
    logits = f.reshape(-1, f.shape[-1]) if f.ndim > 0 else f[None, None]
    labels = jnp.reshape(y, (-1,))
    lp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(lp, labels[:, None], axis=-1))


def _per_sample_loss(loss: str | Callable) -> Callable:
    if callable(loss):
        return loss
    if loss == "mse":
        return _lnp_mse
    if loss == "ce":
        return _lnp_ce
    raise ValueError(f"loss: expected 'mse', 'ce' or a callable loss(f_i, y_i) -> scalar, got {loss!r}")


def _resolve_probes(probes: Any, n_outputs: int) -> int | None:
    """``probes`` of :func:`lnp` as None (exact) or the number of Hutchinson probes."""
    if probes == "auto":
        return None if n_outputs <= _EXACT_MAX_OUTPUTS else _AUTO_PROBES
    if probes is None:
        return None
    if isinstance(probes, bool) or not isinstance(probes, (int, np.integer)) or probes < 2:
        raise ValueError(
            f"probes: expected None (exact), 'auto' or an integer ≥ 2 (the standard error needs two), got {probes!r}"
        )
    return int(probes)


def _ghost_sq_norms(feats: list[Array], layers: list) -> Array:
    """Squared norms (M,) of the gradients of V_m·f(x) from one sample's structured
    features (:func:`ntkbench.kernel.structured_vjp`), never forming a weight gradient of
    a "gram" layer: Σ_{t,s} (x_t·x_s [+ 1])(g_mt·g_ms) (ids equal for an embedding), plus
    ‖block_m‖² of the Jacobian blocks of every other parameter."""
    grams = [L for L in layers if L.route == "gram"]
    total = None
    for i, L in enumerate(grams):
        X, G = feats[2 * i], feats[2 * i + 1]  # (T, d_in) or ids (T,); (M, T, d_out)
        if L.kind == "embedding":
            xx = (X[:, None] == X[None, :]).astype(G.dtype)
        else:
            xx = X @ X.T
        if L.bias:
            xx = xx + 1.0
        if G.shape[1] == 1:
            term = xx[0, 0] * jnp.sum(G[:, 0] ** 2, axis=-1)
        else:
            # cotangent Grams first (one batched matmul), then the elementwise product:
            # 1.5-4x faster than a three-operand einsum (T = 64, d = 144..576, M = 4)
            term = jnp.sum(jnp.einsum("mto,mso->mts", G, G) * xx, axis=(1, 2))
        total = term if total is None else total + term
    for b in feats[2 * len(grams) :]:
        term = jnp.sum(b**2, axis=1)
        total = term if total is None else total + term
    assert total is not None  # a model always has parameters (as_model checks)
    return total


def _sample_block(forward: Callable, backward_m: int, x: Array, n_outputs: int, dtype) -> int:
    """Samples per block of the per-sample pass whose features fit ``_LNP_MEMORY``."""
    V = jax.ShapeDtypeStruct((backward_m, n_outputs), dtype)

    def one(xi, v):
        _, backward = forward(xi)
        return backward(v)

    shapes = jax.eval_shape(one, jax.ShapeDtypeStruct(x.shape[1:], x.dtype), V)
    per = sum(math.prod(s.shape) * jnp.dtype(s.dtype).itemsize for s in jax.tree_util.tree_leaves(shapes))
    return max(1, min(x.shape[0], int(_LNP_MEMORY // max(4 * per, 1))))


def _lnp_impl(model, x, y, key, lfn: Callable, probes: Any, block_size: int | None) -> LNP:
    import equinox as eqx

    from .kernel import structured_vjp

    params, static = eqx.partition(model, eqx.is_inexact_array)
    B = x.shape[0]
    # ‖∇L‖² and the residual from ONE forward and ONE backward pass of the batch
    f, vjp_fn = jax.vjp(lambda p: jax.vmap(eqx.combine(p, static))(x), params)
    K = math.prod(f.shape[1:])
    auto, probes = probes == "auto", _resolve_probes(probes, K)
    if probes is not None and key is None:
        why = f" ('auto' chose {probes}: the model has {K} > {_EXACT_MAX_OUTPUTS} outputs per sample)"
        raise ValueError(
            "key: a PRNG key is required for the Hutchinson estimate of chi_net"
            + (why if auto else "")
            + "; or pass probes=None for the exact value"
        )
    u = jax.vmap(jax.grad(lfn))(f, y)
    grads = vjp_fn(u / B)[0]
    grad_sq = functools.reduce(operator.add, [jnp.sum(g**2) for g in jax.tree_util.tree_leaves(grads)])
    chi_loss = jnp.sum(u**2) / B

    # One backward sweep per cotangent (lax.map), each batched over the samples: with the
    # cotangents as a second vmap axis, XLA:CPU (jax 0.10.2) miscomputes the LayerNorm
    # backward of every cotangent after the third (B >= 16, T = 64, d = 144: off by 1-6 %;
    # tests/test_lnp.py::test_many_probes_batched_layernorm_backward checks it).
    forward, layers = structured_vjp(model, x.shape[1:], x.dtype, cotangents=1)

    def sweep(backward, vs):  # vs (M, K) -> squared norms (M,)
        return jax.lax.map(lambda v: _ghost_sq_norms(backward(v[None]), layers)[0], vs)

    basis = jnp.eye(K, dtype=f.dtype)

    def per_sample(xi, vi):  # exact: the K basis vectors; else the sample's probes
        _, backward = forward(xi)
        return jnp.sum(sweep(backward, basis))[None] if probes is None else sweep(backward, vi)

    if probes is None:
        V = jnp.zeros((B, 0), f.dtype)
    else:  # Rademacher probes over each sample's K outputs
        V = jax.random.rademacher(key, (B, probes, K), dtype=f.dtype)

    block = block_size or _sample_block(forward, 1, x, K, f.dtype)
    if block >= B:
        norms = jax.vmap(per_sample)(x, V)  # (B, probes) or (B, 1)
    else:
        nb = -(-B // block)

        def pad(a):
            return jnp.concatenate([a, jnp.zeros((nb * block - B, *a.shape[1:]), a.dtype)]).reshape(
                nb, block, *a.shape[1:]
            )

        norms = jax.lax.map(lambda xv: jax.vmap(per_sample)(*xv), (pad(x), pad(V)))
        norms = norms.reshape(nb * block, -1)[:B]
    if probes is None:
        chi_net = jnp.sum(norms) / B
        se = jnp.zeros((), chi_net.dtype)
    else:
        per_probe = jnp.sum(norms, axis=0) / B  # (probes,) independent estimates of Tr K / B
        chi_net = jnp.mean(per_probe)
        se = jnp.std(per_probe, ddof=1) / jnp.sqrt(probes)
    chi_pos = grad_sq / (chi_loss * chi_net)
    return LNP(chi_loss, chi_net, chi_pos, grad_sq, se)


@functools.cache
def _lnp_jit() -> Callable:
    import equinox as eqx

    return eqx.filter_jit(_lnp_impl)


def lnp(
    model: Any,
    x: Float[Array, "b ..."],
    y: Array,
    loss: Literal["mse", "ce"] | Callable = "mse",
    probes: int | Literal["auto"] | None = "auto",
    *,
    key: Array | None = None,
    block_size: int | None = None,
) -> LNP:
    """Loss–network–position decomposition of one batch, without forming the kernel.

    ‖∇_θ L‖² = χ_loss · χ_net · χ_pos (``../papers/reach.md``) for B samples with K
    outputs each (a sequence model's (T, V) logits are K = T·V outputs).

    Parameters
    ----------
    model
        An Equinox module called on ONE sample, or ``(apply_fn, params)``, or a model with
        state (a Flax NNX module, ``(linen_module, variables)``, ``(eqx_model, state)``:
        its trainable parameters only, in inference mode; see :func:`ntkbench.entk`).
    x
        (B, ...) inputs (token ids (B, T) for a language model).
    y
        (B, ...) targets: same shape as the outputs, or integer labels (B,) / (B, T).
    loss
        ``"mse"`` l_i = ½‖f(x_i) − y_i‖² (integer y is one-hot encoded); ``"ce"`` softmax
        cross-entropy with integer labels, averaged over the positions of a sequence
        output (T, V); or a callable ``loss(f_i, y_i) -> scalar`` on one sample.
        L = mean_i l_i.
    probes
        None: χ_net exact, Σ_c ‖∇_θ f_c(x_i)‖² from K backward sweeps (one per basis
        cotangent, each over the whole batch); an integer ≥ 2: a Hutchinson estimate, E_v ‖J_iᵀ v‖² =
        Tr(J_i J_iᵀ) with ``probes`` Rademacher vectors v (K,) per sample (``key``
        required) and its standard error over the probes; ``"auto"`` (default): exact for
        K ≤ 64, else 4 probes.
    key
        PRNG key of the Hutchinson probes.
    block_size
        Samples per batch of the per-sample pass (default: as many as keep its features
        under 2 GiB).

    Returns
    -------
    :class:`LNP` of scalars (chi_loss, chi_net, chi_pos, grad_sq, chi_net_se).

    How: ‖∇_θ L‖² and u from one forward and one backward pass of the batch. Per-sample
    squared gradient norms along the probes (or basis vectors) come from ONE forward pass
    and one backward sweep per probe over the batch, with cotangents taken only at the
    outputs of the tapped layers (Linear, Embedding, convolutions: see
    :func:`ntkbench.kernel.structured_vjp`): their squared weight-gradient norms by the
    token-Gram ("ghost norm") identity ‖Σ_t g_t a_tᵀ‖²_F = Σ_{t,s} (a_t·a_s)(g_t·g_s),
    never a per-sample weight gradient; every other parameter (LayerNorm gains and biases,
    layers read in ways the tap cannot follow) by its per-sample gradient.

    Example
    -------
    >>> import jax, equinox as eqx
    >>> m = eqx.nn.MLP(3, 2, 8, 1, key=jax.random.key(0))
    >>> x = jnp.ones((4, 3)); y = jnp.zeros((4, 2))
    >>> r = lnp(m, x, y)
    >>> bool(jnp.allclose(r.grad_sq, r.chi_loss * r.chi_net * r.chi_pos, rtol=1e-4))
    True
    >>> float(r.chi_net_se)
    0.0
    """

    from .kernel import as_model, check_inputs

    model = as_model(model)
    x, _, block_size = check_inputs(x, None, block_size)
    y = jnp.asarray(y)
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y: expected a leading axis of length {x.shape[0]}, got shape {y.shape}")
    lfn = _per_sample_loss(loss)
    _resolve_probes(probes, 0)  # argument check; "auto" is resolved on the output shape
    return _lnp_jit()(model, x, y, key, lfn, probes, block_size)
