"""A sweep config: its keys and defaults, validation, the grid expanded into run configs,
and each run's file name."""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Mapping
from typing import Any, cast

from ntkbench.data import DATASETS, OPTIONS
from ntkbench.optim import OPTIMIZERS as _OPTIMIZERS

_SECTIONS = ("model", "data", "select", "train", "record")
_TOP_KEYS = ("title", "paper", "seed", "model", "data", "select", "train", "record", "grid")
_SELECT_KEYS = ("method", "budget", "seed", "options")
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
RECORD_DEFAULTS: dict[str, Any] = {
    "every": 10,
    "probe": 200,
    "measures": None,
    "log_points": 30,
    "lnp_probes": "auto",
    # the kernel convention of the kernel measures (ntkbench.conventions) and the LNP batch
    "kernel": "traced",
    "normalize": "none",
    "effective": False,
    "trace_normalize": False,
    "output_reduction": "sum",
    "lnp_batch": "probe",
    # whose eNTK the kernel measures are of: the trained network, or the RND target network of
    # the run's [select] table (the data paper's comparison of selected sets)
    "kernel_model": "trained",
}
_RECORD_CHOICES = {
    "kernel": ("traced", "full"),
    "normalize": ("none", "cosine"),
    "output_reduction": ("sum", "mean"),
    "lnp_batch": ("probe", "train"),
    "kernel_model": ("trained", "rnd_target"),
}
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
        elif key == "channels":
            ok = isinstance(value, list | tuple) and len(value) > 0 and all(_is_int(v) and v >= 1 for v in value)
            _need(ok, "model.channels", "a non-empty list of positive integers", value)
        elif isinstance(default, bool):
            _need(isinstance(value, bool), f"model.{key}", "true or false", value)
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
        elif key in _RECORD_CHOICES:
            allowed = _RECORD_CHOICES[key]
            _need(_is_name(value, allowed), f"record.{key}", " or ".join(map(repr, allowed)), value)
        elif key in ("effective", "trace_normalize"):
            _need(isinstance(value, bool), f"record.{key}", "true or false", value)
    if record.get("kernel") == "full" and record.get("output_reduction", "sum") != "sum":
        _need(False, "record.output_reduction", "'sum' with kernel = 'full' (a full kernel reduces no outputs)", "mean")


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
    if config.get("record", {}).get("kernel_model") == "rnd_target" and "select" not in config:
        _need(
            False, "record.kernel_model", "'trained' without a [select] table (rnd_target is its network)", "rnd_target"
        )


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
