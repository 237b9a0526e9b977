"""Local multi-node reliability: the 2-node x 2-process LM run, N times in a row, count successes.

Each run is lesson 02's Indexed Job variant on the local backend: two pods, each `labs/launch.sh`
-> torchrun (c10d rendezvous on 127.0.0.1, a free port per job) -> 2 gloo workers. A run counts as
a success when the Job Succeeded, both pods exited 0, and result.json says all steps completed.
Every run is bounded by TIMEOUT_S (a hang is a failure, and the job is deleted).

Why it exists: with gloo on loopback, multi-launcher runs used to fail now and then AFTER
training (a worker aborting at interpreter exit, its launcher then failing or hanging in the exit
barrier). The labs now destroy the process group in a `finally` and leave with `os._exit` once
everything is flushed (labs/common/distributed.exit_process); this benchmark is the evidence.

    python -m benchmarks.bench_multinode_reliability            # 20 runs (~10 min on 2 cores)
    REPEATS=3 python -m benchmarks.bench_multinode_reliability
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from kubecourse import TrainingClient
from kubecourse.backends.config import LocalBackendConfig
from kubecourse.backends.local import LocalBackend
from kubecourse.errors import JobTimeout
from kubecourse.multinode import MultiNodeSpec, render_variant

TIMEOUT_S = 150
STEPS = 20


def smoke_spec(
    name: str, nodes: int = 2, procs_per_node: int = 2, extra: tuple = ()
) -> MultiNodeSpec:
    """The multi-node Job at smoke size: CPU, one thread per worker, `--smoke` LM run."""
    return MultiNodeSpec(
        nodes=nodes,
        procs_per_node=procs_per_node,
        gpus=0,
        name=name,
        args=(
            "--",
            "-m",
            "labs.lm_pretrain",
            "--out-dir=/checkpoints/$(JOB_NAME)",
            "--smoke",
            "--num-threads=1",
            *extra,
        ),
        env=(("OMP_NUM_THREADS", "1"), ("MAX_RESTARTS", "2"), ("DNS_TIMEOUT_S", "30")),
    )


def run_once(
    client: TrainingClient,
    backend: LocalBackend,
    name: str,
    steps: int = STEPS,
    procs_per_node: int = 2,
) -> dict:
    """One 2-node run; returns {ok, phase, exit codes, seconds, why}."""
    extra = (f"--steps={steps}", "--checkpoint-every=10")
    objects = render_variant("Job", smoke_spec(name, procs_per_node=procs_per_node, extra=extra))
    start = time.perf_counter()
    ref = client.submit(objects)
    try:
        status = client.wait(ref, timeout_s=TIMEOUT_S, progress=False)
    except JobTimeout:
        client.delete(ref)
        return {"ok": False, "why": f"timeout after {TIMEOUT_S} s", "s": TIMEOUT_S}
    seconds = time.perf_counter() - start
    result_path = backend.pvc_dir("lm-checkpoints") / name / "result.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    codes = [p.exit_code for p in status.pods]
    ok = status.phase == "Succeeded" and codes == [0, 0] and result.get("steps") == steps
    why = "" if ok else f"phase {status.phase} {status.reason}, exit codes {codes}, result {result}"
    client.delete(ref)
    return {"ok": ok, "why": why, "s": round(seconds, 1), "codes": codes}


def run() -> dict:
    repeats = int(os.environ.get("REPEATS", "20"))
    runs = []
    with tempfile.TemporaryDirectory() as state:
        backend = LocalBackend(LocalBackendConfig(state_dir=Path(state), max_grace_s=3.0))
        with TrainingClient(
            backend=backend, show_kubectl=False, rendered_dir=Path(state) / "r"
        ) as client:
            for i in range(repeats):
                runs.append(run_once(client, backend, f"reliability-{i}"))
                print(f"run {i + 1}/{repeats}: {runs[-1]}", flush=True)
    successes = sum(r["ok"] for r in runs)
    durations = sorted(r["s"] for r in runs)
    return {
        "name": "local 2 nodes x 2 processes (gloo, loopback): runs that succeed",
        "successes": successes,
        "repeats": repeats,
        "median_run_s": durations[len(durations) // 2],
        "failures": [r["why"] for r in runs if not r["ok"]],
        "summary": f"{successes}/{repeats} succeeded (median {durations[len(durations) // 2]} s per run)",
        "goal": f"{repeats}/{repeats}",
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
