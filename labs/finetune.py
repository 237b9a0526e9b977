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
    python -m labs.finetune --model-id runs/lm/hf --out-dir runs/lora-own --smoke   # the model
        # labs.lm_pretrain --corpus text --export-hf runs/lm/hf pretrained (lessons 03-05)
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

import logging
import math
import os
import sys
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from labs.common import instructions
from labs.common.checkpoint import save_dir_atomic
from labs.common.config import ConfigError, check_bounds, param
from labs.common.distributed import (
    DistInfo,
    all_reduce,
    barrier,
    pick_device,
    set_threads,
    wrap_ddp,
)
from labs.common.entry import StopFlag, run_main
from labs.common.state import seed_everything
from labs.common.trainer import CoreConfig, Task, Trainer, train_task

LLAMA_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


@dataclass
class FinetuneConfig(CoreConfig):
    """Every knob of the lab. `python -m labs.finetune --help` is generated from this class; the
    flags every lab shares (resume, stops, checkpoints, faults) come from CoreConfig."""

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
    lr: float = param(2e-4, "peak learning rate (LoRA tolerates ~10x a full fine-tune's)")
    weight_decay: float = param(0.0, "AdamW decoupled weight decay on the trainable weights")
    warmup_fraction: float = param(0.1, "fraction of steps with linear LR warmup")
    grad_clip: float = param(1.0, "max global gradient norm of the trainable weights (0 = off)")
    # -- evaluation and checks ---------------------------------------------------------------------
    samples: int = param(3, "held-out questions answered greedily before and after")
    max_new_tokens: int = param(32, "tokens generated per sample answer")
    eval_batch_size: int = param(16, "examples per eval forward pass")
    eval_every: int = param(
        0,
        "optimizer steps between held-out evaluations (0 = only before and after training); "
        "what --early-stop-patience watches",
    )
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
    log_every: int = param(10, "optimizer steps between train lines/records")
    checkpoint_every: int = param(100, "steps between checkpoints (0 = only at the end)")
    keep_checkpoints: int = param(2, "newest checkpoints kept")
    smoke: bool = param(
        False, "preset: a seconds-long CPU run on the tiny model; explicit flags win"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_bounds(
            self,
            positive="train_examples eval_examples max_length lora_r lora_alpha steps batch_size "
            "eval_batch_size max_new_tokens",
            non_negative="samples num_threads weight_decay eval_every",
            above_zero="lr merge_tolerance",
            fraction="warmup_fraction lora_dropout",
        )
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

# Lab fields a resume may change without changing the result (plus the core's own).
RUNTIME_FIELDS = (
    "model_cache num_threads smoke device samples max_new_tokens eval_batch_size "
    "merge_tolerance save_merged memory_table eval_every"
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
    else:
        same_4bit_math_everywhere(model)
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


def same_4bit_math_everywhere(model: Any) -> None:
    """Keep bitsandbytes' 4-bit layers on one numeric path on every CPU.

    On a CPU with AVX512-BF16, a 4-bit layer's first forward in eval mode without gradients
    repacks its weight in place for a bf16 kernel, and every later forward (training too) then
    computes differently (measured: logits move by ~4e-2). Whether that happens would depend on
    the machine and on whether a run evaluated before training (a resumed run does not), so a
    resume could never be bitwise and a reloaded adapter never equal. GPUs are unaffected."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


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


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------------
# The lab's part of the run: model, batches, loss, evaluation, checks. The loop is labs.common.trainer.


class FinetuneTask(Task):
    """LoRA / QLoRA / full fine-tuning on the instruction data; eval before and after."""

    name = "finetune"
    eval_metric = "eval_loss"
    runtime_fields = RUNTIME_FIELDS

    def __init__(self, cfg: FinetuneConfig, dist: DistInfo, device, compute, log) -> None:
        self.cfg, self.dist, self.device, self.compute, self.print = cfg, dist, device, compute, log
        if dist.local_rank == 0:
            self.path = resolve_model_path(
                cfg.model_id, cfg.model_cache, log=lambda m: log(m, flush=True)
            )
        barrier(dist)  # the others wait until the tiny model is built
        if dist.local_rank != 0:
            self.path = resolve_model_path(cfg.model_id, cfg.model_cache)
        self.tokenizer = load_tokenizer(self.path)
        train_ex, eval_ex = instructions.make_examples(
            cfg.train_examples, cfg.eval_examples, cfg.seed
        )
        self.train_rows = tokenized_split(self.tokenizer, train_ex, cfg.max_length)
        self.eval_rows = tokenized_split(self.tokenizer, eval_ex, cfg.max_length)
        self.pad_id = self.tokenizer.pad_token_id
        self.sample_ex = eval_ex[: cfg.samples]
        seed_everything(cfg.seed)
        self.model = build_trainable(cfg, self.path, device, compute)
        self.trainable, self.total = count_params(self.model)
        self.names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.stage_steps = cfg.steps
        self.warmup_steps = round(cfg.warmup_fraction * cfg.steps)
        self.eval_every = cfg.eval_every
        self.samples_per_step = cfg.batch_size * cfg.grad_accum_steps * dist.world_size
        self.net = wrap_ddp(self.model, device) if dist.is_distributed else self.model
        self.before: dict | None = None
        self.samples_before: list[str] = []
        self.peak_step_bytes: int | None = None

    # -- batches and loss --------------------------------------------------------------------------
    def micro_batches(self, step: int) -> list[dict[str, torch.Tensor]]:
        cfg = self.cfg
        micro = micro_batch_indices(
            step, cfg.grad_accum_steps, cfg.batch_size, len(self.train_rows), cfg.seed, self.dist
        )
        batches = (
            instructions.collate([self.train_rows[i] for i in idx], self.pad_id) for idx in micro
        )
        return [{k: v.to(self.device) for k, v in b.items()} for b in batches]

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(**batch).loss

    def autocast(self):
        if self.device.type == "cuda" and self.compute != torch.float32:
            return torch.autocast("cuda", dtype=self.compute)
        return nullcontext()

    def nan_module(self) -> torch.nn.Module:
        return self.model.get_output_embeddings()

    # -- checkpoints hold only the trainable weights (the adapters), plus the eval before ---------
    def model_state(self) -> dict[str, torch.Tensor]:
        by_name = dict(self.model.named_parameters())
        return {n: by_name[n].detach().cpu() for n in self.names}

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        by_name = dict(self.model.named_parameters())
        with torch.no_grad():
            for n in self.names:
                by_name[n].copy_(state[n])

    def state_dict(self) -> dict[str, Any]:
        return {"eval_before": self.before, "samples_before": self.samples_before}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.before, self.samples_before = state["eval_before"], state["samples_before"]

    # -- evaluation and what the trainer prints ----------------------------------------------------
    def held_out(self) -> dict[str, float]:
        cfg = self.cfg
        return evaluate(
            self.model, self.eval_rows, self.pad_id, self.device, cfg.eval_batch_size, self.dist
        )

    def evaluate(self, step: int) -> tuple[dict[str, Any], str]:
        ev = self.held_out()
        line = f"eval step {step}: loss {ev['loss']:.4f} perplexity {ev['perplexity']:.2f}"
        return {"eval_loss": ev["loss"], "perplexity": ev["perplexity"]}, line

    def begin(self, trainer: Trainer, resumed: bool) -> None:
        if self.before is None:  # a fresh run: score the model before any training
            self.before = self.held_out()
            if self.dist.is_main:
                self.samples_before = self.answers()
            trainer.metrics.write(
                {
                    "kind": "eval",
                    "step": 0,
                    "eval_loss": self.before["loss"],
                    "perplexity": self.before["perplexity"],
                }
            )
        trainer.log(
            f"eval before: loss {self.before['loss']:.4f} perplexity {self.before['perplexity']:.2f}"
        )
        self.model.train()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def on_optimizer_step(self, trainer: Trainer) -> None:
        if self.device.type == "cuda" and self.peak_step_bytes is None:
            self.peak_step_bytes = torch.cuda.max_memory_allocated(self.device)

    def answers(self) -> list[str]:
        return generate_answers(
            self.model, self.tokenizer, self.sample_ex, self.device, self.cfg.max_new_tokens
        )

    def start_fields(self, resumed_from: int | None) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "method": cfg.method,
            "model": cfg.model_id or Path(self.path).name,
            "device": self.device.type,
            "world_size": self.dist.world_size,
            "trainable": self.trainable,
            "total": self.total,
            "trainable_pct": f"{100 * self.trainable / self.total:.3f}",
            "steps": self.stage_start + self.stage_steps,
            "global_batch": self.samples_per_step,
            "compute": str(self.compute).removeprefix("torch."),
            "resumed_from": resumed_from,
            "threads": torch.get_num_threads(),
        }

    def log_fields(self, step, loss, lr, samples_per_s, s_per_step):
        fields = [("loss", f"{loss:.4f}"), ("lr", f"{lr:.2e}"), ("s/step", f"{s_per_step:.3f}")]
        return fields, {"loss": loss, "lr": lr, "s_per_step": s_per_step}

    def finish(self, trainer: Trainer, completed: bool):
        after = self.held_out()
        trainer.log(f"eval after: loss {after['loss']:.4f} perplexity {after['perplexity']:.2f}")
        trainer.metrics.write(
            {
                "kind": "eval",
                "step": trainer.step,
                "eval_loss": after["loss"],
                "perplexity": after["perplexity"],
            }
        )
        if not self.dist.is_main:
            return {}, []
        result = {**self.summary(after, trainer), **self.checks(trainer)}
        before = self.before
        done = [
            ("eval_loss", f"{before['loss']:.4f} -> {after['loss']:.4f}"),
            ("perplexity", f"{before['perplexity']:.2f} -> {after['perplexity']:.2f}"),
            ("steps", str(trainer.step)),
            ("time_s", f"{trainer.elapsed():.1f}"),
        ]
        return result, done

    def summary(self, after: dict[str, float], trainer: Trainer) -> dict[str, Any]:
        """Eval before/after, sample answers, parameter counts and peak memory."""
        samples = [
            {"question": e.question, "expected": e.answer, "before": b, "after": a}
            for e, b, a in zip(self.sample_ex, self.samples_before, self.answers(), strict=True)
        ]
        for s in samples:
            trainer.log(
                f"sample Q: {s['question']}\n  expected: {s['expected']}\n  before:   {s['before']}\n  after:    {s['after']}"
            )
        result: dict[str, Any] = {
            "method": self.cfg.method,
            "model": self.cfg.model_id or Path(self.path).name,
            "trainable_params": self.trainable,
            "total_params": self.total,
            "trainable_pct": round(100 * self.trainable / self.total, 4),
            "eval_before": self.before,
            "eval_after": after,
            "samples": samples,
            "exact_before": sum(s["before"] == s["expected"] for s in samples),
            "exact_after": sum(s["after"] == s["expected"] for s in samples),
            "peak_step_bytes": self.peak_step_bytes,
        }
        if self.peak_step_bytes is None:
            result["peak_step_note"] = "peak GPU memory not measured: no CUDA device"
            trainer.log(
                "peak step memory skipped: needs a CUDA GPU (torch.cuda.max_memory_allocated)"
            )
        else:
            trainer.log(
                f"peak allocated memory of a training step: {self.peak_step_bytes / 2**20:.1f} MiB"
            )
        return result

    def checks(self, trainer: Trainer) -> dict[str, Any]:
        """The adapter save/reload/merge checks and the optional base-weight memory table."""
        cfg, out = self.cfg, trainer.out
        info: dict[str, Any] = {}
        if cfg.method != "full":
            info.update(
                check_adapter(
                    cfg,
                    self.model,
                    self.path,
                    out,
                    self.device,
                    self.compute,
                    self.eval_rows,
                    self.pad_id,
                    self.tokenizer,
                    lambda m, **k: trainer.log(m),
                )
            )
        if cfg.memory_table:
            rows = memory_table(self.path, self.device)
            info["memory_table"] = rows
            columns = ["format", "total", "quantizable", "vs_bf16_total", "vs_bf16_quantizable"]
            trainer.log("base weight bytes (measured):\n" + format_table(rows, columns))
        return info


def train(cfg: FinetuneConfig, dist: DistInfo, stop: StopFlag) -> int:
    """Run (or resume) fine-tuning; returns the process exit code."""
    log = print if dist.is_main else (lambda *a, **k: None)
    device, compute = resolve_device(cfg, dist)
    set_threads(cfg.num_threads)
    quiet_transformers()
    return train_task(
        cfg, dist, stop, device, lambda: FinetuneTask(cfg, dist, device, compute, log)
    )


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
