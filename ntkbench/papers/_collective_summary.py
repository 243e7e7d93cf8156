"""Paper ``collective``: the numbers its claims rest on (:func:`summarize`) and their
plain-text report (:func:`format_summary`); :mod:`ntkbench.papers.collective` offers both.

Besides the entropy changes per net, the kernel change, Tr K(0) against width and S(0)
against depth, the summary measures F-b2's claim that trajectories group into families by
architecture (:func:`families`): the end points of the runs' trajectories, (ΔS, Δ ln Tr K)
from initialization to the last step, tested for grouping by (activation, depth) with a
permutation test of the between/within dispersion ratio
(:func:`ntkbench.papers._fits.separation_test`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ntkbench import plots
from ntkbench.papers import _base, _fits, _stats

TITLE = "Collective variables of neural networks: empirical time evolution and scaling laws"
_KERNEL_NOTE = "traced eNTK, sum over outputs"
#: F-b2's groupings: name -> the cube dims whose values make one family
#: (``width`` alone is the contrast: the families are not width's)
FAMILY_GROUPINGS: dict[str, tuple[str, ...]] = {
    "activation_depth": ("activation", "depth"),
    "activation_width_depth": ("activation", "width", "depth"),
    "width": ("width",),
}
#: permutations of each family test (p-values resolve down to 1 / 10 000)
N_PERM = 9999


def family_points(ds: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The end points of an MLP cube's trajectories, one row per run (activation, depth,
    width, seed): (ΔS, Δ ln Tr K) = (S(last) − S(0), ln Tr K(last) − ln Tr K(0)) on the
    train probe, shape (n_runs, 2); and each run's value of every grid dim."""
    ds_s = ds["entropy"].isel(step=-1) - ds["entropy"].isel(step=0)
    ds_t = np.log(ds["trace"].isel(step=-1)) - np.log(ds["trace"].isel(step=0))
    dims = [d for d in ("activation", "depth", "width", "seed") if d in ds_s.dims]
    ds_s, ds_t = ds_s.transpose(*dims), ds_t.transpose(*dims)
    grid = np.meshgrid(*[ds_s[d].values for d in dims], indexing="ij")
    labels = {d: g.ravel() for d, g in zip(dims, grid, strict=True)}
    return np.stack([ds_s.values.ravel(), ds_t.values.ravel()], axis=1), labels


