"""The fake cluster's scheduler: binds each new pod to a node it fits on, or says why not.

Fit = the node's `status.allocatable` (cpu, memory, nvidia.com/gpu, pods) minus the requests of the
non-terminated pods already bound to it, the pod's `nodeSelector`, and the node's NoSchedule /
NoExecute taints against the pod's tolerations. A pod that fits nowhere stays Pending with the
PodScheduled=False/Unschedulable condition and a FailedScheduling event in the real scheduler's
words ("0/1 nodes are available: 1 Insufficient nvidia.com/gpu."); it is retried whenever a pod
ends or a node changes. Not modelled: affinity/anti-affinity, topology spread, priorities and
preemption, resource limits, extended resources other than GPUs, volume binding.
"""

from __future__ import annotations

import copy
from decimal import Decimal

from kubecourse.quota import parse_quantity

from .apiserver import _condition, _now
from .watcher import Watcher

RESOURCES = ("cpu", "memory", "nvidia.com/gpu")
_TERMINAL = ("Succeeded", "Failed")


def pod_requests(pod: dict) -> dict[str, Decimal]:
    """What a pod needs of a node: the sum of its containers' requests, or the largest init
    container's if that is more (init containers run one at a time, before the others)."""
    spec = pod.get("spec") or {}

    def requests(container: dict) -> dict[str, Decimal]:
        resources = container.get("resources") or {}
        asked = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        return {k: parse_quantity(v) for k, v in asked.items() if k in RESOURCES}

    total: dict[str, Decimal] = {}
    for container in spec.get("containers") or []:
        for key, value in requests(container).items():
            total[key] = total.get(key, Decimal(0)) + value
    for container in spec.get("initContainers") or []:
        for key, value in requests(container).items():
            total[key] = max(total.get(key, Decimal(0)), value)
    return total


def _tolerated(taint: dict, tolerations: list[dict]) -> bool:
    for toleration in tolerations:
        if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
            continue
        if toleration.get("operator") == "Exists" and toleration.get("key") in (None, taint["key"]):
            return True
        if toleration.get("key") == taint["key"] and toleration.get("value") == taint.get("value"):
            return True
    return False


def unfit_reasons(pod: dict, node: dict, bound: list[dict]) -> list[str]:
    """Why `pod` does not fit on `node` next to the `bound` pods ([] = it fits)."""
    spec = pod.get("spec") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    reasons = []
    selector = spec.get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        reasons.append("node(s) didn't match Pod's node affinity/selector")
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerated(
            taint, spec.get("tolerations") or []
        ):
            value = f"{taint['key']}: {taint.get('value', '')}".rstrip(": ")
            reasons.append(f"node(s) had untolerated taint {{{value}}}")
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    used: dict[str, Decimal] = {}
    for other in bound:
        for key, value in pod_requests(other).items():
            used[key] = used.get(key, Decimal(0)) + value
    for key, need in pod_requests(pod).items():
        free = parse_quantity(allocatable.get(key, 0)) - used.get(key, Decimal(0))
        if need > free:
            reasons.append(f"Insufficient {key}")
    if len(bound) + 1 > int(allocatable.get("pods", 110)):
        reasons.append("Too many pods")
    return reasons


class Scheduler(Watcher):
    name = "scheduler"

    def __init__(self, api):
        super().__init__(api)
        self._told: dict[tuple[str, str], str] = {}  # last FailedScheduling message per pod

    def handle(self, type_: str, group: str, plural: str, obj: dict) -> None:
        if (group, plural) not in (("", "pods"), ("", "nodes")) and type_ != "POKE":
            return
        if plural == "pods" and type_ == "MODIFIED":
            phase = (obj.get("status") or {}).get("phase")
            if phase not in _TERMINAL and (obj.get("spec") or {}).get("nodeName"):
                return  # a running pod's status change frees nothing
        self.schedule_pending()

    def schedule_pending(self) -> None:
        pods = self.api.objects("pods", namespace="")
        nodes = [
            n for n in self.api.objects("nodes") if not (n.get("spec") or {}).get("unschedulable")
        ]
        for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", "")):
            if (pod.get("spec") or {}).get("nodeName") or pod["metadata"].get("deletionTimestamp"):
                continue
            if (pod.get("status") or {}).get("phase", "Pending") != "Pending":
                continue
            self._schedule(pod, nodes, pods)
            pods = self.api.objects("pods", namespace="")

    def _schedule(self, pod: dict, nodes: list[dict], pods: list[dict]) -> None:
        meta = pod["metadata"]
        ns, name = meta["namespace"], meta["name"]
        all_reasons: dict[str, int] = {}
        for node in nodes:
            node_name = node["metadata"]["name"]
            bound = [
                p
                for p in pods
                if (p.get("spec") or {}).get("nodeName") == node_name
                and (p.get("status") or {}).get("phase") not in _TERMINAL
            ]
            reasons = unfit_reasons(pod, node, bound)
            if not reasons:
                self._bind(pod, node_name)
                return
            for reason in reasons:
                all_reasons[reason] = all_reasons.get(reason, 0) + 1
        detail = ", ".join(f"{count} {reason}" for reason, count in sorted(all_reasons.items()))
        message = (
            f"0/{len(nodes)} nodes are available: {detail}." if nodes else "no nodes available"
        )
        if self._told.get((ns, name)) == message:
            return
        self._told[(ns, name)] = message
        condition = _condition("PodScheduled", "Unschedulable", message, status="False")
        condition.pop("lastProbeTime", None)
        try:
            self.api.patch_status("pods", name, {"phase": "Pending", "conditions": [condition]}, ns)
        except KeyError:
            return  # deleted meanwhile
        self.api.add_event(
            ns,
            _ref(pod),
            "FailedScheduling",
            message,
            type="Warning",
            component="default-scheduler",
        )

    def _bind(self, pod: dict, node_name: str) -> None:
        meta = pod["metadata"]
        ns, name = meta["namespace"], meta["name"]
        current = self.api.get("pods", name, ns)
        if current is None:
            return
        bound = copy.deepcopy(current)
        bound["spec"]["nodeName"] = node_name
        status = bound.setdefault("status", {})
        status["conditions"] = [
            c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"
        ] + [{"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()}]
        self.api.put_object(bound)
        self._told.pop((ns, name), None)
        self.api.add_event(
            ns,
            _ref(pod),
            "Scheduled",
            f"Successfully assigned {ns}/{name} to {node_name}",
            component="default-scheduler",
        )


def _ref(pod: dict) -> dict:
    return {
        "kind": "Pod",
        "name": pod["metadata"]["name"],
        "uid": pod["metadata"]["uid"],
        "apiVersion": "v1",
    }
