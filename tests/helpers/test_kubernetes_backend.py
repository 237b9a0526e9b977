"""The Kubernetes backend against an in-process fake API server speaking real HTTP (no patching)."""

from __future__ import annotations

import socket
import threading

import pytest

from kubecourse import (
    ClusterUnreachable,
    Conflict,
    Forbidden,
    Invalid,
    JobRef,
    NotFound,
    OptionError,
    ServerError,
    TooManyRequests,
    TrainingClient,
    Unauthorized,
    render,
)
from kubecourse import constants as C
from kubecourse.backends.config import KubernetesBackendConfig, LocalBackendConfig
from kubecourse.backends.kubernetes import KubernetesBackend
from tests.fakes.apiserver import FakeApiServer
from tests.guards import HANG_GUARD_S

from .jobs import job


@pytest.fixture
def api():
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def client(api, tmp_path):
    backend = KubernetesBackend(
        KubernetesBackendConfig(
            kubeconfig=api.write_kubeconfig(tmp_path / "kubeconfig"),
            backoff_s=0.01,
            watch_chunk_s=5,
        )
    )
    with TrainingClient(
        backend=backend, show_kubectl=False, rendered_dir=tmp_path / "rendered"
    ) as c:
        yield c


def _posts(api):
    return [r for r in api.requests if r.method == "POST"]


def test_nothing_is_loaded_or_sent_before_the_first_call(api, tmp_path):
    backend = KubernetesBackend(
        KubernetesBackendConfig(kubeconfig=str(tmp_path / "does-not-exist-yet"))
    )
    TrainingClient(backend=backend, show_kubectl=False, rendered_dir=tmp_path)
    assert api.requests == [] and backend._api_client is None


def test_submit_dry_runs_everything_then_creates_dependencies_first(api, client):
    ref = client.submit(render("01", name="order"))
    assert (ref.name, ref.namespace, ref.kind) == ("order", "default", "Job")
    posts = _posts(api)
    order = ["persistentvolumeclaims", "persistentvolumeclaims", "jobs"]
    assert [(r.path.rsplit("/", 1)[-1], r.query.get("dryRun")) for r in posts] == [
        *((plural, "All") for plural in order),
        *((plural, None) for plural in order),
    ]
    assert all(r.query.get("fieldValidation") == "Strict" for r in posts)
    assert (
        ref.created
        == (
            "PersistentVolumeClaim/cifar10-data",
            "PersistentVolumeClaim/training-checkpoints",
            "Job/order",
        )
        and ref.reused == ()
    )
    assert (
        api.get("jobs", "order", group="batch")["spec"]["template"]["spec"]["containers"][0]["name"]
        == "trainer"
    )


def test_server_side_dry_run_stores_nothing(api, client):
    ref = client.submit(render("01", name="dry"), dry_run=True)
    assert ref.dry_run and all(r.query.get("dryRun") == "All" for r in _posts(api))
    assert (
        api.get("jobs", "dry", group="batch") is None
        and api.objects("persistentvolumeclaims") == []
    )


def test_wait_follows_a_watch_stream_not_a_poll_loop(api, client):
    api.on_create(
        "Job",
        lambda a, j: a.run_job(
            j,
            logs={0: ["step 1/2 loss 2.3", "step 2/2 loss 1.1", "done test_acc 0.9"]},
            step_delay=0.05,
        ),
    )
    ref = client.submit([job("watched", "print(1)")])
    status = client.wait(ref, timeout_s=HANG_GUARD_S, progress=False)
    assert status.phase == C.SUCCEEDED and status.succeeded == 1 and status.pods[0].exit_code == 0
    job_gets = [r for r in api.requests if r.method == "GET" and r.path.endswith("/jobs/watched")]
    assert api.watch_count >= 1 and len(job_gets) <= 2, "wait must watch, not poll"
    assert [line.text for line in client.logs(ref, echo=False)] == [
        "step 1/2 loss 2.3",
        "step 2/2 loss 1.1",
        "done test_acc 0.9",
    ]
    assert {"SuccessfulCreate", "Completed"} <= {e.reason for e in client.events(ref)}


