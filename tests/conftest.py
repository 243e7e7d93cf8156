"""Shared fixtures. Tests compare against independent references, never against numbers
copied from the code under test."""

import itertools
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def getkey():
    """Equinox-style: ``getkey()`` returns a fresh PRNG key each call, deterministic per test."""
    counter = itertools.count()
    base = jax.random.key(1234)
    return lambda: jax.random.fold_in(base, next(counter))


@pytest.fixture
def x64():
    """Run the test body with 64-bit JAX (float64 references)."""
    with jax.enable_x64(True):
        yield
