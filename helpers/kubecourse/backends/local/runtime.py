"""The process runner: a planned container (plan.ContainerPlan) as a local process group.

Shared by the local backend and the fake cluster's kubelet (tests/fakes/kubelet.py): a container
is one process in its own session (so a stop reaches torchrun's workers too), its stdout and
stderr merged as `kubectl logs` shows them; stopping is SIGTERM to the whole group, then SIGKILL
once the grace period is over, as the kubelet does; exit codes are reported as a container
runtime reports them (128 + signal).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from .plan import ContainerPlan


def start(container: ContainerPlan, cwd: str | Path) -> subprocess.Popen:
    """Start the container's process (raises OSError when the program cannot be started)."""
    return subprocess.Popen(
        container.argv,
        cwd=cwd,
        env=container.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )


def exit_code(returncode: int) -> int:
    """A process killed by signal N reports -N; container runtimes report 128+N (SIGKILL -> 137)."""
    return 128 - returncode if returncode < 0 else returncode


def signal_groups(processes: list[subprocess.Popen], sig: int, grace_s: float) -> None:
    """Send `sig` to each process group; after SIGTERM, SIGKILL what outlives `grace_s`."""
    for process in processes:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
    if sig != signal.SIGTERM:
        return
    end = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
