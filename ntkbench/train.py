"""Training with optax and recorders that measure the eNTK while a network learns.

``train`` runs an optax optimizer on an Equinox model. All steps between two recordings
run inside ONE compiled function (a ``lax.fori_loop`` over steps; mini-batches are drawn
on the device from ``fold_in(key, step)``), so there is no host round-trip per step, and
the result does not depend on when recordings happen.

A :class:`Recorder` says when to record and what: a list of *measures*, small objects
with one job each (optax style). Every record step computes the eNTK of a fixed probe set
once (``ntkbench.entk``) and evaluates all measures inside one compiled function; results
stay on the device until training ends. Adding a measure means adding one small class::

    class TopEigenvalue(Measure):
        name = "top_eigenvalue"
        def __call__(self, ctx):
            return ctx.eigenvalues[0]

Example
-------
>>> import jax, optax, ntkbench as nb
>>> data = nb.load("digits", n_train=256, n_test=128)
>>> model = nb.MLP(64, 10, width=64, depth=2, key=jax.random.key(0))
>>> rec = nb.Recorder(every=25, probe=64)
>>> model, ds = train(model, data, optimizer=optax.sgd(0.1), steps=100,  # nb.train
...                   batch_size=64, recorder=rec, key=jax.random.key(1))
>>> dict(ds.entropy.sizes)
{'step': 5}
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, TypeAlias

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntkbench.kernel import _Static

__all__ = [
    "train",
    "Recorder",
    "Measure",
    "MEASURES",
    "DEFAULT_MEASURES",
    "Context",
    "make_loss",
    "linearized_test_predictions",
]

_TASKS = ("classification", "regression", "next_token")
LNPProbes: TypeAlias = int | Literal["auto"] | None  # Hutchinson probes of the LNP measures; None: exact
_LNP_KEY_SALT = 0x4C4E50  # "LNP": the Hutchinson probes' key is fold_in(key, salt) then the step
_EVAL_BATCH = 512


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------


def _mse(pred, y):
    """½‖f − y‖² of one sample; for sequences (T, V) the mean over positions."""
    if jnp.issubdtype(y.dtype, jnp.integer):
        target = jax.nn.one_hot(y, pred.shape[-1], dtype=pred.dtype)
    else:
        target = jnp.reshape(y, pred.shape).astype(pred.dtype)
    per_position = 0.5 * jnp.sum((pred - target) ** 2, axis=-1)
    return jnp.mean(per_position)


def _ce(pred, y):
    """Softmax cross-entropy with integer labels; mean over positions for sequences."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(pred, y))


@functools.cache
def make_loss(loss: str, task: str) -> Callable:
    """Per-sample loss ``l(prediction, target) -> scalar`` for a task.

    ``"mse"``: l = ½‖f − y‖², with one-hot targets for integer labels
    (classification; next-token: mean over positions). ``"ce"``: softmax cross-entropy
    with integer labels. Cached, so the same function (and compiled code) is reused.

    >>> import jax.numpy as jnp
    >>> float(make_loss("mse", "classification")(jnp.array([1.0, 0.0]), jnp.array(0)))
    0.0
    """
    if task not in _TASKS:
        raise ValueError(f"task must be one of {_TASKS}, got {task!r}")
    if loss == "mse":
        return _mse
    if loss == "ce":
        if task == "regression":
            raise ValueError("loss='ce' needs integer labels; a regression task takes loss='mse'")
        return _ce
    raise ValueError(f"loss must be 'mse', 'ce' or a callable, got {loss!r}")


def _resolve_loss(loss: Any, task: str) -> Callable:
    if callable(loss):
        return loss
    if not isinstance(loss, str):
        raise TypeError(f"loss must be 'mse', 'ce' or a callable, got {loss!r}")
    return make_loss(loss, task)


def _predict(model, x):
    return jax.lax.map(model, x, batch_size=min(_EVAL_BATCH, x.shape[0]))


# ---------------------------------------------------------------------------
# Measures
# ---------------------------------------------------------------------------


