"""Which API rights a learner needs: derived from the lessons' manifests and the helper's calls.

    from kubecourse.access import lesson_rights, role_rights
    needed = lesson_rights(["01", "02"])           # {Right("create", "batch", "jobs"), ...}
    granted = role_rights(role_manifest)            # what a Role's rules grant, rule by rule
    needed - granted                                # what the learner would be refused

A learner applies a lesson's manifests (one `create` per object; a server-side dry run needs the
same verb), follows the workload (get/list/watch), reads its pods, logs and events, and deletes it
at the end with what its submit created (not the shared PVCs); the fault lessons also delete
single pods. Objects labelled
`course.kubecourse.dev/audience: admin` are the cluster admin's, not the learner's. `kubecourse
doctor` asks the API server (SelfSubjectAccessReview) about each right; a test compares the
learner Role of lesson 04 with this set, so a missing right and a surplus one both fail.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from . import constants as C
from .manifests import Manifest, load_lesson

# Label that marks an object a cluster admin applies (a learner's Role never needs to create it).
AUDIENCE_LABEL = "course.kubecourse.dev/audience"
# The lessons (manifests/NN-*) a learner runs, with the part of lesson 04 that is the learner's.
LEARNER_LESSONS: dict[str, str | None] = {
    "01": None,
    "02": None,
    "03": None,
    "04": "jobs",
    "05": None,
}
# Lessons whose notebooks kill or preempt single pods (notebooks 09 and 11 run lessons 01/04 jobs).
FAULT_LESSONS = ("01", "04")
# What the helper does with a workload after creating it: follow (get/list/watch) and delete it.
FOLLOW_VERBS = ("get", "list", "watch", "delete")
# What it does with a workload's other objects, PVCs excepted (their data outlives the job).
DEPENDENCY_VERBS = ("patch", "delete")


class Right(NamedTuple):
    """One (verb, API group, resource) triple, as RBAC and SelfSubjectAccessReview spell it."""

    verb: str
    group: str
    resource: str

    def __str__(self) -> str:
        group = self.group or "core"
        return f"{self.verb} {self.resource} ({group})"


# The reads behind the facade's status/wait/logs/events on every backend that talks to a cluster
# (tests/helpers/test_access.py records them from the Kubernetes backend's requests to the fake
# API server and fails when they drift), plus the doctor's look at the learner's LocalQueue.
HELPER_RIGHTS = frozenset(
    {
        Right("list", "", "pods"),
        Right("watch", "", "pods"),
        Right("get", "", "pods/log"),
        Right("list", "", "events"),
        # why a queued (suspended) job waits: Kueue's Workload for it
        Right("list", "kueue.x-k8s.io", "workloads"),
        Right("get", "kueue.x-k8s.io", "localqueues"),
    }
)
FAULT_RIGHTS = frozenset({Right("delete", "", "pods")})


def resource_of(obj: Manifest) -> tuple[str, str]:
    """(API group, REST plural) of an object; a Volcano Job is `jobs` in batch.volcano.sh."""
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    kind = obj.get("kind", "")
    plural = C.RESOURCES[kind][0] if kind in C.RESOURCES else kind.lower() + "s"
    return group, plural


def is_workload(obj: Manifest) -> bool:
    """A Job-like object whose pods the helper follows (batch/v1 Job, JobSet, PyTorchJob,
    TrainJob, Volcano Job)."""
    return obj.get("kind") in C.WORKLOAD_KINDS


def is_admin_object(obj: Manifest) -> bool:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(AUDIENCE_LABEL) == "admin"


def rights_for_objects(objects: Iterable[Manifest]) -> set[Right]:
    """create for every learner object; the follow verbs for every workload; patch (owner) and
    delete for the other objects except PVCs, whose data is shared by every run."""
    rights: set[Right] = set()
    for obj in objects:
        if is_admin_object(obj):
            continue
        group, plural = resource_of(obj)
        rights.add(Right("create", group, plural))
        if is_workload(obj):
            rights.update(Right(verb, group, plural) for verb in FOLLOW_VERBS)
        elif obj.get("kind") != "PersistentVolumeClaim":
            # submit makes the workload their owner (a merge patch of ownerReferences), so
            # deleting the job takes them along; delete(job) and a failed submit delete them
            rights.update(Right(verb, group, plural) for verb in DEPENDENCY_VERBS)
    return rights


def lesson_rights(lessons: Iterable[str] | None = None) -> set[Right]:
    """Every right the given lessons (default: all the learner runs) need, helper calls included."""
    chosen = list(LEARNER_LESSONS) if lessons is None else [str(n).zfill(2) for n in lessons]
    rights = set(HELPER_RIGHTS)
    for lesson in chosen:
        rights |= rights_for_objects(load_lesson(lesson, part=LEARNER_LESSONS.get(lesson)))
        if lesson in FAULT_LESSONS:
            rights |= FAULT_RIGHTS
    return rights


def role_rights(role: Manifest) -> set[Right]:
    """What a Role's (or ClusterRole's) rules grant, one Right per (verb, group, resource)."""
    rights = set()
    for rule in role.get("rules") or []:
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                rights.update(Right(verb, group, resource) for verb in rule.get("verbs") or [])
    return rights


def rules_for(rights: Iterable[Right]) -> list[Manifest]:
    """The fewest-rules spelling of a set of rights: one rule per (group, verbs) combination."""
    by_resource: dict[tuple[str, str], set[str]] = {}
    for right in rights:
        by_resource.setdefault((right.group, right.resource), set()).add(right.verb)
    by_verbs: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (group, resource), verbs in sorted(by_resource.items()):
        by_verbs.setdefault((group, tuple(sorted(verbs))), []).append(resource)
    return [
        {"apiGroups": [group], "resources": resources, "verbs": list(verbs)}
        for (group, verbs), resources in by_verbs.items()
    ]


_METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def right_of_request(method: str, path: str, query: dict[str, str] | None = None) -> Right | None:
    """The RBAC right an API request needs, from its method and path (None for discovery paths):
    GET /api/v1/namespaces/ns/pods?watch=true -> Right("watch", "", "pods")."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]  # namespaces/<ns>/<plural>[/<name>[/<sub>]]
    if not rest:
        return None
    resource = rest[0] + (f"/{rest[2]}" if len(rest) >= 3 else "")
    if method == "GET":
        if str((query or {}).get("watch", "")).lower() in ("true", "1"):
            verb = "watch"
        else:
            verb = "get" if len(rest) >= 2 else "list"
    else:
        verb = _METHOD_VERBS.get(method, method.lower())
    return Right(verb, group, resource)


__all__ = [
    "AUDIENCE_LABEL",
    "FAULT_RIGHTS",
    "HELPER_RIGHTS",
    "LEARNER_LESSONS",
    "Right",
    "lesson_rights",
    "right_of_request",
    "role_rights",
    "rights_for_objects",
    "rules_for",
]
