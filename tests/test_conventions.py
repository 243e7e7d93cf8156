"""Kernel conventions (ntkbench.conventions) against independent references: the full
kernel against a float64 per-sample Jacobian contracted here, traces across reductions,
cosine-normalised entropies of kernels with a known spectrum, attributes and labels."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkbench.conventions import DEFAULT, KERNEL_FULL_MAX, Convention, of
from ntkbench.kernel import entk
from ntkbench.measures import entropy, spectrum, trace
from ntkbench.models import MLP


def _model_and_x(outputs=3, n=5):
    model = MLP(4, outputs, width=16, depth=2, key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (n, 4))
    return model, x


def _jacobian64(model, x):
    """Per-sample Jacobians in float64, (N·C, P) rows sample-major: the reference."""
    import equinox as eqx

    from tests._x64 import enable_x64

    with enable_x64():
        params, static = eqx.partition(model, eqx.is_inexact_array)
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)

        def f(p, xi):
            return eqx.combine(p, static)(xi)

        rows = []
        for xi in np.asarray(x, np.float64):
            jac = jax.jacrev(f)(params, jnp.asarray(xi))  # leaves (C, *leaf)
            leaves = jax.tree.leaves(jac)
            rows.append(np.concatenate([np.asarray(a).reshape(a.shape[0], -1) for a in leaves], axis=1))
        return np.concatenate(rows, axis=0)


def test_full_kernel_spectrum_and_entropy_match_a_float64_jacobian():
    model, x = _model_and_x()
    n, c = x.shape[0], 3
    conv = Convention(kernel="full")
    M = np.asarray(conv.matrix(entk(model, x, outputs=conv.entk_outputs), c), np.float64)
    J = _jacobian64(model, x)
    K64 = J @ J.T  # (N·C, N·C), sample-major: row i·C + a is output a of sample i
    assert M.shape == (n * c, n * c) == K64.shape
    # float32 kernel of O(10) entries: 1e-5 of the largest entry is round-off
    np.testing.assert_allclose(M, K64, rtol=0, atol=1e-5 * np.abs(K64).max())
    lam64 = np.clip(np.linalg.eigvalsh(K64)[::-1], 0, None)
    lam = np.asarray(spectrum(jnp.asarray(M)))
    np.testing.assert_allclose(lam, lam64, rtol=0, atol=1e-5 * lam64[0])
    p = lam64[lam64 > 1e-12 * lam64[0]] / lam64.sum()
    S64 = -(p * np.log(p)).sum()
    assert float(entropy(lam)) == pytest.approx(S64, abs=1e-4)  # float32 spectrum: 1e-4 nats
    eff = Convention(kernel="full", effective=True)
    assert float(eff.entropy(entropy(lam), M.shape[0])) == pytest.approx(S64 / math.log(n * c), abs=1e-4)


def test_traces_of_the_full_and_traced_kernels_and_the_mean_over_outputs():
    model, x = _model_and_x()
    c = 3
    traced = entk(model, x)
    full = Convention(kernel="full").matrix(entk(model, x, outputs="full"), c)
    summed = Convention().matrix(traced, c)
    mean = Convention(output_reduction="mean").matrix(traced, c)
    # Tr K_full = Σ_i Σ_a ‖∂f_a(x_i)/∂θ‖² = Tr K_traced (sum); the mean's is C times smaller
    np.testing.assert_allclose(float(trace(full)), float(trace(summed)), rtol=1e-5)
    np.testing.assert_allclose(float(trace(summed)), c * float(trace(mean)), rtol=1e-6)
    # entropies do not depend on the reduction (the mean's kernel is the sum's scaled by 1/C)
    np.testing.assert_allclose(float(entropy(spectrum(summed))), float(entropy(spectrum(mean))), atol=1e-5)
    papyrus = Convention(kernel="full", trace_normalize=True)
    assert float(papyrus.trace(trace(full), full.shape[0])) == pytest.approx(float(trace(full)) / (5 * c), rel=1e-6)


def test_cosine_normalised_entropy_of_known_kernels():
    cosine = Convention(normalize="cosine")
    # block-diagonal: two groups of parallel gradients with different norms; cosine
    # normalisation gives all-ones blocks of sizes 3 and 2, eigenvalues 3 and 2
    v = np.array([1.0, 2.0, 0.5, 3.0, 1.5])
    groups = np.array([0, 0, 0, 1, 1])
    K = np.where(groups[:, None] == groups[None, :], np.outer(v, v), 0.0)
    lam = spectrum(cosine.spectral(jnp.asarray(K)))
    p = np.array([3, 2]) / 5
    assert float(entropy(lam)) == pytest.approx(-(p * np.log(p)).sum(), abs=1e-5)
    # the raw kernel's spectrum follows the norms instead: another entropy
    p_raw = np.array([(v[:3] ** 2).sum(), (v[3:] ** 2).sum()]) / (v**2).sum()
    assert float(entropy(spectrum(jnp.asarray(K)))) == pytest.approx(-(p_raw * np.log(p_raw)).sum(), abs=1e-5)
    # rank 1 with positive entries: cosine normalisation gives all ones, one eigenvalue N
    w = np.array([0.3, 1.0, 2.0, 4.0])
    lam1 = np.asarray(spectrum(cosine.spectral(jnp.asarray(np.outer(w, w)))))
    np.testing.assert_allclose(lam1, [4, 0, 0, 0], atol=1e-5)
    assert float(entropy(lam1)) == pytest.approx(0.0, abs=1e-5)


def test_attributes_round_trip_and_labels():
    for conv in (DEFAULT, Convention("full", "cosine", True, True, "sum"), Convention(output_reduction="mean")):
        assert of(conv.attrs()) == conv
    assert of({}) == DEFAULT  # a cube written before conventions existed
    assert of({"long_name": "x"}) == DEFAULT
    assert Convention().for_measure("loss") == {}
    assert Convention().for_measure("test_entropy")["ntk_kernel"] == "traced"
    assert Convention(output_reduction="mean").describe("trace") == "Tr K of the eNTK (mean over outputs)"
    assert Convention(kernel="full").describe("eigenvalues") == "eigenvalue of the full eNTK"
    assert Convention().describe("entropy") == "S of the eNTK [nat]"
    assert Convention(trace_normalize=True).describe("test_trace") == "Tr K / N of the eNTK (test probe)"


def test_bad_conventions_name_the_argument():
    with pytest.raises(ValueError, match="kernel must be one of 'traced', 'full'"):
        Convention(kernel="diag")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="normalize"):
        Convention(normalize="l2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="effective must be true or false"):
        Convention(effective="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="output_reduction: a full kernel"):
        Convention(kernel="full", output_reduction="mean")
    with pytest.raises(ValueError, match="ntk_effective"):
        of({"ntk_kernel": "full", "ntk_effective": "maybe"})
    Convention(kernel="full").check_size(KERNEL_FULL_MAX // 10, 10)
    with pytest.raises(
        ValueError, match=r"probe: the full eNTK of 410 samples × 10 outputs has 4100 rows.*kernel-free"
    ):
        Convention(kernel="full").check_size(410, 10)
    Convention().check_size(10_000, 10)  # a traced kernel's size is N
