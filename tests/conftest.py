"""Shared fixtures. Tests compare against independent references, never against numbers
copied from the code under test."""

import itertools
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

from _x64 import enable_x64  # noqa: E402


@pytest.fixture
def getkey():
    """Equinox-style: ``getkey()`` returns a fresh PRNG key each call, deterministic per test."""
    counter = itertools.count()
    base = jax.random.key(1234)
    return lambda: jax.random.fold_in(base, next(counter))


@pytest.fixture
def x64():
    """Run the test body with 64-bit JAX (float64 references)."""
    with enable_x64():
        yield


@pytest.fixture
def trains_nothing(monkeypatch):
    """``trains_nothing()``: from then on, a run that a sweep starts (in-process) fails the
    test. A rerun on a finished sweep's folder must train nothing."""

    def arm():
        import ntkbench.sweep._run as sw_run  # both run loops look _run_to_file up there

        def no_training(run, path, *args):
            raise AssertionError(f"a finished run was trained again: {path}")

        monkeypatch.setattr(sw_run, "_run_to_file", no_training)

    return arm


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_code():
    """Drop JAX's compiled executables after each test module. XLA:CPU maps every compiled
    program's code into memory; one process running the whole suite reached Linux's
    ``vm.max_map_count`` (65 530 mappings: ``test_kernel.py`` alone leaves 26 000), after
    which a compilation segfaulted. ``jax.clear_caches`` releases them (26 000 -> 740)."""
    yield
    import gc

    jax.clear_caches()
    gc.collect()


#: rough seconds per test file on a 2-core CI machine (2026-12-07, `make test`'s slowest
#: tests): files not listed count as short
_FILE_SECONDS = {
    "test_browser.py": 300,
    "test_collective.py": 200,
    "test_notebooks.py": 150,
    "test_scaling_paper.py": 90,
    "test_reliability.py": 80,
    "test_data_paper.py": 70,
    "test_reach_paper.py": 60,
    "test_kernel.py": 60,
    "test_flax.py": 40,
    "test_decoder.py": 40,
    "test_vector_export.py": 35,
    "test_resnet.py": 35,
    "test_train_state.py": 30,
    "test_cli.py": 30,
    "test_lnp.py": 30,
}


def pytest_collection_modifyitems(config, items):
    """Longest test files first. ``make test`` hands whole files to its 2 workers
    (``--dist loadfile``), each taking the next file when it finishes one: in name order a
    long file started last (``test_vector_export.py``, 35 s) left the other worker idle at
    the end; longest first, the last files are the short ones. The order within a file is
    kept (a stable sort)."""
    items.sort(key=lambda item: -_FILE_SECONDS.get(item.path.name, 0))
