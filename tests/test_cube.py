"""Result cubes: schema validation, netCDF/Zarr round trips, atomic writes, combine."""

from __future__ import annotations

import datetime as dt
import json
import os

import numpy as np
import pytest
import xarray as xr

from ntkbench import cube


def _cube(width: int = 16, seed: int = 0, n_eig: int = 5) -> xr.Dataset:
    rng = np.random.default_rng(width * 100 + seed)
    steps = np.array([0, 10, 20])
    eig = -np.sort(-rng.random((3, n_eig))).astype(np.float32)
    ds = xr.Dataset(
        {
            "eigenvalues": (("step", "eigen_index"), eig, cube.var_attrs("eigenvalues")),
            "entropy": ("step", rng.random(3), cube.var_attrs("entropy")),
            "loss": ("step", rng.random(3).astype(np.float32), cube.var_attrs("loss")),
        },
        coords={
            "step": ("step", steps, cube.var_attrs("step")),
            "eigen_index": ("eigen_index", np.arange(n_eig), cube.var_attrs("eigen_index")),
        },
        attrs=cube.make_attrs({"model": {"width": width}, "seed": seed}, paper="collective", title="test cube"),
    )
    ds = ds.expand_dims(width=[width], seed=[seed])
    ds["width"].attrs.update(cube.var_attrs("width"))
    ds["seed"].attrs.update(cube.var_attrs("seed"))
    return ds.copy(deep=True)  # writable: expand_dims gives read-only views on older xarray


def test_make_attrs_provenance():
    attrs = cube.make_attrs({"lr": np.float32(0.5), "grid": {"width": [1, 2]}}, paper="data", title="t")
    assert set(cube.REQUIRED_ATTRS) <= set(attrs)
    assert json.loads(attrs["config"]) == {"lr": 0.5, "grid": {"width": [1, 2]}}
    assert dt.datetime.fromisoformat(attrs["created"]).tzinfo is not None
    import jax

    import ntkbench

    assert attrs["jax_version"] == jax.__version__ and attrs["ntkbench_version"] == ntkbench.__version__
    with pytest.raises(TypeError, match="config"):
        cube.make_attrs("lr=1")


#: cube.VARIABLES and cube.KERNEL_VARIABLES as they were written out before they were read
#: from the one table ntkbench._variables.TABLE (issue 26): same names, order and values
_VARIABLES_BEFORE = {
    "eigenvalues": ("eNTK eigenvalue (probe set, descending)", "1"),
    "entropy": ("eNTK spectral entropy S", "nat"),
    "entropy_normalized": ("normalized eNTK spectral entropy S / ln N", "1"),
    "trace": ("eNTK trace Tr K", "1"),
    "trace_per_sample": ("eNTK trace per sample Tr K / N", "1"),
    "effective_rank": ("eNTK effective rank exp(S)", "1"),
    "magnitude_entropy": ("eNTK magnitude entropy", "nat"),
    "kernel_distance_init": ("eNTK distance from initial kernel (1 - alignment)", "1"),
    "relative_change_init": ("relative eNTK change ||K - K0||_F / ||K0||_F", "1"),
    "test_entropy": ("eNTK spectral entropy S (test probe)", "nat"),
    "test_entropy_normalized": ("normalized eNTK spectral entropy S / ln N (test probe)", "1"),
    "test_trace": ("eNTK trace Tr K (test probe)", "1"),
    "test_trace_per_sample": ("eNTK trace per sample Tr K / N (test probe)", "1"),
    "spectral_position": ("spectral position chi_pos", "1"),
    "chi_loss": ("LNP loss term chi_loss = ||u||^2 / B (probe batch)", "1"),
    "chi_net": ("LNP network term chi_net = Tr K / B (probe batch)", "1"),
    "chi_net_se": ("standard error of the Hutchinson chi_net (0 = exact)", "1"),
    "grad_norm_sq": ("squared gradient norm ||grad L||^2 (probe batch)", "1"),
    "residual_weights": ("residual spectral weight w_k = (v_k . u)^2 / ||u||^2", "1"),
    "spectral_position_eig": ("spectral position chi_pos from the eNTK eigenpairs", "1"),
    "loss": ("training loss", "1"),
    "test_loss": ("test loss", "1"),
    "kernel_test_loss": ("test loss of kernel regression with the initial eNTK", "1"),
    "kernel_test_accuracy": ("test accuracy of kernel regression with the initial eNTK", "1"),
    "linear_test_loss": ("test loss of the linearized network trained like the network", "1"),
    "linear_test_accuracy": ("test accuracy of the linearized network trained like the network", "1"),
    "accuracy": ("training accuracy", "1"),
    "test_accuracy": ("test accuracy", "1"),
    "status": ("run status (0 finished, 1 diverged)", "1"),
    "diverged_step": ("step at which training diverged (-1: it did not)", "1"),
}

