"""Argument checks shared by :mod:`ntkbench.data` and :mod:`ntkbench.selection` (private:
not public API). Each raises a ``TypeError``/``ValueError`` that names the argument and
what was expected."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as an ``int >= minimum`` (bools rejected); ``name`` is the argument's name."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_float(value: Any, name: str, minimum: float | None = None) -> float:
    """``value`` as a finite ``float`` (``>= minimum`` when given; bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{name} must be a finite number{bound}, got {value}")
    return value


def check_options(what: str, given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``given``; an option not in ``defaults`` raises ``ValueError``
    naming it and ``what`` takes it (e.g. ``"data set 'digits'"``)."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {what}; allowed: {sorted(defaults)}")
    return {**defaults, **given}
