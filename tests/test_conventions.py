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

    from _x64 import enable_x64

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
    assert Convention().describe("entropy") == "S of the eNTK"
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


# --------------------------------------------------------------------------- through train()


def _data(n_train=12, n_test=6):
    from ntkbench.data import from_arrays

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_train + n_test, 4)).astype(np.float32)
    y = np.arange(n_train + n_test) % 3
    return from_arrays(x, y, n_train, n_test)


def _train(recorder, *, steps=2, batch_size=None, seed=0):
    import optax

    from ntkbench.train import train

    model = MLP(4, 3, width=16, depth=2, key=jax.random.key(seed))
    return train(
        model,
        _data(),
        optimizer=optax.sgd(0.05),
        steps=steps,
        batch_size=batch_size,
        recorder=recorder,
        key=jax.random.key(7),
    )


def test_recorded_full_kernel_against_a_float64_jacobian_and_its_attributes():
    from ntkbench.train import Recorder

    names = ["eigenvalues", "entropy", "trace", "trace_per_sample", "effective_rank", "residual_weights"]
    _, ds = _train(Recorder(every=1, probe=5, measures=names, kernel="full"), steps=0)
    model = MLP(4, 3, width=16, depth=2, key=jax.random.key(0))  # the model recorded at step 0
    J = _jacobian64(model, np.asarray(_data().x_train[:5]))
    lam64 = np.clip(np.linalg.eigvalsh(J @ J.T)[::-1], 0, None)
    assert ds.sizes["eigen_index"] == 15  # N·C eigenvalues
    np.testing.assert_allclose(ds["eigenvalues"][0], lam64, rtol=0, atol=1e-5 * lam64[0])  # float32 round-off
    p = lam64[lam64 > 1e-12 * lam64[0]] / lam64.sum()
    assert float(ds["entropy"][0]) == pytest.approx(-(p * np.log(p)).sum(), abs=1e-4)
    assert float(ds["trace"][0]) == pytest.approx(lam64.sum(), rel=1e-5)
    assert float(ds["trace_per_sample"][0]) == pytest.approx(lam64.sum() / 5, rel=1e-5)  # per sample, not per row
    # residual weights on the full kernel's eigenvectors (C = 3 > 1: refused on the traced kernel)
    assert float(ds["residual_weights"][0].sum()) == pytest.approx(1.0, abs=1e-5)
    for name in names:
        assert ds[name].attrs["ntk_kernel"] == "full", name
    assert ds["entropy"].attrs["long_name"] == "S of the full eNTK"
    assert ds["entropy"].attrs["units"] == "nat"
    assert ds["trace"].attrs["ntk_trace_normalize"] == "false"


def test_recorded_conventions_scale_as_their_definitions_say():
    from ntkbench.train import Recorder

    names = ["eigenvalues", "entropy", "entropy_normalized", "trace", "test_entropy", "test_trace", "loss"]
    _, base = _train(Recorder(every=1, probe=6, measures=names))
    n, c = 6, 3
    _, eff = _train(Recorder(every=1, probe=6, measures=names, effective=True, trace_normalize=True))
    np.testing.assert_allclose(eff["entropy"], base["entropy"] / math.log(n), rtol=1e-6)
    np.testing.assert_allclose(eff["entropy"], base["entropy_normalized"], rtol=1e-6)
    np.testing.assert_allclose(eff["trace"], base["trace"] / n, rtol=1e-6)
    np.testing.assert_allclose(eff["test_trace"], base["test_trace"] / n, rtol=1e-6)
    np.testing.assert_allclose(eff["loss"], base["loss"], rtol=0)  # training is not touched
    _, mean = _train(Recorder(every=1, probe=6, measures=names, output_reduction="mean"))
    np.testing.assert_allclose(mean["trace"], base["trace"] / c, rtol=1e-6)
    np.testing.assert_allclose(mean["entropy"], base["entropy"], atol=1e-5)  # scale-free
    _, cos = _train(Recorder(every=1, probe=6, measures=names, normalize="cosine"))
    # a cosine-normalised kernel has unit diagonal: its eigenvalues sum to N; traces are of K itself
    np.testing.assert_allclose(cos["eigenvalues"].sum("eigen_index"), n, rtol=1e-5)
    np.testing.assert_allclose(cos["trace"], base["trace"], rtol=1e-6)
    assert cos["entropy"].attrs["long_name"] == "S of the cosine-normalised eNTK"
    assert eff["entropy"].attrs["long_name"] == "S / ln N of the eNTK"
    assert eff["entropy"].attrs["units"] == "1"  # an effective entropy is dimensionless
    assert cos["loss"].attrs.get("ntk_kernel") is None  # not a kernel measure
    assert base["entropy"].attrs["ntk_kernel"] == "traced"


