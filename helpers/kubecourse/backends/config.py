"""Typed configurations, one per backend: what `TrainingClient(backend=...)` accepts.

    TrainingClient()                                          # LocalBackendConfig()
    TrainingClient(backend="kubernetes")                      # KubernetesBackendConfig()
    TrainingClient(backend=LocalBackendConfig(max_grace_s=2)) # a tuned local backend
    TrainingClient(backend=KubernetesBackend(KubernetesBackendConfig(context="kind-course")))

A config is a plain frozen dataclass (no connection, no process, nothing happens when one is made);
`create()` builds its backend, importing the backend module only then. This mirrors kubeflow/sdk's
`LocalProcessBackendConfig` / `KubernetesBackendConfig`: the facade dispatches on the config's type,
never on strings plus **kwargs, so a misspelt option is a TypeError where it is written.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .base import Backend


@dataclass(frozen=True)
class BackendConfig:
    """Base class: every backend's config says which backend it builds."""

    name = "backend"

    def create(self) -> Backend:
        raise NotImplementedError


@dataclass(frozen=True)
class LocalBackendConfig(BackendConfig):
    """The local backend: Jobs run as processes on this machine.

    state_dir: where runs, logs and PVC folders live (default: <workdir>/.course/local).
    workdir: the pod's working directory (default: the repository root).
    python: the interpreter that runs `python ...` commands of the containers.
    max_grace_s: cap on terminationGracePeriodSeconds (seconds) so notebooks stay snappy.
    """

    state_dir: str | Path | None = None
    workdir: str | Path | None = None
    python: str = sys.executable
    max_grace_s: float = 10.0

    name = "local"

    def create(self) -> Backend:
        from .local import LocalBackend

        return LocalBackend(self)


@dataclass(frozen=True)
class KubernetesBackendConfig(BackendConfig):
    """The Kubernetes backend: the official client against the cluster of a kubeconfig.

    kubeconfig / context: as for kubectl (None: $KUBECONFIG or ~/.kube/config, its current context;
    inside a pod, the service account).
    retries: how often a 429/5xx answer or a refused connection is retried (exponential backoff
    from backoff_s seconds, honouring Retry-After); 0 tries once.
    request_timeout_s: per request (seconds); watch_chunk_s: a watch is re-opened at least this
    often (the server-side timeout); pod_start_timeout_s: how long logs(follow=True) waits for a pod
    to be scheduled and started (image pulls of CUDA images take minutes).
    """

    kubeconfig: str | Path | None = None
    context: str | None = None
    retries: int = 3
    backoff_s: float = 0.5
    request_timeout_s: float = 30.0
    watch_chunk_s: int = 60
    pod_start_timeout_s: float = 600.0

    name = "kubernetes"

    def create(self) -> Backend:
        from .kubernetes import KubernetesBackend

        return KubernetesBackend(self)


CONFIGS: dict[str, type[BackendConfig]] = {
    "local": LocalBackendConfig,
    "kubernetes": KubernetesBackendConfig,
}
