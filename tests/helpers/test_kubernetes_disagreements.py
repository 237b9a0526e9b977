"""Where the Kubernetes backend disagreed with a real API server (issue 9, items 1-5 and 7).

One test (table) per disagreement, over HTTP against the fake API server in tests/fakes, which
answers as a real server does where the issue says how one behaved. The fake has no controllers
for JobSet, PyTorchJob, TrainJob or Volcano: each test plays the controller and the kubelet by
writing the pods, their labels and the workload's status the way those controllers do.
"""

from __future__ import annotations

import copy
import threading

import pytest

from kubecourse import (
    ClusterUnreachable,
    Invalid,
    JobRef,
    JobTimeout,
    NotFound,
    PodNotStarted,
    TrainingClient,
    Unauthorized,
)
from kubecourse import constants as C
from kubecourse.backends import workloads as W
from kubecourse.backends.config import KubernetesBackendConfig
from kubecourse.backends.kubernetes import KubernetesBackend
from kubecourse.manifests import parse_yaml, repo_root
from kubecourse.multinode import render_variant
from tests.fakes.apiserver import FakeApiServer
from tests.guards import HANG_GUARD_S

from .jobs import job

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def api():
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def client(api, tmp_path):
    config = KubernetesBackendConfig(
        kubeconfig=api.write_kubeconfig(tmp_path / "kubeconfig"), backoff_s=0.01, watch_chunk_s=2
    )
    with TrainingClient(
        backend=config, show_kubectl=False, rendered_dir=tmp_path / "rendered"
    ) as c:
        yield c


def volcano_job() -> list[dict]:
    path = repo_root() / "manifests" / "04-production" / "jobs" / "job-gang-volcano.yaml"
    return parse_yaml(path.read_text(), str(path))


# kind -> (objects, (plural, group), the labels its controller puts on the pod of rank r,
#          terminal statuses)
KINDS = {
    "Job": (
        lambda: render_variant("Job"),
        ("jobs", "batch"),
        lambda name, r: {C.JOB_NAME_LABEL: name, C.COMPLETION_INDEX_ANNOTATION: str(r)},
        {"Succeeded": {"conditions": [{"type": "Complete", "status": "True"}]},
         "Failed": {"conditions": [{"type": "Failed", "status": "True",
                                    "reason": "BackoffLimitExceeded", "message": "too many"}]}},
    ),
    "JobSet": (
        lambda: render_variant("JobSet"),
        ("jobsets", "jobset.x-k8s.io"),
        lambda name, r: {W.JOBSET_NAME_LABEL: name, W.JOBSET_RJOB_LABEL: "workers",
                         W.JOBSET_JOB_INDEX_LABEL: "0", C.COMPLETION_INDEX_ANNOTATION: str(r)},
        {"Succeeded": {"conditions": [{"type": "Completed", "status": "True"}]},
         "Failed": {"conditions": [{"type": "Failed", "status": "True", "reason": "FailedJobs",
                                    "message": "jobset failed due to one or more job failures"}]}},
    ),
    "PyTorchJob": (
        lambda: render_variant("PyTorchJob"),
        ("pytorchjobs", "kubeflow.org"),
        lambda name, r: {W.PYTORCHJOB_NAME_LABEL: name,
                         W.PYTORCHJOB_TYPE_LABEL: "master" if r == 0 else "worker",
                         W.PYTORCHJOB_INDEX_LABEL: str(0 if r == 0 else r - 1)},
        {"Succeeded": {"conditions": [{"type": "Succeeded", "status": "True"}]},
         "Failed": {"conditions": [{"type": "Failed", "status": "True",
                                    "reason": "PyTorchJobFailed", "message": "master failed"}]}},
    ),
    "TrainJob": (
        lambda: render_variant("TrainJob"),
        ("trainjobs", "trainer.kubeflow.org"),
        lambda name, r: {W.JOBSET_NAME_LABEL: name, W.JOBSET_RJOB_LABEL: "node",
                         C.COMPLETION_INDEX_ANNOTATION: str(r)},
        {"Succeeded": {"conditions": [{"type": "Complete", "status": "True"}]},
         "Failed": {"conditions": [{"type": "Failed", "status": "True", "reason": "JobsFailed",
                                    "message": "trainer node failed"}]}},
    ),
    "Volcano": (
        volcano_job,
        ("jobs", "batch.volcano.sh"),
        lambda name, r: {W.VOLCANO_NAME_LABEL: name, W.VOLCANO_TASK_LABEL: "worker",
                         W.VOLCANO_INDEX_LABEL: str(r)},
        {"Succeeded": {"state": {"phase": "Completed"}},
         "Failed": {"state": {"phase": "Failed", "reason": "PodFailed", "message": "task failed"}}},
    ),
}  # fmt: skip


