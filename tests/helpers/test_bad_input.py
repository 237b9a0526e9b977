"""Malformed input: each case gives one clear error naming the field, and nothing reaches a backend."""

from __future__ import annotations

import copy

import pytest

from kubecourse import ManifestError, TrainingClient, load_lesson, render, semantic, validate
from kubecourse.backends.base import Backend
from kubecourse.manifests import parse_yaml, pod_spec, trainer_container, workload


class RecordingBackend(Backend):
    """A backend that records every call; the bad-input tests assert it saw none."""

    name = "recording"

    def __init__(self):
        self.calls = []

    def submit(self, objects, *, dry_run=False):
        self.calls.append("submit")

    def status(self, ref):
        self.calls.append("status")

    def wait(self, ref, *, timeout_s, on_update=None):
        self.calls.append("wait")

    def logs(self, ref, *, follow=False, index=None, tail_lines=None):
        self.calls.append("logs")
        return iter(())

    def events(self, ref):
        self.calls.append("events")
        return []

    def delete(self, ref, *, missing_ok=False, volumes=False):
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


def _pod(job):
    return pod_spec(job)


def _indexed(name_length: int, completions: int):
    def build():
        objects = render("01", name="a" * name_length)
        workload(objects)["spec"].update(completionMode="Indexed", completions=completions)
        return objects

    return build


