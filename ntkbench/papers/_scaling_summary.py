"""Paper ``scaling``: the numbers its claims rest on (:func:`summarize`) and their
plain-text report (:func:`format_summary`); :mod:`ntkbench.papers.scaling` offers both.

Fits carry 95 % bootstrap intervals over seeds (:mod:`ntkbench.papers._fits`): the data
laws, the width law on the same task (``width_sp``), and the two-segment fits that locate
(or fail to locate) a transition in the loss or the kernel change against width.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ntkbench import conventions
from ntkbench.papers import _base, _scaling_width, _stats

TITLE = "Beyond Scaling Curves: Internal Dynamics of Neural Networks Through the NTK Lens"


def _interval(fit: Mapping[str, Any]) -> dict[str, Any]:
    """A bootstrap power fit as the summary holds it."""
    keys = ("exponent", "low", "high", "prefactor", "r2")
    return {k: _stats.finite(fit[k]) for k in keys} | {
        "exponent_per_seed": [_stats.finite(v) for v in fit["exponent_per_seed"]],
        "interval": f"{int(100 * fit['level'])} % bootstrap over seeds ({fit['n_boot']} resamples)",
    }


def _break(fit: Mapping[str, Any]) -> dict[str, Any]:
    """A two-segment fit as the summary holds it."""
    out = {k: (_stats.sig(v, 4) if isinstance(v, float) else v) for k, v in fit.items() if k != "log_y_at_break"}
    return out


def _error(ds: Any) -> Any:
    """The test error 1 − accuracy (one metric for both losses)."""
    return ds.assign(test_error=1.0 - ds["test_accuracy"])


def summarize(cubes: Mapping[str, Any]) -> dict[str, Any]:  # noqa: C901 - one section per claim
    """The numbers the claims rest on, as a JSON-able dict.

    - ``data[setup]``: the power-law fit of the final test loss against D (exponent,
      prefactor, R²; also per seed), and the change of the probe set's entropy S and trace
      ratio over training per D (mean ± SE over seeds) with the fraction of (D, seed) runs
      whose entropy rose; ``opposite_entropy_change``: whether the setups' mean entropy
      changes have opposite signs;
    - ``width[parametrization]``: the final relative kernel change per width (mean ± SE),
      its log–log slope and R², whether it falls monotonically, the critical width at a
      tolerance of 0.05, the entropy change, and the test losses of the network and of
      kernel regression with its own K_0 and their gap per width (``gap``), and the
      benefit over the kernel limit, kernel regression with the NTK-parametrization K_0
      of the same width and seed minus the network (``benefit_vs_kernel_limit``), and the
      benefit over the linearized network trained with the same optimizer for the same
      steps (``benefit_vs_linearized``; cubes that record ``linear_test_loss``); the
      two-segment fit of the relative change against width (``transition``);
    - ``data[setup]`` also: the exponent's bootstrap interval (``exponent_low/high``) and
      the test *error* (1 − accuracy) law, one metric for both losses (``error_law``);
      ``same_exponent``: the exponent difference in each setup's own loss and in the test
      error, with the intervals;
    - ``entropy_dynamics[kernel]``: the opposite-dynamics verdict under the full and the
      traced kernel (:func:`ntkbench.papers._scaling_width.entropy_dynamics`);
    - ``width_law`` (``width_sp``): the test loss's power law in width with its interval,
      the data law on the same task (``data_ce``), the network, its linearization trained
      alike and the kernel distance per width, and the two-segment fits of the loss and
      of the kernel distance against width (``transition_loss``, ``transition_kernel``).
    """
    from ntkbench.papers.scaling import (
        _PROBE_NOTES,
        PARAMETRIZATIONS,
        SETUPS,
        benefit,
        change,
        critical_width,
        data_fit,
        width_fit,
    )  # fmt: skip

    first = next((cubes[s] for s in SETUPS if s in cubes), None)
    kernel = _PROBE_NOTES["traced" if first is None else conventions.of_cube(first).kernel]
    out: dict[str, Any] = {"note": f"data experiments: {kernel}; fits on the mean over seeds of the last recorded step"}
    data: dict[str, Any] = {}
    for s in SETUPS:
        if s not in cubes:
            continue
        ds = cubes[s]
        fit = data_fit(ds)
        per_seed = [
            _stats.finite(data_fit(ds.sel(seed=sd))["exponent"]) for sd in ds["seed"].values
        ]  # robustness of the exponent
        ds_change = ds["entropy"].isel(step=-1) - ds["entropy"].isel(step=0)
        tr_ratio = ds["trace"].isel(step=-1) / ds["trace"].isel(step=0)
        data[s] = {
            "label": SETUPS[s][0],
            "exponent": _stats.finite(fit["exponent"]),
            "prefactor": _stats.finite(fit["prefactor"]),
            "r2": _stats.finite(fit["r2"]),
            "exponent_per_seed": per_seed,
            "entropy_change": _stats.mean_se_by(ds_change, "n_train"),
            "entropy_change_mean": _stats.finite(ds_change.mean()),
            "entropy_rose_fraction": _stats.finite(float((ds_change > 0).mean())),
            "trace_ratio": _stats.mean_se_by(tr_ratio, "n_train"),
        }
        law = _scaling_width.data_law(ds)
        data[s]["exponent_low"], data[s]["exponent_high"] = _stats.finite(law["low"]), _stats.finite(law["high"])
        if "test_accuracy" in ds:
            data[s]["error_law"] = _interval(_scaling_width.data_law(_error(ds), "test_error"))
    if len(data) == 2:
        a, b = (data[s]["entropy_change_mean"] for s in SETUPS)
        ea, eb = (data[s]["exponent"] for s in SETUPS)
        out["opposite_entropy_change"] = bool(_stats.as_float(a) * _stats.as_float(b) < 0)
        out["exponent_difference"] = _stats.finite(abs(_stats.as_float(ea) - _stats.as_float(eb)))
        same: dict[str, Any] = {"tolerance": 0.25, "test_loss_difference": out["exponent_difference"]}
        same["test_loss_note"] = "each setup in its own loss (MSE vs cross-entropy): different metrics"
        if all("error_law" in data[s] for s in SETUPS):
            la, lb = (data[s]["error_law"] for s in SETUPS)
            same["test_error_difference"] = _stats.finite(
                abs(_stats.as_float(la["exponent"]) - _stats.as_float(lb["exponent"]))
            )
            same["test_error_intervals_overlap"] = bool(
                _stats.as_float(la["low"]) <= _stats.as_float(lb["high"])
                and _stats.as_float(lb["low"]) <= _stats.as_float(la["high"])
            )
        out["same_exponent"] = same
    out["entropy_dynamics"] = {k: _scaling_width.entropy_dynamics(cubes, k) for k in _scaling_width.KERNELS}
    out["data"] = data
    width: dict[str, Any] = {}
    for p in PARAMETRIZATIONS:
        if p not in cubes:
            continue
        ds = cubes[p]
        rel = change(ds).isel(step=-1)
        means = rel.mean("seed").values
        fit = width_fit(ds)
        gap = benefit(cubes, p, "own")
        lazy_gap = benefit(cubes, p, "lazy")
        d_s = ds["entropy"].isel(step=-1) - ds["entropy"].isel(step=0)
        width[p] = {
            "label": PARAMETRIZATIONS[p][0],
            "relative_change": _stats.mean_se_by(rel, "width"),
            "slope": _stats.finite(fit["exponent"]),
            "slope_r2": _stats.finite(fit["r2"]),
            "monotone": bool(np.all(np.diff(means) < 0)),
            "critical_width_tol_0.05": _stats.finite(critical_width(fit, 0.05), 1),
            "entropy_change": _stats.mean_se_by(d_s, "width"),
            "test_loss": _stats.mean_se_by(ds["test_loss"].isel(step=-1), "width"),
            "kernel_test_loss": _stats.mean_se_by(ds["kernel_test_loss"].isel(step=-1), "width"),
            "gap": _stats.mean_se_by(gap, "width"),
            "benefit_vs_kernel_limit": _stats.mean_se_by(lazy_gap, "width"),
            "transition": _break(_scaling_width.transition(ds, "relative_change_init")),
        }
        if "linear_test_loss" in ds:
            width[p]["linear_test_loss"] = _stats.mean_se_by(ds["linear_test_loss"].isel(step=-1), "width")
            width[p]["benefit_vs_linearized"] = _stats.mean_se_by(benefit(cubes, p, "linear"), "width")
    out["width"] = width
    if "width_sp" in cubes:
        out["width_law"] = _width_law(cubes)
    return out


def _width_law(cubes: Mapping[str, Any]) -> dict[str, Any]:
    ds = cubes["width_sp"]
    final = lambda v: ds[v].isel(step=-1)  # noqa: E731
    out: dict[str, Any] = {
        "label": "MLP depth 2, standard param., Adam, cross-entropy, digits",
        "n_train": int(_base.config_of(ds).get("data", {}).get("n_train", 0)),
        "test_loss_law": _interval(_scaling_width.width_law(ds)),
        "test_loss": _stats.mean_se_by(final("test_loss"), "width"),
        "test_accuracy": _stats.mean_se_by(final("test_accuracy"), "width"),
        "kernel_distance": _stats.mean_se_by(final("kernel_distance_init"), "width"),
        "transition_loss": _break(_scaling_width.transition(ds, "test_loss")),
        "transition_kernel": _break(_scaling_width.transition(ds, "kernel_distance_init")),
    }
    if "data_ce" in cubes:
        out["data_law_same_task"] = _interval(_scaling_width.data_law(cubes["data_ce"]))
    if "linear_test_loss" in ds:
        out["linear_test_loss"] = _stats.mean_se_by(final("linear_test_loss"), "width")
        out["benefit_vs_linearized"] = _stats.mean_se_by(final("linear_test_loss") - final("test_loss"), "width")
    return out


def _law(f: Mapping[str, Any], var: str) -> str:
    fmt = _stats.fmt
    return f"{var}^{fmt(f['exponent'], '.3f')} [{fmt(f['low'], '.3f')}, {fmt(f['high'], '.3f')}] (R² {fmt(f['r2'], '.3f')})"


def _break_text(f: Mapping[str, Any]) -> str:
    fmt = _stats.fmt
    if f.get("break") is None:
        return "too few points for two segments"
    head = f"break at {fmt(f['break'], '.0f')} [{fmt(f['break_low'], '.0f')}, {fmt(f['break_high'], '.0f')}]"
    slopes = (
        f"slopes {fmt(f['slope_below'], '+.2f')} → {fmt(f['slope_above'], '+.2f')}, change in "
        f"[{fmt(f['slope_change_low'], '+.2f')}, {fmt(f['slope_change_high'], '+.2f')}], ΔBIC {fmt(f['delta_bic'], '+.1f')}"
    )
    return f"{'' if f['resolved'] else 'NOT resolved: best '}{head}; {slopes}"


def _format_extra(summary: Mapping[str, Any]) -> list[str]:
    """The report's lines of the issue-30 additions: one metric, both kernels, the width law."""
    fmt = _stats.fmt
    lines: list[str] = []
    same = summary.get("same_exponent")
    if same:
        lines.append(
            f"Same exponent? in each setup's own loss the exponents differ by {fmt(same['test_loss_difference'], '.3f')} "
            f"(tolerance {same['tolerance']}; {same['test_loss_note']})"
        )
        if "test_error_difference" in same:
            errs = ", ".join(
                f"{d['label']} {_law(d['error_law'], 'D')}" for d in summary["data"].values() if "error_law" in d
            )
            lines.append(
                f"  on one metric, test error 1 − accuracy: {errs}; differ by {fmt(same['test_error_difference'], '.3f')}, "
                f"intervals overlap: {same['test_error_intervals_overlap']}"
            )
    for k, e in summary.get("entropy_dynamics", {}).items():
        if e.get("holds") is None:
            lines.append(f"Opposite entropy dynamics, {e['kernel']}: not recorded")
            continue
        m, c = e["data_mse"], e["data_ce"]
        lines.append(
            f"Opposite entropy dynamics, {k} kernel: {e['holds']} (MSE {fmt(m['mean'], '+.3f')} nat, rose in "
            f"{100 * _stats.as_float(m['rose_fraction']):.0f} % of {m['n']} runs; cross-entropy {fmt(c['mean'], '+.3f')} "
            f"nat, rose in {100 * _stats.as_float(c['rose_fraction']):.0f} % of {c['n']} runs)"
        )
    w = summary.get("width_law")
    if w:
        lines += ["", f"Width law, {w['label']}, D = {w['n_train']} (95 % bootstrap intervals over seeds):"]
        lines.append(f"  test loss ∝ {_law(w['test_loss_law'], 'width')}")
        if "data_law_same_task" in w:
            lines.append(f"  data law on the same task (data_ce): test loss ∝ {_law(w['data_law_same_task'], 'D')}")
        lines.append(
            "  test loss per width: " + ", ".join(f"{k}: {fmt(v['mean'], '.4f')}" for k, v in w["test_loss"].items())
        )
        if "benefit_vs_linearized" in w:
            lines.append(
                "  linearized network, same Adam and steps: "
                + ", ".join(f"{k}: {fmt(v['mean'], '.4f')}" for k, v in w["linear_test_loss"].items())
            )
        lines.append(
            "  kernel distance 1 − alignment(K_T, K_0): "
            + ", ".join(f"{k}: {fmt(v['mean'], '.3f')}" for k, v in w["kernel_distance"].items())
        )
        lines.append(f"  transition in the loss: {_break_text(w['transition_loss'])}")
        lines.append(f"  transition in the kernel distance: {_break_text(w['transition_kernel'])}")
    return lines


