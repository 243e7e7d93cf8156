"""Property-based bad input to the Python API and the CLI (issue 16, hypothesis): ``entk``,
the model constructors, ``Dataset``/``train``, ``sweep`` and ``ntkbench sweep`` either
accept an input or raise ``ValueError``/``TypeError`` naming the argument and what was
expected -- never another exception, never a silent wrong answer. The CLI prints that in
one line on stderr and exits with status 2, without a traceback unless ``--debug``.

Derandomized (the same examples every run), no example database, no deadline, small
example budgets; one tiny model and fixed shapes, so an example compiles nothing new
(dtypes compile once each). The inputs tried are counted in tests/README.md.

Decisions recorded here:
- ``entk`` accepts integer, unsigned, bool and float16/64 inputs (the model casts them;
  the kernel is in the parameters' dtype); complex, object and string inputs are refused.
- NaN/Inf in ``x1``/``x2`` is an error (``check_finite=True``, the default);
  ``check_finite=False`` returns the kernel with NaN in exactly the rows/columns of the
  bad samples.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _settings(n: int) -> settings:
    return settings(
        derandomize=True,
        database=None,
        deadline=None,
        max_examples=n,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@pytest.fixture(scope="module")
def tiny():
    """MLP(3 -> 2, width 4, depth 1) and a (4, 3) float32 batch."""
    import jax

    from ntkbench.models import MLP

    model = MLP(3, 2, 4, 1, key=jax.random.key(0))
    x = np.asarray(jax.random.normal(jax.random.key(1), (4, 3)), np.float32)
    return model, x


# --------------------------------------------------------------------------- entk


@_settings(12)
@given(
    shape=st.sampled_from([(), (0,), (0, 3), (4,), (4, 5), (4, 2), (4, 3, 2), (1, 7)]), which=st.sampled_from([1, 2])
)
def test_entk_wrong_shape_names_the_argument(tiny, shape, which):
    import ntkbench as nb

    model, x = tiny
    bad = np.ones(shape, np.float32)
    name = f"x{which}"
    with pytest.raises(ValueError, match=name):
        nb.entk(model, bad) if which == 1 else nb.entk(model, x, bad)


def _cast_check(model, x, dtype, which, method="auto"):
    import ntkbench as nb

    xd = (x * 40).astype(dtype)  # int8 products overflow, float16 sums lose digits
    xf = xd.astype(np.float32)  # the same values, in the parameters' dtype
    K = nb.entk(model, xd, method=method) if which == 1 else nb.entk(model, x, xd, method=method)
    ref = nb.entk(model, xf, method="jacobian") if which == 1 else nb.entk(model, x, xf, method="jacobian")
    assert K.shape == (4, 4) and K.dtype == np.float32
    np.testing.assert_allclose(np.asarray(K), np.asarray(ref), rtol=1e-5, atol=1e-4)


@_settings(16)
@given(
    dtype=st.sampled_from(["int16", "int32", "int64", "float64"]),
    which=st.sampled_from([1, 2]),
    method=st.sampled_from(["auto", "jacobian", "ntvp", "structured"]),
)
def test_entk_real_dtypes_give_the_kernel_of_the_same_values_in_float32(tiny, dtype, which, method):
    model, x = tiny
    _cast_check(model, x, dtype, which, method)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "bool", "float16"])
def test_entk_structured_is_right_for_narrow_input_dtypes(tiny, dtype):
    model, x = tiny
    _cast_check(model, x, dtype, 1, "structured")


@pytest.mark.parametrize("dtype, which", [("complex64", 1), ("complex64", 2), ("object", 1), ("str", 1)])
def test_entk_non_real_dtypes_are_refused_naming_the_argument(tiny, dtype, which):
    import ntkbench as nb

    model, x = tiny
    bad = np.full((4, 3), "a") if dtype == "str" else x.astype(dtype)
    with pytest.raises(TypeError, match=f"x{which}.*dtype"):
        nb.entk(model, bad) if which == 1 else nb.entk(model, x, bad)


@_settings(16)
@given(i=st.integers(0, 3), j=st.integers(0, 2), bad=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_entk_nonfinite_input_is_an_error_or_nan_rows_with_check_finite_false(tiny, i, j, bad):
    import ntkbench as nb

    model, x = tiny
    xb = x.copy()
    xb[i, j] = bad
    with pytest.raises(ValueError, match="NaN or Inf.*check_finite=False"):
        nb.entk(model, xb)
    K = np.asarray(nb.entk(model, xb, check_finite=False))
    finite = np.isfinite(K)
    others = np.arange(4) != i
    assert not finite[i].any() and not finite[:, i].any()
    assert finite[np.ix_(others, others)].all()


@pytest.mark.parametrize("which", [1, 2])
def test_entk_nonfinite_input_names_the_input(tiny, which):
    import ntkbench as nb

    model, x = tiny
    xb = x.copy()
    xb[0, 0] = np.nan
    with pytest.raises(ValueError, match=f"x{which}"):
        nb.entk(model, xb) if which == 1 else nb.entk(model, x, xb)


@_settings(30)
@given(arg=st.sampled_from(["method", "outputs", "block_size"]), value=ANY_VALUE)
def test_entk_bad_keyword_names_it(tiny, arg, value):
    import ntkbench as nb

    model, x = tiny
    valid = {
        "method": ("auto", "jacobian", "ntvp", "structured"),
        "outputs": ("trace", "full"),
    }
    if arg == "block_size":
        assume(value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1))
    else:
        assume(not (isinstance(value, str) and value in valid[arg]))
    with pytest.raises(ValueError, match=arg):
        nb.entk(model, x, **{arg: value})


@_settings(10)
@given(
    bad=st.sampled_from(
        [None, 3, 2.5, "mlp", b"mlp", (1, 2, 3), (len, {}), {"w": 1}, [np.ones(3)], np.ones(3), (None, {"w": 1.0})]
    )
)
def test_entk_non_model_first_argument_names_model(tiny, bad):
    import ntkbench as nb

    _, x = tiny
    with pytest.raises(TypeError, match="model"):
        nb.entk(bad, x)


@pytest.mark.parametrize("kwargs", [{"memory_limit": "1GB"}, {"memory_limit": -1}, {"check_finite": "no"}])
def test_entk_memory_limit_and_check_finite_are_checked(tiny, kwargs):
    import ntkbench as nb

    model, x = tiny
    (name,) = kwargs
    with pytest.raises((TypeError, ValueError), match=name):
        nb.entk(model, x, **kwargs)


# --------------------------------------------------------------------------- models

BAD_SIZE = st.one_of(
    st.integers(-(10**6), 0), st.booleans(), st.floats(allow_nan=True), st.text(max_size=3), st.none(), st.just([4])
)


@_settings(40)
@given(
    name=st.sampled_from(["mlp", "cnn", "transformer", "random_features"]),
    arg=st.sampled_from(["width", "depth", "layers", "heads", "mlp_ratio"]),
    value=BAD_SIZE,
)
def test_model_sizes_must_be_positive_ints(name, arg, value):
    import jax

    from ntkbench.models import MODEL_DEFAULTS, make_model

    assume(arg in MODEL_DEFAULTS[name])
    in_shape = (4,) if name == "transformer" else (8, 8)
    with pytest.raises((TypeError, ValueError), match=arg):
        make_model({"name": name, arg: value}, key=jax.random.key(0), in_shape=in_shape, out_size=3)


@_settings(20)
@given(arg=st.sampled_from(["in_size", "out_size", "width", "depth"]), value=BAD_SIZE)
def test_mlp_constructor_sizes_must_be_positive_ints(arg, value):
    import jax

    from ntkbench.models import MLP

    sizes: dict[str, Any] = {"in_size": 3, "out_size": 2, "width": 4, "depth": 1}
    sizes[arg] = value
    if arg == "out_size" and value == "scalar":
        return
    with pytest.raises((TypeError, ValueError), match=arg):
        MLP(**sizes, key=jax.random.key(0))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"key": 3}, "key"),
        ({"key": "seed"}, "key"),
        ({"in_shape": "ab"}, "in_shape"),
        ({"in_shape": (0,)}, "in_s"),
        ({"in_shape": 3}, "in_shape"),
        ({"out_size": 0}, "out_size"),
        ({"out_size": 1.5}, "out_size"),
        ({"config": {"name": "mlp", "activation": ["relu"]}}, "activation"),
        ({"config": {"name": "mlp", "activation": 3}}, "activation"),
        ({"config": {"name": ["mlp"]}}, "name"),
        ({"config": "mlp"}, "config"),
    ],
)
def test_make_model_other_arguments_are_named(kwargs, match):
    import jax

    from ntkbench.models import make_model

    args: dict[str, Any] = {"config": {"name": "mlp"}, "key": jax.random.key(0), "in_shape": (3,), "out_size": 2}
    args.update(kwargs)
    with pytest.raises((TypeError, ValueError), match=match):
        make_model(args.pop("config"), **args)


# --------------------------------------------------------------------------- Dataset / train


@pytest.fixture(scope="module")
def dset():
    from ntkbench import data

    rng = np.random.default_rng(0)
    return data.from_arrays(rng.normal(size=(10, 3)).astype(np.float32), np.arange(10) % 2, 6, 4)


def _replace(ds, **kw):
    import dataclasses

    return dataclasses.replace(ds, **kw)


@_settings(16)
@given(
    i=st.integers(0, 5),
    j=st.integers(0, 2),
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
    split=st.sampled_from(["train", "test"]),
)
def test_dataset_refuses_nonfinite_inputs(dset, i, j, bad, split):
    x = getattr(dset, f"x_{split}").copy()
    x[i % len(x), j] = bad
    with pytest.raises(ValueError, match=f"x_{split}.*NaN or Inf"):
        _replace(dset, **{f"x_{split}": x})


@_settings(12)
@given(
    kind=st.sampled_from(["complex64", "object", "str", "float_labels", "label_high", "label_negative", "labels_2d"]),
    split=st.sampled_from(["train", "test"]),
)
def test_dataset_refuses_bad_dtypes_and_labels(dset, kind, split):
    x, y = getattr(dset, f"x_{split}"), getattr(dset, f"y_{split}")
    if kind in ("complex64", "object"):
        change, name = {f"x_{split}": x.astype(kind)}, f"x_{split}"
    elif kind == "str":
        change, name = {f"x_{split}": np.full(x.shape, "a")}, f"x_{split}"
    elif kind == "float_labels":
        change, name = {f"y_{split}": y.astype(np.float32) + 0.5}, f"y_{split}"
    elif kind == "label_high":
        change, name = {f"y_{split}": np.full(len(y), dset.n_outputs, np.int32)}, f"y_{split}"
    elif kind == "label_negative":
        change, name = {f"y_{split}": np.full(len(y), -1, np.int32)}, f"y_{split}"
    else:
        change, name = {f"y_{split}": np.zeros((len(y), 2), np.int32)}, f"y_{split}"
    with pytest.raises((TypeError, ValueError), match=name):
        _replace(dset, **change)


def test_dataset_refuses_nan_regression_targets_and_mismatched_lengths(dset):
    from ntkbench import data

    rng = np.random.default_rng(0)
    reg = data.from_arrays(
        rng.normal(size=(10, 3)).astype(np.float32), np.ones((10, 2), np.float32), 6, 4, task="regression"
    )
    y = reg.y_train.copy()
    y[2, 1] = np.nan
    with pytest.raises(ValueError, match="y_train.*NaN or Inf"):
        _replace(reg, y_train=y)
    with pytest.raises(ValueError, match="y_train"):
        _replace(reg, y_train=np.ones((6, 5), np.float32))  # not n_outputs targets
    with pytest.raises(ValueError, match="x_train and y_train"):
        _replace(dset, y_train=dset.y_train[:3])
    with pytest.raises(ValueError, match="x_test"):
        _replace(dset, x_test=np.ones((4, 5), np.float32))


TRAIN_ARGS = ("steps", "batch_size", "optimizer", "loss", "recorder")


def _train_valid(arg: str, value: Any) -> bool:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if arg == "steps":
        return is_int and value >= 0
    if arg == "batch_size":
        return value is None or (is_int and value >= 1)
    if arg == "loss":
        return value in ("mse", "ce") if isinstance(value, str) else callable(value)
    return arg == "recorder" and value is None


@_settings(40)
@given(
    arg=st.sampled_from(TRAIN_ARGS), value=st.one_of(ANY_VALUE.filter(lambda v: not isinstance(v, list)), st.just(len))
)
def test_train_bad_arguments_are_named(tiny, dset, arg, value):
    import jax
    import optax

    from ntkbench.train import train

    assume(not _train_valid(arg, value))
    model, _ = tiny
    kwargs: dict[str, Any] = {"optimizer": optax.sgd(0.1), "steps": 1, "key": jax.random.key(0), arg: value}
    with pytest.raises((TypeError, ValueError), match=arg):
        train(model, dset, **kwargs)


@_settings(8)
@given(data=st.sampled_from([None, 3, "digits", (np.ones((4, 3)), np.zeros(4)), {"x_train": np.ones((4, 3))}]))
def test_train_non_dataset_is_named(tiny, data):
    import jax
    import optax

    from ntkbench.train import train

    model, _ = tiny
    with pytest.raises(TypeError, match="data"):
        train(model, data, optimizer=optax.sgd(0.1), steps=1, key=jax.random.key(0))


class _Duck:
    """A Dataset look-alike that skips Dataset's own checks (train accepts duck types)."""

    def __init__(self, ds, **kw):
        self.__dict__.update({f: getattr(ds, f) for f in ("x_train", "y_train", "x_test", "y_test", "task", "name")})
        self.__dict__.update(kw)


