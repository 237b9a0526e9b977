"""The workshop on a (fake) real server: lesson-sized quota, server dry run without a 404 crash,
per-learner credentials from the TokenRequest API that really let a learner run the lessons, the
progress board, idempotent clean-up."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import yaml

from kubecourse import Forbidden, TrainingClient, render
from kubecourse.access import LEARNER_LESSONS, is_workload
from kubecourse.backends.config import KubernetesBackendConfig
from kubecourse.backends.kubernetes import KubernetesBackend
from kubecourse.cli import main
from kubecourse.cluster import ClusterApi
from kubecourse.manifests import load_lesson, object_id
from kubecourse.quota import how_many_fit
from kubecourse.workshop import DRY_RUN_NOTE, NOT_CHECKED, Workshop, job_state
from tests.fakes.apiserver import FakeApiServer
from tests.fakes.cluster_api import FakeCluster

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def api():
    with FakeApiServer() as server:
        FakeCluster(server).install()
        yield server


@pytest.fixture
def kubeconfig(api, tmp_path):
    return api.write_kubeconfig(tmp_path / "admin.kubeconfig")


@pytest.fixture
def backend(kubeconfig):
    backend = KubernetesBackend(KubernetesBackendConfig(kubeconfig=kubeconfig, backoff_s=0.01))
    yield backend
    backend.close()


def _learner_workloads():
    return [
        (lesson, o)
        for lesson, part in LEARNER_LESSONS.items()
        for o in load_lesson(lesson, part=part)
        if is_workload(o)
    ]


@pytest.mark.parametrize("lesson, workload", _learner_workloads(), ids=lambda v: str(v)[:40])
def test_the_default_quota_admits_every_lesson_workload(lesson, workload):
    objects = Workshop(learners=1).render()
    quota = next(o for o in objects if o["metadata"]["name"] == "learner-quota")
    answer = how_many_fit(quota, workload)
    assert answer["fits"] is None or answer["fits"] >= 1, (lesson, object_id(workload), answer)


def test_the_default_quota_is_the_largest_lesson_not_more():
    ws = Workshop(learners=1)
    hard = next(o for o in ws.render() if o["metadata"]["name"] == "learner-quota")["spec"]["hard"]
    # the multi-node lesson (2 pods x 8 cpu, 32Gi, 1 GPU) is the largest: it fits exactly once
    fits = [how_many_fit({"spec": {"hard": hard}}, w)["fits"] for _, w in _learner_workloads()]
    assert 1 in fits
    assert (ws.gpus, ws.cpu, ws.memory) == (2, "16", "64Gi")


def test_server_dry_run_on_a_real_server_explains_instead_of_crashing(api, backend, capsys):
    ws = Workshop(learners=2)
    dry = ws.up(backend, dry_run=True)
    inside = {k: r for k, r in dry.items() if "@learner" in k}
    assert set(inside.values()) == {NOT_CHECKED}
    assert {r for k, r in dry.items() if k not in inside} == {"dry run"}
    assert api.get("namespaces", "learner-01") is None
    # namespaces first: created for real, everything else checked by the server, not stored
    dry = ws.up(backend, dry_run=True, create_namespaces=True)
    assert {r for k, r in dry.items() if k.startswith("Namespace/")} == {"created"}
    assert {r for k, r in dry.items() if not k.startswith("Namespace/")} == {"dry run"}
    assert api.get("resourcequotas", "learner-quota", "learner-01") is None
    assert set(ws.down(backend).values()) <= {"deleted", "absent"}
    assert set(ws.down(backend).values()) == {"absent"}  # idempotent


def test_cli_server_dry_run_prints_the_limits(api, kubeconfig, capsys):
    args = ["workshop", "up", "--learners", "1", "--apply", "--backend", "kubernetes"]
    assert main([*args, "--server-dry-run", "--kubeconfig", kubeconfig]) == 0
    out = capsys.readouterr().out
    assert NOT_CHECKED in out and DRY_RUN_NOTE in out


@pytest.fixture
def workshop_up(api, backend):
    ws = Workshop(learners=2)
    assert set(ws.up(backend, dry_run=False).values()) == {"created"}
    return ws


def test_creds_give_each_learner_a_working_expiring_kubeconfig(
    api, workshop_up, kubeconfig, tmp_path
):
    rows = workshop_up.credentials(ClusterApi(kubeconfig), tmp_path / "creds", expiry_s=7200)
    assert [r["learner"] for r in rows] == ["learner-01", "learner-02"]
    for row in rows:
        config = yaml.safe_load(open(row["kubeconfig"]))
        assert config["contexts"][0]["context"]["namespace"] == row["learner"]
        left = datetime.strptime(row["expires"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        assert 7000 < (left - datetime.now(timezone.utc)).total_seconds() <= 7200
        assert (tmp_path / "creds" / f"{row['learner']}.kubeconfig").stat().st_mode & 0o077 == 0
    mine = ClusterApi(rows[0]["kubeconfig"])
    assert mine.can_i("create", "batch", "jobs", "learner-01")
    assert mine.can_i("create", "", "services", "learner-01")
    assert not mine.can_i("create", "batch", "jobs", "learner-02")
    assert not mine.can_i("get", "", "secrets", "learner-01")
    assert not mine.can_i("create", "", "pods/exec", "learner-01")


def test_a_learner_runs_the_multi_node_lesson_with_their_kubeconfig(
    api, workshop_up, kubeconfig, tmp_path
):
    """The failure the issue reports (`services is forbidden`) cannot come back."""
    row = workshop_up.credentials(ClusterApi(kubeconfig), tmp_path / "creds")[0]
    learner = KubernetesBackend(
        KubernetesBackendConfig(kubeconfig=row["kubeconfig"], backoff_s=0.01)
    )
    objects = [
        o
        for o in render("02", namespace="learner-01")
        if o["kind"] in ("PersistentVolumeClaim", "Service", "Job")
    ]
    with TrainingClient(
        backend=learner, show_kubectl=False, rendered_dir=tmp_path, namespace="learner-01"
    ) as client:
        job = client.submit(objects)
        client.status(job)
        client.delete(job)
        with pytest.raises(Forbidden) as info:
            client.submit(
                [{**o, "metadata": {**o["metadata"], "namespace": "learner-02"}} for o in objects]
            )
    assert info.value.status == 403 and "cannot create resource" in str(info.value)


def _job(name, namespace, lesson, status):
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"course.kubecourse.dev/lesson": lesson},
        },
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x:1"}]}
            }
        },
        "status": status,
    }


DONE = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}
FAILED = {"conditions": [{"type": "Failed", "status": "True"}], "failed": 1}


@pytest.mark.parametrize(
    "status, state",
    [
        (DONE, "succeeded"),
        (FAILED, "failed"),
        ({"active": 1}, "running"),
        ({}, "pending"),
        ({"state": {"phase": "Completed"}}, "succeeded"),
    ],
)
def test_job_state(status, state):
    assert job_state({"status": status}) == state


def test_status_board_from_the_jobs_labels(api, workshop_up, kubeconfig, capsys):
    for obj in (
        _job("a", "learner-01", "01", DONE),
        _job("b", "learner-01", "02", FAILED),
        _job("c", "learner-01", "02", DONE),  # a later retry succeeded
        _job("d", "learner-02", "01", {"active": 1}),
        _job("e", "default", "01", DONE),  # not a learner's
    ):
        api.put_object(obj)
    board = workshop_up.board(workshop_up.jobs(ClusterApi(kubeconfig)))
    assert board.cells == {
        "learner-01": {"01": "succeeded", "02": "succeeded"},
        "learner-02": {"01": "running", "02": "-"},
    }
    assert "2/2" in str(board) and "0/2" in str(board)
    assert board._repr_html_().count("<tr>") == 3
    assert main(["workshop", "status", "--learners", "2", "--kubeconfig", kubeconfig]) == 0
    assert "learner-02" in capsys.readouterr().out


def test_cli_creds(api, workshop_up, kubeconfig, tmp_path, capsys):
    out = tmp_path / "k"
    assert (
        main(
            ["workshop", "creds", "--learners", "2", "--kubeconfig", kubeconfig, "--out", str(out)]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "learner-01.kubeconfig",
        "learner-02.kubeconfig",
    ]
