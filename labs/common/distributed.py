"""One script, every scale: read the distributed setup from the environment.

`torchrun` (and the Kubernetes manifests of this course) start one process per accelerator and set

    WORLD_SIZE   how many processes train together
    RANK         this process's index in 0..WORLD_SIZE-1 (rank 0 logs and checkpoints)
    LOCAL_RANK   its index on this node (which GPU it drives; local rank 0 prepares node-local data)
    MASTER_ADDR / MASTER_PORT   where rank 0 listens for the rendezvous

Without WORLD_SIZE (or with WORLD_SIZE=1) the same code runs as a single process and every helper
here is a no-op. Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist

from labs.common.config import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Who this process is in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that prints, writes metrics and saves checkpoints."""
        return self.rank == 0


def dist_info_from_env(env: dict[str, str] | None = None) -> DistInfo:
    """Read RANK / LOCAL_RANK / WORLD_SIZE (as set by torchrun or a Kubernetes Job)."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(
        rank=int(env["RANK"]), local_rank=int(env.get("LOCAL_RANK", "0")), world_size=world
    )


def pick_device(requested: str, info: DistInfo) -> torch.device:
    """This rank's device for `--device auto|cuda|cpu`: its local GPU when CUDA is asked for (or
    `auto` finds one), else the CPU. Asking for CUDA without one is a config error (exit 2)."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device", "cuda requested but torch.cuda.is_available() is False")
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def set_threads(num_threads: int, env: dict[str, str] | None = None) -> None:
    """CPU threads of this process: `num_threads`, else $OMP_NUM_THREADS (torchrun sets 1), else
    torch's default (all cores)."""
    env = os.environ if env is None else env
    if num_threads:
        torch.set_num_threads(num_threads)
    elif env.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))


def init_distributed(info: DistInfo, device: torch.device) -> None:
    """Join the process group (NCCL for CUDA, gloo for CPU); a no-op for a single process."""
    if not info.is_distributed:
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")


def barrier(info: DistInfo) -> None:
    """Wait until every rank gets here."""
    if info.is_distributed:
        dist.barrier()


def all_reduce(tensor: torch.Tensor, info: DistInfo, op: str = "sum") -> torch.Tensor:
    """In-place sum (or max) over ranks; returns the tensor for chaining."""
    if info.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` on every rank (e.g. the checkpoint it loaded: works without shared disk)."""
    if not info.is_distributed:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank ([obj] for a single process)."""
    if not info.is_distributed:
        return [obj]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def cleanup(info: DistInfo) -> None:
    """Leave the process group cleanly: a barrier first, so no rank exits mid-collective, then
    destroy the group even when the barrier fails (a peer died), so no gloo/NCCL thread is left
    running into interpreter shutdown."""
    if info.is_distributed and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def exit_process(code: int) -> None:
    """Flush and leave NOW with `code`, skipping interpreter teardown.

    Why: with gloo on loopback and several torchrun launchers, a worker that has finished
    training sometimes aborts (SIGABRT, exit -6) while Python tears down modules and the C++
    communication threads' destructors run in an unlucky order; its launcher then reports a
    failure (or restarts it) although every step and checkpoint was done. Once the process group
    is destroyed and every file is closed there is nothing left for teardown to do, so a worker
    calls this as its very last statement (see labs/lm_pretrain.py and
    benchmarks/bench_multinode_reliability.py for the measured effect).
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


# --------------------------------------------------------------------------------------------------
# Communication tuning for DDP (what you change when scaling efficiency is poor)
# --------------------------------------------------------------------------------------------------

CommHook = Literal["none", "fp16", "bf16", "powersgd"]
COMM_HOOKS: tuple[str, ...] = ("none", "fp16", "bf16", "powersgd")


def comm_hook_skip_reason(hook: str, device: torch.device) -> str | None:
    """Why `hook` cannot run here (None when it can). The bf16 hook needs NCCL (CUDA)."""
    if hook == "bf16" and device.type != "cuda":
        return "the bf16 compression hook needs CUDA + NCCL (gloo has no bf16 all-reduce)"
    return None


def wrap_ddp(
    model: torch.nn.Module,
    device: torch.device,
    *,
    bucket_cap_mb: float = 25.0,
    comm_hook: str = "none",
    powersgd_rank: int = 1,
    log: Any = print,
) -> torch.nn.Module:
    """DistributedDataParallel with the two knobs that matter most for step time.

    bucket_cap_mb: DDP all-reduces gradients in buckets of this size while backward is still
        running; small buckets start communicating earlier but pay per-message latency, big
        buckets overlap less. 25 MB is PyTorch's default.
    comm_hook: compress gradients before the all-reduce: fp16/bf16 halve the bytes sent (bf16
        keeps fp32's range; needs NCCL), PowerSGD sends a rank-`powersgd_rank` approximation plus
        error feedback (much less traffic for large matrices, some extra compute).
    A hook that cannot run here (bf16 on CPU) is skipped with its reason printed.
    """
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
    from torch.nn.parallel import DistributedDataParallel

    if comm_hook not in COMM_HOOKS:
        raise ValueError(f"comm_hook must be one of {COMM_HOOKS}, got {comm_hook!r}")
    ddp = DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        bucket_cap_mb=bucket_cap_mb,
    )
    reason = comm_hook_skip_reason(comm_hook, device)
    if reason:
        log(f"comm_hook: {comm_hook} skipped: {reason}; plain fp32 all-reduce", flush=True)
    elif comm_hook == "fp16":
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
    elif comm_hook == "bf16":
        ddp.register_comm_hook(None, default_hooks.bf16_compress_hook)
    elif comm_hook == "powersgd":
        state = powerSGD_hook.PowerSGDState(
            process_group=None,
            matrix_approximation_rank=powersgd_rank,
            start_powerSGD_iter=2,  # plain all-reduce for the first steps, as the paper advises
        )
        ddp.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
    return ddp


def sync_context(
    model: torch.nn.Module, micro_index: int, micro_steps: int
) -> AbstractContextManager:
    """Gradient accumulation under DDP: `no_sync()` on every micro-batch but the last, so the
    gradients are all-reduced once per optimizer step instead of once per micro-batch."""
    last = micro_index == micro_steps - 1
    if last or not hasattr(model, "no_sync"):
        return nullcontext()
    return model.no_sync()
