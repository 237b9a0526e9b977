"""Run the course's notebooks: keep sources and notebooks in sync, execute them, report outcomes.

    python -m kubecourse.course --out build/course   # execute every notebook, write summary.md
    python -m kubecourse.course --sync               # regenerate notebooks/*.ipynb from the .py sources
    python -m kubecourse.course --lang zh_CN --out build/course-zh_CN   # the Chinese notebooks

The Chinese notebooks (notebooks/zh_CN/) are built from the English ones by kubecourse.i18n.

Notebooks are edited as jupytext py:percent files (notebooks/NN_topic.py); the .ipynb beside each is
a build product committed without outputs. Each notebook ends by calling record_outcome() with the
numbers its asserts checked; the runner gathers them into one summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .manifests import repo_root
from .nbcheck import check_executed

OUTCOME_DIR_ENV = "KUBECOURSE_OUTCOME_DIR"
# The kernelspec every notebook names: exactly what ipykernel installs, so JupyterLab finds nothing to
# rewrite when a notebook opens (a different display name marks it unsaved at once).
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
LEGACY_KERNEL = "kubecourse"  # a second kernelspec older versions installed for the same venv


def notebook_dir() -> Path:
    return repo_root() / "notebooks"


def notebooks(lang: str | None = None) -> list[Path]:
    """Every lesson notebook, in lesson order (NN_topic.ipynb); `lang`: the translated ones."""
    folder = notebook_dir() / lang if lang and lang != "en" else notebook_dir()
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


# --------------------------------------------------------------------------------------------------
# Outcomes: what each notebook proved, for the course summary
# --------------------------------------------------------------------------------------------------


def record_outcome(lesson: str, figures: dict[str, Any] | None = None, **numbers: Any) -> None:
    """Save a lesson's outcome numbers (and figures as PNG) for the course summary."""
    out = Path(os.environ.get(OUTCOME_DIR_ENV) or repo_root() / "build" / "outcomes")
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    for name, figure in (figures or {}).items():
        path = out / f"{lesson}-{name}.png"
        figure.savefig(path, dpi=90, bbox_inches="tight")
        saved.append(path.name)
    path = out / f"{lesson}.json"
    path.write_text(
        json.dumps({"lesson": lesson, "numbers": numbers, "figures": saved}, indent=2, default=str)
    )
    print(f"outcome recorded: {lesson}: {numbers} -> {path}")


# --------------------------------------------------------------------------------------------------
# Sources <-> notebooks
# --------------------------------------------------------------------------------------------------


def _code_cells(notebook) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in notebook.cells]


def language_info() -> dict[str, Any]:
    """What the kernel reports about its language when JupyterLab connects (ipykernel's own
    dict: the Python version is the course environment's). A notebook that already holds it is
    not marked unsaved on open; one without it is, as JupyterLab writes it in."""
    from ipykernel.ipkernel import IPythonKernel

    return json.loads(json.dumps(IPythonKernel.language_info))


def sync(paths: list[Path] | None = None) -> list[Path]:
    """Write NN_topic.ipynb (no outputs) from each NN_topic.py source."""
    import jupytext
    import nbformat

    written = []
    for source in paths or sorted(notebook_dir().glob("[0-9][0-9]_*.py")):
        notebook = jupytext.read(source)
        notebook.metadata["kernelspec"] = dict(KERNELSPEC)
        notebook.metadata["language_info"] = language_info()
        notebook.metadata.pop("jupytext", None)
        for position, cell in enumerate(notebook.cells):
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
            # Ids from content, so regenerating an unchanged notebook leaves git with no diff.
            key = f"{position}\n{cell.cell_type}\n{cell.source}".encode()
            cell.id = hashlib.sha1(key).hexdigest()[:8]
        target = source.with_suffix(".ipynb")
        nbformat.write(notebook, target)
        written.append(target)
    return written


