"""Shared fixtures. Tests marked `cluster` run only when $KUBECONFIG names a cluster.

Every test gets one hang guard, TEST_GUARD_S (tests/guards.py): no test has a tighter per-test
timeout, so none can fail because the machine is busy.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.guards import TEST_GUARD_S

REPO = Path(__file__).resolve().parents[1]
CRD_DIR = REPO.parent / "shared" / "crds"


def pytest_configure(config):
    """Under pytest-xdist (`-n N`) each worker gets what two runs must not share: its own local
    backend state (runs, logs, PVC folders, rendered manifests: no job name or checkpoint folder is
    seen by two workers) and an equal share of the cores for torch (N workers x all cores each
    would oversubscribe them). The controller installs the notebooks' kernelspec once, before any
    worker starts, so two workers never write it at the same time. Read-only, content-addressed
    caches (the tiny model in .course/models, the synthetic data) stay shared: they are built
    atomically and safe to build concurrently (tests/labs/test_finetune.py checks that)."""
    from kubecourse import constants as C

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        state = REPO / C.LOCAL_STATE_DIR / f"xdist-{worker}"
        os.environ.setdefault(C.LOCAL_STATE_DIR_ENV, str(state))
        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    elif getattr(config.option, "numprocesses", None):
        from kubecourse.course import kernel_name

        kernel_name()


# Seconds each notebook's execution took in one full serial run on the 2-core box (loaded): only a
# scheduling hint for pytest-xdist, never a limit. A notebook missing here counts as 60 s.
NOTEBOOK_SECONDS = {
    "09": 150, "01": 118, "05": 109, "11": 100, "06": 83, "04": 69,
    "10": 56, "07": 51, "03": 25, "02": 24, "00": 13, "08": 13,
}  # fmt: skip


def _xdist_order(items: list) -> list:
    """Longest first: the notebook executions (three quarters of the suite) lead, slowest first.
    xdist hands the first quarter of the items out round robin, so the two workers start with
    alternating notebooks (about equal totals) and the short tests fill in behind them."""

    def cost(item) -> float:
        if item.originalname != "test_notebook_executes_and_its_asserts_pass":
            return 0.0
        return NOTEBOOK_SECONDS.get(item.callspec.id[:2], 60)

    return sorted(items, key=cost, reverse=True)  # stable: the rest keep their order


def pytest_collection_modifyitems(config, items):
    guard = pytest.mark.timeout(TEST_GUARD_S)
    for item in items:  # first in the list: it wins over a smaller `timeout` mark, never a larger
        marked = item.get_closest_marker("timeout")
        if not (marked and marked.args and float(marked.args[0]) > TEST_GUARD_S):
            item.add_marker(guard, append=False)
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the same order in every worker, as xdist needs
        items[:] = _xdist_order(items)
    if os.environ.get("KUBECONFIG"):
        return
    skip = pytest.mark.skip(reason="cluster test: set KUBECONFIG to a cluster to run it")
    for item in items:
        if "cluster" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def local_backend(tmp_path):
    from kubecourse.backends.config import LocalBackendConfig
    from kubecourse.backends.local import LocalBackend

    backend = LocalBackend(LocalBackendConfig(state_dir=tmp_path / "state", max_grace_s=2.0))
    yield backend
    backend.close()


@pytest.fixture
def local_client(local_backend, tmp_path):
    from kubecourse import TrainingClient

    with TrainingClient(
        backend=local_backend, show_kubectl=False, rendered_dir=tmp_path / "rendered"
    ) as client:
        yield client


@pytest.fixture
def crd_dir():
    if not CRD_DIR.is_dir():
        pytest.skip(
            f"CRD schemas not available: {CRD_DIR} is absent (it lies beside the repository)"
        )
    return CRD_DIR
