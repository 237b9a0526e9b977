"""labs/common/trainer.py: the training core every lab runs on, driven by a toy task in-process.

The toy (a 2-layer MLP with dropout on seeded random regression batches) is tiny, so every
behaviour of the core is checked in milliseconds: resume equals an uninterrupted run bit for bit
(dropout makes the torch RNG matter), in both checkpoint formats; the non-finite policies; SIGTERM,
max-steps and deadline stops; clipping from the config; early stopping; staged training; the
output contract and provenance in result.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from labs.common import checkpoint as ckpt
from labs.common.config import param, parse_config
from labs.common.distributed import DistInfo
from labs.common.entry import EXIT_OK, EXIT_SIGTERM, StopFlag
from labs.common.faults import EXIT_NONFINITE
from labs.common.metrics import read_metrics
from labs.common.trainer import CoreConfig, Task, Trainer, warmup_cosine

CPU = torch.device("cpu")


@dataclass
class ToyConfig(CoreConfig):
    steps: int = param(12, "optimizer steps of the stage")
    lr: float = param(0.05, "peak learning rate")
    eval_every: int = param(0, "steps between evaluations")
    checkpoint_every: int = param(4, "steps between checkpoints")
    log_every: int = param(2, "steps between log lines")


class ToyTask(Task):
    name = "toy"
    eval_metric, eval_mode = "score", "max"

    def __init__(self, cfg: ToyConfig, fmt: str = "pt", scores: dict[int, float] | None = None):
        torch.manual_seed(cfg.seed)
        self.cfg, self.checkpoint_format, self.scores = cfg, fmt, scores or {}
        self.model = torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1)
        )
        self.net = self.model
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=0.9)
        self.stage_steps, self.warmup_steps = cfg.steps, 2
        self.eval_every = cfg.eval_every

    def micro_batches(self, step):
        out = []
        for m in range(self.cfg.grad_accum_steps):
            g = torch.Generator().manual_seed(1000 * step + m)
            x = torch.randn(8, 4, generator=g)
            out.append((x, x.sum(1, keepdim=True)))
        return out

    def loss(self, batch):
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def evaluate(self, step):
        score = self.scores.get(step, float(step))
        return {"score": score}, f"eval step {step} score {score}"


def run(tmp: Path, *argv: str, fmt: str = "pt", scores=None, stop=None) -> tuple[int, list[str]]:
    cfg = parse_config(ToyConfig, [f"--out-dir={tmp}", *argv])
    lines: list[str] = []
    task = ToyTask(cfg, fmt, scores)
    trainer = Trainer(
        cfg, DistInfo(), stop or StopFlag(), task, CPU, log=lambda m, **_: lines.append(m)
    )
    return trainer.run(), lines


def weights(out: Path, fmt: str = "pt") -> dict[str, torch.Tensor]:
    if fmt == "dcp":
        step, path = ckpt.list_complete(out / "checkpoints")[-1]
        cfg = parse_config(ToyConfig, [f"--out-dir={out}"])
        task = ToyTask(cfg, "dcp")
        from labs.common.checkpoint_io import load_sharded

        load_sharded(task.model, task.optimizer, path, no_dist=True)
        return dict(task.model.state_dict())
    return torch.load(ckpt.list_checkpoints(out / "checkpoints")[-1][1], weights_only=True)["model"]


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def train_records(out: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k != "time_s"}
        for r in read_metrics(out / "metrics.jsonl")
        if r["kind"] == "train"
    ]


@pytest.mark.parametrize(
    "fmt, stops",
    [
        ("pt", ["--max-steps=5"]),
        ("pt", ["--max-steps=3", "--max-steps=9"]),
        ("dcp", ["--max-steps=7"]),
    ],
)
def test_resume_is_bitwise_equal_to_an_uninterrupted_run(tmp_path, fmt, stops):
    assert run(tmp_path / "ref", fmt=fmt)[0] == EXIT_OK
    out = tmp_path / "stopped"
    for flag in stops:
        code, lines = run(out, flag, fmt=fmt)
        assert code == EXIT_OK and any("(max_steps)" in x for x in lines)
        assert not (out / "result.json").exists()  # a capped run is not a result
    code, lines = run(out, fmt=fmt)
    assert code == EXIT_OK and any(x.startswith("resumed from step") for x in lines)
    assert_same(weights(tmp_path / "ref", fmt), weights(out, fmt))
    assert train_records(tmp_path / "ref") == train_records(out)  # logs read alike too


@pytest.mark.parametrize(
    "policy, code, equal",
    [("rollback", EXIT_OK, True), ("skip", EXIT_OK, False), ("fail", EXIT_NONFINITE, None)],
)
def test_nonfinite_policy(tmp_path, policy, code, equal):
    run(tmp_path / "ref")
    out = tmp_path / policy
    rc, lines = run(out, "--inject-nan-at-step=6", f"--on-nonfinite={policy}")
    assert rc == code and f"non-finite loss nan at step 6: {policy}" in lines
    if equal is None:
        return
    same = all(
        torch.equal(a, b)
        for a, b in zip(weights(out).values(), weights(tmp_path / "ref").values(), strict=True)
    )
    assert same == equal
    assert all(torch.isfinite(t).all() for t in weights(out).values())


def test_sigterm_checkpoints_the_step_it_reached_and_exits_143(tmp_path):
    stop = StopFlag()
    stop.requested = True  # as the SIGTERM handler sets it
    code, lines = run(tmp_path, stop=stop)
    assert code == EXIT_SIGTERM
    assert "checkpoint saved step 1 path " in lines[-2] and lines[-2].endswith("(SIGTERM)")
    assert lines[-1] == "stopped by SIGTERM at step 1; rerun to resume"
    assert stop._acknowledged.is_set()


def test_deadline_stops_with_a_checkpoint_and_a_rerun_continues(tmp_path):
    code, lines = run(tmp_path, "--deadline-s=1e-9")
    assert (
        code == EXIT_OK and lines[-1] == "stopped at deadline_s=1e-09; rerun without it to continue"
    )
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "checkpoints")] == [1]
    assert run(tmp_path)[0] == EXIT_OK
    assert json.loads((tmp_path / "result.json").read_text())["resumed_from_step"] == 1


def test_gradient_clipping_follows_the_config(tmp_path):
    """Plain SGD, one step: the update is lr x grad, so its norm is at most lr x grad_clip."""
    cfg = parse_config(ToyConfig, [f"--out-dir={tmp_path}", "--grad-clip=0.01", "--steps=1"])
    task = ToyTask(cfg)
    task.optimizer = torch.optim.SGD(task.model.parameters(), lr=cfg.lr)
    before = [p.detach().clone() for p in task.model.parameters()]
    trainer = Trainer(cfg, DistInfo(), StopFlag(), task, CPU, log=lambda *a, **k: None)
    trainer.run()
    update = torch.cat(
        [(p - b).flatten() for p, b in zip(task.model.parameters(), before, strict=True)]
    )
    lr_used = cfg.lr * warmup_cosine(0, 1, 2)
    assert 0 < update.norm() <= lr_used * 0.01 * 1.0001


def test_early_stopping_on_the_eval_metric(tmp_path):
    scores = {2: 0.5, 4: 0.7, 6: 0.6, 8: 0.65, 10: 0.9}  # no improvement at 6 and 8
    code, lines = run(tmp_path, "--eval-every=2", "--early-stop-patience=2", scores=scores)
    assert code == EXIT_OK and any(
        x.startswith("early stop at step 8: score 0.6500") for x in lines
    )
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["early_stopped_at_step"] == 8 and result["steps"] == 8 and result["completed"]
    assert result["best_eval"] == {"metric": "score", "value": 0.7, "step": 4}
    code, lines = run(tmp_path, "--eval-every=2", "--early-stop-patience=2", scores=scores)
    assert code == EXIT_OK and not any(x.startswith("step ") for x in lines)  # stays stopped


def test_a_new_stage_resumes_the_weights_with_its_own_schedule(tmp_path):
    assert run(tmp_path, "--steps=6")[0] == EXIT_OK
    code, lines = run(tmp_path, "--stage=1", "--steps=4", "--lr=0.01", "--log-every=1")
    assert code == EXIT_OK and "stage 1 starts at step 6: new LR schedule" in lines
    assert next(x for x in lines if x.startswith("step ")).startswith("step 7/10 ")
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["stages"] == [[0, 0], [1, 6]] and result["steps"] == 10
    lrs = [r["lr"] for r in train_records(tmp_path) if r["step"] > 6]
    # The new stage warms up again to ITS peak (0.01), then decays: lr after step 7 = 0.01 x 1.
    assert lrs[0] == pytest.approx(0.01 * warmup_cosine(1, 4, 2)) and max(lrs) <= 0.01


def test_result_json_and_the_result_line_agree_and_carry_provenance(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGE_DIGEST", "sha256:abc")
    monkeypatch.setenv("GIT_SHA", "deadbeef")
    code, lines = run(tmp_path, "--seed=3")
    result = json.loads((tmp_path / "result.json").read_text())
    assert lines[-1] == "result " + json.dumps(result, separators=(",", ":"), sort_keys=True)
    assert lines[-2].startswith("done ")
    prov = result["provenance"]
    assert (
        prov["seed"] == 3 and prov["image_digest"] == "sha256:abc" and prov["git_sha"] == "deadbeef"
    )
    assert prov["packages"]["torch"] == torch.__version__ and prov["device"] == {"type": "cpu"}
    assert lines[0] == "toy: resumed_from=None"
    steps = [x for x in lines if x.startswith("step ")]
    assert steps[0].startswith("step 2/12 loss ") and steps[-1].startswith("step 12/12 ")


def test_metrics_also_go_to_tensorboard_when_it_is_installed(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(tmp_path, "--eval-every=6")
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "eval/score"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6, 8, 10, 12]
