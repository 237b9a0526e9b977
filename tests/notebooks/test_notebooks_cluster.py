"""The notebooks that submit jobs, a second time with BACKEND="kubernetes", against the fake cluster.

The fake cluster (tests/fakes/cluster.py: API server, Job controller, scheduler, kubelet) runs in
this process on loopback; the notebook's kernel reaches it over HTTP through the real `kubernetes`
client, found through $KUBECONFIG as on a real cluster. The notebooks' asserts are the same on both
backends (they read outputs through the facade: client.result, client.metrics, client.read_volume).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubecourse.course import execute, notebook_dir
from tests.fakes.cluster import FakeCluster
from tests.guards import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "build" / "test-notebooks-kubernetes"
CELL_TIMEOUT_S = int(HANG_GUARD_S)  # a hang guard: the smoke training cell takes ~1-2 min idle
# Every notebook that submits a job.
CLUSTER_NOTEBOOKS = [
    "02_job_on_kubernetes",
    "04_multi_node",
    "06_lora",
    "09_cost_optimization",
    "10_monitoring",
    "11_fault_diagnosis_recovery",
]


@pytest.fixture
def fake_cluster(tmp_path, monkeypatch):
    with FakeCluster(tmp_path / "cluster", max_grace_s=5.0) as cluster:
        monkeypatch.setenv("KUBECONFIG", cluster.write_kubeconfig(tmp_path / "kubeconfig"))
        yield cluster


@pytest.mark.notebook
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", CLUSTER_NOTEBOOKS)
def test_notebook_asserts_hold_on_the_fake_cluster(name, fake_cluster):
    notebook = notebook_dir() / f"{name}.ipynb"
    parameters = {"SMOKE": True, "BACKEND": "kubernetes"}
    executed = execute(notebook, OUT, parameters=parameters, cell_timeout_s=CELL_TIMEOUT_S)
    assert executed.exists()
    outcome = json.loads((OUT / "outcomes" / f"{name}.json").read_text())
    assert outcome["numbers"], f"{name} recorded no outcome"
    created = [r for r in fake_cluster.api.requests if r.method == "POST" and "/jobs" in r.path]
    assert created, "the notebook submitted no Job to the cluster"
    assert fake_cluster.api.objects("jobs", namespace="") == [], "the notebook left jobs behind"