def _pod(namespace: str, name: str, labels: dict, node: str | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        # An int quantity, as a manifest may write it: the typed client models would refuse it.
        "spec": {"containers": [{"name": "trainer", "image": "x:1",
                                 "resources": {"limits": {"nvidia.com/gpu": 1}}}],
                 **({"nodeName": node} if node else {})},
        "status": {"phase": "Pending"},
    }  # fmt: skip


def _start(api, pod: dict) -> None:
    running = copy.deepcopy(pod)
    running["spec"]["nodeName"] = "gpu-node-1"
    running["status"] = {"phase": "Running"}
    api.put_object(running)


@pytest.mark.parametrize("outcome", ["Succeeded", "Failed"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_1_every_kind_can_be_followed_status_wait_logs_events_delete(api, client, kind, outcome):
    build, (plural, group), labels, terminal = KINDS[kind]
    objects = build()
    namespace = objects[-1]["metadata"].get("namespace", "default")
    if namespace != "default":
        api.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    ref = client.submit(objects)
    pods = [_pod(namespace, f"{ref.name}-pod-{r}", labels(ref.name, r)) for r in (1, 0)]
    for pod in pods:
        api.put_object(pod)
    status = client.status(ref)
    assert (status.phase, [p.index for p in status.pods]) == (C.PENDING, [0, 1])
    for rank, pod in zip((1, 0), pods, strict=True):
        _start(api, pod)
        api.append_log(pod["metadata"]["name"], f"hello from rank {rank}", namespace)
    assert client.status(ref).phase == C.RUNNING
    assert [(line.index, line.text) for line in client.logs(ref, echo=False)] == [
        (0, "hello from rank 0"),
        (1, "hello from rank 1"),
    ]
    assert [line.text for line in client.logs(ref, rank=1, echo=False)] == ["hello from rank 1"]
    involved = {"kind": ref.kind, "name": ref.name, "apiVersion": objects[-1]["apiVersion"]}
    api.add_event(namespace, involved, "Created", f"created {kind}")
    assert ("Created", f"{ref.kind}/{ref.name}") in {(e.reason, e.obj) for e in client.events(ref)}

    def finish():
        assert api.wait_for(lambda a: a.watch_count >= 1, timeout=HANG_GUARD_S)
        api.patch_status(plural, ref.name, terminal[outcome], namespace, group=group)

    threading.Thread(target=finish, daemon=True).start()
    final = client.wait(ref, timeout_s=HANG_GUARD_S, progress=False)
    assert final.phase == outcome
    if outcome == "Failed":
        failed = terminal["Failed"].get("conditions", [terminal["Failed"].get("state")])[-1]
        assert (final.reason, final.message) == (failed["reason"], failed["message"])
    client.delete(ref)
    assert api.get(plural, ref.name, namespace, group=group) is None
    with pytest.raises(NotFound):
        client.status(ref)


def _unschedulable(pod: dict) -> dict:
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes..."
    pod["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
    ]
    return pod


def _image_pull(pod: dict) -> dict:
    pod["spec"]["nodeName"] = "node-1"
    pod["status"]["containerStatuses"] = [
        {"name": "trainer", "state": {"waiting": {"reason": "ImagePullBackOff",
                                                  "message": 'Back-off pulling image "x:1"'}}}
    ]  # fmt: skip
    return pod


PENDING_CASES = [
    # (id, change the pod, Kueue Workload condition or None, reason, text of the message)
    ("no GPU node", _unschedulable, None, "Unschedulable", "3 Insufficient nvidia.com/gpu"),
    ("image pull", _image_pull, None, "ImagePullBackOff", 'Back-off pulling image "x:1"'),
    ("not admitted by Kueue", None,
     {"type": "QuotaReserved", "status": "False", "reason": "Pending",
      "message": "couldn't assign flavors to pod set main: insufficient quota for nvidia.com/gpu"},
     "NotAdmitted", "insufficient quota for nvidia.com/gpu"),
    ("suspended", None, False, "Suspended", "spec.suspend: true"),
]  # fmt: skip


@pytest.mark.parametrize(
    "change, kueue, reason, text", [c[1:] for c in PENDING_CASES], ids=[c[0] for c in PENDING_CASES]
)
def test_2_pending_until_a_pod_really_runs_with_the_cause(api, client, change, kueue, reason, text):
    manifest = job("held", "print(1)")
    if kueue is not None:
        manifest["spec"]["suspend"] = True
        if kueue:
            manifest["metadata"]["labels"] = {C.KUEUE_QUEUE_LABEL: "team-a"}
    ref = client.submit([manifest])
    stored = api.get("jobs", "held", group="batch")
    if change is not None:  # the Job controller made a pod and counts it active, as it does
        api.patch_status("jobs", "held", {"active": 1}, group="batch")
        api.put_object(change(_pod("default", "held-abcde", {C.JOB_NAME_LABEL: "held"})))
    if kueue:
        api.put_object({
            "apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "Workload",
            "metadata": {"name": "job-held-1a2b3", "namespace": "default",
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                              "name": "held", "uid": stored["metadata"]["uid"]}]},
            "spec": {"queueName": "team-a"}, "status": {"conditions": [kueue]},
        })  # fmt: skip
    status = client.status(ref)
    assert (status.phase, status.reason) == (C.PENDING, reason) and text in status.message
    with pytest.raises(JobTimeout) as timeout:
        client.wait(ref, timeout_s=1, progress=False)
    assert "still Pending" in str(timeout.value) and text in str(timeout.value)


