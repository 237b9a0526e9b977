"""Pretrain a small Llama-style language model: one process, DDP, FSDP2 or DeepSpeed ZeRO.

What it does: builds `TinyLlama` (labs/common/tiny_llama.py: RMSNorm, RoPE, grouped-query
attention, SwiGLU) from the config, trains it on a locally generated token corpus (a fixed random
Markov chain over 256 byte-tokens: learnable, no download) with AdamW, warmup + cosine LR and
gradient clipping, and writes sharded checkpoints with `torch.distributed.checkpoint` (DCP) that
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

Rerunning with the same `--out-dir` resumes from the newest complete checkpoint.
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
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from labs.common.config import ConfigError, param
from labs.common.data import fsync_dir
from labs.common.distributed import (
    DistInfo,
    all_reduce,
    barrier,
    cleanup,
    exit_process,
    init_distributed,
    pick_device,
    sync_context,
    wrap_ddp,
)
from labs.common.entry import EXIT_CONFIG, EXIT_OK, EXIT_SIGTERM, StopFlag, run_main
from labs.common.metrics import MetricsLog, truncate_metrics, write_json_atomic
from labs.common.tiny_llama import LlamaConfig, TinyLlama, count_parameters

COMPLETE_MARKER = "COMPLETE"


@dataclass
class LMConfig:
    """Every knob of the LM lab. `python -m labs.lm_pretrain --help` is generated from it."""

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
    corpus_tokens: int = param(1_000_000, "tokens in the generated Markov-chain corpus")
    batch_size: int = param(
        16, "sequences per process per micro-batch; global = this x grad_accum x world_size"
    )
    grad_accum_steps: int = param(1, "micro-batches per optimizer step (no_sync under DDP)")
    steps: int = param(2000, "optimizer steps of the whole run (fixes the LR schedule)")
    max_steps: int = param(0, "stop (with a checkpoint) after this many steps; 0 = no cap")
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
    seed: int = param(0, "seeds the corpus, the init and the batches")
    log_every: int = param(20, "optimizer steps between log lines / metrics records")
    checkpoint_every: int = param(200, "steps between checkpoints (0 = only at the end)")
    keep_checkpoints: int = param(2, "newest complete checkpoints kept")
    smoke: bool = param(False, "preset: a tiny model and 60 steps (~5 s on a CPU core)")

    def __post_init__(self) -> None:
        positive = (
            "dim n_layers n_heads n_kv_heads seq_len corpus_tokens batch_size grad_accum_steps "
            "steps log_every keep_checkpoints"
        ).split()
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1 (got {getattr(self, name)})")
        for name in ("max_steps", "warmup_steps", "num_threads", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0 (got {getattr(self, name)})")
        if not self.lr > 0:
            raise ConfigError("lr", f"must be > 0 (got {self.lr})")
        if not self.bucket_cap_mb > 0:
            raise ConfigError("bucket_cap_mb", f"must be > 0 (got {self.bucket_cap_mb})")
        if self.corpus_tokens <= self.seq_len + 1:
            raise ConfigError("corpus_tokens", f"must exceed seq_len + 1 ({self.seq_len + 1})")
        try:
            self.model_config()
        except ValueError as e:
            raise ConfigError("n_heads", str(e)) from e

    def model_config(self) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=256,
            dim=self.dim,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            n_kv_heads=self.n_kv_heads,
            max_seq_len=self.seq_len,
        )


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
    """Linear warmup to cfg.lr, then cosine to 10% of it at cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


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


def shard_fsdp(model: TinyLlama, bf16: bool, log: Any) -> nn.Module:
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
    for block in model.layers:
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


def list_complete(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (folder with the COMPLETE marker) as (step, path), oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        if p.name.startswith("step-") and (p / COMPLETE_MARKER).exists():
            found.append((int(p.name.removeprefix("step-")), p))
    return sorted(found)


def save_dcp(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ckpt_dir: Path,
    step: int,
    meta: dict,
    info: DistInfo,
    keep: int,
) -> Path:
    """Every rank writes its shard to a temp folder; rank 0 marks it complete and renames it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    final = ckpt_dir / f"step-{step:08d}"
    tmp = ckpt_dir / f".tmp-step-{step:08d}"
    if info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(info)
    digest = full_weights_digest(model)  # recorded so a load at any world size can prove equality
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save(
        {"model": model_state, "optim": optim_state},
        checkpoint_id=str(tmp),
        no_dist=not info.is_distributed,
    )
    barrier(info)  # every shard is on disk before the marker says so
    if info.is_main:
        meta = {**meta, "step": step, "weights_digest": digest}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        with open(tmp / COMPLETE_MARKER, "w") as f:
            f.write(f"{step}\n")
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        fsync_dir(ckpt_dir)
        for _, old in list_complete(ckpt_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(info)
    return final


def load_dcp(model: nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> dict:
    """Load a DCP checkpoint into (model, optimizer) at this run's sharding; returns its meta."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(path), no_dist=not torch.distributed.is_initialized())
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
    )
    meta = json.loads((path / "meta.json").read_text())
    # Proof that resharding is exact: the loaded full weights hash like the saved ones.
    meta["loaded_digest"] = full_weights_digest(model)
    return meta


