"""The ``ntkbench`` command: info, sweep (with SIGKILL + resume), reproduce, export."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import xarray as xr

from ntkbench import cube
from ntkbench.cli import main
from ntkbench.sweep import expand_grid, run_name, validate_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ntkbench.cli", *args]


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.toml")))
def test_examples_are_valid_configs(name):
    with open(EXAMPLES / name, "rb") as f:
        cfg = validate_config(tomllib.load(f))
    assert expand_grid(cfg)


def test_width_sweep_example_spans_16_to_1024():
    with open(EXAMPLES / "width_sweep.toml", "rb") as f:
        cfg = tomllib.load(f)
    widths = cfg["grid"]["width"]
    assert min(widths) == 16 and max(widths) == 1024 and len(cfg["grid"]["seed"]) >= 2


def test_info_runs_in_a_subprocess():
    res = subprocess.run(_cli("info"), capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    for name in ("ntkbench", "jax", "equinox", "xarray", "bokeh", "dask", "device"):
        assert name in res.stdout
    assert "cpu" in res.stdout.lower() or "gpu" in res.stdout.lower()


def test_bad_config_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text((EXAMPLES / "quick.toml").read_text().replace("lr = 0.1", "lr = -0.1"))
    assert main(["sweep", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "'train.lr'" in err and "positive number" in err
    assert not (tmp_path / "out").exists()
    broken = tmp_path / "broken.toml"
    broken.write_text("[model\nname = ")
    assert main(["sweep", str(broken), "--out", str(tmp_path / "out")]) == 2
    assert "TOML" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "missing.toml"), "--out", str(tmp_path)]) == 2


def test_workers_and_scheduler_are_exclusive(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "x.toml", "--out", "o", "--workers", "2", "--scheduler", "tcp://h:1"])
    with pytest.raises(SystemExit):
        main(["sweep", "x.toml", "--out", "o", "--workers", "0"])


def test_reproduce_unknown_paper_lists_known(capsys, monkeypatch):
    import ntkbench.papers as papers

    monkeypatch.setitem(papers.REGISTRY, "demo", __name__)  # a module without run()
    assert main(["reproduce", "no-such-paper", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "unknown paper 'no-such-paper'" in err and "demo" in err


def test_reproduce_calls_the_registered_module(tmp_path, monkeypatch):
    import types

    import ntkbench.papers as papers

    calls = []
    fake = types.ModuleType("fake_paper")
    fake.run = lambda out, quick, config, workers, scheduler: calls.append((out, quick, config, workers, scheduler))
    fake.CONFIGS = {"quick": {}, "power": {}}
    monkeypatch.setitem(papers.REGISTRY, "fake", fake)
    assert main(["reproduce", "fake", "--quick", "--out", str(tmp_path), "--workers", "3"]) == 0
    assert calls == [(str(tmp_path), True, None, 3, None)]
    assert main(["reproduce", "fake", "--config", "power", "--out", str(tmp_path)]) == 0
    assert calls[-1] == (str(tmp_path), False, "power", None, None)
    # a config the paper does not have, or both --quick and --config: one line naming it
    assert main(["reproduce", "fake", "--config", "huge", "--out", str(tmp_path)]) == 2
    assert main(["reproduce", "fake", "--quick", "--config", "power", "--out", str(tmp_path)]) == 2
    assert len(calls) == 2


def test_export(tmp_path, capsys):
    pytest.importorskip("bokeh")
    from ntkbench.testing import synthetic_cube

    path = cube.save(synthetic_cube(widths=(16, 64), seeds=(0,), steps=(0, 10), n_eigen=4), tmp_path / "c.nc")
    assert main(["export", str(path), "--figure", "nonsense", "--format", "html"]) == 2
    err = capsys.readouterr().err
    assert "unknown figure 'nonsense'" in err and "spectrum" in err
    out = tmp_path / "figs"
    assert main(["export", str(path), "--figure", "spectrum", "--format", "html", "--out", str(out)]) == 0
    (written,) = out.iterdir()
    assert written.suffix == ".html" and written.stat().st_size > 10_000


def test_sweep_killed_then_resumed_keeps_finished_files(tmp_path):
    """SIGKILL a sweep as soon as its first run file exists; the rerun finishes the rest
    and leaves the finished files untouched (same bytes, same mtime)."""
    config = EXAMPLES / "quick.toml"
    out = tmp_path / "out"
    with open(config, "rb") as f:
        names = [run_name(r["grid"]) for r in expand_grid(tomllib.load(f))]
    proc = subprocess.Popen(
        _cli("sweep", str(config), "--out", str(out), "--no-progress"),
        env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not any((out / n).exists() for n in names):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no run file appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done = {n: ((out / n).read_bytes(), (out / n).stat().st_mtime_ns) for n in names if (out / n).exists()}
    assert 1 <= len(done) < len(names), "the sweep was not interrupted"
    assert not (out / "cube.nc").exists()
    for n in done:
        cube.open(out / n)  # every file that exists is complete

    res = subprocess.run(
        _cli("sweep", str(config), "--out", str(out), "--no-progress"),
        env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    for n, (data, mtime) in done.items():
        assert (out / n).read_bytes() == data and (out / n).stat().st_mtime_ns == mtime
    ds = xr.open_dataset(out / "cube.nc")
    with ds:
        assert dict(ds.sizes)["width"] == 2 and dict(ds.sizes)["seed"] == 2
        assert not ds["entropy"].isnull().any()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # stale temp files removed
