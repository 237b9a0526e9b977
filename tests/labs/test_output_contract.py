"""The lab output contract on real output: each lab's smoke run, parsed by kubecourse.contract.

A lab prints the lines and writes the files every consumer (backends, preemption, diagnose, the
notebooks, client.result/metrics) reads through `kubecourse.contract`; if a lab's printing drifts,
this fails. Each lab runs in-process at a tiny size (about 20 s for the file on 2 cores): first a
run whose stop flag is already set (SIGTERM after the first step: a final checkpoint and the
`stopped` line), then a rerun in the same out_dir that resumes and finishes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kubecourse import contract
from kubecourse.contract import Checkpoint, Done, Result, Resumed, StartLine, StepLine, Stopped
from labs import cifar10, finetune, lm_pretrain
from labs.common.config import parse_config
from labs.common.distributed import DistInfo
from labs.common.entry import StopFlag

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".course" / "models"


def _stopped_flag() -> StopFlag:
    flag = StopFlag()
    flag.requested = True  # as if SIGTERM arrived during the first step
    return flag


def _cifar(data_dir: Path, out: Path) -> list[str]:
    return [
        f"--data-dir={data_dir}",
        "--dataset=synthetic",
        "--prepare",
        f"--out-dir={out}",
        "--smoke",
        "--train-subset=256",
        "--test-subset=64",
        "--epochs=1",
        "--batch-size=32",
        "--log-every=2",
        "--checkpoint-every=4",
    ]


def _lm(out: Path) -> list[str]:
    return ["--smoke", "--num-threads=1", "--steps=8", "--log-every=2", "--checkpoint-every=4",
            f"--out-dir={out}"]  # fmt: skip


def _finetune(out: Path) -> list[str]:
    return [
        f"--model-cache={CACHE}",
        "--train-examples=32",
        "--eval-examples=8",
        "--steps=6",
        "--batch-size=8",
        "--grad-accum-steps=1",
        "--samples=0",
        "--log-every=2",
        "--checkpoint-every=3",
        "--num-threads=1",
        "--no-save-merged",
        f"--out-dir={out}",
    ]


LABS = {
    # lab: (module, config type, presets, argv builder, start-line name)
    "cifar10": (cifar10, cifar10.TrainConfig, {"smoke": cifar10.SMOKE}, "cifar10"),
    "lm_pretrain": (lm_pretrain, lm_pretrain.LMConfig, {"smoke": lm_pretrain.SMOKE}, "lm_pretrain"),
    "finetune": (finetune, finetune.FinetuneConfig, {"smoke": finetune.SMOKE}, "finetune"),
}


@pytest.fixture(autouse=True)
def offline_and_threads(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _argv(lab: str, tmp_path: Path, out: Path) -> list[str]:
    if lab == "cifar10":
        return _cifar(tmp_path / "data", out)
    return _lm(out) if lab == "lm_pretrain" else _finetune(out)


def _run(lab: str, argv: list[str], stop: StopFlag, capsys) -> tuple[int, list[str]]:
    module, config_type, presets, _ = LABS[lab]
    cfg = parse_config(config_type, argv, presets=presets)
    rc = module.train(cfg, DistInfo(), stop)
    return rc, capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("lab", sorted(LABS))
def test_lab_output_follows_the_contract(lab, tmp_path, capsys):
    out = tmp_path / "out"
    argv = _argv(lab, tmp_path, out)
    start_name = LABS[lab][3]

    rc, first = _run(lab, argv, _stopped_flag(), capsys)
    assert rc == 143, first
    records = contract.parse_log(first)
    starts = [r for r in records if isinstance(r, StartLine)]
    assert [(s.lab, s.resumed_from) for s in starts] == [(start_name, None)]
    stopped = [r for r in records if isinstance(r, Stopped)]
    assert len(stopped) == 1 and stopped[0].step >= 1
    saved = [r for r in records if isinstance(r, Checkpoint)]
    assert saved[-1].step == stopped[0].step and saved[-1].reason == "SIGTERM"
    assert contract.last_result(first) is None  # a stopped run prints no result
    assert contract.read_result(out) is None

    rc, second = _run(lab, argv, StopFlag(), capsys)
    assert rc == 0, second
    records = contract.parse_log(second)
    kinds = [type(r) for r in records]
    for kind in (StartLine, Resumed, StepLine, Checkpoint, Done, Result):
        assert kind in kinds, (kind.__name__, second)
    start = next(r for r in records if isinstance(r, StartLine))
    resumed = next(r for r in records if isinstance(r, Resumed))
    assert start.resumed_from == resumed.step == stopped[0].step
    steps = [r for r in records if isinstance(r, StepLine)]
    assert all(s.step > resumed.step and s.total == steps[-1].total for s in steps)
    assert steps == sorted(steps, key=lambda s: s.step) and all(s.loss > 0 for s in steps)
    assert contract.progress(second) == (steps[-1].step, steps[-1].total)
    # The result line is the last line, byte for byte the contract's format of result.json.
    assert isinstance(records[-1], Result)
    on_disk = json.loads((out / "result.json").read_text())
    assert records[-1].data == on_disk == contract.read_result(out)
    assert second[-1] == contract.format_result(on_disk)
    done = next(r for r in records if isinstance(r, Done))
    assert done.fields["steps"] == str(steps[-1].step) == str(steps[-1].total)
    metrics = contract.read_metrics(out)
    train = [m for m in metrics if m["kind"] == "train"]
    assert train and [m["step"] for m in train] == sorted(m["step"] for m in train)
    assert {m["step"] for m in train} >= {s.step for s in steps}
