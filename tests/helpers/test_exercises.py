"""The broken-manifest exercises: each file is broken in exactly its one way, and the grader
accepts a correct fix (in more than one spelling) and rejects half-fixes."""

from __future__ import annotations

import pytest

from kubecourse.exercises import EXERCISES, exercise_dir, grade, load_broken
from kubecourse.manifests import pod_spec, trainer_container


def _job(objects):
    return next(o for o in objects if o["kind"] == "Job")


def _trainer(objects):
    return trainer_container(pod_spec(_job(objects)))


def fix_shm(objects):
    pod_spec(_job(objects))["volumes"].append(
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}
    )
    _trainer(objects)["volumeMounts"].append({"name": "dshm", "mountPath": "/dev/shm"})


def fix_shm_on_disk(objects):  # half a fix: an emptyDir on disk is not shared memory
    pod_spec(_job(objects))["volumes"].append({"name": "dshm", "emptyDir": {}})
    _trainer(objects)["volumeMounts"].append({"name": "dshm", "mountPath": "/dev/shm"})


def set_env(name, value):
    def fix(objects):
        next(e for e in _trainer(objects)["env"] if e["name"] == name).update(value=value)

    return fix


def fix_toleration(objects, toleration=None):
    pod_spec(_job(objects))["tolerations"] = [
        toleration or {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def fix_queue(objects, name="team-a"):
    _job(objects)["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = name


def fix_secret(objects):
    env = next(e for e in _trainer(objects)["env"] if e["name"] == "HF_TOKEN")
    env.pop("value")
    env["valueFrom"] = {"secretKeyRef": {"name": "hf-token", "key": "token"}}


def drop_secret(objects):  # "fixed" by deleting what the trainer needs
    _trainer(objects)["env"] = [e for e in _trainer(objects)["env"] if e["name"] != "HF_TOKEN"]


def fix_checkpoints(objects):
    volumes = pod_spec(_job(objects))["volumes"]
    volumes[:] = [v for v in volumes if v["name"] != "checkpoints"]
    volumes.append(
        {"name": "checkpoints", "persistentVolumeClaim": {"claimName": "training-checkpoints"}}
    )


CASES = [
    ("missing-dev-shm", fix_shm, True),
    ("missing-dev-shm", fix_shm_on_disk, False),
    ("wrong-master-address", set_env("MASTER_ADDR", "ddp-0.ddp-workers"), True),
    ("wrong-master-address", set_env("MASTER_ADDR", "ddp-0.ddp-workers.default.svc"), True),
    ("wrong-master-address", set_env("MASTER_ADDR", "ddp-workers"), False),
    ("missing-gpu-toleration", fix_toleration, True),
    (
        "missing-gpu-toleration",
        lambda o: fix_toleration(
            o, {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present"}
        ),
        True,
    ),
    (
        "missing-gpu-toleration",
        lambda o: fix_toleration(
            o, {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}
        ),
        False,
    ),
    ("queue-name-mismatch", fix_queue, True),
    ("queue-name-mismatch", lambda o: fix_queue(o, "team-b"), False),
    ("secret-inline", fix_secret, True),
    ("secret-inline", drop_secret, False),
    ("checkpoints-lost-on-retry", fix_checkpoints, True),
]


def test_there_are_at_least_five_exercises_each_with_a_file_and_a_fix():
    assert len(EXERCISES) >= 5
    for name, exercise in EXERCISES.items():
        text = (exercise_dir() / exercise.file).read_text()
        assert text.startswith("# Exercise 11."), name
        assert exercise.fix and exercise.symptom
    readme = (exercise_dir() / "README.md").read_text()
    assert all(e.file in readme for e in EXERCISES.values())


@pytest.mark.parametrize("name", list(EXERCISES))
def test_every_broken_file_fails_the_grader(name):
    result = grade(name, load_broken(name))
    assert not result.passed and result.problems
    assert "not yet" in str(result)


@pytest.mark.parametrize(
    "name, fix, passes", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_grader_accepts_fixes_and_rejects_half_fixes(name, fix, passes):
    objects = load_broken(name)
    fix(objects)
    result = grade(name, objects)
    assert result.passed == passes, str(result)
    assert load_broken(name) != objects, "load_broken hands out copies"


def test_unknown_exercise_names_the_known_ones():
    with pytest.raises(KeyError, match="missing-dev-shm"):
        load_broken("nope")
