# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kubecourse_i18n
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   kubecourse_i18n:
#     catalog: notebooks/locale/zh_CN/LC_MESSAGES/05_fsdp_deepspeed.po
#     generated_by: python -m kubecourse.i18n build (edit the catalog, not this file)
#     language: zh_CN
#     source: notebooks/05_fsdp_deepspeed.py
# ---

# %% [markdown]
# # 05 · FSDP2、分片检查点、DeepSpeed ZeRO 与通信调优
#
# **你将做什么：** 测量 DDP 和 FSDP2 下每个 rank 持有多少（参数、梯度、AdamW 状态）；用 2 个 rank 保存
# 一个[分片检查点（sharded checkpoint）](../../docs/glossary.md#sharded-checkpoint)，再加载到 1 个进程中，
# 证明权重完全相同；阅读 DeepSpeed ZeRO-2/3 的配置（并在 GPU 上运行它们）；测量 DDP 的桶大小和梯度
# 压缩钩子如何改变每步用时。
#
# **为什么：** DDP 复制一切，所以能训练的最大模型就是单个设备装得下的那个。分片
# （[全分片数据并行（FSDP）](../../docs/glossary.md#fsdp)、[ZeRO](../../docs/glossary.md#zero)）把参数、
# 梯度和优化器状态按 rank 数切分；分片检查点让每个 rank 并行写自己那一份，而一个在不同节点数上重启的
# 作业也必须能够恢复。
#
# **前置条件：** 03。**用时：** 30 分钟（冒烟规模：不到一分钟）。

# %% tags=["parameters"]
SMOKE = True  # 实验程序的 --smoke 模型；False：默认（更大的）模型
DEVICE = "auto"
NPROC = 2  # rank 数
STEPS = 60  # 训练计划的长度；下面的运行用 --max-steps 提前停止
SAVE_AT = 10  # FSDP 运行在这一步写检查点（并停止）
SWEEP_STEPS = 8  # 每种通信设置计时的步数
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
# ## 1. 一个 rank 持有什么：DDP 对比 FSDP2
# FSDP2（`torch.distributed.fsdp.fully_shard`）先应用到每个 Transformer 块，再应用到整个模型；每个参数
# 都变成一个 `DTensor`，每个 rank 只存其中的 `1/world_size`。一个块计算之前，先 all-gather 它的参数；
# 反向传播之后，对它的梯度做 reduce-scatter，因此每个 rank 也只保留自己那一份梯度和 AdamW 的两个矩张量。
# 实验程序直接从张量本身统计字节数（`local_bytes`：DTensor 的本地分片）。在 GPU 上它会加上
# `MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)`；在 CPU 上它会说明自己保持 fp32。

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
# ## 2. 一个分片检查点：2 个 rank 保存，1 个进程加载
# FSDP 运行在第 10 步停止，并留下一个 DCP 检查点：每个 rank 一个 `.distcp` 文件、说明哪个张量的哪一片
# 在哪里的元数据、`meta.json`（含完整权重的哈希），以及 `COMPLETE` 标记（最后写入，在整个文件夹重命名
# 之后：写了一半的检查点永远不会有正式名称）。这里，在本笔记本的单个进程中，一个未分片的模型加载它：
# DCP 读取每个分片并重新拼出完整的张量。

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
# 实验程序在启动时也做同样的事：用一个进程、相同的 `--out-dir` 重新运行，它会从 2 个 rank 的 FSDP
# 检查点恢复，并记录 `resharded: checkpoint written by 2 ranks (fsdp), loaded by 1`
# （`tests/labs/test_lm_pretrain.py` 正是检查这一点）。
#
# ## 3. DeepSpeed ZeRO
# ZeRO 第 2 阶段对优化器状态和梯度分片（每个 rank 保留全部参数）；第 3 阶段连参数也分片，与 FSDP2 相同。
# 实验程序的 `--strategy deepspeed` 用下面某个配置把模型交给 `deepspeed.initialize`（它用自己的参数
# 覆盖批量大小、梯度累积、梯度裁剪和学习率，因此两者不会不一致）：

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
# ## 4. 通信调优：桶大小与压缩钩子
# `labs/ddp_comm_sweep.py` 在一次 `torchrun` 启动中为多种设置计时 DDP 步（因此进程启动的开销只付一次）：
# 默认的 25 MB 桶、极小的桶（很多次小的 all-reduce）、fp16 压缩（字节数减半）和 PowerSGD（对每个梯度
# 矩阵做低秩近似，并带误差反馈）。bf16 钩子需要 NCCL，在 CPU 上报告为已跳过。

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
# ## 在真实集群上
# 第 04 课的多节点清单已经在运行 `--strategy=fsdp`；有 GPU 时，实验程序使用 NCCL 和 bf16 混合精度。
# 要用 ZeRO，请在镜像中安装 `deepspeed` 附加依赖，并修改训练程序的参数：
#
# ```bash
# kubectl apply -f manifests/02-multinode/pvc.yaml -f manifests/02-multinode/jobset.yaml
# # args: -- -m labs.lm_pretrain --strategy=deepspeed --deepspeed-config=labs/deepspeed/zero3.json
# kubectl logs -f -l jobset.sigs.k8s.io/jobset-name=lm-jobset --prefix
# ```
# 分片检查点需要每个节点都能写入的存储：`pvc.yaml` 中的 ReadWriteMany PVC。
#
# ## 清理

# %%
shutil.rmtree(OUT, ignore_errors=True)
