"""Train a small ResNet on CIFAR-10: one script for a laptop CPU, torchrun, and a Kubernetes Job.

What it does: loads CIFAR-format batches into one uint8 tensor, trains a ResNet-style convnet with
batch-level flip+crop augmentation, SGD-Nesterov (or AdamW), linear warmup + cosine LR, label
smoothing, optional EMA of the weights and gradient accumulation. It checkpoints atomically every
`--checkpoint-every` steps, resumes automatically (and exactly) from the newest complete
checkpoint in `OUT/checkpoints/`, writes `OUT/metrics.jsonl` (live) and `OUT/result.json` (final),
and on SIGTERM (Kubernetes preemption) finishes the current step, checkpoints and exits 143.

Prepare data (the real download happens only here; `synthetic` needs no network):

    python -m labs.prepare_data --data-dir data --dataset cifar10
    python -m labs.prepare_data --data-dir data --dataset synthetic

One process (CPU smoke run, generates the synthetic data if missing):

    python -m labs.cifar10 --data-dir data --dataset synthetic --out-dir runs/smoke --smoke --prepare

Several processes on one machine (same script; torchrun sets RANK/LOCAL_RANK/WORLD_SIZE):

    torchrun --standalone --nproc-per-node=2 -m labs.cifar10 \
        --data-dir data --dataset synthetic --out-dir runs/ddp --smoke --prepare

Several nodes: on each node run the same command with
`torchrun --nnodes=N --nproc-per-node=G --rdzv-backend=c10d --rdzv-endpoint=HOST:29500`.
On a cluster: `kubectl apply -k manifests/01-cifar10-job/` runs this script in a Job (data
prepared by an init container, checkpoints on a PVC, so a retried pod resumes).

Rerunning any of these with the same `--out-dir` resumes from the newest complete checkpoint.

Monitoring and failures (lessons 10-11): with METRICS_PORT=9400 every rank serves Prometheus
metrics on 9400 + local rank (labs/common/metrics.py); `--watchdog-s 900` exits a rank that finished
no step for 15 min; `--on-nonfinite fail|skip|rollback` handles a NaN/inf loss; `--inject-nan-at-step`,
`--inject-hang-at-step`, `--inject-slow-checkpoint-s` cause those faults on purpose. A run killed
with SIGKILL at any step and rerun ends bitwise equal to an uninterrupted one
(tests/labs/test_recovery.py).

Exit codes: 0 done (or stopped at --max-steps), 2 configuration error (bad flag value, data
missing: the Job's podFailurePolicy fails fast on 2 instead of retrying), 3 hung (watchdog),
4 non-finite loss (--on-nonfinite=fail), 143 stopped by SIGTERM after checkpointing (a retry
resumes). torchrun itself exits 1 when any worker fails, so a Job
that must see code 2 runs `python -m labs.cifar10` directly, with RANK/WORLD_SIZE set per pod.

Measured here (2-core AMD EPYC VM, torch 2.13.0+cpu, one process, 2 threads): the `--smoke
--prepare` run above takes 17-18 s end to end (process start ~4 s, data generation ~2 s,
training 10 s at ~700 images/s) and reaches test accuracy 0.70-0.73 on the synthetic data over
seeds 0-2 (chance 0.10). Under `torchrun --nproc-per-node=2` on the same 2 cores: 22 s, test
accuracy 0.62 (global batch 128, so half the steps). GPU numbers (the default config on real
CIFAR-10) are not measured yet.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from labs.common import checkpoint as ckpt
from labs.common import data
from labs.common.config import ConfigError, config_diff, param
from labs.common.distributed import (
    DistInfo,
    all_reduce,
    barrier,
    broadcast_object,
    cleanup,
    init_distributed,
    pick_device,
    wrap_ddp,
)
from labs.common.entry import EXIT_OK, EXIT_SIGTERM, StopFlag, run_main
from labs.common.faults import EXIT_NONFINITE, Watchdog, nan_hook
from labs.common.metrics import (
    MetricsLog,
    PrometheusExporter,
    training_flops_per_sample,
    truncate_metrics,
    write_json_atomic,
)


@dataclass
class TrainConfig:
    """Every knob of the lab. `python -m labs.cifar10 --help` is generated from this class."""

    # -- data and outputs ------------------------------------------------------------------------
    data_dir: str = param(
        "data", "folder holding <dataset>/cifar-10-batches-py (labs.prepare_data)"
    )
    dataset: Literal["cifar10", "synthetic"] = param(
        "cifar10", "cifar10 = the real 50k/10k images; synthetic = same format, no download"
    )
    out_dir: str = param(
        "runs/cifar10", "checkpoints/, metrics.jsonl, result.json; the same out_dir resumes"
    )
    prepare: bool = param(
        False, "generate the synthetic data first if missing (local rank 0 of each node)"
    )
    train_subset: int = param(
        0, "images: use only the first N training images (0 = all); fast runs"
    )
    test_subset: int = param(0, "images: evaluate on the first N test images (0 = all)")
    # -- schedule ----------------------------------------------------------------------------------
    epochs: int = param(20, "passes over the training set; fixes the LR schedule length")
    batch_size: int = param(
        256, "images per process per micro-batch; global batch = this x grad_accum x world_size"
    )
    grad_accum_steps: int = param(
        1, "micro-batches per optimizer step: a larger effective batch in the same memory"
    )
    max_steps: int = param(
        0,
        "optimizer steps: stop (with a checkpoint) after this many; 0 = no cap. The LR "
        "schedule still spans all epochs, so rerunning without it continues exactly",
    )
    # -- optimisation ------------------------------------------------------------------------------
    optimizer: Literal["sgd", "adamw"] = param(
        "sgd", "sgd = SGD with Nesterov momentum (the CIFAR standard); adamw needs lr ~1e-3"
    )
    lr: float = param(
        0.2, "peak learning rate, reached after warmup; scale it with the global batch size"
    )
    momentum: float = param(0.9, "SGD momentum (adamw: beta1)")
    weight_decay: float = param(
        5e-4, "L2 penalty on conv/linear weights (not BN or biases): regularises"
    )
    warmup_fraction: float = param(
        0.1, "fraction of all steps with linear LR warmup: early steps with a big LR diverge"
    )
    label_smoothing: float = param(
        0.1,
        "probability mass spread over wrong classes in the loss: better calibrated, less overfit",
    )
    ema: bool = param(False, "evaluate an exponential moving average of the weights")
    ema_decay: float = param(
        0.99, "EMA weight of the old average per step; higher = smoother, slower to follow"
    )
    # -- model -------------------------------------------------------------------------------------
    width: int = param(64, "channels of the first stage (then 2x, 4x): compute grows ~width^2")
    # -- communication (DDP; see labs/common/distributed.wrap_ddp) ----------------------------------
    bucket_cap_mb: float = param(25.0, "MB per DDP gradient all-reduce bucket (PyTorch default 25)")
    comm_hook: Literal["none", "fp16", "bf16", "powersgd"] = param(
        "none", "compress gradients before the all-reduce (bf16 needs NCCL)"
    )
    # -- system ------------------------------------------------------------------------------------
    device: Literal["auto", "cpu", "cuda"] = param("auto", "auto = cuda when available, else cpu")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = param(
        "auto", "autocast dtype on CUDA (auto = bf16 if supported); the CPU always uses fp32"
    )
    channels_last: bool = param(
        True, "NHWC memory layout: faster convs on tensor cores (and measured faster on CPU here)"
    )
    num_workers: int = param(
        0, "background processes gathering batches; 0 = in the loop (the gather is cheap)"
    )
    num_threads: int = param(
        0, "CPU threads per process; 0 = OMP_NUM_THREADS if set (torchrun sets 1), else all cores"
    )
    seed: int = param(0, "seeds init, data order and augmentation: same seed, same run")
    # -- outputs -----------------------------------------------------------------------------------
    log_every: int = param(50, "optimizer steps between train records/lines")
    checkpoint_every: int = param(
        500, "optimizer steps between checkpoints (0 = only at the end): lost work on a kill"
    )
    keep_checkpoints: int = param(3, "newest checkpoints kept: one bad file never leaves none")
    smoke: bool = param(
        False, "preset: an ~18 s, 2-core CPU run (2000 images, width 16); explicit flags still win"
    )
    # -- failures: guards and injection (lesson 11; metrics export is env METRICS_PORT) ------------
    on_nonfinite: Literal["fail", "skip", "rollback"] = param(
        "fail",
        "a NaN/inf loss: fail = exit 4 naming the step; skip = drop that update; rollback = "
        "reload the last checkpoint and replay (same result as a run without the fault)",
    )
    watchdog_s: float = param(
        0.0, "seconds without a finished step before the rank exits 3 as hung (0 = off)"
    )
    inject_nan_at_step: int = param(
        0, "fault injection: NaN loss at this optimizer step, once per out_dir (0 = off)"
    )
    inject_hang_at_step: int = param(
        0, "fault injection: rank 0 hangs before this step, once per out_dir (0 = off)"
    )
    inject_slow_checkpoint_s: float = param(
        0.0, "fault injection: seconds to pause halfway through each checkpoint write"
    )

    def __post_init__(self) -> None:
        positive = "epochs batch_size grad_accum_steps width log_every keep_checkpoints".split()
        non_negative = (
            "max_steps train_subset test_subset num_workers num_threads checkpoint_every "
            "weight_decay momentum"
        ).split()
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1 (got {getattr(self, name)})")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0 (got {getattr(self, name)})")
        if not self.lr > 0:
            raise ConfigError("lr", f"must be > 0 (got {self.lr})")
        if not self.bucket_cap_mb > 0:
            raise ConfigError("bucket_cap_mb", f"must be > 0 (got {self.bucket_cap_mb})")
        for name in ("warmup_fraction", "label_smoothing", "ema_decay"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(name, f"must be in [0, 1) (got {getattr(self, name)})")


# Sized so the whole run, data generation included, takes ~18 s on 2 CPU cores and reaches
# test accuracy ~0.70 on the synthetic data (chance: 0.10).
SMOKE: dict[str, Any] = dict(
    train_subset=2000,
    test_subset=1000,
    epochs=3,
    batch_size=64,
    width=16,
    lr=0.1,
    warmup_fraction=0.1,
    log_every=5,
    checkpoint_every=50,
)

# Fields that may change between a run and its resume without changing the result.
RUNTIME_FIELDS = (
    "out_dir data_dir prepare max_steps num_workers num_threads log_every checkpoint_every "
    "keep_checkpoints smoke device bucket_cap_mb comm_hook on_nonfinite watchdog_s "
    "inject_nan_at_step inject_hang_at_step inject_slow_checkpoint_s"
).split()


# ------------------------------------------------------------------------------------------------
# Model: a ResNet-8-style network sized by `width`.


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (a 1x1 projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class ResNet(nn.Module):
    """stem -> 3 stages (width, 2*width, 4*width channels; 32, 16, 8 pixels) -> pool -> linear."""

    def __init__(self, width: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        self.stages = nn.Sequential(
            BasicBlock(width, width, 1),
            BasicBlock(width, 2 * width, 2),
            BasicBlock(2 * width, 4 * width, 2),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ModelEMA:
    """Exponential moving average of a model's weights, evaluated instead of the raw weights.

    The average smooths out the noise of the last SGD steps. Its decay warms up
    (`min(decay, (1 + n) / (10 + n))`) because the first weights are not worth remembering.
    BatchNorm statistics are copied, not averaged."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, p in zip(self.module.parameters(), model.parameters(), strict=True):
            avg.lerp_(p.detach(), 1 - d)
        for avg, b in zip(self.module.buffers(), model.buffers(), strict=True):
            avg.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """LR multiplier: linear 0 -> 1 over `warmup_steps`, then cosine 1 -> 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD-Nesterov or AdamW; weight decay only on conv/linear weights (ndim >= 2)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


# ------------------------------------------------------------------------------------------------
# The hot path: batch -> device -> normalise + augment -> forward/backward -> optimizer step.


def batch_seed(seed: int, epoch: int, rank: int, batch_index: int) -> int:
    """Seed of one micro-batch's augmentation: a pure function of where the batch is in the run,
    so a resumed run draws exactly the same flips and crops without saving generator state."""
    return int(np.random.SeedSequence([seed, epoch, rank, batch_index]).generate_state(1)[0])


@dataclass
class Runtime:
    """What the hot path needs besides the model: resolved device, precision and normalisation."""

    device: torch.device
    amp_dtype: torch.dtype | None  # None = no autocast (fp32)
    channels_last: bool
    mean: torch.Tensor  # per-channel, pixel units, on `device`
    std: torch.Tensor

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare(
        self, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 batch -> normalised float batch on the device; augmented when `gen` is given."""
        x = images.to(self.device, non_blocking=True)
        y = labels.to(self.device, non_blocking=True)
        x = data.normalize(x, self.mean, self.std)
        if gen is not None:
            x = data.flip_crop(x, gen)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    micro_batches: list[tuple[torch.Tensor, torch.Tensor]],
    rt: Runtime,
    scaler: torch.amp.GradScaler | None = None,
    guard: Callable[[torch.Tensor], bool] | None = None,
) -> torch.Tensor:
    """One optimizer step over `micro_batches` (gradient accumulation); returns the mean loss.

    Under DDP, gradients are all-reduced only on the last micro-batch (`no_sync` before it).
    `guard(loss)` runs before the update; False skips it (a NaN loss must not reach the weights)."""
    total = torch.zeros((), device=rt.device)
    for i, (x, y) in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        sync = (
            nullcontext()
            if last or not isinstance(model, DistributedDataParallel)
            else (model.no_sync())
        )
        with sync:
            with rt.autocast():
                loss = loss_fn(model(x), y) / len(micro_batches)
            (scaler.scale(loss) if scaler else loss).backward()
        total += loss.detach()
    if guard is not None and not guard(total):
        optimizer.zero_grad(set_to_none=True)
        return total
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    rt: Runtime,
    dist: DistInfo,
    batch_size: int = 500,
) -> tuple[float, float]:
    """(test_loss, test_acc) over the whole test set, each rank scoring every world_size-th image."""
    model.eval()
    mine = torch.arange(dist.rank, len(images), dist.world_size)
    sums = torch.zeros(3, dtype=torch.float64, device=rt.device)  # loss sum, correct, count
    for start in range(0, len(mine), batch_size):
        idx = mine[start : start + batch_size]
        x, y = rt.prepare(images[idx], labels[idx], gen=None)
        with rt.autocast():
            logits = model(x)
        sums[0] += F.cross_entropy(logits.float(), y, reduction="sum").double()
        sums[1] += (logits.argmax(1) == y).sum()
        sums[2] += len(y)
    model.train()
    loss_sum, correct, count = all_reduce(sums, dist).tolist()
    return loss_sum / count, correct / count


