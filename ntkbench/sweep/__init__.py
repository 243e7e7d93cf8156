"""Sweeps: a base experiment run over a grid (width × seed × ...), one cube file per run.

A config is a dict (usually read from TOML) with the sections of one experiment and a
``grid`` of swept values::

    title = "MLP width sweep on digits"
    seed = 0                                   # base seed (model init, batches, data)

    [model]                                    # ntkbench.make_model
    name = "mlp"
    width = 64
    depth = 2

    [data]                                     # ntkbench.load(name, n_train, n_test, seed, **options)
    name = "digits"
    n_train = 512
    n_test = 256

    [select]                                   # optional: ntkbench.select from the pool
    method = "rnd"                             # rnd | random | max_entropy
    budget = 50                                # training samples chosen of data.n_train
    # seed = 0                                 # default: the run's seed
    # options.rnd = {steps = 50}               # options per method

    [train]
    optimizer = "sgd"                          # sgd | momentum | adam | adamw
    lr = 0.05
    steps = 300
    batch_size = 64                            # or "full"
    loss = "mse"                               # mse | ce

    [record]                                   # ntkbench.Recorder
    every = 25                                 # int | "log" | [steps]
    probe = 128
    # lnp_probes = 4                           # LNP measures: Hutchinson probes | "exact" | "auto"

    [grid]                                     # swept axes -> values; they become cube dims
    width = [16, 64, 256, 1024]
    seed = [0, 1]

Grid keys are ``seed``, a key of one section by its short name (``width``, ``depth``,
``n_train``, ``lr``, ``batch_size``, ``probe``, ...) or a dotted ``section.key``. With a
``[select]`` table the training set is ``select.budget`` samples that ``ntkbench.select``
chooses from the ``data.n_train`` loaded ones (grid keys ``selection`` -- the method --
and ``budget`` become cube dims); the test set is unchanged. Data sets include local files: ``name =
"mnist_idx"`` / ``"cifar10"`` / ``"npz"`` with ``path = "..."`` (checked before any run
starts).

:func:`sweep` writes ``run-width=64-seed=0.nc`` (one per grid point, atomically) under
``out``; a rerun skips runs whose file opens and holds the same config (resume); at the
end the runs are combined with ``xarray.combine_by_coords`` into ``out/cube.nc``.
Runs execute in-process, on a local dask cluster (``workers=N``), on an existing one
(``scheduler="tcp://..."``) or with a given ``client``; the same seeds give the same cube
either way.

Example
-------
>>> cfg = {"title": "demo", "model": {"name": "mlp", "width": 8},
...        "data": {"name": "digits", "n_train": 32, "n_test": 16},
...        "train": {"steps": 4, "batch_size": 16}, "record": {"every": 2, "probe": 8},
...        "grid": {"width": [8, 16], "seed": [0, 1]}}
>>> cube = sweep(cfg, "runs/demo", progress=False)  # nb.sweep; cfg as a TOML file's tables
>>> dict(cube.entropy.sizes)
{'width': 2, 'seed': 2, 'step': 3}
>>> cube.entropy.sel(seed=0).plot.line(x="step", hue="width")  # doctest: +SKIP

(The last line draws with matplotlib, which ntkbench does not install.)
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import itertools
import json
import math
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from ntkbench.data import DATASETS, OPTIONS

__all__ = [
    "sweep",
    "SweepInterrupted",
    "local_cluster",
    "NO_DASHBOARD",
    "run_one",
    "validate_config",
    "check_runs",
    "expand_grid",
    "run_name",
    "make_optimizer",
    "TRAIN_DEFAULTS",
    "RECORD_DEFAULTS",
]

_SECTIONS = ("model", "data", "select", "train", "record")
_TOP_KEYS = ("title", "paper", "seed", "model", "data", "select", "train", "record", "grid")
_SELECT_KEYS = ("method", "budget", "seed", "options")
_OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
_LOSSES = ("mse", "ce")
#: Keys of a config's ``[train]`` section and their defaults.
TRAIN_DEFAULTS: dict[str, Any] = {
    "optimizer": "sgd",
    "lr": 0.1,
    "steps": 100,
    "batch_size": "full",
    "loss": "mse",
    "momentum": 0.9,
    "weight_decay": 0.0,
}
#: Keys of a config's ``[record]`` section and their defaults.
RECORD_DEFAULTS: dict[str, Any] = {"every": 10, "probe": 200, "measures": None, "log_points": 30, "lnp_probes": "auto"}
_DATA_KEYS = ("name", "n_train", "n_test", "seed")


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_name(value: Any, names: Any) -> bool:
    """``value`` is one of ``names`` (a string; an unhashable value is simply not one)."""
    return isinstance(value, str) and value in names


def _need(cond: bool, key: str, allowed: str, value: Any) -> None:
    if not cond:
        raise ValueError(f"config key {key!r}: expected {allowed}, got {value!r}")


def _model_keys(name: str) -> dict[str, Any]:
    from ntkbench.models import MODEL_DEFAULTS

    return MODEL_DEFAULTS[name]


def _model_names() -> tuple[str, ...]:
    from ntkbench.models import MODEL_DEFAULTS

    return tuple(sorted(MODEL_DEFAULTS))


def _check_model(model: Mapping[str, Any]) -> None:
    from ntkbench.models import ACTIVATIONS, PARAMETRIZATIONS

    names = _model_names()
    name = model.get("name")
    _need(name in names, "model.name", f"one of {list(names)}", name)
    allowed = _model_keys(cast(str, name))  # _need checked it is a model name
    for key, value in model.items():
        if key == "name":
            continue
        if key not in allowed:
            raise ValueError(
                f"config key 'model.{key}': unknown for model {name!r}; allowed keys: {['name', *allowed]}"
            )
        default = allowed[key]
        if key == "activation":
            _need(_is_name(value, ACTIVATIONS), "model.activation", f"one of {sorted(ACTIVATIONS)}", value)
        elif key == "parametrization":
            _need(_is_name(value, PARAMETRIZATIONS), "model.parametrization", f"one of {list(PARAMETRIZATIONS)}", value)
        elif key == "pool":
            _need(value in ("mean", "flatten"), "model.pool", "'mean' or 'flatten'", value)
        elif _is_int(default) or default is None:
            _need(_is_int(value) and value >= 1, f"model.{key}", "a positive integer", value)
        elif isinstance(default, str):
            _need(isinstance(value, str), f"model.{key}", "a string", value)


def _check_data(data: Mapping[str, Any]) -> None:
    _need(_is_name(data.get("name"), DATASETS), "data.name", f"one of {list(DATASETS)}", data.get("name"))
    n_train = data.get("n_train", 512)
    _need(_is_int(n_train) and n_train >= 1, "data.n_train", "a positive integer", n_train)
    n_test = data.get("n_test", 256)
    _need(_is_int(n_test) and n_test >= 0, "data.n_test", "a non-negative integer", n_test)
    if "seed" in data:
        _need(_is_int(data["seed"]) and data["seed"] >= 0, "data.seed", "a non-negative integer", data["seed"])
    if "path" in OPTIONS.get(data["name"], {}):
        path = data.get("path")
        _need(
            isinstance(path, str) and path != "", "data.path", f"the path of the local files of {data['name']!r}", path
        )
    options = {k: v for k, v in data.items() if k not in _DATA_KEYS}
    allowed = OPTIONS[data["name"]]
    for key in options:
        if key not in allowed:
            raise ValueError(
                f"config key 'data.{key}': unknown option for data set {data['name']!r}; "
                f"allowed keys: {[*_DATA_KEYS, *sorted(allowed)]}"
            )


def _check_select(select: Mapping[str, Any]) -> None:
    from ntkbench.selection import METHODS

    for key in select:
        if key not in _SELECT_KEYS:
            raise ValueError(f"config key 'select.{key}': unknown; allowed keys: {list(_SELECT_KEYS)}")
    method = select.get("method")
    _need(_is_name(method, METHODS), "select.method", f"one of {list(METHODS)}", method)
    budget = select.get("budget")
    _need(
        isinstance(budget, int) and not isinstance(budget, bool) and budget >= 1,
        "select.budget",
        "a positive integer",
        budget,
    )
    if "seed" in select:
        _need(_is_int(select["seed"]) and select["seed"] >= 0, "select.seed", "a non-negative integer", select["seed"])
    options = select.get("options", {})
    _need(isinstance(options, Mapping), "select.options", "a table of method -> its options", options)
    for name, opts in options.items():
        _need(name in METHODS, f"select.options.{name}", f"a method, one of {list(METHODS)}", name)
        _need(isinstance(opts, Mapping), f"select.options.{name}", "a table of the method's options", opts)
        allowed = sorted(k for k in METHODS[name] if k != "model")
        for key in opts:
            if key not in allowed:
                raise ValueError(
                    f"config key 'select.options.{name}.{key}': unknown option of method {name!r}; allowed keys: {allowed}"
                )


def _check_train(train: Mapping[str, Any]) -> None:
    for key, value in train.items():
        if key not in TRAIN_DEFAULTS:
            raise ValueError(f"config key 'train.{key}': unknown; allowed keys: {list(TRAIN_DEFAULTS)}")
        if key == "optimizer":
            _need(value in _OPTIMIZERS, "train.optimizer", f"one of {list(_OPTIMIZERS)}", value)
        elif key == "lr":
            _need(_is_num(value) and value > 0 and math.isfinite(value), "train.lr", "a positive number", value)
        elif key == "steps":
            _need(_is_int(value) and value >= 0, "train.steps", "a non-negative integer", value)
        elif key == "batch_size":
            _need(
                value == "full" or (_is_int(value) and value >= 1),
                "train.batch_size",
                "a positive integer or 'full'",
                value,
            )
        elif key == "loss":
            _need(value in _LOSSES, "train.loss", f"one of {list(_LOSSES)}", value)
        elif key == "momentum":
            _need(_is_num(value) and 0 <= value < 1, "train.momentum", "a number in [0, 1)", value)
        elif key == "weight_decay":
            _need(_is_num(value) and value >= 0, "train.weight_decay", "a non-negative number", value)


def _check_record(record: Mapping[str, Any]) -> None:
    from ntkbench.train import MEASURES

    for key, value in record.items():
        if key not in RECORD_DEFAULTS:
            raise ValueError(f"config key 'record.{key}': unknown; allowed keys: {list(RECORD_DEFAULTS)}")
        if key == "every":
            ok = (
                value == "log"
                or (_is_int(value) and value >= 1)
                or (isinstance(value, list) and all(_is_int(s) and s >= 0 for s in value))
            )
            _need(ok, "record.every", "a positive integer, 'log' or a list of steps", value)
        elif key in ("probe", "log_points"):
            _need(_is_int(value) and value >= 1, f"record.{key}", "a positive integer", value)
        elif key == "lnp_probes":
            ok = value in ("auto", "exact") or (_is_int(value) and value >= 2)
            _need(ok, "record.lnp_probes", "an integer >= 2 (Hutchinson probes), 'exact' or 'auto'", value)
        elif key == "measures":
            _need(isinstance(value, list), "record.measures", f"a list of names from {sorted(MEASURES)}", value)
            for m in value:
                _need(_is_name(m, MEASURES), "record.measures", f"names from {sorted(MEASURES)}", m)


def _grid_targets(config: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Short grid key -> config path, for keys unique across sections."""
    model = config.get("model", {})
    name = model.get("name") if isinstance(model, Mapping) else None
    model_keys = set(_model_keys(name)) if name in _model_names() else set()
    keys = {
        "model": model_keys | {"name"},
        "data": {"n_train", "n_test"} | set(_data_options_or_empty(config)),
        "select": {"budget"},
        "train": set(TRAIN_DEFAULTS),
        "record": {"probe", "every", "log_points"},
    }
    # the selection method's axis is "selection", not "method": Dataset.sel(method=...) is
    # xarray's inexact-match option, so a "method" dim could not be selected by keyword
    targets: dict[str, tuple[str, ...]] = {"seed": ("seed",), "selection": ("select", "method")}
    counts: dict[str, int] = {}
    for keyset in keys.values():
        for k in keyset:
            counts[k] = counts.get(k, 0) + 1
    for section, keyset in keys.items():
        for k in keyset:
            if counts[k] == 1 and k != "name":
                targets[k] = (section, k)
    return targets


