"""NAMESPACE and QUEUE resolution: the argument, else the environment, else the kubeconfig
context, else the course namespace (no queue)."""

from __future__ import annotations

import pytest
import yaml

from kubecourse import TrainingClient, render
from kubecourse import constants as C
from kubecourse.context import COURSE_NAMESPACE, QUEUE_EXTENSION, resolve_namespace, resolve_queue


def _kubeconfig(path, namespace=None, queue=None):
    context = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    if queue:
        context["extensions"] = [{"name": QUEUE_EXTENSION, "extension": {"queue": queue}}]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "contexts": [
                    {"name": "x", "context": context},
                    {"name": "y", "context": {"namespace": "other"}},
                ],
                "current-context": "x",
            }
        )
    )
    return str(path)


@pytest.mark.parametrize(
    "value, env, context, expected",
    [
        ("mine", "env-ns", "ctx-ns", "mine"),
        ("", "env-ns", "ctx-ns", "env-ns"),
        ("", "", "ctx-ns", "ctx-ns"),
        ("", "", None, COURSE_NAMESPACE),
    ],
)
def test_resolve_namespace(value, env, context, expected, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", _kubeconfig(tmp_path / "k", namespace=context))
    monkeypatch.setenv("KUBECOURSE_NAMESPACE", env)
    assert resolve_namespace(value) == expected


@pytest.mark.parametrize(
    "value, env, context, expected",
    [("q1", "q2", "q3", "q1"), ("", "q2", "q3", "q2"), ("", "", "q3", "q3"), ("", "", None, "")],
)
def test_resolve_queue(value, env, context, expected, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", _kubeconfig(tmp_path / "k", queue=context))
    monkeypatch.setenv("KUBECOURSE_QUEUE", env)
    assert resolve_queue(value) == expected


def test_a_missing_kubeconfig_is_the_course_namespace(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBECOURSE_NAMESPACE", raising=False)
    assert resolve_namespace() == COURSE_NAMESPACE


def test_render_and_client_resolve_an_empty_namespace_and_the_queue(tmp_path, monkeypatch):
    monkeypatch.setenv(
        "KUBECONFIG", _kubeconfig(tmp_path / "k", namespace="learner-07", queue="default")
    )
    monkeypatch.delenv("KUBECOURSE_NAMESPACE", raising=False)
    monkeypatch.delenv("KUBECOURSE_QUEUE", raising=False)
    job = next(o for o in render("01", namespace="") if o["kind"] == "Job")
    assert job["metadata"]["namespace"] == "learner-07"
    assert job["metadata"]["labels"][C.KUEUE_QUEUE_LABEL] == "default" and job["spec"]["suspend"]
    with TrainingClient(show_kubectl=False, namespace="", rendered_dir=tmp_path) as client:
        assert client.namespace == "learner-07"
    # an explicit namespace wins, and without a configured queue nothing is queued
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    job = next(o for o in render("01", namespace="team") if o["kind"] == "Job")
    assert job["metadata"]["namespace"] == "team"
    assert C.KUEUE_QUEUE_LABEL not in job["metadata"].get("labels", {})
