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
# # 05 · FSDP2, sharded checkpoints, DeepSpeed ZeRO, and communication tuning
#
# **What you will do:** measure what each rank holds (parameters, gradients, AdamW state) under DDP
# and under FSDP2; save a sharded checkpoint with 2 ranks and load it into 1 process, proving the
# weights are identical; read the DeepSpeed ZeRO-2/3 configs (and run them on a GPU); measure how
# DDP's bucket size and gradient-compression hooks change the step time.
#
# **Why:** DDP replicates everything, so the largest model you can train is what fits on ONE device.
# Sharding (FSDP2, ZeRO) divides parameters, gradients and optimizer state by the number of ranks;
# sharded checkpoints let each rank write its part in parallel, and a job restarted on a different
# number of nodes must still resume.
#
# **Prerequisites:** 03. **Time:** 30 minutes (smoke: under a minute).

# %% tags=["parameters"]
SMOKE = True  # the lab's --smoke model; False: the default (bigger) model
DEVICE = "auto"
NPROC = 2  # ranks
STEPS = 60  # schedule length; the runs below stop early with --max-steps
SAVE_AT = 10  # the FSDP run checkpoints (and stops) here
SWEEP_STEPS = 8  # timed steps per communication setting
TIMEOUT_S = 300

# %%
import json
import re
import shutil

import matplotlib.pyplot as plt
import torch

from kubecourse.course import record_outcome
from kubecourse.lab import run_lab
from kubecourse.manifests import repo_root
from labs import lm_pretrain as lm
from labs.common.config import parse_config

ROOT = repo_root()
OUT = ROOT / "build" / "lessons" / "05"
shutil.rmtree(OUT, ignore_errors=True)
size = ["--smoke"] if SMOKE else []
common = [*size, f"--steps={STEPS}", f"--device={DEVICE}", "--num-threads=1"]
torchrun = ["--standalone", f"--nproc-per-node={NPROC}", "-m", "labs.lm_pretrain"]


def memory_line(log: list[str]) -> dict[str, int]:
    """The lab's `memory_per_rank ...` line (bytes rank 0 holds after its first step)."""
    text = next(line for line in log if line.startswith("memory_per_rank"))
    return {k: int(v) for k, v in re.findall(r"(\w+)_bytes (\d+)", text)}


# %% [markdown]
# ## 1. What a rank holds: DDP vs FSDP2
# FSDP2 (`torch.distributed.fsdp.fully_shard`) is applied to each transformer block and then to the
# whole model; every parameter becomes a `DTensor` of which each rank stores `1/world_size`. Before a
# block computes, its parameters are all-gathered; after backward its gradients are reduce-scattered,
# so each rank also keeps only its shard of the gradients and of AdamW's two moment tensors. The lab
# counts the bytes from the tensors themselves (`local_bytes`: the local shard of a DTensor). On a
# GPU it adds `MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)`; on CPU it says it stays
# in fp32.

# %%
ddp = run_lab(
    "torch.distributed.run",
    [*torchrun, *common, "--max-steps=3"],
    OUT / "ddp",
    timeout_s=TIMEOUT_S,
    live_plot=False,
    echo_every=0,
)
fsdp = run_lab(
    "torch.distributed.run",
    [*torchrun, *common, "--strategy=fsdp", f"--max-steps={SAVE_AT}", "--log-every=5"],
    OUT / "fsdp",
    timeout_s=TIMEOUT_S,
    live_plot=False,
)
assert ddp.returncode == 0 and fsdp.returncode == 0, "\n".join((ddp.log + fsdp.log)[-30:])
memory = {"DDP": memory_line(ddp.log), "FSDP2": memory_line(fsdp.log)}
print(f"{'bytes per rank':16s}{'params':>12s}{'grads':>12s}{'optimizer':>12s}{'total':>12s}")
for name, m in memory.items():
    print(f"{name:16s}{m['params']:12,d}{m['grads']:12,d}{m['optimizer']:12,d}{m['total']:12,d}")