def test_train_empty_and_mismatched_data_are_named(tiny, dset):
    import jax
    import optax

    from ntkbench.train import train

    model, _ = tiny
    for kw, match in [
        ({"x_train": dset.x_train[:0], "y_train": dset.y_train[:0]}, "no training samples"),
        ({"y_train": dset.y_train[:3]}, "y_train"),
        ({"task": "ranking"}, "task"),
    ]:
        with pytest.raises(ValueError, match=match):
            train(model, _Duck(dset, **kw), optimizer=optax.sgd(0.1), steps=1, key=jax.random.key(0))


@pytest.mark.parametrize("case", ["model_none", "key_none", "loss_list", "test_mismatch"])
def test_train_model_key_loss_and_test_split_are_named(tiny, dset, case):
    import jax
    import optax

    from ntkbench.train import train

    model, _ = tiny
    kwargs: dict[str, Any] = {"optimizer": optax.sgd(0.1), "steps": 1, "key": jax.random.key(0)}
    data: Any = dset
    match = {"model_none": "model", "key_none": "key", "loss_list": "loss", "test_mismatch": "y_test"}[case]
    if case == "model_none":
        model = None
    elif case == "key_none":
        kwargs["key"] = None
    elif case == "loss_list":
        kwargs["loss"] = ["mse"]
    else:
        data = _Duck(dset, y_test=dset.y_test[:1])
    with pytest.raises((TypeError, ValueError), match=match):
        train(model, data, **kwargs)


