"""Writing figures to files: PNG, SVG, PDF and standalone HTML; the vector SVG composed
from Bokeh's SVG backend, its PDF print, and the one reused headless-Chromium webdriver."""

from __future__ import annotations

import atexit
import os
import shutil
from pathlib import Path
from typing import Any, get_args

import numpy as np

from ntkbench._types import ExportFormat

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

_DRIVER: list[Any] = []  # one reused headless Chromium for all PNG/SVG exports


def _quit_driver() -> None:
    while _DRIVER:
        try:
            _DRIVER.pop().quit()
        except Exception:  # pragma: no cover
            pass


def webdriver() -> Any:
    """The Selenium Chrome webdriver used for PNG/SVG export (created once, reused, quit at exit).

    Uses Debian's ``/usr/bin/chromium`` + ``/usr/bin/chromedriver`` (or ``$NTKBENCH_CHROMIUM``
    / ``$NTKBENCH_CHROMEDRIVER``, or whatever is on ``PATH``), headless, with the flags
    needed to run as root.
    """
    if _DRIVER:
        return _DRIVER[0]
    chromium = (
        os.environ.get("NTKBENCH_CHROMIUM")
        or (CHROMIUM if os.path.exists(CHROMIUM) else None)
        or shutil.which("chromium")
        or shutil.which("google-chrome")
    )
    driver = (
        os.environ.get("NTKBENCH_CHROMEDRIVER")
        or (CHROMEDRIVER if os.path.exists(CHROMEDRIVER) else None)
        or shutil.which("chromedriver")
    )
    if not chromium or not driver:
        raise RuntimeError(
            "PNG/SVG export needs headless Chromium and chromedriver, which were not found "
            f"(looked for {CHROMIUM} and {CHROMEDRIVER}). Install them with "
            "`apt-get install chromium chromium-driver` (Debian/Ubuntu), or set "
            "NTKBENCH_CHROMIUM / NTKBENCH_CHROMEDRIVER. HTML export works without a browser."
        )
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.chrome.webdriver import WebDriver as Chrome

    opts = Options()
    opts.binary_location = chromium
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--force-color-profile=srgb",
    ):
        opts.add_argument(arg)
    d = Chrome(service=Service(driver), options=opts)
    _DRIVER.append(d)
    atexit.register(_quit_driver)
    return d


EXPORT_FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)
"""What :func:`export` writes: PNG (raster), SVG and PDF (vector: paths and text), HTML."""


