"""The trainer's two checkpoint formats, one interface: `save(state, step) -> path`, `load()`.

* `PtCheckpoints`: rank 0 writes ONE file (`ckpt-step-XXXXXXXX.pt`) holding the weights, the
  optimizer and the trainer state; on resume it reads it and sends it to the other ranks (no shared
  disk needed). For models every rank holds whole (one process, DDP, LoRA adapters).
* `DcpCheckpoints`: every rank writes its shard with `torch.distributed.checkpoint` into
  `.tmp-step-XXXXXXXX/`; rank 0 adds `trainer.pt` (the trainer state) and `meta.json`, then
  `publish_dir` marks it COMPLETE and renames it to `step-XXXXXXXX/`. A load reshards to the
  current world size (saved by 2 FSDP2 ranks, loaded by 1). Multi-node needs shared storage.

Both use labs/common/checkpoint.py for the atomic write, the COMPLETE rule and retention.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from labs.common import checkpoint as ckpt
from labs.common.distributed import barrier, broadcast_object


class PtCheckpoints:
    """One `.pt` file per checkpoint, written and read by rank 0."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.note = ""

    def save(self, state: dict[str, Any], step: int) -> Path:
        tr = self.trainer
        path = ckpt.checkpoint_path(tr.ckpt_dir, step)
        if tr.dist.is_main:
            state = {
                **state,
                "model": tr.task.model_state(),
                "optimizer": tr.task.optimizer.state_dict(),
            }
            ckpt.save_checkpoint(
                state,
                tr.ckpt_dir,
                step,
                keep=tr.cfg.keep_checkpoints,
                slow_write_s=tr.cfg.inject_slow_checkpoint_s,
            )
        barrier(tr.dist)
        return path

    def load(self) -> tuple[dict[str, Any] | None, Path | None]:
        tr = self.trainer
        state, path = (None, None)
        if tr.dist.is_main:
            state, path = ckpt.load_latest(tr.ckpt_dir, log=tr.log)
        state = broadcast_object(state, tr.dist)
        if state is not None:
            tr.task.load_model_state(state["model"])
            tr.task.optimizer.load_state_dict(state["optimizer"])
        return state, path


class DcpCheckpoints:
    """A sharded folder per checkpoint; every rank writes and reads its own shard."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.note = ""

    def save(self, state: dict[str, Any], step: int) -> Path:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        tr = self.trainer
        final, staged = ckpt.checkpoint_dir(tr.ckpt_dir, step), ckpt.staging_dir(tr.ckpt_dir, step)
        if tr.dist.is_main:
            shutil.rmtree(staged, ignore_errors=True)
            staged.mkdir(parents=True)
        barrier(tr.dist)
        meta = {"world_size": tr.dist.world_size, "step": step, **tr.task.checkpoint_meta()}
        model_state, optim_state = get_state_dict(tr.task.net, tr.task.optimizer)
        dcp.save(
            {"model": model_state, "optim": optim_state},
            checkpoint_id=str(staged),
            no_dist=not tr.dist.is_distributed,
        )
        barrier(tr.dist)  # every shard is on disk before the folder is published
        if tr.dist.is_main:
            torch.save(state, staged / "trainer.pt")
            (staged / "meta.json").write_text(json.dumps({**meta, "config": state["config"]}))
            if tr.cfg.inject_slow_checkpoint_s:
                time.sleep(tr.cfg.inject_slow_checkpoint_s)  # a kill now leaves a .tmp folder
            ckpt.publish_dir(staged, final)
            ckpt.prune(tr.ckpt_dir, tr.cfg.keep_checkpoints)
        barrier(tr.dist)
        return final

    def load(self) -> tuple[dict[str, Any] | None, Path | None]:
        tr = self.trainer
        if tr.dist.is_main:
            ckpt.remove_staging(tr.ckpt_dir, log=tr.log)
        barrier(tr.dist)
        complete = ckpt.list_complete(tr.ckpt_dir)
        if not complete:
            return None, None
        path = complete[-1][1]
        load_sharded(tr.task.net, tr.task.optimizer, path, no_dist=not tr.dist.is_distributed)
        state = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
        self.note = tr.task.resumed_note(json.loads((path / "meta.json").read_text()))
        return state, path


def load_sharded(net: Any, optimizer: Any, path: Path, no_dist: bool) -> None:
    """Load the DCP shards in `path` into (net, optimizer) at this process's sharding."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(net, optimizer)
    shards = {"model": model_state, "optim": optim_state}
    dcp.load(shards, checkpoint_id=str(path), no_dist=no_dist)
    set_state_dict(
        net, optimizer, model_state_dict=shards["model"], optim_state_dict=shards["optim"]
    )
