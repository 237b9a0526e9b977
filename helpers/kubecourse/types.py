"""Shared result types: every backend answers with these, so the facade never branches on backend."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import constants as C


@dataclass(frozen=True)
class JobRef:
    """What submit() returns and every job verb takes: enough to find the job again.

    kind (and api_version): the workload's kind (Job, JobSet, PyTorchJob, TrainJob or a Volcano
    Job); it decides which API the backend reads and which labels find the job's pods. created / reused: the objects
    ("Kind/name") this submit created and those that existed already and were left as they were
    (a PVC of an earlier run); they do not take part in equality.
    """

    name: str
    namespace: str
    kind: str = "Job"
    dry_run: bool = False
    api_version: str = (
        ""  # "" = the kind's usual API (batch/v1 for Job); batch.volcano.sh/v1alpha1 ...
    )
    created: tuple[str, ...] = field(default=(), compare=False)
    reused: tuple[str, ...] = field(default=(), compare=False)


@dataclass
class PodStatus:
    """One pod (one "node" of a job): its rank, phase and, once terminated, exit code and reason."""

    name: str
    index: int | None  # completion index for Indexed Jobs, else None
    phase: str  # Pending | Running | Succeeded | Failed
    exit_code: int | None = None
    reason: str = ""  # Completed | Error | OOMKilled | DeadlineExceeded | ...
    restarts: int = 0


@dataclass
class JobStatus:
    """The job as a whole, in the course's one phase vocabulary (constants.PENDING ... FAILED)."""

    name: str
    namespace: str
    phase: str
    reason: str = ""  # why it ended: BackoffLimitExceeded, DeadlineExceeded, PodFailurePolicy...
    message: str = ""
    succeeded: int = 0
    failed: int = 0
    active: int = 0
    pods: list[PodStatus] = field(default_factory=list)
    start_time: float | None = None  # seconds since the epoch
    completion_time: float | None = None

    @property
    def done(self) -> bool:
        return self.phase in C.TERMINAL_PHASES

    @property
    def duration_s(self) -> float | None:
        if self.start_time is None or self.completion_time is None:
            return None
        return self.completion_time - self.start_time


@dataclass(frozen=True)
class Event:
    """A Kubernetes-style event: what happened to which object, Normal or Warning."""

    time: float
    type: str  # Normal | Warning
    reason: str
    obj: str  # "Job/cifar10-train" or "Pod/cifar10-train-0-abcde"
    message: str
    count: int = 1


@dataclass(frozen=True)
class LogLine:
    """One line of a pod's log, tagged with the pod and its rank (completion index)."""

    pod: str
    index: int | None
    text: str

    @property
    def rank(self) -> int | None:
        """The global rank of the torchrun worker that printed the line (labs/launch.sh makes
        torchrun prefix worker lines with "[rankN]:"), else None."""
        match = C.WORKER_RANK_PREFIX.match(self.text)
        return int(match.group(1)) if match else None

    def prefixed(self) -> str:
        rank = self.rank
        if rank is not None:  # several processes per pod: name the node (pod index) and the rank
            node = f"node {self.index}" if self.index is not None else self.pod
            return f"[{node} rank {rank}] {C.WORKER_RANK_PREFIX.sub('', self.text, count=1)}"
        tag = f"rank {self.index}" if self.index is not None else self.pod
        return f"[{tag}] {self.text}"
