"""The local backend runs the rendered pod spec as processes, with the semantics a cluster gives."""

from __future__ import annotations

import json
import time

import pytest

from kubecourse import Conflict, JobTimeout, render
from kubecourse import constants as C
from kubecourse.types import JobRef
from tests.guards import HANG_GUARD_S

from .jobs import PRINT_ARGV_ENV, job


def _run(client, objects, timeout_s=HANG_GUARD_S):
    ref = client.submit(objects if isinstance(objects, list) else [objects])
    return ref, client.wait(ref, timeout_s=timeout_s, progress=False)


def test_pod_gets_the_environment_and_args_the_manifest_gives(local_client, local_backend):
    """Parity: argv and env come from the rendered pod template, with Kubernetes expansion rules."""
    env = [
        {"name": "DATASET", "value": "synthetic"},
        {"name": "OUT", "value": "/checkpoints/$(DATASET)/$$literal"},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {
            "name": "JOB_NAME",
            "valueFrom": {
                "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}
            },
        },
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
    ]
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "default"},
        "stringData": {"token": "<placeholder>"},
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "ckpt", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    manifest = job(
        "parity",
        PRINT_ARGV_ENV,
        env=env,
        args=["--out-dir=/checkpoints/$(JOB_NAME)", "/data/x"],
        volumes=[
            {"name": "ckpt", "persistentVolumeClaim": {"claimName": "ckpt"}},
            {"name": "scratch", "emptyDir": {}},
        ],
        mounts=[
            {"name": "ckpt", "mountPath": "/checkpoints"},
            {"name": "scratch", "mountPath": "/data"},
        ],
    )
    ref, status = _run(local_client, [secret, pvc, manifest])
    assert status.phase == C.SUCCEEDED
    seen = json.loads(local_client.logs(ref, echo=False)[-1].text)
    pvc_dir = local_backend.pvc_dir("ckpt")
    assert seen["argv"][0] == f"--out-dir={pvc_dir}/parity"
    assert (
        seen["argv"][1].endswith("/scratch/x") and str(local_backend.state_dir) in seen["argv"][1]
    )
    assert seen["env"]["OUT"] == f"{pvc_dir}/synthetic/$literal"
    assert seen["env"]["POD"] == status.pods[0].name == seen["env"]["HOSTNAME"]
    assert seen["env"]["JOB_NAME"] == "parity" and seen["env"]["TOKEN"] == "<placeholder>"
    assert C.ENV_COMPLETION_INDEX not in seen["env"]


def test_indexed_job_runs_every_index_in_parallel(local_client):
    code = "import os, time; time.sleep(0.5); print('index', os.environ['JOB_COMPLETION_INDEX'])"
    start = time.monotonic()
    ref, status = _run(
        local_client, job("indexed", code, completions=3, parallelism=3, completionMode="Indexed")
    )
    assert status.phase == C.SUCCEEDED and status.succeeded == 3
    assert time.monotonic() - start < 3.0, "indices should run concurrently"
    lines = local_client.logs(ref, echo=False)
    assert sorted((line.index, line.text) for line in lines) == [
        (0, "index 0"),
        (1, "index 1"),
        (2, "index 2"),
    ]
    assert [line.text for line in local_client.logs(ref, rank=1, echo=False)] == ["index 1"]


@pytest.mark.parametrize(
    "code, spec, phase, reason, pods",
    [
        ("print('ok')", {}, C.SUCCEEDED, "", 1),
        ("import sys; sys.exit(3)", {"backoffLimit": 2}, C.FAILED, "BackoffLimitExceeded", 3),
        (
            "import sys; sys.exit(2)",
            {
                "backoffLimit": 2,
                "podFailurePolicy": {
                    "rules": [
                        {
                            "action": "FailJob",
                            "onExitCodes": {
                                "containerName": "trainer",
                                "operator": "In",
                                "values": [2],
                            },
                        }
                    ]
                },
            },
            C.FAILED,
            "PodFailurePolicy",
            1,
        ),
        (
            "import time; time.sleep(30)",
            {"activeDeadlineSeconds": 1},
            C.FAILED,
            "DeadlineExceeded",
            1,
        ),
    ],
    ids=["succeeds", "backoff-limit", "pod-failure-policy", "deadline"],
)
def test_job_outcomes_follow_the_job_controller(local_client, code, spec, phase, reason, pods):
    _, status = _run(local_client, job("outcome", code, **spec))
    assert (status.phase, status.reason, len(status.pods)) == (phase, reason, pods)


