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


# Seconds the slow tests took in one full `-n 2` run from a fresh clone (2-core box, loaded;
# `pytest --durations=60`): only a scheduling hint for pytest-xdist, never a limit. Keys are the
# test function, or the function and its parameter id; every test not named here counts as 0.
SLOW_TEST_SECONDS = {
    "test_notebook_executes_and_its_asserts_pass": {
        "01": 95, "05": 52, "04": 50, "11": 45, "07": 38, "03": 38, "09": 32, "02": 31, "06": 27,
        "10": 27, "08": 11, "00": 8,
    },
    "test_notebook_asserts_hold_on_the_fake_cluster": {
        "04": 76, "11": 62, "06": 53, "09": 50, "02": 43, "10": 33,
    },
    "test_notebook_renders_in_jupyterlab": {"04": 87, "02": 76, "10": 66},
    "test_sigterm_loses_no_step_and_kills_resume_bitwise": {
        "finetune-qlora": 80, "lm-fsdp2-2-ranks": 58, "finetune-lora": 41, "lm-1-process": 20,
    },
    "test_smoke_run_learns_and_rerun_is_a_noop": 40,
    "test_two_node_runs_succeed_twice_in_a_row": 33,
    "test_fsdp_checkpoint_from_2_ranks_resumes_exactly_in_1_process": 26,
    "test_killed_mid_checkpoint_write_and_at_random_steps_resumes_bitwise_equal": 23,
    "test_a_node_that_fails_fails_the_job_and_stops_every_process": 18,
    "test_injected_crash_kills_the_last_rank_once_and_the_rerun_resumes": 17,
    "test_resume_is_exact_and_skips_damaged_checkpoints": 16,
    "test_torchrun_two_processes_on_cpu": 13,
    "test_chinese_notebook_renders_without_missing_glyphs": 12,
    "test_chinese_notebook_executes": 12,
    "test_hung_rank_is_ended_by_the_watchdog": 11,
}  # fmt: skip


def expected_seconds(item) -> float:
    """The hint for one collected test (0 when it is not a known slow one)."""
    known = SLOW_TEST_SECONDS.get(getattr(item, "originalname", item.name), 0)
    if not isinstance(known, dict):
        return float(known)
    callspec = getattr(item, "callspec", None)
    param = callspec.id if callspec else ""
    # Notebook ids start with the lesson number ("01_cifar10_single_gpu"); others are exact.
    return float(known.get(param, known.get(param[:2], 0)))


def _xdist_order(items: list) -> list:
    """Longest first: the slow tests (notebooks, browser runs, bitwise resumes: most of the
    suite's time) lead, slowest first, so no worker is left with a long one at the end while the
    others are idle; the short tests fill in behind them, in file order."""
    return sorted(items, key=expected_seconds, reverse=True)  # stable: the rest keep their order


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
