"""A small NetworkPolicy evaluator over rendered manifests: would this connection be allowed?

    from kubecourse.netpol import Endpoint, allowed, pods_of
    master, worker = pods_of(job)                       # the pods the controller would create
    allowed(policies, worker, master, 29500)            # True: the job's <name>-peers policy
    allowed(policies, worker, other_jobs_pod, 29500)    # False: default-deny, no rule for it

It follows the NetworkPolicy semantics a CNI enforces (networking.k8s.io/v1): a pod is isolated
for a direction once any policy of its namespace selects it with that policyType; a connection
needs the source's egress AND the destination's ingress to allow it; rules add up; an empty
`from`/`to`/`ports` matches everything; peers are podSelector (the policy's namespace),
namespaceSelector, both (AND) or ipBlock (with except); ports may be numbers, names of the
destination's container ports, or ranges (endPort). Left out: ipBlock rules for pod IPs (pods here
have no addresses; ipBlock matches only external endpoints), SCTP, and how a particular CNI treats
host-network pods or node-local traffic.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import constants as C
from .manifests import Manifest
from .policy import pod_specs
from .quota import pod_count

# The label each workload kind's controller sets on its pods, with the job's name as the value.
_CONTROLLER_LABEL = {
    ("batch", "Job"): C.JOB_NAME_LABEL,
    ("jobset.x-k8s.io", "JobSet"): C.JOBSET_NAME_LABEL,
    ("trainer.kubeflow.org", "TrainJob"): C.JOBSET_NAME_LABEL,
    ("kubeflow.org", "PyTorchJob"): C.PYTORCHJOB_NAME_LABEL,
    ("batch.volcano.sh", "Job"): C.VOLCANO_JOB_NAME_LABEL,
}


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace + labels + named container ports) or, with `ip`, an address outside."""

    name: str
    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)  # container port name -> number
    ip: str | None = None
    sysctls: dict[str, str] = field(default_factory=dict)


def pods_of(obj: Manifest, runtime: Manifest | None = None) -> list[Endpoint]:
    """The pods a workload's controller would create, with the labels it adds: the template's
    labels plus the job-name label (a TrainJob's pods come from `runtime`'s template)."""
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    name = obj["metadata"]["name"]
    namespace = obj["metadata"].get("namespace", "default")
    controller = {_CONTROLLER_LABEL[(group, obj["kind"])]: name}
    source = runtime if obj.get("kind") == "TrainJob" and runtime is not None else obj
    pods = []
    for base, spec in pod_specs(source):
        labels = _template_labels(source, base)
        count = pod_count(source, base)
        if obj.get("kind") == "TrainJob":
            count = int(((obj.get("spec") or {}).get("trainer") or {}).get("numNodes", 1))
        ports = {
            p["name"]: int(p["containerPort"])
            for c in spec.get("containers") or []
            for p in c.get("ports") or []
            if p.get("name")
        }
        sysctls = {
            s["name"]: str(s["value"])
            for s in (spec.get("securityContext") or {}).get("sysctls") or []
        }
        for _ in range(count):
            pods.append(
                Endpoint(
                    f"{name}-{len(pods)}",
                    namespace,
                    {**labels, **controller},
                    ports,
                    sysctls=sysctls,
                )
            )
    return pods


def _template_labels(obj: Manifest, base: str) -> dict[str, str]:
    """The pod template's metadata.labels for the pod spec at `base` ("....template.spec")."""
    node: object = obj
    path = base.removesuffix(".spec").replace("]", "").replace("[", ".").split(".")
    for part in path:
        node = node[int(part)] if isinstance(node, list) else node.get(part, {})  # type: ignore[union-attr]
    return dict(((node or {}).get("metadata") or {}).get("labels") or {})  # type: ignore[union-attr]


def matches(selector: Manifest | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels + matchExpressions); an empty selector matches everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != str(value):
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = [str(v) for v in expression.get("values") or []]
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def _namespace_labels(namespace: str, namespaces: dict[str, dict[str, str]]) -> dict[str, str]:
    # The API server labels every namespace with its own name.
    return {**namespaces.get(namespace, {}), "kubernetes.io/metadata.name": namespace}


def _peer_matches(peer: Manifest, other: Endpoint, policy_ns: str, namespaces) -> bool:
    if "ipBlock" in peer:
        if other.ip is None:
            return False
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        if address not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(address in ipaddress.ip_network(e) for e in block.get("except") or [])
    if other.namespace is None:  # an outside address matches only ipBlock peers
        return False
    if "namespaceSelector" in peer:
        if not matches(peer["namespaceSelector"], _namespace_labels(other.namespace, namespaces)):
            return False
    elif other.namespace != policy_ns:
        return False
    return matches(peer.get("podSelector"), other.labels)


def _port_matches(rule_ports: list | None, port: int, protocol: str, dst: Endpoint) -> bool:
    if not rule_ports:
        return True
    for entry in rule_ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str) and not wanted.isdigit():
            if dst.ports.get(wanted) == port:  # a named port resolves on the destination pod
                return True
            continue
        low, high = int(wanted), int(entry.get("endPort", wanted))
        if low <= port <= high:
            return True
    return False


def _selecting(policies: Iterable[Manifest], pod: Endpoint, direction: str) -> list[Manifest]:
    return [
        p
        for p in policies
        if p.get("kind") == "NetworkPolicy"
        and pod.namespace is not None
        and p["metadata"].get("namespace", "default") == pod.namespace
        and matches((p.get("spec") or {}).get("podSelector"), pod.labels)
        and direction in _policy_types(p)
    ]


def _policy_types(policy: Manifest) -> list[str]:
    spec = policy.get("spec") or {}
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress"] + (["Egress"] if "egress" in spec else [])


def _side_allows(policies, pod, other, port, protocol, dst, direction, namespaces) -> bool:
    selecting = _selecting(policies, pod, direction)
    if not selecting:
        return True  # not isolated in this direction
    key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for policy in selecting:
        namespace = policy["metadata"].get("namespace", "default")
        for rule in (policy.get("spec") or {}).get(key) or []:
            peers = rule.get(peers_key)
            if peers and not any(_peer_matches(p, other, namespace, namespaces) for p in peers):
                continue
            if _port_matches(rule.get("ports"), port, protocol, dst):
                return True
    return False


def allowed(
    policies: Iterable[Manifest],
    src: Endpoint,
    dst: Endpoint,
    port: int,
    protocol: str = "TCP",
    namespaces: dict[str, dict[str, str]] | None = None,
) -> bool:
    """Whether src may open a connection to dst:port (egress of src and ingress of dst)."""
    policies = [p for p in policies if p.get("kind") == "NetworkPolicy"]
    namespaces = namespaces or {}
    egress = _side_allows(policies, src, dst, port, protocol, dst, "Egress", namespaces)
    ingress = dst.namespace is None or _side_allows(
        policies, dst, src, port, protocol, dst, "Ingress", namespaces
    )
    return egress and ingress


def ephemeral_range(pod: Endpoint) -> tuple[int, int]:
    """The ports the kernel picks for outgoing listeners in this pod (NCCL, the worker store):
    the pod's net.ipv4.ip_local_port_range sysctl, else Linux's default 32768-60999."""
    low, high = pod.sysctls.get("net.ipv4.ip_local_port_range", "32768 60999").split()
    return int(low), int(high)


__all__ = ["Endpoint", "allowed", "ephemeral_range", "matches", "pods_of"]
