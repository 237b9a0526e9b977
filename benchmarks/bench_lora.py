"""LoRA vs full fine-tuning on the same model: trainable parameters, optimizer state, step time.

Two measurements, both with peft's LoRA exactly as labs/finetune.py configures it (r=8, alpha=16,
every linear layer of the decoder: q/k/v/o/gate/up/down):

1. *Trainable share at a realistic size*: the Qwen2.5-0.5B and Llama-3.2-1B architectures built
   on PyTorch's `meta` device (shapes only, no memory, no download), counted with and without
   LoRA. Goal: <= 1% of the parameters trainable.
2. *Cost per step on this machine*: a randomly initialised 8-layer Llama (d_model 512, ~27M
   parameters, the largest that steps in seconds on a 2-core CPU) trained for a few AdamW steps,
   full fine-tuning vs LoRA: optimizer-state bytes (read from the optimizer after a step) and the
   median step time (1 thread, steps of the two alternating: fair on a shared machine). Goal: LoRA <= 0.6x the full
   fine-tune's step time.

Run: `python -m benchmarks --only lora` (or `make bench`). GPU memory (LoRA vs QLoRA) is measured
by benchmarks/gpu_lora_qlora.py on a GPU machine.
"""

from __future__ import annotations

import statistics
import time

import torch

R, ALPHA = 8, 16
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Architectures of real small models (from their published config.json), built without weights.
REALISTIC = {
    "Qwen2.5-0.5B": dict(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        attention_bias=True,
    ),
    "Llama-3.2-1B": dict(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=True,
    ),
}
CPU_MODEL = dict(
    vocab_size=8192,
    hidden_size=512,
    intermediate_size=1408,
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=2,
    tie_word_embeddings=True,
)
BATCH, SEQ, STEPS = 4, 128, 3


def _lora(model):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS)
    return get_peft_model(model, config)


def _counts(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def trainable_share(arch: dict) -> dict:
    """Parameters of an architecture with LoRA, built on the meta device (no memory used)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        model = _lora(LlamaForCausalLM(LlamaConfig(**arch)))
    trainable, total = _counts(model)
    return {"trainable": trainable, "total": total, "pct": round(100 * trainable / total, 3)}


def _optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(
        t.numel() * t.element_size()
        for state in optimizer.state.values()
        for t in state.values()
        if isinstance(t, torch.Tensor)
    )


def _build(method: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**CPU_MODEL))
    if method == "lora":
        model = _lora(model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    return model, torch.optim.AdamW(params, lr=1e-4)


def _step(model, optimizer, ids: torch.Tensor) -> float:
    t0 = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def step_costs() -> dict[str, dict]:
    """Median AdamW step time and optimizer-state bytes of a full fine-tune and of LoRA on
    CPU_MODEL. Steps alternate between the two, so a busy machine slows both alike."""
    torch.set_num_threads(1)  # on a shared 2-core box, 2 threads spin against other processes
    runs = {method: _build(method) for method in ("full", "lora")}
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, CPU_MODEL["vocab_size"], (BATCH, SEQ), generator=gen)
    times: dict[str, list[float]] = {"full": [], "lora": []}
    for i in range(STEPS + 1):  # the first step allocates optimizer state: not timed
        for method, (model, optimizer) in runs.items():
            seconds = _step(model, optimizer, ids)
            if i:
                times[method].append(seconds)
    out = {}
    for method, (model, optimizer) in runs.items():
        trainable, total = _counts(model)
        out[method] = {
            "trainable": trainable,
            "total": total,
            "optimizer_bytes": _optimizer_bytes(optimizer),
            "step_s": round(statistics.median(times[method]), 3),
            "steps_s": [round(t, 3) for t in times[method]],
        }
    return out


def run() -> dict:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    shares = {name: trainable_share(arch) for name, arch in REALISTIC.items()}
    costs = step_costs()
    full, lora = costs["full"], costs["lora"]
    ratio = lora["step_s"] / full["step_s"]
    share_text = ", ".join(f"{n} {s['pct']}%" for n, s in shares.items())
    return {
        "name": "LoRA vs full fine-tuning (r=8, all decoder linears)",
        "realistic_trainable": shares,
        "cpu_model": {"full": full, "lora": lora},
        "step_time_ratio": round(ratio, 3),
        "optimizer_state_ratio": round(lora["optimizer_bytes"] / full["optimizer_bytes"], 5),
        "summary": (
            f"trainable: {share_text}; on a {full['total'] / 1e6:.0f}M model (CPU, batch "
            f"{BATCH}x{SEQ}): optimizer state {lora['optimizer_bytes'] / 2**20:.1f} vs "
            f"{full['optimizer_bytes'] / 2**20:.0f} MiB, step {lora['step_s']} vs "
            f"{full['step_s']} s = **{ratio:.2f}x**"
        ),
        "goal": "<= 1% trainable at 0.5B-1B; <= 0.6x step time",
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
