"""The fake cluster (controllers, scheduler, kubelet behind the fake API server), driven through
the Kubernetes backend over HTTP, and its parity with the local backend: the same manifests end
the same way on both, because both run the same controller and pod runtime."""

from __future__ import annotations

import pytest

from kubecourse import NotFound, TrainingClient
from kubecourse.backends.config import KubernetesBackendConfig
from kubecourse.backends.kubernetes import KubernetesBackend
from tests.fakes.cluster import FakeCluster
from tests.guards import HANG_GUARD_S
from tests.helpers.jobs import job
from tests.helpers.test_outputs import _lab_job

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster(tmp_path):
    with FakeCluster(tmp_path / "cluster", max_grace_s=3.0) as running:
        yield running


@pytest.fixture
def cluster_client(cluster, tmp_path):
    config = KubernetesBackendConfig(
        kubeconfig=cluster.write_kubeconfig(tmp_path / "kc"), backoff_s=0.01
    )
    backend = KubernetesBackend(config)
    with TrainingClient(backend=backend, show_kubectl=False, rendered_dir=tmp_path / "r") as client:
        yield client


RETRY = (
    "import os, sys\n"
    "marker = os.path.join(os.environ['RUN'], 'tried')\n"
    "if not os.path.exists(marker):\n"
    "    open(marker, 'w').close(); print('first pod fails', flush=True); sys.exit(1)\n"
    "print('second pod succeeds')"
)
POLICY = {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2]}}]}
CASES = [
    ("succeeds", "print('step 1/1 loss 1.0')", {}, ("Succeeded", "", 1, 0)),
    ("retried", RETRY, {"backoffLimit": 2}, ("Succeeded", "", 1, 1)),
    ("backoff", "import sys; sys.exit(1)", {"backoffLimit": 1}, ("Failed", "BackoffLimitExceeded", 0, 2)),
    ("failjob", "import sys; sys.exit(2)", {"backoffLimit": 4, "podFailurePolicy": POLICY},
     ("Failed", "PodFailurePolicy", 0, 0)),
    ("deadline", "import time; time.sleep(60)", {"activeDeadlineSeconds": 2},
     ("Failed", "DeadlineExceeded", 0, 0)),
    ("indexed", "import os; print(os.environ['JOB_COMPLETION_INDEX'])",
     {"completions": 2, "parallelism": 2, "completionMode": "Indexed"}, ("Succeeded", "", 2, 0)),
]  # fmt: skip


@pytest.mark.parametrize("backend", ["local", "kubernetes"])
@pytest.mark.parametrize(
    ("code", "spec", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_jobs_end_the_same_on_both_backends(backend, code, spec, expected, request, tmp_path):
    client = request.getfixturevalue("local_client" if backend == "local" else "cluster_client")
    run = tmp_path / "run"
    run.mkdir()
    manifest = job("parity", code, env=[{"name": "RUN", "value": str(run)}], **spec)
    ref = client.submit([manifest])
    status = client.wait(ref, timeout_s=HANG_GUARD_S, progress=False)
    reason = status.reason if status.phase == "Failed" else ""
    assert (status.phase, reason, status.succeeded, status.failed) == expected, status
    if "completions" in spec:
        texts = sorted(line.text for line in client.logs(ref, echo=False))
        assert texts == ["0", "1"]


def test_a_pod_that_does_not_fit_stays_pending_with_the_schedulers_reason(cluster_client, cluster):
    manifest = job("greedy", "print('never')")
    manifest["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": 9},
        "limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": 9},
    }
    ref = cluster_client.submit([manifest])
    api = cluster.api

    def pending_with_event(api) -> bool:
        events = [e for e in api.objects("events") if e.get("reason") == "FailedScheduling"]
        return bool(events)

    assert api.wait_for(pending_with_event, timeout=HANG_GUARD_S)
    (pod,) = api.objects("pods")
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")
    (condition,) = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert (condition["status"], condition["reason"]) == ("False", "Unschedulable")
    assert condition["message"] == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    assert cluster_client.status(ref).pods[0].phase == "Pending"


def test_outputs_and_volumes_through_a_reader_pod(cluster_client, cluster):
    client = cluster_client
    # A claim that does not exist: answered without a reader pod (it would wait Pending for it).
    client.reset_volume("training-checkpoints", "outputs")
    assert (
        client.list_volume("absent-claim") == [] and client.read_volume("absent-claim", "x") is None
    )
    assert cluster.api.objects("pods") == []
    ref = client.submit(_lab_job("outputs", print_result=False))
    assert client.wait(ref, timeout_s=HANG_GUARD_S, progress=False).phase == "Succeeded"
    assert client.result(ref) == {"steps": 1, "final_loss": 2.0}  # result.json via the reader pod
    assert [(m["kind"], m["step"]) for m in client.metrics(ref)] == [("train", 1), ("eval", 1)]
    assert client.list_volume("training-checkpoints", "outputs") == ["metrics.jsonl", "result.json"]
    assert client.read_volume("training-checkpoints", "outputs/absent") is None
    assert (cluster.pvc_dir("training-checkpoints") / "outputs" / "result.json").exists()
    client.reset_volume("training-checkpoints", "outputs")
    assert client.list_volume("training-checkpoints", "outputs") == []
    readers = [
        p for p in cluster.api.objects("pods") if p["metadata"]["name"].startswith("volume-")
    ]
    assert readers == []  # every reader pod was deleted


SLEEPER = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))\n"
    "print('step 1/9 loss 1.0', flush=True)\n"
    "time.sleep(30)"
)
IGNORE = {
    "rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    ]
}


@pytest.mark.parametrize(("verb", "failed"), [("preempt", 0), ("kill", 1)])
def test_disruptions_follow_the_pod_failure_policy_on_the_cluster(
    cluster_client, cluster, verb, failed
):
    client = cluster_client
    ref = client.submit([job("disrupted", SLEEPER, backoffLimit=1, podFailurePolicy=IGNORE,
                             activeDeadlineSeconds=8)])  # fmt: skip
    next(line for line in client.iter_logs(ref, follow=True) if line.text.startswith("step"))
    with pytest.raises(NotImplementedError, match="kubectl exec"):
        client.kill_worker(ref)  # one worker process: only through exec, which it does not do
    pod = getattr(client, verb)(ref)
    api = cluster.api
    assert api.wait_for(lambda api: api.get("pods", pod) is None, timeout=HANG_GUARD_S)
    assert api.wait_for(lambda api: (api.get("jobs", "disrupted") or {}).get("status", {}).get("failed", 0) == failed
                        and len(api.objects("pods")) == 1, timeout=HANG_GUARD_S)  # fmt: skip
    expected = {"preempt": "Preempted", "kill": "Killed"}[verb]
    assert expected in client.diagnose(ref).kinds  # from the Event the backend recorded
    client.delete(ref)
    with pytest.raises(NotFound):
        client.kill(ref)
