"""Every workload kind the course submits, read the same way: its API, its pods, its phase.

Pure functions of API objects (dicts as the API server returns them), so they are table-tested
without a server and shared by the Kubernetes backend and diagnose():

| kind (group)                      | pods found by label                     | rank of a pod |
|-----------------------------------|-----------------------------------------|---------------|
| Job (batch)                       | batch.kubernetes.io/job-name            | completion index |
| JobSet (jobset.x-k8s.io)          | jobset.sigs.k8s.io/jobset-name          | replicated Jobs in spec order, then job index, then completion index |
| PyTorchJob (kubeflow.org)         | training.kubeflow.org/job-name          | Master 0, Worker i -> i + 1 |
| TrainJob (trainer.kubeflow.org)   | jobset.sigs.k8s.io/jobset-name (Trainer v2 renders a JobSet of the same name) | completion index of the "node" Job; initializer pods have none |
| Job (batch.volcano.sh)            | volcano.sh/job-name                     | tasks in spec order, then volcano.sh/task-index |

The phase vocabulary is the course's one (constants.PENDING ... FAILED):
  * Succeeded / Failed come only from the workload's own terminal condition (Job Complete/Failed,
    JobSet Completed/Failed, PyTorchJob Succeeded/Failed, TrainJob Complete/Failed, Volcano
    status.state.phase Completed / Failed, Aborted, Terminated), Failed with that condition's reason
    and message;
  * Running only while a pod's phase is Running (a container process really runs), never because
    a controller counts a Pending pod as "active";
  * otherwise Pending with the reason that holds it: Suspended / NotAdmitted (Kueue) first, then
    the pods' own: Unschedulable with the scheduler's message, an image pull error, or the waiting
    container's reason (ContainerCreating).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import constants as C
from ..manifests import Manifest
from ..types import JobStatus, PodStatus

# Pod labels (and annotations) each controller sets; the values are the workload's name / index.
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
JOBSET_RJOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
JOBSET_JOB_INDEX_LABEL = "jobset.sigs.k8s.io/job-index"
PYTORCHJOB_NAME_LABEL = "training.kubeflow.org/job-name"
PYTORCHJOB_TYPE_LABEL = "training.kubeflow.org/replica-type"
PYTORCHJOB_INDEX_LABEL = "training.kubeflow.org/replica-index"
VOLCANO_NAME_LABEL = "volcano.sh/job-name"
VOLCANO_TASK_LABEL = "volcano.sh/task-spec"
VOLCANO_INDEX_LABEL = "volcano.sh/task-index"
TRAINJOB_NODE_RJOB = "node"  # Trainer v2: the replicated Job that runs the trainer

# Container waiting reasons that mean "the image cannot be pulled" (kubelet's names).
IMAGE_PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
# Kueue's Workload conditions that explain a suspended job, in the order they are looked at.
_KUEUE_CONDITIONS = ("QuotaReserved", "Admitted")


@dataclass(frozen=True)
class Kind:
    """How one workload kind is read: where its API lives and how its pods and phase are found."""

    kind: str
    group: str
    version: str
    plural: str
    pod_label: str
    terminal: Callable[[Manifest], tuple[str, str, str] | None]  # (phase, reason, message)
    suspended: Callable[[Manifest], bool]
    rank: Callable[[Manifest, Manifest], int | None]  # (workload, pod) -> rank

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str, name: str | None = None) -> str:
        base = f"/apis/{self.api_version}" if self.group else f"/api/{self.version}"
        path = f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{path}/{name}" if name else path

    def pod_selector(self, name: str) -> str:
        return f"{self.pod_label}={name}"

    def describe(self) -> str:
        return f"{self.kind} ({self.group or 'core'})"


def _true_conditions(obj: Manifest) -> dict[str, Manifest]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return {c.get("type"): c for c in conditions if str(c.get("status")) == "True"}


def _by_conditions(succeeded: str, failed: str = "Failed") -> Callable:
    def terminal(obj: Manifest) -> tuple[str, str, str] | None:
        conditions = _true_conditions(obj)
        if failed in conditions:
            c = conditions[failed]
            return C.FAILED, c.get("reason") or failed, c.get("message") or ""
        if succeeded in conditions:
            c = conditions[succeeded]
            return C.SUCCEEDED, c.get("reason") or "", c.get("message") or ""
        return None

    return terminal


def _suspended_condition(obj: Manifest) -> bool:
    return "Suspended" in _true_conditions(obj) or bool((obj.get("spec") or {}).get("suspend"))


def _volcano_terminal(obj: Manifest) -> tuple[str, str, str] | None:
    state = (obj.get("status") or {}).get("state") or {}
    phase = state.get("phase") or ""
    if phase == "Completed":
        return C.SUCCEEDED, state.get("reason") or "", state.get("message") or ""
    if phase in ("Failed", "Aborted", "Terminated"):
        return C.FAILED, state.get("reason") or phase, state.get("message") or ""
    return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _meta_value(pod: Manifest, key: str) -> str | None:
    meta = pod.get("metadata") or {}
    return (meta.get("labels") or {}).get(key) or (meta.get("annotations") or {}).get(key)


def completion_index(pod: Manifest) -> int | None:
    """The Job controller's completion index of a pod (annotation, or label since 1.28)."""
    return _int(_meta_value(pod, C.COMPLETION_INDEX_ANNOTATION))


