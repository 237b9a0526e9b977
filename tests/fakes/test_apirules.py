"""The fake API server refuses what a real one refuses, through the real `kubernetes` client.

Each row is a mistake a real kube-apiserver (v1.34-1.36) answered with 400 or 422 (issue 9, item
6), reproduced by tests/fakes/apirules.py; plus the behaviours the backend relies on: dry-run
objects are not stored (a dry-run namespace does not exist for the objects inside it), a pod
without a node has an empty log answered 204, fieldValidation=Strict rejects unknown fields.
"""

from __future__ import annotations

import copy
import json

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .apiserver import FakeApiServer
from .test_apiserver import api_client_for

NS = "default"


def job_body(**spec) -> dict:
    container = {
        "name": "trainer",
        "image": "busybox:1.37",
        "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "train", "namespace": NS},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                }
            },
            **spec,
        },
    }


def _trainer(body: dict) -> dict:
    return body["spec"]["template"]["spec"]["containers"][0]


def _edit(change, **spec):
    def build() -> dict:
        body = job_body(**spec)
        change(body)
        return body

    return build


T = "spec.template.spec"
REJECTED = [
    # (id, body, HTTP status, the field of a StatusCause (422) or None, text of the message)
    ("restartPolicy Always", _edit(lambda b: b["spec"]["template"]["spec"].update(restartPolicy="Always")),
     422, f"{T}.restartPolicy", 'Unsupported value: "Always"'),
    ("OnFailure with podFailurePolicy",
     _edit(lambda b: b["spec"]["template"]["spec"].update(restartPolicy="OnFailure"),
           podFailurePolicy={"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}),
     422, f"{T}.restartPolicy", 'only "Never" is supported when podFailurePolicy is specified'),
    ("mount of an undefined volume",
     _edit(lambda b: _trainer(b)["volumeMounts"].append({"name": "ckpt", "mountPath": "/c"})),
     422, f"{T}.containers[0].volumeMounts[1].name", 'Not found: "ckpt"'),
    ("duplicate container names",
     _edit(lambda b: b["spec"]["template"]["spec"]["containers"].append(copy.deepcopy(_trainer(b)))),
     422, f"{T}.containers[1].name", 'Duplicate value: "trainer"'),
    ("backoffLimit -1", job_body(backoffLimit=-1), 422, "spec.backoffLimit",
     "must be greater than or equal to 0"),
    ("limits below requests", _edit(lambda b: _trainer(b)["resources"]["requests"].update(cpu="2")),
     422, f"{T}.containers[0].resources.requests", "must be less than or equal to cpu limit of 1"),
    ("invalid label value", _edit(lambda b: b["metadata"].update(labels={"team": "ml team"})),
     422, "metadata.labels", "a valid label must be an empty string"),
    ("bad fieldPath",
     _edit(lambda b: _trainer(b)["env"][0]["valueFrom"]["fieldRef"].update(fieldPath="metadata.nme")),
     422, f"{T}.containers[0].env[0].valueFrom.fieldRef.fieldPath",
     "field label not supported: metadata.nme"),
    ("quantity '4 cores'", _edit(lambda b: _trainer(b)["resources"]["limits"].update(cpu="4 cores")),
     400, None, 'Job in version "v1" cannot be handled as a Job: quantities must match'),
    ("Indexed name without room for the index",
     _edit(lambda b: b["metadata"].update(name="a" * 62), completionMode="Indexed", completions=2,
           parallelism=2),
     422, "metadata.name", "will not able to create pod with invalid DNS label: " + "a" * 62 + "-1"),
    ("no image", _edit(lambda b: _trainer(b).pop("image")), 422, f"{T}.containers[0].image",
     "Required value"),
    ("GPU requests differ from limits",
     _edit(lambda b: _trainer(b)["resources"].update(requests={"nvidia.com/gpu": 1},
                                                    limits={"nvidia.com/gpu": 2})),
     422, f"{T}.containers[0].resources.requests", "must be equal to nvidia.com/gpu limit of 2"),
    ("resource name gpu", _edit(lambda b: _trainer(b)["resources"]["limits"].update(gpu=1)),
     422, f"{T}.containers[0].resources.limits[gpu]", "must be a standard resource type"),
    ("containerPort 70000", _edit(lambda b: _trainer(b).update(ports=[{"containerPort": 70000}])),
     422, f"{T}.containers[0].ports[0].containerPort", "must be between 1 and 65535"),
    ("ttlSecondsAfterFinished -1", job_body(ttlSecondsAfterFinished=-1), 422,
     "spec.ttlSecondsAfterFinished", "must be greater than or equal to 0"),
    ("duplicate volume names",
     _edit(lambda b: b["spec"]["template"]["spec"]["volumes"].append({"name": "data", "emptyDir": {}})),
     422, f"{T}.volumes[1].name", 'Duplicate value: "data"'),
    ("unknown field (strict)", job_body(backofLimit=3), 400, None,
     'strict decoding error: unknown field "spec.backofLimit"'),
]  # fmt: skip


@pytest.fixture
def api():
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def k8s(api, tmp_path):
    with api_client_for(api.write_kubeconfig(tmp_path / "kubeconfig")) as api_client:
        yield api_client


@pytest.fixture
def create_job(k8s):
    """POST a Job body as it is (the typed BatchV1Api would refuse bad bodies client-side)."""
    custom = client.CustomObjectsApi(k8s)

    def create(body: dict, namespace: str = NS, **query):
        return custom.create_namespaced_custom_object(
            "batch", "v1", namespace, "jobs", body, **query
        )

    return create


@pytest.fixture
def core(k8s):
    return client.CoreV1Api(k8s)


@pytest.mark.parametrize(
    "body, status, field, text", [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED]
)
def test_the_server_refuses_what_a_real_one_refuses(api, create_job, body, status, field, text):
    built = body() if callable(body) else body
    with pytest.raises(ApiException) as refused:
        create_job(built, field_validation="Strict")
    answer = json.loads(refused.value.body)
    assert (refused.value.status, answer["code"]) == (status, status) and text in answer["message"]
    if field is not None:
        causes = answer["details"]["causes"]
        assert any(c["field"] == field and text in c["message"] for c in causes), causes
    assert api.objects("jobs", group="batch") == []  # nothing stored


def test_the_valid_body_is_accepted_so_each_row_tests_one_mistake(api, create_job):
    create_job(job_body(), field_validation="Strict")
    assert [j["metadata"]["name"] for j in api.objects("jobs", group="batch")] == ["train"]


def test_unknown_fields_pass_without_strict_validation(api, create_job):
    create_job(job_body(backofLimit=3))  # without Strict a real server drops it with a warning
    assert api.get("jobs", "train", group="batch") is not None


def test_a_dry_run_namespace_does_not_exist_for_the_objects_inside_it(api, create_job, core):
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b"}}
    core.create_namespace(namespace, dry_run="All")
    assert api.get("namespaces", "team-b") is None
    with pytest.raises(ApiException) as missing:
        create_job({**job_body(), "metadata": {"name": "train"}}, "team-b", dry_run="All")
    answer = json.loads(missing.value.body)
    assert (missing.value.status, answer["reason"]) == (404, "NotFound")
    assert answer["message"] == 'namespaces "team-b" not found'


def test_the_log_of_a_pod_without_a_node_is_empty_with_204(api, core):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "unplaced"},
        "spec": {"containers": [{"name": "trainer", "image": "busybox:1.37"}]},
    }
    core.create_namespaced_pod(NS, pod)
    for follow in (False, True):
        response = core.read_namespaced_pod_log(
            "unplaced", NS, follow=follow, _preload_content=False
        )
        assert (response.status, response.read()) == (204, b"")
        response.release_conn()
