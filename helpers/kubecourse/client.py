"""The facade the notebooks call: one client, the same verbs on every backend.

    client = TrainingClient()                      # local backend (default): no cluster needed
    client = TrainingClient(backend="kubernetes")  # the cluster in $KUBECONFIG
    client = TrainingClient(backend=KubernetesBackendConfig(context="kind-course"))  # typed config
    job = client.submit(render("01", name="my-run"))
    client.wait(job); client.logs(job); client.events(job); client.delete(job)

Every call validates what it sends (nothing invalid reaches a backend), can print its kubectl twin,
and answers in the shared types of kubecourse.types. The facade never branches on the backend.
"""

from __future__ import annotations

import copy
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import constants as C
from . import display
from .backends.base import Backend
from .backends.config import CONFIGS, BackendConfig
from .context import resolve_namespace
from .errors import Finding, JobFailed, ManifestError, OptionError
from .manifests import Manifest, object_id, repo_root, workload
from .progress import JobBar
from .types import Event, JobRef, JobStatus, LogLine
from .validation import Report, validate

BACKENDS = tuple(CONFIGS)


def make_backend(backend: str | BackendConfig | Backend = "local") -> Backend:
    """A backend from its name ("local", "kubernetes": default settings), a typed config
    (LocalBackendConfig, KubernetesBackendConfig) or an existing Backend instance."""
    if isinstance(backend, Backend):
        return backend
    if isinstance(backend, BackendConfig):
        return backend.create()
    if isinstance(backend, str) and backend in CONFIGS:
        return CONFIGS[backend]().create()
    raise OptionError(
        "backend",
        f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}, "
        "a backend config (kubecourse.backends.config) or a Backend instance",
    )


