"""The contract every backend fulfils. The facade (kubecourse.client) only ever calls these."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator

from ..manifests import Manifest
from ..types import Event, JobRef, JobStatus, LogLine, PodStatus


class Backend(abc.ABC):
    """Runs rendered, validated manifests somewhere: local processes or a Kubernetes cluster.

    Invariants (tested for each backend):
      * submit() receives objects already validated by the facade, in creation order;
      * every method answers in the shared types (JobRef, JobStatus, LogLine, Event) and the
        phase vocabulary of kubecourse.constants;
      * wait() returns once the job is terminal (Succeeded/Failed) or raises JobTimeout; it
        blocks on notifications (a watch stream, a condition variable), never on a sleep-poll loop;
      * delete() stops every process/pod of the job and is idempotent.
    """

    name: str = "backend"

    @abc.abstractmethod
    def submit(self, objects: list[Manifest], *, dry_run: bool = False) -> JobRef:
        """Create the objects (dependencies first) and return a reference to the workload."""

    @abc.abstractmethod
    def status(self, name: str, namespace: str) -> JobStatus:
        """The job's current phase, counts and pods."""

    @abc.abstractmethod
    def wait(
        self,
        name: str,
        namespace: str,
        *,
        timeout_s: float,
        on_update: Callable[[JobStatus], None] | None = None,
    ) -> JobStatus:
        """Block until the job is terminal; call on_update on every observed change."""

    @abc.abstractmethod
    def logs(
        self,
        name: str,
        namespace: str,
        *,
        follow: bool = False,
        index: int | None = None,
        tail_lines: int | None = None,
    ) -> Iterator[LogLine]:
        """Log lines of every pod of the job (or of the pod with completion index `index`)."""

    @abc.abstractmethod
    def events(self, name: str, namespace: str) -> list[Event]:
        """Events about the job and its pods, oldest first."""

    @abc.abstractmethod
    def delete(self, name: str, namespace: str) -> None:
        """Stop and remove the job and its pods (idempotent)."""

    # Plain objects (namespaces, quotas, queues, RBAC) that are not a job: the workshop tooling.
    def apply_objects(self, objects: list[Manifest], *, dry_run: bool = False) -> list[str]:
        """Create each object (dependencies first); one result per object, in the order given:
        "created", "exists" (left as it is) or "dry run"."""
        raise NotImplementedError(f"the {self.name} backend cannot apply plain objects")

    def delete_objects(self, objects: list[Manifest]) -> list[str]:
        """Delete each object (dependents first); one result per object, in the order given:
        "deleted" or "absent". Idempotent."""
        raise NotImplementedError(f"the {self.name} backend cannot delete plain objects")

    def get_objects(self, objects: list[Manifest]) -> list[Manifest | None]:
        """The stored version of each object, None where it does not exist."""
        raise NotImplementedError(f"the {self.name} backend cannot read plain objects")

    def pod_objects(self, name: str, namespace: str) -> list[Manifest]:
        """The job's pods as Kubernetes-shaped objects (phase, conditions, container states):
        the evidence diagnose() reads. Default: built from status() (exit code and reason; a
        "Preempted" pod gets the DisruptionTarget condition the cluster would set)."""
        return [_pod_object(p) for p in self.status(name, namespace).pods]

    def progress(self, name: str, namespace: str) -> tuple[int, int] | None:
        """(steps done, steps total) when the backend can see the trainer's progress, else None."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections and background threads."""


def _pod_object(pod: PodStatus) -> Manifest:
    state: Manifest = {}
    if pod.exit_code is not None:
        state["terminated"] = {"exitCode": pod.exit_code, "reason": pod.reason}
    elif pod.phase == "Running":
        state["running"] = {}
    conditions = []
    if pod.reason == "Preempted":
        conditions.append(
            {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}
        )
    return {
        "metadata": {"name": pod.name},
        "status": {
            "phase": pod.phase,
            "conditions": conditions,
            "containerStatuses": [
                {"name": "trainer", "state": state, "restartCount": pod.restarts}
            ],
        },
    }
