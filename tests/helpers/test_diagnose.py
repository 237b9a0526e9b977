"""diagnose(): recorded failures served by the fake API server, and real failures on the local backend."""

from __future__ import annotations

import signal
import time

import pytest

from kubecourse import TrainingClient
from kubecourse.backends.config import KubernetesBackendConfig
from kubecourse.backends.kubernetes import KubernetesBackend
from kubecourse.diagnose import CAUSES, case_dir, classify_case, load_case
from tests.fakes.apiserver import FakeApiServer
from tests.guards import HANG_GUARD_S

from .jobs import job

CASES = sorted(p.stem for p in case_dir().glob("*.json"))


@pytest.fixture(scope="module")
def api():
    with FakeApiServer() as server:
        yield server


def serve(api: FakeApiServer, case: dict) -> str:
    """Put a recorded case into the fake API server: the Job, its pods, events and logs."""
    api.put_object(case["job"])
    for pod in case["pods"]:
        api.put_object(pod)
    for event in case["events"]:
        api.add_event(
            "default",
            event["involved"],
            event["reason"],
            event["message"],
            type=event["type"],
            count=event["count"],
        )
    for pod, lines in case["logs"].items():
        api.append_log(pod, "\n".join(lines))
    return case["job"]["metadata"]["name"]


def test_every_cause_has_a_recorded_case_or_a_local_test():
    recorded = {kind for name in CASES for kind in load_case(name)["expect"]}
    local = {kind for _, _, kinds in LOCAL_CASES for kind in kinds}
    assert set(CAUSES) - recorded - local == {"GPUOutOfMemory", "Unschedulable"}
    assert len(CASES) >= 12


@pytest.mark.parametrize("name", CASES)
def test_recorded_failure_is_diagnosed_through_the_kubernetes_backend(api, tmp_path, name):
    case = load_case(name)
    job_name = serve(api, case)
    backend = KubernetesBackend(
        KubernetesBackendConfig(
            kubeconfig=api.write_kubeconfig(tmp_path / "kubeconfig"), backoff_s=0.01
        )
    )
    with TrainingClient(backend=backend, show_kubectl=False, rendered_dir=tmp_path) as client:
        diagnosis = client.diagnose(job_name)
    print(diagnosis)
    assert diagnosis.kinds == case["expect"], str(diagnosis)
    primary = diagnosis.primary
    assert primary.evidence and primary.fix
    assert classify_case(case).kinds == case["expect"]  # the same rules without a server


def test_a_healthy_job_has_no_cause(local_client):
    ref = local_client.submit([job("fine", "print('step 1/1 loss 2.0')")])
    local_client.wait(ref, timeout_s=HANG_GUARD_S, progress=False)
    diagnosis = local_client.diagnose(ref)
    assert diagnosis.phase == "Succeeded" and diagnosis.causes == []
    assert "no problem found" in str(diagnosis)


SLEEP = "import time\nprint('step 1/100 loss 2.3', flush=True)\ntime.sleep(60)"
# (job name, how the job fails, expected causes): real processes on the local backend.
LOCAL_CASES = [
    ("killed", "kill", ["Killed"]),
    ("preempted", "preempt", ["Preempted"]),
    ("deadline", "deadline", ["DeadlineExceeded"]),
    (
        "config",
        "import sys\nprint('error: --epochs: must be >= 1 (got -1)')\nsys.exit(2)",
        ["ConfigError"],
    ),
    ("nan", "import sys\nprint('non-finite loss nan at step 8: fail')\nsys.exit(4)", ["NaNLoss"]),
    (
        "nan-step",
        "import sys\nprint('step 8/20 loss 1.5 lr 0.1')\nprint('step 10/20 loss nan lr 0.1')\nsys.exit(1)",
        ["NaNLoss"],
    ),
    (
        "hung",
        "import sys\nprint('watchdog: no training progress for 31 s (limit 30 s, last step 3)', file=sys.stderr)\nsys.exit(3)",
        ["Hung"],
    ),
    (
        "nccl",
        "import sys\nprint('[Rank 0] Watchdog caught collective operation timeout: WorkNCCL(OpType=ALLREDUCE)')\nsys.exit(1)",
        ["NCCLTimeout"],
    ),
]


@pytest.mark.parametrize("name, how, expect", LOCAL_CASES, ids=[c[0] for c in LOCAL_CASES])
def test_local_failures_are_diagnosed_from_exit_codes_events_and_logs(
    local_client, name, how, expect
):
    spec = {"activeDeadlineSeconds": 2} if how == "deadline" else {}
    code = SLEEP if how in ("kill", "preempt", "deadline") else how
    ref = local_client.submit([job(name, code, **spec)])
    if how in ("kill", "preempt"):
        deadline = time.monotonic() + HANG_GUARD_S
        while not any(p.phase == "Running" for p in local_client.status(ref).pods):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        backend = local_client.backend
        backend.kill(ref, sig=signal.SIGKILL) if how == "kill" else backend.preempt(ref)
    status = local_client.wait(ref, timeout_s=HANG_GUARD_S, progress=False)
    assert status.phase == "Failed"
    diagnosis = local_client.diagnose(ref)
    print(diagnosis)
    assert diagnosis.kinds == expect, str(diagnosis)