class TrainingClient:
    """Submit, follow and clean up training jobs on a backend.

    show_kubectl: print the equivalent kubectl command before each call (on by default: the
    notebooks teach kubectl alongside the helpers).
    """

    def __init__(
        self,
        backend: str | BackendConfig | Backend = "local",
        *,
        namespace: str = "default",
        show_kubectl: bool = True,
        policy: bool = True,
        rendered_dir: str | Path | None = None,
    ):
        self.backend = make_backend(backend)
        # "": $KUBECOURSE_NAMESPACE, else the kubeconfig context, else the course namespace
        self.namespace = namespace or resolve_namespace()
        self.show_kubectl = show_kubectl
        self._twins_shown: tuple[object, set[str]] = (None, set())
        self.policy = policy
        state = os.environ.get(C.LOCAL_STATE_DIR_ENV) or repo_root() / C.LOCAL_STATE_DIR
        self.rendered_dir = Path(rendered_dir) if rendered_dir else Path(state) / "rendered"
        # The refs this client submitted, so a job named by a plain string keeps its kind.
        self._submitted: dict[tuple[str, str], JobRef] = {}

    # ---------------------------------------------------------------------------------------------

    def _twin(self, verb: str, ref: JobRef | None = None, **kwargs) -> None:
        """Print the kubectl command of a call, once per notebook cell (a polling loop calls
        status() many times; its twin is one command to type)."""
        if not self.show_kubectl:
            return
        name, ns = (ref.name, ref.namespace) if ref else ("", self.namespace)
        command = display.kubectl(verb, name, ns, **kwargs)
        cell = display.current_cell()
        seen_in, seen = self._twins_shown
        if cell is None:  # outside a notebook: leave out only an immediate repeat
            if seen_in is None and seen == {command}:
                return
            self._twins_shown = (None, {command})
        else:
            seen = seen if seen_in == cell else set()
            if command in seen:
                return
            self._twins_shown = (cell, seen | {command})
        print("$", command)

    def _ref(self, job: JobRef | str) -> JobRef:
        """A JobRef as given; a name is the job of that name this client submitted (its kind
        known), else a batch/v1 Job in the client's namespace."""
        if isinstance(job, JobRef):
            return job
        return self._submitted.get((self.namespace, job)) or JobRef(job, self.namespace)

    # ---------------------------------------------------------------------------------------------
    # Verbs
    # ---------------------------------------------------------------------------------------------

    def validate(self, objects: list[Manifest]) -> Report:
        """Schema, CRD and policy checks (see kubecourse.validation); never raises on findings."""
        return validate(objects, policy=self.policy)

    def submit(self, objects: list[Manifest], *, dry_run: bool = False) -> JobRef:
        """Validate, then create the objects on the backend. Raises ManifestError naming each bad field."""
        if not isinstance(objects, list) or not objects:
            raise ManifestError(
                Finding("submit", "objects", "submit() needs a non-empty list of manifests "
                        "(see render())", "option"),
                summary="nothing to submit",
            )  # fmt: skip
        objects = copy.deepcopy(objects)  # the caller's dicts stay as they were
        for obj in objects:
            if isinstance(obj, dict):
                obj.setdefault("metadata", {})
                if obj.get("kind") not in (
                    "Namespace",
                    "ClusterRole",
                    "ClusterRoleBinding",
                    "PriorityClass",
                ):
                    obj["metadata"].setdefault("namespace", self.namespace)
        report = self.validate(objects)
        report.raise_for_findings()
        if self.backend.runs_images:
            from .policy import image_warnings

            for warning in image_warnings(objects):
                print(f"warning: {warning.obj}: {warning.field}: {warning.message}")
        for reason in report.skipped:
            print(f"note: {reason}")
        target = workload(objects)
        path = (
            self.rendered_dir
            / f"{target['metadata']['namespace']}-{target['metadata']['name']}.yaml"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(display.to_yaml(objects))
        ref = JobRef(target["metadata"]["name"], target["metadata"]["namespace"], target["kind"])
        self._twin(
            "submit",
            ref,
            path=str(path.relative_to(repo_root()) if path.is_relative_to(repo_root()) else path),
            dry_run=dry_run,
        )
        created = self.backend.submit(objects, dry_run=dry_run)
        if dry_run:
            print(
                f"validated (dry run): {', '.join(object_id(o) for o in objects)} "
                f"[{self.backend.name} backend]"
            )
        else:
            self._submitted[(created.namespace, created.name)] = created
            made = ", ".join(created.created) or ", ".join(object_id(o) for o in objects)
            print(f"created: {made} [{self.backend.name} backend]")
            if created.reused:
                print(f"reused (existed already, left as it was): {', '.join(created.reused)}")
        return created

    def status(self, job: JobRef | str) -> JobStatus:
        ref = self._ref(job)
        self._twin("status", ref)
        return self.backend.status(ref)

    def wait(
        self,
        job: JobRef | str,
        *,
        timeout_s: float = 900,
        progress: bool = True,
        raise_on_failure: bool = False,
    ) -> JobStatus:
        """Block until the job ends (progress bar in notebooks); JobTimeout after timeout_s."""
        ref = self._ref(job)
        self._twin("wait", ref, timeout_s=timeout_s)
        bar = JobBar(ref.name) if progress else None
        final = None

        def on_update(status: JobStatus) -> None:
            if bar is not None:
                bar.update(status, self.backend.progress(ref))

        try:
            final = self.backend.wait(ref, timeout_s=timeout_s, on_update=on_update)
        finally:
            if bar is not None:
                bar.finish(final)
        print(display.status_view(final))
        if raise_on_failure and final.phase != "Succeeded":
            raise JobFailed(
                f"job {ref.namespace}/{ref.name} failed: {final.reason} {final.message}".strip()
            )
        return final

    def logs(
        self,
        job: JobRef | str,
        *,
        follow: bool = False,
        rank: int | None = None,
        tail_lines: int | None = None,
        echo: bool = True,
    ) -> list[LogLine]:
        """Log lines of every rank (or one), prefixed with the rank; printed as they arrive when echo."""
        ref = self._ref(job)
        self._twin("logs", ref, follow=follow, index=rank)
        lines = []
        for line in self.iter_logs(ref, follow=follow, rank=rank, tail_lines=tail_lines):
            lines.append(line)
            if echo:
                print(line.prefixed(), flush=True)
        return lines

    def iter_logs(
        self,
        job: JobRef | str,
        *,
        follow: bool = False,
        rank: int | None = None,
        tail_lines: int | None = None,
    ) -> Iterator[LogLine]:
        """Like logs() but a generator; following several ranks merges them as lines arrive."""
        ref = self._ref(job)
        if not follow or rank is not None:
            yield from self.backend.logs(ref, follow=follow, index=rank, tail_lines=tail_lines)
            return
        indices = sorted({p.index for p in self.backend.status(ref).pods if p.index is not None})
        if len(indices) <= 1:
            yield from self.backend.logs(ref, follow=True, tail_lines=tail_lines)
            return
        merged: queue.Queue = queue.Queue()
        done = object()

        def pump(index: int) -> None:
            try:
                for line in self.backend.logs(ref, follow=True, index=index, tail_lines=tail_lines):
                    merged.put(line)
            except Exception as error:  # noqa: BLE001 - handed to the consumer, raised there
                merged.put(error)
            finally:
                merged.put(done)

        for index in indices:
            threading.Thread(target=pump, args=(index,), daemon=True).start()
        remaining = len(indices)
        while remaining:
            item = merged.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item

    def events(self, job: JobRef | str) -> list[Event]:
        ref = self._ref(job)
        self._twin("events", ref)
        return self.backend.events(ref)

    def diagnose(self, job: JobRef | str, *, tail_lines: int = 200):
        """Why the job is unhealthy: causes with evidence and fixes (kubecourse.diagnose)."""
        from .diagnose import diagnose

        ref = self._ref(job)
        self._twin("diagnose", ref)
        return diagnose(self.backend, ref, tail_lines=tail_lines)

    # Outputs, volumes and disruptions: the same verbs and answers on every backend
    # (kubecourse.backends.outputs says where each comes from).

    def result(self, job: JobRef | str) -> dict[str, Any] | None:
        """What the lab wrote to result.json (from its final `result` log line); None if unfinished."""
        ref = self._ref(job)
        self._twin("result", ref)
        return self.backend.result(ref)

    def metrics(self, job: JobRef | str) -> list[dict[str, Any]]:
        """The records of the job's metrics.jsonl, on the volume its --out-dir lies on."""
        ref = self._ref(job)
        self._twin("metrics", ref)
        return self.backend.metrics(ref)

    def read_volume(self, claim: str, path: str, *, namespace: str | None = None) -> bytes | None:
        """One file of a PVC (path relative to the claim's root); None if it does not exist."""
        return self.backend.read_volume(claim, namespace or self.namespace, path)

    def list_volume(
        self, claim: str, subpath: str = "", *, namespace: str | None = None
    ) -> list[str]:
        """The files under subpath of a PVC, relative to subpath, sorted."""
        return self.backend.list_volume(claim, namespace or self.namespace, subpath)

    def reset_volume(self, claim: str, subpath: str = "", *, namespace: str | None = None) -> None:
        """Empty subpath of a PVC (a lesson starts from no checkpoints): a PVC outlives jobs."""
        print(f"reset volume {claim}:/{subpath.strip('/')}")
        self.backend.reset_volume(claim, namespace or self.namespace, subpath)

    def kill(self, job: JobRef | str, *, index: int | None = None) -> str:
        """Crash a running pod of the job (SIGKILL, no DisruptionTarget): counts as a failure."""
        ref = self._ref(job)
        self._twin("kill", ref, index=index)
        return self.backend.kill(ref, index=index)

    def preempt(self, job: JobRef | str, *, index: int | None = None) -> str:
        """Evict a running pod (DisruptionTarget, SIGTERM, grace period); returns the pod's name."""
        ref = self._ref(job)
        self._twin("preempt", ref, index=index)
        return self.backend.preempt(ref, index=index)

    def kill_worker(
        self, job: JobRef | str, *, rank: int | None = None, index: int | None = None
    ) -> dict[str, Any]:
        """SIGKILL one torchrun worker process (not the pod): {"rank": r, "pid": p}."""
        ref = self._ref(job)
        self._twin("kill-worker", ref, index=index)
        return self.backend.kill_worker(ref, rank=rank, index=index)

    def delete(self, job: JobRef | str, *, missing_ok: bool = False, volumes: bool = False) -> None:
        """Stop the job and remove it with its pods and what its submit created, except PVCs
        (their data stays; volumes=True removes them too). A job that is not there raises
        NotFound, as `kubectl delete` does, unless missing_ok=True."""
        ref = self._ref(job)
        self._twin("delete", ref)
        self.backend.delete(ref, missing_ok=missing_ok, volumes=volumes)
        self._submitted.pop((ref.namespace, ref.name), None)

    # Plain objects that are not a job (the workshop's namespaces, quotas, queues, RBAC).
    def apply_objects(self, objects: list[Manifest], *, dry_run: bool = False) -> list[str]:
        """Create each object; one result per object: "created", "exists" or "dry run"."""
        return self.backend.apply_objects(objects, dry_run=dry_run)

    def delete_objects(self, objects: list[Manifest]) -> list[str]:
        """Delete each object (idempotent); one result per object: "deleted" or "absent"."""
        return self.backend.delete_objects(objects)

    def get_objects(self, objects: list[Manifest]) -> list[Manifest | None]:
        """The stored version of each object, None where it does not exist."""
        return self.backend.get_objects(objects)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> TrainingClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
