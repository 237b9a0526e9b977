# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 11 · Fault diagnosis and recovery: break it on purpose, name the cause, resume exactly
#
# **What you will do:** kill a training pod with SIGKILL at a random step, preempt it (SIGTERM with a
# grace period), inject a NaN loss and a hung rank, kill a checkpoint write halfway; diagnose each
# failure with `client.diagnose()`; prove that every recovered run ends with weights **bitwise
# equal** to an uninterrupted one. Then diagnose recorded cluster failures (OOMKilled, Pending on
# GPUs, ImagePullBackOff, NCCL timeouts...) and fix six broken manifests.
#
# **Why:** on a cluster, pods die for reasons that have nothing to do with your code: preemption,
# node drains, OOM kills, network partitions. A job that resumes *exactly* from its last complete
# checkpoint loses minutes, not the run; a person who can read the evidence fixes it in minutes.
#
# **Prerequisites:** 02, 10. **Time:** 30 minutes (smoke: under a minute). Runbook: `docs/runbook.md`.

# %% tags=["parameters"]
SMOKE = True  # tiny runs (20 optimizer steps each, ~3 s of training on one CPU thread)
BACKEND = "local"  # "local" (processes on this machine) or "kubernetes" ($KUBECONFIG)
NAMESPACE = ""  # empty: $KUBECOURSE_NAMESPACE, else the kubeconfig context, else "kubecourse"
IMAGE = "ghcr.io/kubecourse/labs:0.1.0"
KILL_SEED = 11  # picks the steps at which the pod is killed and preempted
TIMEOUT_S = 600

# %%
import io
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from kubecourse import TrainingClient, render
from kubecourse.contract import StepLine, parse_line
from kubecourse.course import record_outcome
from kubecourse.diagnose import case_dir, classify_case, load_case
from kubecourse.exercises import EXERCISES, grade, load_broken
from kubecourse.manifests import pod_spec, trainer_container
from labs.common.checkpoint import load_latest

client = TrainingClient(backend=BACKEND, namespace=NAMESPACE)

# %% [markdown]
# ## 1. Five copies of one tiny run
# All five train the same 20 steps with the same seed and a checkpoint every 3 steps. `reference`
# runs undisturbed; the others are broken on purpose:
#
# | job | fault | what should happen |
# |---|---|---|
# | `killed` | SIGKILL at a random step | the Job controller retries (counted against `backoffLimit`); the new pod resumes from the newest complete checkpoint |
# | `preempted` | preemption at a random step | SIGTERM: the lab checkpoints and exits 143; the DisruptionTarget rule of the `podFailurePolicy` ignores the failure; the new pod resumes from that checkpoint |
# | `nan` | NaN loss at step 8, `--on-nonfinite=fail` | exit 4 naming the step; the retry resumes from step 6 |
# | `hang` | rank 0 hangs before step 5, `--watchdog-s=3` | the watchdog exits 3 after 3 s; the retry resumes from step 3 |

# %%
TINY = [
    "--data-dir=/data",
    "--dataset=$(DATASET)",
    "--out-dir=/checkpoints/$(JOB_NAME)",
    "--smoke",
    "--train-subset=320",
    "--test-subset=200",
    "--epochs=2",
    "--batch-size=32",
    "--log-every=1",
    "--checkpoint-every=3",
    "--num-threads=1",
]


def tiny_job(name: str, *extra: str, backoff_limit: int = 3, prepare: bool = False):
    objects = render(
        "01",
        name=name,
        namespace=NAMESPACE,
        image=IMAGE,
        env={"DATASET": "synthetic"},
        args=TINY + list(extra),
        backoff_limit=backoff_limit,
    )
    for obj in objects:
        if obj["kind"] == "Job" and prepare:  # only the init container runs: it fills the data PVC
            trainer_container(pod_spec(obj)).update(
                command=["python", "-c", "print('data ready')"], args=[]
            )
        elif obj["kind"] == "Job":
            # The data is already on the data PVC (the prepare job below), so every pod can skip
            # the init container that would check it: 8 fewer process starts.
            pod_spec(obj).pop("initContainers")
    return objects


faulty = {
    "killed": tiny_job("killed"),
    "preempted": tiny_job("preempted"),
    "nan": tiny_job("nan", "--inject-nan-at-step=8", "--on-nonfinite=fail", backoff_limit=1),
    "hang": tiny_job("hang", "--inject-hang-at-step=5", "--watchdog-s=3", backoff_limit=1),
}

