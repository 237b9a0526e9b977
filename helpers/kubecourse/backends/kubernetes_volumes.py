"""The Kubernetes backend's outputs and disruptions (kubecourse.backends.outputs primitives).

Files on a PVC are read, listed and removed by a short-lived reader pod: the course's own image
(it has Python, pinned like every image here), the claim mounted at /volume, one small Python
program whose answer is one log line (`kubecourse-volume: <json>`), then the pod is deleted.
Why a pod and not the job's logs: metrics.jsonl holds eval records the log does not, the lessons
read checkpoints and model files, and a finished job's pods may be gone; `kubectl cp` would need
exec and tar in a running pod that mounts the claim. Limits: a ReadWriteOnce claim mounted by a
running pod on another node cannot be mounted by the reader (it stays Pending until the timeout);
a file is carried base64-encoded in the log, so it should stay well below the kubelet's log
rotation size (10 MiB by default) — fine for results, metrics and the lessons' small checkpoints.

kill = force-delete the pod (grace 0: SIGKILL, no DisruptionTarget, counts as a failure);
preempt = the Eviction API (DisruptionTarget, SIGTERM, grace period); a single worker process can
only be killed with `kubectl exec`, which this backend does not do.
"""

from __future__ import annotations

import base64
import json
import secrets
from datetime import datetime, timezone
from typing import Any

from .. import constants as C
from ..errors import Conflict, JobTimeout, NotFound
from ..manifests import Manifest
from ..types import JobRef

VOLUME_IMAGE = "ghcr.io/kubecourse/labs:0.1.0"  # has python; the lessons' pods already pulled it
_MARK = "kubecourse-volume: "
_PROGRAM = """
import base64, json, os, shutil, sys
op, root, sub = sys.argv[1], sys.argv[2], sys.argv[3]
path = os.path.normpath(os.path.join(root, sub))
if os.path.relpath(path, root).startswith(".."):
    sys.exit("path leaves the volume")
if op == "read":
    out = base64.b64encode(open(path, "rb").read()).decode() if os.path.isfile(path) else None
elif op == "list":
    out = sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)
else:
    targets = [os.path.join(path, n) for n in os.listdir(path)] if path == root else [path]
    for target in targets:
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        elif os.path.lexists(target):
            os.remove(target)
    out = True
print("kubecourse-volume: " + json.dumps(out), flush=True)
"""


