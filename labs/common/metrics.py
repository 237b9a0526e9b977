"""Metrics a notebook can read while the job runs.

`metrics.jsonl` gets one JSON object per line, appended and flushed immediately, so a notebook can
tail it for a live plot; every record has a `kind` ("train", "eval") and the optimizer `step`.
`result.json` is written once at the end, atomically. Only rank 0 writes either.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from labs.common.data import write_bytes_atomic


class MetricsLog:
    """Append-only JSON-lines writer; disabled (a no-op) on every rank but 0."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._file = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl ([] when it does not exist); a torn last line is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the line being written when the process was killed
    return records


def truncate_metrics(path: str | os.PathLike, step: int) -> None:
    """Drop records after `step`: a resumed run replays those steps and logs them again, so the
    file reads exactly like an uninterrupted run's."""
    path = Path(path)
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    write_bytes_atomic(path, "".join(json.dumps(r) + "\n" for r in kept).encode())


def write_json_atomic(path: str | os.PathLike, obj: dict[str, Any]) -> None:
    """Write a JSON file atomically (readers never see half of it)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())
