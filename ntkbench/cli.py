"""The ``ntkbench`` command.

::

    ntkbench info
    ntkbench sweep CONFIG.toml --out DIR [--workers N | --scheduler ADDR] [--no-progress] [--overwrite]
    ntkbench reproduce PAPER [--quick | --config NAME] --out DIR [--workers N | --scheduler ADDR]
    ntkbench export CUBE --figure NAME --format png|svg|pdf|html [--out DIR]

``--figure explorer --format html`` writes the cube's explorer as one standalone HTML file
whose controls (step slider with play, widths, eigen range, measure, seed, log/linear)
work in a plain browser, offline.

Rerunning ``sweep`` or ``reproduce`` with the same ``--out`` resumes: finished runs are
skipped; Ctrl-C stops a sweep after its current run. A ``--out`` folder holding runs of a
different config is refused (the message names the differing keys) unless ``--overwrite``;
two sweeps on one folder share the work through per-run lock files. Errors in the input
(a bad config key, an unknown paper or figure, a missing or malformed file, a bad option)
print one line naming the argument and what was expected and exit with status 2; ``--debug``
(before or after the command) adds the traceback.

Example
-------
>>> main(["info"])
ntkbench     ...
jax          ...
...
0
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _versions() -> list[tuple[str, str]]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in (
        "ntkbench",
        "jax",
        "jaxlib",
        "equinox",
        "optax",
        "xarray",
        "netCDF4",
        "zarr",
        "bokeh",
        "dask",
        "distributed",
    ):
        try:
            out.append((dist, version(dist)))
        except PackageNotFoundError:
            out.append((dist, "not installed"))
    return out


def _cmd_info(args: argparse.Namespace) -> int:
    import platform

    for name, ver in _versions():
        print(f"{name:<12} {ver}")
    print(f"{'python':<12} {platform.python_version()}")
    import jax

    print(f"{'backend':<12} {jax.default_backend()}")
    for d in jax.devices():
        print(f"{'device':<12} {d.id}: {d.platform} ({getattr(d, 'device_kind', '')})")
    return 0


def _load_toml(path: str) -> dict:
    import tomllib

    p = Path(path)
    if p.is_dir():
        raise ValueError(f"argument CONFIG.toml: {path!r} is a folder; expected a TOML file")
    if not p.is_file():
        raise FileNotFoundError(f"argument CONFIG.toml: config file {path!r} does not exist")
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc


def _check_out(path: str, argument: str = "--out") -> None:
    """A folder that exists, or can be made: not a file, not under a file, writable."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"argument {argument}: {path!r} is a file; expected a folder")
    parent = p
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"argument {argument}: {path!r} lies under the file {str(parent)!r}; expected a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"argument {argument}: cannot write under {str(parent)!r} (permission denied)")


def _cmd_sweep(args: argparse.Namespace) -> int:
    from ntkbench.sweep import sweep

    config = _load_toml(args.config)
    _check_out(args.out)
    ds = sweep(
        config,
        args.out,
        workers=args.workers,
        scheduler=args.scheduler,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        live=args.live,
    )
    sizes = ", ".join(f"{k}={v}" for k, v in ds.sizes.items())
    print(f"cube: {Path(args.out) / 'cube.nc'} ({sizes})")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from ntkbench.papers import get

    module = get(args.paper)
    _check_out(args.out)
    if args.config is not None:
        if args.quick:
            raise ValueError("arguments --quick and --config: give one (--quick is --config quick)")
        if args.config not in module.CONFIGS:
            raise ValueError(
                f"argument --config: paper {args.paper!r} has configs {sorted(module.CONFIGS)}, got {args.config!r}"
            )
    module.run(args.out, quick=args.quick, config=args.config, workers=args.workers, scheduler=args.scheduler)
    print(f"{args.paper}: results in {args.out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ntkbench import cube

    try:
        from ntkbench import plots
    except ImportError as exc:  # pragma: no cover - plots ships with the package
        raise RuntimeError(f"figure export needs ntkbench.plots (and bokeh): {exc}") from exc
    from ntkbench import standalone

    # "explorer": the whole explorer; as html its controls work in a plain browser
    figures = {**getattr(plots, "FIGURES", {}), "explorer": standalone.explorer_layout}
    if args.figure not in figures:
        raise ValueError(f"unknown figure {args.figure!r}; known figures: {sorted(figures)}")
    if Path(args.cube).is_dir() and Path(args.cube).suffix != ".zarr":
        raise ValueError(f"argument CUBE: {args.cube!r} is a folder; expected a cube file (.nc) or a .zarr store")
    _check_out(args.out)
    ds = cube.open(args.cube)
    fig = figures[args.figure](ds)
    target = Path(args.out) / f"{Path(args.cube).stem}-{args.figure}.{args.format}"
    written = plots.export(fig, target, args.format)
    print(written)
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_cluster(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="run on a local dask cluster with N worker processes",
    )
    group.add_argument(
        "--scheduler", default=None, metavar="ADDR", help="run on an existing dask cluster (tcp://host:port)"
    )


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block) naming the argument, and
    exits with status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ntkbench`` (exposed for documentation and tests)."""
    parser = _Parser(
        prog="ntkbench", description="eNTK spectra of neural networks: sweeps, paper reproductions, figures."
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    debug = _Parser(add_help=False)  # --debug after the command too
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")

    p = sub.add_parser("info", parents=[debug], help="versions and JAX devices")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("sweep", parents=[debug], help="run a sweep from a TOML config (resumes)")
    p.add_argument("config", metavar="CONFIG.toml")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (run files + cube.nc)")
    _add_cluster(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start over where --out holds runs of a different config (without it such a folder is refused)",
    )
    p.add_argument(
        "--live",
        action="store_true",
        help="show the latest recorded measures of the runs in progress in the progress display "
        "(each run writes a small progress file after every recording)",
    )
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("reproduce", parents=[debug], help="run a paper's experiments (resumes)")
    p.add_argument("paper", metavar="PAPER")
    p.add_argument("--quick", action="store_true", help="small configuration (a few minutes on 2 cores)")
    p.add_argument(
        "--config",
        metavar="NAME",
        help="a named configuration of the paper (quick, full, or e.g. data's power; default full)",
    )
    p.add_argument("--out", required=True, metavar="DIR")
    _add_cluster(p)
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("export", parents=[debug], help="export a figure of a cube")
    p.add_argument("cube", metavar="CUBE")
    p.add_argument(
        "--figure",
        required=True,
        metavar="NAME",
        help="spectrum, measure, scaling, heatmap, or explorer (with --format html: interactive in a plain browser)",
    )
    p.add_argument(
        "--format",
        required=True,
        choices=("png", "svg", "pdf", "html"),
        help="png (raster), svg or pdf (vector: paths and text, for journals), html (standalone)",
    )
    p.add_argument("--out", default="figures", metavar="DIR", help="output folder (default: figures)")
    p.set_defaults(func=_cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ntkbench`` command; return the exit status (0 ok, 1 failure, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"ntkbench {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # a sweep's own message says what finished and how to resume
        print(str(exc) or "interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(f"ntkbench {args.command}: failed: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
