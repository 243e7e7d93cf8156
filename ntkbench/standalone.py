"""Standalone interactive HTML: explorers and paper figures whose controls work in a plain
browser, without a Python kernel (to send to a colleague, or attach to a paper's
supplementary material).

One self-contained file: BokehJS inline (works offline), the data embedded, Bokeh widgets
whose ``CustomJS`` callbacks redraw the figures from the embedded data.

- :func:`explorer_layout` / :func:`explorer_html`: the :class:`ntkbench.widgets.Explorer`
  of a cube — step slider with play, width selection, eigen-index range, measure selector,
  log/linear axes, seed aggregation. It embeds the cube's per-step measures and spectra
  reduced over seeds the ways the seed selector offers (mean ± std, each seed), no more; the
  browser assembles exactly the columns the live explorer's ``*_data`` functions give.
- :func:`paper_layout` / :func:`paper_html`: a paper figure with its hover tools and, when
  the figure has a step slider among its controls, that slider: the figure data of every
  recorded step is embedded and applied in the browser as :func:`ntkbench.plots.apply` does.

Example
-------
>>> from ntkbench.testing import synthetic_cube
>>> import tempfile, os
>>> p = explorer_html(synthetic_cube(), os.path.join(tempfile.mkdtemp(), "explorer"))
>>> p.suffix, p.stat().st_size < 3_000_000
('.html', True)
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

import numpy as np

from ntkbench import plots
from ntkbench._types import PaperControlKind
from ntkbench.cube import finished

__all__ = ["explorer_layout", "explorer_html", "paper_layout", "paper_html", "write_html"]


def _plain(obj: Any) -> Any:
    """JSON-able (numpy arrays and scalars to lists and numbers)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _js_literal(obj: Any) -> str:
    """A JavaScript literal of ``obj``: JSON, with NaN and ±Infinity kept (they are JS
    globals), which ``JSON.parse`` would refuse."""
    return json.dumps(_plain(obj), allow_nan=True, separators=(",", ":"))


