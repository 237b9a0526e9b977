"""labs/common/faults.py: the watchdog that turns a hang into exit 3, and the NaN injection hook.

The watchdog ends its process with `os._exit`, so each case runs in its own small Python process
(no torch import: a fraction of a second). All cases start together and are checked one by one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labs.common.faults import EXIT_HUNG, nan_hook
from tests.guards import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[2]
PRELUDE = "import time\nfrom labs.common.faults import Watchdog\n"

# (case, script, exit code, text on stderr). Timeouts are >= 10x the longest pause between beats.
CASES = [
    ("hung", "w = Watchdog(0.5).start()\nw.beat(7)\ntime.sleep(60)", EXIT_HUNG, "last step 7"),
    (
        "beating",  # runs longer than the timeout, but never pauses that long
        "w = Watchdog(0.6).start()\nfor i in range(20):\n    w.beat(i)\n    time.sleep(0.05)",
        0,
        "",
    ),
    ("stopped", "w = Watchdog(0.3).start()\nw.stop()\ntime.sleep(1.0)", 0, ""),
    ("disabled", "Watchdog(0).start()\ntime.sleep(0.5)", 0, ""),
]


@pytest.fixture(scope="module")
def processes():
    procs = {
        case: subprocess.Popen(
            [sys.executable, "-c", PRELUDE + script],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for case, script, _, _ in CASES
    }
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(("case", "code", "stderr"), [(c, rc, e) for c, _, rc, e in CASES])
def test_the_watchdog_exits_3_only_when_no_progress_is_reported(processes, case, code, stderr):
    _, err = processes[case].communicate(timeout=HANG_GUARD_S)
    assert processes[case].returncode == code, err
    assert stderr in err
    if code == EXIT_HUNG:
        assert "watchdog: no training progress" in err and "hung" in err


def test_the_nan_hook_poisons_the_output_and_the_gradients_but_not_the_weights():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    x = torch.randn(4, 3)
    handle = layer.register_forward_hook(nan_hook)
    out = layer(x)
    out.sum().backward()
    assert torch.isnan(out).all()
    assert torch.isnan(layer.weight.grad).all()
    assert all(torch.equal(v, before[k]) for k, v in layer.state_dict().items())
    handle.remove()
    assert torch.isfinite(layer(x)).all()  # removed: the next step is clean again
