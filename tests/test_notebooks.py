"""Every notebook in notebooks/ runs top to bottom headless (nbclient) without error output.

The kernel is the ``python3`` kernelspec of THIS environment (jupyter_client starts
kernelspec argv ``python`` as ``sys.executable``; a user-level kernelspec cannot shadow it
because JUPYTER_DATA_DIR points into tmp); each notebook runs in a temp copy of
notebooks/ so its runs/ and figures/ land in tmp. Notebooks in git carry no outputs.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::ResourceWarning")]


def test_notebooks_exist_and_are_clean():
    import nbformat

    assert NOTEBOOKS, "no notebooks in notebooks/"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernelspec must be python3"
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name}: outputs are not cleared"


def test_kernel_is_this_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path))  # no user kernelspec shadows ours
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    km = KernelManager(kernel_name="python3")
    cmd = km.format_kernel_cmd()
    assert cmd[0] == sys.executable or Path(cmd[0]).resolve() == Path(sys.executable).resolve(), (spec.argv, cmd)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(notebook, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    work = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", work, ignore=shutil.ignore_patterns("runs", "figures", ".ipynb_checkpoints"))
    if (ROOT / "data").is_dir():  # notebooks open shipped cubes as ../data/...
        shutil.copytree(ROOT / "data", tmp_path / "data")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))  # no user kernelspec shadows ours
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    nb = nbformat.read(work / notebook.name, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(work)}})
    t0 = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - t0
    print(f"{notebook.name}: executed in {elapsed:.1f} s")
    problems = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                problems.append(f"cell {i}: {out.ename}: {out.evalue}")
            elif out.output_type == "stream" and out.name == "stderr":
                problems.append(f"cell {i}: stderr: {out.text[:400]}")
    assert not problems, "\n".join(problems)
    # the time is printed, not asserted: a loaded machine may take twice as long
    if notebook.stem == "00_quickstart":
        pngs = list((work / "figures").glob("*.png"))
        assert pngs and pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
