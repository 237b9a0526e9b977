"""What a ResourceQuota admits: quantities, a job's total requests, how many copies fit."""

from __future__ import annotations

import functools
from decimal import Decimal

import pytest

from kubecourse import OptionError
from kubecourse.manifests import load_lesson
from kubecourse.quota import how_many_fit, job_requests, parse_quantity


@pytest.mark.parametrize(
    "value, number",
    [
        ("500m", Decimal("0.5")),
        ("2", 2),
        (4, 4),
        ("16Gi", 16 * 2**30),
        ("1.5G", Decimal("1.5e9")),
        ("128Mi", 128 * 2**20),
    ],
)
def test_parse_quantity(value, number):
    assert parse_quantity(value) == number


@pytest.mark.parametrize("value", ["", "1.5X", "abc", "-1"])
def test_bad_quantity_names_the_field(value):
    with pytest.raises(OptionError) as info:
        parse_quantity(value)
    assert info.value.fields == ["quantity"]


@functools.cache
def _lesson04_objects():
    return load_lesson("04")


def _lesson04(kind: str, name: str | None = None):
    objects = _lesson04_objects()
    return next(
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    )


@pytest.mark.parametrize(
    "job_name, pods, gpus, fits, limited_by",
    [
        # quota: 64 cpu, 256Gi, 8 GPUs, 64 pods; each pod asks 4 cpu, 16Gi, 1 GPU
        ("cifar10-queued", 2, 2, 4, "requests.nvidia.com/gpu"),
        ("cifar10-ha", 1, 1, 8, "requests.nvidia.com/gpu"),
        ("cifar10-gang", 2, 2, 4, "requests.nvidia.com/gpu"),
    ],
)
def test_how_many_copies_of_each_lesson_job_the_team_quota_admits(
    job_name, pods, gpus, fits, limited_by
):
    quota = _lesson04("ResourceQuota")
    job = _lesson04("Job", job_name)
    needs = job_requests(job)
    assert needs["pods"] == pods and needs["requests.nvidia.com/gpu"] == gpus
    assert needs["cpu"] == 4 * pods and needs["requests.memory"] == 16 * 2**30 * pods
    answer = how_many_fit(quota, job)
    assert (answer["fits"], answer["limited_by"]) == (fits, limited_by)
    assert answer["per_resource"]["requests.cpu"] == 64 // (4 * pods)


def test_used_quota_reduces_what_fits():
    quota, job = _lesson04("ResourceQuota"), _lesson04("Job", "cifar10-ha")
    assert how_many_fit(quota, job, used={"requests.nvidia.com/gpu": "7"})["fits"] == 1
    assert how_many_fit(quota, job, used={"requests.nvidia.com/gpu": "8"})["fits"] == 0