def test_3_submit_is_atomic_a_rejected_job_leaves_nothing_behind(api, client):
    manifest = render_variant("Job")
    manifest[-1]["spec"]["backoffLimit"] = -1  # the server answers 422; the PVC must not stay
    with pytest.raises(Invalid) as rejected:
        client.backend.submit(manifest)
    assert "spec.backoffLimit" in str(rejected.value) and rejected.value.status == 422
    assert api.objects("persistentvolumeclaims") == [] and api.objects("services") == []
    # Only dry runs reached the server: the dependencies, then the Job it refused.
    posts = [r.query.get("dryRun") for r in api.requests if r.method == "POST"]
    assert posts == ["All"] * len(manifest)


def test_3_a_failure_after_the_dry_run_rolls_back_what_was_created(api, client):
    # The dry run passes; creating the Job is refused (403): the PVC and Service go again.
    # (A dry run's query starts with dryRun=All, so this fault matches only the real create.)
    api.fail_next(count=1, status=403, reason="Forbidden", method="POST",
                  path_contains="jobs?fieldValidation")  # fmt: skip
    with pytest.raises(Exception) as refused:
        client.backend.submit(render_variant("Job"))
    assert getattr(refused.value, "status", None) == 403
    assert api.objects("persistentvolumeclaims") == [] and api.objects("services") == []
    deleted = {(d["plural"], d["name"]) for d in api.deletions}
    assert {("persistentvolumeclaims", "lm-checkpoints"), ("services", "lm-job")} <= deleted


