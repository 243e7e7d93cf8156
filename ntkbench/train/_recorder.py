"""What a recording sees and does: :class:`Context` (the quantities measures share at one
record step, computed on first use) and :class:`Recorder` (when to record and what)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntkbench.conventions import DEFAULT, Convention
from ntkbench.train._losses import _predict
from ntkbench.train._measures import DEFAULT_MEASURES, MEASURES, Measure

LNPProbes: TypeAlias = int | Literal["auto"] | None  # Hutchinson probes of the LNP measures; None: exact
LNPBatch: TypeAlias = Literal["probe", "train"]  # the batch the LNP measures are of


def n_outputs(model, x) -> int:
    """C: the number of outputs of ``model`` on one sample of ``x`` (N, ...) (static)."""
    return int(np.prod(jax.eval_shape(model, x[0]).shape))


def convention_kernel(model, x, convention: Convention = DEFAULT):
    """The eNTK of ``x`` as the measures of ``convention`` see it (square): (N, N) traced,
    or (N·C, N·C) full (:meth:`ntkbench.conventions.Convention.matrix`)."""
    from ntkbench.kernel import entk

    K = entk(model, x, outputs=convention.entk_outputs, check_finite=False)  # type: ignore[arg-type]
    return convention.matrix(K, n_outputs(model, x))


def train_batch(x, y, key, step, batch_size: int):
    """The mini-batch of optimizer step ``step`` (the one that takes the model from step
    ``step`` to ``step + 1``): ``batch_size`` samples drawn without replacement from
    ``fold_in(key, step)``, or all of ``x`` when ``batch_size >= N``. The training loop and
    the LNP measures on the training batch both draw it here."""
    n = x.shape[0]
    if batch_size >= n:
        return x, y
    idx = jax.random.choice(jax.random.fold_in(key, step), n, (batch_size,), replace=False)
    return x[idx], y[idx]


def optimizer_steps(batch_loss, params, opt_state, x, y, key, start, stop, optimizer, batch_size: int, state=()):
    """Optimizer steps ``start .. stop-1`` of ``batch_loss(params, state, x_batch, y_batch)
    -> (loss, new state)`` in one ``fori_loop``, step i on :func:`train_batch`'s batch i;
    ``state`` is what the forward pass updates besides the trained parameters (BatchNorm
    running statistics; ``()`` for none). Returns ``(params, opt_state, state)``. The
    training loop and the linearized network's training both step here."""

    def body(i, carry):
        p, s, st = carry
        xb, yb = train_batch(x, y, key, i, batch_size)
        grads, st = jax.grad(batch_loss, has_aux=True)(p, st, xb, yb)
        updates, s = optimizer.update(grads, s, p)
        return optax.apply_updates(p, updates), s, st

    return jax.lax.fori_loop(start, stop, body, (params, opt_state, state))


