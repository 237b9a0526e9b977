"""The fake apiserver, driven by the real `kubernetes` client over HTTP.

Every test talks to FakeApiServer the way the course backend will: a kubeconfig written by the
fake, loaded into a fresh Configuration/ApiClient, typed API classes and `kubernetes.watch`.
"""

from __future__ import annotations

import json
import threading

import pytest
import urllib3
from kubernetes import client, config, dynamic, watch
from kubernetes.client.exceptions import ApiException

from .apiserver import COMPLETION_INDEX, JOB_NAME_LABEL, FakeApiServer

NS = "default"


def job_body(
    name: str,
    labels: dict | None = None,
    completions: int | None = None,
    indexed: bool = False,
    suspend: bool | None = None,
    restart_policy: str | None = "Never",
) -> dict:
    pod_spec: dict = {
        "containers": [{"name": "train", "image": "busybox:1.37", "command": ["true"]}]
    }
    if restart_policy:
        pod_spec["restartPolicy"] = restart_policy
    spec: dict = {"template": {"spec": pod_spec}}
    if completions is not None:
        spec["completions"] = spec["parallelism"] = completions
    if indexed:
        spec["completionMode"] = "Indexed"
    if suspend is not None:
        spec["suspend"] = suspend
    metadata: dict = {"name": name}
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


def pod_body(name: str, phase: str = "Running") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "containers": [{"name": "train", "image": "busybox:1.37"}],
            **({"nodeName": "node-1"} if phase != "Pending" else {}),  # a started pod has a node
        },
        "status": {"phase": phase},
    }


def conditions(job) -> list[str]:
    return [c.type for c in (job.status.conditions or []) if c.status == "True"]


def api_client_for(kubeconfig: str) -> client.ApiClient:
    """A client configured from the kubeconfig only, never the process-wide default."""
    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return client.ApiClient(configuration)


@pytest.fixture
def api():
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def k8s(api, tmp_path):
    with api_client_for(api.write_kubeconfig(tmp_path / "kubeconfig")) as api_client:
        yield api_client


@pytest.fixture
def batch(k8s):
    return client.BatchV1Api(k8s)


@pytest.fixture
def core(k8s):
    return client.CoreV1Api(k8s)


@pytest.fixture
def custom(k8s):
    return client.CustomObjectsApi(k8s)


def test_job_create_get_list_delete(api, batch):
    created = batch.create_namespaced_job(NS, job_body("train"))
    assert created.metadata.uid and created.metadata.generation == 1
    assert created.metadata.namespace == NS and created.metadata.creation_timestamp
    assert created.spec.selector.match_labels == {
        "batch.kubernetes.io/controller-uid": created.metadata.uid
    }
    assert created.spec.template.metadata.labels[JOB_NAME_LABEL] == "train"

    assert batch.read_namespaced_job("train", NS).metadata.uid == created.metadata.uid
    listed = batch.list_namespaced_job(NS)
    assert [j.metadata.name for j in listed.items] == ["train"]
    assert int(listed.metadata.resource_version) >= int(created.metadata.resource_version)

    status = batch.delete_namespaced_job("train", NS, propagation_policy="Background")
    assert status["status"] == "Success" and status["details"]["name"] == "train"
    assert batch.list_namespaced_job(NS).items == []
    assert [(r.method, r.path) for r in api.requests] == [
        ("POST", "/apis/batch/v1/namespaces/default/jobs"),
        ("GET", "/apis/batch/v1/namespaces/default/jobs/train"),
        ("GET", "/apis/batch/v1/namespaces/default/jobs"),
        ("DELETE", "/apis/batch/v1/namespaces/default/jobs/train"),
        ("GET", "/apis/batch/v1/namespaces/default/jobs"),
    ]
    assert api.deletions[0]["propagationPolicy"] == "Background"


def _duplicate(batch, core):
    batch.create_namespaced_job(NS, job_body("train"))
    batch.create_namespaced_job(NS, job_body("train"))


def _stale_replace(batch, core):
    job = batch.create_namespaced_job(NS, job_body("train"))
    batch.patch_namespaced_job("train", NS, {"metadata": {"labels": {"a": "b"}}})
    batch.replace_namespaced_job("train", NS, job)  # carries the old resourceVersion


