"""labs/ddp_comm_sweep.py: the settings parser and one single-process sweep (the weak-scaling
baseline); the torchrun path runs in notebook 05 and benchmarks/bench_ddp_scaling.py."""

import json

import pytest
import torch

from labs import ddp_comm_sweep as sweep


@pytest.mark.parametrize(
    ("text", "settings"),
    [
        ("25:none", [(25.0, "none")]),
        ("25:none,1:fp16", [(25.0, "none"), (1.0, "fp16")]),
        ("0.5", [(0.5, "none")]),  # no hook named: none
        ("25:powersgd,25:bf16", [(25.0, "powersgd"), (25.0, "bf16")]),
    ],
)
def test_parse_settings(text, settings):
    assert sweep.parse_settings(text) == settings


def test_one_process_times_each_setting_and_records_why_one_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    small = [
        "--steps=2",
        "--warmup=1",
        "--dim=32",
        "--n-layers=1",
        "--seq-len=16",
        "--batch-size=2",
    ]
    try:
        code = sweep.main([f"--out-dir={tmp_path}", "--settings=25:none,25:bf16", *small])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    timed, skipped = json.loads((tmp_path / "sweep.json").read_text())
    assert timed["bucket_cap_mb"] == 25.0 and timed["comm_hook"] == "none"
    assert timed["world_size"] == 1 and timed["step_ms"] > 0
    assert timed["tokens_per_s"] == pytest.approx(2 * 16 / (timed["step_ms"] / 1000), rel=0.01)
    assert skipped["comm_hook"] == "bf16" and "CUDA" in skipped["skipped"]
    assert "step_ms" not in skipped
