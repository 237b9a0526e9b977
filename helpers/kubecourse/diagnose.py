"""Why did my training job fail? Collect the evidence a person would, and name the cause.

    with TrainingClient() as client:
        print(client.diagnose("cifar10-train"))     # or diagnose(client, "cifar10-train")

`diagnose()` gathers what `kubectl describe job`, `kubectl get pods -o yaml`, `kubectl events` and
`kubectl logs --tail` show: the Job's status, each pod's phase, conditions and container states
(`Backend.pod_objects`: Kubernetes-shaped pods on every backend), the events, and the tail of every
pod's log. `classify()` turns that evidence into causes, each with the lines that prove it and a
fix. It is a pure function, so the same rules run on a live job and on recorded objects.

The local backend has no scheduler, kubelet or image pulls: there the causes come from exit codes,
events (kill/preempt/deadline) and logs; the scheduling and image causes need a cluster (or the
recorded cases in notebooks/exercises/11/cases/, which the tests serve through a fake API server).
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from typing import Any

from . import contract
from .errors import ApiError
from .types import Event, JobStatus

# kind -> (what it means, the usual fix). The order is the priority when several causes show:
# the root cause first (an OOM explains the CrashLoopBackOff that follows it).
CAUSES: dict[str, tuple[str, str]] = {
    "OOMKilled": (
        "the container used more memory than its limit and the kernel killed it (exit 137)",
        "raise resources.limits.memory (and requests), or lower the batch size / DataLoader "
        "workers; check /dev/shm is a memory emptyDir, not the 64 MiB default",
    ),
    "GPUOutOfMemory": (
        "CUDA ran out of GPU memory",
        "lower --batch-size (keep the global batch with --grad-accum-steps), use bf16, "
        "activation checkpointing, or shard the model (FSDP/ZeRO)",
    ),
    "NaNLoss": (
        "the training loss became NaN or infinite",
        "lower the learning rate or add warmup, use bf16 instead of fp16, check the data; "
        "--on-nonfinite=rollback resumes from the last good checkpoint",
    ),
    "RendezvousTimeout": (
        "the ranks never all met at the rendezvous (torchrun c10d / MASTER_ADDR)",
        "check MASTER_ADDR resolves (headless Service name = the pod's subdomain) and "
        "MASTER_PORT is open; every pod must be scheduled: a Pending rank stalls the others",
    ),
    "NCCLTimeout": (
        "a collective (all-reduce) timed out or NCCL failed: a rank died or hung, or the "
        "network between nodes failed",
        "find the rank that stopped first (its log ends earliest); set NCCL_DEBUG=INFO; check "
        "the network interfaces (NCCL_SOCKET_IFNAME) and that all ranks run the same code",
    ),
    "Hung": (
        "a rank made no progress and the lab's watchdog ended it (exit 3)",
        "look at what the rank was doing (py-spy dump, NCCL_DEBUG); the Job retries the pod, "
        "which resumes from the last checkpoint",
    ),
    "ConfigError": (
        "the trainer rejected its configuration (exit 2)",
        "read the `error: --flag` line in the log and fix that flag in the Job's args; the "
        "podFailurePolicy fails the Job at once because a retry cannot help",
    ),
    "ImagePullBackOff": (
        "the kubelet cannot pull the container image",
        "check the image name and tag exist (`docker manifest inspect IMAGE`), the registry "
        "is reachable from the nodes, and imagePullSecrets for a private registry",
    ),
    "CrashLoopBackOff": (
        "the container keeps exiting and the kubelet waits longer before each restart",
        "read the previous container's log (`kubectl logs --previous`) and its last exit code",
    ),
    "InsufficientGPU": (
        "no node has enough free nvidia.com/gpu for the pod",
        "request fewer GPUs per pod, wait for running jobs, add GPU nodes, or queue the job "
        "with Kueue so it waits for quota instead of sitting Pending",
    ),
    "UntoleratedTaint": (
        "the GPU nodes are tainted and the pod does not tolerate the taint",
        "add the toleration, e.g. {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}",
    ),
    "QuotaExceeded": (
        "a ResourceQuota in the namespace rejected the pod",
        "lower the pod's requests, ask for more quota (`kubectl describe resourcequota`), or "
        "submit through Kueue, which queues instead of failing",
    ),
    "NotAdmitted": (
        "the Job is suspended: Kueue has not admitted it",
        "check the kueue.x-k8s.io/queue-name label names an existing LocalQueue and its "
        "ClusterQueue has quota (`kubectl get localqueue,clusterqueue`)",
    ),
    "Unschedulable": (
        "the scheduler found no node for the pod",
        "read the FailedScheduling message: node selectors, affinity, or resources",
    ),
    "DeadlineExceeded": (
        "the Job ran longer than activeDeadlineSeconds and was stopped",
        "raise spec.activeDeadlineSeconds, or make the job faster; it resumes from its "
        "checkpoint when resubmitted",
    ),
    "Preempted": (
        "the pod was preempted or evicted (DisruptionTarget): not the trainer's fault",
        "nothing to fix in the code: the podFailurePolicy ignores it and the retried pod "
        "resumes from the last checkpoint; use a higher PriorityClass to be preempted less",
    ),
    "Killed": (
        "the container was killed by SIGKILL (exit 137): the OOM killer or a crash of the node",
        "if the limit is close to the usage it was memory (raise limits.memory); otherwise "
        "check the node; the retried pod resumes from the last checkpoint",
    ),
}

_LOG_RULES: list[tuple[str, re.Pattern]] = [
    ("GPUOutOfMemory", re.compile(r"CUDA out of memory|torch\.OutOfMemoryError", re.I)),
    # A `step` line whose loss is nan/inf is found through kubecourse.contract (_nonfinite_step).
    ("NaNLoss", re.compile(r"non-finite loss|loss is (nan|inf)", re.I)),
    (
        "RendezvousTimeout",
        re.compile(
            r"RendezvousTimeoutError|RendezvousConnectionError|DistStoreError: Timed out|"
            r"Timed out after \d+ seconds waiting for clients|client socket has timed out|"
            r"rendezvous.*tim(ed|e) ?out",
            re.I,
        ),
    ),
    (
        "NCCLTimeout",
        re.compile(
            r"Watchdog caught collective operation timeout|NCCL (error|timeout)|"
            r"ProcessGroupNCCL.*[Tt]imeout|ncclSystemError|ncclInternalError|ncclRemoteError"
        ),
    ),
    ("Hung", re.compile(r"watchdog: no training progress")),
    ("ConfigError", re.compile(r"^error: --[a-z]")),
]


def _nonfinite_step(line: str) -> bool:
    """A contract `step` line (kubecourse.contract) whose loss is nan or inf."""
    record = contract.parse_line(line)
    return isinstance(record, contract.StepLine) and not math.isfinite(record.loss)


_SCHEDULING_RULES: list[tuple[str, re.Pattern]] = [
    ("InsufficientGPU", re.compile(r"Insufficient nvidia\.com/gpu")),
    ("UntoleratedTaint", re.compile(r"untolerated taint|had taint", re.I)),
    ("QuotaExceeded", re.compile(r"exceeded quota", re.I)),
]
_EXIT_CODES = {137: "Killed", 2: "ConfigError", 3: "Hung", 4: "NaNLoss"}


@dataclass
class Cause:
    """One reason the job is unhealthy, with the evidence that shows it and what to do."""

    kind: str
    evidence: list[str] = field(default_factory=list)
    pods: list[str] = field(default_factory=list)

    @property
    def meaning(self) -> str:
        return CAUSES[self.kind][0]

    @property
    def fix(self) -> str:
        return CAUSES[self.kind][1]

    def __str__(self) -> str:
        lines = [f"{self.kind}: {self.meaning}"]
        lines += [f"    evidence: {e}" for e in self.evidence[:6]]
        lines.append(f"    fix: {self.fix}")
        return "\n".join(lines)


@dataclass
class Diagnosis:
    """What diagnose() found: the causes in priority order (the root cause first)."""

    job: str
    namespace: str
    phase: str
    causes: list[Cause] = field(default_factory=list)

    @property
    def kinds(self) -> list[str]:
        return [c.kind for c in self.causes]

    @property
    def primary(self) -> Cause | None:
        return self.causes[0] if self.causes else None

    def __str__(self) -> str:
        head = f"job {self.namespace}/{self.job}: {self.phase}"
        if not self.causes:
            return head + " - no problem found"
        return head + "\n" + "\n".join(f"  {i + 1}. {c}" for i, c in enumerate(self.causes))

    def _repr_html_(self) -> str:
        return f"<pre style='font-size:12px'>{html.escape(str(self))}</pre>"


def _pod_lines(pod: dict[str, Any]) -> list[tuple[str, str]]:
    """(cause kind, evidence) from one pod's status: conditions and container states."""
    name = pod.get("metadata", {}).get("name", "?")
    status = pod.get("status") or {}
    found = []
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            message = cond.get("message", "")
            kind = next((k for k, rx in _SCHEDULING_RULES if rx.search(message)), "Unschedulable")
            found.append((kind, f"Pod/{name} PodScheduled=False {cond.get('reason')}: {message}"))
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            found.append(
                (
                    "Preempted",
                    f"Pod/{name} DisruptionTarget {cond.get('reason')}: {cond.get('message', '')}",
                )
            )
    if status.get("reason") == "Evicted":
        found.append(("Preempted", f"Pod/{name} Evicted: {status.get('message', '')}"))
    containers = (status.get("initContainerStatuses") or []) + (
        status.get("containerStatuses") or []
    )
    for cs in containers:
        where = f"Pod/{name} container {cs.get('name')}"
        for key in ("state", "lastState"):
            state = cs.get(key) or {}
            waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
            reason = waiting.get("reason", "")
            if reason in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName"):
                found.append(
                    ("ImagePullBackOff", f"{where} waiting {reason}: {waiting.get('message', '')}")
                )
            elif reason == "CrashLoopBackOff":
                found.append(
                    (
                        "CrashLoopBackOff",
                        f"{where} waiting CrashLoopBackOff, restarts {cs.get('restartCount', 0)}",
                    )
                )
            if terminated:
                code, treason = terminated.get("exitCode"), terminated.get("reason", "")
                text = f"{where} {'last ' if key == 'lastState' else ''}terminated exit code {code} reason {treason}"
                if treason in ("OOMKilled", "DeadlineExceeded"):
                    found.append((treason, text))
                elif code in _EXIT_CODES:
                    found.append((_EXIT_CODES[code], text))
    return found


