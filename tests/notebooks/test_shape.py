"""Every notebook has the course's shape, in order: title, parameters, ..., assert the outcome,
exercise, on a real cluster, clean up; the outcome is recorded before the exercise, never after
clean up; outputs go to build/lessons/NN/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))
ORDER = ["assert the outcome", "exercise", "on a real cluster", "clean up"]


def cells(text: str) -> list[tuple[str, str]]:
    parts = re.split(r"^# %%(.*)$", text, flags=re.M)
    return [
        ("markdown" if "[markdown]" in h else "parameters" if "parameters" in h else "code", b)
        for h, b in zip(parts[1::2], parts[2::2], strict=True)
    ]


def first_heading(all_cells, words: str) -> int:
    for number, (kind, body) in enumerate(all_cells):
        for line in body.splitlines():
            heading = re.match(r"# #{1,3} (?:\d+\. )?(.*)", line)
            if kind == "markdown" and heading and heading.group(1).lower().startswith(words):
                return number
    raise AssertionError(f"no {words!r} heading")


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_shape(source):
    text = source.read_text()
    all_cells = cells(text)
    assert all_cells[0][0] == "markdown" and all_cells[0][1].lstrip().startswith(
        f"# # {source.name[:2]} · "
    ), "a title cell first: '# NN · topic'"
    assert all_cells[1][0] == "parameters", "the parameters cell right after the title"
    positions = [first_heading(all_cells, words) for words in ORDER]
    assert positions == sorted(positions), dict(zip(ORDER, positions, strict=True))
    recorded = [
        i
        for i, (kind, body) in enumerate(all_cells)
        if "record_outcome(" in body and kind == "code"
    ]
    assert len(recorded) == 1 and positions[0] < recorded[0] < positions[1], (
        "record_outcome belongs to the assert section, before the exercise"
    )
    for _kind, body in all_cells[positions[3] :]:
        assert "record_outcome(" not in body


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_outputs_go_to_build_lessons(source):
    for folder in re.findall(r'ROOT / "build" / ([^\n]+)', source.read_text()):
        assert folder.startswith(f'"lessons" / "{source.name[:2]}"'), folder