# ------------------------------------------------------------------------------------------------
# Setup helpers.


def resolve_runtime(cfg: TrainConfig, dist: DistInfo) -> tuple[torch.device, torch.dtype | None]:
    """Device and autocast dtype from the config (ConfigError when CUDA is asked for but absent)."""
    device = pick_device(cfg.device, dist)
    if device.type != "cuda" and cfg.precision in ("bf16", "fp16") and dist.rank == 0:
        print(
            f"precision: {cfg.precision} autocast skipped: it needs a CUDA GPU; training in fp32 on CPU",
            flush=True,
        )
    if device.type != "cuda" or cfg.precision == "fp32":
        return device, None  # autocast only on CUDA: CPU autocast is slower than fp32 here
    if cfg.precision == "fp16":
        return device, torch.float16
    if cfg.precision == "bf16" or torch.cuda.is_bf16_supported():
        return device, torch.bfloat16
    return device, torch.float16


def check_data(cfg: TrainConfig) -> None:
    """Exit-2-worthy problems with the data, found before any process group forms."""
    if data.is_complete(cfg.data_dir, cfg.dataset):
        return
    if cfg.dataset == "synthetic" and cfg.prepare:
        return  # generated after the process group is up
    hint = "" if cfg.dataset == "cifar10" else " (or pass --prepare)"
    raise ConfigError(
        "data_dir",
        f"no complete {cfg.dataset} data in {data.dataset_root(cfg.data_dir, cfg.dataset)}; run "
        f"`python -m labs.prepare_data --data-dir {cfg.data_dir} --dataset {cfg.dataset}` "
        f"first{hint}",
    )


