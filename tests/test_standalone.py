"""Standalone interactive HTML (ntkbench.standalone): the explorer and paper figures in a
plain browser, from a file:// page, with no Jupyter server and no Python kernel.

Headless Chromium (Playwright) loads the written file; every wait is on a condition (a
model value, a title, the canvas pixels) with an explicit timeout, never a sleep. The data
shown after each control change is compared with what the live ``Explorer`` shows for the
same settings, read from the page's Bokeh document by source name.
"""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import _browser
from ntkbench import standalone
from ntkbench.testing import synthetic_cube

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]
SKIP = os.environ.get("NTKBENCH_SKIP_BROWSER") == "1"
browser_only = pytest.mark.skipif(SKIP, reason="NTKBENCH_SKIP_BROWSER=1")
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def ds():
    # the quickstart sweep's shape: 3 widths × 2 seeds, 11 recordings, probe of 48
    return synthetic_cube(widths=(32, 128, 512), seeds=(0, 1), steps=tuple(range(0, 151, 15)), n_eigen=48)


def test_explorer_html_is_self_contained_and_small(ds, tmp_path):
    path = standalone.explorer_html(ds, tmp_path / "explorer")
    assert path.name == "explorer.html"
    text = path.read_text()
    assert re.findall(r"<script[^>]*\ssrc=", text) == [] and re.findall(r"<link[^>]*\shref=", text) == []
    assert "cdn.bokeh.org" not in text
    assert path.stat().st_size < 3_000_000


def _same(a, b, where="") -> None:
    """``a`` (Python columns) equals ``b`` (read from the page): numbers to 1e-9 relative,
    NaN equal to NaN, strings exactly, lists element by element."""
    if isinstance(a, dict):
        assert set(a) <= set(b), f"{where}: columns {sorted(a)} vs {sorted(b)}"
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple, np.ndarray)):
        a, b = list(a), list(b)
        assert len(a) == len(b), f"{where}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, str):
        assert a == b, f"{where}: {a!r} vs {b!r}"
    else:
        x, y = float(a), float(b)
        if math.isnan(x):
            assert y is None or math.isnan(y), f"{where}: NaN vs {y!r}"
        else:
            assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {x!r} vs {y!r}"