def drift(notebook_path: Path) -> list[str]:
    """Problems between a notebook and its source: missing source, different cells, committed outputs."""
    import jupytext
    import nbformat

    problems = []
    source = notebook_path.with_suffix(".py")
    notebook = nbformat.read(notebook_path, as_version=4)
    if not source.exists():
        return [f"{notebook_path.name}: no jupytext source {source.name}"]
    if _code_cells(jupytext.read(source)) != _code_cells(notebook):
        problems.append(f"{notebook_path.name} differs from {source.name}: run `make notebooks`")
    for number, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count")):
            problems.append(
                f"{notebook_path.name}: cell {number} has committed outputs: run `make notebooks`"
            )
            break
    if not any("parameters" in c.metadata.get("tags", []) for c in notebook.cells):
        problems.append(f"{notebook_path.name}: no cell tagged 'parameters' (papermill needs one)")
    return problems


# --------------------------------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------------------------------


def execute(
    notebook_path: Path,
    out_dir: Path,
    *,
    parameters: dict[str, Any] | None = None,
    cell_timeout_s: int = 300,
    outcome_dir: Path | None = None,
) -> Path:
    """Execute one notebook with papermill (kernel: this interpreter) into out_dir; returns the copy."""
    import papermill

    from .provenance import provenance

    socket_dir = tempfile.mkdtemp(prefix="kubecourse-kernel-")  # short: socket paths are limited
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / notebook_path.name
    previous = os.environ.get(OUTCOME_DIR_ENV)
    os.environ[OUTCOME_DIR_ENV] = str(outcome_dir or out_dir / "outcomes")
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    try:
        papermill.execute_notebook(
            str(notebook_path),
            str(target),
            parameters=parameters or {},
            kernel_name=kernel_name(),
            cwd=str(notebook_path.parent),
            execution_timeout=cell_timeout_s,
            progress_bar=False,
            kernel_manager_class=_ipc_kernel_manager(socket_dir),
        )
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
        if target.exists():  # a failed run is stamped too: it is the one somebody will debug
            _stamp(target, provenance(kubernetes_server=_cluster_version()))
        if previous is None:
            os.environ.pop(OUTCOME_DIR_ENV, None)
        else:
            os.environ[OUTCOME_DIR_ENV] = previous
    return target


def _stamp(notebook_path: Path, record: dict[str, Any]) -> None:
    """Write the provenance record into an executed notebook's metadata.kubecourse.provenance."""
    import nbformat

    notebook = nbformat.read(notebook_path, as_version=4)
    notebook.metadata.setdefault("kubecourse", {})["provenance"] = record
    nbformat.write(notebook, notebook_path)


_CLUSTER_VERSION: list[str | None] = []


def _cluster_version() -> str | None:
    """The Kubernetes server version when a cluster answers (asked once per process)."""
    if not _CLUSTER_VERSION:
        from .env import cluster_info

        _CLUSTER_VERSION.append(cluster_info(timeout_s=3.0).get("server"))
    return _CLUSTER_VERSION[0]


def _ipc_kernel_manager(socket_dir: str):
    """A kernel manager on IPC sockets in `socket_dir`: no unencrypted TCP ports (and no
    "Kernel is running over TCP" warning for every notebook)."""
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("transport", "ipc")
            kwargs.setdefault("ip", str(Path(socket_dir) / "k"))
            super().__init__(**kwargs)

    return IPCKernelManager


