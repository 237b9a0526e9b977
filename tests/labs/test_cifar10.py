"""Tests of labs/cifar10.py and labs/prepare_data.py (labs/common/ has its own mirror files).

End-to-end tests run the lab the way a pod does (`python -m labs.cifar10 ...` in a subprocess) on
small synthetic data; the rest call the same functions in-process. Whole file: about a minute on
2 CPU cores.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from labs import cifar10, prepare_data
from labs.common import checkpoint as ckpt
from labs.common import data
from labs.common.config import ConfigError, parse_config
from labs.common.distributed import DistInfo
from labs.common.metrics import read_metrics
from tests.guards import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = HANG_GUARD_S  # per subprocess: a hung collective fails the test, a busy machine does not


def run_module(*args: str, timeout: int = TIMEOUT, env: dict | None = None):
    """Run `python -m <args>` from the repo root, as the container command would."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def train_cmd(data_dir: Path, out_dir: Path, *flags: str) -> list[str]:
    """`labs.cifar10 --data-dir D --dataset synthetic --out-dir O <flags>`."""
    where = ["--data-dir", str(data_dir), "--dataset", "synthetic", "--out-dir", str(out_dir)]
    return ["labs.cifar10", *where, *flags]


# A run small enough for ~3 s: 640 images, 2 epochs of 10 steps, EMA and accumulation on.
TINY = tuple(
    "--smoke --train-subset 640 --test-subset 200 --epochs 2 --batch-size 32 "
    "--grad-accum-steps 2 --ema --log-every 2".split()
)


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> Path:
    """Default-size synthetic data (5000/1000), written by the documented CLI."""
    root = tmp_path_factory.mktemp("data")
    proc = run_module("labs.prepare_data", "--data-dir", str(root), "--dataset", "synthetic")
    assert proc.returncode == 0, proc.stderr
    return root


def train_in_process(capsys, data_dir: Path, out_dir: Path, *flags: str) -> tuple[int, str]:
    """The same run as `python -m labs.cifar10 ...` minus the process start (torch is already
    imported) and minus the SIGTERM handler, which belongs to pytest here."""
    argv = train_cmd(data_dir, out_dir, *flags)[1:]
    cfg = parse_config(cifar10.TrainConfig, argv, presets={"smoke": cifar10.SMOKE})
    rc = cifar10.train(cfg, DistInfo(), cifar10.StopFlag())
    return rc, capsys.readouterr().out


def final_checkpoint(out_dir: Path) -> dict:
    step, path = ckpt.list_checkpoints(out_dir / "checkpoints")[-1]
    return torch.load(path, map_location="cpu", weights_only=True)


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("time_s", "images_per_s")} for r in records]


# ------------------------------------------------------------------------------------------------
# Data preparation and loading.


