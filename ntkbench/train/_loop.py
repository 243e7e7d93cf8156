"""The training loop: :func:`train` (compiled segments of steps between recordings) and
:func:`linearized_test_predictions` (kernel regression with the initial eNTK)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntkbench import _variables
from ntkbench.conventions import DEFAULT, KERNEL_MEASURES, LNP_MEASURES, Convention
from ntkbench.kernel import _Static
from ntkbench.kernel._stateful import train_forward, user_model
from ntkbench.train._losses import _TASKS, _predict, _resolve_loss
from ntkbench.train._measures import Loss, Measure, TestLoss
from ntkbench.train._recorder import (
    Context,
    LNPBatch,
    LNPProbes,
    Recorder,
    convention_kernel,
    n_outputs,
    optimizer_steps,
)

_LNP_KEY_SALT = 0x4C4E50  # "LNP": the Hutchinson probes' key is fold_in(key, salt) then the step


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


# ---------------------------------------------------------------------------
# Compiled pieces
# ---------------------------------------------------------------------------


def _steps(params, frozen, static, opt_state, x, y, key, start, stop, optimizer, loss_fn, batch_size):
    """Steps ``start .. stop-1`` in one ``fori_loop``; the batch of step i is drawn from
    ``fold_in(key, i)`` (:func:`~ntkbench.train._recorder.train_batch`). The model's
    untrained arrays ``frozen`` are carried through: a model with state (BatchNorm) runs
    in training mode (:func:`ntkbench.kernel._stateful.train_forward`) and updates them.
    Returns ``(params, opt_state, frozen)``."""

    def batch_loss(p, fr, xb, yb):
        preds, trained = train_forward(eqx.combine(p, fr, static), xb)
        _, rest = eqx.partition(trained, eqx.is_inexact_array)
        fr, _ = eqx.partition(rest, eqx.is_array)
        return jnp.mean(jax.vmap(loss_fn)(preds, yb)), fr

    return optimizer_steps(batch_loss, params, opt_state, x, y, key, start, stop, optimizer, batch_size, frozen)


def _finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


class _Unhashable(_Static):
    """A static argument that cannot be hashed (e.g. a measure holding an array):
    compared by identity, so it is compiled once per :func:`train` call."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self._hash = id(self)

    def __hash__(self) -> int:  # defining __eq__ alone would make it unhashable
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other


def _static_arg(value: Any) -> _Static:
    try:
        return _Static(value)
    except TypeError:
        return _Unhashable(value)


@functools.partial(jax.jit, static_argnums=0)
def _advance(fixed: _Static, trained, opt_state, x, y, key, start, stop):
    """Steps ``start .. stop-1`` (:func:`_steps`; ``fixed.value`` = the model's static
    part, optimizer, loss, batch size) of ``trained = (params, frozen)`` (the parameters
    and the model's other arrays: ints, BatchNorm statistics): the new ``(params, frozen)``
    and optimizer state, and whether the parameters are all finite, without a host sync."""
    static, optimizer, loss_fn, batch_size = fixed.value
    params, frozen = trained
    params, opt_state, frozen = _steps(
        params, frozen, static, opt_state, x, y, key, start, stop, optimizer, loss_fn, batch_size
    )
    return (params, frozen), opt_state, _finite(params)


@functools.partial(jax.jit, static_argnums=0)
def _record(fixed: _Static, trained, inputs):
    """One record (``fixed.value`` = the model's static part, measures, loss, LNP probes,
    the measures watched for divergence, the kernel convention, the LNP batch and the batch
    size) and whether the watched ones are all finite. Compiled apart from
    :func:`_advance`, so runs with other optimizers share it."""
    static, measures, loss_fn, lnp_probes, watched, convention, lnp_batch, batch_size = fixed.value
    model = eqx.combine(*trained, static)
    record = _record_values(model, inputs, measures, loss_fn, lnp_probes, convention, lnp_batch, batch_size)
    return record, _finite([record[k] for k in watched])


