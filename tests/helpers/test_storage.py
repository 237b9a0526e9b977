"""Lesson 09's storage helpers: verified, idempotent checkpoint backups; restart time by hit rate."""

from __future__ import annotations

import pytest

from kubecourse.storage import TIERS, backup_checkpoint, restart_seconds


def test_backup_is_content_addressed_verified_and_idempotent(tmp_path):
    checkpoint = tmp_path / "ckpt-step-00000010.pt"
    checkpoint.write_bytes(b"weights" * 1000)
    first = backup_checkpoint(checkpoint, tmp_path / "store")
    assert first.read_bytes() == checkpoint.read_bytes() and first.name.startswith("ckpt-step-")
    assert backup_checkpoint(checkpoint, tmp_path / "store") == first
    checkpoint.write_bytes(b"newer weights")
    second = backup_checkpoint(checkpoint, tmp_path / "store")
    assert second != first and not list((tmp_path / "store").glob("*.tmp"))


def test_restart_seconds_and_tiers():
    assert restart_seconds(hit_rate=1.0, hit_s=60, miss_s=600) == 60
    assert restart_seconds(hit_rate=0.5, hit_s=60, miss_s=600) == 330
    with pytest.raises(ValueError):
        restart_seconds(hit_rate=1.5, hit_s=1, miss_s=2)
    assert TIERS["local NVMe"].write_gb_s > TIERS["object store"].write_gb_s
    assert not TIERS["local NVMe"].survives_node and TIERS["object store"].survives_node
