"""Network policies that let a multi-node job train and nothing else, checked with the evaluator
over the rendered manifests: every connection each multi-node lesson makes (rendezvous, worker
store, NCCL, DNS, metrics scrape) is allowed; a connection between two different jobs is not."""

from __future__ import annotations

import pytest

from kubecourse import render
from kubecourse.access import is_workload
from kubecourse.manifests import apply_options, load_lesson, object_id
from kubecourse.multinode import KINDS, render_variant
from kubecourse.netpol import Endpoint, allowed, ephemeral_range, matches, pods_of
from kubecourse.workshop import Workshop

NS = "learner-01"
DNS = Endpoint("coredns", "kube-system", {"k8s-app": "kube-dns"})
PROMETHEUS = Endpoint("prometheus-0", "monitoring", {"app.kubernetes.io/name": "prometheus"})
HUB = Endpoint("huggingface.co", ip="18.154.227.7")
CLUSTER_SERVICE = Endpoint("in-cluster", ip="10.96.0.10")


def _namespace_policies():
    """The learner namespace's policies exactly as `workshop up` creates them."""
    objects = Workshop(learners=1).render()
    return [o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["namespace"] == NS]


def _multinode_jobs():
    """(label, objects) of every multi-node workload the lessons run, rendered into NS."""
    cases = [(f"02 {kind}", render_variant(kind)) for kind in KINDS]
    jobs04 = load_lesson("04", part="jobs")
    for obj in jobs04:
        if is_workload(obj) and obj["metadata"]["name"] in ("cifar10-gang", "cifar10-queued"):
            peers = [
                o for o in jobs04 if o["metadata"]["name"] == f"{obj['metadata']['name']}-peers"
            ]
            cases.append((f"04 {object_id(obj)}", [obj, *peers]))
    return [(label, apply_options(objs, namespace=NS)) for label, objs in cases]


def _pods(objects):
    job = next(o for o in objects if is_workload(o))
    runtime = next((o for o in objects if o["kind"] == "TrainingRuntime"), None)
    return pods_of(job, runtime)