_KERNEL_VARIABLES_BEFORE = frozenset(
    {
        "eigenvalues",
        "entropy",
        "entropy_normalized",
        "trace",
        "trace_per_sample",
        "effective_rank",
        "magnitude_entropy",
        "kernel_distance_init",
        "relative_change_init",
        "test_entropy",
        "test_entropy_normalized",
        "test_trace",
        "test_trace_per_sample",
        "spectral_position",
        "chi_net",
        "chi_net_se",
        "residual_weights",
        "spectral_position_eig",
    }
)


def test_variables_read_from_the_one_table_are_unchanged():
    """cube.VARIABLES (names, order, long names, units) and cube.KERNEL_VARIABLES, now
    derived from ntkbench._variables.TABLE, equal what cube.py wrote out before; and
    importing the cube module (and the table) still imports no JAX."""
    import subprocess
    import sys

    assert cube.VARIABLES == _VARIABLES_BEFORE and list(cube.VARIABLES) == list(_VARIABLES_BEFORE)
    assert cube.KERNEL_VARIABLES == _KERNEL_VARIABLES_BEFORE
    code = "import sys, ntkbench.cube; assert not [m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib')]"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_variables_table_is_complete():
    for name, (long_name, units) in cube.VARIABLES.items():
        assert long_name and isinstance(units, str), name
    assert cube.KERNEL_VARIABLES <= set(cube.VARIABLES)


def test_validate_accepts_good_cube_and_names_problems():
    ds = _cube()
    cube.validate(ds)
    bad = _cube()
    del bad.attrs["jax_version"]
    with pytest.raises(ValueError, match="jax_version"):
        cube.validate(bad)
    bad = _cube()
    bad["entropy"].attrs = {"units": "nat"}
    with pytest.raises(ValueError, match="'entropy' has no long_name"):
        cube.validate(bad)
    bad = _cube().assign(extra=(("dim_0",), np.zeros(2), cube.var_attrs("x")))
    with pytest.raises(ValueError, match="'dim_0'"):
        cube.validate(bad)
    bad = _cube()
    bad["eigenvalues"][0, 0, 1, 2] = np.inf
    with pytest.raises(ValueError, match="'eigenvalues' holds 1 NaN/Inf"):
        cube.validate(bad)
    cube.validate(bad, check_finite=False)
    ok = _cube()
    ok["loss"][0, 0, 1] = np.nan  # a diverged loss is data, not a kernel defect
    cube.validate(ok)
    bad = _cube()
    bad.attrs["config"] = "{not json"
    with pytest.raises(ValueError, match="config"):
        cube.validate(bad)
    with pytest.raises(TypeError, match="ds"):
        cube.validate({"entropy": 1})


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_round_trip_identical(tmp_path, suffix):
    ds = _cube()
    path = cube.save(ds, tmp_path / f"c{suffix}")
    assert path.exists()
    back = cube.open(path)
    xr.testing.assert_identical(back, ds)
    for name in ds.variables:
        assert back[name].dtype == ds[name].dtype, name
    # overwrite in place keeps exactly one valid cube and no leftovers
    ds2 = _cube(width=32)
    cube.save(ds2, path)
    xr.testing.assert_identical(cube.open(path), ds2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"c{suffix}"]


def test_format_argument(tmp_path):
    ds = _cube()
    p = cube.save(ds, tmp_path / "store", format="zarr")
    assert p.is_dir()
    xr.testing.assert_identical(cube.open(p), ds)
    with pytest.raises(ValueError, match="format"):
        cube.save(ds, tmp_path / "x.nc", format="hdf4")


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_netcdf_failed_write_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "run.nc"

    def broken(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x89HDF\r\n\x1a\n partial")  # a partial file...
        raise OSError("disk full")  # ...then the write fails midway

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken)
    with pytest.raises(OSError, match="disk full"):
        cube.save(_cube(), target)
    assert _leftovers(tmp_path) == []


def test_atomic_netcdf_failed_overwrite_keeps_old(tmp_path, monkeypatch):
    target = tmp_path / "run.nc"
    old = _cube()
    cube.save(old, target)
    before = target.read_bytes()

    def broken(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"garbage")
        raise KeyboardInterrupt  # even an interrupt cleans up

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken)
    with pytest.raises(KeyboardInterrupt):
        cube.save(_cube(width=64), target)
    assert _leftovers(tmp_path) == ["run.nc"]
    assert target.read_bytes() == before


