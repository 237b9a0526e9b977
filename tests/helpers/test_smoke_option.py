"""`smoke=True` makes a real smoke run: the manifest's run-length flags would beat the lab's preset."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kubecourse import render
from kubecourse.cli import main as cli_main
from kubecourse.manifests import SMOKE_OVERRIDDEN_FLAGS, trainers

README = Path(__file__).resolve().parents[2] / "README.md"


def trainer_args(objects) -> list[str]:
    (trainer,) = trainers(objects)
    return trainer["args"]


@pytest.mark.parametrize("lesson", ["01", "03"])
def test_smoke_drops_run_length_flags_and_adds_the_preset(lesson):
    plain = trainer_args(render(lesson))
    assert any(a.split("=")[0] in SMOKE_OVERRIDDEN_FLAGS for a in plain), "nothing to override"
    args = trainer_args(render(lesson, smoke=True))
    assert args.count("--smoke") == 1
    assert not [a for a in args if a.split("=")[0] in SMOKE_OVERRIDDEN_FLAGS], args
    assert [a for a in plain if a.split("=")[0] not in SMOKE_OVERRIDDEN_FLAGS] == args[:-1]


def test_smoke_false_changes_nothing():
    assert trainer_args(render("01", smoke=False)) == trainer_args(render("01"))


def test_the_readme_python_example_is_a_smoke_run():
    line = next(x for x in README.read_text().splitlines() if x.startswith("objects = render("))
    call = line.split("#")[0].split("=", 1)[1].strip()
    args = trainer_args(eval(call, {"render": render}))  # the README's own call
    assert "--smoke" in args and not any(a.startswith("--epochs") for a in args), args


def test_the_readme_cli_example_is_a_smoke_run(capsys):
    command = re.search(r"`kubecourse submit 01 ([^`]*)`", README.read_text()).group(1)
    sets = re.findall(r"--set (\w+=(?:'[^']*'|\S+))", command)
    assert any(s.startswith("smoke=") for s in sets), command
    argv = ["render", "01"] + [x for s in sets for x in ("--set", s.replace("'", ""))]
    cli_main(argv)
    out = capsys.readouterr().out
    assert "--smoke" in out and "--epochs=30" not in out, out[-2000:]
