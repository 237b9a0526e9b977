"""The fake cluster's Job controller: the local backend's JobController, with Pod objects.

The decisions (backoffLimit, podFailurePolicy, Indexed completions, activeDeadlineSeconds) are
kubecourse.backends.local.controller's, shared with the local backend, not copied. This host
turns them into what kube-controller-manager writes: pods created from the template (labels,
ownerReferences, the completion-index annotation), the Job's status counters and conditions
(SuccessCriteriaMet/Complete, FailureTarget/Failed with the reason), events, and on failure the
deletion of the Job's active pods. A suspended Job (Kueue) waits until it is resumed.

Not modelled: the job-tracking finalizer (a deleted pod disappears at once, so its exit code is
lost: it counts as a failure unless it had the DisruptionTarget condition), `ready`/`terminating`
counts, `uncountedTerminatedPods`, backoff delays, CronJobs, and other workload kinds (JobSet,
PyTorchJob, TrainJob: their controllers are not part of the fake).
"""

from __future__ import annotations

import threading

from kubecourse import constants as C
from kubecourse.backends.local.controller import JobController, JobSpec, PodOutcome

from .apiserver import FakeApiServer, _condition, _job_pod, _now
from .watcher import Watcher


class JobControllers(Watcher):
    """Starts one JobController per created Job."""

    name = "job-controller"

    def handle(self, type_: str, group: str, plural: str, obj: dict) -> None:
        if (group, plural) == ("batch", "jobs") and type_ == "ADDED":
            host = _PodHost(self.api, obj, self.stopping)
            threading.Thread(target=host.run, name=f"job-{host.name}", daemon=True).start()


class _PodHost:
    """The JobHost of kubecourse.backends.local.controller over the API server's objects."""

    def __init__(self, api: FakeApiServer, job: dict, stopping: threading.Event):
        self.api, self.job, self.stopping = api, job, stopping
        self.name, self.ns = job["metadata"]["name"], job["metadata"]["namespace"]
        self.lock = threading.Condition(threading.RLock())
        self.active: set[str] = set()
        self.last_seen: dict[str, dict] = {}  # every pod of this Job as last stored (or deleted)
        api.subscribe(self._seen)

    def _seen(self, type_: str, group: str, plural: str, obj: dict) -> None:
        refs = obj.get("metadata", {}).get("ownerReferences") or []
        if plural == "pods" and any(r.get("uid") == self.job["metadata"]["uid"] for r in refs):
            self.last_seen[obj["metadata"]["name"]] = {**obj, "_deleted": type_ == "DELETED"}

    @property
    def involved(self) -> dict:
        return {
            "kind": "Job",
            "name": self.name,
            "uid": self.job["metadata"]["uid"],
            "apiVersion": "batch/v1",
        }

    def run(self) -> None:
        if not self._wait_unsuspended():
            return
        self._status({"startTime": _now(), "active": 0})
        JobController(JobSpec.from_job(self.job), self).run()

    def _wait_unsuspended(self) -> bool:
        current = self.api.get("jobs", self.name, self.ns, group="batch")
        if current is None or not current["spec"].get("suspend"):
            return current is not None
        self._status({"conditions": [_condition("Suspended", "JobSuspended", "Job suspended")]})
        self.event("Normal", "Suspended", "Job suspended")

        def resumed(api: FakeApiServer) -> bool:
            job = api.get("jobs", self.name, self.ns, group="batch")
            return self.stopping.is_set() or job is None or not job["spec"].get("suspend")

        self.api.wait_for(resumed, timeout=1e9)
        job = self.api.get("jobs", self.name, self.ns, group="batch")
        if job is None or self.stopping.is_set():
            return False
        self.job = job
        self._status(
            {"conditions": [_condition("Suspended", "JobResumed", "Job resumed", status="False")]}
        )
        self.event("Normal", "Resumed", "Job resumed")
        return True

    # -- JobHost ----------------------------------------------------------------------------------

    def create_pod(self, index: int | None) -> str:
        indexed = self.job["spec"].get("completionMode") == "Indexed" or index is not None
        pod = self.api.put_object(_job_pod(self.job, index or 0, indexed))
        name = pod["metadata"]["name"]
        self.active.add(name)
        self._status({"active": len(self.active)})
        self.event("Normal", "SuccessfulCreate", f"Created pod: {name}")
        return name

    def run_pod(self, pod: str) -> PodOutcome:
        def ended(api: FakeApiServer) -> bool:
            seen = self.last_seen.get(pod) or {}
            phase = (seen.get("status") or {}).get("phase")
            return self.stopping.is_set() or seen.get("_deleted") or phase in C.TERMINAL_PHASES

        self.api.wait_for(ended, timeout=1e9)
        seen = self.last_seen.get(pod) or {}
        with self.lock:
            self.active.discard(pod)
        status = seen.get("status") or {}
        disrupted = any(
            c.get("type") == "DisruptionTarget" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        if seen.get("_deleted") and status.get("phase") not in C.TERMINAL_PHASES:
            return PodOutcome(pod, False, None, disrupted)  # deleted while it ran
        codes = [
            ((s.get("state") or {}).get("terminated") or {}).get("exitCode")
            for s in status.get("containerStatuses") or []
        ]
        failed = next((c for c in codes if c), None)
        return PodOutcome(
            pod, status.get("phase") == C.SUCCEEDED, failed if failed else 0, disrupted
        )

    def stopped(self) -> bool:
        return (
            self.stopping.is_set()
            or self.api.get("jobs", self.name, self.ns, group="batch") is None
        )

    def counts(self, succeeded: int, failed: int) -> None:
        self._status(
            {
                "succeeded": succeeded or None,
                "failed": failed or None,
                "active": len(self.active) or None,
            }
        )

    def event(self, type_: str, reason: str, message: str) -> None:
        self.api.add_event(
            self.ns, self.involved, reason, message, type=type_, component="job-controller"
        )

    def finish(self, phase: str, reason: str, message: str) -> None:
        if reason == "Deleted":
            return
        now = _now()
        current = self.api.get("jobs", self.name, self.ns, group="batch")
        if current is None:
            return
        conditions = list((current.get("status") or {}).get("conditions") or [])
        if phase == C.SUCCEEDED:
            text = "Reached expected number of succeeded pods"
            conditions += [
                _condition("SuccessCriteriaMet", "CompletionsReached", text, now=now),
                _condition("Complete", "CompletionsReached", text, now=now),
            ]
            self._status({"conditions": conditions, "completionTime": now, "active": None})
            self.event("Normal", "Completed", "Job completed")
            return
        conditions += [
            _condition("FailureTarget", reason, message, now=now),
            _condition("Failed", reason, message, now=now),
        ]
        self._status({"conditions": conditions, "active": None})
        self.event("Warning", reason, message)
        for pod in list(self.active):  # the controller deletes the failed Job's running pods
            threading.Thread(target=self._delete_pod, args=(pod,), daemon=True).start()

    def _delete_pod(self, pod: str) -> None:
        from .apiserver import _resource, _Target

        target = _Target(_resource("", "pods"), "v1", self.ns, pod, None)
        try:
            self.api._api_delete(target, {}, {}, dry_run=False)
        except Exception:  # already gone
            pass

    def _status(self, patch: dict) -> None:
        try:
            self.api.patch_status("jobs", self.name, patch, self.ns, group="batch")
        except KeyError:
            pass  # the Job was deleted
