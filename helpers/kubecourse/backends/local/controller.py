"""The Job controller: batch/v1 Job semantics, independent of where a pod runs.

`JobController` makes a Job's pods through a `JobHost` (the local backend: processes; the fake
cluster in tests/fakes: Pod objects a kubelet runs) and decides what a pod's end means:

  * `completions` pods must succeed, at most `parallelism` at a time; Indexed Jobs give each pod
    its completion index and retry a failed index with the same index;
  * a failed pod counts against `backoffLimit` (the Job fails with BackoffLimitExceeded once
    failures exceed it), unless a `podFailurePolicy` rule says otherwise: `FailJob` on a matching
    exit code fails the Job at once (reason PodFailurePolicy), `Ignore` (exit codes or the
    DisruptionTarget condition of a preempted/evicted pod) retries without counting;
  * `activeDeadlineSeconds` fails the whole Job (DeadlineExceeded) and stops its pods.

Not modelled: backoff delays between retries, `backoffLimitPerIndex`, `successPolicy`,
`podReplacementPolicy` (a replacement starts once the failed pod has terminated), suspend (the
fake cluster's host waits for it before calling run()).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ... import constants as C
from ...manifests import Manifest


@dataclass(frozen=True)
class JobSpec:
    """The fields of a Job's spec the controller acts on."""

    completions: int = 1
    parallelism: int = 1
    indexed: bool = False
    backoff_limit: int = 6
    deadline_s: float | None = None
    rules: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_job(cls, job: Manifest) -> JobSpec:
        spec = job.get("spec") or {}
        deadline = spec.get("activeDeadlineSeconds")
        return cls(
            completions=int(spec.get("completions") or 1),
            parallelism=int(spec.get("parallelism", 1) or 1),
            indexed=spec.get("completionMode") == "Indexed",
            backoff_limit=int(spec.get("backoffLimit", 6)),
            deadline_s=float(deadline) if deadline else None,
            rules=list((spec.get("podFailurePolicy") or {}).get("rules") or []),
        )

    def indices(self) -> list[int | None]:
        """One entry per completion: its index (Indexed, or several completions), else None."""
        numbered = self.indexed or self.completions > 1
        return [i if numbered else None for i in range(self.completions)]


@dataclass(frozen=True)
class PodOutcome:
    """How a pod ended, as the controller sees it."""

    pod: str
    succeeded: bool
    exit_code: int | None = None
    disrupted: bool = False  # the DisruptionTarget condition (preempted, evicted, drained)


def failure_action(rules: list[dict[str, Any]], outcome: PodOutcome) -> str:
    """The podFailurePolicy action for a failed pod: FailJob, Ignore, or Count (the default)."""
    for rule in rules:
        codes = rule.get("onExitCodes")
        if codes and outcome.exit_code is not None:
            matched = outcome.exit_code in codes.get("values", [])
            if (codes.get("operator") == "In") == matched:
                return rule["action"]
        for condition in rule.get("onPodConditions") or []:
            if condition.get("type") == "DisruptionTarget" and outcome.disrupted:
                return rule["action"]
    return "Count"


class JobHost(Protocol):
    """Where the controller's pods run. `lock` guards the host's state; the controller holds it
    while it calls everything except run_pod (which blocks until the pod has ended)."""

    lock: threading.Condition

    def create_pod(self, index: int | None) -> Hashable: ...

    def run_pod(self, pod: Hashable) -> PodOutcome: ...

    def stopped(self) -> bool: ...

    def counts(self, succeeded: int, failed: int) -> None: ...

    def event(self, type_: str, reason: str, message: str) -> None: ...

    def finish(self, phase: str, reason: str, message: str) -> None: ...


class JobController:
    """Runs one Job to its end through a host (see the module docstring)."""

    def __init__(self, spec: JobSpec, host: JobHost):
        self.spec = spec
        self.host = host
        self.succeeded = 0
        self.failed = 0
        self.done = False

    def run(self) -> None:
        """Block until every completion succeeded, the Job failed, or the host stopped it."""
        spec = self.spec
        timer = None
        if spec.deadline_s:
            timer = threading.Timer(spec.deadline_s, self._deadline_exceeded)
            timer.daemon = True
            timer.start()
        slots = threading.Semaphore(max(1, min(spec.parallelism, spec.completions)))
        workers = [
            threading.Thread(target=self._run_index, args=(index, slots), daemon=True)
            for index in spec.indices()
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        if timer is not None:
            timer.cancel()
        with self.host.lock:
            if self.done:
                return
            self.done = True
            if self.succeeded >= spec.completions:
                self.host.finish(C.SUCCEEDED, "Completed", "Job completed")
            else:
                self.host.finish(C.FAILED, "Deleted", "the job was deleted while it ran")

    def fail(self, reason: str, message: str) -> None:
        """Fail the Job now (the host stops its pods); idempotent. Call with the lock held."""
        if self.done:
            return
        self.done = True
        self.host.finish(C.FAILED, reason, message)

    def _deadline_exceeded(self) -> None:
        with self.host.lock:
            message = f"Job was active longer than specified deadline ({self.spec.deadline_s:g} s)"
            self.fail("DeadlineExceeded", message)

    def _run_index(self, index: int | None, slots: threading.Semaphore) -> None:
        with slots:
            while True:
                with self.host.lock:
                    if self.done or self.host.stopped():
                        return
                    pod = self.host.create_pod(index)
                outcome = self.host.run_pod(pod)
                with self.host.lock:
                    if self._after(outcome):
                        return

    def _after(self, outcome: PodOutcome) -> bool:
        """Account for an ended pod; True when this index needs no further pod."""
        if outcome.succeeded:
            self.succeeded += 1
            self.host.counts(self.succeeded, self.failed)
            return True
        if self.done or self.host.stopped():
            return True
        action = failure_action(self.spec.rules, outcome)
        if action == "FailJob":
            self.fail(
                "PodFailurePolicy",
                f"container exited with code {outcome.exit_code}, "
                "matching a FailJob rule of the podFailurePolicy",
            )
            return True
        if action != "Ignore":
            self.failed += 1
            self.host.counts(self.succeeded, self.failed)
        limit = self.spec.backoff_limit
        if self.failed > limit:
            self.fail(
                "BackoffLimitExceeded", f"Job has reached the specified backoff limit ({limit})"
            )
            return True
        self.host.event(
            "Normal",
            "Retrying",
            f"pod {outcome.pod} failed (exit {outcome.exit_code}); starting a new pod "
            f"({self.failed}/{limit} failures)",
        )
        return False