#: recorded measures whose NaN/Inf means the run diverged (the loss or the kernel:
#: ``diverges`` in ``ntkbench._variables.TABLE``); an undefined entropy alone (a kernel
#: without gradient) does not
_DIVERGENCE_MEASURES = _variables.DIVERGENCE_MEASURES


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


def _record_values(
    model,
    inputs,
    measures,
    loss_fn,
    lnp_probes: LNPProbes = "auto",
    convention: Convention = DEFAULT,
    lnp_batch: LNPBatch = "probe",
    batch_size: int | None = None,
):
    ctx = Context(model, inputs, loss_fn, lnp_probes, convention, lnp_batch, batch_size)
    return {m.name: jnp.asarray(m(ctx)) for m in measures}


def _variable_attrs(m: Measure, convention: Convention, lnp_batch: LNPBatch, recorder: Any = None) -> dict[str, str]:
    """A recorded variable's attributes: its long name and units, and the convention it
    was measured under (kernel measures: the ``ntk_*`` attributes, and under a convention
    other than the default a long name that says it, as for another network's kernel,
    ``ntk_network``; LNP measures: ``ntk_lnp_batch``)."""
    attrs = dict(m.attrs)
    if m.name in KERNEL_MEASURES:
        attrs.update(convention.for_measure(m.name))
        if not convention.is_default:
            attrs["long_name"] = convention.describe(m.name)
            attrs["units"] = convention.units(m.name, attrs["units"])
        if recorder is not None and recorder.kernel_model is not None:
            attrs["ntk_network"] = recorder.kernel_model_name
            attrs["long_name"] = f"{attrs['long_name']}, {recorder.kernel_model_name}"
    if m.name in LNP_MEASURES:
        attrs["ntk_lnp_batch"] = lnp_batch
        if lnp_batch == "train":
            attrs["long_name"] = attrs["long_name"].replace("(probe batch)", "(training batch, before the step)")
    return attrs


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


def _check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    return int(steps)


def _check_batch_size(batch_size: Any, n_train: int) -> int:
    """``batch_size`` checked: None or >= N is the full batch (N)."""
    if batch_size is None:
        return n_train
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    return int(min(batch_size, n_train))