def format_summary(summary: Mapping[str, Any]) -> str:
    """A short plain-text report of :func:`summarize`'s numbers."""
    fmt = _stats.fmt
    lines = _base.summary_head(TITLE, summary.get("note", ""), summary)
    for d in summary.get("data", {}).values():
        lines.append(
            f"Data scaling, {d['label']}: test loss ∝ D^{fmt(d['exponent'], '.3f')} "
            f"[{fmt(d.get('exponent_low'), '.3f')}, {fmt(d.get('exponent_high'), '.3f')}] (R² {fmt(d['r2'], '.3f')}; "
            f"per seed {d['exponent_per_seed']})"
        )
        lines.append(
            f"  entropy change S_T − S_0, mean {fmt(d['entropy_change_mean'], '+.3f')} nat, rose in "
            f"{100 * _stats.as_float(d['entropy_rose_fraction']):.0f} % of runs; per D: "
            + ", ".join(f"{n}: {fmt(v['mean'], '+.3f')}" for n, v in d["entropy_change"].items())
        )
        lines.append(
            "  trace ratio Tr K_T / Tr K_0 per D: "
            + ", ".join(f"{n}: ×{fmt(v['mean'], '.3g')}" for n, v in d["trace_ratio"].items())
        )
    if "opposite_entropy_change" in summary:
        lines.append(
            f"Opposite entropy changes: {summary['opposite_entropy_change']}; exponents differ by "
            f"{fmt(summary['exponent_difference'], '.3f')}"
        )
    lines.append("")
    for d in summary.get("width", {}).values():
        lines.append(
            f"Width scaling, {d['label']}: relative kernel change ∝ width^{fmt(d['slope'], '.3f')} (R² {fmt(d['slope_r2'], '.3f')}), "
            f"monotone {d['monotone']}, critical width (tol 0.05) ≈ {d['critical_width_tol_0.05']}"
        )
        lines.append(
            "  relative change: " + ", ".join(f"{w}: {fmt(v['mean'], '.4f')}" for w, v in d["relative_change"].items())
        )
        lines.append(
            "  test loss network / kernel(K_0): "
            + ", ".join(
                f"{w}: {fmt(d['test_loss'][w]['mean'], '.4f')} / {fmt(d['kernel_test_loss'][w]['mean'], '.4f')}"
                for w in d["test_loss"]
            )
        )
        lines.append(
            "  benefit of feature learning (kernel with own K_0 − network): "
            + ", ".join(f"{w}: {fmt(v['mean'], '+.4f')}±{fmt(v['se'], '.4f')}" for w, v in d["gap"].items())
        )
        lines.append(
            "  benefit over the kernel limit (kernel with NTK-param. K_0 − network): "
            + ", ".join(
                f"{w}: {fmt(v['mean'], '+.4f')}±{fmt(v['se'], '.4f')}" for w, v in d["benefit_vs_kernel_limit"].items()
            )
        )
        if "benefit_vs_linearized" in d:
            lines.append(
                "  benefit over the linearized network trained alike (same optimizer, same steps): "
                + ", ".join(
                    f"{w}: {fmt(v['mean'], '+.4f')}±{fmt(v['se'], '.4f')}"
                    for w, v in d["benefit_vs_linearized"].items()
                )
            )
        lines.append(f"  transition in the relative change: {_break_text(d['transition'])}")
    lines += _format_extra(summary)
    return "\n".join(lines) + "\n"
