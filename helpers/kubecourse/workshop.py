"""Workshop tooling: give each of N learners an isolated, quota-bounded slice of a shared cluster.

    from kubecourse.workshop import Workshop
    ws = Workshop(learners=3)                 # learner-01 .. learner-03
    print(ws.table())                         # what would be created (nothing is sent)
    ws.up(client, dry_run=False)              # create (a TrainingClient or a Backend); ws.down(client)

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

import base64
import copy
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from . import constants as C
from .backends.base import Backend
from .cluster import ClusterApi
from .context import QUEUE_EXTENSION
from .errors import NotFound, OptionError
from .manifests import Manifest, load_lesson, object_id, sort_for_creation
from .validation import Report, validate

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .client import TrainingClient

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
# The result of an object a server-side dry run could not send, and why.
NOT_CHECKED = "unchecked"  # the backends' word (Backend.apply_objects)
DRY_RUN_NOTE = (
    "A server-side dry run stores nothing, not even a Namespace, so the API server cannot check "
    "objects inside a namespace that does not exist yet (it would answer 404 namespaces not found). "
    "Objects marked '" + NOT_CHECKED + "' were not sent: add --create-namespaces to create the "
    "learner namespaces for real and dry-run the rest, or drop --server-dry-run."
)
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
    gpus: int | None = None  # None: what the largest lesson needs (see lesson_sized_quota)
    cpu: str | None = None
    memory: str | None = None
    users: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.learners, int) or not 1 <= self.learners <= 500:
            raise OptionError(
                "learners", f"must be an integer from 1 to 500, got {self.learners!r}"
            )
        if None in (self.gpus, self.cpu, self.memory):
            sized = lesson_sized_quota()
            for key in ("gpus", "cpu", "memory"):
                if getattr(self, key) is None:
                    object.__setattr__(self, key, sized[key])
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
        if kind == "ResourceQuota" and obj["spec"].get("scopeSelector"):
            # learners get no pods at the preempting priority (a scoped quota of 0)
            meta["name"] = "learner-priority-quota"
            obj["spec"]["hard"] = {"pods": "0"}
        elif kind == "ResourceQuota":
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

    def up(
        self,
        backend: Backend | TrainingClient,
        *,
        dry_run: bool = True,
        create_namespaces: bool = False,
    ) -> dict[str, str]:
        """Validate, then create every object through `backend`. Returns {"Kind/name@namespace":
        result}. dry_run=True sends a server-side dry run on Kubernetes; a dry run stores nothing,
        not even the Namespaces, so the objects inside a namespace that does not exist yet are
        not sent (result NOT_CHECKED, see DRY_RUN_NOTE) unless create_namespaces=True creates
        the namespaces for real first."""
        objects = self.render()
        self.validate(objects).raise_for_findings()
        if not dry_run:
            results = backend.apply_objects(objects, dry_run=False)
            return {_key(o): r for o, r in zip(objects, results, strict=True)}
        out: dict[str, str] = {}
        spaces = [o for o in objects if o["kind"] == "Namespace"]
        if create_namespaces:
            out.update(
                zip(map(_key, spaces), backend.apply_objects(spaces, dry_run=False), strict=True)
            )
        scoped = [o for o in objects if not o["metadata"].get("namespace") and _key(o) not in out]
        out.update(zip(map(_key, scoped), backend.apply_objects(scoped, dry_run=True), strict=True))
        present = {
            o["metadata"]["name"]
            for o in backend.get_objects(spaces)
            if o is not None and not (o.get("metadata") or {}).get("deletionTimestamp")
        }
        inside = [o for o in objects if o["metadata"].get("namespace")]
        sendable = [o for o in inside if o["metadata"]["namespace"] in present]
        out.update(
            zip(map(_key, sendable), backend.apply_objects(sendable, dry_run=True), strict=True)
        )
        for obj in inside:
            out.setdefault(_key(obj), NOT_CHECKED)
        return {_key(o): out[_key(o)] for o in objects}

    def down(self, backend: Backend | TrainingClient) -> dict[str, str]:
        """Delete every object of the workshop (learner namespaces take their contents along)."""
        objects = self.render()
        results = backend.delete_objects(objects)
        return {_key(o): r for o, r in zip(objects, results, strict=True)}

    def present(self, backend: Backend | TrainingClient) -> list[Manifest]:
        """The workshop's objects that exist on the backend now."""
        return [o for o in backend.get_objects(self.render()) if o is not None]

    # ---------------------------------------------------------------------------------------------

    def credentials(
        self, api: ClusterApi, out_dir: str | Path, *, expiry_s: int = 86400
    ) -> list[dict]:
        """One kubeconfig per learner in out_dir (`learner-01.kubeconfig`, mode 0600): the
        learner ServiceAccount's token from the TokenRequest API, valid for expiry_s seconds,
        and the learner's namespace as the context's default. Returns one row per learner."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rows = []
        for namespace in self.namespaces():
            token = api.token(namespace, _LEARNER_ROLE, expiry_s)
            path = out / f"{namespace}.kubeconfig"
            path.write_text(_kubeconfig(api, namespace, token["token"]))
            path.chmod(0o600)
            rows.append(
                {
                    "learner": namespace,
                    "kubeconfig": str(path),
                    "expires": token.get("expirationTimestamp", "?"),
                }
            )
        return rows

    def jobs(self, api: ClusterApi) -> list[Manifest]:
        """Every lesson workload (labelled with the lesson) in the learners' namespaces."""
        found = []
        for namespace in self.namespaces():
            for group_version, plural in BOARD_KINDS:
                base = "/api" if group_version == "v1" else "/apis"
                path = f"{base}/{group_version}/namespaces/{namespace}/{plural}"
                try:
                    items = api.list(path, labelSelector=C.COURSE_LABEL)
                except NotFound:  # the operator is not installed, or the namespace is gone
                    continue
                for item in items:
                    item.setdefault("metadata", {}).setdefault("namespace", namespace)
                found += items
        return found

    def board(self, jobs: list[Manifest]) -> Board:
        """The progress board: per learner and lesson, whether a job ran and how it ended."""
        lessons = sorted({_lesson_of(j) for j in jobs} - {None})
        cells = {ns: dict.fromkeys(lessons, "-") for ns in self.namespaces()}
        rank = {"-": 0, "pending": 1, "running": 2, "failed": 3, "succeeded": 4}
        for job in jobs:
            namespace, lesson = job["metadata"].get("namespace"), _lesson_of(job)
            if namespace in cells and lesson:
                state = job_state(job)
                if rank[state] > rank[cells[namespace][lesson]]:
                    cells[namespace][lesson] = state
        return Board(lessons, cells)


