"""The fake cluster's kubelet: runs the pods bound to its node as local processes.

Each pod goes through the local backend's pod runtime (kubecourse.backends.local.plan.plan_pod and
runtime), so a pod means the same here as on the local backend: the same argv, env, volume
folders and cluster-DNS mapping. The kubelet writes what the real one reports: Pulled/Created/
Started events, phase Pending -> Running -> Succeeded/Failed, container states with exit codes,
and the containers' output as the pod's log (served, `follow` too, by the API server). A pod that
cannot start (a missing Secret, a volumeMount of no volume) stays Pending, waiting with
CreateContainerConfigError, as on a cluster. A deleted pod's processes get SIGTERM and, after
its deletionGracePeriodSeconds (capped by max_grace_s), SIGKILL; 0 kills at once. A pod deleted
with a grace period stays Terminating (deletionTimestamp) until its containers have exited and
its final status is written; then the kubelet removes it (a delete with grace 0), as for real.

Not modelled: restartPolicy OnFailure/Always restarts, probes, image pulls (every image is
"present"), resource limits (no OOM kills), ephemeral containers, exec/attach/port-forward.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

from kubecourse.backends.local import runtime
from kubecourse.backends.local.plan import (
    Network,
    PodConfigError,
    PodContext,
    host_env,
    materialize,
    plan_pod,
)

from .apiserver import _now
from .watcher import Watcher

_PLURAL = {"Secret": "secrets", "ConfigMap": "configmaps"}


class Kubelet(Watcher):
    name = "kubelet"

    def __init__(
        self,
        api,
        node: str,
        root: Path,
        *,
        workdir: Path,
        python: str = sys.executable,
        max_grace_s: float = 10.0,
    ):
        super().__init__(api)
        self.node, self.root, self.workdir, self.python = node, Path(root), workdir, python
        self.max_grace_s = max_grace_s
        self._running: dict[tuple[str, str], list[subprocess.Popen]] = {}
        self._runs: set[tuple[str, str]] = set()  # pods whose _run thread is alive
        self._networks: dict[tuple[str, tuple[str, ...]], Network] = {}
        self._lock = threading.Lock()

    @property
    def volumes_root(self) -> Path:
        return self.root / "volumes"

    def handle(self, type_: str, group: str, plural: str, obj: dict) -> None:
        if (group, plural) != ("", "pods") or (obj.get("spec") or {}).get("nodeName") != self.node:
            return
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if type_ == "DELETED":
            self._stop(key, obj)
            return
        if obj["metadata"].get("deletionTimestamp"):  # Terminating: stop it, then remove it
            with self._lock:
                running = key in self._runs
            self._stop(key, obj)
            if not running:
                self._remove(obj)
            return
        with self._lock:
            if (
                key in self._running
                or (obj.get("status") or {}).get("phase", "Pending") != "Pending"
            ):
                return
            self._running[key] = []
            self._runs.add(key)
        threading.Thread(
            target=self._run_then_release, args=(obj,), name=f"kubelet-{key[1]}", daemon=True
        ).start()

    def _run_then_release(self, pod: dict) -> None:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        try:
            self._run(pod)
        finally:
            with self._lock:
                self._runs.discard(key)
            current = self.api.get("pods", key[1], key[0])
            if current is not None and current["metadata"].get("deletionTimestamp"):
                self._remove(current)  # its containers have exited, its status is written

    def _remove(self, pod: dict) -> None:
        """The kubelet's last word on a Terminating pod: delete it with grace 0."""
        from .apiserver import _resource, _Target

        meta = pod["metadata"]
        target = _Target(_resource("", "pods"), "v1", meta["namespace"], meta["name"], None)
        try:
            self.api._api_delete(target, {"gracePeriodSeconds": "0"}, {}, dry_run=False)
        except Exception:  # noqa: BLE001 - already gone
            pass

    # -- one pod ----------------------------------------------------------------------------------

    def _context(self, pod: dict) -> PodContext:
        ns = pod["metadata"]["namespace"]
        services = [
            s
            for s in self.api.objects("services", ns)
            if (s.get("spec") or {}).get("clusterIP") == "None"
        ]
        key = (ns, tuple(sorted(s["metadata"]["name"] for s in services)))
        if key not in self._networks:  # one port mapping for every pod behind the same Services
            self._networks[key] = Network.for_services(services, ns)
        return PodContext(
            volumes_root=self.volumes_root,
            pod_dir=self.root / "pods" / ns / pod["metadata"]["name"],
            python=self.python,
            lookup=lambda kind, name: self.api.get(_PLURAL.get(kind, kind.lower() + "s"), name, ns),
            network=self._networks[key],
            host_env=host_env(),
        )

    def _run(self, pod: dict) -> None:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        try:
            plan = plan_pod(pod, self._context(pod))
            materialize(plan)
        except PodConfigError as error:
            self._waiting(pod, "CreateContainerConfigError", str(error))
            return
        started = _now()
        for container in plan.init_containers:
            code = self._container(pod, container)
            if code != 0:  # the main containers never start; the pod fails with this code
                self._finish(
                    pod, plan, started, "Failed", {c.name: code for c in plan.main_containers}
                )
                with self._lock:
                    self._running.pop(key, None)
                return
        codes: dict[str, int] = {}
        running = {c.name: None for c in plan.main_containers}

        def run(container) -> None:
            on_start = lambda: self._status(pod, plan, started, running)  # noqa: E731
            codes[container.name] = self._container(pod, container, on_start)

        threads = [
            threading.Thread(target=run, args=(c,), daemon=True) for c in plan.main_containers
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        phase = "Succeeded" if all(code == 0 for code in codes.values()) else "Failed"
        self._finish(pod, plan, started, phase, codes)
        with self._lock:
            self._running.pop(key, None)

    def _container(self, pod: dict, container, on_start=None) -> int:
        """Run one container to its end; on_start() runs once its process exists (the pod is
        Running before the first log line is written, as on a cluster)."""
        meta = pod["metadata"]
        ns, name, key = meta["namespace"], meta["name"], (meta["namespace"], meta["name"])
        ref = _ref(pod)
        image = next(
            (c.get("image", "") for c in _all_containers(pod) if c["name"] == container.name), ""
        )
        self.api.add_event(
            ns, ref, "Pulled", f'Container image "{image}" already present on machine',
            component="kubelet",
        )  # fmt: skip
        self.api.add_event(
            ns, ref, "Created", f"Created container: {container.name}", component="kubelet"
        )
        with self._lock:
            if key not in self._running:
                return 137  # deleted before it started
            try:
                process = runtime.start(container, self.workdir)
            except OSError as error:
                message = f"failed to start {container.argv[0]!r}: {error}"
                self.api.add_event(ns, ref, "Failed", message, type="Warning", component="kubelet")
                return 128
            self._running[key].append(process)
        self.api.add_event(
            ns, ref, "Started", f"Started container {container.name}", component="kubelet"
        )
        if on_start is not None:
            on_start()
        assert process.stdout is not None
        for line in process.stdout:
            try:
                self.api.append_log(name, line, ns, container.name)
            except KeyError:
                pass  # the pod was deleted: its log went with it
        return runtime.exit_code(process.wait())

    def _stop(self, key: tuple[str, str], pod: dict) -> None:
        with self._lock:
            processes = self._running.pop(key, None)
        if not processes:
            return
        grace = float(pod["metadata"].get("deletionGracePeriodSeconds", 30))
        sig = signal.SIGTERM if grace > 0 else signal.SIGKILL
        threading.Thread(
            target=runtime.signal_groups,
            args=(processes, sig, min(grace, self.max_grace_s)),
            daemon=True,
        ).start()

    # -- status -----------------------------------------------------------------------------------

    def _waiting(self, pod: dict, reason: str, message: str) -> None:
        meta = pod["metadata"]
        statuses = [
            {"name": c["name"], "image": c.get("image", ""), "ready": False, "restartCount": 0,
             "state": {"waiting": {"reason": reason, "message": message}}}
            for c in pod["spec"].get("containers") or []
        ]  # fmt: skip
        self._patch(pod, {"phase": "Pending", "containerStatuses": statuses})
        self.api.add_event(
            meta["namespace"],
            _ref(pod),
            "Failed",
            f"Error: {message}",
            type="Warning",
            component="kubelet",
        )

    def _status(self, pod: dict, plan, started: str, codes: dict[str, int | None]) -> None:
        statuses = []
        for c in pod["spec"].get("containers") or []:
            code = codes.get(c["name"])
            if code is None:
                state = {"running": {"startedAt": started}}
            else:
                reason = "Completed" if code == 0 else "Error"
                state = {"terminated": {"exitCode": code, "reason": reason, "startedAt": started,
                                        "finishedAt": _now()}}  # fmt: skip
            statuses.append(
                {"name": c["name"], "image": c.get("image", ""), "imageID": "", "restartCount": 0,
                 "ready": code is None, "started": code is None, "state": state}
            )  # fmt: skip
        running = all(code is None for code in codes.values())
        conditions = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
            {"type": "Initialized", "status": "True", "lastTransitionTime": started},
            {"type": "ContainersReady", "status": str(running), "lastTransitionTime": _now()},
            {"type": "Ready", "status": str(running), "lastTransitionTime": _now()},
        ]
        current = self.api.get("pods", pod["metadata"]["name"], pod["metadata"]["namespace"])
        if current is None:
            return
        conditions += [
            c for c in (current.get("status") or {}).get("conditions") or []
            if c.get("type") == "DisruptionTarget"
        ]  # fmt: skip
        patch = {"hostIP": "127.0.0.1", "podIP": "127.0.0.1", "startTime": started,
                 "conditions": conditions, "containerStatuses": statuses}  # fmt: skip
        if running:
            patch["phase"] = "Running"
        self._patch(pod, patch)

    def _finish(self, pod, plan, started, phase, codes) -> None:
        self._status(pod, plan, started, codes)
        self._patch(pod, {"phase": phase})

    def _patch(self, pod: dict, status: dict) -> None:
        try:
            self.api.patch_status(
                "pods", pod["metadata"]["name"], status, pod["metadata"]["namespace"]
            )
        except KeyError:
            pass  # deleted meanwhile


def _all_containers(pod: dict) -> list[dict]:
    spec = pod.get("spec") or {}
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def _ref(pod: dict) -> dict:
    meta = pod["metadata"]
    return {"kind": "Pod", "name": meta["name"], "uid": meta["uid"], "apiVersion": "v1"}