def _pending_logs(batch, core):
    core.create_namespaced_pod(NS, pod_body("p"))  # scheduled; on create it is Pending again
    core.read_namespaced_pod_log("p", NS)


ERROR_CASES = [
    # (id, action, HTTP status, HTTP reason phrase, Status.reason, text in Status.message)
    ("duplicate", _duplicate, 409, "Conflict", "AlreadyExists", 'jobs.batch "train" already exists'),
    ("read-missing", lambda b, c: b.read_namespaced_job("nope", NS), 404, "Not Found", "NotFound",
     'jobs.batch "nope" not found'),
    ("delete-missing", lambda b, c: b.delete_namespaced_job("nope", NS), 404, "Not Found",
     "NotFound", 'jobs.batch "nope" not found'),
    ("pod-missing", lambda b, c: c.read_namespaced_pod("nope", NS), 404, "Not Found", "NotFound",
     'pods "nope" not found'),
    ("bad-name", lambda b, c: b.create_namespaced_job(NS, job_body("Bad_Name")), 422,
     "Unprocessable Entity", "Invalid", "RFC 1123 subdomain"),
    ("long-job-name", lambda b, c: b.create_namespaced_job(NS, job_body("x" * 64)), 422,
     "Unprocessable Entity", "Invalid", "must be no more than 63 characters"),
    ("no-restart-policy", lambda b, c: b.create_namespaced_job(NS, job_body("j", restart_policy=None)),
     422, "Unprocessable Entity", "Invalid", "spec.template.spec.restartPolicy: Required value"),
    ("bad-label-value", lambda b, c: b.create_namespaced_job(NS, job_body("j", {"run": "a b"})), 422,
     "Unprocessable Entity", "Invalid", "a valid label must be an empty string"),
    ("stale-replace", _stale_replace, 409, "Conflict", "Conflict", "the object has been modified"),
    ("bad-field-label", lambda b, c: b.list_namespaced_job(NS, field_selector="spec.x=1"), 400,
     "Bad Request", "BadRequest", 'field label not supported: "spec.x"'),
    ("pending-logs", _pending_logs, 400, "Bad Request", "BadRequest", "is waiting to start"),
]  # fmt: skip