class Context:
    """What measures see at one record step. Quantities are computed on first use
    (while tracing), so a recording pays only for what its measures need.

    Attributes (all traced arrays): ``model``; ``kernel`` (N, N) eNTK of the probe set;
    ``eigenvalues`` (N,) descending; ``eigenpairs`` (eigenvalues (N,), eigenvectors
    (N, N) as columns); ``residual`` (N, C) the probe batch's u_i = ∂l_i/∂f(x_i);
    ``lnp`` the loss–network–position decomposition of the probe batch
    (:func:`ntkbench.lnp`, computed once per record with ``lnp_probes`` Hutchinson probes,
    None = exact, keyed by ``inputs["lnp_key"]`` folded with ``inputs["step"]``);
    ``kernel0`` the probe eNTK at step 0;
    ``test_kernel`` / ``test_eigenvalues`` on the test probe; ``loss``, ``test_loss``,
    ``accuracy``, ``test_accuracy`` on the full train / test sets; ``inputs`` the dict
    of arrays (``probe_x``, ``probe_y``, ``test_probe_x``, ``x_train``, ...).
    """

    def __init__(self, model, inputs: dict[str, Any], loss_fn: Callable, lnp_probes: LNPProbes = "auto"):
        self.model = model
        self.inputs = inputs
        self.loss_fn = loss_fn
        self.lnp_probes: LNPProbes = lnp_probes

    @functools.cached_property
    def kernel(self):
        from ntkbench.kernel import entk

        return entk(self.model, self.inputs["probe_x"], check_finite=False)

    @functools.cached_property
    def eigenvalues(self):
        from ntkbench.measures import spectrum

        return spectrum(self.kernel)

    @functools.cached_property
    def eigenpairs(self):
        from ntkbench.measures import spectrum

        return spectrum(self.kernel, vectors=True)

    @functools.cached_property
    def residual(self):
        x, y = self.inputs["probe_x"], self.inputs["probe_y"]
        u = jax.vmap(jax.grad(self.loss_fn))(jax.vmap(self.model)(x), y)
        return u.reshape(u.shape[0], -1)

    @functools.cached_property
    def lnp(self):
        from ntkbench.measures import lnp

        key = None
        if "lnp_key" in self.inputs:
            key = jax.random.fold_in(self.inputs["lnp_key"], self.inputs.get("step", 0))
        x, y = self.inputs["probe_x"], self.inputs["probe_y"]
        return lnp(self.model, x, y, self.loss_fn, probes=self.lnp_probes, key=key)

    @property
    def kernel0(self):
        return self.inputs["kernel0"]

    @functools.cached_property
    def test_kernel(self):
        from ntkbench.kernel import entk

        return entk(self.model, self.inputs["test_probe_x"], check_finite=False)

    @functools.cached_property
    def test_eigenvalues(self):
        from ntkbench.measures import spectrum

        return spectrum(self.test_kernel)

    @functools.cached_property
    def _train_preds(self):
        return _predict(self.model, self.inputs["x_train"])

    @functools.cached_property
    def _test_preds(self):
        return _predict(self.model, self.inputs["x_test"])

    def _loss(self, preds, y):
        return jnp.mean(jax.vmap(self.loss_fn)(preds, y))

    @staticmethod
    def _accuracy(preds, y):
        return jnp.mean((jnp.argmax(preds, axis=-1) == y).astype(preds.dtype))

    @property
    def loss(self):
        return self._loss(self._train_preds, self.inputs["y_train"])

    @property
    def test_loss(self):
        return self._loss(self._test_preds, self.inputs["y_test"])

    @property
    def accuracy(self):
        return self._accuracy(self._train_preds, self.inputs["y_train"])

    @property
    def test_accuracy(self):
        return self._accuracy(self._test_preds, self.inputs["y_test"])


class Measure:
    """One recorded quantity. Subclasses set ``name`` and implement ``__call__(ctx)``.

    Class attributes: ``name`` (the cube variable), ``dims`` (extra dims of one record,
    e.g. ``("eigen_index",)``), ``needs`` (subset of ``{"kernel0", "test",
    "labels"}``: the initial kernel, a test set, integer labels). ``long_name`` and
    ``units`` come from :data:`ntkbench.cube.VARIABLES` unless overridden.
    """

    name: ClassVar[str] = ""
    dims: ClassVar[tuple[str, ...]] = ()
    needs: ClassVar[frozenset[str]] = frozenset()

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
    dims = ("eigen_index",)

    def __call__(self, ctx):
        return ctx.eigenvalues


class Entropy(Measure):
    """Von Neumann entropy S of the normalized probe spectrum (nats)."""

    name = "entropy"

    def __call__(self, ctx):
        from ntkbench.measures import entropy

        return entropy(ctx.eigenvalues)


class EntropyNormalized(Measure):
    """S / ln N."""

    name = "entropy_normalized"

    def __call__(self, ctx):
        from ntkbench.measures import entropy

        return entropy(ctx.eigenvalues, normalize=True)


class Trace(Measure):
    """Tr K of the probe eNTK."""

    name = "trace"

    def __call__(self, ctx):
        from ntkbench.measures import trace

        return trace(ctx.kernel)


class TracePerSample(Measure):
    """Tr K / N."""

    name = "trace_per_sample"

    def __call__(self, ctx):
        from ntkbench.measures import trace

        return trace(ctx.kernel) / ctx.kernel.shape[0]


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
    needs = frozenset({"kernel0"})

    def __call__(self, ctx):
        from ntkbench.measures import kernel_distance

        return kernel_distance(ctx.kernel0, ctx.kernel)