def _job_rank(_workload: Manifest, pod: Manifest) -> int | None:
    return completion_index(pod)


def _jobset_rank(jobset: Manifest, pod: Manifest) -> int | None:
    index = completion_index(pod)
    rjob_name = _meta_value(pod, JOBSET_RJOB_LABEL)
    job_index = _int(_meta_value(pod, JOBSET_JOB_INDEX_LABEL)) or 0
    if index is None:
        return None
    offset = 0
    for rjob in (jobset.get("spec") or {}).get("replicatedJobs") or []:
        job_spec = ((rjob.get("template") or {}).get("spec")) or {}
        width = int(job_spec.get("parallelism") or job_spec.get("completions") or 1)
        if rjob.get("name") == rjob_name:
            return offset + job_index * width + index
        offset += int(rjob.get("replicas") or 1) * width
    return index if rjob_name is None else None


def _trainjob_rank(_trainjob: Manifest, pod: Manifest) -> int | None:
    rjob = _meta_value(pod, JOBSET_RJOB_LABEL)
    return completion_index(pod) if rjob in (None, TRAINJOB_NODE_RJOB) else None


def _pytorchjob_rank(job: Manifest, pod: Manifest) -> int | None:
    index = _int(_meta_value(pod, PYTORCHJOB_INDEX_LABEL))
    replica = (_meta_value(pod, PYTORCHJOB_TYPE_LABEL) or "").lower()
    if index is None:
        return None
    if replica == "master":
        return index
    specs = (job.get("spec") or {}).get("pytorchReplicaSpecs") or {}
    masters = int((specs.get("Master") or {}).get("replicas") or (1 if "Master" in specs else 0))
    return masters + index


def _volcano_rank(job: Manifest, pod: Manifest) -> int | None:
    index = _int(_meta_value(pod, VOLCANO_INDEX_LABEL))
    task = _meta_value(pod, VOLCANO_TASK_LABEL)
    if index is None:
        return None
    offset = 0
    for spec in (job.get("spec") or {}).get("tasks") or []:
        if spec.get("name") == task:
            return offset + index
        offset += int(spec.get("replicas") or 1)
    return index


KINDS: dict[tuple[str, str], Kind] = {
    (k.group, k.kind): k
    for k in (
        Kind("Job", "batch", "v1", "jobs", C.JOB_NAME_LABEL,
             _by_conditions("Complete"), _suspended_condition, _job_rank),
        Kind("JobSet", "jobset.x-k8s.io", "v1alpha2", "jobsets", JOBSET_NAME_LABEL,
             _by_conditions("Completed"), _suspended_condition, _jobset_rank),
        Kind("PyTorchJob", "kubeflow.org", "v1", "pytorchjobs", PYTORCHJOB_NAME_LABEL,
             _by_conditions("Succeeded"), _suspended_condition, _pytorchjob_rank),
        Kind("TrainJob", "trainer.kubeflow.org", "v1alpha1", "trainjobs", JOBSET_NAME_LABEL,
             _by_conditions("Complete"), _suspended_condition, _trainjob_rank),
        Kind("Job", "batch.volcano.sh", "v1alpha1", "jobs", VOLCANO_NAME_LABEL,
             _volcano_terminal, lambda obj: False, _volcano_rank),
    )
}  # fmt: skip


def kind_of(kind: str, api_version: str = "") -> Kind:
    """The Kind for a JobRef's kind and apiVersion ("" = the kind's usual group: batch/v1 Job)."""
    group = api_version.rpartition("/")[0] if "/" in api_version else ""
    if not api_version:
        group = {"Job": "batch"}.get(kind) or next((g for (g, k) in KINDS if k == kind), "")
    found = KINDS.get((group, kind))
    if found is None:
        known = ", ".join(f"{k.kind} ({k.api_version})" for k in KINDS.values())
        raise ValueError(
            f"the course cannot follow {api_version or '?'} {kind}; it follows {known}"
        )
    return found


# --- Status --------------------------------------------------------------------------------------