def classify(
    status: JobStatus,
    pods: list[dict[str, Any]],
    events: list[Event],
    logs: dict[str, list[str]],
) -> Diagnosis:
    """The causes shown by a job's status, pods, events and log tails (pure: no API calls)."""
    found: list[tuple[str, str, str | None]] = []  # (kind, evidence, pod)
    if status.reason == "DeadlineExceeded":
        found.append(
            (
                "DeadlineExceeded",
                f"Job/{status.name} Failed DeadlineExceeded: {status.message}",
                None,
            )
        )
    if status.reason == "Suspended":  # Kueue creates Jobs suspended and unsuspends on admission
        found.append(
            ("NotAdmitted", f"Job/{status.name} is suspended (not admitted by Kueue)", None)
        )
    for pod in pods:
        name = pod.get("metadata", {}).get("name")
        found += [(k, e, name) for k, e in _pod_lines(pod)]
    for event in events:
        pod = event.obj.split("/", 1)[1] if event.obj.startswith("Pod/") else None
        text = f"event {event.type} {event.reason} {event.obj}: {event.message}"
        if event.reason == "FailedScheduling":
            kind = next(
                (k for k, rx in _SCHEDULING_RULES if rx.search(event.message)), "Unschedulable"
            )
            found.append((kind, text, pod))
        elif event.reason == "FailedCreate" and "exceeded quota" in event.message:
            found.append(("QuotaExceeded", text, pod))
        elif event.reason in ("Failed", "BackOff") and re.search(
            r"pull|ErrImagePull", event.message, re.I
        ):
            found.append(("ImagePullBackOff", text, pod))
        elif (
            event.reason == "Evicted"
            or event.reason == "Preempted"
            or "DisruptionTarget" in event.message
        ):
            found.append(("Preempted", text, pod))
        elif event.reason == "Killed" and "SIGKILL" in event.message:
            found.append(("Killed", text, pod))
        elif event.reason == "DeadlineExceeded":
            found.append(("DeadlineExceeded", text, pod))
        elif "LocalQueue" in event.message and (
            "doesn't exist" in event.message or "not found" in event.message
        ):
            found.append(("NotAdmitted", text, pod))
    for pod, lines in logs.items():
        for line in lines:
            kinds = [kind for kind, rx in _LOG_RULES if rx.search(line)]
            if _nonfinite_step(line) and "NaNLoss" not in kinds:
                kinds.append("NaNLoss")
            found += [(kind, f"log {pod}: {line.strip()[:200]}", pod) for kind in kinds]
    # A SIGKILL explained by something else on the same pod (an OOM, the SIGKILL that follows a
    # preemption's or deadline's grace period, the watchdog) is not a cause of its own.
    explained = {
        pod for k, _, pod in found if k in ("OOMKilled", "Preempted", "Hung", "DeadlineExceeded")
    }
    if any(k == "DeadlineExceeded" and pod is None for k, _, pod in found):
        explained |= {pod for _, _, pod in found}
    found = [f for f in found if not (f[0] == "Killed" and f[2] in explained)]
    by_kind: dict[str, Cause] = {}
    for kind, evidence, pod in found:
        cause = by_kind.setdefault(kind, Cause(kind))
        if evidence not in cause.evidence:
            cause.evidence.append(evidence)
        if pod and pod not in cause.pods:
            cause.pods.append(pod)
    order = list(CAUSES)
    causes = sorted(by_kind.values(), key=lambda c: order.index(c.kind))
    return Diagnosis(status.name, status.namespace, status.phase, causes)


