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

import base64
import copy
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .. import constants as C
from ..errors import Conflict, JobNotFound, JobTimeout
from ..manifests import Manifest, object_id, repo_root
from ..types import Event, JobRef, JobStatus, LogLine, PodStatus
from .base import Backend
from .config import LocalBackendConfig

# Host variables a container image would also define (PATH to find python, locale, thread counts).
_PASSTHROUGH_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "VIRTUAL_ENV",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "PYTHONPATH",
    "HF_HOME",
    "HF_HUB_OFFLINE",
)
_VAR_REF = re.compile(r"\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)|\$\$")
_STEP_LINE = re.compile(r"^(?:\[rank\d+\]:)?step (\d+)/(\d+)\b")
_FIELD_LABEL = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


def expand_vars(text: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined names are replaced, `$$` escapes, unknown stay as is."""

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(replace, text)


def _exit_code(returncode: int) -> int:
    # A process killed by signal N reports -N; container runtimes report 128+N (SIGKILL -> 137).
    return 128 - returncode if returncode < 0 else returncode


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
    host_pattern: re.Pattern | None = None
    ports: dict[int, int] = field(default_factory=dict)


class LocalBackend(Backend):
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
        if len(workloads) != 1 or workloads[0]["kind"] != "Job":
            raise NotImplementedError(
                "the local backend runs exactly one batch/v1 Job per submit "
                f"(got {[object_id(o) for o in workloads]})"
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
            job.host_pattern, job.ports = self._cluster_network(objects, namespace)
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
    def preempt(self, name: str, namespace: str = "default", *, index: int | None = None) -> str:
        """What the scheduler does to a pod it preempts or drains: the pod gets the DisruptionTarget
        condition, SIGTERM, and SIGKILL after its grace period. Returns the pod's name."""
        return self._disrupt(name, namespace, index, signal.SIGTERM, reason="Preempted")

    def kill(
        self,
        name: str,
        namespace: str = "default",
        *,
        index: int | None = None,
        sig: int = signal.SIGKILL,
    ) -> str:
        """A crash: the pod's processes get `sig` (default SIGKILL, as the OOM killer sends it)
        and no DisruptionTarget, so the failure counts against backoffLimit. Returns the pod name."""
        return self._disrupt(name, namespace, index, sig, reason="")

    def _disrupt(
        self, name: str, namespace: str, index: int | None, sig: int, *, reason: str
    ) -> str:
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

    def worker_pids(
        self, name: str, namespace: str = "default", *, index: int | None = None
    ) -> dict[int, int]:
        """{global rank: pid} of the torchrun workers running in a pod (Linux: read from /proc).

        A pod's process is the torchrun agent (labs/launch.sh execs it); its children are the
        workers, each with RANK in its environment. Killing one of them (not the pod) is a worker
        crash that torchrun's elastic agent answers by restarting the worker group."""
        with self._changed:
            job = self._get(name, namespace)
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
        spec = job.manifest["spec"]
        completions = int(spec.get("completions") or 1)
        parallelism = int(spec.get("parallelism", 1) or 1)
        indexed = spec.get("completionMode") == "Indexed"
        deadline_s = spec.get("activeDeadlineSeconds")
        with self._changed:
            job.start_time = time.time()
            self._event(
                job,
                "Normal",
                "Created",
                f"Job/{job.name}",
                f"local job with {completions} pod(s) in {job.run_dir}",
            )
        timer = None
        if deadline_s:
            timer = threading.Timer(
                float(deadline_s), self._deadline_exceeded, args=(job, deadline_s)
            )
            timer.daemon = True
            timer.start()
        slots = threading.Semaphore(max(1, min(parallelism, completions)))
        workers = [
            threading.Thread(
                target=self._run_index,
                args=(job, i if indexed or completions > 1 else None, slots),
                daemon=True,
            )
            for i in range(completions)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        if timer is not None:
            timer.cancel()
        with self._changed:
            if job.phase not in C.TERMINAL_PHASES:
                if job.succeeded >= completions:
                    job.phase = C.SUCCEEDED
                    self._event(job, "Normal", "Completed", f"Job/{job.name}", "Job completed")
                else:
                    job.phase, job.reason = C.FAILED, job.reason or "Deleted"
            job.completion_time = time.time()
            self._changed.notify_all()

    def _run_index(self, job: _Job, index: int | None, slots: threading.Semaphore) -> None:
        spec = job.manifest["spec"]
        backoff_limit = int(spec.get("backoffLimit", 6))
        with slots:
            while True:
                with self._changed:
                    if job.stopping or job.phase in C.TERMINAL_PHASES:
                        return
                    pod = self._new_pod(job, index)
                self._run_pod(job, pod)
                with self._changed:
                    if pod.phase == C.SUCCEEDED:
                        job.succeeded += 1
                        self._changed.notify_all()
                        return
                    if job.stopping or job.phase in C.TERMINAL_PHASES:
                        return
                    action = self._failure_action(spec, pod)
                    if action == "FailJob":
                        self._fail(
                            job,
                            "PodFailurePolicy",
                            f"container exited with code {pod.exit_code}, "
                            "matching a FailJob rule of the podFailurePolicy",
                        )
                        return
                    if action != "Ignore":
                        job.failed += 1
                    if job.failed > backoff_limit:
                        self._fail(
                            job,
                            "BackoffLimitExceeded",
                            f"Job has reached the specified backoff limit ({backoff_limit})",
                        )
                        return
                    self._event(
                        job,
                        "Normal",
                        "Retrying",
                        f"Job/{job.name}",
                        f"pod {pod.name} failed (exit {pod.exit_code}); starting a new pod ({job.failed}/{backoff_limit} failures)",
                    )

    @staticmethod
    def _failure_action(spec: Manifest, pod: _Pod) -> str:
        """The podFailurePolicy action for a failed pod: FailJob, Ignore, Count (the default)."""
        for rule in (spec.get("podFailurePolicy") or {}).get("rules") or []:
            codes = rule.get("onExitCodes")
            if codes and pod.exit_code is not None:
                matched = pod.exit_code in codes.get("values", [])
                if (codes.get("operator") == "In") == matched:
                    return rule["action"]
            for condition in rule.get("onPodConditions") or []:
                # Locally a pod is "disrupted" only when it was terminated by a signal we sent.
                if condition.get("type") == "DisruptionTarget" and pod.reason == "Preempted":
                    return rule["action"]
        return "Count"

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
        pod_spec = job.manifest["spec"]["template"]["spec"]
        pod_dir = job.run_dir / pod.name
        try:
            mounts_by_container = self._volumes(job, pod, pod_spec, pod_dir)
            plans = [
                (c, self._container_plan(job, pod, c, mounts_by_container[c["name"]]))
                for c in (pod_spec.get("initContainers") or []) + pod_spec["containers"]
            ]
        except _ConfigError as exc:
            with self._changed:
                pod.phase, pod.reason, pod.exit_code = C.FAILED, "CreateContainerConfigError", 1
                self._event(job, "Warning", "Failed", f"Pod/{pod.name}", str(exc))
            return
        init_names = {c["name"] for c in pod_spec.get("initContainers") or []}
        log_path = job.run_dir / f"{pod.name}.log"
        with open(log_path, "a", buffering=1) as log_file:
            for container, (argv, env) in plans:
                if container["name"] not in init_names:
                    continue
                code = self._run_container(job, pod, container["name"], argv, env, log_file)
                if code != 0:
                    with self._changed:
                        pod.phase, pod.exit_code = C.FAILED, code
                        pod.reason = pod.reason or "Init:Error"
                        self._event(
                            job,
                            "Warning",
                            pod.reason,
                            f"Pod/{pod.name}",
                            f"init container {container['name']} exited with code {code}",
                        )
                        self._changed.notify_all()
                    return
            main = [(c, plan) for c, plan in plans if c["name"] not in init_names]
            # Main containers of one pod run side by side (a trainer and, say, a metrics sidecar).
            with ThreadPoolExecutor(max_workers=max(1, len(main))) as pool:
                codes = list(
                    pool.map(
                        lambda item: self._run_container(
                            job, pod, item[0]["name"], *item[1], log_file
                        ),
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

    def _run_container(
        self, job: _Job, pod: _Pod, container: str, argv: list[str], env: dict[str, str], log_file
    ) -> int:
        with self._changed:
            if job.stopping or job.phase in C.TERMINAL_PHASES:
                return 137
            self._event(
                job,
                "Normal",
                "Started",
                f"Pod/{pod.name}",
                f"Started container {container}: {' '.join(argv)}",
            )
            try:
                # A new session = a new process group, so a stop reaches torchrun's workers too.
                process = subprocess.Popen(
                    argv,
                    cwd=self.workdir,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    bufsize=1,
                    start_new_session=True,
                )
            except OSError as exc:
                pod.reason = "StartError"
                self._event(
                    job, "Warning", "Failed", f"Pod/{pod.name}", f"cannot start {argv[0]!r}: {exc}"
                )
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
                step = _STEP_LINE.match(text)
                if step:
                    job.progress = (int(step.group(1)), int(step.group(2)))
                self._changed.notify_all()
        code = _exit_code(process.wait())
        with self._changed:
            pod.processes.remove(process)
        return code

    # ---------------------------------------------------------------------------------------------
    # Pod environment, volumes and command
    # ---------------------------------------------------------------------------------------------

    def _pvc_dir(self, namespace: str, claim: str) -> Path:
        return self.state_dir / "volumes" / namespace / claim

    def _volumes(
        self, job: _Job, pod: _Pod, pod_spec: Manifest, pod_dir: Path
    ) -> dict[str, list[tuple[str, Path]]]:
        """For each container: (mountPath, local folder) pairs, longest mountPath first."""
        local: dict[str, Path | None] = {}
        for volume in pod_spec.get("volumes") or []:
            vname = volume["name"]
            if "persistentVolumeClaim" in volume:
                path = self._pvc_dir(job.namespace, volume["persistentVolumeClaim"]["claimName"])
            elif "emptyDir" in volume:
                path = pod_dir / "volumes" / vname
            elif "configMap" in volume or "secret" in volume:
                path = pod_dir / "volumes" / vname
                source_kind, ref = (
                    ("ConfigMap", volume["configMap"]["name"])
                    if "configMap" in volume
                    else ("Secret", volume["secret"]["secretName"])
                )
                data = self._lookup_data(job.namespace, source_kind, ref)
                path.mkdir(parents=True, exist_ok=True)
                for key, value in data.items():
                    (path / key).write_text(value)
            else:
                path = pod_dir / "volumes" / vname  # hostPath, CSI...: modelled as an empty folder
            path.mkdir(parents=True, exist_ok=True)
            local[vname] = path
        mounts = {}
        for container in (pod_spec.get("initContainers") or []) + pod_spec["containers"]:
            pairs = []
            for mount in container.get("volumeMounts") or []:
                if mount["mountPath"] == "/dev/shm":
                    continue  # the host's /dev/shm already is shared memory
                if mount["name"] not in local:
                    raise _ConfigError(
                        f"container {container['name']}: volumeMount {mount['name']!r} names no volume"
                    )
                target = local[mount["name"]]
                if mount.get("subPath"):
                    target = target / mount["subPath"]
                    target.mkdir(parents=True, exist_ok=True)
                pairs.append((mount["mountPath"].rstrip("/") or "/", target))
            mounts[container["name"]] = sorted(pairs, key=lambda p: -len(p[0]))
        return mounts

    def _lookup_data(self, namespace: str, kind: str, name: str) -> dict[str, str]:
        obj = self._objects.get((kind, namespace, name))
        if obj is None:
            raise _ConfigError(
                f"{kind.lower()} {name!r} not found in namespace {namespace!r}: submit it with the job"
            )
        data = dict(obj.get("stringData") or {})
        if kind == "Secret":
            data.update(
                {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
            )
        else:
            data.update(obj.get("data") or {})
        return data

    def _container_plan(
        self, job: _Job, pod: _Pod, container: Manifest, mounts: list[tuple[str, Path]]
    ) -> tuple[list[str], dict[str, str]]:
        """(argv, env) exactly as the pod would run them, with mount paths mapped to local folders."""
        env = {k: os.environ[k] for k in _PASSTHROUGH_ENV if k in os.environ}
        env.update({"PYTHONUNBUFFERED": "1", "HOSTNAME": pod.name})
        if pod.index is not None:
            env[C.ENV_COMPLETION_INDEX] = str(pod.index)
        for entry in container.get("env") or []:
            if "value" in entry:
                env[entry["name"]] = expand_vars(str(entry["value"]), env)
            elif "valueFrom" in entry:
                env[entry["name"]] = self._value_from(job, pod, entry["name"], entry["valueFrom"])
            else:
                env[entry["name"]] = ""
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                env.update(
                    self._lookup_data(job.namespace, "ConfigMap", source["configMapRef"]["name"])
                )
            if "secretRef" in source:
                env.update(self._lookup_data(job.namespace, "Secret", source["secretRef"]["name"]))
        command = [expand_vars(part, env) for part in container.get("command") or []]
        args = [expand_vars(part, env) for part in container.get("args") or []]
        if not command:
            raise _ConfigError(
                f"container {container['name']} has no command: the local backend cannot "
                "read the image's ENTRYPOINT, so the manifest must spell it out"
            )
        argv = self._local_program(command) + args
        argv = [self._map_network(job, self._map_path(a, mounts)) for a in argv]
        env = {k: self._map_network(job, self._map_path(v, mounts), k) for k, v in env.items()}
        # The image's `python`/`torchrun` are this environment's, also for scripts that call them.
        bin_dir = str(Path(self.python).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", os.defpath)
        return argv, env

    @staticmethod
    def _cluster_network(
        objects: list[Manifest], namespace: str
    ) -> tuple[re.Pattern | None, dict[int, int]]:
        """Host names that cluster DNS would give pods of this job, and a free port per Service
        port. Only headless Services (clusterIP: None) name pods; each pod here is 127.0.0.1."""
        services = [
            o
            for o in objects
            if o.get("kind") == "Service" and (o.get("spec") or {}).get("clusterIP") == "None"
        ]
        if not services:
            return None, {}
        names = "|".join(re.escape(s["metadata"]["name"]) for s in services)
        ns = re.escape(namespace)
        pattern = re.compile(
            rf"\b[a-z0-9]([-a-z0-9]*[a-z0-9])?\.(?:{names})(?:\.{ns}(?:\.svc(?:\.cluster\.local)?)?)?\b"
        )
        ports = {}
        for service in services:
            for port in (service.get("spec") or {}).get("ports") or []:
                ports.setdefault(int(port["port"]), _free_port())
        return pattern, ports

    @staticmethod
    def _map_network(job: _Job, value: str, env_name: str = "") -> str:
        if job.host_pattern is None:
            return value
        if "PORT" in env_name and value.isdigit() and int(value) in job.ports:
            return str(job.ports[int(value)])
        mapped = job.host_pattern.sub("127.0.0.1", value)
        if mapped != value:
            mapped = re.sub(
                r"127\.0\.0\.1:(\d+)",
                lambda m: f"127.0.0.1:{job.ports.get(int(m.group(1)), int(m.group(1)))}",
                mapped,
            )
        return mapped

    def _local_program(self, command: list[str]) -> list[str]:
        """The image's `python` / `torchrun` are this environment's interpreter and launcher."""
        program = command[0]
        if (
            program in ("python", "python3")
            or program.endswith("/python")
            or program.endswith("/python3")
        ):
            return [self.python, *command[1:]]
        if program == "torchrun":
            return [self.python, "-m", "torch.distributed.run", *command[1:]]
        return command

    @staticmethod
    def _map_path(value: str, mounts: list[tuple[str, Path]]) -> str:
        prefix, sep, rest = value.partition("=") if value.startswith("-") else ("", "", value)
        for mount_path, local in mounts:
            if rest == mount_path or rest.startswith(mount_path + "/"):
                rest = str(local) + rest[len(mount_path) :]
                break
        return f"{prefix}{sep}{rest}"

    def _value_from(self, job: _Job, pod: _Pod, name: str, source: Manifest) -> str:
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            simple = {
                "metadata.name": pod.name,
                "metadata.namespace": job.namespace,
                "metadata.uid": job.uid,
                "spec.nodeName": "localhost",
                "status.podIP": "127.0.0.1",
                "status.hostIP": "127.0.0.1",
                "spec.serviceAccountName": job.manifest["spec"]["template"]["spec"].get(
                    "serviceAccountName", "default"
                ),
            }
            if path in simple:
                return simple[path]
            match = _FIELD_LABEL.match(path)
            if match:
                table = pod.labels if match.group(1) == "labels" else pod.annotations
                return table.get(match.group(2), "")
            raise _ConfigError(
                f"env {name}: fieldRef {path!r} is not supported by the local backend"
            )
        if "resourceFieldRef" in source:
            return "0"
        for key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            if key in source:
                ref = source[key]
                try:
                    data = self._lookup_data(job.namespace, kind, ref["name"])
                except _ConfigError:
                    if ref.get("optional"):
                        return ""
                    raise
                if ref["key"] not in data:
                    raise _ConfigError(
                        f"env {name}: key {ref['key']!r} not found in {kind.lower()} {ref['name']!r}"
                    )
                return data[ref["key"]]
        raise _ConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")

    # ---------------------------------------------------------------------------------------------
    # Stopping, failing, bookkeeping
    # ---------------------------------------------------------------------------------------------

    def _deadline_exceeded(self, job: _Job, deadline_s: float) -> None:
        with self._changed:
            if job.phase in C.TERMINAL_PHASES:
                return
            self._fail(
                job,
                "DeadlineExceeded",
                f"Job was active longer than specified deadline ({deadline_s} s)",
            )

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
        for process in processes:
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
        if sig != signal.SIGTERM:
            return
        end = time.monotonic() + grace
        for process in processes:
            try:
                process.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

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


def _free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


class _ConfigError(Exception):
    """The pod cannot start (Kubernetes: CreateContainerConfigError)."""
