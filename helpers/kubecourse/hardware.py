"""GPU hardware for lesson 05: data-sheet figures, links, `nvidia-smi topo -m`, CPU:GPU ratio.

    DATASHEET["H100 SXM"]["bf16_tflops"]         # 989 (dense), with its source in SOURCES
    allreduce_seconds(14e9, gpus=8, link_gb_s=900)  # a ring all-reduce of 14 GB of gradients
    parse_topo(text)                              # {("GPU0", "GPU1"): "NV18", ...}

Every figure below is copied from NVIDIA's data sheets (SOURCES); dense Tensor Core throughput
(the data sheets print the 2:4-sparsity figure, twice as high). Nothing here is measured: lesson 05
measures what this machine does.
"""

from __future__ import annotations

import re

SOURCES = {
    "A100 SXM": "NVIDIA A100 Tensor Core GPU data sheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf, 80GB SXM column)",
    "H100 SXM": "NVIDIA H100 Tensor Core GPU data sheet (resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet, H100 SXM column; sparsity figures halved)",
}  # fmt: skip

DATASHEET = {
    "A100 SXM": {
        "memory_gb": 80,
        "memory": "HBM2e",
        "memory_bandwidth_gb_s": 2039,
        "bf16_tflops": 312,
        "fp8_tflops": None,  # no FP8 Tensor Cores before Hopper
        "tf32_tflops": 156,
        "nvlink_gb_s": 600,  # NVLink 3, 12 links, bidirectional total
        "pcie_gb_s": 64,  # PCIe Gen4 x16, bidirectional
        "tdp_w": 400,
    },
    "H100 SXM": {
        "memory_gb": 80,
        "memory": "HBM3",
        "memory_bandwidth_gb_s": 3350,
        "bf16_tflops": 989,
        "fp8_tflops": 1979,
        "tf32_tflops": 494,
        "nvlink_gb_s": 900,  # NVLink 4, 18 links, bidirectional total
        "pcie_gb_s": 128,  # PCIe Gen5 x16, bidirectional
        "tdp_w": 700,
    },
}

# What `nvidia-smi topo -m` prints between two devices, fastest first (its own legend).
LINKS = {
    "NV#": "NVLink: # bonded links, GPU to GPU, no CPU or PCIe on the path (through NVSwitch on HGX)",
    "PIX": "at most one PCIe bridge between them",
    "PXB": "several PCIe bridges, no PCIe host bridge",
    "PHB": "through a PCIe host bridge (the CPU's root complex)",
    "NODE": "through the interconnect between host bridges inside one NUMA node",
    "SYS": "through the CPU-to-CPU link (QPI/UPI, Infinity Fabric): another NUMA node",
}

# The format of `nvidia-smi topo -m` on an 8-GPU HGX H100 node (every pair over NVSwitch, NV18),
# shortened to 4 GPUs and 2 NICs; illustrative, not captured from a machine.
EXAMPLE_TOPO = """\
        GPU0    GPU1    GPU2    GPU3    NIC0    NIC1    CPU Affinity    NUMA Affinity
GPU0     X      NV18    NV18    NV18    PIX     SYS     0-55            0
GPU1    NV18     X      NV18    NV18    PIX     SYS     0-55            0
GPU2    NV18    NV18     X      NV18    SYS     PIX     56-111          1
GPU3    NV18    NV18    NV18     X      SYS     PIX     56-111          1
NIC0    PIX     PIX     SYS     SYS      X      SYS
NIC1    SYS     SYS     PIX     PIX     SYS      X
"""


def parse_topo(text: str) -> dict[tuple[str, str], str]:
    """The link type between every pair of devices of an `nvidia-smi topo -m` matrix."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("Legend")]
    header = lines[0].split()
    devices = [h for h in header if re.fullmatch(r"(GPU|NIC|mlx\w*)\d*", h)]
    links = {}
    for line in lines[1:]:
        cells = line.split()
        if not cells or cells[0] not in devices:
            continue
        for device, link in zip(devices, cells[1 : 1 + len(devices)], strict=False):
            if link != "X":
                links[(cells[0], device)] = link
    return links


def link_kind(link: str) -> str:
    """The LINKS key of one matrix entry ("NV18" -> "NV#")."""
    return "NV#" if link.startswith("NV") else link


def allreduce_seconds(gradient_bytes: float, *, gpus: int, link_gb_s: float) -> float:
    """Lower bound of a ring all-reduce: each GPU sends and receives 2 (n-1)/n of the bytes.

    `link_gb_s` is the bidirectional figure of the data sheets; one direction carries half.
    """
    one_way = link_gb_s / 2 * 1e9
    return 2 * (gpus - 1) / gpus * gradient_bytes / one_way


def cpus_per_gpu(cpus: int, gpus: int) -> float:
    """CPU cores per GPU: each GPU's data loader needs workers (decode, augment) on these."""
    return cpus / max(gpus, 1)
