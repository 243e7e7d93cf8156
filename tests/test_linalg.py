"""Kernel-free spectra (ntkbench.linalg) against dense eNTKs computed independently here.

The reference kernel is built in this file from per-sample Jacobians
(``vmap(jacrev)`` over flattened parameters, then an einsum) in float64, and its spectrum
comes from ``numpy.linalg.eigh`` — no code from ntkbench is involved in the reference.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from _x64 import enable_x64
from ntkbench import linalg

N = 120  # not a multiple of the block size used below
BLOCK = 50


def _model(key=0, in_size=4, out_size=3, width=16, depth=2):
    return eqx.nn.MLP(in_size, out_size, width, depth, key=jax.random.key(key), dtype=jnp.float64)


def _jacobian(model, x):
    """(N, C, P) per-sample Jacobian over flattened parameters, float64."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    def f(q, xi):
        return jnp.ravel(eqx.combine(unravel(q), static)(xi))

    return np.asarray(jax.vmap(jax.jacrev(f), in_axes=(None, 0))(flat, x))


def _dense(model, x):
    """Reference kernels: traced (N, N) and full (N·C, N·C) with row index i*C + c."""
    j = _jacobian(model, x)
    n, c, _ = j.shape
    k_trace = np.einsum("icp,jcp->ij", j, j)
    k_full = np.einsum("icp,jdp->icjd", j, j).reshape(n * c, n * c)
    return k_trace, k_full


def _eig_desc(k):
    return np.linalg.eigvalsh(k)[::-1]


def _entropy(eigs):
    p = np.clip(eigs, 0, None) / np.sum(np.clip(eigs, 0, None))
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


@pytest.fixture(scope="module")
def setup():
    with enable_x64():
        model = _model()
        x = jax.random.normal(jax.random.key(1), (N, 4), jnp.float64)
        k_trace, k_full = _dense(model, x)
    return model, x, k_trace, k_full


def test_kernel_matvec_matches_dense(setup):
    model, x, k_trace, k_full = setup
    with enable_x64():
        v = np.asarray(jax.random.normal(jax.random.key(2), (N,), jnp.float64))
        kv = np.asarray(linalg.kernel_matvec(model, x, block_size=BLOCK)(v))
        np.testing.assert_allclose(kv, k_trace @ v, rtol=1e-10, atol=1e-10 * np.abs(k_trace @ v).max())
        vf = np.asarray(jax.random.normal(jax.random.key(3), (N, 3), jnp.float64))
        kvf = np.asarray(linalg.kernel_matvec(model, x, outputs="full", block_size=BLOCK)(vf))
        ref = (k_full @ vf.reshape(-1)).reshape(N, 3)
        np.testing.assert_allclose(kvf, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())


@pytest.mark.parametrize("outputs", ["trace", "full"])
def test_lanczos_top_k_matches_dense(setup, outputs):
    model, x, k_trace, k_full = setup
    k_ref = k_trace if outputs == "trace" else k_full
    k = 6
    with enable_x64():
        lam, vecs = linalg.top_eigenvalues(
            model, x, k, outputs=outputs, method="lanczos", vectors=True, block_size=BLOCK
        )
    lam, vecs = np.asarray(lam), np.asarray(vecs)
    ref = _eig_desc(k_ref)[:k]
    assert lam.shape == (k,) and vecs.shape == (k_ref.shape[0], k)
    assert np.max(np.abs(lam / ref - 1)) < 1e-6
    assert np.all(np.diff(lam) <= 0)
    # eigenpairs stay together: K u_i = λ_i u_i, orthonormal columns
    np.testing.assert_allclose(k_ref @ vecs, vecs * lam[None, :], atol=1e-6 * ref[0])
    np.testing.assert_allclose(vecs.T @ vecs, np.eye(k), atol=1e-8)


def test_lanczos_start_depth_restarts_until_converged(setup):
    # A first depth too small to converge doubles until the top k meet tol; the result is
    # the dense one either way, and a depth below k is refused.
    model, x, k_trace, _ = setup
    ref = _eig_desc(k_trace)[:6]
    with enable_x64():
        for depth in (6, 12, 40):
            lam = np.asarray(linalg.top_eigenvalues(model, x, 6, method="lanczos", depth=depth, block_size=BLOCK))
            assert np.max(np.abs(lam / ref - 1)) < 1e-6, depth
        with pytest.raises(ValueError, match="depth"):
            linalg.top_eigenvalues(model, x, 6, method="lanczos", depth=5)