@pytest.mark.parametrize(
    "action, status, phrase, reason, message",
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_errors_are_status_objects(batch, core, action, status, phrase, reason, message):
    with pytest.raises(ApiException) as caught:
        action(batch, core)
    error = caught.value
    body = json.loads(error.body)
    assert (error.status, error.reason) == (status, phrase)
    assert body["kind"] == "Status" and body["status"] == "Failure"
    assert (body["code"], body["reason"]) == (status, reason)
    assert message in body["message"]
    assert error.headers["Content-Type"] == "application/json"


def test_dry_run_stores_nothing_and_emits_nothing(api, batch):
    before = api.resource_version
    created = batch.create_namespaced_job(NS, job_body("train"), dry_run="All")
    assert created.metadata.uid and created.metadata.resource_version is None
    assert batch.list_namespaced_job(NS).items == []
    assert api.resource_version == before  # no write, so no watch event either
    assert api.requests[0].query == {"dryRun": "All"}

    with pytest.raises(ApiException) as caught:
        batch.create_namespaced_job(NS, job_body("Bad_Name"), dry_run="All")
    assert caught.value.status == 422  # same validation as a real create

    batch.create_namespaced_job(NS, job_body("train"))
    batch.delete_namespaced_job("train", NS, dry_run="All", propagation_policy="Background")
    assert api.get("jobs", "train") is not None


LABEL_SELECTORS = [
    ("team=ml", ["a", "b"]),
    ("team==ml", ["a", "b"]),
    ("team!=ml", ["c", "d"]),  # != also matches objects without the key
    ("tier", ["a", "c"]),
    ("!tier", ["b", "d"]),
    ("tier in (gpu,cpu)", ["a", "c"]),
    ("tier notin (gpu)", ["b", "c", "d"]),
    ("team=ml,tier", ["a"]),
    ("team in (ml, web),tier!=cpu", ["a", "b"]),
]


@pytest.mark.parametrize("selector, expected", LABEL_SELECTORS)
def test_label_selectors(batch, selector, expected):
    for name, labels in [
        ("a", {"team": "ml", "tier": "gpu"}),
        ("b", {"team": "ml"}),
        ("c", {"team": "web", "tier": "cpu"}),
        ("d", None),
    ]:
        batch.create_namespaced_job(NS, job_body(name, labels))
    listed = batch.list_namespaced_job(NS, label_selector=selector)
    assert [j.metadata.name for j in listed.items] == expected


FIELD_SELECTORS = [
    ("involvedObject.name=train", ["Job/train", "Pod/train"]),
    ("involvedObject.kind=Pod", ["Pod/other", "Pod/train"]),
    ("involvedObject.kind=Job,involvedObject.name=train", ["Job/train"]),
    ("involvedObject.name!=train", ["Pod/other"]),
    ("type=Warning", ["Pod/other"]),
]


@pytest.mark.parametrize("selector, expected", FIELD_SELECTORS)
def test_field_selectors_on_events(api, core, selector, expected):
    api.add_event(NS, {"kind": "Job", "name": "train"}, "SuccessfulCreate", "Created pod: x")
    api.add_event(NS, {"kind": "Pod", "name": "train"}, "Started", "Started container train")
    api.add_event(NS, {"kind": "Pod", "name": "other"}, "BackOff", "Back-off", type="Warning")
    events = core.list_namespaced_event(NS, field_selector=selector).items
    found = sorted(f"{e.involved_object.kind}/{e.involved_object.name}" for e in events)
    assert found == expected


def test_field_selector_metadata_name(batch):
    for name in ("a", "b"):
        batch.create_namespaced_job(NS, job_body(name))
    listed = batch.list_namespaced_job(NS, field_selector="metadata.name=b")
    assert [j.metadata.name for j in listed.items] == ["b"]


def test_list_pagination(batch):
    for name in ("a", "b", "c"):
        batch.create_namespaced_job(NS, job_body(name))
    first = batch.list_namespaced_job(NS, limit=2)
    rest = batch.list_namespaced_job(NS, limit=2, _continue=first.metadata._continue)
    assert [j.metadata.name for j in first.items + rest.items] == ["a", "b", "c"]
    assert first.metadata.remaining_item_count == 1 and rest.metadata._continue is None


PATCHES = [
    # (id, patch body, expected labels, expected parallelism, generation after)
    ("strategic-merge", {"metadata": {"labels": {"run": "1"}}}, {"run": "1"}, 1, 1),
    ("json-patch", [{"op": "replace", "path": "/spec/parallelism", "value": 2}], None, 2, 2),
    ("json-patch-add", [{"op": "add", "path": "/metadata/labels", "value": {"x": "y"}}], {"x": "y"},
     1, 1),
    ("status-ignored", {"status": {"active": 5}, "spec": {"suspend": True}}, None, 1, 2),
]  # fmt: skip


@pytest.mark.parametrize(
    "body, labels, parallelism, generation",
    [case[1:] for case in PATCHES],
    ids=[case[0] for case in PATCHES],
)
def test_patch(api, batch, body, labels, parallelism, generation):
    created = batch.create_namespaced_job(NS, job_body("train"))
    patched = batch.patch_namespaced_job("train", NS, body)
    assert patched.metadata.labels == labels
    assert patched.spec.parallelism == parallelism
    assert patched.metadata.generation == generation
    assert patched.status.active is None  # the main resource never writes status
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)


def test_status_subresource_changes_only_status(api, batch):
    batch.create_namespaced_job(NS, job_body("train"))
    patched = batch.patch_namespaced_job_status(
        "train", NS, {"status": {"active": 1}, "spec": {"parallelism": 9}}
    )
    assert patched.status.active == 1
    assert patched.spec.parallelism == 1 and patched.metadata.generation == 1
    assert batch.read_namespaced_job_status("train", NS).status.active == 1


def test_watch_replays_history_from_resource_version(batch):
    since = batch.list_namespaced_job(NS).metadata.resource_version
    batch.create_namespaced_job(NS, job_body("train"))
    batch.create_namespaced_job(NS, job_body("other"))
    batch.patch_namespaced_job("train", NS, {"metadata": {"labels": {"step": "2"}}})

    w = watch.Watch()
    seen = []
    for event in w.stream(
        batch.list_namespaced_job, NS, field_selector="metadata.name=train", resource_version=since
    ):
        seen.append((event["type"], event["object"].metadata.labels))
        if len(seen) == 2:
            w.stop()
    assert seen == [("ADDED", None), ("MODIFIED", {"step": "2"})]
    assert isinstance(event["object"], client.V1Job)


