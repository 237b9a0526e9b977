"""GPU acceptance on one GPU (an H200 here): what the labs and notebooks do with a real device.

    benchmarks/gpu/acceptance.sh [--out build/gpu-acceptance] [--budget-s 480] [--dry-run]

One run, about 6 minutes on one H200, writes `OUT/acceptance.json` and `OUT/acceptance.md`:

  cifar-fp32            labs.cifar10, fp32, NCHW: images/s and time per epoch (the baseline)
  cifar-bf16-cl         the same run in bf16 autocast + channels_last (the lab's GPU default)
  cifar-compile         the lab's ResNet, bf16 + channels_last, eager vs torch.compile: does it pay?
  lm-bf16               labs.lm_pretrain, a ~150M-parameter Llama in bf16: tokens/s and MFU
  lora-vs-qlora         benchmarks/gpu_lora_qlora.py: a random 1.1B Llama, peak memory and step time
  notebook-01/06/07     the notebooks, SMOKE, with DEVICE="cuda" where the notebook has DEVICE

Nothing is downloaded: the CIFAR data is the synthetic set (real CIFAR-10's size, 50000 + 10000
images), the models are built locally. Every step has a hang guard and the whole run a budget: a
step that would start after the budget is skipped with that reason, so the report is always
written (after every step, so a run cut short still leaves what it measured). A step whose Python
packages are missing in the image is skipped and says which.

Without CUDA (or with --dry-run) nothing runs: the report lists every step with its command and
"skipped: no CUDA ..." (or "skipped: dry run"), and the script exits 0. tests/benchmarks runs that.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = ("01_cifar10_single_gpu", "06_lora", "07_qlora_quantization")
# CIFAR: real CIFAR-10's size so that "time per epoch" means what it says; batch 512 keeps a big
# GPU busy with the lab's default ResNet (width 64).
CIFAR_DATA = ["--synthetic-train", "50000", "--synthetic-test", "10000"]
CIFAR_RUN = "--epochs 3 --batch-size 512 --log-every 20 --checkpoint-every 0 --device cuda".split()
# LM: big enough that the GPU, not Python, is the limit (~150M parameters, 16k tokens a step).
LM_RUN = (
    "--dim 1024 --n-layers 12 --n-heads 16 --n-kv-heads 8 --seq-len 1024 --batch-size 16 "
    "--corpus-tokens 2000000 --steps 120 --warmup-steps 10 --log-every 20 --checkpoint-every 0 "
    "--precision bf16 --device cuda"
).split()


@dataclass
class Step:
    name: str
    what: str
    argv: list[str]
    timeout_s: float
    parse: Callable[[Step, Path], dict[str, Any]]
    needs: tuple[str, ...] = ()  # Python packages the step imports
    status: str = "planned"  # planned, ok, failed, timeout, skipped
    reason: str = ""
    wall_s: float = 0.0
    numbers: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "what": self.what,
            "command": " ".join(self.argv),
            "timeout_s": self.timeout_s,
            "needs": list(self.needs),
            "status": self.status,
            "reason": self.reason,
            "wall_s": round(self.wall_s, 1),
            "numbers": self.numbers,
        }


# ------------------------------------------------------------------------------------------------
# What each step reports, read from the files the labs and notebooks write.


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def parse_cifar(step: Step, out: Path) -> dict[str, Any]:
    result = _json(out / step.name / "result.json")
    records = [json.loads(line) for line in (out / step.name / "metrics.jsonl").open()]
    train = [r for r in records if r.get("kind") == "train" and r.get("images_per_s")]
    steady = [r["images_per_s"] for r in train[1:]] or [r["images_per_s"] for r in train]
    return {
        "images_per_s": result["images_per_s"],
        "images_per_s_steady": round(sorted(steady)[len(steady) // 2], 1) if steady else None,
        "epoch_s": round(result["train_time_s"] / result["epochs"], 2),
        "test_acc": result["test_acc"],
    }


def parse_file(name: str) -> Callable[[Step, Path], dict[str, Any]]:
    return lambda step, out: _json(out / name)


def lm_mfu(result: dict[str, Any], peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation: (6 N + 12 L d T) FLOPs per token (weights forward + backward, and
    attention over T tokens; PaLM appendix B) times tokens/s, over the GPU's dense bf16 peak."""
    if not peak_flops:
        return None
    layers, dim, seq = (
        int(LM_RUN[LM_RUN.index(f) + 1]) for f in ("--n-layers", "--dim", "--seq-len")
    )
    per_token = 6 * result["params"] + 12 * layers * dim * seq
    return round(result["tokens_per_s"] * per_token / peak_flops, 4)


def parse_lm(step: Step, out: Path) -> dict[str, Any]:
    result = _json(out / step.name / "result.json")
    return {
        "tokens_per_s": result["tokens_per_s"],
        "params": result["params"],
        "final_loss": result["final_loss"],
        "mfu": lm_mfu(result, gpu_peak_flops()),
    }


