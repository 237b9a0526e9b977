"""labs/common/state.py: every global RNG saved and restored, so a resume draws the same numbers."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from labs.common import state

# One draw from each global generator the labs use. The Gaussian draws matter: Python's
# `random.gauss` and NumPy's legacy `standard_normal` cache a second value between calls, and that
# cached value is part of the state too.
DRAWS = {
    "python": lambda: (random.random(), random.gauss(0, 1)),
    "numpy": lambda: (np.random.rand(), float(np.random.standard_normal())),
    "torch": lambda: torch.rand(4).tolist() + torch.randn(3).tolist(),
}


@pytest.fixture(autouse=True)
def leave_the_generators_as_found():
    saved = state.rng_state()
    yield
    state.set_rng_state(saved)


def draw_all() -> dict[str, object]:
    return {name: draw() for name, draw in DRAWS.items()}


@pytest.mark.parametrize("generator", list(DRAWS))
def test_restoring_the_state_replays_the_same_draws(generator):
    state.seed_everything(5)
    DRAWS[generator]()  # mid-stream, with a cached Gaussian pending
    saved = state.rng_state()
    expected = DRAWS[generator]()
    state.seed_everything(99)  # anything else in between
    DRAWS[generator]()
    state.set_rng_state(saved)
    assert DRAWS[generator]() == expected


def test_the_state_survives_a_weights_only_checkpoint(tmp_path):
    """Checkpoints are loaded with torch.load(weights_only=True): the state must be plain values
    and tensors that it accepts."""
    state.seed_everything(3)
    draw_all()
    torch.save({"rng": state.rng_state()}, tmp_path / "ckpt.pt")
    expected = draw_all()
    state.seed_everything(4)
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)["rng"]
    state.set_rng_state(loaded)
    assert draw_all() == expected


@pytest.mark.parametrize(("seed_a", "seed_b", "same"), [(7, 7, True), (7, 8, False)])
def test_seed_everything_seeds_every_generator(seed_a, seed_b, same):
    state.seed_everything(seed_a)
    first = draw_all()
    state.seed_everything(seed_b)
    second = draw_all()
    for name in DRAWS:
        assert (first[name] == second[name]) is same, name
