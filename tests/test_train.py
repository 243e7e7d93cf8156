"""Training loop and recorders: losses fall, recordings match independent references."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import xarray as xr
from jax.flatten_util import ravel_pytree

import ntkbench as nb
from ntkbench.train import DEFAULT_MEASURES, MEASURES, Measure, Recorder, train

PROBE = 24


@pytest.fixture(scope="module")
def digits():
    return nb.load("digits", 128, 64, seed=0)


@pytest.fixture(scope="module")
def model0():
    return nb.MLP(64, 10, 32, 2, key=jax.random.key(0))


@pytest.fixture(scope="module")
def run(digits, model0):
    rec = Recorder(every=20, probe=PROBE)
    trained, ds = train(
        model0, digits, optimizer=optax.sgd(0.1), steps=60, batch_size=32, recorder=rec, key=jax.random.key(1)
    )
    return trained, ds


def _reference_kernel(model, x) -> np.ndarray:
    """Σ_k J_k J_kᵀ from per-sample Jacobians of the flattened parameters, in float64."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)

    def f(theta, xi):
        return eqx.combine(unravel(theta), static)(xi)

    J = np.asarray(jax.vmap(jax.jacrev(f), in_axes=(None, 0))(flat, jnp.asarray(x)), np.float64)
    return np.einsum("nkp,mkp->nm", J, J)


def test_dims_attrs_and_steps(run):
    _, ds = run
    assert ds["step"].values.tolist() == [0, 20, 40, 60]
    assert set(ds.data_vars) == set(DEFAULT_MEASURES)
    assert ds["eigenvalues"].dims == ("step", "eigen_index")
    assert ds.sizes["eigen_index"] == PROBE
    for name, var in ds.data_vars.items():
        assert var.dims[0] == "step", name
        assert var.attrs["long_name"] and "units" in var.attrs, name
    nb.validate(ds)


def test_loss_falls(run):
    _, ds = run
    loss = ds["loss"].values
    assert np.all(np.diff(loss) < 0) and loss[-1] < 0.7 * loss[0]
    assert ds["test_loss"].values[-1] < ds["test_loss"].values[0]
    assert ds["accuracy"].values[-1] > ds["accuracy"].values[0] + 0.3


def test_step0_eigenvalues_match_independent_reference(run, model0, digits):
    _, ds = run
    K = _reference_kernel(model0, digits.x_train[:PROBE])
    ref = np.sort(np.linalg.eigvalsh(K))[::-1]
    got = ds["eigenvalues"].sel(step=0).values.astype(np.float64)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4 * ref[0])
    np.testing.assert_allclose(float(ds["trace"].sel(step=0)), np.trace(K), rtol=1e-4)
    np.testing.assert_allclose(float(ds["trace_per_sample"].sel(step=0)), np.trace(K) / PROBE, rtol=1e-4)


def test_final_eigenvalues_match_reference_of_trained_model(run, digits):
    trained, ds = run
    K = _reference_kernel(trained, digits.x_train[:PROBE])
    ref = np.sort(np.linalg.eigvalsh(K))[::-1]
    got = ds["eigenvalues"].sel(step=60).values.astype(np.float64)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4 * ref[0])


def test_scalar_measures_consistent_with_recorded_spectrum(run):
    _, ds = run
    lam = np.clip(ds["eigenvalues"].values.astype(np.float64), 0, None)
    p = lam / lam.sum(-1, keepdims=True)
    S = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=-1)
    np.testing.assert_allclose(ds["entropy"].values, S, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ds["entropy_normalized"].values, S / np.log(PROBE), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ds["effective_rank"].values, np.exp(S), rtol=1e-4)
    np.testing.assert_allclose(ds["trace"].values, lam.sum(-1), rtol=1e-4)
    assert abs(float(ds["kernel_distance_init"].sel(step=0))) < 1e-5
    assert abs(float(ds["relative_change_init"].sel(step=0))) < 1e-5
    assert float(ds["relative_change_init"].isel(step=-1)) > 0


def test_loss_and_accuracy_match_direct_evaluation(run, digits):
    trained, ds = run
    preds = np.asarray(jax.vmap(trained)(jnp.asarray(digits.x_test)), np.float64)
    onehot = np.eye(10)[digits.y_test]
    mse = np.mean(0.5 * np.sum((preds - onehot) ** 2, axis=-1))
    acc = np.mean(np.argmax(preds, -1) == digits.y_test)
    np.testing.assert_allclose(float(ds["test_loss"].isel(step=-1)), mse, rtol=1e-5)
    np.testing.assert_allclose(float(ds["test_accuracy"].isel(step=-1)), acc)


