"""Outputs through the facade: result, metrics, volumes and disruptions (local backend here; the
same verbs over HTTP against the fake cluster are in test_fake_cluster.py)."""

from __future__ import annotations

import pytest

from kubecourse import Conflict, render
from kubecourse.backends.outputs import out_dir_volume
from tests.guards import HANG_GUARD_S

from .jobs import job

pytestmark = pytest.mark.timeout(60)

PVC_VOLUME = {"name": "ckpt", "persistentVolumeClaim": {"claimName": "training-checkpoints"}}
JOB_NAME_ENV = {
    "name": "JOB_NAME",
    "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}},
}


@pytest.mark.parametrize(
    ("args", "mounts", "env", "expected"),
    [
        (["--out-dir=/checkpoints/$(JOB_NAME)"], [{"name": "ckpt", "mountPath": "/checkpoints"}],
         [JOB_NAME_ENV], ("training-checkpoints", "w")),
        (["--out-dir", "/checkpoints/$(SUB)/x"], [{"name": "ckpt", "mountPath": "/checkpoints/"}],
         [{"name": "SUB", "value": "s"}], ("training-checkpoints", "s/x")),
        (["--out-dir=/out"], [{"name": "ckpt", "mountPath": "/out", "subPath": "runs"}], [],
         ("training-checkpoints", "runs")),
        (["--out-dir=/scratch/x"], [{"name": "ckpt", "mountPath": "/checkpoints"}], [], None),
        (["--epochs=1"], [{"name": "ckpt", "mountPath": "/checkpoints"}], [], None),
    ],
    ids=["job-name-label", "separate-flag-value", "subpath", "not-on-a-pvc", "no-out-dir"],
)  # fmt: skip
def test_out_dir_volume(args, mounts, env, expected):
    manifest = job("w", "pass", args=args, env=env, volumes=[PVC_VOLUME], mounts=mounts)
    assert out_dir_volume(manifest) == expected


def test_out_dir_volume_of_every_lesson_job():
    """The lessons' own manifests: each trainer's --out-dir lies on a PVC the facade can read."""
    objects = render("01", name="cifar-a")
    job_manifest = next(o for o in objects if o["kind"] == "Job")
    assert out_dir_volume(job_manifest) == ("training-checkpoints", "cifar-a")


LAB = """
import json, os, sys
out = sys.argv[1].removeprefix("--out-dir=")
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"kind": "train", "step": 1, "loss": 2.0}) + "\\n")
    f.write(json.dumps({"kind": "eval", "step": 1, "eval_loss": 1.5}) + "\\n")
    f.write('{"kind": "tra')
result = {"steps": 1, "final_loss": 2.0}
json.dump(result, open(os.path.join(out, "result.json"), "w"))
print("step 1/1 loss 2.0")
print("done steps 1 loss 2.0")
if os.environ.get("PRINT_RESULT"):
    print("result " + json.dumps(dict(result, source="log"), separators=(",", ":"), sort_keys=True))
"""


def _lab_job(name: str, print_result: bool) -> list[dict]:
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "training-checkpoints", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    manifest = job(
        name,
        LAB,
        args=["--out-dir=/checkpoints/$(JOB_NAME)"],
        env=[JOB_NAME_ENV, {"name": "PRINT_RESULT", "value": "1" if print_result else ""}],
        volumes=[PVC_VOLUME],
        mounts=[{"name": "ckpt", "mountPath": "/checkpoints"}],
    )
    return [pvc, manifest]


@pytest.mark.parametrize(
    ("print_result", "expected"),
    [
        (True, {"steps": 1, "final_loss": 2.0, "source": "log"}),  # the log's result line wins
        (False, {"steps": 1, "final_loss": 2.0}),  # no result line: result.json on the volume
    ],
)
def test_result_metrics_and_volume_verbs(local_client, print_result, expected):
    client = local_client
    name = f"outputs-{int(print_result)}"
    client.reset_volume("training-checkpoints", name)
    ref = client.submit(_lab_job(name, print_result))
    assert client.wait(ref, timeout_s=HANG_GUARD_S, progress=False).phase == "Succeeded"
    assert client.result(ref) == expected
    assert [(m["kind"], m["step"]) for m in client.metrics(ref)] == [("train", 1), ("eval", 1)]
    assert client.list_volume("training-checkpoints", name) == ["metrics.jsonl", "result.json"]
    assert client.read_volume("training-checkpoints", f"{name}/absent") is None
    assert b'"steps": 1' in client.read_volume("training-checkpoints", f"{name}/result.json")
    client.reset_volume("training-checkpoints", name)
    assert client.list_volume("training-checkpoints", name) == []
    assert client.metrics(ref) == []
    with pytest.raises(ValueError, match="leaves the volume"):
        client.read_volume("training-checkpoints", "../../etc/passwd")


def test_kill_and_kill_worker_need_a_running_pod(local_client):
    ref = local_client.submit([job("quick", "print('hi')")])
    local_client.wait(ref, timeout_s=HANG_GUARD_S, progress=False)
    with pytest.raises(Conflict, match="no running pod"):
        local_client.kill(ref)
    with pytest.raises(Conflict, match="no running torchrun worker"):
        local_client.kill_worker(ref)
