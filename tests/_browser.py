"""Helpers for the real-browser tests: a throw-away JupyterLab server and headless Chromium.

Not a test module (leading underscore); imported by tests/test_browser.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

CHROMIUM = os.environ.get("NTKBENCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

# JupyterLab user settings for a quiet, non-writing test session
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyterlab(root: Path, home: Path, token: str, log: Path) -> Iterator[str]:
    """Run ``jupyter lab`` serving ``root`` on 127.0.0.1 with ``token``; all config,
    settings, workspaces and runtime files live under ``home``. Yields the base URL."""
    settings = home / "settings"
    for rel, value in LAB_SETTINGS.items():
        path = settings / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTER_DATA_DIR=str(home / "data"),  # the venv's kernelspec, not a user-level one
        JUPYTER_PLATFORM_DIRS="1",
        IPYTHONDIR=str(home / "ipython"),
        OMP_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
    )
    port = free_port()
    cmd = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--LabApp.extension_manager=readonly",
        "--ServerApp.terminals_enabled=False",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={token}",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"jupyter lab exited with {proc.returncode}; see {log}")
                try:
                    with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"jupyter lab did not start within 60 s; see {log}")
                time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(probe: Callable[[], T], ready: Callable[[T], bool], timeout: float, what: str,
             interval: float = 0.25) -> T:  # fmt: skip
    """Poll ``probe()`` until ``ready(state)`` holds and return that state; after ``timeout``
    seconds raise ``TimeoutError`` naming ``what`` and the last state seen."""
    deadline = time.monotonic() + timeout
    while True:
        state = probe()
        if ready(state):
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s (last state: {state!r})")
        time.sleep(interval)


def _api(url: str, token: str, path: str, method: str = "GET") -> Any:
    request = urllib.request.Request(f"{url}{path}", method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body else None


def kernel_state(url: str, token: str, path: str) -> str | None:
    """``execution_state`` of the kernel of the notebook session at ``path`` (relative to the
    server root), from the Jupyter server REST API; None while there is no such session or
    kernel yet."""
    for session in _api(url, token, "/api/sessions"):
        if session.get("path") == path and session.get("kernel"):
            try:
                return _api(url, token, f"/api/kernels/{session['kernel']['id']}")["execution_state"]
            except urllib.error.HTTPError:  # the kernel went away between the two requests
                return None
    return None


def shutdown_sessions(url: str, token: str, path: str) -> None:
    """Shut down every session (and its kernel) of the notebook at ``path``."""
    for session in _api(url, token, "/api/sessions"):
        if session.get("path") == path:
            _api(url, token, f"/api/sessions/{session['id']}", method="DELETE")


def have_browser_stack() -> str | None:
    """None if the browser tests can run, else the reason they cannot."""
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        return "Chromium is not installed (apt-get install chromium)"
    try:
        import jupyterlab  # noqa: F401
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"missing {exc.name}"
    return None


def pixel_std(png: bytes) -> float:
    """Standard deviation of the grey levels of a PNG (0 for a blank image)."""
    import io

    from PIL import Image, ImageStat

    with Image.open(io.BytesIO(png)) as im:
        return float(ImageStat.Stat(im.convert("L")).stddev[0])


def pixel_diff(a: bytes, b: bytes) -> float:
    """Fraction of pixels that differ between two PNGs of the same size (1.0 if sizes differ)."""
    import io

    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(a)) as ia, Image.open(io.BytesIO(b)) as ib:
        if ia.size != ib.size:
            return 1.0
        x = np.asarray(ia.convert("RGB"), dtype=np.int16)
        y = np.asarray(ib.convert("RGB"), dtype=np.int16)
    return float((np.abs(x - y).sum(-1) > 30).mean())


# What a person sees: every Bokeh canvas and every widget control inside its output area's
# visible box, every output area inside the notebook, and no horizontal scrolling. Walks
# shadow roots (Bokeh draws inside them). Returns one line per problem.
LAYOUT_CHECK_JS = r"""
(scope) => {
  const deep = (root, sel, out = []) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.matches(sel)) out.push(el);
      if (el.shadowRoot) deep(el.shadowRoot, sel, out);
    }
    return out;
  };
  const problems = [];
  const fmt = (r) => `[${Math.round(r.left)}, ${Math.round(r.right)}]`;
  const label = (el) => {
    const t = (el.innerText || el.getAttribute('title') || '').trim().split('\n')[0].slice(0, 40);
    return `${el.className.toString().split(' ').slice(0, 2).join('.')}${t ? ` "${t}"` : ''}`;
  };
  const root = document.querySelector(scope) || document.body;
  const viewport = root.getBoundingClientRect();
  for (const sc of [root, ...deep(root, '.jp-WindowedPanel-outer, .jp-Notebook')]) {
    if (sc.scrollWidth > sc.clientWidth + 1 && getComputedStyle(sc).overflowX !== 'visible')
      problems.push(`horizontal scrolling in ${label(sc)}: content ${sc.scrollWidth} px > ${sc.clientWidth} px`);
  }
  const page = document.documentElement;
  if (page.scrollWidth > window.innerWidth + 1)
    problems.push(`the page scrolls horizontally: ${page.scrollWidth} px > ${window.innerWidth} px`);
  const areas = deep(root, '.jp-OutputArea-output');
  const boxes = areas.length ? areas : [root];
  for (const area of boxes) {
    const box = area.getBoundingClientRect();
    if (box.width === 0) continue;
    if (area !== root && (box.left < viewport.left - 1 || box.right > viewport.right + 1))
      problems.push(`output area ${fmt(box)} outside the page ${fmt(viewport)}`);
    const sel = '.bk-Canvas, .widget-slider, .widget-dropdown, .widget-select-multiple, .widget-toggle-buttons, '
      + '.widget-button, .widget-text, .widget-play, .widget-html, .widget-label, .bk-legend';
    for (const el of deep(area, sel)) {
      const r = el.getBoundingClientRect();
      if (r.width === 0 || r.height === 0) continue;
      if (r.left < box.left - 1 || r.right > box.right + 1)
        problems.push(`${label(el)} at ${fmt(r)} outside its output area ${fmt(box)}`);
    }
  }
  return problems;
}
"""


def layout_problems(page: Any, scope: str = ".jp-NotebookPanel") -> list[str]:
    """The layout problems of the page (see ``LAYOUT_CHECK_JS``) within ``scope``."""
    return page.evaluate(LAYOUT_CHECK_JS, scope)