class RelativeChangeInit(Measure):
    """‖K_t − K_0‖_F / ‖K_0‖_F."""

    name = "relative_change_init"
    needs = frozenset({"kernel0"})

    def __call__(self, ctx):
        from ntkbench.measures import relative_change

        return relative_change(ctx.kernel0, ctx.kernel)


class TestEntropy(Measure):
    """Entropy S of the eNTK of the test probe."""

    name = "test_entropy"
    needs = frozenset({"test"})

    def __call__(self, ctx):
        from ntkbench.measures import entropy

        return entropy(ctx.test_eigenvalues)


class TestEntropyNormalized(Measure):
    """S / ln N of the eNTK of the test probe."""

    name = "test_entropy_normalized"
    needs = frozenset({"test"})

    def __call__(self, ctx):
        from ntkbench.measures import entropy

        return entropy(ctx.test_eigenvalues, normalize=True)


class TestTrace(Measure):
    """Tr K of the eNTK of the test probe."""

    name = "test_trace"
    needs = frozenset({"test"})

    def __call__(self, ctx):
        from ntkbench.measures import trace

        return trace(ctx.test_kernel)


class TestTracePerSample(Measure):
    """Tr K / N of the eNTK of the test probe."""

    name = "test_trace_per_sample"
    needs = frozenset({"test"})

    def __call__(self, ctx):
        from ntkbench.measures import trace

        return trace(ctx.test_kernel) / ctx.test_kernel.shape[0]


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
    """w_k = (v_k·u)² / ‖u‖² over the probe eNTK's eigenvectors (descending), C = 1 only."""
    from ntkbench.measures import residual_projection

    u = ctx.residual
    if u.shape[1] != 1:
        raise ValueError(
            f"measures: {name!r} needs a model with one output per sample (C = 1, where the traced "
            f"probe eNTK is the full one); this model has C = {u.shape[1]} outputs"
        )
    return residual_projection(ctx.eigenpairs[1], u[:, 0], weights=True)


class ResidualWeights(Measure):
    """Residual spectral weights w_k = (v_k·u)² / ‖u‖² (Σ_k w_k = 1) on the probe eNTK's
    eigenvectors, dims ("eigen_index",) paired with ``eigenvalues`` (descending).

    Only for models with ONE output (C = 1): there the traced kernel is the full
    (B·C) × (B·C) one. For C > 1 the weights would live on B·C full-kernel eigen-indices,
    not on the N of ``eigenvalues``; recording them is refused with a ``ValueError``
    naming this measure (at the first record, before any training step).
    """

    name = "residual_weights"
    dims = ("eigen_index",)

    def __call__(self, ctx):
        return _residual_weights(ctx, self.name)


class SpectralPositionEig(Measure):
    """χ_pos from the eigendecomposition, Σ_k (λ_k / Tr K) w_k: equals the kernel-free
    ``spectral_position`` (exact χ_net) to round-off. C = 1 only, as ``residual_weights``."""

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
    needs = frozenset({"test"})

    def __call__(self, ctx):
        return ctx.test_loss


class Accuracy(Measure):
    """Fraction of training samples (tokens) whose argmax output is the label."""

    name = "accuracy"
    needs = frozenset({"labels"})

    def __call__(self, ctx):
        return ctx.accuracy


class TestAccuracy(Measure):
    """Fraction of test samples (tokens) whose argmax output is the label."""

    name = "test_accuracy"
    needs = frozenset({"labels", "test"})

    def __call__(self, ctx):
        return ctx.test_accuracy


class KernelTestLoss(Measure):
    """Test loss of kernel regression with the initial eNTK: the linearized network trained
    to convergence on the whole training set (see :func:`linearized_test_predictions`).
    A constant of the run, repeated at every record so it sits in the cube beside
    ``test_loss``; the trained network's ``test_loss`` minus it is the benefit of feature
    learning."""

    name = "kernel_test_loss"
    needs = frozenset({"test", "kernel_regression"})

    def __call__(self, ctx):
        return ctx._loss(ctx.inputs["kernel_test_preds"], ctx.inputs["y_test"])


class KernelTestAccuracy(Measure):
    """Test accuracy of kernel regression with the initial eNTK (as ``kernel_test_loss``)."""

    name = "kernel_test_accuracy"
    needs = frozenset({"test", "labels", "kernel_regression"})

    def __call__(self, ctx):
        return ctx._accuracy(ctx.inputs["kernel_test_preds"], ctx.inputs["y_test"])


