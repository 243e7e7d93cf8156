"""The one table of the cube's data variables: each recorded measure (and the sweep's run
status) with its long name and units, whether it is derived from the eNTK, the extra
dimensions of one record, what a run must provide to record it, whether it is
recorded by default, and whether NaN/Inf in it means the run diverged.

``ntkbench.cube`` (:data:`~ntkbench.cube.VARIABLES`,
:data:`~ntkbench.cube.KERNEL_VARIABLES`) and ``ntkbench.train``
(:data:`~ntkbench.train.MEASURES`, :data:`~ntkbench.train.DEFAULT_MEASURES`, each
:class:`~ntkbench.train.Measure`'s ``dims`` and ``needs``) read it; adding a measure is
one row here and one class in ``ntkbench.train._measures``. Plain Python, no JAX: the
cube module stays light to import.

>>> TABLE["entropy"].units, TABLE["eigenvalues"].dims
('nat', ('eigen_index',))
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "Variable",
    "TABLE",
    "VARIABLES",
    "KERNEL_VARIABLES",
    "MEASURE_NAMES",
    "DEFAULT_MEASURES",
    "DIVERGENCE_MEASURES",
]

_EIGEN = ("eigen_index",)


class Variable(NamedTuple):
    """One data variable of a cube."""

    long_name: str
    units: str = "1"  # CF units; "1" is dimensionless
    kernel: bool = False  # derived from the eNTK: NaN/Inf in it is an error (KERNEL_VARIABLES)
    dims: tuple[str, ...] = ()  # extra dims of one record, after "step"
    needs: frozenset[str] = frozenset()  # of {"kernel0", "test", "labels", "kernel_regression", "linear_training"}
    default: bool = False  # recorded when a Recorder's measures=None (DEFAULT_MEASURES)
    diverges: bool = False  # NaN/Inf in it means the run diverged (train stops there)
    measure: bool = True  # recorded by a train.Measure (False: written by the sweep)


def _needs(*names: str) -> frozenset[str]:
    return frozenset(names)


#: name -> :class:`Variable`, in the order of :data:`ntkbench.cube.VARIABLES`
TABLE: dict[str, Variable] = {
    "eigenvalues": Variable(
        "eNTK eigenvalue (probe set, descending)", kernel=True, dims=_EIGEN, default=True, diverges=True
    ),
    "entropy": Variable("eNTK spectral entropy S", "nat", kernel=True, default=True),
    "entropy_normalized": Variable("normalized eNTK spectral entropy S / ln N", kernel=True, default=True),
    "trace": Variable("eNTK trace Tr K", kernel=True, default=True, diverges=True),
    "trace_per_sample": Variable("eNTK trace per sample Tr K / N", kernel=True, default=True),
    "effective_rank": Variable("eNTK effective rank exp(S)", kernel=True, default=True),
    "magnitude_entropy": Variable("eNTK magnitude entropy", "nat", kernel=True, default=True),
    "kernel_distance_init": Variable(
        "eNTK distance from initial kernel (1 - alignment)", kernel=True, needs=_needs("kernel0"), default=True
    ),
    "relative_change_init": Variable(
        "relative eNTK change ||K - K0||_F / ||K0||_F", kernel=True, needs=_needs("kernel0"), default=True
    ),
    "test_entropy": Variable("eNTK spectral entropy S (test probe)", "nat", kernel=True, needs=_needs("test")),
    "test_entropy_normalized": Variable(
        "normalized eNTK spectral entropy S / ln N (test probe)", kernel=True, needs=_needs("test")
    ),
    "test_trace": Variable("eNTK trace Tr K (test probe)", kernel=True, needs=_needs("test"), diverges=True),
    "test_trace_per_sample": Variable("eNTK trace per sample Tr K / N (test probe)", kernel=True, needs=_needs("test")),
    "spectral_position": Variable("spectral position chi_pos", kernel=True),
    "chi_loss": Variable("LNP loss term chi_loss = ||u||^2 / B (probe batch)"),
    "chi_net": Variable("LNP network term chi_net = Tr K / B (probe batch)", kernel=True),
    "chi_net_se": Variable("standard error of the Hutchinson chi_net (0 = exact)", kernel=True),
    "grad_norm_sq": Variable("squared gradient norm ||grad L||^2 (probe batch)"),
    "residual_weights": Variable("residual spectral weight w_k = (v_k . u)^2 / ||u||^2", kernel=True, dims=_EIGEN),
    "spectral_position_eig": Variable("spectral position chi_pos from the eNTK eigenpairs", kernel=True),
    "loss": Variable("training loss", default=True, diverges=True),
    "test_loss": Variable("test loss", needs=_needs("test"), default=True, diverges=True),
    "kernel_test_loss": Variable(
        "test loss of kernel regression with the initial eNTK", needs=_needs("test", "kernel_regression")
    ),
    "kernel_test_accuracy": Variable(
        "test accuracy of kernel regression with the initial eNTK", needs=_needs("test", "labels", "kernel_regression")
    ),
    "linear_test_loss": Variable(
        "test loss of the linearized network trained like the network", needs=_needs("test", "linear_training")
    ),
    "linear_test_accuracy": Variable(
        "test accuracy of the linearized network trained like the network",
        needs=_needs("test", "labels", "linear_training"),
    ),
    "accuracy": Variable("training accuracy", needs=_needs("labels"), default=True),
    "test_accuracy": Variable("test accuracy", needs=_needs("labels", "test"), default=True),
    "status": Variable("run status (0 finished, 1 diverged)", measure=False),
    "diverged_step": Variable("step at which training diverged (-1: it did not)", measure=False),
}

#: name -> (long_name, units)
VARIABLES: dict[str, tuple[str, str]] = {name: (v.long_name, v.units) for name, v in TABLE.items()}

#: the variables derived from the eNTK
KERNEL_VARIABLES: frozenset[str] = frozenset(name for name, v in TABLE.items() if v.kernel)

#: the names of the built-in measures, in table order
MEASURE_NAMES: tuple[str, ...] = tuple(name for name, v in TABLE.items() if v.measure)

#: the measures recorded by default, in table order
DEFAULT_MEASURES: tuple[str, ...] = tuple(name for name, v in TABLE.items() if v.default)

#: the measures whose NaN/Inf means the run diverged (the loss or the kernel)
DIVERGENCE_MEASURES: tuple[str, ...] = tuple(name for name, v in TABLE.items() if v.diverges)
