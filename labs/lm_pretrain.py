"""Pretrain a small Llama-style language model: one process, DDP, FSDP2 or DeepSpeed ZeRO.

What it does: builds THE course model (a Hugging Face `LlamaForCausalLM` from
labs/common/tiny_lm.llama_config: RMSNorm, RoPE, grouped-query attention, SwiGLU; the same
definition the fine-tuning lab adapts) from the config, trains it on a locally generated corpus
(`--corpus markov`: a fixed random Markov chain over 256 byte-tokens, learnable, no download;
`--corpus text`: the course's sentences through the course tokenizer) with AdamW, warmup + cosine
LR and gradient clipping, and writes sharded checkpoints with `torch.distributed.checkpoint` (DCP) that
resume at ANY world size. Strategies:

* `ddp`  (default): every rank holds the whole model; gradients are all-reduced (bucket size and
  compression hooks: `--bucket-cap-mb`, `--comm-hook`). With one process it is plain training.
* `fsdp`: FSDP2 (`fully_shard` per transformer block, then the root): parameters, gradients and
  optimizer state are sharded across ranks, gathered one block at a time for compute. On CUDA with
  `MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)`; on CPU in fp32 (printed).
* `deepspeed`: DeepSpeed ZeRO with `--deepspeed-config labs/deepspeed/zero2.json` (or zero3.json);
  needs CUDA and the `deepspeed` package (`pip install -e '.[deepspeed]'`); otherwise the lab
  prints why and exits 2.

Checkpoints: `OUT/checkpoints/step-XXXXXXXX/` (one `.distcp` file per rank + DCP metadata +
`meta.json` + a `COMPLETE` marker). Every rank writes its shard into `.tmp-step-XXXXXXXX/`; after
a barrier rank 0 writes the marker and renames the folder, so a folder with a real name is always
complete. On start the newest complete checkpoint is loaded and resharded to the current world
size (saved by 2 ranks, loaded by 1: DCP does the resharding). Multi-node runs need the checkpoint
folder on shared storage (a ReadWriteMany PVC). The batch of step s on rank r is a pure function
of (seed, s, r), so a resumed run replays exactly the batches an uninterrupted run would see.

One process (CPU smoke run, ~5 s):

    python -m labs.lm_pretrain --out-dir runs/lm --smoke

Several processes on one machine:

    torchrun --standalone --nproc-per-node=2 -m labs.lm_pretrain --out-dir runs/lm-ddp --smoke
    torchrun --standalone --nproc-per-node=2 -m labs.lm_pretrain --out-dir runs/lm-fsdp --smoke \
        --strategy fsdp

Several nodes (each node; the launch script derives rank and master from the Kubernetes env):

    labs/launch.sh --nnodes 2 --nproc-per-node 2 --master-addr HOST -- -m labs.lm_pretrain ...

The model fine-tuned in lessons 06-07 (pretrain on the course text, export, fine-tune it):

    python -m labs.lm_pretrain --out-dir runs/lm-text --smoke --corpus text --export-hf runs/lm/hf
    python -m labs.finetune --model-id runs/lm/hf --out-dir runs/lora-own --smoke

Rerunning with the same `--out-dir` resumes from the newest complete checkpoint (weights,
optimizer, schedule, RNGs: bitwise, tests/labs/test_resume_bitwise.py); the loop, stops,
checkpoints, NaN policy, watchdog, fault injection and metrics are labs/common/trainer.py's.
Exit codes: 0 done, 2 configuration error (includes: DeepSpeed requested where it cannot run),
143 stopped by SIGTERM after a checkpoint.

Measured here (2-core AMD EPYC VM shared with other jobs, load average ~8, torch 2.13.0+cpu, one
thread per process): the `--smoke` run (60 steps, 131 k parameters) trains in ~4-8 s in one process;
the loss falls from 5.6 (ln 256, uniform) to ~1.2-1.4 (the corpus entropy is 1.1 nats/token).
Bytes per rank at 2 ranks (parameters + gradients + AdamW state, from the tensors): DDP 2.10 MB,
FSDP2 1.05 MB. A 2-rank FSDP2 checkpoint loads into 1 process with identical weights (sha256 of the
full tensors). 2 nodes x 2 processes through labs/launch.sh on the local backend: 20/20 runs
succeeded; a SIGKILLed worker is restarted by torchrun and the run resumes from its checkpoint.
GPU numbers (bf16 FSDP2, DeepSpeed ZeRO) are not measured yet.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from labs.common.checkpoint import COMPLETE_MARKER, list_complete, save_dir_atomic
from labs.common.checkpoint_io import load_sharded
from labs.common.config import ConfigError, check_bounds, param
from labs.common.distributed import (
    DistInfo,
    all_gather_object,
    exit_process,
    pick_device,
    set_threads,
    wrap_ddp,
)
from labs.common.entry import EXIT_CONFIG, EXIT_OK, StopFlag, run_main
from labs.common.instructions import corpus_lines
from labs.common.tiny_lm import build_llama, llama_config, load_tokenizer
from labs.common.trainer import CoreConfig, Task, Trainer, train_task, warmup_cosine

__all__ = [
    "COMPLETE_MARKER", "LMConfig", "LMTask", "build_model", "list_complete", "load_dcp", "main"
]  # fmt: skip


@dataclass
class LMConfig(CoreConfig):
    """Every knob of the LM lab. `python -m labs.lm_pretrain --help` is generated from it; the
    flags every lab shares (resume, stops, checkpoints, faults) come from CoreConfig."""

    out_dir: str = param("runs/lm", "checkpoints/, metrics.jsonl, result.json; same dir resumes")
    strategy: Literal["ddp", "fsdp", "deepspeed"] = param(
        "ddp", "ddp = replicate the model; fsdp = FSDP2 sharding; deepspeed = ZeRO (GPU only)"
    )
    # -- model -------------------------------------------------------------------------------------
    dim: int = param(256, "residual-stream width: parameters grow ~ 12 x n_layers x dim^2")
    n_layers: int = param(6, "transformer blocks (FSDP2 shards each one separately)")
    n_heads: int = param(8, "query heads (dim / n_heads = head size)")
    n_kv_heads: int = param(4, "key/value heads; < n_heads = grouped-query attention")
    seq_len: int = param(256, "tokens per training sequence (context length)")
    # -- data and schedule -------------------------------------------------------------------------
    corpus: Literal["markov", "text"] = param(
        "markov",
        "markov = a seeded Markov chain over 256 byte-tokens (entropy known: 1.1 nats); "
        "text = the course's sentences in the course tokenizer (what the fine-tuning lab speaks)",
    )
    corpus_tokens: int = param(1_000_000, "tokens in the generated corpus")
    model_cache: str = param(
        ".course/models", "where the course tokenizer is built (--corpus text)"
    )
    export_hf: str = param(
        "",
        "folder: save the final weights (+ tokenizer with --corpus text) as a Hugging Face "
        "model there; `labs.finetune --model-id FOLDER` fine-tunes it (empty = no export)",
    )
    batch_size: int = param(
        16, "sequences per process per micro-batch; global = this x grad_accum x world_size"
    )
    steps: int = param(2000, "optimizer steps of the whole run (fixes the LR schedule)")
    lr: float = param(3e-3, "peak AdamW learning rate, after warmup")
    warmup_steps: int = param(100, "steps of linear LR warmup (large early steps diverge)")
    weight_decay: float = param(0.1, "AdamW decoupled weight decay on matrices")
    grad_clip: float = param(1.0, "max global gradient norm (0 = off): tames loss spikes")
    # -- communication tuning (DDP) ----------------------------------------------------------------
    bucket_cap_mb: float = param(25.0, "MB per DDP all-reduce bucket: small = early, many messages")
    comm_hook: Literal["none", "fp16", "bf16", "powersgd"] = param(
        "none", "gradient compression before the all-reduce (bf16 needs NCCL)"
    )
    # -- system ------------------------------------------------------------------------------------
    device: Literal["auto", "cpu", "cuda"] = param("auto", "auto = cuda when available")
    precision: Literal["auto", "bf16", "fp32"] = param(
        "auto",
        "auto = bf16 on CUDA (autocast for DDP, MixedPrecisionPolicy for FSDP2), fp32 on CPU",
    )
    deepspeed_config: str = param(
        "labs/deepspeed/zero2.json",
        "DeepSpeed JSON (zero2.json or zero3.json) for --strategy deepspeed",
    )
    num_threads: int = param(0, "CPU threads per process; 0 = OMP_NUM_THREADS if set, else all")
    smoke: bool = param(False, "preset: a tiny model and 60 steps (~5 s on a CPU core)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_bounds(
            self,
            positive="dim n_layers n_heads n_kv_heads seq_len corpus_tokens batch_size steps",
            non_negative="warmup_steps num_threads",
            above_zero="lr bucket_cap_mb",
        )
        if self.corpus_tokens <= self.seq_len + 1:
            raise ConfigError("corpus_tokens", f"must exceed seq_len + 1 ({self.seq_len + 1})")
        if self.dim % self.n_heads or (self.dim // self.n_heads) % 2:
            raise ConfigError("n_heads", f"dim {self.dim} / n_heads {self.n_heads} must be even")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError("n_kv_heads", f"must divide n_heads {self.n_heads}")

    def model_config(self, vocab_size: int = 256) -> Any:
        """The course model's `LlamaConfig` at this lab's size (SwiGLU width ~8/3 x dim, rounded
        up to a multiple of 64: tensor-core and bitsandbytes-block friendly)."""
        return llama_config(
            vocab_size=vocab_size,
            hidden_size=self.dim,
            intermediate_size=64 * math.ceil(8 * self.dim / 3 / 64),
            num_layers=self.n_layers,
            num_heads=self.n_heads,
            num_kv_heads=self.n_kv_heads,
            max_positions=self.seq_len,
            tie_word_embeddings=False,  # untied: the head is sharded on its own
        )


def build_model(cfg: LMConfig, vocab_size: int = 256, seed: int | None = None) -> nn.Module:
    """The seeded `LlamaForCausalLM` of the config (identical initial weights on every rank)."""
    return build_llama(cfg.model_config(vocab_size), cfg.seed if seed is None else seed)


def count_parameters(model: nn.Module) -> int:
    """Parameters of the full (unsharded) model."""
    return sum(p.numel() for p in model.parameters())


SMOKE: dict[str, Any] = dict(
    dim=64,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    seq_len=64,
    corpus_tokens=50_000,
    batch_size=8,
    steps=60,
    warmup_steps=6,
    lr=1e-2,
    log_every=5,
    checkpoint_every=20,
)

# Lab fields a resume may change without changing the result (the strategy and world size may
# change too: DCP reshards).
RUNTIME_FIELDS = (
    "strategy bucket_cap_mb comm_hook device deepspeed_config num_threads smoke model_cache "
    "export_hf"
).split()


# ------------------------------------------------------------------------------------------------
# Data: a Markov chain over byte-tokens, generated in memory from the seed.


def make_corpus(n_tokens: int, seed: int, vocab: int = 256, branching: int = 4) -> torch.Tensor:
    """A token stream where each token is followed by one of `branching` fixed successors (chosen
    per token from the seed) with probabilities 0.55/0.25/0.15/0.05: entropy ~1.2 nats/token, so a
    model that learns the table gets far below the uniform ln(256) = 5.55."""
    rng = np.random.default_rng(seed)
    successors = np.stack([rng.choice(vocab, size=branching, replace=False) for _ in range(vocab)])
    probs = np.array([0.55, 0.25, 0.15, 0.05])[:branching]
    choices = rng.choice(branching, size=n_tokens, p=probs / probs.sum())
    tokens = np.empty(n_tokens, dtype=np.int64)
    tokens[0] = rng.integers(vocab)
    for i in range(1, n_tokens):  # sequential by nature; ~0.1 s per 10^5 tokens
        tokens[i] = successors[tokens[i - 1], choices[i]]
    return torch.from_numpy(tokens)


def text_corpus(tokenizer: Any, n_tokens: int, seed: int) -> torch.Tensor:
    """The course's sentences (instructions.corpus_lines, seeded) in the course tokenizer, each
    line as `<bos> tokens`, concatenated and repeated up to `n_tokens`."""
    lines = corpus_lines(seed=12345 + seed, n=max(240, n_tokens // 24))
    ids: list[int] = []
    for row in tokenizer(lines, add_special_tokens=False)["input_ids"]:
        ids += [tokenizer.bos_token_id, *row]
    tokens = torch.tensor(ids, dtype=torch.int64)
    return tokens.repeat(math.ceil(n_tokens / len(tokens)))[:n_tokens]


def get_batch(
    corpus: torch.Tensor, cfg: LMConfig, step: int, rank: int, micro: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of one micro-batch: random windows, a pure function of (seed, step, rank,
    micro), so resume replays the same batches without any saved data-loader state."""
    seed = int(np.random.SeedSequence([cfg.seed, step, rank, micro]).generate_state(1)[0])
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(corpus) - cfg.seq_len - 1, (cfg.batch_size,), generator=gen)
    windows = torch.stack([corpus[s : s + cfg.seq_len + 1] for s in starts.tolist()])
    return windows[:, :-1], windows[:, 1:]


