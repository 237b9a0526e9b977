"""Training throughput: the lab's hot path vs a tutorial-style loop, same model, same data, CPU.

    .venv/bin/python benchmarks/bench_cifar_throughput.py [--out build/bench/cifar_throughput.json]

Three loops train the lab's ResNet (same width) on the same in-memory synthetic images, fp32:

  lab              labs/cifar10.py's real hot path: `EpochBatches` gathers a uint8 batch from
                   one tensor, `Runtime.prepare` normalises + flips + crops the whole batch, then
                   `train_step` (SGD-Nesterov, label smoothing, channels_last), batch 64
                   (the `--smoke` batch size).
  tutorial         the PyTorch "Training a classifier" tutorial loop: a per-sample `Dataset`
                   whose `__getitem__` does ToTensor (HWC uint8 -> CHW float / 255) and
                   Normalize, `DataLoader(batch_size=4, shuffle=True, num_workers=2)` with the
                   default collate, SGD(lr=0.001, momentum=0.9), NCHW.
  tutorial_loader  the same per-sample pipeline plus per-sample random crop + flip (what
                   torchvision's RandomCrop/RandomHorizontalFlip do) at the lab's batch size and
                   memory layout: isolates what the per-sample data path costs.

Each loop runs `--warmup` steps, then `--steps` timed steps; images/s = steps x batch / time.
Measured numbers go to stdout and the JSON file; see labs/README.md for the last recorded ones.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from labs import cifar10
from labs.common import data


class TutorialDataset(torch.utils.data.Dataset):
    """One image per `__getitem__`, converted and normalised on its own (as torchvision does)."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, augment: bool) -> None:
        self.images, self.labels, self.augment = images_hwc, labels, augment
        self.mean = torch.tensor([0.5, 0.5, 0.5]).view(3, 1, 1)
        self.std = torch.tensor([0.5, 0.5, 0.5]).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i]
        if self.augment:  # RandomCrop(32, padding=4) + RandomHorizontalFlip on the HWC image
            img = np.pad(img, ((4, 4), (4, 4), (0, 0)))
            dy, dx = random.randint(0, 8), random.randint(0, 8)
            img = img[dy : dy + 32, dx : dx + 32]
            if random.random() < 0.5:
                img = img[:, ::-1]
        x = (
            torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div(255)
        )  # ToTensor
        return (x - self.mean) / self.std, int(self.labels[i])  # Normalize


def _timed(step_fn, batches, warmup: int, steps: int, batch_size: int) -> float:
    """images/s over `steps` calls of `step_fn` after `warmup` untimed ones."""
    it = iter(batches)
    for _ in range(warmup):
        step_fn(next(it))
    start = time.perf_counter()
    for _ in range(steps):
        step_fn(next(it))
    return steps * batch_size / (time.perf_counter() - start)


def bench_lab(
    images: torch.Tensor, labels: torch.Tensor, width: int, batch_size: int, warmup: int, steps: int
) -> float:
    cfg = cifar10.TrainConfig(width=width, batch_size=batch_size, lr=0.1, device="cpu")
    torch.manual_seed(0)
    model = cifar10.ResNet(cfg.width).to(memory_format=torch.channels_last)
    optimizer = cifar10.make_optimizer(model, cfg)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    mean, std = data.channel_stats(images)
    rt = cifar10.Runtime(torch.device("cpu"), None, True, mean, std)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    # Exactly as labs/cifar10.py iterates an epoch (its default num_workers=0).
    batches = torch.utils.data.DataLoader(
        data.EpochBatches(images, labels, order, batch_size), batch_size=None, num_workers=0
    )

    def step(batch):
        x_u8, y, index = batch
        gen = torch.Generator().manual_seed(cifar10.batch_seed(0, 0, 0, index))
        x, y = rt.prepare(x_u8, y, gen)  # the lab's step: labs.common.trainer.forward_backward
        loss_fn(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return _timed(step, batches, warmup, steps, batch_size)


def bench_tutorial(
    images: torch.Tensor,
    labels: torch.Tensor,
    width: int,
    batch_size: int,
    num_workers: int,
    augment: bool,
    channels_last: bool,
    warmup: int,
    steps: int,
) -> float:
    torch.manual_seed(0)
    random.seed(0)
    net = cifar10.ResNet(width)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    hwc = images.permute(0, 2, 3, 1).numpy()  # the tutorial's data arrives as HWC uint8 arrays
    dataset = TutorialDataset(hwc, labels.numpy(), augment)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers
    )
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)

    def step(batch):
        inputs, targets = batch
        optimizer.zero_grad()
        loss = criterion(net(inputs), targets)
        loss.backward()
        optimizer.step()

    return _timed(step, loader, warmup, steps, batch_size)


def run(width: int = 16, batch_size: int = 64, warmup: int = 5, steps: int = 40) -> dict:
    """Measure all three loops; returns the numbers (also printed)."""
    (train_x, train_y), _ = data.make_synthetic(n_train=4000, n_test=1, seed=0)
    images = torch.from_numpy(train_x).view(-1, 3, 32, 32)
    labels = torch.from_numpy(train_y)
    lab = bench_lab(images, labels, width, batch_size, warmup, steps)
    tutorial = bench_tutorial(images, labels, width, 4, 2, False, False, warmup, steps)
    loader = bench_tutorial(images, labels, width, batch_size, 0, True, True, warmup, steps)
    result = {
        "device": "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "width": width,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "lab": {"batch_size": batch_size, "images_per_s": round(lab, 1)},
        "tutorial": {"batch_size": 4, "num_workers": 2, "images_per_s": round(tutorial, 1)},
        "tutorial_loader": {
            "batch_size": batch_size,
            "num_workers": 0,
            "images_per_s": round(loader, 1),
        },
        "speedup_vs_tutorial": round(lab / tutorial, 2),
        "speedup_vs_tutorial_loader": round(lab / loader, 2),
        # For `python -m benchmarks` (results.md table).
        "summary": (
            f"lab {lab:.0f} img/s vs tutorial loop {tutorial:.0f} img/s ({lab / tutorial:.1f}x); "
            f"per-sample loader at batch {batch_size}: {loader:.0f} img/s ({lab / loader:.2f}x)"
        ),
        "goal": ">= 2x the tutorial loop's images/s (same model, CPU)",
    }
    print(json.dumps(result, indent=2), flush=True)
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("build/bench/cifar_throughput.json"))
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=40)
    args = p.parse_args(argv)
    result = run(args.width, args.batch_size, args.warmup, args.steps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
