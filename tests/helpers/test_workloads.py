"""The kind table of the Kubernetes backend: ranks and phases read from API objects (no server)."""

from __future__ import annotations

import pytest

from kubecourse import constants as C
from kubecourse.backends import workloads as W


def _pod(labels: dict, phase: str = "Running", **status) -> dict:
    return {"metadata": {"name": "p", "labels": labels}, "spec": {"nodeName": "n"},
            "status": {"phase": phase, **status}}  # fmt: skip


JOBSET = {"spec": {"replicatedJobs": [
    {"name": "driver", "replicas": 1, "template": {"spec": {"parallelism": 1}}},
    {"name": "workers", "replicas": 2, "template": {"spec": {"parallelism": 3}}},
]}}  # fmt: skip
PYTORCHJOB = {
    "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1}, "Worker": {"replicas": 3}}}
}
VOLCANO = {"spec": {"tasks": [{"name": "ps", "replicas": 2}, {"name": "worker", "replicas": 4}]}}

RANKS = [
    # (id, kind key, workload, pod labels, rank)
    ("Job index", ("batch", "Job"), {}, {C.COMPLETION_INDEX_ANNOTATION: "3"}, 3),
    ("Job not indexed", ("batch", "Job"), {}, {}, None),
    ("JobSet first rjob", ("jobset.x-k8s.io", "JobSet"), JOBSET,
     {W.JOBSET_RJOB_LABEL: "driver", W.JOBSET_JOB_INDEX_LABEL: "0", C.COMPLETION_INDEX_ANNOTATION: "0"}, 0),
    ("JobSet second replica of the second rjob", ("jobset.x-k8s.io", "JobSet"), JOBSET,
     {W.JOBSET_RJOB_LABEL: "workers", W.JOBSET_JOB_INDEX_LABEL: "1", C.COMPLETION_INDEX_ANNOTATION: "2"},
     1 + 3 + 2),
    ("PyTorchJob master", ("kubeflow.org", "PyTorchJob"), PYTORCHJOB,
     {W.PYTORCHJOB_TYPE_LABEL: "master", W.PYTORCHJOB_INDEX_LABEL: "0"}, 0),
    ("PyTorchJob worker 2", ("kubeflow.org", "PyTorchJob"), PYTORCHJOB,
     {W.PYTORCHJOB_TYPE_LABEL: "worker", W.PYTORCHJOB_INDEX_LABEL: "2"}, 3),
    ("TrainJob node", ("trainer.kubeflow.org", "TrainJob"), {},
     {W.JOBSET_RJOB_LABEL: "node", C.COMPLETION_INDEX_ANNOTATION: "1"}, 1),
    ("TrainJob initializer has no rank", ("trainer.kubeflow.org", "TrainJob"), {},
     {W.JOBSET_RJOB_LABEL: "dataset-initializer", C.COMPLETION_INDEX_ANNOTATION: "0"}, None),
    ("Volcano second task", ("batch.volcano.sh", "Job"), VOLCANO,
     {W.VOLCANO_TASK_LABEL: "worker", W.VOLCANO_INDEX_LABEL: "1"}, 3),
]  # fmt: skip


@pytest.mark.parametrize(
    "key, workload, labels, rank", [r[1:] for r in RANKS], ids=[r[0] for r in RANKS]
)
def test_rank_of_a_pod_by_its_controllers_labels(key, workload, labels, rank):
    assert W.KINDS[key].rank(workload, _pod(labels)) == rank


@pytest.mark.parametrize(
    "kind, api_version, group",
    [("Job", "", "batch"), ("Job", "batch/v1", "batch"), ("Job", "batch.volcano.sh/v1alpha1",
     "batch.volcano.sh"), ("JobSet", "", "jobset.x-k8s.io"), ("TrainJob", "", "trainer.kubeflow.org")],
)  # fmt: skip
def test_kind_of_a_ref(kind, api_version, group):
    assert W.kind_of(kind, api_version).group == group


def test_an_unknown_kind_names_the_kinds_it_follows():
    with pytest.raises(ValueError, match="it follows Job \\(batch/v1\\), JobSet"):
        W.kind_of("RayJob", "ray.io/v1")


JOB = W.KINDS[("batch", "Job")]
PHASES = [
    # (id, job status, pods, phase, reason)
    ("complete", {"conditions": [{"type": "Complete", "status": "True"}]}, [], C.SUCCEEDED, ""),
    ("failed wins over a stale Running pod",
     {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]},
     [_pod({})], C.FAILED, "DeadlineExceeded"),
    ("active but unscheduled is Pending", {"active": 1},
     [_pod({}, "Pending", conditions=[{"type": "PodScheduled", "status": "False",
                                       "reason": "Unschedulable", "message": "0/1 nodes"}])],
     C.PENDING, "Unschedulable"),
    ("a running pod is Running", {"active": 1}, [_pod({})], C.RUNNING, ""),
    ("no pod yet", {}, [], C.PENDING, "NoPods"),
    ("a condition that is False does not count",
     {"conditions": [{"type": "Complete", "status": "False"}]}, [], C.PENDING, "NoPods"),
]  # fmt: skip


@pytest.mark.parametrize(
    "status, pods, phase, reason", [p[1:] for p in PHASES], ids=[p[0] for p in PHASES]
)
def test_phase_and_reason_of_a_job(status, pods, phase, reason):
    job = {"metadata": {"name": "j"}, "spec": {}, "status": status}
    got = W.workload_status(JOB, job, pods)
    assert (got.phase, got.reason) == (phase, reason)
