"""The Kubernetes backend's flows against the real cluster in $KUBECONFIG (skipped when unset).

    KUBECONFIG=~/.kube/config make test          # or: pytest -m cluster
Uses the namespace $KUBECOURSE_TEST_NAMESPACE (default "default") and a small pinned python image.
submit -> wait -> result -> delete runs for a Job, an Indexed Job with its headless Service and a
JobSet; a kind the cluster does not serve (no CRD) or a cluster without a Ready node is skipped
with the reason printed.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from kubecourse import TrainingClient, render
from kubecourse import constants as C

from ..helpers.jobs import job

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]
NAMESPACE = os.environ.get("KUBECOURSE_TEST_NAMESPACE", "default")
IMAGE = "python:3.11.11-slim"


@pytest.fixture
def client(tmp_path):
    with TrainingClient(
        backend="kubernetes", namespace=NAMESPACE, show_kubectl=False, rendered_dir=tmp_path
    ) as c:
        yield c


def test_lesson_manifests_pass_server_side_dry_run(client):
    ref = client.submit(
        render("01", name=f"dry-{uuid.uuid4().hex[:6]}", namespace=NAMESPACE), dry_run=True
    )
    assert ref.dry_run


def test_submit_wait_logs_events_delete(client):
    manifest = job(f"smoke-{uuid.uuid4().hex[:6]}", "print('hello from the cluster')")
    manifest["metadata"]["namespace"] = NAMESPACE
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = IMAGE
    manifest["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 1000
    ref = client.submit([manifest])
    try:
        status = client.wait(ref, timeout_s=480, progress=False)
        assert status.phase == C.SUCCEEDED, status
        assert [line.text for line in client.logs(ref, echo=False)] == ["hello from the cluster"]
        assert client.events(ref)
    finally:
        client.delete(ref)


# --- submit -> wait -> result -> delete, for each kind the lessons run on a cluster ---------------

RESULT_CODE = (
    "import json, os; index = int(os.environ.get('JOB_COMPLETION_INDEX', '0')); "
    "print(f'hello from index {index}'); "
    "print('result ' + json.dumps({'index': index, 'ok': True}, separators=(',', ':'), "
    "sort_keys=True)) if index == 0 else None"
)


def _small(name: str, **spec) -> dict:
    manifest = job(name, RESULT_CODE, **spec)
    manifest["metadata"]["namespace"] = NAMESPACE
    pod = manifest["spec"]["template"]["spec"]
    pod["containers"][0]["image"] = IMAGE
    pod["securityContext"]["runAsUser"] = 1000
    return manifest


def _headless(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"clusterIP": "None", "selector": {C.JOB_NAME_LABEL: name},
                 "ports": [{"name": "rendezvous", "port": 29500}]},
    }  # fmt: skip


def _jobset(name: str) -> dict:
    inner = _small(name, completionMode="Indexed", completions=2, parallelism=2)["spec"]
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicatedJobs": [{"name": "workers", "replicas": 1, "template": {"spec": inner}}]
        },
    }


def _skip_unless_served(client, api_path: str, what: str) -> None:
    from kubecourse import NotFound

    try:
        client.backend._request("GET", api_path)
    except NotFound:
        print(f"skipped: the cluster does not serve {api_path} ({what} is not installed)")
        pytest.skip(f"the cluster lacks the {what} CRD ({api_path})")


def _skip_without_a_node(client) -> None:
    nodes = client.backend._request("GET", "/api/v1/nodes").get("items") or []
    ready = [
        n for n in nodes
        if not (n.get("spec") or {}).get("unschedulable")
        and any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in (n.get("status") or {}).get("conditions") or [])
    ]  # fmt: skip
    if not ready:
        print(f"skipped: no Ready, schedulable node among {len(nodes)} node(s)")
        pytest.skip("the cluster has no Ready, schedulable node")


def _result(client, ref) -> dict | None:
    """client.result (issue 9's outputs through the facade) when present, else the result line."""
    if hasattr(client, "result"):
        return client.result(ref)
    texts = [line.text for line in client.logs(ref, echo=False)]
    found = [t.removeprefix("result ") for t in texts if t.startswith("result ")]
    return json.loads(found[-1]) if found else None


CLUSTER_KINDS = [
    # (id, build the objects, an API path the kind needs, what provides it, pods)
    ("job", lambda n: [_small(n)], None, None, 1),
    ("indexed-job-and-service",
     lambda n: [_headless(n), _small(n, completionMode="Indexed", completions=2, parallelism=2)],
     None, None, 2),
    ("jobset", lambda n: [_jobset(n)], "/apis/jobset.x-k8s.io/v1alpha2", "JobSet", 2),
]  # fmt: skip


@pytest.mark.parametrize(
    "build, api_path, what, pods", [c[1:] for c in CLUSTER_KINDS], ids=[c[0] for c in CLUSTER_KINDS]
)
def test_submit_wait_result_delete(client, build, api_path, what, pods):
    if api_path:
        _skip_unless_served(client, api_path, what)
    _skip_without_a_node(client)
    name = f"kinds-{uuid.uuid4().hex[:6]}"
    ref = client.submit(build(name))
    try:
        status = client.wait(ref, timeout_s=480, progress=False)
        assert status.phase == C.SUCCEEDED and len(status.pods) == pods, status
        assert _result(client, ref) == {"index": 0, "ok": True}
        assert sorted(p.index for p in status.pods) == (list(range(pods)) if pods > 1 else [None])
    finally:
        client.delete(ref, missing_ok=True)
    with pytest.raises(Exception) as gone:
        client.status(ref)
    assert getattr(gone.value, "status", None) == 404
    if any(o["kind"] == "Service" for o in build(name)):
        assert client.backend.get_objects([_headless(name)]) == [None]  # taken along with the job