# %%
fig_mem, ax = plt.subplots(figsize=(5.5, 3))
bottom = [0, 0]
for part, colour in (("params", "tab:blue"), ("grads", "tab:orange"), ("optimizer", "tab:green")):
    values = [memory["DDP"][part] / 1e6, memory["FSDP2"][part] / 1e6]
    ax.bar(["DDP", "FSDP2"], values, bottom=bottom, label=part, color=colour)
    bottom = [b + v for b, v in zip(bottom, values, strict=True)]
ax.set_ylabel("MB per rank")
ax.set_title(f"what each of {NPROC} ranks holds")
ax.legend()
plt.show()

# %% [markdown]
# ## 2. A sharded checkpoint, saved by 2 ranks, loaded by 1
# The FSDP run stopped at step 10 with a DCP checkpoint: one `.distcp` file per rank, the metadata
# that says which slice of which tensor is where, `meta.json` (with a hash of the full weights) and
# the `COMPLETE` marker (written last, after a rename of the whole folder: a half-written checkpoint
# never has a real name). Here, in this notebook's single process, an unsharded model loads it: DCP
# reads every shard and reassembles the full tensors.

# %%
ckpt = OUT / "fsdp" / "checkpoints" / f"step-{SAVE_AT:08d}"
print(sorted(p.name for p in ckpt.iterdir()))
cfg = parse_config(lm.LMConfig, [*size], presets={"smoke": lm.SMOKE})
model = lm.build_model(cfg, seed=123)  # different initial weights: the load must overwrite all
optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
meta = lm.load_dcp(model, optimizer, ckpt)
print(f"saved by {meta['world_size']} ranks ({meta['strategy']}) at step {meta['step']}")
print("weights hash saved:", meta["weights_digest"], " loaded here:", meta["loaded_digest"])
print("AdamW step count restored:", int(next(iter(optimizer.state.values()))["step"]))
assert meta["loaded_digest"] == meta["weights_digest"], "resharding changed the weights"

# %% [markdown]
# The lab does the same on start: rerunning it with one process and the same `--out-dir` resumes
# the 2-rank FSDP checkpoint and logs `resharded: checkpoint written by 2 ranks (fsdp), loaded by 1`
# (`tests/labs/test_lm_pretrain.py` checks exactly that).
#
# ## 3. DeepSpeed ZeRO
# ZeRO stage 2 shards optimizer state and gradients (every rank keeps all parameters); stage 3 also
# shards the parameters, like FSDP2. The lab's `--strategy deepspeed` hands the model to
# `deepspeed.initialize` with one of these configs (it overrides the batch size, accumulation,
# clipping and learning rate from its own flags, so the two cannot disagree):

# %%
for name in ("zero2.json", "zero3.json"):
    config = json.loads((ROOT / "labs" / "deepspeed" / name).read_text())
    print(name, json.dumps(config["zero_optimization"], indent=1))

# %%
device = torch.device("cuda" if torch.cuda.is_available() and DEVICE != "cpu" else "cpu")
reason = lm.deepspeed_skip_reason(device)
if reason:
    print(f"DeepSpeed run skipped: {reason}")
else:
    zero = run_lab(
        "torch.distributed.run",
        [
            *torchrun,
            *common,
            "--strategy=deepspeed",
            "--deepspeed-config=labs/deepspeed/zero3.json",
        ],
        OUT / "zero3",
        timeout_s=TIMEOUT_S,
        live_plot=False,
    )
    assert zero.returncode == 0

# %% [markdown]
# ## 4. Communication tuning: bucket size and compression hooks
# `labs/ddp_comm_sweep.py` times DDP steps for several settings in one `torchrun` launch (so process
# start-up is paid once): the default 25 MB bucket, a tiny bucket (many small all-reduces), fp16
# compression (half the bytes) and PowerSGD (a low-rank approximation of each gradient matrix, with
# error feedback). The bf16 hook needs NCCL and is reported as skipped on CPU.

