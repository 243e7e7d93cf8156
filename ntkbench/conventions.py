"""Kernel conventions: which matrix a recorded spectral measure is of, and how it is scaled.

Two numbers called "the eNTK entropy" are only comparable when they measure the same
thing. The papers' authors used different kernels and normalisations over the years (see
``docs/papers/``), so a recording states its convention, and every figure shows it:

``kernel``
    ``"traced"``: the N × N kernel, traced over the C outputs,
    K_ij = Σ_c ⟨∂f_c(x_i)/∂θ, ∂f_c(x_j)/∂θ⟩ (ntkbench's default; the earlier papers).
    ``"full"``: the (N·C) × (N·C) kernel of every output pair, flattened sample-major
    (:func:`ntkbench.flatten_full`; the authors' later code). Its spectrum has N·C
    eigenvalues.
``normalize``
    ``"none"``, or ``"cosine"``: K_ij / √(K_ii K_jj) before the spectrum (the 2022 data
    selection code). Applies to the spectral measures only: the trace of a cosine-normalised
    kernel is its size, so traces are always of the kernel itself.
``effective``
    ``False``: the entropy S in nats; ``True``: S / ln(size) in [0, 1] ("effective" entropy).
``trace_normalize``
    ``False``: Tr K; ``True``: Tr K / size, as papyrus reports it (size N or N·C).
``output_reduction``
    How the traced kernel combines the C outputs: ``"sum"`` (ntkbench) or ``"mean"``
    (neural-tangents' ``trace_axes``, and so the authors' ZnNL code): the mean's kernel is the
    sum's divided by C. Entropies do not depend on it; traces do, by the factor C. A full
    kernel reduces nothing, so it must stay ``"sum"``.

A cube variable recorded under a convention carries it in its attributes
(:meth:`Convention.attrs`, keys ``ntk_*``); :func:`of` reads it back (a cube written before
conventions existed reads as the default) and :meth:`Convention.describe` writes the label
a figure shows.

Example
-------
>>> from ntkbench.conventions import Convention
>>> c = Convention(kernel="full", trace_normalize=True)
>>> c.describe("entropy"), c.describe("trace")
('S of the full eNTK', 'Tr K / (N·C) of the full eNTK')
>>> Convention(normalize="cosine", effective=True).describe("entropy")
'S / ln N of the cosine-normalised eNTK'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal, TypeAlias

from ntkbench import _variables

__all__ = [
    "Convention",
    "DEFAULT",
    "KERNEL_FULL_MAX",
    "of",
    "of_cube",
    "SPECTRAL",
    "TRACES",
    "ENTROPIES",
    "KERNEL_MEASURES",
    "LNP_MEASURES",
]

KernelKind: TypeAlias = Literal["traced", "full"]
Normalize: TypeAlias = Literal["none", "cosine"]
OutputReduction: TypeAlias = Literal["sum", "mean"]

#: The largest full kernel (N·C rows) a recording forms densely: its eigendecomposition at
#: every record costs about (N·C)³ / 3 flops and 3·(N·C)² floats (4096: 20 Gflop, 200 MB).
KERNEL_FULL_MAX = 4096

#: measures of the probe (or test-probe) kernel's spectrum: they follow ``normalize``
SPECTRAL = frozenset(
    {
        "eigenvalues",
        "entropy",
        "entropy_normalized",
        "effective_rank",
        "test_entropy",
        "test_entropy_normalized",
        "residual_weights",
        "spectral_position_eig",
    }
)
#: traces: they follow ``trace_normalize`` and ``output_reduction`` (never ``normalize``)
TRACES = frozenset({"trace", "test_trace", "trace_per_sample", "test_trace_per_sample"})
#: entropies in nats: they follow ``effective``
ENTROPIES = frozenset({"entropy", "test_entropy"})
#: the LNP measures: kernel-free, of the probe or of the training batch (``lnp_batch``), not
#: of the kernel a convention describes
LNP_MEASURES = frozenset({"spectral_position", "chi_loss", "chi_net", "chi_net_se", "grad_norm_sq"})
#: every measure of the probe kernel (the table's kernel-derived variables but the LNP ones):
#: its attributes state the convention. Those not in SPECTRAL or TRACES compare or weigh the
#: kernel itself (never cosine-normalised).
KERNEL_MEASURES = _variables.KERNEL_VARIABLES - LNP_MEASURES

_FIELDS = ("kernel", "normalize", "effective", "trace_normalize", "output_reduction")


@dataclasses.dataclass(frozen=True)
class Convention:
    """The kernel convention of a recording (see the module docstring for each field)."""

    kernel: KernelKind = "traced"
    normalize: Normalize = "none"
    effective: bool = False
    trace_normalize: bool = False
    output_reduction: OutputReduction = "sum"

    def __post_init__(self) -> None:
        choices = {"kernel": ("traced", "full"), "normalize": ("none", "cosine"), "output_reduction": ("sum", "mean")}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if not isinstance(value, str) or value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        for name in ("effective", "trace_normalize"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.kernel == "full" and self.output_reduction != "sum":
            raise ValueError("output_reduction: a full kernel reduces no outputs; use 'sum' (the default) with it")

    # ------------------------------------------------------------------ the matrices

    @property
    def entk_outputs(self) -> str:
        """The ``outputs`` argument of :func:`ntkbench.entk` this convention needs."""
        return "full" if self.kernel == "full" else "trace"

    def size(self, n: int, n_outputs: int) -> int:
        """Rows of the kernel the measures see: N, or N·C for the full kernel."""
        return n * n_outputs if self.kernel == "full" else n

    def check_size(self, n: int, n_outputs: int, *, name: str = "probe") -> None:
        """Refuse, before anything trains, a full kernel too large to form at every record."""
        size = self.size(n, n_outputs)
        if self.kernel == "full" and size > KERNEL_FULL_MAX:
            raise ValueError(
                f"{name}: the full eNTK of {n} samples × {n_outputs} outputs has {size} rows, more than "
                f"{KERNEL_FULL_MAX} to form and diagonalise at every record (~{size**3 / 3e9:.0f} Gflop each). "
                f"Use a smaller {name}, kernel = 'traced', or the kernel-free measures (chi_net, "
                "spectral_position: ntkbench.lnp; ntkbench.top_eigenvalues and ntkbench.entropy_estimate "
                "on a saved model)"
            )

    def matrix(self, K: Any, n_outputs: int) -> Any:
        """The kernel as the measures see it, square: a full (N, N, C, C) kernel from
        ``entk(..., outputs="full")`` flattened sample-major to (N·C, N·C); a traced (N, N)
        kernel (summed over the C = ``n_outputs`` outputs) as it is, or divided by C for
        ``output_reduction="mean"``."""
        if self.kernel == "full":
            from ntkbench.measures import flatten_full

            return flatten_full(K)
        return K / n_outputs if self.output_reduction == "mean" else K

    def spectral(self, M: Any) -> Any:
        """The matrix whose spectrum the spectral measures use: ``M`` or its cosine
        normalisation (:func:`ntkbench.cosine_normalize`)."""
        if self.normalize == "none":
            return M
        from ntkbench.measures import cosine_normalize

        return cosine_normalize(M)

    def entropy(self, S: Any, size: int) -> Any:
        """S in nats, or S / ln(size) when ``effective``."""
        import math

        return S / math.log(size) if self.effective else S

    def trace(self, T: Any, size: int) -> Any:
        """Tr K, or Tr K / size when ``trace_normalize``."""
        return T / size if self.trace_normalize else T

    # ------------------------------------------------------------------ attributes and labels

    @property
    def is_default(self) -> bool:
        return self == DEFAULT

    def attrs(self) -> dict[str, str]:
        """Variable attributes naming the convention (strings: netCDF has no booleans)."""
        return {
            "ntk_kernel": self.kernel,
            "ntk_normalize": self.normalize,
            "ntk_effective": "true" if self.effective else "false",
            "ntk_trace_normalize": "true" if self.trace_normalize else "false",
            "ntk_output_reduction": self.output_reduction,
        }

    def for_measure(self, name: str) -> dict[str, str]:
        """The attributes that matter for the measure ``name`` (all of them for a kernel
        measure; nothing for a loss or accuracy)."""
        return self.attrs() if name in KERNEL_MEASURES else {}

    def units(self, name: str, units: str) -> str:
        """The units of measure ``name`` (whose default units are ``units``): an effective
        entropy is dimensionless."""
        return "1" if self.effective and name in ENTROPIES else units

    def describe(self, name: str) -> str:
        """What the measure ``name`` is under this convention, for an axis label (without
        units: a figure adds the variable's ``units``, which :meth:`units` gives)."""
        kernel = "full eNTK" if self.kernel == "full" else "eNTK"
        if self.output_reduction == "mean":
            kernel += " (mean over outputs)"
        size = "N·C" if self.kernel == "full" else "N"
        spectral_kernel = f"cosine-normalised {kernel}" if self.normalize == "cosine" else kernel
        test = " (test probe)" if name.startswith("test_") else ""
        base = name.removeprefix("test_")
        if base == "entropy":
            what = f"S / ln {size}" if self.effective else "S"
            return f"{what} of the {spectral_kernel}{test}"
        if base == "entropy_normalized":
            return f"S / ln {size} of the {spectral_kernel}{test}"
        if base == "trace":
            what = ("Tr K / (N·C)" if self.kernel == "full" else "Tr K / N") if self.trace_normalize else "Tr K"
            return f"{what} of the {kernel}{test}"
        if base == "trace_per_sample":
            return f"Tr K / N of the {kernel}{test}"
        if base == "eigenvalues":
            return f"eigenvalue of the {spectral_kernel}"
        if base in SPECTRAL:
            return f"{base.replace('_', ' ')} of the {spectral_kernel}"
        return base.replace("_", " ")


DEFAULT = Convention()


def of(attrs: Mapping[str, Any]) -> Convention:
    """The convention a cube variable's attributes state; the default where they state
    none (cubes written before conventions were recorded are of the default one)."""
    if not any(f"ntk_{f}" in attrs for f in _FIELDS):
        return DEFAULT

    def flag(key: str) -> bool:
        value = str(attrs.get(key, "false")).lower()
        if value not in ("true", "false"):
            raise ValueError(f"{key}: expected 'true' or 'false', got {attrs.get(key)!r}")
        return value == "true"

    return Convention(
        kernel=str(attrs.get("ntk_kernel", "traced")),  # type: ignore[arg-type]  checked in __post_init__
        normalize=str(attrs.get("ntk_normalize", "none")),  # type: ignore[arg-type]
        effective=flag("ntk_effective"),
        trace_normalize=flag("ntk_trace_normalize"),
        output_reduction=str(attrs.get("ntk_output_reduction", "sum")),  # type: ignore[arg-type]
    )


def of_cube(ds: Any, name: str = "entropy") -> Convention:
    """The convention of the variable ``name`` of the cube ``ds`` (the default when the cube
    has no such variable or it states none)."""
    return of(ds[name].attrs) if name in ds else DEFAULT
