"""Every global random number generator, saved and restored: what makes a resume bitwise exact.

Python's `random`, NumPy's legacy global generator, torch's CPU generator and every CUDA device's
generator (dropout, random crops, LoRA dropout, sampling) each carry state; a checkpoint without
one of them resumes into a different random stream. The state is kept as tensors and plain
values, so `torch.load(weights_only=True)` accepts it.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """Every global RNG of this process."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned (CUDA only where this process has CUDA)."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """The same seed for python, numpy and torch (CPU and CUDA): identical init on every rank."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
