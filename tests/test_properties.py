"""Property-based bad-input tests (issue 16, hypothesis): the config loader, the spectral
measures and cube.open either accept an input or raise ValueError/TypeError naming the
argument -- never another exception, never a silent wrong answer.

Derandomized (the same examples every run) with a fixed example budget: no chance
failures, about ten seconds in all. Counts in tests/README.md.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ntkbench import cube  # noqa: E402
from ntkbench.sweep import validate_config  # noqa: E402

SETTINGS = settings(
    derandomize=True, max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

BASE = {
    "title": "t",
    "seed": 0,
    "model": {"name": "mlp", "width": 4, "depth": 1},
    "data": {"name": "digits", "n_train": 16, "n_test": 8},
    "train": {"optimizer": "sgd", "lr": 0.1, "steps": 2, "batch_size": "full", "loss": "mse"},
    "record": {"every": 1, "probe": 8},
    "grid": {"seed": [0, 1]},
}
KEYS = [
    ("model", "width"),
    ("model", "depth"),
    ("model", "activation"),
    ("model", "name"),
    ("data", "name"),
    ("data", "n_train"),
    ("data", "n_test"),
    ("train", "optimizer"),
    ("train", "lr"),
    ("train", "steps"),
    ("train", "batch_size"),
    ("train", "loss"),
    ("train", "momentum"),
    ("train", "weight_decay"),
    ("record", "every"),
    ("record", "probe"),
    ("record", "measures"),
]
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@SETTINGS
@given(key=st.sampled_from(KEYS), value=ANY_VALUE)
def test_config_values_are_accepted_or_named(key, value):
    section, name = key
    cfg = copy.deepcopy(BASE)
    cfg[section][name] = value
    try:
        validate_config(cfg)
    except (ValueError, TypeError) as exc:
        assert f"'{section}.{name}'" in str(exc) or "'grid." in str(exc), str(exc)


@SETTINGS
@given(
    section=st.sampled_from(["model", "data", "train", "record", None]),
    name=st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True),
)
def test_unknown_config_keys_are_named(section, name):
    cfg = copy.deepcopy(BASE)
    target = cfg if section is None else cfg[section]
    known = set(target) | {"paper", "select", "seed", "momentum", "weight_decay", "log_points", "measures"}
    known |= {"activation", "parametrization", "base_width", "lnp_probes", "optimizer", "loss", "bias"}
    if name in known:
        return
    target[name] = 1
    try:
        validate_config(cfg)
    except ValueError as exc:
        where = name if section is None else f"{section}.{name}"
        assert f"'{where}'" in str(exc), str(exc)
    else:  # a key the data set or model knows as an option (e.g. data.flatten)
        assert section in ("data", "model"), (section, name)


finite = st.floats(0.0, 1e6, allow_nan=False, allow_infinity=False, width=32)


@SETTINGS
@given(values=st.lists(finite, min_size=1, max_size=12), noise=st.floats(0.0, 1e-7))
def test_entropy_of_any_nonnegative_spectrum_is_in_range_and_round_off_never_nan(values, noise):
    import warnings

    import jax.numpy as jnp

    import ntkbench as nb

    lam = np.asarray(values, np.float32)
    if lam.max() <= 0:
        return  # all zero: NaN with a warning (tests/test_reliability.py)
    lam = lam - noise * lam.max() * (np.arange(len(lam)) % 2)  # round-off negatives on zeros
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        S = float(nb.entropy(jnp.asarray(lam)))
        Sn = float(nb.entropy(jnp.asarray(lam), normalize=True))
    assert math.isfinite(S) and -1e-5 <= S <= math.log(len(lam)) + 1e-4
    assert math.isfinite(Sn) and -1e-5 <= Sn <= 1 + 1e-4


@SETTINGS
@given(
    shape=st.sampled_from([(), (0,), (3,), (2, 3), (3, 2), (0, 0), (2, 2, 3)]),
    bad=st.sampled_from([None, "nan", "inf"]),
)
def test_kernel_measures_name_a_bad_kernel(shape, bad):
    import jax.numpy as jnp

    import ntkbench as nb

    K = np.ones(shape, np.float32)
    square = len(shape) >= 2 and shape[-1] == shape[-2] and shape[-1] > 0
    if bad is not None and K.size:
        K.flat[0] = np.nan if bad == "nan" else np.inf
    for f in (nb.trace, nb.magnitude_entropy, lambda k: nb.kernel_alignment(k, k)):
        if square and (bad is None or not K.size):
            assert bool(jnp.all(jnp.isfinite(f(jnp.asarray(K)))))
        else:
            with pytest.raises(ValueError, match=r"K|kernel"):
                f(jnp.asarray(K))


@settings(derandomize=True, max_examples=25, deadline=None)
@given(data=st.binary(max_size=600), prefix=st.sampled_from([b"", b"\x89HDF\r\n\x1a\n", b"CDF\x01"]))
def test_cube_open_refuses_any_garbage_naming_the_file(tmp_path_factory, data, prefix):
    path = tmp_path_factory.mktemp("garbage") / "junk.nc"
    path.write_bytes(prefix + data)
    with pytest.raises(ValueError, match="junk.nc"):
        cube.open(path)
