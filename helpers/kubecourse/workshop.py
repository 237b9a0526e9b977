"""Workshop tooling: give each of N learners an isolated, quota-bounded slice of a shared cluster.

    from kubecourse.workshop import Workshop
    ws = Workshop(learners=3)                 # learner-01 .. learner-03
    print(ws.table())                         # what would be created (nothing is sent)
    ws.up(backend, dry_run=False)             # create; ws.down(backend) removes it all again

or from a terminal (dry run unless --apply):

    kubecourse workshop up --learners 3                       # prints the table, creates nothing
    kubecourse workshop up --learners 3 --apply --backend kubernetes --server-dry-run
    kubecourse workshop down --learners 3 --apply --backend kubernetes

Each learner gets a namespace (Pod Security "restricted"), a ResourceQuota and LimitRange, a
LocalQueue, the least-privilege learner Role bound to a ServiceAccount (and optionally a user),
and the NetworkPolicies of lesson 04. One shared Kueue ClusterQueue (and its ResourceFlavor)
admits the learners' jobs, at most `gpus` GPUs each. Every object is derived from the plain
manifests in manifests/04-production/admin/ (renamed, relabelled, resized): what the learners get
is what the lesson teaches. Objects carry the label `course.kubecourse.dev/workshop=<name>`, so
`kubectl get ns -l course.kubecourse.dev/workshop=<name>` finds them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from .backends.base import Backend
from .errors import OptionError
from .manifests import Manifest, load_lesson, object_id, sort_for_creation
from .validation import Report, validate

WORKSHOP_LABEL = "course.kubecourse.dev/workshop"
LEARNER_LABEL = "course.kubecourse.dev/learner"
# Per-learner kinds taken from the admin manifests (the team namespace is the template).
_PER_LEARNER_KINDS = (
    "Namespace",
    "ResourceQuota",
    "LimitRange",
    "LocalQueue",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "NetworkPolicy",
)
_RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding")
_LEARNER_ROLE = (
    "learner"  # the learner's SA/Role/RoleBinding (not the helper's) from rbac-learner.yaml
)


@dataclass(frozen=True)
class Workshop:
    """N learner slices. gpus/cpu/memory: each learner's quota; users: one login per learner
    (e.g. e-mail addresses your OIDC maps to), bound to the learner Role besides the ServiceAccount."""

    learners: int
    name: str = "kubecourse"
    prefix: str = "learner"
    gpus: int = 1
    cpu: str = "8"
    memory: str = "32Gi"
    users: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.learners, int) or not 1 <= self.learners <= 500:
            raise OptionError(
                "learners", f"must be an integer from 1 to 500, got {self.learners!r}"
            )
        if not isinstance(self.gpus, int) or self.gpus < 0:
            raise OptionError("gpus", f"must be an integer >= 0, got {self.gpus!r}")
        if self.users and len(self.users) != self.learners:
            raise OptionError(
                "users", f"give one user per learner ({self.learners}), got {len(self.users)}"
            )

    def namespaces(self) -> list[str]:
        return [f"{self.prefix}-{i:02d}" for i in range(1, self.learners + 1)]

    @property
    def cluster_queue(self) -> str:
        return f"{self.name}-workshop"

    # ---------------------------------------------------------------------------------------------

    def render(self) -> list[Manifest]:
        """Every object of the workshop, in creation order (shared queue first, then each learner)."""
        admin = load_lesson("04", part="admin")
        templates = [
            o
            for o in admin
            if o["kind"] in _PER_LEARNER_KINDS
            and (o["kind"] not in _RBAC_KINDS or o["metadata"]["name"] == _LEARNER_ROLE)
        ]
        objects = self._shared(admin)
        for i, namespace in enumerate(self.namespaces()):
            # Learner by learner, each in creation order (its Namespace first).
            objects += sort_for_creation([self._for_learner(t, namespace, i) for t in templates])
        return objects

    def _labels(self, obj: Manifest, learner: str | None = None) -> None:
        labels = obj.setdefault("metadata", {}).setdefault("labels", {})
        labels[WORKSHOP_LABEL] = self.name
        if learner:
            labels[LEARNER_LABEL] = learner

    def _shared(self, admin: list[Manifest]) -> list[Manifest]:
        """One ResourceFlavor and one ClusterQueue that admit only the workshop's namespaces."""
        flavor = {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ResourceFlavor",
            "metadata": {"name": f"{self.name}-workshop-gpu"},
            "spec": {},  # no node labels: any node; add nodeLabels for a GPU pool
        }
        queue = copy.deepcopy(next(o for o in admin if o["kind"] == "ClusterQueue"))
        queue["metadata"] = {"name": self.cluster_queue, "labels": {}}
        spec = queue["spec"]
        spec.pop("cohortName", None)  # the workshop does not lend to or borrow from teams
        spec["namespaceSelector"] = {"matchLabels": {WORKSHOP_LABEL: self.name}}
        spec["preemption"] = {"withinClusterQueue": "LowerPriority"}
        quota = {
            "cpu": str(int(float(self.cpu) * self.learners))
            if self.cpu.replace(".", "").isdigit()
            else self.cpu,
            "memory": _scale_quantity(self.memory, self.learners),
            "nvidia.com/gpu": self.gpus * self.learners,
        }
        spec["resourceGroups"] = [
            {
                "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                "flavors": [
                    {
                        "name": flavor["metadata"]["name"],
                        "resources": [{"name": k, "nominalQuota": v} for k, v in quota.items()],
                    }
                ],
            }
        ]
        for obj in (flavor, queue):
            self._labels(obj)
        return [flavor, queue]

    def _for_learner(self, template: Manifest, namespace: str, index: int) -> Manifest:
        obj = copy.deepcopy(template)
        meta = obj["metadata"]
        meta.pop("namespace", None)
        if obj["kind"] == "Namespace":
            meta["name"] = namespace
        else:
            meta["namespace"] = namespace
        self._labels(obj, namespace)
        kind = obj["kind"]
        if kind == "ResourceQuota":
            hard = obj["spec"]["hard"]
            hard.update(
                {
                    "requests.cpu": self.cpu,
                    "limits.cpu": self.cpu,
                    "requests.memory": self.memory,
                    "limits.memory": self.memory,
                    "requests.nvidia.com/gpu": str(self.gpus),
                }
            )
            meta["name"] = "learner-quota"
        elif kind == "LimitRange":
            meta["name"] = "learner-limits"
            for limit in obj["spec"]["limits"]:
                limit.setdefault("max", {})["nvidia.com/gpu"] = str(self.gpus)
                limit["max"]["cpu"] = self.cpu
                limit["max"]["memory"] = self.memory
        elif kind == "LocalQueue":
            meta["name"] = "default"
            obj["spec"]["clusterQueue"] = self.cluster_queue
        elif kind == "RoleBinding":
            subjects = [
                {"kind": "ServiceAccount", "name": _LEARNER_ROLE, "namespace": namespace},
            ]
            if self.users:
                subjects.append(
                    {
                        "kind": "User",
                        "apiGroup": "rbac.authorization.k8s.io",
                        "name": self.users[index],
                    }
                )
            obj["subjects"] = subjects
        return obj

    # ---------------------------------------------------------------------------------------------

    def validate(self, objects: list[Manifest] | None = None) -> Report:
        """Schema, CRD and course policy checks of the rendered objects."""
        return validate(objects if objects is not None else self.render())

    def table(self, objects: list[Manifest] | None = None, results: dict | None = None) -> str:
        """One row per object: learner, kind, namespace/name, what it sets (and the result)."""
        rows = []
        for obj in objects if objects is not None else self.render():
            meta = obj["metadata"]
            learner = meta.get("labels", {}).get(LEARNER_LABEL, "(shared)")
            row = [learner, obj["kind"], meta.get("namespace", "-"), meta["name"], _detail(obj)]
            if results is not None:
                row.append(results.get(_key(obj), ""))
            rows.append(row)
        header = ["learner", "kind", "namespace", "name", "what"]
        if results is not None:
            header.append("result")
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
        lines += [
            "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows
        ]
        return "\n".join(lines)

    def up(self, backend: Backend, *, dry_run: bool = True) -> dict[str, str]:
        """Validate, then create every object through `backend` (server-side dry run with
        dry_run=True on Kubernetes). Returns {"Kind/name@namespace": result}."""
        objects = self.render()
        self.validate(objects).raise_for_findings()
        results = backend.apply_objects(objects, dry_run=dry_run)
        return {_key(o): r for o, r in zip(objects, results, strict=True)}

    def down(self, backend: Backend) -> dict[str, str]:
        """Delete every object of the workshop (learner namespaces take their contents along)."""
        objects = self.render()
        results = backend.delete_objects(objects)
        return {_key(o): r for o, r in zip(objects, results, strict=True)}

    def present(self, backend: Backend) -> list[Manifest]:
        """The workshop's objects that exist on the backend now."""
        return [o for o in backend.get_objects(self.render()) if o is not None]


