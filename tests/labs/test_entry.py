"""The labs' shared entry: SIGTERM handling (with and without the watcher) and exit codes."""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass

import pytest

from labs.common.config import ConfigError, param
from labs.common.entry import EXIT_CONFIG, EXIT_SIGTERM, StopFlag, run_main
from tests.guards import HANG_GUARD_S

# The child installs the flag, says so, then does what the case's body says while SIGTERM arrives.
CHILD = """
import sys, time
from labs.common.entry import StopFlag
stop = StopFlag(ack_s={ack_s})
stop.install()
print("ready", flush=True)
{body}
"""


# A loop that polls the flag (bounded by the hang guard, never by a guess at the machine's speed).
POLL = f"deadline = time.monotonic() + {HANG_GUARD_S}\n" + (
    "while not stop.requested and time.monotonic() < deadline: time.sleep(0.01)\n"
)


@pytest.mark.parametrize(
    "ack_s, body, code",
    [
        # Blocked where no Python handler can run (here: a long sleep): the watcher ends it with
        # 143 itself (exit 0 would mean the sleep ran out: the watcher did nothing).
        (1.0, f"time.sleep({HANG_GUARD_S}); sys.exit(0)", EXIT_SIGTERM),
        # The loop saw the flag and acknowledged: a final checkpoint slower than ack_s finishes.
        (1.0, POLL + "stop.acknowledge(); time.sleep(2); sys.exit(0)", 0),
        # No watcher: only the flag is set; the loop decides when to stop.
        (None, POLL + "time.sleep(2); sys.exit(7 if stop.requested else 1)", 7),
    ],
    ids=["watcher-ends-a-blocked-worker", "acknowledged-loop-finishes", "flag-only"],
)
def test_sigterm_is_handled_as_configured(ack_s, body, code):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(ack_s=ack_s, body=body)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=HANG_GUARD_S) == code
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


@pytest.mark.parametrize(
    ("lab", "args", "message"),
    [
        ("cifar10", ["--lr=nan"], "--lr: must be > 0 (got nan)"),
        ("cifar10", ["--bucket-cap-mb=0"], "--bucket-cap-mb: must be > 0"),
        ("cifar10", ["--ema-decay=1"], "--ema-decay: must be in [0, 1)"),
        ("cifar10", ["--epochs=0"], "--epochs: must be >= 1"),
        ("lm_pretrain", ["--lr=-1"], "--lr: must be > 0"),
        ("lm_pretrain", ["--bucket-cap-mb=-5"], "--bucket-cap-mb: must be > 0"),
        ("finetune", ["--merge-tolerance=0"], "--merge-tolerance: must be > 0"),
        ("finetune", ["--warmup-fraction=nan"], "--warmup-fraction: must be in [0, 1)"),
    ],
)
def test_each_lab_refuses_an_out_of_range_flag_and_names_it(lab, args, message, capsys):
    """Exit 2 before any work, with the flag and the bound in the message (NaN included)."""
    module = __import__(f"labs.{lab}", fromlist=["main"])
    assert module.main(args) == EXIT_CONFIG
    assert capsys.readouterr().err.startswith(f"error: {message}")
