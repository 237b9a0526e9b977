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
# # 03 · From one process to DDP on one node
#
# **What you will do:** run the language-model lab (`labs/lm_pretrain.py`, a small Llama) as one
# process, then as two DDP processes under `torchrun` with the same per-process batch; compare
# throughput; check that both ranks end with bit-identical weights; try gradient accumulation and a
# compression hook.
#
# **Why:** DDP is the first step of every scale-out: each process holds the whole model, computes
# gradients on its own slice of the data, and an all-reduce averages the gradients so every
# replica takes the same optimizer step. If the replicas ever disagree, something is wrong.
#
# **Prerequisites:** 01. **Time:** 15 minutes (smoke: under a minute).

# %% tags=["parameters"]
SMOKE = True  # tiny model and few steps
DEVICE = "auto"  # "auto" (CUDA when present), "cpu" or "cuda"
STEPS = 20  # optimizer steps per run
NPROC = 2  # DDP processes on this node (GPUs on a GPU node)
TIMEOUT_S = 300

# %%
import json
import shutil

import matplotlib.pyplot as plt

from kubecourse.course import record_outcome
from kubecourse.display import kubectl
from kubecourse.lab import run_lab
from kubecourse.manifests import repo_root
from kubecourse.multinode import MultiNodeSpec, render_variant

ROOT = repo_root()
OUT = ROOT / "build" / "lessons" / "03"
shutil.rmtree(OUT, ignore_errors=True)
size = ["--smoke"] if SMOKE else []
common = [*size, f"--steps={STEPS}", f"--device={DEVICE}", "--num-threads=1", "--log-every=10"]

# %% [markdown]
# ## 1. What DDP adds to the training loop
# The loop of lesson 01 stays; three things change (see `labs/common/distributed.py`):
#
# ```python
# dist.init_process_group("gloo" if cpu else "nccl")   # torchrun set RANK, WORLD_SIZE, MASTER_ADDR
# model = DistributedDataParallel(model)                # hooks that all-reduce grads during backward
# batch = batches[rank::world_size]                     # each rank its own data (DistributedSampler)
# ```
# During `loss.backward()`, DDP groups gradients into *buckets* (`bucket_cap_mb`) and all-reduces
# each bucket as soon as it is ready, overlapping communication with the rest of the backward pass.
# Logging and checkpoints happen on rank 0 only.
#
# ## 2. One process

# %%
single = run_lab("labs.lm_pretrain", common, OUT / "one", timeout_s=TIMEOUT_S, live_plot=False)
assert single.returncode == 0, "\n".join(single.log[-20:])
one_result = single.result  # read result.json now: the clean-up below deletes the run folders
print(json.dumps({k: one_result[k] for k in ("tokens_per_s", "final_loss", "params")}, indent=1))

# %% [markdown]
# ## 3. Two DDP processes with `torchrun`
# Same script, same per-process batch: the global batch doubles. `torchrun --standalone` runs the
# rendezvous on this machine and sets RANK / LOCAL_RANK / WORLD_SIZE for each process.

# %%
torchrun = ["--standalone", f"--nproc-per-node={NPROC}", "-m", "labs.lm_pretrain"]
ddp = run_lab(
    "torch.distributed.run", torchrun + common, OUT / "ddp", timeout_s=TIMEOUT_S, live_plot=False
)
assert ddp.returncode == 0, "\n".join(ddp.log[-20:])
ddp_result = ddp.result  # read result.json now: the clean-up below deletes the run folders
print(
    json.dumps(
        {k: ddp_result[k] for k in ("tokens_per_s", "final_loss", "weights_digests")}, indent=1
    )
)

# %% [markdown]
# In a pod, the same command runs through `labs/launch.sh` in an Indexed Job with one node
# (`manifests/02-multinode/`); the helper renders it, and this is its kubectl twin:

# %%
pod_version = render_variant("Job", MultiNodeSpec(nodes=1, procs_per_node=NPROC, name="lm-ddp"))
print(kubectl("submit", path="manifests/02-multinode/indexed-job.yaml"))
print(kubectl("logs", "lm-ddp", follow=True))

