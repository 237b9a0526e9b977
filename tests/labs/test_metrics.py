"""labs/common/metrics.py: metrics.jsonl, result.json and the FLOP count behind MFU.

The Prometheus exporter is exercised over HTTP in tests/helpers/test_monitoring.py and the
TensorBoard copy in tests/labs/test_trainer.py; both are left there.
"""

from __future__ import annotations

import json

import pytest
import torch

from labs.common import metrics

RECORDS = [
    {"kind": "train", "step": 1, "loss": 2.5},
    {"kind": "train", "step": 2, "loss": 2.0},
    {"kind": "eval", "step": 2, "acc": 0.4},
    {"kind": "train", "step": 3, "loss": 1.5},
]


def write_lines(path, records, tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_each_record_is_readable_as_soon_as_it_is_written(tmp_path):
    path = tmp_path / "out" / "metrics.jsonl"  # the folder is made on demand
    log = metrics.MetricsLog(path)
    for i, record in enumerate(RECORDS, 1):
        log.write(record)
        assert metrics.read_metrics(path) == RECORDS[:i]  # flushed, not buffered until close
    log.close()
    log.close()  # closing twice is harmless


def test_a_resumed_log_appends_to_the_existing_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    for part in (RECORDS[:2], RECORDS[2:]):
        log = metrics.MetricsLog(path)
        for record in part:
            log.write(record)
        log.close()
    assert metrics.read_metrics(path) == RECORDS


def test_a_disabled_log_writes_nothing(tmp_path):
    """Every rank but 0 holds a disabled log."""
    log = metrics.MetricsLog(tmp_path / "sub" / "metrics.jsonl", enabled=False)
    log.write(RECORDS[0])
    log.close()
    assert not list(tmp_path.iterdir())


def test_no_tensorboard_folder_unless_asked(tmp_path):
    log = metrics.MetricsLog(tmp_path / "metrics.jsonl", tensorboard_from=None)
    log.write(RECORDS[0])
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        ("", RECORDS),
        ('{"kind": "train", "st', RECORDS),  # the line being written when the process died
        ("\n\n", RECORDS),  # blank lines
    ],
    ids=["whole", "torn-last-line", "blank-lines"],
)
def test_read_metrics_skips_what_is_not_a_whole_record(tmp_path, tail, expected):
    path = tmp_path / "metrics.jsonl"
    write_lines(path, RECORDS, tail)
    assert metrics.read_metrics(path) == expected


def test_read_metrics_of_a_missing_file_is_empty(tmp_path):
    assert metrics.read_metrics(tmp_path / "none.jsonl") == []


@pytest.mark.parametrize(
    ("step", "kept"),
    [(3, RECORDS), (2, RECORDS[:3]), (1, RECORDS[:1]), (0, [])],
)
def test_truncate_drops_the_records_a_resume_will_replay(tmp_path, step, kept):
    path = tmp_path / "metrics.jsonl"
    write_lines(path, RECORDS, '{"torn')
    metrics.truncate_metrics(path, step)
    assert metrics.read_metrics(path) == kept
    assert path.read_text().endswith("\n") or not kept  # the torn line is gone too
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temp file left


def test_truncate_keeps_records_without_a_step_and_creates_no_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    metrics.truncate_metrics(path, 5)
    assert not path.exists()
    write_lines(path, [{"kind": "meta"}, *RECORDS])
    metrics.truncate_metrics(path, 0)
    assert metrics.read_metrics(path) == [{"kind": "meta"}]


def test_write_json_atomic_replaces_the_whole_file(tmp_path):
    path = tmp_path / "nested" / "result.json"
    metrics.write_json_atomic(path, {"accuracy": 0.5, "long": "x" * 1000})
    metrics.write_json_atomic(path, {"accuracy": 0.9})
    assert json.loads(path.read_text()) == {"accuracy": 0.9}
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]


@pytest.mark.parametrize(
    ("env", "expected"), [({"PEAK_TFLOPS": "312"}, 312e12), ({}, None)], ids=["env", "cpu"]
)
def test_peak_flops_from_the_environment_or_none_without_a_gpu(monkeypatch, env, expected):
    monkeypatch.delenv(metrics.PEAK_TFLOPS_ENV, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert metrics.peak_flops(None) == expected


# forward MACs: Linear = out elements x in_features; Conv2d = out elements x (in/groups) x k x k
FLOP_CASES = [
    (lambda: torch.nn.Linear(4, 3), (4,), 3 * 4),
    (lambda: torch.nn.Conv2d(2, 4, 3, padding=1), (2, 5, 5), 4 * 5 * 5 * 2 * 3 * 3),
    (lambda: torch.nn.Conv2d(2, 4, 3, padding=1, groups=2), (2, 5, 5), 4 * 5 * 5 * 1 * 3 * 3),
    (
        lambda: torch.nn.Sequential(
            torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8, 5)
        ),
        (1, 4, 4),
        2 * 2 * 2 * 9 + 5 * 8,
    ),
]


@pytest.mark.parametrize(
    ("make", "shape", "macs"), FLOP_CASES, ids=["linear", "conv", "grouped-conv", "sequential"]
)
def test_training_flops_are_six_per_multiply_accumulate(make, shape, macs):
    assert metrics.training_flops_per_sample(make(), shape) == 6 * macs


def test_counting_flops_leaves_the_model_and_the_rng_untouched():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Dropout(0.5)
    ).train()
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    metrics.training_flops_per_sample(model, (1, 5, 5))
    assert model.training  # still in train mode: the count ran on an eval-mode copy
    assert all(torch.equal(v, stats[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
