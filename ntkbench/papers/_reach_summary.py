"""The ``reach`` paper's numbers: :func:`summarize` (the numbers the claims rest on) and
:func:`format_summary` (their plain-text report). The paper's constants and figure helpers
are read from :mod:`ntkbench.papers.reach` when called (it imports this module)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ntkbench.papers import _base, _reach_power, _stats
from ntkbench.papers._base import compute, n_params

__all__ = ["summarize", "format_summary"]


def _fit_numbers(f: tuple[float, float, float] | None) -> dict[str, Any] | None:
    """A power-law fit ``(a, b, r2)`` as the summary holds it (None: no fit)."""
    return None if f is None else {"a": _stats.sig(f[0]), "b": _stats.finite(f[1], 4), "r2": _stats.finite(f[2], 4)}


def _per_seed(da: Any) -> list[float | None]:
    return [_stats.sig(v) for v in np.atleast_1d(np.asarray(da.values, float))]


def _early_index(steps: np.ndarray) -> int:
    """The "early" record: the first recorded step ≥ 1 (step 0 is the initialization)."""
    idx = np.flatnonzero(steps >= 1)
    return int(idx[0]) if idx.size else 0


def summarize(cubes: Mapping[str, Any], fit_from: float = 0.1) -> dict[str, Any]:
    """The numbers the claims rest on, as a JSON-able dict.

    - ``scaling[data_set]``: per width the parameter count, the final loss per seed, the
      power-law fit of the seed-mean loss against compute (exponent ``b``, ``r2``; steps ≥
      ``fit_from`` × last), χ_pos early (first step ≥ 1) and at the end per seed; the fit of
      the compute frontier; whether the largest model ends with lower loss than the
      smallest (``largest_lower_loss``) and lower χ_pos (``largest_lower_pos``, reported);
      the identity's largest relative error;
    - ``rf``: per features and width, the loss ratio end / at 10 % of the steps (per
      seed; near 1 = a plateau), χ_net at the start and the end, χ_pos early and at the
      end, the median eigen-index of w_k early and at the end, and the largest relative
      difference of χ_pos from the eigenpairs and the kernel-free χ_pos;
    - ``size_claim[data_set]`` (cubes of 3 or more widths and 3 or more seeds, e.g. the
      ``power`` config): :func:`ntkbench.papers._reach_power.size_claim`, the slope of the
      final χ_pos (and loss) against non-embedding size with its bootstrap interval.
    """
    from ntkbench.papers.reach import LM_SETS, _fit_mask, median_index

    out: dict[str, Any] = {
        "note": "compute C = 6·N·D (N every parameter, D tokens seen); early = first recorded step ≥ 1"
    }
    scaling: dict[str, Any] = {}
    for key in LM_SETS:
        if key not in cubes:
            continue
        ds = cubes[key]
        steps = np.asarray(ds["step"].values, float)
        early = _early_index(steps)
        fit_at = _fit_mask(steps, fit_from)
        per: dict[str, Any] = {}
        curves = []
        for w in ds["width"].values.tolist():
            sub = ds.sel(width=w)
            c = compute(ds, w)
            mean = np.asarray(_stats.seed_mean(sub[_reach_power.loss_of(ds)]).values, float)
            curves.append((c[fit_at], mean[fit_at]))
            f = _stats.power_fit(c[fit_at], mean[fit_at])
            pos = sub["spectral_position"]
            per[str(int(w))] = {
                "n_params": n_params(ds, w),
                "final_loss": _per_seed(sub[_reach_power.loss_of(ds)].isel(step=-1)),
                "fit": _fit_numbers(f),
                "pos_early": _per_seed(pos.isel(step=early)),
                "pos_end": _per_seed(pos.isel(step=-1)),
                "pos_fell": int(np.sum(np.asarray(pos.isel(step=-1).values) < np.asarray(pos.isel(step=early).values))),
                "n_seeds": int(sub.sizes.get("seed", 1)),
            }
        fx, fy = _stats.frontier(curves)
        f = _stats.power_fit(fx, fy)
        widths = [str(int(w)) for w in ds["width"].values]
        small, large = per[widths[0]], per[widths[-1]]
        ident = ds["chi_loss"] * ds["chi_net"] * ds["spectral_position"] / ds["grad_norm_sq"] - 1
        if ds.sizes["width"] >= 3 and ds.sizes.get("seed", 1) >= 3:
            out.setdefault("size_claim", {})[key] = _reach_power.size_claim(ds)
        scaling[key] = {
            "widths": per,
            "frontier": _fit_numbers(f),
            "largest_lower_loss": bool(_stats.mean_of(large["final_loss"]) < _stats.mean_of(small["final_loss"])),
            "largest_lower_pos": bool(_stats.mean_of(large["pos_end"]) < _stats.mean_of(small["pos_end"])),
            "identity_max_rel_error": _stats.sig(float(np.nanmax(np.abs(ident.values)))),
            "chi_net_rel_se_max": _stats.sig(float(np.nanmax((ds["chi_net_se"] / ds["chi_net"]).values)))
            if "chi_net_se" in ds
            else None,
        }
    out["scaling"] = scaling
    if "rf" in cubes:
        ds = cubes["rf"]
        steps = np.asarray(ds["step"].values, float)
        early = _early_index(steps)
        i10 = int(np.abs(steps - 0.1 * steps.max()).argmin())
        rf: dict[str, Any] = {}
        for feat in ds["features"].values.tolist():
            row: dict[str, Any] = {}
            for w in ds["width"].values.tolist():
                sub = ds.sel(features=feat, width=w)
                loss = sub["loss"]
                wk = sub["residual_weights"]
                wk = wk if "seed" in wk.dims else wk.expand_dims("seed")
                med = median_index(wk.transpose("seed", "step", "eigen_index").values)  # (seed, step)
                eig_diff = np.abs(sub["spectral_position_eig"] / sub["spectral_position"] - 1)
                row[str(int(w))] = {
                    "loss_ratio_late": _per_seed(loss.isel(step=-1) / loss.isel(step=i10)),
                    "final_loss": _per_seed(loss.isel(step=-1)),
                    "chi_net_start": _per_seed(sub["chi_net"].isel(step=0)),
                    "chi_net_end": _per_seed(sub["chi_net"].isel(step=-1)),
                    "pos_early": _per_seed(sub["spectral_position"].isel(step=early)),
                    "pos_end": _per_seed(sub["spectral_position"].isel(step=-1)),
                    "median_k_early": [int(v) if np.isfinite(v) else None for v in med[:, early]],
                    "median_k_end": [int(v) if np.isfinite(v) else None for v in med[:, -1]],
                    "pos_eig_max_rel_diff": _stats.sig(float(np.nanmax(eig_diff.values))),
                }
            rf[feat] = row
        out["rf"] = {"steps": int(steps.max()), "loss_ratio_from_step": int(steps[i10]), "runs": rf}
    return out


def format_summary(summary: Mapping[str, Any]) -> str:
    """A short plain-text report of :func:`summarize`'s numbers."""
    from ntkbench.papers.reach import LM_SETS, TITLE

    lines = _base.summary_head(TITLE, summary.get("note", ""), summary)
    for key, c in summary.get("size_claim", {}).items():
        lines += _reach_power.format_size_claim(LM_SETS.get(key) or key, c)
    for key, s in summary.get("scaling", {}).items():
        lines.append(f"F-d1 {LM_SETS.get(key, key)}: loss vs compute, power-law fits L = a·C^b")
        for w, v in s["widths"].items():
            fit = v["fit"] or {}
            lines.append(
                f"  width {w:>4} ({v['n_params']:>7} params): b = {fit.get('b')}, R² = {fit.get('r2')}; final loss "
                f"{_stats.mean_of(v['final_loss']):.4f}; χ_pos early {_stats.mean_of(v['pos_early']):.3g} -> end {_stats.mean_of(v['pos_end']):.3g} "
                f"(fell in {v['pos_fell']}/{v['n_seeds']} seeds)"
            )
        fr = s["frontier"] or {}
        lines.append(f"  compute frontier: b = {fr.get('b')}, R² = {fr.get('r2')}")
        lines.append(
            f"  largest model ends with lower loss: {s['largest_lower_loss']}; with lower χ_pos (reported, not claimed "
            f"at this scale): {s['largest_lower_pos']}"
        )
        lines += [
            f"  identity ‖∇L‖² = χ_loss·χ_net·χ_pos: largest relative error {s['identity_max_rel_error']}; "
            f"Hutchinson χ_net relative standard error up to {s['chi_net_rel_se_max']}",
            "",
        ]
    if "rf" in summary:
        r = summary["rf"]
        lines.append(
            f"F-d3/F-d4 random-feature model ({r['steps']} steps; loss ratio = loss at the end / at step {r['loss_ratio_from_step']})"
        )
        for feat, row in r["runs"].items():
            for w, v in row.items():
                lines.append(
                    f"  {feat:>7} width {w:>4}: loss ratio {_stats.mean_of(v['loss_ratio_late']):.3f}, final loss "
                    f"{_stats.mean_of(v['final_loss']):.3g}; χ_net {_stats.mean_of(v['chi_net_start']):.3g} -> {_stats.mean_of(v['chi_net_end']):.3g}; "
                    f"χ_pos {_stats.mean_of(v['pos_early']):.3g} -> {_stats.mean_of(v['pos_end']):.3g}; median k of w_k "
                    f"{v['median_k_early']} -> {v['median_k_end']}; eigenpair vs kernel-free χ_pos: {v['pos_eig_max_rel_diff']}"
                )
    return "\n".join(lines) + "\n"