def rng_state() -> dict[str, Any]:
    """Every global RNG, in a form `torch.load(weights_only=True)` accepts."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------
# The training run.


def train(cfg: TrainConfig, dist: DistInfo, stop: StopFlag) -> int:
    """Run (or resume) training; returns the process exit code."""
    log = print if dist.is_main else (lambda *a, **k: None)
    device, amp_dtype = resolve_runtime(cfg, dist)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    elif os.environ.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    check_data(cfg)
    init_distributed(dist, device)
    try:
        return _train(cfg, dist, stop, device, amp_dtype, log)
    finally:
        cleanup(dist)


def _train(
    cfg: TrainConfig,
    dist: DistInfo,
    stop: StopFlag,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    log: Callable[..., None],
) -> int:
    """The run itself, top to bottom: data, model, resume, loop, result."""
    out = Path(cfg.out_dir)
    ckpt_dir = out / "checkpoints"
    if cfg.prepare and cfg.dataset == "synthetic" and dist.local_rank == 0:
        data.prepare_synthetic(cfg.data_dir, log=lambda m: log(m, flush=True))
    barrier(dist)  # the others wait until local rank 0 has written the data

    # Data: one uint8 tensor per split, in memory.
    train_x, train_y = data.load_split(cfg.data_dir, cfg.dataset, train=True)
    test_x, test_y = data.load_split(cfg.data_dir, cfg.dataset, train=False)
    if cfg.train_subset:
        train_x, train_y = train_x[: cfg.train_subset], train_y[: cfg.train_subset]
    if cfg.test_subset:
        test_x, test_y = test_x[: cfg.test_subset], test_y[: cfg.test_subset]
    mean, std = data.channel_stats(train_x)
    rt = Runtime(device, amp_dtype, cfg.channels_last, mean.to(device), std.to(device))
    # Each rank sees its own 1/world_size of every epoch; the order depends on (seed, epoch).
    sampler = DistributedSampler(
        range(len(train_x)),
        num_replicas=dist.world_size,
        rank=dist.rank,
        shuffle=True,
        seed=cfg.seed,
        drop_last=True,
    )
    steps_per_epoch = len(sampler) // (cfg.batch_size * cfg.grad_accum_steps)
    if steps_per_epoch == 0:
        raise ConfigError(
            "batch_size",
            f"{cfg.batch_size} x grad_accum_steps "
            f"{cfg.grad_accum_steps} exceeds the {len(sampler)} images per process",
        )
    total_steps = cfg.epochs * steps_per_epoch

    # Model, optimizer, schedule: seeded, so every rank builds identical weights.
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    memory_format = torch.channels_last if cfg.channels_last else torch.preserve_format
    model = ResNet(cfg.width, num_classes=data.NUM_CLASSES).to(device, memory_format=memory_format)
    optimizer = make_optimizer(model, cfg)
    warmup = round(cfg.warmup_fraction * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total_steps, warmup)
    )
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    ema = ModelEMA(model, cfg.ema_decay) if cfg.ema else None
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    # Resume: rank 0 reads its newest complete checkpoint and sends it to the others.
    state, path = (
        ckpt.load_latest(ckpt_dir, log=lambda m: log(m, flush=True))
        if dist.is_main
        else (None, None)
    )
    state = broadcast_object(state, dist)
    step = epoch = step_in_epoch = 0
    prior_time, last_eval, resumed_from = 0.0, None, None

    def load_state(state: dict[str, Any]) -> tuple[int, int, int]:
        """Weights, optimizer, schedule, EMA, scaler and RNGs from a checkpoint; its position."""
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        return state["step"], state["epoch"], state["step_in_epoch"]

    if state is not None:
        step, epoch, step_in_epoch = load_state(state)
        prior_time, last_eval, resumed_from = state["train_time_s"], state["last_eval"], step
        for field, (old, new) in config_diff(state["config"], asdict(cfg), RUNTIME_FIELDS).items():
            log(f"warning: resuming with {field}={new!r} (checkpoint has {old!r})", flush=True)
        if state["world_size"] != dist.world_size:
            log(
                f"warning: checkpoint was written with world_size={state['world_size']}; data "
                "order and schedule length change",
                flush=True,
            )
        log(f"resumed from step {step} ({path})", flush=True)
    if dist.is_main:
        truncate_metrics(out / "metrics.jsonl", step)  # forget steps we are about to replay
        (out / "result.json").unlink(missing_ok=True)
    metrics = MetricsLog(out / "metrics.jsonl", enabled=dist.is_main)
    net = model
    if dist.is_distributed:
        net = wrap_ddp(
            model,
            device,
            bucket_cap_mb=cfg.bucket_cap_mb,
            comm_hook=cfg.comm_hook,
            log=log,
        )

    global_batch = cfg.batch_size * cfg.grad_accum_steps * dist.world_size
    log(
        f"cifar10: device={device.type} world_size={dist.world_size} resumed_from={resumed_from} "
        f"train={len(train_x)} test={len(test_x)} steps={total_steps} "
        f"precision={'fp32' if amp_dtype is None else str(amp_dtype).removeprefix('torch.')} "
        f"global_batch={global_batch} threads={torch.get_num_threads()}",
        flush=True,
    )

    prom = PrometheusExporter.from_env(
        os.environ.get("JOB_NAME") or out.name, dist.rank, dist.local_rank, device.index
    )
    prom.start(total_steps)
    flops_per_sample = training_flops_per_sample(model, data.IMAGE_SHAPE) if prom.enabled else None
    watchdog = Watchdog(cfg.watchdog_s).start()
    nonfinite = {"action": ""}  # set by the guard: what the loop must do after the step

    def guard(loss: torch.Tensor) -> bool:
        """Before each update: is the loss finite on every rank? Else count it and obey the policy."""
        bad = (~torch.isfinite(loss)).float()
        if all_reduce(bad, dist, op="max").item() == 0:
            return True
        prom.nonfinite_step()
        log(f"non-finite loss {loss.item()} at step {step + 1}: {cfg.on_nonfinite}", flush=True)
        nonfinite["action"] = cfg.on_nonfinite
        return False

    def fire_once(kind: str, at_step: int) -> bool:
        """Injected faults are transient: rank 0 fires each once per out_dir (a marker file)."""
        if not (dist.is_main and at_step and step + 1 == at_step):
            return False
        marker = out / "injected-faults" / f"{kind}-step-{at_step}"
        if marker.exists():
            return False
        write_json_atomic(marker, {"kind": kind, "step": at_step})
        log(f"fault injection: {kind} at step {at_step}", flush=True)
        return True

    def save(reason: str = "") -> None:
        interval_loss = all_reduce(interval["loss"].clone(), dist).item()  # every rank joins
        save_start = time.perf_counter()
        if dist.is_main:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "ema": ema.state_dict() if ema else None,
                "scaler": scaler.state_dict() if scaler else None,
                "rng": rng_state(),
                "step": step,
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "train_time_s": elapsed(),
                "last_eval": last_eval,
                "interval_loss": interval_loss,
                "interval_steps": interval["steps"],
                "config": asdict(cfg),
                "world_size": dist.world_size,
            }
            p = ckpt.save_checkpoint(
                state,
                ckpt_dir,
                step,
                keep=cfg.keep_checkpoints,
                slow_write_s=cfg.inject_slow_checkpoint_s,
            )
            log(f"checkpoint saved step {step} path {p}{reason}", flush=True)
        barrier(dist)
        prom.checkpoint_saved(time.perf_counter() - save_start)
        watchdog.beat(step)

    def rollback() -> None:
        """Back to the newest complete checkpoint, as if the process had been restarted."""
        nonlocal step, epoch, step_in_epoch, last_eval
        state, path = ckpt.load_latest(ckpt_dir, log=log) if dist.is_main else (None, None)
        state = broadcast_object(state, dist)
        if state is None:
            raise RuntimeError("on_nonfinite=rollback, but there is no checkpoint to go back to")
        step, epoch, step_in_epoch = load_state(state)
        last_eval = state["last_eval"]
        interval.update(loss=torch.zeros((), device=device), steps=state["interval_steps"])
        if dist.is_main:
            interval["loss"] += state["interval_loss"]
            truncate_metrics(out / "metrics.jsonl", step)
        log(f"rolled back to step {step} ({path})", flush=True)

    def run_eval() -> dict[str, float]:
        test_loss, test_acc = evaluate(ema.module if ema else model, test_x, test_y, rt, dist)
        return {"test_loss": test_loss, "test_acc": test_acc}

    run_start = time.perf_counter()
    step_time, run_images = 0.0, 0
    # Loss of the current log interval; saved in checkpoints so that a resumed run logs the same
    # numbers as an uninterrupted one. Images/s counts only steps timed in this process.
    interval = {
        "loss": torch.zeros((), device=device),
        "steps": 0,
        "timed": 0,
        "t": time.perf_counter(),
    }
    if state is not None and dist.is_main:
        interval["loss"] += state["interval_loss"]
    interval["steps"] = state["interval_steps"] if state is not None else 0

    def elapsed() -> float:
        return prior_time + time.perf_counter() - run_start

    def finish(result_eval: dict[str, float], completed: bool) -> None:
        result = {
            **result_eval,
            "steps": step,
            "epochs": cfg.epochs,
            "resumed_from_step": resumed_from,
            "train_time_s": round(elapsed(), 3),
            "images_per_s": round(run_images / step_time, 1) if step_time else 0.0,
            "device": device.type,
            "world_size": dist.world_size,
            "completed": completed,
        }
        if dist.is_main:
            write_json_atomic(out / "result.json", result)
        log(
            f"done test_acc {result['test_acc']:.4f} test_loss {result['test_loss']:.4f} "
            f"steps {step} time_s {result['train_time_s']:.1f} img/s {result['images_per_s']:.0f}",
            flush=True,
        )
        log("result " + json.dumps(result, separators=(",", ":"), sort_keys=True), flush=True)

    if cfg.max_steps and step >= cfg.max_steps and epoch < cfg.epochs:
        log(f"already at max_steps={cfg.max_steps}; rerun without it to continue", flush=True)
        metrics.close()
        finish(run_eval(), completed=False)
        return EXIT_OK

    while epoch < cfg.epochs:
        sampler.set_epoch(epoch)
        batches = data.EpochBatches(
            train_x,
            train_y,
            torch.tensor(list(sampler)),
            cfg.batch_size,
            start=step_in_epoch * cfg.grad_accum_steps,
            stop=steps_per_epoch * cfg.grad_accum_steps,
        )
        loader = DataLoader(
            batches,
            batch_size=None,
            shuffle=False,
            num_workers=cfg.num_workers,
            pin_memory=device.type == "cuda",
        )
        micro: list[tuple[torch.Tensor, torch.Tensor]] = []
        t0 = step_end = time.perf_counter()
        for images, labels, index in loader:
            gen = torch.Generator().manual_seed(batch_seed(cfg.seed, epoch, dist.rank, index))
            micro.append(rt.prepare(images, labels, gen))
            if len(micro) < cfg.grad_accum_steps:
                continue
            nan_handle = (
                model.head.register_forward_hook(nan_hook)
                if fire_once("nan", cfg.inject_nan_at_step)
                else None
            )
            if fire_once("hang", cfg.inject_hang_at_step):
                while True:  # a stuck collective or file read: only the watchdog ends this
                    time.sleep(3600)
            loss = train_step(net, optimizer, loss_fn, micro, rt, scaler, guard)
            if nan_handle is not None:
                nan_handle.remove()
            micro = []
            if nonfinite["action"] == "fail":
                metrics.close()
                log(f"error: non-finite loss at step {step + 1}; exiting", flush=True)
                return EXIT_NONFINITE
            if nonfinite["action"] == "rollback":
                nonfinite["action"] = ""
                rollback()
                break
            scheduler.step()
            if ema is not None:
                ema.update(model)
            step += 1
            step_in_epoch += 1
            run_images += global_batch
            if nonfinite["action"] == "skip":
                nonfinite["action"] = ""  # that update was dropped; its loss is not averaged
            else:
                interval["loss"] += loss
                interval["steps"] += 1
            interval["timed"] += 1
            watchdog.beat(step)
            now = time.perf_counter()
            prom.step_done(step, now - step_end, global_batch)
            step_end = now

            if step % cfg.log_every == 0:
                mean_loss = all_reduce(interval["loss"].clone(), dist).item() / (
                    max(1, interval["steps"]) * dist.world_size
                )
                now = time.perf_counter()
                ips = interval["timed"] * global_batch / (now - interval["t"])
                ep = epoch + step_in_epoch / steps_per_epoch
                lr = optimizer.param_groups[0]["lr"]
                log(
                    f"step {step}/{total_steps} epoch {ep:.2f} loss {mean_loss:.4f} lr {lr:.4f} "
                    f"img/s {ips:.0f}",
                    flush=True,
                )
                metrics.write(
                    {
                        "kind": "train",
                        "step": step,
                        "epoch": round(ep, 4),
                        "loss": mean_loss,
                        "lr": lr,
                        "images_per_s": round(ips, 1),
                        "time_s": round(elapsed(), 3),
                    }
                )
                interval.update(loss=torch.zeros((), device=device), steps=0, timed=0, t=now)
                prom.interval(mean_loss, lr, ips, flops_per_sample)

            # Every rank must agree to stop, or the others would wait forever in the next
            # all-reduce: share the SIGTERM flag (max over ranks; a tiny collective per step).
            sigterm = stop.requested
            if dist.is_distributed:
                flag = torch.tensor(float(sigterm), device=device)
                sigterm = all_reduce(flag, dist, op="max").item() > 0
            capped = cfg.max_steps and step >= cfg.max_steps
            if sigterm or capped:
                step_time += time.perf_counter() - t0
                save(" (SIGTERM)" if sigterm else " (max_steps)")
                metrics.close()
                if sigterm:
                    log(f"stopped by SIGTERM at step {step}; rerun to resume", flush=True)
                    return EXIT_SIGTERM
                log(
                    f"stopped at max_steps={cfg.max_steps}; rerun without it to continue",
                    flush=True,
                )
                finish(run_eval(), completed=False)
                return EXIT_OK
            if (
                cfg.checkpoint_every
                and step % cfg.checkpoint_every == 0
                and step_in_epoch < steps_per_epoch
            ):
                save()
        step_time += time.perf_counter() - t0
        if step_in_epoch < steps_per_epoch:
            continue  # rolled back mid-epoch: restart the epoch's loader at the restored position

        eval_start = time.perf_counter()
        last_eval = run_eval()
        interval["t"] += time.perf_counter() - eval_start  # img/s measures training only
        log(
            f"eval epoch {epoch + 1} test_acc {last_eval['test_acc']:.4f} "
            f"test_loss {last_eval['test_loss']:.4f}",
            flush=True,
        )
        watchdog.beat(step)
        metrics.write({"kind": "eval", "step": step, "epoch": epoch + 1, **last_eval})
        epoch += 1
        step_in_epoch = 0
        if epoch == cfg.epochs or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
            save()

    metrics.close()
    finish(last_eval if last_eval is not None else run_eval(), completed=True)
    watchdog.stop()
    prom.close()
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0, 2 or 143)."""
    return run_main(
        TrainConfig,
        train,
        argv,
        prog="python -m labs.cifar10",
        description=__doc__,
        presets={"smoke": SMOKE},
    )


if __name__ == "__main__":
    sys.exit(main())
