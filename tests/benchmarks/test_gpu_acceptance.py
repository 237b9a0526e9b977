"""benchmarks/gpu/acceptance.sh: on CPU it runs nothing and says why; its plan runs the labs with
flags they accept; the runner keeps its budget, skips steps whose packages are missing and always
writes the report. The GPU numbers themselves come from running it on a GPU (README)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.gpu import acceptance
from labs import cifar10
from labs import lm_pretrain as lm
from labs.common.config import parse_config
from tests.guards import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[2]
STEPS = [
    "prepare-data",
    "cifar-fp32",
    "cifar-bf16-cl",
    "cifar-compile",
    "lm-bf16",
    "lora-vs-qlora",
    "notebook-01",
    "notebook-06",
    "notebook-07",
]


def test_without_cuda_the_script_writes_the_plan_and_says_why(tmp_path):
    cuda = torch.cuda.is_available()
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks/gpu/acceptance.sh"), f"--out={tmp_path}"]
        + (["--dry-run"] if cuda else []),
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = "skipped: dry run" if cuda else "skipped: no CUDA"
    report = json.loads((tmp_path / "acceptance.json").read_text())
    assert report["status"] == "skipped" and report["reason"].startswith(expected)
    assert [s["name"] for s in report["steps"]] == STEPS
    assert {s["status"] for s in report["steps"]} == {"skipped"}
    assert not (tmp_path / "data").exists(), "a skipped run must not run anything"
    markdown = (tmp_path / "acceptance.md").read_text()
    assert f"**{expected}" in markdown
    assert all(s["command"] in markdown for s in report["steps"])


def step_argv(name: str, out: Path) -> list[str]:
    (step,) = [s for s in acceptance.plan(out) if s.name == name]
    return step.argv


def test_the_plan_compares_like_with_like_using_flags_the_labs_accept(tmp_path):
    def cifar(name: str) -> cifar10.TrainConfig:
        argv = step_argv(name, tmp_path)
        assert argv[1:3] == ["-m", "labs.cifar10"]
        return parse_config(cifar10.TrainConfig, argv[3:], presets={"smoke": cifar10.SMOKE})

    fp32, bf16 = cifar("cifar-fp32"), cifar("cifar-bf16-cl")
    assert (fp32.precision, fp32.channels_last) == ("fp32", False)
    assert (bf16.precision, bf16.channels_last) == ("bf16", True)
    same = {"epochs", "batch_size", "train_subset", "width", "device", "data_dir", "seed"}
    assert {k: getattr(fp32, k) for k in same} == {k: getattr(bf16, k) for k in same}
    assert fp32.device == "cuda" and not fp32.smoke  # the lab's real model, not the smoke one

    argv = step_argv("lm-bf16", tmp_path)
    lm_cfg = parse_config(lm.LMConfig, argv[3:], presets={"smoke": lm.SMOKE})
    assert (lm_cfg.precision, lm_cfg.device, lm_cfg.smoke) == ("bf16", "cuda", False)

    lora = step_argv("lora-vs-qlora", tmp_path)
    assert lora[1] == "benchmarks/gpu_lora_qlora.py" and (REPO / lora[1]).is_file()
    for stem in acceptance.NOTEBOOKS:
        path = REPO / "notebooks" / f"{stem}.ipynb"
        params = acceptance.notebook_parameters(path, DEVICE="cuda", NO_SUCH_PARAMETER=1)
        assert params["SMOKE"] is True and "NO_SUCH_PARAMETER" not in params
    assert acceptance.notebook_parameters(
        REPO / "notebooks" / "01_cifar10_single_gpu.ipynb", DEVICE="cuda"
    ) == {"SMOKE": True, "DEVICE": "cuda"}


def test_mfu_counts_weights_and_attention_flops():
    result = {"params": 100_000_000, "tokens_per_s": 100_000.0}
    # (6 * 1e8 + 12 layers * 12 * 1024 dim * 1024 tokens) FLOPs/token * 1e5 tokens/s / 1e15
    assert acceptance.lm_mfu(result, 1e15) == pytest.approx(0.0751, abs=1e-4)
    assert acceptance.lm_mfu(result, None) is None  # unknown GPU: no MFU rather than a guess


def fake_step(name: str, code: str, **kw) -> acceptance.Step:
    return acceptance.Step(
        name, f"{name} (a stand-in)", [sys.executable, "-c", code], HANG_GUARD_S,
        acceptance.parse_file(f"{name}.json"), **kw,
    )  # fmt: skip


def test_the_runner_records_each_outcome_and_keeps_its_budget(tmp_path, monkeypatch):
    out = tmp_path / "acc"
    write = f"import json; json.dump({{'x': 1}}, open({str(out / 'good.json')!r}, 'w'))"
    steps = [
        fake_step("good", write),
        fake_step("broken", "raise SystemExit(5)"),
        fake_step("needs-more", "pass", needs=("no_such_module_for_this_test",)),
    ]
    monkeypatch.setattr(acceptance, "cuda_state", lambda: (True, "a pretend GPU"))
    monkeypatch.setattr(acceptance, "plan", lambda out: steps)
    report = acceptance.accept(out, budget_s=HANG_GUARD_S, dry_run=False)
    got = {s["name"]: (s["status"], s["numbers"]) for s in report["steps"]}
    assert got == {
        "good": ("ok", {"x": 1}),
        "broken": ("failed", {}),
        "needs-more": ("skipped", {}),
    }
    assert report["status"] == "incomplete"
    assert "exit 5" in report["steps"][1]["reason"]
    assert "no_such_module_for_this_test" in report["steps"][2]["reason"]
    assert json.loads((out / "acceptance.json").read_text()) == report

    steps[:] = [fake_step("late", write)]
    report = acceptance.accept(out, budget_s=0, dry_run=False)
    assert report["steps"][0]["status"] == "skipped" and "budget" in report["steps"][0]["reason"]
    assert "budget" in (out / "acceptance.md").read_text()
