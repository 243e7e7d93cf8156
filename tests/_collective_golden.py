"""What the collective figures and summary looked like before the shared reproduction
layer existed: a canonical digest of every figure at a set of settings, on a fixed input
file (``tests/data/collective_v1.nc``, the shipped quick cube of that version).

``python tests/_collective_golden.py`` writes ``tests/data/collective_golden.json``; it
was run once on the pre-framework code (commit 6d4d354) and the test compares the
current code against that file. One deliberate change since: the four ``b3-*-mid-lnN``
digests were retaken after F-b3's panel titles started naming the entropy / trace variant
they show ("initial entropy S(0) / ln N" where they read "initial entropy S(0)" over
S / ln N values); only those titles differ from the pre-framework figures.

A second deliberate change (issue 25): the F-b2 panels put their legend beside the plot
sized to its labels (``plots.legend_beside``) instead of a fixed 150 px, so those panels
are 518 or 532 px wide instead of 530; nothing else differs (checked field by field).

The file held SHA-256 digests of each canonical figure state until December 2026. A digest
cannot be compared with a tolerance, and the states are numbers NumPy computes: another
CPU's SIMD kernels (AVX-512 vs AVX2, SVML's exp/log) may move a float32 value by an ulp,
and a value at a rounding boundary then changes its 9th digit and the whole digest. The
states themselves are stored now (``--states``, written by the code that reproduced every
stored digest on this machine: the script checks that before writing) and the test
compares them with :func:`assert_states_close`: texts, sizes and scales exactly, numbers to
a relative 1e-6 of their column's scale.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CUBES = HERE / "data" / "collective_v1.nc"
GOLDEN = HERE / "data" / "collective_golden.json"


def _canon(obj):
    """JSON-able form with floats at 9 significant digits (NaN as a string)."""
    if isinstance(obj, dict):
        return {str(k): _canon(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canon(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _canon(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return "nan" if not np.isfinite(v) else float(f"{v:.9g}")
    if isinstance(obj, (np.integer,)):
        return int(obj)
    return obj


def figure_state(fig) -> dict:
    """Header, every named source's columns, per plot (keyed by the sorted names of the
    sources it draws) title, axis labels, scale types, size and flipped x range, colour
    mapper ranges and step-marker spans."""
    from bokeh.models import ColorMapper, ColumnDataSource, Div, GlyphRenderer, Plot, Span

    plots = {}
    for p in fig.select({"type": Plot}):
        names = sorted(r.data_source.name for r in p.renderers if isinstance(r, GlyphRenderer) and r.data_source.name)
        plots["|".join(names)] = {
            "title": p.title.text,
            "x": [a.axis_label for a in p.xaxis],
            "y": [a.axis_label for a in p.yaxis],
            "scales": [type(p.x_scale).__name__, type(p.y_scale).__name__],
            "size": [p.width, p.height],
            "flipped": bool(getattr(p.x_range, "flipped", False)),
        }
    sources = {s.name: dict(s.data) for s in fig.select({"type": ColumnDataSource}) if s.name}
    mappers = sorted((float(m.low), float(m.high)) for m in fig.select({"type": ColorMapper}))
    spans = sorted((str(s.name), float(s.location), bool(s.visible)) for s in fig.select({"type": Span}) if s.name)
    heads = [d.text for d in fig.select({"type": Div})]
    return _canon({"heads": heads, "sources": sources, "plots": plots, "mappers": mappers, "spans": spans})


def cases(collective, cubes) -> dict:
    """name -> a zero-argument function building one figure."""
    mlp, scale = cubes["mlp"], cubes["scale"]
    steps = [int(s) for s in mlp["step"].values]
    mid = steps[len(steps) // 2]
    out = {
        "b1-default": lambda: collective.fig_b1(mlp),
        "b1-tanh-128x6-all": lambda: collective.fig_b1(
            mlp,
            width=128,
            depth=6,
            activation="tanh",
            seed="all",
            entropy="S/lnN",
            trace="TrK/N",
            test=False,
            step_marker=mid,
        ),
        "b1-seed1": lambda: collective.fig_b1(mlp, seed=1, step_marker=steps[3]),
        "b2-default": lambda: collective.fig_b2(mlp),
        "b2-step-seed": lambda: collective.fig_b2(mlp, step=mid, seed=1, entropy="S/lnN", width=128),
        "b2-all-notest": lambda: collective.fig_b2(mlp, seed="all", test=False, trace="TrK/N", activation="tanh"),
        "b4-default": lambda: collective.fig_b4(cubes),
        "b4-all-lnN": lambda: collective.fig_b4(cubes, seed="all", entropy="S/lnN", trace="TrK/N"),
        "b4-seed2-fallback": lambda: collective.fig_b4(cubes, seed=2, missing_seed="mean", test=False),
    }
    for q in ("S0", "TrK0", "final_test_loss", "S", "dS"):
        out[f"b3-{q}"] = lambda q=q: collective.fig_b3(scale, q)
        out[f"b3-{q}-mid-lnN"] = lambda q=q: collective.fig_b3(scale, q, step=mid, entropy="S/lnN", trace="TrK/N")
    out["b3-default-four"] = lambda: collective.fig_b3(scale)
    return out


def digest(state: dict) -> str:
    return hashlib.sha256(json.dumps(state, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def compute(collective, cubes) -> dict:
    """``{"figures": {name: canonical figure state}, "summary": canonical summary}``."""
    figs = {name: figure_state(build()) for name, build in cases(collective, cubes).items()}
    return {"figures": figs, "summary": _canon(collective.summarize(cubes))}


def _flat(values: list) -> list:
    return [x for v in values for x in (_flat(v) if isinstance(v, list) else [v])]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def assert_states_close(got, want, rtol: float = 1e-6, where: str = "", scale: float = 0.0) -> None:
    """``got == want`` for texts, keys, lengths, booleans and "nan"; a float to
    ``|g - w| <= rtol * (|w| + scale)``, ``scale`` the largest magnitude among the numbers
    of the (nested) list it is in (a column, a range), so a value near zero is judged
    against its column's scale.

    rtol 1e-6: the states are 9-digit roundings of float32 cube values through NumPy;
    another CPU's kernels move a float32 result by about 1e-7 of its scale (an ulp); a code
    change that moves a plotted value moves it by far more."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{where}: keys {sorted(got)} vs {sorted(want)}"
        for key in want:
            assert_states_close(got[key], want[key], rtol, f"{where}/{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r:.200} vs {want!r:.200}"
        numbers = [abs(v) for v in _flat(want) if _is_number(v)]
        inner = max(scale, max(numbers, default=0.0))
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_states_close(g, w, rtol, f"{where}[{i}]", inner)
    elif isinstance(want, float) and _is_number(got):
        assert abs(got - want) <= rtol * (abs(want) + scale), f"{where}: {got!r} vs {want!r}"
    else:
        assert got == want and type(got) is type(want), f"{where}: {got!r} vs {want!r}"


if __name__ == "__main__":
    import sys

    from ntkbench.papers import collective

    cubes = collective.open_cubes(CUBES)
    state = compute(collective, cubes)
    if "--check-digests" in sys.argv:
        # the old digests (git show <commit>:tests/data/collective_golden.json) against these states
        old = json.loads(Path(sys.argv[sys.argv.index("--check-digests") + 1]).read_text())
        bad = [name for name, fig in state["figures"].items() if digest(fig) != old["figures"][name]]
        assert not bad and state["summary"] == old["summary"], f"states differ from the digests: {bad}"
        print(f"all {len(state['figures'])} figure states reproduce their stored digests, and the summary")
    GOLDEN.write_text(json.dumps(state, indent=None, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN}")
