"""The examples in the docstrings run (xarray style). Every module of the package is
found by walking it, not listed, so a new module's examples run without anyone adding it
here. An example that cannot run in a test (it trains for minutes, opens a browser or
needs a user's file) is marked ``# doctest: +SKIP`` in its docstring, with the reason in
the text around it."""

import doctest
import importlib
import pkgutil

import pytest

import ntkbench

MODULES = sorted(
    ["ntkbench", *(m.name for m in pkgutil.walk_packages(ntkbench.__path__, prefix="ntkbench."))],
)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _examples(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder().find(module, name)
    return [t for t in tests if t.examples]


def test_every_module_is_found():
    """The walk finds the package's modules (a broken walk would silently test nothing)."""
    for name in ("ntkbench.kernel", "ntkbench.sweep", "ntkbench.train", "ntkbench.cube", "ntkbench.papers.collective"):
        assert name in MODULES, MODULES
    assert sum(len(_examples(name)) for name in MODULES) >= 100


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in _examples(name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} example(s) of {name} failed (output above)"
