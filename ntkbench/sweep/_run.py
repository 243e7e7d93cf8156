"""One run: load its data (and select its training set), build, train and record its model
into a cube (:func:`run_one`), check runs before a sweep starts (:func:`check_runs`), and
run one grid point to its file (``_run_to_file``, what dask workers execute)."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ntkbench.optim import _mup_scaled, make_optimizer
from ntkbench.sweep import _live
from ntkbench.sweep._config import RECORD_DEFAULTS, TRAIN_DEFAULTS, _check_run, _resolve_grid_key
from ntkbench.sweep._live import live_path


def run_one(config: Mapping[str, Any], *, on_record: Any = None):
    """Run one experiment (a run config from :func:`expand_grid`, or a config without a
    grid) and return its cube; grid values become length-1 dims (``width``, ``seed``, ...).

    Seeds: ``seed`` splits into the model-init key and the mini-batch key; the data use
    ``data.seed`` if given, else ``seed``.

    >>> cfg = {"model": {"name": "mlp", "width": 8}, "data": {"name": "digits", "n_train": 32},
    ...        "train": {"steps": 2, "batch_size": 16}, "record": {"every": 1, "probe": 8},
    ...        "grid": {"seed": [0, 1]}}
    >>> from ntkbench.sweep import expand_grid
    >>> ds = run_one(expand_grid(cfg)[1])
    >>> ds["seed"].values.tolist(), ds.sizes["step"]
    ([1], 3)
    """
    import jax
    import numpy as np

    from ntkbench import cube
    from ntkbench.models import make_model
    from ntkbench.train import Recorder, train

    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    cfg = copy.deepcopy(dict(config))
    point = cfg.get("grid", {}) or {}
    if any(isinstance(v, list) for v in point.values()):
        raise ValueError("config: run_one takes ONE grid point; expand the grid with expand_grid first")
    _check_run(cfg)

    seed = int(cfg.get("seed", 0))
    dataset = _select_for(cfg, _load_for(cfg))

    model_key, train_key = jax.random.split(jax.random.key(seed))
    model = make_model(
        dict(cfg["model"]), key=model_key, in_shape=dataset.in_shape, out_size=dataset.n_outputs, x=dataset.x_train
    )

    tr = {**TRAIN_DEFAULTS, **cfg.get("train", {})}
    opt = make_optimizer(tr["optimizer"], float(tr["lr"]), float(tr["momentum"]), float(tr["weight_decay"]))
    if tr["optimizer"] in ("adam", "adamw"):
        opt = _mup_scaled(opt, model)
    rec = {**RECORD_DEFAULTS, **cfg.get("record", {})}
    recorder = Recorder(
        every=rec["every"],
        probe=rec["probe"],
        measures=rec["measures"],
        log_points=rec["log_points"],
        lnp_probes=None if rec["lnp_probes"] == "exact" else rec["lnp_probes"],
        kernel=rec["kernel"],
        normalize=rec["normalize"],
        effective=rec["effective"],
        trace_normalize=rec["trace_normalize"],
        output_reduction=rec["output_reduction"],
        lnp_batch=rec["lnp_batch"],
        **_kernel_model(cfg, rec, dataset),
    )
    _, ds = train(
        model,
        dataset,
        optimizer=opt,
        steps=int(tr["steps"]),
        batch_size=None if tr["batch_size"] == "full" else int(tr["batch_size"]),
        loss=tr["loss"],
        recorder=recorder,
        key=train_key,
        on_record=on_record,
    )
    diverged = ds.attrs.get("diverged_step")
    ds = ds.assign(cube.run_status(diverged))  # before the grid dims: they get them too
    for axis in reversed(list(point)):
        _, dim = _resolve_grid_key(axis, cfg)
        value = point[axis]
        ds = ds.expand_dims({dim: np.asarray([value])})
        ds[dim].attrs.update(cube.var_attrs(dim))
    ds.attrs = cube.make_attrs(cfg, paper=cfg.get("paper", ""), title=cfg.get("title", ""))
    if diverged is not None:  # training stopped there (ntkbench.train); later records are NaN
        ds.attrs["diverged_step"] = int(diverged)
    return ds


def _load_for(run: Mapping[str, Any]):
    """The run's data set (``ntkbench.load`` on its ``[data]`` table); errors name 'data'."""
    from ntkbench.data import load

    data_cfg = dict(run["data"])
    name = data_cfg.pop("name")
    n_train = data_cfg.pop("n_train", 512)
    n_test = data_cfg.pop("n_test", 256)
    data_seed = data_cfg.pop("seed", run.get("seed", 0))
    try:
        return load(name, n_train, n_test, seed=data_seed, **data_cfg)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config key 'data' ({name!r}): {exc}") from exc


