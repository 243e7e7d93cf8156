"""Reliability of sweeps (issue 16): folders of another config, run locks shared by two
processes, stale locks, Ctrl-C, and SIGKILL at many moments followed by a resume.

Every wait is on a condition (a file appears, a process exits) with an explicit deadline;
there is no bare sleep. Sizes are tiny (MLP width 4, 16 digits, 2 steps) so the whole file
runs in about a minute on 2 cores; most of it is starting Python + JAX in subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from ntkbench import cube
from ntkbench.cli import main
from ntkbench.sweep import _RunLocks, expand_grid, run_name, sweep

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "title": "reliability",
    "seed": 0,
    "model": {"name": "mlp", "width": 4, "depth": 1},
    "data": {"name": "digits", "n_train": 16, "n_test": 8},
    "train": {"steps": 2},
    "record": {"every": 1, "probe": 8, "measures": ["loss", "entropy", "eigenvalues"]},
    "grid": {"seed": [0, 1, 2, 3, 4, 5]},
}
NAMES = [run_name(r["grid"]) for r in expand_grid(TINY)]


def _env(tmp_cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    # one compilation cache for this file's subprocesses: each starts faster
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_cache)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


def _strip(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    ds.attrs = {k: v for k, v in ds.attrs.items() if k != "created"}
    return ds


def _wait(cond, what: str, proc: subprocess.Popen | None = None, timeout: float = 180.0, poll: float = 0.002):
    """Wait until ``cond()`` is true; fail naming ``what`` after ``timeout`` s or if
    ``proc`` exits first. Returns ``cond()``'s value."""
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if proc is not None and proc.poll() is not None:
            return None
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)  # a poll interval, not a wait for time to pass
    return value


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted in-process sweep: the run cubes and the combined cube."""
    out = tmp_path_factory.mktemp("reference")
    combined = sweep(TINY, out, progress=False)
    return {n: cube.open(out / n) for n in NAMES}, combined


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jax-cache")


def _config_file(tmp_path: Path, config=TINY) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


# A sweep in a subprocess, optionally instrumented: every run it starts is logged (so a
# test can count how often each run ran), and hooks hold it at chosen points until a file
# exists (so two processes overlap deterministically).
DRIVER = r"""
import json, os, sys, time
from pathlib import Path
import ntkbench.sweep as sw
import ntkbench.sweep._dask as sw_dask
import ntkbench.sweep._run as sw_run
from ntkbench.cli import main

config, out, log, role = sys.argv[1:5]

def wait_for(path, timeout=180):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            sys.exit(f"{role}: timed out waiting for {path}")
        time.sleep(0.005)

# patched where they are looked up: both run loops call sw_run._run_to_file, the dask
# loop calls sw_dask._executing_keys
run_to_file = sw_run._run_to_file
count = [0]
def logged(run, path):
    # dask pickles this function by value (cloudpickle, __main__), so each run on a worker
    # gets its own copy of ``count``: count the log's lines instead
    with open(log, "a") as f:
        f.write(f"{role} {Path(path).name}\n")
    with open(log) as f:
        count[0] = sum(line.startswith(role + " ") for line in f)
    if role == "first" and count[0] == 1:        # hold the first run until the second sweep saw it held
        wait_for(out + ".second-saw-held")
    if role == "interrupted" and count[0] == 2:  # hold the second run until the test sent Ctrl-C
        Path(out + ".in-run-2").touch()
        wait_for(out + ".sigint-sent")
    if role == "dask-interrupted" and count[0] == 2:  # hold it until the sweep has seen Ctrl-C
        Path(out + ".in-run-2").touch()     # and asked the workers which runs are executing:
        wait_for(out + ".executing-asked")  # the held run is one of them, the queued ones not
    return run_to_file(run, path)
sw_run._run_to_file = logged

executing_keys = sw_dask._executing_keys
def asked(client):
    keys = executing_keys(client)
    Path(out + ".executing-asked").touch()
    return keys
sw_dask._executing_keys = asked

held_by_other = sw._Progress.held_by_other
def saw_held(self, path, info):
    held_by_other(self, path, info)
    Path(out + ".second-saw-held").touch()
sw._Progress.held_by_other = saw_held

cfg = json.loads(Path(config).read_text())
toml = Path(config).with_suffix(".toml")
if role == "interrupted":
    sys.exit(main(["sweep", str(toml), "--out", out, "--no-progress"]))
