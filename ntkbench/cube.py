"""Result cubes: the xarray schema of ntkbench, atomic save/open, provenance, combine.

A *cube* is an :class:`xarray.Dataset` with dims ``step`` and ``eigen_index`` plus any
swept axis (``width``, ``seed``, ``depth``, ``n_train``, ``lr``, ...), every dimension
labelled by a coordinate, every data variable carrying CF-style ``long_name`` and
``units`` attributes, and the provenance attributes of :data:`REQUIRED_ATTRS`.

A sweep's cube also holds, over its swept axes, ``status`` (:data:`FINISHED` or
:data:`DIVERGED`, CF ``flag_values`` / ``flag_meanings``) and ``diverged_step`` (-1 or the
first non-finite step) of every run, and the attribute ``diverged_runs`` (JSON ``{run
file: step}``) when any diverged. :func:`finished` leaves diverged runs out (NaN) of
means and fits; the plots and paper summaries use it and say so.

Example
-------
>>> import numpy as np, xarray as xr
>>> from ntkbench import cube
>>> ds = xr.Dataset(
...     {"entropy": ("step", np.array([1.0, 0.8]), cube.var_attrs("entropy"))},
...     coords={"step": [0, 10]},
...     attrs=cube.make_attrs({"seed": 0}, title="demo"),
... )
>>> cube.validate(ds)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ntkbench import _variables

__all__ = [
    "VARIABLES",
    "COORDS",
    "KERNEL_VARIABLES",
    "REQUIRED_ATTRS",
    "var_attrs",
    "make_attrs",
    "validate",
    "save",
    "open",
    "open_cube",
    "combine",
    "save_many",
    "open_many",
    "run_status",
    "with_status",
    "diverged",
    "finished",
    "FINISHED",
    "DIVERGED",
]

#: data variable name -> (long_name, units). Units follow CF: "1" is dimensionless. Read
#: from the one table of variables and measures, ``ntkbench._variables.TABLE``.
VARIABLES: dict[str, tuple[str, str]] = _variables.VARIABLES

#: values of the ``status`` variable (CF flags: ``flag_values`` / ``flag_meanings``)
FINISHED, DIVERGED = 0, 1

#: coordinate name -> (long_name, units)
COORDS: dict[str, tuple[str, str]] = {
    "step": ("optimizer step", "1"),
    "eigen_index": ("eigenvalue index (0 = largest)", "1"),
    "width": ("network width", "1"),
    "seed": ("random seed", "1"),
    "depth": ("network depth", "1"),
    "n_train": ("number of training samples", "1"),
    "n_test": ("number of test samples", "1"),
    "lr": ("learning rate", "1"),
    "batch_size": ("batch size", "1"),
    "steps": ("number of optimizer steps", "1"),
    "probe": ("probe set size", "1"),
    "parametrization": ("parametrization", ""),
    "activation": ("activation function", ""),
    "selection": ("training-data selection method", ""),
    "budget": ("data budget (selected training samples)", "1"),
}

#: variables derived from the eNTK: NaN/Inf in them is an error, never plotted silently
#: (those of ``ntkbench._variables.TABLE`` marked ``kernel``)
KERNEL_VARIABLES: frozenset[str] = _variables.KERNEL_VARIABLES

#: dataset attributes every cube carries
REQUIRED_ATTRS: tuple[str, ...] = (
    "ntkbench_version",
    "jax_version",
    "created",
    "config",
    "paper",
    "title",
)


def var_attrs(name: str) -> dict[str, str]:
    """CF attributes ``{"long_name", "units"}`` for a known variable or coordinate.

    Unknown names get ``long_name = name`` and ``units = "1"``.

    >>> var_attrs("entropy")["units"]
    'nat'
    """
    long_name, units = VARIABLES.get(name) or COORDS.get(name) or (name, "1")
    return {"long_name": long_name, "units": units}


def run_status(diverged_step: int | None) -> dict[str, Any]:
    """The per-run status variables of a run's cube (scalars; a sweep's grid axes become
    their dims): ``status`` (``FINISHED`` or ``DIVERGED``, with CF ``flag_values`` and
    ``flag_meanings``) and ``diverged_step`` (the first non-finite step, -1 if none).

    >>> run_status(12)["status"].values.item(), run_status(None)["diverged_step"].values.item()
    (1, -1)
    """
    import xarray as xr

    status = xr.Variable(
        (),
        np.int8(FINISHED if diverged_step is None else DIVERGED),
        {
            **var_attrs("status"),
            "flag_values": np.array([FINISHED, DIVERGED], np.int8),
            "flag_meanings": "finished diverged",
        },
    )
    step = xr.Variable((), np.int64(-1 if diverged_step is None else int(diverged_step)), var_attrs("diverged_step"))
    return {"status": status, "diverged_step": step}


def with_status(ds: Any) -> Any:
    """A run's cube with its :func:`run_status` variables over its grid dims (every dim but
    ``step`` and ``eigen_index``), taken from its ``diverged_step`` attribute; unchanged if
    it has them. Run files written before the variables existed get them this way."""
    if "status" in ds.data_vars:
        return ds
    dims = {d: ds.sizes[d] for d in ds.dims if d not in ("step", "eigen_index")}
    return ds.assign({n: v.set_dims(dims).copy() for n, v in run_status(ds.attrs.get("diverged_step")).items()})


def diverged(ds: Any) -> Any:
    """Boolean ``DataArray`` over the cube's grid dims: True for runs whose training
    diverged (``status == DIVERGED``). A cube without a ``status`` variable (written
    before it existed, or by ``train`` alone) has no diverged runs.

    >>> from ntkbench.testing import synthetic_cube
    >>> bool(diverged(synthetic_cube()).any())
    False
    """
    import xarray as xr

    if "status" not in ds.data_vars:
        return xr.DataArray(False)
    return ds["status"] == DIVERGED


def finished(ds: Any) -> Any:
    """The cube with every value of its diverged runs set to NaN, so that means over
    seeds, fits and summaries leave them out; attribute ``diverged_left_out`` counts them.
    Returns ``ds`` itself when no run diverged. The ``status`` and ``diverged_step``
    variables are kept, so plots can still draw the diverged runs apart (from the
    original cube).
    """
    if "diverged_left_out" in ds.attrs:  # already done
        return ds
    bad = diverged(ds)
    n = int(bad.sum())
    if n == 0:
        return ds
    out = ds.copy()
    for name, var in ds.data_vars.items():
        if name in ("status", "diverged_step") or var.dtype.kind != "f":
            continue
        out[name] = var.where(~bad)
    out.attrs["diverged_left_out"] = n
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _ntkbench_version() -> str:
    import ntkbench

    version = getattr(ntkbench, "__version__", None)
    if version is None:  # e.g. imported as a namespace package through an editable install
        from importlib.metadata import version as _v

        version = _v("ntkbench")
    return str(version)


def make_attrs(config: Mapping[str, Any], paper: str = "", title: str = "") -> dict[str, str]:
    """Provenance attributes of a cube.

    Parameters
    ----------
    config : the full run (or sweep) configuration; stored as JSON.
    paper : paper key (``"data"``, ``"collective"``, ...) or ``""``.
    title : a human-readable title.

    Returns
    -------
    dict with ``ntkbench_version``, ``jax_version``, ``created`` (ISO 8601, UTC),
    ``config`` (JSON), ``paper`` and ``title`` -- all strings, so netCDF and Zarr keep
    them exactly.

    >>> make_attrs({"width": 8})["config"]
    '{"width": 8}'
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, got {type(config).__name__}")
    if not isinstance(paper, str):
        raise TypeError(f"paper must be a str, got {type(paper).__name__}")
    if not isinstance(title, str):
        raise TypeError(f"title must be a str, got {type(title).__name__}")
    import jax

    return {
        "ntkbench_version": _ntkbench_version(),
        "jax_version": jax.__version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "config": json.dumps(_jsonable(config), sort_keys=False),
        "paper": paper,
        "title": title,
    }