@pytest.mark.parametrize("compact", [False, True], ids=["dropped-stream", "expired-410"])
def test_wait_survives_a_dropped_or_expired_watch(api, client, compact):
    ref = client.submit([job("flaky", "print(1)")])
    result = {}
    waiter = threading.Thread(
        target=lambda: result.update(
            status=client.wait(ref, timeout_s=HANG_GUARD_S, progress=False)
        )
    )
    waiter.start()
    assert api.wait_for(lambda a: a.watch_count >= 1)
    # A change the waiter's watch does not select moves the cluster's resourceVersion past the waiter's.
    api.put_object(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unrelated"}, "data": {}}
    )
    if compact:
        api.compact()  # the waiter's resourceVersion is now too old: the reconnect gets 410 Expired
    api.drop_watches()
    assert api.wait_for(lambda a: a.watch_count >= 2, timeout=HANG_GUARD_S)
    api.run_job("flaky", logs={0: ["done"]})
    waiter.join(20)
    assert result["status"].phase == C.SUCCEEDED
    lists = [
        r
        for r in api.requests
        if r.method == "GET"
        and r.path.endswith("/jobs")
        and r.query.get("fieldSelector") == "metadata.name=flaky"
        and r.query.get("watch") != "true"
    ]
    assert len(lists) == (2 if compact else 1), (
        "after 410 the job is re-listed once; a plain drop needs no re-list"
    )
    # Initial watch, the reconnect, and (after 410) one watch from the fresh list's version:
    # restarting from the object's own (compacted) version would loop on 410.
    assert api.watch_count == (3 if compact else 2)


def test_wait_retries_a_watch_refused_with_503(api, client):
    ref = client.submit([job("busy", "print(1)")])
    api.fail_next(
        count=1,
        status=503,
        reason="ServiceUnavailable",
        method="GET",
        path_contains="/namespaces/default/jobs",
    )
    api.on_create("ConfigMap", lambda a, _: a.run_job("busy"))
    threading.Timer(
        0.3,
        lambda: api.put_object(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "go"}}
        ),
    ).start()
    # The first GET (the job read) takes the 503 and is retried by _call; the watch then succeeds.
    assert client.wait(ref, timeout_s=HANG_GUARD_S, progress=False).phase == C.SUCCEEDED


def test_failed_job_reports_reason_and_exit_code(api, client):
    api.on_create(
        "Job",
        lambda a, j: a.run_job(j, outcome="Failed", exit_code=137, reason="BackoffLimitExceeded"),
    )
    status = client.wait(
        client.submit([job("oom", "print(1)")]), timeout_s=HANG_GUARD_S, progress=False
    )
    assert (status.phase, status.reason) == (C.FAILED, "BackoffLimitExceeded")
    assert (status.pods[0].exit_code, status.pods[0].reason) == (137, "OOMKilled")


def test_logs_of_every_rank_and_one_rank(api, client):
    manifest = job("ranks", "print(1)", completions=2, parallelism=2, completionMode="Indexed")
    api.on_create(
        "Job", lambda a, j: a.run_job(j, logs={0: ["r0 a", "r0 b"], 1: ["r1 a"]}, step_delay=0.05)
    )
    ref = client.submit([manifest])
    followed = (
        list(client.iter_logs(ref, follow=True))
        if api.wait_for(lambda a: len(a.objects("pods")) == 2)
        else []
    )
    assert sorted((line.index, line.text) for line in followed) == [
        (0, "r0 a"),
        (0, "r0 b"),
        (1, "r1 a"),
    ]
    client.wait(ref, timeout_s=HANG_GUARD_S, progress=False)
    assert [line.prefixed() for line in client.logs(ref, rank=1, echo=False)] == ["[rank 1] r1 a"]


