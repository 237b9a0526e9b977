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
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from labs.common import data
from labs.common.config import ConfigError, check_bounds, param
from labs.common.distributed import (
    DistInfo,
    all_reduce,
    barrier,
    pick_device,
    set_threads,
    wrap_ddp,
)
from labs.common.entry import StopFlag, run_main
from labs.common.metrics import training_flops_per_sample
from labs.common.state import seed_everything
from labs.common.trainer import CoreConfig, Task, Trainer, train_task, warmup_cosine

__all__ = ["TrainConfig", "CifarTask", "main", "train", "warmup_cosine", "StopFlag"]


@dataclass
class TrainConfig(CoreConfig):
    """Every knob of the lab. `python -m labs.cifar10 --help` is generated from this class;
    the flags every lab shares (resume, stops, checkpoints, faults) come from CoreConfig."""

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
    # -- outputs -----------------------------------------------------------------------------------
    log_every: int = param(50, "optimizer steps between train records/lines")
    checkpoint_every: int = param(
        500, "optimizer steps between checkpoints (0 = only at the end): lost work on a kill"
    )
    keep_checkpoints: int = param(3, "newest checkpoints kept: one bad file never leaves none")
    smoke: bool = param(
        False, "preset: an ~18 s, 2-core CPU run (2000 images, width 16); explicit flags still win"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_bounds(
            self,
            positive="epochs batch_size width",
            non_negative="train_subset test_subset num_workers num_threads weight_decay momentum",
            above_zero="lr bucket_cap_mb",
            fraction="warmup_fraction label_smoothing ema_decay",
        )


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

# Lab fields that may change between a run and its resume without changing the result (the
# core's own are in labs.common.trainer.CORE_RUNTIME_FIELDS).
RUNTIME_FIELDS = (
    "data_dir prepare num_workers num_threads smoke device bucket_cap_mb comm_hook"
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


# ------------------------------------------------------------------------------------------------
# The lab's part of the run: data, model, batches, loss, evaluation. The loop is labs.common.trainer.


class CifarTask(Task):
    """CIFAR-10 for the trainer core: epochs of shuffled micro-batches, eval every epoch."""

    name = "cifar10"
    eval_metric, eval_mode = "test_acc", "max"
    result_when_capped = True
    runtime_fields = RUNTIME_FIELDS

    def __init__(self, cfg: TrainConfig, dist: DistInfo, device: torch.device, amp_dtype) -> None:
        self.cfg, self.dist, self.device, self.amp_dtype = cfg, dist, device, amp_dtype
        self.load_data()
        # Model, optimizer: seeded, so every rank builds identical weights.
        seed_everything(cfg.seed)
        memory_format = torch.channels_last if cfg.channels_last else torch.preserve_format
        self.model = ResNet(cfg.width, data.NUM_CLASSES).to(device, memory_format=memory_format)
        self.optimizer = make_optimizer(self.model, cfg)
        self.stage_steps = cfg.epochs * self.steps_per_epoch
        self.warmup_steps = round(cfg.warmup_fraction * self.stage_steps)
        self.eval_every = self.steps_per_epoch
        self.scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        self.ema = ModelEMA(self.model, cfg.ema_decay) if cfg.ema else None
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.samples_per_step = cfg.batch_size * cfg.grad_accum_steps * dist.world_size
        self.net = self.model
        if dist.is_distributed:
            self.net = wrap_ddp(
                self.model, device, bucket_cap_mb=cfg.bucket_cap_mb, comm_hook=cfg.comm_hook
            )
        self._batches: Iterator | None = None
        self._position: tuple[int, int] | None = None
        self._flops: float | None = None

    def load_data(self) -> None:
        cfg, dist = self.cfg, self.dist
        train_x, train_y = data.load_split(cfg.data_dir, cfg.dataset, train=True)
        test_x, test_y = data.load_split(cfg.data_dir, cfg.dataset, train=False)
        n_train, n_test = cfg.train_subset or len(train_x), cfg.test_subset or len(test_x)
        self.train_x, self.train_y = train_x[:n_train], train_y[:n_train]
        self.test_x, self.test_y = test_x[:n_test], test_y[:n_test]
        mean, std = data.channel_stats(self.train_x)
        self.rt = Runtime(
            self.device,
            self.amp_dtype,
            cfg.channels_last,
            mean.to(self.device),
            std.to(self.device),
        )
        # Each rank sees its own 1/world_size of every epoch; the order depends on (seed, epoch).
        self.sampler = DistributedSampler(
            range(len(self.train_x)),
            num_replicas=dist.world_size,
            rank=dist.rank,
            shuffle=True,
            seed=cfg.seed,
            drop_last=True,
        )
        self.steps_per_epoch = len(self.sampler) // (cfg.batch_size * cfg.grad_accum_steps)
        if self.steps_per_epoch == 0:
            raise ConfigError(
                "batch_size",
                f"{cfg.batch_size} x grad_accum_steps "
                f"{cfg.grad_accum_steps} exceeds the {len(self.sampler)} images per process",
            )

    # -- batches and loss --------------------------------------------------------------------------
    def micro_batches(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        epoch, within = divmod(step - self.stage_start, self.steps_per_epoch)
        if self._position != (epoch, within):  # a fresh start, a new epoch, a resume, a rollback
            self._batches = self.epoch_batches(epoch, within)
        micro = [next(self._batches) for _ in range(self.cfg.grad_accum_steps)]
        self._position = (epoch, within + 1)
        return micro

    def epoch_batches(self, epoch: int, within: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's augmented micro-batches of `epoch`, from optimizer step `within` on."""
        cfg = self.cfg
        self.sampler.set_epoch(epoch)
        batches = data.EpochBatches(
            self.train_x,
            self.train_y,
            torch.tensor(list(self.sampler)),
            cfg.batch_size,
            start=within * cfg.grad_accum_steps,
            stop=self.steps_per_epoch * cfg.grad_accum_steps,
        )
        loader = DataLoader(
            batches,
            batch_size=None,
            shuffle=False,
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for images, labels, index in loader:
            gen = torch.Generator().manual_seed(batch_seed(cfg.seed, epoch, self.dist.rank, index))
            yield self.rt.prepare(images, labels, gen)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return self.loss_fn(self.net(x), y)

    def autocast(self):
        return self.rt.autocast()

    def nan_module(self) -> nn.Module:
        return self.model.head  # BatchNorm statistics stay clean; only the gradients are poisoned

    def flops_per_sample(self) -> float:
        if self._flops is None:
            self._flops = training_flops_per_sample(self.model, data.IMAGE_SHAPE)
        return self._flops

    # -- what the trainer prints and records -------------------------------------------------------
    def start_fields(self, resumed_from: int | None) -> dict[str, Any]:
        dtype = self.rt.amp_dtype
        return {
            "device": self.device.type,
            "world_size": self.dist.world_size,
            "resumed_from": resumed_from,
            "train": len(self.train_x),
            "test": len(self.test_x),
            "steps": self.stage_start + self.stage_steps,
            "precision": "fp32" if dtype is None else str(dtype).removeprefix("torch."),
            "global_batch": self.samples_per_step,
            "threads": torch.get_num_threads(),
        }

    def log_fields(self, step, loss, lr, samples_per_s, s_per_step):
        ep = (step - self.stage_start) / self.steps_per_epoch
        fields = [
            ("epoch", f"{ep:.2f}"),
            ("loss", f"{loss:.4f}"),
            ("lr", f"{lr:.4f}"),
            ("img/s", f"{samples_per_s:.0f}"),
        ]
        record = {
            "epoch": round(ep, 4),
            "loss": loss,
            "lr": lr,
            "images_per_s": round(samples_per_s, 1),
        }
        return fields, record

    def run_eval(self) -> dict[str, float]:
        model = self.ema.module if self.ema is not None else self.model
        test_loss, test_acc = evaluate(model, self.test_x, self.test_y, self.rt, self.dist)
        return {"test_loss": test_loss, "test_acc": test_acc}

    def evaluate(self, step: int) -> tuple[dict[str, Any], str]:
        epoch = (step - self.stage_start) // self.steps_per_epoch
        ev = self.run_eval()
        line = f"eval epoch {epoch} test_acc {ev['test_acc']:.4f} test_loss {ev['test_loss']:.4f}"
        return {"epoch": epoch, **ev}, line

    def finish(self, trainer: Trainer, completed: bool):
        if trainer.last_eval is not None and trainer.last_eval_step == trainer.step:
            ev = {k: v for k, v in trainer.last_eval.items() if k != "epoch"}
        else:  # stopped between evaluations (--max-steps): score the weights as they are
            ev = self.run_eval()
        seconds = trainer.step_seconds
        ips = round(trainer.timed_steps * self.samples_per_step / seconds, 1) if seconds else 0.0
        result = {**ev, "epochs": self.cfg.epochs, "images_per_s": ips}
        done = [
            ("test_acc", f"{ev['test_acc']:.4f}"),
            ("test_loss", f"{ev['test_loss']:.4f}"),
            ("steps", str(trainer.step)),
            ("time_s", f"{trainer.elapsed():.1f}"),
            ("img/s", f"{ips:.0f}"),
        ]
        return result, done


def train(cfg: TrainConfig, dist: DistInfo, stop: StopFlag) -> int:
    """Run (or resume) training; returns the process exit code."""
    log = print if dist.is_main else (lambda *a, **k: None)
    device, amp_dtype = resolve_runtime(cfg, dist)
    set_threads(cfg.num_threads)
    check_data(cfg)

    def make_task() -> CifarTask:
        if cfg.prepare and cfg.dataset == "synthetic" and dist.local_rank == 0:
            data.prepare_synthetic(cfg.data_dir, log=lambda m: log(m, flush=True))
        barrier(dist)  # the others wait until local rank 0 has written the data
        return CifarTask(cfg, dist, device, amp_dtype)

    return train_task(cfg, dist, stop, device, make_task)


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
