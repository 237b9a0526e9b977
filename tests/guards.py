"""Hang guards: the one place that says how long a test may wait for anything.

Every timeout in tests/ (a subprocess's `timeout=`, `client.wait(timeout_s=...)`, a polling
deadline, a notebook cell's timeout, pytest-timeout's per-test limit) exists to turn a HANG into
a failure. None of them checks speed: speed and memory targets live in benchmarks/ (`make bench`).
A test must pass on a machine ten times slower than an idle laptop (a loaded CI box, two pytest
workers on two cores, another build running), so the guards are far above any idle run time:

    HANG_GUARD_S   one wait: a lab subprocess, a job, a cell, a poll. The slowest single wait in the
                   suite is a lab smoke run or a notebook cell of about a minute idle: 10x that.
    TEST_GUARD_S   one whole test (several waits in a row), applied by tests/conftest.py to every
                   test through pytest-timeout; a smaller per-test `timeout` mark counts as this.

Set KUBECOURSE_HANG_GUARD_S to scale both (e.g. 60 to see a hang fail fast while debugging, or
3000 on a very slow emulator). A guard is never a reason for a test to fail on a healthy machine.
"""

from __future__ import annotations

import os

HANG_GUARD_S = float(os.environ.get("KUBECOURSE_HANG_GUARD_S") or 600)
TEST_GUARD_S = 3 * HANG_GUARD_S