# %%
jobs = {}
# The data set once, by a job whose init container writes it to the data PVC.
prepare = client.submit(tiny_job("prepare-data", prepare=True))
assert client.wait(prepare, timeout_s=TIMEOUT_S, progress=False).phase == "Succeeded"
client.delete(prepare)
for name in ["reference", *faulty]:
    client.reset_volume("training-checkpoints", name)  # start from nothing
jobs["reference"] = client.submit(tiny_job("reference"))
for name, objects in faulty.items():
    jobs[name] = client.submit(objects)

# %% [markdown]
# ## 2. Kill -9 one job at a random step, preempt another
# `client.kill(job)` crashes a running pod: SIGKILL, no chance to checkpoint, what the OOM killer or
# a node crash does (on a cluster: the pod is force-deleted). `client.preempt(job)` evicts it: the
# DisruptionTarget condition, SIGTERM, and SIGKILL after the grace period (the lab checkpoints on
# SIGTERM and exits 143). Each call prints its kubectl twin.

# %%
rng = random.Random(KILL_SEED)
kill_at, preempt_at = rng.randint(2, 7), rng.randint(8, 14)
print(f"SIGKILL at step {kill_at}, preemption at step {preempt_at} (seed {KILL_SEED})")
disruptions = []


def disrupt_at(name: str, at_step: int, action) -> None:
    """Follow the job's log; at the first line of step >= at_step, disrupt its running pod."""
    for line in client.iter_logs(jobs[name], follow=True):
        record = parse_line(line.text)
        if isinstance(record, StepLine) and record.step >= at_step:
            disruptions.append((action.__name__, record.step, action(jobs[name])))
            return


disrupt_at("killed", kill_at, client.kill)
disrupt_at("preempted", preempt_at, client.preempt)
print(disruptions)

# %%
statuses = {
    name: client.wait(ref, timeout_s=TIMEOUT_S, progress=False) for name, ref in jobs.items()
}
for name, status in statuses.items():
    print(
        f"{name:10s} {status.phase:10s} pods: {[(p.name[-5:], p.exit_code, p.reason) for p in status.pods]}"
    )

# %% [markdown]
# ## 3. Diagnose: what happened to each job?
# `client.diagnose(job)` collects the pods (phase, conditions, container exit codes and reasons),
# the events and the tail of every pod's log, and names the causes with their evidence and a fix,
# root cause first. The jobs succeeded in the end; the diagnosis tells what they survived.

# %%
diagnoses = {name: client.diagnose(ref) for name, ref in jobs.items()}
for diagnosis in diagnoses.values():
    print(diagnosis, end="\n\n")

# %% [markdown]
# ## 4. Bitwise-equal resume
# Exact resume needs every piece of state: weights, optimizer momentum, LR schedule, EMA, the RNGs,
# and the position in the data order (the augmentation of each batch is a pure function of
# `(seed, epoch, rank, batch index)`). Compare every tensor of the final checkpoints.


# %%
def final_checkpoint(name: str) -> dict:
    """The newest checkpoint of a job, read from the checkpoints PVC."""
    files = client.list_volume("training-checkpoints", f"{name}/checkpoints")
    newest = sorted(f for f in files if f.startswith("ckpt-step-") and f.endswith(".pt"))[-1]
    data = client.read_volume("training-checkpoints", f"{name}/checkpoints/{newest}")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def bitwise_equal(a: dict, b: dict) -> bool:
    return a["step"] == b["step"] and all(
        torch.equal(a["model"][k], b["model"][k]) for k in a["model"]
    )


reference = final_checkpoint("reference")
equal = {name: bitwise_equal(reference, final_checkpoint(name)) for name in faulty}
print(equal)

# %% [markdown]
# ## 5. A kill in the middle of a checkpoint write
# Checkpoints are written to a temp file, fsynced, then renamed (`labs/common/checkpoint.py`). Here
# a process saves a checkpoint slowly (`slow_write_s`: half the bytes, a pause, the rest) and is
# killed in the pause: the torn temp file is never loaded; the previous complete checkpoint is.

