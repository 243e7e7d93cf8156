"""nb.Watch: train()'s recordings from a loop the user writes; the same cube as train()."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ntkbench as nb
from ntkbench.testing import assert_cubes_close
from ntkbench.train import Recorder, Watch, make_loss, train
from ntkbench.train._recorder import train_batch

STEPS = 40
BATCH = 32
MEASURES = [
    "loss",
    "test_loss",
    "trace",
    "entropy",
    "eigenvalues",
    "kernel_distance_init",
    "test_entropy",
    "kernel_test_loss",
    "chi_loss",
    "accuracy",
]


@pytest.fixture(scope="module")
def digits():
    return nb.load("digits", 128, 64, seed=0)


def _model(seed: int = 0):
    return nb.MLP(64, 10, 16, 1, key=jax.random.key(seed))


def _recorder(**kw):
    return Recorder(every=10, probe=16, measures=MEASURES, **kw)


def _own_loop(data, model, watch: Watch, key, *, steps: int = STEPS, record_after_update: bool = False):
    """A hand-written optax loop: train()'s batches (train_batch from fold_in(key, step)),
    loss and optimizer, with ``watch(step, model)`` before each step's update."""
    loss_fn = make_loss("mse", data.task)
    opt = optax.sgd(0.1)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    state = opt.init(params)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)

    @jax.jit
    def update(params, state, step):
        def batch_loss(p):
            xb, yb = train_batch(x, y, key, step, BATCH)
            return jnp.mean(jax.vmap(loss_fn)(jax.vmap(eqx.combine(p, static))(xb), yb))

        updates, state = opt.update(jax.grad(batch_loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    recorded = []
    for step in range(steps + 1):
        if not record_after_update:
            recorded.append(watch(step, eqx.combine(params, static)))
        if step < steps:
            params, state = update(params, state, step)
        if record_after_update:
            recorded.append(watch(step, eqx.combine(params, static)))
    return recorded


@pytest.fixture(scope="module")
def both(digits):
    """(train()'s cube, Watch's cube) of the same run, and what each watch call returned."""
    key = jax.random.key(1)
    _, expected = train(
        _model(), digits, optimizer=optax.sgd(0.1), steps=STEPS, batch_size=BATCH, recorder=_recorder(), key=key
    )
    watch = Watch(digits, recorder=_recorder(), steps=STEPS, batch_key=key, batch_size=BATCH)
    recorded = _own_loop(digits, _model(), watch, key)
    return expected, watch, recorded


def test_own_loop_gives_the_cube_train_gives(both):
    expected, watch, _ = both
    ds = watch.cube()
    # structure exactly: dims, coordinates, variables, dtypes, variable attributes
    assert dict(ds.sizes) == dict(expected.sizes)
    assert list(ds.data_vars) == list(expected.data_vars)
    for name in expected.variables:
        assert ds[name].dims == expected[name].dims, name
        assert ds[name].dtype == expected[name].dtype, name
        assert ds[name].attrs == expected[name].attrs, name
    np.testing.assert_array_equal(ds["step"].values, expected["step"].values)
    config, config_expected = (__import__("json").loads(d.attrs["config"]) for d in (ds, expected))
    assert config == {**config_expected, "optimizer": "own loop (ntkbench.Watch)"}
    assert "diverged_step" not in ds.attrs
    # values: the same compiled record on parameters from a differently compiled update
    # loop (a jitted step per call vs train()'s fori_loop): at most float32 round-off (on
    # the machine this was written on the cubes are bit-identical; XLA may fuse the two
    # update loops differently elsewhere), so assert_cubes_close's defaults (1e-5 of each
    # variable's scale). Recording the model after the update instead moves the loss by
    # 0.38 of its scale.
    assert_cubes_close(ds, expected)


def test_records_only_at_the_recorders_steps(both):
    _, watch, recorded = both
    steps = _recorder().steps(STEPS).tolist()
    assert [i for i, r in enumerate(recorded) if r] == steps == [0, 10, 20, 30, 40]
    assert watch.cube()["step"].values.tolist() == steps


def test_the_cube_opens_in_the_explorer_and_saves(both, tmp_path):
    from ntkbench.widgets import Explorer

    _, watch, _ = both
    Explorer(watch.cube())
    path = watch.save(tmp_path / "watch.nc")
    assert_cubes_close(nb.cube.open(path), watch.cube(), rtol=0, atol=0)


def test_two_watches_combine_along_seed(digits):
    cubes = []
    for seed in (0, 1):
        key = jax.random.key(seed)
        watch = Watch(digits, recorder=Recorder(every=5, probe=8, measures=["loss", "trace"]), steps=5, batch_key=key)
        _own_loop(digits, _model(seed), watch, key, steps=5)
        cubes.append(watch.cube().expand_dims(seed=[seed]))
    combined = nb.cube.combine(cubes)
    assert combined.sizes["seed"] == 2 and combined["trace"].dims == ("seed", "step")
    assert not np.allclose(combined["trace"].sel(seed=0), combined["trace"].sel(seed=1))


def test_one_compilation_per_model_structure(digits):
    watch = Watch(digits, recorder=Recorder(every=1, probe=8, measures=["trace"]), steps=3)
    model = _model()
    watch(0, model)
    fixed = watch._fixed
    watch(1, jax.tree_util.tree_map(lambda a: a * 1.01 if eqx.is_inexact_array(a) else a, model))
    assert watch._fixed is fixed  # same static argument: the compiled record is reused


def test_bad_steps_name_step(digits):
    watch = Watch(digits, recorder=Recorder(every=2, probe=8, measures=["loss"]), steps=4)
    model = _model()
    assert watch(0, model) and not watch(1, model)
    with pytest.raises(ValueError, match="step"):
        watch(1, model)  # not increasing
    with pytest.raises(ValueError, match="step"):
        watch(0, model)
    with pytest.raises(ValueError, match="step"):
        watch(5, model)  # after the last step
    with pytest.raises(ValueError, match="step"):
        watch(-1, model)
    with pytest.raises(ValueError, match="nothing recorded"):
        Watch(digits, steps=4).cube()


def test_lnp_on_the_training_batch_needs_the_batches(digits):
    rec = Recorder(every=2, probe=8, measures=["chi_loss"], lnp_batch="train")
    with pytest.raises(ValueError, match="batch_key and batch_size"):
        Watch(digits, recorder=rec, steps=4)
    with pytest.raises(ValueError, match="batch_size"):
        Watch(digits, recorder=rec, steps=4, batch_key=jax.random.key(0))
    key = jax.random.key(0)
    _, expected = train(_model(), digits, optimizer=optax.sgd(0.1), steps=4, batch_size=BATCH, recorder=rec, key=key)
    watch = Watch(digits, recorder=rec, steps=4, batch_key=key, batch_size=BATCH)
    _own_loop(digits, _model(), watch, key, steps=4)
    assert_cubes_close(watch.cube(), expected)  # as above: at most round-off of the updates


def test_an_apply_fn_params_pair_is_watched(digits):
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {"w1": jax.random.normal(k1, (16, 64)) / 8, "w2": jax.random.normal(k2, (10, 16)) / 4}
    apply_fn = lambda p, x: p["w2"] @ jnp.tanh(p["w1"] @ x)  # noqa: E731
    watch = Watch(digits, recorder=Recorder(every=1, probe=8, measures=["trace", "loss"]), steps=1)
    assert watch(0, (apply_fn, params)) and watch(1, (apply_fn, jax.tree_util.tree_map(lambda a: 2 * a, params)))
    ds = watch.cube()
    assert np.isfinite(ds["trace"].values).all() and ds["trace"].values[1] > ds["trace"].values[0]


def test_a_non_finite_record_sets_diverged_step(digits):
    watch = Watch(digits, recorder=Recorder(every=1, probe=8, measures=["loss", "trace"]), steps=2)
    model = _model()
    watch(0, model)
    blown = jax.tree_util.tree_map(lambda a: a * jnp.nan if eqx.is_inexact_array(a) else a, model)
    watch(1, blown)
    watch(2, blown)
    ds = watch.cube()
    assert ds.attrs["diverged_step"] == 1
    assert np.isfinite(ds["loss"].values[0]) and np.isnan(ds["loss"].values[1:]).all()


def test_train_takes_an_apply_fn_params_pair(digits):
    """A pair's static part holds a dict (unhashable): its record compiles per call of
    train() (it raised TypeError: unhashable type '_Unhashable' before)."""
    params = {"w": jnp.ones((10, 64)) / 8}
    rec = Recorder(every=1, probe=8, measures=["trace", "loss"])
    _, ds = train(
        (lambda p, x: p["w"] @ x, params),
        digits,
        optimizer=optax.sgd(0.1),
        steps=2,
        recorder=rec,
        key=jax.random.key(0),
    )
    assert np.isfinite(ds["trace"].values).all()
