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
# # 01 · CIFAR-10 on one GPU: a training program built to run in a pod
#
# **What you will do:** prepare CIFAR-10, train a ResNet with the lab program `labs/cifar10.py`,
# watch loss and accuracy live, then interrupt a run and resume it from its checkpoint.
#
# **Why:** a program that will run in a Kubernetes pod must restart safely (pods get rescheduled),
# write checkpoints atomically, and log machine-readable metrics. This is that program, before any
# cluster is involved.
#
# **Prerequisites:** 00_setup. **Time:** 15 minutes (smoke size: about a minute on a laptop CPU).

# %% tags=["parameters"]
SMOKE = True  # small, synthetic, CPU-friendly; False: real CIFAR-10, full schedule
DATASET = "synthetic"  # "synthetic" (offline, generated here) or "cifar10" (downloads 163 MiB once)
DEVICE = "auto"  # "auto", "cpu" or "cuda"
EPOCHS = 0  # 0: the preset's epochs (smoke: a few; full: 30)
TIMEOUT_S = 600

# %%
import json
import shutil
import subprocess
import sys

from IPython.display import display

from kubecourse.contract import Done, Resumed, StartLine, parse_line
from kubecourse.course import record_outcome
from kubecourse.lab import plot_metrics, read_metrics, read_tensorboard, run_lab
from kubecourse.manifests import repo_root

ROOT = repo_root()
DATA_DIR = ROOT / "data"
OUT = ROOT / "build" / "lessons" / "01"
shutil.rmtree(OUT, ignore_errors=True)  # every run of this notebook starts from scratch

common = [f"--data-dir={DATA_DIR}", f"--dataset={DATASET}", f"--device={DEVICE}"]
if SMOKE:
    common.append("--smoke")
if EPOCHS:
    common.append(f"--epochs={EPOCHS}")
print("training flags:", common)

# %% [markdown]
# ## 1. Prepare the data (once)
# `labs.prepare_data` writes the official CIFAR-10 python layout (`data_batch_1..5`, `test_batch`).
# For `cifar10` it downloads the archive and verifies its MD5; `synthetic` writes the same layout
# with generated images, so the loader code is the same. On a cluster this runs as the Job's init
# container, onto a PersistentVolumeClaim that every later run reuses.

# %%
prepare = [
    sys.executable,
    "-m",
    "labs.prepare_data",
    f"--data-dir={DATA_DIR}",
    f"--dataset={DATASET}",
]
print("$ python", " ".join(prepare[1:]))
subprocess.run(prepare, cwd=ROOT, check=True, timeout=TIMEOUT_S)
print(sorted(p.name for p in (DATA_DIR / DATASET / "cifar-10-batches-py").iterdir()))

# %% [markdown]
# ## 2. Train
# The lab logs `step N/M ...` lines to stdout and one JSON object per line to `metrics.jsonl`; the
# plot below re-reads that file while training runs. In a pod you would read the same lines with
# `kubectl logs -f`.

# %%
run = run_lab("labs.cifar10", common, OUT / "full", timeout_s=TIMEOUT_S, echo_every=5)
assert run.returncode == 0, "\n".join(run.log[-20:])
result = run.result
print(json.dumps(result, indent=2))

# %%
metrics = read_metrics(OUT / "full")
figure = plot_metrics(metrics, title="CIFAR-10 ResNet (lab 01)")
figure

# %% [markdown]
# ### The same metrics in TensorBoard (optional)
# With the optional `tensorboard` package (`pip install -e '.[tensorboard]'`) the trainer also writes
# every metric to `OUT/tensorboard/`. The cell below reads those event files back and checks they hold
# the numbers of `metrics.jsonl`; `tensorboard --logdir build/lessons/01/full/tensorboard` opens the
# full UI. Without the package it says so and moves on.

# %%
tb_records = read_tensorboard(OUT / "full")  # None: the optional package is not installed
if tb_records is None:
    print("TensorBoard not installed: pip install -e '.[tensorboard]' (metrics.jsonl has it all)")