def test_lobpcg_top_k_matches_dense(setup):
    model, x, k_trace, _ = setup
    with enable_x64():
        lam = np.asarray(linalg.top_eigenvalues(model, x, 4, method="lobpcg", block_size=BLOCK, tol=1e-12))
    ref = _eig_desc(k_trace)[:4]
    assert np.max(np.abs(lam / ref - 1)) < 1e-6


def test_gram_trick_equals_kernel_nonzero_spectrum():
    # P = 2*5 + 5 + 5*2 + 2 = 27 parameters, C = 2; N = 40: N·C = 80 > P, N = 40 > C·P? no;
    # so use a wider batch for trace: N = 70 > C·P = 54.
    with enable_x64():
        model = _model(key=3, in_size=2, out_size=2, width=5, depth=1)
        x = jax.random.normal(jax.random.key(4), (70, 2), jnp.float64)
        k_trace, k_full = _dense(model, x)
        g_full = np.asarray(linalg.gram_matrix(model, x, outputs="full", block_size=32))
        g_trace = np.asarray(linalg.gram_matrix(model, x, outputs="trace", block_size=32))
        assert g_full.shape == (27, 27) and g_trace.shape == (54, 54)
        for g, k_ref in ((g_full, k_full), (g_trace, k_trace)):
            eg, ek = _eig_desc(g), _eig_desc(k_ref)
            d = g.shape[0]
            np.testing.assert_allclose(eg, ek[:d], rtol=1e-8, atol=1e-10 * ek[0])
            assert np.all(np.abs(ek[d:]) < 1e-10 * ek[0])  # the rest of the kernel spectrum is 0
        # top_eigenvalues via the Gram trick (chosen by "auto" here), with eigenvectors
        lam, vecs = linalg.top_eigenvalues(model, x, 5, outputs="full", method="auto", vectors=True)
        lam, vecs = np.asarray(lam), np.asarray(vecs)
        ref = _eig_desc(k_full)[:5]
        assert np.max(np.abs(lam / ref - 1)) < 1e-8
        np.testing.assert_allclose(k_full @ vecs, vecs * lam[None, :], atol=1e-8 * ref[0])
        # k beyond the Gram size: the remaining eigenvalues are zero
        lam_all = np.asarray(linalg.top_eigenvalues(model, x, 60, outputs="trace", method="gram"))
        np.testing.assert_allclose(lam_all, _eig_desc(k_trace)[:60], atol=1e-9 * lam_all[0])


@pytest.mark.parametrize("outputs", ["trace", "full"])
def test_entropy_estimate_within_error_bar(setup, outputs):
    model, x, k_trace, k_full = setup
    exact = _entropy(_eig_desc(k_trace if outputs == "trace" else k_full))
    with enable_x64():
        est, err = linalg.entropy_estimate(
            model,
            x,
            num_probes=12,
            lanczos_order=30,
            key=jax.random.key(7),
            outputs=outputs,
            block_size=BLOCK,
        )
    est, err = float(est), float(err)
    assert 0 < err < 0.05 * exact  # a useful error bar, not a vacuous one
    assert abs(est - exact) <= 3 * err, (est, exact, err)


def test_entropy_estimate_without_deflation_is_unbiased_but_noisy(setup):
    """Without deflation the probe variance is of the order of the entropy itself (12
    probes: stderr ≈ 1.5 nats ≈ S), so a 12-probe check would accept any value. With 960
    probes the error bar is < 20 % of S: the estimate must land within 3 of them (wrong
    answers such as 0, ln N or a mis-scaled trace fail), and the stderr must shrink like
    1/√probes (an honest error bar, not a formula that is merely large)."""
    model, x, k_trace, _ = setup
    exact = _entropy(_eig_desc(k_trace))
    with enable_x64():
        few = linalg.entropy_estimate(
            model, x, num_probes=12, lanczos_order=30, deflate=0, key=jax.random.key(8), block_size=BLOCK
        )
        est, err = linalg.entropy_estimate(
            model,
            x,
            num_probes=960,
            probe_batch=96,
            lanczos_order=30,
            deflate=0,
            key=jax.random.key(8),
            block_size=BLOCK,
        )
    est, err = float(est), float(err)
    assert float(few.stderr) > 0.5 * exact  # noisy: why deflation is the default
    assert 0 < err < 0.2 * exact, (err, exact)
    assert abs(est - exact) <= 3 * err, (est, exact, err)
    assert 0.5 < err / (float(few.stderr) * np.sqrt(12 / 960)) < 2


