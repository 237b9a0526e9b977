"""Every notebook: in sync with its jupytext source, committed without outputs, and executed by papermill.

Notebooks are discovered, not listed: a new notebooks/NN_topic.ipynb is tested automatically. The
executed copies are kept in build/test-notebooks/ for inspection. A cell that hangs fails after
the hang guard (tests/guards.py), which is also the notebook's own TIMEOUT_S parameter where it
has one (its waits for labs and jobs); a dead kernel fails the test at once (papermill raises).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kubecourse.course import drift, execute, notebooks
from kubecourse.nbcheck import check_executed
from tests.guards import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "build" / "test-notebooks"
CELL_TIMEOUT_S = int(HANG_GUARD_S)
NOTEBOOKS = notebooks()


def test_notebooks_are_discovered():
    assert [p.name for p in NOTEBOOKS][:3] == [
        "00_setup.ipynb",
        "01_cifar10_single_gpu.ipynb",
        "02_job_on_kubernetes.ipynb",
    ]
    sources = sorted(
        p.with_suffix(".ipynb").name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.py")
    )
    assert sources == [p.name for p in NOTEBOOKS], (
        "every jupytext source needs its .ipynb (run `make notebooks`)"
    )


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_matches_its_source_and_has_no_outputs(notebook):
    assert drift(notebook) == []


def smoke_parameters(notebook: Path) -> dict:
    """SMOKE=True, and the hang guard as TIMEOUT_S where the parameters cell declares one."""
    import nbformat

    cells = nbformat.read(notebook, as_version=4).cells
    declared = next(c.source for c in cells if "parameters" in c.metadata.get("tags", []))
    guard = {"TIMEOUT_S": int(HANG_GUARD_S)} if re.search(r"^TIMEOUT_S\s*=", declared, re.M) else {}
    return {"SMOKE": True, **guard}


@pytest.mark.notebook
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_and_its_asserts_pass(notebook):
    parameters = smoke_parameters(notebook)
    executed = execute(notebook, OUT, parameters=parameters, cell_timeout_s=CELL_TIMEOUT_S)
    assert executed.exists()
    import json

    outcome = json.loads((OUT / "outcomes" / f"{notebook.stem}.json").read_text())
    assert outcome["numbers"], f"{notebook.name} recorded no outcome"
    # What a learner would see: every figure an image, no output only inside a widget (nbcheck).
    assert check_executed(executed, OUT / "outcomes") == []


def test_drift_detects_outputs_and_changed_cells(tmp_path):
    import nbformat

    from kubecourse.course import sync

    source = tmp_path / "99_demo.py"
    source.write_text('# %% tags=["parameters"]\nSMOKE = True\n\n# %%\nprint(SMOKE)\n')
    (notebook,) = sync([source])
    assert drift(notebook) == []
    first = notebook.read_bytes()
    sync([source])
    assert notebook.read_bytes() == first, "regenerating an unchanged source must not churn git"
    nb = nbformat.read(notebook, as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="True\n")]
    nbformat.write(nb, notebook)
    assert any("committed outputs" in p for p in drift(notebook))
    source.write_text(source.read_text().replace("print(SMOKE)", "print(not SMOKE)"))
    assert any("differs" in p for p in drift(notebook))


@pytest.mark.parametrize(
    "cell, error, cell_timeout_s",
    [
        # A hang fails after the cell timeout (the sleep would outlast the whole test's guard).
        (f"import time\ntime.sleep({HANG_GUARD_S * 10})", "CellTimeoutError", 3),
        # A dead kernel fails at once, a failed assert at its cell: neither waits for a timeout.
        ("import os\nos._exit(1)", "DeadKernelError", CELL_TIMEOUT_S),
        ("assert 1 + 1 == 3, 'outcome not reached'", "PapermillExecutionError", CELL_TIMEOUT_S),
    ],
    ids=["hang", "dead-kernel", "failed-assert"],
)
def test_broken_notebooks_fail_fast(tmp_path, cell, error, cell_timeout_s):
    from kubecourse.course import sync

    source = tmp_path / "99_broken.py"
    source.write_text(f'# %% tags=["parameters"]\nSMOKE = True\n\n# %%\n{cell}\n')
    (notebook,) = sync([source])
    with pytest.raises(Exception) as info:
        execute(notebook, tmp_path / "out", cell_timeout_s=cell_timeout_s)
    assert error in type(info.value).__name__ or error in str(info.value)