def families(ds: Any, *, n_perm: int = N_PERM, seed: int = 0) -> dict[str, Any]:
    """F-b2's claim as a number: do the trajectories' end points (:func:`family_points`)
    group by architecture? For each grouping of :data:`FAMILY_GROUPINGS` the permutation
    test of :func:`ntkbench.papers._fits.separation_test` (pseudo-F = between/within
    dispersion of the z-scored end points, its p-value over ``n_perm`` label shufflings
    with a fixed ``seed``, and R², the share of the dispersion between families). Runs
    with a non-finite end point are left out (``n_points`` says how many remain)."""
    points, labels = family_points(ds)
    ok = np.all(np.isfinite(points), axis=1)
    out: dict[str, Any] = {}
    for name, dims in FAMILY_GROUPINGS.items():
        if not all(d in labels for d in dims):
            continue
        lab = np.array([" ".join(str(labels[d][i]) for d in dims) for i in range(points.shape[0])])
        r = _fits.separation_test(points[ok], lab[ok], n_perm=n_perm, seed=seed)
        out[name] = {k: (_stats.sig(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
    return out


def summarize(cubes: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers the claims rest on, as a JSON-able dict.

    - ``entropy_change``: per MLP (``"relu 8x1"``) the change S(end) − S(0) of the train
      probe per seed, its mean, and how many seeds fell / rose; ``test_entropy_change``
      the same on the test probe;
    - ``kernel_change``: ``kernel_distance_init`` and ``relative_change_init`` at the end
      (seed means);
    - ``loss_ratio``: final / initial training loss, the largest over seeds;
    - ``trace0_vs_width``: log–log slope and R² of Tr K(0) against width per
      (activation, depth), from the ``scale`` cube (seed mean);
    - ``entropy0_vs_depth``: S(0) per depth and the slope of a line fit per
      (activation, width);
    - ``architectures``: the same entropy change for the transformer, CNN (per depth) and
      ResNet-18 (per width) runs;
    - ``families``: F-b2's grouping of the trajectories' end points by architecture
      (:func:`families`: pseudo-F, permutation p-value, R² per grouping).
    """
    mlp = cubes["mlp"]
    out: dict[str, Any] = {"entropy_note": "S in nats, " + _KERNEL_NOTE + "; change = S(last step) - S(0)"}
    entropy_change, test_entropy_change, kernel_change, loss_ratio = {}, {}, {}, {}
    for act in mlp["activation"].values.tolist():
        for d in mlp["depth"].values.tolist():
            for w in mlp["width"].values.tolist():
                sel = mlp.sel(activation=act, depth=d, width=w)
                key = f"{act} {w}x{d}"
                for var, dest in (("entropy", entropy_change), ("test_entropy", test_entropy_change)):
                    dest[key] = _base.change_numbers((sel[var].isel(step=-1) - sel[var].isel(step=0)).values)
                kernel_change[key] = {
                    "kernel_distance_init": _stats.finite(sel["kernel_distance_init"].isel(step=-1).mean(), 5),
                    "relative_change_init": _stats.finite(sel["relative_change_init"].isel(step=-1).mean()),
                }
                ratio = np.atleast_1d((sel["loss"].isel(step=-1) / sel["loss"].isel(step=0)).values)
                loss_ratio[key] = _stats.finite(ratio.max())
    out["entropy_change"] = entropy_change
    out["test_entropy_change"] = test_entropy_change
    out["kernel_change"] = kernel_change
    out["loss_ratio"] = loss_ratio

    scale = cubes.get("scale", mlp)
    tw, sd = {}, {}
    for act in scale["activation"].values.tolist():
        for d in scale["depth"].values.tolist():
            tr0 = _stats.seed_mean(scale["trace"].sel(activation=act, depth=d).isel(step=0))
            widths = scale["width"].values.astype(float)
            a, b, r2 = plots.linear_fit(np.log(widths), np.log(tr0.values))
            tw[f"{act} depth {d}"] = {
                "widths": widths.astype(int).tolist(),
                "trace0": [_stats.sig(v, 5) for v in tr0.values],
                "loglog_slope": _stats.finite(b),
                "r2": _stats.finite(r2),
            }
        for w in scale["width"].values.tolist():
            s0 = _stats.seed_mean(scale["entropy"].sel(activation=act, width=w).isel(step=0))
            depths = scale["depth"].values.astype(float)
            a, b, r2 = plots.linear_fit(depths, s0.values)
            sd[f"{act} width {w}"] = {
                "depths": depths.astype(int).tolist(),
                "entropy0": [_stats.finite(v) for v in s0.values],
                "slope_per_layer": _stats.finite(b),
                "r2": _stats.finite(r2),
            }
    out["trace0_vs_width"] = tw
    out["entropy0_vs_depth"] = sd

    archs = {}
    for arch in ("transformer", "cnn", "resnet"):
        if arch not in cubes:
            continue
        ds = cubes[arch]
        dim = "width" if arch == "resnet" else "depth"  # the ResNet's depth is 18: one entry per width
        for d in ds[dim].values.tolist():
            sel = ds.sel({dim: d})
            if "width" in sel.dims:
                sel = sel.isel(width=0)
            delta = np.atleast_1d((sel["entropy"].isel(step=-1) - sel["entropy"].isel(step=0)).values)
            ratio = np.atleast_1d((sel["loss"].isel(step=-1) / sel["loss"].isel(step=0)).values)
            archs[f"{arch} {dim} {d}"] = {
                "entropy_change_per_seed": [_stats.finite(v) for v in delta],
                "n_rose": int((delta > 0).sum()),
                "n_seeds": int(delta.size),
                "loss_ratio_max": _stats.finite(ratio.max()),
            }
    out["architectures"] = archs
    fam: dict[str, Any] = {"points": "(dS, d ln TrK) from step 0 to the last step, train probe, z-scored"}
    fam.update({name: families(cubes[name]) for name in ("mlp", "scale") if name in cubes})
    out["families"] = fam
    return out


def format_summary(summary: Mapping[str, Any]) -> str:
    """A short plain-text report of :func:`summarize`'s numbers."""
    fmt = _stats.fmt
    lines = _base.summary_head(TITLE, summary.get("entropy_note", ""), summary)
    lines.append("Entropy change over training, train probe (test probe), per MLP activation width x depth:")
    for key, v in summary["entropy_change"].items():
        t = summary["test_entropy_change"][key]
        kc = summary["kernel_change"][key]
        verdict = _base.majority(v, "compression", "structure formation")
        lines.append(
            f"  {key:<12} dS mean {fmt(v['mean'], '+.3f')} (test {fmt(t['mean'], '+.3f')}); fell in {v['n_fell']}/{v['n_seeds']} seeds, "
            f"rose in {v['n_rose']}/{v['n_seeds']} -> {verdict}; kernel distance {fmt(kc['kernel_distance_init'], '.4f')}, "
            f"rel. change {fmt(kc['relative_change_init'], '.3g')}; loss ratio <= {fmt(summary['loss_ratio'][key], '.3f')}"
        )
    lines += ["", "Tr K(0) vs width (log-log fit, seed mean):"]
    for key, v in summary["trace0_vs_width"].items():
        lines.append(
            f"  {key:<16} slope {fmt(v['loglog_slope'], '.3f')}, R^2 {fmt(v['r2'], '.3f')}  (widths {v['widths']}, Tr K(0) {v['trace0']})"
        )
    lines += ["", "Initial entropy S(0) vs depth (line fit; shown, not assumed):"]
    for key, v in summary["entropy0_vs_depth"].items():
        lines.append(
            f"  {key:<16} S(0) = {v['entropy0']} at depths {v['depths']}; slope {fmt(v['slope_per_layer'], '+.3f')} per layer (R^2 {fmt(v['r2'], '.2f')})"
        )
    if summary.get("architectures"):
        lines += ["", "Other architectures (entropy change per seed, train probe):"]
        for key, v in summary["architectures"].items():
            lines.append(
                f"  {key:<20} dS {v['entropy_change_per_seed']}, rose in {v['n_rose']}/{v['n_seeds']}; loss ratio <= {fmt(v['loss_ratio_max'], '.3f')}"
            )
    fam = summary.get("families", {})
    if "mlp" in fam:
        lines += ["", f"F-b2 families: do the trajectories' end points group? ({fam['points']}; permutation test)"]
        for cube_name, key in ((c, k) for c in ("mlp", "scale") for k in FAMILY_GROUPINGS):
            if key in fam.get(cube_name, {}):
                v = fam[cube_name][key]
                lines.append(
                    f"  {cube_name:<5} by {key.replace('_', ', '):<24} pseudo-F {fmt(v['pseudo_f'], '.2f')}, R^2 {fmt(v['r2'], '.2f')}, "
                    f"p = {fmt(v['p_value'], '.4f')} ({v['n_groups']} groups of {v['n_points']} runs, {v['n_perm']} permutations)"
                )
    return "\n".join(lines) + "\n"
