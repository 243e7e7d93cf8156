"""How far a float32 run moves on another instruction set: the spread the tolerance of
``ntkbench.testing.assert_cubes_close`` must cover.

XLA's CPU backend can be held below the machine's instruction set
(``XLA_FLAGS=--xla_cpu_max_isa=AVX2``, ``SSE4_2``) and OpenBLAS's LAPACK (the spectra) to
another core type (``OPENBLAS_CORETYPE``): together the kernels another CPU would run.
``python tests/_isa_spread.py ISA CORETYPE`` runs collective's ``test`` config that way in a
subprocess and prints, per variable, the largest difference from the shipped quick cube
(``data/collective_quick.nc``, which the test config reproduces) as a fraction of the
variable's scale, and as the rtol it would need. The numbers are in tests/README.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUN = r"""
import sys
from ntkbench.papers import collective
collective.run(sys.argv[1], config="test", formats=(), progress=False)
"""


def spread(test_cubes, shipped) -> dict[str, tuple[float, float]]:
    """``{group/variable: (max |diff| / max|shipped|, max |diff| / |shipped|)}``."""
    import numpy as np

    pairs = {"mlp": (test_cubes["mlp"], shipped["mlp"])}
    run = test_cubes["scale"]
    pairs["scale"] = (run, shipped["scale"].sel({d: run[d].values for d in ("width", "depth")}))
    out = {}
    for group, (a, d) in pairs.items():
        for name in d.data_vars:
            av, dv = np.asarray(a[name].values, np.float64), np.asarray(d[name].values, np.float64)
            if d[name].dtype.kind != "f":
                continue
            ok = np.isfinite(dv)
            err = np.abs(av[ok] - dv[ok])
            scale = float(np.max(np.abs(dv[ok]))) if ok.any() else 0.0
            rel = err / np.maximum(np.abs(dv[ok]), 1e-30)
            out[f"{group}/{name}"] = (float(err.max() / scale) if scale else 0.0, float(rel.max()) if rel.size else 0.0)
    return out


def main(argv: list[str]) -> int:
    isa = argv[0] if argv else "AVX2"
    coretype = argv[1] if len(argv) > 1 else os.environ.get("OPENBLAS_CORETYPE", "")
    from ntkbench.papers import collective

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, XLA_FLAGS=f"--xla_cpu_max_isa={isa}", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
        if coretype:
            env["OPENBLAS_CORETYPE"] = coretype
        subprocess.run([sys.executable, "-c", RUN, tmp], env=env, check=True)
        cubes = collective.open_cubes(Path(tmp) / "collective.nc")
    shipped = collective.open_cubes(ROOT / "data" / "collective_quick.nc")
    rows = spread(cubes, shipped)
    print(f"max_isa={isa} OPENBLAS_CORETYPE={coretype or '(unset)'}: max |diff| / scale, max |diff| / |value|")
    for key, (of_scale, rel) in sorted(rows.items()):
        print(f"  {key:40s} {of_scale:9.2e} {rel:9.2e}")
    worst = max(rows.items(), key=lambda kv: kv[1][0])
    print(f"worst (of the scale): {worst[0]} {worst[1][0]:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
