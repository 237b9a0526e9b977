"""ruff (lint + format) is part of the test run, so CI and a laptop agree on style."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.guards import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[1]
PATHS = ["helpers", "labs", "tests", "benchmarks", "notebooks"]


def _ruff() -> str:
    candidate = Path(sys.executable).with_name("ruff")
    found = str(candidate) if candidate.exists() else shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    return found


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff(args):
    targets = (
        PATHS
        if args[0] == "check"
        else [p for p in PATHS if p != "notebooks"]
        + [str(p.relative_to(REPO)) for p in (REPO / "notebooks").glob("*.py")]
    )
    result = subprocess.run(
        [_ruff(), *args, *targets], cwd=REPO, capture_output=True, text=True, timeout=HANG_GUARD_S
    )
    assert result.returncode == 0, result.stdout + result.stderr
