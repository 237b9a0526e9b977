"""Recovery, proven (lesson 11): kills, torn checkpoint writes, NaN losses and hung ranks.

The lab runs as a pod would (`python -m labs.cifar10` in a subprocess, killed with real signals)
on a tiny config; every interrupted run must end with weights BITWISE equal to an uninterrupted one.
Whole file: about a minute on 2 CPU cores (each subprocess pays python + torch start-up).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from labs import cifar10
from labs.common import checkpoint as ckpt
from labs.common.config import parse_config
from labs.common.distributed import DistInfo
from labs.common.faults import EXIT_HUNG, EXIT_NONFINITE
from labs.common.metrics import read_metrics
from tests.guards import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = HANG_GUARD_S  # a hang guard: a busy machine never fails these tests
# 20 optimizer steps (2 epochs of 10), a checkpoint every 3 steps, a log line every step.
TINY = (
    "--smoke --train-subset 640 --test-subset 200 --epochs 2 --batch-size 32 "
    "--grad-accum-steps 2 --ema --log-every 1 --checkpoint-every 3 --num-threads 1"
).split()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    from labs.common import data

    data.prepare_synthetic(root, n_train=640, n_test=200, log=lambda m: None)
    return root


def flags(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data-dir",
        str(data_dir),
        "--dataset",
        "synthetic",
        "--out-dir",
        str(out),
        *TINY,
        *extra,
    ]


def in_process(data_dir: Path, out: Path, *extra: str) -> int:
    cfg = parse_config(
        cifar10.TrainConfig, flags(data_dir, out, *extra), presets={"smoke": cifar10.SMOKE}
    )
    return cifar10.train(cfg, DistInfo(), cifar10.StopFlag())


def start(data_dir: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "labs.cifar10", *flags(data_dir, out, *extra)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def kill_when(proc: subprocess.Popen, seen: str, wait_for_glob: tuple[Path, str] | None = None):
    """SIGKILL the process once a line starting with `seen` appears (and, if given, once a
    non-empty file matching `wait_for_glob` exists: a checkpoint temp file mid-write, its first
    half flushed); returns its output."""
    lines, deadline = [], time.monotonic() + TIMEOUT_S
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith(seen):
                while wait_for_glob and not _non_empty(*wait_for_glob):
                    assert time.monotonic() < deadline, f"no {wait_for_glob[1]} appeared"
                    time.sleep(0.05)
                os.killpg(proc.pid, signal.SIGKILL)
                break
            assert time.monotonic() < deadline, "the lab made no progress"
        else:
            pytest.fail(f"the run ended before {seen!r}:\n" + "\n".join(lines[-20:]))
    finally:
        proc.kill()
        proc.wait(timeout=TIMEOUT_S)
        proc.stdout.close()
    return lines


def _non_empty(folder: Path, pattern: str) -> bool:
    try:
        return any(p.stat().st_size > 0 for p in folder.glob(pattern))
    except FileNotFoundError:  # renamed or removed between glob and stat
        return False


def final_state(out: Path) -> dict:
    return torch.load(ckpt.list_checkpoints(out / "checkpoints")[-1][1], weights_only=True)


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for part in ("model",):
        assert a[part].keys() == b[part].keys()
        different = [k for k in a[part] if not torch.equal(a[part][k], b[part][k])]
        assert not different, f"{part} tensors differ: {different[:5]}"
    assert all(torch.equal(a["ema"]["module"][k], b["ema"]["module"][k]) for k in a["model"])
    opt_a, opt_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(opt_a[i]["momentum_buffer"], opt_b[i]["momentum_buffer"]) for i in opt_a)
    assert a["scheduler"] == b["scheduler"]


def no_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("time_s", "images_per_s")} for r in records]


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    assert in_process(data_dir, out) == 0
    return out


def test_killed_mid_checkpoint_write_and_at_random_steps_resumes_bitwise_equal(
    data_dir, reference, tmp_path
):
    """Kill 1 lands halfway through step 3's checkpoint write (a torn temp file, no complete
    checkpoint yet); kills 2 and 3 land at random steps (seeded, so a failure reproduces). Each
    rerun resumes from the newest COMPLETE checkpoint; the last one runs to the end."""
    out, folder = tmp_path / "killed", tmp_path / "killed" / "checkpoints"
    # The pause outlasts any wait: the kill, not the end of the pause, ends the write.
    proc = start(data_dir, out, "--inject-slow-checkpoint-s", str(HANG_GUARD_S))
    kill_when(proc, "step 3/", wait_for_glob=(folder, "*.tmp"))
    torn = list(folder.glob("*.tmp"))
    assert torn and torn[0].stat().st_size > 0 and not ckpt.list_checkpoints(folder)

    seed = int(os.environ.get("KILL_SEED", "6"))
    rng = random.Random(seed)
    first = rng.randint(4, 11)
    # 4+ steps apart: a kill lands a step or so after its line, and the next run must replay
    # the second point (it resumes from the checkpoint before the first kill, at most 3 back).
    kill_points = [first, rng.randint(first + 4, 19)]
    outputs = []
    for point in kill_points:
        outputs.append(kill_when(start(data_dir, out), f"step {point}/"))
    proc = subprocess.run(
        [sys.executable, "-m", "labs.cifar10", *flags(data_dir, out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first_rerun = "\n".join(outputs[0])
    assert "removing leftover temp file" in first_rerun and "resumed_from=None" in first_rerun
    runs = [*outputs, proc.stdout.splitlines()]
    resumed = [line for lines in runs for line in lines if "resumed from" in line]
    print(f"kill points: 3 (mid-write), {kill_points} (seed {seed}); {resumed}")
    assert_bitwise_equal(final_state(reference), final_state(out))
    assert no_timing(read_metrics(reference / "metrics.jsonl")) == no_timing(
        read_metrics(out / "metrics.jsonl")
    )


def test_torn_write_after_a_complete_checkpoint_resumes_from_that_one(tmp_path):
    # In-process and torch-only: the previous complete checkpoint is what load_latest returns.
    folder = tmp_path / "ckpt"
    ckpt.save_checkpoint({"step": 3, "w": torch.ones(3)}, folder, 3)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, torch; from labs.common import checkpoint as c; "
            f"c.save_checkpoint({{'step': 6, 'w': torch.zeros(10**6)}}, {str(folder)!r}, 6, slow_write_s={HANG_GUARD_S})",
        ],
        cwd=REPO,
    )
    deadline = time.monotonic() + TIMEOUT_S
    while not _non_empty(folder, "*.tmp") and time.monotonic() < deadline:
        time.sleep(0.05)  # once the first half is flushed, the pause has begun
    child.kill()
    child.wait(timeout=TIMEOUT_S)
    state, path = ckpt.load_latest(folder, log=lambda m: None)
    assert state["step"] == 3 and path.name == "ckpt-step-00000003.pt"
    assert not list(folder.glob("*.tmp"))


@pytest.mark.parametrize(
    "policy, rc, equal",
    [("rollback", 0, True), ("skip", 0, False), ("fail", EXIT_NONFINITE, None)],
)
def test_injected_nan_is_caught(data_dir, reference, tmp_path, capsys, policy, rc, equal):
    out = tmp_path / policy
    assert in_process(data_dir, out, "--inject-nan-at-step", "8", "--on-nonfinite", policy) == rc
    text = capsys.readouterr().out
    assert f"non-finite loss nan at step 8: {policy}" in text
    if equal is None:
        return
    state = final_state(out)
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    if equal:  # rollback replays steps 7-8 from the step-6 checkpoint: as if nothing happened
        assert "rolled back to step 6" in text
        assert_bitwise_equal(final_state(reference), state)
    else:  # skip drops one update: finite weights, a (slightly) different run
        assert not all(
            torch.equal(state["model"][k], final_state(reference)["model"][k])
            for k in state["model"]
        )


def test_hung_rank_is_ended_by_the_watchdog(data_dir, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "labs.cifar10",
            *flags(data_dir, tmp_path / "hang", "--inject-hang-at-step", "4", "--watchdog-s", "6"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == EXIT_HUNG, proc.stdout + proc.stderr
    assert "watchdog: no training progress for" in proc.stderr and "last step 3" in proc.stderr
    marker = tmp_path / "hang" / "injected-faults" / "hang-step-4"
    assert json.loads(marker.read_text())["step"] == 4  # a retried pod does not hang again


def test_injected_crash_kills_the_last_rank_once_and_the_rerun_resumes(data_dir, tmp_path):
    """--inject-crash-at-step: a real SIGKILL (as the OOM killer sends), once per out_dir, so
    the restarted process (torchrun's next round, a retried pod) runs to the end from its
    checkpoint. Single process here: the last rank is rank 0."""
    out = tmp_path / "crash"
    cmd = [
        sys.executable,
        "-m",
        "labs.cifar10",
        *flags(data_dir, out, "--inject-crash-at-step", "5"),
    ]
    run = dict(cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)
    first = subprocess.run(cmd, **run)
    assert first.returncode == -signal.SIGKILL, first.stdout + first.stderr
    assert "fault injection: crash at step 5 rank 0 pid " in first.stdout
    assert "step 5/" not in first.stdout  # it died before step 5
    marker = json.loads((out / "injected-faults" / "crash-step-5").read_text())
    assert marker["rank"] == 0 and marker["step"] == 5
    second = subprocess.run(cmd, **run)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "fault injection" not in second.stdout
    assert "resumed from step 3 " in second.stdout  # --checkpoint-every 3
    assert json.loads((out / "result.json").read_text())["steps"] == 20