@pytest.mark.parametrize(
    "label, objects", _multinode_jobs(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_connection_of_a_multi_node_job_is_allowed(label, objects):
    policies = _namespace_policies() + objects
    pods = _pods(objects)
    assert len(pods) >= 2, label
    master, worker = pods[0], pods[1]
    low, high = ephemeral_range(master)
    assert (low, high) == (30000, 32767), f"{label}: no ip_local_port_range sysctl on the pods"
    connections = [
        ("rendezvous", worker, master, 29500, "TCP"),
        ("worker store (low end)", worker, master, low, "TCP"),
        ("worker store (high end)", master, worker, high, "TCP"),
        ("NCCL rank 1 -> 0", worker, master, low + 1, "TCP"),
        ("NCCL rank 0 -> 1", master, worker, high - 1, "TCP"),
        ("DNS udp", worker, DNS, 53, "UDP"),
        ("DNS tcp", master, DNS, 53, "TCP"),
    ]
    blocked = [
        name
        for name, src, dst, port, proto in connections
        if not allowed(policies, src, dst, port, proto)
    ]
    assert blocked == [], f"{label}: {blocked}"
    # what the kernel would pick without the sysctl (the bug the issue reports) stays closed
    assert not allowed(policies, worker, master, 40000)


@pytest.mark.parametrize(
    "label, objects", _multinode_jobs(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_two_different_jobs_cannot_reach_each_other(label, objects):
    other = apply_options(objects, name="someone-else")
    policies = _namespace_policies() + objects + other
    mine, theirs = _pods(objects)[0], _pods(other)[1]
    assert mine.labels != theirs.labels
    for port in (29500, 30000, 31000, 32767):
        assert not allowed(policies, theirs, mine, port), (label, port)
        assert not allowed(policies, mine, theirs, port), (label, port)
    # the renamed job's own pods still reach each other (its policy followed the name)
    a, b = _pods(other)[:2]
    assert allowed(policies, a, b, 29500)


def test_prometheus_scrapes_the_metrics_port_and_nothing_else():
    objects = render("05", namespace=NS)
    policies = _namespace_policies() + objects
    pod = _pods(objects)[0]
    assert pod.ports["metrics"] == 9400
    assert allowed(policies, PROMETHEUS, pod, 9400)
    assert not allowed(policies, PROMETHEUS, pod, 29500)
    assert not allowed(
        policies, Endpoint("x", "other", {"app.kubernetes.io/name": "prometheus"}), pod, 9400
    )


@pytest.mark.parametrize(
    "lesson, downloads",
    [("01", True), ("03", True), ("05", True)],
)
def test_egress_to_the_model_hub_only_where_a_lesson_downloads(lesson, downloads):
    objects = render(lesson, namespace=NS)
    pod = _pods(objects)[0]
    policies = _namespace_policies() + objects
    assert allowed(policies, pod, HUB, 443) is downloads
    assert not allowed(policies, pod, HUB, 80)
    assert not allowed(policies, pod, CLUSTER_SERVICE, 443)  # the cluster's ranges stay closed


@pytest.mark.parametrize("label, objects", _multinode_jobs()[:1], ids=["02 Job"])
def test_a_multi_node_job_that_does_not_download_has_no_internet(label, objects):
    pod = _pods(objects)[0]
    assert not allowed(_namespace_policies() + objects, pod, HUB, 443)


POD = Endpoint("p", "ns", {"app": "a", "tier": "x"}, {"metrics": 9400})
OTHER = Endpoint("q", "ns", {"app": "b"})


def _policy(spec, namespace="ns"):
    return {
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": namespace},
        "spec": spec,
    }


@pytest.mark.parametrize(
    "policies, src, dst, port, expected",
    [
        ([], OTHER, POD, 80, True),  # nothing selects the pods: not isolated
        ([_policy({"podSelector": {}, "policyTypes": ["Ingress"]})], OTHER, POD, 80, False),
        ([_policy({"podSelector": {}, "policyTypes": ["Ingress"]})], POD, OTHER, 80, False),
        ([_policy({"podSelector": {}, "policyTypes": ["Egress"]})], OTHER, POD, 80, False),
        (
            [_policy({"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [{}]})],
            OTHER,
            POD,
            80,
            True,
        ),
        (
            [_policy({"podSelector": {}, "ingress": [{"ports": [{"port": "metrics"}]}]})],
            OTHER,
            POD,
            9400,
            True,
        ),
        (
            [_policy({"podSelector": {}, "ingress": [{"ports": [{"port": "metrics"}]}]})],
            OTHER,
            POD,
            9401,
            False,
        ),
        (
            [_policy({"podSelector": {}, "ingress": [{"ports": [{"port": 100, "endPort": 200}]}]})],
            OTHER,
            POD,
            200,
            True,
        ),
        (
            [
                _policy(
                    {"podSelector": {}, "ingress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}
                )
            ],
            OTHER,
            POD,
            53,
            False,  # TCP asked, UDP allowed
        ),
        (
            [
                _policy(
                    {
                        "podSelector": {},
                        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}],
                    }
                )
            ],
            Endpoint("r", "elsewhere", {"app": "b"}),
            POD,
            80,
            False,  # podSelector alone: own namespace
        ),
        (
            [_policy({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]})],
            Endpoint("r", "elsewhere", {"app": "b"}),
            POD,
            80,
            True,
        ),
        (
            [_policy({"podSelector": {}, "policyTypes": ["Ingress"]}, namespace="other")],
            OTHER,
            POD,
            80,
            True,  # a policy of another namespace does not select these pods
        ),
    ],
)
def test_evaluator_semantics(policies, src, dst, port, expected):
    assert allowed(policies, src, dst, port) is expected


@pytest.mark.parametrize(
    "selector, expected",
    [
        ({}, True),
        ({"matchLabels": {"app": "a"}}, True),
        ({"matchLabels": {"app": "b"}}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["x", "y"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]}, False),
        ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, True),
    ],
)
def test_label_selectors(selector, expected):
    assert matches(selector, POD.labels) is expected
