"""Real browser: every notebook Run All in JupyterLab driven by headless Chromium.

For each notebook in notebooks/ (served from a temp copy, so the work tree is never
written): Run All, wait for the kernel to go idle, assert no error/stderr output, assert
the Bokeh plots rendered with non-blank pixels, press ArrowRight on the first ipywidgets
slider and assert a plot changed. Screenshots go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from pathlib import Path

import pytest

import _browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ARTIFACTS = ROOT / "test-artifacts"

# A missing browser stack fails the run (CI installs Debian's chromium and chromium-driver);
# NTKBENCH_SKIP_BROWSER=1 skips these tests on purpose, e.g. on a machine without Chromium.
SKIP = os.environ.get("NTKBENCH_SKIP_BROWSER") == "1"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(SKIP, reason="NTKBENCH_SKIP_BROWSER=1"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]


def test_browser_stack_is_installed():
    missing = _browser.have_browser_stack()
    assert missing is None, f"{missing} (or set NTKBENCH_SKIP_BROWSER=1 to skip the browser tests)"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    # a copy of notebooks/ (and data/, which notebooks open as ../data/...): runs, figures
    # and checkpoints land in tmp, never in the work tree
    root = tmp_path_factory.mktemp("lab-root")
    shutil.copytree(
        ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns("runs", "figures", ".ipynb_checkpoints")
    )
    if (ROOT / "data").is_dir():
        shutil.copytree(ROOT / "data", root / "data")
    _write_live_notebook(root / "live-test" / "live.ipynb")
    home = tmp_path_factory.mktemp("lab-home")
    token = secrets.token_hex(16)
    ARTIFACTS.mkdir(exist_ok=True)
    with _browser.jupyterlab(root, home, token, ARTIFACTS / "jupyterlab.log") as url:
        yield url, token, root


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=_browser.CHROMIUM, headless=True, args=_browser.CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


# A cell prompt once its cell was scheduled ([*]) or has run ([n]); before Run All it is empty.
STARTED = re.compile(r"\[(\*|\d+)\]")
RUN_ALL_ATTEMPTS = 3  # Run All is sent again (logged) when no cell started ...
RUN_ALL_STARTS_WITHIN = 5.0  # ... within this many seconds of the click


def _page_kernel_status(page) -> str | None:
    """The notebook toolbar's kernel status (``data-status``: "idle" once the page is
    connected to an idle kernel; "unknown", "connecting", "starting", "busy", ... before)."""
    indicator = page.locator(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator")
    return indicator.first.get_attribute("data-status") if indicator.count() == 1 else None


def _kernel_status(page, url: str, token: str, path: str) -> tuple[str | None, str | None]:
    """(the page's kernel status, the server's execution_state of this notebook's kernel)."""
    return _page_kernel_status(page), _browser.kernel_state(url, token, path)


def _wait_idle(page, url: str, token: str, path: str, timeout: float) -> None:
    """Kernel connected and idle (page and server) and no cell still queued/running."""
    prompts = page.locator(".jp-NotebookPanel .jp-InputArea-prompt")

    def probe():
        return (*_kernel_status(page, url, token, path), sum("*" in p for p in prompts.all_inner_texts()))

    try:
        _browser.wait_for(probe, lambda s: s == ("idle", "idle", 0), timeout, "kernel idle and no cell running")
    except TimeoutError as exc:
        raise AssertionError(f"notebook still busy: {exc} (page status, server state, cells running)") from exc


def _run_all(page, name: str) -> None:
    """Run > Run All Cells, then wait until a prompt turns to [*] or [n]; if none does within
    RUN_ALL_STARTS_WITHIN seconds (the command did not reach the kernel), send it again, at
    most RUN_ALL_ATTEMPTS times in all, each retry logged."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    prompts = page.locator(".jp-NotebookPanel .jp-InputArea-prompt")
    for attempt in range(1, RUN_ALL_ATTEMPTS + 1):
        try:
            page.get_by_role("menuitem", name="Run", exact=True).click(timeout=10_000)
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click(timeout=10_000)
        except PlaywrightTimeout as exc:  # e.g. the menu item still disabled
            page.keyboard.press("Escape")
            print(
                f"{name}: Run All attempt {attempt}/{RUN_ALL_ATTEMPTS}: menu click failed: {exc.message.splitlines()[0]}"
            )
            continue
        try:
            _browser.wait_for(
                prompts.all_inner_texts,
                lambda texts: any(STARTED.search(t) for t in texts),
                RUN_ALL_STARTS_WITHIN,
                "a cell prompt turns to [*] or [n]",
            )
        except TimeoutError as exc:
            print(f"{name}: Run All attempt {attempt}/{RUN_ALL_ATTEMPTS}: {exc}")
            continue
        if attempt > 1:
            print(f"{name}: Run All started on attempt {attempt}/{RUN_ALL_ATTEMPTS}")
        return
    raise AssertionError(f"{name}: no cell ran after {RUN_ALL_ATTEMPTS} Run All attempts: {prompts.all_inner_texts()}")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_in_browser(lab, browser, notebook):
    url, token, _ = lab
    name = notebook.stem
    path = f"notebooks/{notebook.name}"  # the session path, relative to the server root
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    page = context.new_page()
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    try:
        # A fresh workspace per notebook: the default one, saved on the server, would reopen
        # the earlier tests' notebooks beside this one, and their kernel status and prompts
        # then answer for it (how 02_collective once got Run All before its kernel existed).
        workspace = f"test-{name}-{secrets.token_hex(4)}"
        page.goto(f"{url}/lab/workspaces/{workspace}/tree/{path}?token={token}", wait_until="domcontentloaded")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        assert page.locator(".jp-NotebookPanel").count() == 1, f"{name}: expected exactly one open notebook"
        # Run All before the page is connected to the kernel clears the cells and runs none.
        _browser.wait_for(
            lambda: _kernel_status(page, url, token, path),
            lambda s: s == ("idle", "idle"),
            120,
            f"{name}: kernel connected and idle (page status, server state)",
        )

        t0 = time.monotonic()
        _run_all(page, name)
        _wait_idle(page, url, token, path, timeout=150)
        run_all = time.monotonic() - t0
        print(f"{name}: Run All took {run_all:.1f} s")
        (ARTIFACTS / f"{name}-run-all-seconds.txt").write_text(f"{run_all:.1f}\n")
        page.screenshot(path=str(ARTIFACTS / f"{name}-page.png"), full_page=True)

        stderr = page.locator('.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')
        errors = [stderr.nth(i).inner_text()[:500] for i in range(stderr.count())]
        assert not errors, f"{name}: error/stderr output in the page:\n" + "\n---\n".join(errors)
        prompts = page.locator(".jp-NotebookPanel .jp-InputArea-prompt").all_inner_texts()
        assert all("*" not in p for p in prompts), prompts
        assert any(p.strip() not in ("", "[ ]:") for p in prompts), f"{name}: no cell ran: {prompts}"

        canvases = page.locator(".bk-Canvas")
        n = canvases.count()
        assert n >= 1, f"{name}: no Bokeh plot rendered"
        before = []
        for i in range(n):
            png = canvases.nth(i).screenshot(path=str(ARTIFACTS / f"{name}-plot{i}-before.png"))
            assert _browser.pixel_std(png) > 5.0, f"{name}: Bokeh plot {i} is blank"
            before.append(png)

        sliders = page.locator(".widget-slider .noUi-handle")
        assert sliders.count() > 0, f"{name}: no ipywidgets slider in the page"
        handle = sliders.first
        handle.scroll_into_view_if_needed()
        handle.focus()
        handle.press("ArrowRight")
        changed = 0.0
        after = before
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and changed == 0.0:
            time.sleep(0.5)
            after = [canvases.nth(i).screenshot() for i in range(n)]
            changed = max(_browser.pixel_diff(a, b) for a, b in zip(before, after, strict=True))
        for i, png in enumerate(after):
            (ARTIFACTS / f"{name}-plot{i}-after.png").write_bytes(png)
        assert changed > 0.001, f"{name}: moving the slider did not change any plot"
        _wait_idle(page, url, token, path, timeout=30)
        assert stderr.count() == 0, f"{name}: the slider produced error output"
        bokeh_errors = [e for e in console_errors if "bokeh" in e.lower()]
        assert not bokeh_errors, f"{name}: BokehJS errors in the console: {bokeh_errors[:5]}"
        problems = _layout_at_window_sizes(page, name)
        assert not problems, f"{name}: clipped or overflowing at common window sizes:\n" + "\n".join(problems)
    finally:
        page.screenshot(path=str(ARTIFACTS / f"{name}-final.png"), full_page=True)
        context.close()
        _browser.shutdown_sessions(url, token, path)  # its kernel stops; the next notebook gets the CPUs


# Common laptop and desktop windows; the file browser (left sidebar) open and closed.
WINDOW_SIZES = [(1280, 800), (1440, 900), (1920, 1080)]


def _left_sidebar_open(page) -> bool:
    return bool(
        page.evaluate("() => { const s = document.querySelector('#jp-left-stack'); return !!s && s.offsetWidth > 0; }")
    )


def _set_left_sidebar(page, want_open: bool) -> None:
    """Open or close JupyterLab's left sidebar (the file browser) by clicking its tab, and
    wait until it has (re)laid out."""
    if _left_sidebar_open(page) == want_open:
        return
    page.locator('.jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id="filebrowser"]').first.click()
    _browser.wait_for(lambda: _left_sidebar_open(page), lambda v: v == want_open, 10, f"left sidebar open={want_open}")


def _layout_settled(page) -> None:
    """Two animation frames with the same notebook width: the resize has been laid out."""
    probe = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(document.querySelector('.jp-NotebookPanel').getBoundingClientRect().width))))"
    _browser.wait_for(
        lambda: (page.evaluate(probe), page.evaluate(probe)), lambda ab: ab[0] == ab[1], 10, "the layout to settle"
    )


def _layout_at_window_sizes(page, name: str) -> list[str]:
    """Resize the window to each of WINDOW_SIZES with the sidebar open and closed; return
    every layout problem (``_browser.layout_problems``) and keep a full-page screenshot of
    each as a test artifact."""
    problems = []
    for width, height in WINDOW_SIZES:
        for sidebar in (True, False):
            page.set_viewport_size({"width": width, "height": height})
            _set_left_sidebar(page, sidebar)
            _layout_settled(page)
            where = f"{width}x{height}, sidebar {'open' if sidebar else 'closed'}"
            problems += [f"{where}: {p}" for p in _browser.layout_problems(page)]
            tag = f"{width}x{height}-{'sidebar' if sidebar else 'nosidebar'}"
            page.screenshot(path=str(ARTIFACTS / f"{name}-layout-{tag}.png"), full_page=True)
    # the whole notebook at the smallest window with the sidebar open, a screen at a time
    page.set_viewport_size({"width": WINDOW_SIZES[0][0], "height": WINDOW_SIZES[0][1]})
    _set_left_sidebar(page, True)
    _layout_settled(page)
    scroller = ".jp-NotebookPanel .jp-WindowedPanel-outer"
    total, screen = page.evaluate(
        f"() => {{ const s = document.querySelector('{scroller}'); return [s.scrollHeight, s.clientHeight]; }}"
    )
    for i, top in enumerate(range(0, max(total, 1), max(screen - 40, 100))):
        page.evaluate(f"() => {{ document.querySelector('{scroller}').scrollTop = {top}; }}")
        _layout_settled(page)
        page.screenshot(path=str(ARTIFACTS / f"{name}-screen{i:02d}.png"))
    return problems


# A live run held at chosen recordings: the notebook wraps the sweep's progress writer so
# the run waits at its 2nd and 4th recordings until the test creates a gate file; the
# canvas is compared between the two holds, while the run is still in progress.
LIVE_SETUP = """import pathlib, threading
from bokeh.io import output_notebook
from bokeh.resources import INLINE
import ntkbench.sweep._live as sw_live  # where the sweep's runs look _live_writer up
from ntkbench.widgets import RunPanel

output_notebook(INLINE, hide_banner=True)  # BokehJS inline, as the notebooks load it

writer, count = sw_live._live_writer, [0]
def held(run, path):
    on_record = writer(run, path)
    def record(step, values):
        on_record(step, values)
        count[0] += 1
        if count[0] in (2, 4):
            gate = pathlib.Path(f"gate-{count[0]}")
            pathlib.Path(f"held-{count[0]}").touch()
            while not gate.exists():
                threading.Event().wait(0.05)
    return record
sw_live._live_writer = held
config = {
    "title": "live", "seed": 0, "model": {"name": "mlp", "width": 8, "depth": 1},
    "data": {"name": "digits", "n_train": 32, "n_test": 16},
    "train": {"optimizer": "sgd", "lr": 0.05, "steps": 8},
    "record": {"every": 1, "probe": 12, "measures": ["loss", "entropy", "trace", "eigenvalues"]},
    "grid": {"width": [8, 16]},
}
panel = RunPanel(config, out="runs/live", poll=0.1)
display(panel)
panel.start()
"""


def _write_live_notebook(path: Path) -> None:
    import nbformat

    path.parent.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(LIVE_SETUP)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def _changed(before: list, now: list) -> float:
    """The largest pixel change between two sets of canvas screenshots (0 if they differ in number)."""
    if len(before) != len(now):
        return 0.0
    return max((_browser.pixel_diff(a, b) for a, b in zip(before, now, strict=True)), default=0.0)


def _settled(pair: tuple) -> bool:
    """Two looks in a row at the canvases agree (the figures are drawn)."""
    first, second = pair
    return len(first) == len(second) and all(_browser.pixel_diff(a, b) == 0 for a, b in zip(first, second, strict=True))


def test_live_explorer_canvas_changes_while_a_run_is_in_progress(lab, browser):
    """RunPanel in JupyterLab: the Explorer appears at the run's first recordings and its
    canvas changes between two recordings of the same run, while the run is held in
    progress (the gates are files the test creates; no timing)."""
    url, token, root = lab
    name, path = "live", "live-test/live.ipynb"
    folder = root / "live-test"
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    page = context.new_page()
    try:
        page.goto(f"{url}/lab/workspaces/test-live-{secrets.token_hex(4)}/tree/{path}?token={token}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        _browser.wait_for(
            lambda: _kernel_status(page, url, token, path), lambda st: st == ("idle", "idle"), 120, "kernel idle"
        )
        _run_all(page, name)
        _browser.wait_for(lambda: (folder / "held-2").exists(), bool, 120, "the run held at its 2nd recording")
        canvases = page.locator(".bk-Canvas")
        _browser.wait_for(canvases.count, lambda n: n >= 2, 60, "the live explorer's figures")

        def shots():
            return [canvases.nth(i).screenshot() for i in range(canvases.count())]

        # the explorer has drawn the 2 recordings once two looks in a row agree
        before = _browser.wait_for(
            lambda: (shots(), shots()),
            _settled,
            60,
            "the explorer settled at the 2nd recording",
        )[1]
        (folder / "gate-2").touch()  # release: the run records twice more and holds again
        _browser.wait_for(lambda: (folder / "held-4").exists(), bool, 120, "the run held at its 4th recording")
        after = _browser.wait_for(
            shots,
            lambda now: _changed(before, now) > 0.001,
            60,
            "a canvas changes while the run is in progress",
        )
        for i, png in enumerate(after):
            (ARTIFACTS / f"live-plot{i}-held.png").write_bytes(png)
        assert not (folder / "runs" / "live" / "cube.nc").exists(), "the run must still be in progress"
    finally:
        (folder / "gate-2").touch()
        (folder / "gate-4").touch()
        page.screenshot(path=str(ARTIFACTS / "live-final.png"), full_page=True)
        context.close()
        _browser.shutdown_sessions(url, token, path)
