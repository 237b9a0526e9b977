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
      * every job verb takes the JobRef submit() returned (kind, name, namespace): the kind says
        which API (Job, JobSet, PyTorchJob, TrainJob, Volcano Job) and which pod labels to follow;
      * delete() stops every process/pod of the job; a job that is not there is NotFound unless
        missing_ok=True.
    A backend is built from its typed config (kubecourse.backends.config).
    """

    name: str = "backend"
    # Whether the backend pulls container images (the facade then warns on tag-only images).
    runs_images: bool = False

    @abc.abstractmethod
    def submit(self, objects: list[Manifest], *, dry_run: bool = False) -> JobRef:
        """Create the objects (dependencies first) and return a reference to the workload."""

    @abc.abstractmethod
    def status(self, ref: JobRef) -> JobStatus:
        """The job's current phase, counts and pods."""

    @abc.abstractmethod
    def wait(
        self,
        ref: JobRef,
        *,
        timeout_s: float,
        on_update: Callable[[JobStatus], None] | None = None,
    ) -> JobStatus:
        """Block until the job is terminal; call on_update on every observed change."""

    @abc.abstractmethod
    def logs(
        self,
        ref: JobRef,
        *,
        follow: bool = False,
        index: int | None = None,
        tail_lines: int | None = None,
    ) -> Iterator[LogLine]:
        """Log lines of every pod of the job (or of the pod with completion index `index`)."""

    @abc.abstractmethod
    def events(self, ref: JobRef) -> list[Event]:
        """Events about the job and its pods, oldest first."""

    @abc.abstractmethod
    def delete(self, ref: JobRef, *, missing_ok: bool = False, volumes: bool = False) -> None:
        """Stop and remove the job, its pods and what its submit created, except PVCs (their data
        outlives the job; volumes=True removes them too). An absent job raises NotFound, like
        `kubectl delete`, unless missing_ok."""

    # Plain objects (namespaces, quotas, queues, RBAC) that are not a job: the workshop tooling.
    def apply_objects(self, objects: list[Manifest], *, dry_run: bool = False) -> list[str]:
        """Create each object (dependencies first); one result per object, in the order given:
        "created", "exists" (left as it is), "dry run", or "unchecked" (dry run of an object in a
        namespace the same dry run brings: a server stores nothing on a dry run, so it cannot
        check what would live in that namespace)."""
        raise NotImplementedError(f"the {self.name} backend cannot apply plain objects")

    def delete_objects(self, objects: list[Manifest]) -> list[str]:
        """Delete each object (dependents first); one result per object, in the order given:
        "deleted" or "absent". Idempotent."""
        raise NotImplementedError(f"the {self.name} backend cannot delete plain objects")

    def get_objects(self, objects: list[Manifest]) -> list[Manifest | None]:
        """The stored version of each object, None where it does not exist."""
        raise NotImplementedError(f"the {self.name} backend cannot read plain objects")

    def pod_objects(self, ref: JobRef) -> list[Manifest]:
        """The job's pods as Kubernetes-shaped objects (phase, conditions, container states):
        the evidence diagnose() reads. Default: built from status() (exit code and reason; a
        "Preempted" pod gets the DisruptionTarget condition the cluster would set)."""
        return [_pod_object(p) for p in self.status(ref).pods]

    def progress(self, ref: JobRef) -> tuple[int, int] | None:
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
