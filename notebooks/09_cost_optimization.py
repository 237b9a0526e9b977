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
# # 09 · Cost: spot capacity, checkpoint intervals, budgets, and preemption measured for real
#
# **What you will do:** price a training run on on-demand and spot GPUs with a small cost model,
# find the checkpoint interval that minimises its cost (Young's and Daly's formulas), stop an
# over-budget job before it starts, preempt a real training run at random moments to measure how
# much work each preemption loses against what the model predicts, and pull two more levers: stop a
# fine-tune early, pretrain in stages.
#
# **Why:** GPU time is most of the bill. Spot capacity costs a third or less, but it is reclaimed
# without asking; whether that saves money depends on how much work each reclaim throws away,
# which depends on how often (and how) you checkpoint. The same arithmetic sizes checkpoint
# intervals for long on-demand runs, where node failures play the reclaim's part.
#
# **Prerequisites:** 02, 08. **Time:** 30 minutes (smoke: about 75 seconds, most of it the
# preempted training run and the two lever runs).

# %% tags=["parameters"]
SMOKE = True  # small preemption experiment (2 disruptions of a 30-step run)
BACKEND = "local"  # "local" or "kubernetes": the experiment uses client.preempt()/client.kill()
OFFER = "aws-p4d-a100"  # a name from docs/gpu-prices.yaml
CURRENCY = "USD"  # "USD" or "CNY": every offer is converted with the file's dated exchange_rates
COMPUTE_H = 100.0  # hours of training without failures or checkpoints (measure: steps x s/step)
GPUS = 8
CHECKPOINT_S = 60.0  # seconds to write one checkpoint (size / storage write bandwidth)
RESTART_S = 300.0  # seconds from a reclaim to training again (new node, image, data, resume)
BUDGET = 2500.0  # money you are willing to spend on this run, in CURRENCY
CHECKPOINT_EVERY = 5  # steps between the lab's checkpoints in the experiment
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
# ## 1. Prices are data
# `docs/gpu-prices.yaml` holds per-GPU-hour prices with the date they were noted and where they
# came from. They are **examples to refresh**, not quotes: open the sources and update them
# before you decide anything.

# %%
print(f"{'offer':<14} {'gpu':<10} {'on-demand':>9} {'spot':>6} {'reclaims/h':>10}  as of")
for offer in offers.values():
    print(
        f"{offer.name:<14} {offer.gpu:<10} {offer.on_demand_per_gpu_hour:>9.2f} "
        f"{offer.spot_per_gpu_hour:>6.2f} {offer.spot_preemptions_per_hour:>10.2f}  {offer.as_of}"
    )
print("source of", OFFER, ":", offers[OFFER].source)

# %% [markdown]
# ## 2. How often to checkpoint: Young and Daly
# A failure loses the work since the last checkpoint; a checkpoint costs `C` seconds of writing.
# With failures every `M` seconds on average, Young's optimum is `sqrt(2 C M)`; Daly's refinement
# subtracts `C` and corrects for large `C/M`. On spot, `M` is set by the reclaim rate.

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
# ## 3. Cost against the checkpoint interval
# Too often: the run spends its time writing checkpoints. Too rarely: each reclaim throws away a
# long stretch of work. The curve is flat near the optimum, so "roughly right" is good enough, and
# steep on the "too rarely" side on spot.

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
# ## 4. Spot against on-demand, offer by offer
# Spot is cheaper per hour but takes longer (reclaims, restarts, recomputed work). The saving
# survives unless reclaims are very frequent or restarts very slow.

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
# ## 5. A budget guard
# Before a job is submitted, estimate it and refuse it when the estimate exceeds the budget. The
# error names every number, so the fix (fewer GPU-hours, spot, or a bigger budget) is obvious.

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
# ## 6. Preemption for real
# The model says a reclaim at a random moment loses, on average, half a checkpoint interval. Let
# us check on a real run: lesson 04's HA Job (`manifests/04-production/jobs/job-ha.yaml`) trains
# the CIFAR lab at smoke size, checkpointing every `CHECKPOINT_EVERY` steps.
# At random steps we disrupt the running pod:
#
# * **SIGTERM** (`client.preempt`, what a preemption, drain or spot reclaim does): the pod gets the
#   `DisruptionTarget` condition and SIGTERM; the lab finishes its step, writes a final checkpoint
#   and exits 143; the podFailurePolicy ignores it and a new pod resumes. Predicted loss: 0.
# * **SIGKILL** (`client.kill`, a crash or a grace period too short): nothing is saved; the new
#   pod resumes from the last periodic checkpoint. Predicted loss: `CHECKPOINT_EVERY / 2` on
#   average, at most `CHECKPOINT_EVERY`.
#
# Twin on a cluster: `kubectl delete pod <pod>` (graceful) or
# `kubectl drain <node> --ignore-daemonsets --delete-emptydir-data` for SIGTERM;
# `kubectl delete pod <pod> --grace-period=0 --force` comes close to SIGKILL.

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
# Two disruptions are few: one SIGKILL can lose anything from 0 to a whole interval, so compare
# the *bound* here and the *mean* over many runs in `benchmarks/bench_preemption.py`
# (`python -m benchmarks --only preemption`). Counting whole steps shifts the mean by about half a
# step: the experiment signals right after a step is logged, so a SIGKILL loses up to K completed
# steps (mean about (K+1)/2) plus the step in flight, which no log line counts. Restart time per disruption (signal to the first
# step of the new pod) is the model's `R`; here it is Python and torch starting up, on a cluster
# add scheduling, image pull and data staging.