def validate(ds: Any, *, check_finite: bool = True) -> None:
    """Check that ``ds`` follows the cube schema; raise ``ValueError`` naming what is wrong.

    Checks: it is an ``xarray.Dataset``; the attributes of :data:`REQUIRED_ATTRS` exist
    and ``config`` is JSON; every dimension has a coordinate of the same name (known
    dims are ``step``, ``eigen_index`` and the swept axes); ``eigenvalues`` (if present)
    has dim ``eigen_index``; every data variable has ``long_name`` and ``units``; with
    ``check_finite`` no kernel-derived variable (:data:`KERNEL_VARIABLES`) holds NaN/Inf
    (except the NaN tail of a spectrum shorter than the cube's ``eigen_index``, which
    :func:`combine` pads runs of smaller probe sets with).

    >>> import xarray as xr
    >>> validate(xr.Dataset())  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ValueError: cube is missing attributes ['ntkbench_version', ...]
    """
    import xarray as xr

    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"ds must be an xarray.Dataset, got {type(ds).__name__}")
    problems: list[str] = []
    missing = [a for a in REQUIRED_ATTRS if a not in ds.attrs]
    if missing:
        problems.append(f"cube is missing attributes {missing}")
    if "config" in ds.attrs:
        try:
            json.loads(ds.attrs["config"])
        except (TypeError, ValueError):
            problems.append("attribute 'config' is not valid JSON")
    for dim in ds.dims:
        if dim not in ds.coords:
            problems.append(
                f"dimension {dim!r} has no coordinate (unknown dim; known dims are "
                f"'step', 'eigen_index' and swept axes such as {sorted(COORDS)[:6]}, "
                "each labelled by a coordinate)"
            )
    if "eigenvalues" in ds.data_vars and "eigen_index" not in ds["eigenvalues"].dims:
        problems.append("variable 'eigenvalues' lacks the 'eigen_index' dimension")
    for name, var in ds.data_vars.items():
        absent = [a for a in ("long_name", "units") if a not in var.attrs]
        if absent:
            problems.append(f"variable {name!r} has no {' or '.join(absent)} attribute")
    if check_finite:
        for name in sorted(KERNEL_VARIABLES & set(map(str, ds.data_vars))):
            values = np.asarray(ds[name].values)
            if values.dtype.kind in "fc":
                ok = np.isfinite(values)
                if "eigen_index" in ds[name].dims:
                    # spectra shorter than the longest (runs of smaller probe sets, e.g. data
                    # budgets) end in NaN padding: a NaN tail after a finite head is fine
                    v = np.moveaxis(values, ds[name].dims.index("eigen_index"), -1)
                    nan = np.isnan(v)
                    tail = np.logical_and.accumulate(nan[..., ::-1], axis=-1)[..., ::-1]
                    padded = tail & ~nan[..., :1]
                    ok = np.moveaxis(np.isfinite(v) | padded, -1, ds[name].dims.index("eigen_index"))
                bad = int(np.size(values) - ok.sum())
                if bad:
                    problems.append(f"kernel-derived variable {name!r} holds {bad} NaN/Inf value(s)")
    if problems:
        raise ValueError("invalid ntkbench cube: " + "; ".join(problems))


