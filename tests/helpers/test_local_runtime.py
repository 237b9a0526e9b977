"""kubecourse.backends.local.runtime: a container's processes end as a killed cgroup's do.

torchrun starts each rank in a session of its own, so a signal to the container's process group
alone misses them. These cases build that shape without torch: a root process whose child starts
a grandchild in a new session (as torchrun does) that ignores SIGTERM and sleeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubecourse.backends.local import runtime
from kubecourse.backends.local.plan import ContainerPlan
from tests.guards import HANG_GUARD_S

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")

# Longer than any wait below, so a leaked rank is still there when the test looks for it (the
# fixture ends it either way).
ORPHAN_SLEEP_S = 3 * HANG_GUARD_S + 60
# The root starts a "rank" in its own session, prints the rank's PID, then waits: on SIGTERM the
# root exits at once (a shell's default), the rank ignores SIGTERM and would run on as an orphan.
ROOT = f"""
import signal, subprocess, sys, time
rank = subprocess.Popen(
    [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
     "print('ready', flush=True); time.sleep({ORPHAN_SLEEP_S})"],
    start_new_session=True, stdout=subprocess.PIPE, text=True,
)
assert rank.stdout.readline().strip() == "ready"
print(rank.pid, flush=True)
time.sleep({ORPHAN_SLEEP_S})
"""


def gone(pid: int) -> bool:
    """True once `pid` has ended (waits up to the hang guard: an end is never instant)."""
    deadline = time.monotonic() + HANG_GUARD_S
    while runtime.is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not runtime.is_running(pid)


@pytest.fixture
def container():
    plan = ContainerPlan(name="trainer", argv=[sys.executable, "-c", ROOT], env=dict(os.environ))
    process = runtime.start(plan, Path.cwd())
    rank = int(process.stdout.readline())
    yield process, rank
    runtime.kill_tree(process.pid, [rank])
    process.wait(timeout=HANG_GUARD_S)
    process.stdout.close()


def test_the_tree_holds_a_descendant_in_another_session(container):
    process, rank = container
    assert rank in runtime.process_tree(process.pid)
    assert runtime.process_tree(rank) == []


@pytest.mark.parametrize(
    ("sig", "grace_s"),
    [(signal.SIGKILL, 0.0), (signal.SIGTERM, 0.5)],
    ids=["sigkill-ends-every-process", "sigterm-then-the-root-exits-the-rest-dies-with-it"],
)
def test_stopping_a_container_leaves_no_process_of_it(container, sig, grace_s):
    process, rank = container
    runtime.signal_groups([process], sig, grace_s)
    assert runtime.exit_code(process.wait(timeout=HANG_GUARD_S)) == 128 + sig
    assert gone(rank), "the rank in its own session outlived its container"


def test_kill_tree_of_a_process_that_already_ended_is_quiet():
    done = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    done.wait(timeout=HANG_GUARD_S)
    runtime.kill_tree(done.pid, [])  # no ProcessLookupError