def export(fig: Any, path: str | os.PathLike, format: str | None = None, *, scale: float = 2) -> Path:
    """Write a figure (or layout) to ``path`` as PNG, SVG, PDF or standalone HTML.

    ``format`` is one of :data:`EXPORT_FORMATS` (``ntkbench._types.ExportFormat``; a str,
    checked here, since widgets and the CLI pass a user's choice); ``None`` takes it from the
    file suffix; a missing suffix is added. HTML embeds
    BokehJS inline (works offline, no browser needed). PNG (at ``scale`` × the figure's
    pixel size), SVG and PDF render in headless Chromium through :func:`webdriver`.

    SVG and PDF are vector drawings a journal accepts: every panel of a layout is drawn
    with Bokeh's SVG backend (lines, glyphs and legends as paths, labels as ``<text>``),
    and the panels and the header text are composed into one SVG at their places on the
    page (:func:`vector_svg`); the PDF is Chromium's print of that SVG (paths and text, one
    page of the figure's size). The figure itself is not changed.

    Returns the written path.

    Example
    -------
    >>> from ntkbench.testing import synthetic_cube
    >>> from ntkbench.plots import FIGURES
    >>> import tempfile, os
    >>> p = export(FIGURES["measure"](synthetic_cube()), os.path.join(tempfile.mkdtemp(), "m"), "html")
    >>> p.suffix, p.stat().st_size > 100_000
    ('.html', True)
    """
    path = Path(path)
    if format is None:
        format = path.suffix.lstrip(".").lower() or "png"
    format = format.lower()
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be 'png', 'svg', 'pdf' or 'html', got {format!r}")
    if path.suffix.lower() != f".{format}":
        path = path.with_name(path.name + f".{format}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if format == "html":
        from bokeh.embed import file_html
        from bokeh.resources import INLINE

        title = getattr(getattr(fig, "title", None), "text", None) or "ntkbench figure"
        html = file_html(fig, resources=INLINE, title=title)
        tmp.write_text(html, encoding="utf-8")
        os.replace(tmp, path)
        return path
    drv = webdriver()
    if format == "png":
        img = _screenshot(fig, drv, scale)
        img.save(tmp, format="PNG")
        os.replace(tmp, path)
        return path
    svg = vector_svg(fig, driver=drv)
    if format == "svg":
        tmp.write_text(svg, encoding="utf-8")
    else:
        tmp.write_bytes(svg_to_pdf(svg, driver=drv))
    os.replace(tmp, path)
    return path


def _svg_page(fig: Any) -> str:
    """Standalone HTML of ``fig`` (BokehJS inline) in which every plot draws with the SVG
    backend. The switch is made in the serialized document, so the figure (possibly shown
    live in a notebook) is not touched."""
    from bokeh.embed.bundle import bundle_for_objs_and_resources
    from bokeh.embed.elements import html_page_for_render_items
    from bokeh.embed.util import OutputDocumentFor, standalone_docs_json_and_render_items
    from bokeh.models import Plot
    from bokeh.resources import INLINE

    ids = {m.id for m in fig.references() if isinstance(m, Plot)}
    with OutputDocumentFor([fig], always_new=True) as doc:
        docs_json, items = standalone_docs_json_and_render_items([fig], suppress_callback_warning=True)
        bundle = bundle_for_objs_and_resources([doc], INLINE)

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            if o.get("type") == "object" and o.get("id") in ids:
                o.setdefault("attributes", {})["output_backend"] = "svg"
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(docs_json)
    template = "{% block preamble %}<style>html, body { margin: 0; padding: 0; border: 0; }</style>{% endblock %}"
    return html_page_for_render_items(bundle, docs_json, items, title="", template=template)  # pyright: ignore[reportArgumentType]


# Collects, from the rendered page, each plot's SVG (Bokeh's SVG backend) and the words of
# every Div (the paper figures' headers) with their boxes, relative to the root's corner.
_VECTOR_JS = r"""
const {PlotView} = Bokeh.require("models/plots/plot")
const root = Bokeh.index.roots[0]
const r0 = root.el.getBoundingClientRect()
const out = {plots: [], words: []}
// lay every plot out again first: on the first render with the SVG backend a side-panel
// legend can be measured too wide (the frame squeezed to the left); a second layout is right
function relayout(view) {
  if (view instanceof PlotView) view.invalidate_layout()
  for (const c of (view.child_views ?? [])) relayout(c)
}
relayout(root)
function texts(node, cb) {
  for (const c of node.childNodes) {
    if (c.nodeType === 3) cb(c)
    else texts(c.shadowRoot ?? c, cb)
  }
}
function visit(view) {
  if (view instanceof PlotView) {
    const r = view.el.getBoundingClientRect()
    const {ctx} = view.export("svg")
    out.plots.push({x: r.left - r0.left, y: r.top - r0.top, svg: ctx.get_serialized_svg(true)})
    return
  }
  if (view.markup_el != null) {
    texts(view.markup_el, (t) => {
      const st = getComputedStyle(t.parentElement)
      const re = /\S+/g
      let m
      while ((m = re.exec(t.data)) !== null) {
        const rg = document.createRange()
        rg.setStart(t, m.index)
        rg.setEnd(t, m.index + m[0].length)
        const b = rg.getBoundingClientRect()
        out.words.push({x: b.left - r0.left, y: b.top - r0.top, w: b.width, h: b.height, s: m[0],
          size: st.fontSize, weight: st.fontWeight, style: st.fontStyle, family: st.fontFamily, color: st.color})
      }
    })
  }
  for (const c of (view.child_views ?? [])) visit(c)
}
visit(root)
return out
"""


def vector_svg(fig: Any, *, driver: Any = None, timeout: float = 30) -> str:
    """One SVG document of a figure or layout, made of paths and text only.

    Every panel is rendered in headless Chromium with Bokeh's SVG backend and placed (as a
    nested ``<svg>``) where the layout puts it; the words of header ``Div`` elements become
    ``<text>`` runs at their rendered positions, keeping font size, weight and colour.
    Toolbars are left out. ``driver`` defaults to :func:`webdriver`.

    Not run as a doctest (it starts headless Chromium; tests/test_vector_export.py runs it):

    >>> svg = vector_svg(FIGURES["measure"](synthetic_cube()))   # doctest: +SKIP
    >>> "<image" in svg                                         # doctest: +SKIP
    False
    """
    import re
    import tempfile
    from xml.sax.saxutils import escape, quoteattr

    from bokeh.io.export import wait_until_render_complete

    drv = driver if driver is not None else webdriver()
    with tempfile.TemporaryDirectory(prefix="ntkbench-svg-") as tmpdir:
        page = Path(tmpdir) / "figure.html"
        page.write_text(_svg_page(fig), encoding="utf-8")
        drv.get(page.resolve().as_uri())
        wait_until_render_complete(drv, int(timeout))
        found = drv.execute_script(_VECTOR_JS)
    if not found["plots"]:
        raise ValueError(f"{type(fig).__name__} has no plot to export as SVG")
    parts: list[str] = []
    width = height = 0.0
    for i, p in enumerate(found["plots"]):
        svg = str(p["svg"])
        head = re.match(r"<svg\b[^>]*>", svg)
        size = re.search(r'\bwidth="([\d.]+)"[^>]*\bheight="([\d.]+)"', head.group(0)) if head else None
        if size is None:
            raise RuntimeError(f"Bokeh's SVG of panel {i} has no size: {svg[:200]!r}")
        w, h = float(size.group(1)), float(size.group(2))
        x, y = round(float(p["x"]), 2), round(float(p["y"]), 2)
        width, height = max(width, x + w), max(height, y + h)
        # ids (clip paths) unique across panels
        svg = re.sub(r'id="([^"]+)"', rf'id="p{i}-\1"', svg)
        svg = re.sub(r"url\(#([^)]+)\)", rf"url(#p{i}-\1)", svg)
        svg = re.sub(r"<svg\b[^>]*>", f'<svg x="{x:g}" y="{y:g}" width="{w:g}" height="{h:g}">', svg, count=1)
        svg = re.sub(r"<image\b[^>]*>", _image_as_rects, svg)  # colour bars are drawn as small images
        parts.append(svg)
    # words -> runs: consecutive words on one line in one style
    runs: list[dict[str, Any]] = []
    for word in found["words"]:
        style = tuple(word[k] for k in ("size", "weight", "style", "family", "color"))
        last = runs[-1] if runs else None
        if (
            last is not None
            and last["style"] == style
            and abs(last["y"] - word["y"]) < 0.5
            and 0 <= word["x"] - last["end"] < float(word["h"])
        ):
            last["text"] += " " + word["s"]
            last["end"] = word["x"] + word["w"]
        else:
            runs.append(
                dict(style=style, x=word["x"], y=word["y"], h=word["h"], end=word["x"] + word["w"], text=word["s"])
            )
    texts = []
    for r in runs:
        size, weight, fstyle, family, color = r["style"]
        base = r["y"] + 0.81 * r["h"]  # baseline: the ascent of Helvetica/Arial in the line box
        width, height = max(width, r["end"]), max(height, r["y"] + r["h"])
        texts.append(
            f'<text x="{r["x"]:.2f}" y="{base:.2f}" font-size={quoteattr(size)} font-weight={quoteattr(weight)} '
            f"font-style={quoteattr(fstyle)} font-family={quoteattr(family)} fill={quoteattr(color)}>"
            f"{escape(r['text'])}</text>"
        )
    width, height = int(np.ceil(width)), int(np.ceil(height))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">\n'
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>\n'
        + "\n".join(texts + parts)
        + "\n</svg>\n"
    )


