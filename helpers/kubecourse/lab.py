"""Run a lab program directly (no job, no pod) and watch it: live log, live loss/accuracy plot.

Lesson 01 trains before Kubernetes enters the picture; this is the thin runner it uses. The lab
writes metrics.jsonl (one JSON object per line) and result.json into its --out-dir; this module
tails the first for the live plot and reads the second for the asserts.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import contract
from .backends.local import runtime
from .manifests import repo_root


@dataclass
class LabRun:
    """What a finished lab run left behind."""

    returncode: int
    out_dir: Path
    log: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.out_dir)

    @property
    def result(self) -> dict[str, Any]:
        """result.json, or the log's `result` line when the file is gone; {} if neither."""
        return contract.read_result(self.out_dir) or contract.last_result(self.log) or {}

    @property
    def records(self) -> list[contract.Record]:
        """The log's contract records (kubecourse.contract): start, steps, checkpoints, done..."""
        return contract.parse_log(self.log)


def read_metrics(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every complete record of out_dir/metrics.jsonl (a line being written is skipped)."""
    return contract.read_metrics(out_dir)


def read_tensorboard(out_dir: str | Path) -> list[dict[str, Any]] | None:
    """The scalars the trainer wrote to out_dir/tensorboard/, as metrics records
    ({"kind", "step", field: value}, the shape of read_metrics), or None where the optional
    `tensorboard` package is not installed. Tags are `<kind>/<field>` (labs/common/metrics.py)."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return None
    log_dir = Path(out_dir) / "tensorboard"
    if not log_dir.is_dir():
        return []
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    by_step: dict[tuple[str, int], dict[str, Any]] = {}
    for tag in events.Tags()["scalars"]:
        kind, _, name = tag.partition("/")
        for event in events.Scalars(tag):
            record = by_step.setdefault((kind, event.step), {"kind": kind, "step": event.step})
            record[name] = event.value
    return sorted(by_step.values(), key=lambda r: (r["step"], r["kind"]))


def plot_metrics(records: list[dict[str, Any]], title: str = "training", ax=None):
    """Loss per step, plus test accuracy (twin axis) or eval loss per evaluation. Returns the figure."""
    if ax is None:
        from .figures import Figure  # not pyplot: shown only where it is displayed, as a PNG

        fig = Figure(figsize=(7, 3.2))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ax.clear()
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    ax.plot(
        [r["step"] for r in train], [r["loss"] for r in train], color="tab:blue", label="train loss"
    )
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color="tab:blue")
    ax.set_title(title)
    accuracy = [r for r in evals if "test_acc" in r]
    eval_loss = [r for r in evals if "eval_loss" in r]
    if eval_loss:  # language-model labs evaluate a loss: same axis as the training loss
        ax.plot(
            [r["step"] for r in eval_loss],
            [r["eval_loss"] for r in eval_loss],
            "o-",
            color="tab:orange",
            label="eval loss",
        )
        ax.legend(loc="upper right")
    if accuracy:
        acc_ax = ax.twinx() if not hasattr(ax, "_acc_ax") else ax._acc_ax
        ax._acc_ax = acc_ax
        acc_ax.clear()  # clear() also moves the twin's ticks and label back to the left
        acc_ax.yaxis.tick_right()
        acc_ax.yaxis.set_label_position("right")
        acc_ax.plot(
            [r["step"] for r in accuracy],
            [r["test_acc"] for r in accuracy],
            "o-",
            color="tab:orange",
            label="test acc",
        )
        acc_ax.set_ylabel("test accuracy", color="tab:orange")
        acc_ax.set_ylim(0, 1)
    fig.tight_layout()
    return fig


def run_lab(
    module: str,
    args: list[str],
    out_dir: str | Path,
    *,
    live_plot: bool = True,
    timeout_s: float = 900,
    echo_every: int = 1,
    plot_every_s: float = 2.0,
) -> LabRun:
    """Run `python -m <module> <args> --out-dir <out_dir>` in the repo; stream its log; plot live.

    The process is killed (whole group) after timeout_s. Returns a LabRun; check .returncode.
    """
    out_dir = Path(out_dir)
    argv = [sys.executable, "-m", module, *args, f"--out-dir={out_dir}"]
    print("$ python", " ".join(argv[1:]))
    handle = figure = None
    if live_plot:
        try:
            from IPython.display import display

            from .figures import Figure, FigureImage

            figure = Figure(figsize=(7, 3.2))
            plot_metrics([], title=f"{module} (starting)", ax=figure.add_subplot())
            handle = display(FigureImage(figure), display_id=True)  # a PNG whatever the backend
        except ImportError:
            handle = None
    start = time.monotonic()
    last_plot = 0.0
    log: list[str] = []
    process = subprocess.Popen(
        argv,
        cwd=repo_root(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        for number, line in enumerate(process.stdout):
            log.append(line.rstrip("\n"))
            is_step = isinstance(contract.parse_line(line), contract.StepLine)
            if echo_every and (number % echo_every == 0 or not is_step):
                print(line, end="")
            if time.monotonic() - start > timeout_s:
                raise subprocess.TimeoutExpired(argv, timeout_s)
            if handle is not None and time.monotonic() - last_plot > plot_every_s:
                plot_metrics(read_metrics(out_dir), title=f"{module} (live)", ax=figure.axes[0])
                handle.update(FigureImage(figure))
                last_plot = time.monotonic()
        returncode = process.wait(timeout=max(1.0, timeout_s - (time.monotonic() - start)))
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        runtime.kill_tree(process.pid)  # torchrun's ranks too: each is in a session of its own
        process.wait()
        raise
    if handle is not None:
        plot_metrics(read_metrics(out_dir), title=module, ax=figure.axes[0])
        handle.update(FigureImage(figure))
    return LabRun(returncode, out_dir, log, time.monotonic() - start)
