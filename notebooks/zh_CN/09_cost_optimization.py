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
#     catalog: notebooks/locale/zh_CN/LC_MESSAGES/09_cost_optimization.po
#     generated_by: python -m kubecourse.i18n build (edit the catalog, not this file)
#     language: zh_CN
#     source: notebooks/09_cost_optimization.py
# ---

# %% [markdown]
# # 09 · 成本：抢占式容量、检查点间隔、预算，以及实测的抢占
#
# **你将做什么：** 用一个小型成本模型为一次训练运行在按需（on-demand）GPU 和
# [抢占式实例（spot）](../../docs/glossary.md#spot) GPU 上估价，找出使成本最低的检查点间隔（Young 和 Daly
# 公式），在一个超预算的作业启动之前就拦下它，在随机时刻抢占一次真实的训练运行，测量每次抢占损失了
# 多少工作量并与模型的预测对比，再拉动另外两根杠杆：让一次微调提前停止，分阶段预训练。
#
# **为什么：** GPU 时间是账单的大头。抢占式容量的价格只有三分之一甚至更低，但它会被不打招呼地回收；
# 能否省钱取决于每次回收丢掉多少工作，而这又取决于你多久做一次检查点（以及怎么做）。同样的算术也用于为
# 长时间的按需运行确定检查点间隔，在那里节点故障扮演了回收的角色。
#
# **前置条件：** 02、08。**用时：** 30 分钟（冒烟规模：约 75 秒，大部分花在被抢占的训练运行和两次杠杆运行上）。

# %% tags=["parameters"]
SMOKE = True  # 小型抢占实验（一个 30 步的运行被打断 2 次）
BACKEND = "local"  # "local" 或 "kubernetes"：该实验使用 client.preempt()/client.kill()
OFFER = "aws-p4d-a100"  # docs/gpu-prices.yaml 中的一个名称
CURRENCY = "USD"  # "USD" 或 "CNY"：每个报价都按价格文件中带日期的 exchange_rates（汇率）换算
COMPUTE_H = 100.0  # 无故障、无检查点时的训练小时数（测量方法：步数 x 每步秒数）
GPUS = 8
CHECKPOINT_S = 60.0  # 写一次检查点的秒数（大小 / 存储写入带宽）
RESTART_S = 300.0  # 从回收到重新开始训练的秒数（新节点、镜像、数据、恢复）
BUDGET = 2500.0  # 你愿意为这次运行花的钱，以 CURRENCY 计
CHECKPOINT_EVERY = 5  # 实验中实验程序两次检查点之间的步数
SEED = 0

# %%
import math
import shutil

import matplotlib.pyplot as plt

from kubecourse import TrainingClient
from kubecourse.cost import (
    BudgetExceeded,
    RunPlan,
    budget_guard,
    cost_curve,
    daly_interval,
    estimate,
    load_prices,
    young_interval,
)
from kubecourse.course import record_outcome
from kubecourse.preemption import ha_job, run_preemption_experiment

offers = load_prices(currency=CURRENCY)
client = TrainingClient(backend=BACKEND)

# %% [markdown]
# ## 1. 价格即数据
# `docs/gpu-prices.yaml` 保存每 GPU 小时的价格，以及记录它们的日期和来源。它们是**需要刷新的示例**，
# 不是报价单：在做任何决定之前，请打开来源并更新它们。

# %%
print(f"{'offer':<14} {'gpu':<10} {'on-demand':>9} {'spot':>6} {'reclaims/h':>10}  as of")
for offer in offers.values():
    print(
        f"{offer.name:<14} {offer.gpu:<10} {offer.on_demand_per_gpu_hour:>9.2f} "
        f"{offer.spot_per_gpu_hour:>6.2f} {offer.spot_preemptions_per_hour:>10.2f}  {offer.as_of}"
    )
print("source of", OFFER, ":", offers[OFFER].source)

# %% [markdown]
# ## 2. 多久做一次检查点：Young 与 Daly
# 一次故障会丢失自上一个检查点以来的工作；一个检查点要花 `C` 秒来写。若平均每 `M` 秒发生一次故障，
# Young 的最优间隔是 `sqrt(2 C M)`；Daly 的改进减去 `C`，并对较大的 `C/M` 做了修正。在抢占式实例上，
# `M` 由回收频率决定。

