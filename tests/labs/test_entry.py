"""The labs' shared entry: SIGTERM handling (with and without the watcher) and exit codes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from labs.common.config import ConfigError, param
from labs.common.entry import EXIT_CONFIG, EXIT_SIGTERM, StopFlag, run_main

pytestmark = pytest.mark.timeout(60)

# The child installs the flag, says so, then does what the case's body says while SIGTERM arrives.
CHILD = """
import sys, time
from labs.common.entry import StopFlag
stop = StopFlag(ack_s={ack_s})
stop.install()
print("ready", flush=True)
{body}
"""


@pytest.mark.parametrize(
    "ack_s, body, code, within_s",
    [
        # Blocked where no Python handler can run (here: a long sleep): the watcher ends it.
        (1.0, "time.sleep(30); sys.exit(0)", EXIT_SIGTERM, 10),
        # The loop saw the flag and acknowledged: a final checkpoint slower than ack_s finishes.
        (
            1.0,
            "while not stop.requested: time.sleep(0.01)\n"
            "stop.acknowledge(); time.sleep(2); sys.exit(0)",
            0,
            15,
        ),
        # No watcher: only the flag is set; the loop decides when to stop.
        (None, "time.sleep(2); sys.exit(7 if stop.requested else 1)", 7, 15),
    ],
    ids=["watcher-ends-a-blocked-worker", "acknowledged-loop-finishes", "flag-only"],
)
def test_sigterm_is_handled_as_configured(ack_s, body, code, within_s):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(ack_s=ack_s, body=body)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        started = time.monotonic()
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=within_s) == code
        if code == EXIT_SIGTERM:
            assert time.monotonic() - started < 5, "the watcher should not wait for SIGKILL"
    finally:
        child.kill()
        child.wait()


@dataclass(frozen=True)
class _Config:
    steps: int = param(3, "steps to run")

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError("steps", f"must be >= 1 (got {self.steps})")


@pytest.mark.parametrize(
    "argv, code, stderr",
    [(["--steps=4"], 4, ""), (["--steps=0"], EXIT_CONFIG, "steps: must be >= 1")],
    ids=["trains", "config-error-names-the-field"],
)
def test_run_main_wires_config_to_train_and_exit_code(argv, code, stderr, capsys):
    def train(cfg, dist, stop):
        assert isinstance(stop, StopFlag) and dist.world_size >= 1
        return cfg.steps

    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert run_main(_Config, train, argv, prog="lab", description=None, presets={}) == code
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stderr in capsys.readouterr().err