def test_prepare_data_cli_is_idempotent(synthetic_dir):
    marker = data.dataset_root(synthetic_dir, "synthetic") / data.COMPLETE_MARKER
    before = marker.stat().st_mtime_ns
    proc = run_module(
        "labs.prepare_data", "--data-dir", str(synthetic_dir), "--dataset", "synthetic"
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "data ready"
    assert marker.stat().st_mtime_ns == before


@pytest.mark.parametrize(("train", "n"), [(True, 5000), (False, 1000)])
def test_loader_reads_split(synthetic_dir, train, n):
    images, labels = data.load_split(synthetic_dir, "synthetic", train=train)
    assert images.shape == (n, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert 0 <= labels.min() and labels.max() <= 9
    assert len(labels.unique()) == 10


def _tarball(path: Path, members: dict[str, bytes]) -> str:
    """Write a .tar.gz with the given {name: content}; returns its md5."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return hashlib.md5(path.read_bytes()).hexdigest()


def _cifar_members(tmp_path: Path) -> dict[str, bytes]:
    """A tiny dataset in the official tarball's layout."""
    (train, test) = data.make_synthetic(10, 4, seed=3)
    staged = tmp_path / "staged"
    data.write_batches(staged, train, test, [f"c{i}" for i in range(10)])
    return {f"{data.BATCHES_DIRNAME}/{p.name}": p.read_bytes() for p in staged.iterdir()}


@pytest.mark.parametrize(
    ("case", "expect_rc", "expect_msg"),
    [
        ("good", 0, "data ready"),
        ("bad-checksum", 1, "checksum mismatch"),
        ("escaping-path", 1, "unsafe path"),
        ("missing-file", 1, "lacks"),
    ],
)
def test_cifar10_archive(tmp_path, capsys, case, expect_rc, expect_msg):
    members = _cifar_members(tmp_path)
    if case == "escaping-path":
        members["../evil.txt"] = b"pwned"
    if case == "missing-file":
        del members[f"{data.BATCHES_DIRNAME}/{data.TEST_FILE}"]
    archive = tmp_path / "cifar-10-python.tar.gz"
    md5 = _tarball(archive, members)
    if case == "bad-checksum":
        md5 = "0" * 32
    data_dir = tmp_path / "data"
    argv = ["--data-dir", str(data_dir), "--dataset", "cifar10", "--archive", str(archive)]
    argv += ["--expected-md5", md5]
    rc = prepare_data.main(argv)
    out = capsys.readouterr()
    assert rc == expect_rc
    assert expect_msg in (out.out + out.err)
    assert data.is_complete(data_dir, "cifar10") == (rc == 0)
    assert not list(tmp_path.rglob("evil.txt")), "an archive member escaped the data dir"
    if rc == 0:
        images, labels = data.load_split(data_dir, "cifar10", train=True)
        assert images.shape == (10, 3, 32, 32)
        assert prepare_data.main(argv) == 0 and "data ready" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------
# Small pieces of the training loop.


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 0.1), (9, 1.0), (10, 1.0), (55, 0.5), (100, 0.0)],
)
def test_warmup_cosine(step, expected):
    assert cifar10.warmup_cosine(step, total_steps=100, warmup_steps=10) == pytest.approx(
        expected, abs=1e-6
    )


# ------------------------------------------------------------------------------------------------
# Configuration: presets, overrides, errors.


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {"epochs": 20, "width": 64, "smoke": False}),
        (["--smoke"], {"epochs": 3, "width": 16, "train_subset": 2000, "smoke": True}),
        (["--smoke", "--epochs", "1"], {"epochs": 1, "width": 16}),
        (["--epochs", "1", "--smoke"], {"epochs": 1, "width": 16}),  # order does not matter
        (["--smoke", "--width", "8", "--no-channels-last"], {"width": 8, "channels_last": False}),
        (["--batch_size", "7", "--ema"], {"batch_size": 7, "ema": True}),  # field-name spelling
    ],
)
def test_smoke_preset_and_explicit_flags(argv, expected):
    cfg = parse_config(cifar10.TrainConfig, argv, presets={"smoke": cifar10.SMOKE})
    assert {k: getattr(cfg, k) for k in expected} == expected


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--lr", "-1"], "--lr"),
        (["--warmup-fraction", "1.5"], "--warmup-fraction"),
        (["--epochs", "abc"], "--epochs"),
        (["--device", "tpu"], "--device"),
        (["--precision", "fp8"], "--precision"),
    ],
)
def test_bad_values_exit_2_naming_the_flag(capsys, argv, flag):
    try:
        rc = cifar10.main(argv)
    except SystemExit as e:  # argparse's own errors (type, choice)
        rc = e.code
    assert rc == 2
    assert flag in capsys.readouterr().err


def test_config_error_carries_field():
    with pytest.raises(ConfigError) as e:
        cifar10.TrainConfig(width=0)
    assert e.value.field == "width" and str(e.value).startswith("--width")