def diagnose(
    source: Any, job: Any, namespace: str = "default", *, tail_lines: int = 200
) -> Diagnosis:
    """Collect status, pods, events and log tails of `job` and classify them.

    source: a TrainingClient or a Backend; job: a JobRef or a name."""
    from .types import JobRef

    backend = getattr(source, "backend", source)
    if not isinstance(job, JobRef):
        job = JobRef(job, getattr(source, "namespace", namespace))
    status = backend.status(job)
    pods = backend.pod_objects(job)
    events = backend.events(job)
    logs: dict[str, list[str]] = {}
    indices = sorted({p.index for p in status.pods if p.index is not None}) or [None]
    for index in indices:
        try:
            for line in backend.logs(job, index=index, tail_lines=tail_lines):
                logs.setdefault(line.pod, []).append(line.text)
        except ApiError as error:  # a pod that never started has no log: that is evidence too
            logs.setdefault(f"rank {index}", []).append(f"(no log: {error})")
    return classify(status, pods, events, logs)


def case_dir():
    """notebooks/exercises/11/cases: failures recorded as the API server shows them."""
    from .manifests import repo_root

    return repo_root() / "notebooks" / "exercises" / "11" / "cases"


def load_case(name: str) -> dict[str, Any]:
    """One recorded case: {description, expect, job, pods, events, logs}."""
    import json

    path = case_dir() / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in case_dir().glob("*.json"))
        raise FileNotFoundError(f"no case {name!r}; known: {', '.join(known)}")
    return json.loads(path.read_text())


def classify_case(case: dict[str, Any]) -> Diagnosis:
    """classify() on a recorded case, read the way the Kubernetes backend reads live objects."""
    from .backends.kubernetes import KubernetesBackend

    status = KubernetesBackend._job_status(case["job"], case["pods"])
    events = [
        Event(
            0.0,
            e["type"],
            e["reason"],
            f"{e['involved']['kind']}/{e['involved']['name']}",
            e["message"],
            e.get("count", 1),
        )
        for e in case["events"]
    ]
    return classify(status, case["pods"], events, case["logs"])
