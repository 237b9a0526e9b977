"""labs/common/checkpoint.py: the atomic publish of folder checkpoints, retention of both kinds and
the fallback past damaged .pt files (a kill mid-write is exercised end to end in test_recovery.py)."""

from __future__ import annotations

import pytest
import torch

from labs.common import checkpoint as ckpt


def folder_save(root, step: int) -> None:
    staged = ckpt.staging_dir(root, step)
    staged.mkdir(parents=True)
    (staged / "shard.bin").write_bytes(b"x" * step)
    ckpt.publish_dir(staged, ckpt.checkpoint_dir(root, step))


def test_a_published_folder_is_complete_and_its_staging_folder_is_gone(tmp_path):
    folder_save(tmp_path, 4)
    assert ckpt.list_complete(tmp_path) == [(4, tmp_path / "step-00000004")]
    assert (tmp_path / "step-00000004" / ckpt.COMPLETE_MARKER).is_file()
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.mark.parametrize(
    "make, listed",
    [
        (lambda p: (p / "step-00000009").mkdir(), []),  # no marker: a save that never finished
        (lambda p: ckpt.staging_dir(p, 9).mkdir(), []),  # still staging
        (lambda p: (p / "step-x").mkdir(), []),  # not a checkpoint name
    ],
    ids=["no-marker", "staging", "bad-name"],
)
def test_only_marked_folders_count(tmp_path, make, listed):
    make(tmp_path)
    assert ckpt.list_complete(tmp_path) == listed


def test_leftover_staging_folders_are_removed_with_a_warning(tmp_path):
    ckpt.staging_dir(tmp_path, 3).mkdir()
    messages: list[str] = []
    ckpt.remove_staging(tmp_path, log=messages.append)
    assert not list(tmp_path.iterdir()) and "interrupted" in messages[0]


def test_retention_keeps_the_newest_k_of_files_and_folders(tmp_path):
    for step in (1, 2, 3):
        ckpt.save_checkpoint({"step": step, "w": torch.ones(2)}, tmp_path, step, keep=10)
        folder_save(tmp_path, step)
    ckpt.prune(tmp_path, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 3]
    assert [s for s, _ in ckpt.list_complete(tmp_path)] == [2, 3]


def test_save_dir_atomic_replaces_an_older_folder_whole(tmp_path):
    final = tmp_path / "adapter"
    ckpt.save_dir_atomic(final, lambda d: (d / "a.txt").write_text("old"))
    ckpt.save_dir_atomic(final, lambda d: (d / "b.txt").write_text("new"))
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


@pytest.mark.parametrize(
    "damage",
    [lambda p: p.write_bytes(p.read_bytes()[:-50]), lambda p: p.write_bytes(b"\0" * 64)],
    ids=["truncated", "garbage"],
)
def test_load_latest_falls_back_to_older(tmp_path, damage):
    for step in (1, 2, 3):
        ckpt.save_checkpoint({"step": step, "w": torch.ones(1000) * step}, tmp_path, step, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 3]  # keep-last-K
    damage(ckpt.checkpoint_path(tmp_path, 3))
    messages: list[str] = []
    state, path = ckpt.load_latest(tmp_path, log=messages.append)
    assert state["step"] == 2 and path == ckpt.checkpoint_path(tmp_path, 2)
    assert any("skipping unreadable" in m for m in messages)
