"""Notebook controls described without ipywidgets: seeds, steps, integer lists."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass
class Control:
    """A notebook control described without ipywidgets (so configs, figure defaults and the
    CLI can use it without a notebook); :meth:`widget` makes the ipywidget.

    ``kind``: ``"dropdown"``, ``"toggle"`` (ToggleButtons), ``"checkbox"``, ``"slider"``
    (a SelectionSlider over ``options``), ``"multiple"`` (SelectMultiple), ``"text"``,
    ``"int"`` / ``"float"`` (bounded by ``bounds``). ``options`` are values or
    ``(label, value)`` pairs.

    >>> Control("entropy", "toggle", "S", [("S [nat]", "S"), ("S / ln N", "S/lnN")]).value
    'S'
    """

    name: str
    kind: str
    value: Any
    options: Sequence[Any] = ()
    description: str | None = None
    width: str | None = None
    button_width: str | None = None
    bounds: tuple[float, float] | None = None
    rows: int | None = None

    KINDS = ("dropdown", "toggle", "checkbox", "slider", "multiple", "text", "int", "float")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {self.kind!r}")

    def widget(self) -> Any:
        """A new ipywidget with this control's options and value."""
        import ipywidgets as w

        kw: dict[str, Any] = {"description": self.name if self.description is None else self.description}
        if self.width:
            kw["layout"] = w.Layout(width=self.width)
        if self.kind in ("dropdown", "toggle", "slider", "multiple"):
            kw["options"] = list(self.options)
        if self.kind == "dropdown":
            return w.Dropdown(value=self.value, **kw)
        if self.kind == "toggle":
            style = {"button_width": self.button_width} if self.button_width else {}
            return w.ToggleButtons(value=self.value, style=style, **kw)
        if self.kind == "checkbox":
            return w.Checkbox(value=bool(self.value), **kw)
        if self.kind == "slider":
            return w.SelectionSlider(value=self.value, continuous_update=True, **kw)
        if self.kind == "multiple":
            return w.SelectMultiple(value=tuple(self.value), rows=self.rows or min(max(len(self.options), 2), 6), **kw)
        if self.kind == "text":
            return w.Text(value=str(self.value), **kw)
        lo, hi = self.bounds if self.bounds is not None else (None, None)
        if self.kind == "int":
            return w.BoundedIntText(
                value=int(self.value),
                min=int(lo if lo is not None else 0),
                max=int(hi if hi is not None else 2**31 - 1),
                **kw,
            )
        return w.BoundedFloatText(
            value=float(self.value),
            min=lo if lo is not None else 0.0,
            max=hi if hi is not None else 1e9,
            step=0.01,
            **kw,
        )


def seed_control(
    seeds: Sequence[int],
    *,
    name: str = "seed",
    band: str = "mean ± std",
    every: bool = True,
    description: str = "seeds",
) -> Control:
    """Seed aggregation: ``"mean"`` (``band``), ``"all"`` (every seed, with ``every``) or
    one seed."""
    options: list[tuple[str, Any]] = [(band, "mean")] + ([("every seed", "all")] if every else [])
    options += [(f"seed {int(s)}", int(s)) for s in seeds]
    return Control(name, "dropdown", "mean", options, description=description)


def step_control(
    steps: Sequence[int], value: int | None = None, *, name: str = "step", width: str = "480px"
) -> Control:
    """A step slider over the recorded ``steps`` (default: the first)."""
    steps = [int(s) for s in steps]
    return Control(
        name,
        "slider",
        steps[0] if value is None else int(value),
        [(str(s), s) for s in steps],
        description="step",
        width=width,
    )


def int_list_control(name: str, value: str, *, description: str | None = None) -> Control:
    """A text field for a comma-separated list of integers (widths, depths, seeds); read it
    with :func:`parse_ints`."""
    return Control(name, "text", value, description=description)


def parse_ints(text: str, name: str, *, minimum: int = 1) -> list[int]:
    """The sorted distinct integers of a comma- (or semicolon-) separated ``text``;
    ``ValueError`` naming ``name`` if a value is not an integer or below ``minimum``.

    >>> parse_ints("128, 8; 8", "widths")
    [8, 128]
    """
    try:
        values = [int(t) for t in str(text).replace(";", ",").split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers, got {text!r}") from None
    if not values or any(v < minimum for v in values):
        kind = "non-negative" if minimum == 0 else "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{name} must be comma-separated {kind} integers, got {text!r}")
    return sorted(set(values))
