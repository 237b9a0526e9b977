"""labs/lm_pretrain.py and labs/common/tiny_llama.py: the model, the data, DCP checkpoints that
reshard (saved by 2 FSDP2 ranks, loaded by 1), DeepSpeed's printed skip on CPU. Subprocesses run the lab as a pod would, each bounded by the hang guard."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labs import lm_pretrain as lm
from labs.common.config import parse_config
from labs.common.tiny_llama import LlamaConfig, TinyLlama, apply_rope, rope_tables
from tests.guards import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[2]
ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run_lab(*args: str, nproc: int = 1) -> subprocess.CompletedProcess:
    launcher = (
        ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
        if nproc > 1
        else []
    )
    return subprocess.run(
        [sys.executable, *launcher, "-m", "labs.lm_pretrain", "--smoke", "--num-threads=1", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        env={**os.environ, **ENV},
    )


def test_model_shapes_gqa_and_causality():
    cfg = LlamaConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=16)
    model = TinyLlama(cfg)
    tokens = torch.randint(0, 256, (2, 16))
    logits = model(tokens)
    assert logits.shape == (2, 16, 256)
    assert model.layers[0].attention.wk.out_features == 2 * cfg.head_dim  # grouped-query: fewer kv
    changed = tokens.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 256  # the future must not change the past
    assert torch.allclose(model(changed)[:, :10], logits[:, :10], atol=1e-5)
    cos, sin = rope_tables(cfg)
    x = torch.randn(1, 1, 16, cfg.head_dim)
    assert torch.allclose(
        apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1), atol=1e-4
    )  # rotation


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--dim", "0"], "--dim"),
        (["--n-heads", "3"], "--n-heads"),
        (["--bucket-cap-mb", "0"], "--bucket-cap-mb"),
        (["--corpus-tokens", "10"], "--corpus-tokens"),
    ],
)
def test_bad_values_exit_2_naming_the_flag(capsys, argv, flag):
    assert lm.main(["--out-dir", "unused", *argv]) == lm.EXIT_CONFIG
    assert flag in capsys.readouterr().err


def test_corpus_and_batches_are_pure_functions_of_the_seed():
    cfg = parse_config(lm.LMConfig, ["--smoke"], presets={"smoke": lm.SMOKE})
    a, b = lm.make_corpus(5000, 0), lm.make_corpus(5000, 0)
    assert torch.equal(a, b) and not torch.equal(a, lm.make_corpus(5000, 1))
    x1, y1 = lm.get_batch(a, cfg, step=7, rank=1, micro=0)
    x2, _ = lm.get_batch(a, cfg, step=7, rank=1, micro=0)
    x3, _ = lm.get_batch(a, cfg, step=7, rank=0, micro=0)
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)
    assert torch.equal(x1[:, 1:], y1[:, :-1])  # targets are the inputs shifted by one


def test_only_complete_checkpoints_count(tmp_path):
    (tmp_path / "step-00000010").mkdir()
    (tmp_path / "step-00000010" / lm.COMPLETE_MARKER).write_text("10\n")
    (tmp_path / "step-00000020").mkdir()  # no marker: a save that never finished
    (tmp_path / ".tmp-step-00000030").mkdir()
    assert [s for s, _ in lm.list_complete(tmp_path)] == [10]


def test_deepspeed_on_cpu_exits_2_with_the_reason(tmp_path, capsys):
    assert lm.main(["--out-dir", str(tmp_path), "--strategy", "deepspeed", "--device", "cpu"]) == 2
    assert "deepspeed: skipped: DeepSpeed ZeRO needs CUDA" in capsys.readouterr().out


def test_fsdp_checkpoint_from_2_ranks_resumes_exactly_in_1_process(tmp_path):
    out = tmp_path / "run"
    first = run_lab(f"--out-dir={out}", "--strategy=fsdp", "--max-steps=20", nproc=2)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    fsdp_memory = int(re.search(r"total_bytes (\d+)", first.stdout).group(1))
    meta = json.loads((out / "checkpoints" / "step-00000020" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["strategy"] == "fsdp"
    assert len(list((out / "checkpoints" / "step-00000020").glob("*.distcp"))) == 2  # one per rank

    second = run_lab(f"--out-dir={out}", "--strategy=ddp")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resharded: checkpoint written by 2 ranks (fsdp), loaded by 1 (ddp)" in second.stdout
    loaded = re.search(r"resumed from step 20 \S+ weights (\w+) saved (\w+)", second.stdout)
    assert loaded and loaded.group(1) == loaded.group(2) == meta["weights_digest"]
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 60 and result["resumed_from_step"] == 20
    assert result["final_loss"] < 2.5  # uniform guessing is ln(256) = 5.5
    # FSDP2 kept half of the parameters, gradients and AdamW state per rank.
    assert fsdp_memory < 0.6 * result["memory_per_rank"]["total"]


# DDP with the fp16 hook and gradient accumulation ending with identical weights on both ranks is
# asserted by notebook 03's exercise (it runs in CI), so it is not repeated here.
