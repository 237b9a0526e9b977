"""Fine-tune a causal language model with LoRA or QLoRA (peft): one script for a CPU, torchrun, and a Job.

What it does: loads a model and its tokenizer with `from_pretrained` (by default a tiny Llama-style
model built offline by `labs/common/tiny_lm.py`; `--model-id Qwen/Qwen2.5-0.5B-Instruct` takes a
real one from the Hugging Face hub), the course's instruction data set (`labs/common/
instructions.py`, chat template, loss on the answer tokens only), then

  * `--method lora`: freezes the model and trains low-rank adapters (`--lora-r`, `--lora-alpha`,
    `--lora-dropout`, `--target-modules`) on its linear layers;
  * `--method qlora`: the same on a base model quantized to 4-bit NormalFloat with bitsandbytes
    (double quantization, `--compute-dtype`), prepared with `prepare_model_for_kbit_training`;
  * `--method full`: trains every weight (the baseline the benchmark compares against).

Training: AdamW, gradient accumulation, linear warmup + cosine decay; eval loss and perplexity on
held-out questions before and after, and greedy sample answers before/after. Afterwards it saves
the adapter (`OUT/adapter/adapter_model.safetensors`), reloads it onto a freshly loaded base model
and checks the outputs are identical, merges it into a full-precision base (`merge_and_unload`),
checks merged == unmerged within `--merge-tolerance`, and saves the merged model (`OUT/merged/`,
what labs/quantize.py compresses). `--memory-table` measures the bytes of the base weights in
fp32 / bf16 / int8 / nf4 from the actual (quantized) tensors; on a GPU the peak allocated memory of
a training step is recorded too (on a CPU the result says why it is absent).

Like labs/cifar10.py it checkpoints the trainable weights + optimizer + schedule atomically every
`--checkpoint-every` steps, resumes from the newest complete checkpoint in `OUT/checkpoints/`,
writes `OUT/metrics.jsonl` (live) and `OUT/result.json` (final), prints `step N/M loss ...` lines,
and on SIGTERM checkpoints and exits 143. Exit code 2 = configuration error.

One process (CPU smoke run: builds the tiny model into .course/models on first use):

    python -m labs.finetune --out-dir runs/lora --smoke
    python -m labs.finetune --out-dir runs/qlora --smoke --method qlora --memory-table

Several processes (DDP over the adapters; each rank gets its own micro-batches):

    torchrun --standalone --nproc-per-node=2 -m labs.finetune --out-dir runs/lora-ddp --smoke

A real model on a GPU (downloads once into $HF_HOME; set HF_TOKEN for gated models):

    python -m labs.finetune --model-id Qwen/Qwen2.5-0.5B-Instruct --method qlora \
        --out-dir runs/qwen-qlora --steps 300 --lr 2e-4 --gradient-checkpointing

Suggested small models (all use the Llama module names, so the default --target-modules fit):
Qwen/Qwen2.5-0.5B-Instruct, Qwen/Qwen2.5-1.5B-Instruct, HuggingFaceTB/SmolLM2-360M-Instruct,
meta-llama/Llama-3.2-1B-Instruct (gated: needs HF_TOKEN). On a cluster:
`kubectl apply -k manifests/03-finetune/` runs this script as a Job (model cache and adapter on a
PVC, the hub token from a Secret).

Measured here (2-core CPU VM shared with other jobs, torch 2.13.0+cpu, 1 thread): the `--smoke`
LoRA run (tiny model: 0.47M parameters, 2 layers; r=8 on all 7 linears = 7.9% trainable, since
LoRA grows with d_model and weights with its square: r=8 is 0.88% of Qwen2.5-0.5B) trains 50
steps in ~5-8 s (0.1 s/step; the process takes ~20 s of CPU with imports and checks); held-out eval
loss 3.07 -> 1.09 (perplexity 21.5 -> 3.0); reloaded adapter max |diff| 0, merged vs unmerged
max |diff| ~5e-6. QLoRA smoke: eval loss 3.04 -> 1.09; nf4 decoder linears = 0.279x their bf16
bytes. `torchrun --nproc-per-node=2 ... --smoke --steps=6` runs (gloo). GPU numbers are not
measured yet (benchmarks/gpu_lora_qlora.py measures LoRA vs QLoRA peak memory).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch.nn.parallel import DistributedDataParallel

from labs.common import checkpoint as ckpt
from labs.common import instructions
from labs.common.config import ConfigError, config_diff, param
from labs.common.distributed import (
    DistInfo,
    all_reduce,
    barrier,
    broadcast_object,
    cleanup,
    init_distributed,
    pick_device,
)
from labs.common.entry import EXIT_OK, EXIT_SIGTERM, StopFlag, run_main
from labs.common.metrics import MetricsLog, truncate_metrics, write_json_atomic

LLAMA_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


@dataclass
class FinetuneConfig:
    """Every knob of the lab. `python -m labs.finetune --help` is generated from this class."""

    # -- model and data ----------------------------------------------------------------------------
    model_id: str = param(
        "", "hub id or local folder; empty = the tiny model built offline into --model-cache"
    )
    model_cache: str = param(".course/models", "folder for the tiny model (built once, reused)")
    out_dir: str = param("runs/finetune", "checkpoints/, adapter/, merged/, metrics, result.json")
    train_examples: int = param(600, "generated training questions (instructions.py)")
    eval_examples: int = param(120, "held-out questions: eval loss, perplexity, samples")
    max_length: int = param(256, "tokens per example; longer ones are cut")
    # -- method ------------------------------------------------------------------------------------
    method: Literal["lora", "qlora", "full"] = param(
        "lora", "lora = adapters on a frozen base; qlora = on a 4-bit base; full = every weight"
    )
    lora_r: int = param(8, "rank of each adapter: trainable params grow linearly with it")
    lora_alpha: int = param(16, "adapter scale numerator: the update is (alpha / r) * B @ A")
    lora_dropout: float = param(0.05, "dropout on the adapter input: regularises small data sets")
    target_modules: str = param(
        LLAMA_TARGETS, "comma-separated linear layer names to adapt (or all-linear)"
    )
    quant_type: Literal["nf4", "fp4"] = param(
        "nf4", "qlora 4-bit format: nf4 = NormalFloat, matched to normally distributed weights"
    )
    double_quant: bool = param(
        True, "qlora: quantize the per-block scales too (~0.4 bit/param saved)"
    )
    compute_dtype: Literal["auto", "bf16", "fp16", "fp32"] = param(
        "auto", "dtype of matmuls on the dequantized weights (auto = bf16 on CUDA, fp32 on CPU)"
    )
    gradient_checkpointing: bool = param(
        False, "recompute activations in backward: less memory, ~30 percent more compute"
    )
    # -- schedule ----------------------------------------------------------------------------------
    steps: int = param(300, "optimizer steps; fixes the LR schedule length")
    batch_size: int = param(8, "examples per process per micro-batch")
    grad_accum_steps: int = param(2, "micro-batches per optimizer step (larger effective batch)")
    max_steps: int = param(0, "stop (with a checkpoint) after this many steps; 0 = no cap")
    lr: float = param(2e-4, "peak learning rate (LoRA tolerates ~10x a full fine-tune's)")
    weight_decay: float = param(0.0, "AdamW decoupled weight decay on the trainable weights")
    warmup_fraction: float = param(0.1, "fraction of steps with linear LR warmup")
    # -- evaluation and checks ---------------------------------------------------------------------
    samples: int = param(3, "held-out questions answered greedily before and after")
    max_new_tokens: int = param(32, "tokens generated per sample answer")
    eval_batch_size: int = param(16, "examples per eval forward pass")
    merge_tolerance: float = param(
        1e-3, "max |logit| difference allowed between merged and unmerged models (fp32)"
    )
    save_merged: bool = param(True, "save the merged full model to OUT/merged (for quantize.py)")
    memory_table: bool = param(
        False, "measure base-weight bytes in fp32/bf16/int8/nf4 (loads the model 4 times)"
    )
    # -- system ------------------------------------------------------------------------------------
    device: Literal["auto", "cpu", "cuda"] = param("auto", "auto = cuda when available")
    num_threads: int = param(0, "CPU threads; 0 = OMP_NUM_THREADS if set, else all cores")
    seed: int = param(0, "seeds data, adapter init and dropout: same seed, same run")
    log_every: int = param(10, "optimizer steps between train lines/records")
    checkpoint_every: int = param(100, "steps between checkpoints (0 = only at the end)")
    keep_checkpoints: int = param(2, "newest checkpoints kept")
    smoke: bool = param(
        False, "preset: a seconds-long CPU run on the tiny model; explicit flags win"
    )

    def __post_init__(self) -> None:
        positive = (
            "train_examples eval_examples max_length lora_r lora_alpha steps batch_size "
            "grad_accum_steps eval_batch_size max_new_tokens log_every keep_checkpoints"
        ).split()
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1 (got {getattr(self, name)})")
        for name in "max_steps samples num_threads checkpoint_every weight_decay".split():
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0 (got {getattr(self, name)})")
        if not self.lr > 0:
            raise ConfigError("lr", f"must be > 0 (got {self.lr})")
        for name in ("warmup_fraction", "lora_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(name, f"must be in [0, 1) (got {getattr(self, name)})")
        if not self.merge_tolerance > 0:
            raise ConfigError("merge_tolerance", f"must be > 0 (got {self.merge_tolerance})")
        if not [m for m in self.target_modules.split(",") if m.strip()]:
            raise ConfigError("target_modules", "name at least one module (e.g. q_proj,v_proj)")
        if self.samples > self.eval_examples:
            raise ConfigError("samples", f"{self.samples} > eval_examples {self.eval_examples}")


# ~5-8 s of training on one CPU core; held-out eval loss falls ~3x on the tiny model.
SMOKE: dict[str, Any] = dict(
    train_examples=384,
    eval_examples=48,
    steps=50,
    batch_size=8,
    grad_accum_steps=2,
    lr=5e-3,
    samples=3,
    max_new_tokens=24,
    log_every=5,
    checkpoint_every=25,
    num_threads=1,  # tiny matrices: a second thread costs more in synchronisation than it saves
)

RUNTIME_FIELDS = (
    "out_dir model_cache max_steps num_threads log_every checkpoint_every keep_checkpoints "
    "smoke device samples max_new_tokens eval_batch_size merge_tolerance save_merged memory_table"
).split()


# ------------------------------------------------------------------------------------------------
# Model and tokenizer: the same from_pretrained path for the tiny model and a hub model.


def quiet_transformers() -> None:
    """No per-weight progress bars or advisory warnings in the training log."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # bitsandbytes logs one line per int8 matmul when inputs are fp32 (they are cast to fp16).
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    warnings.filterwarnings(
        "ignore", message=".*is_gradient_checkpointing.*"
    )  # peft -> transformers
    warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*")
    warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")