else:
    jsonl_loss = {r["step"]: r["loss"] for r in metrics if r["kind"] == "train"}
    tb_loss = {r["step"]: r["loss"] for r in tb_records if r["kind"] == "train" and "loss" in r}
    assert tb_loss.keys() == jsonl_loss.keys(), (sorted(tb_loss), sorted(jsonl_loss))
    assert all(
        abs(tb_loss[s] - jsonl_loss[s]) <= 1e-5 * max(1.0, abs(jsonl_loss[s])) for s in tb_loss
    )
    print(f"TensorBoard events: {len(tb_records)} records, train loss at {len(tb_loss)} steps")
    tb_figure = plot_metrics(tb_records, title="CIFAR-10 ResNet, read back from TensorBoard events")
    display(tb_figure)

# %% [markdown]
# ### On a GPU: bf16 autocast and channels_last
# On CUDA the lab runs its forward pass under `torch.autocast(dtype=bfloat16)` (fp16 with a
# GradScaler on GPUs without bf16) and keeps activations `channels_last`, which is what makes tensor
# cores fast. The cell below runs a short bf16 check when a GPU is present and says why it skipped
# otherwise.

# %%
from kubecourse.env import torch_info

gpu = torch_info()
if gpu.get("cuda"):
    bf16_run = run_lab(
        "labs.cifar10",
        common + ["--device=cuda", "--precision=bf16", "--max-steps=20"],
        OUT / "gpu-bf16",
        live_plot=False,
        echo_every=0,
        timeout_s=TIMEOUT_S,
    )
    header = next(line for line in bf16_run.log if line.startswith("cifar10:"))
    assert bf16_run.returncode == 0 and "precision=bfloat16" in header, header
    print("GPU path ran:", header)
else:
    print(
        f"GPU cell skipped: no CUDA device here (torch {gpu.get('torch')}); the CPU run above used fp32."
    )

# %% [markdown]
# ## 3. Checkpoint and resume
# Kubernetes may stop a pod at any time (preemption, node drain, `backoffLimit` retries). The lab
# writes a checkpoint every `--checkpoint-every` steps (temp file, fsync, rename: never half-written)
# and, on start, resumes from the latest complete one. Here we stop a run half-way with
# `--max-steps`, then start the very same command again.

# %%
total_steps = result["steps"]
half = max(1, total_steps // 2)
resume_flags = common + [f"--checkpoint-every={half}"]
first = run_lab(
    "labs.cifar10",
    resume_flags + [f"--max-steps={half}"],
    OUT / "resumed",
    live_plot=False,
    echo_every=0,
    timeout_s=TIMEOUT_S,
)
print(
    "interrupted at step",
    half,
    "checkpoints:",
    sorted(p.name for p in (OUT / "resumed" / "checkpoints").iterdir()),
)
second = run_lab(
    "labs.cifar10",
    resume_flags,
    OUT / "resumed",
    live_plot=False,
    echo_every=0,
    timeout_s=TIMEOUT_S,
)
print("\n".join(t for t in second.log if isinstance(parse_line(t), StartLine | Resumed | Done)))
resumed = second.result

# %% [markdown]
# ## 4. The input pipeline, measured
# A GPU that waits for data is an idle GPU. The tutorial pipeline decodes, crops, flips and
# normalises **one image at a time** in a `Dataset.__getitem__`, then the `DataLoader` collates
# them; the lab keeps the whole data set as one uint8 tensor and augments **whole batches** with
# tensor ops (`labs/common/data.py`: `EpochBatches`, `flip_crop`, `normalize`). Below, both on
# this CPU, with and without background workers (`num_workers`, each a process; `prefetch_factor`
# batches queued per worker). `pin_memory=True` (page-locked host memory, so the copy to the GPU
# can run asynchronously with `non_blocking=True`) needs a GPU; the cell says when it skipped it.
# On a GPU node the same measurement decides how many CPU cores a GPU needs (lesson 05).

# %%
import time

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from labs.common.data import EpochBatches, flip_crop, normalize

N, BATCH = (1024, 128) if SMOKE else (8192, 256)
images = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8)
labels = torch.randint(0, 10, (N,))
mean, std = torch.tensor([125.3, 123.0, 113.9]), torch.tensor([63.0, 62.1, 66.7])


