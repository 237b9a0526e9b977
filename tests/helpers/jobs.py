"""Small valid Job manifests for backend tests (python one-liners instead of training)."""

from __future__ import annotations

import sys
from typing import Any


def job(
    name: str,
    code: str,
    *,
    env: list[dict[str, Any]] | None = None,
    args: list[str] | None = None,
    volumes: list[dict[str, Any]] | None = None,
    mounts: list[dict[str, Any]] | None = None,
    init_code: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A policy-compliant Job whose trainer runs `python -c code`."""
    security = {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    resources = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    container = {
        "name": "trainer",
        "image": "ghcr.io/kubecourse/labs:0.1.0",
        "command": ["python", "-c", code],
        "args": args or [],
        "env": env or [],
        "resources": resources,
        "securityContext": security,
        "volumeMounts": mounts or [],
    }
    pod = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes or [],
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": 5,
    }
    if init_code is not None:
        pod["initContainers"] = [
            {**container, "name": "init", "command": ["python", "-c", init_code], "args": []}
        ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "backoffLimit": 0,
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod},
            **spec,
        },
    }


PRINT_ARGV_ENV = (
    "import json, os, sys; print(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ)}))"
)
PYTHON = sys.executable