def test_apply_fn_params_and_float32():
    # (apply_fn, params) form, float32: agreement at float32 round-off
    key1, key2, key3 = jax.random.split(jax.random.key(5), 3)
    params = {
        "w1": jax.random.normal(key1, (16, 3)) / np.sqrt(3),
        "w2": jax.random.normal(key2, (2, 16)) / 4.0,
    }

    def apply_fn(p, xi):
        return p["w2"] @ jnp.tanh(p["w1"] @ xi)

    x = jax.random.normal(key3, (90, 3))
    lam = np.asarray(linalg.top_eigenvalues((apply_fn, params), x, 3, method="lanczos", block_size=32))
    with enable_x64():
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        j1 = jax.vmap(jax.jacrev(apply_fn), in_axes=(None, 0))(p64, jnp.asarray(x, jnp.float64))
        k_ref = sum(
            np.einsum("icp,jcp->ij", np.asarray(a).reshape(90, 2, -1), np.asarray(a).reshape(90, 2, -1))
            for a in jax.tree_util.tree_leaves(j1)
        )
    assert lam.dtype == np.float32
    assert np.max(np.abs(lam / _eig_desc(k_ref)[:3] - 1)) < 1e-4


def test_validation_errors(setup):
    model, x, _, _ = setup
    with enable_x64():
        _check_errors(model, x)


def _check_errors(model, x):
    with pytest.raises(ValueError, match="k:"):
        linalg.top_eigenvalues(model, x, N + 1)
    with pytest.raises(ValueError, match="k:"):
        linalg.top_eigenvalues(model, x, 0)
    with pytest.raises(ValueError, match="method:"):
        linalg.top_eigenvalues(model, x, 2, method="arpack")
    with pytest.raises(ValueError, match="outputs:"):
        linalg.top_eigenvalues(model, x, 2, outputs="diag")
    with pytest.raises(ValueError, match="block_size:"):
        linalg.top_eigenvalues(model, x, 2, block_size=0)
    with pytest.raises(ValueError, match="tol:"):
        linalg.top_eigenvalues(model, x, 2, tol=-1.0)
    with pytest.raises(ValueError, match="k:"):
        linalg.top_eigenvalues(model, x, 30, method="lobpcg")  # needs N >= 5k
    with pytest.raises(ValueError, match="num_probes:"):
        linalg.entropy_estimate(model, x, num_probes=1)
    with pytest.raises(ValueError, match="lanczos_order:"):
        linalg.entropy_estimate(model, x, lanczos_order=N + 1)
    with pytest.raises(ValueError, match="deflate:"):
        linalg.entropy_estimate(model, x, lanczos_order=100, deflate=30)
    with pytest.raises(ValueError, match="v:"):
        linalg.kernel_matvec(model, x)(jnp.ones(N + 1))
    with pytest.raises(TypeError, match="x:"):
        linalg.top_eigenvalues(model, [[1.0, 2.0]], 1)
    with pytest.raises(TypeError, match="model"):
        linalg.top_eigenvalues((1, 2, 3), x, 1)


def test_entropy_estimate_reuses_given_eigenpairs(setup):
    model, x, k_trace, _ = setup
    exact = _entropy(_eig_desc(k_trace))
    with enable_x64():
        pairs = linalg.top_eigenvalues(model, x, 6, method="lanczos", vectors=True, block_size=BLOCK)
        est, err = linalg.entropy_estimate(
            model,
            x,
            num_probes=12,
            lanczos_order=30,
            key=jax.random.key(9),
            eigenpairs=pairs,
            block_size=BLOCK,
        )
        with pytest.raises(ValueError, match="eigenpairs:"):
            linalg.entropy_estimate(model, x, eigenpairs=(pairs[0], pairs[1][:10]))
    assert abs(float(est) - exact) <= 3 * float(err)


# ---------------------------------------------------------------------------
# Feature-cached K v (matvec="features") against the jvp/vjp path and the dense kernel
# ---------------------------------------------------------------------------


class _TokenNet(eqx.Module):
    """Embedding (token-Gram route) -> per-token Linear (T = 2) -> LayerNorm -> Linear."""

    emb: eqx.nn.Embedding
    mix: eqx.nn.Linear
    norm: eqx.nn.LayerNorm
    head: eqx.nn.Linear

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.emb = eqx.nn.Embedding(50, 32, key=k1, dtype=jnp.float64)
        self.mix = eqx.nn.Linear(32, 32, key=k2, dtype=jnp.float64)
        self.norm = eqx.nn.LayerNorm(32, dtype=jnp.float64)
        self.head = eqx.nn.Linear(64, 2, key=k3, dtype=jnp.float64)

    def __call__(self, tokens):
        h = jax.nn.gelu(jax.vmap(self.mix)(jax.vmap(self.emb)(tokens)))
        return self.head(jnp.ravel(jax.vmap(self.norm)(h)))


