"""Where a result came from, written into every lab's result.json by the trainer core.

A number in a README is only worth something with its provenance: the course version and commit,
the library versions, the device (GPU model, driver, CUDA), the seed and, in a pod, the image
digest. Everything is read without side effects: versions from package metadata (no imports),
the commit from `git` when the code runs from a checkout (or $GIT_SHA in an image), the image from
$IMAGE_DIGEST (a Job can set it from the pod spec via the downward API or at build time).
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "numpy")
COURSE_PACKAGE = "kubecourse"


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_sha(repo: Path = REPO, env: dict | None = None) -> str | None:
    """$GIT_SHA, else `git rev-parse HEAD` in a checkout, else None (an image without .git)."""
    env = os.environ if env is None else env
    if env.get("GIT_SHA"):
        return env["GIT_SHA"]
    if not (repo / ".git").exists():
        return None
    try:
        proc = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def course_version(env: dict | None = None) -> str | None:
    env = os.environ if env is None else env
    if env.get("COURSE_VERSION"):
        return env["COURSE_VERSION"]
    try:
        return metadata.version(COURSE_PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def device_info(device: torch.device) -> dict[str, Any]:
    """The device; on CUDA also the GPU model, its count, the CUDA runtime and the driver."""
    info: dict[str, Any] = {"type": device.type}
    if device.type != "cuda":
        return info
    info.update(
        gpu=torch.cuda.get_device_name(device),
        gpu_count=torch.cuda.device_count(),
        cuda=torch.version.cuda,
        driver=_nvidia_driver(),
    )
    return info


def _nvidia_driver() -> str | None:
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.splitlines()[0].strip() if proc.returncode == 0 and proc.stdout else None


def provenance(device: torch.device, seed: int, env: dict | None = None) -> dict[str, Any]:
    """The `provenance` block of result.json."""
    env = os.environ if env is None else env
    return {
        "course_version": course_version(env),
        "git_sha": git_sha(env=env),
        "python": platform.python_version(),
        "packages": package_versions(),
        "device": device_info(device),
        "seed": seed,
        "image_digest": env.get("IMAGE_DIGEST") or None,
    }