def lr_at(step: int, cfg: LMConfig) -> float:
    """Linear warmup to cfg.lr, then cosine to 10% of it at cfg.steps (the DeepSpeed path)."""
    return cfg.lr * warmup_cosine(step, cfg.steps, cfg.warmup_steps, floor=0.1)


# ------------------------------------------------------------------------------------------------
# Strategies: how the model is wrapped, and what each rank holds.


def resolve_device(cfg: LMConfig, info: DistInfo) -> tuple[torch.device, bool]:
    """(device, use_bf16). bf16 only on CUDA; on CPU the reason is printed when it was asked for."""
    device = pick_device(cfg.device, info)
    if device.type == "cuda":
        return device, cfg.precision in ("auto", "bf16")
    if cfg.precision == "bf16" and info.is_main:
        print("precision: bf16 skipped: it needs a CUDA GPU; training in fp32 on CPU", flush=True)
    return device, False


def deepspeed_skip_reason(device: torch.device) -> str | None:
    """Why `--strategy deepspeed` cannot run here (None when it can)."""
    if device.type != "cuda":
        return "DeepSpeed ZeRO needs CUDA GPUs (this process runs on CPU)"
    try:
        import deepspeed  # noqa: F401
    except ImportError as e:
        return f"the deepspeed package is not importable ({e}); pip install -e '.[deepspeed]'"
    return None