class KubernetesOutputs:
    """Mixed into KubernetesBackend (needs its _call, _request, _get_workload, _kind, pod_objects,
    api_client and pod_start_timeout_s)."""

    volume_image = VOLUME_IMAGE

    def workload_manifest(self, ref: JobRef) -> Manifest:
        return self._get_workload(ref, self._kind(ref))

    def read_volume(self, claim: str, namespace: str, path: str) -> bytes | None:
        if not self._claim_exists(claim, namespace):
            return None
        data = self._volume_pod(claim, namespace, "read", path)
        return None if data is None else base64.b64decode(data)

    def list_volume(self, claim: str, namespace: str, subpath: str = "") -> list[str]:
        if not self._claim_exists(claim, namespace):
            return []
        return self._volume_pod(claim, namespace, "list", subpath)

    def reset_volume(self, claim: str, namespace: str, subpath: str = "") -> None:
        if self._claim_exists(claim, namespace):  # no claim yet: nothing to reset
            self._volume_pod(claim, namespace, "reset", subpath)

    def _claim_exists(self, claim: str, namespace: str) -> bool:
        """A reader pod of a claim that does not exist would wait Pending for it: ask first."""
        path = resource_path("v1", "PersistentVolumeClaim", namespace, claim)
        try:
            self._call(f"get PersistentVolumeClaim/{claim}", self._request, "GET", path)
        except NotFound:
            return False
        return True

    def _volume_pod(self, claim: str, namespace: str, op: str, subpath: str) -> Any:
        if ".." in subpath.split("/"):
            raise ValueError(f"path {subpath!r} leaves the volume {claim!r}")
        pod = _reader_pod(claim, namespace, op, subpath.strip("/"), self.volume_image)
        name = pod["metadata"]["name"]
        path = resource_path("v1", "Pod", namespace)
        self._call(f"create Pod/{name}", self._request, "POST", path, body=pod)
        try:
            phase = self._wait_reader_done(name, namespace, timeout_s=self.pod_start_timeout_s)
            text = self._reader_log(name, namespace)
        finally:
            self._call(
                f"delete Pod/{name}",
                self._request,
                "DELETE",
                resource_path("v1", "Pod", namespace, name),
                query={"gracePeriodSeconds": "0"},
            )
        answers = [line[len(_MARK) :] for line in text.splitlines() if line.startswith(_MARK)]
        if phase != C.SUCCEEDED or not answers:
            raise Conflict(
                f"volume reader pod {namespace}/{name} ({op} {claim}:/{subpath}) ended {phase}: "
                f"{text.strip()[-300:]}",
                reason="VolumeReaderFailed",
            )
        return json.loads(answers[-1])

    def _wait_reader_done(self, name: str, namespace: str, *, timeout_s: float) -> str:
        from kubernetes import watch
        from kubernetes.client import CoreV1Api

        stream = watch.Watch()
        for event in stream.stream(
            CoreV1Api(self.api_client).list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={name}",
            timeout_seconds=max(1, int(timeout_s)),
            _request_timeout=timeout_s + 10,
        ):
            phase = (event["raw_object"].get("status") or {}).get("phase")
            if phase in C.TERMINAL_PHASES:
                stream.stop()
                return phase
        raise JobTimeout(
            f"volume reader pod {namespace}/{name} did not finish in {timeout_s:.0f} s"
        )

    def _reader_log(self, name: str, namespace: str) -> str:
        from kubernetes.client import CoreV1Api

        core = CoreV1Api(self.api_client)
        return (
            self._call(f"logs of Pod/{name}", core.read_namespaced_pod_log, name, namespace) or ""
        )

    # -- disruptions ------------------------------------------------------------------------------

    def _running_pod_of(self, ref: JobRef, index: int | None) -> str:
        name, namespace = ref.name, ref.namespace
        for pod in self.pod_objects(ref):
            labels = pod["metadata"].get("annotations") or {}
            pod_index = labels.get(C.COMPLETION_INDEX_ANNOTATION)
            if (pod.get("status") or {}).get("phase") == C.RUNNING and (
                index is None or pod_index == str(index)
            ):
                return pod["metadata"]["name"]
        raise Conflict(
            f"job {namespace}/{name} has no running pod"
            + (f" with completion index {index}" if index is not None else ""),
            reason="NoRunningPod",
        )

    def kill(self, ref: JobRef, *, index: int | None = None) -> str:
        pod, namespace = self._running_pod_of(ref, index), ref.namespace
        self._call(
            f"delete Pod/{pod}",
            self._request,
            "DELETE",
            resource_path("v1", "Pod", namespace, pod),
            query={"gracePeriodSeconds": "0"},
        )
        self._record(ref, "Killed", f"sent SIGKILL to pod {pod} (force-deleted, grace period 0)")
        return pod

    def preempt(self, ref: JobRef, *, index: int | None = None) -> str:
        pod, namespace = self._running_pod_of(ref, index), ref.namespace
        eviction = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod, "namespace": namespace},
        }
        path = resource_path("v1", "Pod", namespace, pod) + "/eviction"
        self._call(f"evict Pod/{pod}", self._request, "POST", path, body=eviction)
        self._record(
            ref,
            "Evicted",
            f"evicted pod {pod} through the Eviction API: DisruptionTarget, SIGTERM, grace period",
        )
        return pod

    def _record(self, ref: JobRef, reason: str, message: str) -> None:
        """An Event about the workload, so `events()` and `diagnose()` show the disruption after
        the pod is gone (a deleted pod's own events are no longer listed with the job)."""
        kind = self._kind(ref)
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{ref.name}.{secrets.token_hex(8)}", "namespace": ref.namespace},
            "involvedObject": {"kind": kind.kind, "name": ref.name, "namespace": ref.namespace},
            "reason": reason,
            "message": message,
            "type": "Warning",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": "kubecourse"},
        }
        path = resource_path("v1", "Event", ref.namespace)
        self._call(f"create Event {reason}", self._request, "POST", path, body=event)

    def kill_worker(
        self, ref: JobRef, *, rank: int | None = None, index: int | None = None
    ) -> dict[str, Any]:
        pod, namespace = self._running_pod_of(ref, index), ref.namespace
        raise NotImplementedError(
            "killing one worker process needs exec into the pod, which the kubernetes backend "
            f"does not do: kubectl exec -n {namespace} {pod} -- pkill -KILL -f labs."
        )


def resource_path(*args: Any) -> str:
    from .kubernetes import resource_path as path  # the backend's module imports this one

    return path(*args)


def _reader_pod(claim: str, namespace: str, op: str, subpath: str, image: str) -> Manifest:
    name = f"volume-{op}-{claim}"[:50].rstrip("-") + "-" + secrets.token_hex(3)
    security = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "kubecourse-volume",
                "app.kubernetes.io/component": op,
            },
        },
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": 600,
            "terminationGracePeriodSeconds": 0,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "runAsGroup": 1000,
                "fsGroup": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "reader",
                    "image": image,
                    "command": ["python", "-c", _PROGRAM, op, "/volume", subpath or "."],
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "128Mi"},
                        "limits": {"cpu": "500m", "memory": "512Mi"},
                    },
                    "securityContext": security,
                    "volumeMounts": [{"name": "volume", "mountPath": "/volume"}],
                }
            ],
            "volumes": [{"name": "volume", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }


__all__ = ["VOLUME_IMAGE", "KubernetesOutputs"]
