"""The one training core every lab runs on: a lab is config + model + batches + loss + evaluation.

`Trainer` owns everything that is the same in every lab, written once (pytorch/examples'
`Trainer` with `_run_batch` / `_save_snapshot`, torchtitan's one train loop with models plugged
in by spec):

* resume from the newest complete checkpoint: weights, optimizer, LR schedule, EMA, grad scaler,
  the data position (the step: each lab's batches are a pure function of it) and every RNG;
* the step: gradient accumulation with `no_sync` (DDP) / `set_requires_gradient_sync` (FSDP2) on
  all micro-batches but the last, gradient clipping (`--grad-clip`), the optimizer and schedule;
* the non-finite policy (`--on-nonfinite fail|skip|rollback`), the hang watchdog, fault
  injection (`--inject-*`), the Prometheus exporter (METRICS_PORT) and TensorBoard (when the
  `tensorboard` package is installed);
* the log interval, evaluation cadence and early stopping (`--early-stop-patience`), staged
  training (`--stage`: resume into a new stage with its own LR, sequence length or data);
* stop conditions: `--max-steps`, SIGTERM (acknowledged, checkpoint, exit 143), `--deadline-s`;
* checkpoints every `--checkpoint-every` steps, atomic, keep-last-K, as one `.pt` file (rank 0)
  or a sharded DCP folder (every rank): `PtCheckpoints` / `DcpCheckpoints`;
* metrics.jsonl, result.json (with provenance) and the output contract (labs/common/output.py).

A lab subclasses `Task` (its model, optimizer, batches, loss, evaluation and summary) and calls
`Trainer(cfg, dist, stop, task, device).run()`; its config dataclass extends `CoreConfig`, so
every lab has the same core flags.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from labs.common import output
from labs.common.checkpoint_io import DcpCheckpoints, PtCheckpoints
from labs.common.config import check_bounds, config_diff, param
from labs.common.distributed import (
    DistInfo,
    all_gather_object,
    all_reduce,
    barrier,
    cleanup,
    init_distributed,
)
from labs.common.entry import EXIT_OK, EXIT_SIGTERM, StopFlag
from labs.common.faults import EXIT_NONFINITE, Watchdog, nan_hook
from labs.common.metrics import MetricsLog, PrometheusExporter, truncate_metrics, write_json_atomic
from labs.common.provenance import provenance
from labs.common.state import rng_state, set_rng_state


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, floor: float = 0.0) -> float:
    """LR multiplier: linear 0 -> 1 over `warmup_steps`, then cosine 1 -> `floor` at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class CoreConfig:
    """The flags every lab shares (a lab's config dataclass extends this one)."""

    out_dir: str = param("runs/lab", "checkpoints/, metrics.jsonl, result.json; same dir resumes")
    seed: int = param(0, "seeds init, data order and augmentation: same seed, same run")
    grad_accum_steps: int = param(
        1, "micro-batches per optimizer step: a larger effective batch in the same memory"
    )
    grad_clip: float = param(0.0, "max global gradient norm (0 = off): tames loss spikes")
    max_steps: int = param(
        0,
        "stop (with a checkpoint) after this many optimizer steps; 0 = no cap; the schedule "
        "still spans the whole run, so rerunning without it continues exactly",
    )
    deadline_s: float = param(
        0.0,
        "seconds of wall time after which this process checkpoints and exits 0 (0 = none): "
        "end inside a pod's activeDeadlineSeconds or a spot window instead of being killed",
    )
    log_every: int = param(20, "optimizer steps between train records/lines")
    checkpoint_every: int = param(
        200, "optimizer steps between checkpoints (0 = only at the end): lost work on a kill"
    )
    keep_checkpoints: int = param(2, "newest checkpoints kept: one bad file never leaves none")
    early_stop_patience: int = param(
        0, "evaluations without improvement of the eval metric before stopping (0 = off)"
    )
    stage: int = param(
        0,
        "training stage: a rerun with a higher stage keeps weights and optimizer state, then "
        "runs a new LR schedule of this run's length with its lr / sequence length / data",
    )
    on_nonfinite: Literal["fail", "skip", "rollback"] = param(
        "fail",
        "a NaN/inf loss: fail = exit 4 naming the step; skip = drop that update; rollback = "
        "reload the last checkpoint and replay (same result as a run without the fault)",
    )
    watchdog_s: float = param(
        0.0, "seconds without a finished step before the rank exits 3 as hung (0 = off)"
    )
    inject_nan_at_step: int = param(
        0, "fault injection: NaN loss at this optimizer step, once per out_dir (0 = off)"
    )
    inject_hang_at_step: int = param(
        0, "fault injection: rank 0 hangs before this step, once per out_dir (0 = off)"
    )
    inject_slow_checkpoint_s: float = param(
        0.0, "fault injection: seconds to pause halfway through each checkpoint write"
    )
    inject_crash_at_step: int = param(
        0,
        "fault injection: the last rank's process dies by SIGKILL (as from the OOM killer) "
        "before this optimizer step, once per out_dir (0 = off): torchrun restarts the workers",
    )

    def __post_init__(self) -> None:
        check_bounds(
            self,
            positive="grad_accum_steps log_every keep_checkpoints",
            non_negative="max_steps checkpoint_every grad_clip deadline_s early_stop_patience "
            "stage watchdog_s inject_nan_at_step inject_hang_at_step inject_slow_checkpoint_s "
            "inject_crash_at_step",
        )


