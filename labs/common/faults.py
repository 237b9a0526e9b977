"""Failures on purpose, and the guards that catch them (lesson 11: fault diagnosis and recovery).

A long training run meets three silent failures more often than a crash:

* a NaN/inf loss (a bad batch, an LR spike, fp16 overflow) that poisons the weights for good;
* a hung rank (a dead peer in a collective, a stuck file system) that burns GPU hours doing nothing;
* a kill in the middle of a checkpoint write (handled by labs.common.checkpoint: atomic renames).

`Watchdog` turns a hang into a clear, non-zero exit the Job controller can retry. The lab's
`--inject-*` flags create each failure deterministically so the lessons and tests can prove the
recovery: a NaN at a chosen step (a forward hook on the model's head, so BatchNorm statistics stay
clean and only the gradients are poisoned), a hang at a chosen step, a slow checkpoint write.
"""

from __future__ import annotations

import os
import sys
import threading
import time

EXIT_HUNG = 3  # the watchdog saw no progress: retryable (the Job controller makes a new pod)
EXIT_NONFINITE = 4  # non-finite loss with --on-nonfinite=fail


class Watchdog:
    """Exit the process with EXIT_HUNG when `beat()` is not called for `timeout_s` seconds.

    The check runs in a daemon thread, so it fires even while the main thread is stuck inside a
    collective or a read. It uses `os._exit`: a hung main thread would never run a normal shutdown.
    timeout_s <= 0 disables it."""

    def __init__(self, timeout_s: float, what: str = "training") -> None:
        self.timeout_s = timeout_s
        self.what = what
        self.step = 0
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = None

    def start(self) -> Watchdog:
        if self.timeout_s > 0:
            self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)
            self._thread.start()
        return self

    def beat(self, step: int) -> None:
        self.step = step
        self._last = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.timeout_s / 4)):
            idle = time.monotonic() - self._last
            if idle > self.timeout_s:
                print(
                    f"watchdog: no {self.what} progress for {idle:.0f} s (limit "
                    f"{self.timeout_s:g} s, last step {self.step}): the rank is hung; exiting "
                    f"{EXIT_HUNG} so the pod is restarted and resumes from its last checkpoint",
                    file=sys.stderr,
                    flush=True,
                )
                sys.stdout.flush()
                os._exit(EXIT_HUNG)


def nan_hook(module, inputs, output):
    """Forward hook that turns the output into NaN (fault injection for one step)."""
    return output * float("nan")