def test_same_key_same_result_and_recording_does_not_change_training(digits, model0):
    kw = dict(optimizer=optax.sgd(0.1), steps=30, batch_size=16, key=jax.random.key(3))
    m1, ds1 = train(model0, digits, recorder=Recorder(every=10, probe=8, measures=["loss", "entropy"]), **kw)
    m2, ds2 = train(model0, digits, recorder=Recorder(every=10, probe=8, measures=["loss", "entropy"]), **kw)
    xr.testing.assert_identical(ds1.drop_attrs(), ds2.drop_attrs())
    # batches come from fold_in(key, step): no recorder, or another schedule, same model
    m3, ds3 = train(model0, digits, recorder=None, **kw)
    m4, _ = train(model0, digits, recorder=Recorder(every=[7, 13], probe=8, measures=["loss"]), **kw)
    for m in (m2, m3, m4):
        for a, b in zip(jax.tree.leaves(m1), jax.tree.leaves(m), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert ds3["step"].values.tolist() == [30]
    assert set(ds3.data_vars) == {"loss", "test_loss"}
    np.testing.assert_allclose(ds3["loss"].values, ds1["loss"].sel(step=[30]).values, rtol=1e-6)
    # another batch key trains differently
    m5, _ = train(model0, digits, recorder=None, **{**kw, "key": jax.random.key(4)})
    assert not np.array_equal(np.asarray(m5.layers[0].weight), np.asarray(m1.layers[0].weight))


def test_full_batch_ce_custom_measure_and_spectral_position_wiring(digits, model0):
    class TopEigenvalue(Measure):
        name = "top_eigenvalue"

        def __call__(self, ctx):
            return ctx.eigenvalues[0]

    rec = Recorder(
        every=5,
        probe=8,
        measures=[TopEigenvalue(), "eigenvalues", "loss", "test_entropy", "test_trace", "spectral_position"],
    )
    _, ds = train(
        model0,
        digits,
        optimizer=optax.adam(1e-2),
        steps=10,
        batch_size=None,
        loss="ce",
        recorder=rec,
        key=jax.random.key(0),
    )
    np.testing.assert_array_equal(ds["top_eigenvalue"].values, ds["eigenvalues"].values[:, 0])
    assert ds["loss"].values[-1] < ds["loss"].values[0]
    K_test = _reference_kernel(model0, digits.x_test[:8])
    np.testing.assert_allclose(float(ds["test_trace"].sel(step=0)), np.trace(K_test), rtol=1e-4)
    assert ds["test_entropy"].attrs["long_name"]
    # wiring only: the recorder's spectral_position is the chi_pos of the nb.lnp it calls
    # (lnp itself is checked against independent references in its own tests)
    ref = nb.lnp(model0, digits.x_train[:8], digits.y_train[:8], "ce")
    np.testing.assert_allclose(float(ds["spectral_position"].sel(step=0)), float(ref.chi_pos), rtol=1e-4)


def test_regression_task_defaults_and_errors():
    data = nb.load("teacher", 32, 16, seed=0)
    model = nb.MLP(int(np.prod(data.in_shape)), data.n_outputs, 16, 1, key=jax.random.key(0))
    _, ds = train(
        model,
        data,
        optimizer=optax.sgd(0.05),
        steps=10,
        batch_size=8,
        recorder=Recorder(every=5, probe=8),
        key=jax.random.key(0),
    )
    assert "accuracy" not in ds and "test_accuracy" not in ds and "entropy" in ds
    with pytest.raises(ValueError, match="accuracy"):
        train(
            model,
            data,
            optimizer=optax.sgd(0.05),
            steps=1,
            recorder=Recorder(probe=4, measures=["accuracy"]),
            key=jax.random.key(0),
        )
    with pytest.raises(ValueError, match="loss"):
        train(model, data, optimizer=optax.sgd(0.05), steps=1, loss="ce", recorder=None, key=jax.random.key(0))


def test_recorder_schedules_and_validation():
    assert Recorder(every=25).steps(60).tolist() == [0, 25, 50, 60]
    assert Recorder(every=[5, 3, 500]).steps(100).tolist() == [0, 3, 5, 100]
    log = Recorder(every="log", log_points=10).steps(1000)
    assert log[0] == 0 and log[-1] == 1000 and np.all(np.diff(log) > 0)
    ratios = np.diff(np.log(log[1:].astype(float)))
    assert np.allclose(ratios, ratios.mean(), rtol=0.2)  # log-spaced
    assert Recorder().steps(0).tolist() == [0]
    with pytest.raises(ValueError, match="every"):
        Recorder(every=0)
    with pytest.raises(ValueError, match="every"):
        Recorder(every="sometimes")
    with pytest.raises(ValueError, match="probe"):
        Recorder(probe=0)
    with pytest.raises(ValueError, match="measures"):
        Recorder(measures=["entropy", "nonsense"])
    with pytest.raises(TypeError, match="measures"):
        Recorder(measures="entropy")
    assert set(DEFAULT_MEASURES) <= set(MEASURES)


#: train.MEASURES (name -> class name, dims, needs), DEFAULT_MEASURES and the measures
#: watched for divergence as train.py wrote them out before they were read from the one
#: table ntkbench._variables.TABLE (issue 26)
_MEASURES_BEFORE = {
    "eigenvalues": ("Eigenvalues", ("eigen_index",), []),
    "entropy": ("Entropy", (), []),
    "entropy_normalized": ("EntropyNormalized", (), []),
    "trace": ("Trace", (), []),
    "trace_per_sample": ("TracePerSample", (), []),
    "effective_rank": ("EffectiveRank", (), []),
    "magnitude_entropy": ("MagnitudeEntropy", (), []),
    "kernel_distance_init": ("KernelDistanceInit", (), ["kernel0"]),
    "relative_change_init": ("RelativeChangeInit", (), ["kernel0"]),
    "test_entropy": ("TestEntropy", (), ["test"]),
    "test_entropy_normalized": ("TestEntropyNormalized", (), ["test"]),
    "test_trace": ("TestTrace", (), ["test"]),
    "test_trace_per_sample": ("TestTracePerSample", (), ["test"]),
    "spectral_position": ("SpectralPosition", (), []),
    "chi_loss": ("ChiLoss", (), []),
    "chi_net": ("ChiNet", (), []),
    "chi_net_se": ("ChiNetSE", (), []),
    "grad_norm_sq": ("GradNormSq", (), []),
    "residual_weights": ("ResidualWeights", ("eigen_index",), []),
    "spectral_position_eig": ("SpectralPositionEig", (), []),
    "loss": ("Loss", (), []),
    "test_loss": ("TestLoss", (), ["test"]),
    "accuracy": ("Accuracy", (), ["labels"]),
    "test_accuracy": ("TestAccuracy", (), ["labels", "test"]),
    "kernel_test_loss": ("KernelTestLoss", (), ["kernel_regression", "test"]),
    "kernel_test_accuracy": ("KernelTestAccuracy", (), ["kernel_regression", "labels", "test"]),
    "linear_test_loss": ("LinearTestLoss", (), ["linear_training", "test"]),
    "linear_test_accuracy": ("LinearTestAccuracy", (), ["labels", "linear_training", "test"]),
}
_DEFAULT_MEASURES_BEFORE = (
    "eigenvalues",
    "entropy",
    "entropy_normalized",
    "trace",
    "trace_per_sample",
    "effective_rank",
    "magnitude_entropy",
    "kernel_distance_init",
    "relative_change_init",
    "loss",
    "test_loss",
    "accuracy",
    "test_accuracy",
)
_DIVERGENCE_BEFORE = ("loss", "test_loss", "trace", "test_trace", "eigenvalues")


def test_measures_read_from_the_one_table_are_unchanged():
    """MEASURES, each built-in measure's dims and needs, DEFAULT_MEASURES (in order) and
    the measures watched for divergence equal what they were before the table; a
    subclass's own dims/needs win over the table's, and a name outside it keeps the
    defaults."""
    from ntkbench.train import _loop

    assert {n: (c.__name__, c.dims, sorted(c.needs)) for n, c in MEASURES.items()} == _MEASURES_BEFORE
    assert DEFAULT_MEASURES == _DEFAULT_MEASURES_BEFORE
    assert set(_loop._DIVERGENCE_MEASURES) == set(_DIVERGENCE_BEFORE)

    class Flat(Measure):
        name = "eigenvalues"
        dims = ()

        def __call__(self, ctx):
            return ctx.eigenvalues[0]

    class Mine(Measure):
        name = "my_measure"

        def __call__(self, ctx):
            return ctx.loss

    assert Flat.dims == () and Flat.needs == frozenset()
    assert Mine.dims == () and Mine.needs == frozenset()
    assert MEASURES["eigenvalues"].dims == ("eigen_index",)


def test_train_argument_errors(digits, model0):
    kw = dict(optimizer=optax.sgd(0.1), steps=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="steps"):
        train(model0, digits, **{**kw, "steps": -1})
    with pytest.raises(ValueError, match="batch_size"):
        train(model0, digits, batch_size=0, **kw)
    with pytest.raises(TypeError, match="optimizer"):
        train(model0, digits, **{**kw, "optimizer": "sgd"})
    with pytest.raises(TypeError, match="recorder"):
        train(model0, digits, recorder="every 10", **kw)
    with pytest.raises(TypeError, match="data"):
        train(model0, (digits.x_train, digits.y_train), **kw)


def test_small_probe_spectra_use_single_threaded_lapack_during_training_only(digits, model0):
    """A recording's small spectra run on single-threaded BLAS/LAPACK while train() runs
    (OpenBLAS threads spinning after each call slow XLA's next kernels), and the process's
    own limits come back after it, also when on_record raises."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from ntkbench.train import _lapack_one_thread

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    seen = []

    def on_record(step, values):
        seen.append(blas_threads())
        if step > 0:
            raise KeyboardInterrupt

    with threadpool_limits(limits=2, user_api="blas"):  # the tests run with OMP_NUM_THREADS=1
        before = blas_threads()
        assert before and set(before) == {2}, before
        with pytest.raises(KeyboardInterrupt):
            train(model0, digits, optimizer=optax.sgd(0.1), steps=4, recorder=Recorder(every=2, probe=16),
                  key=jax.random.key(0), on_record=on_record)  # fmt: skip
        assert seen == [[1] * len(before)] * 2
        assert blas_threads() == before
        with _lapack_one_thread(4096):  # a large probe: LAPACK keeps its threads
            assert blas_threads() == before