def resolve_model_path(model_id: str, model_cache: str, log: Any = print) -> str:
    """`model_id` itself, or the tiny model's folder (built on first use) when it is empty."""
    if model_id:
        return model_id
    from labs.common.tiny_lm import ensure_tiny_lm

    return str(ensure_tiny_lm(model_cache, log=log))


def load_tokenizer(path: str) -> Any:
    """The model's tokenizer, with a pad token (many causal LMs ship without one)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, token=os.environ.get("HF_TOKEN") or None)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def quantization_config(
    kind: str, compute_dtype: torch.dtype, quant_type: str = "nf4", double=True
):
    """BitsAndBytesConfig for "nf4"/"fp4" (4-bit) or "int8" (LLM.int8 weights)."""
    from transformers import BitsAndBytesConfig

    if kind == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def load_model(
    path: str,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    quantize: Any = None,
) -> Any:
    """`AutoModelForCausalLM.from_pretrained` onto `device`, optionally quantized by bitsandbytes."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype, "token": os.environ.get("HF_TOKEN") or None}
    if quantize is not None:
        kwargs.update(quantization_config=quantize, device_map={"": device})
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if quantize is None:
        model.to(device)
    return model


def count_params(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit weights count as their unpacked size."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if p.__class__.__name__ == "Params4bit":
            n = math.prod(p.quant_state.shape)  # packed: two 4-bit values per stored byte
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def _tensor_bytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


def weight_bytes(model: Any) -> dict[str, int]:
    """Bytes the model's weights occupy, read from the tensors themselves.

    `total`: every parameter and buffer. `quantizable`: only the linear layers inside the decoder
    blocks, the ones bitsandbytes quantizes (embeddings, norms and the output head stay in 16/32
    bit). Quantization state counts too: 4-bit blocks' absmax scales (and, with double
    quantization, their own scales and code book), int8 rows' scales (SCB)."""
    total = quantizable = 0
    for name, module in model.named_modules():
        own = 0
        for p in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            own += _tensor_bytes(p)
            state = getattr(p, "quant_state", None)
            if state is not None:
                own += _tensor_bytes(state.absmax) + _tensor_bytes(state.code)
                if state.state2 is not None:
                    own += _tensor_bytes(state.state2.absmax) + _tensor_bytes(state.state2.code)
            own += _tensor_bytes(getattr(p, "SCB", None))
        total += own
        if ".layers." in f".{name}." and isinstance(getattr(module, "weight", None), torch.Tensor):
            if module.__class__.__name__ in ("Linear", "Linear4bit", "Linear8bitLt"):
                quantizable += own
    return {"total": total, "quantizable": quantizable}


def memory_table(path: str, device: torch.device) -> list[dict[str, Any]]:
    """Base-weight bytes of the same model loaded as fp32, bf16, int8 and nf4 (measured)."""
    rows = []
    compute = torch.bfloat16 if device.type == "cuda" else torch.float32
    # The layers bitsandbytes leaves alone (embeddings, norms) stay bf16 in the int8/nf4 rows, so
    # the totals compare like with like.
    for label, dtype, quant in (
        ("fp32", torch.float32, None),
        ("bf16", torch.bfloat16, None),
        ("int8", torch.bfloat16, quantization_config("int8", compute)),
        ("nf4", torch.bfloat16, quantization_config("nf4", compute, "nf4", True)),
    ):
        model = load_model(path, device, dtype=dtype, quantize=quant)
        rows.append({"format": label, **weight_bytes(model)})
        del model
    bf16 = next(r for r in rows if r["format"] == "bf16")
    for r in rows:
        r["vs_bf16_total"] = round(r["total"] / bf16["total"], 4)
        r["vs_bf16_quantizable"] = round(r["quantizable"] / bf16["quantizable"], 4)
    return rows


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table for logs (the notebooks draw nicer ones)."""
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    for r in rows:
        lines.append(
            "  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True))
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Data, evaluation, generation.


def tokenized_split(tokenizer: Any, examples: list, max_length: int) -> list[dict[str, list[int]]]:
    return [instructions.tokenize_example(tokenizer, e, max_length) for e in examples]


@torch.no_grad()
def evaluate(
    model: Any,
    rows: list[dict[str, list[int]]],
    pad_id: int,
    device: torch.device,
    batch_size: int,
    dist: DistInfo | None = None,
) -> dict[str, float]:
    """Mean cross-entropy over the answer tokens of `rows` and its perplexity exp(loss); each rank
    scores every world_size-th example and the sums are all-reduced."""
    dist = dist or DistInfo()
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # nll sum, token count
    mine = rows[dist.rank :: dist.world_size]
    for start in range(0, len(mine), batch_size):
        batch = instructions.collate(mine[start : start + batch_size], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        targets = batch["labels"][:, 1:]
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=instructions.IGNORE_INDEX,
            reduction="sum",
        )
        sums[0] += nll.double()
        sums[1] += (targets != instructions.IGNORE_INDEX).sum()
    model.train(was_training)
    nll_sum, count = all_reduce(sums, dist).tolist()
    loss = nll_sum / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50))}


@torch.no_grad()
def generate_answers(
    model: Any, tokenizer: Any, examples: list, device: torch.device, max_new_tokens: int
) -> list[str]:
    """Greedy answers to each example's question (chat template, generation prompt)."""
    was_training = model.training
    model.eval()
    answers = []
    for ex in examples:
        prompt = tokenizer.apply_chat_template(
            ex.messages(with_answer=False), tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(device)
        out = model.generate(
            **ids,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        answers.append(
            tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        )
    model.train(was_training)
    return answers


@torch.no_grad()
def logits_on(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """fp32 logits of one batch in eval mode (dropout off): what equality checks compare."""
    model.eval()
    return model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).logits.float()


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """LR multiplier: linear 0 -> 1 over `warmup_steps`, then cosine 1 -> 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def micro_batch_indices(
    step: int, accum: int, batch_size: int, n: int, seed: int, dist: DistInfo
) -> list[list[int]]:
    """Example indices of the micro-batches of optimizer step `step` on this rank.

    The data is an endless stream of epochs, each a seeded permutation of 0..n-1; micro-batch m of
    rank r reads positions ((m * world + r) * batch_size, + batch_size). A pure function of the
    step, so a resumed run reads exactly the batches an uninterrupted one would, with no state."""
    out = []
    for a in range(accum):
        m = step * accum + a
        start = (m * dist.world_size + dist.rank) * batch_size
        idx = []
        for p in range(start, start + batch_size):
            epoch, i = divmod(p, n)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
            idx.append(int(perm[i]))
        out.append(idx)
    return out


# ------------------------------------------------------------------------------------------------
# The run.


def resolve_device(cfg: FinetuneConfig, dist: DistInfo) -> tuple[torch.device, torch.dtype]:
    """(device, compute dtype); ConfigError when CUDA is asked for but absent."""
    device = pick_device(cfg.device, dist)
    if device.type != "cuda":
        if cfg.compute_dtype in ("bf16", "fp16") and dist.is_main:
            print(
                f"compute dtype {cfg.compute_dtype} skipped: it needs a CUDA GPU; fp32 on CPU",
                flush=True,
            )
        return device, torch.float32
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if cfg.compute_dtype == "auto":
        return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return device, table[cfg.compute_dtype]


def base_dtype(cfg: FinetuneConfig, compute: torch.dtype) -> torch.dtype:
    """dtype of the frozen base weights for LoRA: the compute dtype (bf16 halves the weights on a
    GPU; peft keeps the adapters themselves in fp32). Full fine-tuning keeps fp32 master weights."""
    return compute if cfg.method == "lora" else torch.float32


def build_trainable(cfg: FinetuneConfig, path: str, device: torch.device, compute: torch.dtype):
    """The model to train: peft LoRA on a frozen (fp or 4-bit) base, or the whole base model."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.method == "qlora":
        base = load_model(
            path,
            device,
            dtype=torch.float32,
            quantize=quantization_config("nf4", compute, cfg.quant_type, cfg.double_quant),
        )
        base = prepare_model_for_kbit_training(
            base, use_gradient_checkpointing=cfg.gradient_checkpointing
        )
    else:
        base = load_model(path, device, dtype=base_dtype(cfg, compute))
        if cfg.gradient_checkpointing:
            base.gradient_checkpointing_enable()
            base.enable_input_require_grads()
    if cfg.method == "full":
        return base
    targets = cfg.target_modules
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets
        if targets == "all-linear"
        else [t.strip() for t in targets.split(",")],
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(base, lora)
    except ValueError as e:
        raise ConfigError("target_modules", f"{targets!r} does not fit this model: {e}") from e


def load_adapter(
    cfg: FinetuneConfig,
    path: str,
    adapter_dir: Path,
    device,
    compute,
    quantized: bool,
    dtype: torch.dtype = torch.float32,
):
    """A fresh base model (4-bit for QLoRA when `quantized`, else in `dtype`) with the saved
    adapter loaded."""
    from peft import PeftModel

    quant = (
        quantization_config("nf4", compute, cfg.quant_type, cfg.double_quant) if quantized else None
    )
    base = load_model(path, device, dtype=torch.float32 if quantized else dtype, quantize=quant)
    return PeftModel.from_pretrained(base, str(adapter_dir))


def save_dir_atomic(final: Path, save: Any) -> None:
    """`save(folder)` into a sibling temp folder, then swap it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        save(staged)
        staged.chmod(0o755)
        old = final.with_name(f".{final.name}-old")
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def train(cfg: FinetuneConfig, dist: DistInfo, stop: StopFlag) -> int:
    """Run (or resume) fine-tuning; returns the process exit code."""
    log = print if dist.is_main else (lambda *a, **k: None)
    device, compute = resolve_device(cfg, dist)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    elif os.environ.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    quiet_transformers()
    init_distributed(dist, device)
    try:
        return _train(cfg, dist, stop, device, compute, log)
    finally:
        cleanup(dist)


def _train(cfg, dist, stop, device, compute, log) -> int:  # noqa: C901 - the run, top to bottom
    out = Path(cfg.out_dir)
    ckpt_dir = out / "checkpoints"
    if dist.local_rank == 0:
        path = resolve_model_path(cfg.model_id, cfg.model_cache, log=lambda m: log(m, flush=True))
    barrier(dist)  # the others wait until the tiny model is built
    if dist.local_rank != 0:
        path = resolve_model_path(cfg.model_id, cfg.model_cache)
    tokenizer = load_tokenizer(path)
    train_ex, eval_ex = instructions.make_examples(cfg.train_examples, cfg.eval_examples, cfg.seed)
    train_rows = tokenized_split(tokenizer, train_ex, cfg.max_length)
    eval_rows = tokenized_split(tokenizer, eval_ex, cfg.max_length)
    pad_id = tokenizer.pad_token_id
    sample_ex = eval_ex[: cfg.samples]

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model = build_trainable(cfg, path, device, compute)
    trainable, total = count_params(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = round(cfg.warmup_fraction * cfg.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, cfg.steps, warmup)
    )
    autocast = (
        torch.autocast("cuda", dtype=compute)
        if device.type == "cuda" and compute != torch.float32
        else nullcontext()
    )

    state, ckpt_path = (
        ckpt.load_latest(ckpt_dir, log=lambda m: log(m, flush=True))
        if dist.is_main
        else (None, None)
    )
    state = broadcast_object(state, dist)
    step, prior_time, resumed_from = 0, 0.0, None
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if state is not None:
        by_name = dict(model.named_parameters())
        with torch.no_grad():
            for n in names:
                by_name[n].copy_(state["trainable"][n])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        step, prior_time, resumed_from = state["step"], state["train_time_s"], state["step"]
        before, samples_before = state["eval_before"], state["samples_before"]
        for field, (old, new) in config_diff(state["config"], asdict(cfg), RUNTIME_FIELDS).items():
            log(f"warning: resuming with {field}={new!r} (checkpoint has {old!r})", flush=True)
        log(f"resumed from step {step} ({ckpt_path})", flush=True)
    else:
        before = evaluate(model, eval_rows, pad_id, device, cfg.eval_batch_size, dist)
        samples_before = (
            generate_answers(model, tokenizer, sample_ex, device, cfg.max_new_tokens)
            if dist.is_main
            else []
        )
    if dist.is_main:
        truncate_metrics(out / "metrics.jsonl", step)
        (out / "result.json").unlink(missing_ok=True)
    metrics = MetricsLog(out / "metrics.jsonl", enabled=dist.is_main)
    if state is None:
        metrics.write(
            {
                "kind": "eval",
                "step": 0,
                "eval_loss": before["loss"],
                "perplexity": before["perplexity"],
            }
        )
    net = model
    if dist.is_distributed:
        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    global_batch = cfg.batch_size * cfg.grad_accum_steps * dist.world_size
    log(
        f"finetune: method={cfg.method} model={cfg.model_id or Path(path).name} device={device.type} "
        f"world_size={dist.world_size} trainable={trainable} total={total} "
        f"trainable_pct={100 * trainable / total:.3f} steps={cfg.steps} global_batch={global_batch} "
        f"compute={str(compute).removeprefix('torch.')} resumed_from={resumed_from} "
        f"threads={torch.get_num_threads()}",
        flush=True,
    )
    log(f"eval before: loss {before['loss']:.4f} perplexity {before['perplexity']:.2f}", flush=True)

    run_start = time.perf_counter()
    interval_loss, interval_steps, t_interval = 0.0, 0, time.perf_counter()
    peak_step_bytes: int | None = None

    def elapsed() -> float:
        return prior_time + time.perf_counter() - run_start

    def save(reason: str = "") -> None:
        if dist.is_main:
            by_name = dict(model.named_parameters())
            state = {
                "trainable": {n: by_name[n].detach().cpu() for n in names},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "step": step,
                "train_time_s": elapsed(),
                "eval_before": before,
                "samples_before": samples_before,
                "config": asdict(cfg),
                "world_size": dist.world_size,
            }
            p = ckpt.save_checkpoint(state, ckpt_dir, step, keep=cfg.keep_checkpoints)
            log(f"checkpoint saved step {step} path {p}{reason}", flush=True)
        barrier(dist)

    model.train()
    while step < cfg.steps:
        measure_peak = device.type == "cuda" and peak_step_bytes is None
        if measure_peak:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        total_loss = torch.zeros((), device=device)
        micro = micro_batch_indices(
            step, cfg.grad_accum_steps, cfg.batch_size, len(train_rows), cfg.seed, dist
        )
        for a, idx in enumerate(micro):
            batch = instructions.collate([train_rows[i] for i in idx], pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            sync = (
                net.no_sync()
                if isinstance(net, DistributedDataParallel) and a < len(micro) - 1
                else nullcontext()
            )
            with sync, autocast:
                loss = net(**batch).loss / len(micro)
                loss.backward()
            total_loss += loss.detach()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step += 1
        if measure_peak:
            peak_step_bytes = torch.cuda.max_memory_allocated(device)
        interval_loss += all_reduce(total_loss, dist).item() / dist.world_size
        interval_steps += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            now = time.perf_counter()
            mean_loss = interval_loss / interval_steps
            lr = optimizer.param_groups[0]["lr"]
            s_per_step = (now - t_interval) / interval_steps
            log(
                f"step {step}/{cfg.steps} loss {mean_loss:.4f} lr {lr:.2e} s/step {s_per_step:.3f}",
                flush=True,
            )
            metrics.write(
                {
                    "kind": "train",
                    "step": step,
                    "loss": mean_loss,
                    "lr": lr,
                    "s_per_step": s_per_step,
                    "time_s": round(elapsed(), 3),
                }
            )
            interval_loss, interval_steps, t_interval = 0.0, 0, now
        sigterm = stop.requested
        if dist.is_distributed:
            flag = torch.tensor(float(sigterm), device=device)
            sigterm = all_reduce(flag, dist, op="max").item() > 0
        capped = cfg.max_steps and step >= cfg.max_steps and step < cfg.steps
        if sigterm or capped:
            save(" (SIGTERM)" if sigterm else " (max_steps)")
            metrics.close()
            if sigterm:
                log(f"stopped by SIGTERM at step {step}; rerun to resume", flush=True)
                return EXIT_SIGTERM
            log(f"stopped at max_steps={cfg.max_steps}; rerun without it to continue", flush=True)
            return EXIT_OK
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            save()
    train_time = elapsed()

    after = evaluate(model, eval_rows, pad_id, device, cfg.eval_batch_size, dist)
    log(f"eval after: loss {after['loss']:.4f} perplexity {after['perplexity']:.2f}", flush=True)
    metrics.write(
        {
            "kind": "eval",
            "step": step,
            "eval_loss": after["loss"],
            "perplexity": after["perplexity"],
        }
    )
    if not dist.is_main:
        metrics.close()
        barrier(dist)
        return EXIT_OK
    samples_after = generate_answers(model, tokenizer, sample_ex, device, cfg.max_new_tokens)
    samples = [
        {"question": e.question, "expected": e.answer, "before": b, "after": a}
        for e, b, a in zip(sample_ex, samples_before, samples_after, strict=True)
    ]
    for s in samples:
        log(
            f"sample Q: {s['question']}\n  expected: {s['expected']}\n  before:   {s['before']}\n  after:    {s['after']}",
            flush=True,
        )
    result: dict[str, Any] = {
        "method": cfg.method,
        "model": cfg.model_id or Path(path).name,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": round(100 * trainable / total, 4),
        "eval_before": before,
        "eval_after": after,
        "samples": samples,
        "exact_before": sum(s["before"] == s["expected"] for s in samples),
        "exact_after": sum(s["after"] == s["expected"] for s in samples),
        "steps": step,
        "train_time_s": round(train_time, 3),
        "resumed_from_step": resumed_from,
        "device": device.type,
        "world_size": dist.world_size,
        "peak_step_bytes": peak_step_bytes,
    }
    if peak_step_bytes is None:
        result["peak_step_note"] = "peak GPU memory not measured: no CUDA device"
        log(
            "peak step memory skipped: needs a CUDA GPU (torch.cuda.max_memory_allocated)",
            flush=True,
        )
    else:
        log(
            f"peak allocated memory of a training step: {peak_step_bytes / 2**20:.1f} MiB",
            flush=True,
        )

    if cfg.method != "full":
        result.update(
            check_adapter(cfg, model, path, out, device, compute, eval_rows, pad_id, tokenizer, log)
        )
    if cfg.memory_table:
        rows = memory_table(path, device)
        result["memory_table"] = rows
        log(
            "base weight bytes (measured):\n"
            + format_table(
                rows, ["format", "total", "quantizable", "vs_bf16_total", "vs_bf16_quantizable"]
            ),
            flush=True,
        )
    result["completed"] = True
    write_json_atomic(out / "result.json", result)
    metrics.close()
    log(
        f"done eval_loss {before['loss']:.4f} -> {after['loss']:.4f} perplexity "
        f"{before['perplexity']:.2f} -> {after['perplexity']:.2f} steps {step} time_s {train_time:.1f}",
        flush=True,
    )
    log("result " + json.dumps(result, separators=(",", ":"), sort_keys=True), flush=True)
    barrier(dist)
    return EXIT_OK


def check_adapter(
    cfg, model, path, out, device, compute, eval_rows, pad_id, tokenizer, log
) -> dict:
    """Save the adapter, reload it onto a fresh base, merge it; compare outputs at each stage."""
    adapter_dir = out / "adapter"
    save_dir_atomic(adapter_dir, lambda d: model.save_pretrained(d, safe_serialization=True))
    batch = instructions.collate(eval_rows[: cfg.eval_batch_size], pad_id)
    batch = {k: v.to(device) for k, v in batch.items()}
    trained = logits_on(model, batch)
    reloaded = load_adapter(
        cfg,
        path,
        adapter_dir,
        device,
        compute,
        quantized=cfg.method == "qlora",
        dtype=base_dtype(cfg, compute),
    )
    reload_diff = (logits_on(reloaded, batch) - trained).abs().max().item()
    del reloaded
    # Merge into a full-precision base: what you deploy (merging into 4-bit weights would round).
    unmerged = load_adapter(cfg, path, adapter_dir, device, compute, quantized=False)
    unmerged_logits = logits_on(unmerged, batch)
    merged = unmerged.merge_and_unload()
    merge_diff = (logits_on(merged, batch) - unmerged_logits).abs().max().item()
    log(
        f"adapter saved to {adapter_dir} ({folder_bytes(adapter_dir)} bytes); reloaded max |diff| "
        f"{reload_diff:.2e}; merged vs unmerged max |diff| {merge_diff:.2e} "
        f"(tolerance {cfg.merge_tolerance:g})",
        flush=True,
    )
    info: dict[str, Any] = {
        "adapter_dir": str(adapter_dir),
        "adapter_bytes": folder_bytes(adapter_dir),
        "adapter_files": sorted(p.name for p in adapter_dir.iterdir()),
        "reload_max_abs_diff": reload_diff,
        "merge_max_abs_diff": merge_diff,
        "merge_ok": merge_diff <= cfg.merge_tolerance,
    }
    if cfg.method == "qlora":
        info["qlora_vs_fp_base_max_abs_diff"] = (unmerged_logits - trained).abs().max().item()
    if cfg.save_merged:
        merged_dir = out / "merged"

        def save(d: Path) -> None:
            merged.save_pretrained(d, safe_serialization=True)
            tokenizer.save_pretrained(d)

        save_dir_atomic(merged_dir, save)
        info["merged_dir"] = str(merged_dir)
    return info


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0, 2 or 143)."""
    return run_main(
        FinetuneConfig,
        train,
        argv,
        prog="python -m labs.finetune",
        description=__doc__,
        presets={"smoke": SMOKE},
    )


if __name__ == "__main__":
    sys.exit(main())
