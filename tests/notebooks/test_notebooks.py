"""Every notebook: in sync with its jupytext source, committed without outputs, and executed by papermill.

Notebooks are discovered, not listed: a new notebooks/NN_topic.ipynb is tested automatically. The
executed copies are kept in build/test-notebooks/ for inspection. A cell that hangs fails after
CELL_TIMEOUT_S; a dead kernel fails the test at once (papermill raises).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kubecourse.course import drift, execute, notebooks
from kubecourse.nbcheck import check_executed

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "build" / "test-notebooks"
CELL_TIMEOUT_S = 300
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


@pytest.mark.notebook
@pytest.mark.timeout(900)
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_and_its_asserts_pass(notebook):
    executed = execute(notebook, OUT, parameters={"SMOKE": True}, cell_timeout_s=CELL_TIMEOUT_S)
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


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "cell, error",
    [
        ("import time\ntime.sleep(120)", "CellTimeoutError"),  # a hang fails after the cell timeout
        ("import os\nos._exit(1)", "DeadKernelError"),  # a dead kernel fails at once
        ("assert 1 + 1 == 3, 'outcome not reached'", "PapermillExecutionError"),  # a failed assert
    ],
    ids=["hang", "dead-kernel", "failed-assert"],
)
def test_broken_notebooks_fail_fast(tmp_path, cell, error):
    import time

    from kubecourse.course import sync

    source = tmp_path / "99_broken.py"
    source.write_text(f'# %% tags=["parameters"]\nSMOKE = True\n\n# %%\n{cell}\n')
    (notebook,) = sync([source])
    start = time.monotonic()
    with pytest.raises(Exception) as info:
        execute(notebook, tmp_path / "out", cell_timeout_s=3)
    assert error in type(info.value).__name__ or error in str(info.value)
    assert time.monotonic() - start < 60
