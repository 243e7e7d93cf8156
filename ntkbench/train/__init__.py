"""Training with optax and recorders that measure the eNTK while a network learns.

``train`` runs an optax optimizer on an Equinox model. All steps between two recordings
run inside ONE compiled function (a ``lax.fori_loop`` over steps; mini-batches are drawn
on the device from ``fold_in(key, step)``), so there is no host round-trip per step, and
the result does not depend on when recordings happen.

A :class:`Recorder` says when to record and what: a list of *measures*, small objects
with one job each (optax style). Every record step computes the eNTK of a fixed probe set
once (``ntkbench.entk``) and evaluates all measures inside one compiled function; results
stay on the device until training ends. Adding a measure means adding one small class (a
built-in one also a row of ``ntkbench._variables.TABLE``: its long name, units, dims)::

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

The package (private modules, re-exported here):

- ``_losses``: per-sample losses (:func:`make_loss`) and batched predictions.
- ``_measures``: :class:`Measure` and the built-in measures, :data:`MEASURES` and
  :data:`DEFAULT_MEASURES`; their names, units, long names, dims and needs are rows of
  the one table ``ntkbench._variables.TABLE``, which ``ntkbench.cube`` reads too.
- ``_recorder``: :class:`Context` (what measures see) and :class:`Recorder`.
- ``_loop``: :func:`train` and :func:`linearized_test_predictions`; the record set-up
  and the run cube of host records, which :class:`Watch` shares.
- ``_watch``: :class:`Watch`, the same records from a training loop the user writes.
- ``_linear``: :func:`linearized_training_predictions`, the linearized network trained
  with the run's optimizer and steps (the ``linear_test_*`` measures).
"""

from ntkbench.train._batchnorm import calibrate_batchnorm
from ntkbench.train._linear import linearized_training_predictions
from ntkbench.train._loop import _lapack_one_thread as _lapack_one_thread
from ntkbench.train._loop import linearized_test_predictions, train
from ntkbench.train._losses import make_loss
from ntkbench.train._measures import DEFAULT_MEASURES, MEASURES, Measure
from ntkbench.train._recorder import Context, Recorder
from ntkbench.train._recorder import LNPProbes as LNPProbes
from ntkbench.train._watch import Watch

__all__ = [
    "train",
    "Watch",
    "Recorder",
    "Measure",
    "MEASURES",
    "DEFAULT_MEASURES",
    "Context",
    "make_loss",
    "linearized_test_predictions",
    "linearized_training_predictions",
    "calibrate_batchnorm",
]

# ``nb.train(model, data, ...)`` calls the function whatever was imported first (ntkbench._callable)
from ntkbench._callable import make_callable  # noqa: E402

make_callable(__name__)
