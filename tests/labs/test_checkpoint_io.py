"""labs/common/checkpoint_io.py: the trainer's two checkpoint formats behind one save/load.

Both run in one process (DistInfo(): no process group) on a 2-layer model, driven the way the
trainer drives them: `save(state, step)` with the trainer state, `load()` on a fresh model.
The multi-rank cases (reshard 2 -> 1, torchrun) are in test_trainer.py and test_lm_pretrain.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from labs.common import checkpoint as ckpt
from labs.common.checkpoint_io import DcpCheckpoints, PtCheckpoints
from labs.common.distributed import DistInfo
from labs.common.trainer import Task

FORMATS = {"pt": PtCheckpoints, "dcp": DcpCheckpoints}
# DCP says it saves "in a single process" when no process group exists: that is the point here.
pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


class TinyTask(Task):
    def __init__(self, seed: int) -> None:
        torch.manual_seed(seed)
        self.model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
        self.net = self.model
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=0.1)

    def train_step(self) -> None:
        """One update, so the optimizer has state (Adam moments) worth saving."""
        self.model(torch.ones(2, 3)).sum().backward()
        self.optimizer.step()
        self.optimizer.zero_grad()

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"layers": 2}

    def resumed_note(self, meta: dict[str, Any]) -> str:
        return f"saved by {meta['world_size']} rank(s), {meta['layers']} layers"


@dataclass
class Cfg:
    keep_checkpoints: int = 2
    inject_slow_checkpoint_s: float = 0.0


class FakeTrainer:
    """The attributes of labs.common.trainer.Trainer that the checkpoint formats read."""

    def __init__(self, out: Path, task: TinyTask, keep: int = 2) -> None:
        self.ckpt_dir = out / "checkpoints"
        self.dist = DistInfo()
        self.task = task
        self.cfg = Cfg(keep_checkpoints=keep)
        self.logged: list[str] = []
        self.log = self.logged.append


def trainer_state(step: int) -> dict[str, Any]:
    return {"step": step, "config": {"lr": 0.1}, "sampler": torch.arange(step)}


def listed(fmt: str, folder: Path) -> list[int]:
    found = ckpt.list_checkpoints(folder) if fmt == "pt" else ckpt.list_complete(folder)
    return [step for step, _ in found]


def tensors(sd: dict) -> list[torch.Tensor]:
    """Every tensor of a (nested) state dict, in a stable order."""
    if isinstance(sd, torch.Tensor):
        return [sd]
    if isinstance(sd, dict):
        return [t for k in sorted(sd, key=str) for t in tensors(sd[k])]
    if isinstance(sd, list | tuple):
        return [t for v in sd for t in tensors(v)]
    return []


def assert_equal_states(a: dict, b: dict) -> None:
    ta, tb = tensors(a), tensors(b)
    assert len(ta) == len(tb) and all(torch.equal(x, y) for x, y in zip(ta, tb, strict=True))


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_saved_checkpoint_loads_into_a_fresh_model_exactly(tmp_path, fmt):
    saved = TinyTask(seed=0)
    saved.train_step()
    path = FORMATS[fmt](FakeTrainer(tmp_path, saved)).save(trainer_state(3), 3)
    assert listed(fmt, tmp_path / "checkpoints") == [3] and path.exists()

    fresh = TinyTask(seed=1)  # other weights, no optimizer state
    io = FORMATS[fmt](FakeTrainer(tmp_path, fresh))
    state, loaded_from = io.load()
    assert loaded_from == path
    assert state["step"] == 3 and torch.equal(state["sampler"], torch.arange(3))
    assert_equal_states(fresh.model.state_dict(), saved.model.state_dict())
    assert_equal_states(fresh.optimizer.state_dict(), saved.optimizer.state_dict())
    fresh.train_step()  # and the next update is the same as well
    saved.train_step()
    assert_equal_states(fresh.model.state_dict(), saved.model.state_dict())


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_nothing_to_resume_leaves_the_model_as_it_was(tmp_path, fmt):
    task = TinyTask(seed=0)
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    assert FORMATS[fmt](FakeTrainer(tmp_path, task)).load() == (None, None)
    assert_equal_states(task.model.state_dict(), before)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_retention_keeps_the_newest_and_a_resume_takes_the_last(tmp_path, fmt):
    task = TinyTask(seed=0)
    io = FORMATS[fmt](FakeTrainer(tmp_path, task, keep=2))
    for step in (1, 2, 3):
        task.train_step()
        io.save(trainer_state(step), step)
    assert listed(fmt, tmp_path / "checkpoints") == [2, 3]
    state, _ = FORMATS[fmt](FakeTrainer(tmp_path, TinyTask(seed=1))).load()
    assert state["step"] == 3


# An interrupted save of step 5 on top of a complete step 4: the resume takes step 4, removes the
# leftover with a warning, and the folder holds no temp file afterwards.
LEFTOVERS = {
    "pt": lambda d: (d / f"{ckpt.checkpoint_path(d, 5).name}.tmp").write_bytes(b"torn"),
    "dcp": lambda d: ckpt.staging_dir(d, 5).mkdir(),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_an_interrupted_save_is_never_loaded_and_is_cleaned_up(tmp_path, fmt):
    FORMATS[fmt](FakeTrainer(tmp_path, TinyTask(seed=0))).save(trainer_state(4), 4)
    folder = tmp_path / "checkpoints"
    LEFTOVERS[fmt](folder)
    trainer = FakeTrainer(tmp_path, TinyTask(seed=1))
    state, path = FORMATS[fmt](trainer).load()
    assert state["step"] == 4 and path.name.endswith("4" if fmt == "dcp" else "4.pt")
    assert any("interrupted" in m for m in trainer.logged)
    assert [p.name for p in folder.iterdir()] == [path.name]


def test_a_folder_checkpoint_records_its_meta_and_the_resume_reports_it(tmp_path):
    path = DcpCheckpoints(FakeTrainer(tmp_path, TinyTask(seed=0))).save(trainer_state(6), 6)
    meta = json.loads((path / "meta.json").read_text())
    assert meta == {"world_size": 1, "step": 6, "layers": 2, "config": {"lr": 0.1}}
    assert (path / ckpt.COMPLETE_MARKER).is_file() and (path / "trainer.pt").is_file()
    io = DcpCheckpoints(FakeTrainer(tmp_path, TinyTask(seed=1)))
    assert io.note == ""
    io.load()
    assert io.note == "saved by 1 rank(s), 2 layers"