def write_html(layout: Any, path: str | os.PathLike, title: str = "ntkbench") -> Path:
    """Write a Bokeh layout as one self-contained HTML file (BokehJS inline); ``.html`` is
    added when missing. Returns the path."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    path = Path(path)
    if path.suffix.lower() != ".html":
        path = path.with_name(path.name + ".html")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(file_html(layout, resources=INLINE, title=title), encoding="utf-8")
    os.replace(tmp, path)
    return path


# =========================================================================== explorer

# The explorer's redraw in the browser: the same columns as plots.spectrum_data,
# plots.measure_data and plots.scaling_data (see their docstrings) from the embedded arrays.
_PLAY_JS = r"""
const cache = (window.__ntkbench ??= {});
const stop = () => { clearInterval(cache[key]); cache[key] = null; play.label = "▶ play"; };
if (cache[key]) {
  stop();
} else {
  if (step.value >= step.end) step.value = step.start;
  play.label = "❚❚ pause";
  cache[key] = setInterval(() => (step.value >= step.end ? stop() : (step.value = step.value + 1)), 500);
}
"""

_EXPLORER_JS = r"""
const cache = (window.__ntkbench ??= {});
const D = (cache[key] ??= (() => (DATA))());
const si = step.value, st = D.steps[si];
const ws = D.widths.length ? widths.active.slice().sort((a, b) => a - b) : [null];
const seedKey = seed.value, m = measure.value, M = D.measures[m];
const [lo, hi] = eigen.value.map((v) => Math.round(v));
const isLog = (g) => g.active === 0;
const fin = (x, y, lx, ly) => Number.isFinite(x) && Number.isFinite(y) && (!lx || x > 0) && (!ly || y > 0);
const wname = (wi) => (wi === null ? null : D.widths[wi]);
const wcolor = (wi) => (wi === null ? "#440154" : D.colors[wi]);
step.title = "step " + st;
function setLog(axes, flag) {
  for (const a of axes) {
    if (a.fig[a.scale] !== (flag ? a.log.scale : a.lin.scale)) {
      const v = flag ? a.log : a.lin;
      a.fig[a.scale] = v.scale;
      a.axis.ticker = v.ticker;
      a.axis.formatter = v.formatter;
    }
  }
}
if (figs.spectrum) {
  const log = isLog(spectrum_scale);
  setLog(scales.spectrum, log);
  const lines = {xs: [], ys: [], color: [], label: []};
  const points = {x: [], y: [], eigen_index: [], width: [], step: [], label: [], color: []};
  for (const wi of ws) {
    const ev = D.eig[seedKey][wi === null ? 0 : wi][si];
    const name = wi === null ? "step " + st : "width " + wname(wi), c = wcolor(wi);
    const xs = [], ys = [];
    for (let k = 0; k < D.eigen_index.length; k++) {
      const idx = D.eigen_index[k];
      if (idx < lo || idx > hi) continue;
      const x = idx + 1.0, y = ev[k];
      if (!fin(x, y, log, log)) continue;
      xs.push(x); ys.push(y);
      points.x.push(x); points.y.push(y); points.eigen_index.push(idx);
      points.width.push(wi === null ? -1 : wname(wi)); points.step.push(st);
      points.label.push(name); points.color.push(c);
    }
    lines.xs.push(xs); lines.ys.push(ys); lines.color.push(c); lines.label.push(name);
  }
  src.spectrum.lines.data = lines;
  src.spectrum.points.data = points;
  figs.spectrum.title.text = "eNTK spectrum at step " + st;
}
if (figs.measure) {
  const lx = isLog(step_scale), ly = isLog(measure_scale);
  setLog(scales.measure_x, lx);
  setLog(scales.measure_y, ly);
  const mean = D.mean[m][seedKey], std = D.std[m][seedKey];
  const lines = {xs: [], ys: [], color: [], label: []}, bands = {xs: [], ys: [], color: []};
  const points = {x: [], y: [], std: [], width: [], label: [], color: []};
  for (const wi of ws) {
    const row = mean[wi === null ? 0 : wi], srow = std === null ? null : std[wi === null ? 0 : wi];
    const name = wi === null ? m : "width " + wname(wi), c = wcolor(wi);
    const xs = [], ys = [], ss = [];
    for (let k = 0; k < D.steps.length; k++) {
      const x = D.steps[k], y = row[k];
      if (!fin(x, y, lx, ly)) continue;
      xs.push(x); ys.push(y); ss.push(srow === null ? 0 : srow[k]);
    }
    lines.xs.push(xs); lines.ys.push(ys); lines.color.push(c); lines.label.push(name);
    if (srow !== null && ss.some((s) => s > 0)) {
      const hiB = ys.map((y, i) => y + ss[i]);
      const loB = ys.map((y, i) => (ly ? Math.max(y - ss[i], y * 1e-3) : y - ss[i]));
      bands.xs.push(xs.concat(xs.slice().reverse()));
      bands.ys.push(hiB.concat(loB.slice().reverse()));
      bands.color.push(c);
    }
    for (let i = 0; i < xs.length; i++) {
      points.x.push(xs[i]); points.y.push(ys[i]); points.std.push(ss[i]);
      points.width.push(wi === null ? -1 : wname(wi)); points.label.push(name); points.color.push(c);
    }
  }
  src.measure.lines.data = lines;
  src.measure.bands.data = bands;
  src.measure.points.data = points;
  marker.location = st;
  figs.measure.title.text = M.long_name;
  ylabels.measure.axis_label = M.label;
}
if (figs.scaling) {
  const empty = (s) => Object.fromEntries(Object.keys(s.data).map((k) => [k, []]));
  figs.scaling.title.text = M.long_name + " at step " + st;
  ylabels.scaling.axis_label = M.label;
  if (ws.length === 0 || ws[0] === null) {
    for (const s of Object.values(src.scaling)) s.data = empty(s);
  } else {
    const mean = D.mean[m][seedKey], std = D.std[m][seedKey];
    const x = ws.map((wi) => D.widths[wi] * 1.0);
    const y = ws.map((wi) => mean[wi][si]);
    const s = ws.map((wi) => (std === null ? 0 : std[wi][si]));
    const seeds = {x: [], y: [], seed: []};
    if (seedKey === "mean" && D.per_seed[m] !== null) {
      D.seeds.forEach((sv, j) => {
        ws.forEach((wi, i) => { seeds.x.push(x[i]); seeds.y.push(D.per_seed[m][wi][j][si]); seeds.seed.push(sv); });
      });
    }
    const ok = x.map((xv, i) => fin(xv, y[i], true, true));
    const X = x.filter((_, i) => ok[i]), Y = y.filter((_, i) => ok[i]), S = s.filter((_, i) => ok[i]);
    let fit = {xs: [], ys: [], label: []};
    if (X.length >= 2) {
      const lxs = X.map(Math.log), lys = Y.map(Math.log), n = X.length;
      const mx = lxs.reduce((a, b) => a + b, 0) / n, my = lys.reduce((a, b) => a + b, 0) / n;
      let sxy = 0, sxx = 0;
      for (let i = 0; i < n; i++) { sxy += (lxs[i] - mx) * (lys[i] - my); sxx += (lxs[i] - mx) ** 2; }
      const b = sxy / sxx, loga = my - b * mx;
      let ssr = 0, sst = 0;
      for (let i = 0; i < n; i++) { ssr += (lys[i] - (loga + b * lxs[i])) ** 2; sst += (lys[i] - my) ** 2; }
      const r2 = sst > 0 ? 1 - ssr / sst : 1, a = Math.exp(loga);
      const x0 = Math.min(...X), x1 = Math.max(...X), l0 = Math.log10(x0), l1 = Math.log10(x1);
      const xf = [];
      for (let i = 0; i < 50; i++) xf.push(i === 0 ? x0 : i === 49 ? x1 : 10 ** (l0 + (i * (l1 - l0)) / 49));
      fit = {xs: [xf], ys: [xf.map((v) => a * v ** b)], label: ["∝ width^" + b.toFixed(3) + "  (R² = " + r2.toFixed(3) + ")"]};
    }
    src.scaling.points.data = {x: X, y: Y, std: S, step: X.map(() => st)};
    src.scaling.seeds.data = seeds;
    src.scaling.errors.data = {x: X, lower: Y.map((v, i) => (v - S[i] > 0 ? v - S[i] : v * 1e-3)), upper: Y.map((v, i) => v + S[i])};
    src.scaling.fit.data = fit;
  }
}
"""


_SOURCE_NAMES = {  # the explorer figures' data sources (as in ntkbench.widgets)
    "spectrum": ("lines", "points"),
    "measure": ("lines", "bands", "points", "diverged", "diverged_end"),
    "scaling": ("points", "seeds", "errors", "fit"),
}


def _seed_keys(ds: Any) -> list[Any]:
    return ["mean"] + ([int(s) for s in ds["seed"].values] if "seed" in ds.dims else [])


def _explorer_data(ds: Any, measures: Sequence[str]) -> dict[str, Any]:
    """The arrays the explorer's controls can reach: per seed choice (mean, each seed) the
    spectra (width × step × eigen_index) and each measure's mean and std (width × step),
    and each measure's per-seed values (width × seed × step) for the scaling plot."""
    from ntkbench.plots import _drop_extra, _select_seed  # the reductions the *_data functions use

    has_width = "width" in ds.dims
    widths = [int(w) for w in ds["width"].values] if has_width else []
    keep = ("width", "step") if has_width else ("step",)

    def arr(da: Any, dims: Sequence[str]) -> Any:
        da = _drop_extra(da, dims)
        v = np.asarray(da.transpose(*dims).values, dtype=float)
        return v if has_width else v[None]  # a width axis of one

    data: dict[str, Any] = {
        "steps": [int(s) for s in ds["step"].values],
        "widths": widths,
        "colors": plots._colors_for(widths, widths, "Viridis256") if widths else [],
        "seeds": [int(s) for s in ds["seed"].values] if "seed" in ds.dims else [],
        "measures": {
            m: {"long_name": str(ds[m].attrs.get("long_name", m)), "label": plots.label(ds, m)} for m in measures
        },
        "mean": {},
        "std": {},
        "per_seed": {},
        "eig": {},
        "eigen_index": [],
    }
    seeds = _seed_keys(ds)
    if "eigenvalues" in ds:
        data["eigen_index"] = [int(i) for i in ds["eigen_index"].values]
        for s in seeds:
            mean, _ = _select_seed(ds["eigenvalues"], s)
            data["eig"][str(s)] = arr(mean, (*keep, "eigen_index"))
    for m in measures:
        data["mean"][m], data["std"][m] = {}, {}
        for s in seeds:
            mean, std = _select_seed(ds[m], s)
            data["mean"][m][str(s)] = arr(mean, keep)
            data["std"][m][str(s)] = None if std is None else arr(std, keep)
        data["per_seed"][m] = arr(ds[m], ("width", "seed", "step")) if has_width and "seed" in ds[m].dims else None
    return data


