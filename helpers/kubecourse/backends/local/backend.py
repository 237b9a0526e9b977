"""Local backend: a Job's pods as local processes, with the environment the pods would get.

The command, args and env come from the same rendered pod template a cluster would run; Kubernetes
semantics that matter to training are modelled (see docs/design.md for what is not):
  * `$(VAR)` expansion in command/args/env, downward-API `fieldRef`s, Secret/ConfigMap `keyRef`s;
  * init containers run in order before the main container; exit codes become pod phases;
  * volumes are folders: a PVC is `.course/volumes/<namespace>/<claim>` and outlives the job, an
    emptyDir lives with the pod, and every arg/env value under a mountPath is rewritten to it;
  * Indexed Jobs get JOB_COMPLETION_INDEX; completions run in parallel up to `parallelism`;
  * `backoffLimit` retries failed pods (new pod name, same index), `podFailurePolicy` exit-code and
    DisruptionTarget rules, `activeDeadlineSeconds` kills the whole job (DeadlineExceeded);
  * stopping sends SIGTERM to the whole process group, then SIGKILL after the grace period;
  * `preempt()` (DisruptionTarget + SIGTERM + grace) and `kill()` (a crash) disrupt a running pod;
    `worker_pids()` finds the torchrun workers inside a pod, to crash one of them alone;
  * cluster DNS and pod networking, for multi-node jobs: every pod is 127.0.0.1, so a pod host name
    under a headless Service submitted with the job (`<pod>.<service>[.<ns>.svc.cluster.local]`,
    the pods' `subdomain`) is rewritten to 127.0.0.1 in args and env. A pod has its own network
    namespace, loopback does not: each Service port is mapped to a free local port per job (in
    `host:port` values and in env variables named *PORT* that equal the Service port), so two
    jobs that both rendezvous on port 29500 in the cluster do not collide here.
"""

from __future__ import annotations

import copy
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ... import constants as C
from ... import contract
from ...errors import Conflict, JobNotFound, JobTimeout
from ...manifests import Manifest, object_id, repo_root
from ...types import Event, JobRef, JobStatus, LogLine, PodStatus
from ..base import Backend
from ..config import LocalBackendConfig
from ..outputs import JobOutputs
from . import runtime
from .controller import JobController, JobSpec, PodOutcome
from .plan import (
    ContainerPlan,
    Network,
    PodConfigError,
    PodContext,
    host_env,
    materialize,
    plan_pod,
    pvc_dir,
)


@dataclass
class _Pod:
    name: str
    index: int | None
    labels: dict[str, str]
    annotations: dict[str, str]
    phase: str = C.PENDING
    exit_code: int | None = None
    reason: str = ""
    processes: list[subprocess.Popen] = field(default_factory=list)
    uid: str = field(default_factory=lambda: secrets.token_hex(8))

    def status(self) -> PodStatus:
        return PodStatus(self.name, self.index, self.phase, self.exit_code, self.reason)


@dataclass
class _Job:
    manifest: Manifest
    name: str
    namespace: str
    run_dir: Path
    uid: str
    phase: str = C.PENDING
    reason: str = ""
    message: str = ""
    succeeded: int = 0
    failed: int = 0
    pods: list[_Pod] = field(default_factory=list)
    lines: list[LogLine] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    progress: tuple[int, int] | None = None
    start_time: float | None = None
    completion_time: float | None = None
    stopping: bool = False
    thread: threading.Thread | None = None
    # Cluster DNS and ports as seen from this job's pods (see the module docstring).
    network: Network = field(default_factory=Network)


