"""Every notebook's parameters are visible to papermill (`papermill --help-notebook NN.ipynb`).

papermill reads the `parameters` cell line by line; a comment holding `=` or quotes makes it skip
the line silently, and the parameter then disappears from `--help-notebook`.
"""

from __future__ import annotations

import ast

import nbformat
import pytest
from papermill.translators import PythonTranslator

from kubecourse.course import notebooks


@pytest.mark.parametrize("notebook", notebooks(), ids=lambda p: p.stem)
def test_every_parameter_is_listed_by_papermill(notebook):
    cell = next(
        c
        for c in nbformat.read(notebook, as_version=4).cells
        if "parameters" in c.metadata.get("tags", [])
    )
    assigned = [
        target.id
        for node in ast.parse(cell.source).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    ]
    # What `papermill --help-notebook` (papermill.inspect_notebook) lists, without a kernel lookup.
    listed = {p.name for p in PythonTranslator.inspect(cell)}
    assert assigned, f"{notebook.name}: an empty parameters cell"
    assert [name for name in assigned if name not in listed] == [], (
        f"{notebook.name}: papermill cannot parse these parameter lines (keep `=` and quotes out "
        "of their comments)"
    )
    assert "SMOKE" in listed, f"{notebook.name}: every lesson has a SMOKE parameter"
