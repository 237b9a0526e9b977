"""Schema, CRD and policy validation."""

from __future__ import annotations

import base64

import pytest

from kubecourse import load_lesson, validate
from kubecourse.validation import policy_findings


def _job(**container_overrides):
    container = {
        "name": "trainer",
        "image": "ghcr.io/kubecourse/labs:0.1.0",
        "command": ["python"],
        "resources": {
            "requests": {"cpu": "1", "memory": "1Gi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    container.update(container_overrides)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j"},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                }
            }
        },
    }


def test_lesson_manifests_are_clean():
    report = validate(load_lesson("01"))
    assert report.ok, str(report)


@pytest.mark.parametrize(
    "obj, field",
    [
        (_job(image="pytorch/pytorch"), "spec.template.spec.containers[0].image"),
        (_job(image="pytorch/pytorch:latest"), "spec.template.spec.containers[0].image"),
        (_job(resources={}), "spec.template.spec.containers[0].resources.limits.memory"),
        (
            _job(
                securityContext={
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                }
            ),
            "spec.template.spec.containers[0].securityContext.runAsNonRoot",
        ),
        (
            _job(securityContext={"runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}),
            "spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation",
        ),
        (
            _job(securityContext={"runAsNonRoot": True, "allowPrivilegeEscalation": False}),
            "spec.template.spec.containers[0].securityContext.capabilities.drop",
        ),
        (
            _job(env=[{"name": "WANDB_API_KEY", "value": "abc"}]),
            "spec.template.spec.containers[0].env[0].value",
        ),
        (
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "s"},
                "stringData": {"token": "hf_live"},
            },
            "stringData.token",
        ),
        (
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "s"},
                "data": {"token": base64.b64encode(b"hf_live").decode()},
            },
            "data.token",
        ),
    ],
)
def test_policy_finding_names_the_field(obj, field):
    assert field in [f.field for f in policy_findings(obj)]


@pytest.mark.parametrize(
    "obj",
    [
        _job(),
        _job(image="nvcr.io/nvidia/pytorch@sha256:" + "a" * 64),
        _job(
            env=[
                {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
            ]
        ),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s"},
            "stringData": {"token": "<your token>"},
        },
    ],
)
def test_policy_accepts_compliant_objects(obj):
    assert policy_findings(obj) == []


def test_unknown_builtin_kind_and_bad_name():
    report = validate(
        [
            {"apiVersion": "v1", "kind": "Bogus", "metadata": {"name": "x"}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_Valid"}},
        ],
        policy=False,
    )
    assert [f.field for f in report.findings] == ["apiVersion/kind", "metadata.name"]


LOCAL_QUEUE = {
    "apiVersion": "kueue.x-k8s.io/v1beta1",
    "kind": "LocalQueue",
    "metadata": {"name": "team-a", "namespace": "team-a"},
    "spec": {"clusterQueue": "shared"},
}


@pytest.mark.parametrize(
    "obj, fields",
    [
        (LOCAL_QUEUE, []),
        (
            {**LOCAL_QUEUE, "spec": {"clusterQueue": "shared", "clusterQueu": "typo"}},
            ["spec.clusterQueu"],
        ),
        ({**LOCAL_QUEUE, "apiVersion": "kueue.x-k8s.io/v9"}, ["apiVersion/kind"]),
        (
            {
                "apiVersion": "jobset.x-k8s.io/v1alpha2",
                "kind": "JobSet",
                "metadata": {"name": "js"},
                "spec": {"replicatedJobs": [{"name": "workers", "replicas": "two"}]},
            },
            ["spec.replicatedJobs[0].replicas", "spec.replicatedJobs[0].template"],
        ),
    ],
)
def test_custom_resources_against_their_crd(crd_dir, obj, fields):
    report = validate([obj], policy=False, crd_dir=crd_dir)
    assert sorted(f.field for f in report.findings) == sorted(fields), str(report)


def test_custom_resources_are_skipped_with_a_reason_without_crds(tmp_path):
    report = validate([LOCAL_QUEUE], policy=False, crd_dir=tmp_path / "absent")
    assert report.ok and "absent" in report.skipped[0]