def test_watch_without_resource_version_lists_then_streams(api, batch):
    batch.create_namespaced_job(NS, job_body("first"))
    seen: list[tuple[str, str]] = []

    def consume():
        w = watch.Watch()
        for event in w.stream(batch.list_namespaced_job, NS, timeout_seconds=10):
            seen.append((event["type"], event["object"].metadata.name))
            if len(seen) == 3:
                w.stop()

    thread = threading.Thread(target=consume)
    thread.start()
    assert api.wait_for(lambda a: a.watch_count == 1)
    batch.create_namespaced_job(NS, job_body("second"))
    batch.delete_namespaced_job("first", NS, propagation_policy="Background")
    thread.join(10)
    assert seen == [("ADDED", "first"), ("ADDED", "second"), ("DELETED", "first")]


def test_watch_timeout_seconds_ends_the_stream_cleanly(batch):
    events = list(watch.Watch().stream(batch.list_namespaced_job, NS, timeout_seconds=1))
    assert events == []


def test_watch_from_compacted_version_is_expired(api, batch):
    since = batch.create_namespaced_job(NS, job_body("train")).metadata.resource_version
    batch.create_namespaced_job(NS, job_body("other"))
    api.compact()
    with pytest.raises(ApiException) as caught:
        for _ in watch.Watch().stream(batch.list_namespaced_job, NS, resource_version=since):
            pass
    # kubernetes.watch retries a 410 once from the same version, then raises.
    assert caught.value.status == 410
    assert caught.value.reason.startswith("Expired: too old resource version")
    assert api.watch_count == 2


def test_drop_watches_abruptly_breaks_the_stream(api, batch):
    failures: list[BaseException] = []

    def consume():
        try:
            for _ in watch.Watch().stream(batch.list_namespaced_job, NS):
                pass
        except Exception as e:  # what a real network cut raises
            failures.append(e)

    thread = threading.Thread(target=consume)
    thread.start()
    assert api.wait_for(lambda a: a.watch_count == 1)
    assert api.drop_watches() == 1
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(failures[0], urllib3.exceptions.ProtocolError)


def test_clean_drop_makes_the_client_resume_without_duplicates(api, batch):
    seen: list[tuple[str, str]] = []

    def consume():
        w = watch.Watch()
        for event in w.stream(batch.list_namespaced_job, NS):
            seen.append((event["type"], event["object"].metadata.name))
            if len(seen) == 2:
                w.stop()

    thread = threading.Thread(target=consume)
    thread.start()
    assert api.wait_for(lambda a: a.watch_count == 1)
    batch.create_namespaced_job(NS, job_body("before"))
    assert api.wait_for(lambda a: len(seen) == 1)
    api.drop_watches(abrupt=False)  # like the apiserver's own watch timeout
    assert api.wait_for(lambda a: a.watch_count == 2)
    batch.create_namespaced_job(NS, job_body("after"))
    thread.join(10)
    assert seen == [("ADDED", "before"), ("ADDED", "after")]
    resumed = [r for r in api.requests if r.query.get("watch") == "true"][1]
    assert (
        resumed.query["resourceVersion"] == api.get("jobs", "before")["metadata"]["resourceVersion"]
    )


def test_log_follow_streams_until_the_pod_completes(api, core):
    api.put_object(pod_body("train-0"))
    api.append_log("train-0", "step 1 loss 2.0")

    def kubelet():
        for step in range(2, 5):
            api.append_log("train-0", f"step {step} loss {2.0 / step:.2f}")
        api.patch_status("pods", "train-0", {"phase": "Succeeded"})

    response = core.read_namespaced_pod_log("train-0", NS, follow=True, _preload_content=False)
    threading.Thread(target=kubelet).start()
    text = b"".join(response.stream(amt=None, decode_content=False)).decode()
    assert text.splitlines() == [
        "step 1 loss 2.0",
        "step 2 loss 1.00",
        "step 3 loss 0.67",
        "step 4 loss 0.50",
    ]
    assert response.headers["Content-Type"] == "text/plain"