def linearized_test_predictions(
    model: Any, x_train: jax.Array, y_train: jax.Array, x_test: jax.Array, *, ridge: float = 0.0
) -> jax.Array:
    """Test predictions of the network linearized at ``model`` and trained to convergence
    by gradient flow on ½‖f − y‖² over the whole training set:

        f_lin(X*) = f_0(X*) + Θ(X*, X) Θ(X, X)⁺ (Y − f_0(X)),

    with Θ the *full* initial eNTK over samples and outputs, (N·C) × (N·C), and ⁺ the
    least-squares (pseudo-)inverse (``ridge > 0``: (Θ + ridge·I)⁻¹). Integer labels are
    one-hot targets. Shapes: x_train (N, ...), y_train (N,) labels or (N, C) / (N, ...)
    targets, x_test (M, ...) → (M, *output_shape). Cost O((N·C)³): meant for N·C up to a
    few thousand.

    For a linear model f(x) = W x this is exactly what gradient descent on MSE converges
    to from W_0 (tests/test_train.py checks it).
    """
    from ntkbench.kernel import entk
    from ntkbench.measures import kernel_regression

    f0_train, f0_test = _predict(model, x_train), _predict(model, x_test)
    n, m = f0_train.shape[0], f0_test.shape[0]
    out_shape = f0_train.shape[1:]
    c = int(np.prod(out_shape))
    y = jnp.asarray(y_train)
    if jnp.issubdtype(y.dtype, jnp.integer):
        y = jax.nn.one_hot(y, out_shape[-1], dtype=f0_train.dtype)
    resid = jnp.reshape(y.astype(f0_train.dtype), (n * c,)) - jnp.reshape(f0_train, (n * c,))
    flat = lambda K, a, b: jnp.transpose(K, (0, 2, 1, 3)).reshape(a * c, b * c)  # noqa: E731
    k_train = flat(entk(model, x_train, outputs="full", check_finite=False), n, n)
    k_test = flat(entk(model, x_test, x_train, outputs="full", check_finite=False), m, n)
    preds = jnp.reshape(f0_test, (m * c,)) + kernel_regression(k_train, resid, k_test, ridge=ridge)
    return jnp.reshape(preds, (m, *out_shape))


#: measure name -> class; ``Recorder(measures=[...])`` accepts these names
MEASURES: dict[str, type[Measure]] = {
    cls.name: cls
    for cls in (
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
    )
}

#: recorded when ``measures=None`` (those a task cannot provide are left out)
DEFAULT_MEASURES: tuple[str, ...] = (
    "eigenvalues",
    "entropy",
    "entropy_normalized",
    "trace",
    "trace_per_sample",
    "effective_rank",
    "magnitude_entropy",
    "kernel_distance_init",
    "relative_change_init",
    "loss",
    "test_loss",
    "accuracy",
    "test_accuracy",
)


# ---------------------------------------------------------------------------
# Recorder
# ---------------------------------------------------------------------------