def test_missing_cifar10_data_exits_2_with_hint(tmp_path):
    where = ["--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "out")]
    proc = run_module("labs.cifar10", *where, "--dataset", "cifar10")
    assert proc.returncode == 2
    assert "python -m labs.prepare_data" in proc.stderr and "--data-dir" in proc.stderr


# ------------------------------------------------------------------------------------------------
# End to end: smoke run, exact resume, damaged checkpoints, SIGTERM, torchrun.


def test_smoke_run_learns_and_rerun_is_a_noop(synthetic_dir, tmp_path, capsys):
    out = tmp_path / "smoke"
    proc = run_module(*train_cmd(synthetic_dir, out, "--smoke", "--prepare"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("cifar10:"))
    assert header.startswith("cifar10: device=cpu world_size=1 resumed_from=None train=2000")
    assert any(line.startswith("step ") for line in lines)
    assert any(line.startswith("eval epoch 3 ") for line in lines)
    assert lines[-2].startswith("done test_acc")
    result = json.loads((out / "result.json").read_text())
    # The contract's last line carries exactly what result.json holds (kubecourse.contract).
    assert lines[-1].startswith("result ") and json.loads(lines[-1][len("result ") :]) == result
    assert result["test_acc"] >= 0.4, result  # chance is 0.1; measured ~0.75
    assert result["world_size"] == 1 and result["device"] == "cpu"
    assert result["resumed_from_step"] is None and result["steps"] == 3 * (2000 // 64)
    records = read_metrics(out / "metrics.jsonl")
    train_loss = [r["loss"] for r in records if r["kind"] == "train"]
    assert train_loss[-1] < train_loss[0] - 0.3, train_loss
    assert [r["epoch"] for r in records if r["kind"] == "eval"] == [1, 2, 3]
    assert set(records[0]) == {"kind", "step", "epoch", "loss", "lr", "images_per_s", "time_s"}

    rc, stdout = train_in_process(capsys, synthetic_dir, out, "--smoke")
    assert rc == 0
    assert f"resumed from step {result['steps']}" in stdout
    assert json.loads((out / "result.json").read_text())["test_acc"] == result["test_acc"]


def test_resume_is_exact_and_skips_damaged_checkpoints(synthetic_dir, tmp_path, capsys):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert train_in_process(capsys, synthetic_dir, full, *TINY)[0] == 0  # the reference

    stopped = run_module(
        *train_cmd(synthetic_dir, resumed, *TINY, "--max-steps", "7", "--checkpoint-every", "7")
    )
    assert stopped.returncode == 0, stopped.stderr
    assert "checkpoint saved step 7" in stopped.stdout
    # Damage the checkpoint folder the way a kill mid-save or a bad disk would.
    folder = resumed / "checkpoints"
    good = ckpt.checkpoint_path(folder, 7).read_bytes()
    ckpt.checkpoint_path(folder, 9).write_bytes(good[: len(good) // 2])  # truncated
    ckpt.checkpoint_path(folder, 8).write_bytes(b"not a checkpoint")  # garbage
    (folder / ".ckpt-step-00000010.pt.x1y2.tmp").write_bytes(good[:100])  # interrupted save

    proc = run_module(*train_cmd(synthetic_dir, resumed, *TINY))
    assert proc.returncode == 0, proc.stderr
    assert "skipping unreadable checkpoint" in proc.stdout and "ckpt-step-00000009" in proc.stdout
    assert "removing leftover temp file" in proc.stdout
    assert "resumed from step 7" in proc.stdout
    assert not list(folder.glob("*.tmp"))

    a, b = final_checkpoint(full), final_checkpoint(resumed)
    assert a["step"] == b["step"] == 20
    for part in ("model",):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), "weights differ"
    assert all(torch.equal(a["ema"]["module"][k], b["ema"]["module"][k]) for k in a["model"])
    ra = json.loads((full / "result.json").read_text())
    rb = json.loads((resumed / "result.json").read_text())
    assert (ra["test_acc"], ra["test_loss"]) == (rb["test_acc"], rb["test_loss"])
    assert rb["resumed_from_step"] == 7
    assert without_timing(read_metrics(full / "metrics.jsonl")) == without_timing(
        read_metrics(resumed / "metrics.jsonl")
    )


def test_sigterm_checkpoints_and_exits_143(synthetic_dir, tmp_path):
    out = tmp_path / "preempted"
    cmd = [sys.executable, "-m", *train_cmd(synthetic_dir, out, "--smoke", "--log-every", "1")]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT
    for line in proc.stdout:  # wait until it is really training
        if line.startswith("step ") or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 143, rest
    assert "(SIGTERM)" in rest and "stopped by SIGTERM" in rest
    assert ckpt.list_checkpoints(out / "checkpoints"), "no checkpoint written on SIGTERM"
    assert not (out / "result.json").exists()


def test_torchrun_two_processes_on_cpu(synthetic_dir, tmp_path):
    out = tmp_path / "ddp"
    torchrun = ["torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]
    small = "--smoke --train-subset 512 --test-subset 200 --epochs 1 --batch-size 32".split()
    proc = run_module(
        *torchrun, *train_cmd(synthetic_dir, out, *small), env={"OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2 and result["steps"] == 512 // 2 // 32
    assert proc.stdout.count("cifar10: device=cpu world_size=2") == 1  # rank 0 prints alone
