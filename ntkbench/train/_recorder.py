"""What a recording sees and does: :class:`Context` (the quantities measures share at one
record step, computed on first use) and :class:`Recorder` (when to record and what)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from ntkbench.train._losses import _predict
from ntkbench.train._measures import DEFAULT_MEASURES, MEASURES, Measure

LNPProbes: TypeAlias = int | Literal["auto"] | None  # Hutchinson probes of the LNP measures; None: exact


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