class PerSample(Dataset):
    """The tutorial way: every image augmented on its own."""

    def __len__(self):
        return N

    def __getitem__(self, i):
        img = F.pad(images[i].float(), (4, 4, 4, 4))
        y, x = torch.randint(0, 9, (2,))
        img = img[:, y : y + 32, x : x + 32]
        if torch.rand(()) < 0.5:
            img = img.flip(2)
        return (img - mean.view(3, 1, 1)) / std.view(3, 1, 1), labels[i]


def images_per_s(loader, batched: bool) -> float:
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    seen = 0
    for batch in loader:
        x = normalize(flip_crop(batch[0], gen), mean, std) if batched else batch[0]
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32), (x.dtype, x.shape)
        seen += x.shape[0]
    delivered[loader] = seen
    return seen / (time.perf_counter() - start)


delivered = {}
threads = torch.get_num_threads()
torch.set_num_threads(1)  # one core each, like a pipeline sharing a node with the trainer


pipelines = {
    "per-sample, 0 workers": lambda: DataLoader(PerSample(), batch_size=BATCH, shuffle=True),
    "per-sample, 2 workers": lambda: DataLoader(
        PerSample(), batch_size=BATCH, shuffle=True, num_workers=2, prefetch_factor=2
    ),
    "batched (the lab), 0 workers": lambda: DataLoader(
        EpochBatches(images, labels, torch.randperm(N), BATCH), batch_size=None
    ),
}
loading = {name: images_per_s(make(), "batched" in name) for name, make in pipelines.items()}
torch.set_num_threads(threads)
for name, rate in loading.items():
    print(f"{name:30s} {rate:10,.0f} images/s")
speedup = loading["batched (the lab), 0 workers"] / loading["per-sample, 0 workers"]
print(
    f"batched / per-sample: x{speedup:.1f} (benchmarks/bench_cifar_throughput.py measures it idle)"
)
if torch.cuda.is_available():
    pinned = DataLoader(PerSample(), batch_size=BATCH, pin_memory=True, num_workers=2)
    print(f"{'per-sample, 2 workers, pinned':30s} {images_per_s(pinned, False):10,.0f} images/s")
else:
    print("pin_memory skipped: no CUDA device here (it speeds up host-to-GPU copies only)")

# %% [markdown]
# ## 5. The lab's efficiency tricks, in a small ablation
# The lab trains with a linear **LR warmup** then a cosine schedule (`--warmup-fraction`: a big
# learning rate on random weights diverges), **label smoothing** (`--label-smoothing`: targets of
# 0.9/0.01 instead of 1/0, so the network is not pushed to infinite logits), an **EMA** of the
# weights for evaluation (`--ema`, "动量平滑": the average of recent weights is smoother than the
# last step), **gradient accumulation** (`--grad-accum-steps`: several micro-batches per optimizer
# step, the same global batch in less activation memory) and, on a GPU, **mixed precision**
# (`--precision bf16`, section 2's GPU cell). Three tiny runs switch them: the lab's defaults with
# EMA, none of the tricks, and the same global batch as 2 micro-batches. At smoke size (30 steps)
# the accuracy differences are mostly noise; `SMOKE = False` on a GPU runs each for 5 epochs of
# real CIFAR-10. What the table shows reliably at any size: what each costs per step, and that
# accumulation keeps the optimizer steps.

