"""Bad input to the ``ntkbench`` command (issue 16): each prints ONE line on stderr that
names the argument (or config key) and what was expected, exits with status 2, and shows
no traceback unless ``--debug``. The cases are counted in tests/README.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from ntkbench.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICK = (ROOT / "examples" / "quick.toml").read_text()


def _files(tmp: Path) -> dict[str, Path]:
    """Inputs the cases refer to as {name}."""
    (tmp / "folder").mkdir()
    (tmp / "afile").write_text("not a folder")
    (tmp / "bad_lr.toml").write_text(QUICK.replace("lr = 0.1", "lr = -0.1"))
    (tmp / "unknown_key.toml").write_text(QUICK.replace("lr = 0.1", "lr = 0.1\nepochs = 3"))
    (tmp / "model_int.toml").write_text('title = "x"\nmodel = 3\n[data]\nname = "digits"\n')
    (tmp / "broken.toml").write_text("[model\nname = ")
    (tmp / "width_zero.toml").write_text(QUICK.replace("width = [8, 16]", "width = [8, 0]"))
    (tmp / "text.nc").write_text("hello, not netCDF")
    (tmp / "truncated.nc").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(40))
    return {
        "tmp": tmp,
        "folder": tmp / "folder",
        "afile": tmp / "afile",
        "quick": ROOT / "examples" / "quick.toml",
        **{p.stem: p for p in tmp.glob("*.toml")},
        "text": tmp / "text.nc",
        "truncated": tmp / "truncated.nc",
    }


# (argv with {placeholders}, words the one line must contain)
CASES = [
    ([], ["COMMAND", "required"]),
    (["launch"], ["invalid choice", "launch"]),
    (["info", "extra"], ["unrecognized arguments", "extra"]),
    (["sweep", "{quick}"], ["--out", "required"]),
    (["sweep", "{quick}", "--out", "{tmp}/o", "--workers", "0"], ["--workers", "positive integer"]),
    (["sweep", "{quick}", "--out", "{tmp}/o", "--workers", "two"], ["--workers", "positive integer"]),
    (["sweep", "{quick}", "--out", "{tmp}/o", "--workers", "2", "--scheduler", "tcp://h:1"], ["--scheduler"]),
    (["sweep", "{tmp}/missing.toml", "--out", "{tmp}/o"], ["CONFIG.toml", "does not exist"]),
    (["sweep", "{folder}", "--out", "{tmp}/o"], ["CONFIG.toml", "is a folder"]),
    (["sweep", "{broken}", "--out", "{tmp}/o"], ["not valid TOML"]),
    (["sweep", "{bad_lr}", "--out", "{tmp}/o"], ["'train.lr'", "positive number"]),
    (["sweep", "{unknown_key}", "--out", "{tmp}/o"], ["'train.epochs'", "allowed keys"]),
    (["sweep", "{model_int}", "--out", "{tmp}/o"], ["'model'"]),
    (["sweep", "{width_zero}", "--out", "{tmp}/o"], ["'grid.width'", "positive integer"]),
    (["sweep", "{quick}", "--out", "{afile}"], ["--out", "is a file", "expected a folder"]),
    (["sweep", "{quick}", "--out", "{afile}/sub"], ["--out", "lies under the file"]),
    (["reproduce", "no-such-paper", "--out", "{tmp}/o"], ["unknown paper 'no-such-paper'"]),
    (["reproduce", "collective"], ["--out", "required"]),
    (["export", "{tmp}/missing.nc", "--figure", "spectrum", "--format", "png"], ["no cube at", "missing.nc"]),
    (["export", "{folder}", "--figure", "spectrum", "--format", "png"], ["CUBE", "is a folder"]),
    (["export", "{text}", "--figure", "spectrum", "--format", "png"], ["text.nc", "not a readable netCDF"]),
    (["export", "{truncated}", "--figure", "spectrum", "--format", "png"], ["truncated.nc", "not a readable"]),
    (["export", "{text}", "--figure", "nonsense", "--format", "png"], ["unknown figure 'nonsense'"]),
    (["export", "{text}", "--figure", "spectrum", "--format", "gif"], ["--format", "invalid choice", "gif"]),
    (["export", "{text}", "--figure", "spectrum", "--format", "png", "--out", "{afile}"], ["--out", "is a file"]),
]


@pytest.mark.parametrize("argv, words", CASES, ids=[" ".join(a) or "(none)" for a, _ in CASES])
def test_bad_input_is_one_line_with_status_2(tmp_path, capsys, argv, words):
    files = _files(tmp_path)
    args = [a.format(**files) for a in argv]
    try:
        status = main(args)
    except SystemExit as exc:  # argparse
        status = exc.code
    out, err = capsys.readouterr()
    assert status == 2, (args, err)
    assert err.count("\n") == 1 and err.startswith("ntkbench"), err
    assert "Traceback" not in err
    for word in words:
        assert word in err, (word, err)
    assert not (tmp_path / "o").exists()  # nothing was created


def test_debug_adds_the_traceback(tmp_path, capsys):
    files = _files(tmp_path)
    for argv in (
        ["--debug", "sweep", str(files["bad_lr"]), "--out", str(tmp_path / "o")],
        ["sweep", str(files["bad_lr"]), "--out", str(tmp_path / "o"), "--debug"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and err.strip().splitlines()[-1].startswith("ntkbench sweep: error: config key")
