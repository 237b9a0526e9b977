"""`kubecourse doctor` against the fake API server: every check passes on a complete cluster, and
each broken piece fails its own line with the fix (table-driven), the exit code says so."""

from __future__ import annotations

import socket

import pytest

from kubecourse.access import lesson_rights
from kubecourse.backends.config import KubernetesBackendConfig
from kubecourse.backends.kubernetes import KubernetesBackend
from kubecourse.cli import main
from kubecourse.cluster import ClusterApi
from kubecourse.doctor import FAIL, PASS, SKIP, doctor_without_cluster, run_doctor
from kubecourse.workshop import Workshop
from tests.fakes.apiserver import FakeApiServer
from tests.fakes.cluster_api import BUILTIN_GROUPS, OPERATOR_GROUPS, FakeCluster

pytestmark = pytest.mark.timeout(90)


def _results(report):
    return {c.name: c.result for c in report.checks}


@pytest.fixture
def cluster(request):
    settings = getattr(request, "param", {})
    with FakeApiServer() as api:
        FakeCluster(api, **settings).install()
        yield api


def _doctor(api, tmp_path, **kwargs):
    api_client = ClusterApi(api.write_kubeconfig(tmp_path / "admin"))
    return run_doctor(api_client, namespace=kwargs.pop("namespace", "kubecourse"), **kwargs)


def test_a_complete_cluster_passes_every_check(cluster, tmp_path):
    report = _doctor(cluster, tmp_path)
    assert report.ok, str(report)
    results = _results(report)
    assert results["Kubernetes version"] == PASS and results["GPU nodes"] == PASS
    assert results["LocalQueue"] == SKIP  # no queue configured
    assert sum(name.startswith("can ") for name in results) == len(lesson_rights())
    assert {"API kueue.x-k8s.io", "API jobset.x-k8s.io", "API batch.volcano.sh"} <= set(results)
    assert "all checks passed" in str(report)


def _without(group):
    return {**BUILTIN_GROUPS, **{g: v for g, v in OPERATOR_GROUPS.items() if g != group}}


@pytest.mark.parametrize(
    "cluster, lessons, failing, fix",
    [
        ({"version": ("1", "29")}, None, "Kubernetes version", "Kubernetes >= 1.31"),
        ({"groups": _without("kueue.x-k8s.io")}, ["04"], "API kueue.x-k8s.io", "install Kueue"),
        (
            {"groups": {**BUILTIN_GROUPS, **OPERATOR_GROUPS, "kueue.x-k8s.io": ["v1beta1"]}},
            ["04"],
            "API kueue.x-k8s.io",
            "v1beta2",
        ),
        ({"groups": _without("jobset.x-k8s.io")}, ["02"], "API jobset.x-k8s.io", "JobSet"),
        (
            {"groups": _without("monitoring.coreos.com")},
            ["05"],
            "API monitoring.coreos.com",
            "prometheus",
        ),
        ({"gpu_nodes": 0}, ["01"], "GPU nodes", "GPU Operator"),
        ({"storage_classes": (("standard", True, False),)}, ["01"], "RWX StorageClass", "NFS"),
        ({"storage_classes": (("nfs", False, True),)}, ["01"], "default StorageClass", "annotate"),
    ],
    indirect=["cluster"],
)
def test_each_missing_piece_fails_its_line_with_the_fix(cluster, lessons, failing, fix, tmp_path):
    report = _doctor(cluster, tmp_path, lessons=lessons)
    results = _results(report)
    assert results[failing] == FAIL, str(report)
    assert [c.name for c in report.checks if c.result == FAIL] == [failing]
    line = next(c for c in report.checks if c.name == failing)
    assert fix.lower() in line.fix.lower()
    assert not report.ok


def test_a_missing_local_queue_fails(cluster, tmp_path):
    report = _doctor(cluster, tmp_path, lessons=["01"], queue="team-queue")
    assert _results(report)["LocalQueue"] == FAIL


def test_a_learner_passes_in_their_namespace_and_not_elsewhere(cluster, tmp_path):
    backend = KubernetesBackend(
        KubernetesBackendConfig(kubeconfig=cluster.write_kubeconfig(tmp_path / "a"))
    )
    ws = Workshop(learners=2)
    ws.up(backend, dry_run=False)
    creds = ws.credentials(ClusterApi(cluster.write_kubeconfig(tmp_path / "a")), tmp_path / "c")
    learner = ClusterApi(creds[0]["kubeconfig"])
    mine = run_doctor(learner, namespace="learner-01", queue="default")
    results = _results(mine)
    assert mine.ok, str(mine)
    assert results["GPU nodes"] == SKIP and results["LocalQueue"] == PASS  # cannot list nodes
    theirs = run_doctor(learner, namespace="learner-02", lessons=["01"])
    assert not theirs.ok
    assert all(c.result == FAIL for c in theirs.checks if c.name.startswith("can "))


def test_an_unreachable_server_is_one_failed_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "k"
    config.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "current-context: x\n"
    )
    report = run_doctor(ClusterApi(str(config), timeout_s=2), namespace="kubecourse")
    assert [(c.name, c.result) for c in report.checks] == [("API server", FAIL)]
    assert main(["doctor", "--kubeconfig", str(config)]) == 1


def test_cli_prints_the_table_and_exits_by_the_result(cluster, tmp_path, capsys):
    config = cluster.write_kubeconfig(tmp_path / "admin")
    assert main(["doctor", "--kubeconfig", config, "--lesson", "01", "--namespace", "x"]) == 0
    out = capsys.readouterr().out
    assert "check" in out and "fix" in out and "PASS" in out and "lessons 01" in out
    assert main(["doctor", "--kubeconfig", config, "--lesson", "01", "--queue", "nope"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_without_a_kubeconfig_doctor_says_what_it_would_check(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("HOME", str(tmp_path))
    text = doctor_without_cluster()
    assert "nothing checked" in text and "kueue.x-k8s.io" in text and "1.31" in text