# %%
size = ["--train-subset=640", "--test-subset=500", "--epochs=3", "--width=8"] if SMOKE else []
tiny = common + size + ["--epochs=5"] * (not SMOKE) + ["--log-every=100", "--checkpoint-every=0"]
tiny += ["--num-threads=1"] if SMOKE else []
variants = {
    "all tricks (+EMA)": ["--ema"],
    "no tricks": ["--warmup-fraction=0", "--label-smoothing=0"],
    "2 x 32 accumulated": ["--ema", "--batch-size=32", "--grad-accum-steps=2"],
}
ablation = {}
for name, flags in variants.items():
    run = run_lab("labs.cifar10", tiny + flags, OUT / "ablation" / name.split()[0], live_plot=False,
                  echo_every=0, timeout_s=TIMEOUT_S)  # fmt: skip
    assert run.returncode == 0, "\n".join(run.log[-20:])
    ablation[name] = run.result
print(f"{'variant':22s} {'test_acc':>8s} {'test_loss':>9s} {'steps':>5s} {'img/s':>7s}")
for name, r in ablation.items():
    print(
        f"{name:22s} {r['test_acc']:8.3f} {r['test_loss']:9.3f} {r['steps']:5d} {r['images_per_s']:7.0f}"
    )
print("mixed precision: on CUDA only (the CPU trains in fp32); see the GPU cell of section 2")

# %% [markdown]
# ## 6. Assert the outcome
# * accuracy far above chance (10 classes: 0.10);
# * the training loss fell;
# * the interrupted-and-resumed run ends *exactly* where the uninterrupted one did (same batches,
#   same random state: the checkpoint holds the data position and every RNG).

# %%
train_losses = [r["loss"] for r in metrics if r.get("kind") == "train"]
assert result["test_acc"] >= 0.4, f"test accuracy {result['test_acc']:.3f} is not far above chance"
assert train_losses[-1] < train_losses[0] * 0.8, (
    f"loss did not fall enough: {train_losses[0]:.3f} -> {train_losses[-1]:.3f}"
)
assert first.returncode == 0 and second.returncode == 0
assert resumed["resumed_from_step"] == half, resumed
assert sorted(delivered.values()) == [N // BATCH * BATCH, N, N], delivered  # every image, once
assert all(r["test_acc"] > 0.1 for r in ablation.values()), ablation  # above chance, each
assert ablation["2 x 32 accumulated"]["steps"] == ablation["all tricks (+EMA)"]["steps"]
assert resumed["test_acc"] == result["test_acc"] and resumed["test_loss"] == result["test_loss"], (
    resumed,
    result,
)
record_outcome(
    "01_cifar10_single_gpu",
    figures={"training": figure},
    test_acc=result["test_acc"],
    first_loss=train_losses[0],
    last_loss=train_losses[-1],
    images_per_s=result["images_per_s"],
    resume_equal=True,
    device=result["device"],
    loading_images_per_s={k: round(v) for k, v in loading.items()},
    ablation_test_acc={k: r["test_acc"] for k, r in ablation.items()},
)

# %% [markdown]
# ## Exercise
# From `metrics`, find the epoch at which test accuracy was highest (the `eval` records have
# `epoch` and `test_acc`). A solution is filled in: change it and re-run the check.

# %%
evals = [r for r in metrics if r.get("kind") == "eval"]
# BEGIN SOLUTION
best_epoch = max(evals, key=lambda r: r["test_acc"])["epoch"]
# END SOLUTION

# %%
from kubecourse.exercises import require

require("01-best-epoch", best_epoch, evals=evals)
print(f"best epoch {best_epoch}")

# %% [markdown]
# ## On a real cluster
# The next notebook packages this exact command as a Kubernetes Job. To train for real on a GPU
# machine, set `SMOKE = False, DATASET = "cifar10"` (the lab's docstring lists the measured numbers):
#
# ```bash
# python -m labs.prepare_data --data-dir data --dataset cifar10
# python -m labs.cifar10 --data-dir data --dataset cifar10 --out-dir runs/cifar10
# ```
#
# ## Clean up
# Outputs live in `build/lessons/01` (removed at the start of every run); the data stays in `data/`.