def timestamp(value: Any) -> float | None:
    """Seconds since the epoch of an RFC 3339 API timestamp (or a datetime), None if unset."""
    from datetime import datetime

    if not value:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def pod_waiting(pod: Manifest) -> tuple[str, str]:
    """Why a pod has not started: (reason, message), ("", "") if nothing holds it."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and str(condition.get("status")) == "False":
            return condition.get("reason") or "Unschedulable", condition.get("message") or ""
    if not (pod.get("spec") or {}).get("nodeName") and status.get("phase", C.PENDING) == C.PENDING:
        return "NotScheduled", "the scheduler has not assigned a node yet"
    for container in (status.get("initContainerStatuses") or []) + (
        status.get("containerStatuses") or []
    ):
        waiting = (container.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") not in (None, "PodInitializing"):
            return waiting["reason"], waiting.get("message") or ""
    if status.get("phase", C.PENDING) == C.PENDING:
        return "ContainerCreating", ""
    return "", ""


def pod_status(pod: Manifest, rank: int | None) -> PodStatus:
    """One pod in the shared type: phase, exit code, reason (terminated, waiting or unscheduled)."""
    status = pod.get("status") or {}
    phase = status.get("phase") or C.PENDING
    exit_code, reason, restarts = None, status.get("reason", ""), 0
    for container in status.get("containerStatuses") or []:
        restarts += int(container.get("restartCount") or 0)
        state = container.get("state") or {}
        if "terminated" in state:
            exit_code = state["terminated"].get("exitCode")
            reason = state["terminated"].get("reason", reason)
        elif "waiting" in state:
            reason = state["waiting"].get("reason", reason)
    if phase == C.PENDING and not reason:
        reason = pod_waiting(pod)[0]
    return PodStatus(pod["metadata"]["name"], rank, phase, exit_code, reason, restarts)


def kueue_reason(workload: Manifest | None, queue: str) -> tuple[str, str]:
    """Why Kueue has not admitted a job: ("NotAdmitted", Kueue's own message when it has one)."""
    conditions = {
        c.get("type"): c for c in ((workload or {}).get("status") or {}).get("conditions") or []
    }
    for name in _KUEUE_CONDITIONS:
        condition = conditions.get(name)
        if condition and str(condition.get("status")) == "False" and condition.get("message"):
            return "NotAdmitted", condition["message"]
    where = f"LocalQueue {queue!r}" if queue else "its queue"
    return "NotAdmitted", f"waiting for Kueue to admit it ({where}; no quota reserved yet)"


def pending_reason(
    kind: Kind, obj: Manifest, pods: list[Manifest], kueue: tuple[str, str] | None = None
) -> tuple[str, str]:
    """What holds a job that has no running pod: admission first, then its pods' own reasons."""
    if kind.suspended(obj):
        if kueue is not None:
            return kueue
        return "Suspended", f"{kind.kind} is suspended (spec.suspend: true)"
    waiting = [(pod_waiting(p), p["metadata"]["name"]) for p in pods]
    for wanted in ("Unschedulable", *IMAGE_PULL_REASONS):
        for (reason, message), name in waiting:
            if reason == wanted:
                return reason, f"pod {name}: {message}".rstrip(": ")
    for (reason, message), name in waiting:
        if reason and reason != "ContainerCreating":
            return reason, f"pod {name}: {message}".rstrip(": ")
    if waiting:
        return "ContainerCreating", f"pod {waiting[0][1]}: containers are starting"
    return "NoPods", f"the {kind.kind} controller has not created a pod yet"


def workload_status(
    kind: Kind, obj: Manifest, pods: list[Manifest], kueue: tuple[str, str] | None = None
) -> JobStatus:
    """The workload as the course's JobStatus (see the module docstring for the phase rules)."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    terminal = kind.terminal(obj)
    pod_states = [pod_status(p, kind.rank(obj, p)) for p in pods]
    if terminal is not None:
        phase, reason, message = terminal
    elif any(p.phase == C.RUNNING for p in pod_states):
        phase, reason, message = C.RUNNING, "", ""
    else:
        phase, (reason, message) = C.PENDING, pending_reason(kind, obj, pods, kueue)
    if kind.kind == "Job" and kind.group == "batch":
        counts = [int(status.get(k) or 0) for k in ("succeeded", "failed", "active")]
    else:
        counts = [
            sum(p.phase == C.SUCCEEDED for p in pod_states),
            sum(p.phase == C.FAILED for p in pod_states),
            sum(p.phase in (C.PENDING, C.RUNNING) for p in pod_states),
        ]
    started = [timestamp((p.get("status") or {}).get("startTime")) for p in pods]
    start = timestamp(status.get("startTime")) or min((t for t in started if t), default=None)
    end = timestamp(status.get("completionTime"))
    if end is None and terminal is not None:
        end = (
            max(
                (
                    timestamp(c.get("lastTransitionTime")) or 0
                    for c in _true_conditions(obj).values()
                ),
                default=None,
            )
            or None
        )
    return JobStatus(
        meta.get("name", ""), meta.get("namespace", "default"), phase, reason, message,
        *counts, sorted(pod_states, key=_rank_key), start, end,
    )  # fmt: skip


def _rank_key(pod: PodStatus) -> tuple:
    return (pod.index if pod.index is not None else 1 << 30, pod.name)