def _data_options_or_empty(config: Mapping[str, Any]) -> set[str]:
    data = config.get("data", {})
    if isinstance(data, Mapping) and isinstance(data.get("name"), str):
        return set(OPTIONS.get(data["name"], {}))
    return set()


def _resolve_grid_key(key: str, config: Mapping[str, Any]) -> tuple[tuple[str, ...], str]:
    """(config path, dim name) of grid key ``key``."""
    if "." in key:
        section, _, sub = key.partition(".")
        if section not in _SECTIONS or not sub or "." in sub:
            raise ValueError(
                f"config key 'grid.{key}': a dotted grid key must be 'section.key' with section in {list(_SECTIONS)}"
            )
        return (section, sub), key.replace(".", "_")
    targets = _grid_targets(config)
    if key not in targets:
        raise ValueError(
            f"config key 'grid.{key}': unknown grid axis; allowed: {sorted(targets)} or a dotted "
            "'section.key' (e.g. 'model.name')"
        )
    return targets[key], key


def _set(config: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = config
    for p in path[:-1]:
        node = node.setdefault(p, {})
    node[path[-1]] = value


def _check_run(config: Mapping[str, Any]) -> None:
    """Validate one fully resolved run config (no lists in ``grid``)."""
    seed = config.get("seed", 0)
    _need(_is_int(seed) and seed >= 0, "seed", "a non-negative integer", seed)
    for key in ("title", "paper"):
        if key in config:
            _need(isinstance(config[key], str), key, "a string", config[key])
    for section in _SECTIONS:
        value = config.get(section, {})
        _need(isinstance(value, Mapping), section, "a table (dict)", value)
    _check_model(config.get("model", {}))
    _check_data(config.get("data", {}))
    if "select" in config:
        _check_select(config["select"])
    _check_train(config.get("train", {}))
    _check_record(config.get("record", {}))


def validate_config(config: Any) -> dict[str, Any]:
    """Check a sweep (or single-run) config; return a normalized deep copy.

    An unknown key or a bad value raises ``ValueError`` naming the key (``"train.lr"``,
    ``"grid.width"``, ...) and what is allowed. Grid values must be non-empty lists of
    distinct values; each grid point is validated as a run.

    >>> validate_config({"model": {"name": "mlp"}, "data": {"name": "digits"},
    ...                  "train": {"lr": -1}})  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ValueError: config key 'train.lr': expected a positive number, got -1
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    for key in config:
        if key not in _TOP_KEYS:
            raise ValueError(f"config key {key!r}: unknown top-level key; allowed keys: {list(_TOP_KEYS)}")
    cfg = copy.deepcopy(dict(config))
    for section in ("model", "data"):
        if section not in cfg:
            raise ValueError(f"config key {section!r}: missing; every config needs a [{section}] table")
    grid = cfg.get("grid", {})
    _need(isinstance(grid, Mapping), "grid", "a table of axis = [values]", grid)
    for key, values in grid.items():
        _resolve_grid_key(key, cfg)
        if not isinstance(values, list):
            raise ValueError(f"config key 'grid.{key}': expected a non-empty list of values, got {values!r}")
        if not values:
            raise ValueError(f"config key 'grid.{key}': expected a non-empty list of values, got []")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise ValueError(f"config key 'grid.{key}': values must be distinct, got {values!r}")
    _check_run({k: v for k, v in cfg.items() if k != "grid"})  # the base values too
    for run in expand_grid(cfg, validate=False):
        try:
            _check_run(run)
        except ValueError as exc:
            point = run.get("grid", {})
            if not point:
                raise
            # name the grid axis when the bad value came from the grid
            msg = str(exc)
            for key in point:
                path, _ = _resolve_grid_key(key, cfg)
                if f"'{'.'.join(path)}'" in msg:
                    raise ValueError(msg.replace(f"'{'.'.join(path)}'", f"'grid.{key}'")) from exc
            raise
    return cfg


# ---------------------------------------------------------------------------
# Grid
# ---------------------------------------------------------------------------


def expand_grid(config: Mapping[str, Any], *, validate: bool = True) -> list[dict[str, Any]]:
    """One run config per grid point (cartesian product, grid order as written).

    Each run config is the base config with the point's values set in their sections and
    ``grid`` replaced by the point itself (``{"width": 64, "seed": 0}``).

    >>> runs = expand_grid({"model": {"name": "mlp"}, "data": {"name": "digits"},
    ...                     "grid": {"width": [8, 16], "seed": [0, 1]}})
    >>> [r["grid"] for r in runs][:2], runs[1]["model"]["width"], runs[1]["seed"]
    ([{'width': 8, 'seed': 0}, {'width': 8, 'seed': 1}], 8, 1)
    """
    if validate:
        config = validate_config(config)
    grid = dict(config.get("grid", {}))
    base = {k: copy.deepcopy(v) for k, v in config.items() if k != "grid"}
    axes = list(grid)
    runs = []
    for values in itertools.product(*(grid[a] for a in axes)):
        run = copy.deepcopy(base)
        point = {}
        for axis, value in zip(axes, values, strict=True):
            path, _dim = _resolve_grid_key(axis, config)
            _set(run, path, copy.deepcopy(value))
            point[axis] = value
        run["grid"] = point
        runs.append(run)
    return runs


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def run_name(point: Mapping[str, Any]) -> str:
    """File name of a grid point: ``run-width=64-seed=0.nc`` (``run.nc`` without a grid).

    >>> run_name({"width": 64, "lr": 0.001})
    'run-width=64-lr=0.001.nc'
    """
    if not point:
        return "run.nc"
    return "run-" + "-".join(f"{_fmt(k).replace('.', '_')}={_fmt(v)}" for k, v in point.items()) + ".nc"


# ---------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------


@functools.cache
def make_optimizer(name: str = "sgd", lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0):
    """An optax optimizer from config values (cached: equal settings give the same
    object, so compiled training steps are reused across runs).

    >>> make_optimizer("adam", 1e-3) is make_optimizer("adam", 1e-3)
    True
    """
    import optax

    if name == "sgd":
        opt = optax.sgd(lr)
    elif name == "momentum":
        opt = optax.sgd(lr, momentum=momentum)
    elif name == "adam":
        opt = optax.adam(lr)
    elif name == "adamw":
        opt = optax.adamw(lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"name must be one of {list(_OPTIMIZERS)}, got {name!r}")
    if weight_decay and name != "adamw":
        opt = optax.chain(optax.add_decayed_weights(weight_decay), opt)
    return opt


_MUP_OPTIMIZERS: dict = {}  # (optimizer, per-leaf factors) -> its µP-scaled transformation


def _mup_scaled(opt, model):
    """µP Adam: scale each parameter's update by its layer's ``mup_lr_scales(model)``
    factor (hidden and readout layers × base_width / width; input layer, embeddings and
    LayerNorms × 1), for any model of :mod:`ntkbench.models`. Not µP, or all factors 1
    (``base_width == width``): ``opt`` itself. Results are cached by ``(opt, factors)``
    so equal runs get the same transformation and reuse compiled training steps.
    """
    import jax
    import optax

    from ntkbench.models import CNN, MLP, TinyTransformer, mup_leaf_scales

    if not isinstance(model, (MLP, CNN, TinyTransformer)) or model.parametrization != "mup":
        return opt
    factors = mup_leaf_scales(model)  # one per parameter leaf, in tree_leaves order
    if all(f == 1.0 for f in factors):
        return opt
    key = (opt, factors)
    try:
        if key in _MUP_OPTIMIZERS:
            return _MUP_OPTIMIZERS[key]
    except TypeError:  # an unhashable optimizer: build it, don't cache
        key = None

    def update(updates, state, params=None):
        updates, state = opt.update(updates, state, params)
        leaves, treedef = jax.tree_util.tree_flatten(updates)
        if len(leaves) != len(factors):
            raise ValueError(
                f"µP optimizer: updates have {len(leaves)} array leaves, the model had {len(factors)} parameters"
            )
        leaves = [u * f if f != 1.0 else u for u, f in zip(leaves, factors, strict=True)]
        return jax.tree_util.tree_unflatten(treedef, leaves), state

    scaled = optax.GradientTransformation(opt.init, update)
    if key is not None:
        _MUP_OPTIMIZERS[key] = scaled
    return scaled


def run_one(config: Mapping[str, Any], *, on_record: Any = None):
    """Run one experiment (a run config from :func:`expand_grid`, or a config without a
    grid) and return its cube; grid values become length-1 dims (``width``, ``seed``, ...).

    Seeds: ``seed`` splits into the model-init key and the mini-batch key; the data use
    ``data.seed`` if given, else ``seed``.

    >>> cfg = {"model": {"name": "mlp", "width": 8}, "data": {"name": "digits", "n_train": 32},
    ...        "train": {"steps": 2, "batch_size": 16}, "record": {"every": 1, "probe": 8},
    ...        "grid": {"seed": [0, 1]}}
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
    model = make_model(dict(cfg["model"]), key=model_key, in_shape=dataset.in_shape, out_size=dataset.n_outputs)

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
            eqx.filter_eval_shape(lambda m, xi: m(xi), model, x)
        except Exception as exc:
            raise ValueError(
                f"config key 'model': model {run['model'].get('name')!r} cannot take data set "
                f"{ds.name!r} (one sample of shape {tuple(ds.in_shape)}, {ds.n_outputs} outputs)"
                f"{where}: {exc}"
            ) from exc


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _is_done(path: Path, run_config: Mapping[str, Any]) -> bool:
    """A run is finished if its file opens as a cube made from the same config."""
    return _run_state(path, run_config)[0] == "done"


#: a file in the output folder that asks the runs of a live sweep to stop after their
#: current recording (:func:`request_stop`; seen by dask workers on a shared file system too)
STOP_FILE = ".ntkbench-stop"


class RunStopped(Exception):
    """A run stopped after a recording because its sweep was asked to stop."""


def request_stop(out: str | os.PathLike[str]) -> None:
    """Ask a live sweep writing to ``out`` (in this process, another one, or on dask
    workers) to stop after the current recording of each run in progress; finished runs
    stay, a rerun resumes."""
    folder = Path(out)
    if folder.is_dir():
        (folder / STOP_FILE).touch()


def live_path(path: Path) -> Path:
    """The progress file of run file ``path`` while it runs live: ``.<name>.live.json``."""
    return path.with_name(f".{path.name}.live.json")


def _live_writer(run_config: Mapping[str, Any], path: Path):
    """``on_record`` of a live run: after each recording, atomically rewrite the run's
    progress file (its grid point, the steps so far and every measure's values), then stop
    the run if its folder holds the stop file."""
    import numpy as np

    point = {}
    for axis, value in (run_config.get("grid") or {}).items():
        point[_resolve_grid_key(axis, run_config)[1]] = value
    live, stop = live_path(path), path.parent / STOP_FILE
    record: dict[str, Any] = {"point": point, "steps": [], "values": {}}

    def on_record(step: int, values: Mapping[str, Any]) -> None:
        record["steps"].append(int(step))
        for name, v in values.items():
            record["values"].setdefault(name, []).append(np.asarray(v, dtype=float).tolist())
        tmp = live.with_name(f"{live.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, allow_nan=True))
        os.replace(tmp, live)
        if stop.exists():
            raise RunStopped(f"{path.name}: stopped after step {step}")

    return on_record


def _record_steps(run: Mapping[str, Any]) -> list[int]:
    """The steps at which a run records (its Recorder's schedule)."""
    from ntkbench.train import Recorder

    tr = {**TRAIN_DEFAULTS, **run.get("train", {})}
    rec = {**RECORD_DEFAULTS, **run.get("record", {})}
    every = rec["every"]
    recorder = Recorder(every=tuple(every) if isinstance(every, list) else every, log_points=rec["log_points"])
    return [int(v) for v in recorder.steps(int(tr["steps"]))]


_LIVE_FILES: dict = {}  # finished run file -> (mtime, its values): live_cube reads each once


def live_cube(config: Mapping[str, Any], out: str | os.PathLike[str]) -> Any:
    """The sweep of ``config`` in ``out`` so far, as one cube on its full grid and record
    schedule: finished run files, and the progress files of runs in progress (a sweep run
    with ``live=True``); what has not been recorded yet is NaN. None before the first
    recording. Cheap enough to poll (a finished run file is read once).
    """
    import numpy as np
    import xarray as xr

    from ntkbench import cube

    cfg = validate_config(config)
    runs = expand_grid(cfg, validate=False)
    folder = Path(out)
    grid: dict[str, list[Any]] = {}
    for axis, values in (cfg.get("grid") or {}).items():
        grid[_resolve_grid_key(axis, cfg)[1]] = list(values)
    steps = sorted({s for run in runs for s in _record_steps(run)})
    pieces = []  # (grid point, steps, {name: values (n_steps, ...)})
    for run in runs:
        path = folder / run_name(run["grid"])
        point = {_resolve_grid_key(a, cfg)[1]: v for a, v in (run.get("grid") or {}).items()}
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime is not None:
            hit = _LIVE_FILES.get(path)
            if hit is None or hit[0] != mtime:
                try:
                    ds = cube.open(path).isel({d: 0 for d in point})
                except (ValueError, OSError):
                    continue
                values = {
                    str(k): np.asarray(v.values, dtype=float) for k, v in ds.data_vars.items() if "step" in v.dims
                }
                _LIVE_FILES[path] = hit = (mtime, ([int(v) for v in ds["step"].values], values))
            pieces.append((point, *hit[1]))
            continue
        try:
            record = json.loads(live_path(path).read_text())
        except (FileNotFoundError, ValueError):
            continue
        values = {k: np.asarray(v, dtype=float) for k, v in record["values"].items()}
        pieces.append((point, record["steps"], values))
    if not pieces:
        return None
    index = {s: i for i, s in enumerate(steps)}
    n_eig = max((v.shape[1] for _, _, vals in pieces for v in vals.values() if v.ndim == 2), default=0)
    names = list(dict.fromkeys(k for _, _, vals in pieces for k in vals))
    shape = tuple(len(v) for v in grid.values())
    data_vars = {}
    for name in names:
        eig = any(vals.get(name, np.zeros((0, 0))).ndim == 2 for _, _, vals in pieces)
        arr = np.full((*shape, len(steps), *((n_eig,) if eig else ())), np.nan)
        for point, got_steps, vals in pieces:
            if name not in vals:
                continue
            at = tuple(grid[d].index(point[d]) for d in grid)
            v = vals[name]
            for j, st in enumerate(got_steps):
                if st in index:
                    if eig:
                        arr[at + (index[st], slice(0, v.shape[1]))] = v[j]
                    else:
                        arr[at + (index[st],)] = v[j]
        dims = (*grid, "step", *(("eigen_index",) if eig else ()))
        data_vars[name] = (dims, arr.astype(np.float32), cube.var_attrs(name))
    coords: dict[str, Any] = {d: (d, np.asarray(v), cube.var_attrs(d)) for d, v in grid.items()}
    coords["step"] = ("step", np.asarray(steps, dtype=np.int64), cube.var_attrs("step"))
    if n_eig:
        coords["eigen_index"] = ("eigen_index", np.arange(n_eig, dtype=np.int64), cube.var_attrs("eigen_index"))
    attrs = cube.make_attrs(cfg, paper=cfg.get("paper", ""), title=cfg.get("title", ""))
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _run_to_file(run_config: dict[str, Any], path: str, live: bool = False) -> dict[str, Any]:
    """Run one grid point and save its cube atomically (executed on dask workers too).
    With ``live`` the run writes its progress file after each recording and stops (raising
    :class:`RunStopped`, no run file) when its sweep is asked to stop.

    Returns ``{"bad": names of variables holding NaN/Inf, "diverged_step": step or None}``
    (a diverged run is kept on disk, and reported by the driver rather than silently
    plotted)."""
    import numpy as np

    from ntkbench import cube

    on_record = _live_writer(run_config, Path(path)) if live else None
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


def _report(bar: Any, path: Path, result: Mapping[str, Any]) -> None:
    step = result.get("diverged_step")
    if step is not None:
        bar.write(
            f"warning: {path.name}: training diverged at step {step} (NaN/Inf parameters, loss or kernel) and "
            f"stopped; its later values are NaN, and the combined cube lists it in attribute 'diverged_runs' "
            "(try a smaller lr)",
            file=sys.stderr,
        )
    elif result.get("bad"):
        bar.write(
            f"warning: {path.name}: NaN/Inf in {result['bad']} (undefined values, e.g. a zero kernel's entropy)",
            file=sys.stderr,
        )


# ---------------------------------------------------------------------------
# Folder safety: foreign configs, run locks, Ctrl-C
# ---------------------------------------------------------------------------

#: Seconds without a heartbeat after which a run lock counts as stale (abandoned). A lock of
#: a process on this host is stale as soon as that process is gone; one of another host
#: (a shared file system) only by this age. Holders refresh their locks every
#: ``LOCK_HEARTBEAT`` seconds.
LOCK_STALE_AFTER = 600.0
LOCK_HEARTBEAT = 30.0
_POLL = 0.25  # seconds between looks at locks another sweep holds


class SweepInterrupted(KeyboardInterrupt):
    """A sweep stopped by Ctrl-C after its current run; the message says how to resume."""


_MISSING = object()


def _show(value: Any) -> str:
    return "(absent)" if value is _MISSING else json.dumps(value)


def _config_diff(old: Any, new: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (old value, new value) of every leaf where two configs differ."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        diff: dict[str, tuple[Any, Any]] = {}
        for key in sorted(set(old) | set(new), key=str):
            a, b = old.get(key, _MISSING), new.get(key, _MISSING)
            if isinstance(a, Mapping) and isinstance(b, Mapping):
                diff.update(_config_diff(a, b, f"{prefix}{key}."))
            elif a != b:
                diff[f"{prefix}{key}"] = (a, b)
        return diff
    return {} if old == new else {prefix.rstrip(".") or "config": (old, new)}


def _run_state(path: Path, run_config: Mapping[str, Any]) -> tuple[str, Any]:
    """``("missing" | "unreadable" | "done" | "foreign", the file's config or None)``.

    ``done``: the file opens as a cube of the same config; ``foreign``: it opens but holds
    another config (written by a different sweep); ``unreadable``: a corrupted or
    truncated file (recomputed without asking)."""
    from ntkbench import cube

    if not path.exists():
        return "missing", None
    try:
        ds = cube.open(path)
    except (ValueError, OSError):
        return "unreadable", None
    try:
        stored = json.loads(ds.attrs["config"])
    except (KeyError, ValueError, TypeError):
        return "unreadable", None
    return ("done" if stored == _jsonable(run_config) else "foreign"), stored


def _foreign_error(out: Path, foreign: Sequence[tuple[Path, Any, Mapping[str, Any]]]) -> ValueError:
    diff: dict[str, tuple[Any, Any]] = {}
    for _path, stored, run in foreign:
        for key, values in _config_diff(stored, _jsonable(run)).items():
            diff.setdefault(key, values)
    keys = "; ".join(f"{k} (folder: {_show(a)}, this config: {_show(b)})" for k, (a, b) in diff.items())
    names = ", ".join(p.name for p, _, _ in foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    return ValueError(
        f"out folder {str(out)!r} holds {len(foreign)} run file(s) of a different config ({names}); "
        f"differing keys: {keys}. Use another out folder, or overwrite=True (CLI: --overwrite) to start over "
        "and recompute them"
    )


def _check_combined_cube(target: Path, cfg: Mapping[str, Any], paths: Sequence[Path]) -> None:
    """Refuse a folder whose ``cube.nc`` this sweep would replace with a cube that loses
    runs: one combined from another config (other non-grid keys), or from grid points this
    config leaves out (two sweeps with disjoint grids in one folder). A larger grid of the
    same config (more seeds) only adds runs and is accepted; an unreadable file is rewritten."""
    from ntkbench import cube

    if not target.is_file():
        return
    try:
        with cube.open(target) as ds:
            stored = json.loads(ds.attrs["config"])
    except (ValueError, OSError, KeyError, TypeError):
        return
    new = _jsonable(cfg)
    if not isinstance(stored, dict):
        return
    diff = _config_diff({k: v for k, v in stored.items() if k != "grid"}, {k: v for k, v in new.items() if k != "grid"})
    if diff:
        keys = "; ".join(f"{k} (cube.nc: {_show(a)}, this config: {_show(b)})" for k, (a, b) in diff.items())
        raise ValueError(
            f"out folder {str(target.parent)!r} holds a cube.nc of a different config; differing keys: {keys}. "
            "Use another out folder, or overwrite=True (CLI: --overwrite) to replace it"
        )
    try:
        old_names = {run_name(r["grid"]) for r in expand_grid(stored, validate=False)}
    except Exception:  # noqa: BLE001 - a config this version cannot expand: treat as foreign
        old_names = {"?"}
    lost = sorted(old_names - {p.name for p in paths})
    if lost:
        names = ", ".join(lost[:3]) + (f" and {len(lost) - 3} more" if len(lost) > 3 else "")
        raise ValueError(
            f"out folder {str(target.parent)!r} holds a cube.nc combining {len(lost)} run(s) this config's grid "
            f"leaves out ({names}; cube.nc grid: {_show(stored.get('grid', _MISSING))}, this config: "
            f"{_show(new.get('grid', _MISSING))}); rewriting it would drop them. Use another out folder, a grid "
            "that includes them, or overwrite=True (CLI: --overwrite) to replace it"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return False
    return True


def _read_lock(lock: Path) -> dict[str, Any] | None:
    """The lock's holder (``pid``, ``host``, ``token``, ``started``, ``age`` in seconds);
    None when there is no lock."""
    try:
        text = lock.read_text()
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return None
    except OSError:
        return {"pid": None, "host": None, "token": None, "age": 0.0}
    info: dict[str, Any] = {"pid": None, "host": None, "token": None}
    with contextlib.suppress(ValueError):
        parsed = json.loads(text)
        if isinstance(parsed, dict):
            info = parsed
    info["age"] = max(age, 0.0)
    return info


def _holder(info: Mapping[str, Any]) -> str:
    return f"pid {info.get('pid')} on {info.get('host')}"


class _RunLocks:
    """One lock file per run, ``.<run file>.lock`` beside it: JSON of the holder's pid,
    host and a token, created atomically (``os.link`` of a complete file, so nobody reads a
    half-written lock) and refreshed by a heartbeat thread while held."""

    def __init__(self) -> None:
        self.host = socket.gethostname()
        self.pid = os.getpid()
        # names this process's scratch files (.new, .stale) so a later sweep can remove
        # those a killed process left: <host hash>-<pid>
        self.tag = f"{_host_hash(self.host)}-{self.pid}"
        self.held: dict[Path, str] = {}
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def path(target: Path) -> Path:
        return target.with_name(f".{target.name}.lock")

    def stale(self, info: Mapping[str, Any]) -> bool:
        pid = info.get("pid")
        if info.get("host") == self.host and isinstance(pid, int) and not _pid_alive(pid):
            return True
        return float(info.get("age", 0.0)) > LOCK_STALE_AFTER

    def acquire(self, target: Path) -> dict[str, Any] | None:
        """Take the lock of ``target``; None if taken, else the holder's info. A stale
        lock (its process is gone, or no heartbeat for ``LOCK_STALE_AFTER`` s) is taken over."""
        lock = self.path(target)
        token = uuid.uuid4().hex
        body = json.dumps({"pid": self.pid, "host": self.host, "token": token, "started": time.time()})
        new = lock.with_name(f"{lock.name}.{self.tag}-{token[:8]}.new")
        new.write_text(body)
        try:
            for _ in range(5):
                try:
                    os.link(new, lock)
                except FileExistsError:
                    info = _read_lock(lock)
                    if info is None:
                        continue  # released meanwhile: try again
                    if not self.stale(info):
                        return info
                    self._take_over(lock, info)
                    continue
                with self._mutex:
                    self.held[lock] = token
                self._beat()
                return None
            return _read_lock(lock) or {"pid": None, "host": None}
        finally:
            new.unlink(missing_ok=True)

    def _take_over(self, lock: Path, info: Mapping[str, Any]) -> None:
        """Remove a stale lock, unless another process replaced it meanwhile."""
        aside = lock.with_name(f"{lock.name}.{self.tag}-{uuid.uuid4().hex[:8]}.stale")
        try:
            os.rename(lock, aside)
        except FileNotFoundError:
            return
        moved = _read_lock(aside) or {}
        if moved.get("token") != info.get("token"):  # a fresh lock: put it back
            with contextlib.suppress(FileExistsError):
                os.link(aside, lock)
        aside.unlink(missing_ok=True)

    def clear_stale(self, target: Path) -> None:
        """Remove ``target``'s lock if stale (e.g. left by a process killed after writing
        the run), and lock scratch files of dead processes."""
        lock = self.path(target)
        info = _read_lock(lock)
        if info is not None and self.stale(info):
            self._take_over(lock, info)
        _remove_lock_scratch(target)

    def release(self, target: Path) -> None:
        lock = self.path(target)
        with self._mutex:
            token = self.held.pop(lock, None)
        if token is not None and (_read_lock(lock) or {}).get("token") == token:
            lock.unlink(missing_ok=True)

    def _beat(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._heartbeat, daemon=True, name="ntkbench-sweep-locks")
            self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(LOCK_HEARTBEAT):
            with self._mutex:
                locks = list(self.held)
            for lock in locks:
                with contextlib.suppress(OSError):
                    os.utime(lock)

    def close(self) -> None:
        for lock in list(self.held):
            self.release(lock.with_name(lock.name[1 : -len(".lock")]))
        self._stop.set()


def _host_hash(host: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_DNS, host).hex[:6]


def _remove_temp_files(target: Path) -> None:
    """Temp files of ``target`` left by a process killed mid-write (cube.save's naming),
    and lock scratch files of dead processes of this host; call only while holding
    ``target``'s lock."""
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    _remove_lock_scratch(target)


def _remove_lock_scratch(target: Path) -> None:
    """Lock scratch files (``.new``, ``.stale``) of dead processes of this host."""
    mine = _host_hash(socket.gethostname())
    for pattern in ("*.new", "*.stale"):
        for scratch in target.parent.glob(f".{target.name}.lock.{pattern}"):
            tag = scratch.name.split(".")[-2].split("-")
            if len(tag) == 3 and tag[0] == mine and tag[1].isdigit() and not _pid_alive(int(tag[1])):
                scratch.unlink(missing_ok=True)


class _CtrlC:
    """In the main thread: the first SIGINT asks the sweep to stop after its current run,
    a second one stops at once (KeyboardInterrupt)."""

    def __init__(self, say: Any) -> None:
        self.requested = False
        self._say = say
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> _CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._say("interrupt: stopping after the current run (Ctrl-C again to stop at once)")

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)


# ---------------------------------------------------------------------------
# Sweep
# ---------------------------------------------------------------------------


def sweep(
    config: Mapping[str, Any],
    out: str | os.PathLike[str],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    progress: bool = True,
    overwrite: bool = False,
    live: bool = False,
    combined: str = "cube.nc",
):
    """Run every grid point of ``config``, one file per run under ``out``; combine them.

    Parameters
    ----------
    config : the sweep config (see the module docs); validated first.
    out : output folder; gets ``run-<axis>=<value>-....nc`` files and ``cube.nc``.
    workers : run on a ``dask.distributed.LocalCluster`` with this many single-threaded
        worker processes, listening on 127.0.0.1 only (:func:`local_cluster`).
    scheduler : address of an existing dask scheduler (``"tcp://host:port"``), e.g. a
        cluster over several machines (``dask scheduler`` and ``dask worker ADDRESS`` on
        each; the output folder must be on a file system they all share).
    client : an existing ``dask.distributed.Client``. At most one of ``workers``,
        ``scheduler`` and ``client``; none runs in-process.
    progress : show a ``tqdm.auto`` progress bar (terminal or notebook).
    live : each run writes a progress file after every recording (:func:`live_cube` reads
        the sweep so far, e.g. for a notebook's live Explorer or ``ntkbench sweep --live``)
        and stops after its current recording when :func:`request_stop` is called; the
        sweep then raises :class:`SweepInterrupted` and a rerun resumes.
    combined : file name (in ``out``) of the combined cube. Two sweeps that share one
        folder's run files (different grids over the same runs, as a paper's experiments
        do) each name their own, so neither replaces the other's cube.
    overwrite : start over where ``out`` holds run files of a different config. Without it
        such a folder is refused (``ValueError`` naming the differing config keys) before
        anything runs; with it those runs are recomputed and their files replaced. Runs of
        the same config are reused either way.

    Returns
    -------
    The combined cube (``xarray.Dataset``) with the grid axes as dims, also written to
    ``out/<combined>`` (``out/cube.nc``). Rerunning skips finished runs (resume).

    Safety
    ------
    - Every file is written atomically (a killed sweep leaves complete files or none), and
      a corrupted or truncated run file is recomputed.
    - Each run is locked while it runs (``.<run file>.lock``: pid, host; refreshed every
      ``LOCK_HEARTBEAT`` s), so two sweeps on one folder (two terminals, a terminal and a
      notebook, two dask clients) never run the same run: the second skips the runs the
      first holds, saying so, runs the others, then waits for the held ones and picks up
      their results; the final cube equals a single sweep's. A lock whose process is gone
      (same host) or without a heartbeat for ``LOCK_STALE_AFTER`` s (another host) is
      stale and taken over; a run left unfinished by the other sweep is run here.
    - In the main thread (in-process or on dask): Ctrl-C stops after the run(s) in progress
      (queued dask runs are cancelled) and raises :class:`SweepInterrupted` (a
      ``KeyboardInterrupt``) saying how to resume; a second Ctrl-C stops at once.
    - A folder whose ``cube.nc`` combines another config, or grid points this config
      leaves out (two sweeps with disjoint grids), is refused unless ``overwrite``: the
      new cube would replace it and lose runs. A larger grid of the same config is fine.

    >>> cube = sweep(cfg, "runs/demo", workers=2)  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    cfg = validate_config(config)
    given = [name for name, v in (("workers", workers), ("scheduler", scheduler), ("client", client)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of workers, scheduler and client; got {given}")
    if workers is not None and (not _is_int(workers) or workers < 1):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if scheduler is not None and not isinstance(scheduler, str):
        raise TypeError(f"scheduler must be an address string like 'tcp://host:port', got {scheduler!r}")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
    if not isinstance(live, bool):
        raise TypeError(f"live must be True or False, got {live!r}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    if not isinstance(combined, str) or not combined.endswith(".nc") or Path(combined).name != combined:
        raise ValueError(f"combined must be a file name ending in .nc (no folder), got {combined!r}")
    if combined.startswith(("run-", ".")):
        raise ValueError(f"combined must not start with 'run-' or '.' (run files and locks), got {combined!r}")
    # Absolute: dask workers on an existing cluster have their own working directory (the
    # folder must be on a file system the workers share).
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {str(out)!r} is a file; expected a folder (new or of this sweep)")
    above = next(p for p in out.parents if p.exists())
    if not out.exists() and not above.is_dir():
        raise ValueError(f"out: {str(out)!r} lies under the file {str(above)!r}; expected a folder")

    runs = expand_grid(cfg, validate=False)
    paths = [out / run_name(r["grid"]) for r in runs]
    if len(set(paths)) != len(paths):  # pragma: no cover - distinct values give distinct names
        raise ValueError("grid: two grid points map to the same file name")
    states = [_run_state(p, r) for r, p in zip(runs, paths, strict=True)]
    foreign = [(p, st[1], r) for r, p, st in zip(runs, paths, states, strict=True) if st[0] == "foreign"]
    if foreign and not overwrite:
        raise _foreign_error(out, foreign)
    if not overwrite:
        _check_combined_cube(out / combined, cfg, paths)
    pending = [(r, p) for r, p, st in zip(runs, paths, states, strict=True) if st[0] != "done"]
    check_runs([r for r, _ in pending])  # fail before creating folders or clusters
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"out: cannot create the folder {str(out)!r} ({exc.strerror}); expected a writable folder"
        ) from exc

    in_process = client is None and workers is None and scheduler is None
    bar = tqdm(total=len(runs), initial=len(runs) - len(pending), desc="sweep", unit="run", disable=not progress)
    state = _Progress(bar, out, len(runs), len(runs) - len(pending), live=live)
    (out / STOP_FILE).unlink(missing_ok=True)  # a stop asked of an earlier sweep
    locks = _RunLocks()
    for path in [*paths, out / combined]:
        locks.clear_stale(path)
    shown = _LiveStatus(state, out) if live and progress else None
    try:
        with _CtrlC(state.say) as ctrl_c:
            state.ctrl_c = ctrl_c
            todo = pending
            while todo:
                if in_process:
                    held = _run_in_process(todo, locks, state)
                else:
                    held = _run_distributed(todo, locks, state, workers=workers, scheduler=scheduler, client=client)
                if not held:
                    break
                todo = _wait_for_others(held, locks, state)
        result = _combine(cfg, paths, out / combined, locks, state)
    finally:
        if shown is not None:
            shown.close()
        bar.close()
        locks.close()
        if live:
            (out / STOP_FILE).unlink(missing_ok=True)
    return result


@dataclasses.dataclass
class _Progress:
    """What the run loops share: the bar, counts, messages, Ctrl-C."""

    bar: Any
    out: Path
    total: int
    done: int
    ctrl_c: Any = None
    announced: set = dataclasses.field(default_factory=set)
    live: bool = False

    def say(self, message: str) -> None:
        self.bar.write(f"sweep: {message}", file=sys.stderr)

    def advance(self, path: Path | None = None) -> None:
        self.done += 1
        if path is not None:
            self.bar.set_postfix_str(path.stem[4:] or "run", refresh=False)
        self.bar.update()

    def held_by_other(self, path: Path, info: Mapping[str, Any]) -> None:
        if path not in self.announced:
            self.announced.add(path)
            self.say(
                f"{path.name} is being run by another sweep ({_holder(info)}); skipping it for now, "
                "its result is picked up at the end"
            )

    @property
    def live_args(self) -> tuple:
        """``_run_to_file``'s extra arguments: ``(True,)`` when live (none otherwise)."""
        return (True,) if self.live else ()

    def stop_requested(self) -> bool:
        return self.live and (self.out / STOP_FILE).exists()

    def check_interrupt(self) -> None:
        if self.stop_requested():
            raise SweepInterrupted(
                f"sweep stopped: {self.done} of {self.total} runs finished in {str(self.out)!r}; "
                "run again (the same config and out) to resume"
            )
        if self.ctrl_c is not None and self.ctrl_c.requested:
            raise SweepInterrupted(
                f"sweep interrupted: {self.done} of {self.total} runs finished in {str(self.out)!r}; "
                "rerun the same command (or ntkbench.sweep with the same config and out) to resume"
            )


class _LiveStatus:
    """``--live``: every ``every`` seconds, the progress bar's postfix shows the latest
    recording of each run in progress (read from the progress files, so dask workers'
    runs show too): ``width=64-seed=1 step 30: loss 0.41 entropy 2.31 | ...``."""

    SHOW = ("loss", "test_loss", "entropy", "trace", "chi_pos")

    def __init__(self, state: _Progress, out: Path, every: float = 0.5) -> None:
        self.state, self.out, self.every = state, out, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="ntkbench-sweep-live")
        self._thread.start()

    def line(self) -> str:
        parts = []
        for live in sorted(self.out.glob(".run-*.live.json")):
            try:
                record = json.loads(live.read_text())
            except (OSError, ValueError):
                continue
            if not record.get("steps"):
                continue
            values = record["values"]
            shown = [
                f"{k} {values[k][-1]:.4g}" for k in self.SHOW if k in values and not isinstance(values[k][-1], list)
            ]
            parts.append(f"{live.name[5 : -len('.nc.live.json')]} step {record['steps'][-1]}: {' '.join(shown)}")
        return " | ".join(parts)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            text = self.line()
            if text:
                self.state.bar.set_postfix_str(text, refresh=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _run_in_process(todo: list, locks: _RunLocks, state: _Progress) -> list:
    """Run ``todo`` one by one, each under its lock; return the runs another sweep holds."""
    held = []
    for run, path in todo:
        state.check_interrupt()
        if _run_state(path, run)[0] == "done":  # finished by another sweep meanwhile
            state.advance(path)
            continue
        info = locks.acquire(path)
        if info is not None:
            state.held_by_other(path, info)
            held.append((run, path))
            continue
        try:
            if _run_state(path, run)[0] != "done":
                _remove_temp_files(path)
                state.bar.set_postfix_str(path.stem[4:] or "run", refresh=True)
                try:
                    _report(state.bar, path, _run_to_file(run, str(path), *state.live_args))
                except RunStopped:
                    state.check_interrupt()  # raises SweepInterrupted
                    raise
            state.advance(path)
        finally:
            locks.release(path)
    return held


def _wait_for_others(held: list, locks: _RunLocks, state: _Progress) -> list:
    """Wait until a run another sweep holds is released (or its lock goes stale)."""
    names = ", ".join(p.name for _, p in held)
    state.say(f"waiting for {len(held)} run(s) another sweep is running: {names}")
    while True:
        for _run, path in held:
            info = _read_lock(locks.path(path))
            if info is None or locks.stale(info):
                return held
        state.check_interrupt()
        time.sleep(_POLL)


def _diverged_runs(paths: list[Path]) -> dict[str, int]:
    """``{run file name: diverged step}`` of the runs whose training diverged."""
    import xarray as xr

    from ntkbench import cube

    out = {}
    for p in paths:
        with cube.IO_LOCK, xr.open_dataset(p, engine="netcdf4") as ds:
            if "diverged_step" in ds.attrs:
                out[p.name] = int(ds.attrs["diverged_step"])
    return out


def _combine(cfg: Mapping[str, Any], paths: list[Path], target: Path, locks: _RunLocks, state: _Progress):
    """Combine the run files into ``target`` (under its lock: one writer at a time)."""
    from ntkbench import cube

    while (info := locks.acquire(target)) is not None:
        if target not in state.announced:
            state.announced.add(target)
            state.say(f"waiting for another sweep ({_holder(info)}) to finish writing {target.name}")
        time.sleep(_POLL)
    try:
        _remove_temp_files(target)
        attrs = cube.make_attrs(cfg, paper=cfg.get("paper", ""), title=cfg.get("title", ""))
        # run files written before the status variables existed get them from their attrs
        combined = cube.combine([cube.with_status(cube.open(p)) for p in paths], attrs=attrs)
        diverged = _diverged_runs(paths)
        if diverged:
            combined.attrs["diverged_runs"] = json.dumps(diverged)
        # combine_by_coords sorts coordinates; lay named axes (method, activation) out in the
        # grid's order, numbers stay ascending
        for key, values in cfg.get("grid", {}).items():
            _, dim = _resolve_grid_key(key, cfg)
            named = dim in combined.dims and combined[dim].dtype.kind in "OUS"
            if named and sorted(map(str, values)) == sorted(map(str, combined[dim].values.tolist())):
                combined = combined.reindex({dim: values})
        cube.save(combined, target)
    finally:
        locks.release(target)
    return combined


#: ``LocalCluster`` keywords for no dashboard: the scheduler's HTTP server (health and
#: metrics routes) still starts, on a free localhost port. ``dashboard_address=None`` took
#: 0.0.0.0:8787 in threads mode and 127.0.0.1:8787 with processes, so a second cluster on
#: the machine (another sweep, a test in parallel) could fail: "Port 8787 is already in use".
NO_DASHBOARD: dict[str, Any] = {"dashboard_address": "127.0.0.1:0", "scheduler_kwargs": {"dashboard": False}}


def local_cluster(workers: int):
    """The ``dask.distributed.LocalCluster`` of ``sweep(workers=N)``: N single-threaded
    worker processes; scheduler and workers listen on 127.0.0.1 only (free ports), no
    dashboard (:data:`NO_DASHBOARD`). For several machines start a cluster yourself and
    pass ``scheduler="tcp://host:port"``
    (``dask scheduler`` / ``dask worker`` on a network you trust: dask has no
    authentication unless you configure TLS)."""
    from dask.distributed import LocalCluster

    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        **NO_DASHBOARD,
    )


def _executing_keys(client: Any) -> set:
    """Keys of the tasks the workers are executing now (not those queued on them)."""

    def executing(dask_worker: Any) -> list:
        return [ts.key for ts in dask_worker.state.executing]

    try:
        return {key for keys in client.run(executing).values() for key in keys}
    except Exception:  # noqa: BLE001 - an older worker API: count everything assigned as running
        return {key for keys in client.processing().values() for key in keys}


def _run_distributed(todo: list, locks: _RunLocks, state: _Progress, *, workers, scheduler, client) -> list:
    """Run the runs of ``todo`` this sweep can lock on dask; return those another holds."""
    from dask.distributed import Client, as_completed

    mine, held = [], []
    for run, path in todo:
        if _run_state(path, run)[0] == "done":
            state.advance(path)
            continue
        info = locks.acquire(path)
        if info is not None:
            state.held_by_other(path, info)
            held.append((run, path))
        elif _run_state(path, run)[0] == "done":
            locks.release(path)
            state.advance(path)
        else:
            _remove_temp_files(path)
            mine.append((run, path))
    if not mine:
        return held
    own_cluster = own_client = None
    try:
        if client is None:
            if workers is not None:
                own_cluster = local_cluster(workers)
                own_client = Client(own_cluster)
            else:
                own_client = Client(scheduler)
            client = own_client
        futures = {
            client.submit(
                _run_to_file,
                run,
                str(path),
                *state.live_args,
                pure=False,
                key=f"ntkbench-{path.stem}-{uuid.uuid4().hex[:8]}",
            ): path
            for run, path in mine
        }
        errors = []
        finished = as_completed(futures)
        stopping = False
        while not finished.is_empty():
            if not stopping and (state.stop_requested() or (state.ctrl_c is not None and state.ctrl_c.requested)):
                stopping = True  # Ctrl-C: let the runs in progress finish, drop the queued ones
                running = _executing_keys(client)
                for fut, path in futures.items():
                    if not fut.done() and fut.key not in running:
                        fut.cancel()
                        locks.release(path)
                state.say(f"waiting for the {len(running)} run(s) in progress on the workers")
            if not finished.has_ready():
                time.sleep(0.02)  # a poll interval: Ctrl-C is looked at between completions
                continue
            for fut in finished.next_batch(block=False):
                path = futures[fut]
                try:
                    if fut.cancelled():
                        continue
                    result = fut.result()
                except RunStopped:  # asked to stop: not an error
                    pass
                except Exception as exc:  # keep going: finished runs stay on disk for resume
                    errors.append((path, exc))
                else:
                    _report(state.bar, path, result)
                    state.advance(path)
                finally:
                    locks.release(path)
                    fut.release()  # done: the cluster may forget it (a lost worker does not rerun it)
        state.check_interrupt()
        if errors:
            path, exc = errors[0]
            raise RuntimeError(f"{len(errors)} run(s) failed; first: {path.name}: {exc!r}") from exc
    finally:
        for _, path in mine:
            locks.release(path)
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()
    return held