def _infer_format(path: Path, format: str | None) -> str:
    if format is None:
        return "zarr" if path.suffix == ".zarr" else "netcdf"
    if format not in ("netcdf", "zarr"):
        raise ValueError(f"format must be 'netcdf', 'zarr' or None, got {format!r}")
    return format


def _fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _zarr_kwargs() -> dict[str, Any]:
    # Zarr format 2 with consolidated metadata: readable by every zarr-python, and no
    # "consolidated metadata is not part of the v3 spec" warnings.
    return {"zarr_format": 2, "consolidated": True}


def _default_mode(base: int) -> int:
    """``base`` with the process umask applied (what open()/mkdir() would give)."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


def _replace_file(path: Path, write: Callable[[Path], None]) -> None:
    """Atomically replace ``path`` by what ``write(tmp)`` writes to a temporary file in the
    same folder: the file gets the umask's normal mode (not mkstemp's 0600), is fsynced,
    and moved into place with ``os.replace``; on any error the temporary file is removed."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, _default_mode(0o666))
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


#: one cube file read or written at a time in this process: the HDF5 library under netCDF
#: is not thread-safe, and a live view reads run files while the sweep's thread writes
#: others (without it, a live RunPanel crashed the interpreter about one run in six)
IO_LOCK = threading.RLock()