def kernel_name() -> str:
    """The kernel papermill starts: ipykernel's own `python3`, which jupyter_client runs with
    *this* interpreter (its argv is `python`, replaced by sys.executable), so JupyterLab offers one
    kernel for the course's environment. Removes the duplicate spec older versions installed."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    manager = KernelSpecManager()
    try:
        legacy = manager.get_kernel_spec(LEGACY_KERNEL)
    except NoSuchKernel:
        legacy = None
    if legacy is not None and Path(legacy.resource_dir).is_relative_to(sys.prefix):
        manager.remove_kernel_spec(LEGACY_KERNEL)
    return KERNELSPEC["name"]


def screenshot_lines(out_dir: Path, ui_dir: Path | None = None) -> list[str]:
    """Markdown for the browser test's screenshots (build/ui/, tests/ui), linked from out_dir."""
    shots = sorted((ui_dir or repo_root() / "build" / "ui").glob("*.png"))
    if not shots:
        return []
    return [
        "",
        "## In JupyterLab (the browser test's screenshots, Chromium)",
        "",
        *(f"![{p.stem}]({os.path.relpath(p, out_dir)})" for p in shots),
    ]


def run_course(out_dir: Path, only: str | None = None, lang: str | None = None) -> Path:
    """Execute every notebook in order; write summary.md and summary.json beside the copies.

    `lang` (e.g. "zh_CN"): run the translated notebooks and write the summary in that language.
    """
    from .i18n import gettext

    def _(message: str) -> str:
        return gettext(message, lang)

    outcomes_dir = out_dir / "outcomes"
    rows = []
    failures = 0
    for notebook in notebooks(lang):
        if only and not re.search(only, notebook.name):
            continue
        start = time.monotonic()
        error = ""
        try:
            executed = execute(notebook, out_dir, outcome_dir=outcomes_dir)
            problems = check_executed(executed, outcomes_dir)  # pictures saved as pictures
            if problems:
                raise AssertionError("; ".join(problems))
        except Exception as exc:  # noqa: BLE001 - report every notebook, then fail at the end
            error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
            failures += 1
        wall = time.monotonic() - start
        print(
            f"{'FAIL' if error else 'ok  '} {notebook.name:40s} {wall:6.1f} s {error}", flush=True
        )
        rows.append({"notebook": notebook.name, "seconds": round(wall, 1), "error": error})
    outcomes = {p.stem: json.loads(p.read_text()) for p in sorted(outcomes_dir.glob("*.json"))}
    lines = [
        _("# Course run (local backend)"),
        "",
        _("| notebook | time (s) | result | outcome |"),
        "|---|---|---|---|",
    ]
    for row in rows:
        lesson = row["notebook"].removesuffix(".ipynb")
        numbers = outcomes.get(lesson, {}).get("numbers", {})
        shown = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in numbers.items()
        )
        lines.append(
            f"| {row['notebook']} | {row['seconds']} | {_('FAILED') + ' ' + row['error'] if row['error'] else _('passed')} | {shown} |"
        )
    figures = [f for o in outcomes.values() for f in o.get("figures", [])]
    if figures:
        lines += ["", _("## Plots"), ""] + [f"![{f}](outcomes/{f})" for f in figures]
    lines += screenshot_lines(out_dir)
    from .provenance import provenance

    record = provenance(kubernetes_server=_cluster_version())
    lines += ["", "## Provenance", "", "```json", json.dumps(record, indent=1), "```"]
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out_dir / "summary.json").write_text(
        json.dumps(
            {"notebooks": rows, "outcomes": outcomes, "provenance": record}, indent=2, default=str
        )
    )
    print(f"summary: {out_dir / 'summary.md'}")
    if failures:
        raise SystemExit(f"{failures} notebook(s) failed")
    return out_dir / "summary.md"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=Path("build/course"), help="folder for executed notebooks"
    )
    parser.add_argument("--only", help="regular expression: run only the matching notebooks")
    parser.add_argument(
        "--sync", action="store_true", help="regenerate the .ipynb files from the .py sources"
    )
    parser.add_argument(
        "--lang", default="en", help="en (default) or zh_CN: the notebooks and summary language"
    )
    args = parser.parse_args(argv)
    if args.sync:
        for path in sync():
            print(f"wrote {path.relative_to(repo_root())}")
        return
    run_course(args.out.resolve(), args.only, args.lang)


if __name__ == "__main__":
    main()