class Context:
    """What measures see at one record step. Quantities are computed on first use
    (while tracing), so a recording pays only for what its measures need.

    Attributes (all traced arrays): ``model``; ``convention`` (the
    :class:`ntkbench.conventions.Convention` of the kernel measures); ``kernel`` the probe
    set's eNTK under it, (S, S) with S = N traced or N·C full; ``spectral_kernel`` the
    matrix whose spectrum the spectral measures use (``kernel`` or its cosine
    normalisation); ``eigenvalues`` (S,) descending; ``eigenpairs`` (eigenvalues (S,),
    eigenvectors (S, S) as columns); ``residual`` (N, C) the probe batch's
    u_i = ∂l_i/∂f(x_i); ``lnp`` the loss–network–position decomposition of the probe
    batch, or with ``lnp_batch="train"`` of the mini-batch the next optimizer step trains
    on (:func:`ntkbench.lnp`, computed once per record with ``lnp_probes`` Hutchinson
    probes, None = exact, keyed by ``inputs["lnp_key"]`` folded with ``inputs["step"]``);
    ``kernel0`` the probe eNTK at step 0 (same convention); ``test_kernel`` /
    ``test_eigenvalues`` on the test probe; ``loss``, ``test_loss``, ``accuracy``,
    ``test_accuracy`` on the full train / test sets; ``inputs`` the dict of arrays
    (``probe_x``, ``probe_y``, ``test_probe_x``, ``x_train``, ...).
    """

    def __init__(
        self,
        model,
        inputs: dict[str, Any],
        loss_fn: Callable,
        lnp_probes: LNPProbes = "auto",
        convention: Convention = DEFAULT,
        lnp_batch: LNPBatch = "probe",
        batch_size: int | None = None,
    ):
        self.model = model
        self.inputs = inputs
        self.loss_fn = loss_fn
        self.lnp_probes: LNPProbes = lnp_probes
        self.convention = convention
        self.lnp_batch: LNPBatch = lnp_batch
        self.batch_size = batch_size

    @functools.cached_property
    def kernel(self):
        if "fixed_kernel" in self.inputs:  # another network's kernel (Recorder(kernel_model=...))
            return self.inputs["fixed_kernel"]
        return convention_kernel(self.model, self.inputs["probe_x"], self.convention)

    @functools.cached_property
    def spectral_kernel(self):
        return self.convention.spectral(self.kernel)

    @functools.cached_property
    def eigenvalues(self):
        from ntkbench.measures import spectrum

        return spectrum(self.spectral_kernel)

    @functools.cached_property
    def eigenpairs(self):
        from ntkbench.measures import spectrum

        return spectrum(self.spectral_kernel, vectors=True)

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
        if self.lnp_batch == "train":
            if self.batch_size is None or "batch_key" not in self.inputs:
                raise ValueError("lnp_batch='train' needs the training loop's batch size and key")
            step = self.inputs.get("step", 0)
            x, y = train_batch(
                self.inputs["x_train"], self.inputs["y_train"], self.inputs["batch_key"], step, self.batch_size
            )
        else:
            x, y = self.inputs["probe_x"], self.inputs["probe_y"]
        return lnp(self.model, x, y, self.loss_fn, probes=self.lnp_probes, key=key)

    @property
    def kernel0(self):
        return self.inputs["kernel0"]

    @functools.cached_property
    def test_kernel(self):
        if "fixed_test_kernel" in self.inputs:
            return self.inputs["fixed_test_kernel"]
        return convention_kernel(self.model, self.inputs["test_probe_x"], self.convention)

    @functools.cached_property
    def test_eigenvalues(self):
        from ntkbench.measures import spectrum

        return spectrum(self.convention.spectral(self.test_kernel))

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
    kernel, normalize, effective, trace_normalize, output_reduction : the kernel
        convention of the kernel measures (:class:`ntkbench.conventions.Convention`):
        ``kernel="traced"`` (N × N, default) or ``"full"`` ((N·C) × (N·C), sample-major);
        ``normalize="cosine"`` for the cosine-normalised kernel's spectrum; ``effective``
        for S / ln(size) in place of S; ``trace_normalize`` for Tr K / size;
        ``output_reduction="mean"`` for a traced kernel averaged over the C outputs
        (neural-tangents' ``trace_axes``). Recorded in each kernel variable's attributes.

        Cost of ``kernel="full"`` per record: the Jacobian of N·C rows, an (N·C)² kernel
        (4·(N·C)² bytes in float32) and its eigendecomposition, about (N·C)³/3 flops (the
        traced kernel: N³/3). A full kernel of more than
        :data:`ntkbench.conventions.KERNEL_FULL_MAX` rows is refused before training.
    kernel_model, kernel_model_name : another network whose eNTK the kernel measures are of,
        instead of the one being trained (e.g. the data paper's RND target network), and
        what to call it in the variables' attributes and labels. Being fixed, its kernels of
        the probe and the test probe are computed once before training; measures that pair
        the kernel's eigenvectors with the trained network's residual (``residual_weights``,
        ``spectral_position_eig``) are refused with it.
    lnp_batch : ``"probe"`` (default): the LNP measures (``chi_loss``, ``chi_net``,
        ``chi_net_se``, ``spectral_position``, ``grad_norm_sq``) on the fixed probe set;
        ``"train"``: on the mini-batch the next optimizer step trains on, before that step
        (as the authors' tool measures them). Kernel-free either way: no spectrum.

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
        kernel: str = "traced",
        normalize: str = "none",
        effective: bool = False,
        trace_normalize: bool = False,
        output_reduction: str = "sum",
        lnp_batch: LNPBatch = "probe",
        kernel_model: Any = None,
        kernel_model_name: str = "another network",
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
        if not isinstance(lnp_batch, str) or lnp_batch not in ("probe", "train"):
            raise ValueError(f"lnp_batch must be 'probe' or 'train', got {lnp_batch!r}")
        self.convention = Convention(
            kernel=kernel,  # type: ignore[arg-type]  checked there, naming the argument
            normalize=normalize,  # type: ignore[arg-type]
            effective=effective,
            trace_normalize=trace_normalize,
            output_reduction=output_reduction,  # type: ignore[arg-type]
        )
        self.lnp_batch: LNPBatch = lnp_batch
        if kernel_model is not None:
            from ntkbench.kernel import as_model

            kernel_model = as_model(kernel_model)
        if not isinstance(kernel_model_name, str) or not kernel_model_name:
            raise TypeError(f"kernel_model_name must be a non-empty str, got {kernel_model_name!r}")
        self.kernel_model = kernel_model
        self.kernel_model_name = kernel_model_name
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
        paired = sorted({m.name for m in resolved} & {"residual_weights", "spectral_position_eig"})
        if kernel_model is not None and paired:
            raise ValueError(
                f"measures: {paired} pair the kernel's eigenvectors with the trained network's residual; "
                "they cannot be recorded on another network's kernel (kernel_model)"
            )
        self.measures: tuple[Measure, ...] = tuple(resolved)

    def __repr__(self) -> str:
        names = [m.name for m in self.measures]
        extra = "" if self.convention.is_default else f", convention={self.convention}"
        extra += "" if self.lnp_batch == "probe" else f", lnp_batch={self.lnp_batch!r}"
        return f"Recorder(every={self.every!r}, probe={self.probe}, measures={names}{extra})"

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
