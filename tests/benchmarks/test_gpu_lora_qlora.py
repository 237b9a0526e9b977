"""benchmarks/gpu_lora_qlora.py: on a machine without CUDA it says why and exits 0."""

from __future__ import annotations

import pytest
import torch

from benchmarks import gpu_lora_qlora


def test_gpu_benchmark_skips_with_a_reason_on_cpu(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: run the benchmark itself")
    assert gpu_lora_qlora.main(["--out", str(tmp_path / "r.json")]) == 0
    assert capsys.readouterr().out.startswith("skipped: no CUDA device")
    assert not (tmp_path / "r.json").exists()