def test_atomic_zarr_failed_write(tmp_path, monkeypatch):
    target = tmp_path / "run.zarr"
    original = _cube()  # built once: its ``created`` attribute has one-second resolution
    cube.save(original, target)
    real = xr.Dataset.to_zarr

    def broken(self, store, *args, **kwargs):
        real(self.isel(step=[0]), store, *args, **kwargs)  # something is on disk
        raise OSError("worker died")

    monkeypatch.setattr(xr.Dataset, "to_zarr", broken)
    with pytest.raises(OSError, match="worker died"):
        cube.save(_cube(width=64), target)
    monkeypatch.undo()
    assert _leftovers(tmp_path) == ["run.zarr"]
    xr.testing.assert_identical(cube.open(target), original)
    with pytest.raises(OSError):
        monkeypatch.setattr(xr.Dataset, "to_zarr", broken)
        cube.save(_cube(), tmp_path / "new.zarr")
    assert _leftovers(tmp_path) == ["run.zarr"]


def test_open_rejects_corrupted_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        cube.open(tmp_path / "missing.nc")
    garbage = tmp_path / "garbage.nc"
    garbage.write_bytes(b"this is not a netCDF file at all")
    with pytest.raises(ValueError, match="not a readable netCDF"):
        cube.open(garbage)
    good = cube.save(_cube(), tmp_path / "good.nc")
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
    with pytest.raises(ValueError, match="truncated.nc"):
        cube.open(truncated)
    foreign = tmp_path / "foreign.nc"
    xr.Dataset({"a": ("x", np.arange(3.0))}).to_netcdf(foreign)
    with pytest.raises(ValueError, match="not an ntkbench cube"):
        cube.open(foreign)
    not_zarr = tmp_path / "empty.zarr"
    not_zarr.mkdir()
    with pytest.raises(ValueError, match="Zarr"):
        cube.open(not_zarr)


def test_package_exports_open_cube(tmp_path):
    import ntkbench as nb

    original = _cube()
    p = nb.save(original, tmp_path / "c.nc")
    xr.testing.assert_identical(nb.open_cube(p), original)


def test_combine_lays_runs_out_along_swept_axes(tmp_path):
    runs = [_cube(w, s) for w in (16, 64) for s in (0, 1)]
    paths = [cube.save(r, tmp_path / f"r{i}.nc") for i, r in enumerate(runs)]
    combined = cube.combine(paths[:2] + runs[2:])  # paths and datasets mix
    assert dict(combined.sizes) == {"width": 2, "seed": 2, "step": 3, "eigen_index": 5}
    for r in runs:
        w, s = int(r.width[0]), int(r.seed[0])
        sel = combined.sel(width=w, seed=s)
        np.testing.assert_array_equal(sel["eigenvalues"].values, r["eigenvalues"].values[0, 0])
        np.testing.assert_array_equal(sel["loss"].values, r["loss"].values[0, 0])
    assert combined["entropy"].attrs == cube.var_attrs("entropy")
    assert combined.attrs["paper"] == "collective" and combined.attrs["title"] == "test cube"
    assert len(json.loads(combined.attrs["config"])) == 4
    cube.validate(combined)
    attrs = cube.make_attrs({"grid": {"width": [16, 64]}}, title="sweep")
    assert cube.combine(runs, attrs=attrs).attrs == attrs
    # an incomplete grid is padded with NaN
    partial = cube.combine(runs[:3])
    assert np.isnan(partial["loss"].sel(width=64, seed=1).values).all()
    with pytest.raises(ValueError, match="empty"):
        cube.combine([])
    with pytest.raises(TypeError, match="items"):
        cube.combine([42])


def test_saved_files_get_the_usual_permissions(tmp_path):
    """Temp files are 0600/0700; the saved file and store get the umask's normal mode."""
    import stat

    umask = os.umask(0o022)
    try:
        ds = _cube()
        nc = cube.save(ds, tmp_path / "a.nc")
        assert stat.S_IMODE(os.stat(nc).st_mode) == 0o644
        zr = cube.save(ds, tmp_path / "a.zarr")
        assert stat.S_IMODE(os.stat(zr).st_mode) == 0o755
    finally:
        os.umask(umask)


def test_save_many_round_trip_groups_and_root(tmp_path):
    import netCDF4

    cubes = {"mlp": _cube(16), "cnn": _cube(64, n_eig=3)}
    path = cube.save_many(cubes, tmp_path / "paper.nc")
    back = cube.open_many(path)
    assert list(back) == ["mlp", "cnn"]
    # the root group is the first cube, named by its experiment attribute
    assert back["mlp"].attrs.pop("experiment") == "mlp" and "experiment" not in cubes["mlp"].attrs
    for name in cubes:
        xr.testing.assert_identical(back[name], cubes[name])
    xr.testing.assert_identical(cube.open(path).drop_attrs(deep=False), cubes["mlp"].drop_attrs(deep=False))
    with netCDF4.Dataset(path) as nc:
        assert list(nc.groups) == ["cnn"]  # the first cube is stored once
    # a plain cube file opens as one cube named by its experiment attribute
    single = _cube()
    single.attrs["experiment"] = "scale"
    assert list(cube.open_many(cube.save(single, tmp_path / "one.nc"))) == ["scale"]


