"""labs/Dockerfile installs, at the pyproject pins, every third-party package the labs import."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r'"([A-Za-z0-9_.\-]+)==([^"]+)"')
BASE_IMAGE = re.compile(r"^FROM pytorch/pytorch:(\d+\.\d+\.\d+)-", re.MULTILINE)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(text: str) -> dict[str, str]:
    return {_normal(name): version for name, version in PIN.findall(text)}


def _runtime_requirements() -> dict[str, str | None]:
    """[project] dependencies (not the extras) of pyproject.toml: name -> exact pin or None."""
    text = (REPO / "pyproject.toml").read_text()
    block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    names = re.findall(r'^\s*"([A-Za-z0-9_.\-]+)', block, re.MULTILINE)
    pins = _pins(block)
    return {_normal(n): pins.get(_normal(n)) for n in names}


def _imported_distributions() -> set[str]:
    """Distributions providing the top-level modules that labs/ imports (stdlib and labs excluded)."""
    modules: set[str] = set()
    for path in (REPO / "labs").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    modules -= set(sys.stdlib_module_names) | {"labs", "__future__"}
    providers = packages_distributions()
    return {_normal(d) for m in modules for d in providers.get(m, [m])}


def test_every_lab_import_is_baked_into_the_image_at_the_course_pin():
    dockerfile = (REPO / "labs" / "Dockerfile").read_text()
    requirements = (REPO / "labs" / "requirements.txt").read_text()  # what the Dockerfile installs
    image_pins = _pins(dockerfile) | {
        _normal(n): v for n, v in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", requirements, re.M)
    }
    (torch_version,) = BASE_IMAGE.findall(dockerfile)
    image_pins["torch"] = torch_version  # the base image's tag is the torch version
    runtime = _runtime_requirements()
    # Optional extras (deepspeed) are imported lazily behind a skip; everything else must be there.
    needed = _imported_distributions() & set(runtime)
    assert {"torch", "numpy", "prometheus-client", "peft"} <= needed, needed
    missing = {d: runtime[d] for d in needed if d not in image_pins}
    assert not missing, f"labs import these but labs/Dockerfile does not install them: {missing}"
    wrong = {
        d: (image_pins[d], runtime[d])
        for d in needed
        if runtime[d] is not None and image_pins[d] != runtime[d]
    }
    assert not wrong, f"labs/Dockerfile pins differ from pyproject.toml (image, pyproject): {wrong}"
