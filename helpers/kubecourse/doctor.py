"""`kubecourse doctor`: a preflight a learner or instructor runs before a lesson.

    kubecourse doctor                       # every lesson, the resolved namespace
    kubecourse doctor --namespace learner-07 --lesson 02

    from kubecourse.doctor import run_doctor
    report = run_doctor(ClusterApi(), namespace="learner-07", lessons=["02"])
    print(report)          # one line per check: PASS/FAIL/SKIP, what was found, the fix
    report.ok              # False when any check failed (the CLI exits 1)

What it checks: the API server answers and runs at least the minimum Kubernetes version
(cluster/versions.env); the API groups the chosen lessons' manifests use are served, at the
versions they use (Kueue, JobSet, Trainer, PyTorchJob, Volcano, Prometheus Operator); GPUs are
allocatable on some node with the GPU Operator's labels; a default and an RWX StorageClass exist;
the LocalQueue exists when a queue is configured; and, through SelfSubjectAccessReview, every
right the lessons need (kubecourse.access) in the namespace. A check the caller may not read (a
learner cannot list nodes) is SKIP with the reason, not a failure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from . import constants as C
from .access import LEARNER_LESSONS, lesson_rights
from .cluster import ClusterApi, pinned_versions
from .errors import ApiError, Forbidden, NotFound
from .manifests import load_lesson

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
# What installs each operator's API group (the fix when it is not served).
INSTALLS = {
    "kueue.x-k8s.io": "Kueue",
    "jobset.x-k8s.io": "JobSet",
    "trainer.kubeflow.org": "Kubeflow Trainer v2",
    "kubeflow.org": "the Kubeflow Training Operator v1 (PyTorchJob)",
    "batch.volcano.sh": "Volcano",
    "scheduling.volcano.sh": "Volcano",
    "monitoring.coreos.com": "kube-prometheus-stack (Prometheus Operator)",
}
# StorageClass provisioners whose volumes can be mounted ReadWriteMany by pods on several nodes.
RWX_PROVISIONERS = ("nfs", "cephfs", "efs.csi.aws.com", "filestore", "file.csi.azure.com", "lustre")
_DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"


@dataclass(frozen=True)
class Check:
    name: str
    result: str  # PASS, FAIL or SKIP
    found: str
    fix: str = ""


@dataclass
class Report:
    namespace: str
    lessons: list[str]
    checks: list[Check] = field(default_factory=list)
    note: str = ""  # set when nothing could be checked (no kubeconfig): what would be checked

    @property
    def ok(self) -> bool:
        return all(c.result != FAIL for c in self.checks)

    def add(self, name: str, ok: bool | None, found: str, fix: str = "") -> None:
        result = SKIP if ok is None else (PASS if ok else FAIL)
        self.checks.append(Check(name, result, found, "" if ok else fix))

    def __str__(self) -> str:
        if self.note:
            return self.note
        rows = [("check", "result", "found", "fix")]
        rows += [(c.name, c.result, c.found, c.fix) for c in self.checks]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [
            "  ".join(str(c).ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
            for r in rows
        ]
        failed = sum(c.result == FAIL for c in self.checks)
        verdict = "all checks passed" if not failed else f"{failed} check(s) failed"
        head = f"kubecourse doctor: namespace {self.namespace}, lessons {', '.join(self.lessons)}"
        return "\n".join([head, *map(str.rstrip, lines), verdict])

    def _repr_html_(self) -> str:
        import html

        if self.note:
            return f"<p>{html.escape(self.note)}</p>"

        colour = {PASS: "#c8e6c9", FAIL: "#ffcdd2", SKIP: "#eeeeee"}
        rows = "".join(
            f'<tr><td>{html.escape(c.name)}</td><td style="background:{colour[c.result]}">'
            f"{c.result}</td><td>{html.escape(c.found)}</td><td>{html.escape(c.fix)}</td></tr>"
            for c in self.checks
        )
        return (
            f"<table><tr><th>check</th><th>result</th><th>found</th><th>fix</th></tr>{rows}</table>"
        )


def _version_tuple(text: str) -> tuple[int, int]:
    digits = text.lstrip("v").split(".")
    return int(digits[0]), int("".join(ch for ch in digits[1] if ch.isdigit()) or 0)


def check_version(api: ClusterApi, report: Report) -> bool:
    minimum = pinned_versions()["KUBERNETES_MIN"]
    try:
        version = api.version()
    except ApiError as error:
        report.add(
            "API server", False, str(error), "check the kubeconfig and that the cluster is up"
        )
        return False
    server = version.get("gitVersion") or f"v{version.get('major')}.{version.get('minor')}"
    major, minor = str(version.get("major", "0")), str(version.get("minor", "0"))
    ok = _version_tuple(f"{major}.{minor}") >= _version_tuple(minimum)
    report.add(
        "Kubernetes version",
        ok,
        f"{server} at {api.server} (minimum {minimum})",
        f"upgrade the cluster to Kubernetes >= {minimum} (cluster/versions.env)",
    )
    return True


def lesson_groups(lessons: Iterable[str]) -> dict[str, set[str]]:
    """{API group: versions} the lessons' learner manifests use, operators' groups only."""
    groups: dict[str, set[str]] = {}
    for lesson in lessons:
        for obj in load_lesson(lesson, part=LEARNER_LESSONS.get(lesson)):
            group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
            if group in INSTALLS:
                groups.setdefault(group, set()).add(version)
            if C.KUEUE_QUEUE_LABEL in ((obj.get("metadata") or {}).get("labels") or {}):
                # a queued job needs Kueue at the version of the course's LocalQueue
                group, _, version = _local_queue_api().rpartition("/")
                groups.setdefault(group, set()).add(version)
    return groups


def _local_queue_api() -> str:
    admin = load_lesson("04", part="admin")
    return next(o["apiVersion"] for o in admin if o["kind"] == "LocalQueue")


def check_apis(api: ClusterApi, report: Report, lessons: list[str]) -> None:
    served = {
        g["name"]: [v["version"] for v in g.get("versions") or []]
        for g in api.request("GET", "/apis").get("groups") or []
    }
    for group, versions in sorted(lesson_groups(lessons).items()):
        missing = sorted(v for v in versions if v not in served.get(group, []))
        found = f"served: {', '.join(served[group])}" if group in served else "not served"
        report.add(
            f"API {group}",
            not missing,
            found,
            f"install {INSTALLS[group]} serving {group}/{', '.join(missing)} "
            "(scripts/cluster-up.sh, pinned in cluster/versions.env)",
        )


def _needs_gpus(lessons: list[str]) -> bool:
    return any(
        C.GPU_RESOURCE in str(obj)
        for lesson in lessons
        for obj in load_lesson(lesson, part=LEARNER_LESSONS.get(lesson))
    )


def _cluster_list(api: ClusterApi, report: Report, name: str, path: str) -> list[dict] | None:
    try:
        return api.list(path)
    except Forbidden as error:
        report.add(name, None, f"not allowed to read ({error.status} {error.reason})")
        return None


def check_gpus(api: ClusterApi, report: Report, lessons: list[str]) -> None:
    nodes = _cluster_list(api, report, "GPU nodes", "/api/v1/nodes")
    if nodes is None:
        return
    rows = []
    for node in nodes:
        gpus = int(((node.get("status") or {}).get("allocatable") or {}).get(C.GPU_RESOURCE, 0))
        labels = (node.get("metadata") or {}).get("labels") or {}
        if gpus:
            product = labels.get("nvidia.com/gpu.product", "no gpu.product label")
            rows.append(f"{node['metadata']['name']}={gpus} ({product})")
    labelled = any("nvidia.com/gpu.present" in (n["metadata"].get("labels") or {}) for n in nodes)
    needed = _needs_gpus(lessons)
    report.add(
        "GPU nodes",
        bool(rows and labelled) or not needed,
        "; ".join(rows) or "no node has nvidia.com/gpu allocatable",
        "install the NVIDIA GPU Operator (scripts/cluster-up.sh --gpu) or run the lessons with gpus=0",
    )


def check_storage(api: ClusterApi, report: Report) -> None:
    classes = _cluster_list(api, report, "StorageClasses", "/apis/storage.k8s.io/v1/storageclasses")
    if classes is None:
        return
    default = [
        c["metadata"]["name"]
        for c in classes
        if (c["metadata"].get("annotations") or {}).get(_DEFAULT_CLASS) == "true"
    ]
    rwx = [
        c["metadata"]["name"]
        for c in classes
        if any(p in str(c.get("provisioner", "")) for p in RWX_PROVISIONERS)
    ]
    report.add(
        "default StorageClass",
        bool(default),
        ", ".join(default) or "none marked default",
        f"annotate one class with {_DEFAULT_CLASS}=true",
    )
    report.add(
        "RWX StorageClass",
        bool(rwx),
        ", ".join(rwx) or "none (provisioners: " + ", ".join(RWX_PROVISIONERS) + ")",
        "install the NFS provisioner (scripts/cluster-up.sh installs it where none exists)",
    )


def check_queue(api: ClusterApi, report: Report, namespace: str, queue: str) -> None:
    if not queue:
        report.add("LocalQueue", None, "no queue configured (jobs are not sent through Kueue)")
        return
    path = f"/apis/{_local_queue_api()}/namespaces/{namespace}/localqueues/{queue}"
    try:
        found = api.request("GET", path)
        report.add(
            "LocalQueue",
            True,
            f"{namespace}/{queue} -> ClusterQueue {found.get('spec', {}).get('clusterQueue')}",
        )
    except NotFound:
        report.add(
            "LocalQueue",
            False,
            f"{namespace}/{queue} not found",
            "create it (kubecourse workshop up) or set KUBECOURSE_QUEUE to an existing one",
        )


def check_rights(api: ClusterApi, report: Report, namespace: str, lessons: list[str]) -> None:
    for right in sorted(lesson_rights(lessons)):
        allowed = api.can_i(right.verb, right.group, right.resource, namespace)
        report.add(
            f"can {right.verb} {right.resource}" + (f".{right.group}" if right.group else ""),
            allowed,
            f"{'allowed' if allowed else 'denied'} in {namespace}",
            "bind the learner Role (manifests/04-production/admin/rbac-learner.yaml)",
        )


def run_doctor(
    api: ClusterApi, *, namespace: str, lessons: Iterable[str] | None = None, queue: str = ""
) -> Report:
    """Every check for `lessons` (manifest lesson numbers; default all the learner runs)."""
    chosen = sorted(LEARNER_LESSONS) if lessons is None else [str(n).zfill(2) for n in lessons]
    unknown = [n for n in chosen if n not in LEARNER_LESSONS]
    if unknown:
        from .errors import OptionError

        raise OptionError("lesson", f"no lesson {unknown}; choose from {sorted(LEARNER_LESSONS)}")
    report = Report(namespace, chosen)
    if not check_version(api, report):
        return report
    check_apis(api, report, chosen)
    check_gpus(api, report, chosen)
    check_storage(api, report)
    check_queue(api, report, namespace, queue)
    check_rights(api, report, namespace, chosen)
    return report


def doctor_without_cluster() -> str:
    """What notebook 00 prints when no kubeconfig is there: what doctor would check, nothing sent."""
    from .env import kubeconfig_path

    where = kubeconfig_path()
    if where is not None:
        return ""
    return (
        "kubecourse doctor: no kubeconfig ($KUBECONFIG or ~/.kube/config), nothing checked on a "
        "cluster. With one it checks: the API server and Kubernetes >= "
        f"{pinned_versions()['KUBERNETES_MIN']}, the API groups of the lessons "
        f"({', '.join(sorted(lesson_groups(LEARNER_LESSONS)))}), GPU nodes, a default and an RWX "
        "StorageClass, the LocalQueue, and every right the lessons need "
        f"({len(lesson_rights())} SelfSubjectAccessReviews). The local backend needs none of it."
    )


def preflight(namespace: str = "", lessons: Iterable[str] | None = None, queue: str = "") -> Report:
    """What notebook 00 shows: the doctor's table on the kubeconfig's cluster, or, without a
    kubeconfig, a note saying what it would check (nothing fails: the local backend needs none)."""
    from .context import resolve_namespace, resolve_queue

    namespace = resolve_namespace(namespace)
    chosen = sorted(LEARNER_LESSONS) if lessons is None else [str(n).zfill(2) for n in lessons]
    note = doctor_without_cluster()
    if note:
        return Report(namespace, chosen, note=note)
    api = ClusterApi(timeout_s=5.0)
    try:
        return run_doctor(api, namespace=namespace, lessons=chosen, queue=resolve_queue(queue))
    finally:
        api.close()


__all__ = ["Check", "Report", "doctor_without_cluster", "lesson_groups", "preflight", "run_doctor"]