# %%
offer = offers[OFFER]
plan = RunPlan(compute_h=COMPUTE_H, gpus=GPUS, checkpoint_s=CHECKPOINT_S, restart_s=RESTART_S)
on_demand = estimate(plan, offer, spot=False)
spot = estimate(plan, offer, spot=True)
for label, est in (("on-demand", on_demand), ("spot", spot)):
    mtbf_s = est.mtbf_h * 3600
    print(
        f"{label:<9}: MTBF {est.mtbf_h:7.1f} h  Young {young_interval(CHECKPOINT_S, mtbf_s) / 60:6.1f} min  "
        f"Daly {daly_interval(CHECKPOINT_S, mtbf_s) / 60:6.1f} min"
    )
    print(f"           {est}")

# %% [markdown]
# ## 3. 成本与检查点间隔的关系
# 太频繁：运行把时间都花在写检查点上。太稀疏：每次回收都丢掉一大段工作。曲线在最优点附近很平坦，所以
# “大致正确”就足够了；而在抢占式实例上，“太稀疏”那一侧很陡。

# %%
intervals_s = [60 * m for m in (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 360, 480)]
curve_spot = cost_curve(plan, offer, intervals_s, spot=True)
curve_on_demand = cost_curve(plan, offer, intervals_s, spot=False)
fig_interval, ax = plt.subplots(figsize=(7, 3.5))
minutes = [i / 60 for i in intervals_s]
ax.plot(minutes, [e.cost for e in curve_spot], "o-", label="spot")
ax.plot(minutes, [e.cost for e in curve_on_demand], "s-", label="on-demand")
for est, marker in ((spot, "v"), (on_demand, "^")):
    ax.plot(est.interval_s / 60, est.cost, marker, color="black", markersize=10)
ax.axhline(BUDGET, color="red", linestyle=":", label=f"budget {BUDGET:.0f}")
ax.set(xscale="log", xlabel="checkpoint interval (minutes)", ylabel="expected cost")
ax.set_title(f"{COMPUTE_H:.0f} h x {GPUS} GPU on {OFFER} (black: Daly optimum)")
ax.legend()
plt.show()

# %% [markdown]
# ## 4. 抢占式对比按需，逐个报价比较
# 抢占式实例每小时更便宜，但耗时更长（回收、重启、重算的工作）。除非回收非常频繁或重启非常慢，
# 否则节省依然存在。

# %%
names = list(offers)
costs = {
    n: (estimate(plan, offers[n]).cost, estimate(plan, offers[n], spot=True).cost) for n in names
}
fig_spot, ax = plt.subplots(figsize=(7, 3.5))
xs = range(len(names))
ax.bar([x - 0.2 for x in xs], [costs[n][0] for n in names], width=0.4, label="on-demand")
ax.bar([x + 0.2 for x in xs], [costs[n][1] for n in names], width=0.4, label="spot (Daly interval)")
ax.set_xticks(list(xs), names, rotation=20)
ax.set(ylabel="expected cost", title=f"{COMPUTE_H:.0f} h of compute on {GPUS} GPUs")
ax.legend()
plt.show()

# %% [markdown]
# ## 5. 预算守卫
# 在提交作业之前先估算，估算超出预算就拒绝它。错误信息列出每一个数字，因此如何修正（减少 GPU 小时、
# 使用抢占式实例，或增加预算）一目了然。

# %%
try:
    budget_guard(on_demand, BUDGET)
    on_demand_refused = False
except BudgetExceeded as error:
    on_demand_refused = True
    print(error)
spot_accepted = budget_guard(spot, BUDGET)
print("accepted:", spot_accepted)

# %% [markdown]
# ## 6. 真实的抢占
# 模型认为：在随机时刻发生的一次回收，平均损失半个检查点间隔。让我们在一次真实运行上检验：第 04 课的 HA
# Job（`manifests/04-production/jobs/job-ha.yaml`）以冒烟规模训练 CIFAR 实验程序，每
# `CHECKPOINT_EVERY` 步做一次检查点。我们在随机的步上干扰正在运行的 Pod：
#
# * **SIGTERM**（`client.preempt`，即抢占、腾空节点或抢占式实例回收时发生的事）：Pod 获得
#   `DisruptionTarget` 状况和 SIGTERM；实验程序完成当前步、写最后一个检查点并以 143 退出；
#   podFailurePolicy 忽略这次失败，新的 Pod 接着恢复。预测损失：0。
# * **SIGKILL**（`client.kill`，即崩溃或宽限期太短）：什么都没保存；新的 Pod 从最近一个周期性检查点恢复。
#   预测损失：平均 `CHECKPOINT_EVERY / 2`，最多 `CHECKPOINT_EVERY`。
#
# 在集群上对应的操作：`kubectl delete pod <pod>`（优雅终止）或
# `kubectl drain <node> --ignore-daemonsets --delete-emptydir-data` 对应 SIGTERM；
# `kubectl delete pod <pod> --grace-period=0 --force` 接近 SIGKILL。