def test_3_a_namespace_of_the_same_submit_is_created_first(api, client, capsys):
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b"}},
        {**job("in-new-ns", "print(1)"), "metadata": {"name": "in-new-ns", "namespace": "team-b"}},
    ]
    dry = client.backend.submit(copy.deepcopy(objects), dry_run=True)
    assert dry.dry_run and api.get("namespaces", "team-b") is None
    assert "not checked by the server" in capsys.readouterr().out
    ref = client.backend.submit(copy.deepcopy(objects))
    assert ref.created == ("Namespace/team-b", "Job/in-new-ns")
    assert api.get("jobs", "in-new-ns", "team-b", group="batch") is not None


def test_4_delete_removes_the_headless_service_and_an_absent_job_is_not_found(api, client):
    ref = client.submit(render_variant("Job"))  # PVC + headless Service + Indexed Job
    assert api.get("services", "lm-job") is not None
    service_owner = api.get("services", "lm-job")["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"]) for o in service_owner] == [("Job", "lm-job")]
    client.delete(ref)
    assert (
        api.get("jobs", "lm-job", group="batch") is None and api.get("services", "lm-job") is None
    )
    assert api.get("persistentvolumeclaims", "lm-checkpoints") is not None  # data outlives jobs
    with pytest.raises(NotFound) as absent:
        client.delete("never-submitted")
    assert absent.value.status == 404 and '"never-submitted" not found' in str(absent.value)
    client.delete("never-submitted", missing_ok=True)
    again = client.submit(render_variant("Job"))
    client.delete(again, volumes=True)
    assert api.get("persistentvolumeclaims", "lm-checkpoints") is None


def test_5_logs_of_a_pod_without_a_node_say_so_and_follow_waits(api, client):
    ref = client.submit([job("unplaced", "print(1)")])
    pod = _unschedulable(_pod("default", "unplaced-x1y2z", {C.JOB_NAME_LABEL: "unplaced"}))
    api.put_object(pod)
    with pytest.raises(PodNotStarted) as none_yet:
        client.logs(ref, echo=False)
    message = str(none_yet.value)
    assert "unplaced-x1y2z" in message and "no node" in message and "Insufficient" in message
    assert any(r.status == 204 for r in api.requests if r.path.endswith("/log"))

    def place_later():
        assert api.wait_for(lambda a: a.watch_count >= 1, timeout=HANG_GUARD_S)
        _start(api, pod)
        api.append_log("unplaced-x1y2z", "finally running")
        api.patch_status("pods", "unplaced-x1y2z", {"phase": "Succeeded"})

    threading.Thread(target=place_later, daemon=True).start()
    assert [line.text for line in client.logs(ref, follow=True, echo=False)] == ["finally running"]


def test_7_errors_never_say_http_none_and_401_points_at_the_kubeconfig(tmp_path):
    with FakeApiServer(require_token="right") as api:
        wrong = api.write_kubeconfig(tmp_path / "wrong", token="wrong")
        backend = KubernetesBackend(KubernetesBackendConfig(kubeconfig=wrong, retries=0))
        with pytest.raises(Unauthorized) as unauthorized:
            backend.status(JobRef("x", "default"))
        text = str(unauthorized.value)
        assert "HTTP 401" in text and "kubeconfig" in text and "current-context" in text
        assert "expired" in text
    kubeconfig = tmp_path / "gone"
    with FakeApiServer() as gone:
        gone.write_kubeconfig(kubeconfig)
    backend = KubernetesBackend(KubernetesBackendConfig(kubeconfig=str(kubeconfig), retries=0))
    with pytest.raises(ClusterUnreachable) as unreachable:  # the server went away: no HTTP answer
        backend.status(JobRef("x", "default"))
    assert "HTTP None" not in str(unreachable.value) and unreachable.value.status is None
    assert "cannot reach the API server" in str(unreachable.value)
