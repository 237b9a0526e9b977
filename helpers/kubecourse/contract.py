"""The lab output contract: the lines a lab prints and the metrics file it writes, and one parser.

Every consumer of lab output (the local backend's progress bar, preemption, diagnose, lab.run_lab,
client.result/metrics, the notebooks) reads it through this module, so a format changes in one
place. The labs print it (rank 0 only; labs never import helpers, so a contract test runs real
smoke runs of each lab and parses them here):

    <lab>: key=value ... resumed_from=<N|None> ...       StartLine  (training starts)
    resumed from step <N> (<path>)[ <key> <value>]...     Resumed
    step <n>/<total> loss <float>[ <key> <value>]...      StepLine   (e.g. `lr 0.01 img/s 850`)
    checkpoint saved step <N> path <path>[ (<reason>)]    Checkpoint
    stopped by SIGTERM at step <N>; rerun to resume       Stopped
    fault injection: <kind> at step <N> rank <r>[ ...]    FaultInjected (printed by rank r)
    done <key> <value> ...                                Done       (human summary)
    result <compact JSON of result.json>                  Result     (the final line)

    <out>/metrics.jsonl: one JSON object per line, each with "kind" ("train", "eval", ...) and
    "step" (int); a torn last line (the process was killed mid-write) is skipped.

A line may carry torchrun's `[rank0]:` prefix (`torchrun --tee`/`--log-line-prefix-template`); it
is stripped before matching.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_RANK_PREFIX = re.compile(r"^\[(?:rank|default)\d+\]:\s?")
_START = re.compile(r"^(?P<lab>[a-z][a-z0-9_]*): (?P<rest>(?:\S+=\S*)(?: \S+=\S*)*)$")
_RESUMED = re.compile(
    r"^resumed from step (?P<step>\d+) \((?P<path>[^)]*)\)(?P<rest>(?: \S+ \S+)*)$"
)
_STEP = re.compile(r"^step (?P<step>\d+)/(?P<total>\d+)(?P<rest>(?: \S+ \S+)*)$")
_CHECKPOINT = re.compile(
    r"^checkpoint saved step (?P<step>\d+) path (?P<path>\S+)(?: \((?P<reason>[^)]*)\))?$"
)
_STOPPED = re.compile(r"^stopped by SIGTERM at step (?P<step>\d+); rerun to resume$")
_FAULT = re.compile(
    r"^fault injection: (?P<kind>[a-z_]+) at step (?P<step>\d+) rank (?P<rank>\d+)"
    r"(?P<rest>(?: \S+ \S+)*)$"
)
_DONE = re.compile(r"^done (?P<rest>.+)$")
_RESULT = re.compile(r"^result (?P<json>\{.*\})$")


@dataclass(frozen=True)
class StartLine:
    """`cifar10: device=cpu world_size=1 resumed_from=None ...`: one line when training starts."""

    lab: str
    fields: dict[str, str]

    @property
    def resumed_from(self) -> int | None:
        """The step this run resumed from; None for a fresh start."""
        value = self.fields.get("resumed_from", "None")
        return None if value == "None" else int(value)


@dataclass(frozen=True)
class Resumed:
    """`resumed from step N (path)`: the checkpoint a run continued from."""

    step: int
    path: str
    values: dict[str, str] = field(default_factory=dict)  # lm_pretrain: weights/saved digests


@dataclass(frozen=True)
class StepLine:
    """`step n/total loss x [key value]...`: one training log interval."""

    step: int
    total: int
    loss: float
    values: dict[str, str] = field(default_factory=dict)  # lr, img/s, tokens/s, epoch, ...

    def value(self, key: str) -> float:
        return float(self.values[key])


@dataclass(frozen=True)
class Checkpoint:
    """`checkpoint saved step N path P [(reason)]`: a complete snapshot on disk."""

    step: int
    path: str
    reason: str | None = None  # e.g. "SIGTERM" for the final checkpoint of a stopped pod


@dataclass(frozen=True)
class Stopped:
    """`stopped by SIGTERM at step N; rerun to resume`: a graceful stop (exit 143)."""

    step: int


@dataclass(frozen=True)
class FaultInjected:
    """`fault injection: crash at step 25 rank 3 pid 4242`: a lab's `--inject-*` fault fired."""

    kind: str  # "nan", "hang", "crash"
    step: int  # the optimizer step it fired before
    rank: int  # the rank that printed it (the one that crashed, hung or got the NaN)
    values: dict[str, str] = field(default_factory=dict)  # e.g. pid


