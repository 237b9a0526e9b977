"""Tests of labs/finetune.py and labs/quantize.py (the data set and the tiny model: own files).

The labs run in-process (`main([...])`, the same entry point a pod runs) so torch, transformers
and peft are imported once for the whole file; the tiny model is built once into the repository's
`.course/models` cache (shared with notebooks 06 and 07). Nothing touches the network
(HF_HUB_OFFLINE=1). Whole file: about a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from labs import finetune, quantize
from labs.common.config import ConfigError
from labs.common.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".course" / "models"
# A short run: enough steps for the held-out loss to fall clearly, few enough to stay cheap.
SHORT = [
    f"--model-cache={CACHE}",
    "--train-examples=96",
    "--eval-examples=16",
    "--steps=16",
    "--batch-size=8",
    "--grad-accum-steps=1",
    "--lr=5e-3",
    "--samples=1",
    "--max-new-tokens=4",
    "--log-every=4",
    "--checkpoint-every=0",
    "--num-threads=1",
    "--no-save-merged",
]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def keep_thread_count():
    # The labs run in-process with --num-threads=1; later tests in this session must not inherit it.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_finetune(out: Path, *extra: str) -> dict:
    code = finetune.main([*SHORT, f"--out-dir={out}", *extra])
    assert code == 0
    return json.loads((out / "result.json").read_text())


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lora")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        try:
            return out, run_finetune(out)
        finally:
            torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------
# LoRA end to end.


def test_lora_trains_few_parameters_and_the_eval_loss_falls(lora_run):
    out, result = lora_run
    assert result["method"] == "lora" and result["completed"]
    assert 0 < result["trainable_params"] < 0.1 * result["total_params"]
    assert result["trainable_pct"] == round(
        100 * result["trainable_params"] / result["total_params"], 4
    )
    assert result["eval_after"]["loss"] < 0.7 * result["eval_before"]["loss"], result
    train = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in train] == [4, 8, 12, 16]
    assert result["peak_step_bytes"] is None and "no CUDA" in result["peak_step_note"]


def test_adapter_is_saved_reloads_identically_and_merges(lora_run):
    out, result = lora_run
    assert "adapter_model.safetensors" in result["adapter_files"]
    assert "adapter_config.json" in result["adapter_files"]
    assert result["reload_max_abs_diff"] == 0.0
    assert result["merge_max_abs_diff"] <= 1e-4 and result["merge_ok"]
    from safetensors.torch import load_file

    tensors = load_file(out / "adapter" / "adapter_model.safetensors")
    assert tensors and all("lora_" in name for name in tensors)
    assert sum(t.numel() for t in tensors.values()) == result["trainable_params"]


def test_resume_continues_exactly(lora_run, tmp_path):
    _, uninterrupted = lora_run
    out = tmp_path / "resumed"
    code = finetune.main([*SHORT, f"--out-dir={out}", "--max-steps=8"])
    assert code == 0 and not (out / "result.json").exists()
    resumed = run_finetune(out)
    assert resumed["resumed_from_step"] == 8
    assert resumed["eval_before"] == uninterrupted["eval_before"]
    assert resumed["eval_after"]["loss"] == pytest.approx(
        uninterrupted["eval_after"]["loss"], abs=1e-6
    )
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == [4, 8, 12, 16]  # the log reads like an uninterrupted run's


def test_qlora_step_runs_and_the_memory_table_is_ordered(tmp_path):
    result = run_finetune(tmp_path, "--method=qlora", "--memory-table", "--steps=8")
    assert result["method"] == "qlora" and result["reload_max_abs_diff"] == 0.0
    assert result["eval_after"]["loss"] < result["eval_before"]["loss"]
    table = {row["format"]: row for row in result["memory_table"]}
    assert list(table) == ["fp32", "bf16", "int8", "nf4"]
    for column in ("total", "quantizable"):
        values = [table[f][column] for f in table]
        assert values == sorted(values, reverse=True), (column, values)
    assert table["fp32"]["quantizable"] == 2 * table["bf16"]["quantizable"]
    assert table["nf4"]["quantizable"] <= 0.35 * table["bf16"]["quantizable"]
    assert table["int8"]["quantizable"] <= 0.55 * table["bf16"]["quantizable"]


def test_weight_bytes_counts_quantization_state():
    linear = torch.nn.Linear(64, 64, bias=False)
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList([torch.nn.Module()])
    model.layers[0].proj = linear
    assert finetune.weight_bytes(model) == {"total": 64 * 64 * 4, "quantizable": 64 * 64 * 4}


def test_micro_batches_are_a_pure_function_of_the_step():
    from labs.common.distributed import DistInfo

    one = finetune.micro_batch_indices(3, 2, 4, 10, 0, DistInfo())
    assert one == finetune.micro_batch_indices(3, 2, 4, 10, 0, DistInfo())
    ranks = [finetune.micro_batch_indices(0, 1, 5, 10, 0, DistInfo(r, r, 2))[0] for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == list(range(10))  # two ranks split one epoch


# ------------------------------------------------------------------------------------------------
# Post-training quantization.


def test_ptq_table_compares_sizes_and_perplexity(tmp_path):
    cfg = quantize.QuantizeConfig(
        model_cache=str(CACHE),
        out_dir=str(tmp_path),
        formats="fp32,int8-dynamic,nf4",
        eval_examples=16,
        latency_repeats=1,
        num_threads=1,
    )
    result = quantize.run(cfg, log=lambda *a, **k: None)
    rows = {r["format"]: r for r in result["rows"]}
    assert list(rows) == ["fp32", "int8-dynamic", "nf4"]
    assert rows["fp32"]["size_vs_fp32"] == 1.0 and rows["fp32"]["ppl_delta_pct"] == 0.0
    assert (
        rows["nf4"]["size_bytes"] < rows["int8-dynamic"]["size_bytes"] < rows["fp32"]["size_bytes"]
    )
    assert all(r["latency_ms"] > 0 and abs(r["ppl_delta_pct"]) < 25 for r in rows.values())
    assert json.loads((tmp_path / "result.json").read_text()) == result


# ------------------------------------------------------------------------------------------------
# Configuration errors: exit code 2 and a message naming the flag.


@pytest.mark.parametrize(
    ("module", "args", "flag"),
    [
        (finetune, ["--lora-r=0"], "--lora-r"),
        (finetune, ["--lora-dropout=1.5"], "--lora-dropout"),
        (finetune, ["--target-modules=,"], "--target-modules"),
        (finetune, ["--samples=5", "--eval-examples=2"], "--samples"),
        (finetune, ["--lr=0"], "--lr"),
        (quantize, ["--formats=fp8"], "--formats"),
        (quantize, ["--formats=nf4"], "--formats"),
        (quantize, ["--latency-repeats=0"], "--latency-repeats"),
    ],
)
def test_config_errors_exit_2_and_name_the_flag(module, args, flag, capsys):
    assert module.main(args) == 2
    assert capsys.readouterr().err.startswith(f"error: {flag}:")


def test_target_modules_that_do_not_exist_fail_as_a_config_error(tmp_path, capsys):
    code = finetune.main([*SHORT, f"--out-dir={tmp_path}", "--target-modules=no_such_proj"])
    assert code == 2
    assert "--target-modules" in capsys.readouterr().err


def test_cuda_request_without_a_gpu_is_a_config_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert finetune.main([*SHORT, f"--out-dir={tmp_path}", "--device=cuda"]) == 2
    assert "--device" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--device"):
        quantize.run(quantize.QuantizeConfig(device="cuda", out_dir=str(tmp_path)))


@pytest.mark.parametrize("module", [finetune, quantize], ids=lambda m: m.__name__)
def test_help_is_generated_from_the_config(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert "--smoke" in capsys.readouterr().out
