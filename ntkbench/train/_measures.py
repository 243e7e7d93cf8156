"""The measures: :class:`Measure` and one small class per built-in measure, with
:data:`MEASURES` and :data:`DEFAULT_MEASURES` read from the one table of measures,
``ntkbench._variables.TABLE`` (names, units, long names, dims, needs, defaults)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import jax
import jax.numpy as jnp

from ntkbench import _variables

if TYPE_CHECKING:
    from ntkbench.train._recorder import Context


class Measure:
    """One recorded quantity. Subclasses set ``name`` and implement ``__call__(ctx)``.

    Class attributes: ``name`` (the cube variable), ``dims`` (extra dims of one record,
    e.g. ``("eigen_index",)``), ``needs`` (subset of ``{"kernel0", "test",
    "labels", "kernel_regression", "linear_training"}``: the initial kernel, a test set,
    integer labels, the kernel-regression predictions, the linearized network trained like
    the network). ``long_name`` and ``units`` come from
    :data:`ntkbench.cube.VARIABLES` unless overridden; for a name of the table of measures
    (``ntkbench._variables.TABLE``) so do ``dims`` and ``needs``, unless the class sets them.
    """

    name: ClassVar[str] = ""
    dims: ClassVar[tuple[str, ...]] = ()
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        row = _variables.TABLE.get(cls.__dict__.get("name", ""))
        if row is not None and row.measure:  # a measure of the table: its dims and needs
            if "dims" not in cls.__dict__:
                cls.dims = row.dims
            if "needs" not in cls.__dict__:
                cls.needs = row.needs

    def __call__(self, ctx: Context) -> jax.Array:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def attrs(self) -> dict[str, str]:
        from ntkbench.cube import var_attrs

        return var_attrs(self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # equal when of the same class with the same settings, so jit reuses compilations
    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(vars(self).items(), key=lambda kv: kv[0]))))


class Eigenvalues(Measure):
    """Full spectrum of the probe eNTK, descending (eigen_index 0 = largest)."""

    name = "eigenvalues"

    def __call__(self, ctx):
        return ctx.eigenvalues


class Entropy(Measure):
    """Von Neumann entropy S of the normalized probe spectrum (nats), or S / ln(size) under
    an ``effective`` convention."""

    name = "entropy"

    def __call__(self, ctx):
        from ntkbench.measures import entropy

        return ctx.convention.entropy(entropy(ctx.eigenvalues), ctx.eigenvalues.shape[-1])


class EntropyNormalized(Measure):
    """S / ln N."""

    name = "entropy_normalized"

    def __call__(self, ctx):
        from ntkbench.measures import entropy

        return entropy(ctx.eigenvalues, normalize=True)


class Trace(Measure):
    """Tr K of the probe eNTK (Tr K / size under a ``trace_normalize`` convention)."""

    name = "trace"

    def __call__(self, ctx):
        from ntkbench.measures import trace

        return ctx.convention.trace(trace(ctx.kernel), ctx.kernel.shape[0])


class TracePerSample(Measure):
    """Tr K / N, N the probe's samples (a full kernel's N·C rows hold N samples)."""

    name = "trace_per_sample"

    def __call__(self, ctx):
        from ntkbench.measures import trace

        return trace(ctx.kernel) / ctx.inputs["probe_x"].shape[0]


class EffectiveRank(Measure):
    """exp(S)."""

    name = "effective_rank"

    def __call__(self, ctx):
        from ntkbench.measures import effective_rank

        return effective_rank(ctx.eigenvalues)


class MagnitudeEntropy(Measure):
    """Entropy of the normalized magnitudes of the kernel entries."""

    name = "magnitude_entropy"

    def __call__(self, ctx):
        from ntkbench.measures import magnitude_entropy

        return magnitude_entropy(ctx.kernel)


class KernelDistanceInit(Measure):
    """1 − alignment(K_0, K_t)."""

    name = "kernel_distance_init"

    def __call__(self, ctx):
        from ntkbench.measures import kernel_distance

        return kernel_distance(ctx.kernel0, ctx.kernel)


class RelativeChangeInit(Measure):
    """‖K_t − K_0‖_F / ‖K_0‖_F."""

    name = "relative_change_init"

    def __call__(self, ctx):
        from ntkbench.measures import relative_change

        return relative_change(ctx.kernel0, ctx.kernel)


class TestEntropy(Measure):
    """Entropy S of the eNTK of the test probe (S / ln(size) under ``effective``)."""

    name = "test_entropy"

    def __call__(self, ctx):
        from ntkbench.measures import entropy

        return ctx.convention.entropy(entropy(ctx.test_eigenvalues), ctx.test_eigenvalues.shape[-1])


class TestEntropyNormalized(Measure):
    """S / ln N of the eNTK of the test probe."""

    name = "test_entropy_normalized"

    def __call__(self, ctx):
        from ntkbench.measures import entropy

        return entropy(ctx.test_eigenvalues, normalize=True)


class TestTrace(Measure):
    """Tr K of the eNTK of the test probe (Tr K / size under ``trace_normalize``)."""

    name = "test_trace"

    def __call__(self, ctx):
        from ntkbench.measures import trace

        return ctx.convention.trace(trace(ctx.test_kernel), ctx.test_kernel.shape[0])


class TestTracePerSample(Measure):
    """Tr K / N of the eNTK of the test probe."""

    name = "test_trace_per_sample"

    def __call__(self, ctx):
        from ntkbench.measures import trace

        return trace(ctx.test_kernel) / ctx.inputs["test_probe_x"].shape[0]


class SpectralPosition(Measure):
    """Spectral position χ_pos = ‖∇L‖² / (χ_loss χ_net) of the probe batch
    (:func:`ntkbench.lnp`, no kernel formed; Hutchinson when the recorder's ``lnp_probes``
    says so). The LNP measures share one computation per record."""

    name = "spectral_position"

    def __call__(self, ctx):
        return ctx.lnp.chi_pos


class ChiLoss(Measure):
    """Loss term χ_loss = ‖u‖² / B of the probe batch (u_i = ∂l_i/∂f(x_i))."""

    name = "chi_loss"

    def __call__(self, ctx):
        return ctx.lnp.chi_loss


class ChiNet(Measure):
    """Network term χ_net = Tr K / B of the probe batch (exact or Hutchinson)."""

    name = "chi_net"

    def __call__(self, ctx):
        return ctx.lnp.chi_net


class ChiNetSE(Measure):
    """Standard error of the Hutchinson χ_net over its probes (0 when exact)."""

    name = "chi_net_se"

    def __call__(self, ctx):
        return ctx.lnp.chi_net_se


class GradNormSq(Measure):
    """‖∇_θ L‖² of the probe batch's mean loss (one backward pass); equals
    χ_loss · χ_net · χ_pos."""

    name = "grad_norm_sq"

    def __call__(self, ctx):
        return ctx.lnp.grad_sq


def _residual_weights(ctx: Context, name: str):
    """w_k = (v_k·u)² / ‖u‖² over the probe eNTK's eigenvectors (descending): the full
    kernel's (u flattened sample-major, any C), or the traced kernel's for C = 1 only."""
    from ntkbench.measures import residual_projection

    u = ctx.residual
    if ctx.convention.kernel == "full":
        return residual_projection(ctx.eigenpairs[1], u.reshape(-1), weights=True)
    if u.shape[1] != 1:
        raise ValueError(
            f"measures: {name!r} needs a model with one output per sample (C = 1, where the traced "
            f"probe eNTK is the full one) or kernel='full'; this model has C = {u.shape[1]} outputs"
        )
    return residual_projection(ctx.eigenpairs[1], u[:, 0], weights=True)


class ResidualWeights(Measure):
    """Residual spectral weights w_k = (v_k·u)² / ‖u‖² (Σ_k w_k = 1) on the probe eNTK's
    eigenvectors, dims ("eigen_index",) paired with ``eigenvalues`` (descending).

    With ``kernel="full"`` for any C (the weights live on the N·C eigen-indices of the
    full ``eigenvalues``); with the traced kernel only for models with ONE output (C = 1),
    where it is the full one. For C > 1 on the traced kernel the weights would live on
    N·C full-kernel eigen-indices, not on the N of ``eigenvalues``; recording them is
    refused with a ``ValueError`` naming this measure (at the first record, before any
    training step).
    """

    name = "residual_weights"

    def __call__(self, ctx):
        return _residual_weights(ctx, self.name)


class SpectralPositionEig(Measure):
    """χ_pos from the eigendecomposition, Σ_k (λ_k / Tr K) w_k: equals the kernel-free
    ``spectral_position`` (exact χ_net, probe batch) to round-off on the full kernel (or
    the traced one for C = 1, as ``residual_weights``)."""

    name = "spectral_position_eig"

    def __call__(self, ctx):
        w = _residual_weights(ctx, self.name)
        lam = ctx.eigenpairs[0]
        return jnp.sum(lam / jnp.sum(lam) * w)


class Loss(Measure):
    """Mean loss over the whole training set."""

    name = "loss"

    def __call__(self, ctx):
        return ctx.loss


class TestLoss(Measure):
    """Mean loss over the whole test set."""

    name = "test_loss"

    def __call__(self, ctx):
        return ctx.test_loss


class Accuracy(Measure):
    """Fraction of training samples (tokens) whose argmax output is the label."""

    name = "accuracy"

    def __call__(self, ctx):
        return ctx.accuracy


class TestAccuracy(Measure):
    """Fraction of test samples (tokens) whose argmax output is the label."""

    name = "test_accuracy"

    def __call__(self, ctx):
        return ctx.test_accuracy


class KernelTestLoss(Measure):
    """Test loss of kernel regression with the initial eNTK: the linearized network trained
    to convergence on the whole training set (see :func:`linearized_test_predictions`).
    A constant of the run, repeated at every record so it sits in the cube beside
    ``test_loss``; the trained network's ``test_loss`` minus it is the benefit of feature
    learning."""

    name = "kernel_test_loss"

    def __call__(self, ctx):
        return ctx._loss(ctx.inputs["kernel_test_preds"], ctx.inputs["y_test"])


class KernelTestAccuracy(Measure):
    """Test accuracy of kernel regression with the initial eNTK (as ``kernel_test_loss``)."""

    name = "kernel_test_accuracy"

    def __call__(self, ctx):
        return ctx._accuracy(ctx.inputs["kernel_test_preds"], ctx.inputs["y_test"])


class LinearTestLoss(Measure):
    """Test loss of the network linearized at initialization and trained with the run's
    optimizer, loss, mini-batches and number of steps (see
    :func:`ntkbench.train.linearized_training_predictions`): the fair kernel baseline of a
    network trained for finite time. A constant of the run, repeated at every record."""

    name = "linear_test_loss"

    def __call__(self, ctx):
        return ctx._loss(ctx.inputs["linear_test_preds"], ctx.inputs["y_test"])


class LinearTestAccuracy(Measure):
    """Test accuracy of the linearized network trained like the network (as ``linear_test_loss``)."""

    name = "linear_test_accuracy"

    def __call__(self, ctx):
        return ctx._accuracy(ctx.inputs["linear_test_preds"], ctx.inputs["y_test"])


#: the built-in measures, one class per measure of ``ntkbench._variables.TABLE``
_CLASSES: tuple[type[Measure], ...] = (
    Eigenvalues,
    Entropy,
    EntropyNormalized,
    Trace,
    TracePerSample,
    EffectiveRank,
    MagnitudeEntropy,
    KernelDistanceInit,
    RelativeChangeInit,
    TestEntropy,
    TestEntropyNormalized,
    TestTrace,
    TestTracePerSample,
    SpectralPosition,
    ChiLoss,
    ChiNet,
    ChiNetSE,
    GradNormSq,
    ResidualWeights,
    SpectralPositionEig,
    Loss,
    TestLoss,
    Accuracy,
    TestAccuracy,
    KernelTestLoss,
    KernelTestAccuracy,
    LinearTestLoss,
    LinearTestAccuracy,
)
_BY_NAME = {cls.name: cls for cls in _CLASSES}
if len(_BY_NAME) != len(_CLASSES) or set(_BY_NAME) != set(_variables.MEASURE_NAMES):
    raise RuntimeError(
        "ntkbench.train: the measure classes and the measures of ntkbench._variables.TABLE differ: "
        f"{sorted(set(_BY_NAME) ^ set(_variables.MEASURE_NAMES))}"
    )

#: measure name -> class; ``Recorder(measures=[...])`` accepts these names (in the order
#: of ``ntkbench._variables.TABLE``)
MEASURES: dict[str, type[Measure]] = {name: _BY_NAME[name] for name in _variables.MEASURE_NAMES}

#: recorded when ``measures=None`` (those a task cannot provide are left out); the
#: measures marked ``default`` in ``ntkbench._variables.TABLE``
DEFAULT_MEASURES: tuple[str, ...] = _variables.DEFAULT_MEASURES
