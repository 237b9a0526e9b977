"""Multi-node on the local backend: two pods, each labs/launch.sh -> torchrun, on 127.0.0.1.

The 20-run reliability count is benchmarks/bench_multinode_reliability.py; here the same run is
repeated twice (every run bounded by a timeout), and a crashed node with no restarts left must
fail the whole Job and leave no process behind. Notebook 04 covers the elastic restart.
"""

from __future__ import annotations

import os
import signal
import time

from benchmarks.bench_multinode_reliability import run_once, smoke_spec
from kubecourse.multinode import render_variant
from tests.guards import HANG_GUARD_S


def test_two_node_runs_succeed_twice_in_a_row(local_client, local_backend):
    for attempt in range(2):
        outcome = run_once(
            local_client, local_backend, f"twice-{attempt}", steps=10, procs_per_node=1
        )
        assert outcome["ok"], outcome


def test_a_node_that_fails_fails_the_job_and_stops_every_process(local_client, local_backend):
    spec = smoke_spec("crash", procs_per_node=1, extra=("--steps=400",))
    spec = type(spec)(**{**spec.__dict__, "env": (("OMP_NUM_THREADS", "1"), ("MAX_RESTARTS", "0"))})
    ref = local_client.submit(render_variant("Job", spec))
    for line in local_client.iter_logs(ref, follow=True):
        if line.text.startswith("[rank0]:step 5/"):
            break
    workers = local_backend.worker_pids(ref)
    assert sorted(workers) == [0, 1], workers  # one worker per node, found through /proc
    os.kill(workers[1], signal.SIGKILL)
    status = local_client.wait(ref, timeout_s=HANG_GUARD_S, progress=False)
    assert status.phase == "Failed" and status.reason == "BackoffLimitExceeded", status
    assert all(p.phase == "Failed" for p in status.pods), status.pods
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers.values()):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers.values()), "a worker outlived the failed job"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has exited; only its parent has not reaped it
        return f.read().split()[2] != "Z"