# %%
torn_dir = Path(tempfile.mkdtemp(prefix="torn-write-")) / "checkpoints"
writer = (
    "import sys, torch; from labs.common import checkpoint as c; d = sys.argv[1]; "
    "c.save_checkpoint({'step': 3, 'w': torch.ones(4)}, d, 3); print('saved 3', flush=True); "
    "c.save_checkpoint({'step': 6, 'w': torch.zeros(10**6)}, d, 6, slow_write_s=60)"
)
proc = subprocess.Popen(
    [sys.executable, "-c", writer, str(torn_dir)], stdout=subprocess.PIPE, text=True
)
assert proc.stdout.readline().strip() == "saved 3"
deadline = time.monotonic() + 600  # a hang guard: the half is on disk within a second when idle


def torn_bytes() -> int:
    """Bytes of step 6's temp file (0 until its first half is written and fsynced)."""
    return sum(p.stat().st_size for p in torn_dir.glob("*.tmp") if p.exists())


while torn_bytes() == 0 and time.monotonic() < deadline:
    time.sleep(0.02)  # the writer fsyncs the first half, then pauses 60 s: kill it in the pause
assert torn_bytes() > 0, "the slow checkpoint write never started"
proc.kill()
proc.wait(timeout=30)
print("on disk after the kill:", sorted(p.name for p in torn_dir.iterdir()))

torn_state, torn_path = load_latest(torn_dir)
print("loaded:", torn_path.name, "step", torn_state["step"])

# %% [markdown]
# ## 6. Recorded cluster failures
# The local backend has no scheduler, kubelet or registry. These failures were recorded as the API
# server shows them (`notebooks/exercises/11/cases/*.json`: the Job, its pods, events and log tails);
# `classify()` applies the same rules `diagnose()` uses on a live cluster.

# %%
recorded = {}
for path in sorted(case_dir().glob("*.json")):
    case = load_case(path.stem)
    recorded[path.stem] = (classify_case(case), case)
    primary = recorded[path.stem][0].primary
    print(f"{path.stem:28s} -> {primary.kind:18s} {primary.evidence[0][:90]}")
print()
print(recorded["pending-untolerated-taint"][0])

# %% [markdown]
# ## 7. Assert the outcome

# %%
assert all(d.kinds == c["expect"] for d, c in recorded.values()), {
    n: d.kinds for n, (d, c) in recorded.items() if d.kinds != c["expect"]
}
assert torn_state["step"] == 3 and not list(torn_dir.glob("*.tmp"))
assert all(s.phase == "Succeeded" for s in statuses.values()), statuses
assert [d[0] for d in disruptions] == ["kill", "preempt"], disruptions
assert diagnoses["reference"].kinds == []
assert diagnoses["killed"].kinds == ["Killed"], diagnoses["killed"]
assert diagnoses["preempted"].kinds == ["Preempted"], diagnoses["preempted"]
assert diagnoses["nan"].kinds == ["NaNLoss"] and diagnoses["hang"].kinds == ["Hung"]
# The crash counts against backoffLimit; the preemption (DisruptionTarget) is ignored.
assert (statuses["killed"].failed, statuses["preempted"].failed) == (1, 0), statuses
assert equal == {name: True for name in faulty}, f"not bitwise equal: {equal}"
record_outcome(
    "11_fault_diagnosis_recovery",
    backend=BACKEND,
    disruptions=[f"{kind}@{step}" for kind, step, _ in disruptions],
    bitwise_equal=equal,
    diagnoses={name: d.kinds for name, d in diagnoses.items()},
    recorded_cases_correct=len(recorded),
)

# %% [markdown]
# ## Exercise: fix six broken manifests
# Each file in `notebooks/exercises/11/` is a Job broken in one realistic way; its header gives the
# symptom a cluster would show (read it: `print(open(path).read())`). Write the fix as a function that
# edits the loaded objects; `grade()` validates the result (schema, CRDs, policy) and checks the fix
# itself. (Solutions are filled in: change one and re-run the check to see the grader object.)

# %%
for name, exercise in EXERCISES.items():
    print(f"{name:28s} {exercise.file:36s} symptom: {exercise.symptom}")
print()
print(grade("missing-gpu-toleration", load_broken("missing-gpu-toleration")))


# %%
def job_of(objects):
    return next(o for o in objects if o["kind"] == "Job")


def env_var(objects, name):
    return next(e for e in trainer_container(pod_spec(job_of(objects)))["env"] if e["name"] == name)


