"""kubecourse.contract: each line format -> its record, and the lines that must not match.
(The labs' real output is parsed in tests/labs/test_output_contract.py.)"""

from __future__ import annotations

import math

import pytest

from kubecourse import contract
from kubecourse.contract import (
    Checkpoint,
    Done,
    FaultInjected,
    Result,
    Resumed,
    StartLine,
    StepLine,
    Stopped,
)

LINES = [
    (
        "cifar10: device=cpu world_size=2 resumed_from=None train=640 steps=20",
        StartLine(
            "cifar10",
            {
                "device": "cpu",
                "world_size": "2",
                "resumed_from": "None",
                "train": "640",
                "steps": "20",
            },
        ),
    ),
    (
        "lm_pretrain: strategy=fsdp resumed_from=40 threads=1",
        StartLine("lm_pretrain", {"strategy": "fsdp", "resumed_from": "40", "threads": "1"}),
    ),
    ("resumed from step 7 (/ckpt/step-7)", Resumed(7, "/ckpt/step-7")),
    (
        "resumed from step 4 (/c/step-4) weights ab12 saved ab12",
        Resumed(4, "/c/step-4", {"weights": "ab12", "saved": "ab12"}),
    ),
    ("step 3/10 loss 2.3000", StepLine(3, 10, 2.3)),
    (
        "step 20/40 epoch 1.00 loss 1.2 lr 0.0100 img/s 850",
        StepLine(20, 40, 1.2, {"epoch": "1.00", "lr": "0.0100", "img/s": "850"}),
    ),
    ("[rank0]:step 5/9 loss 0.5 tokens/s 10", StepLine(5, 9, 0.5, {"tokens/s": "10"})),
    ("checkpoint saved step 8 path /out/ckpt-8.pt", Checkpoint(8, "/out/ckpt-8.pt", None)),
    ("checkpoint saved step 9 path /out/c9 (SIGTERM)", Checkpoint(9, "/out/c9", "SIGTERM")),
    ("stopped by SIGTERM at step 9; rerun to resume", Stopped(9)),
    ("done steps 10 loss 1.2", Done("steps 10 loss 1.2")),
    (
        "[rank3]:fault injection: crash at step 25 rank 3 pid 4242",
        FaultInjected("crash", 25, 3, {"pid": "4242"}),
    ),
    ("fault injection: nan at step 5 rank 0", FaultInjected("nan", 5, 0)),
    ('result {"a":1,"b":[1,2]}', Result({"a": 1, "b": [1, 2]})),
    # Lines that look close but are not contract lines.
    ("stopped at max_steps=5; rerun without it to continue", None),
    ("eval before: loss 2.3 perplexity 10.0", None),
    ("step 3/10 epoch 0.5", None),  # no loss
    ("precision: bf16 skipped: it needs a CUDA GPU", None),
    ("warning: resuming with lr=0.1 (checkpoint has 0.2)", None),
    ("result not json", None),
    ("fault injection: crash at step 25", None),  # no rank
    ("result [1, 2]", None),
    ("note: data ready in /data", None),
    ("", None),
]


@pytest.mark.parametrize(("line", "expected"), LINES)
def test_parse_line(line, expected):
    assert contract.parse_line(line) == expected


@pytest.mark.parametrize(
    ("fields", "resumed_from"),
    [({"resumed_from": "None"}, None), ({"resumed_from": "0"}, 0), ({"resumed_from": "12"}, 12)],
)
def test_start_line_resumed_from(fields, resumed_from):
    assert StartLine("lab", fields).resumed_from == resumed_from


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("steps 10 loss 1.2", {"steps": "10", "loss": "1.2"}),
        (
            "eval_loss 2.3 -> 1.9 perplexity 10.0 -> 6.7 steps 6",
            {"eval_loss": "1.9", "perplexity": "6.7", "steps": "6"},
        ),
    ],
)
def test_done_fields(text, fields):
    assert Done(text).fields == fields


def test_non_finite_loss_is_a_step_line():
    record = contract.parse_line("step 4/10 loss nan lr 0.1")
    assert isinstance(record, StepLine) and math.isnan(record.loss)


@pytest.mark.parametrize(
    ("lines", "result", "progress"),
    [
        ([], None, None),
        (["step 1/4 loss 2.0", "step 2/4 loss 1.0"], None, (2, 4)),
        (["step 4/4 loss 1.0", 'result {"steps":4}'], {"steps": 4}, (4, 4)),
        (['result {"steps":2}', "step 1/4 loss 2.0", 'result {"steps":4}'], {"steps": 4}, (1, 4)),
    ],
)
def test_last_result_and_progress(lines, result, progress):
    assert contract.last_result(lines) == result
    assert contract.progress(lines) == progress


@pytest.mark.parametrize(
    ("result", "line"),
    [
        ({"b": 1.5, "a": "x"}, 'result {"a":"x","b":1.5}'),
        ({"nested": {"z": None, "y": [1, 2]}}, 'result {"nested":{"y":[1,2],"z":null}}'),
    ],
)
def test_format_result_round_trips(result, line):
    assert contract.format_result(result) == line
    assert contract.parse_line(line) == Result(result)


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ('{"kind": "train", "step": 1, "loss": 2.0}\n{"kind": "eval", "step": 1}\n', [1, 1]),
        ('{"kind": "train", "step": 1}\n{"kind": "tra', [1]),  # torn last line
        ('{"step": 1}\n{"kind": "train", "step": "2"}\n[1]\n', []),  # no kind, str step, a list
        ("", []),
    ],
)
def test_parse_metrics(text, steps):
    assert [r["step"] for r in contract.parse_metrics(text)] == steps


def test_read_files(tmp_path):
    assert contract.read_metrics(tmp_path) == [] and contract.read_result(tmp_path) is None
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 3}\n')
    (tmp_path / "result.json").write_text('{"steps": 3}')
    assert contract.read_metrics(tmp_path) == [{"kind": "train", "step": 3}]
    assert contract.read_result(tmp_path) == {"steps": 3}