def _record_plan(
    model, data, recorder: Recorder | None, steps: int, batch_key: jax.Array | None, *, lnp_key: jax.Array
) -> tuple[dict[str, Any], tuple[Measure, ...], np.ndarray]:
    """What a record of ``recorder`` on ``data`` needs, set up once before the first
    record: (inputs, measures, record steps). ``inputs`` holds the data, the probe and test
    probe, the LNP probes' key (``lnp_key`` folded with a salt; each record folds in its
    step), the key of the training batches (``batch_key``, for ``lnp_batch="train"``),
    another network's fixed kernels, the initial kernel (``kernel0``) and the kernel
    regression's test predictions of ``model`` (the initial one). A full kernel too large
    to form is refused here (``check_size``). No recorder: the final train/test loss."""
    x = jnp.asarray(data.x_train)
    y = jnp.asarray(data.y_train)
    n_train = len(data.x_train)
    x_test = getattr(data, "x_test", None)
    has_test = x_test is not None and len(x_test) > 0
    inputs: dict[str, Any] = {"x_train": x, "y_train": y}
    if has_test:
        inputs["x_test"] = jnp.asarray(data.x_test)
        inputs["y_test"] = jnp.asarray(data.y_test)
    if recorder is None:
        measures: tuple[Measure, ...] = (Loss(),) + ((TestLoss(),) if has_test else ())
        return inputs, measures, np.array([int(steps)], dtype=np.int64)
    convention = recorder.convention
    measures = recorder.for_task(data.task, has_test)
    record_steps = recorder.steps(int(steps))
    n_probe = min(recorder.probe, n_train)
    inputs["probe_x"] = x[:n_probe]
    inputs["probe_y"] = y[:n_probe]
    inputs["lnp_key"] = jax.random.fold_in(lnp_key, _LNP_KEY_SALT)  # Hutchinson probes: fold in the step
    if recorder.lnp_batch == "train":
        if batch_key is None:
            raise ValueError("lnp_batch='train' needs the key the training batches are drawn from")
        inputs["batch_key"] = batch_key  # the LNP measures draw the next step's mini-batch
    kernel_model = recorder.kernel_model  # another network's kernel, or None: the trained one's
    if any(m.name in KERNEL_MEASURES for m in measures):
        convention.check_size(n_probe, n_outputs(model if kernel_model is None else kernel_model, x), name="probe")
        if kernel_model is not None:  # fixed: computed once
            inputs["fixed_kernel"] = convention_kernel(kernel_model, inputs["probe_x"], convention)
    if any("test" in m.needs for m in measures) and has_test:
        inputs["test_probe_x"] = inputs["x_test"][: min(recorder.probe, len(data.x_test))]
        if kernel_model is not None:
            inputs["fixed_test_kernel"] = convention_kernel(kernel_model, inputs["test_probe_x"], convention)
    if any("kernel_regression" in m.needs for m in measures) and has_test:
        inputs["kernel_test_preds"] = linearized_test_predictions(model, x, y, inputs["x_test"])
    if any("kernel0" in m.needs for m in measures):
        inputs["kernel0"] = convention_kernel(
            model if kernel_model is None else kernel_model, inputs["probe_x"], convention
        )
    return inputs, measures, record_steps


def _watched(measures: tuple[Measure, ...]) -> tuple[str, ...]:
    """The recorded measures whose NaN/Inf is a divergence."""
    return tuple(m.name for m in measures if m.name in _DIVERGENCE_MEASURES)


def _recording(static, measures, loss_fn, recorder: Recorder | None, batch_size: int | None) -> _Static:
    """The static argument of :func:`_record` (hashed once; equal ones share a compilation)."""
    convention: Convention = DEFAULT if recorder is None else recorder.convention
    lnp_batch: LNPBatch = "probe" if recorder is None else recorder.lnp_batch
    lnp_probes: LNPProbes = "auto" if recorder is None else recorder.lnp_probes
    return _static_arg((static, measures, loss_fn, lnp_probes, _watched(measures), convention, lnp_batch, batch_size))