# %%
disruptions = ["SIGTERM", "SIGKILL"] if SMOKE else ["SIGTERM", "SIGKILL"] * 4
epochs, subset = (3, 640) if SMOKE else (10, 2000)
objects = ha_job(
    "cifar10-preempt", checkpoint_every=CHECKPOINT_EVERY, epochs=epochs, train_subset=subset
)
experiment = run_preemption_experiment(
    client, objects, disruptions=disruptions, seed=SEED, timeout_s=600
)
print(experiment.table())
print(f"job {experiment.phase} after {experiment.total_steps} steps in {experiment.wall_s:.0f} s")

# %%
fig_lost, ax = plt.subplots(figsize=(7, 3))
colors = {"SIGTERM": "tab:green", "SIGKILL": "tab:red"}
for i, d in enumerate(experiment.disruptions):
    # A bar of height 0 is invisible: the legend and the number on the bar say it is there.
    label = d.kind + (" (0 steps lost)" if d.lost_steps == 0 else "")
    bars = ax.bar(i, d.lost_steps, color=colors[d.kind], label=label)
    ax.bar_label(bars, fontsize=8)
ax.axhline(CHECKPOINT_EVERY, color="black", linestyle="--", label="one interval (upper bound)")
ax.axhline(
    CHECKPOINT_EVERY / 2, color="tab:red", linestyle=":", label="SIGKILL prediction (interval/2)"
)
handles, labels = ax.get_legend_handles_labels()
unique = dict(zip(labels, handles, strict=True))
ax.legend(unique.values(), unique.keys(), fontsize=8)
ax.set_xticks(range(len(experiment.disruptions)), [d.kind for d in experiment.disruptions])
ax.set(ylabel="steps lost", title="work lost per disruption (measured)")
plt.show()

# %% [markdown]
# 两次干扰太少了：一次 SIGKILL 的损失可以是 0 到整整一个间隔之间的任何值，所以这里比较的是*上界*，
# 多次运行的*均值*请看 `benchmarks/bench_preemption.py`（`python -m benchmarks --only preemption`）。
# 按整步计数会让均值偏移约半步：实验在一步的日志输出后立即发送信号，所以一次 SIGKILL 最多损失 K 个已完成
# 的步（均值约为 (K+1)/2），外加正在进行、还没有日志行记录的那一步。每次干扰的重启时间（从信号到新 Pod 的
# 第一步）就是模型中的 `R`；这里是 Python 和 torch 的启动时间，在集群上还要加上调度、拉取镜像和准备数据。

# %% [markdown]
# ## 7. 存储层级、检查点备份与缓存命中率
# 检查点存放的位置决定了 `C`（写入时间 = 大小 / 带宽）以及它能否保住：本地 NVMe 很快，但随节点一起消失；
# ReadWriteMany 文件系统由作业的所有节点共享；对象存储写入慢，但比什么都活得久。通常的答案是三者都用：
# 快速写入热检查点，每隔 n 个备份一次到对象存储（按内容寻址并经过校验，因此绝不信任残缺的副本），并把数据和
# 镜像缓存在节点上。下面的各层带宽都是假设值（`kubecourse.storage.TIERS`）：请测量你自己的。
#
# 压缩：权重接近随机数，几乎压缩不了；零（未使用的优化器状态、填充）几乎可以完全压缩掉。而每一次未命中缓存的
# 重启（拉取镜像、下载数据、下载模型）都会增加 `R`：在抢占式实例上，缓存命中率就是钱。

# %%
import dataclasses
import random
import struct
import tempfile
import zlib
from pathlib import Path

from kubecourse.cost import checkpoint_seconds
from kubecourse.storage import TIERS, backup_checkpoint, restart_seconds

