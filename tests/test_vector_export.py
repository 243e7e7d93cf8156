"""Vector export (SVG and PDF) of every figure the notebooks show: the quickstart explorer's
figures and kernel image, and every paper's figures from its shipped cube in ``data/``.

A journal takes vector figures: the SVG must hold no raster ``<image>`` and its labels must
be ``<text>``; the PDF must open (one page) and draw with path operators. The figures are
built once per module and exported through the one reused headless Chromium.
"""

import os
import re
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np
import pytest

from ntkbench import plots

pytestmark = pytest.mark.skipif(os.environ.get("NTKBENCH_SKIP_BROWSER") == "1", reason="NTKBENCH_SKIP_BROWSER=1")

ROOT = Path(__file__).resolve().parents[1]
SVG = "{http://www.w3.org/2000/svg}"


def _quickstart_figures():
    """The quickstart notebook's figures: its kernel image and its explorer's figures on a
    cube of the quickstart sweep's shape (3 widths × 2 seeds, 11 recordings, probe 48)."""
    from ntkbench.testing import synthetic_cube
    from ntkbench.widgets import Explorer

    ds = synthetic_cube(widths=(32, 128, 512), seeds=(0, 1), steps=tuple(range(0, 151, 15)), n_eigen=48)
    ex = Explorer(ds)
    a = np.random.default_rng(0).normal(size=(24, 24))
    figs = {f"quickstart-{k}": v for k, v in ex.figures.items()}
    figs["quickstart-kernel"] = plots.kernel_image(a @ a.T, title="eNTK")
    return figs


def _paper_figures():
    from ntkbench import papers

    figs = {}
    for path in sorted((ROOT / "data").glob("*_quick.nc")):
        key = path.name.removesuffix("_quick.nc")
        if key not in papers.REGISTRY:
            continue
        module = papers.get(key)
        figs.update({f"{key}-{name}": fig for name, fig in module.figures(module.open_cubes(path)).items()})
    return figs


@pytest.fixture(scope="module")
def figures():
    figs = {**_quickstart_figures(), **_paper_figures()}
    # every paper with a shipped cube is covered
    assert {k.split("-")[0] for k in figs} >= {"quickstart", "collective", "data", "scaling"}
    return figs


def _labels(fig):
    """Axis labels and titles of every plot in a figure or layout (what must be text)."""
    from bokeh.models import Plot

    out = []
    for p in fig.references():
        if isinstance(p, Plot):
            out += [a.axis_label for a in p.xaxis + p.yaxis if a.axis_label]
            if p.title is not None and p.title.text:
                out.append(p.title.text)
    return out


def _pdf_operators(pdf: bytes) -> bytes:
    """The decompressed content of every stream of a PDF."""
    out = b""
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            out += zlib.decompress(stream)
        except zlib.error:
            out += stream
    return out


def _check_pdf(pdf: bytes, name: str) -> None:
    assert pdf.startswith(b"%PDF-"), name
    assert pdf.rstrip().endswith(b"%%EOF"), name
    assert len(re.findall(rb"/Type\s*/Page\b", pdf)) == 1, f"{name}: one page"
    ops = _pdf_operators(pdf)
    # vector drawing: path construction (m/l/c/re) and painting (f/S), and text (BT ... Tj)
    assert len(re.findall(rb"[\d.]+ [\d.]+ l\b", ops)) > 10, f"{name}: no line segments"
    assert re.search(rb"\b(f|S|B)\b", ops), f"{name}: nothing painted"
    assert b"BT" in ops and b"Tf" in ops, f"{name}: no text"
    assert b"/Subtype /Image" not in pdf, f"{name}: raster image in the PDF"


def test_every_notebook_figure_is_vector_svg_and_pdf(figures, tmp_path):
    drv = plots.webdriver()
    for name, fig in figures.items():
        svg = plots.vector_svg(fig, driver=drv)
        root = ET.fromstring(svg.encode())
        assert root.tag == f"{SVG}svg", name
        assert not list(root.iter(f"{SVG}image")), f"{name}: raster <image> in the SVG"
        assert len(list(root.iter(f"{SVG}path"))) > 10, f"{name}: too few paths"
        texts = " ".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))
        for label in _labels(fig):
            # Bokeh draws a label as one <text>; a header's words are runs of <text>
            assert label in texts, f"{name}: label {label!r} is not text"
        width, height = float(root.get("width", 0)), float(root.get("height", 0))
        assert width >= (getattr(fig, "width", None) or 0) * 0.9 and height > 100, name
        _check_pdf(plots.svg_to_pdf(svg, driver=drv), name)


def test_export_writes_svg_and_pdf_and_header_text(figures, tmp_path):
    fig = figures["collective-F-b3"]  # heat maps with colour bars and a header over a grid
    svg = plots.export(fig, tmp_path / "b3", "svg")
    pdf = plots.export(fig, tmp_path / "b3.pdf")
    assert (svg.name, pdf.name) == ("b3.svg", "b3.pdf")
    root = ET.parse(svg).getroot()
    assert not list(root.iter(f"{SVG}image"))
    assert "F-b3" in " ".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))  # the header is text
    # each panel is a nested <svg> at its place on the page, none overlapping
    boxes = [
        (float(e.get("x", 0)), float(e.get("y", 0)), float(e.get("width", 0)), float(e.get("height", 0)))
        for e in root.findall(f"{SVG}svg")
    ]
    assert len(boxes) == 8
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1]
    _check_pdf(pdf.read_bytes(), "b3.pdf")
    from bokeh.models import Plot

    assert all(p.output_backend == "canvas" for p in fig.references() if isinstance(p, Plot))  # untouched


def test_cli_and_export_control_offer_pdf(tmp_path, monkeypatch):
    from ntkbench import cube
    from ntkbench.cli import main
    from ntkbench.testing import synthetic_cube
    from ntkbench.widgets import Explorer

    path = cube.save(synthetic_cube(widths=(16, 64), seeds=(0,), steps=(0, 10), n_eigen=4), tmp_path / "c.nc")
    assert main(["export", str(path), "--figure", "measure", "--format", "pdf", "--out", str(tmp_path / "f")]) == 0
    (written,) = (tmp_path / "f").iterdir()
    assert written.name == "c-measure.pdf"
    _check_pdf(written.read_bytes(), written.name)
    ex = Explorer(cube.open(path), figures_dir=tmp_path / "g")
    assert "pdf" in [v for _, v in ex.export_format.options]
    ex.export_format.value = "pdf"
    ex.export_figure.value = "spectrum"
    ex.export_button.click()
    assert "wrote" in ex.export_status.value, ex.export_status.value
    _check_pdf((tmp_path / "g" / "ntkbench-spectrum.pdf").read_bytes(), "explorer pdf")
