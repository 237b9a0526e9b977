"""Mirrors for learners who cannot reach the Hugging Face hub, PyPI or Docker Hub (mainland China).

One typed option, `mirrors={...}`, puts HF_ENDPOINT and PIP_INDEX_URL into every container's env
(the labs' huggingface_hub and pip read them there) and prefixes every image with a registry mirror.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kubecourse.errors import OptionError
from kubecourse.manifests import (
    all_containers,
    pod_templates,
    render,
    with_registry_prefix,
    workload,
)
from kubecourse.validation import validate
from tests.guards import HANG_GUARD_S

MIRRORS = {
    "hf_endpoint": "https://hf-mirror.com",
    "pip_index_url": "https://mirrors.aliyun.com/pypi/simple/",
    "registry_prefix": "m.daocloud.io",
}


def _containers(objects):
    return [c for spec in pod_templates(workload(objects)) for c in all_containers(spec)]


@pytest.mark.parametrize("lesson", ["01", "03"])
def test_mirrors_reach_every_container_env_and_image_and_still_validate(lesson):
    plain = render(lesson, image="ghcr.io/kubecourse/labs:0.1.0")
    mirrored = render(lesson, image="ghcr.io/kubecourse/labs:0.1.0", mirrors=MIRRORS)
    containers = _containers(mirrored)
    assert containers
    for container in containers:
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env["HF_ENDPOINT"] == "https://hf-mirror.com"
        assert env["PIP_INDEX_URL"] == "https://mirrors.aliyun.com/pypi/simple/"
        assert container["image"].startswith("m.daocloud.io/")
    assert [c["image"] for c in containers] == [
        "m.daocloud.io/" + c["image"] for c in _containers(plain)
    ]
    validate(mirrored).raise_for_findings()


def test_no_mirrors_change_nothing():
    assert render("01", mirrors={}) == render("01")
    assert render("01", mirrors={"hf_endpoint": ""}) == render("01")


@pytest.mark.parametrize(
    "image, expected",
    [
        ("ghcr.io/kubecourse/labs:0.1.0", "mirror.example.cn/ghcr.io/kubecourse/labs:0.1.0"),
        (
            "pytorch/pytorch:2.5.1-cuda12.4",
            "mirror.example.cn/docker.io/pytorch/pytorch:2.5.1-cuda12.4",
        ),
        ("busybox:1.36", "mirror.example.cn/docker.io/library/busybox:1.36"),
        ("localhost:5000/labs:1", "mirror.example.cn/localhost:5000/labs:1"),
        (
            "nvcr.io/nvidia/pytorch@sha256:" + "a" * 64,
            "mirror.example.cn/nvcr.io/nvidia/pytorch@sha256:" + "a" * 64,
        ),
        (
            "mirror.example.cn/ghcr.io/x/y:1",
            "mirror.example.cn/ghcr.io/x/y:1",
        ),  # applied twice: once
    ],
)
def test_registry_prefix_keeps_the_full_reference(image, expected):
    assert with_registry_prefix(image, "mirror.example.cn/") == expected


@pytest.mark.parametrize(
    "mirrors, field",
    [
        ({"hf_mirror": "https://x"}, "mirrors.hf_mirror"),
        ({"hf_endpoint": "hf-mirror.com"}, "mirrors.hf_endpoint"),
        ({"pip_index_url": "ftp://x"}, "mirrors.pip_index_url"),
        ({"registry_prefix": "https://m.daocloud.io"}, "mirrors.registry_prefix"),
    ],
)
def test_bad_mirror_values_name_the_field(mirrors, field):
    with pytest.raises(OptionError) as info:
        render("01", mirrors=mirrors)
    assert field in str(info.value)


def test_the_hub_client_in_the_labs_reads_hf_endpoint_from_the_env():
    code = "import huggingface_hub.constants as c; print(c.ENDPOINT)"
    env = {**os.environ, "HF_ENDPOINT": "https://hf-mirror.com"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=HANG_GUARD_S
    )
    assert out.stdout.strip() == "https://hf-mirror.com", out.stderr