CHECKPOINT_GB = 21  # a 1.3B-parameter model with AdamW: 16 bytes per parameter
tier_cost = {}
for name, tier in TIERS.items():
    c = checkpoint_seconds(CHECKPOINT_GB, tier.write_gb_s)
    tier_cost[name] = estimate(dataclasses.replace(plan, checkpoint_s=c), offer, spot=True)
    print(f"{name:16s} C = {c:6.0f} s  shared={tier.shared!s:5s} survives node={tier.survives_node!s:5s}"
          f"  spot cost {tier_cost[name].cost:9.2f}  ({tier.use})")  # fmt: skip

rng = random.Random(SEED)
count = 50_000
weights_bytes = struct.pack(f"{count}f", *(rng.gauss(0, 0.02) for _ in range(count)))
zeros_bytes = bytes(4 * count)
compression = {
    "weights": len(zlib.compress(weights_bytes, 6)) / len(weights_bytes),
    "zeros": len(zlib.compress(zeros_bytes, 6)) / len(zeros_bytes),
}
print("compressed size / raw:", {k: round(v, 3) for k, v in compression.items()})

scratch = Path(tempfile.mkdtemp(prefix="lesson09-"))
checkpoint = scratch / "ckpt-step-00000030.pt"
checkpoint.write_bytes(weights_bytes)
backup = backup_checkpoint(checkpoint, scratch / "object-store")
again = backup_checkpoint(checkpoint, scratch / "object-store")  # idempotent: same object
print("backed up as", backup.name, "| second backup reused it:", again == backup)

HIT_S, MISS_S = 60.0, RESTART_S + 600  # assumed: a miss adds an image pull and a data download
hit_cost = {}
for hit_rate in (0.5, 0.9, 0.99):
    restart = restart_seconds(hit_rate=hit_rate, hit_s=HIT_S, miss_s=MISS_S)
    hit_cost[hit_rate] = estimate(dataclasses.replace(plan, restart_s=restart), offer, spot=True)
    print(
        f"cache hit rate {hit_rate:4.0%}: R = {restart:5.0f} s, spot cost {hit_cost[hit_rate].cost:9.2f}"
    )

# %% [markdown]
# ## 8. 另外两根杠杆：提前停止，分阶段训练
# 检查点限制了一次故障丢掉的工作量；另外两根杠杆则让你不再为没有帮助的工作付钱。两者都在所有实验共用的
# 训练核心里（`labs/common/trainer.py`），所以每个实验都有：
#
# * **提前停止（early stopping）**（`--early-stop-patience=P`）：每次评估之后，训练器把评估指标与迄今最好的值
#   比较；连续 `P` 次评估没有改进，它就保存一个检查点，并把这次运行作为已完成结束。在小数据集上微调会过拟合：
#   评估损失远在计划的最后一步之前就开始回升，之后的每一步都是花钱换一个更差的模型。结果里保留了最好的值和
#   它所在的步（`best_eval`）：要保住*那一步*的权重，就在每次评估时做检查点，并至少保留 `P + 1` 个检查点。
# * **分阶段训练（staged training）**（`--stage=N`）：以更高的阶段号重新运行，会恢复权重和优化器状态，然后开始一个
#   新的学习率调度，带有它自己的峰值学习率、序列长度或数据。先用短序列、最后用长序列预训练，正是大模型的
#   训练方式：注意力的开销随长度的平方增长，而模型早期学到的大部分东西并不需要长上下文。
#
# 在 Pod 里的对应做法：把同样的参数写进容器的 `args`（微调用 `manifests/03-finetune/job.yaml`；换阶段时，在同一个
# PVC 上用 `--stage=1` 和新的参数重新运行这个 Job：实验会从那里的检查点恢复）。然后
# `kubectl logs -n ml-team-a job/<name> -c trainer | grep -E "early stop|stage"`。

# %%
from kubecourse.lab import run_lab

levers = scratch / "levers"
# A tiny instruction set and a high LR: the eval loss turns up after a few steps.
patience, eval_every, planned = 2, 2, (40 if SMOKE else 200)
finetune_args = [
    "--train-examples=32", "--eval-examples=16", f"--steps={planned}", "--batch-size=8",
    "--grad-accum-steps=1", "--lr=2e-2", "--samples=1", "--max-new-tokens=4",
    f"--log-every={eval_every}", f"--eval-every={eval_every}", f"--early-stop-patience={patience}",
    "--checkpoint-every=0", "--num-threads=1", "--no-save-merged",
]  # fmt: skip
early = run_lab("labs.finetune", finetune_args, levers / "finetune", live_plot=False)
assert early.returncode == 0, "\n".join(early.log[-20:])
early_result, early_metrics = early.result, early.metrics
stopped_at, best = early_result["early_stopped_at_step"], early_result["best_eval"]
print(f"stopped at step {stopped_at} of {planned}: {1 - stopped_at / planned:.0%} of the steps "
      f"saved; best {best['metric']} {best['value']:.4f} at step {best['step']}")  # fmt: skip