# Workload kinds the board lists: (group/version, plural).
BOARD_KINDS = (
    ("batch/v1", "jobs"),
    ("jobset.x-k8s.io/v1alpha2", "jobsets"),
    ("kubeflow.org/v1", "pytorchjobs"),
    ("trainer.kubeflow.org/v1alpha1", "trainjobs"),
    ("batch.volcano.sh/v1alpha1", "jobs"),
)
_SYMBOL = {
    "succeeded": "ok",
    "failed": "FAILED",
    "running": "running",
    "pending": "pending",
    "-": "-",
}


@dataclass(frozen=True)
class Board:
    """Learners x lessons: "succeeded", "failed", "running", "pending" or "-" (no job yet).
    str() is the terminal table; in a notebook it renders as an HTML table."""

    lessons: list[str]
    cells: dict[str, dict[str, str]]

    def done(self, learner: str) -> int:
        return sum(state == "succeeded" for state in self.cells[learner].values())

    def __str__(self) -> str:
        header = ["learner", *[f"lesson {n}" for n in self.lessons], "done"]
        rows = [
            [
                learner,
                *[_SYMBOL[row[n]] for n in self.lessons],
                f"{self.done(learner)}/{len(self.lessons)}",
            ]
            for learner, row in self.cells.items()
        ]
        if not self.lessons:
            return "no lesson jobs yet in " + ", ".join(self.cells)
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in [header, *rows]
        )

    def _repr_html_(self) -> str:
        colour = {
            "succeeded": "#c8e6c9",
            "failed": "#ffcdd2",
            "running": "#fff9c4",
            "pending": "#eeeeee",
            "-": "#ffffff",
        }
        head = "".join(f"<th>lesson {html.escape(n)}</th>" for n in self.lessons)
        body = "".join(
            f"<tr><td>{html.escape(learner)}</td>"
            + "".join(
                f'<td style="background:{colour[row[n]]}">{_SYMBOL[row[n]]}</td>'
                for n in self.lessons
            )
            + f"<td>{self.done(learner)}/{len(self.lessons)}</td></tr>"
            for learner, row in self.cells.items()
        )
        return f"<table><tr><th>learner</th>{head}<th>done</th></tr>{body}</table>"