def _lnp64(model, x, y):
    """χ_loss, χ_net, χ_pos and ‖∇L‖² of one batch from its full kernel's eigendecomposition
    (float64 per-sample Jacobian, MSE on one-hot targets: u_i = f(x_i) − e_{y_i})."""
    J = _jacobian64(model, x)
    K = J @ J.T
    lam, V = np.linalg.eigh(K)
    f = np.asarray(jax.vmap(model)(jnp.asarray(x)), np.float64)
    u = (f - np.eye(3)[y]).reshape(-1)
    b = x.shape[0]
    w = (V.T @ u) ** 2 / (u @ u)
    return {
        "chi_loss": u @ u / b,
        "chi_net": lam.sum() / b,
        "spectral_position": float((lam / lam.sum()) @ w),
        "grad_norm_sq": float(u @ K @ u) / b**2,
    }


def test_lnp_on_the_training_batch_before_the_step():
    import optax

    from ntkbench.train import Recorder, train

    names = ["chi_loss", "chi_net", "spectral_position", "grad_norm_sq", "loss"]
    batch = 4
    rec = Recorder(every=1, probe=3, measures=names, lnp_batch="train", lnp_probes=None)
    _, ds = _train(rec, steps=2, batch_size=batch)
    data = _data()
    x, y = np.asarray(data.x_train), np.asarray(data.y_train)
    key = jax.random.key(7)
    model = MLP(4, 3, width=16, depth=2, key=jax.random.key(0))
    for step in (0, 1):
        if step:  # the model the record at `step` sees: `step` steps, trained here without a recorder
            model, _ = train(model, data, optimizer=optax.sgd(0.05), steps=step, batch_size=batch, key=key)
        # the batch of optimizer step `step`, drawn here as the loop draws it
        idx = np.asarray(jax.random.choice(jax.random.fold_in(key, step), len(x), (batch,), replace=False))
        ref = _lnp64(model, x[idx], y[idx])
        for name, value in ref.items():
            # float32 kernel and residual against float64: 1e-4 relative
            assert float(ds[name][step]) == pytest.approx(value, rel=1e-4), (step, name)
        assert ds[name].attrs["ntk_lnp_batch"] == "train"
    assert "training batch, before the step" in ds["chi_net"].attrs["long_name"]
    # the probe (3 samples) gives other numbers: the measure really moved to the batch
    _, probe = _train(Recorder(every=1, probe=3, measures=names, lnp_probes=None), steps=2, batch_size=batch)
    assert float(probe["chi_net"][0]) != pytest.approx(float(ds["chi_net"][0]), rel=1e-3)


def test_a_full_kernel_too_large_is_refused_before_training(monkeypatch):
    import ntkbench.conventions as conv
    from ntkbench.train import Recorder

    monkeypatch.setattr(conv, "KERNEL_FULL_MAX", 30)  # read at call time: 12 samples × 3 outputs exceed it
    with pytest.raises(ValueError, match="probe: the full eNTK of 12 samples × 3 outputs has 36 rows"):
        _train(Recorder(every=1, probe=12, measures=["entropy"], kernel="full"))
    _train(Recorder(every=1, probe=12, measures=["loss"], kernel="full"), steps=0)  # no kernel measure: no check
    with pytest.raises(ValueError, match="lnp_batch must be 'probe' or 'train'"):
        Recorder(lnp_batch="test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kernel must be one of"):
        Recorder(kernel="diagonal")