def _scale_pair(fig: Any, which: str, axis: Any) -> dict[str, Any]:
    """Linear and log versions of a figure's scale, ticker and formatter for one axis (as
    :func:`ntkbench.plots.set_log` makes them)."""
    from bokeh.models import BasicTicker, BasicTickFormatter, LinearScale, LogScale

    if "ticks_125" in axis.tags:
        from bokeh.models import FixedTicker, NumeralTickFormatter

        log: dict[str, Any] = dict(
            scale=LogScale(),
            ticker=FixedTicker(ticks=plots._TICKS_125, minor_ticks=[]),
            formatter=NumeralTickFormatter(format="0"),
        )
    else:
        log = dict(scale=LogScale(), ticker=plots._log_ticker(), formatter=plots._log_formatter())
    lin = dict(scale=LinearScale(), ticker=BasicTicker(), formatter=BasicTickFormatter())
    return {"fig": fig, "scale": which, "axis": axis, "log": log, "lin": lin}


def explorer_layout(ds_or_explorer: Any, *, measure: str | None = None) -> Any:
    """A Bokeh layout of an explorer whose controls work in a plain browser.

    ``ds_or_explorer``: a result cube, or an :class:`ntkbench.widgets.Explorer` (its cube,
    and its current control values as the starting state). The figures are new ones, built
    as the explorer builds them; the controls are Bokeh widgets: a step slider with a play
    button, width checkboxes, an eigen-index range, measure and seed selectors, and
    log/linear switches for the spectrum, the step axis and the measure axis. The figures
    are named ``"figure:spectrum"``, ``"figure:measure"``, ``"figure:scaling"``, their data
    sources ``"<figure>:<source>"`` (e.g. ``"measure:lines"``), the widgets ``"step"``,
    ``"widths"``, ``"eigen_range"``, ``"measure"``, ``"seed"``, ``"spectrum_scale"``,
    ``"step_scale"``, ``"measure_scale"``, ``"play"``.
    """
    from bokeh.layouts import column, row
    from bokeh.models import (
        Button,
        CheckboxGroup,
        ColumnDataSource,
        CustomJS,
        Div,
        LogScale,
        RadioButtonGroup,
        RangeSlider,
        Select,
        Slider,
    )

    ds = getattr(ds_or_explorer, "ds", ds_or_explorer)
    ex = ds_or_explorer if hasattr(ds_or_explorer, "ds") else None
    plots.check_cube(ds)
    ds = finished(ds)  # diverged runs left out (the page does not draw them apart)
    if "step" not in ds.dims:
        raise ValueError(f"ds must have a 'step' dim, it has {tuple(ds.dims)}")
    ms = plots.measures(ds)
    if not ms and "eigenvalues" not in ds:
        raise ValueError("ds has neither eigenvalues nor per-step measures to explore")
    steps = [int(s) for s in ds["step"].values]
    has_width = "width" in ds.dims
    widths = [int(w) for w in ds["width"].values] if has_width else []
    n_eigen = int(ds.sizes.get("eigen_index", 1))
    # the starting state: the explorer's controls, or the Explorer's defaults
    if ex is not None:
        sel_w = [int(w) for w in ex.widths.value] if has_width else []
        step_i = steps.index(int(ex.step.value))
        eig = (int(ex.eigen_range.value[0]), int(ex.eigen_range.value[1]))
        measure = ex.measure.value
        seed = ex.seed.value
        spec_log, step_log, meas_log = (c.value == "log" for c in (ex.spectrum_scale, ex.step_scale, ex.measure_scale))
    else:
        if measure is None and ms:
            measure = "entropy" if "entropy" in ms else ms[0]
        if measure is not None and measure not in ms:
            raise ValueError(f"measure must be one of {ms}, got {measure!r}")
        sel_w, step_i, eig, seed = widths, 0, (0, max(n_eigen - 1, 0)), "mean"
        spec_log, step_log, meas_log = True, False, bool(measure and "loss" in measure)
    st = steps[step_i]
    wsel = sel_w if has_width else None

    figs: dict[str, Any] = {}
    if "eigenvalues" in ds:
        figs["spectrum"] = plots.spectrum_plot(
            ds, width=wsel, step=st, seed=seed, eigen_range=eig, by="width", log=spec_log
        )
    if measure is not None:
        figs["measure"] = plots.measure_plot(
            ds, measure, widths=wsel, seed=seed, log_x=step_log, log_y=meas_log, step_marker=st, width=520, height=380
        )
    if measure is not None and has_width and len(widths) >= 2:
        if sel_w:
            figs["scaling"] = plots.scaling_plot(ds, measure, step=st, widths=sel_w, seed=seed)
        else:
            figs["scaling"] = plots.scaling_plot(ds, measure, step=st, seed=seed)
            for s in figs["scaling"].select({"type": ColumnDataSource}):
                s.data = {k: [] for k in s.data}
        long_name = ds[measure].attrs.get("long_name", measure)
        figs["scaling"].title.text = f"{long_name} at step {st}"
    src = {}
    for name, fig in figs.items():
        fig.name = f"figure:{name}"
        src[name] = {}
        for s in _SOURCE_NAMES[name]:
            model = fig.select_one({"name": s})
            model.name = f"{name}:{s}"
            src[name][s] = model

    # --- widgets (named, so a test or a script finds them)
    step = Slider(start=0, end=max(len(steps) - 1, 1), value=step_i, step=1, title=f"step {st}", show_value=False,
                  width=420, name="step", disabled=len(steps) < 2)  # fmt: skip
    play = Button(label="▶ play", width=90, name="play", disabled=len(steps) < 2)
    wbox = CheckboxGroup(labels=[str(w) for w in widths], active=[widths.index(w) for w in sel_w], name="widths",
                         inline=True, disabled=not has_width)  # fmt: skip
    eigen = RangeSlider(start=0, end=max(n_eigen - 1, 1), value=eig, step=1, title="eigen_index", width=420,
                        name="eigen_range", disabled="eigenvalues" not in ds or n_eigen < 2)  # fmt: skip
    msel = Select(title="measure", value=measure or "", options=list(ms), name="measure", width=200, disabled=not ms)
    seeds = _seed_keys(ds)
    seed_options: Any = [("mean", "mean ± std")] + [(str(s), f"seed {s}") for s in seeds[1:]]  # (value, label)
    ssel = Select(title="seed", value=str(seed), options=seed_options, name="seed", width=160, disabled=len(seeds) < 2)

    def toggle(name: str, log: bool) -> Any:
        return RadioButtonGroup(labels=["log", "linear"], active=0 if log else 1, name=name)

    spectrum_scale, step_scale, measure_scale = (
        toggle("spectrum_scale", spec_log),
        toggle("step_scale", step_log),
        toggle("measure_scale", meas_log),
    )
    scales: dict[str, Any] = {}
    if "spectrum" in figs:
        f = figs["spectrum"]
        scales["spectrum"] = [_scale_pair(f, "x_scale", f.xaxis[0]), _scale_pair(f, "y_scale", f.yaxis[0])]
    if "measure" in figs:
        f = figs["measure"]
        scales["measure_x"] = [_scale_pair(f, "x_scale", f.xaxis[0])]
        scales["measure_y"] = [_scale_pair(f, "y_scale", f.yaxis[0])]
    # keep the figures' current scale objects (so the first switch back finds them)
    for pairs in scales.values():
        for p in pairs:
            current = getattr(p["fig"], p["scale"])
            p["log" if isinstance(current, LogScale) else "lin"].update(
                scale=current, ticker=p["axis"].ticker, formatter=p["axis"].formatter
            )

    data = _explorer_data(ds, ms)
    code = _EXPLORER_JS.replace("DATA", _js_literal(data), 1)
    marker = figs["measure"].select_one({"name": "step_marker"}) if "measure" in figs else None
    cb = CustomJS(
        args=dict(
            key=uuid.uuid4().hex,
            figs=figs,
            src=src,
            scales=scales,
            ylabels={k: figs[k].yaxis[0] for k in ("measure", "scaling") if k in figs},
            marker=marker,
            step=step,
            widths=wbox,
            eigen=eigen,
            measure=msel,
            seed=ssel,
            spectrum_scale=spectrum_scale,
            step_scale=step_scale,
            measure_scale=measure_scale,
        ),
        code=code,
    )
    step.js_on_change("value", cb)
    play.js_on_click(CustomJS(args=dict(key=uuid.uuid4().hex, play=play, step=step), code=_PLAY_JS))
    wbox.js_on_change("active", cb)
    eigen.js_on_change("value", cb)
    msel.js_on_change("value", cb)
    ssel.js_on_change("value", cb)
    for t in (spectrum_scale, step_scale, measure_scale):
        t.js_on_change("active", cb)

    def labelled(text: str, widget: Any) -> Any:
        return row(Div(text=text, width=90, styles={"font-family": plots.FONT}), widget)

    title = str(ds.attrs.get("title", "")) or "ntkbench explorer"
    head = Div(text=f"<b>{_escape(title)}</b> — ntkbench explorer (standalone)", styles={"font-family": plots.FONT})
    controls = column(
        row(play, step),
        eigen,
        row(column(Div(text="width"), wbox), msel, ssel),
        row(labelled("spectrum", spectrum_scale), labelled("step axis", step_scale)),
        labelled("measure axis", measure_scale),
    )
    # the plots flow into rows that fit the browser window (plots.fit_width)
    return plots.fit_width(column(head, controls, row(*figs.values()), name="explorer"))


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def explorer_html(ds_or_explorer: Any, path: str | os.PathLike, *, measure: str | None = None) -> Path:
    """Write :func:`explorer_layout` as one self-contained HTML file; returns the path.

    >>> from ntkbench.testing import synthetic_cube
    >>> path = explorer_html(synthetic_cube(n_eigen=8), "figures/explorer.html")
    >>> path.name, path.stat().st_size > 100_000  # BokehJS inline: opens offline
    ('explorer.html', True)
    """
    ds = getattr(ds_or_explorer, "ds", ds_or_explorer)
    title = str(ds.attrs.get("title", "")) or "ntkbench explorer"
    return write_html(explorer_layout(ds_or_explorer, measure=measure), path, title=title)