# Stage 0: short sequences; stage 1 resumes those weights with twice the context and a lower LR.
stage_steps = (10, 6) if SMOKE else (200, 100)
lm_common = ["--smoke", "--num-threads=1", "--log-every=2"]
stage_runs = [
    run_lab("labs.lm_pretrain", [*lm_common, f"--steps={stage_steps[0]}", "--seq-len=32"],
            levers / "lm", live_plot=False),
    run_lab("labs.lm_pretrain", [*lm_common, "--stage=1", f"--steps={stage_steps[1]}",
            "--seq-len=64", "--lr=2e-3"], levers / "lm", live_plot=False),
]  # fmt: skip
for run in stage_runs:
    assert run.returncode == 0, "\n".join(run.log[-20:])
staged_result, staged_metrics = stage_runs[-1].result, stage_runs[-1].metrics
print("stages (stage, first step):", staged_result["stages"])

# %%
fig_levers, (ax_early, ax_stage) = plt.subplots(1, 2, figsize=(10, 3.2))
evals = [r for r in early_metrics if r["kind"] == "eval"]
ax_early.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval loss")
ax_early.axvline(best["step"], color="tab:green", linestyle="--", label="best eval")
ax_early.axvspan(stopped_at, planned, color="lightgray", label="steps not paid for")
ax_early.set(xlabel="step", ylabel="eval loss", title=f"early stopping (patience {patience})")
ax_early.legend(fontsize=8)
train = [r for r in staged_metrics if r["kind"] == "train"]
boundary = staged_result["stages"][-1][1]
ax_stage.plot([r["step"] for r in train], [r["loss"] for r in train], "o-", label="train loss")
ax_stage.axvline(boundary, color="black", linestyle="--", label="stage 1: seq 64, new LR")
ax_lr = ax_stage.twinx()
ax_lr.plot([r["step"] for r in train], [r["lr"] for r in train], color="tab:orange", alpha=0.6)
ax_lr.set_ylabel("learning rate", color="tab:orange")
ax_stage.set(xlabel="step", ylabel="train loss", title="staged pretraining")
ax_stage.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## 9. 断言结果
# 模型：抢占式实例更便宜，检查点也更频繁；Daly 间隔是曲线上最便宜的一点；预算守卫拒绝了按需实例。
# 实验：SIGTERM 没有丢失任何东西，每次 SIGKILL 最多丢失一个间隔。杠杆：微调提前停止了，停在最好那次评估之后
# `patience` 次评估处；第二阶段从第一阶段的最后一步继续，并使用它自己的调度。