def _image_as_rects(match: Any, max_rects: int = 100_000) -> str:
    """An SVG ``<image>`` holding a PNG data URL (a colour bar's palette strip, an image
    glyph such as :func:`kernel_image`) as a group of filled rectangles: equal rows are
    merged, and each run of equal pixels in them is one rectangle. Left as it is when it
    would take more than ``max_rects`` rectangles or is not a PNG data URL."""
    import base64
    import io
    import re

    from PIL import Image

    tag = match.group(0)
    href = re.search(r'href="data:image/png;base64,([^"]+)"', tag)
    size = re.search(r'\bwidth="([\d.]+)"[^>]*\bheight="([\d.]+)"', tag)
    if href is None or size is None:
        return tag
    with Image.open(io.BytesIO(base64.b64decode(href.group(1)))) as im:
        px = np.asarray(im.convert("RGBA")).astype(np.int64)
    ih, iw = px.shape[:2]
    packed = (px[..., 0] << 24) | (px[..., 1] << 16) | (px[..., 2] << 8) | px[..., 3]  # one int per pixel
    row_starts = np.flatnonzero(np.r_[True, (packed[1:] != packed[:-1]).any(axis=1)])
    row_ends = np.r_[row_starts[1:], ih]
    starts = [np.flatnonzero(np.r_[True, packed[r, 1:] != packed[r, :-1]]) for r in row_starts]
    if sum(len(c) for c in starts) > max_rects:
        return tag
    sx, sy = float(size.group(1)) / iw, float(size.group(2)) / ih
    rects = []
    for r0, r1, cols in zip(row_starts, row_ends, starts, strict=True):
        for c0, c1 in zip(cols, np.r_[cols[1:], iw], strict=True):
            v = int(packed[r0, c0])
            red, green, blue, alpha = (v >> 24) & 255, (v >> 16) & 255, (v >> 8) & 255, v & 255
            if alpha:
                opacity = f' fill-opacity="{alpha / 255:.3g}"' if alpha < 255 else ""
                rects.append(
                    f'<rect x="{c0 * sx:.3f}" y="{r0 * sy:.3f}" width="{(c1 - c0) * sx:.3f}" '
                    f'height="{(r1 - r0) * sy:.3f}" fill="rgb({red},{green},{blue})"{opacity}/>'
                )
    transform = re.search(r'transform="([^"]*)"', tag)
    attr = f' transform="{transform.group(1)}"' if transform else ""
    return f'<g shape-rendering="crispEdges"{attr}>{"".join(rects)}</g>'


