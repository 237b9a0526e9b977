"""The preemption experiment: disruptions at random steps, lost work read from the trainer's log.

A stand-in trainer (plain Python, no torch: fast) behaves like labs/cifar10.py where it matters:
it prints `resumed_from=N` and `step i/M`, checkpoints every K steps, and on SIGTERM finishes
the step, checkpoints and exits 143. The real lab runs in notebook 09 and the benchmark.
"""

from __future__ import annotations

import pytest

from kubecourse import TrainingClient
from kubecourse.preemption import ha_job, run_preemption_experiment
from tests.guards import HANG_GUARD_S

from .jobs import job

TRAINER = """
import os, signal, sys, time
out = os.environ["OUT"]; every = int(sys.argv[1]); total = 40
os.makedirs(out, exist_ok=True)
ckpt = os.path.join(out, "step")
step = int(open(ckpt).read()) if os.path.exists(ckpt) else 0
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
def save():
    tmp = ckpt + ".tmp"
    open(tmp, "w").write(str(step)); os.replace(tmp, ckpt)
print(f"cifar10: resumed_from={step if step else None}", flush=True)
while step < total:
    time.sleep(0.03)
    step += 1
    print(f"step {step}/{total} loss 1.0", flush=True)
    if stop:
        save(); print(f"stopped by SIGTERM at step {step}; rerun to resume", flush=True); sys.exit(143)
    if step % every == 0:
        save()
"""


def _stand_in(tmp_path, every: int):
    policy = {
        "rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2]}},
            {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            },
        ]
    }
    manifest = job(
        "stand-in",
        TRAINER,
        args=[str(every), f"--checkpoint-every={every}"],
        env=[{"name": "OUT", "value": str(tmp_path / "out")}],
        backoffLimit=5,
        podFailurePolicy=policy,
    )
    return [manifest]


@pytest.mark.parametrize("every", [4, 8])
def test_lost_work_is_zero_after_sigterm_and_within_an_interval_after_sigkill(
    local_backend, tmp_path, every
):
    with TrainingClient(backend=local_backend, show_kubectl=False, rendered_dir=tmp_path) as client:
        run = run_preemption_experiment(
            client,
            _stand_in(tmp_path, every),
            disruptions=["SIGTERM", "SIGKILL", "SIGKILL"],
            seed=every,
            timeout_s=HANG_GUARD_S,
        )
    print(run.table())
    assert run.phase == "Succeeded" and run.total_steps == 40
    assert [d.kind for d in run.disruptions] == ["SIGTERM", "SIGKILL", "SIGKILL"]
    assert run.lost("SIGTERM") == [0]
    assert len(run.lost("SIGKILL")) == 2
    assert all(0 <= lost <= every for lost in run.lost("SIGKILL"))
    assert all(d.resumed_from % every == 0 for d in run.disruptions if d.kind == "SIGKILL")
    assert all(d.restart_s is not None and d.restart_s > 0 for d in run.disruptions)
    assert run.predicted_lost("SIGKILL") == every / 2


def test_bad_disruption_kind_and_missing_interval_are_refused(local_client):
    with pytest.raises(ValueError, match="SIGSTOP"):
        run_preemption_experiment(local_client, [], disruptions=["SIGSTOP"])
    objects = ha_job("x", checkpoint_every=5)
    objects[-1]["spec"]["template"]["spec"]["containers"][0]["args"] = []
    with pytest.raises(ValueError, match="--checkpoint-every"):
        run_preemption_experiment(local_client, objects, disruptions=["SIGKILL"])


def test_ha_job_renders_the_lesson_04_job_at_smoke_size():
    objects = ha_job("ha-x", namespace="team", checkpoint_every=7, epochs=2, train_subset=640)
    assert [o["kind"] for o in objects] == ["PersistentVolumeClaim", "PersistentVolumeClaim", "Job"]
    job_spec = objects[-1]["spec"]
    assert objects[-1]["metadata"] == {
        **objects[-1]["metadata"],
        "name": "ha-x",
        "namespace": "team",
    }
    args = job_spec["template"]["spec"]["containers"][0]["args"]
    assert {"--checkpoint-every=7", "--epochs=2", "--train-subset=640", "--log-every=1"} <= set(
        args
    )
    rules = [r["action"] for r in job_spec["podFailurePolicy"]["rules"]]
    assert rules == ["FailJob", "Ignore", "Count"]
