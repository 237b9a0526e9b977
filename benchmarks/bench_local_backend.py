"""Local backend latency: submit -> first log line, and submit -> first training step line.

Runs lesson 01's real Job (smoke preset, synthetic data) on the local backend. The first run
prepares the data on the "PVC"; the timed runs find it there, as a second job on a cluster would.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from kubecourse import TrainingClient, render
from kubecourse.backends.config import LocalBackendConfig
from kubecourse.backends.local import LocalBackend

REPEATS = 3


def _one(client: TrainingClient, name: str) -> tuple[float, float, float]:
    objects = render(
        "01", name=name, env={"DATASET": "synthetic"}, extra_args=["--smoke", "--max-steps=5"]
    )
    start = time.perf_counter()
    ref = client.submit(objects)
    first_line = first_step = None
    for line in client.iter_logs(ref, follow=True):
        now = time.perf_counter() - start
        if first_line is None:
            first_line = now
        if line.text.startswith("step "):
            first_step = now
            break
    client.wait(ref, timeout_s=300, progress=False)
    total = time.perf_counter() - start
    client.delete(ref)
    if first_step is None:
        raise RuntimeError(f"{name}: the trainer printed no 'step' line")
    return first_line, first_step, total


def run() -> dict:
    with tempfile.TemporaryDirectory() as state:
        backend = LocalBackend(LocalBackendConfig(state_dir=Path(state)))
        with TrainingClient(
            backend=backend, show_kubectl=False, rendered_dir=Path(state) / "rendered"
        ) as client:
            _one(client, "warmup")  # prepares the synthetic data set on the data PVC
            samples = [_one(client, f"bench-{i}") for i in range(REPEATS)]
    first_line = statistics.median(s[0] for s in samples)
    first_step = statistics.median(s[1] for s in samples)
    return {
        "name": "local backend: submit -> first training log line",
        "submit_to_first_log_line_s": round(first_line, 3),
        "submit_to_first_step_line_s": round(first_step, 3),
        "repeats": REPEATS,
        "summary": f"first log line {first_line:.2f} s, first training step {first_step:.2f} s (median of {REPEATS})",
        "goal": "informational (python + torch import + model build dominate)",
    }


if __name__ == "__main__":
    print(run())
