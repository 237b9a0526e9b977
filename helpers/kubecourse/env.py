"""The environment check of notebook 00: versions, device, disk, and which backend will be used.

torch is inspected in a subprocess, because the helpers never import it (the labs do).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .manifests import repo_root

_TORCH_PROBE = (
    "import json, torch; print(json.dumps({'torch': torch.__version__, 'cuda': torch.cuda.is_available(),"
    " 'gpus': torch.cuda.device_count(), 'gpu_name': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,"
    " 'bf16': bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()), 'threads': torch.get_num_threads()}))"
)


def torch_info() -> dict[str, Any]:
    """torch version, CUDA availability, GPU count and name, bf16 support (from a subprocess)."""
    result = subprocess.run(
        [sys.executable, "-c", _TORCH_PROBE], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        return {
            "error": result.stderr.strip().splitlines()[-1]
            if result.stderr.strip()
            else "torch probe failed"
        }
    return json.loads(result.stdout)


def kubeconfig_path() -> Path | None:
    """The kubeconfig kubectl would use ($KUBECONFIG's first entry, else ~/.kube/config), if it exists."""
    configured = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    path = Path(configured).expanduser() if configured else Path.home() / ".kube" / "config"
    return path if path.is_file() else None


def cluster_info(timeout_s: float = 5.0) -> dict[str, Any]:
    """Whether a cluster is reachable, and its version; never raises."""
    path = kubeconfig_path()
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if path is None and not in_cluster:
        return {
            "reachable": False,
            "why": "no kubeconfig ($KUBECONFIG or ~/.kube/config) and not inside a pod",
        }
    from .backends.config import KubernetesBackendConfig
    from .backends.kubernetes import KubernetesBackend

    backend = KubernetesBackend(
        KubernetesBackendConfig(
            kubeconfig=str(path) if path else None, retries=0, request_timeout_s=timeout_s
        )
    )
    try:
        version = backend._request("GET", "/version")
        return {
            "reachable": True,
            "server": version.get("gitVersion"),
            "kubeconfig": str(path) if path else "in-cluster",
        }
    except Exception as exc:  # noqa: BLE001 - the point is to report any failure
        return {"reachable": False, "why": f"{type(exc).__name__}: {exc}"}
    finally:
        backend.close()


def check_environment() -> dict[str, Any]:
    """Everything notebook 00 shows, as one dict."""
    disk = shutil.disk_usage(repo_root())
    cluster = cluster_info()
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gib": round(memory_gib, 1) if memory_gib else None,
        "disk_free_gib": round(disk.free / 2**30, 1),
        "torch": torch_info(),
        "kubectl": shutil.which("kubectl"),
        "cluster": cluster,
        "backend": "kubernetes" if cluster.get("reachable") else "local",
    }