def svg_to_pdf(svg: str, *, driver: Any = None) -> bytes:
    """A one-page PDF of an SVG document (as :func:`vector_svg` writes it), printed by
    headless Chromium: vector paths and text, the page the SVG's size (96 px per inch)."""
    import base64
    import re
    import tempfile

    m = re.search(r'<svg[^>]*\bwidth="([\d.]+)"[^>]*\bheight="([\d.]+)"', svg)
    if m is None:
        raise ValueError("svg must be an SVG document with width and height")
    w, h = float(m.group(1)), float(m.group(2))
    drv = driver if driver is not None else webdriver()
    with tempfile.TemporaryDirectory(prefix="ntkbench-pdf-") as tmpdir:
        page = Path(tmpdir) / "figure.svg"
        page.write_text(svg, encoding="utf-8")
        drv.get(page.resolve().as_uri())
        pdf = drv.execute_cdp_cmd(
            "Page.printToPDF",
            {
                "paperWidth": (w + 1) / 96,
                "paperHeight": (h + 1) / 96,
                "marginTop": 0,
                "marginBottom": 0,
                "marginLeft": 0,
                "marginRight": 0,
                "printBackground": True,
                "pageRanges": "1",
                "scale": 1,
            },
        )
    return base64.b64decode(pdf["data"])


def _screenshot(fig: Any, drv: Any, scale: float) -> Any:
    from bokeh.io.export import get_screenshot_as_png

    if scale != 1:
        # the reused driver renders at device scale 1; emulate hi-dpi for this screenshot
        drv.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 0, "height": 0, "deviceScaleFactor": float(scale), "mobile": False},
        )
    try:
        return get_screenshot_as_png(fig, driver=drv, timeout=30, scale_factor=scale)
    finally:
        if scale != 1:
            drv.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