def test_sweep_config_takes_the_conventions_and_names_bad_ones():
    from ntkbench.sweep import validate_config

    base = {
        "title": "conv",
        "model": {"name": "mlp", "width": 8},
        "data": {"name": "digits", "n_train": 32, "n_test": 16},
        "train": {"steps": 2},
    }
    good = {"kernel": "full", "normalize": "cosine", "effective": True, "trace_normalize": True, "lnp_batch": "train"}
    validate_config({**base, "record": good})
    bad = [
        ({"kernel": "diag"}, "record.kernel"),
        ({"normalize": True}, "record.normalize"),
        ({"effective": "yes"}, "record.effective"),
        ({"lnp_batch": "test"}, "record.lnp_batch"),
        ({"kernel": "full", "output_reduction": "mean"}, "record.output_reduction"),
    ]
    for record, key in bad:
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            validate_config({**base, "record": record})


def test_another_networks_kernel_is_recorded_fixed_and_labelled():
    from ntkbench.selection import rnd_target
    from ntkbench.train import Recorder

    other = rnd_target(4, seed=5)  # 16 outputs, flattens its input
    names = ["eigenvalues", "entropy_normalized", "trace", "test_trace", "kernel_distance_init", "loss"]
    rec = Recorder(every=1, probe=6, measures=names, kernel_model=other, kernel_model_name="RND target network")
    _, ds = _train(rec, steps=2)
    _, own = _train(Recorder(every=1, probe=6, measures=names), steps=2)
    x = jnp.asarray(_data().x_train[:6])
    ref = np.asarray(spectrum(entk(other, x)))  # the other network's traced kernel, computed here
    for step in range(3):  # fixed: the same at every step, while the trained network's kernel moves
        np.testing.assert_allclose(ds["eigenvalues"][step], ref, rtol=1e-5, atol=1e-6 * ref[0])
    assert float(ds["kernel_distance_init"][-1]) == pytest.approx(0.0, abs=1e-6)
    assert float(own["kernel_distance_init"][-1]) > 1e-6
    np.testing.assert_allclose(ds["loss"], own["loss"], rtol=0)  # training is the trained network's
    assert ds["trace"].attrs["ntk_network"] == "RND target network"
    assert ds["trace"].attrs["long_name"].endswith(", RND target network")
    assert "ntk_network" not in ds["loss"].attrs
    with pytest.raises(ValueError, match="residual_weights"):
        Recorder(measures=["residual_weights"], kernel_model=other)


def test_sweep_measures_the_rnd_target_networks_kernel_of_the_selected_set(tmp_path):
    import ntkbench as nb
    from ntkbench.selection import rnd_target, select

    cfg = {
        "title": "rnd target",
        "seed": 0,
        "model": {"name": "mlp", "width": 8, "depth": 1},
        "data": {"name": "digits", "n_train": 64, "n_test": 16},
        "select": {"method": "rnd", "budget": 12, "seed": 3, "options": {"rnd": {"steps": 5, "out_size": 8}}},
        "train": {"optimizer": "sgd", "lr": 0.1, "steps": 2},
        "record": {"every": 2, "probe": 12, "kernel_model": "rnd_target", "normalize": "cosine"},
        "grid": {"seed": [0]},
    }
    ds = nb.sweep(cfg, tmp_path / "runs", progress=False)
    data = nb.load("digits", n_train=64, n_test=16)
    idx = select(data.x_train, 12, "rnd", seed=3, steps=5, out_size=8)
    target = rnd_target(64, seed=3, out_size=8)
    K = np.asarray(entk(target, jnp.asarray(data.x_train[idx])), np.float64)
    d = np.sqrt(np.diag(K))
    lam = np.clip(np.linalg.eigvalsh(K / np.outer(d, d))[::-1], 0, None)  # cosine-normalised, float64
    np.testing.assert_allclose(ds["eigenvalues"].isel(step=0).squeeze(), lam, atol=1e-5 * lam[0])
    assert ds["entropy"].attrs["ntk_network"] == "RND target network"
    assert ds["entropy"].attrs["ntk_normalize"] == "cosine"
    bad = {**cfg, "record": {"kernel_model": "rnd_target"}}
    del bad["select"]
    with pytest.raises(ValueError, match="record.kernel_model"):
        nb.sweep(bad, tmp_path / "bad", progress=False)