# Core fields that may change between a run and its resume without changing the result.
CORE_RUNTIME_FIELDS = (
    "out_dir max_steps deadline_s log_every checkpoint_every keep_checkpoints "
    "early_stop_patience stage on_nonfinite watchdog_s inject_nan_at_step inject_hang_at_step "
    "inject_slow_checkpoint_s inject_crash_at_step"
).split()


class Task:
    """What a lab supplies. Set the attributes in `__init__`, override the methods it needs."""

    name = "lab"  # first word of the start line
    model: torch.nn.Module  # the unwrapped model (what checkpoints hold)
    net: torch.nn.Module  # what the forward runs on (DDP/FSDP2-wrapped, or the model)
    optimizer: torch.optim.Optimizer
    ema: Any = None  # .update(model), .state_dict(), .load_state_dict()
    scaler: torch.amp.GradScaler | None = None
    stage_steps: int = 1  # optimizer steps of this stage (the LR schedule's length)
    warmup_steps: int = 0
    lr_floor: float = 0.0  # final LR as a fraction of the peak
    samples_per_step: int = 1  # global samples per optimizer step (throughput)
    eval_every: int = 0  # optimizer steps between evaluations (0 = none during training)
    eval_metric: str | None = None  # the evaluate() key early stopping watches
    eval_mode: Literal["min", "max"] = "min"
    checkpoint_format: Literal["pt", "dcp"] = "pt"
    result_when_capped = False  # write result.json when --max-steps / --deadline-s stops the run
    runtime_fields: Sequence[str] = ()  # lab fields a resume may change without a warning
    stage_start = 0  # first step of the current stage: set by the trainer before training

    def micro_batches(self, step: int) -> Sequence[Any]:
        """The micro-batches of optimizer step `step` (0-based) on this rank: a pure function of
        the step (and the seed), so a resumed run reads exactly what an uninterrupted one did."""
        raise NotImplementedError

    def loss(self, batch: Any) -> torch.Tensor:
        """Mean loss of one micro-batch, computed with `self.net`."""
        raise NotImplementedError

    def autocast(self) -> AbstractContextManager:
        return nullcontext()

    def evaluate(self, step: int) -> tuple[dict[str, Any], str] | None:
        """(metrics record fields, log line) of an evaluation; every rank calls it."""
        return None

    def start_fields(self, resumed_from: int | None) -> dict[str, Any]:
        return {"resumed_from": resumed_from}

    def log_fields(
        self, step: int, loss: float, lr: float, samples_per_s: float, s_per_step: float
    ) -> tuple[list[tuple[str, str]], dict[str, Any]]:
        """(step line fields after `step n/total`, train record fields) for a log step."""
        fields = [("loss", f"{loss:.4f}"), ("lr", f"{lr:.5f}")]
        return fields, {"loss": loss, "lr": lr}

    def begin(self, trainer: Trainer, resumed: bool) -> None:
        """After resume and the start line, before the first step (e.g. an eval of the base)."""

    def on_optimizer_step(self, trainer: Trainer) -> None:
        """Right after optimizer.step(), gradients still present (e.g. measure memory)."""

    def finish(self, trainer: Trainer, completed: bool) -> tuple[dict, list[tuple[str, str]]]:
        """(lab's result fields, `done` line fields); every rank calls it."""
        return {}, [("steps", str(trainer.step))]

    def state_dict(self) -> dict[str, Any]:
        """Lab values a checkpoint must carry (e.g. the eval before training)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def model_state(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def nan_module(self) -> torch.nn.Module:
        """Where --inject-nan-at-step hooks a NaN into the forward (the output head)."""
        return self.model

    def flops_per_sample(self) -> float | None:
        return None

    def checkpoint_meta(self) -> dict[str, Any]:
        """Extra meta of a folder checkpoint; every rank calls it (it may gather)."""
        return {}

    def resumed_note(self, meta: dict[str, Any]) -> str:
        """Extra text after `resumed from step N (path)` (folder checkpoints)."""
        return ""


class Interval:
    """The current log interval: loss summed on the device (no sync per step), steps, time."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset(time.perf_counter())

    def reset(self, now: float, steps: int = 0) -> None:
        self.loss = torch.zeros((), device=self.device)
        self.steps, self.timed, self.t = steps, 0, now


