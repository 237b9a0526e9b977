"""kubecourse.lab.read_tensorboard: the trainer's TensorBoard events read back as metrics records."""

from __future__ import annotations

import importlib.util

import pytest

from kubecourse.lab import read_tensorboard

needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None,
    reason="the optional tensorboard package is not installed (pip install -e '.[tensorboard]')",
)


@needs_tensorboard
def test_events_come_back_as_records_of_the_metrics_shape(tmp_path):
    from torch.utils.tensorboard import SummaryWriter  # what labs/common/metrics.py writes with

    writer = SummaryWriter(str(tmp_path / "tensorboard"))
    for step, loss in [(1, 2.5), (2, 1.75), (3, 1.25)]:
        writer.add_scalar("train/loss", loss, step)
        writer.add_scalar("train/lr", 0.1 * step, step)
    writer.add_scalar("eval/test_acc", 0.5, 3)
    writer.close()

    records = read_tensorboard(tmp_path)

    train = [r for r in records if r["kind"] == "train"]
    assert [(r["step"], r["loss"]) for r in train] == [(1, 2.5), (2, 1.75), (3, 1.25)]
    assert [round(r["lr"], 6) for r in train] == [0.1, 0.2, 0.3]
    assert [r for r in records if r["kind"] == "eval"] == [
        {"kind": "eval", "step": 3, "test_acc": 0.5}
    ]


@needs_tensorboard
def test_a_run_without_events_has_no_records(tmp_path):
    assert read_tensorboard(tmp_path) == []
