"""Lesson 05's hardware section: data-sheet figures with sources, topo parsing, all-reduce bound."""

from __future__ import annotations

import pytest

from kubecourse.hardware import (
    DATASHEET,
    EXAMPLE_TOPO,
    LINKS,
    SOURCES,
    allreduce_seconds,
    link_kind,
    parse_topo,
)


def test_every_gpu_figure_has_a_source():
    assert set(DATASHEET) == set(SOURCES)
    assert DATASHEET["H100 SXM"]["bf16_tflops"] > 3 * DATASHEET["A100 SXM"]["bf16_tflops"]


def test_parse_topo_reads_every_pair_and_only_known_links():
    pairs = parse_topo(EXAMPLE_TOPO)
    assert pairs[("GPU0", "GPU3")] == "NV18" and pairs[("GPU0", "NIC0")] == "PIX"
    assert pairs[("GPU2", "NIC0")] == "SYS" and ("GPU0", "GPU0") not in pairs
    assert len([p for p in pairs if p[0].startswith("GPU")]) == 4 * 5  # 3 GPUs + 2 NICs each
    assert {link_kind(v) for v in pairs.values()} <= set(LINKS)


def test_a_single_gpu_matrix():
    text = "        GPU0    CPU Affinity    NUMA Affinity\nGPU0     X      0-15            0\n"
    assert parse_topo(text) == {}


@pytest.mark.parametrize("gpus, expected", [(2, 1.0), (8, 1.75)])
def test_ring_allreduce_bound(gpus, expected):
    # 2 (n-1)/n of the bytes each way; 100 GB over a 200 GB/s (bidirectional) link: 1 s per byte-pass
    assert allreduce_seconds(100e9, gpus=gpus, link_gb_s=200) == pytest.approx(expected)