def _cube(
    host: list[dict[str, Any]],
    measures: tuple[Measure, ...],
    record_steps: np.ndarray,
    recorder: Recorder | None,
    data,
    steps: int,
    batch_size: int | None,
    loss: str | Callable,
    optimizer: str,
    diverged: int | None,
):
    """The run cube of the host records ``host`` (one per step of ``record_steps``): dims
    ``step`` (and ``eigen_index``), variable attributes, the run's config attributes and
    ``diverged_step``."""
    import xarray as xr

    from ntkbench.cube import make_attrs, var_attrs

    convention: Convention = DEFAULT if recorder is None else recorder.convention
    lnp_batch: LNPBatch = "probe" if recorder is None else recorder.lnp_batch
    data_vars = {}
    for m in measures:
        values = np.stack([np.asarray(r[m.name]) for r in host])
        attrs = _variable_attrs(m, convention, lnp_batch, None if recorder is None else recorder)
        data_vars[m.name] = xr.Variable(("step",) + m.dims, values, attrs)
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
        "optimizer": optimizer,
        "recorder": None
        if recorder is None
        else {
            "every": list(recorder.every) if isinstance(recorder.every, tuple) else recorder.every,
            "probe": recorder.probe,
            "measures": [m.name for m in measures],
            "lnp_probes": recorder.lnp_probes,
            # stated only where they differ from the defaults (older files stay equal)
            **({} if convention.is_default else dataclasses.asdict(convention)),
            **({} if lnp_batch == "probe" else {"lnp_batch": lnp_batch}),
            **({} if recorder.kernel_model is None else {"kernel_model": recorder.kernel_model_name}),
        },
    }
    ds = xr.Dataset(data_vars, coords=coords, attrs=make_attrs(config))
    if diverged is not None:
        ds.attrs["diverged_step"] = int(diverged)
    return ds


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
    model : Equinox module applied to ONE sample (``model(x)``), whose inexact array
        leaves are trained; or any model :func:`ntkbench.entk` takes: ``(apply_fn,
        params)``, a model with BatchNorm state (``(eqx_model, eqx.nn.State)``, a Flax NNX
        module, ``(functools.partial(linen_module.apply, train=False), variables)``). A
        model with state trains its BatchNorm layers on each batch's statistics and carries
        their running averages from step to step (dropout stays off); the records are of
        the model in inference mode (:func:`ntkbench.kernel._stateful.train_forward`).
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
    ``eigenvalues``); each variable carries ``long_name`` and ``units``. The trained model
    is in the form given: an Equinox module, ``(apply_fn, params)``, a new NNX module (the
    given one unchanged), ``(apply, variables)``, ``(model, state)``.

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
    from ntkbench.kernel import as_model

    model = as_model(model)
    _check_data(data)
    if not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise TypeError(f"key must be a JAX PRNG key (jax.random.key(seed)), got {key!r}")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
    steps = _check_steps(steps)
    n_train = len(data.x_train)
    batch_size = _check_batch_size(batch_size, n_train)
    if on_record is not None and not callable(on_record):
        raise TypeError(f"on_record must be a callable (step, values) or None, got {type(on_record).__name__}")
    if recorder is not None and not isinstance(recorder, Recorder):
        raise TypeError(f"recorder must be a Recorder or None, got {type(recorder).__name__}")
    loss_fn = _resolve_loss(loss, data.task)
    inputs, measures, record_steps = _record_plan(model, data, recorder, int(steps), key, lnp_key=key)
    x, y = inputs["x_train"], inputs["y_train"]
    if any("linear_training" in m.needs for m in measures) and "x_test" in inputs:
        from ntkbench.train._linear import linearized_training_predictions

        inputs["linear_test_preds"] = linearized_training_predictions(
            model, x, y, inputs["x_test"], optimizer=optimizer, steps=steps, loss_fn=loss_fn,
            batch_size=batch_size, key=key,
        )  # fmt: skip

    params, rest = eqx.partition(model, eqx.is_inexact_array)
    frozen, static = eqx.partition(rest, eqx.is_array)  # untrained arrays: dynamic, not static
    opt_state = optimizer.init(params)
    # from here on "params" is (parameters, untrained arrays): a BatchNorm's training updates both
    params = (params, frozen)
    watched = _watched(measures)
    # the parts jax.jit takes as static arguments, hashed once per train() call
    stepping = _static_arg((static, optimizer, loss_fn, batch_size))
    recording = _recording(static, measures, loss_fn, recorder, batch_size)

    def advance(params, opt_state, start: int, stop: int):
        """Dispatch steps ``start .. stop-1``: (params, opt_state, params finite)."""
        start_, stop_ = jnp.asarray(start, jnp.int32), jnp.asarray(stop, jnp.int32)
        return _advance(stepping, params, opt_state, x, y, key, start_, stop_)

    def record_at(params, step: int):
        """Dispatch the record at ``step``: (record, watched measures finite)."""
        return _record(recording, params, {**inputs, "step": jnp.asarray(step, jnp.int32)})

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
    trained = user_model(eqx.combine(*final, static))

    host = jax.device_get(records)  # one transfer at the end
    ds = _cube(host, measures, record_steps, recorder, data, int(steps), batch_size, loss, "optax", diverged)
    return trained, ds
