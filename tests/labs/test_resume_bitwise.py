"""Bitwise resume for the language-model labs (the CIFAR lab's is in test_recovery.py).

Each case runs the lab as a pod would (a subprocess in its own session, real signals):

1. SIGTERM at a seeded random step: the lab finishes that step, writes a checkpoint AT it and
   exits: 0 steps lost (the checkpoint's step is the last step it printed);
2. rerun, SIGKILL at a later seeded random step (no warning: up to checkpoint_every steps lost);
3. rerun to the end.

The final weights (and optimizer moments) must equal an uninterrupted run's bit for bit: the
trainer core (labs/common/trainer.py) restores weights, optimizer, schedule, the data position and
every RNG. Cases: the LM lab in one process and as 2 FSDP2 ranks with sharded DCP checkpoints;
the fine-tuning lab with LoRA and with QLoRA (4-bit base). Sizes are tiny (16-24 steps); the
whole file takes about 4-6 minutes on 2 idle cores (each start pays python + torch imports).
Set KILL_SEED to replay other kill points.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from kubecourse.backends.local import runtime
from labs.common import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[2]
HANG_GUARD_S = 900  # a hang guard, not a speed check: an idle run takes ~30 s
ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
CACHE = REPO / ".course" / "models"

LM = [
    "--smoke", "--num-threads=1", "--steps=24", "--warmup-steps=3", "--log-every=1",
    "--checkpoint-every=4",
]  # fmt: skip
FINETUNE = [
    f"--model-cache={CACHE}", "--train-examples=64", "--eval-examples=8", "--steps=16",
    "--batch-size=4", "--grad-accum-steps=2", "--lr=5e-3", "--samples=1", "--max-new-tokens=2",
    "--log-every=1", "--checkpoint-every=3", "--num-threads=1", "--no-save-merged",
]  # fmt: skip


@dataclass(frozen=True)
class Case:
    id: str
    module: str
    args: tuple[str, ...]
    nproc: int = 1
    format: str = "pt"  # "dcp": folder checkpoints with a weights digest


CASES = [
    Case("lm-1-process", "labs.lm_pretrain", tuple(LM), format="dcp"),
    Case("lm-fsdp2-2-ranks", "labs.lm_pretrain", (*LM, "--strategy=fsdp"), nproc=2, format="dcp"),
    Case("finetune-lora", "labs.finetune", (*FINETUNE, "--method=lora")),
    Case("finetune-qlora", "labs.finetune", (*FINETUNE, "--method=qlora")),
]


def command(case: Case, out: Path) -> list[str]:
    launcher = (
        ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={case.nproc}"]
        if case.nproc > 1
        else []
    )
    return [sys.executable, *launcher, "-m", case.module, *case.args, f"--out-dir={out}"]


def start(case: Case, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        command(case, out),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, **ENV},
    )


def signal_at(proc: subprocess.Popen, step: int, sig: signal.Signals) -> list[str]:
    """Once `step <step>/` is printed, SIGTERM the process group (torchrun forwards it to its
    ranks) or SIGKILL the whole tree, as a killed container's cgroup goes (torchrun's ranks each
    run in a session of their own); the whole output. After a SIGKILL no rank may be left."""
    lines, deadline, tree = [], time.monotonic() + HANG_GUARD_S, []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith(f"step {step}/"):
                if sig == signal.SIGKILL:
                    tree = runtime.process_tree(proc.pid)
                    runtime.kill_tree(proc.pid, tree)
                    break
                os.killpg(proc.pid, sig)
            assert time.monotonic() < deadline, "hang guard: no progress"
        proc.wait(timeout=HANG_GUARD_S)
    finally:
        if proc.poll() is None:
            runtime.kill_tree(proc.pid)
            proc.wait(timeout=HANG_GUARD_S)
        proc.stdout.close()
    assert any(x.startswith(f"step {step}/") for x in lines), "\n".join(lines[-30:])
    assert not alive(tree, until=time.monotonic() + HANG_GUARD_S), "a rank outlived the SIGKILL"
    return lines


def alive(pids: list[int], until: float) -> list[int]:
    """The PIDs still running (not zombies) once they have all ended or `until` has passed."""
    while [p for p in pids if runtime.is_running(p)] and time.monotonic() < until:
        time.sleep(0.05)
    return [p for p in pids if runtime.is_running(p)]


def run_to_end(case: Case, out: Path) -> list[str]:
    proc = subprocess.run(
        command(case, out),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        env={**os.environ, **ENV},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout.splitlines()


def run_reference(case: Case, out: Path, monkeypatch) -> None:
    """The uninterrupted run: in this process when it is one process (saves a start-up)."""
    if case.nproc > 1:
        run_to_end(case, out)
        return
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    threads = torch.get_num_threads()
    try:
        assert importlib.import_module(case.module).main([*case.args, f"--out-dir={out}"]) == 0
    finally:
        torch.set_num_threads(threads)


def final_weights(case: Case, out: Path) -> dict:
    """What must be bitwise equal: the full-weight digest (sharded) or every saved tensor."""
    if case.format == "dcp":
        step, path = ckpt.list_complete(out / "checkpoints")[-1]
        meta = json.loads((path / "meta.json").read_text())
        return {"step": step, "weights_digest": meta["weights_digest"]}
    state = torch.load(ckpt.list_checkpoints(out / "checkpoints")[-1][1], weights_only=True)
    moments = {f"{i}.{k}": v for i, s in state["optimizer"]["state"].items() for k, v in s.items()}
    return {"step": state["step"], **state["model"], **moments}


def assert_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [
        k
        for k in a
        if not (torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k])
    ]
    assert not different, f"differ: {different[:5]}"


@pytest.mark.timeout(4 * HANG_GUARD_S)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_sigterm_loses_no_step_and_kills_resume_bitwise(case, tmp_path, monkeypatch):
    total = int(next(a for a in case.args if a.startswith("--steps=")).split("=")[1])
    rng = random.Random(int(os.environ.get("KILL_SEED", "11")))
    term_at = rng.randint(2, total // 2 - 2)
    kill_at = rng.randint(term_at + 3, total - 2)

    reference = tmp_path / "reference"
    run_reference(case, reference, monkeypatch)

    out = tmp_path / "interrupted"
    stopped = signal_at(start(case, out), term_at, signal.SIGTERM)
    saved = [
        int(m.group(1))
        for x in stopped
        if (m := re.match(r"checkpoint saved step (\d+) .*\(SIGTERM\)", x))
    ]
    printed = [int(m.group(1)) for x in stopped if (m := re.match(r"step (\d+)/", x))]
    assert saved and saved[-1] == printed[-1] >= term_at, stopped[-10:]  # 0 steps lost
    assert f"stopped by SIGTERM at step {saved[-1]}; rerun to resume" in stopped

    killed = signal_at(start(case, out), kill_at, signal.SIGKILL)
    assert f"resumed from step {saved[-1]} " in "\n".join(killed) + " "
    final = run_to_end(case, out)
    assert any(x.startswith("resumed from step") for x in final)
    print(f"{case.id}: SIGTERM at {term_at} (saved {saved[-1]}), SIGKILL at {kill_at}")
    assert_equal(final_weights(case, reference), final_weights(case, out))
