"""Measures against NumPy references and closed forms."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkbench as nb
from ntkbench.measures import flatten_full


def random_psd(rng, n, rank=None):
    A = rng.standard_normal((n, rank or n))
    return A @ A.T


def test_spectrum_descending_and_paired(x64):
    rng = np.random.default_rng(0)
    K = random_psd(rng, 12)
    lam, V = nb.spectrum(K, vectors=True)
    ref = np.sort(np.linalg.eigvalsh(K))[::-1]
    np.testing.assert_allclose(lam, ref, rtol=1e-12)
    assert np.all(np.diff(np.asarray(lam)) <= 0)
    np.testing.assert_allclose(K @ np.asarray(V), np.asarray(V) * np.asarray(lam), atol=1e-10)
    top, Vt = nb.spectrum(K, k=3, vectors=True)
    np.testing.assert_allclose(top, ref[:3], rtol=1e-12)
    assert Vt.shape == (12, 3)
    np.testing.assert_allclose(nb.spectrum(K, k=3), ref[:3], rtol=1e-12)
    # batched over leading axes
    Ks = np.stack([K, 2 * K])
    np.testing.assert_allclose(nb.spectrum(Ks)[1], 2 * ref, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_spectrum_without_eigenvectors_matches_float64(dtype, x64):
    """The eigenvalues-only path (LAPACK ?syevd with jobz = "N" on the CPU) against NumPy in
    float64: eager, jitted, vmapped, batched; its derivative against eigh's; NaN where the
    kernel is NaN, as jnp.linalg gives."""
    from ntkbench.measures import _eigvalsh

    rng = np.random.default_rng(1)
    Ks = np.stack([random_psd(rng, 40), random_psd(rng, 40, rank=5)]).astype(dtype)
    ref = np.linalg.eigvalsh(Ks.astype(np.float64))[..., ::-1]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    scale = np.abs(ref).max(axis=-1, keepdims=True)
    for got in (nb.spectrum(Ks), jax.jit(nb.spectrum)(Ks), jax.vmap(nb.spectrum)(Ks)):
        assert got.dtype == dtype
        err = np.abs(np.asarray(got, np.float64) - ref)
        assert (err <= tol * scale).all(), err.max() / scale
    text = jax.jit(_eigvalsh).lower(Ks).as_text()
    assert text.count("syevd") == 1 and "mode = 78" in text  # 78 = "N": no eigenvectors
    g = jax.grad(lambda k: jnp.sum(nb.spectrum(k) ** 2))(Ks[0])
    g_ref = jax.grad(lambda k: jnp.sum(jnp.linalg.eigh(0.5 * (k + k.T))[0] ** 2))(Ks[0])
    np.testing.assert_allclose(g, g_ref, rtol=10 * tol, atol=10 * tol * np.abs(g_ref).max())
    bad = Ks[0].copy()
    bad[0, 0] = np.nan
    assert np.isnan(np.asarray(jax.jit(_eigvalsh)(bad))).all()


def test_entropy_closed_forms(x64):
    n = 17
    assert float(nb.entropy(np.ones(n))) == pytest.approx(math.log(n), rel=1e-12)
    assert float(nb.entropy(np.ones(n), normalize=True)) == pytest.approx(1.0, rel=1e-12)
    rank1 = np.zeros(n)
    rank1[0] = 5.0
    assert float(nb.entropy(rank1)) == pytest.approx(0.0, abs=1e-15)
    # eigenvalues of a rank-1 kernel, with round-off negatives
    rng = np.random.default_rng(1)
    v = rng.standard_normal(n)
    lam = nb.spectrum(np.outer(v, v))
    assert float(nb.entropy(lam)) == pytest.approx(0.0, abs=1e-10)
    # against a direct NumPy formula
    lam = rng.random(n)
    p = lam / lam.sum()
    assert float(nb.entropy(lam)) == pytest.approx(-(p * np.log(p)).sum(), rel=1e-12)
    assert float(nb.effective_rank(lam)) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-12)
    # scale invariance, batching
    np.testing.assert_allclose(nb.entropy(np.stack([lam, 3 * lam])), [nb.entropy(lam)] * 2, rtol=1e-12)


def test_trace_alignment_distance_change(x64):
    rng = np.random.default_rng(2)
    K, L = random_psd(rng, 6), random_psd(rng, 6)
    assert float(nb.trace(K)) == pytest.approx(np.trace(K))
    assert float(nb.trace(K, normalize=True)) == pytest.approx(np.trace(K) / 6)
    cos = (K * L).sum() / (np.linalg.norm(K) * np.linalg.norm(L))
    assert float(nb.kernel_alignment(K, L)) == pytest.approx(cos, rel=1e-12)
    assert float(nb.kernel_distance(K, L)) == pytest.approx(1 - cos, rel=1e-12)
    assert float(nb.kernel_distance(K, 3 * K)) == pytest.approx(0.0, abs=1e-12)
    A, B = np.diag([1.0, 0.0]), np.diag([0.0, 1.0])
    assert float(nb.kernel_alignment(A, B)) == 0.0
    assert float(nb.relative_change(K, L)) == pytest.approx(np.linalg.norm(L - K) / np.linalg.norm(K))


def test_cosine_normalize_and_magnitude_entropy(x64):
    rng = np.random.default_rng(3)
    K = random_psd(rng, 7)
    d = np.sqrt(np.diag(K))
    C = nb.cosine_normalize(K)
    np.testing.assert_allclose(C, K / np.outer(d, d), rtol=1e-12)
    np.testing.assert_allclose(np.diag(C), 1.0, rtol=1e-12)
    q = d / d.sum()
    assert float(nb.magnitude_entropy(K)) == pytest.approx(-(q * np.log(q)).sum(), rel=1e-12)
    assert float(nb.magnitude_entropy(np.eye(7), normalize=True)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="diagonal"):
        nb.cosine_normalize(np.diag([1.0, 0.0]))


def test_residual_projection(x64):
    rng = np.random.default_rng(4)
    K = random_psd(rng, 9)
    _, V = nb.spectrum(K, vectors=True)
    r = rng.standard_normal(9)
    c = nb.residual_projection(V, r)
    np.testing.assert_allclose(np.asarray(V) @ np.asarray(c), r, atol=1e-12)  # complete basis
    w = nb.residual_projection(V, r, weights=True)
    assert float(w.sum()) == pytest.approx(1.0, rel=1e-12)
    R = rng.standard_normal((9, 3))
    w2 = nb.residual_projection(V, R, weights=True)
    assert w2.shape == (9,) and float(w2.sum()) == pytest.approx(1.0, rel=1e-12)
    with pytest.raises(ValueError, match="residual"):
        nb.residual_projection(V, r[:5])


def test_kernel_regression(x64):
    rng = np.random.default_rng(5)
    X, Xt = rng.standard_normal((8, 3)), rng.standard_normal((4, 3))
    K = np.exp(-((X[:, None] - X[None]) ** 2).sum(-1))
    Kt = np.exp(-((Xt[:, None] - X[None]) ** 2).sum(-1))
    y = rng.standard_normal((8, 2))
    np.testing.assert_allclose(nb.kernel_regression(K, y, K), y, atol=1e-8)  # interpolates
    pred = nb.kernel_regression(K, y, Kt, ridge=0.1)
    np.testing.assert_allclose(pred, Kt @ np.linalg.solve(K + 0.1 * np.eye(8), y), rtol=1e-10)


def test_flatten_full_sample_major(x64):
    model = eqx.nn.MLP(3, 2, 8, 1, key=jax.random.key(0), dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(1), (4, 3), jnp.float64)
    F = flatten_full(nb.entk(model, x, outputs="full"))
    assert F.shape == (8, 8)
    np.testing.assert_allclose(F, F.T, atol=1e-12)
    # entry (i*K + k, j*K + l) = Θ(x_i, x_j)_kl
    Kf = nb.entk(model, x, outputs="full")
    assert float(F[1 * 2 + 1, 3 * 2 + 0]) == pytest.approx(float(Kf[1, 3, 1, 0]))
    np.testing.assert_allclose(np.trace(np.asarray(F)), np.trace(np.asarray(nb.entk(model, x))), rtol=1e-12)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_lnp_against_dense_full_kernel(loss, x64):
    """χ_pos = uᵀKu / (‖u‖² Tr K) and ‖∇L‖² = uᵀKu / B² with K the dense full eNTK."""
    model = eqx.nn.MLP(4, 3, 16, 2, activation=jnp.tanh, key=jax.random.key(0), dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(1), (6, 4), jnp.float64)
    y = jax.random.randint(jax.random.key(2), (6,), 0, 3)
    r = nb.lnp(model, x, y, loss=loss)
    f = np.asarray(jax.vmap(model)(x))
    onehot = np.eye(3)[np.asarray(y)]
    if loss == "mse":
        u = f - onehot
    else:
        e = np.exp(f - f.max(1, keepdims=True))
        u = e / e.sum(1, keepdims=True) - onehot
    K = np.asarray(flatten_full(nb.entk(model, x, outputs="full", method="jacobian")))
    uv = u.reshape(-1)
    B = 6
    assert float(r.chi_loss) == pytest.approx((uv**2).sum() / B, rel=1e-10)
    assert float(r.chi_net) == pytest.approx(np.trace(K) / B, rel=1e-10)
    assert float(r.grad_sq) == pytest.approx(uv @ K @ uv / B**2, rel=1e-10)
    assert float(r.chi_pos) == pytest.approx(uv @ K @ uv / ((uv**2).sum() * np.trace(K)), rel=1e-10)
    # spectral reading: residual-weighted mean of λ/Tr K, bounded by the extremes
    lam, V = np.linalg.eigh(K)
    w = (V.T @ uv) ** 2 / (uv**2).sum()
    assert float(r.chi_pos) == pytest.approx((lam / lam.sum() * w).sum(), rel=1e-9)
    assert lam.min() / lam.sum() - 1e-12 <= float(r.chi_pos) <= lam.max() / lam.sum() + 1e-12


def test_lnp_identity_kernel_and_hutchinson(x64):
    """f(x) = W x with orthonormal inputs has K = I (B·C × B·C): χ_pos = 1/(B·C)."""
    B, C, d = 4, 3, 6
    model = eqx.nn.Linear(d, C, use_bias=False, key=jax.random.key(0), dtype=jnp.float64)
    Q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((d, B)))
    x = jnp.asarray(Q.T)
    y = jax.random.normal(jax.random.key(1), (B, C), jnp.float64)
    r = nb.lnp(model, x, y)
    assert float(r.chi_pos) == pytest.approx(1 / (B * C), rel=1e-10)
    # Hutchinson estimate of χ_net converges to the exact value
    mlp = eqx.nn.MLP(4, 5, 16, 1, key=jax.random.key(3), dtype=jnp.float64)
    xs = jax.random.normal(jax.random.key(4), (8, 4), jnp.float64)
    ys = jax.random.normal(jax.random.key(5), (8, 5), jnp.float64)
    exact = nb.lnp(mlp, xs, ys)
    est = nb.lnp(mlp, xs, ys, probes=400, key=jax.random.key(6))
    assert float(est.chi_net) == pytest.approx(float(exact.chi_net), rel=0.1)
    with pytest.raises(ValueError, match="key"):
        nb.lnp(mlp, xs, ys, probes=4)
    with pytest.raises(ValueError, match="loss"):
        nb.lnp(mlp, xs, ys, loss="hinge")


def test_bad_kernels_name_the_argument():
    with pytest.raises(ValueError, match="K: expected a square"):
        nb.spectrum(np.ones((3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        nb.spectrum(np.array([[1.0, np.nan], [np.nan, 1.0]]))
    with pytest.raises(ValueError, match="K"):
        nb.trace(np.ones(3))
    with pytest.raises(ValueError, match="K2"):
        nb.kernel_alignment(np.eye(3), np.eye(4))
    with pytest.raises(ValueError, match="eigenvalues"):
        nb.entropy(np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match="k:"):
        nb.spectrum(np.eye(3), k=5)
    with pytest.raises(TypeError, match="K"):
        nb.trace("kernel")
