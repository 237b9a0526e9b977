"""A JupyterLab server and a Chromium page on it, for the browser test (no test logic here).

The server runs this interpreter's JupyterLab on a free 127.0.0.1 port with a token, on a copy of
the notebooks (the page runs cells, and a copy keeps the repository's notebooks clean), with its
own settings: no autosave, no news or update checks (no traffic beyond loopback), every cell kept
in the DOM (windowing off) so the assertions see the whole notebook. The browser is Debian's
`chromium` through Playwright; every request that is not for 127.0.0.1 is aborted.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from kubecourse.monitoring import free_port

SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "checkForUpdates": False,
        "fetchNews": "false",
    },
}


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    return None


class LabServer:
    """`jupyter lab` serving root_dir; stop() ends it (its whole process group)."""

    def __init__(self, root_dir: Path, state_dir: Path):
        self.root_dir, self.state_dir = root_dir, state_dir
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _environment(self) -> dict[str, str]:
        settings = self.state_dir / "settings"
        for relative, values in SETTINGS.items():
            (settings / relative).parent.mkdir(parents=True, exist_ok=True)
            (settings / relative).write_text(json.dumps(values))
        env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # as a learner has it
        env.update(
            JUPYTER_CONFIG_DIR=str(self.state_dir / "config"),
            JUPYTER_RUNTIME_DIR=str(self.state_dir / "runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(self.state_dir / "workspaces"),
        )
        return env

    def start(self, timeout_s: float = 120) -> LabServer:
        argv = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--allow-root",
        ]
        self.log = open(self.state_dir / "jupyterlab.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            argv,
            env=self._environment(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited at start:\n{self.log_tail()}")
            try:
                self.api("status")
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        raise RuntimeError(f"jupyter lab not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def api(self, path: str):
        request = urllib.request.Request(
            f"{self.url}/api/{path}", headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())

    def log_tail(self, lines: int = 30) -> str:
        text = (self.state_dir / "jupyterlab.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(timeout=30)
        self.log.close()


def loopback_only(route) -> None:
    """Playwright route handler: requests for anything but 127.0.0.1 are aborted."""
    host = route.request.url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("data:", "blob:")):
        route.continue_()
    else:
        route.abort()


# JavaScript run in the page -------------------------------------------------------------------

# The notebook panel open on `path` (every test opens its notebook in a fresh workspace, but a
# restored tab must never be mistaken for it).
PANEL_JS = """(path) => [...window.jupyterapp.shell.widgets('main')]
  .find((w) => w.context?.path === path)"""

# Activate that panel and run all its cells.
RUN_ALL_JS = f"""(path) => {{
  const panel = ({PANEL_JS})(path);
  window.jupyterapp.shell.activateById(panel.id);
  return window.jupyterapp.commands.execute('notebook:run-all-cells');
}}"""

# Its cells as the model holds them (type, execution count, outputs) and its kernel's status.
CELLS_JS = f"""(path) => {{
  const panel = ({PANEL_JS})(path);
  const cells = panel.content.model.cells, out = [];
  for (let i = 0; i < cells.length; i++) out.push(cells.get(i).toJSON());
  return {{cells: out, kernel: panel.sessionContext.session?.kernel?.status ?? 'none'}};
}}"""

# For each <pre> of a side-by-side view: is it left-aligned, are its lines unwrapped, and does
# each line's first visible character sit where its leading spaces put it?
COLUMN_LAYOUT_JS = """(pre) => {
  const text = pre.firstChild, style = getComputedStyle(pre), lines = [];
  const rect = (a, b) => { const r = document.createRange(); r.setStart(text, a); r.setEnd(text, b);
                           return r.getBoundingClientRect(); };
  let start = 0;
  for (const line of text.textContent.split('\\n')) {
    const indent = line.length - line.trimStart().length;
    if (line.trim()) {
      const first = rect(start + indent, start + indent + 1);
      const last = rect(start + line.length - 1, start + line.length);
      lines.push({indent, left: first.left, wrapped: last.top > first.top + 1});
    }
    start += line.length + 1;
  }
  const origin = pre.getBoundingClientRect().left + parseFloat(style.paddingLeft)
                 + parseFloat(style.borderLeftWidth);
  const space = rect(0, 1).width || 6;
  return {textAlign: style.textAlign, whiteSpace: style.whiteSpace, origin, space, lines};
}"""

# Which CJK characters of an element the browser has no glyph for: each is drawn on a canvas in
# the element's own font and compared with a codepoint no font has (U+10FFFD: the "tofu" box).
MISSING_GLYPHS_JS = """(el) => {
  const family = getComputedStyle(el).fontFamily;
  const canvas = document.createElement('canvas'); canvas.width = 48; canvas.height = 48;
  const g = canvas.getContext('2d', {willReadFrequently: true});
  const draw = (ch) => { g.clearRect(0, 0, 48, 48); g.font = `32px ${family}`;
                         g.fillText(ch, 4, 36); return g.getImageData(0, 0, 48, 48).data; };
  const key = (px) => px.join(',');
  const tofu = key(draw('\\u{10FFFD}')), blank = key(new Uint8ClampedArray(48 * 48 * 4));
  const chars = [...new Set([...el.innerText].filter((c) => /[\\u3040-\\u30ff\\u3400-\\u9fff\\uff00-\\uffef]/.test(c)))];
  const missing = chars.filter((c) => { const k = key(draw(c)); return k === tofu || k === blank; });
  return {family, checked: chars.length, missing};
}"""