class Trainer:
    """Runs a `Task` from its latest checkpoint to the end (or to a stop); `run()` -> exit code."""

    def __init__(
        self,
        cfg: CoreConfig,
        dist: DistInfo,
        stop: StopFlag,
        task: Task,
        device: torch.device,
        log: Any = print,
    ) -> None:
        self.cfg, self.dist, self.stop, self.task, self.device = cfg, dist, stop, task, device
        self._print = log
        self.out = Path(cfg.out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.io = (DcpCheckpoints if task.checkpoint_format == "dcp" else PtCheckpoints)(self)
        self.step, self.resumed_from, self.saved_step = 0, None, None
        self.stages: list[list[int]] = [[cfg.stage, 0]]
        self.prior_time, self.started = 0.0, time.perf_counter()
        self.step_seconds, self.timed_steps = 0.0, 0
        self.first_loss: float | None = None
        self.last_loss = float("nan")
        self.last_eval: dict | None = None
        self.last_eval_step = -1
        self.best: float | None = None
        self.best_step: int | None = None  # the step of the best eval (the weights worth keeping)
        self.bad_evals, self.early_stopped_at = 0, None
        self.interval = Interval(device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            task.optimizer, lambda s: self.lr_factor(s)
        )
        self.base_lrs = list(self.scheduler.base_lrs)
        self.metrics: MetricsLog | None = None
        self.watchdog = Watchdog(cfg.watchdog_s)
        self.prom = PrometheusExporter.from_env(
            _job_name(self.out), dist.rank, dist.local_rank, device.index
        )

    # -- small helpers -----------------------------------------------------------------------------
    def log(self, message: str) -> None:
        if self.dist.is_main:
            self._print(message, flush=True)

    @property
    def stage_start(self) -> int:
        return self.stages[-1][1]

    @property
    def total_steps(self) -> int:
        return self.stage_start + self.task.stage_steps

    def lr_factor(self, step: int) -> float:
        t = self.task
        return warmup_cosine(step - self.stage_start, t.stage_steps, t.warmup_steps, t.lr_floor)

    def elapsed(self) -> float:
        """Wall time of the whole run (earlier processes included)."""
        return self.prior_time + time.perf_counter() - self.started

    # -- the run -----------------------------------------------------------------------------------
    def run(self) -> int:
        self.resume()
        self.open_outputs()
        self.task.begin(self, self.resumed_from is not None)
        self.watchdog.start()
        self.prom.start(self.total_steps)
        try:
            code = self.loop()
        finally:
            self.watchdog.stop()
            self.prom.close()
            if self.metrics is not None:
                self.metrics.close()
        return code

    def loop(self) -> int:
        if self.early_stopped_at is not None:
            return self.finish(completed=True)
        if self.capped():
            self.log(f"already at max_steps={self.cfg.max_steps}; rerun without it to continue")
            return self.finish(completed=False) if self.task.result_when_capped else EXIT_OK
        while self.step < self.total_steps:
            code = self.one_step()
            if code is not None:
                return code
        if self.saved_step != self.step:
            self.save()
        return self.finish(completed=True)

    def one_step(self) -> int | None:
        """One optimizer step and what follows it; an exit code when the run must end."""
        hook = self.inject_faults()
        t0 = time.perf_counter()
        loss = self.forward_backward(self.task.micro_batches(self.step))
        if hook is not None:
            hook.remove()
        bad, sigterm, late = self.flags(loss)
        if bad:
            action = self.nonfinite(loss)
            if action == "fail":
                return EXIT_NONFINITE
            if action == "rollback":
                self.rollback()
                return None
        else:
            self.optimizer_step()
        self.advance(loss, counted=not bad, seconds=time.perf_counter() - t0)
        return self.after_step(sigterm, late)

    def forward_backward(self, micro: Sequence[Any]) -> torch.Tensor:
        """Gradient accumulation: gradients are reduced across ranks on the last micro-batch only."""
        total = torch.zeros((), device=self.device)
        scaler = self.task.scaler
        for i, batch in enumerate(micro):
            with self.sync(last=i == len(micro) - 1):
                with self.task.autocast():
                    loss = self.task.loss(batch) / len(micro)
                (scaler.scale(loss) if scaler else loss).backward()
            total += loss.detach()
        return total

    def sync(self, last: bool) -> AbstractContextManager:
        net = self.task.net
        if hasattr(net, "set_requires_gradient_sync"):  # FSDP2's no_sync
            net.set_requires_gradient_sync(last)
            return nullcontext()
        if not last and hasattr(net, "no_sync"):  # DDP
            return net.no_sync()
        return nullcontext()

    def flags(self, loss: torch.Tensor) -> tuple[bool, bool, bool]:
        """(non-finite loss on any rank, SIGTERM on any rank, deadline passed on any rank): one
        tiny all-reduce per step, so every rank takes the same branch (a rank that stopped alone
        would leave the others waiting in the next collective forever)."""
        late = (
            bool(self.cfg.deadline_s) and time.perf_counter() - self.started > self.cfg.deadline_s
        )
        flags = torch.stack(
            [
                (~torch.isfinite(loss)).float(),
                torch.tensor(float(self.stop.requested), device=loss.device),
                torch.tensor(float(late), device=loss.device),
            ]
        )
        bad, sigterm, late = (v > 0 for v in all_reduce(flags, self.dist, op="max").tolist())
        return bad, sigterm, late

    def optimizer_step(self) -> None:
        task, scaler = self.task, self.task.scaler
        if self.cfg.grad_clip:
            if scaler:
                scaler.unscale_(task.optimizer)
            params = [p for p in task.net.parameters() if p.requires_grad]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        if scaler:
            scaler.step(task.optimizer)
            scaler.update()
        else:
            task.optimizer.step()
        task.on_optimizer_step(self)
        task.optimizer.zero_grad(set_to_none=True)

    def nonfinite(self, loss: torch.Tensor) -> str:
        """Count and report a NaN/inf loss; the update is dropped. Returns the policy."""
        self.task.optimizer.zero_grad(set_to_none=True)
        self.prom.nonfinite_step()
        policy = self.cfg.on_nonfinite
        self.log(f"non-finite loss {loss.item()} at step {self.step + 1}: {policy}")
        if policy == "fail":
            self.log(f"error: non-finite loss at step {self.step + 1}; exiting")
        return policy

    def advance(self, loss: torch.Tensor, counted: bool, seconds: float) -> None:
        self.scheduler.step()
        if self.task.ema is not None:
            self.task.ema.update(self.task.model)
        self.step += 1
        if counted:  # a skipped update's loss is not averaged
            self.interval.loss += loss
            self.interval.steps += 1
        self.interval.timed += 1
        self.timed_steps += 1
        self.step_seconds += seconds
        if self.first_loss is None:
            self.first_loss = all_reduce(loss.clone(), self.dist).item() / self.dist.world_size
        self.watchdog.beat(self.step)
        self.prom.step_done(self.step, seconds, self.task.samples_per_step)

    def after_step(self, sigterm: bool, late: bool) -> int | None:
        cfg, final = self.cfg, self.step == self.total_steps
        if self.step % cfg.log_every == 0 or final:
            self.log_interval()
        if self.maybe_eval():
            self.save("early stop")
            return self.finish(completed=True)
        if sigterm:
            self.stop.acknowledge()  # the final checkpoint may take a while
            self.save("SIGTERM")
            self.log(output.stopped_line(self.step))
            return EXIT_SIGTERM
        if (self.capped() or late) and not final:
            what = (
                f"max_steps={cfg.max_steps}" if self.capped() else f"deadline_s={cfg.deadline_s:g}"
            )
            self.save("max_steps" if self.capped() else "deadline")
            self.log(f"stopped at {what}; rerun without it to continue")
            return self.finish(completed=False) if self.task.result_when_capped else EXIT_OK
        if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and not final:
            self.save()
        return None

    def capped(self) -> bool:
        cap = self.cfg.max_steps
        return bool(cap) and self.step >= cap and self.step < self.total_steps

    def inject_faults(self) -> Any:
        """--inject-nan/hang/crash-at-step: each fires once per out_dir (a marker file)."""
        last = self.dist.world_size - 1
        if self.fire_once("crash", self.cfg.inject_crash_at_step, rank=last, pid=os.getpid()):
            sys.stdout.flush()  # SIGKILL leaves no chance to flush, as a real OOM kill
            os.kill(os.getpid(), signal.SIGKILL)
        if self.fire_once("hang", self.cfg.inject_hang_at_step):
            while True:  # a stuck collective or file read: only the watchdog ends this
                time.sleep(3600)
        if self.fire_once("nan", self.cfg.inject_nan_at_step):
            return self.task.nan_module().register_forward_hook(nan_hook)
        return None

    def fire_once(self, kind: str, at_step: int, rank: int = 0, **note: Any) -> bool:
        """True once per out_dir, on `rank`, right before optimizer step `at_step`. The marker
        lives on the checkpoint volume, so a restarted worker or a retried pod does not fire
        again. It prints a contract line `fault injection: <kind> at step <N>[ key value]...`."""
        if not (self.dist.rank == rank and at_step and self.step + 1 == at_step):
            return False
        marker = self.out / "injected-faults" / f"{kind}-step-{at_step}"
        if marker.exists():
            return False
        write_json_atomic(marker, {"kind": kind, "step": at_step, "rank": rank, **note})
        self._print(output.fault_line(kind, at_step, rank, note), flush=True)
        return True

    # -- logging and evaluation --------------------------------------------------------------------
    def log_interval(self) -> None:
        iv, world = self.interval, self.dist.world_size
        mean = all_reduce(iv.loss.clone(), self.dist).item() / (max(1, iv.steps) * world)
        now = time.perf_counter()
        seconds = max(now - iv.t, 1e-9)
        samples_per_s = iv.timed * self.task.samples_per_step / seconds
        lr = self.task.optimizer.param_groups[0]["lr"]
        per_step = seconds / max(1, iv.timed)
        fields, record = self.task.log_fields(self.step, mean, lr, samples_per_s, per_step)
        self.log(output.step_line(self.step, self.total_steps, fields))
        self.metrics.write(
            {"kind": "train", "step": self.step, **record, "time_s": round(self.elapsed(), 3)}
        )
        self.last_loss = mean
        if self.prom.enabled:
            self.prom.interval(mean, lr, samples_per_s, self.task.flops_per_sample())
        iv.reset(now)

    def maybe_eval(self) -> bool:
        """Evaluate when due; True when early stopping says the run is over."""
        every = self.task.eval_every
        if not every or (self.step - self.stage_start) % every:
            return False
        t0 = time.perf_counter()
        self.current_eval()
        self.interval.t += time.perf_counter() - t0  # throughput measures training only
        return self.early_stop_check()

    def current_eval(self) -> dict | None:
        """The evaluation of the weights at this step (run now unless it already was)."""
        if self.last_eval_step == self.step:
            return self.last_eval
        done = self.task.evaluate(self.step)
        self.watchdog.beat(self.step)
        if done is None:
            return None
        record, line = done
        self.log(line)
        self.metrics.write({"kind": "eval", "step": self.step, **record})
        self.last_eval, self.last_eval_step = record, self.step
        return record

    def early_stop_check(self) -> bool:
        metric, patience = self.task.eval_metric, self.cfg.early_stop_patience
        if not metric or self.last_eval is None or metric not in self.last_eval:
            return False
        value = self.last_eval[metric]
        better = self.best is None or (
            value < self.best if self.task.eval_mode == "min" else value > self.best
        )
        if better:
            self.best, self.best_step, self.bad_evals = value, self.step, 0
        else:
            self.bad_evals += 1
        if not patience or self.bad_evals < patience or self.step >= self.total_steps:
            return False
        self.early_stopped_at = self.step
        self.log(
            f"early stop at step {self.step}: {metric} {value:.4f} did not improve on "
            f"{self.best:.4f} (step {self.best_step}) for {self.bad_evals} evaluations "
            f"(patience {patience})"
        )
        return True

    def best_eval(self) -> dict[str, Any] | None:
        """What early stopping tracked: the metric, its best value and the step it came from."""
        if self.best is None:
            return None
        return {"metric": self.task.eval_metric, "value": self.best, "step": self.best_step}

    # -- checkpoints -------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything but the weights and optimizer moments (the checkpoint format adds those)."""
        interval_loss = all_reduce(self.interval.loss.clone(), self.dist).item()
        rngs = all_gather_object(rng_state(), self.dist)
        return {
            "scheduler": self.scheduler.state_dict(),
            "ema": self.task.ema.state_dict() if self.task.ema is not None else None,
            "scaler": self.task.scaler.state_dict() if self.task.scaler is not None else None,
            "rng": rngs[0],
            "rng_per_rank": rngs,
            "step": self.step,
            "stages": self.stages,
            "train_time_s": self.elapsed(),
            "last_eval": self.last_eval,
            "last_eval_step": self.last_eval_step,
            "interval_loss": interval_loss,
            "interval_steps": self.interval.steps,
            "first_loss": self.first_loss,
            "last_loss": self.last_loss,
            "early_stop": [self.best, self.bad_evals, self.early_stopped_at, self.best_step],
            "config": asdict(self.cfg),
            "world_size": self.dist.world_size,
            "lab": self.task.state_dict(),
        }

    def save(self, reason: str = "") -> None:
        t0 = time.perf_counter()
        path = self.io.save(self.state(), self.step)
        self.log(output.checkpoint_line(self.step, path, reason))
        self.saved_step = self.step
        self.prom.checkpoint_saved(time.perf_counter() - t0)
        self.watchdog.beat(self.step)

    def resume(self) -> None:
        state, path = self.io.load()
        if state is None:
            return
        new_stage = state["stages"][-1][0] < self.cfg.stage
        self.restore(state, new_stage)
        self.resumed_from = self.saved_step = self.step
        ignore = [*CORE_RUNTIME_FIELDS, *self.task.runtime_fields]
        for field, (old, new) in config_diff(state["config"], asdict(self.cfg), ignore).items():
            if not new_stage:
                self.log(f"warning: resuming with {field}={new!r} (checkpoint has {old!r})")
        if state["world_size"] != self.dist.world_size and self.task.checkpoint_format == "pt":
            self.log(
                f"warning: checkpoint was written with world_size={state['world_size']}; data "
                "order and schedule length change"
            )
        self.log(output.resumed_line(self.step, path, self.io.note))
        if new_stage:
            self.log(f"stage {self.cfg.stage} starts at step {self.step}: new LR schedule")

    def restore(self, state: dict[str, Any], new_stage: bool = False) -> None:
        """Set the trainer (and the task's EMA, scaler, RNGs) to a loaded checkpoint."""
        self.step = state["step"]
        self.stages = [list(s) for s in state["stages"]]
        if new_stage:
            self.stages.append([self.cfg.stage, self.step])
            self.restart_schedule()
        else:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.task.ema is not None and state.get("ema") is not None:
            self.task.ema.load_state_dict(state["ema"])
        if self.task.scaler is not None and state.get("scaler") is not None:
            self.task.scaler.load_state_dict(state["scaler"])
        rngs = state.get("rng_per_rank") or [state["rng"]]
        set_rng_state(rngs[self.dist.rank] if len(rngs) == self.dist.world_size else rngs[0])
        self.prior_time, self.last_eval = state["train_time_s"], state["last_eval"]
        self.last_eval_step = state.get("last_eval_step", -1)
        self.first_loss, self.last_loss = state["first_loss"], state["last_loss"]
        self.best, self.bad_evals, self.early_stopped_at, self.best_step = state["early_stop"]
        self.interval.reset(time.perf_counter(), steps=state["interval_steps"])
        if self.dist.is_main:  # the saved loss is the sum over ranks: rank 0 carries it
            self.interval.loss += state["interval_loss"]
        self.task.stage_start = self.stage_start
        self.task.load_state_dict(state["lab"])

    def restart_schedule(self) -> None:
        """A new stage: this run's peak LR and a fresh warmup + cosine from the current step."""
        self.scheduler.base_lrs = list(self.base_lrs)
        self.scheduler.last_epoch = self.step
        for group, base in zip(self.task.optimizer.param_groups, self.base_lrs, strict=True):
            group["initial_lr"] = base
            group["lr"] = base * self.lr_factor(self.step)

    def rollback(self) -> None:
        """Back to the newest complete checkpoint, as if the process had been restarted."""
        state, path = self.io.load()
        if state is None:
            raise RuntimeError("on_nonfinite=rollback, but there is no checkpoint to go back to")
        self.restore(state)
        self.saved_step = self.step
        if self.dist.is_main:
            truncate_metrics(self.out / "metrics.jsonl", self.step)
        self.log(f"rolled back to step {self.step} ({path})")

    # -- outputs -----------------------------------------------------------------------------------
    def open_outputs(self) -> None:
        self.task.stage_start = self.stage_start
        if self.dist.is_main:
            truncate_metrics(self.out / "metrics.jsonl", self.step)  # steps about to be replayed
            (self.out / "result.json").unlink(missing_ok=True)
        self.metrics = MetricsLog(
            self.out / "metrics.jsonl", enabled=self.dist.is_main, tensorboard_from=self.step
        )
        fields = self.task.start_fields(self.resumed_from)
        self.log(output.start_line(self.task.name, fields))

    def finish(self, completed: bool) -> int:
        """result.json (rank 0), the `done` line and the `result` line."""
        lab, done = self.task.finish(self, completed)
        result = {
            **lab,
            "steps": self.step,
            "resumed_from_step": self.resumed_from,
            "train_time_s": round(self.elapsed(), 3),
            "device": self.device.type,
            "world_size": self.dist.world_size,
            "completed": completed,
            "early_stopped_at_step": self.early_stopped_at,
            "best_eval": self.best_eval(),
            "stages": self.stages,
            "provenance": provenance(self.device, self.cfg.seed) if self.dist.is_main else None,
        }
        if self.dist.is_main:
            write_json_atomic(self.out / "result.json", result)
            self.log(output.done_line(done))
            self.log(output.result_line(result))
        barrier(self.dist)
        return EXIT_OK


def train_task(
    cfg: CoreConfig, dist: DistInfo, stop: StopFlag, device: torch.device, make_task: Any
) -> int:
    """What every lab's `train()` ends with: join the process group, build the lab's task
    (`make_task()`), run the trainer, and always leave the group; returns the exit code."""
    init_distributed(dist, device)
    try:
        return Trainer(cfg, dist, stop, make_task(), device).run()
    finally:
        cleanup(dist)


def _job_name(out: Path) -> str:
    return os.environ.get("JOB_NAME") or out.name