def job_state(job: Manifest) -> str:
    """succeeded / failed / running / pending from a workload's status (any of the course's kinds)."""
    status = job.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    phase = ((status.get("state") or {}).get("phase")) or ""  # Volcano
    if (
        "True"
        in (conditions.get("Complete"), conditions.get("Completed"), conditions.get("Succeeded"))
        or phase == "Completed"
    ):
        return "succeeded"
    if conditions.get("Failed") == "True" or phase in ("Failed", "Aborted"):
        return "failed"
    if status.get("active") or status.get("startTime") or phase == "Running":
        return "running"
    return "pending"


def _lesson_of(job: Manifest) -> str | None:
    return ((job.get("metadata") or {}).get("labels") or {}).get(C.COURSE_LABEL)


def _kubeconfig(api: ClusterApi, namespace: str, token: str) -> str:
    cluster: dict = {"server": api.server}
    ca = api.ca_data()
    if ca:
        cluster["certificate-authority-data"] = base64.b64encode(ca.encode()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "workshop", "cluster": cluster}],
        "users": [{"name": namespace, "user": {"token": token}}],
        "contexts": [
            {
                "name": namespace,
                "context": {
                    "cluster": "workshop",
                    "user": namespace,
                    "namespace": namespace,
                    # the learner's LocalQueue (kubecourse.context.resolve_queue reads it)
                    "extensions": [{"name": QUEUE_EXTENSION, "extension": {"queue": "default"}}],
                },
            }
        ],
        "current-context": namespace,
    }
    return yaml.safe_dump(config, sort_keys=False)


def lesson_sized_quota() -> dict:
    """A learner's quota that admits the largest lesson workload (computed with kubecourse.quota
    from the lessons' own requests): {"gpus": 2, "cpu": "16", "memory": "64Gi"} today."""
    from .access import LEARNER_LESSONS, is_workload
    from .quota import format_quantity, largest_needs

    workloads = [
        o
        for lesson, part in LEARNER_LESSONS.items()
        for o in load_lesson(lesson, part=part)
        if is_workload(o)
    ]
    needs = largest_needs(workloads)
    return {
        "gpus": int(needs.get(f"requests.{C.GPU_RESOURCE}", 0)),
        "cpu": format_quantity(max(needs["requests.cpu"], needs.get("limits.cpu", 0))),
        "memory": format_quantity(
            max(needs["requests.memory"], needs.get("limits.memory", 0)), binary=True
        ),
    }


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
    if kind == "ResourceQuota" and spec.get("scopeSelector"):
        return (
            "pods at "
            + ",".join(
                v for e in spec["scopeSelector"]["matchExpressions"] for v in e.get("values", [])
            )
            + f": {spec.get('hard', {}).get('pods')}"
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


__all__ = [
    "DRY_RUN_NOTE",
    "LEARNER_LABEL",
    "NOT_CHECKED",
    "WORKSHOP_LABEL",
    "Board",
    "Workshop",
    "job_state",
    "lesson_sized_quota",
]
