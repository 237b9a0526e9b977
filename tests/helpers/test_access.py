"""The learner Role grants exactly what the lessons need: derived from the rendered manifests of
every lesson plus the helper's own API calls (recorded from the Kubernetes backend talking to the
fake API server), compared with the Role in both directions."""

from __future__ import annotations

import threading

import pytest

from kubecourse import TrainingClient, render
from kubecourse.access import (
    FAULT_RIGHTS,
    FOLLOW_VERBS,
    HELPER_RIGHTS,
    LEARNER_LESSONS,
    Right,
    is_workload,
    lesson_rights,
    right_of_request,
    rights_for_objects,
    role_rights,
    rules_for,
)
from kubecourse.backends.config import KubernetesBackendConfig
from kubecourse.backends.kubernetes import KubernetesBackend
from kubecourse.manifests import load_lesson
from kubecourse.workshop import Workshop
from tests.fakes.apiserver import FakeApiServer
from tests.guards import HANG_GUARD_S

pytestmark = pytest.mark.timeout(60)


def _learner_role(objects):
    return next(o for o in objects if o["kind"] == "Role" and o["metadata"]["name"] == "learner")


def _diff(needed: set[Right], granted: set[Right]) -> str:
    missing = sorted(map(str, needed - granted))
    extra = sorted(map(str, granted - needed))
    return f"missing: {missing}\nextra: {extra}"


@pytest.mark.parametrize(
    "source",
    ["lesson 04 manifest", "workshop render"],
)
def test_the_learner_role_grants_exactly_what_the_lessons_need(source):
    objects = load_lesson("04", part="admin") if source == "lesson 04 manifest" else None
    if objects is None:
        objects = Workshop(learners=1).render()
    granted = role_rights(_learner_role(objects))
    needed = lesson_rights()
    assert granted == needed, _diff(needed, granted)


def test_the_needed_set_comes_from_every_lessons_manifests():
    rights = set()
    for lesson, part in LEARNER_LESSONS.items():
        for obj in load_lesson(lesson, part=part):
            rights |= rights_for_objects([obj])
    # every object a learner applies is creatable, every workload followed and deletable
    for lesson, part in LEARNER_LESSONS.items():
        for obj in load_lesson(lesson, part=part):
            group = obj["apiVersion"].rpartition("/")[0]
            verbs = {r.verb for r in rights if r.group == group and r.resource in _plurals(obj)}
            assert "create" in verbs, obj["kind"]
            if is_workload(obj):
                assert set(FOLLOW_VERBS) <= verbs, obj["kind"]
    assert lesson_rights() == rights | HELPER_RIGHTS | FAULT_RIGHTS


def _plurals(obj):
    from kubecourse.access import resource_of

    return {resource_of(obj)[1]}


@pytest.mark.parametrize(
    "right",
    [
        Right("get", "", "secrets"),
        Right("list", "", "secrets"),
        Right("create", "", "pods/exec"),
        Right("delete", "", "persistentvolumeclaims"),
        Right("create", "rbac.authorization.k8s.io", "rolebindings"),
        Right("update", "", "resourcequotas"),
        Right("list", "", "nodes"),
    ],
)
def test_what_the_learner_must_not_have(right):
    assert right not in role_rights(_learner_role(load_lesson("04", part="admin")))


@pytest.mark.parametrize(
    "method, path, query, expected",
    [
        ("GET", "/api/v1/namespaces/a/pods", {}, Right("list", "", "pods")),
        ("GET", "/api/v1/namespaces/a/pods", {"watch": "true"}, Right("watch", "", "pods")),
        ("GET", "/api/v1/namespaces/a/pods/p/log", {}, Right("get", "", "pods/log")),
        ("POST", "/apis/batch/v1/namespaces/a/jobs", {}, Right("create", "batch", "jobs")),
        ("DELETE", "/apis/batch/v1/namespaces/a/jobs/j", {}, Right("delete", "batch", "jobs")),
        ("PATCH", "/apis/batch/v1/namespaces/a/jobs/j", {}, Right("patch", "batch", "jobs")),
        ("GET", "/api/v1/namespaces/a", {}, Right("get", "", "namespaces")),
        ("GET", "/api/v1/nodes", {}, Right("list", "", "nodes")),
        ("GET", "/version", {}, None),
        ("GET", "/apis/batch/v1", {}, None),
    ],
)
def test_right_of_request(method, path, query, expected):
    assert right_of_request(method, path, query) == expected


def test_rules_for_spells_the_same_rights():
    rights = lesson_rights()
    assert role_rights({"rules": rules_for(rights)}) == rights


@pytest.fixture
def api():
    with FakeApiServer() as server:
        yield server


def test_helper_rights_are_what_the_kubernetes_backend_calls(api, tmp_path):
    """Run lesson 01 through the facade on the fake API server and record every request."""

    def run(server, job):
        # Kueue admits the queued job (unsuspends it) once the helper watches for its pods.
        def later():
            server.wait_for(lambda s: s.watch_count > 0, timeout=HANG_GUARD_S)
            stored = server.get("jobs", job["metadata"]["name"], "learner-01", group="batch")
            stored["spec"]["suspend"] = False
            server.put_object(stored)
            server.run_job(stored, logs={0: ["step 1/1 loss 1.0"]})

        threading.Thread(target=later, daemon=True).start()

    api.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "learner-01"}})
    api.on_create("Job", run)
    backend = KubernetesBackend(
        KubernetesBackendConfig(
            kubeconfig=api.write_kubeconfig(tmp_path / "kubeconfig"),
            backoff_s=0.01,
            watch_chunk_s=5,
        )
    )
    objects = render("01", name="rights", namespace="learner-01", gpus=0, queue="default")
    with TrainingClient(
        backend=backend, show_kubectl=False, rendered_dir=tmp_path, namespace="learner-01"
    ) as client:
        job = client.submit(objects)
        client.status(job)  # suspended: asks Kueue why
        client.logs(job, follow=True, echo=False)
        client.wait(job, timeout_s=HANG_GUARD_S, progress=False)
        client.logs(job, echo=False)
        client.events(job)
        client.diagnose(job)
        client.delete(job)
    used = {right_of_request(r.method, r.path, r.query) for r in api.requests} - {None}
    workload = {r for r in used if (r.group, r.resource) == ("batch", "jobs")}
    assert {r.verb for r in workload} <= set(FOLLOW_VERBS) | {"create"}
    created = rights_for_objects(objects)
    others = {r for r in used - workload if r not in created}
    # every call the helper makes is covered by the Role, and the declared helper reads are real
    assert others <= HELPER_RIGHTS, sorted(map(str, others - HELPER_RIGHTS))
    doctor_only = {Right("get", "kueue.x-k8s.io", "localqueues")}
    assert HELPER_RIGHTS - doctor_only == others, sorted(map(str, HELPER_RIGHTS - others))