def test_log_follow_through_watch_yields_lines(api, core):
    api.put_object(pod_body("train-0", phase="Succeeded"))
    for line in ("a", "b"):
        api.append_log("train-0", line)
    lines = list(watch.Watch().stream(core.read_namespaced_pod_log, "train-0", NS))
    assert lines == ["a", "b"]


LOG_READS = [
    ({}, "one\ntwo\nthree\n"),
    ({"tail_lines": 2}, "two\nthree\n"),
    ({"container": "train", "timestamps": True, "previous": False}, "one\ntwo\nthree\n"),
]


@pytest.mark.parametrize("kwargs, expected", LOG_READS)
def test_log_reads(api, core, kwargs, expected):
    api.put_object(pod_body("train-0"))
    api.append_log("train-0", "one\ntwo\nthree")
    assert core.read_namespaced_pod_log("train-0", NS, **kwargs) == expected


def test_run_job_on_create_simulates_an_indexed_job(api, batch, core):
    logs = {0: ["step 1 loss 2.0", "done"], 1: ["step 1 loss 2.1", "done"]}
    api.on_create("Job", lambda api, job: api.run_job(job, logs=logs))
    batch.create_namespaced_job(NS, job_body("train", completions=2, indexed=True))

    w = watch.Watch()
    for event in w.stream(
        batch.list_namespaced_job, NS, field_selector="metadata.name=train", timeout_seconds=20
    ):
        if "Complete" in conditions(event["object"]):
            w.stop()
    job = batch.read_namespaced_job("train", NS)
    assert conditions(job) == ["SuccessCriteriaMet", "Complete"]
    assert job.status.succeeded == 2 and job.status.completion_time and not job.status.active
    assert job.status.completed_indexes == "0-1"

    pods = core.list_namespaced_pod(NS, label_selector=f"{JOB_NAME_LABEL}=train").items
    by_index = {int(p.metadata.labels[COMPLETION_INDEX]): p for p in pods}
    assert sorted(by_index) == [0, 1]
    for index, pod in by_index.items():
        assert pod.metadata.name.startswith(f"train-{index}-")
        assert pod.metadata.annotations[COMPLETION_INDEX] == str(index)
        assert pod.metadata.owner_references[0].uid == job.metadata.uid
        assert pod.status.phase == "Succeeded"
        terminated = pod.status.container_statuses[0].state.terminated
        assert (terminated.exit_code, terminated.reason) == (0, "Completed")
        log = core.read_namespaced_pod_log(pod.metadata.name, NS)
        assert log.splitlines() == logs[index]

    events = core.list_namespaced_event(NS, field_selector="involvedObject.name=train").items
    assert sorted(e.reason for e in events) == ["Completed", "SuccessfulCreate", "SuccessfulCreate"]


RUN_FAILURES = [
    # (exit code, container reason, Failed condition reason)
    (1, "Error", "BackoffLimitExceeded"),
    (137, "OOMKilled", "BackoffLimitExceeded"),
]


@pytest.mark.parametrize("exit_code, container_reason, job_reason", RUN_FAILURES)
def test_run_job_failure(api, batch, core, exit_code, container_reason, job_reason):
    batch.create_namespaced_job(NS, job_body("train"))
    assert api.run_job("train", outcome="Failed", exit_code=exit_code) is not None
    job = batch.read_namespaced_job("train", NS)
    assert conditions(job) == ["FailureTarget", "Failed"]
    assert job.status.conditions[-1].reason == job_reason and job.status.failed == 1
    assert job.status.completion_time is None
    (pod,) = core.list_namespaced_pod(NS, label_selector="job-name=train").items
    assert pod.metadata.name.startswith("train-") and pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (exit_code, container_reason)


def test_run_job_waits_while_suspended(api, batch):
    api.on_create("Job", lambda api, job: api.run_job(job))
    batch.create_namespaced_job(NS, job_body("train", suspend=True))
    assert api.wait_for(lambda a: "Suspended" in _true_conditions(a.get("jobs", "train")))
    assert api.objects("pods") == []
    batch.patch_namespaced_job("train", NS, {"spec": {"suspend": False}})
    assert api.wait_for(lambda a: "Complete" in _true_conditions(a.get("jobs", "train")))


