"""Checks every paper's tests share (not collected: no ``test_`` prefix)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def without_first_seed(cubes: dict[str, Any]) -> dict[str, Any]:
    """The cubes with every value of their first seed set to NaN (as a diverged run is)."""
    return {k: ds.where(ds["seed"] != ds["seed"].values[0]) if "seed" in ds.dims else ds for k, ds in cubes.items()}


def assert_summary_is_strict_json(paper: ModuleType, summary_json: Path, test_cubes: Any, shipped: Any) -> None:
    """Every number of ``paper``'s summary is finite or None (never NaN), so summary.json is
    strict JSON: on the test run's cubes, the shipped ones, and the shipped ones with a run
    left out (NaN); and the ``summary.json`` a reproduction wrote parses without NaN tokens."""
    for cubes in (test_cubes, shipped, without_first_seed(shipped)):
        summary = paper.summarize(cubes)
        json.dumps(summary, allow_nan=False)
        paper.format_summary(summary)
    json.loads(summary_json.read_text(), parse_constant=lambda token: pytest.fail(f"{token} in summary.json"))
