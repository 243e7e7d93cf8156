"""The engine without the UI: ``pip install ntkbench`` (no extras) into a fresh
environment, as on a dask worker or in a batch job, computes an eNTK, trains, writes and
reads cubes, and runs a sweep, with none of Bokeh, ipywidgets, Jupyter or Selenium there.

The environment is made by uv (a test dependency) from the package index, or from uv's
cache after the first run: about 10 s warm. ``make test-lowest`` does the same at the
lowest versions pyproject.toml allows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UI = ["bokeh", "ipywidgets", "jupyterlab", "jupyter_bokeh", "selenium", "ipykernel", "playwright"]

SCRIPT = r"""
import importlib.util, json, sys
ui = json.loads(sys.argv[1])
present = [m for m in ui if importlib.util.find_spec(m) is not None]
assert not present, f"UI packages installed without the notebooks extra: {present}"
import importlib.resources
assert importlib.resources.files("ntkbench").joinpath("py.typed").is_file(), "py.typed not installed (PEP 561)"

import jax, jax.numpy as jnp, equinox as eqx, optax
import ntkbench as nb
from ntkbench import cube
from ntkbench.sweep import sweep
from ntkbench.train import train

# an eNTK against its closed form: a linear model's eNTK is the Gram matrix of its inputs
x = jax.random.normal(jax.random.key(0), (6, 5))
lin = eqx.nn.Linear(5, 1, use_bias=False, key=jax.random.key(1))
K = nb.entk(lin, x)
assert jnp.allclose(K, x @ x.T, rtol=1e-5, atol=1e-5), "eNTK of a linear model is not the Gram matrix"
lam = nb.spectrum(nb.entk(eqx.nn.MLP(5, 3, 16, 2, key=jax.random.key(2)), x))
assert lam.shape == (6,) and bool(jnp.all(lam[:-1] >= lam[1:]))
S = float(nb.entropy(lam))

data = nb.load("digits", n_train=64, n_test=32)
model = nb.MLP(64, 10, width=16, depth=1, key=jax.random.key(0))
model, ds = train(model, data, optimizer=optax.sgd(0.1), steps=10, batch_size=16,
                  recorder=nb.Recorder(every=5, probe=16), key=jax.random.key(1))
assert ds.sizes["step"] == 3

cfg = {"title": "core", "model": {"name": "mlp", "width": 8}, "data": {"name": "digits", "n_train": 32, "n_test": 16},
       "train": {"steps": 4, "batch_size": 16}, "record": {"every": 2, "probe": 8}, "grid": {"seed": [0, 1]}}
combined = sweep(cfg, sys.argv[2], progress=False)
back = cube.open(sys.argv[2] + "/cube.nc")
assert dict(back.entropy.sizes) == {"seed": 2, "step": 3}, dict(back.entropy.sizes)
assert cube.open(cube.save(back, sys.argv[2] + "/copy.zarr")).sizes == back.sizes
print("core ok", S)
"""


@pytest.mark.slow
def test_engine_without_the_ui_extras(tmp_path):
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if not Path(uv).exists():
        pytest.fail("uv is missing: it is a test dependency (pip install -e '.[test]')")
    venv = tmp_path / "core-venv"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(venv)], check=True, env=env, timeout=300)
    python = venv / "bin" / "python"
    # a copy of the source, so the build writes nothing into the checkout (build/, *.egg-info)
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv",
            ".git",
            "runs",
            "figures",
            "test-artifacts",
            "*.egg-info",
            "build",
            "tests",
            "notebooks",
            "benchmarks",
        ),
    )
    res = subprocess.run(
        [uv, "pip", "install", "-q", "-p", str(python), str(src)], env=env, capture_output=True, text=True, timeout=900
    )
    assert res.returncode == 0, res.stderr
    run = subprocess.run(
        [str(python), "-c", SCRIPT, __import__("json").dumps(UI), str(tmp_path / "sweep")],
        env={**env, "OMP_NUM_THREADS": "1", "JAX_PLATFORMS": "cpu"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "core ok" in run.stdout
