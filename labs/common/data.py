"""CIFAR-format data on disk, and fast batches from one in-memory uint8 tensor.

On disk every dataset uses the official CIFAR-10 "python version" layout, so one loader reads
the real data and the synthetic stand-in alike:

    DATA_DIR/<dataset>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    DATA_DIR/<dataset>/.complete        written last, atomically: "this dataset is whole"

Each batch file is a pickle of {b"data": uint8 [N, 3072] (row-major, channel-major CHW),
b"labels": list[int], ...}; `batches.meta` holds b"label_names".

In memory a split is ONE uint8 tensor [N, 3, 32, 32] (50 000 CIFAR images are 150 MB). A training
batch is `images[indices]`: one gather, converted to float once per batch. There is no per-sample
`Dataset.__getitem__`, PIL image or collate in the hot path; that is where a tutorial-style loader
spends most of its CPU time (benchmarks/bench_cifar_throughput.py measures the difference).
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F

BATCHES_DIRNAME = "cifar-10-batches-py"  # the folder name inside the official tarball
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
COMPLETE_MARKER = ".complete"
IMAGE_SHAPE = (3, 32, 32)
NUM_CLASSES = 10


def dataset_root(data_dir: str | os.PathLike, dataset: str) -> Path:
    """`DATA_DIR/<dataset>`: the folder that holds the batches folder and the `.complete` marker."""
    return Path(data_dir) / dataset


def batches_dir(data_dir: str | os.PathLike, dataset: str) -> Path:
    """`DATA_DIR/<dataset>/cifar-10-batches-py`."""
    return dataset_root(data_dir, dataset) / BATCHES_DIRNAME


def is_complete(data_dir: str | os.PathLike, dataset: str) -> bool:
    """True when the dataset was written completely (its marker exists)."""
    return (dataset_root(data_dir, dataset) / COMPLETE_MARKER).is_file()


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside `path` durable (the directory entry itself is data too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: str | os.PathLike, write: Callable[[BinaryIO], None], suffix: str = ".tmp"
) -> None:
    """Write a file so readers see the old file or the new one, never half of one: `write(f)`
    into a temp file in the same folder, flush + fsync, `os.replace`, fsync the folder. Used for
    data batches, metrics and checkpoints alike (a pod can be killed in the middle of any)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; other users (pods) may need to read it
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """`write_atomic` for bytes already in memory."""
    write_atomic(path, lambda f: f.write(data))


def mark_complete(data_dir: str | os.PathLike, dataset: str) -> None:
    """Write the `.complete` marker: the last step of every preparation."""
    write_bytes_atomic(dataset_root(data_dir, dataset) / COMPLETE_MARKER, b"ok\n")


def install_batches_dir(staged: Path, data_dir: str | os.PathLike, dataset: str) -> Path:
    """Move a fully written batches folder into place (replacing a partial one), then mark the
    dataset complete. `staged` must be on the same filesystem (a sibling temp folder)."""
    final = batches_dir(data_dir, dataset)
    if final.exists():
        shutil.rmtree(final)  # left by an interrupted run; the marker was never written
    os.replace(staged, final)
    fsync_dir(final.parent)
    mark_complete(data_dir, dataset)
    return final


def write_batches(
    dest: Path,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    label_names: list[str],
) -> None:
    """Write CIFAR-10 python-format pickles: train split over 5 `data_batch_*` files + `test_batch`.

    `train`/`test` are (uint8 [N, 3072], int labels [N])."""
    dest.mkdir(parents=True, exist_ok=True)
    chunks = np.array_split(np.arange(len(train[0])), len(TRAIN_FILES))
    files = [(name, idx, train) for name, idx in zip(TRAIN_FILES, chunks, strict=True)]
    files.append((TEST_FILE, np.arange(len(test[0])), test))
    for name, idx, (x, y) in files:
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in y[idx]],
            b"data": np.ascontiguousarray(x[idx], dtype=np.uint8),
            b"filenames": [f"{name}_{i:05d}.png".encode() for i in idx],
        }
        with open(dest / name, "wb") as f:
            pickle.dump(batch, f, protocol=4)
    meta = {
        b"num_cases_per_batch": len(chunks[0]),
        b"label_names": [n.encode() for n in label_names],
        b"num_vis": int(np.prod(IMAGE_SHAPE)),
    }
    with open(dest / META_FILE, "wb") as f:
        pickle.dump(meta, f, protocol=4)


# ----------------------------------------------------------------------------------------------
# Synthetic CIFAR: same files, learnable structure, no download.


def _smooth_fields(n: int, gen: torch.Generator, grid: int = 4) -> torch.Tensor:
    """n random, spatially smooth colour images [n, 3, 32, 32] with about unit spread:
    a coarse `grid` x `grid` random image upsampled bicubically."""
    coarse = torch.randn(n, 3, grid, grid, generator=gen)
    return F.interpolate(coarse, size=IMAGE_SHAPE[1:], mode="bicubic", align_corners=False)


