"""GPU only: peak memory and step time of LoRA (bf16 base) vs QLoRA (nf4 base) on one GPU.

Not part of `python -m benchmarks` (which runs on CPU machines): run it on a GPU node,

    python benchmarks/gpu_lora_qlora.py                   # a random 1.1B Llama (no download)
    python benchmarks/gpu_lora_qlora.py --model-id Qwen/Qwen2.5-0.5B-Instruct   # a hub model

It builds (or loads) the model, saves nothing but a temporary copy, and for each method loads the
base through `from_pretrained` exactly as labs/finetune.py does (bf16 for LoRA; 4-bit NF4 + double
quantization + bf16 compute for QLoRA), adds LoRA r=8 on every decoder linear layer, runs a few
AdamW steps on random tokens, and reports `torch.cuda.max_memory_allocated()` over the training
steps, the weight bytes on the GPU after loading, and the median step time. A few minutes on one
GPU. On a machine without CUDA it prints why and exits 0 (nothing to measure).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

# A TinyLlama-1.1B-shaped model: big enough for the 4-bit saving to show, small enough for any GPU.
RANDOM_MODEL = dict(
    vocab_size=32000,
    hidden_size=2048,
    intermediate_size=5632,
    num_hidden_layers=22,
    num_attention_heads=32,
    num_key_value_heads=4,
)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def measure(path: str, method: str, batch: int, seq: int, steps: int, checkpointing: bool) -> dict:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    kwargs: dict = {"dtype": torch.bfloat16, "device_map": {"": 0}}
    if method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    weights = torch.cuda.memory_allocated() - before
    if method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    elif checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, seq), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 1):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() - before
    del model, optimizer
    torch.cuda.empty_cache()
    return {
        "method": method,
        "weights_bytes": weights,
        "peak_train_bytes": peak,
        "step_s": round(statistics.median(times), 4),
        "loss": round(loss.item(), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-id", default="", help="hub id or folder; empty = random 1.1B Llama"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("build/bench/gpu_lora_qlora.json"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            f"skipped: no CUDA device (torch {torch.__version__}); this benchmark measures GPU memory"
        )
        return 0
    import transformers

    transformers.utils.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model_id
        if not path:
            from transformers import LlamaConfig, LlamaForCausalLM

            torch.manual_seed(0)
            with torch.device("cuda"):
                model = LlamaForCausalLM(LlamaConfig(**RANDOM_MODEL)).to(torch.bfloat16)
            model.save_pretrained(tmp)
            del model
            torch.cuda.empty_cache()
            path = tmp
        rows = [
            measure(path, m, args.batch_size, args.seq_len, args.steps, args.gradient_checkpointing)
            for m in ("lora", "qlora")
        ]
    result = {
        "gpu": torch.cuda.get_device_name(),
        "model": args.model_id or "random Llama 1.1B (TinyLlama shape)",
        "batch": [args.batch_size, args.seq_len],
        "rows": rows,
        "qlora_vs_lora_peak": round(rows[1]["peak_train_bytes"] / rows[0]["peak_train_bytes"], 3),
        "qlora_vs_lora_weights": round(rows[1]["weights_bytes"] / rows[0]["weights_bytes"], 3),
    }
    for r in rows:
        print(
            f"{r['method']:6} weights {r['weights_bytes'] / 2**30:.2f} GiB  peak "
            f"{r['peak_train_bytes'] / 2**30:.2f} GiB  step {r['step_s'] * 1000:.0f} ms"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
