"""Sweeps: a base experiment run over a grid (width × seed × ...), one cube file per run.

A config is a dict (usually read from TOML) with the sections of one experiment and a
``grid`` of swept values::

    title = "MLP width sweep on digits"
    seed = 0                                   # base seed (model init, batches, data)

    [model]                                    # ntkbench.make_model
    name = "mlp"
    width = 64
    depth = 2

    [data]                                     # ntkbench.load(name, n_train, n_test, seed, **options)
    name = "digits"
    n_train = 512
    n_test = 256

    [select]                                   # optional: ntkbench.select from the pool
    method = "rnd"                             # rnd | random | max_entropy
    budget = 50                                # training samples chosen of data.n_train
    # seed = 0                                 # default: the run's seed
    # options.rnd = {steps = 50}               # options per method

    [train]
    optimizer = "sgd"                          # sgd | momentum | adam | adamw
    lr = 0.05
    steps = 300
    batch_size = 64                            # or "full"
    loss = "mse"                               # mse | ce

    [record]                                   # ntkbench.Recorder
    every = 25                                 # int | "log" | [steps]
    probe = 128
    # lnp_probes = 4                           # LNP measures: Hutchinson probes | "exact" | "auto"
    # kernel = "full"                          # "traced" (N×N) | "full" ((N·C)×(N·C)); ntkbench.conventions
    # normalize = "cosine"                     # "none" | "cosine": the spectral measures' kernel
    # effective = true                         # entropy as S / ln(size) instead of S
    # trace_normalize = true                   # trace as Tr K / size
    # output_reduction = "mean"                # traced kernel: "sum" | "mean" over the C outputs
    # lnp_batch = "train"                      # LNP measures on "probe" | the next "train"ing batch

    [grid]                                     # swept axes -> values; they become cube dims
    width = [16, 64, 256, 1024]
    seed = [0, 1]

Grid keys are ``seed``, a key of one section by its short name (``width``, ``depth``,
``n_train``, ``lr``, ``batch_size``, ``probe``, ...) or a dotted ``section.key``. With a
``[select]`` table the training set is ``select.budget`` samples that ``ntkbench.select``
chooses from the ``data.n_train`` loaded ones (grid keys ``selection`` -- the method --
and ``budget`` become cube dims); the test set is unchanged. Data sets include local files: ``name =
"mnist_idx"`` / ``"cifar10"`` / ``"npz"`` with ``path = "..."`` (checked before any run
starts).

:func:`sweep` writes ``run-width=64-seed=0.nc`` (one per grid point, atomically) under
``out``; a rerun skips runs whose file opens and holds the same config (resume); at the
end the runs are combined with ``xarray.combine_by_coords`` into ``out/cube.nc``.
Runs execute in-process, on a local dask cluster (``workers=N``), on an existing one
(``scheduler="tcp://..."``) or with a given ``client``; the same seeds give the same cube
either way.

Example
-------
>>> cfg = {"title": "demo", "model": {"name": "mlp", "width": 8},
...        "data": {"name": "digits", "n_train": 32, "n_test": 16},
...        "train": {"steps": 4, "batch_size": 16}, "record": {"every": 2, "probe": 8},
...        "grid": {"width": [8, 16], "seed": [0, 1]}}
>>> cube = sweep(cfg, "runs/demo", progress=False)  # nb.sweep; cfg as a TOML file's tables
>>> dict(cube.entropy.sizes)
{'width': 2, 'seed': 2, 'step': 3}
>>> cube.entropy.sel(seed=0).plot.line(x="step", hue="width")  # doctest: +SKIP

(The last line draws with matplotlib, which ntkbench does not install.)

The package's private modules, one idea each (everything public is re-exported here):

- ``_config``: the config's keys and defaults, :func:`validate_config`, the grid
  (:func:`expand_grid`) and run file names (:func:`run_name`);
- ``_run``: one run (:func:`run_one`; its data and selected training set),
  :func:`check_runs` before a sweep starts, and ``_run_to_file`` (one grid point to its
  file: what dask workers execute);
- ``_live``: live runs' progress files, :func:`request_stop` (``STOP_FILE``),
  :func:`live_cube` and the progress bar's live line;
- ``_folder``: what the output folder holds against this config (done, foreign or
  unreadable run files; a combined cube that would lose runs);
- ``_locks``: per-run lock files, stale locks and the scratch files of killed processes;
- ``_loop``: what the in-process and the dask run loops share: progress, Ctrl-C
  (:class:`SweepInterrupted`) and claiming a run (skip done or held runs, lock the rest);
- ``_sweep``: :func:`sweep` itself, the in-process loop, waiting for other sweeps, and
  combining the run files;
- ``_dask``: :func:`local_cluster` and the dask run loop.

:func:`make_optimizer` and µP's per-layer learning rates live in :mod:`ntkbench.optim`.
A test that replaces a function the sweep calls replaces it in the module that defines
it (``ntkbench.sweep._run._run_to_file``, ``ntkbench.sweep._live._live_writer``,
``ntkbench.sweep._dask._executing_keys``): the run loops look those up there at each call.
"""

from __future__ import annotations

# ``name as name``: re-exported names that were never in ``__all__`` (live sweeps, lock
# timing) and private ones that tests and benchmarks use
from ntkbench.optim import _mup_scaled as _mup_scaled
from ntkbench.optim import make_optimizer
from ntkbench.sweep._config import (
    RECORD_DEFAULTS,
    TRAIN_DEFAULTS,
    expand_grid,
    run_name,
    validate_config,
)
from ntkbench.sweep._dask import NO_DASHBOARD, local_cluster
from ntkbench.sweep._live import STOP_FILE as STOP_FILE
from ntkbench.sweep._live import RunStopped as RunStopped
from ntkbench.sweep._live import _LiveStatus as _LiveStatus
from ntkbench.sweep._live import live_cube as live_cube
from ntkbench.sweep._live import live_path as live_path
from ntkbench.sweep._live import request_stop as request_stop
from ntkbench.sweep._locks import LOCK_HEARTBEAT as LOCK_HEARTBEAT
from ntkbench.sweep._locks import LOCK_STALE_AFTER as LOCK_STALE_AFTER
from ntkbench.sweep._locks import _RunLocks as _RunLocks
from ntkbench.sweep._loop import SweepInterrupted
from ntkbench.sweep._loop import _Progress as _Progress
from ntkbench.sweep._run import _load_for as _load_for
from ntkbench.sweep._run import check_runs, run_one
from ntkbench.sweep._sweep import sweep

__all__ = [
    "sweep",
    "SweepInterrupted",
    "local_cluster",
    "NO_DASHBOARD",
    "run_one",
    "validate_config",
    "check_runs",
    "expand_grid",
    "run_name",
    "make_optimizer",
    "TRAIN_DEFAULTS",
    "RECORD_DEFAULTS",
]

# ``nb.sweep(config, out)`` calls the function whatever was imported first (ntkbench._callable)
from ntkbench._callable import make_callable  # noqa: E402

make_callable(__name__)