# ------------------------------------------------------------------------------------------------
# The run.


def train(cfg: LMConfig, info: DistInfo, stop: StopFlag) -> int:
    """Run (or resume) training; returns the exit code."""
    log = print if info.is_main else (lambda *a, **k: None)
    device, bf16 = resolve_device(cfg, info)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    elif os.environ.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if cfg.strategy == "deepspeed":
        reason = deepspeed_skip_reason(device)
        if reason:
            print(f"deepspeed: skipped: {reason}", flush=True)
            return EXIT_CONFIG
        return train_deepspeed(cfg, info, device, log)
    init_distributed(info, device)
    try:
        return _train(cfg, info, stop, device, bf16, log)
    finally:
        cleanup(info)


def _train(
    cfg: LMConfig, info: DistInfo, stop: StopFlag, device: torch.device, bf16: bool, log: Any
) -> int:
    out = Path(cfg.out_dir)
    ckpt_dir = out / "checkpoints"
    corpus = make_corpus(cfg.corpus_tokens, cfg.seed)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = TinyLlama(cfg.model_config()).to(device)
    n_params = count_parameters(model)
    if cfg.strategy == "fsdp" and info.is_distributed:
        net: nn.Module = shard_fsdp(model, bf16, log)
    elif cfg.strategy == "fsdp":
        log("fsdp: one process: nothing to shard, training unsharded", flush=True)
        net = model
    else:
        net = model
    # Parameters only after sharding: the optimizer must hold the (sharded) DTensors.
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )

    if info.is_main:
        for leftover in ckpt_dir.glob(".tmp-step-*") if ckpt_dir.is_dir() else []:
            log(f"warning: removing {leftover} (a save that was interrupted)", flush=True)
            shutil.rmtree(leftover, ignore_errors=True)
    barrier(info)
    step, resumed_from = 0, None
    complete = list_complete(ckpt_dir)
    if complete:
        meta = load_dcp(model, optimizer, complete[-1][1])
        step = resumed_from = meta["step"]
        if meta.get("world_size") != info.world_size:
            log(
                f"resharded: checkpoint written by {meta.get('world_size')} ranks "
                f"({meta.get('strategy')}), loaded by {info.world_size} ({cfg.strategy})",
                flush=True,
            )
        log(
            f"resumed from step {step} ({complete[-1][1]}) weights {meta['loaded_digest']} "
            f"saved {meta.get('weights_digest')}",
            flush=True,
        )
    if cfg.strategy == "ddp" and info.is_distributed:
        net = wrap_ddp(
            model, device, bucket_cap_mb=cfg.bucket_cap_mb, comm_hook=cfg.comm_hook, log=log
        )
    if info.is_main:
        truncate_metrics(out / "metrics.jsonl", step)
        (out / "result.json").unlink(missing_ok=True)
    metrics = MetricsLog(out / "metrics.jsonl", enabled=info.is_main)
    # DDP computes in bf16 via autocast; FSDP2 does it with its MixedPrecisionPolicy instead.
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if bf16 and cfg.strategy == "ddp"
        else nullcontext()
    )
    tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum_steps * info.world_size
    log(
        f"lm_pretrain: strategy={cfg.strategy} device={device.type} world_size={info.world_size} "
        f"params={n_params} precision={'bf16' if bf16 else 'fp32'} steps={cfg.steps} "
        f"tokens_per_step={tokens_per_step} resumed_from={resumed_from} "
        f"threads={torch.get_num_threads()}",
        flush=True,
    )
    meta = {"world_size": info.world_size, "strategy": cfg.strategy, "config": asdict(cfg)}
    memory: dict[str, int] | None = None
    first_loss = None
    interval_loss = torch.zeros((), device=device)
    interval_steps, timed_steps, train_time = 0, 0, 0.0
    last_loss = float("nan")
    t_interval = time.perf_counter()

    def save(reason: str = "") -> None:
        path = save_dcp(net, optimizer, ckpt_dir, step, meta, info, cfg.keep_checkpoints)
        log(f"checkpoint saved step {step} path {path}{reason}", flush=True)

    while step < cfg.steps:
        t0 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        total = torch.zeros((), device=device)
        for micro in range(cfg.grad_accum_steps):
            x, y = get_batch(corpus, cfg, step, info.rank, micro)
            x, y = x.to(device), y.to(device)
            if cfg.strategy == "fsdp" and info.is_distributed:
                # FSDP2's no_sync: reduce-scatter gradients only on the last micro-batch.
                net.set_requires_gradient_sync(micro == cfg.grad_accum_steps - 1)
                context = nullcontext()
            else:
                context = sync_context(net, micro, cfg.grad_accum_steps)
            with context, autocast:
                logits = net(x)
                loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
                (loss / cfg.grad_accum_steps).backward()
            total += loss.detach() / cfg.grad_accum_steps
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        optimizer.step()
        if memory is None:
            memory = memory_per_rank(net, optimizer)  # grads still present: the peak of a step
            log(
                "memory_per_rank "
                + " ".join(f"{k}_bytes {v}" for k, v in memory.items())
                + f" world_size {info.world_size} strategy {cfg.strategy}",
                flush=True,
            )
        optimizer.zero_grad(set_to_none=True)
        step += 1
        train_time += time.perf_counter() - t0
        timed_steps += 1
        interval_loss += total
        interval_steps += 1
        if first_loss is None:
            first_loss = all_reduce(total.clone(), info).item() / info.world_size
        if step % cfg.log_every == 0 or step == cfg.steps:
            last_loss = all_reduce(interval_loss.clone(), info).item() / (
                interval_steps * info.world_size
            )
            now = time.perf_counter()
            tps = interval_steps * tokens_per_step / (now - t_interval)
            log(
                f"step {step}/{cfg.steps} loss {last_loss:.4f} lr {lr_at(step - 1, cfg):.5f} "
                f"tokens/s {tps:.0f}",
                flush=True,
            )
            metrics.write({"kind": "train", "step": step, "loss": last_loss, "tokens_per_s": tps})
            interval_loss.zero_()
            interval_steps, t_interval = 0, now
        sigterm = stop.requested
        if info.is_distributed:  # every rank must agree to stop, or one waits forever
            flag = torch.tensor(float(sigterm), device=device)
            sigterm = all_reduce(flag, info, op="max").item() > 0
        capped = cfg.max_steps and step >= cfg.max_steps and step < cfg.steps
        if sigterm or capped:
            if sigterm:
                stop.acknowledge()  # the final checkpoint may take a while: no watchdog exit
            save(" (SIGTERM)" if sigterm else " (max_steps)")
            metrics.close()
            if sigterm:
                log(f"stopped by SIGTERM at step {step}; rerun to resume", flush=True)
                return EXIT_SIGTERM
            log(f"stopped at max_steps={cfg.max_steps}; rerun without it to continue", flush=True)
            return EXIT_OK
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            save()

    if resumed_from is None or resumed_from < cfg.steps:
        save()
    metrics.close()
    digests = None
    if cfg.strategy != "fsdp" or not info.is_distributed:
        digests = [weights_digest(model)]
        if info.is_distributed:
            gathered: list[Any] = [None] * info.world_size
            torch.distributed.all_gather_object(gathered, digests[0])
            digests = gathered
    result = {
        "steps": step,
        "resumed_from_step": resumed_from,
        "first_loss": first_loss,
        "final_loss": last_loss,
        "tokens_per_s": round(timed_steps * tokens_per_step / train_time, 1) if train_time else 0.0,
        "train_time_s": round(train_time, 3),
        "timed_steps": timed_steps,
        "params": n_params,
        "memory_per_rank": memory,
        "weights_digests": digests,
        "strategy": cfg.strategy,
        "world_size": info.world_size,
        "device": device.type,
        "comm_hook": cfg.comm_hook,
        "bucket_cap_mb": cfg.bucket_cap_mb,
        "completed": True,
    }
    if info.is_main:
        write_json_atomic(out / "result.json", result)
    log(
        f"done steps {step} loss {last_loss:.4f} tokens/s {result['tokens_per_s']:.0f} "
        f"weights {digests[0] if digests else 'sharded'}",
        flush=True,
    )
    log("result " + json.dumps(result, separators=(",", ":"), sort_keys=True), flush=True)
    return EXIT_OK


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
    model = TinyLlama(cfg.model_config())
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
            loss = F.cross_entropy(engine(x).float().flatten(0, 1), y.flatten())
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
