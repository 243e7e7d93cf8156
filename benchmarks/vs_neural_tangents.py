"""ntkbench.entk vs neural-tangents 0.6.5's fastest method, and each vs its own naive baseline.

Question: how fast is ``ntkbench.entk`` (method="auto") compared with neural-tangents'
structured derivatives (``empirical_ntk_fn(..., vmap_axes=0, implementation=3)``), on the
same inputs and parameters, and how does each compare with naive vmap(jacrev) + einsum in
its own JAX (so the JAX versions cancel out)?

NT only runs on old JAX, so it lives in ``benchmarks/.nt-env`` (build it with
``benchmarks/nt_env.sh`` / ``make bench-env``). This script writes inputs + parameters to
``benchmarks/_work/*.npz``, then calls ``_nt_worker.py`` (NT env) and ``_ours_worker.py``
(this env) as subprocesses, alternating the two sides (order flipped each round), one
method per process (so peak RSS is per method). Kernels are compared numerically
(NT's traced kernel is an average over outputs; the worker multiplies it by C).

    .venv/bin/python benchmarks/vs_neural_tangents.py                      # everything
    .venv/bin/python benchmarks/vs_neural_tangents.py --models mlp --n 32 128 --outputs trace
    .venv/bin/python benchmarks/vs_neural_tangents.py --ours-method naive  # harness check
    .venv/bin/python benchmarks/vs_neural_tangents.py --flax --n 32 128 512  # the Flax row only

``--flax``: the Flax rows (no NT env needed): the same MLP written as a Flax NNX module
and as a linen module with its variables vs its Equinox twin, all through
``ntkbench.entk``, alternating in rounds, under ``auto`` (all take the structured route:
NNX Linear and linen Dense layers are tapped) and, up to ``--naive-max-n``, under
``jacobian`` (the same route for all, so t_flax / t_eqx is the cost of the Flax adapter
alone: reading the module's arrays, regrouping them, merging the module in the trace).

Columns: t_NT / t_ours = NT's time over ntkbench's (> 1: ntkbench faster); naive_* / * =
each library's speed-up over the naive baseline in its own env; rel.diff = max |K_a − K_b|
/ max |K_b|; RSS = peak resident set of the worker process (MiB).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _bench_models as bm  # noqa: E402

NT_PY = os.path.join(HERE, ".nt-env", "bin", "python")
WORK = os.path.join(HERE, "_work")


def _run(cmd: list[str], timeout: float) -> dict:
    env = dict(os.environ)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if out.returncode != 0:
        lines = [
            ln
            for ln in (out.stderr or out.stdout).strip().splitlines()
            if ln.strip() and not ln.startswith(("For simplicity", "-----", "  "))
        ]
        return {"error": f"exit {out.returncode}: {(lines or ['?'])[-1][:160]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _worker(side: str, method: str, model: str, n: int, outputs: str, save: str | None, args) -> dict:
    data = os.path.join(WORK, f"{model}.npz")
    common = ["--data", data, "--model", model, "--n", str(n), "--outputs", outputs, "--min-total", str(args.min_total)]
    if save:
        common += ["--save", save]
    if side == "nt":
        cmd = [NT_PY, os.path.join(HERE, "_nt_worker.py"), *common, "--method", method]
    else:
        cmd = [sys.executable, os.path.join(HERE, "_ours_worker.py"), *common, "--method", method]
        if method == "entk":
            cmd += ["--entk-method", args.entk_method, "--form", args.form]
    return _run(cmd, args.timeout)


def _rel(a_path: str, b_path: str) -> float | None:
    if not (os.path.exists(a_path) and os.path.exists(b_path)):
        return None
    a, b = np.load(a_path), np.load(b_path)
    if a.shape != b.shape:
        return float("nan")
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _best(results: list[dict]) -> dict:
    ok = [r for r in results if "seconds" in r]
    if not ok:
        return results[-1] if results else {"error": "not run"}
    best = min(ok, key=lambda r: r["seconds"])
    best = dict(best)
    best["rss_peak"] = max(r["rss_peak"] for r in ok)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(bm.MODELS), choices=bm.MODELS)
    ap.add_argument("--n", nargs="+", type=int, default=[32, 128, 512])
    ap.add_argument("--outputs", nargs="+", default=["trace", "full"], choices=("trace", "full"))
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of the fast methods")
    ap.add_argument("--naive-max-n", type=int, default=128, help="skip naive above this N")
    ap.add_argument("--ours-method", default="entk", choices=("entk", "naive"))
    ap.add_argument("--entk-method", default="auto")
    ap.add_argument("--form", default="eqx", choices=("eqx", "apply"))
    ap.add_argument("--min-total", type=float, default=0.3)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", default=os.path.join(WORK, "vs_neural_tangents.json"))
    ap.add_argument(
        "--flax", action="store_true", help="only the Flax rows: the MLP in Flax NNX and linen vs the Equinox one"
    )
    args = ap.parse_args()

    if args.flax:
        _flax_rows(args)
        return
    if not os.path.exists(NT_PY):
        raise SystemExit(f"no neural-tangents env at {NT_PY}: run benchmarks/nt_env.sh (make bench-env)")
    os.makedirs(WORK, exist_ok=True)
    n_max = max(args.n)
    for model in args.models:
        params = bm.init_params(model)
        np.savez(
            os.path.join(WORK, f"{model}.npz"),
            x=bm.make_inputs(model, n_max),
            **{"p_" + k: v for k, v in params.items()},
        )

    rows = []
    for model in args.models:
        for outputs in args.outputs:
            for n in args.n:
                tag = f"{model}_{outputs}_{n}"
                k_nt, k_ours, k_naive = (os.path.join(WORK, f"K_{s}_{tag}.npy") for s in ("nt", "ours", "naive"))
                for p in (k_nt, k_ours, k_naive):
                    if os.path.exists(p):
                        os.remove(p)
                nt_runs, ours_runs = [], []
                for r in range(args.rounds):
                    order = ["nt", "ours"] if r % 2 == 0 else ["ours", "nt"]
                    for side in order:
                        if side == "nt":
                            nt_runs.append(
                                _worker("nt", "structured", model, n, outputs, k_nt if r == 0 else None, args)
                            )
                        else:
                            ours_runs.append(
                                _worker("ours", args.ours_method, model, n, outputs, k_ours if r == 0 else None, args)
                            )
                row = {"model": model, "outputs": outputs, "n": n, "nt": _best(nt_runs), "ours": _best(ours_runs)}
                if n <= args.naive_max_n:
                    row["nt_naive"] = _worker("nt", "naive", model, n, outputs, None, args)
                    row["ours_naive"] = _worker("ours", "naive", model, n, outputs, k_naive, args)
                else:
                    row["nt_naive"] = row["ours_naive"] = {"error": f"skipped (N > {args.naive_max_n})"}
                row["rel_diff_ours_vs_nt"] = _rel(k_ours, k_nt)
                row["rel_diff_naive_vs_nt"] = _rel(k_naive, k_nt)
                rows.append(row)
                _print_row(row)
                sys.stdout.flush()

    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
        "cpu": _cpu_name(),
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "ours_method": args.ours_method,
        "entk_method": args.entk_method,
        "form": args.form,
    }
    for side in ("nt", "ours"):
        for r in rows:
            if "jax" in r[side]:
                meta[f"jax_{side}"] = r[side]["jax"]
                break
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print()
    print(json.dumps(meta))
    print()
    print(_markdown(rows))


def _flax_rows(args) -> None:
    """The Flax rows: ``entk`` of the MLP as its Equinox twin, as a Flax NNX module and as
    ``(linen module, variables)``, the three forms alternating (order rotated each round),
    best time of each; the Flax kernels compared with the Equinox one (rel.diff)."""
    os.makedirs(WORK, exist_ok=True)
    params = bm.init_params("mlp")
    data = os.path.join(WORK, "mlp.npz")
    np.savez(data, x=bm.make_inputs("mlp", max(args.n)), **{"p_" + k: v for k, v in params.items()})
    forms = ("eqx", "flax", "linen")
    header = (
        "| model | outputs | N | entk method | Equinox | Flax NNX | linen | t_nnx / t_eqx | t_linen / t_eqx "
        "| rel.diff NNX, linen |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    print(header)
    for outputs in args.outputs:
        for n in args.n:
            for method in ("auto", "jacobian") if n <= args.naive_max_n else ("auto",):
                runs: dict[str, list[dict]] = {form: [] for form in forms}
                saved = {form: os.path.join(WORK, f"K_{form}_{outputs}_{n}.npy") for form in runs}
                for r in range(args.rounds):
                    for form in forms[r % 3 :] + forms[: r % 3]:
                        cmd = [sys.executable, os.path.join(HERE, "_ours_worker.py"), "--data", data]
                        cmd += ["--model", "mlp", "--n", str(n), "--outputs", outputs, "--method", "entk"]
                        cmd += ["--entk-method", method, "--form", form, "--min-total", str(args.min_total)]
                        if r == 0:
                            cmd += ["--save", saved[form]]
                        runs[form].append(_run(cmd, args.timeout))
                best = {form: _best(runs[form]) for form in forms}
                diffs = ", ".join(_rel_fmt(_rel(saved[form], saved["eqx"])) for form in forms[1:])
                line = (
                    f"| mlp | {outputs} | {n} | {method} | {_fmt_t(best['eqx'])} | {_fmt_t(best['flax'])} "
                    f"| {_fmt_t(best['linen'])} | {_ratio(best['flax'], best['eqx'])} "
                    f"| {_ratio(best['linen'], best['eqx'])} | {diffs} |"
                )
                print(line)
                sys.stdout.flush()
    print()
    print(json.dumps({"machine": f"{platform.node()} {os.cpu_count()} cpus", "cpu": _cpu_name()}))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _fmt_t(r: dict) -> str:
    if "seconds" not in r:
        return r.get("error", "?")
    s = r["seconds"]
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def _ratio(a: dict, b: dict) -> str:
    if "seconds" in a and "seconds" in b:
        return f"{a['seconds'] / b['seconds']:.2f}×"
    return "–"


def _mib(r: dict) -> str:
    return f"{r['rss_peak'] / 2**20:.0f}" if "rss_peak" in r else "–"


def _rel_fmt(v) -> str:
    return "–" if v is None else f"{v:.1e}"


HEADER = (
    "| model | outputs | N | NT structured | ntkbench | t_NT / t_ours | NT naive | ours naive "
    "| naive_NT / NT | naive_ours / ours | rel.diff ours–NT | rel.diff naive–NT | RSS NT / ours (MiB) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _line(row: dict) -> str:
    return (
        f"| {row['model']} | {row['outputs']} | {row['n']} | {_fmt_t(row['nt'])} | {_fmt_t(row['ours'])} "
        f"| {_ratio(row['nt'], row['ours'])} | {_fmt_t(row['nt_naive'])} | {_fmt_t(row['ours_naive'])} "
        f"| {_ratio(row['nt_naive'], row['nt'])} | {_ratio(row['ours_naive'], row['ours'])} "
        f"| {_rel_fmt(row['rel_diff_ours_vs_nt'])} | {_rel_fmt(row['rel_diff_naive_vs_nt'])} "
        f"| {_mib(row['nt'])} / {_mib(row['ours'])} |"
    )


_printed_header = False


def _print_row(row: dict) -> None:
    global _printed_header
    if not _printed_header:
        print(HEADER)
        _printed_header = True
    print(_line(row))


def _markdown(rows: list[dict]) -> str:
    return "\n".join([HEADER, *(_line(r) for r in rows)])


if __name__ == "__main__":
    main()
