"""A quick sweep launched from a notebook, with a progress bar and the result opened in an explorer."""

from __future__ import annotations

import html
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ntkbench.widgets._common import Shown, flow, join_run
from ntkbench.widgets._explorer import Explorer


class RunPanel(Shown):
    """Launch a quick sweep from a notebook, with a progress bar; open the result in an
    :class:`Explorer` when it is done.

    Runs :func:`ntkbench.sweep.sweep` on ``config`` (a sweep config dict, see
    ``ntkbench.sweep``) in a background thread, in-process, writing run files under
    ``out``; the progress bar counts finished run files, so a rerun with the same ``out``
    resumes. ``runner`` replaces the sweep (``runner(config, out) -> cube``), e.g. for
    tests. With ``explore`` (default) an :class:`Explorer` on the result appears under
    the progress bar. A folder holding runs of another config is refused (the error shows
    in the panel) unless ``overwrite`` (then those runs are recomputed; see
    :func:`ntkbench.sweep.sweep`).

    Live (default, with ``explore``): the sweep runs with ``live=True`` and the Explorer
    appears at the first recording, on the sweep's full grid and record schedule, then
    fills in place every ``poll`` seconds as runs record (:func:`ntkbench.sweep.live_cube`);
    Stop asks every run in progress to stop after its current recording (finished runs
    stay; Run again resumes).

    Attributes
    ----------
    button, stop_button, progress, status, output : the widgets; ``result`` (the cube) and
    ``explorer`` (from the first recording when live, else once done); ``error`` (the
    exception) if the run failed; ``updates``: how many live updates the Explorer got.

    Example
    -------
    Not run as a doctest (a notebook widget that trains; tests/test_widgets.py and
    tests/test_live.py run it):

    >>> panel = RunPanel(config, out="runs/quick")   # doctest: +SKIP
    >>> panel                                        # click "Run" (or panel.run())  # doctest: +SKIP
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        out: str | Path = "runs/quick",
        *,
        runner: Callable[[Mapping[str, Any], Path], Any] | None = None,
        explore: bool = True,
        poll: float = 0.2,
        overwrite: bool = False,
        live: bool = True,
    ):
        import ipywidgets as w

        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict (a sweep config), got {type(config).__name__}")
        self.config = dict(config)
        self.out = Path(out)
        self.poll = float(poll)
        self.explore = bool(explore)
        self.overwrite = bool(overwrite)
        self.live = bool(live) and self.explore and runner is None
        self.updates = 0
        self._runner = runner
        self._files = self._run_files()
        n = max(len(self._files), 1)
        title = str(self.config.get("title", "")) or "quick run"
        self.button = w.Button(description="Run", icon="play", button_style="success")
        self.progress = w.IntProgress(value=0, min=0, max=n, description="runs", bar_style="info")
        self.status = w.HTML(
            value=f"{html.escape(title)}: {n} run{'s' if n != 1 else ''} → <code>{html.escape(str(self.out))}</code>"
        )
        self.output = w.Output()
        self.result: Any = None
        self.explorer: Explorer | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._running = False
        self.stop_button = w.Button(
            description="Stop", icon="stop", disabled=True, tooltip="stop after the current recording"
        )
        self.button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.widget = w.VBox([flow([self.button, self.stop_button, self.progress]), self.status, self.output])

    def _run_files(self) -> list[Path]:
        if self._runner is not None:
            return []
        from ntkbench.sweep import expand_grid, run_name

        return [self.out / run_name(r["grid"]) for r in expand_grid(self.config)]

    def _count(self) -> int:
        return sum(p.exists() for p in self._files)

    def _work(self) -> None:
        t0 = time.perf_counter()
        try:
            if self._runner is not None:
                self.result = self._runner(self.config, self.out)
            else:
                from ntkbench.sweep import sweep

                self.result = sweep(self.config, self.out, progress=False, overwrite=self.overwrite, live=self.live)
        except BaseException as exc:  # noqa: BLE001 - reported in the panel
            from ntkbench.sweep import SweepInterrupted

            with self._lock:
                self._running = False
            if isinstance(exc, SweepInterrupted):  # Stop: not a failure
                self._show_live()
                self.progress.bar_style = "warning"
                self.status.value = f"{html.escape(str(exc))} (click Run)"
                return
            self.error = exc
            self.progress.bar_style = "danger"
            self.status.value = f"<span style='color:#b00020'>run failed: {html.escape(repr(exc))}</span>"
            self.output.append_stderr("".join(traceback.format_exception(exc)))
            return
        finally:
            self.button.disabled = False
            self.stop_button.disabled = True
        with self._lock:
            self._running = False
        self.progress.value = self.progress.max
        self.progress.bar_style = "success"
        self.status.value = f"done in {time.perf_counter() - t0:.1f} s → <code>{html.escape(str(self.out))}</code>"
        if self.explore:
            if self.explorer is not None and dict(self.explorer.ds.sizes) == dict(self.result.sizes):
                self.explorer.set_data(self.result)  # the live explorer, in place
            else:
                self._show_explorer(self.result)

    def _show_explorer(self, ds: Any) -> None:
        self.explorer = Explorer(ds)
        # set the Output's outputs directly: works from this thread, unlike `with output:`
        bundle = self.explorer.widget._repr_mimebundle_()
        self.output.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)

    def _show_live(self) -> None:
        """Show the sweep so far: the Explorer at the first recording, then in place."""
        from ntkbench.sweep import live_cube

        ds = live_cube(self.config, self.out)
        if ds is None:
            return
        with self._lock:
            if self.explorer is None:
                self._show_explorer(ds)
            elif dict(self.explorer.ds.sizes) == dict(ds.sizes):
                self.explorer.set_data(ds)
            self.updates += 1

    def stop(self) -> None:
        """Ask the run to stop after the current recording of each run in progress (the
        Stop button); finished runs stay and Run resumes."""
        from ntkbench.sweep import request_stop

        if self._thread is not None and self._thread.is_alive() and self.live:
            request_stop(self.out)
            self.status.value = "stopping after the current recording …"

    def start(self) -> None:
        """Start the run in a background thread (the button's action); returns at once."""
        if self._thread is not None and self._thread.is_alive():
            return
        self.error = None
        self.button.disabled = True
        self.progress.value = self._count()
        self.progress.bar_style = "info"
        self.status.value = "running …"
        self.output.outputs = ()
        self.explorer = None
        self.stop_button.disabled = not self.live
        self._running = True
        self._thread = threading.Thread(target=self._work, name="ntkbench-runpanel", daemon=True)
        self._thread.start()
        threading.Thread(target=self._watch, name="ntkbench-runpanel-progress", daemon=True).start()

    def _watch(self) -> None:
        while self._thread is not None and self._thread.is_alive():
            n = min(self._count(), self.progress.max)
            with self._lock:
                if not self._running:
                    return
                self.progress.value = n
            if self.live:
                try:
                    self._show_live()
                except Exception as exc:  # noqa: BLE001 - a live view error must not stop the run
                    self.status.value = f"running … (live view: {html.escape(repr(exc))})"
            time.sleep(self.poll)

    def run(self, timeout: float | None = None) -> Any:
        """Start (if needed) and wait for the run; return the cube or raise its error."""
        if self._thread is None or (not self._thread.is_alive() and self.result is None and self.error is None):
            self.start()
        return join_run(self, timeout)