_READ = """(name) => {
  const m = Bokeh.documents[0].get_model_by_name(name);
  const plain = (v) => (Array.isArray(v) || ArrayBuffer.isView(v)) ? Array.from(v, plain) : v;
  return Object.fromEntries(Object.entries(m.data).map(([k, v]) => [k, plain(v)]));
}"""
_VALUE = "([name, attr]) => Bokeh.documents[0].get_model_by_name(name)[attr]"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=_browser.CHROMIUM, headless=True, args=_browser.CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _open(browser, path: Path):
    page = browser.new_page(viewport={"width": 1150, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.goto(path.resolve().as_uri())
    page.wait_for_function(
        "() => window.Bokeh && Bokeh.documents.length > 0 && Bokeh.documents[0].is_idle", timeout=TIMEOUT_MS
    )
    page.locator(".bk-Canvas").first.wait_for(timeout=TIMEOUT_MS)
    return page, errors


def _changed(page, before: bytes) -> bytes:
    """Wait until the page's pixels differ from ``before``; return the new screenshot."""
    shot = _browser.wait_for(
        lambda: page.screenshot(), lambda s: _browser.pixel_diff(before, s) > 0.0005, 10, "canvas pixels change"
    )
    return shot


_READ_ALL = """(names) => {
  const doc = Bokeh.documents[0];
  const plain = (v) => (Array.isArray(v) || ArrayBuffer.isView(v)) ? Array.from(v, plain) : v;
  const out = {};
  for (const name of names) {
    const m = doc.get_model_by_name(name);
    out[name] = m.data !== undefined ? Object.fromEntries(Object.entries(m.data).map(([k, v]) => [k, plain(v)]))
                                     : m.title.text;
  }
  return out;
}"""


def _check(page, ex) -> None:
    """Every source and title of the page equals the live explorer's (one read of the page)."""
    names = [f"{fig}:{s}" for fig, sources in ex.sources.items() for s in sources] + [f"figure:{f}" for f in ex.figures]
    shown = page.evaluate(_READ_ALL, names)
    for fig, sources in ex.sources.items():
        for name, src in sources.items():
            _same(dict(src.data), shown[f"{fig}:{name}"], f"{fig}:{name}")
        assert shown[f"figure:{fig}"] == ex.figures[fig].title.text


@browser_only
def test_explorer_controls_work_in_a_plain_browser(ds, browser, tmp_path):
    from ntkbench.widgets import Explorer

    path = standalone.explorer_html(ds, tmp_path / "explorer.html")
    page, errors = _open(browser, path)
    ex = Explorer(ds)
    _check(page, ex)  # the starting state
    shot = page.screenshot()

    # step slider: focus its handle and press the right arrow key
    page.locator(".noUi-handle").first.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('step').value === 1", timeout=TIMEOUT_MS)
    shot = _changed(page, shot)
    ex.step.value = 15
    _check(page, ex)

    # measure selector
    page.locator("select").nth(0).select_option("trace")
    page.wait_for_function(
        "() => Bokeh.documents[0].get_model_by_name('figure:measure').title.text.includes('trace')",
        timeout=TIMEOUT_MS,
    )
    shot = _changed(page, shot)
    ex.measure.value = "trace"
    _check(page, ex)

    # seed aggregation, width selection, log/linear
    page.locator("select").nth(1).select_option(label="seed 1")
    page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('seed').value === '1'", timeout=TIMEOUT_MS)
    ex.seed.value = 1
    shot = _changed(page, shot)
    _check(page, ex)
    page.locator("input[type=checkbox]").nth(0).click()
    page.wait_for_function(
        "() => Bokeh.documents[0].get_model_by_name('widths').active.length === 2", timeout=TIMEOUT_MS
    )
    ex.widths.value = (128, 512)
    shot = _changed(page, shot)
    _check(page, ex)
    page.get_by_text("linear", exact=True).first.click()  # the spectrum's switch
    page.wait_for_function(
        "() => Bokeh.documents[0].get_model_by_name('spectrum_scale').active === 1", timeout=TIMEOUT_MS
    )
    ex.spectrum_scale.value = "linear"
    shot = _changed(page, shot)
    _check(page, ex)
    assert page.evaluate("() => Bokeh.documents[0].get_model_by_name('figure:spectrum').x_scale.type") == "LinearScale"

    # play runs the step slider forward by itself; a second click pauses it
    page.get_by_text("▶ play").click()
    page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('step').value >= 3", timeout=TIMEOUT_MS)
    # (by role, whatever its label: should play have reached the end and stopped by itself, a
    # click restarts it, and the wait below then lasts until it stops again at the end)
    page.get_by_role("button", name=re.compile("pause|play")).click()
    page.wait_for_function(
        "() => Bokeh.documents[0].get_model_by_name('play').label.includes('play')", timeout=TIMEOUT_MS
    )
    ex.step.value = ds["step"].values[page.evaluate(_VALUE, ["step", "value"])]
    _check(page, ex)
    assert errors == []
    page.close()


@browser_only
def test_paper_figure_controls_work_in_a_plain_browser(browser, tmp_path):
    """collective's F-b1 offers its step slider (with "none": no step marker, the default),
    activation toggle and width dropdown. Moving the slider by keyboard changes the pixels,
    then switching the toggle and the dropdown shows what the live figure data show for
    those settings (every source compared)."""
    from bokeh.models import RadioButtonGroup, Select, Slider

    from ntkbench.papers import collective

    cubes = collective.open_cubes(ROOT / "data" / "collective_quick.nc")
    controls = collective.controls(cubes)
    settings = {**{c.name: c.value for c in controls}, **collective.defaults(cubes)}
    spec = next(s for s in collective.FIGURES if s.name == "F-b1")
    by_name = {c.name: c for c in controls}
    layout = standalone.paper_layout(spec, cubes, settings, controls)
    offered = {m.name: type(m) for kind in (Slider, Select, RadioButtonGroup) for m in layout.select({"type": kind})}
    assert offered == {"step": Slider, "activation": RadioButtonGroup, "width": Select}, offered
    path = standalone.write_html(layout, tmp_path / "paper.html")
    page, errors = _open(browser, path)
    shot = page.screenshot()

    steps = [None, *(o[1] if isinstance(o, (tuple, list)) else o for o in by_name["step"].options)]
    assert settings["step"] is None and page.evaluate(_VALUE, ["step", "value"]) == 0
    page.locator(".noUi-handle").first.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('step').value === 1", timeout=TIMEOUT_MS)
    _changed(page, shot)
    at = {**settings, "step": steps[1]}
    for name, cols in spec.data(cubes, at)["sources"].items():
        _same(dict(cols), page.evaluate(_READ, name), name)

    # the toggle and the dropdown, as a click sets them (their js_on_change callbacks run)
    activations = [o[1] if isinstance(o, (tuple, list)) else o for o in by_name["activation"].options]
    widths = [o[1] if isinstance(o, (tuple, list)) else o for o in by_name["width"].options]
    a, w = 1 - activations.index(settings["activation"]), 1 - widths.index(settings["width"])
    page.evaluate(
        f"() => {{ const d = Bokeh.documents[0]; d.get_model_by_name('activation').active = {a};"
        f" d.get_model_by_name('width').value = '{w}'; }}"
    )
    at = {**at, "activation": activations[a], "width": widths[w]}
    expected = spec.data(cubes, at)
    assert expected["sources"] != spec.data(cubes, {**at, "activation": settings["activation"]})["sources"]
    for name, cols in expected["sources"].items():
        _same(dict(cols), page.evaluate(_READ, name), name)
    assert errors == []
    page.close()


@browser_only
def test_standalone_pages_fit_a_laptop_window(browser, tmp_path):
    """The standalone HTML of the explorer and of each paper's widest figure at 1280 x 800:
    every canvas inside the window, no horizontal scrolling (the panels flow into rows).
    Screenshots: test-artifacts/standalone-*.png."""
    from ntkbench.papers import get

    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    pages = {"explorer": standalone.explorer_html(collective_mlp(), tmp_path / "explorer.html")}
    for key, figure in (("collective", "F-b1"), ("data", "F-a1"), ("scaling", "F-c1"), ("reach", "F-d1")):
        paper = get(key)
        cubes = paper.open_cubes(ROOT / "data" / f"{key}_quick.nc")
        controls = paper.controls(cubes)
        settings = {**{c.name: c.value for c in controls}, **paper.defaults(cubes)}
        spec = next(s for s in paper.FIGURES if s.name == figure)
        layout = standalone.paper_layout(spec, cubes, settings, controls=())  # the figure, no embedded combinations
        pages[f"{key}-{figure}"] = standalone.write_html(layout, tmp_path / f"{key}.html")
    problems = []
    for name, path in pages.items():
        page, errors = _open(browser, path)
        page.set_viewport_size({"width": 1280, "height": 800})
        page.wait_for_function("() => Bokeh.documents[0].is_idle", timeout=TIMEOUT_MS)
        problems += [f"{name}: {p}" for p in _browser.layout_problems(page, "body")]
        page.screenshot(path=str(artifacts / f"standalone-{name}.png"), full_page=True)
        assert errors == [], (name, errors)
        page.close()
    assert not problems, "\n".join(problems)


def collective_mlp():
    from ntkbench.papers import collective

    return collective.open_cubes(ROOT / "data" / "collective_quick.nc")["mlp"]


def test_export_control_code_and_cli_offer_interactive_html(ds, tmp_path):
    from ntkbench import cube
    from ntkbench.cli import main
    from ntkbench.papers import scaling
    from ntkbench.widgets import Explorer

    ex = Explorer(ds, figures_dir=tmp_path / "figs")
    assert ("interactive HTML", "interactive") in ex.export_format.options
    ex.export_format.value = "interactive"
    ex.export_button.click()
    assert "wrote" in ex.export_status.value, ex.export_status.value
    page = (tmp_path / "figs" / "ntkbench-explorer.html").read_text()
    assert "CustomJS" in page and "figure:spectrum" in page
    assert ex.export(format="interactive", name="mine").name == "mine-explorer.html"

    cubes = scaling.open_cubes(ROOT / "data" / "scaling_quick.nc")
    wb = scaling.Workbench(cubes, figures_dir=tmp_path / "paper")
    name = next(iter(wb.figures))
    path = wb.export(name, "interactive")
    assert path.name == f"scaling-{name}-interactive.html" and "Bokeh" in path.read_text()[:100_000]

    cpath = cube.save(ds, tmp_path / "c.nc")
    out = tmp_path / "cli"
    assert main(["export", str(cpath), "--figure", "explorer", "--format", "html", "--out", str(out)]) == 0
    (written,) = out.iterdir()
    assert written.name == "c-explorer.html" and "CustomJS" in written.read_text()
