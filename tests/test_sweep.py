"""Sweeps: config validation, grid expansion, determinism, resume, dask LocalCluster."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import xarray as xr

from ntkbench import cube
from ntkbench.sweep import NO_DASHBOARD, expand_grid, run_name, run_one, sweep, validate_config

TINY = {
    "title": "tiny",
    "seed": 0,
    "model": {"name": "mlp", "width": 8, "depth": 1},
    "data": {"name": "digits", "n_train": 48, "n_test": 24},
    "train": {"optimizer": "sgd", "lr": 0.1, "steps": 10, "batch_size": 16},
    "record": {"every": 5, "probe": 8},
    "grid": {"width": [8], "seed": [0, 1]},
}


def _cfg(**sections):
    cfg = copy.deepcopy(TINY)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


def _strip(ds: xr.Dataset) -> xr.Dataset:
    """The cube without its creation time (the only attribute that differs by design)."""
    ds = ds.copy()
    ds.attrs = {k: v for k, v in ds.attrs.items() if k != "created"}
    return ds


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    return out, sweep(TINY, out, progress=False)


@pytest.mark.parametrize(
    "change, key",
    [
        ({"train": {"lr": -1.0}}, "'train.lr'"),
        ({"train": {"lrr": 0.1}}, "'train.lrr'"),
        ({"train": {"optimizer": "rmsprop"}}, "'train.optimizer'"),
        ({"train": {"batch_size": 0}}, "'train.batch_size'"),
        ({"train": {"steps": 1.5}}, "'train.steps'"),
        ({"train": {"loss": "hinge"}}, "'train.loss'"),
        ({"model": {"activation": "swish2"}}, "'model.activation'"),
        ({"model": {"name": "resnet"}}, "'model.name'"),
        ({"model": {"heads": 2}}, "'model.heads'"),
        ({"model": {"width": 0}}, "'model.width'"),
        ({"model": {"name": "cnn", "channels": [8, 0]}}, "'model.channels'"),
        ({"model": {"name": "cnn", "channels": 8}}, "'model.channels'"),
        ({"model": {"name": "cnn", "downsample": 1}}, "'model.downsample'"),
        ({"data": {"name": "imagenet"}}, "'data.name'"),
        ({"data": {"n_train": -3}}, "'data.n_train'"),
        ({"record": {"every": "often"}}, "'record.every'"),
        ({"record": {"measures": ["entropy", "vibes"]}}, "'record.measures'"),
        ({"record": {"probes": 8}}, "'record.probes'"),
        ({"grid": {"colour": [1, 2]}}, "'grid.colour'"),
        ({"grid": {"width": 8}}, "'grid.width'"),
        ({"grid": {"width": []}}, "'grid.width'"),
        ({"grid": {"width": [8, 8]}}, "'grid.width'"),
        ({"grid": {"width": [8, -1]}}, "'grid.width'"),
        ({"grid": {"lr": [0.1, "fast"]}}, "'grid.lr'"),
        ({"seed": -1}, "'seed'"),
        ({"epochs": 3}, "'epochs'"),
    ],
)
def test_config_errors_name_the_key(change, key):
    with pytest.raises(ValueError, match=key):
        validate_config(_cfg(**change))


@pytest.mark.parametrize(
    "change, key, what",
    [
        ({"data": {"n_train": 5000}}, "'data'", "exceeds"),  # digits has 1797 images
        ({"data": {"scale": "weird"}}, "'data'", "scale"),
        ({"data": {"name": "teacher"}, "train": {"loss": "ce"}}, "'train.loss'", "regression"),
        ({"model": {"name": "cnn"}}, "'model'", "cnn"),  # a CNN on flat digits
    ],
)
def test_sweep_checks_runs_before_creating_anything(tmp_path, change, key, what):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=key) as err:
        sweep(_cfg(**change), out, progress=False)
    assert what in str(err.value)
    assert not out.exists()  # failed before the output folder (or a cluster) existed


def test_config_error_says_what_is_allowed():
    with pytest.raises(ValueError, match=r"one of \['sgd', 'momentum', 'adam', 'adamw'\]"):
        validate_config(_cfg(train={"optimizer": "rmsprop"}))
    with pytest.raises(ValueError, match="allowed keys"):
        validate_config(_cfg(train={"lrr": 0.1}))
    with pytest.raises(ValueError, match=r"\[model\]"):
        validate_config({"data": {"name": "digits"}})
    with pytest.raises(TypeError, match="config"):
        validate_config([("model", {})])


def test_expand_grid_and_run_names():
    cfg = _cfg()
    cfg["grid"] = {"width": [8, 16], "lr": [0.1, 0.01], "model.depth": [1, 2]}
    runs = expand_grid(cfg)
    assert len(runs) == 8
    r = runs[-1]
    assert r["grid"] == {"width": 16, "lr": 0.01, "model.depth": 2}
    assert r["model"]["width"] == 16 and r["train"]["lr"] == 0.01 and r["model"]["depth"] == 2
    names = {run_name(r["grid"]) for r in runs}
    assert len(names) == 8
    assert run_name(r["grid"]) == "run-width=16-lr=0.01-model_depth=2.nc"
    assert run_name({}) == "run.nc"


def test_run_one_adds_grid_dims_and_provenance():
    run = expand_grid(TINY)[1]
    ds = run_one(run)
    assert ds["entropy"].dims == ("width", "seed", "step")
    assert ds["width"].values.tolist() == [8] and ds["seed"].values.tolist() == [1]
    assert json.loads(ds.attrs["config"]) == run
    assert ds.attrs["title"] == "tiny"
    cube.validate(ds)
    with pytest.raises(ValueError, match="grid"):
        run_one(TINY)


def test_sweep_writes_one_file_per_run_and_combined_cube(swept):
    out, ds = swept
    names = sorted(p.name for p in out.iterdir())
    assert names == ["cube.nc", "run-width=8-seed=0.nc", "run-width=8-seed=1.nc"]
    assert dict(ds.sizes) == {"width": 1, "seed": 2, "step": 3, "eigen_index": 8}
    on_disk = xr.open_dataset(out / "cube.nc").load()  # plain xarray opens it, labelled
    xr.testing.assert_identical(on_disk, ds)
    assert on_disk["entropy"].attrs["long_name"] and on_disk["width"].attrs["long_name"]
    assert json.loads(on_disk.attrs["config"])["grid"] == TINY["grid"]
    # each run equals its own file; seeds differ
    for s in (0, 1):
        run = cube.open(out / f"run-width=8-seed={s}.nc")
        np.testing.assert_array_equal(run["eigenvalues"].values[0, 0], ds["eigenvalues"].sel(width=8, seed=s).values)
    assert not np.array_equal(ds["loss"].sel(seed=0).values, ds["loss"].sel(seed=1).values)


def test_same_seed_gives_identical_cube(swept, tmp_path):
    _, ds = swept
    again = sweep(TINY, tmp_path, progress=False)
    xr.testing.assert_identical(_strip(again), _strip(ds))


def test_rerun_skips_finished_runs(swept, monkeypatch):
    out, ds = swept
    stamps = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("run-*.nc")}

    def fail(*args, **kwargs):
        raise AssertionError("a finished run was recomputed")

    monkeypatch.setattr("ntkbench.sweep._run.run_one", fail)  # _run_to_file calls it there
    again = sweep(TINY, out, progress=False)
    xr.testing.assert_identical(_strip(again), _strip(ds))
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("run-*.nc")} == stamps


def test_corrupted_or_stale_run_is_recomputed(tmp_path):
    sweep(TINY, tmp_path, progress=False)
    bad = tmp_path / "run-width=8-seed=1.nc"
    bad.write_bytes(b"truncated")
    stale = tmp_path / "run-width=8-seed=0.nc"
    old_stale = stale.read_bytes()
    cfg = _cfg(train={"lr": 0.05})  # another config: refused unless told to start over
    with pytest.raises(
        ValueError, match=r"different config .*train\.lr \(folder: 0\.1, this config: 0\.05\).*overwrite"
    ):
        sweep(cfg, tmp_path, progress=False)
    assert stale.read_bytes() == old_stale
    ds = sweep(cfg, tmp_path, progress=False, overwrite=True)
    assert cube.open(bad).attrs["config"] == json.dumps(expand_grid(cfg)[1])
    assert stale.read_bytes() != old_stale
    assert json.loads(ds.attrs["config"])["train"]["lr"] == 0.05


def test_sweep_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="at most one"):
        sweep(TINY, tmp_path, workers=2, scheduler="tcp://127.0.0.1:1")
    with pytest.raises(ValueError, match="workers"):
        sweep(TINY, tmp_path, workers=0)


def test_local_cluster_sweep_equals_in_process(swept, tmp_path):
    pytest.importorskip("distributed")
    _, ds = swept
    distributed = sweep(TINY, tmp_path, workers=2, progress=False)
    xr.testing.assert_identical(_strip(distributed), _strip(ds))
    for s in (0, 1):
        assert (tmp_path / f"run-width=8-seed={s}.nc").exists()


def test_scheduler_address_and_client(swept, tmp_path):
    """An existing cluster (threads in this process, so no new JAX start-up) by address
    and by client gives the same cube."""
    distributed = pytest.importorskip("distributed")
    _, ds = swept
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, **NO_DASHBOARD) as cluster:
        by_address = sweep(TINY, tmp_path / "a", scheduler=cluster.scheduler_address, progress=False)
        with distributed.Client(cluster) as client:
            by_client = sweep(TINY, tmp_path / "b", client=client, progress=False)
            assert client.status == "running"  # a given client is left open
    xr.testing.assert_identical(_strip(by_address), _strip(ds))
    xr.testing.assert_identical(_strip(by_client), _strip(ds))


def test_mup_adam_scales_hidden_and_readout_updates():
    """µP with Adam: after one step from equal gradients, the hidden and readout layers move
    by lr · base_width / width, the input layer by lr (Adam's first step is lr · sign(g))."""
    import jax
    import jax.numpy as jnp

    import ntkbench as nb
    from ntkbench.sweep import _mup_scaled, make_optimizer

    width, lr = 32, 0.01
    model = nb.MLP(4, 3, width, 2, parametrization="mup", key=jax.random.key(0))
    import equinox as eqx

    params = eqx.filter(model, eqx.is_inexact_array)
    grads = jax.tree.map(jnp.ones_like, params)
    opt = _mup_scaled(make_optimizer("adam", lr), model)
    updates, _ = opt.update(grads, opt.init(params), params)
    expected = [lr, lr / width, lr / width]
    for layer, e in zip(updates.layers, expected, strict=True):
        np.testing.assert_allclose(np.asarray(layer.weight), -e, rtol=1e-4)
    standard = nb.MLP(4, 3, width, 2, key=jax.random.key(0))
    assert _mup_scaled(make_optimizer("adam", lr), standard) is make_optimizer("adam", lr)


def _mup_wrapped(opt, factors):
    """The µP optimizer as ntkbench.sweep built it before ntkbench.optim (the reference):
    ``opt``'s update, then each update leaf times its factor."""
    import jax
    import optax

    def update(updates, state, params=None):
        updates, state = opt.update(updates, state, params)
        leaves, treedef = jax.tree_util.tree_flatten(updates)
        leaves = [u * f if f != 1.0 else u for u, f in zip(leaves, factors, strict=True)]
        return jax.tree_util.tree_unflatten(treedef, leaves), state

    return optax.GradientTransformation(opt.init, update)


@pytest.mark.parametrize(
    "name, weight_decay", [("sgd", 0.0), ("sgd", 0.01), ("momentum", 0.0), ("adam", 0.0), ("adamw", 0.01)]
)
def test_scale_by_mup_chained_equals_the_former_mup_optimizer(name, weight_decay):
    """``optax.chain(opt, scale_by_mup(factors))`` (what run_one uses now) gives the updates
    of the former µP wrapper over several steps, eagerly and compiled. Compared exactly:
    both do the same operations in the same order (the optimizer's update, then one
    multiply by a Python float per leaf), so no rounding differs."""
    import equinox as eqx
    import jax

    import ntkbench as nb
    from ntkbench.models import mup_leaf_scales
    from ntkbench.optim import _mup_scaled, make_optimizer, scale_by_mup

    model = nb.MLP(4, 3, 16, 2, parametrization="mup", base_width=4, key=jax.random.key(0))
    params = eqx.filter(model, eqx.is_inexact_array)
    factors = mup_leaf_scales(model)
    assert sorted(set(factors)) == [0.25, 1.0]
    opt = make_optimizer(name, 0.01, 0.9, weight_decay)
    new, old = _mup_scaled(opt, model), _mup_wrapped(opt, factors)
    assert new is _mup_scaled(opt, model)  # cached: compiled training steps are reused
    keys = jax.random.split(jax.random.key(1), 4)
    grads = [jax.tree.map(lambda p, k=k: jax.random.normal(k, p.shape), params) for k in keys]

    def steps(tx, step):
        p, state, out = params, tx.init(params), []
        for g in grads:
            updates, state = step(tx, g, state, p)
            p = eqx.apply_updates(p, updates)
            out.append(updates)
        return out

    eager = lambda tx, g, s, p: tx.update(g, s, p)  # noqa: E731
    compiled = eqx.filter_jit(eager)
    for step in (eager, compiled):
        for a, b in zip(steps(new, step), steps(old, step), strict=True):
            for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # scale_by_mup alone: a stateless transformation that multiplies each leaf
    tx = scale_by_mup(factors)
    ones = jax.tree.map(np.ones_like, params)
    scaled, _ = tx.update(ones, tx.init(params))
    assert [float(np.asarray(u).flat[0]) for u in jax.tree_util.tree_leaves(scaled)] == list(factors)
    with pytest.raises(ValueError, match="µP optimizer"):
        tx.update(ones.layers[0], tx.init(params))


def test_diverged_run_is_kept_and_reported(tmp_path, capsys):
    cfg = _cfg(train={"lr": 1e6}, grid={"width": [8], "seed": [0]})
    ds = sweep(cfg, tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "run-width=8-seed=0.nc: training diverged at step" in err and "smaller lr" in err
    assert not np.isfinite(ds["loss"].values).all()
    step = cube.open(tmp_path / "run-width=8-seed=0.nc").attrs["diverged_step"]
    assert json.loads(ds.attrs["diverged_runs"]) == {"run-width=8-seed=0.nc": step}
    assert cube.open(tmp_path / "run-width=8-seed=0.nc")  # kept on disk for inspection


# --------------------------------------------------------------------------- selection and file data


def test_select_section_picks_the_training_set_and_becomes_dims(tmp_path):
    import ntkbench as nb

    cfg = _cfg(
        data={"n_train": 60, "n_test": 20},
        select={"method": "rnd", "budget": 6, "options": {"rnd": {"steps": 5}}},
        record={"every": 5, "probe": 200, "measures": ["eigenvalues", "trace", "test_accuracy"]},
        grid={"selection": ["rnd", "random"], "budget": [4, 6], "seed": [0]},
    )
    ds = sweep(cfg, tmp_path / "sel", progress=False)
    assert ds["selection"].values.tolist() == ["rnd", "random"]  # grid order, not sorted
    assert ds["budget"].values.tolist() == [4, 6] and ds.sizes["eigen_index"] == 6
    assert set(ds["trace"].dims) == {"width", "selection", "budget", "seed", "step"}  # TINY's grid sweeps width
    cube.validate(ds)  # the NaN tail of the 4-point spectra is padding, not a fault
    # the recorded kernel is that of the points ntkbench.select picks (run seed, options)
    data = nb.load("digits", 60, 20, seed=0)
    idx = nb.select(data.x_train, 4, "rnd", seed=0, steps=5)
    model = nb.make_model(
        {"name": "mlp", "width": 8, "depth": 1},
        key=__import__("jax").random.split(__import__("jax").random.key(0))[0],
        in_shape=data.in_shape,
        out_size=10,
    )
    ref = np.trace(np.asarray(nb.entk(model, data.x_train[idx])))
    got = float(ds["trace"].sel(width=8, selection="rnd", budget=4, seed=0).isel(step=0))
    assert got == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize(
    "select, key",
    [
        ({"method": "bogus", "budget": 4}, "select.method"),
        ({"method": "rnd", "budget": 0}, "select.budget"),
        ({"method": "rnd", "budget": 4, "options": {"rnd": {"nope": 1}}}, "select.options.rnd.nope"),
        ({"method": "rnd", "budget": 4, "options": {"steps": 5}}, "select.options.steps"),
        ({"method": "rnd", "budget": 4, "extra": 1}, "select.extra"),
    ],
)
def test_select_section_errors_name_the_key(select, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        validate_config(_cfg(select=select))


def test_budget_above_the_pool_fails_before_any_run(tmp_path):
    cfg = _cfg(data={"n_train": 30}, select={"method": "random", "budget": 5}, grid={"budget": [5, 40]})
    with pytest.raises(ValueError, match=r"'grid\.budget'.*exceeds the pool of 30"):
        sweep(cfg, tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()


def _write_mnist(folder, n_train=40, n_test=12, gz=False):
    import gzip
    import struct

    def idx(arr, code):
        header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
        return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 6, 6), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            raw = idx(arr, 0x08)
            name = f"{split}-{kind}-ubyte" + (".gz" if gz else "")
            (folder / name).write_bytes(gzip.compress(raw) if gz else raw)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files_are_nameable_in_a_sweep(tmp_path, gz):
    folder = tmp_path / "mnist"
    _write_mnist(folder, gz=gz)
    cfg = _cfg(data={"name": "mnist_idx", "path": str(folder), "n_train": 30, "n_test": 10})
    ds = sweep(cfg, tmp_path / "out", progress=False)
    assert json.loads(ds.attrs["config"])["data"]["path"] == str(folder)
    assert np.isfinite(ds["loss"].values).all()
    import ntkbench as nb

    d = nb.load("mnist_idx", 30, 10, seed=0, path=str(folder))
    assert d.x_train.shape == (30, 36) and d.n_outputs == 10 and d.x_train.max() <= 1.0
    assert nb.load("mnist_idx", 30, 10, seed=0, path=str(folder), flatten=False).x_train.shape == (30, 1, 6, 6)


def test_missing_or_malformed_data_files_fail_before_any_run_naming_the_path(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(ValueError, match=str(missing)):
        sweep(_cfg(data={"name": "mnist_idx", "path": str(missing)}), tmp_path / "never", progress=False)
    broken = tmp_path / "broken"
    _write_mnist(broken)
    (broken / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        sweep(_cfg(data={"name": "mnist_idx", "path": str(broken)}), tmp_path / "never", progress=False)
    with pytest.raises(ValueError, match="'data.path'"):
        validate_config(_cfg(data={"name": "mnist_idx"}))
    with pytest.raises(ValueError, match="'data.path'"):
        sweep(_cfg(data={"name": "mnist_idx"}), tmp_path / "never", progress=False)
    npz = tmp_path / "bad.npz"
    npz.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        sweep(_cfg(data={"name": "npz", "path": str(npz)}), tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()


def test_npz_file_data_set(tmp_path):
    import ntkbench as nb

    rng = np.random.default_rng(1)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(50, 5)).astype(np.float32), y=rng.integers(0, 3, 50))
    d = nb.load("npz", 30, 10, path=str(tmp_path / "d.npz"))
    assert d.task == "classification" and d.n_outputs == 3 and d.x_train.shape == (30, 5)
    np.savez(tmp_path / "r.npz", features=rng.normal(size=(20, 4)), target=rng.normal(size=(20, 2)))
    r = nb.load("npz", 10, 5, path=str(tmp_path / "r.npz"), x_key="features", y_key="target")
    assert r.task == "regression" and r.y_train.shape == (10, 2)