def _key(obj: Manifest) -> str:
    """ "Kind/name@namespace": object_id alone repeats across learner namespaces."""
    return f"{object_id(obj)}@{obj['metadata'].get('namespace', '')}"


def _scale_quantity(quantity: str, factor: int) -> str:
    """ "32Gi" x 3 -> "96Gi" (the number part scaled, the unit kept)."""
    digits = "".join(c for c in quantity if c.isdigit() or c == ".")
    unit = quantity[len(digits) :]
    value = float(digits) * factor
    return f"{int(value) if value.is_integer() else value}{unit}"


def _detail(obj: Manifest) -> str:
    kind, spec = obj["kind"], obj.get("spec") or {}
    if kind == "Namespace":
        return "pod-security=" + obj["metadata"]["labels"].get(
            "pod-security.kubernetes.io/enforce", "?"
        )
    if kind == "ResourceQuota":
        hard = spec.get("hard", {})
        return f"gpu={hard.get('requests.nvidia.com/gpu')} cpu={hard.get('requests.cpu')} memory={hard.get('requests.memory')}"
    if kind == "LocalQueue":
        return f"-> ClusterQueue {spec.get('clusterQueue')}"
    if kind == "ClusterQueue":
        resources = spec["resourceGroups"][0]["flavors"][0]["resources"]
        return "quota " + " ".join(f"{r['name']}={r['nominalQuota']}" for r in resources)
    if kind == "RoleBinding":
        return (
            "role "
            + obj["roleRef"]["name"]
            + " -> "
            + ", ".join(s["name"] for s in obj["subjects"])
        )
    if kind == "Role":
        return f"{len(obj.get('rules') or [])} rules"
    if kind == "NetworkPolicy":
        return "/".join(spec.get("policyTypes") or [])
    if kind == "LimitRange":
        return "defaults + max per container"
    return ""


__all__ = ["LEARNER_LABEL", "WORKSHOP_LABEL", "Workshop"]