def test_retry_resumes_from_state_left_on_the_pvc(local_client):
    """A failed pod is replaced; the new one sees what the old one wrote to the PVC (checkpoint idea)."""
    code = (
        "import os, sys; p = '/ckpt/marker'; "
        "sys.exit(0) if os.path.exists(p) else (open(p, 'w').write('1'), sys.exit(1))"
    )
    manifest = job(
        "retry",
        code,
        backoffLimit=1,
        volumes=[{"name": "c", "persistentVolumeClaim": {"claimName": "retry-ckpt"}}],
        mounts=[{"name": "c", "mountPath": "/ckpt"}],
    )
    manifest["spec"]["template"]["spec"]["containers"][0]["command"][2] = code.replace(
        "'/ckpt/marker'", "sys.argv[1]"
    )
    manifest["spec"]["template"]["spec"]["containers"][0]["args"] = ["/ckpt/marker"]
    _, status = _run(local_client, manifest)
    assert (
        status.phase == C.SUCCEEDED
        and status.failed == 1
        and [p.phase for p in status.pods] == [C.FAILED, C.SUCCEEDED]
    )


def test_init_container_runs_first_and_its_failure_fails_the_pod(local_client):
    ref, status = _run(local_client, job("init-ok", "print('main')", init_code="print('init')"))
    assert [line.text for line in local_client.logs(ref, echo=False)] == ["init", "main"]
    _, status = _run(
        local_client, job("init-bad", "print('main')", init_code="import sys; sys.exit(4)")
    )
    assert status.phase == C.FAILED and status.pods[0].exit_code == 4


def test_follow_streams_lines_while_running_and_delete_kills_the_process_group(local_client):
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print('started', flush=True); time.sleep(60)"
    ref = local_client.submit([job("long", code)])
    first = next(local_client.iter_logs(ref, follow=True))
    assert first.text == "started"
    start = time.monotonic()
    local_client.delete(ref)
    assert time.monotonic() - start < 10
    with pytest.raises(Exception, match="no local job"):
        local_client.status(ref)


def test_wait_times_out_and_duplicate_names_conflict(local_client):
    ref = local_client.submit([job("slow", "import time; time.sleep(30)")])
    with pytest.raises(Conflict):
        local_client.submit([job("slow", "print(1)")])
    with pytest.raises(JobTimeout):
        local_client.wait(ref, timeout_s=0.5, progress=False)
    local_client.delete(ref)


def test_lesson_manifest_runs_locally_with_the_mapped_volumes(local_client, local_backend):
    """Lesson 01's real Job, with the lab programs swapped for one-liners that touch the mounts."""
    objects = render(
        "01",
        name="lesson",
        env={"DATASET": "synthetic"},
        command=["python", "-c", "import sys; print('train', sys.argv[1:])"],
    )
    init = objects[-1]["spec"]["template"]["spec"]["initContainers"][0]
    init["command"] = [
        "python",
        "-c",
        "import sys, pathlib; pathlib.Path(sys.argv[1].split('=')[1], 'ready').write_text('y')",
    ]
    ref, status = _run(local_client, objects)
    assert status.phase == C.SUCCEEDED
    assert (local_backend.pvc_dir("cifar10-data") / "ready").read_text() == "y"
    text = local_client.logs(ref, echo=False)[-1].text
    assert (
        f"--out-dir={local_backend.pvc_dir('training-checkpoints')}/lesson" in text
        and "--dataset=synthetic" in text
    )
    assert [e.reason for e in local_client.events(ref)][:2] == ["Created", "SuccessfulCreate"]


