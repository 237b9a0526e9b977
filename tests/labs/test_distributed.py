"""labs/common/distributed.py: the device each rank trains on."""

from __future__ import annotations

import pytest
import torch

from labs.common.config import ConfigError
from labs.common.distributed import DistInfo, pick_device

CUDA = torch.cuda.is_available()


@pytest.mark.parametrize(
    "requested, expected",
    [
        ("cpu", "cpu"),
        ("auto", "cuda:1" if CUDA else "cpu"),
        ("cuda", "cuda:1" if CUDA else ConfigError),
    ],
)
def test_pick_device_uses_the_local_gpu_or_names_the_bad_flag(requested, expected):
    info = DistInfo(rank=3, local_rank=1, world_size=4)
    if expected is ConfigError:
        with pytest.raises(ConfigError, match="--device: cuda requested"):
            pick_device(requested, info)
    else:
        assert str(pick_device(requested, info)) == expected
