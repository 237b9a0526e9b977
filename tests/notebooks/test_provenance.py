"""Executed notebooks carry a provenance record, kernels talk over IPC, and the helpers stay torch-free."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import nbformat

from kubecourse.course import execute, sync
from kubecourse.provenance import provenance
from tests.guards import HANG_GUARD_S


def test_provenance_names_versions_commit_and_device():
    record = provenance(kubernetes_server="v1.34.1", seed=7)
    assert record["packages"]["torch"] == metadata.version("torch")
    assert record["packages"]["kubecourse"] == metadata.version("kubecourse")
    assert record["course"]["sha"] is None or len(record["course"]["sha"]) == 40
    assert record["device"] in ("cpu", "cuda") and (record["device"] == "cuda") == bool(
        record["gpus"]
    )
    assert record["kubernetes_server"] == "v1.34.1" and record["seed"] == 7
    json.dumps(record)  # JSON-ready


def test_provenance_does_not_import_torch():
    code = (
        "import sys, kubecourse.provenance as p; p.provenance(); "
        "assert 'torch' not in sys.modules, 'provenance imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=HANG_GUARD_S)


def test_an_executed_notebook_carries_provenance_and_the_kernel_is_quiet(tmp_path, capfd):
    source = tmp_path / "99_demo.py"
    source.write_text('# %% tags=["parameters"]\nSMOKE = True\n\n# %%\nprint("ran", SMOKE)\n')
    (notebook,) = sync([source])
    executed = execute(notebook, tmp_path / "out", cell_timeout_s=int(HANG_GUARD_S))
    record = nbformat.read(executed, as_version=4).metadata["kubecourse"]["provenance"]
    assert record["packages"]["papermill"] == metadata.version("papermill")
    assert record["python"] == ".".join(map(str, sys.version_info[:3]))
    assert "running over TCP" not in capfd.readouterr().err
