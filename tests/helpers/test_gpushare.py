"""Lesson 08's GPU sharing arithmetic, read from the course's device-plugin and MIG configs."""

from __future__ import annotations

import pytest

from kubecourse.gpushare import ISOLATION, capacity, load_sharing, profiles, slices_per_gpu


@pytest.mark.parametrize(
    "profile, mode, per_gpu",
    [
        ("exclusive", "exclusive", {"nvidia.com/gpu": 1}),
        ("time-sliced-4", "time-slicing", {"nvidia.com/gpu": 4}),
        ("mps-4", "MPS", {"nvidia.com/gpu": 4}),
        ("all-1g.10gb", "MIG", {"nvidia.com/mig-1g.10gb": 7}),
        ("mixed-train-dev", "MIG", {"nvidia.com/mig-3g.40gb": 1, "nvidia.com/mig-1g.10gb": 4}),
        ("all-disabled", "exclusive", {"nvidia.com/gpu": 1}),
    ],
)
def test_profiles_from_the_configs(profile, mode, per_gpu):
    sharing = load_sharing()
    assert profiles(sharing)[profile] == mode and mode in ISOLATION
    assert slices_per_gpu(sharing, profile) == per_gpu
    assert capacity(sharing, nodes=2, gpus_per_node=8, profile=profile) == 16 * sum(
        per_gpu.values()
    )


def test_an_unknown_profile_names_the_known_ones():
    with pytest.raises(KeyError, match="time-sliced-4"):
        slices_per_gpu(load_sharing(), "half-a-gpu")