def fix_missing_dev_shm(objects):
    # BEGIN SOLUTION
    pod_spec(job_of(objects))["volumes"].append(
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}
    )
    trainer_container(pod_spec(job_of(objects)))["volumeMounts"].append(
        {"name": "dshm", "mountPath": "/dev/shm"}
    )
    # END SOLUTION


def fix_wrong_master_address(objects):
    # BEGIN SOLUTION
    env_var(objects, "MASTER_ADDR")["value"] = "ddp-0.ddp-workers"
    # END SOLUTION


def fix_missing_gpu_toleration(objects):
    # BEGIN SOLUTION
    pod_spec(job_of(objects))["tolerations"] = [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    # END SOLUTION


def fix_queue_name_mismatch(objects):
    # BEGIN SOLUTION
    job_of(objects)["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "team-a"
    # END SOLUTION


def fix_secret_inline(objects):
    # BEGIN SOLUTION
    token = env_var(objects, "HF_TOKEN")
    del token["value"]
    token["valueFrom"] = {"secretKeyRef": {"name": "hf-token", "key": "token"}}
    # END SOLUTION


def fix_checkpoints_lost_on_retry(objects):
    # BEGIN SOLUTION
    for volume in pod_spec(job_of(objects))["volumes"]:
        if volume["name"] == "checkpoints":
            volume.pop("emptyDir")
            volume["persistentVolumeClaim"] = {"claimName": "training-checkpoints"}
    # END SOLUTION


FIXES = {
    "missing-dev-shm": fix_missing_dev_shm,
    "wrong-master-address": fix_wrong_master_address,
    "missing-gpu-toleration": fix_missing_gpu_toleration,
    "queue-name-mismatch": fix_queue_name_mismatch,
    "secret-inline": fix_secret_inline,
    "checkpoints-lost-on-retry": fix_checkpoints_lost_on_retry,
}

# %%
from kubecourse.exercises import require

require("11-fix-manifests", FIXES)
for name, exercise in EXERCISES.items():
    print(f"  {name}: {exercise.fix}")

# %% [markdown]
# ## Exercise 2: exit codes are evidence
# The killed job's first pod ended with exit code 137 and the preempted one's with 143 (see the
# statuses in section 2): a container stopped by a signal reports a number computed from the
# signal's number (`signal.SIGKILL` is 9, `signal.SIGTERM` 15). Write `exit_code(signal_number)`;
# the check tries the signals measured here and three more (SIGINT, SIGABRT, SIGSEGV: a
# segmentation fault in a CUDA extension shows up as 139). (A solution is filled in.)


# %%
def exit_code(signal_number: int) -> int:
    # BEGIN SOLUTION
    return 128 + signal_number
    # END SOLUTION


# %%
def signal_exit(status) -> int | None:
    """The exit code of the pod the disruption stopped (codes above 128 are signal deaths)."""
    return next((p.exit_code for p in status.pods if (p.exit_code or 0) > 128), None)


measured = {9: signal_exit(statuses["killed"]), 15: signal_exit(statuses["preempted"])}
measured = {number: code for number, code in measured.items() if code is not None}
print("measured here:", measured)
require("11-exit-codes", exit_code, measured=measured)

# %% [markdown]
# ## On a real cluster
# ```bash
# kubectl describe job my-job                                # conditions, events, podFailurePolicy
# kubectl get pods -l batch.kubernetes.io/job-name=my-job -o yaml   # container states, DisruptionTarget
# kubectl events --for job/my-job                            # FailedScheduling, FailedCreate, pulls
# kubectl logs -l batch.kubernetes.io/job-name=my-job --prefix --tail=200 --previous
# kubectl delete pod <pod> --grace-period=0 --force          # a crash, like kill() here
# kubectl drain <node> --ignore-daemonsets --delete-emptydir-data   # evictions (DisruptionTarget)
# ```
# `TrainingClient(backend="kubernetes").diagnose("my-job")` reads the same evidence through the API.
# `docs/runbook.md` lists each cause with its symptom, evidence and fix.
#
# ## Clean up

# %%
for ref in jobs.values():
    client.delete(ref)
for name in ["reference", *faulty]:
    client.reset_volume("training-checkpoints", name)
shutil.rmtree(torn_dir.parent, ignore_errors=True)
client.close()