def test_save_many_is_atomic_and_has_the_usual_mode(tmp_path, monkeypatch):
    import stat

    target = tmp_path / "paper.nc"
    cube.save_many({"a": _cube()}, target)
    before = target.read_bytes()
    calls = []
    real = xr.Dataset.to_netcdf

    def second_group_fails(self, path, *args, **kwargs):
        calls.append(kwargs.get("group"))
        if len(calls) == 2:
            raise OSError("disk full")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(xr.Dataset, "to_netcdf", second_group_fails)
    with pytest.raises(OSError, match="disk full"):
        cube.save_many({"a": _cube(), "b": _cube(64)}, target)
    assert _leftovers(tmp_path) == ["paper.nc"] and target.read_bytes() == before
    monkeypatch.setattr(xr.Dataset, "to_netcdf", real)
    umask = os.umask(0o022)
    try:
        assert stat.S_IMODE(os.stat(cube.save_many({"a": _cube()}, tmp_path / "m.nc")).st_mode) == 0o644
    finally:
        os.umask(umask)


def test_save_many_and_open_many_reject_bad_input(tmp_path):
    with pytest.raises(ValueError, match="cubes"):
        cube.save_many({}, tmp_path / "x.nc")
    with pytest.raises(ValueError, match="group names"):
        cube.save_many({"a/b": _cube()}, tmp_path / "x.nc")
    bad = _cube().drop_attrs()
    with pytest.raises(ValueError, match=r"cubes\['b'\]"):
        cube.save_many({"a": _cube(), "b": bad}, tmp_path / "x.nc")
    with pytest.raises(ValueError, match="Zarr"):
        cube.save_many({"a": _cube()}, tmp_path / "x.zarr")
    with pytest.raises(ValueError, match=r"cubes\['entropy'\]: the name is also a variable"):
        cube.save_many({"a": _cube(), "entropy": _cube(64)}, tmp_path / "x.nc")
    assert not (tmp_path / "x.nc").exists()
    with pytest.raises(FileNotFoundError):
        cube.open_many(tmp_path / "missing.nc")
    (tmp_path / "junk.nc").write_bytes(b"not a netcdf file")
    with pytest.raises(ValueError, match="corrupted"):
        cube.open_many(tmp_path / "junk.nc")


def test_combine_pads_spectra_of_different_lengths(tmp_path):
    # runs with probe sets of different sizes (data budgets): spectra are padded with NaN
    # along eigen_index, scalar measures keep their dims, and the cube still validates
    short, long = _cube(16, n_eig=3), _cube(64, n_eig=5)
    combined = cube.combine([short, long])
    assert combined["entropy"].dims == short["entropy"].dims
    assert combined.sizes["eigen_index"] == 5
    ev = combined["eigenvalues"].sel(width=16)
    assert np.isnan(ev.isel(eigen_index=slice(3, None))).all() and np.isfinite(ev.isel(eigen_index=slice(0, 3))).all()
    cube.validate(combined)
    broken = combined.copy(deep=True)
    broken["eigenvalues"][{"width": 1, "eigen_index": 2}] = np.nan  # a hole, not a tail
    with pytest.raises(ValueError, match="eigenvalues"):
        cube.validate(broken)


def test_status_variables_of_runs_written_before_them():
    """A run cube without ``status`` (written before it existed) gets it over its grid
    dims from its ``diverged_step`` attribute; cubes that have it are left alone."""
    from ntkbench import cube
    from ntkbench.testing import synthetic_cube

    ds = synthetic_cube(widths=(16,), seeds=(3,), steps=(0, 10), n_eigen=4)
    ok = cube.with_status(ds)
    assert ok["status"].dims == ("width", "seed") and int(ok["status"].item()) == cube.FINISHED
    assert int(ok["diverged_step"].item()) == -1 and cube.with_status(ok) is ok
    ds.attrs["diverged_step"] = 10
    bad = cube.with_status(ds)
    assert int(bad["status"].item()) == cube.DIVERGED and int(bad["diverged_step"].item()) == 10
    assert bool(cube.diverged(bad).all()) and np.isnan(cube.finished(bad)["entropy"]).all()
    assert cube.finished(bad)["status"].equals(bad["status"])  # the flags survive
