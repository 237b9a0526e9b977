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
# # 04 · Multi-node DDP, four ways, and an elastic restart
#
# **What you will do:** render one multi-node training spec as an Indexed Job + headless Service,
# a JobSet, a PyTorchJob and a TrainJob, and compare them; run 2 nodes x 2 processes on the local
# backend (two pods, each a `torchrun` launcher on 127.0.0.1); have one worker die in the middle
# and watch torchrun restart the worker group on every node and the lab resume from its checkpoint.
#
# **Why:** multi-node is where training on Kubernetes usually gets stuck: who is rank 0, how the
# others find it (DNS of a pod that may not exist yet), and what happens when one process dies.
#
# **Prerequisites:** 02, 03. **Time:** 30 minutes (smoke: about a minute).

# %% tags=["parameters"]
SMOKE = True  # the lab's --smoke preset, CPU
BACKEND = "local"  # "local" or "kubernetes" ($KUBECONFIG; needs the image and an RWX storage class)
NAMESPACE = ""  # empty: $KUBECOURSE_NAMESPACE, else the kubeconfig context, else "kubecourse"
JOB_NAME = "lm-multinode"
IMAGE = "ghcr.io/kubecourse/labs:0.1.0"
NODES = 2
PROCS_PER_NODE = 2
STEPS = 80  # optimizer steps of the run
CHECKPOINT_EVERY = 20
CRASH_AT_STEP = 25  # the last rank dies by SIGKILL before this step, after the first checkpoint
TIMEOUT_S = 300

# %%
import dataclasses
import os
import subprocess

from kubecourse import TrainingClient
from kubecourse.contract import FaultInjected, Resumed, StartLine, parse_line, records
from kubecourse.course import record_outcome
from kubecourse.display import events_view, status_view
from kubecourse.manifests import repo_root
from kubecourse.multinode import (
    KINDS,
    MultiNodeSpec,
    comparison_table,
    render_all,
    side_by_side,
    variant_diff,
)

ROOT = repo_root()
client = TrainingClient(backend=BACKEND, namespace=NAMESPACE)

# %% [markdown]
# ## 1. One spec, four renderings
# `manifests/02-multinode/` holds the same training as four plain YAML files. The helper applies
# one typed spec to each; every option knows where its value lives in each kind (nodes are Job
# `completions`, JobSet Job `completions`, PyTorchJob `1 + Worker.replicas`, TrainJob `numNodes`).

# %%
cluster_spec = MultiNodeSpec(nodes=NODES, procs_per_node=PROCS_PER_NODE, gpus=1, image=IMAGE)
rendered = render_all(cluster_spec)
comparison_table()

# %%
side_by_side(rendered)

# %% [markdown]
# What changes when you switch controllers? The diff lines up the pod template fields of both kinds
# under `pod.` so only real differences show: the Indexed Job needs its own Service and
# `subdomain`; the JobSet makes the Service and derives names from its own; the PyTorchJob and
# TrainJob have the operator inject the rank and master address.

# %%
variant_diff(rendered, "Job", "JobSet")

# %%
variant_diff(rendered, "PyTorchJob", "TrainJob")

# %% [markdown]
# All four validate: built-in kinds against the Kubernetes schema, custom resources against the
# CRDs of JobSet, the Training Operator and Trainer v2, plus the course policy.

# %%
reports = {kind: client.validate(objects) for kind, objects in rendered.items()}
for kind, report in reports.items():
    print(f"{kind:11s}", "ok" if report.ok else report, report.skipped or "")

# %% [markdown]
# ## 2. How a pod finds out who it is: `labs/launch.sh`
# Every variant runs the same script. It reads the node rank and the master from whatever the
# controller provides (JOB_COMPLETION_INDEX, JOBSET_NAME, PyTorchJob's RANK/WORLD_SIZE, Trainer's
# PET_*), waits until the master's DNS name resolves (a headless Service publishes a pod's name
# only once the pod exists), prints its decision and execs `torchrun` with `--max-restarts` and a
# c10d rendezvous. `--dry-run` shows the decision without running anything:


# %%
def launch_decision(env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in env}
    done = subprocess.run(
        ["bash", "labs/launch.sh", "--dry-run", "--", "-m", "labs.lm_pretrain"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout + done.stderr


print(
    launch_decision({"JOB_COMPLETION_INDEX": "1", "NNODES": "2", "MASTER_ADDR": "lm-job-0.lm-job"})
)

# %% [markdown]
# ## 3. Two nodes x two processes on this machine
# The local backend runs the Indexed Job's two pods as two process groups. Cluster DNS is modelled:
# `lm-multinode-0.lm-job` (a pod name under the headless Service) becomes 127.0.0.1, and the
# Service's port 29500 becomes a free local port for this job (pods have their own network
# namespaces, processes on one machine do not). Logs are prefixed with node and rank.

# %%
smoke = ["--smoke", "--num-threads=1"] if SMOKE else []
run_spec = dataclasses.replace(
    cluster_spec,
    gpus=0 if BACKEND == "local" else cluster_spec.gpus,
    name=JOB_NAME,
    namespace=NAMESPACE,
    args=(
        "--",
        "-m",
        "labs.lm_pretrain",
        "--out-dir=/checkpoints/$(JOB_NAME)",
        *smoke,
        f"--steps={STEPS}",
        f"--checkpoint-every={CHECKPOINT_EVERY}",
        "--log-every=10",
        f"--inject-crash-at-step={CRASH_AT_STEP}",
    ),
    env=(("OMP_NUM_THREADS", "1"), ("MAX_RESTARTS", "2")),
)
objects = render_all(run_spec)["Job"]
client.reset_volume("lm-checkpoints", JOB_NAME)  # the checkpoint PVC outlives jobs: start empty
job = client.submit(objects)

# %% [markdown]
# ## 4. One worker dies mid-run
# A few steps after the first checkpoint, one worker process (not a pod) gets SIGKILL, as the OOM
# killer would do: `--inject-crash-at-step` makes the last rank kill itself before that step, once
# (a marker file on the checkpoint volume keeps the restarted worker from doing it again). Its
# torchrun agent notices, stops its other worker, and re-enters the c10d rendezvous; the other
# node's agent sees the new round and restarts its workers too. Every worker starts over and the
# lab resumes from the newest complete checkpoint. By hand on a real cluster you would kill it from
# outside: `kubectl exec -n <namespace> lm-multinode-1-<suffix> -- pkill -KILL -f labs.lm_pretrain`
# (the pod of node 1; `pkill` kills its local workers, the same restart follows).

# %%
killed = None
lines = []
for line in client.iter_logs(job, follow=True):
    lines.append(line)
    print(line.prefixed())
    fault = parse_line(line.text)
    if killed is None and isinstance(fault, FaultInjected) and fault.kind == "crash":
        killed = {"rank": fault.rank, "pid": int(fault.values["pid"]), "before_step": fault.step}
        print(f"*** worker rank {killed['rank']} (pid {killed['pid']}) got SIGKILL ***")

# %%
status = client.wait(job, timeout_s=TIMEOUT_S)
status_view(status)

# %%
print(events_view(client.events(job)))

# %% [markdown]
# ## 5. Assert the outcome
# The job succeeded; torchrun restarted the worker group (the lab started twice); it resumed from a checkpoint at or
# after the one written before the kill, and finished all steps.

# %%
texts = [line.text for line in lines]
resumed = [r.step for r in records(texts, Resumed)]
starts = [s for s in records(texts, StartLine) if s.lab == "lm_pretrain"]  # one per (re)start
result = client.result(job) or {}
print("killed:", killed, "| resumed from:", resumed, "| training starts:", len(starts))
print(
    "result:",
    {k: result.get(k) for k in ("steps", "resumed_from_step", "final_loss", "world_size")},
)
assert status.phase == "Succeeded", f"{status.phase}: {status.reason} {status.message}"
assert killed is not None, "no worker was killed"
assert killed["rank"] == NODES * PROCS_PER_NODE - 1 and killed["before_step"] == CRASH_AT_STEP
assert len(starts) == 2, f"expected one start and one elastic restart, saw {len(starts)}"
assert resumed and resumed[0] >= CHECKPOINT_EVERY and resumed[0] % CHECKPOINT_EVERY == 0
assert starts[-1].resumed_from == resumed[-1]
assert result["steps"] == STEPS and result["resumed_from_step"] == resumed[-1]
assert result["world_size"] == NODES * PROCS_PER_NODE

# %%
assert all(r.ok for r in reports.values()) and len(reports) == len(KINDS)
record_outcome(
    "04_multi_node",
    backend=BACKEND,
    phase=status.phase,
    nodes=NODES,
    procs_per_node=PROCS_PER_NODE,
    killed_rank=killed["rank"] if killed else None,
    resumed_from_step=resumed[-1] if resumed else None,
    steps=result.get("steps"),
    final_loss=result.get("final_loss"),
    kinds_validated=sum(r.ok for r in reports.values()),
)

# %% [markdown]
# ## Exercise 1: which rank is which
# Every worker of the run above got `RANK` from torchrun, computed from its node's rank (the pod's
# completion index) and its local rank on that node. Write `global_rank(node_rank, local_rank,
# procs_per_node)` the way torchrun numbers processes; the check tries several cluster shapes.
# (A solution is filled in: change it and re-run the check.)


# %%
def global_rank(node_rank: int, local_rank: int, procs_per_node: int) -> int:
    # BEGIN SOLUTION
    return node_rank * procs_per_node + local_rank
    # END SOLUTION


# %%
from kubecourse.exercises import require

require("04-global-rank", global_rank)
print(f"node 1, local rank 1 of this run is rank {global_rank(1, 1, PROCS_PER_NODE)}")

# %% [markdown]
# ## Exercise 2: what a PyTorchJob's pod sees
# The Kubeflow Training Operator sets `RANK`, `WORLD_SIZE`, `MASTER_ADDR` and `MASTER_PORT` in every
# pod, but there RANK is the *pod's* rank and WORLD_SIZE the number of *pods*. Write the environment
# the second Worker of a 3-node PyTorchJob named `lm-pytorchjob` gets (Master is pod 0), so that
# `launch.sh` decides node_rank=2 of nnodes=3 with master `lm-pytorchjob-master-0:23456`.
# (A solution is filled in.)

# %%
# BEGIN SOLUTION
pytorchjob_env = {
    "RANK": "2",
    "WORLD_SIZE": "3",
    "MASTER_ADDR": "lm-pytorchjob-master-0",
    "MASTER_PORT": "23456",
}
# END SOLUTION

# %%
require("04-pytorchjob-env", pytorchjob_env, decide=launch_decision)
print(launch_decision(pytorchjob_env))

# %% [markdown]
# ## On a real cluster
# Pick the controller your cluster has; each file's header has the exact commands.
#
# ```bash
# kubectl apply -f manifests/02-multinode/pvc.yaml                       # ReadWriteMany storage
# kubectl apply -f manifests/02-multinode/service.yaml -f manifests/02-multinode/indexed-job.yaml
# kubectl apply -f manifests/02-multinode/jobset.yaml                     # JobSet controller
# kubectl apply -f manifests/02-multinode/pytorchjob.yaml                 # Training Operator v1
# kubectl apply -f manifests/02-multinode/training-runtime.yaml -f manifests/02-multinode/trainjob.yaml
# kubectl logs -f -l batch.kubernetes.io/job-name=lm-job --prefix --max-log-requests=16
# ```
# Or from here: `client.submit(render_all(cluster_spec)["JobSet"])` with `BACKEND = "kubernetes"`.
# Things the local run cannot show: NCCL picking the right interface (`NCCL_SOCKET_IFNAME`),
# `/dev/shm` size, and pods landing on different machines (the anti-affinity rule).
#
# ## Clean up

# %%
client.delete(job)
client.close()