class Recorder:
    """When and what to record during :func:`train`.

    Parameters
    ----------
    every : int k (steps 0, k, 2k, ...), ``"log"`` (``log_points`` log-spaced steps) or
        a list of steps. Step 0 and the final step are always recorded.
    probe : number of training samples (the first ``probe``) whose eNTK is measured; the
        test probe is the first ``probe`` test samples.
    measures : names from :data:`MEASURES` or :class:`Measure` instances; None records
        :data:`DEFAULT_MEASURES` minus those the task cannot provide.
    log_points : number of points of the ``"log"`` schedule.
    lnp_probes : χ_net of the LNP measures (``spectral_position``, ``chi_net``, ...): None
        exact, an integer ≥ 2 the number of Hutchinson probes, ``"auto"`` exact for models
        with ≤ 64 outputs per sample, else 4 probes (:func:`ntkbench.lnp`). The probes'
        key is derived from :func:`train`'s ``key`` and the step.

    >>> Recorder(every=25, probe=64).steps(100).tolist()
    [0, 25, 50, 75, 100]
    >>> Recorder(every="log", log_points=5).steps(1000).tolist()
    [0, 1, 6, 32, 178, 1000]
    """

    def __init__(
        self,
        every: int | str | Sequence[int] = 10,
        probe: int = 200,
        measures: Sequence[str | Measure] | None = None,
        *,
        log_points: int = 30,
        lnp_probes: LNPProbes = "auto",
    ):
        if isinstance(every, str):
            if every != "log":
                raise ValueError(f"every must be a positive int, 'log' or a list of steps, got {every!r}")
        elif isinstance(every, (int, np.integer)) and not isinstance(every, bool):
            if every < 1:
                raise ValueError(f"every must be >= 1, got {every}")
            every = int(every)
        elif isinstance(every, Sequence):
            steps = []
            for s in every:
                if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
                    raise ValueError(f"every: steps must be non-negative ints, got {s!r}")
                steps.append(int(s))
            every = tuple(sorted(set(steps)))
        else:
            raise TypeError(f"every must be an int, 'log' or a list of steps, got {type(every).__name__}")
        if isinstance(probe, bool) or not isinstance(probe, (int, np.integer)) or probe < 1:
            raise ValueError(f"probe must be a positive int, got {probe!r}")
        if isinstance(log_points, bool) or not isinstance(log_points, (int, np.integer)) or log_points < 1:
            raise ValueError(f"log_points must be a positive int, got {log_points!r}")
        if not (
            lnp_probes is None
            or lnp_probes == "auto"
            or (isinstance(lnp_probes, (int, np.integer)) and not isinstance(lnp_probes, bool) and lnp_probes >= 2)
        ):
            raise ValueError(f"lnp_probes must be None (exact), 'auto' or an integer >= 2, got {lnp_probes!r}")
        self.every = every
        self.probe = int(probe)
        self.log_points = int(log_points)
        self.lnp_probes: LNPProbes = "auto" if lnp_probes == "auto" else None if lnp_probes is None else int(lnp_probes)
        self._explicit = measures is not None
        names = DEFAULT_MEASURES if measures is None else measures
        if isinstance(names, str):
            raise TypeError("measures must be a list of names or Measure objects, not a str")
        resolved: list[Measure] = []
        for m in names:
            if isinstance(m, str):
                if m not in MEASURES:
                    raise ValueError(f"measures: unknown measure {m!r}; known: {sorted(MEASURES)}")
                m = MEASURES[m]()
            elif not isinstance(m, Measure):
                raise TypeError(f"measures: expected names or Measure objects, got {type(m).__name__}")
            if not m.name:
                raise ValueError(f"measures: {m!r} has no name")
            resolved.append(m)
        if len({m.name for m in resolved}) != len(resolved):
            raise ValueError("measures: duplicate measure names")
        self.measures: tuple[Measure, ...] = tuple(resolved)

    def __repr__(self) -> str:
        names = [m.name for m in self.measures]
        return f"Recorder(every={self.every!r}, probe={self.probe}, measures={names})"

    def steps(self, total: int) -> np.ndarray:
        """Sorted steps in ``[0, total]`` at which to record; always holds 0 and ``total``."""
        if self.every == "log":
            s = np.unique(np.round(np.geomspace(1, max(total, 1), self.log_points)).astype(np.int64))
        elif isinstance(self.every, int):
            s = np.arange(0, total + 1, self.every, dtype=np.int64)
        else:
            s = np.asarray([int(x) for x in self.every if int(x) <= total], dtype=np.int64)
        return np.unique(np.concatenate([[0], s[s <= total], [total]])).astype(np.int64)

    def for_task(self, task: str, has_test: bool) -> tuple[Measure, ...]:
        """The measures to record for ``task``; raise if an explicit one cannot be."""
        keep = []
        for m in self.measures:
            reason = None
            if "labels" in m.needs and task == "regression":
                reason = "needs integer labels, but the task is regression"
            elif "test" in m.needs and not has_test:
                reason = "needs a test set, but the data has none"
            if reason is None:
                keep.append(m)
            elif self._explicit:
                raise ValueError(f"measures: {m.name!r} {reason}")
        return tuple(keep)


# ---------------------------------------------------------------------------
# Compiled pieces
# ---------------------------------------------------------------------------


def _steps(params, static, opt_state, x, y, key, start, stop, optimizer, loss_fn, batch_size):
    """Steps ``start .. stop-1`` in one ``fori_loop``; the batch of step i is drawn from
    ``fold_in(key, i)``."""
    n = x.shape[0]

    def batch_loss(p, xb, yb):
        model = eqx.combine(p, static)
        preds = jax.vmap(model)(xb)
        return jnp.mean(jax.vmap(loss_fn)(preds, yb))

    def body(i, carry):
        p, s = carry
        if batch_size >= n:
            xb, yb = x, y
        else:
            idx = jax.random.choice(jax.random.fold_in(key, i), n, (batch_size,), replace=False)
            xb, yb = x[idx], y[idx]
        grads = jax.grad(batch_loss)(p, xb, yb)
        updates, s = optimizer.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    return jax.lax.fori_loop(start, stop, body, (params, opt_state))


def _finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