@dataclass(frozen=True)
class Done:
    """`done key value ...`: the human summary (`a -> b` pairs keep the final value)."""

    text: str

    @property
    def fields(self) -> dict[str, str]:
        tokens, out, i = self.text.split(), {}, 0
        while i + 1 < len(tokens):
            key, value, i = tokens[i], tokens[i + 1], i + 2
            while i + 1 < len(tokens) and tokens[i] == "->":
                value, i = tokens[i + 1], i + 2
            out[key] = value
        return out


@dataclass(frozen=True)
class Result:
    """`result {...}`: exactly what the lab wrote to result.json."""

    data: dict[str, Any]


Record = StartLine | Resumed | StepLine | Checkpoint | Stopped | FaultInjected | Done | Result


def _pairs(text: str) -> dict[str, str]:
    tokens = text.split()
    return dict(zip(tokens[::2], tokens[1::2], strict=False))


def parse_line(text: str) -> Record | None:
    """The contract record a log line carries, or None for any other line (warnings, notes...)."""
    text = _RANK_PREFIX.sub("", text.rstrip("\r\n"))
    if match := _STEP.match(text):
        values = _pairs(match.group("rest"))
        if "loss" not in values:
            return None
        loss = values.pop("loss")
        try:
            return StepLine(
                int(match.group("step")), int(match.group("total")), float(loss), values
            )
        except ValueError:
            return None
    if match := _RESULT.match(text):
        try:
            data = json.loads(match.group("json"))
        except json.JSONDecodeError:
            return None
        return Result(data) if isinstance(data, dict) else None
    if match := _CHECKPOINT.match(text):
        return Checkpoint(int(match.group("step")), match.group("path"), match.group("reason"))
    if match := _RESUMED.match(text):
        return Resumed(int(match.group("step")), match.group("path"), _pairs(match.group("rest")))
    if match := _STOPPED.match(text):
        return Stopped(int(match.group("step")))
    if match := _FAULT.match(text):
        values = _pairs(match.group("rest"))
        return FaultInjected(
            match.group("kind"), int(match.group("step")), int(match.group("rank")), values
        )
    if match := _DONE.match(text):
        return Done(match.group("rest"))
    if (match := _START.match(text)) and "resumed_from=" in text:
        fields = dict(part.split("=", 1) for part in match.group("rest").split())
        return StartLine(match.group("lab"), fields)
    return None


def parse_log(lines: Iterable[str]) -> list[Record]:
    """Every contract record of a log, in order (other lines are skipped)."""
    return [r for r in (parse_line(line) for line in lines) if r is not None]


def records(lines: Iterable[str], kind: type) -> list:
    """The records of one kind, e.g. `records(texts, StepLine)`."""
    return [r for r in parse_log(lines) if isinstance(r, kind)]


def last_result(lines: Iterable[str]) -> dict[str, Any] | None:
    """The result JSON of the last `result` line, None if the lab never finished."""
    found = records(lines, Result)
    return found[-1].data if found else None


def progress(lines: Iterable[str]) -> tuple[int, int] | None:
    """(step, total) of the last step line, None before the first."""
    steps = records(lines, StepLine)
    return (steps[-1].step, steps[-1].total) if steps else None


def format_result(result: dict[str, Any]) -> str:
    """The `result` line for a result dict, byte for byte what the labs print."""
    return "result " + json.dumps(result, separators=(",", ":"), sort_keys=True)


# --- metrics.jsonl ------------------------------------------------------------------------------

METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"


def parse_metrics(text: str) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl text; a torn or foreign line is skipped."""
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line being written when the process was killed
        if isinstance(record, dict) and "kind" in record and isinstance(record.get("step"), int):
            out.append(record)
    return out


def read_metrics(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every complete record of out_dir/metrics.jsonl ([] when it does not exist)."""
    path = Path(out_dir) / METRICS_FILE
    return parse_metrics(path.read_text(encoding="utf-8")) if path.exists() else []


def read_result(out_dir: str | Path) -> dict[str, Any] | None:
    """out_dir/result.json, None when the lab has not finished."""
    path = Path(out_dir) / RESULT_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


__all__ = [
    "Checkpoint",
    "Done",
    "Record",
    "Result",
    "Resumed",
    "StartLine",
    "StepLine",
    "Stopped",
    "format_result",
    "last_result",
    "parse_line",
    "parse_log",
    "parse_metrics",
    "progress",
    "read_metrics",
    "read_result",
    "records",
]