def parse_notebook(step: Step, out: Path) -> dict[str, Any]:
    stem = step.name.removeprefix("notebook-")
    (outcome,) = (out / "notebooks" / "outcomes").glob(f"{stem}*.json")
    return _json(outcome)["numbers"]


def gpu_peak_flops() -> float | None:
    import torch

    sys.path.insert(0, str(REPO))
    from labs.common.metrics import PEAK_BF16_TFLOPS

    name = torch.cuda.get_device_name()
    return next((t * 1e12 for k, t in PEAK_BF16_TFLOPS.items() if k in name), None)


# ------------------------------------------------------------------------------------------------
# The plan.


def plan(out: Path, python: str = sys.executable) -> list[Step]:
    data = out / "data"
    cifar = [python, "-m", "labs.cifar10", f"--data-dir={data}", "--dataset=synthetic"]
    steps = [
        Step(
            "prepare-data",
            "synthetic CIFAR at real CIFAR-10 size (50000 + 10000 images), no download",
            [python, "-m", "labs.prepare_data", f"--data-dir={data}", "--dataset=synthetic"]
            + CIFAR_DATA,
            300,
            lambda step, out: {"images": 60000},
        ),
        Step(
            "cifar-fp32",
            "labs.cifar10 in fp32, NCHW: the baseline",
            cifar
            + [f"--out-dir={out / 'cifar-fp32'}", "--precision=fp32", "--no-channels-last"]
            + CIFAR_RUN,
            300,
            parse_cifar,
        ),
        Step(
            "cifar-bf16-cl",
            "labs.cifar10 in bf16 autocast + channels_last (the lab's GPU default)",
            cifar
            + [f"--out-dir={out / 'cifar-bf16-cl'}", "--precision=bf16", "--channels-last"]
            + CIFAR_RUN,
            300,
            parse_cifar,
        ),
        Step(
            "cifar-compile",
            "the lab's ResNet, bf16 + channels_last, eager vs torch.compile (compile time apart)",
            [python, "-m", "benchmarks.gpu.cifar_compile", f"--out={out / 'cifar-compile.json'}"],
            300,
            parse_file("cifar-compile.json"),
        ),
        Step(
            "lm-bf16",
            "labs.lm_pretrain, ~150M-parameter Llama, bf16: tokens/s and MFU",
            [python, "-m", "labs.lm_pretrain", f"--out-dir={out / 'lm-bf16'}"] + LM_RUN,
            300,
            parse_lm,
        ),
        Step(
            "lora-vs-qlora",
            "random 1.1B Llama: LoRA (bf16 base) vs QLoRA (nf4 base), peak memory and step time",
            [python, "benchmarks/gpu_lora_qlora.py", f"--out={out / 'lora-vs-qlora.json'}"],
            400,
            parse_file("lora-vs-qlora.json"),
            needs=("transformers", "peft", "bitsandbytes", "safetensors"),
        ),
    ]
    for stem in NOTEBOOKS:
        steps.append(
            Step(
                f"notebook-{stem[:2]}",
                f"notebooks/{stem}.ipynb, SMOKE, DEVICE='cuda' where the notebook has DEVICE",
                [python, "-m", "benchmarks.gpu.acceptance", "notebook", stem, f"--out={out}"],
                400,
                parse_notebook,
                needs=("papermill", "nbformat", "jupytext", "ipykernel", "matplotlib")
                + (("transformers", "peft") if stem[:2] in ("06", "07") else ()),
            )
        )
    return steps


def cuda_state() -> tuple[bool, str]:
    """(usable, description) without failing where torch itself is missing."""
    try:
        import torch
    except ImportError as e:
        return False, f"torch is not importable ({e})"
    if not torch.cuda.is_available():
        return False, f"torch {torch.__version__}, torch.cuda.is_available() is False"
    name = torch.cuda.get_device_name()
    return True, f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}"


# ------------------------------------------------------------------------------------------------
# Running and reporting.