def _kernel_model(run: Mapping[str, Any], rec: Mapping[str, Any], dataset: Any) -> dict[str, Any]:
    """``Recorder`` keywords for ``record.kernel_model``: nothing for the trained network; for
    ``"rnd_target"`` the RND target network of the run's ``[select]`` table (its seed and
    ``select.options.rnd``; :func:`ntkbench.selection.rnd_target`)."""
    if rec["kernel_model"] == "trained":
        return {}
    import numpy as np

    from ntkbench.selection import rnd_target

    sel = run.get("select")
    if sel is None:
        raise ValueError("config key 'record.kernel_model': 'rnd_target' needs a [select] table (its seed)")
    opts = sel.get("options", {}).get("rnd", {})  # the target of an RND selection with these options
    in_shape = tuple(int(n) for n in np.shape(dataset.x_train)[1:])
    target = rnd_target(in_shape, seed=int(sel.get("seed", run.get("seed", 0))), **opts)
    return {"kernel_model": target, "kernel_model_name": "RND target network"}


def _select_for(run: Mapping[str, Any], dataset: Any) -> Any:
    """The run's training set: with a ``[select]`` table, ``select.budget`` points of the
    loaded training set (the pool) chosen by ``ntkbench.select`` (``select.seed``, default
    the run's ``seed``), in selection order; the test set is unchanged."""
    if "select" not in run:
        return dataset
    from ntkbench.selection import select

    sel = run["select"]
    budget = int(sel["budget"])
    if budget > len(dataset.x_train):
        raise ValueError(
            f"config key 'select.budget': {budget} exceeds the pool of {len(dataset.x_train)} "
            "training samples (data.n_train)"
        )
    idx = select(
        dataset.x_train,
        budget,
        sel["method"],
        seed=int(sel.get("seed", run.get("seed", 0))),
        **dict(sel.get("options", {}).get(sel["method"], {})),
    )
    meta = {**dataset.meta, "selected": idx, "select": dict(sel)}
    return dataclasses.replace(dataset, x_train=dataset.x_train[idx], y_train=dataset.y_train[idx], meta=meta)


def check_runs(runs: Sequence[Mapping[str, Any]]) -> None:
    """Pre-flight check of expanded run configs, before any output folder or cluster exists.

    Beyond :func:`validate_config` (keys and value types), each distinct ``[data]`` table
    is loaded (sizes, options), ``train.loss`` is checked against the data set's task, and
    the model is built abstractly (``eqx.filter_eval_shape``, no parameters allocated) and
    applied to one sample's shape. Errors are ``ValueError`` naming the config key
    (``'grid.<axis>'`` when the value came from the grid).
    """
    import equinox as eqx
    import jax

    from ntkbench.kernel import as_model
    from ntkbench.models import make_model

    datasets: dict[str, Any] = {}
    for run in runs:
        point = run.get("grid", {}) or {}
        where = f" (grid point {point})" if point else ""
        dkey = json.dumps({"data": run["data"], "seed": run.get("seed", 0)}, sort_keys=True)
        if dkey not in datasets:
            datasets[dkey] = _load_for(run)
        ds = datasets[dkey]
        if "select" in run and run["select"]["budget"] > len(ds.x_train):
            key = "grid.budget" if "budget" in point else "select.budget"
            raise ValueError(
                f"config key {key!r}: budget {run['select']['budget']} exceeds the pool of {len(ds.x_train)} "
                f"training samples (data.n_train){where}"
            )
        loss = {**TRAIN_DEFAULTS, **run.get("train", {})}["loss"]
        if loss == "ce" and ds.task == "regression":
            raise ValueError(
                f"config key 'train.loss': 'ce' needs class labels, but data set {ds.name!r} "
                f"is a regression task; use 'mse'{where}"
            )
        x = jax.ShapeDtypeStruct(ds.x_train.shape[1:], ds.x_train.dtype)
        try:
            model = eqx.filter_eval_shape(
                lambda run=run, ds=ds: make_model(
                    dict(run["model"]), key=jax.random.key(0), in_shape=ds.in_shape, out_size=ds.n_outputs
                )
            )
            eqx.filter_eval_shape(lambda m, xi: as_model(m)(xi), model, x)  # pyright: ignore[reportCallIssue]
        except Exception as exc:
            raise ValueError(
                f"config key 'model': model {run['model'].get('name')!r} cannot take data set "
                f"{ds.name!r} (one sample of shape {tuple(ds.in_shape)}, {ds.n_outputs} outputs)"
                f"{where}: {exc}"
            ) from exc


def _run_to_file(run_config: dict[str, Any], path: str, live: bool = False) -> dict[str, Any]:
    """Run one grid point and save its cube atomically (executed on dask workers too).
    With ``live`` the run writes its progress file after each recording and stops (raising
    :class:`RunStopped`, no run file) when its sweep is asked to stop.

    Returns ``{"bad": names of variables holding NaN/Inf, "diverged_step": step or None}``
    (a diverged run is kept on disk, and reported by the driver rather than silently
    plotted)."""
    import numpy as np

    from ntkbench import cube

    # looked up on its module at each call, so a test replacing
    # ``ntkbench.sweep._live._live_writer`` replaces it here
    on_record = _live._live_writer(run_config, Path(path)) if live else None
    try:
        ds = run_one(run_config, on_record=on_record)
        cube.save(ds, path)
    finally:
        if live:
            live_path(Path(path)).unlink(missing_ok=True)
    bad = [
        str(name) for name, var in ds.data_vars.items() if var.dtype.kind == "f" and not np.isfinite(var.values).all()
    ]
    return {"bad": bad, "diverged_step": ds.attrs.get("diverged_step")}
