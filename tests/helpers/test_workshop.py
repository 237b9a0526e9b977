"""Workshop tooling: render N learner slices, apply them to the fake API server, list, clean up."""

from __future__ import annotations

import pytest

from kubecourse import OptionError
from kubecourse.backends.config import KubernetesBackendConfig
from kubecourse.backends.kubernetes import KubernetesBackend
from kubecourse.cli import main
from kubecourse.workshop import LEARNER_LABEL, NOT_CHECKED, WORKSHOP_LABEL, Workshop
from tests.fakes.apiserver import FakeApiServer

PER_LEARNER = {
    "Namespace": 1,
    "ResourceQuota": 2,
    "LimitRange": 1,
    "LocalQueue": 1,
    "ServiceAccount": 1,
    "Role": 1,
    "RoleBinding": 1,
    "NetworkPolicy": 5,
}


@pytest.fixture
def api():
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def backend(api, tmp_path):
    backend = KubernetesBackend(
        KubernetesBackendConfig(
            kubeconfig=api.write_kubeconfig(tmp_path / "kubeconfig"), backoff_s=0.01
        )
    )
    yield backend
    backend.close()


def test_render_gives_each_learner_an_isolated_valid_slice(crd_dir):
    ws = Workshop(
        learners=3, gpus=2, cpu="4", memory="16Gi", users=("a@x.org", "b@x.org", "c@x.org")
    )
    objects = ws.render()
    report = ws.validate(objects)
    assert report.ok, str(report)
    for i, namespace in enumerate(["learner-01", "learner-02", "learner-03"]):
        mine = [
            o for o in objects if o["metadata"].get("labels", {}).get(LEARNER_LABEL) == namespace
        ]
        kinds = {k: sum(o["kind"] == k for o in mine) for k in PER_LEARNER}
        assert kinds == PER_LEARNER
        assert all(o["metadata"].get("namespace", namespace) == namespace for o in mine)
        quota = next(o for o in mine if o["metadata"]["name"] == "learner-quota")["spec"]["hard"]
        priority = next(o for o in mine if o["metadata"]["name"] == "learner-priority-quota")
        assert priority["spec"]["hard"] == {"pods": "0"}
        assert priority["spec"]["scopeSelector"]["matchExpressions"][0]["values"] == [
            "training-critical"
        ]
        assert quota["requests.nvidia.com/gpu"] == "2" and quota["requests.cpu"] == "4"
        binding = next(o for o in mine if o["kind"] == "RoleBinding")
        assert [s["name"] for s in binding["subjects"]] == [
            "learner",
            ("a@x.org", "b@x.org", "c@x.org")[i],
        ]
        ns = next(o for o in mine if o["kind"] == "Namespace")
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        assert ns["metadata"]["labels"][WORKSHOP_LABEL] == "kubecourse"
    queue = next(o for o in objects if o["kind"] == "ClusterQueue")
    resources = {
        r["name"]: r["nominalQuota"]
        for r in queue["spec"]["resourceGroups"][0]["flavors"][0]["resources"]
    }
    assert resources == {"cpu": "12", "memory": "48Gi", "nvidia.com/gpu": 6}
    assert queue["spec"]["namespaceSelector"] == {"matchLabels": {WORKSHOP_LABEL: "kubecourse"}}
    # objects a learner's namespace depends on come before it is used
    names = [(o["kind"], o["metadata"].get("namespace")) for o in objects]
    assert names.index(("Namespace", None)) < names.index(("ResourceQuota", "learner-01"))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"learners": 0}, "learners"),
        ({"learners": 2, "gpus": -1}, "gpus"),
        ({"learners": 2, "users": ("a",)}, "users"),
    ],
)
def test_bad_workshop_options_name_the_field(kwargs, field):
    with pytest.raises(OptionError) as info:
        Workshop(**kwargs)
    assert info.value.fields == [field]


def test_up_list_down_against_the_fake_api_server(api, backend):
    ws = Workshop(learners=3)
    objects = ws.render()

    dry = ws.up(backend, dry_run=True)
    # a dry run stores no Namespace: what lives inside one is reported, not sent
    assert {r for k, r in dry.items() if "@learner" not in k} == {"dry run"}
    assert {r for k, r in dry.items() if "@learner" in k} == {NOT_CHECKED}
    assert api.objects("namespaces") == [] or all(
        n["metadata"]["name"] not in ws.namespaces() for n in api.objects("namespaces")
    )
    assert ws.present(backend) == []

    created = ws.up(backend, dry_run=False)
    assert set(created.values()) == {"created"} and len(created) == len(objects) == 2 + 3 * 13
    for namespace in ws.namespaces():
        assert api.get("namespaces", namespace) is not None
        assert api.get("resourcequotas", "learner-quota", namespace) is not None
        assert len(api.objects("networkpolicies", namespace, group="networking.k8s.io")) == 5
        assert api.get("localqueues", "default", namespace, group="kueue.x-k8s.io")["spec"] == {
            "clusterQueue": "kubecourse-workshop"
        }
    assert len(ws.present(backend)) == len(objects)
    assert set(ws.up(backend, dry_run=False).values()) == {"exists"}  # idempotent

    removed = ws.down(backend)
    assert set(removed.values()) <= {"deleted", "absent"} and "deleted" in removed.values()
    assert ws.present(backend) == []
    assert set(ws.down(backend).values()) == {"absent"}


def test_cli_is_a_dry_run_by_default_and_prints_the_table(capsys):
    assert main(["workshop", "up", "--learners", "3"]) == 0
    out = capsys.readouterr().out
    assert "learner-03" in out and "ResourceQuota" in out and "would create 41 objects" in out


def test_cli_applies_and_cleans_up_on_the_local_backend(capsys):
    assert main(["workshop", "up", "--learners", "2", "--apply"]) == 0
    assert "created" in capsys.readouterr().out


def test_up_list_down_on_the_local_backend_keeps_a_record(local_backend):
    ws = Workshop(learners=3)
    assert set(ws.up(local_backend, dry_run=True).values()) == {"dry run", NOT_CHECKED}
    assert ws.present(local_backend) == []
    assert set(ws.up(local_backend, dry_run=False).values()) == {"created"}
    assert len(ws.present(local_backend)) == 41
    assert set(ws.down(local_backend).values()) == {"deleted"}
    assert ws.present(local_backend) == []


def test_cli_down_without_apply_deletes_nothing(capsys):
    assert main(["workshop", "down", "--learners", "2"]) == 0
    assert "would delete 28 objects" in capsys.readouterr().out