def test_delete_is_foreground_and_a_second_delete_is_not_found(api, client):
    api.on_create("Job", lambda a, j: a.run_job(j))
    ref = client.submit([job("gone", "print(1)")])
    client.wait(ref, timeout_s=HANG_GUARD_S, progress=False)
    client.delete(ref)
    delete = [r for r in api.requests if r.method == "DELETE"][-1]
    assert (
        delete.query.get("propagationPolicy") == "Foreground"
        and delete.body["propagationPolicy"] == "Foreground"
    )
    assert api.get("jobs", "gone", group="batch") is None
    with pytest.raises(NotFound) as gone:  # already gone: NotFound, as `kubectl delete` says
        client.delete(ref)
    assert gone.value.status == 404 and 'jobs.batch "gone" not found' in str(gone.value)
    client.delete(ref, missing_ok=True)  # unless the caller says an absent job is fine
    with pytest.raises(NotFound) as info:
        client.status(ref)
    assert info.value.status == 404 and "not found" in str(info.value)


@pytest.mark.parametrize(
    "status, reason, count, error, attempts",
    [  # attempts: POSTs in all (the dry run's, retried, then the create when it succeeds)
        (403, "Forbidden", 1, Forbidden, 1),
        (422, "Invalid", 1, Invalid, 1),
        (429, "TooManyRequests", 2, None, 4),  # retried with backoff, then succeeds
        (500, "InternalError", 2, None, 4),
        (503, "ServiceUnavailable", 10, ServerError, 4),  # retries are bounded
        (429, "TooManyRequests", 10, TooManyRequests, 4),
    ],
)
def test_api_errors_keep_their_status_and_retries_are_bounded(
    api, client, status, reason, count, error, attempts
):
    api.fail_next(
        count=count,
        status=status,
        reason=reason,
        method="POST",
        retry_after=0 if status == 429 else None,
    )
    if error is None:
        client.submit([job("retried", "print(1)")])
        assert api.get("jobs", "retried", group="batch") is not None
    else:
        with pytest.raises(error) as info:
            client.submit([job("refused", "print(1)")])
        assert info.value.status == status and reason in (info.value.reason + str(info.value))
    assert len(_posts(api)) == attempts


def test_existing_dependencies_are_reused_but_an_existing_job_is_a_conflict(api, client):
    client.submit(render("01", name="first"))
    # The PVCs exist already: reused, not an error, and reported as reused, not created.
    second = client.submit(render("01", name="second"))
    assert {j["metadata"]["name"] for j in api.objects("jobs")} == {"first", "second"}
    assert len(api.objects("persistentvolumeclaims")) == 2
    assert second.created == ("Job/second",)
    assert second.reused == (
        "PersistentVolumeClaim/cifar10-data",
        "PersistentVolumeClaim/training-checkpoints",
    )


def test_conflict_on_an_existing_name(api, client):
    client.submit([job("twice", "print(1)")])
    with pytest.raises(Conflict) as info:
        client.submit([job("twice", "print(1)")])
    assert info.value.status == 409 and info.value.reason == "AlreadyExists"


def test_bad_token_is_unauthorized(tmp_path):
    with FakeApiServer(require_token="right") as api:
        backend = KubernetesBackend(
            KubernetesBackendConfig(
                kubeconfig=api.write_kubeconfig(tmp_path / "kc", token="wrong"), backoff_s=0.01
            )
        )
        with pytest.raises(Unauthorized) as info:
            backend.status(JobRef("x", "default"))
        assert info.value.status == 401