class _ConvNet(eqx.Module):
    conv: eqx.nn.Conv2d
    head: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.conv = eqx.nn.Conv2d(1, 3, 3, padding=1, key=k1, dtype=jnp.float64)
        self.head = eqx.nn.Linear(3 * 5 * 5, 2, key=k2, dtype=jnp.float64)

    def __call__(self, x):
        return self.head(jnp.ravel(jax.nn.relu(self.conv(x))))


def _feature_case(name):
    n = 23
    if name == "mlp":
        model = _model()
        x = jax.random.normal(jax.random.key(1), (n, 4), jnp.float64)
    elif name == "tokens":
        model = _TokenNet(jax.random.key(0))
        x = jax.random.randint(jax.random.key(1), (n, 2), 0, 50)
        x = x.at[:, 1].set(x[:, 0] % 7)  # repeated ids across samples and positions
    else:
        model = _ConvNet(jax.random.key(0))
        x = jax.random.normal(jax.random.key(1), (n, 1, 5, 5), jnp.float64)
    return model, x


@pytest.mark.parametrize("name", ["mlp", "tokens", "cnn"])
def test_feature_matvec_equals_jvp_and_dense(name):
    with enable_x64():
        model, x = _feature_case(name)
        n = x.shape[0]
        k_trace, k_full = _dense(model, x)
        c = k_full.shape[0] // n
        op = linalg._operator(model, x, "trace", 10, "features", 2**30)
        assert isinstance(op, linalg._FeatureOperator)
        specs = op.grams
        if name == "tokens":  # the embedding goes by token Grams, the rest as Jacobians
            assert any(s.embedding for s in specs) and len(op.feats) > 2 * len(specs)
        if name == "cnn":  # convolution weights as Jacobian features
            assert len(op.feats) > 2 * len(specs)
        for outputs, ref, shape in [("trace", k_trace, (n,)), ("full", k_full, (n, c))]:
            v = np.asarray(jax.random.normal(jax.random.key(2), shape, jnp.float64))
            want = (ref @ v.reshape(-1)).reshape(shape)
            got_f = np.asarray(linalg.kernel_matvec(model, x, outputs=outputs, block_size=10, matvec="features")(v))
            got_j = np.asarray(linalg.kernel_matvec(model, x, outputs=outputs, block_size=10, matvec="jvp")(v))
            scale = np.abs(want).max()
            np.testing.assert_allclose(got_f, want, rtol=1e-10, atol=1e-10 * scale)
            np.testing.assert_allclose(got_f, got_j, rtol=1e-10, atol=1e-10 * scale)


def test_matvec_choice_and_validation():
    with enable_x64():
        model, x = _feature_case("mlp")
        assert isinstance(linalg._operator(model, x, "trace", None, "auto", 2**30), linalg._FeatureOperator)
        # features (N·(4 + 16 + 16 + 16 + 16·3 ...) floats) do not fit in 100 bytes: jvp path
        assert isinstance(linalg._operator(model, x, "trace", None, "auto", 100), linalg._JvpOperator)
        assert isinstance(linalg._operator(model, x, "trace", None, "jvp", 2**30), linalg._JvpOperator)
        with pytest.raises(ValueError, match="matvec"):
            linalg.kernel_matvec(model, x, matvec="fast")
        with pytest.raises(ValueError, match="memory_limit"):
            linalg.top_eigenvalues(model, x, 2, method="lanczos", memory_limit=-1)

        def plain(x):  # no layer the structured rule can tap
            return jnp.stack([jnp.sum(jnp.sin(x)), jnp.sum(x**2)])

        params = {"w": jnp.ones(4, jnp.float64)}
        with pytest.raises(ValueError, match="matvec"):
            linalg.kernel_matvec((lambda p, xi: plain(p["w"] * xi), params), x, matvec="features")


@pytest.mark.parametrize("matvec", ["features", "jvp"])
def test_top_eigenvalues_and_entropy_both_matvecs(setup, matvec):
    model, x, k_trace, _ = setup
    with enable_x64():
        lam = np.asarray(linalg.top_eigenvalues(model, x, 5, method="lanczos", block_size=BLOCK, matvec=matvec))
        np.testing.assert_allclose(lam, _eig_desc(k_trace)[:5], rtol=1e-8)
        s, err = linalg.entropy_estimate(
            model, x, num_probes=4, lanczos_order=20, block_size=BLOCK, matvec=matvec, key=jax.random.key(3)
        )
        assert abs(float(s) - _entropy(_eig_desc(k_trace))) < 4 * float(err) + 1e-3
