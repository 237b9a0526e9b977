"""The process runner: a planned container (plan.ContainerPlan) as a local process group.

Shared by the local backend and the fake cluster's kubelet (tests/fakes/kubelet.py): a container
is one process in its own session, its stdout and stderr merged as `kubectl logs` shows them;
stopping is SIGTERM to the whole group, then SIGKILL once the grace period is over, as the kubelet
does; exit codes are reported as a container runtime reports them (128 + signal).

A SIGKILL ends the container's whole process tree, as killing a container's cgroup does: torchrun
starts each worker in a session of its own, so signalling the group alone would leave the ranks of
a killed pod running (holding memory, ports and the checkpoint folder). The tree is read from
/proc before anything dies (an orphan is re-parented and could no longer be found); where there is
no /proc (macOS) only the group is signalled.
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


def process_tree(root: int) -> list[int]:
    """The PIDs of every descendant of `root`, in any session or group ([] without /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # the name may hold spaces
        except (OSError, IndexError):
            continue  # the process ended while we read
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            tree.append(child)
            todo.append(child)
    return tree


def is_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (an ended process its parent has not reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _send(pid: int, sig: int, group: bool = False) -> None:
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # already gone (a PermissionError: the PID was reused by someone else's process)


def kill_tree(root: int, tree: list[int] | None = None) -> None:
    """SIGKILL `root`'s group and every process of its tree (`tree`: a snapshot taken earlier)."""
    tree = process_tree(root) if tree is None else tree
    _send(root, signal.SIGKILL, group=True)
    for pid in tree:
        _send(pid, signal.SIGKILL)


def signal_groups(processes: list[subprocess.Popen], sig: int, grace_s: float) -> None:
    """Send `sig` to each process group (SIGKILL: to each whole tree); after SIGTERM, SIGKILL the
    tree of what outlives `grace_s`, and whatever its main process leaves behind when it exits."""
    trees = {process.pid: process_tree(process.pid) for process in processes}
    if sig == signal.SIGKILL:
        for process in processes:
            kill_tree(process.pid, trees[process.pid])
        return
    for process in processes:
        _send(process.pid, sig, group=True)
    if sig != signal.SIGTERM:
        return
    end = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        kill_tree(process.pid, trees[process.pid])
