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


def pytest_collection_modifyitems(config, items):
    guard = pytest.mark.timeout(TEST_GUARD_S)
    for item in items:  # first in the list, so it wins over any `timeout` mark a file still has
        item.add_marker(guard, append=False)
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
