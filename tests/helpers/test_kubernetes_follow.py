"""`logs(follow=True)` follows the job, not one pod: when the Job controller replaces a failed or
preempted pod, the replacement's lines follow the first pod's, on both backends (lesson 09's
preemption experiment reads the resume from them). On Kubernetes this is what
`kubectl logs -f -l batch.kubernetes.io/job-name=...` does NOT do: it follows the pods that exist
when it starts, and has to be re-run for the replacement."""

from __future__ import annotations

import pytest

from kubecourse import TrainingClient
from kubecourse.backends.config import KubernetesBackendConfig
from tests.fakes.cluster import FakeCluster
from tests.guards import HANG_GUARD_S

from .jobs import job

pytestmark = pytest.mark.timeout(120)

# The first pod (no marker yet) fails, or waits to be preempted; the one that replaces it succeeds.
FIRST_FAILS = (
    "import os, sys\n"
    "marker = os.path.join(os.environ['RUN'], 'tried')\n"
    "if not os.path.exists(marker):\n"
    "    open(marker, 'w').close(); print('first pod fails', flush=True); sys.exit(1)\n"
    "print('replacement pod runs')"
)
FIRST_PREEMPTED = (
    "import os, signal, sys, time\n"
    "marker = os.path.join(os.environ['RUN'], 'tried')\n"
    "if not os.path.exists(marker):\n"
    "    open(marker, 'w').close()\n"
    "    signal.signal(signal.SIGTERM, lambda *_: (print('stopped', flush=True), sys.exit(143)))\n"
    "    print('first pod waits', flush=True); time.sleep(60)\n"
    "print('replacement pod runs')"
)
IGNORE_DISRUPTION = {
    "rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    ]
}


@pytest.fixture
def cluster_client(tmp_path):
    with FakeCluster(tmp_path / "cluster", max_grace_s=3.0) as cluster:
        config = KubernetesBackendConfig(
            kubeconfig=cluster.write_kubeconfig(tmp_path / "kc"), backoff_s=0.01
        )
        with TrainingClient(
            backend=config, show_kubectl=False, rendered_dir=tmp_path / "r"
        ) as client:
            yield client


@pytest.mark.parametrize("backend", ["local", "kubernetes"])
@pytest.mark.parametrize("disruption", ["fails", "preempted"])
def test_follow_moves_on_to_the_pod_that_replaces_one(backend, disruption, request, tmp_path):
    client = request.getfixturevalue("local_client" if backend == "local" else "cluster_client")
    run = tmp_path / "run"
    run.mkdir()
    code, spec = (
        (FIRST_FAILS, {"backoffLimit": 1})
        if disruption == "fails"
        else (FIRST_PREEMPTED, {"backoffLimit": 0, "podFailurePolicy": IGNORE_DISRUPTION})
    )
    ref = client.submit([job("follow", code, env=[{"name": "RUN", "value": str(run)}], **spec)])
    seen = []
    for line in client.iter_logs(ref, follow=True):
        seen.append((line.pod, line.text))
        if line.text == "first pod waits":
            client.preempt(ref)
    texts = [text for _, text in seen]
    first = "first pod fails" if disruption == "fails" else "first pod waits"
    assert texts[0] == first and texts[-1] == "replacement pod runs", texts
    assert seen[0][0] != seen[-1][0], "the last line must come from the replacement pod"
    assert client.wait(ref, timeout_s=HANG_GUARD_S, progress=False).phase == "Succeeded"
    client.delete(ref)
