"""labs/common/data.py: the CIFAR-format files on disk, atomic writes, and batches from memory."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labs.common import data


def quiet(_message: str) -> None:
    pass


# ------------------------------------------------------------------------------------------------
# Atomic writes: a reader sees the old file or the new one, never half of one.


class Interrupted(BaseException):
    """Stands for a kill (KeyboardInterrupt, SystemExit) in the middle of a write."""


def fails_halfway(error: BaseException):
    def write(f):
        f.write(b"half of the new")
        raise error

    return write


@pytest.mark.parametrize(
    "error", [OSError("disk full"), Interrupted()], ids=["exception", "base-exception"]
)
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, error):
    path = tmp_path / "result.json"
    path.write_bytes(b"old")
    with pytest.raises(type(error)):
        data.write_atomic(path, fails_halfway(error))
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


@pytest.mark.parametrize("existing", [None, b"an older, longer content"], ids=["new", "replace"])
def test_write_bytes_atomic_writes_exactly_the_bytes_readable_by_others(tmp_path, existing):
    path = tmp_path / "batch"
    if existing is not None:
        path.write_bytes(existing)
    data.write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o777 == 0o644  # pods running as another user read it
    assert [p.name for p in tmp_path.iterdir()] == ["batch"]


# ------------------------------------------------------------------------------------------------
# The CIFAR python-format layout.


def test_synthetic_layout_and_determinism(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        data.prepare_synthetic(tmp_path / name, n_train=50, n_test=20, seed=seed, log=lambda m: m)
    folder = data.batches_dir(tmp_path / "a", "synthetic")
    expected = {*data.TRAIN_FILES, data.TEST_FILE, data.META_FILE}
    assert {p.name for p in folder.iterdir()} == expected
    assert data.is_complete(tmp_path / "a", "synthetic")
    with open(folder / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (10, 3072)
    assert len(batch[b"labels"]) == 10
    assert data.label_names(tmp_path / "a", "synthetic")[0] == "synthetic-0"

    def content(name: str) -> bytes:
        d = data.batches_dir(tmp_path / name, "synthetic")
        return b"".join((d / f).read_bytes() for f in sorted(expected))

    assert content("a") == content("b"), "same seed must give identical files"
    assert content("a") != content("c"), "another seed must give other data"


def test_prepare_synthetic_is_a_noop_once_complete_and_leaves_no_staging_folder(tmp_path):
    logged: list[str] = []
    data.prepare_synthetic(tmp_path, n_train=20, n_test=10, log=logged.append)
    marker = data.dataset_root(tmp_path, "synthetic") / data.COMPLETE_MARKER
    before = marker.stat().st_mtime_ns
    data.prepare_synthetic(tmp_path, n_train=20, n_test=10, log=logged.append)
    assert logged[-1] == "data ready" and marker.stat().st_mtime_ns == before
    root = data.dataset_root(tmp_path, "synthetic")
    assert sorted(p.name for p in root.iterdir()) == [data.COMPLETE_MARKER, data.BATCHES_DIRNAME]


def test_written_batches_load_back_in_order(tmp_path):
    """write_batches -> load_split is the identity: 5 train files concatenated in order, the test
    file alone, labels aligned with their images, names from batches.meta."""
    rng = np.random.default_rng(0)
    train = (rng.integers(0, 256, (12, 3072), dtype=np.uint8), np.arange(12) % 10)
    test = (rng.integers(0, 256, (4, 3072), dtype=np.uint8), np.array([3, 1, 4, 1]))
    names = [f"class-{i}" for i in range(10)]
    data.write_batches(data.batches_dir(tmp_path, "mine"), train, test, names)
    for split, (x, y) in ((True, train), (False, test)):
        images, labels = data.load_split(tmp_path, "mine", train=split)
        assert images.dtype == torch.uint8 and images.shape == (len(x), 3, 32, 32)
        assert torch.equal(images.reshape(len(x), -1), torch.from_numpy(x))
        assert labels.dtype == torch.int64 and labels.tolist() == y.tolist()
    assert data.label_names(tmp_path, "mine") == names


def test_installing_replaces_a_partial_folder_and_marks_the_dataset_complete(tmp_path):
    partial = data.batches_dir(tmp_path, "cifar10")
    partial.mkdir(parents=True)
    (partial / "data_batch_1").write_bytes(b"torn")  # an interrupted run, never marked
    assert not data.is_complete(tmp_path, "cifar10")
    staged = data.dataset_root(tmp_path, "cifar10") / ".staging"
    staged.mkdir()
    (staged / data.TEST_FILE).write_bytes(b"whole")
    final = data.install_batches_dir(staged, tmp_path, "cifar10")
    assert final == partial and [p.name for p in final.iterdir()] == [data.TEST_FILE]
    assert data.is_complete(tmp_path, "cifar10") and not staged.exists()


def test_synthetic_test_split_does_not_depend_on_the_train_size():
    (train_a, test_a), (train_b, test_b) = (data.make_synthetic(n, 16, seed=2) for n in (8, 40))
    assert train_a[0].shape == (8, 3072) and train_b[0].shape == (40, 3072)
    assert np.array_equal(test_a[0], test_b[0]) and np.array_equal(test_a[1], test_b[1])
    assert set(np.unique(train_b[1])) <= set(range(data.NUM_CLASSES))


# ------------------------------------------------------------------------------------------------
# Normalisation and augmentation.


@pytest.mark.parametrize("chunk", [3, 5000], ids=["chunked", "one-chunk"])
def test_channel_stats_are_the_population_mean_and_std_per_channel(chunk):
    images = torch.randint(
        0, 256, (10, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    mean, std = data.channel_stats(images, chunk=chunk)
    x = images.double().permute(1, 0, 2, 3).reshape(3, -1)
    assert torch.allclose(mean.double(), x.mean(1), atol=1e-4)
    assert torch.allclose(std.double(), x.std(1, unbiased=False), atol=1e-4)
    normed = data.normalize(images, mean, std).permute(1, 0, 2, 3).reshape(3, -1)
    assert torch.allclose(normed.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(normed.std(1, unbiased=False), torch.ones(3), atol=1e-4)


def test_a_constant_channel_does_not_divide_by_zero():
    images = torch.full((2, 3, 4, 4), 7, dtype=torch.uint8)
    mean, std = data.channel_stats(images)
    assert mean.tolist() == [7.0, 7.0, 7.0] and (std > 0).all()
    assert torch.isfinite(data.normalize(images, mean, std)).all()


def test_flip_crop_keeps_shape_and_content():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    out = data.flip_crop(x, torch.Generator().manual_seed(0), pad=0)
    for i in range(2):  # with no padding the crop is the identity, only flips remain
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(2))
    padded = data.flip_crop(x, torch.Generator().manual_seed(0), pad=4)
    assert padded.shape == x.shape
    again = data.flip_crop(x, torch.Generator().manual_seed(0), pad=4)
    assert torch.equal(padded, again), "same generator seed, same augmentation"


def test_flip_crop_output_is_a_window_of_the_padded_image():
    pad, x = 2, torch.arange(4 * 3 * 6 * 6, dtype=torch.float32).view(4, 3, 6, 6) + 1
    out = data.flip_crop(x, torch.Generator().manual_seed(1), pad=pad)
    for img, src in zip(out, x, strict=True):
        windows = [
            F.pad(flipped, (pad,) * 4)[:, dy : dy + 6, dx : dx + 6]
            for flipped in (src, src.flip(2))
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
        ]
        assert any(torch.equal(img, w) for w in windows)


# ------------------------------------------------------------------------------------------------
# Batches of one epoch.


def test_epoch_batches_resume_position():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 32, 32)
    labels = torch.arange(10)
    order = torch.tensor([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    full = [b[1].tolist() for b in data.EpochBatches(images, labels, order, batch_size=3)]
    assert full == [[9, 8, 7], [6, 5, 4], [3, 2, 1]]  # partial last batch dropped
    resumed = data.EpochBatches(images, labels, order, batch_size=3, start=1, stop=2)
    assert [(b[1].tolist(), b[2]) for b in resumed] == [([6, 5, 4], 1)]


@pytest.mark.parametrize(
    ("start", "stop", "batch_indices"),
    [
        (0, None, [0, 1, 2]),
        (0, 99, [0, 1, 2]),  # a stop past the end is the end
        (2, None, [2]),
        (3, None, []),  # resumed exactly at the end of the epoch
        (5, 2, []),  # start after stop: nothing, never a negative length
    ],
)
def test_epoch_batches_length_and_items_follow_start_and_stop(start, stop, batch_indices):
    images, labels = torch.zeros(10, 3, 32, 32, dtype=torch.uint8), torch.arange(10)
    batches = data.EpochBatches(images, labels, torch.arange(10), 3, start=start, stop=stop)
    assert len(batches) == len(batch_indices)
    assert [j for _, _, j in batches] == batch_indices
    with pytest.raises(IndexError):
        batches[len(batches)]
