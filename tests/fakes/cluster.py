"""A small Kubernetes cluster in one process: the fake API server plus a Job controller, a
scheduler and a kubelet that runs pods as local processes.

    with FakeCluster(tmp_path) as cluster:
        kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
        ...  # TrainingClient(backend="kubernetes", kubeconfig=...) submits, pods really run

The HTTP surface is the API server's (tests/fakes/apiserver.py); the components only watch and
write objects, as kube-controller-manager, kube-scheduler and the kubelet do:
  * controllers.JobControllers: batch/v1 Jobs, with the local backend's controller code;
  * scheduler.Scheduler: node capacity (cpu, memory, nvidia.com/gpu), nodeSelector, taints;
  * kubelet.Kubelet: the local backend's pod runtime; PVCs are folders under `root/volumes`.
The default node is one big "GPU node" (label nvidia.com/gpu.present=true, 64 cpu, 512Gi, 8 GPUs,
no taint unless `taint=True`): the lessons' jobs (4 cpu, 16Gi, 1 GPU each) fit several at once, as
they run at once on the local backend; its processes run on the CPU.
What the cluster leaves out is listed in CLUSTER_DIFFERENCES (and KNOWN_DIFFERENCES).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .apiserver import FakeApiServer
from .controllers import JobControllers
from .kubelet import Kubelet
from .scheduler import Scheduler

REPO = Path(__file__).resolve().parents[2]

CLUSTER_DIFFERENCES = """\
- One kubelet, one node by default (more nodes can be passed, but only the first runs pods).
- Only batch/v1 Jobs have a controller; JobSet, PyTorchJob, TrainJob and Volcano Jobs are stored
  but nothing makes their pods. No Kueue, no ReplicaSet/Deployment/StatefulSet controllers.
- A pod's containers are processes on this machine: every pod is 127.0.0.1, Services are not
  proxied (pod DNS under a headless Service maps to 127.0.0.1 with a per-job port, as on the local
  backend), images are never pulled, resource limits are not enforced (no OOM kill).
- A pod deleted with a grace period (an eviction, the Job controller's cleanup) stays Terminating
  while its processes get SIGTERM (SIGKILL after the grace period, capped by max_grace_s); its
  log keeps streaming, the kubelet writes its final status, then removes it, and only then does
  the Job controller make the replacement (podReplacementPolicy Failed). Grace 0 (`kill`),
  foreground cascades and namespace deletion remove pods at once, their final status unwritten
  (no job-tracking finalizer).
- The scheduler checks requests, nodeSelector and taints only; no affinity, spread or preemption.
- PersistentVolumeClaims are folders shared by every pod (any access mode works everywhere).
- No exec/attach/port-forward (pods/exec is not served).
"""


def gpu_node(
    name: str = "fake-gpu-node",
    cpu: str = "64",
    memory: str = "512Gi",
    gpus: int = 8,
    taint: bool = False,
) -> dict:
    allocatable = {"cpu": cpu, "memory": memory, "nvidia.com/gpu": str(gpus), "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "nvidia.com/gpu.present": "true" if gpus else "false",
            },
        },
        "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}] if taint else []},
        "status": {
            "capacity": dict(allocatable),
            "allocatable": allocatable,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "nodeInfo": {"kubeletVersion": "v1.33.0-fake", "containerRuntimeVersion": "local://"},
        },
    }


class FakeCluster:
    """FakeApiServer + controllers + scheduler + kubelet (see the module docstring)."""

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        nodes: list[dict] | None = None,
        workdir: Path = REPO,
        python: str = sys.executable,
        max_grace_s: float = 10.0,
    ):
        self.root = Path(root)
        self.api = FakeApiServer()
        self.api.graceful_pods = True  # the kubelet below ends Terminating pods
        self.nodes = nodes if nodes is not None else [gpu_node()]
        self.components = [
            JobControllers(self.api),
            Scheduler(self.api),
            Kubelet(
                self.api,
                self.nodes[0]["metadata"]["name"] if self.nodes else "",
                self.root,
                workdir=workdir,
                python=python,
                max_grace_s=max_grace_s,
            ),
        ]

    @property
    def kubelet(self) -> Kubelet:
        return self.components[2]

    def pvc_dir(self, claim: str, namespace: str = "default") -> Path:
        """The folder standing in for a PVC (what the cluster's pods mount)."""
        return self.kubelet.volumes_root / namespace / claim

    def start(self) -> FakeCluster:
        for component in self.components:
            component.start()
        self.api.start()
        for node in self.nodes:
            self.api.put_object(node)
        return self

    def stop(self) -> None:
        for component in self.components:
            component.stopping.set()
        for pod in self.api.objects("pods", namespace=""):  # stop every process: delete the pods
            self.kubelet._stop((pod["metadata"]["namespace"], pod["metadata"]["name"]),
                               {"metadata": {"deletionGracePeriodSeconds": 0}})  # fmt: skip
        for component in self.components:
            component.stop()
        self.api.stop()

    def write_kubeconfig(self, path: str | os.PathLike, namespace: str = "default") -> str:
        return self.api.write_kubeconfig(path, namespace)

    def __enter__(self) -> FakeCluster:
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()
        if exc_type is None and self.api.errors:
            raise RuntimeError("FakeCluster saw errors:\n" + "\n".join(self.api.errors))
