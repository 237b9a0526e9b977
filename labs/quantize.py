"""Post-training quantization: the same model in fp32, bf16, int8 and nf4; size, speed and quality.

What it does: loads a causal LM (by default the tiny offline model; `--model-dir runs/lora/merged`
takes the fine-tuned model labs/finetune.py saved; `--model-dir Qwen/Qwen2.5-0.5B-Instruct` a hub
model) in each format of `--formats`, saves it, and measures

  * size on disk of the saved weights (safetensors, or torch.save for dynamic int8),
  * latency of one forward pass over a batch of `--batch-size` held-out questions (median of
    `--latency-repeats`, after a warm-up),
  * eval loss and perplexity on the answers of the held-out questions, and the perplexity change
    against fp32: the price of the compression.

Formats:
  fp32          the reference
  bf16          16-bit floats: half the bytes, same exponent range as fp32
  int8-dynamic  `torch.ao.quantization.quantize_dynamic`: int8 weights, activations quantized per
                batch on the fly, int8 GEMMs (CPU, fbgemm). Deprecated in torch 2.13 in favour of
                torchao (not a course dependency); skipped with a printed reason where absent.
  int8-bnb      bitsandbytes LLM.int8 weight storage (`load_in_8bit`), 16-bit matmuls
  nf4           bitsandbytes 4-bit NormalFloat with double quantization (QLoRA's storage format)

Run (CPU, a few seconds after imports):

    python -m labs.quantize --out-dir runs/quantize --smoke
    python -m labs.quantize --model-dir runs/lora/merged --out-dir runs/quantize-lora

Writes `OUT/result.json` ({"rows": [...]}, one row per format) and prints a table. Exit code 2 =
configuration error. Measured here (2-core CPU VM shared with other jobs, torch 2.13.0+cpu, 1
thread; the tiny model after notebook 07's QLoRA smoke run, 48 held-out questions, batch 16):

    format        size on disk   vs fp32   latency/batch   perplexity   change
    fp32          1,741,376 B    1.00      42 ms           2.954        -
    bf16            871,744 B    0.50      297 ms          2.954        +0.01%
    int8-dynamic    717,656 B    0.41      57 ms           2.964        +0.36%
    int8-bnb        647,974 B    0.37      92 ms           2.953        -0.01%
    nf4             482,611 B    0.28      38 ms           2.982        +0.97%

On a CPU bf16 matmuls have no fast kernels here (slower than fp32), and the tiny model's
embedding (kept in 16/32 bit by every format) limits the size ratios; on a GPU and a 0.5B+ model
the int8/nf4 sizes approach 1/4 and 1/8 of fp32. Latencies on this shared machine are noisy.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from labs.common import instructions
from labs.common.config import ConfigError, param, parse_config
from labs.common.metrics import write_json_atomic
from labs.finetune import (
    evaluate,
    format_table,
    load_model,
    load_tokenizer,
    quantization_config,
    quiet_transformers,
    resolve_model_path,
    save_dir_atomic,
    tokenized_split,
)

EXIT_OK = 0
EXIT_CONFIG = 2
FORMATS = ("fp32", "bf16", "int8-dynamic", "int8-bnb", "nf4")


@dataclass
class QuantizeConfig:
    """Every knob of the quantization lab (`python -m labs.quantize --help`)."""

    model_dir: str = param("", "model folder or hub id; empty = the tiny offline model")
    model_cache: str = param(".course/models", "folder for the tiny model (built once, reused)")
    out_dir: str = param("runs/quantize", "one saved model per format + result.json")
    formats: str = param(",".join(FORMATS), "comma-separated subset of " + ", ".join(FORMATS))
    eval_examples: int = param(200, "held-out questions for loss/perplexity")
    max_length: int = param(256, "tokens per example")
    batch_size: int = param(16, "examples per forward pass (latency is per batch)")
    latency_repeats: int = param(10, "timed forward passes per format; the median is reported")
    device: Literal["cpu", "cuda"] = param(
        "cpu", "where to measure; int8-dynamic runs on CPU only (it is skipped on cuda)"
    )
    num_threads: int = param(0, "CPU threads; 0 = OMP_NUM_THREADS if set, else all cores")
    seed: int = param(0, "seed of the eval questions (use the fine-tuning seed: held-out data)")
    smoke: bool = param(False, "preset: 48 questions, 3 latency repeats")

    def __post_init__(self) -> None:
        for name in "eval_examples max_length batch_size latency_repeats".split():
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1 (got {getattr(self, name)})")
        if self.num_threads < 0:
            raise ConfigError("num_threads", f"must be >= 0 (got {self.num_threads})")
        chosen = [f.strip() for f in self.formats.split(",") if f.strip()]
        unknown = sorted(set(chosen) - set(FORMATS))
        if unknown or not chosen:
            raise ConfigError("formats", f"unknown {unknown or 'empty'}; choose from {FORMATS}")
        if "fp32" not in chosen:
            raise ConfigError("formats", "include fp32: the other formats are compared with it")

    def format_list(self) -> list[str]:
        return [f.strip() for f in self.formats.split(",") if f.strip()]


SMOKE: dict[str, Any] = dict(eval_examples=48, latency_repeats=3, num_threads=1)


def dynamic_int8(model: Any) -> Any:
    """int8 dynamic quantization of every nn.Linear (torch.ao eager mode); None when torch lacks it."""
    quantize_dynamic = getattr(getattr(torch, "ao", None), "quantization", None)
    quantize_dynamic = getattr(quantize_dynamic, "quantize_dynamic", None)
    if quantize_dynamic is None:
        return None
    return quantize_dynamic(model.eval(), {torch.nn.Linear}, dtype=torch.qint8)


def load_format(fmt: str, path: str, device: torch.device) -> tuple[Any, str | None]:
    """(model, None) in format `fmt`, or (None, why it was skipped)."""
    compute = torch.bfloat16 if device.type == "cuda" else torch.float32
    if fmt == "fp32":
        return load_model(path, device, torch.float32), None
    if fmt == "bf16":
        return load_model(path, device, torch.bfloat16), None
    if fmt == "int8-dynamic":
        if device.type != "cpu":
            return None, "torch dynamic int8 kernels (fbgemm/qnnpack) run on CPU only"
        model = dynamic_int8(load_model(path, device, torch.float32))
        if model is None:
            return None, f"torch {torch.__version__} has no torch.ao.quantization.quantize_dynamic"
        return model, None
    if fmt == "int8-bnb":
        return load_model(path, device, torch.float32, quantization_config("int8", compute)), None
    return load_model(path, device, torch.float32, quantization_config("nf4", compute)), None


def save_format(fmt: str, model: Any, folder: Path) -> int:
    """Save the model's weights to `folder` and return their size on disk in bytes."""

    def save(d: Path) -> None:
        if fmt == "int8-dynamic":  # packed int8 params are not a safetensors format
            torch.save(model.state_dict(), d / "model.pt")
        else:
            model.save_pretrained(d, safe_serialization=True)

    save_dir_atomic(folder, save)
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".pt", ".safetensors"))


