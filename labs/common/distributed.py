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
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


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


def cleanup(info: DistInfo) -> None:
    """Leave the process group cleanly (a barrier first, so no rank exits mid-collective)."""
    if info.is_distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
