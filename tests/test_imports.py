"""Every public name of ``ntkbench`` works after any import order.

``nb.sweep`` and ``nb.train`` share their names with the modules ``ntkbench.sweep`` and
``ntkbench.train`` (``ntkbench._callable`` says how they stay callable). Each order runs in a
fresh interpreter, because an import order is a property of a process: in this pytest
process every submodule is long imported.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
import textwrap

import pytest

import ntkbench

# Small enough to train in seconds: a width-8 MLP on 32 digits, two recorded steps.
CONFIG = {
    "title": "imports",
    "seed": 0,
    "model": {"name": "mlp", "width": 8, "depth": 1},
    "data": {"name": "digits", "n_train": 32, "n_test": 16},
    "train": {"optimizer": "sgd", "lr": 0.1, "steps": 2, "batch_size": 16},
    "record": {"every": 1, "probe": 8},
    "grid": {"seed": [0]},
}

CALLS = f"""
import inspect, json, sys, tempfile
import jax, optax
import ntkbench as nb
config = json.loads({json.dumps(json.dumps(CONFIG))})
assert callable(nb.sweep) and callable(nb.train), (nb.sweep, nb.train)
assert "config" in inspect.signature(nb.sweep).parameters, inspect.signature(nb.sweep)
assert "model" in inspect.signature(nb.train).parameters, inspect.signature(nb.train)
with tempfile.TemporaryDirectory() as out:
    ds = nb.sweep(config, out, progress=False)
    assert ds.sizes["step"] == 3, ds.sizes
data = nb.load("digits", n_train=32, n_test=16)
model = nb.MLP(64, 10, width=8, depth=1, key=jax.random.key(0))
recorder = nb.Recorder(every=1, probe=8, measures=["trace", "loss"])
model, ds = nb.train(model, data, optimizer=optax.sgd(0.1), steps=2, recorder=recorder, key=jax.random.key(0))
assert ds["trace"].sizes["step"] == 3, ds
print("ok")
"""

ORDERS = {
    # the order the issue reported: a submodule import first, then the package's function
    "from ntkbench.sweep import live_cube": "from ntkbench.sweep import live_cube",
    "import ntkbench.sweep as sw": "import ntkbench.sweep as sw; assert callable(sw.live_cube)",
    "import ntkbench.train": "import ntkbench.train; from ntkbench.train import Recorder",
    "from ntkbench import sweep, train": "from ntkbench import sweep, train",
    "nothing first": "",
}


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("first", list(ORDERS), ids=list(ORDERS))
def test_sweep_and_train_are_callable_after_any_import_order(first):
    assert _run(ORDERS[first] + "\n" + CALLS).strip().endswith("ok")


def test_every_public_name_is_its_definition_after_every_submodule_is_imported():
    # Import every submodule first (what a long notebook session ends up doing), then check
    # each public name: a function or class is the object its module defines; sweep and
    # train are their callable modules, whose call is the function.
    modules = sorted(m.name for m in pkgutil.walk_packages(ntkbench.__path__, "ntkbench.") if ".papers." not in m.name)
    code = textwrap.dedent(f"""
        import importlib, json
        for name in {modules!r}:
            importlib.import_module(name)
        import ntkbench as nb
        from ntkbench._callable import CallableModule
        bad = []
        for name in nb.__all__:
            if name == "__version__":
                continue
            value = getattr(nb, name)
            home = importlib.import_module("ntkbench." + nb._EXPORTS[name])
            if name in nb._MODULE_FUNCTIONS:
                ok = value is home and isinstance(value, CallableModule) and callable(getattr(home, name))
            else:
                ok = value is getattr(home, name) and (callable(value) or isinstance(value, type))
            if not ok:
                bad.append(name)
        print(json.dumps(bad))
    """)
    assert json.loads(_run(code).strip().splitlines()[-1]) == []


def test_a_module_made_callable_needs_its_function():
    import types

    from ntkbench._callable import make_callable

    module = types.ModuleType("ntkbench_test_fake.thing")
    sys.modules[module.__name__] = module
    try:
        with pytest.raises(TypeError, match="no function 'thing'"):
            make_callable(module.__name__)
        module.thing = lambda x, *, y=1: x + y  # type: ignore[attr-defined]
        make_callable(module.__name__)
        assert module(1, y=2) == 3  # type: ignore[operator]
        import inspect

        assert list(inspect.signature(module).parameters) == ["x", "y"]  # type: ignore[arg-type]
    finally:
        del sys.modules[module.__name__]