def _serialized(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with IO_LOCK:
            return fn(*args, **kwargs)

    return locked


@_serialized
def save(ds: Any, path: str | os.PathLike[str], format: str | None = None) -> Path:
    """Write a cube atomically; return its path.

    The data are written to a temporary file (or, for Zarr, directory) in the same
    folder, flushed with ``fsync`` and moved into place with ``os.replace``, so ``path``
    either holds the complete old cube, the complete new one, or nothing -- never a
    partial file. Structure is validated first (:func:`validate` without the finiteness
    check, so a diverged run is still stored for inspection).

    Parameters
    ----------
    ds : the cube (``xarray.Dataset``).
    path : target, ``*.nc`` (netCDF, the default) or ``*.zarr`` (a Zarr store).
    format : ``"netcdf"``, ``"zarr"`` or None (from the suffix; netCDF unless ``.zarr``).

    >>> from ntkbench.testing import synthetic_cube
    >>> ds = synthetic_cube(widths=(64,), seeds=(0, 1), steps=(0, 10), n_eigen=4)
    >>> path = save(ds, "runs/demo/run-width=64.nc")  # a folder that does not exist yet is made
    >>> open(path).sizes["seed"]
    2
    """
    validate(ds, check_finite=False)
    path = Path(path)
    fmt = _infer_format(path, format)
    parent = path.parent if str(path.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    if fmt == "netcdf":
        _replace_file(path, lambda tmp: ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4"))
    else:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
        old: Path | None = None
        try:
            # every chunk on disk, even one equal to the fill value, so that open() can tell
            # a missing chunk (a partial copy) from an empty one
            ds.to_zarr(tmp, mode="w", write_empty_chunks=True, **_zarr_kwargs())
            os.chmod(tmp, _default_mode(0o777))  # mkdtemp makes 0700
            for root, _dirs, files in os.walk(tmp):
                for f in files:
                    _fsync_path(Path(root) / f)
                _fsync_path(Path(root))
            if path.exists():
                # os.replace cannot replace a non-empty directory: move the old one
                # aside first, then drop it once the new store is in place.
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
                os.replace(path, old / "store")
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None and (old / "store").exists() and not path.exists():
                os.replace(old / "store", path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    _fsync_path(parent)
    return path


def _check_zarr_chunks(path: Path) -> None:
    """Zarr reads a missing chunk as the fill value, silently: a store that lost a chunk
    file (a partial copy, a full disk) would plot wrong numbers. :func:`save` writes every
    chunk, so any missing one is an error naming the variable."""
    import zarr

    group = zarr.open_group(str(path), mode="r")
    for name, array in group.arrays():
        have, need = array.nchunks_initialized, array.nchunks
        if have < need:
            raise ValueError(f"variable {name!r} is missing {need - have} of its {need} chunk(s)")


@_serialized
def open(path: str | os.PathLike[str]) -> Any:  # noqa: A001 - module-level name by design
    """Open a cube written by :func:`save`, loaded fully into memory.

    Raises ``FileNotFoundError`` if ``path`` does not exist and ``ValueError`` naming the
    file if it is corrupted (a truncated netCDF file, a Zarr store missing a chunk) or not
    an ntkbench cube (another program's file, missing provenance attributes, unlabelled
    dims or variables). Exported as ``ntkbench.open_cube``.

    >>> from ntkbench.testing import synthetic_cube
    >>> path = save(synthetic_cube(widths=(16, 64), steps=(0, 10), n_eigen=4), "runs/demo/cube.nc")
    >>> ds = open("runs/demo/cube.nc")
    >>> ds.entropy.sel(width=64, seed=0).dims
    ('step',)
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no cube at {str(path)!r}")
    is_zarr = path.is_dir() or path.suffix == ".zarr"
    try:
        if is_zarr:
            opened = xr.open_zarr(path, consolidated=None, chunks=None)
        else:
            opened = xr.open_dataset(path, engine="netcdf4", chunks=None)
        with opened:
            ds = opened.load()
        if is_zarr:
            _check_zarr_chunks(path)
    except Exception as exc:  # corrupted or foreign file: one clear message
        kind = "Zarr store" if is_zarr else "netCDF file"
        raise ValueError(
            f"{str(path)!r} is not a readable {kind} ({type(exc).__name__}: {exc}); "
            "it may be corrupted or truncated -- delete it and rerun to recreate it"
        ) from exc
    try:
        validate(ds, check_finite=False)
    except ValueError as exc:
        raise ValueError(f"{str(path)!r} is not an ntkbench cube: {exc}") from exc
    return ds


open_cube = open


def combine(items: Iterable[Any], *, attrs: Mapping[str, str] | None = None) -> Any:
    """Combine run cubes (paths or Datasets) along their coordinates.

    Uses :func:`xarray.combine_by_coords`: runs that differ in a swept coordinate
    (length-1 dims such as ``width`` or ``seed``) are laid out along it; missing grid
    points become NaN. Variable attributes are kept; dataset attributes that differ
    between runs (``created``, ``config``) are replaced: by ``attrs`` if given, otherwise
    ``config`` becomes the JSON list of the runs' configs and ``created`` is now.

    >>> from ntkbench.testing import synthetic_cube
    >>> for w in (16, 64):
    ...     path = save(synthetic_cube(widths=(w,), steps=(0, 10), n_eigen=4), f"runs/demo/run-width={w}.nc")
    >>> cube = combine(["runs/demo/run-width=16.nc", "runs/demo/run-width=64.nc"])
    >>> cube.sizes["width"]
    2
    """
    import xarray as xr

    datasets = []
    for item in items:
        if isinstance(item, xr.Dataset):
            datasets.append(item)
        elif isinstance(item, (str, os.PathLike)):
            datasets.append(open(item))
        else:
            raise TypeError(f"items must hold paths or xarray.Datasets, got {type(item).__name__}")
    if not datasets:
        raise ValueError("items is empty: nothing to combine")
    # runs of different probe sizes (e.g. data budgets) have spectra of different lengths:
    # pad them to the longest with NaN, or combine_by_coords would concatenate along
    # eigen_index and spread every scalar measure over it
    sizes = {d.sizes["eigen_index"] for d in datasets if "eigen_index" in d.dims}
    if len(sizes) > 1:
        longest = np.arange(max(sizes))
        datasets = [d.reindex(eigen_index=longest) if "eigen_index" in d.dims else d for d in datasets]
    combined = xr.combine_by_coords(
        datasets,
        compat="no_conflicts",
        data_vars="all",
        coords="different",
        join="outer",
        combine_attrs="drop_conflicts",
    )
    if attrs is not None:
        combined.attrs = dict(attrs)
    else:
        first = dict(datasets[0].attrs)
        configs = []
        for d in datasets:
            try:
                configs.append(json.loads(d.attrs.get("config", "null")))
            except (TypeError, ValueError):
                configs.append(d.attrs.get("config"))
        first.update(combined.attrs)
        first["config"] = json.dumps(configs)
        first["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        combined.attrs = first
    for name in combined.coords:
        if name in COORDS and "long_name" not in combined[name].attrs:
            combined[name].attrs.update(var_attrs(str(name)))
        if combined[name].dtype.kind in "US":  # one run's string width (e.g. <U6) would truncate longer labels on save
            combined[name].encoding.pop("dtype", None)
    return combined


@_serialized
def save_many(cubes: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write several cubes into ONE netCDF file, atomically (as :func:`save`): the first
    cube in the root group (its ``experiment`` attribute set to its name), every other in
    a group of its name, so :func:`open` reads the first cube and :func:`open_many` all of
    them. A paper writes its experiments' cubes this way (``out/<paper>.nc``, the shipped
    ``data/*.nc``).

    >>> from ntkbench.testing import synthetic_cube
    >>> ds_mlp, ds_cnn = synthetic_cube(n_eigen=4), synthetic_cube(widths=(8,), n_eigen=4)
    >>> path = save_many({"mlp": ds_mlp, "cnn": ds_cnn}, "runs/collective/collective.nc")
    >>> list(open_many(path))
    ['mlp', 'cnn']
    """
    if not isinstance(cubes, Mapping) or not cubes:
        raise ValueError(f"cubes must be a non-empty dict {{name: cube}}, got {cubes!r:.80}")
    for name, ds in cubes.items():
        if not isinstance(name, str) or not name or "/" in name or name.startswith("_"):
            raise ValueError(f"cube names must be plain group names (no '/', not starting with '_'), got {name!r}")
        try:
            validate(ds, check_finite=False)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"cubes[{name!r}]: {exc}") from exc
    first = next(iter(cubes))
    taken = set(map(str, cubes[first].variables)) | set(map(str, cubes[first].dims))
    for name in list(cubes)[1:]:
        if name in taken:
            raise ValueError(
                f"cubes[{name!r}]: the name is also a variable or dimension of the first cube {first!r}, "
                "which netCDF cannot store beside a group of that name; rename the cube"
            )
    path = Path(path)
    if path.suffix == ".zarr":
        raise ValueError(
            f"path must be a netCDF file (*.nc): several cubes in one Zarr store are not supported, got {str(path)!r}"
        )
    parent = path.parent if str(path.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    names = list(cubes)

    first = cubes[names[0]]
    if first.attrs.get("experiment") != names[0]:
        first = first.copy()
        first.attrs["experiment"] = names[0]

    def write(tmp: Path) -> None:
        first.to_netcdf(tmp, mode="w", engine="netcdf4", format="NETCDF4")
        for name in names[1:]:
            cubes[name].to_netcdf(tmp, mode="a", group=name, engine="netcdf4", format="NETCDF4")

    _replace_file(path, write)
    _fsync_path(parent)
    return path


@_serialized
def open_many(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Open a file written by :func:`save_many`: ``{name: cube}`` in the order written,
    each loaded into memory and validated. A file without groups (written by :func:`save`)
    gives one cube, named by its ``experiment`` attribute (else ``"cube"``).

    >>> from pathlib import Path
    >>> import ntkbench
    >>> shipped = Path(ntkbench.__file__).parents[1] / "data" / "collective_quick.nc"
    >>> list(open_many(shipped))  # the shipped cube of a source checkout
    ['mlp', 'scale', 'transformer', 'cnn', 'resnet']
    """
    import netCDF4
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no cube file at {str(path)!r}")
    if path.is_dir() or path.suffix == ".zarr":
        ds = open(path)
        return {str(ds.attrs.get("experiment") or "cube"): ds}
    try:
        with netCDF4.Dataset(path) as nc:
            groups = list(nc.groups)
            root = str(nc.getncattr("experiment")) if "experiment" in nc.ncattrs() and nc.variables else None
    except Exception as exc:
        raise ValueError(
            f"{str(path)!r} is not a readable netCDF file ({type(exc).__name__}: {exc}); "
            "it may be corrupted or truncated -- delete it and rerun to recreate it"
        ) from exc
    if not groups:
        ds = open(path)
        return {str(ds.attrs.get("experiment") or "cube"): ds}
    # the root cube (unless a file of an earlier version also held it in a group)
    cubes = {root: open(path)} if root is not None and root not in groups else {}
    for g in groups:
        try:
            with xr.open_dataset(path, group=g, engine="netcdf4", chunks=None) as opened:
                ds = opened.load()
        except Exception as exc:
            raise ValueError(f"{str(path)!r}: group {g!r} is not readable ({type(exc).__name__}: {exc})") from exc
        try:
            validate(ds, check_finite=False)
        except ValueError as exc:
            raise ValueError(f"{str(path)!r}: group {g!r} is not an ntkbench cube: {exc}") from exc
        cubes[g] = ds
    return cubes


# --------------------------------------------------------------------------- diverged runs of many cubes


def diverged_runs(cubes: Mapping[str, Any]) -> dict[str, list[str]]:
    """``{experiment: ["width=64, seed=1 (step 30)", ...]}`` of the runs whose training
    diverged (the cube's ``status`` variable, :func:`diverged`) in ``{experiment: cube}``;
    experiments without any are absent."""
    out: dict[str, list[str]] = {}
    for name, ds in cubes.items():
        bad = diverged(ds)
        if not bool(bad.any()):
            continue
        flat = bad.stack(run=list(bad.dims)) if bad.dims else bad.expand_dims(run=[0])
        steps = ds["diverged_step"].stack(run=list(bad.dims)) if bad.dims else None
        runs = []
        for k in np.flatnonzero(flat.values):
            point = ", ".join(f"{d}={flat[d].values[k]}" for d in bad.dims)
            at = f" (step {int(steps.values[k])})" if steps is not None else ""
            runs.append(f"{point}{at}".strip())
        out[str(name)] = runs
    return out


def left_out_note(left_out: Mapping[str, Iterable[str]]) -> str:
    """One line saying which diverged runs (:func:`diverged_runs`) every figure, mean and
    fit leaves out."""
    left_out = {exp: list(v) for exp, v in left_out.items()}
    n = sum(len(v) for v in left_out.values())
    runs = "; ".join(f"{exp}: {', '.join(v)}" for exp, v in left_out.items())
    return f"{n} diverged run{'s' if n != 1 else ''} left out of every figure, mean and fit ({runs})"


def finished_many(cubes: Mapping[str, Any]) -> dict[str, Any]:
    """``{experiment: cube}`` with each cube's diverged runs' values set to NaN
    (:func:`finished`): means over seeds, fits and summaries leave them out."""
    return {k: finished(v) for k, v in cubes.items()}


__all__ += ["diverged_runs", "left_out_note", "finished_many"]