class _Unhashable(_Static):
    """A static argument that cannot be hashed (e.g. a measure holding an array):
    compared by identity, so it is compiled once per :func:`train` call."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self._hash = id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


def _static_arg(value: Any) -> _Static:
    try:
        return _Static(value)
    except TypeError:
        return _Unhashable(value)


@functools.partial(jax.jit, static_argnums=0)
def _advance(fixed: _Static, params, frozen, opt_state, x, y, key, start, stop):
    """Steps ``start .. stop-1`` (:func:`_steps`; ``fixed.value`` = the model's static
    part, optimizer, loss, batch size): the new parameters and optimizer state, and
    whether the parameters are all finite, without a host sync."""
    static, optimizer, loss_fn, batch_size = fixed.value
    static = eqx.combine(frozen, static)  # the model's arrays that are not trained (ints, ...)
    params, opt_state = _steps(params, static, opt_state, x, y, key, start, stop, optimizer, loss_fn, batch_size)
    return params, opt_state, _finite(params)


@functools.partial(jax.jit, static_argnums=0)
def _record(fixed: _Static, params, frozen, inputs):
    """One record (``fixed.value`` = the model's static part, measures, loss, LNP probes,
    the measures watched for divergence) and whether the watched ones are all finite.
    Compiled apart from :func:`_advance`, so runs with other optimizers share it."""
    static, measures, loss_fn, lnp_probes, watched = fixed.value
    record = _record_values(eqx.combine(params, frozen, static), inputs, measures, loss_fn, lnp_probes)
    return record, _finite([record[k] for k in watched])


#: recorded measures whose NaN/Inf means the run diverged (the loss or the kernel); an
#: undefined entropy alone (a kernel without gradient) does not
_DIVERGENCE_MEASURES = ("loss", "test_loss", "trace", "test_trace", "eigenvalues")


#: probes up to this size get their spectra from single-threaded LAPACK while training
_ONE_THREAD_PROBE = 512


def _lapack_one_thread(probe: int) -> contextlib.AbstractContextManager:
    """Single-threaded BLAS/LAPACK while a run with a probe of at most
    ``_ONE_THREAD_PROBE`` samples trains (the previous limits restored after).

    The eigenvalues of each recording come from LAPACK (jaxlib calls the OpenBLAS that
    scipy bundles). Its worker threads spin for a while after every call, taking a core
    from XLA's next kernels: MLP 64-1024-1024-10, the probe's eNTK and its spectrum at
    N = 128 took 31-35 ms against 22 ms single-threaded (the eNTK alone: 22 ms). A
    single-threaded 128 × 128 spectrum costs nothing extra; at N = 2048 it is 1.7× slower
    (555 vs 328 ms), hence the bound."""
    if probe < 1 or probe > _ONE_THREAD_PROBE:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _nan_record(record: dict[str, Any]) -> dict[str, Any]:
    """A record of NaN in the shapes of ``record`` (the steps after a divergence)."""
    return {
        k: jnp.full_like(v, jnp.nan) if jnp.issubdtype(jnp.asarray(v).dtype, jnp.inexact) else v
        for k, v in record.items()
    }


def _record_values(model, inputs, measures, loss_fn, lnp_probes: LNPProbes = "auto"):
    ctx = Context(model, inputs, loss_fn, lnp_probes)
    return {m.name: jnp.asarray(m(ctx)) for m in measures}


def _check_data(data) -> None:
    for field in ("x_train", "y_train", "task"):
        if not hasattr(data, field):
            raise TypeError(f"data must be an ntkbench Dataset (with x_train, y_train, task, ...); missing {field!r}")
    if data.task not in _TASKS:
        raise ValueError(f"data.task must be one of {_TASKS}, got {data.task!r}")
    if len(data.x_train) == 0:
        raise ValueError("data has no training samples")
    if len(data.x_train) != len(data.y_train):
        raise ValueError(f"data: x_train has {len(data.x_train)} samples but y_train has {len(data.y_train)}")
    x_test, y_test = getattr(data, "x_test", None), getattr(data, "y_test", None)
    if x_test is not None and len(x_test) > 0:
        if y_test is None or len(x_test) != len(y_test):
            n = "no" if y_test is None else len(y_test)
            raise ValueError(f"data: x_test has {len(x_test)} samples but y_test has {n}")
        if not np.isfinite(np.asarray(x_test, dtype=float)).all():
            raise ValueError("data: x_test contains NaN or Inf; expected finite inputs")


def train(
    model: Any,
    data: Any,
    *,
    optimizer: optax.GradientTransformation,
    steps: int,
    batch_size: int | None = None,
    loss: str | Callable = "mse",
    recorder: Recorder | None = None,
    key: jax.Array,
    on_record: Callable[[int, dict[str, np.ndarray]], Any] | None = None,
):
    """Train ``model`` on ``data`` with an optax optimizer; record eNTK measures.

    Parameters
    ----------
    model : Equinox module applied to ONE sample (``model(x)``); its inexact array
        leaves are trained.
    data : an :class:`ntkbench.data.Dataset` (``x_train (N, ...)``, ``y_train``,
        ``x_test``, ``y_test``, ``task``).
    optimizer : an ``optax.GradientTransformation``.
    steps : number of optimizer steps (>= 0).
    batch_size : samples per step drawn without replacement on the device
        (``fold_in(key, step)``); None or >= N is full batch.
    loss : ``"mse"`` (½‖f − y‖² per sample, one-hot targets for labels), ``"ce"``
        (softmax cross-entropy, integer labels) or a callable ``l(pred, y) -> scalar``
        on one sample. The batch loss is the mean; next-token tasks average over positions.
    recorder : what to record and when; None records only the final train/test loss.
    key : PRNG key for the mini-batches.
    on_record : called after each recording with the step and ``{measure: host value}``
        (a live view; costs one device-to-host transfer per recording, none without it).
        An exception it raises stops training there and propagates.

    Returns
    -------
    (trained_model, xarray.Dataset) with dims ``step`` (and ``eigen_index`` for
    ``eigenvalues``); each variable carries ``long_name`` and ``units``.

    Divergence: when the parameters, or a recorded loss or kernel (``loss``, ``test_loss``,
    ``trace``, ``test_trace``, ``eigenvalues``), become NaN/Inf, training stops; the
    dataset's attribute ``diverged_step`` is the first step whose parameters (or record)
    are non-finite, the records from there on are NaN, and the model returned is the
    non-finite one. (An all-zero kernel's NaN entropy is not a divergence.)

    Example
    -------
    >>> import jax, optax, ntkbench as nb
    >>> data = nb.load("digits", n_train=128, n_test=64)
    >>> model = nb.MLP(64, 10, width=32, depth=1, key=jax.random.key(0))
    >>> model, ds = train(model, data, optimizer=optax.adam(1e-3), steps=200,
    ...                   batch_size=64, recorder=Recorder(every=50, probe=32), key=jax.random.key(0))
    >>> ds["step"].values.tolist(), bool(ds.loss[-1] < ds.loss[0])
    ([0, 50, 100, 150, 200], True)
    """
    import xarray as xr

    from ntkbench.cube import make_attrs, var_attrs
    from ntkbench.kernel import as_model

    model = as_model(model)
    _check_data(data)
    if not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise TypeError(f"key must be a JAX PRNG key (jax.random.key(seed)), got {key!r}")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    n_train = len(data.x_train)
    if batch_size is None:
        batch_size = n_train
    elif isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    batch_size = int(min(batch_size, n_train))
    if on_record is not None and not callable(on_record):
        raise TypeError(f"on_record must be a callable (step, values) or None, got {type(on_record).__name__}")
    if recorder is not None and not isinstance(recorder, Recorder):
        raise TypeError(f"recorder must be a Recorder or None, got {type(recorder).__name__}")
    loss_fn = _resolve_loss(loss, data.task)

    x = jnp.asarray(data.x_train)
    y = jnp.asarray(data.y_train)
    x_test = getattr(data, "x_test", None)
    has_test = x_test is not None and len(x_test) > 0
    inputs: dict[str, Any] = {"x_train": x, "y_train": y}
    if has_test:
        inputs["x_test"] = jnp.asarray(data.x_test)
        inputs["y_test"] = jnp.asarray(data.y_test)

    if recorder is None:
        measures: tuple[Measure, ...] = (Loss(),) + ((TestLoss(),) if has_test else ())
        record_steps = np.array([int(steps)], dtype=np.int64)
    else:
        measures = recorder.for_task(data.task, has_test)
        record_steps = recorder.steps(int(steps))
        n_probe = min(recorder.probe, n_train)
        inputs["probe_x"] = x[:n_probe]
        inputs["probe_y"] = y[:n_probe]
        inputs["lnp_key"] = jax.random.fold_in(key, _LNP_KEY_SALT)  # Hutchinson probes: fold in the step
        if any("test" in m.needs for m in measures) and has_test:
            inputs["test_probe_x"] = inputs["x_test"][: min(recorder.probe, len(data.x_test))]
        if any("kernel_regression" in m.needs for m in measures) and has_test:
            inputs["kernel_test_preds"] = linearized_test_predictions(model, x, y, inputs["x_test"])
        if any("kernel0" in m.needs for m in measures):
            from ntkbench.kernel import entk

            inputs["kernel0"] = entk(model, inputs["probe_x"], check_finite=False)

    params, rest = eqx.partition(model, eqx.is_inexact_array)
    frozen, static = eqx.partition(rest, eqx.is_array)  # untrained arrays: dynamic, not static
    opt_state = optimizer.init(params)
    watched = tuple(m.name for m in measures if m.name in _DIVERGENCE_MEASURES)
    lnp_probes: LNPProbes = "auto" if recorder is None else recorder.lnp_probes
    # the parts jax.jit takes as static arguments, hashed once per train() call
    stepping = _static_arg((static, optimizer, loss_fn, batch_size))
    recording = _static_arg((static, measures, loss_fn, lnp_probes, watched))

    def advance(params, opt_state, start: int, stop: int):
        """Dispatch steps ``start .. stop-1``: (params, opt_state, params finite)."""
        start_, stop_ = jnp.asarray(start, jnp.int32), jnp.asarray(stop, jnp.int32)
        return _advance(stepping, params, frozen, opt_state, x, y, key, start_, stop_)

    def record_at(params, step: int):
        """Dispatch the record at ``step``: (record, watched measures finite)."""
        return _record(recording, params, frozen, {**inputs, "step": jnp.asarray(step, jnp.int32)})

    def advance_and_record(params, opt_state, start: int, stop: int):
        """Dispatch steps ``start .. stop-1`` and the record at ``stop`` (nothing waits):
        (params, opt_state, record, watched measures finite, params finite)."""
        params, opt_state, params_ok = advance(params, opt_state, start, stop)
        return (params, opt_state, *record_at(params, stop), params_ok)

    records: list[dict[str, Any]] = []
    diverged: int | None = None
    final = params

    def settle(step: int, start: int, before: tuple[Any, Any], out: tuple) -> bool:
        """Take the record of the segment ``start .. step`` once it has run (the next one
        is already dispatched); False when training stops there (a divergence)."""
        nonlocal diverged, final
        new_params, _, record, record_ok, params_ok = out
        params_ok, record_ok = (bool(v) for v in jax.device_get((params_ok, record_ok)))
        if not params_ok and step > start:  # find the first non-finite step, one at a time
            new_params, opt = before
            for i in range(start, step):
                new_params, opt, ok = advance(new_params, opt, i, i + 1)
                if not bool(ok):
                    diverged = i + 1
                    break
            record, record_ok = record_at(new_params, step)  # recorded as at `step`
            record_ok = bool(record_ok)
        records.append(record)
        final = new_params
        if on_record is not None:
            on_record(step, {k: np.asarray(v) for k, v in jax.device_get(record).items()})
        if diverged is None and watched and not record_ok:
            diverged = step
        return diverged is None

    # segment k+1 is dispatched before segment k's finiteness is read back: the host never
    # waits between segments (a divergence found late discards the segment dispatched after)
    with _lapack_one_thread(0 if recorder is None else min(recorder.probe, n_train)):
        pending = None
        done = 0
        for s in record_steps:
            s = int(s)
            out = advance_and_record(params, opt_state, done, s)
            current = (s, done, (params, opt_state), out)
            params, opt_state, done = out[0], out[1], s
            if pending is not None and not settle(*pending):
                pending = None
                break
            pending = current
        if pending is not None:
            settle(*pending)
        records = jax.block_until_ready(records)
    while len(records) < len(record_steps):  # stopped: the later records are NaN
        records.append(_nan_record(records[-1]))
    trained = eqx.combine(final, frozen, static)

    host = jax.device_get(records)  # one transfer at the end
    data_vars = {}
    for m in measures:
        values = np.stack([np.asarray(r[m.name]) for r in host])
        data_vars[m.name] = xr.Variable(("step",) + m.dims, values, m.attrs)
    coords: dict[str, Any] = {"step": ("step", record_steps, var_attrs("step"))}
    eig_dims = {d for m in measures for d in m.dims}
    if "eigen_index" in eig_dims:
        n_eig = next(data_vars[m.name].shape[1] for m in measures if "eigen_index" in m.dims)
        coords["eigen_index"] = ("eigen_index", np.arange(n_eig, dtype=np.int64), var_attrs("eigen_index"))
    config = {
        "data": getattr(data, "name", ""),
        "task": data.task,
        "steps": int(steps),
        "batch_size": batch_size,
        "loss": loss if isinstance(loss, str) else getattr(loss, "__name__", "callable"),
        "optimizer": "optax",
        "recorder": None
        if recorder is None
        else {
            "every": list(recorder.every) if isinstance(recorder.every, tuple) else recorder.every,
            "probe": recorder.probe,
            "measures": [m.name for m in measures],
            "lnp_probes": recorder.lnp_probes,
        },
    }
    ds = xr.Dataset(data_vars, coords=coords, attrs=make_attrs(config))
    if diverged is not None:
        ds.attrs["diverged_step"] = int(diverged)
    return trained, ds


from ntkbench._callable import make_callable  # noqa: E402

make_callable(__name__)