if role == "dask-interrupted":  # one in-process worker thread, so the hooks above apply to its runs
    import distributed
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, **sw.NO_DASHBOARD) as lc,
        distributed.Client(lc) as client,
    ):
        try:
            sw.sweep(cfg, out, client=client, progress=False)
        except sw.SweepInterrupted as exc:
            print(exc, file=sys.stderr, flush=True)
            sys.exit(130)
sw.sweep(cfg, out, progress=False)
print("done", flush=True)
"""


def _driver(tmp_path: Path, out: Path, role: str, env: dict[str, str]) -> subprocess.Popen:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    return subprocess.Popen(
        [sys.executable, str(script), str(_config_file(tmp_path)), str(out), str(tmp_path / "runs.log"), role],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _toml(config) -> str:
    lines = [f'title = "{config["title"]}"', f"seed = {config['seed']}"]
    for section in ("model", "data", "train", "record", "grid"):
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in config[section].items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- foreign


def test_folder_of_another_config_is_refused_naming_the_keys(tmp_path, reference, capsys):
    runs, ref = reference
    out = tmp_path / "out"
    other = {**TINY, "train": {"steps": 2, "lr": 0.05}, "grid": {"seed": [0, 1]}}
    sweep(other, out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError) as err:
        sweep(TINY, out, progress=False)
    msg = str(err.value)
    assert "2 run file(s) of a different config" in msg and "run-seed=0.nc" in msg
    assert "train.lr (folder: 0.05, this config: (absent))" in msg and "overwrite=True" in msg
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched

    toml = tmp_path / "tiny.toml"
    toml.write_text(_toml(TINY))
    assert main(["sweep", str(toml), "--out", str(out), "--no-progress"]) == 2
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1 and "train.lr" in err_text and "--overwrite" in err_text
    assert main(["sweep", str(toml), "--out", str(out), "--no-progress", "--overwrite"]) == 0
    xr.testing.assert_identical(_strip(cube.open(out / "cube.nc")), _strip(ref))
    for name in NAMES:
        xr.testing.assert_identical(_strip(cube.open(out / name)), _strip(runs[name]))


def test_folder_whose_cube_a_disjoint_grid_would_replace_is_refused(tmp_path, reference):
    runs, ref = reference
    out = tmp_path / "out"
    sweep({**TINY, "grid": {"seed": [0, 1]}}, out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError) as err:  # same config, disjoint seeds: its cube.nc would lose seeds 0 and 1
        sweep({**TINY, "grid": {"seed": [4, 5]}}, out, progress=False)
    msg = str(err.value)
    assert "cube.nc combining 2 run(s) this config's grid leaves out (run-seed=0.nc, run-seed=1.nc" in msg
    assert '"seed": [0, 1]' in msg and "overwrite=True" in msg
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched
    with pytest.raises(ValueError, match=r"cube.nc of a different config; differing keys: title \(cube.nc"):
        sweep({**TINY, "title": "another", "grid": {"seed": [4, 5]}}, out, progress=False)
    # a larger grid of the same config only adds runs: accepted, and equals the full sweep
    xr.testing.assert_identical(_strip(sweep(TINY, out, progress=False)), _strip(ref))


def test_ctrl_c_on_dask_stops_after_the_runs_in_progress(tmp_path, reference, jax_cache):
    """Ctrl-C during a dask sweep: the run in progress finishes, the queued ones are
    cancelled, SweepInterrupted says how to resume, and the resumed sweep equals the
    uninterrupted one. The sweep runs in a subprocess (one in-process worker thread there),
    and SIGINT goes to that process only, never to this test's own (a pytest worker that
    took a SIGINT crashed while it formatted a failure report). The second run is held
    until the sweep has seen the signal and asked which runs are executing, so the count of
    finished runs does not depend on timing."""
    runs, ref = reference
    out = tmp_path / "out"
    proc = _driver(tmp_path, out, "dask-interrupted", _env(jax_cache))
    try:
        assert _wait(lambda: Path(f"{out}.in-run-2").exists(), "the second run", proc), proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "stopping after the current run" in err and "waiting for the 1 run(s) in progress" in err, err
    assert "sweep interrupted: 2 of 6 runs finished" in err and "to resume" in err, err
    log = (tmp_path / "runs.log").read_text().split("\n")[:-1]
    assert len(log) == 2, log  # the queued runs never started
    assert len(list(out.glob("run-*.nc"))) == 2 and not (out / "cube.nc").exists()
    assert not list(out.glob(".*.lock"))
    xr.testing.assert_identical(_strip(sweep(TINY, out, progress=False)), _strip(ref))


def test_out_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="out: .* is a file; expected a folder"):
        sweep(TINY, path, progress=False)
    with pytest.raises(TypeError, match="overwrite must be True or False"):
        sweep(TINY, tmp_path / "o", overwrite="yes")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- locks


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, reference, capsys):
    runs, ref = reference
    out = tmp_path / "out"
    out.mkdir()
    lock = out / f".{NAMES[2]}.lock"
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "token": "dead"}))
    ds = sweep(TINY, out, progress=False)
    xr.testing.assert_identical(_strip(ds), _strip(ref))
    xr.testing.assert_identical(_strip(cube.open(out / NAMES[2])), _strip(runs[NAMES[2]]))
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert "another sweep" not in capsys.readouterr().err


def test_locks_of_other_hosts_go_stale_by_age_only(tmp_path):
    target = tmp_path / "run.nc"
    lock = _RunLocks.path(target)
    locks = _RunLocks()
    # another host, pid 1: alive or not, we cannot tell; fresh means held
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere.invalid", "token": "x"}))
    info = locks.acquire(target)
    assert info is not None and info["host"] == "elsewhere.invalid"
    old = time.time() - 2 * 600.0
    os.utime(lock, (old, old))  # no heartbeat for 20 minutes: stale
    assert locks.acquire(target) is None
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    # ours now: a second acquirer (same process, another sweep) is refused, we release
    assert _RunLocks().acquire(target) is not None
    locks.close()
    assert not lock.exists()


def test_two_processes_on_one_folder_share_the_runs(tmp_path, reference, jax_cache):
    """Two sweep processes on one folder: the first holds its first run until the second
    has seen it held; each run runs exactly once, both end with the uninterrupted cube."""
    runs, ref = reference
    out = tmp_path / "out"
    env = _env(jax_cache)
    first = _driver(tmp_path, out, "first", env)
    try:
        assert _wait(lambda: (tmp_path / "runs.log").exists(), "the first sweep's first run", first), (
            first.communicate()
        )
        second = _driver(tmp_path, out, "second", env)
        try:
            out2, err2 = second.communicate(timeout=240)
        finally:
            if second.poll() is None:
                second.kill()
        out1, err1 = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    assert "done" in out1 and "done" in out2
    assert "is being run by another sweep" in err2 and "waiting for" in err2, err2
    log = (tmp_path / "runs.log").read_text().split("\n")[:-1]
    ran = sorted(line.split()[1] for line in log)
    assert ran == sorted(NAMES), log  # every run exactly once, across both processes
    assert {line.split()[0] for line in log} == {"first", "second"}
    xr.testing.assert_identical(_strip(cube.open(out / "cube.nc")), _strip(ref))
    for name in NAMES:
        xr.testing.assert_identical(_strip(cube.open(out / name)), _strip(runs[name]))
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_stops_after_the_current_run_and_says_how_to_resume(tmp_path, reference, jax_cache):
    runs, ref = reference
    out = tmp_path / "out"
    _config_file(tmp_path).with_suffix(".toml").write_text(_toml(TINY))
    proc = _driver(tmp_path, out, "interrupted", _env(jax_cache))
    try:
        assert _wait(lambda: Path(f"{out}.in-run-2").exists(), "the second run", proc), proc.communicate()
        proc.send_signal(signal.SIGINT)
        Path(f"{out}.sigint-sent").touch()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "stopping after the current run" in err
    assert "sweep interrupted: 2 of 6 runs finished" in err and "to resume" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in out.glob("run-*.nc")) == sorted(NAMES[:2])
    assert not (out / "cube.nc").exists()
    ds = sweep(TINY, out, progress=False)  # resume
    xr.testing.assert_identical(_strip(ds), _strip(ref))


# ---------------------------------------------------------------------------- SIGKILL


def _files_ok(out: Path, runs, ref) -> int:
    """Every file in ``out`` (temp files too) that cube.open accepts holds complete,
    correct values: a run file equals the reference run, cube.nc the reference cube.
    Returns how many files cube.open refused (partial temp files)."""
    refused = 0
    for path in out.iterdir() if out.exists() else ():
        if path.name.endswith(".lock") or ".lock." in path.name:
            continue
        try:
            ds = cube.open(path)
        except ValueError:
            refused += 1
            continue
        name = path.name if not path.name.startswith(".") else path.name[1:].split(".nc.")[0] + ".nc"
        expected = ref if name == "cube.nc" else runs[name]
        xr.testing.assert_identical(_strip(ds), _strip(expected))
    return refused


def test_sigkill_at_many_moments_then_resume_gives_the_uninterrupted_results(tmp_path, reference, jax_cache):
    """SIGKILL the CLI sweep at 6 moments (starting up, while compiling its first run, as
    soon as a run's temp file appears, after 2 and 4 runs, while combining), each process
    resuming the last; at least 5 must land (on a loaded machine a sweep may finish before
    a late kill does)."""
    runs, ref = reference
    out = tmp_path / "out"
    toml = tmp_path / "tiny.toml"
    toml.write_text(_toml(TINY))
    env = _env(jax_cache)

    def n_runs() -> int:
        return sum((out / n).exists() for n in NAMES)

    def temp_file() -> bool:
        return out.exists() and any(p.name.endswith(".tmp") for p in out.iterdir())

    moments = [
        ("starting up", lambda: True),
        ("compiling the first run", lambda: n_runs() == 0 and (out / f".{NAMES[0]}.lock").exists()),
        ("a run file being written", lambda: temp_file() or n_runs() >= 1),
        ("after 2 runs", lambda: n_runs() >= 2),
        ("after 4 runs", lambda: n_runs() >= 4),
        ("combining", lambda: n_runs() == len(NAMES) or (out / "cube.nc").exists()),
    ]
    kills = []
    for label, cond in moments:
        before = n_runs()
        proc = subprocess.Popen(
            [sys.executable, "-m", "ntkbench.cli", "sweep", str(toml), "--out", str(out), "--no-progress"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            hit = _wait(cond, label, proc)
            if hit:
                proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        if proc.returncode != -signal.SIGKILL:  # it finished before the kill landed (a loaded machine)
            assert proc.returncode == 0, (label, err)
        kills.append((label, before, n_runs(), temp_file(), proc.returncode))
        _files_ok(out, runs, ref)
    assert sum(rc == -signal.SIGKILL for *_, rc in kills) >= 5, kills
    assert kills[1][2] == 0  # killed before any run finished

    res = subprocess.run(
        [sys.executable, "-m", "ntkbench.cli", "sweep", str(toml), "--out", str(out), "--no-progress"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    _files_ok(out, runs, ref)
    xr.testing.assert_identical(_strip(cube.open(out / "cube.nc")), _strip(ref))
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------------------- numerical faults


def test_entropy_of_an_all_zero_spectrum_is_nan_with_a_warning():
    import jax
    import jax.numpy as jnp

    import ntkbench as nb

    for measure in (nb.entropy, nb.effective_rank, lambda lam: nb.entropy(lam, normalize=True)):
        with pytest.warns(RuntimeWarning, match="all zero .* undefined"):
            assert bool(jnp.isnan(measure(jnp.zeros(5))))
    with pytest.warns(RuntimeWarning, match="all zero"):  # only round-off negatives: still undefined
        assert bool(jnp.isnan(nb.entropy(jnp.array([0.0, -1e-30, -1e-31]))))
    with pytest.warns(RuntimeWarning, match="all zero"):  # batched: only the dead row is NaN
        S = nb.entropy(jnp.array([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
    assert bool(jnp.isnan(S[0])) and float(S[1]) == pytest.approx(np.log(2.0))
    with pytest.warns(RuntimeWarning, match="magnitude_entropy"):
        assert bool(jnp.isnan(nb.magnitude_entropy(jnp.zeros((4, 4)))))
    assert bool(jnp.isnan(jax.jit(nb.entropy)(jnp.zeros(3))))  # traced: NaN, no warning possible
    with pytest.raises(ValueError, match="NaN or Inf"):
        nb.entropy(jnp.array([1.0, jnp.nan]))


def test_round_off_negatives_never_make_a_measure_nan():
    """A rank-3 kernel of 12 points in float32: eigvalsh gives tiny negative eigenvalues.
    Every spectral measure stays finite and matches float64 on the exact spectrum."""
    import jax.numpy as jnp

    import ntkbench as nb

    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3))
    K64 = X @ X.T
    K32 = jnp.asarray(K64, dtype=jnp.float32)
    lam = nb.spectrum(K32)
    assert float(lam.min()) < 0  # the round-off this test is about
    exact = np.clip(np.linalg.eigvalsh(K64), 0, None)
    p = exact[exact > 1e-9] / exact.sum()
    S_exact = float(-(p * np.log(p)).sum())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for value in (
            nb.entropy(lam),
            nb.entropy(lam, normalize=True),
            nb.effective_rank(lam),
            nb.magnitude_entropy(K32.at[0, 0].set(-1e-7)),
            nb.kernel_alignment(K32, K32 + 1e-7),
            nb.relative_change(K32, K32),
            nb.trace(K32),
        ):
            assert bool(jnp.all(jnp.isfinite(value)))
    assert float(nb.entropy(lam)) == pytest.approx(S_exact, rel=1e-4)
    assert float(nb.effective_rank(lam)) == pytest.approx(np.exp(S_exact), rel=1e-4)


# ---------------------------------------------------------------------------- corrupted files


def test_corrupted_or_foreign_files_are_refused_naming_the_file(tmp_path, capsys):
    from ntkbench.testing import synthetic_cube

    ds = synthetic_cube(widths=(16, 64), seeds=(0,), steps=(0, 10), n_eigen=4)
    good = cube.save(ds, tmp_path / "good.nc")
    data = good.read_bytes()
    for frac in (0.1, 0.5, 0.9):  # truncated netCDF (a copy cut short)
        cut = tmp_path / f"cut-{frac}.nc"
        cut.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(ValueError, match=f"cut-{frac}.nc.*not a readable netCDF"):
            cube.open(cut)
    other = tmp_path / "other-program.nc"  # a valid netCDF file, not a cube
    xr.Dataset({"temperature": ("time", np.arange(3.0))}, attrs={"source": "a climate model"}).to_netcdf(other)
    with pytest.raises(ValueError, match="other-program.nc.*not an ntkbench cube"):
        cube.open(other)

    store = cube.save(ds, tmp_path / "run.zarr")  # every chunk written, even all-zero ones
    xr.testing.assert_identical(cube.open(store), cube.open(good))
    chunk = next(p for p in (store / "entropy").iterdir() if not p.name.startswith("."))
    chunk.unlink()  # Zarr would read the lost chunk as fill values: a wrong plot
    with pytest.raises(ValueError, match=r"run.zarr.*variable 'entropy' is missing 1 of its 1 chunk"):
        cube.open(store)
    assert main(["export", str(store), "--figure", "spectrum", "--format", "html", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run.zarr" in err and "missing 1 of its 1 chunk" in err


# ---------------------------------------------------------------------------- servers


def test_servers_listen_on_localhost_only():
    """``make lab``: JupyterLab on 127.0.0.1 with a token; ``--workers``: the dask
    scheduler and workers on 127.0.0.1."""
    pytest.importorskip("distributed")
    from dask.distributed import Client

    from ntkbench.sweep import local_cluster

    env = {**os.environ, "JUPYTER_TOKEN": "", "JUPYTER_PORT": "18888"}
    recipe = subprocess.run(["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    lab = recipe.stdout[recipe.stdout.find("token=") :]  # the lab recipe (after any stamp rebuild's)
    assert recipe.returncode == 0 and "jupyter lab" in lab, recipe.stdout + recipe.stderr
    assert "--ServerApp.ip=127.0.0.1" in lab and '--IdentityProvider.token="$token"' in lab
    assert "secrets.token_hex" in lab  # a random token when JUPYTER_TOKEN is unset or empty
    assert "0.0.0.0" not in lab and "--ServerApp.ip=*" not in lab

    with local_cluster(1) as cluster, Client(cluster) as client:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        workers = list(client.scheduler_info()["workers"])
        assert workers and all(w.startswith("tcp://127.0.0.1:") for w in workers), workers


# ---------------------------------------------------------------------------- divergence


def test_training_stops_at_the_first_non_finite_step_and_says_which():
    """lr = 1e6 on 16 digits: training stops at the first step whose parameters are
    non-finite (found here by a plain optax loop), records NaN from there on, and keeps
    the finite records before it."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    import ntkbench as nb
    from ntkbench.train import train

    data = nb.load("digits", 16, 8, seed=0)
    model = nb.MLP(64, 10, 4, 1, key=jax.random.key(0))
    opt = optax.sgd(1e6)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    targets = jax.nn.one_hot(data.y_train, 10)

    def loss(p):
        f = jax.vmap(eqx.combine(p, static))(jnp.asarray(data.x_train))
        return jnp.mean(0.5 * jnp.sum((f - targets) ** 2, axis=-1))

    # reference: a plain optax loop; the first step with non-finite parameters, and the
    # steps whose loss is non-finite (the loss overflows before the parameters do)
    state, params_bad, loss_bad = opt.init(params), None, set()
    for i in range(0, 21):
        if i > 0:
            updates, state = opt.update(jax.grad(loss)(params), state, params)
            params = optax.apply_updates(params, updates)
        if not all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(params)):
            params_bad = i
            break
        if not bool(jnp.isfinite(loss(params))):
            loss_bad.add(i)
    assert params_bad is not None and params_bad < 20

    for every in (5, 20):  # records every 5 steps: the loss is seen first; every 20: the parameters
        _, ds = train(
            model, data, optimizer=opt, steps=20, recorder=nb.Recorder(every=every, probe=8, measures=["loss", "trace"]),
            key=jax.random.key(1),
        )  # fmt: skip
        steps = ds["step"].values
        first = min([params_bad, *(int(s) for s in steps if s in loss_bad)])
        assert ds.attrs["diverged_step"] == first, (every, params_bad, loss_bad)
        at = steps[steps >= first][0]  # the first record at or after the divergence
        assert not np.isfinite(ds["loss"].values[steps == at]).any()
        assert np.isnan(ds["loss"].values[steps > at]).all() and np.isnan(ds["trace"].values[steps > at]).all()
        assert np.isfinite(ds["loss"].values[steps < first]).all()
    assert ds.attrs["diverged_step"] == params_bad  # every=20: found step by step between records
    _, calm = train(model, data, optimizer=optax.sgd(0.01), steps=5, key=jax.random.key(1))
    assert "diverged_step" not in calm.attrs