# =========================================================================== paper figures

_APPLY_JS = r"""
const cache = (window.__ntkbench ??= {});
const D = (cache[key] ??= (() => (DATA))());
let idx = 0;
for (let k = 0; k < widgets.length; k++) {
  const w = widgets[k], kind = D.kinds[k];
  const pos = kind === "slider" ? w.value
    : kind === "dropdown" ? parseInt(w.value)
    : kind === "toggle" ? w.active
    : (w.active.length > 0 ? 1 : 0);
  if (kind === "slider") w.title = D.names[k] + " " + D.labels[k][pos];
  idx = idx * D.sizes[k] + pos;
}
const d = D.values[idx];
for (const [name, i] of Object.entries(d.sources ?? {})) if (sources[name]) sources[name].data = {...D.table[i]};
for (const [name, text] of Object.entries(d.titles ?? {})) if (plots[name] && plots[name].title.text !== text) plots[name].title.text = text;
for (const [name, text] of Object.entries(d.x_labels ?? {})) if (xaxes[name] && xaxes[name].axis_label !== text) xaxes[name].axis_label = text;
for (const [name, text] of Object.entries(d.y_labels ?? {})) if (yaxes[name] && yaxes[name].axis_label !== text) yaxes[name].axis_label = text;
if (d.header !== undefined && header !== null && header.text !== d.header) header.text = d.header;
for (const [name, r] of Object.entries(d.ranges ?? {})) if (mappers[name]) { mappers[name].low = r[0]; mappers[name].high = r[1]; }
for (const [name, loc] of Object.entries(d.spans ?? {})) {
  const s = spans[name];
  if (!s) continue;
  if (loc === null) { s.visible = false; } else { s.location = loc; s.visible = true; }
}
"""

