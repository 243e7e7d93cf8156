""":class:`Watch`: the recordings of :func:`~ntkbench.train.train` in a training loop the
user writes (the same compiled record, the same run cube)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ntkbench.kernel import _Static
from ntkbench.train._loop import (
    _check_batch_size,
    _check_data,
    _check_steps,
    _cube,
    _record,
    _record_plan,
    _recording,
    _watched,
)
from ntkbench.train._losses import _resolve_loss
from ntkbench.train._measures import Measure
from ntkbench.train._recorder import Recorder


class Watch:
    """Record eNTK measures from your own training loop: call it with the step and the
    model at each step, before that step's update; it records at the recorder's steps.

    ``watch(step, model)`` records the model at ``step`` when ``step`` is one of
    ``recorder.steps(steps)`` and returns True (False otherwise, at no cost). The record is
    the compiled function :func:`~ntkbench.train.train` records with (compiled once per
    model structure; it dispatches without waiting, the values stay on the device until
    :meth:`cube`). :meth:`cube` gives the dataset ``train`` returns for the same recorder
    (dims, coordinates, variable attributes, the run's config attributes);
    :meth:`save` writes it (:func:`ntkbench.cube.save`).

    Parameters
    ----------
    data : an :class:`ntkbench.data.Dataset`, as ``train`` takes: the probe is its first
        ``recorder.probe`` training samples, the test probe its first test samples; the
        losses and accuracies are on its train / test sets.
    recorder : what to record and when (:class:`Recorder`); None records the final
        train/test loss only, as ``train``.
    steps : the number of optimizer steps your loop takes (T); steps 0 .. T may be watched.
    loss : the per-sample loss of the recorded loss measures and of the LNP terms, as
        ``train``'s ``loss``.
    batch_key, batch_size : how your loop draws its mini-batches, when it draws them as
        ``train`` does (step i trains on
        ``ntkbench.train._recorder.train_batch(x, y, batch_key, i, batch_size)``). Needed for
        ``Recorder(lnp_batch="train")`` (the batch the next step trains on; refused without
        them, naming the missing argument). ``batch_key`` also seeds the LNP measures'
        Hutchinson probes as ``train``'s ``key`` does (without it: ``jax.random.key(0)``);
        ``batch_size`` is stored in the config attributes.

    The model of the first call is the initial one: the initial kernel (``kernel0``) and the
    kernel regression's test predictions are of it. Divergence: a non-finite loss or kernel
    at a record is recorded (NaN) and the cube's ``diverged_step`` is the first such step;
    nothing is replayed, and records after it are kept as recorded. Steps must increase
    and not pass ``steps``; otherwise ``ValueError`` naming ``step``.

    Example
    -------
    >>> import equinox as eqx, jax, jax.numpy as jnp, optax, ntkbench as nb
    >>> data = nb.load("digits", n_train=64, n_test=32)
    >>> model = nb.MLP(64, 10, width=16, depth=1, key=jax.random.key(0))
    >>> opt = optax.sgd(0.1)
    >>> state = opt.init(eqx.filter(model, eqx.is_inexact_array))
    >>> watch = nb.Watch(data, recorder=nb.Recorder(every=5, probe=16), steps=10)
    >>> def loss(m, x, y):
    ...     return 0.5 * jnp.mean(jnp.sum((jax.vmap(m)(x) - jax.nn.one_hot(y, 10)) ** 2, -1))
    >>> for step in range(11):
    ...     recorded = watch(step, model)  # before the step's update
    ...     grads = eqx.filter_grad(loss)(model, data.x_train, data.y_train)
    ...     updates, state = opt.update(grads, state)
    ...     model = eqx.apply_updates(model, updates)
    >>> ds = watch.cube()
    >>> ds["step"].values.tolist(), bool(ds.loss[-1] < ds.loss[0])
    ([0, 5, 10], True)
    """

    def __init__(
        self,
        data: Any,
        *,
        recorder: Recorder | None = None,
        steps: int,
        loss: str | Callable = "mse",
        batch_key: jax.Array | None = None,
        batch_size: int | None = None,
    ) -> None:
        _check_data(data)
        if recorder is not None and not isinstance(recorder, Recorder):
            raise TypeError(f"recorder must be a Recorder or None, got {type(recorder).__name__}")
        if batch_key is not None and not (
            isinstance(batch_key, jax.Array) and jnp.issubdtype(batch_key.dtype, jax.dtypes.prng_key)
        ):
            raise TypeError(f"batch_key must be a JAX PRNG key (jax.random.key(seed)) or None, got {batch_key!r}")
        self.steps = _check_steps(steps)
        n_train = len(data.x_train)
        self.batch_size = None if batch_size is None else _check_batch_size(batch_size, n_train)
        if recorder is not None and recorder.lnp_batch == "train":
            missing = [n for n, v in (("batch_key", batch_key), ("batch_size", batch_size)) if v is None]
            if missing:
                raise ValueError(
                    f"Recorder(lnp_batch='train') measures the batch the next step trains on: "
                    f"Watch needs {' and '.join(missing)} (how your loop draws its mini-batches)"
                )
        if recorder is not None and any("linear_training" in m.needs for m in recorder.measures):
            raise ValueError(
                "Watch cannot record linear_test_loss / linear_test_accuracy: the linearized network is trained "
                "with train()'s optimizer, which a loop of your own does not give; use ntkbench.train"
            )
        self.data = data
        self.recorder = recorder
        self.loss = loss
        self.batch_key = batch_key
        self._loss_fn = _resolve_loss(loss, data.task)
        self._record_steps = np.array([self.steps], dtype=np.int64) if recorder is None else recorder.steps(self.steps)
        self._to_record = {int(s) for s in self._record_steps}
        self._inputs: dict[str, Any] | None = None  # set up at the first call (the initial model)
        self._measures: tuple[Measure, ...] = ()
        self._fixed: tuple[Any, _Static] | None = None  # (the model's static part, its _record argument)
        self._last: int | None = None
        self._records: list[tuple[int, dict[str, Any], Any]] = []  # (step, record, watched finite)
        self._explorer: Any = None  # the live Explorer of :meth:`explorer`, refreshed at each record

    def __repr__(self) -> str:
        return f"Watch(recorder={self.recorder!r}, steps={self.steps}, recorded={len(self._records)})"

    def _recording(self, static) -> _Static:
        """The static argument of the record: one per model structure (equal structures
        reuse it, so the compiled record is reused)."""
        if self._fixed is not None:
            last, fixed = self._fixed
            if last is static or eqx.tree_equal(last, static) is True:
                return fixed
        fixed = _recording(static, self._measures, self._loss_fn, self.recorder, self.batch_size)
        self._fixed = (static, fixed)
        return fixed

    def __call__(self, step: int, model: Any) -> bool:
        """Record ``model`` as it is at ``step``, before that step's update, if ``step`` is
        a record step; return whether it recorded.

        ``model``: an Equinox module of one sample, ``(apply_fn, params)``, or a model with
        state as :func:`ntkbench.entk` takes it (a Flax NNX module, ``(linen_module,
        variables)``, ``(eqx_model, eqx.nn.State)``): its trainable parameters only enter
        the kernel, in inference mode. Between record steps the model is not looked at."""
        from ntkbench.kernel import as_model

        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        step = int(step)
        if step > self.steps:
            raise ValueError(f"step {step} is after the last step (steps={self.steps})")
        if self._last is not None and step <= self._last:
            raise ValueError(f"step must increase from call to call: got step {step} after step {self._last}")
        if self._inputs is not None and step not in self._to_record:
            self._last = step
            return False
        model = as_model(model)
        if self._inputs is None:
            key = jax.random.key(0) if self.batch_key is None else self.batch_key
            self._inputs, self._measures, _ = _record_plan(
                model, self.data, self.recorder, self.steps, self.batch_key, lnp_key=key
            )
        self._last = step
        if step not in self._to_record:
            return False
        params, rest = eqx.partition(model, eqx.is_inexact_array)
        frozen, static = eqx.partition(rest, eqx.is_array)
        record, ok = _record(
            self._recording(static), (params, frozen), {**self._inputs, "step": jnp.asarray(step, jnp.int32)}
        )
        self._records.append((step, record, ok))
        if self._explorer is not None:
            self._explorer.set_data(self._live_cube())
        return True

    def cube(self):
        """The run cube of the records so far (an ``xarray.Dataset``, as ``train`` returns)."""
        if not self._records:
            raise ValueError("Watch.cube: nothing recorded yet (call watch(step, model) at step 0 first)")
        steps = np.array([s for s, _, _ in self._records], dtype=np.int64)
        host, oks = jax.device_get(([r for _, r, _ in self._records], [ok for _, _, ok in self._records]))
        diverged = None
        if _watched(self._measures):
            bad = [int(s) for s, ok in zip(steps, oks, strict=True) if not bool(ok)]
            diverged = bad[0] if bad else None
        return _cube(
            host,
            self._measures,
            steps,
            self.recorder,
            self.data,
            self.steps,
            self.batch_size,
            self.loss,
            "own loop (ntkbench.Watch)",
            diverged,
        )

    def _live_cube(self):
        """:meth:`cube` on every record step (NaN where nothing is recorded yet): the same
        dims from the first record to the last, as a live sweep's cube."""
        return self.cube().reindex(step=self._record_steps)

    def explorer(self, **kwargs: Any):
        """An :class:`ntkbench.widgets.Explorer` of the records so far that fills in as the
        loop records (each record redraws it in place; the steps not yet recorded are
        empty). ``kwargs`` go to ``Explorer`` (``measure``, ``figures_dir``). Show it (the
        cell's value, or ``display``) before the loop; it needs the notebook extra.

        Example
        -------
        In a notebook (the widget needs a page to show it), before the loop goes on:

        >>> watch(0, model)  # doctest: +SKIP
        >>> watch.explorer(measure="entropy")  # doctest: +SKIP
        """
        from ntkbench.widgets import Explorer

        if not self._records:
            raise ValueError("Watch.explorer: nothing recorded yet (call watch(0, model) first)")
        self._explorer = Explorer(self._live_cube(), **kwargs)
        return self._explorer

    def save(self, path: str | Path, format: str | None = None) -> Path:
        """Write :meth:`cube` to ``path`` (:func:`ntkbench.cube.save`); return the path."""
        from ntkbench.cube import save

        return save(self.cube(), path, format=format)