@torch.no_grad()
def latency_ms(model: Any, batch: dict[str, torch.Tensor], repeats: int) -> float:
    """Median wall time of one forward pass over `batch`, in milliseconds (after one warm-up)."""
    model.eval()
    times = []
    for i in range(repeats + 1):
        if batch["input_ids"].is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        if batch["input_ids"].is_cuda:
            torch.cuda.synchronize()
        if i:
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def run(cfg: QuantizeConfig, log: Any = print) -> dict[str, Any]:
    """Measure every format; returns (and writes) the result."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    elif os.environ.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda requested but torch.cuda.is_available() is False")
    quiet_transformers()
    device = torch.device(cfg.device)
    out = Path(cfg.out_dir)
    path = resolve_model_path(cfg.model_dir, cfg.model_cache, log=log)
    tokenizer = load_tokenizer(path)
    _, eval_ex = instructions.make_examples(1, cfg.eval_examples, cfg.seed)
    rows_tok = tokenized_split(tokenizer, eval_ex, cfg.max_length)
    batch = instructions.collate(rows_tok[: cfg.batch_size], tokenizer.pad_token_id)
    batch = {k: v.to(device) for k, v in batch.items()}
    formats = cfg.format_list()
    rows: list[dict[str, Any]] = []
    for i, fmt in enumerate(formats, 1):
        model, skipped = load_format(fmt, path, device)
        if model is None:
            log(f"step {i}/{len(formats)} format {fmt} skipped: {skipped}", flush=True)
            rows.append({"format": fmt, "skipped": skipped})
            continue
        size = save_format(fmt, model, out / fmt)
        ms = latency_ms(model, batch, cfg.latency_repeats)
        ev = evaluate(model, rows_tok, tokenizer.pad_token_id, device, cfg.batch_size)
        rows.append(
            {
                "format": fmt,
                "size_bytes": size,
                "latency_ms": round(ms, 2),
                "eval_loss": round(ev["loss"], 4),
                "perplexity": round(ev["perplexity"], 4),
            }
        )
        log(
            f"step {i}/{len(formats)} format {fmt} size {size} B latency {ms:.1f} ms "
            f"eval_loss {ev['loss']:.4f} perplexity {ev['perplexity']:.3f}",
            flush=True,
        )
        del model
    ref = next(r for r in rows if r["format"] == "fp32")
    for r in rows:
        if "skipped" not in r:
            r["size_vs_fp32"] = round(r["size_bytes"] / ref["size_bytes"], 4)
            r["ppl_delta_pct"] = round(100 * (r["perplexity"] / ref["perplexity"] - 1), 3)
    result = {"model": cfg.model_dir or Path(path).name, "device": device.type, "rows": rows}
    write_json_atomic(out / "result.json", result)
    columns = ["format", "size_bytes", "size_vs_fp32", "latency_ms", "perplexity", "ppl_delta_pct"]
    log("post-training quantization:\n" + format_table(rows, columns + ["skipped"]), flush=True)
    log(f"done formats {len(rows)} model {result['model']}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0 or 2)."""
    try:
        cfg = parse_config(
            QuantizeConfig,
            argv,
            presets={"smoke": SMOKE},
            prog="python -m labs.quantize",
            description=__doc__,
        )
        run(cfg)
        return EXIT_OK
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
