"""kubecourse.multinode: one spec, four kinds. Golden files, per-kind options, validation, and the
local backend's model of cluster DNS and pod ports.

Golden files live in tests/helpers/golden/multinode-<kind>.yaml. After an intended change to the
manifests or the options, regenerate them and review the diff:

    KUBECOURSE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/helpers/test_multinode.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kubecourse import OptionError, validate
from kubecourse.display import to_yaml
from kubecourse.manifests import trainers, workload
from kubecourse.multinode import (
    KINDS,
    MultiNodeSpec,
    comparison_table,
    render_all,
    render_variant,
    side_by_side,
    variant_diff,
)
from tests.guards import HANG_GUARD_S
from tests.helpers.jobs import PRINT_ARGV_ENV, job

GOLDEN = Path(__file__).parent / "golden"
SPEC = MultiNodeSpec(
    nodes=3,
    procs_per_node=4,
    gpus=4,
    image="registry.example.com/kubecourse/labs:1.2.3",
    name="golden-run",
    namespace="training",
    env=(("NCCL_DEBUG", "INFO"),),
)


@pytest.mark.parametrize("kind", KINDS)
def test_rendering_matches_its_golden_file(kind):
    text = to_yaml(render_variant(kind, SPEC))
    path = GOLDEN / f"multinode-{kind.lower()}.yaml"
    if os.environ.get("KUBECOURSE_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}; see this module's docstring to create it"
    assert text == path.read_text(), f"{kind} rendering changed; regenerate the golden files"


@pytest.mark.parametrize("kind", KINDS)
def test_every_rendering_validates(kind, crd_dir):
    report = validate(render_variant(kind, SPEC), crd_dir=crd_dir)
    assert report.ok, str(report)
    assert not report.skipped


def _env(container):
    return {e["name"]: e.get("value") for e in container.get("env") or []}


# Where "3 nodes x 4 processes, 4 GPUs" lands in each kind.
@pytest.mark.parametrize(
    "kind, nodes_at, procs_at",
    [
        ("Job", lambda w: w["spec"]["completions"], lambda c, w: _env(c)["NPROC_PER_NODE"]),
        (
            "JobSet",
            lambda w: w["spec"]["replicatedJobs"][0]["template"]["spec"]["parallelism"],
            lambda c, w: _env(c)["NPROC_PER_NODE"],
        ),
        (
            "PyTorchJob",
            lambda w: 1 + w["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"],
            lambda c, w: w["spec"]["nprocPerNode"],
        ),
        ("TrainJob", lambda w: w["spec"]["trainer"]["numNodes"], lambda c, w: c["numProcPerNode"]),
    ],
)
def test_options_land_where_each_kind_keeps_them(kind, nodes_at, procs_at):
    objects = render_variant(kind, SPEC)
    w = workload(objects)
    assert nodes_at(w) == 3 and w["metadata"]["name"] == "golden-run"
    for container in trainers(objects):
        assert str(procs_at(container, w)) == "4"
        resources = container.get("resources") or container.get("resourcesPerNode")
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 4
        assert container["image"] == SPEC.image
        assert _env(container)["NCCL_DEBUG"] == "INFO"
        if kind in ("Job", "JobSet"):
            assert _env(container)["NNODES"] == "3"
    assert all(o["metadata"]["namespace"] == "training" for o in objects)


def test_bad_spec_values_name_the_field():
    with pytest.raises(OptionError) as info:
        render_variant("JobSet", MultiNodeSpec(nodes=0, gpus=-1))
    assert "nodes" in str(info.value) and "gpus" in str(info.value)
    with pytest.raises(OptionError, match="kind"):
        render_variant("MPIJob")


def test_views_show_every_kind_and_their_differences():
    rendered = render_all(MultiNodeSpec())
    text = str(side_by_side(rendered))
    assert all(f"===== {kind} =====" in text for kind in KINDS)
    diff = str(variant_diff(rendered, "Job", "JobSet"))
    # Same container fields line up under pod.*; what differs is how rank and master are found.
    assert "-pod.subdomain = lm-job" in diff and "+spec.network.enableDNSHostnames = True" in diff
    assert "pod.containers[trainer].image" not in diff  # identical in both: not in the diff
    assert "PET_NODE_RANK" in str(comparison_table())


def test_local_backend_maps_pod_dns_names_and_gives_each_job_its_own_port(local_client):
    """The headless Service's pod names resolve to 127.0.0.1, and its port becomes a free local
    port per job, in args and in *PORT* env variables (two jobs would both use 29500 otherwise)."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "svc", "namespace": "default"},
        "spec": {"clusterIP": "None", "selector": {"app": "x"}, "ports": [{"port": 29500}]},
    }
    env = [
        {"name": "MASTER_ADDR", "value": "net-0.svc"},
        {"name": "MASTER_PORT", "value": "29500"},
        {"name": "FQDN", "value": "net-1.svc.default.svc.cluster.local"},
        {"name": "OTHER", "value": "net-0.elsewhere"},
    ]
    ports = []
    for name in ("net", "net2"):
        objects = [
            service,
            job(name, PRINT_ARGV_ENV, env=env, args=["--endpoint=net-0.svc:29500"]),
        ]
        ref = local_client.submit(objects)
        status = local_client.wait(ref, timeout_s=HANG_GUARD_S, progress=False)
        assert status.phase == "Succeeded"
        seen = json.loads([line.text for line in local_client.logs(ref, echo=False)][-1])
        port = seen["env"]["MASTER_PORT"]
        assert seen["env"]["MASTER_ADDR"] == "127.0.0.1"
        assert seen["env"]["FQDN"] == "127.0.0.1"
        assert seen["env"]["OTHER"] == "net-0.elsewhere"  # not under the headless Service
        assert seen["argv"] == [f"--endpoint=127.0.0.1:{port}"]
        assert port != "29500"
        ports.append(port)
        local_client.delete(ref)
    assert ports[0] != ports[1]
