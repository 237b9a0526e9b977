"""labs/common/output.py: the contract lines every lab prints, byte for byte (table-driven)."""

from __future__ import annotations

import json

import pytest

from labs.common import output

CASES = [
    (
        output.start_line("cifar10", {"device": "cpu", "world_size": 1, "resumed_from": None}),
        "cifar10: device=cpu world_size=1 resumed_from=None",
    ),
    (
        output.resumed_line(7, "/o/ckpt-step-00000007.pt"),
        "resumed from step 7 (/o/ckpt-step-00000007.pt)",
    ),
    (
        output.resumed_line(20, "/o/step-20", "weights ab saved ab"),
        "resumed from step 20 (/o/step-20) weights ab saved ab",
    ),
    (
        output.step_line(5, 93, [("epoch", "0.16"), ("loss", "2.3000"), ("img/s", "850")]),
        "step 5/93 epoch 0.16 loss 2.3000 img/s 850",
    ),
    (output.checkpoint_line(50, "/o/c.pt"), "checkpoint saved step 50 path /o/c.pt"),
    (
        output.checkpoint_line(51, "/o/c.pt", "SIGTERM"),
        "checkpoint saved step 51 path /o/c.pt (SIGTERM)",
    ),
    (output.stopped_line(51), "stopped by SIGTERM at step 51; rerun to resume"),
    (output.done_line([("test_acc", "0.7000"), ("steps", "93")]), "done test_acc 0.7000 steps 93"),
    (output.result_line({"b": [1, 2], "a": None, "c": 0.5}), 'result {"a":null,"b":[1,2],"c":0.5}'),
]


@pytest.mark.parametrize("line, expected", CASES, ids=[c[1].split()[0] for c in CASES])
def test_each_line_has_its_contract_shape(line, expected):
    assert line == expected


def test_the_result_line_round_trips_to_the_same_object():
    result = {"steps": 3, "provenance": {"seed": 0}, "test_acc": 0.25}
    assert json.loads(output.result_line(result).removeprefix("result ")) == result
