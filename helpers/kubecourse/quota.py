"""What a ResourceQuota admits: a job's total requests against the quota's hard limits.

    from kubecourse.quota import job_requests, how_many_fit
    quota = next(o for o in load_lesson("04", part="admin") if o["kind"] == "ResourceQuota")
    how_many_fit(quota, job)      # {"fits": 4, "limited_by": "requests.nvidia.com/gpu", ...}

The API server's quota admission sums the requests (and limits) of every pod; a Job's pods are
counted as they are created, so a job of N pods needs N x its pod's requests. Kueue does the same
arithmetic against a ClusterQueue's nominal quota *before* it creates any pod.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from decimal import Decimal

from .errors import OptionError
from .manifests import Manifest
from .policy import pod_specs

_SUFFIX = {
    "m": Decimal("0.001"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
}
_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")


def parse_quantity(value: str | int | float) -> Decimal:
    """A Kubernetes quantity as a number: "500m" -> 0.5, "16Gi" -> 17179869184, 2 -> 2."""
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in _SUFFIX:
        raise OptionError(
            "quantity", f"{value!r} is not a Kubernetes quantity such as 500m or 16Gi"
        )
    return Decimal(match.group(1)) * _SUFFIX[match.group(2)]


def pod_count(obj: Manifest, base: str) -> int:
    """How many pods run at once for the pod template at `base`."""
    spec = obj.get("spec") or {}
    kind = obj.get("kind")
    index = int(base.split("[")[1].split("]")[0]) if "[" in base else 0
    if kind == "Job" and base.startswith("spec.tasks["):  # Volcano: replicas per task
        return int(spec["tasks"][index].get("replicas", 1))
    if kind == "Job":
        return int(spec.get("parallelism", 1) or 1)
    if kind == "JobSet":  # replicas of the replicated Job x that Job's parallelism
        rjob = spec["replicatedJobs"][index]
        inner = (rjob.get("template") or {}).get("spec") or {}
        return int(rjob.get("replicas", 1)) * int(inner.get("parallelism", 1) or 1)
    if kind == "PyTorchJob":  # spec.pytorchReplicaSpecs.<Role>.template.spec
        role = base.split(".")[2]
        return int(spec["pytorchReplicaSpecs"][role].get("replicas", 1))
    return 1


def _add(totals: dict[str, Decimal], resources: Manifest, pods: int) -> None:
    for section in ("requests", "limits"):
        for name, value in (resources.get(section) or {}).items():
            key = f"{section}.{name}"
            totals[key] = totals.get(key, Decimal(0)) + parse_quantity(value) * pods


def job_requests(obj: Manifest) -> dict[str, Decimal]:
    """Total quota usage of a workload with all its pods running: requests.* and limits.* keys, as
    a ResourceQuota spells them (cpu/memory requests also count as plain `cpu`/`memory`). A
    TrainJob counts numNodes x resourcesPerNode (its pods come from the runtime's template)."""
    totals: dict[str, Decimal] = {"pods": Decimal(0)}
    if obj.get("kind") == "TrainJob":
        trainer = (obj.get("spec") or {}).get("trainer") or {}
        nodes = int(trainer.get("numNodes", 1))
        totals["pods"] += nodes
        _add(totals, trainer.get("resourcesPerNode") or {}, nodes)
    for base, spec in pod_specs(obj):
        pods = pod_count(obj, base)
        totals["pods"] += pods
        for container in spec.get("containers") or []:
            _add(totals, container.get("resources") or {}, pods)
    for name in ("cpu", "memory"):
        if f"requests.{name}" in totals:
            totals[name] = totals[f"requests.{name}"]
    return totals


def largest_needs(workloads: Iterable[Manifest]) -> dict[str, Decimal]:
    """Per quota key, the most any single workload needs: a quota at least this large admits
    each of them (one at a time)."""
    largest: dict[str, Decimal] = {}
    for obj in workloads:
        for key, value in job_requests(obj).items():
            largest[key] = max(largest.get(key, Decimal(0)), value)
    return largest


def format_quantity(value: Decimal, binary: bool = False) -> str:
    """A number as a quantity: 16 -> "16", 0.5 -> "500m", 2**36 -> "64Gi" (binary=True)."""
    if binary:
        for suffix in ("Ti", "Gi", "Mi", "Ki"):
            if value >= _SUFFIX[suffix] and value % _SUFFIX[suffix] == 0:
                return f"{value / _SUFFIX[suffix]:f}".rstrip("0").rstrip(".") + suffix
        return str(int(value))
    if value == value.to_integral_value():
        return str(int(value))
    return f"{int(value * 1000)}m"


def how_many_fit(quota: Manifest, obj: Manifest, used: dict[str, str] | None = None) -> dict:
    """How many copies of a workload the quota admits at once (minus what is `used` already),
    and which resource runs out first."""
    hard = (quota.get("spec") or {}).get("hard") or {}
    needs = job_requests(obj)
    best, limited_by, per_resource = math.inf, None, {}
    for key, limit in hard.items():
        need = needs.get(key)
        if not need:
            continue
        free = parse_quantity(limit) - parse_quantity((used or {}).get(key, 0))
        fits = int(free // need) if free > 0 else 0
        per_resource[key] = fits
        if fits < best:
            best, limited_by = fits, key
    return {
        "fits": None if best is math.inf else best,
        "limited_by": limited_by,
        "per_resource": per_resource,
    }


__all__ = ["format_quantity", "how_many_fit", "job_requests", "largest_needs", "parse_quantity"]
