"""Watching training live (issue 17): a live sweep writes a progress file per run after
every recording; ``sweep.live_cube`` reads the sweep so far on its full grid; the
RunPanel's Explorer appears at the first recording and fills in place; Stop stops after
the current recording and Run resumes; ``ntkbench sweep --live`` shows the latest measures.

The tests hold a run at a chosen recording (a wrapped progress writer waits for an event
the test sets), so every partial state is observed deterministically, never by timing.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import xarray as xr

import ntkbench.sweep as sw
import ntkbench.sweep._live as sw_live
from ntkbench.cli import main
from ntkbench.widgets import RunPanel

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

CONFIG = {
    "title": "live",
    "seed": 0,
    "model": {"name": "mlp", "width": 4, "depth": 1},
    "data": {"name": "digits", "n_train": 16, "n_test": 8},
    "train": {"optimizer": "sgd", "lr": 0.05, "steps": 6},
    "record": {"every": 2, "probe": 8, "measures": ["loss", "entropy", "trace", "eigenvalues"]},
    "grid": {"width": [4, 8], "seed": [0, 1]},
}
STATUS = ["status", "diverged_step"]


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return sw.sweep(CONFIG, tmp_path_factory.mktemp("plain"), progress=False)


def _hold(monkeypatch, at: int):
    """Hold the first run after its ``at``-th recording until the returned event is set;
    ``reached`` is set when it got there."""
    reached, go = threading.Event(), threading.Event()
    writer = sw_live._live_writer
    count = [0]

    def held(run, path):
        on_record = writer(run, path)

        def record(step, values):
            on_record(step, values)
            count[0] += 1
            if count[0] == at:
                reached.set()
                assert go.wait(120), "the test never released the run"

        return record

    monkeypatch.setattr(sw_live, "_live_writer", held)  # where the runs look it up
    return reached, go


def test_live_sweep_equals_a_plain_sweep_and_live_cube_grows(tmp_path, plain, monkeypatch):
    reached, go = _hold(monkeypatch, at=2)
    out = tmp_path / "live"
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(ds=sw.sweep(CONFIG, out, progress=False, live=True)))
    thread.start()
    assert reached.wait(120)
    partial = sw.live_cube(CONFIG, out)  # the first run's first 2 recordings, the rest NaN
    assert partial is not None and dict(partial.sizes) == {**plain.drop_vars(STATUS).sizes}
    finite = np.isfinite(partial["entropy"].values)
    assert finite.sum() == 2 and finite[0, 0, :2].all()
    np.testing.assert_allclose(partial["entropy"].values[0, 0, :2], plain["entropy"].values[0, 0, :2], rtol=1e-6)
    assert [p.name for p in out.glob(".*.live.json")] == [".run-width=4-seed=0.nc.live.json"]
    go.set()
    thread.join(240)
    xr.testing.assert_equal(result["ds"].drop_vars(STATUS), plain.drop_vars(STATUS))
    assert not list(out.glob(".*.live.json"))  # progress files go when their run lands
    whole = sw.live_cube(CONFIG, out)
    np.testing.assert_allclose(whole["eigenvalues"].values, plain["eigenvalues"].values, rtol=1e-6)


def test_runpanel_explorer_fills_in_place_then_stop_and_resume(tmp_path, plain, monkeypatch):
    reached, go = _hold(monkeypatch, at=3)
    out = tmp_path / "panel"
    panel = RunPanel(CONFIG, out=out, poll=0.02)
    panel.start()
    assert reached.wait(120)

    def shown_points() -> int:
        ex = panel.explorer
        return 0 if ex is None else len(ex.sources["measure"]["points"].data["y"])

    deadline = time.monotonic() + 60
    while shown_points() < 3:  # the explorer appears and shows the 3 recordings of width 4, seed 0
        assert time.monotonic() < deadline, "the live explorer never showed the recordings"
        time.sleep(0.02)  # a poll interval, not a wait for time to pass
    explorer = panel.explorer
    assert explorer is not None and shown_points() == 3  # mean over the one seed recorded so far
    assert not panel.stop_button.disabled
    panel.stop()  # stop after the current recording
    go.set()
    panel._thread.join(120)  # pyright: ignore[reportOptionalMemberAccess]
    assert "sweep stopped: 0 of 4 runs finished" in panel.status.value and panel.error is None
    assert not list(out.glob("run-*.nc")) and not (out / sw.STOP_FILE).exists()

    cube = panel.run(timeout=240)  # Run again: resumes and finishes
    xr.testing.assert_equal(cube.drop_vars(STATUS), plain.drop_vars(STATUS))
    assert panel.updates >= 1 and panel.explorer is not None
    final = panel.explorer.sources["measure"]["lines"].data["ys"]
    ref = plain["entropy"].mean("seed").values
    for k in range(2):
        np.testing.assert_allclose(final[k], ref[k], rtol=1e-6)


def test_cli_live_shows_the_latest_measures(tmp_path, capsys):
    toml = tmp_path / "live.toml"
    toml.write_text(
        'title = "live"\nseed = 0\n[model]\nname = "mlp"\nwidth = 4\ndepth = 1\n[data]\nname = "digits"\n'
        'n_train = 16\nn_test = 8\n[train]\nsteps = 4\n[record]\nevery = 1\nprobe = 8\nmeasures = ["loss", "entropy"]\n'
    )
    state = sw._Progress(bar=None, out=tmp_path, total=1, done=0, live=True)
    (tmp_path / ".run-seed=3.nc.live.json").write_text(
        '{"point": {"seed": 3}, "steps": [0, 5], "values": {"loss": [1.5, 0.25], "entropy": [2.0, 1.75]}}'
    )
    live = sw._LiveStatus(state, tmp_path, every=60)
    assert live.line() == "seed=3 step 5: loss 0.25 entropy 1.75"
    live.close()
    assert main(["sweep", str(toml), "--out", str(tmp_path / "o"), "--live"]) == 0
    assert "cube:" in capsys.readouterr().out


def test_live_sweep_on_dask_writes_progress_and_stops(tmp_path, plain, monkeypatch):
    """On dask (in-process worker threads, so the test can hold a run) the runs write the
    same progress files, live_cube reads them, Stop cancels the queued runs and stops the
    one in progress after its recording, and the rerun gives the plain sweep's cube."""
    import distributed

    reached, go = _hold(monkeypatch, at=2)
    out = tmp_path / "dask"
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, **sw.NO_DASHBOARD) as lc,
        distributed.Client(lc) as client,
    ):
        error: dict = {}

        def run():
            try:
                sw.sweep(CONFIG, out, client=client, progress=False, live=True)
            except sw.SweepInterrupted as exc:
                error["stopped"] = str(exc)

        thread = threading.Thread(target=run)
        thread.start()
        assert reached.wait(120)
        partial = sw.live_cube(CONFIG, out)
        assert partial is not None and int(np.isfinite(partial["entropy"].values).sum()) == 2
        sw.request_stop(out)
        go.set()
        thread.join(240)
        assert "sweep stopped: 0 of 4 runs finished" in error["stopped"]
        assert not list(out.glob("run-*.nc")) and not list(out.glob(".*.live.json"))
        again = sw.sweep(CONFIG, out, client=client, progress=False, live=True)
    xr.testing.assert_equal(again.drop_vars(STATUS), plain.drop_vars(STATUS))