# --------------------------------------------------------------------------- sweep (Python API)

BASE = {
    "title": "t",
    "seed": 0,
    "model": {"name": "mlp", "width": 4, "depth": 1},
    "data": {"name": "digits", "n_train": 16, "n_test": 8},
    "train": {"optimizer": "sgd", "lr": 0.1, "steps": 2, "batch_size": "full", "loss": "mse"},
    "record": {"every": 1, "probe": 8},
    "grid": {"seed": [0, 1]},
}


@_settings(30)
@given(
    arg=st.sampled_from(["workers", "scheduler", "overwrite", "progress"]),
    value=ANY_VALUE,
)
def test_sweep_bad_keywords_are_named_before_anything_runs(tmp_path_factory, arg, value):
    from ntkbench.sweep import sweep

    if arg == "workers":
        assume(value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1))
    elif arg == "scheduler":
        assume(value is not None and not isinstance(value, str))
    else:
        assume(not isinstance(value, bool))
    out = tmp_path_factory.mktemp("sw") / "o"
    with pytest.raises((TypeError, ValueError), match=arg):
        sweep(BASE, out, **{arg: value})
    assert not out.exists()


def _unwritable() -> Path | None:
    """A folder where even root cannot create a folder (sysfs refuses mkdir), if any."""
    p = Path("/sys/ntkbench-probe")
    try:
        p.mkdir()
    except OSError:
        return Path("/sys") if Path("/sys").is_dir() else None
    p.rmdir()  # pragma: no cover
    return None  # pragma: no cover