# %%
settings = "25:none,0.01:none,25:fp16,25:powersgd,25:bf16"
sweep = run_lab(
    "torch.distributed.run",
    [
        "--standalone",
        f"--nproc-per-node={NPROC}",
        "-m",
        "labs.ddp_comm_sweep",
        f"--settings={settings}",
        f"--steps={SWEEP_STEPS}",
        "--dim=64",
        "--n-layers=2",
    ],
    OUT / "sweep",
    timeout_s=TIMEOUT_S,
    live_plot=False,
)
timings = json.loads((OUT / "sweep" / "sweep.json").read_text())
measured = [t for t in timings if "step_ms" in t]
for t in timings:
    print(t)

# %%
fig_comm, ax = plt.subplots(figsize=(6, 3))
labels = [f"{t['bucket_cap_mb']:g} MB\n{t['comm_hook']}" for t in measured]
ax.bar(labels, [t["step_ms"] for t in measured], color="tab:purple")
ax.set_ylabel("median step time (ms)")
ax.set_title(f"DDP on {NPROC} CPU ranks (gloo): bucket size and compression")
plt.show()

# %% [markdown]
# On CPU with gloo the differences are small and noisy: the gradients are tiny and the "network" is
# loopback. On GPUs across nodes, gradients are gigabytes per step and the inter-node network is
# the bottleneck; there fp16/bf16 compression halves the bytes and PowerSGD can cut them by 10-100x.

# %% [markdown]
# ## 5. The hardware under the communication: GPUs, links, CPU:GPU ratio
# Why the sweep above is flat here and decisive on a GPU cluster: the data sheets' figures for the
# two GPUs the course targets (dense Tensor Core throughput; sources printed below), what a ring
# all-reduce of a 7B model's bf16 gradients (14 GB) costs over each link, how to read
# `nvidia-smi topo -m` (which GPU pairs talk over NVLink/NVSwitch, which over PCIe or across
# CPU sockets), and this machine's CPU cores per GPU (each GPU's data loader needs a few cores to
# decode and augment: DGX H100 has 112 cores for 8 GPUs).

# %%
import os
import subprocess

from kubecourse.hardware import (
    DATASHEET,
    EXAMPLE_TOPO,
    LINKS,
    SOURCES,
    allreduce_seconds,
    cpus_per_gpu,
    link_kind,
    parse_topo,
)
from kubecourse.provenance import gpus as visible_gpus

a100, h100 = DATASHEET["A100 SXM"], DATASHEET["H100 SXM"]
print(f"{'':24s} {'A100 SXM':>9s} {'H100 SXM':>9s}")
for key in (
    "memory_gb",
    "memory_bandwidth_gb_s",
    "bf16_tflops",
    "fp8_tflops",
    "nvlink_gb_s",
    "pcie_gb_s",
    "tdp_w",
):
    print(f"{key:24s} {a100[key]!s:>9s} {h100[key]!s:>9s}")
for gpu, source in SOURCES.items():
    print(f"  {gpu}: {source}")
gradient_bytes = 7e9 * 2  # a 7B model's gradients in bf16
links = {
    "NVLink 4 (900 GB/s)": 900,
    "PCIe Gen5 x16 (128 GB/s)": 128,
    "400 Gb/s InfiniBand (100 GB/s)": 100,
}
allreduce = {
    name: allreduce_seconds(gradient_bytes, gpus=8, link_gb_s=bw) for name, bw in links.items()
}
for name, seconds in allreduce.items():
    print(f"ring all-reduce of 14 GB over 8 GPUs, {name:32s} >= {seconds * 1000:6.0f} ms")

live = shutil.which("nvidia-smi") is not None
topo = (
    subprocess.run(["nvidia-smi", "topo", "-m"], capture_output=True, text=True, timeout=30).stdout
    if live
    else EXAMPLE_TOPO
)
print(
    "\n"
    + (
        "nvidia-smi topo -m (this machine):"
        if live
        else "nvidia-smi topo -m (illustrative HGX H100, no GPU here):"
    )
)
print(topo)
pairs = parse_topo(topo)
for (a, b), link in sorted(pairs.items()):
    if a < b:
        print(f"{a}-{b}: {link:5s} {LINKS.get(link_kind(link), '?')}")