#: control kinds a standalone paper figure can offer (each value's figure data embedded)
PAPER_CONTROL_KINDS: tuple[PaperControlKind, ...] = get_args(PaperControlKind)
#: at most this many combinations of control values are embedded in one paper figure ...
MAX_COMBINATIONS = 128
#: ... and at most about this many bytes of figure data; controls past either are frozen
MAX_EMBEDDED_BYTES = 8_000_000


def _figure_payload(data: Mapping[str, Any]) -> dict[str, Any]:
    """What the page applies of figure data (as :func:`ntkbench.plots.apply` does); a key
    outside :class:`ntkbench.plots.FigureData` is a ``ValueError``."""
    plots.check_figure_data(data)
    return {k: data[k] for k in ("sources", "titles", "x_labels", "y_labels", "header", "ranges", "spans") if k in data}


def _control_options(ctl: Any) -> tuple[list[Any], list[str]]:
    if ctl.kind == "checkbox":
        return [False, True], ["off", "on"]
    values = [o[1] if isinstance(o, (tuple, list)) else o for o in ctl.options]
    labels = [str(o[0]) if isinstance(o, (tuple, list)) else str(o) for o in ctl.options]
    return values, labels


def _embedded(chosen: list, data_at: Any) -> dict[str, Any]:
    """The page's data for every combination of the ``chosen`` controls' values: each
    distinct source once in ``table``, each combination's payload naming table rows;
    sources equal in every combination are left out (the figure was built with them)."""
    import itertools

    table: list[Any] = []
    rows: dict[str, int] = {}
    values = []
    for combo in itertools.product(*(range(len(v)) for _, v, _ in chosen)):
        payload = _figure_payload(data_at(combo))
        refs = {}
        for name, cols in payload.get("sources", {}).items():
            text = _js_literal(cols)
            if text not in rows:
                rows[text] = len(table)
                table.append(cols)
            refs[name] = rows[text]
        payload["sources"] = refs
        values.append(payload)
    for name in list(values[0]["sources"]):
        if all(v["sources"].get(name) == values[0]["sources"][name] for v in values[1:]):
            for v in values:
                del v["sources"][name]
    used = sorted({i for v in values for i in v["sources"].values()})
    renumber = {old: new for new, old in enumerate(used)}
    for v in values:
        v["sources"] = {n: renumber[i] for n, i in v["sources"].items()}
    return {
        "table": [table[i] for i in used],
        "values": values,
        "kinds": [c.kind for c, _, _ in chosen],
        "names": [str(c.description or c.name) for c, _, _ in chosen],
        "labels": [labels for _, _, labels in chosen],
        "sizes": [len(v) for _, v, _ in chosen],
    }