@pytest.mark.parametrize("where", ["file", "under_file", "under_file_deep", "unwritable", "config_not_mapping"])
def test_sweep_out_that_is_not_a_writable_folder_is_named(tmp_path, where):
    from ntkbench.sweep import sweep

    (tmp_path / "afile").write_text("x")
    cfg: Any = BASE
    out = {
        "file": tmp_path / "afile",
        "under_file": tmp_path / "afile" / "o",
        "under_file_deep": tmp_path / "afile" / "a" / "b",
        "unwritable": (_unwritable() or Path("/nonexistent-root")) / "ntkbench-o",
        "config_not_mapping": tmp_path / "o",
    }[where]
    if where == "unwritable" and _unwritable() is None:
        pytest.skip("no folder here refuses mkdir to this user")
    if where == "config_not_mapping":
        cfg = ["not", "a", "mapping"]
    match = "config" if where == "config_not_mapping" else "out"
    with pytest.raises((TypeError, ValueError), match=match):
        sweep(cfg, out)
    assert (tmp_path / "afile").read_text() == "x"


# --------------------------------------------------------------------------- CLI


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):  # a TOML basic string: escape quotes, backslashes and control characters
        body = "".join(
            f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else "\\" + c if c in '"\\' else c for c in v
        )
        return f'"{body}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(i) for i in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_value(k)} = {_toml_value(i)}" for k, i in v.items()) + "}"
    raise TypeError(v)