# %% [markdown]
# ## 4. Throughput: what two processes buy
# Weak scaling: the work per process is fixed, so ideal DDP doubles tokens/s. On a CPU the
# all-reduce runs on the same cores as the math, so the efficiency is lower than on GPUs with
# NVLink; `benchmarks/bench_ddp_scaling.py` measures it carefully (one thread per process).

# %%
tps_1, tps_n = one_result["tokens_per_s"], ddp_result["tokens_per_s"]
efficiency = tps_n / (NPROC * tps_1)
fig, ax = plt.subplots(figsize=(5, 3))
ax.bar(
    ["1 process", f"{NPROC} DDP processes", f"ideal x{NPROC}"],
    [tps_1, tps_n, NPROC * tps_1],
    color=["tab:blue", "tab:orange", "lightgray"],
)
ax.set_ylabel("tokens / s")
ax.set_title(f"weak scaling efficiency {efficiency:.0%}")
plt.show()

# %% [markdown]
# ## 5. Every rank holds the same weights
# The lab hashes its parameters at the end on every rank and gathers the hashes. DDP starts all
# replicas from the same seed (and broadcasts rank 0's weights at construction) and applies the
# same averaged gradient, so the hashes must be equal.

# %%
digests = ddp_result["weights_digests"]
print("weights per rank:", digests)
assert len(digests) == NPROC and len(set(digests)) == 1, digests

# %% [markdown]
# ## 6. Assert the outcome
# Both runs learned (the loss halved), every rank ended with the same weights, and the DDP run
# really had `NPROC` processes.

# %%
assert one_result["final_loss"] < one_result["first_loss"] / 2, "one process did not learn"
assert ddp_result["final_loss"] < ddp_result["first_loss"] / 2, "DDP did not learn"
assert len(set(digests)) == 1, "ranks ended with different weights"
assert ddp_result["world_size"] == NPROC and tps_n > 0 and tps_1 > 0
record_outcome(
    "03_ddp_single_node",
    figures={"throughput": fig},
    tokens_per_s_1=tps_1,
    tokens_per_s_ddp=tps_n,
    weak_scaling_efficiency=round(efficiency, 3),
    weights_identical=len(set(digests)) == 1,
    final_loss_ddp=ddp_result["final_loss"],
)

# %% [markdown]
# ## Exercise: accumulate gradients and compress them
# Run the two processes again with **gradient accumulation over 2 micro-batches** (the lab then
# calls `no_sync()` on the first one, so the all-reduce happens once per optimizer step) and the
# **fp16 compression hook** (gradients travel as fp16: half the bytes). Fill in the two flags.
# The check verifies that the replicas still agree, that the tokens per optimizer step doubled,
# and that the hook was used. (A solution is filled in.)

# %%
# BEGIN SOLUTION
exercise_flags = ["--grad-accum-steps=2", "--comm-hook=fp16"]
# END SOLUTION
accumulated = run_lab(
    "torch.distributed.run",
    torchrun + common + exercise_flags,
    OUT / "exercise",
    timeout_s=TIMEOUT_S,
    live_plot=False,
    echo_every=0,
)


# %%
from kubecourse.exercises import require

assert accumulated.returncode == 0, "\n".join(accumulated.log[-20:])
require(
    "03-accumulate", accumulated.result, log=accumulated.log, baseline_log=ddp.log, world_size=NPROC
)

# %% [markdown]
# ## On a real cluster
# On a GPU node the same lab uses NCCL and bf16 autocast; one pod with 8 GPUs:
#
# ```bash
# kubectl apply -f manifests/02-multinode/pvc.yaml -f manifests/02-multinode/service.yaml \
#     -f manifests/02-multinode/indexed-job.yaml    # edit NNODES/completions to 1, NPROC_PER_NODE to 8
# kubectl logs -f -l batch.kubernetes.io/job-name=lm-job --prefix
# ```
# or from Python: `render_variant("Job", MultiNodeSpec(nodes=1, procs_per_node=8, gpus=8))`.
# Lesson 04 spreads the same job over several nodes.
#
# ## Clean up

# %%
shutil.rmtree(OUT, ignore_errors=True)