gpu_count = len(visible_gpus())
ratio = cpus_per_gpu(os.cpu_count() or 1, gpu_count)
print(
    f"\nthis machine: {os.cpu_count()} CPU cores, {gpu_count} GPU(s)"
    + (f" -> {ratio:g} cores per GPU" if gpu_count else ": the ratio matters on GPU nodes")
)

# %% [markdown]
# ## 6. Assert the outcome
# FSDP2 holds well under DDP's bytes per rank (with shards that still cover the whole model), the
# resharded checkpoint loaded bit-exactly, and every communication setting was timed.

# %%
assert memory["FSDP2"]["total"] < 0.6 * memory["DDP"]["total"], memory
assert memory["FSDP2"]["params"] * NPROC >= memory["DDP"]["params"]  # shards cover the model
assert meta["loaded_digest"] == meta["weights_digest"]
assert len(measured) >= 4 and all(t["step_ms"] > 0 for t in measured)
assert allreduce["NVLink 4 (900 GB/s)"] < allreduce["PCIe Gen5 x16 (128 GB/s)"] / 5
assert all(link_kind(link) in LINKS for link in pairs.values()) and ratio > 0
record_outcome(
    "05_fsdp_deepspeed",
    figures={"memory": fig_mem, "comm": fig_comm},
    ddp_bytes_per_rank=memory["DDP"]["total"],
    fsdp_bytes_per_rank=memory["FSDP2"]["total"],
    dcp_reshard_equal=meta["loaded_digest"] == meta["weights_digest"],
    deepspeed=reason or "ran",
    step_ms={f"{t['bucket_cap_mb']:g}MB/{t['comm_hook']}": t["step_ms"] for t in measured},
)

# %% [markdown]
# ## Exercise: predict FSDP's memory per rank
# Write a function that predicts the bytes one rank holds for parameters, gradients and optimizer
# state when a model of `n_params` fp32 parameters is trained with AdamW and everything is sharded
# evenly over `world_size` ranks (section 1 says what AdamW keeps per parameter). The check compares
# it with both measurements above: FSDP2 on `NPROC` ranks, and DDP, which is the same as one rank
# holding everything. (A solution is filled in: change it and re-run the check.)


# %%
def fsdp_bytes_per_rank(n_params: int, world_size: int) -> float:
    # BEGIN SOLUTION
    bytes_per_param = 4 + 4 + 2 * 4  # fp32 weight, its gradient, AdamW's two moments
    return n_params * bytes_per_param / world_size
    # END SOLUTION


# %%
from kubecourse.exercises import require

n_params = int(re.search(r"\bparams=(\d+)", "\n".join(ddp.log)).group(1))  # the lab's start line
require(
    "05-fsdp-memory",
    fsdp_bytes_per_rank,
    n_params=n_params,
    world_size=NPROC,
    fsdp_measured=memory["FSDP2"]["total"],
    ddp_measured=memory["DDP"]["total"],
)

# %% [markdown]
# ## On a real cluster
# The multi-node manifests of lesson 04 already run `--strategy=fsdp`; with GPUs the lab uses NCCL
# and bf16 mixed precision. For ZeRO, install the `deepspeed` extra in the image and change the
# trainer's args:
#
# ```bash
# kubectl apply -f manifests/02-multinode/pvc.yaml -f manifests/02-multinode/jobset.yaml
# # args: -- -m labs.lm_pretrain --strategy=deepspeed --deepspeed-config=labs/deepspeed/zero3.json
# kubectl logs -f -l jobset.sigs.k8s.io/jobset-name=lm-jobset --prefix
# ```
# Sharded checkpoints need storage every node can write: the ReadWriteMany PVC in `pvc.yaml`.
#
# ## Clean up

# %%
shutil.rmtree(OUT, ignore_errors=True)