def _true_conditions(job: dict) -> list[str]:
    return [c["type"] for c in job.get("status", {}).get("conditions", []) if c["status"] == "True"]


DELETE_POLICIES = [
    # (propagation policy, pods left, finalizer in the response, Warning header)
    ("Background", 0, None, False),
    ("Foreground", 0, "foregroundDeletion", False),
    ("Orphan", 2, "orphan", False),
    (None, 2, "orphan", True),  # batch/v1 Jobs orphan their pods by default
]


@pytest.mark.parametrize("policy, pods_left, finalizer, warns", DELETE_POLICIES)
def test_delete_job_propagation(api, batch, policy, pods_left, finalizer, warns):
    created = batch.create_namespaced_job(NS, job_body("train", completions=2))
    api.run_job(api.get("jobs", "train"), step_delay=0)
    body, code, headers = batch.delete_namespaced_job_with_http_info(
        "train", NS, propagation_policy=policy
    )
    assert code == 200
    assert (body["metadata"]["finalizers"] if finalizer else body["status"]) == (
        [finalizer] if finalizer else "Success"
    )
    assert ("Warning" in headers) == warns
    assert api.get("jobs", "train") is None
    pods = api.objects("pods", NS)
    assert len(pods) == pods_left
    assert all(created.metadata.uid not in str(p["metadata"].get("ownerReferences")) for p in pods)


def test_foreground_delete_removes_pods_before_the_job(api, batch, core):
    batch.create_namespaced_job(NS, job_body("train"))
    api.run_job("train", step_delay=0)
    since = api.resource_version
    batch.delete_namespaced_job("train", NS, propagation_policy="Foreground")

    def replay(func, count):
        w, events = watch.Watch(), []
        for event in w.stream(func, NS, resource_version=since):
            events.append((event["type"], int(event["object"].metadata.resource_version)))
            if len(events) == count:
                w.stop()
        return events

    (job_marked, job_deleted) = replay(batch.list_namespaced_job, 2)
    (pod_deleted,) = replay(core.list_namespaced_pod, 1)
    assert [job_marked[0], pod_deleted[0], job_deleted[0]] == ["MODIFIED", "DELETED", "DELETED"]
    assert job_marked[1] < pod_deleted[1] < job_deleted[1]
    deletes = [r for r in api.requests if r.method == "DELETE"]
    assert deletes[0].query == {"propagationPolicy": "Foreground"}


FAULTS = [
    # (id, method, status, reason, HTTP phrase, Retry-After)
    ("get-500", "GET", 500, "InternalError", "Internal Server Error", None),
    ("post-429", "POST", 429, "TooManyRequests", "Too Many Requests", 1),
    ("post-503", "POST", 503, "ServiceUnavailable", "Service Unavailable", 1),
]


def _call(batch, method: str):
    if method == "GET":
        return batch.list_namespaced_job(NS)
    return batch.create_namespaced_job(NS, job_body("train"))


@pytest.mark.parametrize(
    "method, status, reason, phrase, retry_after",
    [case[1:] for case in FAULTS],
    ids=[case[0] for case in FAULTS],
)
def test_fail_next_surfaces_as_api_exception(
    api, batch, method, status, reason, phrase, retry_after
):
    api.fail_next(status=status, reason=reason, method=method, retry_after=retry_after)
    batch.list_namespaced_job(NS) if method == "POST" else None  # another method: no fault
    with pytest.raises(ApiException) as caught:
        _call(batch, method)
    error = caught.value
    assert (error.status, error.reason) == (status, phrase)
    assert json.loads(error.body)["reason"] == reason
    assert error.headers.get("Retry-After") == (str(retry_after) if retry_after else None)
    _call(batch, method)  # the fault was used up


@pytest.mark.parametrize("status", [429, 503])
def test_client_retries_get_after_retry_after(api, batch, status):
    # urllib3's default Retry (3 tries) honours Retry-After on 429/503 for idempotent methods,
    # so the backend never sees this error for a GET; it only costs a second request.
    api.fail_next(status=status, reason="TooManyRequests", method="GET", retry_after=0)
    assert batch.list_namespaced_job(NS).items == []
    assert [r.status for r in api.requests] == [status, 200]


