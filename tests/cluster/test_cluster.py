"""The Kubernetes backend's flows against the real cluster in $KUBECONFIG (skipped when unset).

    KUBECONFIG=~/.kube/config make test          # or: pytest -m cluster
Uses the namespace $KUBECOURSE_TEST_NAMESPACE (default "default") and a small pinned python image.
"""

from __future__ import annotations

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