def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int) -> torch.Tensor:
    """Translate every image by its own random (dy, dx) in [-max_shift, max_shift] (wrapping)."""
    n, _, h, w = x.shape
    dy, dx = torch.randint(-max_shift, max_shift + 1, (2, n), generator=gen)
    rows = (torch.arange(h) - dy[:, None]) % h  # [n, h]
    cols = (torch.arange(w) - dx[:, None]) % w  # [n, w]
    return x[
        torch.arange(n)[:, None, None, None],
        torch.arange(3)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def make_synthetic(
    n_train: int, n_test: int, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Deterministic CIFAR-shaped data with class structure a small convnet can learn.

    Each class has a smooth random colour template. An image is
    `a * template[label] + distractor + noise`, shifted by up to 4 pixels, where `a` varies per
    image and the distractor is another smooth random image (same statistics as a template). Low
    `a` images are genuinely ambiguous, so accuracy climbs quickly but does not reach 100%.
    Train and test use separate generators: changing `n_train` leaves the test split unchanged.
    """
    templates = _smooth_fields(NUM_CLASSES, torch.Generator().manual_seed(seed * 3 + 0))

    def split(n: int, gen: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
        strength = torch.empty(n, 1, 1, 1).uniform_(0.4, 1.0, generator=gen)
        x = strength * templates[labels] + 0.7 * _smooth_fields(n, gen)
        x = x + 0.3 * torch.randn(x.shape, generator=gen)
        x = _shift(x, gen, max_shift=4)
        pixels = (128 + 45 * x).round().clamp(0, 255).to(torch.uint8)
        return pixels.reshape(n, -1).numpy(), labels.numpy()

    train = split(n_train, torch.Generator().manual_seed(seed * 3 + 1))
    test = split(n_test, torch.Generator().manual_seed(seed * 3 + 2))
    return train, test


def prepare_synthetic(
    data_dir: str | os.PathLike,
    n_train: int = 5000,
    n_test: int = 1000,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> Path:
    """Write the synthetic dataset to `DATA_DIR/synthetic/` unless it is already complete."""
    if is_complete(data_dir, "synthetic"):
        log("data ready")
        return batches_dir(data_dir, "synthetic")
    root = dataset_root(data_dir, "synthetic")
    root.mkdir(parents=True, exist_ok=True)
    train, test = make_synthetic(n_train, n_test, seed)
    staged = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    staged.chmod(0o755)  # mkdtemp makes 0700; pods running as another user must read it
    try:
        write_batches(staged, train, test, [f"synthetic-{c}" for c in range(NUM_CLASSES)])
        final = install_batches_dir(staged, data_dir, "synthetic")
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    log(f"wrote synthetic data train={n_train} test={n_test} seed={seed} to {final}")
    return final


# ----------------------------------------------------------------------------------------------
# Loading and batching.


def load_split(
    data_dir: str | os.PathLike, dataset: str, train: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """One split as (uint8 images [N, 3, 32, 32], int64 labels [N]), read once into memory."""
    folder = batches_dir(data_dir, dataset)
    xs, ys = [], []
    for name in TRAIN_FILES if train else (TEST_FILE,):
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8))
        ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    images = torch.from_numpy(np.concatenate(xs)).reshape(-1, *IMAGE_SHAPE)
    return images, torch.from_numpy(np.concatenate(ys))


def label_names(data_dir: str | os.PathLike, dataset: str) -> list[str]:
    """Class names from `batches.meta`."""
    with open(batches_dir(data_dir, dataset) / META_FILE, "rb") as f:
        meta = pickle.load(f, encoding="bytes")
    return [n.decode() for n in meta[b"label_names"]]


def channel_stats(images: torch.Tensor, chunk: int = 5000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images, in pixel units (0..255), as float32 [3].

    Computed from the training split instead of hard-coding the CIFAR-10 numbers, so the synthetic
    data is normalised correctly too (for CIFAR-10 this reproduces the well-known
    mean ~ (125.3, 123.0, 113.9), std ~ (63.0, 62.1, 66.7))."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.float64)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(1e-6).sqrt()
    return mean.float(), std.float()


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float32, zero mean and unit std per channel (mean/std in 0..255)."""
    scale = (1.0 / std).view(1, -1, 1, 1)
    return (images.float() - mean.view(1, -1, 1, 1)) * scale


def flip_crop(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """The standard CIFAR augmentation, on a whole batch at once: random horizontal flip and a
    random 32x32 crop of the image zero-padded by `pad` pixels (zero = the mean colour after
    normalisation). The random draws come from `gen` on the CPU, so they are the same whatever
    the device, and a resumed run replays them exactly."""
    n, c, h, w = x.shape
    flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=gen).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (pad, pad, pad, pad))
    # Two gathers (rows, then columns) instead of a Python loop over images.
    rows = (dy[:, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    x = padded.gather(2, rows.expand(n, c, h, w + 2 * pad))
    cols = (dx[:, None] + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    return x.gather(3, cols.expand(n, c, h, w))


class EpochBatches(torch.utils.data.Dataset):
    """The micro-batches of one epoch as a map-style dataset of whole batches.

    Item `i` is (uint8 images [B, 3, 32, 32], labels [B], batch_index) gathered from the
    in-memory tensors with this rank's shuffled `indices`; `start` skips the batches a resumed
    run has already trained on, `stop` ends the epoch early (whole optimizer steps only).
    Wrapped in `DataLoader(batch_size=None, num_workers=k)` the
    gather can run in background workers, but there is still no per-sample code."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: torch.Tensor,
        batch_size: int,
        start: int = 0,
        stop: int | None = None,
    ) -> None:
        self.images, self.labels, self.indices = images, labels, indices
        self.batch_size = batch_size
        full = len(indices) // batch_size  # the last partial batch is dropped: fixed shapes
        self.start, self.stop = start, full if stop is None else min(stop, full)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        if not 0 <= i < len(self):
            raise IndexError(i)  # also ends plain `for b in batches` iteration
        j = self.start + i
        idx = self.indices[j * self.batch_size : (j + 1) * self.batch_size]
        return self.images[idx], self.labels[idx], j
