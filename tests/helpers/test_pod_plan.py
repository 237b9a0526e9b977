"""plan_pod(): a pod spec -> argv, env, folders and files, checked without starting a process."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kubecourse import constants as C
from kubecourse.backends.local.plan import (
    Network,
    PodConfigError,
    PodContext,
    materialize,
    plan_pod,
)

PY = "/venv/bin/python"
VOL = Path("/state/volumes")
POD_DIR = Path("/state/runs/ns/job/pod-a")
OBJECTS = {
    ("ConfigMap", "settings"): {"data": {"MODE": "fast", "config.yaml": "lr: 1"}},
    ("Secret", "creds"): {"data": {"token": "c2VjcmV0"}},  # base64 of "secret"
}
SERVICE = {
    "kind": "Service",
    "metadata": {"name": "workers"},
    "spec": {"clusterIP": "None", "ports": [{"port": 29500}]},
}


def _ctx(network: Network | None = None) -> PodContext:
    return PodContext(
        volumes_root=VOL,
        pod_dir=POD_DIR,
        python=PY,
        lookup=lambda kind, name: OBJECTS.get((kind, name)),
        network=network or Network(),
        host_env={"PATH": "/usr/bin"},
    )


def _pod(container: dict, *, volumes=(), init=None, annotations=None, **spec) -> dict:
    base = {"name": "trainer", "image": "img:1", "command": ["python", "-m", "labs.x"]}
    pod_spec = {"containers": [{**base, **container}], "volumes": list(volumes), **spec}
    if init is not None:
        pod_spec["initContainers"] = [{**base, "name": "init", **init}]
    return {
        "metadata": {
            "name": "pod-a",
            "namespace": "ns",
            "uid": "u-1",
            "labels": {C.JOB_NAME_LABEL: "job"},
            "annotations": annotations or {},
        },
        "spec": pod_spec,
    }


PVC = {"name": "ckpt", "persistentVolumeClaim": {"claimName": "training-checkpoints"}}
MOUNT = {"name": "ckpt", "mountPath": "/checkpoints"}
JOB_NAME_ENV = {
    "name": "JOB_NAME",
    "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{C.JOB_NAME_LABEL}']"}},
}

# (id, pod, expected argv of the trainer, expected env subset)
ARGV_ENV = [
    ("python is this interpreter", _pod({}), [PY, "-m", "labs.x"], {"HOSTNAME": "pod-a"}),
    (
        "torchrun is this interpreter's launcher",
        _pod({"command": ["torchrun", "--nproc-per-node=2"]}),
        [PY, "-m", "torch.distributed.run", "--nproc-per-node=2"],
        {},
    ),
    (
        "$(VAR) and $$ expansion, fieldRef",
        _pod(
            {
                "args": ["--out=$(JOB_NAME)/$(UNKNOWN)", "$$(JOB_NAME)"],
                "env": [JOB_NAME_ENV, {"name": "A", "value": "x-$(JOB_NAME)"}],
            }
        ),
        [PY, "-m", "labs.x", "--out=job/$(UNKNOWN)", "$(JOB_NAME)"],
        {"JOB_NAME": "job", "A": "x-job"},
    ),
    (
        "a PVC mount path is mapped in args and env, subPath included",
        _pod(
            {
                "args": ["--out-dir=/checkpoints/run", "/checkpoints", "/checkpointsX"],
                "env": [{"name": "OUT", "value": "/data/a"}],
                "volumeMounts": [MOUNT, {"name": "ckpt", "mountPath": "/data", "subPath": "d"}],
            },
            volumes=[PVC],
        ),
        [
            PY,
            "-m",
            "labs.x",
            f"--out-dir={VOL}/ns/training-checkpoints/run",
            f"{VOL}/ns/training-checkpoints",
            "/checkpointsX",
        ],
        {"OUT": f"{VOL}/ns/training-checkpoints/d/a"},
    ),
    (
        "completion index, configMap and secret refs, envFrom",
        _pod(
            {
                "env": [
                    {"name": "T", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                    {
                        "name": "M",
                        "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "MODE"}},
                    },
                    {
                        "name": "O",
                        "valueFrom": {
                            "secretKeyRef": {"name": "nope", "key": "k", "optional": True}
                        },
                    },
                ],
                "envFrom": [{"configMapRef": {"name": "settings"}}],
            },
            annotations={C.COMPLETION_INDEX_ANNOTATION: "3"},
        ),
        [PY, "-m", "labs.x"],
        {C.ENV_COMPLETION_INDEX: "3", "T": "secret", "M": "fast", "O": "", "MODE": "fast"},
    ),
    (
        "pod DNS under a headless Service is loopback with the job's port",
        _pod(
            {
                "args": ["--master=job-0.workers:29500", "job-1.workers.ns.svc.cluster.local"],
                "env": [{"name": "MASTER_PORT", "value": "29500"}, {"name": "X", "value": "29500"}],
            }
        ),
        [PY, "-m", "labs.x", "--master=127.0.0.1:41000", "127.0.0.1"],
        {"MASTER_PORT": "41000", "X": "29500"},
    ),
]


@pytest.mark.parametrize(
    ("pod", "argv", "env"), [c[1:] for c in ARGV_ENV], ids=[c[0] for c in ARGV_ENV]
)
def test_plan_argv_and_env(pod, argv, env):
    network = Network.for_services([SERVICE], "ns", free_port=lambda: 41000)
    plan = plan_pod(pod, _ctx(network))
    trainer = plan.main_containers[0]
    assert trainer.argv == argv
    assert {k: trainer.env.get(k) for k in env} == env
    assert trainer.env["PATH"] == "/venv/bin:/usr/bin"


def test_plan_folders_files_and_init_order():
    pod = _pod(
        {"volumeMounts": [MOUNT, {"name": "cfg", "mountPath": "/etc/cfg"}]},
        volumes=[
            PVC,
            {"name": "cfg", "configMap": {"name": "settings"}},
            {"name": "s", "emptyDir": {}},
        ],
        init={"command": ["python", "-c", "pass"], "volumeMounts": [MOUNT]},
        terminationGracePeriodSeconds=7,
    )
    plan = plan_pod(pod, _ctx())
    assert [(c.name, c.init) for c in plan.containers] == [("init", True), ("trainer", False)]
    assert set(plan.folders) == {
        VOL / "ns" / "training-checkpoints",
        POD_DIR / "volumes" / "cfg",
        POD_DIR / "volumes" / "s",
    }
    assert plan.files == {
        POD_DIR / "volumes" / "cfg" / "MODE": "fast",
        POD_DIR / "volumes" / "cfg" / "config.yaml": "lr: 1",
    }
    assert plan.grace_s == 7.0


@pytest.mark.parametrize(
    ("container", "volumes", "message"),
    [
        ({"command": []}, [], "has no command"),
        ({"volumeMounts": [MOUNT]}, [], "volumeMount 'ckpt' names no volume"),
        (
            {"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]},
            [],
            "secret 'nope' not found in namespace 'ns'",
        ),
        (
            {"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "x"}}}]},
            [],
            "key 'x' not found in secret 'creds'",
        ),
        (
            {"env": [{"name": "F", "valueFrom": {"fieldRef": {"fieldPath": "status.phase"}}}]},
            [],
            "fieldRef 'status.phase' is not supported",
        ),
        ({}, [{"name": "c", "configMap": {"name": "absent"}}], "configmap 'absent' not found"),
    ],
)
def test_plan_refuses_what_the_kubelet_could_not_start(container, volumes, message):
    with pytest.raises(PodConfigError, match=re.escape(message)):
        plan_pod(_pod(container, volumes=volumes), _ctx())


def test_materialize_creates_folders_and_files(tmp_path):
    ctx = PodContext(tmp_path / "vol", tmp_path / "pod", PY, lambda k, n: OBJECTS.get((k, n)))
    pod = _pod(
        {"volumeMounts": [{**MOUNT, "subPath": "sub"}]},
        volumes=[PVC, {"name": "cfg", "configMap": {"name": "settings"}}],
    )
    materialize(plan_pod(pod, ctx))
    assert (tmp_path / "vol" / "ns" / "training-checkpoints" / "sub").is_dir()
    assert (tmp_path / "pod" / "volumes" / "cfg" / "config.yaml").read_text() == "lr: 1"


def test_a_mount_over_the_interpreters_folder_maps_only_the_pods_own_paths():
    """A pod mounting an emptyDir at /tmp (readOnlyRootFilesystem) while this course runs from a
    checkout under /tmp: the interpreter and the passed-through host env stay as they are, the
    pod's own args and env under /tmp go to the emptyDir's folder."""
    python = "/tmp/checkout/.venv/bin/python"
    ctx = PodContext(
        volumes_root=VOL,
        pod_dir=POD_DIR,
        python=python,
        lookup=lambda kind, name: None,
        network=Network(),
        host_env={"PATH": "/usr/bin", "PYTHONPATH": "/tmp/checkout/helpers"},
    )
    pod = _pod(
        {
            "args": ["--scratch=/tmp/scratch"],
            "env": [{"name": "TMPDIR", "value": "/tmp"}],
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        },
        volumes=[{"name": "tmp", "emptyDir": {}}],
    )
    trainer = plan_pod(pod, ctx).main_containers[0]
    tmp_folder = trainer.env["TMPDIR"]
    assert tmp_folder != "/tmp" and tmp_folder.startswith(str(POD_DIR))
    assert trainer.argv == [python, "-m", "labs.x", f"--scratch={tmp_folder}/scratch"]
    assert trainer.env["PYTHONPATH"] == "/tmp/checkout/helpers"