# %% [markdown]
# ## 7. Storage tiers, checkpoint backups and the cache hit rate
# Where a checkpoint lives sets `C` (write time = size / bandwidth) and whether it survives: a local
# NVMe is fast and dies with the node, a ReadWriteMany file system is shared by every node of the
# job, an object store is slow to write but outlives everything. The usual answer is all three:
# write the hot checkpoint fast, back every n-th up to the object store (content-addressed and
# verified, so a torn copy is never trusted), keep data and images cached on the nodes. The tier
# bandwidths below are assumptions (`kubecourse.storage.TIERS`): measure yours.
#
# Compression: weights are close to random numbers and barely compress; zeros (unused optimizer
# state, padding) compress almost entirely. And every restart that misses the cache (image pull,
# data download, model download) adds to `R`: the cache hit rate is money on spot.

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
# ## 8. Two more levers: stop early, train in stages
# Checkpoints limit the work a failure throws away; two more levers stop paying for work that
# does not help. Both live in the training core every lab shares (`labs/common/trainer.py`), so
# every lab has them:
#
# * **Early stopping** (`--early-stop-patience=P`): after each evaluation the trainer compares the
#   eval metric with the best so far; after `P` evaluations without improvement it saves a
#   checkpoint and ends the run as completed. A fine-tune on a small data set overfits: its eval
#   loss turns up long before the planned last step, and every step after that is money spent on
#   a worse model. The result keeps the best value and its step (`best_eval`): to keep *those*
#   weights, checkpoint at every evaluation and keep at least `P + 1` checkpoints.
# * **Staged training** (`--stage=N`): a rerun with a higher stage resumes the weights and the
#   optimizer state, then starts a new LR schedule with its own peak LR, sequence length or data.
#   Pretraining on short sequences first and long ones last is how large models are trained:
#   attention costs grow with the square of the length, and most of what a model learns early
#   needs no long context.
#
# Twin in a pod: the same flags in the container's `args` (`manifests/03-finetune/job.yaml` for
# the fine-tune; for a stage, rerun the Job with `--stage=1` and the new flags on the same PVC:
# the lab resumes from its checkpoint there). Then
# `kubectl logs -n ml-team-a job/<name> -c trainer | grep -E "early stop|stage"`.

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
# ## 9. Assert the outcome
# The model: spot is cheaper and checkpoints more often, the Daly interval is the cheapest on the
# curve, the guard refused on-demand. The experiment: SIGTERM lost nothing, each SIGKILL at most
# one interval. The levers: the fine-tune stopped early, `patience` evaluations after its best one;
# the second stage continued from the first stage's last step with its own schedule.

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
# ## Exercise: the fastest offer that fits the budget
# Write `fastest_within(offers, plan, budget)`: the name of the offer whose **spot** run of `plan`
# finishes first (`estimate(...).wall_h`) among those whose spot estimate costs at most `budget`,
# or `None` when none fits. The check tries this lesson's budget, one nothing fits, and one
# everything fits. (A solution is filled in: change it and re-run the check.)


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
# ## On a real cluster
# * Spot node pools: `cloud.google.com/gke-spot=true`, `eks.amazonaws.com/capacityType=SPOT` or
#   `kubernetes.azure.com/scalesetpriority=spot` node labels; a Kueue ResourceFlavor per pool lets
#   Kueue try spot first and fall back to on-demand (`flavorFungibility`).
# * The node's reclaim notice becomes a graceful pod termination: the pod gets `DisruptionTarget`
#   and SIGTERM, exactly what `preempt()` did here; make `terminationGracePeriodSeconds` longer
#   than one step plus one checkpoint write (spot notices are 30 s to 2 minutes).
# * Measure `C` (checkpoint write time) from the lab's log and `R` (restart) from the Job's events,
#   then rerun the model with your numbers.
#
# ```bash
# kubectl apply -f manifests/04-production/jobs/pvc.yaml -f manifests/04-production/jobs/job-ha.yaml
# kubectl delete pod -n ml-team-a -l batch.kubernetes.io/job-name=cifar10-ha   # a graceful "reclaim"
# kubectl logs -n ml-team-a -l batch.kubernetes.io/job-name=cifar10-ha -c trainer | grep resumed
# kubectl get job cifar10-ha -n ml-team-a -o jsonpath='{.status.failed}'      # 0: ignored
# ```
#
# ## Clean up
# The experiment deleted its job; the checkpoint folder stays on the local "PVC" like a real one.

# %%
shutil.rmtree(scratch, ignore_errors=True)
client.close()
