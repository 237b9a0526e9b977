"""What a job leaves behind, read the same way on every backend: its result, its metrics, the files
on its volumes; and the disruptions the fault lessons deal out (kill, preempt, kill one worker).

A backend provides the primitives (`workload_manifest`, `read_volume`, `list_volume`,
`reset_volume`, `kill`, `preempt`, `kill_worker`); `result()` and `metrics()` are derived here, once:

  * result: the lab's final `result <json>` log line (kubecourse.contract), read with the job's
    logs, so it needs nothing but `logs` permission and works while the PVC is mounted elsewhere;
    result.json on the out-dir volume is the fallback when the logs are gone (pods deleted).
  * metrics: `<out-dir>/metrics.jsonl` on the volume the trainer's `--out-dir` lies on (found
    from the workload's own pod template, see `out_dir_volume`). The log carries only the step
    lines, not the eval records, so metrics are read from the volume: on a cluster by a
    short-lived reader pod that mounts the PVC (backends/kubernetes_volumes.py).
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import Any

from .. import constants as C
from .. import contract
from ..manifests import Manifest, pod_templates, trainer_container
from ..types import JobRef

_VAR_REF = re.compile(r"\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")
_LABEL_REF = re.compile(r"^metadata\.labels\['([^']+)'\]$")


def out_dir_volume(workload: Manifest) -> tuple[str, str] | None:
    """(PVC claim name, path inside the claim) of the trainer's `--out-dir`, from the workload's
    first pod template; None when the trainer has no --out-dir or it is not on a PVC."""
    templates = pod_templates(workload)
    if not templates:
        return None
    spec = templates[0]
    container = trainer_container(spec)
    out_dir = _flag_value([*(container.get("command") or []), *(container.get("args") or [])])
    if out_dir is None:
        return None
    out_dir = _expand(out_dir, _plain_env(container, workload["metadata"]["name"]))
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in spec.get("volumes") or []
        if "persistentVolumeClaim" in v
    }
    mounts = sorted(
        container.get("volumeMounts") or [], key=lambda m: -len(m["mountPath"].rstrip("/"))
    )
    for mount in mounts:
        root = mount["mountPath"].rstrip("/") or "/"
        if mount["name"] in claims and (out_dir == root or out_dir.startswith(root + "/")):
            inside = posixpath.join(mount.get("subPath") or "", out_dir[len(root) :].lstrip("/"))
            return claims[mount["name"]], inside.strip("/")
    return None


def _flag_value(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--out-dir="):
            return arg.split("=", 1)[1]
        if arg == "--out-dir" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _plain_env(container: Manifest, job_name: str) -> dict[str, str]:
    """The env values knowable without a pod: literals, and the job-name label the controller sets."""
    env = {}
    for entry in container.get("env") or []:
        if "value" in entry:
            env[entry["name"]] = _expand(str(entry["value"]), env)
            continue
        field = ((entry.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath", "")
        label = _LABEL_REF.match(field)
        if label and label.group(1) in (C.JOB_NAME_LABEL, C.LEGACY_JOB_NAME_LABEL):
            env[entry["name"]] = job_name
    return env


def _expand(text: str, env: dict[str, str]) -> str:
    return _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), text)


class JobOutputs:
    """Mixed into every backend: result() and metrics() from the backend's primitives."""

    def result(self, ref: JobRef) -> dict[str, Any] | None:
        """The lab's result (what result.json holds); None while it has not finished."""
        found = contract.last_result(line.text for line in self.logs(ref))
        if found is not None:
            return found
        data = self._out_file(ref, contract.RESULT_FILE)
        return json.loads(data) if data else None

    def metrics(self, ref: JobRef) -> list[dict[str, Any]]:
        """The records of the job's metrics.jsonl ([] before the first one is written)."""
        data = self._out_file(ref, contract.METRICS_FILE)
        return contract.parse_metrics(data.decode()) if data else []

    def _out_file(self, ref: JobRef, filename: str) -> bytes | None:
        location = out_dir_volume(self.workload_manifest(ref))
        if location is None:
            return None
        claim, inside = location
        return self.read_volume(claim, ref.namespace, posixpath.join(inside, filename))

    # Primitives each backend implements ------------------------------------------------------

    def workload_manifest(self, ref: JobRef) -> Manifest:
        """The submitted workload (Job, JobSet...) as stored."""
        raise NotImplementedError(f"the {self.name} backend cannot read workloads")

    def read_volume(self, claim: str, namespace: str, path: str) -> bytes | None:
        """The bytes of one file on a PVC (path relative to the claim's root); None if absent."""
        raise NotImplementedError(f"the {self.name} backend cannot read volumes")

    def list_volume(self, claim: str, namespace: str, subpath: str = "") -> list[str]:
        """Files under subpath of a PVC, relative to subpath, sorted; [] if it does not exist."""
        raise NotImplementedError(f"the {self.name} backend cannot list volumes")

    def reset_volume(self, claim: str, namespace: str, subpath: str = "") -> None:
        """Delete everything under subpath of a PVC (the whole claim's content when empty)."""
        raise NotImplementedError(f"the {self.name} backend cannot reset volumes")

    def kill(self, ref: JobRef, *, index: int | None = None) -> str:
        """Crash a running pod of the job (no DisruptionTarget: counts against backoffLimit)."""
        raise NotImplementedError(f"the {self.name} backend cannot kill pods")

    def preempt(self, ref: JobRef, *, index: int | None = None) -> str:
        """Evict a running pod (DisruptionTarget, SIGTERM, grace period); returns its name."""
        raise NotImplementedError(f"the {self.name} backend cannot preempt pods")

    def kill_worker(
        self, ref: JobRef, *, rank: int | None = None, index: int | None = None
    ) -> dict[str, Any]:
        """SIGKILL one torchrun worker process inside a pod (highest rank when rank is None)."""
        raise NotImplementedError(f"the {self.name} backend cannot kill worker processes")