@pytest.mark.parametrize(
    "tail, expected", [(None, ["a", "b", "c"]), (2, ["b", "c"]), (0, []), (9, ["a", "b", "c"])]
)
def test_tail_lines(local_client, tail, expected):
    ref, _ = _run(local_client, job("tail", "print('a'); print('b'); print('c')"))
    assert [line.text for line in local_client.logs(ref, tail_lines=tail, echo=False)] == expected


def test_wait_reports_every_phase_in_order(local_client, local_backend):
    ref = local_client.submit(
        [job("phases", "import time; time.sleep(0.3); print('step 1/1 loss 0.5')")]
    )
    seen = []
    local_backend.wait(ref, timeout_s=HANG_GUARD_S, on_update=lambda s: seen.append(s.phase))
    phases = [p for i, p in enumerate(seen) if i == 0 or p != seen[i - 1]]
    assert phases in (["Pending", "Running", "Succeeded"], ["Running", "Succeeded"])
    assert local_backend.progress(ref) == (1, 1)


@pytest.mark.parametrize(
    "disruption, failed, reason",
    [("preempt", 0, "Preempted"), ("kill", 1, "Error")],
    ids=["preempted-pod-is-ignored", "killed-pod-counts"],
)
def test_disruptions_follow_the_pod_failure_policy(
    local_client, local_backend, disruption, failed, reason
):
    """A preempted pod (DisruptionTarget) is replaced without counting; a crash counts."""
    code = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))\n"
        "marker = os.path.join(os.environ['RUN'], 'started')\n"
        "if os.path.exists(marker): print('second pod'); sys.exit(0)\n"
        "open(marker, 'w').close(); print('first pod', flush=True); time.sleep(30)"
    )
    policy = {
        "rules": [
            {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            }
        ]
    }
    run = local_backend.state_dir / f"disrupt-{disruption}"
    run.mkdir(parents=True, exist_ok=True)
    manifest = job(
        "disrupted",
        code,
        env=[{"name": "RUN", "value": str(run)}],
        backoffLimit=2,
        podFailurePolicy=policy,
    )
    ref = local_client.submit([manifest])
    deadline = time.monotonic() + HANG_GUARD_S
    while "first pod" not in [line.text for line in local_client.logs(ref)]:
        assert time.monotonic() < deadline, "the first pod never started"
        time.sleep(0.05)
    victim = getattr(local_backend, disruption)(ref)
    status = local_client.wait(ref, timeout_s=HANG_GUARD_S, progress=False)
    assert status.phase == C.SUCCEEDED
    assert (status.failed, [p.name for p in status.pods][0]) == (failed, victim)
    assert status.pods[0].reason == reason
    with pytest.raises(Conflict, match="no running pod"):
        local_backend.kill(ref)


@pytest.mark.parametrize("kind", ["JobSet", "PyTorchJob", "TrainJob"])
def test_kinds_the_local_backend_does_not_run_are_refused_by_name(local_backend, kind):
    from kubecourse.multinode import MultiNodeSpec, render_variant

    objects = render_variant(kind, MultiNodeSpec(nodes=2, procs_per_node=1, gpus=0))
    workload = next(o for o in objects if o["kind"] == kind)
    with pytest.raises(NotImplementedError, match=f"not {workload['apiVersion']} {kind}/"):
        local_backend.submit(objects)
    with pytest.raises(Exception, match="no local job"):
        local_backend.status(JobRef(workload["metadata"]["name"], "default", kind))


def test_a_volcano_job_is_not_mistaken_for_a_batch_job(local_backend):
    volcano = {**job("vc", "print(1)"), "apiVersion": "batch.volcano.sh/v1alpha1"}
    with pytest.raises(NotImplementedError, match="not batch.volcano.sh/v1alpha1 Job/vc"):
        local_backend.submit([volcano])
