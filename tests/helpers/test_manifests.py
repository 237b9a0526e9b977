"""Loading lesson manifests and applying typed options."""

from __future__ import annotations

import pytest

from kubecourse import ManifestError, OptionError, apply_options, load_lesson, render
from kubecourse import constants as C
from kubecourse.manifests import (
    options_from_dict,
    parse_yaml,
    pod_spec,
    trainer_container,
    workload,
)


def _job(objects):
    return workload(objects)


def _trainer(objects):
    return trainer_container(pod_spec(workload(objects)))


def test_load_lesson_orders_dependencies_first():
    kinds = [o["kind"] for o in load_lesson("01")]
    assert kinds == ["PersistentVolumeClaim", "PersistentVolumeClaim", "Job"]
    assert load_lesson(1) == load_lesson("01-cifar10-job")


@pytest.mark.parametrize(
    "part, kinds",
    [
        (
            "admin",
            {"Namespace", "ResourceQuota", "LimitRange", "ClusterQueue", "LocalQueue", "Role"},
        ),
        ("jobs", {"PersistentVolumeClaim", "Job"}),
    ],
)
def test_a_lesson_split_into_parts_loads_one_part_or_all(part, kinds):
    objects = load_lesson("04", part=part)
    assert kinds <= {o["kind"] for o in objects}
    everything = load_lesson("04")
    assert all(o in everything for o in objects)


def test_an_unknown_part_names_the_known_ones():
    with pytest.raises(ManifestError, match="admin") as info:
        load_lesson("04", part="nope")
    assert info.value.fields == ["part"]


@pytest.mark.parametrize(
    "values, check",
    [
        ({"name": "my-run"}, lambda o: _job(o)["metadata"]["name"] == "my-run"),
        ({"namespace": "team-a"}, lambda o: all(x["metadata"]["namespace"] == "team-a" for x in o)),
        (
            {"image": "reg.example/labs:1.2.3"},
            lambda o: (
                {
                    c["image"]
                    for c in pod_spec(_job(o))["containers"] + pod_spec(_job(o))["initContainers"]
                }
                == {"reg.example/labs:1.2.3"}
            ),
        ),
        ({"command": ["python", "-V"]}, lambda o: _trainer(o)["command"] == ["python", "-V"]),
        ({"args": ["--epochs=1"]}, lambda o: _trainer(o)["args"] == ["--epochs=1"]),
        (
            {"extra_args": ["--smoke"]},
            lambda o: _trainer(o)["args"][-1] == "--smoke" and len(_trainer(o)["args"]) > 1,
        ),
        (
            {"env": {"DATASET": "synthetic"}},
            lambda o: all(
                {"name": "DATASET", "value": "synthetic"} in c["env"]
                for c in pod_spec(_job(o))["containers"] + pod_spec(_job(o))["initContainers"]
            ),
        ),
        (
            {"nodes": 3},
            lambda o: (
                (
                    _job(o)["spec"]["completions"],
                    _job(o)["spec"]["parallelism"],
                    _job(o)["spec"]["completionMode"],
                )
                == (3, 3, "Indexed")
            ),
        ),
        (
            {"gpus": 2},
            lambda o: (
                _trainer(o)["resources"]["limits"][C.GPU_RESOURCE]
                == 2
                == _trainer(o)["resources"]["requests"][C.GPU_RESOURCE]
            ),
        ),
        ({"gpus": 0}, lambda o: C.GPU_RESOURCE not in _trainer(o)["resources"]["limits"]),
        (
            {"cpu": "500m", "memory": "1Gi"},
            lambda o: (
                _trainer(o)["resources"]["limits"] | {}
                and _trainer(o)["resources"]["requests"]["cpu"] == "500m"
                and _trainer(o)["resources"]["limits"]["memory"] == "1Gi"
            ),
        ),
        (
            {"volumes": {"data": "shared-data"}},
            lambda o: (
                pod_spec(_job(o))["volumes"][0]["persistentVolumeClaim"]["claimName"]
                == "shared-data"
            ),
        ),
        (
            {"queue": "team-a-queue"},
            lambda o: (
                _job(o)["metadata"]["labels"][C.KUEUE_QUEUE_LABEL] == "team-a-queue"
                and _job(o)["spec"]["suspend"] is True
            ),
        ),
        ({"priority": "high"}, lambda o: pod_spec(_job(o))["priorityClassName"] == "high"),
        ({"deadline_s": 60}, lambda o: _job(o)["spec"]["activeDeadlineSeconds"] == 60),
        ({"backoff_limit": 0}, lambda o: _job(o)["spec"]["backoffLimit"] == 0),
    ],
    ids=lambda v: ",".join(v) if isinstance(v, dict) else "",
)
def test_each_option_patches_its_field(values, check):
    base = load_lesson("01")
    rendered = render("01", **values)
    assert check(rendered)
    assert load_lesson("01") == base, "render must not mutate the loaded manifests"


def test_options_apply_to_a_copy():
    base = load_lesson("01")
    apply_options(base, name="other")
    assert _job(base)["metadata"]["name"] == "cifar10-train"


def test_procs_per_node_says_when_it_does_not_apply():
    with pytest.raises(OptionError, match="does not apply"):
        render("01", procs_per_node=2)


def test_unknown_option_suggests_the_close_one():
    with pytest.raises(OptionError) as info:
        options_from_dict({"gpu": 1})
    assert info.value.fields == ["gpu"] and "did you mean 'gpus'" in str(info.value)


def test_parse_yaml_skips_empty_documents_and_reports_lines():
    assert len(parse_yaml("---\na: 1\n---\n---\nb: 2\n")) == 2
    with pytest.raises(ManifestError, match="line 2"):
        parse_yaml("a: 1\n  b: [\n")


def test_every_bad_option_is_reported_at_once():
    with pytest.raises(OptionError) as info:
        render("01", name="Bad_Name", gpus=-1, cpu="four")
    assert info.value.fields == ["name", "gpus", "cpu"]
