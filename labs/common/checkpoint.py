"""Restart-safe checkpoints: atomic writes, keep-last-K, resume from the newest complete one.

A pod can be killed at any instant (preemption, node drain, OOM). The rules that make a restart
safe are few and all here:

1. Write to a temp file in the SAME folder, flush + fsync it, then `os.replace` it onto the final
   name and fsync the folder. A reader sees the old set of checkpoints or the new one, never a
   half-written file under a real name.
2. On start, take the newest checkpoint that actually loads. A leftover temp file (a save that was
   interrupted) is removed with a warning; a file that fails to load is renamed to `*.corrupt`
   (kept for inspection, never tried again) and the next older one is used.
3. Keep the last K checkpoints, so one bad file never leaves you with nothing.

Files are `CKPT_DIR/ckpt-step-XXXXXXXX.pt` (zero-padded optimizer step), loaded with
`torch.load(weights_only=True)`: a checkpoint holds tensors and plain Python values only.
Folder checkpoints (`CKPT_DIR/step-XXXXXXXX/`: sharded DCP saves) follow the same three rules,
with a COMPLETE marker written last (`publish_dir`); `prune` keeps the last K of either kind.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from labs.common.data import fsync_dir, write_atomic

CKPT_RE = re.compile(r"^ckpt-step-(\d+)\.pt$")
TMP_SUFFIX = ".tmp"


def checkpoint_path(ckpt_dir: str | os.PathLike, step: int) -> Path:
    """`CKPT_DIR/ckpt-step-00000120.pt`."""
    return Path(ckpt_dir) / f"ckpt-step-{step:08d}.pt"


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete-looking checkpoints as (step, path), oldest first."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CKPT_RE.match(p.name))]
    return sorted(found)


def save_checkpoint(
    state: dict[str, Any],
    ckpt_dir: str | os.PathLike,
    step: int,
    keep: int = 3,
    slow_write_s: float = 0.0,
) -> Path:
    """Atomically write `state` as the checkpoint for `step`, then delete all but the newest `keep`.

    slow_write_s (fault injection): write half the bytes, sleep, write the rest, so a test can
    kill the process while a torn temp file is on disk and show that it is never loaded."""
    folder = Path(ckpt_dir)
    folder.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(folder, step)
    write_atomic(final, lambda f: _save(state, f, slow_write_s), suffix=TMP_SUFFIX)
    prune(folder, keep)
    return final


def _save(state: dict[str, Any], f, slow_write_s: float) -> None:
    if slow_write_s <= 0:
        torch.save(state, f)
        return
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    os.fsync(f.fileno())
    time.sleep(slow_write_s)
    f.write(data[len(data) // 2 :])


def load_latest(
    ckpt_dir: str | os.PathLike, log: Callable[[str], None] = print
) -> tuple[dict[str, Any] | None, Path | None]:
    """The newest checkpoint that loads, as (state, path); (None, None) when there is none."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return None, None
    for leftover in sorted(folder.glob(f"*{TMP_SUFFIX}")):
        log(f"warning: removing leftover temp file {leftover} (a save that was interrupted)")
        leftover.unlink(missing_ok=True)
    for _, path in reversed(list_checkpoints(folder)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated, garbage, wrong format: all mean "not this one"
            log(f"warning: skipping unreadable checkpoint {path}: {type(e).__name__}: {e}")
            path.replace(path.with_name(path.name + ".corrupt"))
            continue
        return state, path
    return None, None


# ------------------------------------------------------------------------------------------------
# Folder checkpoints (a DCP shard set, a Hugging Face `save_pretrained` folder): the same rules.
# Every writer fills a temp folder next to the final one; `publish_dir` fsyncs it, writes the
# COMPLETE marker last and renames it into place, so a folder with a real name is always whole.

COMPLETE_MARKER = "COMPLETE"
DIR_RE = re.compile(r"^step-(\d+)$")


def checkpoint_dir(ckpt_dir: str | os.PathLike, step: int) -> Path:
    """`CKPT_DIR/step-00000120/`."""
    return Path(ckpt_dir) / f"step-{step:08d}"


def staging_dir(ckpt_dir: str | os.PathLike, step: int) -> Path:
    """The temp folder a save of `step` writes into (`.tmp-step-00000120/`)."""
    return Path(ckpt_dir) / f".tmp-step-{step:08d}"


def list_complete(ckpt_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Folder checkpoints that carry the COMPLETE marker, as (step, path), oldest first."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in folder.iterdir()
        if (m := DIR_RE.match(p.name)) and (p / COMPLETE_MARKER).exists()
    ]
    return sorted(found)


def publish_dir(staged: Path, final: Path, marker: str | None = COMPLETE_MARKER) -> Path:
    """Make the fully written folder `staged` appear as `final` in one rename.

    fsync every file and the folder, write `marker` (if any) last, then replace `final` (an older
    copy is moved aside first and removed after) and fsync the parent."""
    for p in staged.rglob("*"):
        if p.is_file():
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
    if marker:
        with open(staged / marker, "w") as f:
            f.write("complete\n")
            f.flush()
            os.fsync(f.fileno())
    fsync_dir(staged)
    staged.chmod(0o755)
    old = final.with_name(f".{final.name}-old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(staged, final)
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)
    return final


def save_dir_atomic(final: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """`write(folder)` into a sibling temp folder, then `publish_dir` it (no marker): how the
    fine-tuning lab writes its adapter and merged model, and the LM lab its Hugging Face export."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        write(staged)
        return publish_dir(staged, final, marker=None)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def prune(ckpt_dir: str | os.PathLike, keep: int) -> None:
    """Retention for both layouts: keep the newest `keep` files and the newest `keep` folders."""
    if keep <= 0:
        return
    for _, old in list_checkpoints(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)
    for _, old in list_complete(ckpt_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def remove_staging(ckpt_dir: str | os.PathLike, log: Callable[[str], None] = print) -> None:
    """Leftovers of interrupted folder saves (`.tmp-step-*`): never loaded, removed with a warning."""
    folder = Path(ckpt_dir)
    for leftover in sorted(folder.glob(".tmp-step-*")) if folder.is_dir() else []:
        log(f"warning: removing {leftover} (a save that was interrupted)")
        shutil.rmtree(leftover, ignore_errors=True)