def shard_fsdp(model: nn.Module, bf16: bool, log: Any) -> nn.Module:
    """FSDP2: shard each transformer block, then the root (embedding, final norm, head)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if bf16:
        # Compute in bf16, but reduce gradients and keep the sharded master weights in fp32.
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    else:
        log(
            "fsdp: mixed precision off: bf16 needs CUDA; parameters and reductions in fp32",
            flush=True,
        )
        policy = MixedPrecisionPolicy()
    for block in model.model.layers:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def local_bytes(tensor: torch.Tensor | None) -> int:
    """Bytes this rank stores for `tensor` (its shard, for an FSDP2 DTensor)."""
    if tensor is None:
        return 0
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel() * local.element_size()


def memory_per_rank(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Parameter, gradient and optimizer-state bytes held by this rank, from the tensors themselves."""
    params = sum(local_bytes(p) for p in model.parameters())
    grads = sum(local_bytes(p.grad) for p in model.parameters())
    optim = sum(
        local_bytes(v)
        for state in optimizer.state.values()
        for v in state.values()
        if isinstance(v, torch.Tensor) and v.ndim > 0  # AdamW's scalar `step` is negligible
    )
    return {"params": params, "grads": grads, "optimizer": optim, "total": params + grads + optim}


def weights_digest(model: nn.Module) -> str:
    """sha256 of every parameter's bytes (fp32, CPU): equal digests = identical weights."""
    return state_digest(dict(model.named_parameters()))


