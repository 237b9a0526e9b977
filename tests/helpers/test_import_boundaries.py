"""Import contracts: helpers never import torch or labs; labs never import helpers; no import side effects."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.guards import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[2]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "folder, forbidden",
    [("helpers/kubecourse", {"torch", "labs"}), ("labs", {"kubecourse"})],
)
def test_source_never_imports_across_the_boundary(folder, forbidden):
    files = sorted((REPO / folder).rglob("*.py"))
    assert files
    offenders = {str(p.relative_to(REPO)): sorted(_imported_modules(p) & forbidden) for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_every_helper_module_loads_no_torch_no_kubernetes_and_writes_nothing(tmp_path):
    code = (
        "import sys, pkgutil, importlib, kubecourse, kubecourse.backends\n"
        "for m in pkgutil.walk_packages(kubecourse.__path__, 'kubecourse.'): importlib.import_module(m.name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'kubernetes'))\n"
        "print(bad)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "KUBECONFIG": str(tmp_path / "missing"),
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert list(tmp_path.iterdir()) == [], "importing the helpers must not create files"
