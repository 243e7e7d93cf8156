"""The examples in the public docstrings run (xarray style)."""

import doctest
import importlib

import pytest

MODULES = [
    "ntkbench",
    "ntkbench.kernel",
    "ntkbench.measures",
    "ntkbench.models",
    "ntkbench.data",
    "ntkbench.selection",
    "ntkbench.plots",
    "ntkbench.testing",
    "ntkbench.widgets",
    "ntkbench.linalg",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
