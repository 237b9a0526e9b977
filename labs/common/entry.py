"""What every lab's `main()` shares: the SIGTERM flag and the config → train → exit-code wiring.

Kubernetes stops a pod (preemption, eviction, `kubectl delete`) with SIGTERM, then SIGKILL after
the grace period; torchrun stops its workers the same way. A lab checks `StopFlag.requested`
after every step, writes its final checkpoint and exits 143.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

from labs.common.config import ConfigError, parse_config
from labs.common.distributed import DistInfo, dist_info_from_env, exit_process

EXIT_OK = 0
EXIT_CONFIG = 2  # stable: the Jobs' podFailurePolicy maps it to FailJob (retrying cannot help)
EXIT_SIGTERM = 143  # 128 + SIGTERM, what a shell reports for a process killed by SIGTERM


class StopFlag:
    """Set by SIGTERM; the loop checks `requested` after every step.

    With `ack_s`, a watcher thread also guards against a loop that cannot get there: a Python
    signal handler runs only when the main thread returns to Python, so a worker blocked in C++
    (joining a process group, or in a collective whose peer died) would ignore SIGTERM until the
    SIGKILL 30 s later, and the other nodes would time out waiting for it meanwhile.
    `signal.set_wakeup_fd` makes the C-level handler also write the signal number to a pipe, which
    the watcher reads at once: unless the loop calls `acknowledge()` (it has started its final
    checkpoint) within `ack_s` seconds, the watcher ends the process with 143 itself.
    """

    def __init__(self, ack_s: float | None = None) -> None:
        self.requested = False
        self.ack_s = ack_s
        self._acknowledged = threading.Event()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "requested", True))
        if self.ack_s is None:
            return
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(read_fd,), name="sigterm", daemon=True).start()

    def acknowledge(self) -> None:
        """The loop saw the flag and is writing its final checkpoint: the watcher stands down."""
        self._acknowledged.set()

    def _watch(self, read_fd: int) -> None:
        while signal.SIGTERM not in os.read(read_fd, 64):
            pass  # another signal (SIGINT, SIGCHLD...): not ours
        self.requested = True
        if not self._acknowledged.wait(self.ack_s):
            print(f"SIGTERM: the training loop did not stop within {self.ack_s:.0f} s", flush=True)
            exit_process(EXIT_SIGTERM)


def run_main(
    config_type: type,
    train: Callable[[Any, DistInfo, StopFlag], int],
    argv: list[str] | None,
    *,
    prog: str,
    description: str | None,
    presets: Mapping[str, Mapping[str, Any]],
    stop: StopFlag | None = None,
) -> int:
    """Parse the typed config, install the SIGTERM flag and train; returns the exit code
    (0, 2 for a config error named by its field, 143 after SIGTERM, or the lab's own codes)."""
    try:
        cfg = parse_config(
            config_type, argv, presets=dict(presets), prog=prog, description=description
        )
        stop = stop or StopFlag()
        stop.install()
        return train(cfg, dist_info_from_env(), stop)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
