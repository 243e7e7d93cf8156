"""ntkbench: a Jupyter workbench for studying how neural networks learn through the
spectrum of their empirical neural tangent kernel (eNTK).

The whole public API is listed here. Names are imported lazily on first use, so
``import ntkbench`` stays fast and does not pull in JAX, xarray or Bokeh until needed.

Example
-------
>>> import jax, equinox as eqx, ntkbench as nb
>>> model = eqx.nn.MLP(4, 3, 16, 2, key=jax.random.key(0))
>>> x = jax.random.normal(jax.random.key(1), (5, 4))
>>> K = nb.entk(model, x)
>>> K.shape
(5, 5)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # kernel/
    "entk": "kernel",
    "entk_diag": "kernel",
    # measures.py
    "spectrum": "measures",
    "entropy": "measures",
    "trace": "measures",
    "effective_rank": "measures",
    "kernel_alignment": "measures",
    "kernel_distance": "measures",
    "relative_change": "measures",
    "residual_projection": "measures",
    "cosine_normalize": "measures",
    "magnitude_entropy": "measures",
    "kernel_regression": "measures",
    "lnp": "measures",
    "LNP": "measures",
    "flatten_full": "measures",
    # linalg.py
    "top_eigenvalues": "linalg",
    "entropy_estimate": "linalg",
    "kernel_matvec": "linalg",
    "gram_matrix": "linalg",
    # models.py
    "MLP": "models",
    "CNN": "models",
    "TinyTransformer": "models",
    "RandomFeatures": "models",
    "make_model": "models",
    "count_params": "models",
    # decoder.py
    "Decoder": "decoder",
    "non_embedding_params": "decoder",
    # resnet.py
    "ResNet18": "resnet",
    # data.py
    "load": "data",
    "Dataset": "data",
    "from_arrays": "data",
    "load_idx": "data",
    "load_cifar10": "data",
    "load_npz": "data",
    # selection.py
    "select": "selection",
    # train/
    "train": "train",
    "Recorder": "train",
    "Watch": "train",
    "Measure": "train",
    "linearized_test_predictions": "train",
    "calibrate_batchnorm": "train",
    # cube.py
    "save": "cube",
    "open_cube": "cube",
    "combine": "cube",
    "validate": "cube",
    # sweep/
    "sweep": "sweep",
    "run_one": "sweep",
    "validate_config": "sweep",
    # widgets/
    "Explorer": "widgets",
    "RunPanel": "widgets",
}

# Public functions that share their module's name: ``nb.sweep`` and ``nb.train`` are the
# modules ``ntkbench.sweep`` and ``ntkbench.train``, made callable as their function
# (ntkbench._callable says why), so the name is one object whatever was imported first.
_MODULE_FUNCTIONS = frozenset({"sweep", "train"})

__all__ = sorted(_EXPORTS) + ["__version__"]  # pyright: ignore[reportUnsupportedDunderAll]  derived from _EXPORTS


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ntkbench' has no attribute {name!r}")
    imported = importlib.import_module(f"ntkbench.{module}")
    value = imported if name in _MODULE_FUNCTIONS else getattr(imported, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
