"""Malformed input: each case gives one clear error naming the field, and nothing reaches a backend."""

from __future__ import annotations

import copy

import pytest

from kubecourse import ManifestError, TrainingClient, load_lesson, render
from kubecourse.backends.base import Backend
from kubecourse.manifests import parse_yaml, pod_spec, trainer_container, workload


class RecordingBackend(Backend):
    """A backend that records every call; the bad-input tests assert it saw none."""

    name = "recording"

    def __init__(self):
        self.calls = []

    def submit(self, objects, *, dry_run=False):
        self.calls.append("submit")

    def status(self, name, namespace):
        self.calls.append("status")

    def wait(self, name, namespace, *, timeout_s, on_update=None):
        self.calls.append("wait")

    def logs(self, name, namespace, *, follow=False, index=None, tail_lines=None):
        self.calls.append("logs")
        return iter(())

    def events(self, name, namespace):
        self.calls.append("events")
        return []

    def delete(self, name, namespace):
        self.calls.append("delete")


def _edit(change):
    """Lesson 01's manifests with `change(job)` applied to the Job."""

    def build():
        objects = copy.deepcopy(load_lesson("01"))
        change(workload(objects))
        return objects

    return build


def _trainer(job):
    return trainer_container(pod_spec(job))


def _set(path_fn, key, value):
    return lambda job: path_fn(job).__setitem__(key, value)


BAD_INPUTS = [
    # (id, build the objects (may raise), field the error must name)
    ("bad job name", lambda: render("01", name="Cifar_10"), "name"),
    ("job name too long", lambda: render("01", name="x" * 64), "name"),
    ("negative gpus", lambda: render("01", gpus=-1), "gpus"),
    ("gpus not an int", lambda: render("01", gpus="two"), "gpus"),
    ("zero nodes", lambda: render("01", nodes=0), "nodes"),
    ("bad namespace", lambda: render("01", namespace="Team A"), "namespace"),
    ("unknown option", lambda: render("01", gpu=1), "gpu"),
    ("unpinned image", lambda: render("01", image="pytorch/pytorch"), "image"),
    ("latest image", lambda: render("01", image="pytorch/pytorch:latest"), "image"),
    ("bad cpu quantity", lambda: render("01", cpu="four"), "cpu"),
    ("bad memory quantity", lambda: render("01", memory="16 GB"), "memory"),
    ("bad env name", lambda: render("01", env={"1BAD": "x"}), "env.1BAD"),
    ("args not a list", lambda: render("01", extra_args="--smoke"), "extra_args"),
    ("unknown volume", lambda: render("01", volumes={"scratch": "my-pvc"}), "volumes.scratch"),
    (
        "broken YAML",
        lambda: parse_yaml("kind: Job\nmetadata: {name: x\n", "job.yaml"),
        "line 3, column 1",
    ),
    (
        "unknown kind",
        lambda: parse_yaml("apiVersion: batch/v1\nkind: Jobb\nmetadata: {name: x}\n"),
        "apiVersion/kind",
    ),
    (
        "missing image",
        _edit(lambda job: _trainer(job).pop("image")),
        "spec.template.spec.containers[0].image",
    ),
    (
        "misspelled field",
        _edit(_set(lambda job: job["spec"], "backofLimit", 3)),
        "spec.backofLimit",
    ),
    (
        "no requests/limits",
        _edit(lambda job: _trainer(job).pop("resources")),
        "spec.template.spec.containers[0].resources.requests.cpu",
    ),
    (
        "privilege escalation",
        _edit(lambda job: _trainer(job)["securityContext"].update(allowPrivilegeEscalation=True)),
        "spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation",
    ),
    (
        "inline secret",
        _edit(lambda job: _trainer(job)["env"].append({"name": "HF_TOKEN", "value": "hf_abc123"})),
        "spec.template.spec.containers[0].env[2].value",
    ),
    (
        "wrong type",
        _edit(_set(lambda job: job["spec"], "completions", "three")),
        "spec.completions",
    ),
    ("missing metadata name", _edit(lambda job: job["metadata"].pop("name")), "metadata.name"),
    ("not a list of manifests", lambda: {"kind": "Job"}, "submit"),
]


@pytest.mark.parametrize(
    "build, field", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_names_the_field_and_reaches_no_backend(build, field, tmp_path):
    backend = RecordingBackend()
    client = TrainingClient(backend=backend, show_kubectl=False, rendered_dir=tmp_path)
    with pytest.raises(ManifestError) as info:
        objects = build()
        client.submit(objects)
    assert backend.calls == []
    message = str(info.value)
    named = [f.field for f in info.value.findings] + [f.obj for f in info.value.findings]
    assert any(field == n or field in n for n in named) or field in message, (
        f"{field!r} not named in:\n{message}"
    )


def test_there_are_at_least_fifteen_cases():
    assert len(BAD_INPUTS) >= 15
