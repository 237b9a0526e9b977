"""Where a result came from: course version and commit, package versions, device, cluster version.

    provenance()                                  # a dict, JSON-ready
    provenance(kubernetes_server="v1.34.1")       # on a cluster (env.cluster_info()["server"])

Every executed notebook carries it in its metadata (`metadata.kubecourse.provenance`) and the
course summary in `summary.json`. Versions come from the installed distributions
(importlib.metadata), never from importing torch: the helpers stay torch-free. The device comes
from `nvidia-smi` when there is one (GPU model, driver, CUDA), else "cpu".
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from importlib import metadata
from typing import Any

from .manifests import repo_root

PACKAGES = (
    "kubecourse",
    "torch",
    "transformers",
    "peft",
    "bitsandbytes",
    "kubernetes",
    "papermill",
)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> dict[str, Any]:
    """The checkout's commit and whether it has uncommitted changes (None outside git)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=repo_root(), capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"sha": sha, "dirty": bool(status) if status is not None else None}


def gpus() -> list[dict[str, str]]:
    """Each GPU's name, driver and memory from nvidia-smi; [] without one."""
    if not shutil.which("nvidia-smi"):
        return []
    query = "--query-gpu=name,driver_version,memory.total"
    try:
        done = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [line.split(", ") for line in done.stdout.splitlines() if line.strip()]
    return [{"name": r[0], "driver": r[1], "memory": r[2]} for r in rows if len(r) == 3]


def cuda_version() -> str | None:
    """The CUDA version the driver supports (nvidia-smi's header), None without a GPU."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    marker = "CUDA Version:"
    return header.split(marker)[1].split()[0] if marker in header else None


def provenance(kubernetes_server: str | None = None, **extra: Any) -> dict[str, Any]:
    """The provenance record: what produced a result, in enough detail to reproduce it."""
    devices = gpus()
    record = {
        "course": {"version": _version("kubecourse"), **git_commit()},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "device": "cuda" if devices else "cpu",
        "gpus": devices,
        "cuda": cuda_version(),
        "kubernetes_server": kubernetes_server,
    }
    record.update(extra)
    return record