def test_fail_next_counts_and_filters_by_path(api, batch, core):
    api.fail_next(count=2, status=500, path_contains="/jobs")
    core.list_namespaced_pod(NS)
    for _ in range(2):
        with pytest.raises(ApiException):
            batch.list_namespaced_job(NS)
    batch.list_namespaced_job(NS)


TOKENS = [("fake-token", None), ("wrong-token", 401), (None, 401)]


@pytest.mark.parametrize("token, expected_status", TOKENS)
def test_require_token(tmp_path, token, expected_status):
    with FakeApiServer(require_token="fake-token") as api:
        if token is None:
            configuration = client.Configuration(host=api.url)
            api_client = client.ApiClient(configuration)
        else:
            api_client = api_client_for(api.write_kubeconfig(tmp_path / "kc", token=token))
        with api_client:
            core = client.CoreV1Api(api_client)
            if expected_status is None:
                assert core.list_namespace().items[0].metadata.name == "default"
            else:
                with pytest.raises(ApiException) as caught:
                    core.list_namespace()
                assert caught.value.status == expected_status
                assert json.loads(caught.value.body)["reason"] == "Unauthorized"


def test_custom_objects_round_trip(api, custom):
    group, version, plural = "jobset.x-k8s.io", "v1alpha2", "jobsets"
    body = {
        "apiVersion": f"{group}/{version}",
        "kind": "JobSet",
        "metadata": {"generateName": "pretrain-"},
        "spec": {"replicatedJobs": []},
    }
    created = custom.create_namespaced_custom_object(group, version, NS, plural, body)
    name = created["metadata"]["name"]
    assert name.startswith("pretrain-") and len(name) == len("pretrain-") + 5

    custom.patch_namespaced_custom_object_status(
        group, version, NS, plural, name, {"status": {"terminalState": "Completed"}}
    )
    got = custom.get_namespaced_custom_object(group, version, NS, plural, name)
    assert got["status"] == {"terminalState": "Completed"}
    listed = custom.list_namespaced_custom_object(group, version, NS, plural)
    assert listed["kind"] == "JobSetList" and listed["items"][0]["kind"] == "JobSet"
    deleted = custom.delete_namespaced_custom_object(group, version, NS, plural, name)
    assert deleted["metadata"]["name"] == name  # CRDs answer DELETE with the object
    assert api.objects(plural, group=group) == []


def test_namespace_delete_removes_its_objects(api, core, batch):
    core.create_namespace({"metadata": {"name": "team-a"}})
    batch.create_namespaced_job("team-a", job_body("train"))
    deleted = core.delete_namespace("team-a")
    assert deleted["status"]["phase"] == "Terminating"
    assert api.objects("jobs", "team-a") == [] and api.get("namespaces", "team-a") is None


def test_discovery(k8s):
    assert client.VersionApi(k8s).get_code().git_version == "v1.34.0"
    assert client.CoreApi(k8s).get_api_versions().versions == ["v1"]
    groups = {g.name for g in client.ApisApi(k8s).get_api_versions().groups}
    assert {"batch", "jobset.x-k8s.io", "trainer.kubeflow.org"} <= groups
    resources = client.BatchV1Api(k8s).get_api_resources().resources
    assert "jobs" in {r.name for r in resources}


def test_dynamic_client_discovers_crds(k8s):
    jobsets = dynamic.DynamicClient(k8s).resources.get(
        api_version="jobset.x-k8s.io/v1alpha2", kind="JobSet"
    )
    body = {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "metadata": {"name": "a"}}
    jobsets.create(body=body, namespace=NS)
    assert [j.metadata.name for j in jobsets.get(namespace=NS).items] == ["a"]


def test_user_finalizer_delays_deletion(api, batch):
    batch.create_namespaced_job(
        NS, job_body("train") | {"metadata": {"name": "train", "finalizers": ["example.com/keep"]}}
    )
    marked = batch.delete_namespaced_job("train", NS, propagation_policy="Background")
    assert marked["metadata"]["deletionTimestamp"] and api.get("jobs", "train") is not None
    batch.patch_namespaced_job("train", NS, {"metadata": {"finalizers": None}})
    assert api.get("jobs", "train") is None


def test_stopped_server_refuses_connections(api, core):
    core.list_namespace()  # leaves a keep-alive connection in the pool
    api.stop()
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        core.list_namespace()