def state_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over (name, fp32 bytes) of full tensors, in name order."""
    h = hashlib.sha256()
    for name, p in sorted(tensors.items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def full_weights_digest(model: nn.Module) -> str:
    """The digest of the UNSHARDED weights, whatever the strategy (FSDP2 gathers them: a
    collective every rank must join; only rank 0's answer is meaningful)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    return state_digest({k: v for k, v in full.items() if not k.startswith("rope_")})


# ------------------------------------------------------------------------------------------------
# Checkpoints: DCP, atomic by folder rename, resharded on load.


def load_dcp(model: nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> dict:
    """Load a DCP checkpoint into (model, optimizer) at this process's sharding; returns its meta
    with `loaded_digest`, the hash of the weights now in `model` (a notebook proves resharding
    exact by comparing it with the saved `weights_digest`)."""
    load_sharded(model, optimizer, path, no_dist=not torch.distributed.is_initialized())
    meta = json.loads((path / "meta.json").read_text())
    meta["loaded_digest"] = full_weights_digest(model)
    return meta


# ------------------------------------------------------------------------------------------------
# The lab's part of the run: model, strategy, batches, loss. The loop is labs.common.trainer.


class LMTask(Task):
    """Next-token pretraining of the course model, replicated (DDP) or sharded (FSDP2)."""

    name = "lm_pretrain"
    checkpoint_format = "dcp"
    lr_floor = 0.1
    runtime_fields = RUNTIME_FIELDS

    def __init__(self, cfg: LMConfig, info: DistInfo, device: torch.device, bf16: bool, log):
        self.cfg, self.info, self.device, self.bf16, self.print = cfg, info, device, bf16, log
        self.tokenizer = None
        if cfg.corpus == "text":
            self.tokenizer = load_tokenizer(cfg.model_cache, log=lambda m: log(m, flush=True))
            self.corpus = text_corpus(self.tokenizer, cfg.corpus_tokens, cfg.seed)
        else:
            self.corpus = make_corpus(cfg.corpus_tokens, cfg.seed)
        vocab = len(self.tokenizer) if self.tokenizer is not None else 256
        self.model = build_model(cfg, vocab).to(device)
        self.n_params = count_parameters(self.model)
        self.net = self.model
        if cfg.strategy == "fsdp" and info.is_distributed:
            self.net = shard_fsdp(self.model, bf16, log)
        elif cfg.strategy == "fsdp":
            log("fsdp: one process: nothing to shard, training unsharded", flush=True)
        # Parameters only after sharding: the optimizer must hold the (sharded) DTensors.
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))
        if cfg.strategy == "ddp" and info.is_distributed:
            self.net = wrap_ddp(
                self.model,
                device,
                bucket_cap_mb=cfg.bucket_cap_mb,
                comm_hook=cfg.comm_hook,
                log=log,
            )
        self.stage_steps, self.warmup_steps = cfg.steps, cfg.warmup_steps
        self.samples_per_step = cfg.batch_size * cfg.grad_accum_steps * info.world_size
        self.tokens_per_step = self.samples_per_step * cfg.seq_len
        self.memory: dict[str, int] | None = None

    def micro_batches(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        cfg, rank = self.cfg, self.info.rank
        batches = (get_batch(self.corpus, cfg, step, rank, m) for m in range(cfg.grad_accum_steps))
        return [(x.to(self.device), y.to(self.device)) for x, y in batches]

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x).logits.float().flatten(0, 1), y.flatten())

    def autocast(self):
        # DDP computes in bf16 via autocast; FSDP2 does it with its MixedPrecisionPolicy instead.
        if self.bf16 and self.cfg.strategy == "ddp":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def on_optimizer_step(self, trainer: Trainer) -> None:
        if self.memory is None:  # gradients still present: the peak of a step
            self.memory = memory_per_rank(self.net, self.optimizer)
            trainer.log(
                "memory_per_rank "
                + " ".join(f"{k}_bytes {v}" for k, v in self.memory.items())
                + f" world_size {self.info.world_size} strategy {self.cfg.strategy}"
            )

    def nan_module(self) -> nn.Module:
        return self.model.lm_head

    def flops_per_sample(self) -> float:
        return 6.0 * self.n_params * self.cfg.seq_len  # forward + backward, per sequence

    def start_fields(self, resumed_from: int | None) -> dict[str, Any]:
        return {
            "strategy": self.cfg.strategy,
            "device": self.device.type,
            "world_size": self.info.world_size,
            "params": self.n_params,
            "precision": "bf16" if self.bf16 else "fp32",
            "steps": self.stage_start + self.stage_steps,
            "tokens_per_step": self.tokens_per_step,
            "resumed_from": resumed_from,
            "threads": torch.get_num_threads(),
        }

    def log_fields(self, step, loss, lr, samples_per_s, s_per_step):
        tps = samples_per_s * self.cfg.seq_len
        fields = [("loss", f"{loss:.4f}"), ("lr", f"{lr:.5f}"), ("tokens/s", f"{tps:.0f}")]
        return fields, {"loss": loss, "lr": lr, "tokens_per_s": tps}

    def checkpoint_meta(self) -> dict[str, Any]:
        # Recorded so that a load at any world size can prove the weights are unchanged.
        return {"strategy": self.cfg.strategy, "weights_digest": full_weights_digest(self.net)}

    def resumed_note(self, meta: dict[str, Any]) -> str:
        if meta.get("world_size") != self.info.world_size and self.info.is_main:
            self.print(
                f"resharded: checkpoint written by {meta.get('world_size')} ranks "
                f"({meta.get('strategy')}), loaded by {self.info.world_size} ({self.cfg.strategy})",
                flush=True,
            )
        return f"weights {full_weights_digest(self.net)} saved {meta.get('weights_digest')}"

    def export(self, folder: str) -> Path:
        """The final weights as a Hugging Face model folder (every rank joins the gather)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full = get_model_state_dict(self.net, options=options)
        if self.info.is_main:
            plain = build_llama(self.model.config, self.cfg.seed)
            plain.load_state_dict(full)

            def write(d: Path) -> None:
                plain.save_pretrained(d, safe_serialization=True)
                if self.tokenizer is not None:
                    self.tokenizer.save_pretrained(d)

            save_dir_atomic(folder, write)
            self.print(f"exported Hugging Face model to {folder}", flush=True)
        return Path(folder)

    def finish(self, trainer: Trainer, completed: bool):
        if self.cfg.export_hf:
            self.export(self.cfg.export_hf)
        digests = None
        if self.cfg.strategy != "fsdp" or not self.info.is_distributed:
            digests = all_gather_object(weights_digest(self.model), self.info)
        seconds = trainer.step_seconds
        tps = round(trainer.timed_steps * self.tokens_per_step / seconds, 1) if seconds else 0.0
        result = {
            "first_loss": trainer.first_loss,
            "final_loss": trainer.last_loss,
            "tokens_per_s": tps,
            "timed_steps": trainer.timed_steps,
            "params": self.n_params,
            "memory_per_rank": self.memory,
            "weights_digests": digests,
            "strategy": self.cfg.strategy,
            "comm_hook": self.cfg.comm_hook,
            "bucket_cap_mb": self.cfg.bucket_cap_mb,
            "corpus": self.cfg.corpus,
            "export_hf": self.cfg.export_hf or None,
        }
        done = [
            ("steps", str(trainer.step)),
            ("loss", f"{trainer.last_loss:.4f}"),
            ("tokens/s", f"{tps:.0f}"),
            ("weights", digests[0] if digests else "sharded"),
        ]
        return result, done


def train(cfg: LMConfig, info: DistInfo, stop: StopFlag) -> int:
    """Run (or resume) training; returns the exit code."""
    log = print if info.is_main else (lambda *a, **k: None)
    device, bf16 = resolve_device(cfg, info)
    set_threads(cfg.num_threads)
    if cfg.strategy == "deepspeed":
        reason = deepspeed_skip_reason(device)
        if reason:
            print(f"deepspeed: skipped: {reason}", flush=True)
            return EXIT_CONFIG
        return train_deepspeed(cfg, info, device, log)
    return train_task(cfg, info, stop, device, lambda: LMTask(cfg, info, device, bf16, log))


def train_deepspeed(cfg: LMConfig, info: DistInfo, device: torch.device, log: Any) -> int:
    """DeepSpeed ZeRO path (CUDA only): the engine owns sharding, bf16, clipping and checkpoints."""
    import deepspeed

    ds_config = json.loads(Path(cfg.deepspeed_config).read_text())
    # The lab's config is the source of truth for sizes the JSON would otherwise duplicate.
    ds_config.update(
        train_micro_batch_size_per_gpu=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum_steps,
        gradient_clipping=cfg.grad_clip,
    )
    ds_config.setdefault("optimizer", {"type": "AdamW", "params": {}})["params"].update(
        lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    deepspeed.init_distributed(dist_backend="nccl")
    torch.cuda.set_device(device)
    corpus = make_corpus(cfg.corpus_tokens, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=ds_config
    )
    ckpt_dir = Path(cfg.out_dir) / "checkpoints" / "deepspeed"
    step = 0
    if (ckpt_dir / "latest").exists():  # DeepSpeed writes `latest` after a complete save
        _, client_state = engine.load_checkpoint(str(ckpt_dir))
        step = int((client_state or {}).get("step", 0))
        log(f"resumed from step {step} ({ckpt_dir})", flush=True)
    t0 = time.perf_counter()
    while step < cfg.steps:
        for group in engine.optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        for micro in range(cfg.grad_accum_steps):
            x, y = (t.to(device) for t in get_batch(corpus, cfg, step, info.rank, micro))
            loss = F.cross_entropy(engine(x).logits.float().flatten(0, 1), y.flatten())
            engine.backward(loss)
            engine.step()
        step += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            log(f"step {step}/{cfg.steps} loss {loss.item():.4f}", flush=True)
        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps:
            engine.save_checkpoint(
                str(ckpt_dir), tag=f"step-{step:08d}", client_state={"step": step}
            )
    log(
        f"done steps {step} loss {loss.item():.4f} time_s {time.perf_counter() - t0:.1f}",
        flush=True,
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0, 2 or 143)."""
    return run_main(
        LMConfig,
        train,
        argv,
        prog="python -m labs.lm_pretrain",
        description=__doc__,
        presets={"smoke": SMOKE},
        stop=StopFlag(ack_s=10.0),
    )


if __name__ == "__main__":
    # os._exit after main() has destroyed the process group and closed its files: see
    # labs/common/distributed.exit_process for the gloo-at-exit abort this avoids.
    exit_process(main())