# ---------------------------------------------------------------------------- load


@pytest.mark.slow
def test_200_runs_on_two_workers_survive_a_killed_worker(tmp_path, reference):
    """200 runs on a LocalCluster of 2 workers; one worker is SIGKILLed after 40 run files
    exist (its nanny restarts it, the scheduler reruns its tasks): every run ends in the
    cube exactly once, and runs equal the in-process ones."""
    pytest.importorskip("distributed")
    import threading

    from dask.distributed import Client

    from ntkbench.sweep import local_cluster

    runs, _ = reference
    config = {**TINY, "grid": {"seed": list(range(200))}}
    out = tmp_path / "out"
    killed: dict = {}
    with local_cluster(2) as cluster, Client(cluster) as client:

        def kill_a_worker():
            deadline = time.monotonic() + 300
            while sum(1 for _ in out.glob("run-*.nc")) < 40 if out.exists() else True:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.005)  # a poll interval
            addr = next(iter(client.scheduler_info()["workers"]))
            pid = client.run(os.getpid, workers=[addr])[addr]
            os.kill(pid, signal.SIGKILL)
            killed["after"] = sum(1 for _ in out.glob("run-*.nc"))

        thread = threading.Thread(target=kill_a_worker, daemon=True)
        thread.start()
        ds = sweep(config, out, client=client, progress=False)
        thread.join(timeout=30)
    assert 40 <= killed.get("after", 0) < 200, killed  # the kill landed mid-sweep
    assert sorted(p.name for p in out.glob("run-*.nc")) == sorted(run_name({"seed": s}) for s in range(200))
    assert ds.sizes["seed"] == 200 and list(ds["seed"].values) == list(range(200))
    assert np.isfinite(ds["loss"].values).all() and np.isfinite(ds["entropy"].values).all()
    for name in NAMES:  # seeds 0..5: the same run configs as the reference sweep
        xr.testing.assert_identical(_strip(cube.open(out / name)), _strip(runs[name]))
