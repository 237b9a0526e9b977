"""Storage for lesson 09: tiers for data and checkpoints, checkpoint backup, cache hit rate.

    checkpoint_seconds(20, TIERS["object store"].write_gb_s)   # kubecourse.cost, per tier
    backup_checkpoint(path, store)          # content-addressed copy, verified, written atomically
    restart_seconds(hit_rate=0.9, hit_s=60, miss_s=600)

TIERS holds *assumed* bandwidths (order of magnitude for one writer, to be replaced by your own
`fio`/`dd` numbers), not measurements.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Tier:
    write_gb_s: float  # assumed, one writer
    shared: bool  # can pods on other nodes read it (RWX / object store)?
    survives_node: bool  # does it outlive the node?
    use: str


TIERS = {
    "local NVMe": Tier(2.0, False, False, "data cache and the hot checkpoint; gone with the node"),
    "RWX file system": Tier(0.5, True, True, "checkpoints every node of a job must read (PVC)"),
    "object store": Tier(0.2, True, True, "backups, data sets, final models; lifecycle to cold"),
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def backup_checkpoint(path: str | os.PathLike, store: str | os.PathLike) -> Path:
    """Copy a checkpoint into `store` under its content hash (temp name, fsync, rename), verified.

    Idempotent: a checkpoint already in the store is not copied again. On a cluster the store is a
    bucket (`aws s3 cp --checksum-algorithm SHA256`, `gcloud storage cp`), the rule the same."""
    source, store = Path(path), Path(store)
    store.mkdir(parents=True, exist_ok=True)
    digest = _sha256(source)
    target = store / f"{source.stem}-{digest[:16]}{source.suffix}"
    if target.exists() and _sha256(target) == digest:
        return target
    temporary = target.with_name(target.name + ".tmp")
    with open(source, "rb") as src, open(temporary, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())
    if _sha256(temporary) != digest:
        temporary.unlink()
        raise OSError(f"backup of {source} does not match its checksum")
    os.replace(temporary, target)
    return target


def restart_seconds(*, hit_rate: float, hit_s: float, miss_s: float) -> float:
    """Mean restart time when a fraction `hit_rate` of pod starts find image, data and model local."""
    if not 0.0 <= hit_rate <= 1.0:
        raise ValueError(f"hit_rate must be in [0, 1], got {hit_rate}")
    return hit_rate * hit_s + (1 - hit_rate) * miss_s