def test_connection_refused_is_cluster_unreachable(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text(
        f"apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    backend = KubernetesBackend(
        KubernetesBackendConfig(kubeconfig=str(kubeconfig), backoff_s=0.01, retries=1)
    )
    with pytest.raises(ClusterUnreachable) as info:
        backend.status(JobRef("x", "default"))
    assert info.value.status is None and f"127.0.0.1:{port}" in str(info.value)


def test_following_a_pod_that_has_not_started_waits_for_it(api, client):
    client.submit([job("late", "print(1)")])
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "late-abcde", "labels": {C.JOB_NAME_LABEL: "late"}},
        "spec": {"containers": [{"name": "trainer", "image": "x:1"}], "nodeName": "node-1"},
        "status": {"phase": "Pending"},  # scheduled, its image still being pulled
    }
    api.put_object(pod)

    def start_later():  # once the helper has asked for the log of the not-yet-started pod
        assert api.wait_for(
            lambda a: any(r.path.endswith("/log") for r in a.requests), timeout=HANG_GUARD_S
        )
        api.patch_status("pods", "late-abcde", {"phase": "Running"})
        api.append_log("late-abcde", "hello from a slow image pull")
        api.patch_status("pods", "late-abcde", {"phase": "Succeeded"})

    threading.Thread(target=start_later, daemon=True).start()
    lines = client.logs("late", follow=True, echo=False)
    assert [line.text for line in lines] == ["hello from a slow image pull"]
    assert any(
        r.query.get("watch") in ("true", "1", "True") and r.path.endswith("/pods")
        for r in api.requests
    ), [(r.method, r.path, r.query) for r in api.requests]


def test_following_right_after_submit_waits_for_the_first_pod(api, client):
    ref = client.submit([job("fresh", "print(1)")])
    result = {}
    follower = threading.Thread(
        target=lambda: result.update(lines=client.logs(ref, follow=True, echo=False))
    )
    follower.start()
    assert api.wait_for(
        lambda a: a.watch_count >= 1
    )  # the helper is watching for pods, not polling
    api.run_job("fresh", logs={0: ["first line", "last line"]})
    follower.join(20)
    assert [line.text for line in result["lines"]] == ["first line", "last line"]


def test_submit_leaves_the_callers_objects_untouched(client):
    objects = [job("untouched", "print(1)")]
    del objects[0]["metadata"]["namespace"]
    client.submit(objects)
    assert "namespace" not in objects[0]["metadata"]


@pytest.mark.parametrize(
    ("backend", "kind", "settings"),
    [
        ("local", "LocalBackend", {"max_grace_s": 10.0}),
        ("kubernetes", "KubernetesBackend", {"max_attempts": 4}),
        (LocalBackendConfig(max_grace_s=2.5), "LocalBackend", {"max_grace_s": 2.5}),
        (
            KubernetesBackendConfig(kubeconfig="/nowhere", context="ctx", retries=0),
            "KubernetesBackend",
            {"kubeconfig": "/nowhere", "context": "ctx", "max_attempts": 1},
        ),
        (
            KubernetesBackend(KubernetesBackendConfig(retries=5)),
            "KubernetesBackend",
            {"max_attempts": 6},
        ),
    ],
)
def test_a_backend_from_a_name_a_typed_config_or_an_instance(tmp_path, backend, kind, settings):
    with TrainingClient(backend=backend, show_kubectl=False, rendered_dir=tmp_path) as client:
        assert type(client.backend).__name__ == kind
        assert {key: getattr(client.backend, key) for key in settings} == settings
        if isinstance(backend, KubernetesBackend):
            assert client.backend is backend  # an instance is used as it is
        if kind == "KubernetesBackend":
            assert client.backend._api_client is None  # nothing connects before the first call


@pytest.mark.parametrize("bad", ["Kubernetes", "minikube", None, 3])
def test_an_unknown_backend_is_an_option_error_naming_the_choices(tmp_path, bad):
    with pytest.raises(OptionError) as info:
        TrainingClient(backend=bad, show_kubectl=False, rendered_dir=tmp_path)
    assert info.value.fields == ["backend"] and "local, kubernetes" in str(info.value)


def test_a_misspelt_config_option_fails_where_it_is_written():
    with pytest.raises(TypeError, match="max_attemps"):
        KubernetesBackendConfig(max_attemps=3)
