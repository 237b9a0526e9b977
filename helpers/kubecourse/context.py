"""Where a learner's jobs go: the namespace and Kueue queue, resolved once for every notebook.

    NAMESPACE = ""   # empty: $KUBECOURSE_NAMESPACE, else the kubeconfig context, else the course namespace
    resolve_namespace(NAMESPACE)    # "learner-07" in a workshop, "kubecourse" on a laptop

A workshop kubeconfig (`kubecourse workshop creds`) sets the context's namespace to the learner's
and names the learner's LocalQueue in a context extension, so a learner edits nothing. Nothing is
read at import; the kubeconfig is parsed as YAML (no cluster call).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

# The labelled namespace the lessons run in when nothing else is configured (manifests/00-course/).
COURSE_NAMESPACE = "kubecourse"
ENV_NAMESPACE = "KUBECOURSE_NAMESPACE"
ENV_QUEUE = "KUBECOURSE_QUEUE"
# Context extension in a kubeconfig that names the learner's LocalQueue (written by workshop creds).
QUEUE_EXTENSION = "kubecourse.dev/queue"


def _current_context(kubeconfig: str | Path | None = None) -> dict:
    if kubeconfig is None:
        configured = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        kubeconfig = Path(configured).expanduser() if configured else Path.home() / ".kube/config"
    try:
        config = yaml.safe_load(Path(kubeconfig).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    name = config.get("current-context")
    for entry in config.get("contexts") or []:
        if entry.get("name") == name:
            return entry.get("context") or {}
    return {}


def resolve_namespace(value: str = "", kubeconfig: str | Path | None = None) -> str:
    """value, else $KUBECOURSE_NAMESPACE, else the kubeconfig context's namespace, else
    COURSE_NAMESPACE."""
    return (
        value
        or os.environ.get(ENV_NAMESPACE, "")
        or _current_context(kubeconfig).get("namespace", "")
        or COURSE_NAMESPACE
    )


def resolve_queue(value: str = "", kubeconfig: str | Path | None = None) -> str:
    """value, else $KUBECOURSE_QUEUE, else the kubeconfig context's queue extension, else ""
    (no queue: jobs are not sent through Kueue)."""
    if value or os.environ.get(ENV_QUEUE):
        return value or os.environ[ENV_QUEUE]
    for extension in _current_context(kubeconfig).get("extensions") or []:
        if extension.get("name") == QUEUE_EXTENSION:
            return str((extension.get("extension") or {}).get("queue", ""))
    return ""


__all__ = ["COURSE_NAMESPACE", "resolve_namespace", "resolve_queue"]