# %%
sigkill_lost = experiment.lost("SIGKILL")
sigterm_lost = experiment.lost("SIGTERM")
record_outcome(
    "09_cost_optimization",
    figures={
        "cost_vs_interval": fig_interval,
        "spot_vs_on_demand": fig_spot,
        "lost_work": fig_lost,
        "levers": fig_levers,
    },
    spot_cost=round(spot.cost, 2),
    on_demand_cost=round(on_demand.cost, 2),
    daly_interval_spot_min=round(spot.interval_s / 60, 1),
    checkpoint_every_steps=CHECKPOINT_EVERY,
    sigterm_lost_steps=sigterm_lost,
    sigkill_lost_steps=sigkill_lost,
    sigkill_predicted_mean=experiment.predicted_lost("SIGKILL"),
    restart_s=[round(d.restart_s, 1) for d in experiment.disruptions if d.restart_s is not None],
    early_stopped_at_step=stopped_at,
    planned_steps=planned,
    best_eval=best,
    stages=staged_result["stages"],
)
assert spot.cost < on_demand.cost and spot.interval_s < on_demand.interval_s
assert all(spot.cost <= e.cost * 1.0001 for e in curve_spot), "the Daly interval should be cheapest"
assert on_demand_refused and spot_accepted is spot
assert experiment.phase == "Succeeded", experiment.phase
assert [d.kind for d in experiment.disruptions] == disruptions, experiment.table()
assert sigterm_lost and all(lost == 0 for lost in sigterm_lost), sigterm_lost
assert sigkill_lost and all(0 <= lost <= CHECKPOINT_EVERY for lost in sigkill_lost), sigkill_lost
assert math.isclose(experiment.predicted_lost("SIGKILL"), CHECKPOINT_EVERY / 2)
assert tier_cost["local NVMe"].cost < tier_cost["object store"].cost
assert compression["weights"] > 0.8 and compression["zeros"] < 0.05, compression
assert backup.read_bytes() == checkpoint.read_bytes() and again == backup
assert hit_cost[0.99].cost < hit_cost[0.9].cost < hit_cost[0.5].cost
assert stopped_at is not None and stopped_at < planned and early_result["completed"], early_result
assert best["metric"] == "eval_loss" and best["step"] == stopped_at - patience * eval_every, best
assert staged_result["stages"] == [[0, 0], [1, stage_steps[0]]], staged_result["stages"]
assert staged_result["resumed_from_step"] == stage_steps[0]
assert staged_result["steps"] == sum(stage_steps) and staged_result["completed"]
stage1 = [r for r in train if r["step"] > boundary]
assert stage1 and max(r["lr"] for r in stage1) <= 2e-3 * 1.0001, stage1
assert stage1[-1]["loss"] < staged_result["first_loss"], (stage1[-1], staged_result["first_loss"])

# %% [markdown]
# ## 练习：符合预算的最快报价
# 编写 `fastest_within(offers, plan, budget)`：在**抢占式实例**估算费用不超过 `budget` 的报价中，返回以抢占式实例运行
# `plan` 最先完成（`estimate(...).wall_h`）的那个报价的名称；一个都不符合时返回 `None`。检查会尝试本课的预算、
# 一个什么都不符合的预算和一个全部都符合的预算。（已填入一个参考答案：修改它，再重新运行检查。）


# %%
def fastest_within(offers: dict, plan: RunPlan, budget: float) -> str | None:
    # BEGIN SOLUTION
    spot_runs = {name: estimate(plan, offer, spot=True) for name, offer in offers.items()}
    affordable = {name: e for name, e in spot_runs.items() if e.cost <= budget}
    return min(affordable, key=lambda name: affordable[name].wall_h) if affordable else None
    # END SOLUTION


# %%
from kubecourse.exercises import require

require("09-fastest-in-budget", fastest_within, offers=offers, plan=plan, budget=BUDGET)
print(f"within {BUDGET:.0f}: {fastest_within(offers, plan, BUDGET)}")

# %% [markdown]
# ## 在真实集群上
# * 抢占式节点池：节点标签 `cloud.google.com/gke-spot=true`、`eks.amazonaws.com/capacityType=SPOT` 或
#   `kubernetes.azure.com/scalesetpriority=spot`；每个节点池一个 Kueue ResourceFlavor，让 Kueue 先尝试
#   抢占式实例，不行再回退到按需实例（`flavorFungibility`）。
# * 节点的回收通知会变成一次 Pod 的优雅终止：Pod 获得 `DisruptionTarget` 和 SIGTERM，与这里 `preempt()`
#   所做的完全相同；让 `terminationGracePeriodSeconds` 长于一步加一次检查点写入的时间（抢占式实例的通知
#   时间为 30 秒到 2 分钟）。
# * 从实验程序的日志中测量 `C`（检查点写入时间），从 Job 的事件中测量 `R`（重启时间），然后用你的数字
#   重新运行模型。
#
# ```bash
# kubectl apply -f manifests/04-production/jobs/pvc.yaml -f manifests/04-production/jobs/job-ha.yaml
# kubectl delete pod -n ml-team-a -l batch.kubernetes.io/job-name=cifar10-ha   # 一次优雅的“回收”
# kubectl logs -n ml-team-a -l batch.kubernetes.io/job-name=cifar10-ha -c trainer | grep resumed
# kubectl get job cifar10-ha -n ml-team-a -o jsonpath='{.status.failed}'      # 0：已被忽略
# ```
#
# ## 清理
# 实验已删除了它的作业；检查点文件夹像真实的 PVC 一样保留在本地“PVC”上。

# %%
shutil.rmtree(scratch, ignore_errors=True)
client.close()