def paper_layout(spec: Any, cubes: Mapping[str, Any], settings: Mapping[str, Any], controls: Sequence[Any] = ()) -> Any:
    """A paper figure (a :class:`ntkbench.papers._base.FigureSpec` at ``settings``) for a
    plain browser: the figure with its hover tools and Bokeh widgets for its controls
    (``controls``: :class:`ntkbench.widgets.Control`; the step slider first, then its
    dropdowns, toggles and checkboxes). The figure data of every combination of their
    values is embedded (each distinct data source once) and applied as
    :func:`ntkbench.plots.apply` does. A control is left out, frozen at ``settings``, when
    one of its values changes the figure's layout (another panel grid), when its current
    value is not among its options (None, e.g. no step marker, is added as "none"), or when
    it would pass :data:`MAX_COMBINATIONS`
    combinations or about :data:`MAX_EMBEDDED_BYTES` of data. Returns the layout."""
    import itertools

    from bokeh.layouts import column, row
    from bokeh.models import CheckboxGroup, CustomJS, Div, RadioButtonGroup, Select, Slider

    data0 = spec.data(cubes, settings)
    fig = spec.build(data0)
    key0 = plots.layout_key(data0)
    candidates = [c for c in controls if c.kind in PAPER_CONTROL_KINDS and c.name in spec.control_names]
    candidates.sort(key=lambda c: c.kind != "slider")  # stable: the step slider first

    chosen: list[tuple[Any, list[Any], list[str]]] = []
    computed: dict[str, Any] = {}

    def data_for(trial: list, combo: tuple) -> Any:
        at = {**settings, **{c.name: vals[i] for (c, vals, _), i in zip(trial, combo, strict=True)}}
        k = repr(sorted((n, repr(v)) for n, v in at.items()))
        if k not in computed:
            computed[k] = data0 if at == dict(settings) else spec.data(cubes, at)
        return computed[k]

    for ctl in candidates:
        values, labels = _control_options(ctl)
        current = bool(settings.get(ctl.name)) if ctl.kind == "checkbox" else settings.get(ctl.name)
        if current is None and None not in values:  # e.g. a step slider's "no step marker"
            values, labels = [None, *values], ["none", *labels]
        if len(values) < 2 or current not in values:
            continue
        trial = [*chosen, (ctl, values, labels)]
        if np.prod([len(v) for _, v, _ in trial]) > MAX_COMBINATIONS:
            continue
        combos = itertools.product(*(range(len(v)) for _, v, _ in trial))
        if all(plots.layout_key(data_for(trial, combo)) == key0 for combo in combos):
            chosen = trial
    text = ""
    while chosen:
        embedded = _embedded(chosen, lambda combo, trial=chosen: data_for(trial, combo))
        text = _js_literal(embedded)
        if len(text) <= MAX_EMBEDDED_BYTES or len(chosen) == 1:
            break
        chosen = chosen[:-1]
    if not chosen:
        return plots.fit_width(fig)  # the panels flow into rows that fit the browser window

    widgets, boxes = [], []
    for ctl, values, labels in chosen:
        current = values.index(bool(settings.get(ctl.name)) if ctl.kind == "checkbox" else settings.get(ctl.name))  # noqa: E501
        name = str(ctl.description or ctl.name)
        if ctl.kind == "slider":
            w = Slider(start=0, end=len(values) - 1, value=current, step=1, show_value=False, width=480,
                       title=f"{name} {labels[current]}", name=ctl.name)  # fmt: skip
            boxes.append(w)
        elif ctl.kind == "dropdown":
            w = Select(options=[(str(i), lab) for i, lab in enumerate(labels)], value=str(current), title=name,
                       name=ctl.name, width=360)  # fmt: skip
            boxes.append(w)
        elif ctl.kind == "toggle":
            w = RadioButtonGroup(labels=labels, active=current, name=ctl.name)
            boxes.append(row(Div(text=_escape(name), width=110), w))
        else:
            w = CheckboxGroup(labels=[name], active=[0] if current else [], name=ctl.name)
            boxes.append(w)
        widgets.append(w)
    index = plots.figure_index(fig)
    plots_ = index["plots"]
    cb = CustomJS(
        args=dict(
            key=uuid.uuid4().hex,
            widgets=widgets,
            sources=index["sources"],
            plots=plots_,
            xaxes={n: p.xaxis[0] for n, p in plots_.items() if p.xaxis},
            yaxes={n: p.yaxis[0] for n, p in plots_.items() if p.yaxis},
            header=index["divs"].get("header"),
            mappers=index["mappers"],
            spans=index["spans"],
        ),
        code=_APPLY_JS.replace("DATA", text, 1),
    )
    for w, (ctl, _, _) in zip(widgets, chosen, strict=True):
        w.js_on_change("active" if ctl.kind in ("toggle", "checkbox") else "value", cb)
    # the panels flow into rows that fit the browser window (plots.fit_width)
    layout = column(*boxes, fig, name=f"{getattr(fig, 'name', None) or spec.name}-interactive")
    return plots.fit_width(layout)


def paper_html(
    spec: Any,
    cubes: Mapping[str, Any],
    settings: Mapping[str, Any],
    path: str | os.PathLike,
    controls: Sequence[Any] = (),
) -> Path:
    """Write :func:`paper_layout` as one self-contained HTML file; returns the path."""
    return write_html(paper_layout(spec, cubes, settings, controls), path, title=str(spec.name))