def missing(modules: tuple[str, ...]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def run_step(step: Step, out: Path, env: dict[str, str]) -> None:
    gone = missing(step.needs)
    if gone:
        step.status, step.reason = "skipped", f"skipped: not installed in this image: {gone}"
        return
    log = out / "logs" / f"{step.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with log.open("w") as f:
        try:
            proc = subprocess.run(
                step.argv, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT,
                timeout=step.timeout_s,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            proc = None
    step.wall_s = time.monotonic() - start
    tail = log.read_text().splitlines()[-3:]
    if proc is None:
        step.status, step.reason = "timeout", f"hang guard {step.timeout_s:.0f} s passed; {tail}"
    elif proc.returncode != 0:
        step.status, step.reason = "failed", f"exit {proc.returncode}: {tail}"
    else:
        try:
            step.numbers = step.parse(step, out)
            step.status = "ok"
        except Exception as e:  # noqa: BLE001 - a report with the reason beats a crashed run
            step.status, step.reason = "failed", f"could not read its result: {e!r}"


def summary(steps: list[Step]) -> dict[str, Any]:
    by = {s.name: s.numbers for s in steps if s.status == "ok"}
    out: dict[str, Any] = {}
    if "cifar-fp32" in by and "cifar-bf16-cl" in by:
        out["cifar_bf16_cl_speedup"] = round(
            by["cifar-bf16-cl"]["images_per_s"] / by["cifar-fp32"]["images_per_s"], 2
        )
    if "cifar-compile" in by:
        out["compile_pays"] = by["cifar-compile"].get("pays")
    if "lm-bf16" in by:
        out["lm_tokens_per_s"], out["lm_mfu"] = by["lm-bf16"]["tokens_per_s"], by["lm-bf16"]["mfu"]
    if "lora-vs-qlora" in by:
        out["qlora_vs_lora_peak"] = by["lora-vs-qlora"].get("qlora_vs_lora_peak")
    return out


def write_report(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "acceptance.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# GPU acceptance",
        "",
        f"- device: {report['device']}",
        f"- result: **{report['reason'] or report['status']}**",
        f"- wall time: {report['wall_s']} s of a {report['budget_s']} s budget",
        "",
        "| step | what | status | numbers | wall (s) |",
        "|---|---|---|---|---|",
    ]
    for s in report["steps"]:
        numbers = ", ".join(f"{k} {v}" for k, v in s["numbers"].items() if not isinstance(v, list))
        lines.append(
            f"| {s['name']} | {s['what']} | {s['status']}{': ' + s['reason'] if s['reason'] else ''}"
            f" | {numbers} | {s['wall_s']} |"
        )
    if report["summary"]:
        lines += ["", "Summary: " + ", ".join(f"{k} {v}" for k, v in report["summary"].items())]
    lines += ["", "Commands (from the repository root):", ""]
    lines += [f"    {s['command']}" for s in report["steps"]]
    (out / "acceptance.md").write_text("\n".join(lines) + "\n")


def accept(out: Path, budget_s: float, dry_run: bool) -> dict[str, Any]:
    usable, device = cuda_state()
    steps = plan(out)
    reason = (
        f"skipped: no CUDA ({device})" if not usable else ("skipped: dry run" if dry_run else "")
    )
    report = {
        "device": device,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "status": "skipped" if reason else "running",
        "reason": reason,
        "budget_s": budget_s,
        "wall_s": 0.0,
        "steps": [],
        "summary": {},
    }
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "helpers"), str(REPO)]),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "MPLBACKEND": "Agg",
    }
    start = time.monotonic()
    for step in steps:
        if reason:
            step.status = "skipped"  # the run's reason says why
        elif time.monotonic() - start + 30 > budget_s:
            step.status, step.reason = "skipped", f"skipped: the {budget_s:.0f} s budget is spent"
        else:
            print(f"== {step.name}: {' '.join(step.argv)}", flush=True)
            run_step(step, out, env)
            print(f"   {step.status} {step.wall_s:.1f} s {step.numbers or step.reason}", flush=True)
        report["steps"] = [s.as_dict() for s in steps]
        report["wall_s"] = round(time.monotonic() - start, 1)
        report["summary"] = summary(steps)
        write_report(out, report)
    if not reason:
        report["status"] = "ok" if all(s.status == "ok" for s in steps) else "incomplete"
        write_report(out, report)
    return report


# ------------------------------------------------------------------------------------------------
# `acceptance notebook STEM`: one notebook with the GPU's parameters (a step of the plan).


def notebook_parameters(path: Path, **wanted: Any) -> dict[str, Any]:
    """SMOKE=True plus those of `wanted` that the notebook's parameters cell declares."""
    import nbformat

    cells = nbformat.read(path, as_version=4).cells
    declared = next(c.source for c in cells if "parameters" in c.metadata.get("tags", []))
    given = {k: v for k, v in wanted.items() if re.search(rf"^{k}\s*=", declared, re.M)}
    return {"SMOKE": True, **given}


def run_notebook(stem: str, out: Path) -> int:
    from kubecourse.course import execute

    path = REPO / "notebooks" / f"{stem}.ipynb"
    parameters = notebook_parameters(path, DEVICE="cuda")
    print(f"{path.name}: parameters {parameters}", flush=True)
    execute(path, out / "notebooks", parameters=parameters, cell_timeout_s=600)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", nargs="?", default="all", help="all (default) or notebook")
    parser.add_argument("stem", nargs="?", help="with `notebook`: e.g. 01_cifar10_single_gpu")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "gpu-acceptance")
    parser.add_argument("--budget-s", type=float, default=480, help="whole run (8 min goal)")
    parser.add_argument("--dry-run", action="store_true", help="write the plan, run nothing")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if args.what == "notebook":
        return run_notebook(args.stem, out)
    report = accept(out, args.budget_s, args.dry_run)
    print(f"{report['status']}{': ' + report['reason'] if report['reason'] else ''}")
    print(f"wrote {out / 'acceptance.json'} and {out / 'acceptance.md'}")
    return 0 if report["status"] in ("ok", "skipped") else 1


if __name__ == "__main__":
    sys.exit(main())
