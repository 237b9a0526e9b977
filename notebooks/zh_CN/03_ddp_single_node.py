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
#     catalog: notebooks/locale/zh_CN/LC_MESSAGES/03_ddp_single_node.po
#     generated_by: python -m kubecourse.i18n build (edit the catalog, not this file)
#     language: zh_CN
#     source: notebooks/03_ddp_single_node.py
# ---

# %% [markdown]
# # 03 · 从单进程到单节点 DDP
#
# **你将做什么：** 先用一个进程运行语言模型实验程序（`labs/lm_pretrain.py`，一个小型 Llama），再在
# `torchrun` 下用两个 DDP 进程、相同的每进程批量运行；比较吞吐量；检查两个 rank 最终的权重逐位相同；
# 再试试[梯度累积（gradient accumulation）](../../docs/glossary.md#gradient-accumulation)和梯度压缩钩子。
#
# **为什么：** [分布式数据并行（DistributedDataParallel，DDP）](../../docs/glossary.md#ddp)是一切横向
# 扩展的第一步：每个进程持有完整模型，在自己那一份数据上计算梯度，再由 all-reduce 对梯度求平均，
# 使每个副本执行相同的优化器步。如果副本之间出现分歧，那就是出了问题。
#
# **前置条件：** 01。**用时：** 15 分钟（冒烟规模：不到一分钟）。

# %% tags=["parameters"]
SMOKE = True  # 极小的模型和很少的步数
DEVICE = "auto"  # "auto"（有 CUDA 时用 CUDA）、"cpu" 或 "cuda"
STEPS = 20  # 每次运行的优化器步数
NPROC = 2  # 本节点上的 DDP 进程数（GPU 节点上为 GPU 数）
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
# ## 1. DDP 给训练循环加了什么
# 第 01 课的循环保持不变，只有三处变化（见 `labs/common/distributed.py`）：
#
# ```python
# dist.init_process_group("gloo" if cpu else "nccl")   # torchrun set RANK, WORLD_SIZE, MASTER_ADDR
# model = DistributedDataParallel(model)                # hooks that all-reduce grads during backward
# batch = batches[rank::world_size]                     # each rank its own data (DistributedSampler)
# ```
# 在 `loss.backward()` 期间，DDP 把梯度分组放进*桶*（bucket，`bucket_cap_mb`），每个桶一就绪就立即
# all-reduce，使通信与反向传播的其余部分重叠进行。日志和检查点只在 rank 0 上进行。
#
# ## 2. 单进程

# %%
single = run_lab("labs.lm_pretrain", common, OUT / "one", timeout_s=TIMEOUT_S, live_plot=False)
assert single.returncode == 0, "\n".join(single.log[-20:])
one_result = single.result  # read result.json now: the clean-up below deletes the run folders
print(json.dumps({k: one_result[k] for k in ("tokens_per_s", "final_loss", "params")}, indent=1))

# %% [markdown]
# ## 3. 用 `torchrun` 启动两个 DDP 进程
# 同一个脚本、相同的每进程批量：全局批量翻倍。`torchrun --standalone` 在本机上进行汇合（rendezvous），
# 并为每个进程设置 RANK / LOCAL_RANK / WORLD_SIZE。

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
# 在 Pod 中，同一条命令通过 `labs/launch.sh` 在只有一个节点的[索引作业（Indexed Job）](../../docs/glossary.md#indexed-job)
# 里运行（`manifests/02-multinode/`）；辅助包负责渲染它，下面是对应的 kubectl 命令：

# %%
pod_version = render_variant("Job", MultiNodeSpec(nodes=1, procs_per_node=NPROC, name="lm-ddp"))
print(kubectl("submit", path="manifests/02-multinode/indexed-job.yaml"))
print(kubectl("logs", "lm-ddp", follow=True))

# %% [markdown]
# ## 4. 吞吐量：两个进程换来了什么
# 弱扩展（weak scaling）：每个进程的工作量固定，所以理想的 DDP 会让 tokens/s 翻倍。在 CPU 上，
# all-reduce 与计算共用相同的核，因此效率低于有 NVLink 的 GPU；`benchmarks/bench_ddp_scaling.py`
# 会仔细地测量它（每个进程一个线程）。

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
# ## 5. 每个 rank 持有相同的权重
# 实验程序在结束时在每个 rank 上对参数求哈希，并收集这些哈希值。DDP 让所有副本从同一个随机种子开始
# （并在构造时广播 rank 0 的权重），并应用同一个平均梯度，所以哈希值必须相等。

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
# ## 练习：累积梯度并压缩梯度
# 再次运行两个进程，这次使用 **2 个微批次（micro-batch）的梯度累积**（实验程序会在第一个微批次上调用
# `no_sync()`，于是每个优化器步只做一次 all-reduce）和 **fp16 压缩钩子**（梯度以 fp16 传输：字节数减半）。
# 填入这两个参数。检查会验证副本仍然一致、每个优化器步的 token 数翻倍，并且确实使用了该钩子。
# （已填入一个参考答案。）

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
# ## 在真实集群上
# 在 GPU 节点上，同一个实验程序使用 NCCL 和 bf16 autocast；一个有 8 块 GPU 的 Pod：
#
# ```bash
# kubectl apply -f manifests/02-multinode/pvc.yaml -f manifests/02-multinode/service.yaml \
#     -f manifests/02-multinode/indexed-job.yaml    # 把 NNODES/completions 改为 1，NPROC_PER_NODE 改为 8
# kubectl logs -f -l batch.kubernetes.io/job-name=lm-job --prefix
# ```
# 或者在 Python 中：`render_variant("Job", MultiNodeSpec(nodes=1, procs_per_node=8, gpus=8))`。
# 第 04 课把同一个作业分布到多个节点上。
#
# ## 清理

# %%
shutil.rmtree(OUT, ignore_errors=True)