def _toml(cfg: dict[str, Any]) -> str:
    lines = [f"{k} = {_toml_value(v)}" for k, v in cfg.items() if not isinstance(v, dict)]
    for section, table in cfg.items():
        if isinstance(table, dict):
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


CLI_KEYS = [
    ("model", "width"),
    ("model", "depth"),
    ("model", "name"),
    ("model", "activation"),
    ("data", "name"),
    ("data", "n_train"),
    ("train", "optimizer"),
    ("train", "lr"),
    ("train", "steps"),
    ("train", "batch_size"),
    ("train", "loss"),
    ("record", "every"),
    ("record", "probe"),
    ("grid", "seed"),
    ("grid", "width"),
]
TOML_VALUE = st.one_of(
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.from_regex(r"[a-z]{1,3}", fullmatch=True), st.integers(), max_size=2),
)


@_settings(40)
@given(key=st.sampled_from(CLI_KEYS), value=TOML_VALUE)
def test_cli_bad_toml_value_is_one_line_status_2(tmp_path_factory, capsys, key, value):
    import copy
    import tomllib

    from ntkbench.cli import main
    from ntkbench.sweep import validate_config

    section, name = key
    cfg = copy.deepcopy(BASE)
    cfg[section][name] = value
    text = _toml(cfg)
    assert tomllib.loads(text) == tomllib.loads(text)  # the generated file is TOML
    try:
        validate_config(tomllib.loads(text))
    except (ValueError, TypeError):
        pass
    else:
        assume(False)  # a valid config would run a sweep
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "c.toml").write_text(text)
    status = main(["sweep", str(tmp / "c.toml"), "--out", str(tmp / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("ntkbench sweep: error: "), err
    assert "Traceback" not in err
    assert f"'{section}.{name}'" in err or f"'{section}'" in err, err
    assert not (tmp / "o").exists()


@pytest.mark.parametrize("debug", [False, True])
def test_cli_bad_toml_in_a_subprocess(tmp_path, debug):
    """The real command: one line and status 2; ``--debug`` adds the traceback."""
    cfg = {**BASE, "model": {**BASE["model"], "width": -3}}
    (tmp_path / "c.toml").write_text(_toml(cfg))
    argv = [sys.executable, "-m", "ntkbench.cli", "sweep", str(tmp_path / "c.toml"), "--out", str(tmp_path / "o")]
    proc = subprocess.run(argv + (["--debug"] if debug else []), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ntkbench sweep: error: ") and "'model.width'" in last, proc.stderr
    if debug:
        assert "Traceback" in proc.stderr
    else:
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", ["under_file", "unwritable"])
def test_cli_out_not_writable_is_one_line_status_2(tmp_path, capsys, where):
    from ntkbench.cli import main

    (tmp_path / "afile").write_text("x")
    cfg = tmp_path / "c.toml"
    cfg.write_text(_toml(BASE))
    if where == "unwritable":
        base = _unwritable()
        if base is None:
            pytest.skip("no folder here refuses mkdir to this user")
        out = base / "ntkbench-o"
    else:
        out = tmp_path / "afile" / "a" / "b"
    status = main(["sweep", str(cfg), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and "out" in err and "Traceback" not in err, err
