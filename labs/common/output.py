"""The lab output contract: every line a lab prints that something else reads.

The course helpers (`kubecourse.contract`) parse these lines from a pod's log or a local
process's stdout, so their shape is fixed here, once, for every lab (rank 0 prints them):

    <lab>: key=value ... resumed_from=<N|None> ...        when training starts
    resumed from step <N> (<path>)[ <extra>]
    step <n>/<total>[ <key> <value>]...                   e.g. `loss 0.8 lr 0.01 img/s 850`
    checkpoint saved step <N> path <path>[ (<reason>)]
    stopped by SIGTERM at step <N>; rerun to resume
    fault injection: <kind> at step <N> rank <r>[ <key> <value>]...   printed by rank <r>
    done <key> <value> ...                                human summary
    result <compact JSON of result.json>                  the last line

The metrics file (`metrics.jsonl`: one object per line with "kind" and "step") is written by
`labs.common.metrics.MetricsLog`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any


def start_line(lab: str, fields: Mapping[str, Any]) -> str:
    return f"{lab}: " + " ".join(f"{k}={v}" for k, v in fields.items())


def resumed_line(step: int, path: Any, extra: str = "") -> str:
    return f"resumed from step {step} ({path})" + (f" {extra}" if extra else "")


def step_line(step: int, total: int, fields: Iterable[tuple[str, str]]) -> str:
    return " ".join([f"step {step}/{total}", *(f"{k} {v}" for k, v in fields)])


def checkpoint_line(step: int, path: Any, reason: str = "") -> str:
    return f"checkpoint saved step {step} path {path}" + (f" ({reason})" if reason else "")


def stopped_line(step: int) -> str:
    return f"stopped by SIGTERM at step {step}; rerun to resume"


def fault_line(kind: str, step: int, rank: int, note: Mapping[str, Any]) -> str:
    extra = "".join(f" {key} {value}" for key, value in note.items())
    return f"fault injection: {kind} at step {step} rank {rank}{extra}"


def done_line(fields: Iterable[tuple[str, str]]) -> str:
    return " ".join(["done", *(f"{k} {v}" for k, v in fields)])


def result_line(result: Mapping[str, Any]) -> str:
    """`result {...}`: exactly what result.json holds, on one line, keys sorted."""
    return "result " + json.dumps(result, separators=(",", ":"), sort_keys=True)