S = "spec.template.spec"
C0 = f"{S}.containers[0]"
LESSON_POD = pod_spec(workload(load_lesson("01")))  # where appended items land
NEXT_MOUNT = len(trainer_container(LESSON_POD)["volumeMounts"])
NEXT_VOLUME = len(LESSON_POD["volumes"])
NEXT_ENV = len(trainer_container(LESSON_POD)["env"])
DUPLICATE_TRAINER = _edit(lambda job: _pod(job)["containers"].append(copy.deepcopy(_trainer(job))))
FIELD_REF = {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.node"}}}

BAD_INPUTS = [
    # (id, build the objects (may raise), the exact field of a finding, a fragment of its message)
    ("bad job name", lambda: render("01", name="Cifar_10"), "name", "is not a valid job name"),
    ("job name too long", lambda: render("01", name="x" * 64), "name", "at most 63"),
    ("negative gpus", lambda: render("01", gpus=-1), "gpus", "integer >= 0, got -1"),
    ("gpus not an int", lambda: render("01", gpus="two"), "gpus", "got 'two'"),
    ("zero nodes", lambda: render("01", nodes=0), "nodes", "integer >= 1, got 0"),
    ("bad namespace", lambda: render("01", namespace="Team A"), "namespace", "DNS-1123 label"),
    ("unknown option", lambda: render("01", gpu=1), "gpu", "did you mean 'gpus'?"),
    ("unpinned image", lambda: render("01", image="pytorch/pytorch"), "image", "is not pinned"),
    ("latest image", lambda: render("01", image="pytorch/pytorch:latest"), "image", "not pinned"),
    ("bad cpu quantity", lambda: render("01", cpu="four"), "cpu", "not a Kubernetes quantity"),
    ("bad memory quantity", lambda: render("01", memory="16 GB"), "memory", "not a Kubernetes quantity"),
    ("bad env name", lambda: render("01", env={"1BAD": "x"}), "env.1BAD", "not a valid environment"),
    ("args not a list", lambda: render("01", extra_args="--smoke"), "extra_args", "must be a list"),
    ("unknown volume", lambda: render("01", volumes={"scratch": "my-pvc"}), "volumes.scratch",
     "no PVC volume named 'scratch'"),
    ("broken YAML", lambda: parse_yaml("kind: Job\nmetadata: {name: x\n", "job.yaml"),
     "line 3, column 1", "broken YAML"),
    ("unknown kind", lambda: parse_yaml("apiVersion: batch/v1\nkind: Jobb\nmetadata: {name: x}\n"),
     "apiVersion/kind", "unknown kind batch/v1 Jobb"),
    ("missing image", _edit(lambda job: _trainer(job).pop("image")), f"{C0}.image",
     "container 'trainer' has no image"),
    ("misspelled field", _edit(_set(lambda job: job["spec"], "backofLimit", 3)), "spec.backofLimit",
     "unknown field 'backofLimit'"),
    ("no requests/limits", _edit(lambda job: _trainer(job).pop("resources")),
     f"{C0}.resources.requests.cpu", "requests.cpu is not set"),
    ("privilege escalation",
     _edit(lambda job: _trainer(job)["securityContext"].update(allowPrivilegeEscalation=True)),
     f"{C0}.securityContext.allowPrivilegeEscalation", "allowPrivilegeEscalation: false"),
    ("inline secret",
     _edit(lambda job: _trainer(job)["env"].append({"name": "HF_TOKEN", "value": "hf_abc123"})),
     f"{C0}.env[{NEXT_ENV}].value", "looks like a secret"),
    ("wrong type", _edit(_set(lambda job: job["spec"], "completions", "three")), "spec.completions",
     "'three' is not of type 'integer'"),
    ("missing metadata name", _edit(lambda job: job["metadata"].pop("name")), "metadata.name",
     "needs a name"),
    ("not a list of manifests", lambda: {"kind": "Job"}, "objects", "non-empty list of manifests"),
    # --- what the API server rejects with 422/400 (kubecourse.semantic) ---
    ("restartPolicy Always in a Job", _edit(_set(_pod, "restartPolicy", "Always")),
     f"{S}.restartPolicy", "'Always' is not allowed in a Job"),
    ("OnFailure with podFailurePolicy", _edit(_set(_pod, "restartPolicy", "OnFailure")),
     f"{S}.restartPolicy", "only Never is allowed"),
    ("mount of an undefined volume",
     _edit(lambda job: _trainer(job)["volumeMounts"].append({"name": "scratch", "mountPath": "/s"})),
     f"{C0}.volumeMounts[{NEXT_MOUNT}].name", "'scratch', which spec.volumes does not define"),
    ("duplicate container names", DUPLICATE_TRAINER, f"{S}.containers[1].name",
     "'trainer' is used twice"),
    ("backoffLimit -1", _edit(_set(lambda job: job["spec"], "backoffLimit", -1)), "spec.backoffLimit",
     "backoffLimit is -1: it must be 0 or more"),
    ("limits below requests",
     _edit(lambda job: _trainer(job)["resources"]["limits"].update(cpu="2")),
     f"{C0}.resources.requests.cpu", "(4) is above limits.cpu (2)"),
    ("invalid label value",
     _edit(lambda job: job["metadata"]["labels"].update(team="ml team")),
     "metadata.labels.team", "label value 'ml team' is invalid"),
    ("label value not a string",
     _edit(lambda job: job["metadata"]["labels"].update(version=2)),
     "metadata.labels.version", "quote numbers"),
    ("invalid label key",
     _edit(lambda job: job["metadata"]["labels"].update({"-team": "a"})),
     "metadata.labels.-team", "label key '-team' is invalid"),
    ("bad downward-API fieldPath", _edit(lambda job: _trainer(job)["env"].append(FIELD_REF)),
     f"{C0}.env[{NEXT_ENV}].valueFrom.fieldRef.fieldPath", "'spec.node' is not a field an env var can read"),
    ("quantity '4 cores'",
     _edit(lambda job: _trainer(job)["resources"]["requests"].update(cpu="4 cores")),
     f"{C0}.resources.requests.cpu", "'4 cores' is not a quantity"),
    ("quantity '16GB'",
     _edit(lambda job: _trainer(job)["resources"]["limits"].update(memory="16GB")),
     f"{C0}.resources.limits.memory", "'16GB' is not a quantity"),
    ("Indexed name without room for the index", _indexed(62, 2), "metadata.name",
     "leaves no room for the pod index"),
    ("Indexed name without room for a 2-digit index", _indexed(61, 11), "metadata.name",
     "the name may have at most 60"),
    ("Indexed without completions",
     _edit(lambda job: job["spec"].update(completionMode="Indexed")), "spec.completions",
     "an Indexed Job needs completions"),
    ("completions -1", _edit(_set(lambda job: job["spec"], "completions", -1)), "spec.completions",
     "completions is -1"),
    ("parallelism -1", _edit(_set(lambda job: job["spec"], "parallelism", -1)),
     "spec.parallelism", "parallelism is -1"),
    ("ttlSecondsAfterFinished -1", _edit(_set(lambda job: job["spec"], "ttlSecondsAfterFinished", -1)),
     "spec.ttlSecondsAfterFinished", "it must be 0 or more"),
    ("activeDeadlineSeconds 0", _edit(_set(lambda job: job["spec"], "activeDeadlineSeconds", 0)),
     "spec.activeDeadlineSeconds", "must be at least 1"),
    ("backoffLimitPerIndex without Indexed",
     _edit(_set(lambda job: job["spec"], "backoffLimitPerIndex", 1)), "spec.backoffLimitPerIndex",
     "needs completionMode: Indexed"),
    ("podFailurePolicy matching exit code 0",
     _edit(lambda job: job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"].update(values=[0])),
     "spec.podFailurePolicy.rules[0].onExitCodes.values[0]", "exit code 0 (success)"),
    ("podFailurePolicy unknown action",
     _edit(lambda job: job["spec"]["podFailurePolicy"]["rules"][0].update(action="Retry")),
     "spec.podFailurePolicy.rules[0].action", "'Retry' is not one of"),
    ("containerPort out of range",
     _edit(lambda job: _trainer(job).update(ports=[{"containerPort": 70000}])),
     f"{C0}.ports[0].containerPort", "70000 is not between 1 and 65535"),
    ("port name too long",
     _edit(lambda job: _trainer(job).update(ports=[{"containerPort": 29500, "name": "torch-rendezvous"}])),
     f"{C0}.ports[0].name", "at most 15"),
    ("duplicate env names",
     _edit(lambda job: _trainer(job)["env"].append({"name": "DATASET", "value": "other"})),
     f"{C0}.env[{NEXT_ENV}].name", "'DATASET' is set twice"),
    ("duplicate volume names",
     _edit(lambda job: _pod(job)["volumes"].append({"name": "dshm", "emptyDir": {}})),
     f"{S}.volumes[{NEXT_VOLUME}].name", "'dshm' is used twice"),
    ("duplicate mountPath",
     _edit(lambda job: _trainer(job)["volumeMounts"][1].update(mountPath="/data")),
     f"{C0}.volumeMounts[1].mountPath", "'/data' is used twice"),
    ("resource name 'gpu'",
     _edit(lambda job: _trainer(job)["resources"]["limits"].update(gpu=1)),
     f"{C0}.resources.limits.gpu", "'gpu' is not a resource name"),
    ("GPU requests differ from limits",
     _edit(lambda job: _trainer(job)["resources"]["limits"].update({"nvidia.com/gpu": 2})),
     f"{C0}.resources.requests.nvidia.com/gpu", "must equal limits.nvidia.com/gpu"),
    ("GPU request without a limit",
     _edit(lambda job: _trainer(job)["resources"]["limits"].pop("nvidia.com/gpu")),
     f"{C0}.resources.limits.nvidia.com/gpu", "has no limit"),
    ("imagePullPolicy lower case", _edit(lambda job: _trainer(job).update(imagePullPolicy="always")),
     f"{C0}.imagePullPolicy", "'always' is not one of"),
    ("container name not a DNS label", _edit(lambda job: _trainer(job).update(name="Trainer")),
     f"{C0}.name", "must be a DNS label"),
]  # fmt: skip


@pytest.mark.parametrize(
    "build, field, fragment", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_names_the_exact_field_and_reaches_no_backend(build, field, fragment, tmp_path):
    backend = RecordingBackend()
    client = TrainingClient(backend=backend, show_kubectl=False, rendered_dir=tmp_path)
    with pytest.raises(ManifestError) as info:
        objects = build()
        client.submit(objects)
    assert backend.calls == []
    findings = [(f.field, f.message) for f in info.value.findings]
    assert any(f == field and fragment in message for f, message in findings), (
        f"no finding at {field!r} saying {fragment!r}; found:\n{info.value}"
    )


def test_a_container_without_an_image_is_not_called_unpinned():
    objects = _edit(lambda job: _trainer(job).pop("image"))()
    assert "is not pinned" not in str(validate(objects))


def test_every_semantic_rule_has_a_case():
    """Each rule of kubecourse.semantic is exercised by at least one case of the table."""
    seen = set()
    for _, build, _, _ in BAD_INPUTS:
        try:
            objects = build()
        except ManifestError:
            continue  # an option or YAML error: no manifest to check
        if isinstance(objects, list):
            seen |= {f.rule for f in validate(objects).findings}
    rules = {f"semantic/{rule}" for rule in semantic.RULES}
    assert rules - seen == set(), f"rules without a case: {sorted(rules - seen)}"