class LocalBackend(Backend, JobOutputs):
    """Runs Jobs as local processes in the repository (the pod's working directory)."""

    name = "local"

    def __init__(self, config: LocalBackendConfig | None = None):
        config = config or LocalBackendConfig()
        self.config = config
        self.workdir = Path(config.workdir) if config.workdir else repo_root()
        state_dir = config.state_dir or os.environ.get(C.LOCAL_STATE_DIR_ENV)
        self.state_dir = Path(state_dir) if state_dir else self.workdir / C.LOCAL_STATE_DIR
        self.python = config.python
        self.max_grace_s = (
            config.max_grace_s  # cap on terminationGracePeriodSeconds so notebooks stay snappy
        )
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._objects: dict[tuple[str, str, str], Manifest] = {}
        self._changed = threading.Condition(threading.RLock())

    # ---------------------------------------------------------------------------------------------
    # Backend verbs
    # ---------------------------------------------------------------------------------------------

    def submit(self, objects: list[Manifest], *, dry_run: bool = False) -> JobRef:
        workloads = [o for o in objects if o.get("kind") in C.WORKLOAD_KINDS]
        unsupported = [
            o for o in workloads if (o.get("kind"), o.get("apiVersion")) != ("Job", "batch/v1")
        ]
        if unsupported:  # never a silent no-op: a JobSet, PyTorchJob, TrainJob or Volcano Job
            found = ", ".join(f"{o.get('apiVersion')} {object_id(o)}" for o in unsupported)
            raise NotImplementedError(
                f"the local backend runs batch/v1 Jobs only, not {found}: submit it with "
                'backend="kubernetes" to a cluster that has its controller, or render the Job '
                "variant (multinode.render_variant('Job', spec))"
            )
        if len(workloads) != 1:
            raise NotImplementedError(
                "the local backend runs exactly one batch/v1 Job per submit "
                f"(got {[object_id(o) for o in workloads] or 'none'})"
            )
        job_manifest = workloads[0]
        name = job_manifest["metadata"]["name"]
        namespace = job_manifest["metadata"].get("namespace", "default")
        with self._changed:
            existing = self._jobs.get((namespace, name))
            if existing is not None:
                raise Conflict(
                    f'jobs.batch "{name}" already exists in namespace {namespace!r}; delete it first',
                    reason="AlreadyExists",
                )
            if dry_run:
                return JobRef(name, namespace, "Job", dry_run=True)
            created, reused = [], []
            for obj in objects:
                if obj is not job_manifest:
                    ns = obj.get("metadata", {}).get("namespace", namespace)
                    key = (obj["kind"], ns, obj["metadata"]["name"])
                    (reused if key in self._objects else created).append(object_id(obj))
                    self._objects[key] = copy.deepcopy(obj)
                    if obj["kind"] == "PersistentVolumeClaim":
                        self._pvc_dir(ns, obj["metadata"]["name"]).mkdir(
                            parents=True, exist_ok=True
                        )
            run_dir = self.state_dir / "runs" / namespace / name
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
            job = _Job(copy.deepcopy(job_manifest), name, namespace, run_dir, secrets.token_hex(8))
            job.network = Network.for_services(objects, namespace)
            self._jobs[(namespace, name)] = job
            job.thread = threading.Thread(
                target=self._run_job, args=(job,), name=f"local-job-{name}", daemon=True
            )
            job.thread.start()
        created.append(object_id(job_manifest))
        return JobRef(name, namespace, "Job", created=tuple(created), reused=tuple(reused))

    def status(self, ref: JobRef) -> JobStatus:
        with self._changed:
            return self._snapshot(self._get(ref.name, ref.namespace))

    def wait(
        self,
        ref: JobRef,
        *,
        timeout_s: float,
        on_update: Callable[[JobStatus], None] | None = None,
    ) -> JobStatus:
        name, namespace = ref.name, ref.namespace
        deadline = time.monotonic() + timeout_s
        last = None
        with self._changed:
            while True:
                job = self._get(name, namespace)
                snap = self._snapshot(job)
                key = (
                    snap.phase,
                    snap.succeeded,
                    snap.failed,
                    [p.phase for p in snap.pods],
                    job.progress,
                    len(job.lines),
                )
                if on_update is not None and key != last:
                    on_update(snap)
                last = key
                if snap.done:
                    return snap
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise JobTimeout(
                        f"job {namespace}/{name} still {snap.phase} after {timeout_s:.0f} s"
                    )
                # Woken by every state change and log line; the timeout only bounds the total wait.
                self._changed.wait(remaining)

    def logs(
        self,
        ref: JobRef,
        *,
        follow: bool = False,
        index: int | None = None,
        tail_lines: int | None = None,
    ) -> Iterator[LogLine]:
        job = self._get_locked(ref.name, ref.namespace)
        position = 0
        if tail_lines is not None:
            with self._changed:
                matching = [
                    i for i, line in enumerate(job.lines) if index is None or line.index == index
                ]
                position = (
                    matching[-tail_lines]
                    if 0 < tail_lines <= len(matching)
                    else (len(job.lines) if tail_lines == 0 else 0)
                )
        while True:
            with self._changed:
                while position >= len(job.lines) and follow and job.phase not in C.TERMINAL_PHASES:
                    self._changed.wait()
                batch = job.lines[position:]
                position = len(job.lines)
                finished = job.phase in C.TERMINAL_PHASES
            for line in batch:
                if index is None or line.index == index:
                    yield line
            if not follow or (finished and position >= len(job.lines)):
                return

    def events(self, ref: JobRef) -> list[Event]:
        with self._changed:
            return list(self._get(ref.name, ref.namespace).events)

    def delete(self, ref: JobRef, *, missing_ok: bool = False, volumes: bool = False) -> None:
        name, namespace = ref.name, ref.namespace
        with self._changed:
            job = self._jobs.get((namespace, name))
            if job is None:
                if missing_ok:
                    return
                self._get(name, namespace)  # raises JobNotFound (a NotFound, as kubectl says)
            job.stopping = True
        self._stop_processes(job)
        if job.thread is not None:
            job.thread.join(timeout=self.max_grace_s + 5)
        with self._changed:
            self._jobs.pop((namespace, name), None)
            if volumes:  # the claims the job's pods mount: their folders and records go
                for volume in job.manifest["spec"]["template"]["spec"].get("volumes") or []:
                    claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
                    if claim:
                        self._objects.pop(("PersistentVolumeClaim", namespace, claim), None)
                        shutil.rmtree(self._pvc_dir(namespace, claim), ignore_errors=True)
            self._changed.notify_all()

    def progress(self, ref: JobRef) -> tuple[int, int] | None:
        with self._changed:
            return self._get(ref.name, ref.namespace).progress

    def close(self) -> None:
        for namespace, name in list(self._jobs):
            self.delete(JobRef(name, namespace), missing_ok=True)

    # Disruptions, as the cluster deals them out (lessons on preemption and fault recovery).
    def preempt(self, ref: JobRef, *, index: int | None = None) -> str:
        """What the scheduler does to a pod it preempts or drains: the pod gets the DisruptionTarget
        condition, SIGTERM, and SIGKILL after its grace period. Returns the pod's name."""
        return self._disrupt(ref, index, signal.SIGTERM, reason="Preempted")

    def kill(
        self,
        ref: JobRef,
        *,
        index: int | None = None,
        sig: int = signal.SIGKILL,
    ) -> str:
        """A crash: the pod's processes get `sig` (default SIGKILL, as the OOM killer sends it)
        and no DisruptionTarget, so the failure counts against backoffLimit. Returns the pod name."""
        return self._disrupt(ref, index, sig, reason="")

    def _disrupt(self, ref: JobRef, index: int | None, sig: int, *, reason: str) -> str:
        name, namespace = ref.name, ref.namespace
        with self._changed:
            job = self._get(name, namespace)
            running = [
                p
                for p in job.pods
                if p.phase == C.RUNNING and p.processes and index in (None, p.index)
            ]
            if not running:
                raise Conflict(
                    f"job {namespace}/{name} has no running pod"
                    + (f" with completion index {index}" if index is not None else ""),
                    reason="NoRunningPod",
                )
            pod = running[0]
            pod.reason = reason or pod.reason
            message = f"sent {signal.Signals(sig).name} to pod {pod.name}"
            if reason:
                message += " (DisruptionTarget: the podFailurePolicy may ignore this failure)"
            self._event(job, "Warning", reason or "Killed", f"Pod/{pod.name}", message)
            processes = list(pod.processes)
            self._changed.notify_all()
        threading.Thread(
            target=self._signal_processes, args=(job, processes, sig), daemon=True
        ).start()
        return pod.name

    # Plain objects: kept as a record (nothing enforces a local quota, RBAC or NetworkPolicy).
    def _object_key(self, obj: Manifest) -> tuple[str, str, str]:
        namespaced = C.RESOURCES.get(obj.get("kind", ""), ("", True))[1]
        namespace = obj["metadata"].get("namespace", "default") if namespaced else ""
        return (obj["kind"], namespace, obj["metadata"]["name"])

    def apply_objects(self, objects: list[Manifest], *, dry_run: bool = False) -> list[str]:
        results = []
        with self._changed:
            for obj in objects:
                key = self._object_key(obj)
                if key in self._objects:
                    results.append("exists")
                elif dry_run:
                    results.append("dry run")
                else:
                    self._objects[key] = copy.deepcopy(obj)
                    results.append("created")
        return results

    def delete_objects(self, objects: list[Manifest]) -> list[str]:
        with self._changed:
            return [
                "deleted" if self._objects.pop(self._object_key(o), None) is not None else "absent"
                for o in objects
            ]

    def get_objects(self, objects: list[Manifest]) -> list[Manifest | None]:
        with self._changed:
            return [copy.deepcopy(self._objects.get(self._object_key(o))) for o in objects]

    def worker_pids(self, ref: JobRef, *, index: int | None = None) -> dict[int, int]:
        """{global rank: pid} of the torchrun workers running in a pod (Linux: read from /proc).

        A pod's process is the torchrun agent (labs/launch.sh execs it); its children are the
        workers, each with RANK in its environment. Killing one of them (not the pod) is a worker
        crash that torchrun's elastic agent answers by restarting the worker group."""
        with self._changed:
            job = self._get(ref.name, ref.namespace)
            roots = [
                p.pid
                for pod in job.pods
                if pod.phase == C.RUNNING and index in (None, pod.index)
                for p in pod.processes
            ]
        found: dict[int, int] = {}
        for root in roots:
            for pid in _children(root):
                rank = _environ(pid).get(C.ENV_RANK)
                if rank is not None and rank.isdigit():
                    found[int(rank)] = pid
        return dict(sorted(found.items()))

    def kill_worker(
        self,
        ref: JobRef,
        *,
        rank: int | None = None,
        index: int | None = None,
    ) -> dict:
        """SIGKILL one torchrun worker of a running pod (the highest rank when rank is None), as
        the OOM killer would: the elastic agent restarts the worker group. Returns rank and pid."""
        name, namespace = ref.name, ref.namespace
        workers = self.worker_pids(ref, index=index)
        if not workers or (rank is not None and rank not in workers):
            raise Conflict(
                f"job {namespace}/{name} has no running torchrun worker"
                + (f" with rank {rank}" if rank is not None else "")
                + f" (found ranks {sorted(workers)})",
                reason="NoRunningWorker",
            )
        victim = max(workers) if rank is None else rank
        os.kill(workers[victim], signal.SIGKILL)
        with self._changed:
            message = f"sent SIGKILL to worker rank {victim} (pid {workers[victim]})"
            self._event(self._get(name, namespace), "Warning", "Killed", f"Job/{name}", message)
        return {"rank": victim, "pid": workers[victim]}

    # Outputs and volumes (kubecourse.backends.outputs): a PVC is a folder.
    def workload_manifest(self, ref: JobRef) -> Manifest:
        with self._changed:
            return copy.deepcopy(self._get(ref.name, ref.namespace).manifest)

    def _volume_path(self, claim: str, namespace: str, path: str) -> Path:
        root = self._pvc_dir(namespace, claim).resolve()
        target = (root / path.lstrip("/")).resolve()
        if not target.is_relative_to(root):
            raise ValueError(f"path {path!r} leaves the volume {claim!r}")
        return target

    def read_volume(self, claim: str, namespace: str, path: str) -> bytes | None:
        target = self._volume_path(claim, namespace, path)
        return target.read_bytes() if target.is_file() else None

    def list_volume(self, claim: str, namespace: str, subpath: str = "") -> list[str]:
        top = self._volume_path(claim, namespace, subpath)
        return sorted(str(p.relative_to(top)) for p in top.rglob("*") if p.is_file())

    def reset_volume(self, claim: str, namespace: str, subpath: str = "") -> None:
        top = self._volume_path(claim, namespace, subpath)
        if top == self._pvc_dir(namespace, claim).resolve():
            for child in top.iterdir() if top.exists() else []:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        else:
            shutil.rmtree(top, ignore_errors=True)

    # Where the local "cluster" keeps things (shown by the notebooks).
    def pvc_dir(self, claim: str, namespace: str = "default") -> Path:
        """The folder standing in for a PersistentVolumeClaim."""
        return self._pvc_dir(namespace, claim)

    def run_dir(self, name: str, namespace: str = "default") -> Path:
        """The job's folder: one log file per pod, emptyDir volumes."""
        return self._get_locked(name, namespace).run_dir

    # ---------------------------------------------------------------------------------------------
    # The job controller
    # ---------------------------------------------------------------------------------------------

    def _run_job(self, job: _Job) -> None:
        """The shared Job controller (controller.py) with this backend's pods as processes."""
        spec = JobSpec.from_job(job.manifest)
        with self._changed:
            job.start_time = time.time()
            message = f"local job with {spec.completions} pod(s) in {job.run_dir}"
            self._event(job, "Normal", "Created", f"Job/{job.name}", message)
        JobController(spec, _LocalJobHost(self, job)).run()

    def _new_pod(self, job: _Job, index: int | None) -> _Pod:
        template_meta = (job.manifest["spec"].get("template") or {}).get("metadata") or {}
        suffix = secrets.token_hex(3)[:5]
        name = f"{job.name}-{index}-{suffix}" if index is not None else f"{job.name}-{suffix}"
        labels = dict(template_meta.get("labels") or {})
        labels.update(
            {
                C.JOB_NAME_LABEL: job.name,
                C.LEGACY_JOB_NAME_LABEL: job.name,
                "batch.kubernetes.io/controller-uid": job.uid,
                "controller-uid": job.uid,
            }
        )
        annotations = dict(template_meta.get("annotations") or {})
        if index is not None:
            labels[C.COMPLETION_INDEX_ANNOTATION] = str(index)
            annotations[C.COMPLETION_INDEX_ANNOTATION] = str(index)
        pod = _Pod(name, index, labels, annotations)
        job.pods.append(pod)
        self._event(job, "Normal", "SuccessfulCreate", f"Job/{job.name}", f"Created pod: {name}")
        self._changed.notify_all()
        return pod

    def _run_pod(self, job: _Job, pod: _Pod) -> None:
        try:
            plan = plan_pod(self._pod_manifest(job, pod), self._pod_context(job, pod))
            materialize(plan)
        except PodConfigError as exc:
            with self._changed:
                pod.phase, pod.reason, pod.exit_code = C.FAILED, "CreateContainerConfigError", 1
                self._event(job, "Warning", "Failed", f"Pod/{pod.name}", str(exc))
            return
        log_path = job.run_dir / f"{pod.name}.log"
        with open(log_path, "a", buffering=1) as log_file:
            for container in plan.init_containers:
                code = self._run_container(job, pod, container, log_file)
                if code != 0:
                    with self._changed:
                        pod.phase, pod.exit_code = C.FAILED, code
                        pod.reason = pod.reason or "Init:Error"
                        self._event(
                            job,
                            "Warning",
                            pod.reason,
                            f"Pod/{pod.name}",
                            f"init container {container.name} exited with code {code}",
                        )
                        self._changed.notify_all()
                    return
            main = plan.main_containers
            # Main containers of one pod run side by side (a trainer and, say, a metrics sidecar).
            with ThreadPoolExecutor(max_workers=max(1, len(main))) as pool:
                codes = list(
                    pool.map(
                        lambda c: self._run_container(job, pod, c, log_file),
                        main,
                    )
                )
        with self._changed:
            failed = next((code for code in codes if code != 0), None)
            if failed is None:
                pod.phase, pod.exit_code, pod.reason = C.SUCCEEDED, 0, "Completed"
            else:
                pod.phase, pod.exit_code = C.FAILED, failed
                pod.reason = pod.reason or "Error"
            self._event(
                job,
                "Normal" if failed is None else "Warning",
                pod.reason,
                f"Pod/{pod.name}",
                f"pod terminated with exit code {pod.exit_code}",
            )
            self._changed.notify_all()

    def _run_container(self, job: _Job, pod: _Pod, container: ContainerPlan, log_file) -> int:
        with self._changed:
            if job.stopping or job.phase in C.TERMINAL_PHASES:
                return 137
            self._event(
                job,
                "Normal",
                "Started",
                f"Pod/{pod.name}",
                f"Started container {container.name}: {' '.join(container.argv)}",
            )
            try:
                process = runtime.start(container, self.workdir)
            except OSError as exc:
                pod.reason = "StartError"
                message = f"cannot start {container.argv[0]!r}: {exc}"
                self._event(job, "Warning", "Failed", f"Pod/{pod.name}", message)
                return 128
            pod.processes.append(process)
            pod.phase = C.RUNNING
            if job.phase == C.PENDING:
                job.phase = C.RUNNING
            self._changed.notify_all()
        assert process.stdout is not None
        for raw in process.stdout:
            text = raw.rstrip("\n")
            log_file.write(raw)
            with self._changed:
                job.lines.append(LogLine(pod.name, pod.index, text))
                record = contract.parse_line(text)
                if isinstance(record, contract.StepLine):
                    job.progress = (record.step, record.total)
                self._changed.notify_all()
        code = runtime.exit_code(process.wait())
        with self._changed:
            pod.processes.remove(process)
        return code

    def _pvc_dir(self, namespace: str, claim: str) -> Path:
        return pvc_dir(self.state_dir / "volumes", namespace, claim)

    def _pod_manifest(self, job: _Job, pod: _Pod) -> Manifest:
        """The pod as the API server would store it: the template plus the controller's labels."""
        return {
            "metadata": {
                "name": pod.name,
                "namespace": job.namespace,
                "uid": pod.uid,
                "labels": dict(pod.labels),
                "annotations": dict(pod.annotations),
            },
            "spec": job.manifest["spec"]["template"]["spec"],
        }

    def _pod_context(self, job: _Job, pod: _Pod) -> PodContext:
        return PodContext(
            volumes_root=self.state_dir / "volumes",
            pod_dir=job.run_dir / pod.name,
            python=self.python,
            lookup=lambda kind, name: self._objects.get((kind, job.namespace, name)),
            network=job.network,
            host_env=host_env(),
        )

    # ---------------------------------------------------------------------------------------------
    # Stopping, failing, bookkeeping
    # ---------------------------------------------------------------------------------------------

    def _fail(self, job: _Job, reason: str, message: str) -> None:
        """Mark the job Failed and stop all of its processes (called with the lock held)."""
        job.phase, job.reason, job.message = C.FAILED, reason, message
        job.completion_time = time.time()
        for pod in job.pods:
            if pod.phase not in C.TERMINAL_PHASES:
                pod.phase, pod.reason = C.FAILED, reason  # its processes are being stopped below
        self._event(job, "Warning", reason, f"Job/{job.name}", message)
        self._changed.notify_all()
        threading.Thread(target=self._stop_processes, args=(job,), daemon=True).start()

    def _stop_processes(self, job: _Job) -> None:
        with self._changed:
            processes = [p for pod in job.pods for p in pod.processes]
        self._signal_processes(job, processes, signal.SIGTERM)

    def _signal_processes(self, job: _Job, processes: list[subprocess.Popen], sig: int) -> None:
        """Send `sig` to each process group; after SIGTERM, SIGKILL what outlives the grace period."""
        grace = min(
            float(
                job.manifest["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
            ),
            self.max_grace_s,
        )
        runtime.signal_groups(processes, sig, grace)

    def _event(self, job: _Job, type_: str, reason: str, obj: str, message: str) -> None:
        job.events.append(Event(time.time(), type_, reason, obj, message))

    def _get(self, name: str, namespace: str) -> _Job:
        job = self._jobs.get((namespace, name))
        if job is None:
            raise JobNotFound(
                f"no local job {namespace}/{name} (submitted jobs: {sorted(n for _, n in self._jobs)})"
            )
        return job

    def _get_locked(self, name: str, namespace: str) -> _Job:
        with self._changed:
            return self._get(name, namespace)

    @staticmethod
    def _snapshot(job: _Job) -> JobStatus:
        pods = [p.status() for p in job.pods]
        return JobStatus(
            job.name,
            job.namespace,
            job.phase,
            job.reason,
            job.message,
            job.succeeded,
            job.failed,
            sum(1 for p in job.pods if p.phase == C.RUNNING),
            pods,
            job.start_time,
            job.completion_time,
        )


class _LocalJobHost:
    """The JobHost of controller.py: pods are _Pod records run as process groups."""

    def __init__(self, backend: LocalBackend, job: _Job):
        self.backend, self.job = backend, job
        self.lock = backend._changed

    def create_pod(self, index: int | None) -> _Pod:
        return self.backend._new_pod(self.job, index)

    def run_pod(self, pod: _Pod) -> PodOutcome:
        self.backend._run_pod(self.job, pod)
        # Locally a pod is "disrupted" only when preempt() terminated it.
        return PodOutcome(
            pod.name, pod.phase == C.SUCCEEDED, pod.exit_code, disrupted=pod.reason == "Preempted"
        )

    def stopped(self) -> bool:
        return self.job.stopping or self.job.phase in C.TERMINAL_PHASES

    def counts(self, succeeded: int, failed: int) -> None:
        self.job.succeeded, self.job.failed = succeeded, failed
        self.lock.notify_all()

    def event(self, type_: str, reason: str, message: str) -> None:
        self.backend._event(self.job, type_, reason, f"Job/{self.job.name}", message)

    def finish(self, phase: str, reason: str, message: str) -> None:
        job = self.job
        if phase == C.FAILED and reason != "Deleted":
            self.backend._fail(job, reason, message)  # stops the processes
            return
        if phase == C.SUCCEEDED:
            job.phase = C.SUCCEEDED
            self.event("Normal", reason, message)
        else:
            job.phase, job.reason = C.FAILED, job.reason or reason
        job.completion_time = time.time()
        self.lock.notify_all()


def _children(pid: int) -> list[int]:
    """Direct child processes of `pid` (Linux /proc; empty elsewhere or when it has gone)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}
