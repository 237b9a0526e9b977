"""Notebook rendering: YAML, diffs, validation reports, status tables, and kubectl twins.

Each view is a small object with `_repr_html_` (JupyterLab) and `__str__` (terminals, logs, CI), so
`show(x)` works in both and tests can assert on the text.
"""

from __future__ import annotations

import difflib
import html
import shlex
from collections.abc import Iterable

import yaml

from . import constants as C
from .manifests import Manifest
from .types import Event, JobStatus


def to_yaml(objects: Manifest | Iterable[Manifest]) -> str:
    """Multi-document YAML, keys in manifest order."""
    docs = [objects] if isinstance(objects, dict) else list(objects)
    return "---\n".join(
        yaml.safe_dump(d, sort_keys=False, default_flow_style=False, width=100) for d in docs
    )


class _View:
    def __init__(self, text: str, html_body: str):
        self.text, self.html = text, html_body

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return self.html


def yaml_view(objects: Manifest | Iterable[Manifest]) -> _View:
    text = to_yaml(objects)
    return _View(text, f"<pre style='font-size:12px;line-height:1.25'>{html.escape(text)}</pre>")


# JupyterLab right-aligns table cells and wraps <pre> text: YAML in columns needs its own layout.
# Flex columns, each a left-aligned <pre> that keeps every space and scrolls instead of wrapping.
_COLUMN_PRE = (
    "text-align:left;white-space:pre;overflow-x:auto;margin:0;"
    "font-size:10px;line-height:1.2;padding:4px;background:var(--jp-layout-color1, transparent)"
)


def columns_view(columns: dict[str, str]) -> _View:
    """Texts side by side (HTML: one column each, left-aligned, indentation kept, no wrapping;
    text: one after another under `# ===== title =====`)."""
    text = "\n".join(f"# ===== {title} =====\n{body}" for title, body in columns.items())
    cells = "".join(
        f"<div class='kc-column' style='flex:1 1 0;min-width:220px;text-align:left'>"
        f"<b>{html.escape(title)}</b><pre style='{_COLUMN_PRE}'>{html.escape(body)}</pre></div>"
        for title, body in columns.items()
    )
    return _View(
        text,
        f"<div class='kc-columns' style='display:flex;gap:8px;align-items:flex-start;"
        f"overflow-x:auto;text-align:left'>{cells}</div>",
    )


def diff_view(
    before: Manifest | Iterable[Manifest],
    after: Manifest | Iterable[Manifest],
    before_name: str = "manifest",
    after_name: str = "rendered",
) -> _View:
    """Unified diff of two manifest sets (green: added by the options, red: replaced)."""
    lines = list(
        difflib.unified_diff(
            to_yaml(before).splitlines(),
            to_yaml(after).splitlines(),
            before_name,
            after_name,
            lineterm="",
            n=2,
        )
    )
    text = "\n".join(lines) or "(no differences)"
    colours = {"+": "#e6ffec", "-": "#ffebe9", "@": "#ddf4ff"}
    rows = (
        "".join(
            f"<div style='background:{colours.get(line[:1], 'transparent')}'>{html.escape(line) or '&nbsp;'}</div>"
            for line in lines
        )
        or "(no differences)"
    )
    return _View(text, f"<pre style='font-size:12px;line-height:1.25'>{rows}</pre>")


def status_view(status: JobStatus) -> _View:
    header = f"Job {status.namespace}/{status.name}: {status.phase}" + (
        f" ({status.reason})" if status.reason else ""
    )
    rows = [
        (
            p.name,
            "-" if p.index is None else str(p.index),
            p.phase,
            "" if p.exit_code is None else str(p.exit_code),
            p.reason,
        )
        for p in status.pods
    ]
    text = "\n".join(
        [header, *(f"  {n:40s} rank={i:2s} {ph:10s} exit={e:4s} {r}" for n, i, ph, e, r in rows)]
    )
    cells = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{i}</td><td>{ph}</td><td>{e}</td><td>{html.escape(r)}</td></tr>"
        for n, i, ph, e, r in rows
    )
    return _View(
        text,
        f"<b>{html.escape(header)}</b><table><tr><th>pod</th><th>rank</th><th>phase</th><th>exit</th>"
        f"<th>reason</th></tr>{cells}</table>",
    )


def events_view(events: list[Event]) -> _View:
    text = (
        "\n".join(f"{e.type:8s} {e.reason:18s} {e.obj:45s} {e.message}" for e in events)
        or "(no events)"
    )
    return _View(text, f"<pre style='font-size:12px'>{html.escape(text)}</pre>")


# --------------------------------------------------------------------------------------------------
# kubectl twins: the command a learner would type for each helper call
# --------------------------------------------------------------------------------------------------


def kubectl(
    verb: str,
    name: str = "",
    namespace: str = "default",
    *,
    path: str = "",
    dry_run: bool = False,
    timeout_s: float = 600,
    follow: bool = False,
    index: int | None = None,
) -> str:
    """The kubectl command equivalent to a facade call."""
    ns = f"-n {shlex.quote(namespace)}"
    selector = f"-l {C.JOB_NAME_LABEL}={name}"
    if index is not None:
        selector += f",{C.COMPLETION_INDEX_ANNOTATION}={index}"
    commands = {
        "submit": f"kubectl apply {ns} -f {shlex.quote(path)}"
        + (" --dry-run=server" if dry_run else ""),
        "status": f"kubectl get job {name} {ns} -o wide && kubectl get pods {ns} {selector}",
        "wait": f"kubectl wait {ns} --for=condition=complete --timeout={int(timeout_s)}s job/{name}",
        "logs": f"kubectl logs {ns} {selector} -c trainer --prefix --max-log-requests=16"
        + (" -f" if follow else ""),
        "events": f"kubectl events {ns} --for job/{name}",
        "diagnose": f"kubectl describe job {name} {ns} && kubectl get pods {ns} {selector} -o yaml"
        f" && kubectl events {ns} --for job/{name} && kubectl logs {ns} {selector} --tail=200",
        "delete": f"kubectl delete job {name} {ns} --cascade=foreground",
        "validate": f"kubectl apply {ns} -f {shlex.quote(path)} --dry-run=server --validate=strict",
        "result": f"kubectl logs {ns} {selector} -c trainer --tail=-1 | grep '^result '",
        "metrics": f"kubectl cp {ns} <pod-mounting-the-pvc>:<out-dir>/metrics.jsonl metrics.jsonl",
        "kill": f"kubectl delete pod {ns} $(kubectl get pods {ns} {selector} -o name "
        "--field-selector=status.phase=Running | head -1) --grace-period=0 --force",
        "preempt": f"kubectl drain --pod-selector={C.JOB_NAME_LABEL}={name} <node> "
        "--ignore-daemonsets --delete-emptydir-data  # an Eviction: DisruptionTarget + SIGTERM",
        "kill-worker": f"kubectl exec {ns} $(kubectl get pods {ns} {selector} -o name | head -1)"
        " -- pkill -KILL -f labs.lm_pretrain  # one worker process, not the pod",
    }
    return commands[verb]


def current_cell() -> int | None:
    """The execution count of the notebook cell running now (None outside IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return None if shell is None else shell.execution_count
