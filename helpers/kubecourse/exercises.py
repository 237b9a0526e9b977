"""Broken-manifest exercises (lesson 11) and the grader that checks a learner's fix.

Each exercise is a file in notebooks/exercises/11/ that is wrong in one realistic way (its header
describes the symptom, not the fix). The learner loads it, fixes the objects, and calls

    grade("missing-dev-shm", fixed_objects)      # Grade(passed, problems)

The grader runs the course validation (Kubernetes schema, CRD schemas, policy) and the exercise's
own check of the fix. It checks the outcome, not one spelling of it: any toleration that matches
the GPU taint passes, any Secret name works for the token, and so on.
"""

from __future__ import annotations

import copy
import html
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import constants as C
from .manifests import Manifest, parse_yaml, pod_spec, repo_root, trainer_container
from .validation import validate


@dataclass(frozen=True)
class Exercise:
    file: str
    symptom: str
    fix: str  # the solution, in words (the notebook shows it after the check passes)
    check: Callable[[list[Manifest]], list[str]]  # problems left in the learner's objects


@dataclass
class Grade:
    exercise: str
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if self.passed:
            return f"{self.exercise}: PASSED"
        return f"{self.exercise}: not yet\n" + "\n".join(f"  - {p}" for p in self.problems)

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(str(self))}</pre>"


def exercise_dir() -> Path:
    return repo_root() / "notebooks" / "exercises" / "11"


def _jobs(objects: list[Manifest]) -> list[Manifest]:
    return [o for o in objects if o.get("kind") == "Job"]


def _one_job(objects: list[Manifest]) -> tuple[Manifest | None, list[str]]:
    jobs = _jobs(objects)
    if len(jobs) != 1:
        return None, [f"expected exactly one Job, found {len(jobs)}"]
    return jobs[0], []


def _check_dev_shm(objects: list[Manifest]) -> list[str]:
    job, problems = _one_job(objects)
    if job is None:
        return problems
    spec = pod_spec(job)
    memory_volumes = {
        v["name"]
        for v in spec.get("volumes") or []
        if (v.get("emptyDir") or {}).get("medium") == "Memory"
    }
    mounts = trainer_container(spec).get("volumeMounts") or []
    shm = [m for m in mounts if m.get("mountPath") == "/dev/shm"]
    if not shm:
        return ["the trainer has no volumeMount at /dev/shm (the runtime's default is 64 MiB)"]
    if shm[0]["name"] not in memory_volumes:
        return [
            f"/dev/shm is mounted from {shm[0]['name']!r}, which is not an emptyDir with medium: Memory"
        ]
    return []


def _env(container: Manifest, name: str) -> Manifest | None:
    return next((e for e in container.get("env") or [] if e.get("name") == name), None)


def _check_master_address(objects: list[Manifest]) -> list[str]:
    job, problems = _one_job(objects)
    if job is None:
        return problems
    name, spec = job["metadata"]["name"], pod_spec(job)
    subdomain = spec.get("subdomain")
    services = {
        o["metadata"]["name"]: o
        for o in objects
        if o.get("kind") == "Service" and (o.get("spec") or {}).get("clusterIP") == "None"
    }
    if not subdomain:
        problems.append("the pod template has no subdomain: its pods get no stable DNS names")
    elif subdomain not in services:
        problems.append(
            f"no headless Service named {subdomain!r} (the pods' subdomain) in the file"
        )
    else:
        selector = services[subdomain]["spec"].get("selector") or {}
        if selector.get(C.JOB_NAME_LABEL) != name:
            problems.append(
                f"Service {subdomain} does not select the Job's pods ({C.JOB_NAME_LABEL}: {name})"
            )
    master = _env(trainer_container(spec), "MASTER_ADDR")
    expected = f"{name}-0.{subdomain}"
    if master is None or master.get("value") not in (
        expected,
        f"{expected}.{job['metadata'].get('namespace', 'default')}.svc",
    ):
        got = None if master is None else master.get("value")
        problems.append(f"MASTER_ADDR is {got!r}; rank 0 of this Job is reachable as {expected!r}")
    return problems


def _check_toleration(objects: list[Manifest]) -> list[str]:
    job, problems = _one_job(objects)
    if job is None:
        return problems
    for t in pod_spec(job).get("tolerations") or []:
        key_ok = t.get("key") == C.GPU_RESOURCE or (
            t.get("operator") == "Exists" and not t.get("key")
        )
        value_ok = t.get("operator") == "Exists" or t.get("value") == "present"
        if key_ok and value_ok and t.get("effect") in (None, "", "NoSchedule"):
            return []
    return [f"no toleration matches the GPU nodes' taint {C.GPU_RESOURCE}=present:NoSchedule"]


def _check_queue(objects: list[Manifest]) -> list[str]:
    job, problems = _one_job(objects)
    if job is None:
        return problems
    queues = {o["metadata"]["name"] for o in objects if o.get("kind") == "LocalQueue"}
    label = (job["metadata"].get("labels") or {}).get(C.KUEUE_QUEUE_LABEL)
    if label is None:
        return [f"the Job has no {C.KUEUE_QUEUE_LABEL} label: Kueue would not manage it"]
    if label not in queues:
        return [
            f"{C.KUEUE_QUEUE_LABEL}={label!r} names no LocalQueue here (have: {sorted(queues)})"
        ]
    return []


def _check_secret(objects: list[Manifest]) -> list[str]:
    job, problems = _one_job(objects)
    if job is None:
        return problems
    token = _env(trainer_container(pod_spec(job)), "HF_TOKEN")
    if token is None:
        return ["the trainer lost its HF_TOKEN variable (it still needs the token)"]
    if "value" in token:
        return ["HF_TOKEN still has an inline value"]
    if "secretKeyRef" not in (token.get("valueFrom") or {}):
        return ["HF_TOKEN should come from valueFrom.secretKeyRef"]
    return []


def _check_checkpoints(objects: list[Manifest]) -> list[str]:
    job, problems = _one_job(objects)
    if job is None:
        return problems
    spec = pod_spec(job)
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for mount in trainer_container(spec).get("volumeMounts") or []:
        if mount.get("mountPath") == "/checkpoints":
            volume = volumes.get(mount["name"], {})
            if "persistentVolumeClaim" not in volume:
                return [
                    "/checkpoints is not backed by a PersistentVolumeClaim: it dies with the pod"
                ]
            return []
    return ["the trainer has no volume mounted at /checkpoints"]


EXERCISES: dict[str, Exercise] = {
    "missing-dev-shm": Exercise(
        "01-missing-dev-shm.yaml",
        "DataLoader workers die with a bus error",
        "add a volume {name: dshm, emptyDir: {medium: Memory, sizeLimit: 2Gi}} and mount it at "
        "/dev/shm in the trainer",
        _check_dev_shm,
    ),
    "wrong-master-address": Exercise(
        "02-wrong-master-address.yaml",
        "both ranks time out connecting to the rendezvous",
        "MASTER_ADDR must be <job>-0.<subdomain>: ddp-0.ddp-workers (the headless Service is "
        "ddp-workers, not ddp-worker)",
        _check_master_address,
    ),
    "missing-gpu-toleration": Exercise(
        "03-missing-gpu-toleration.yaml",
        "the pod stays Pending: untolerated taint",
        "add tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]",
        _check_toleration,
    ),
    "queue-name-mismatch": Exercise(
        "04-queue-name-mismatch.yaml",
        "the Job stays suspended with no pods",
        "set the label kueue.x-k8s.io/queue-name to the LocalQueue's name, team-a",
        _check_queue,
    ),
    "secret-inline": Exercise(
        "05-secret-inline.yaml",
        "the validator rejects an inline token",
        "create the Secret out of band (kubectl create secret generic hf-token "
        "--from-literal=token=...) and use env valueFrom.secretKeyRef {name: hf-token, key: token}",
        _check_secret,
    ),
    "checkpoints-lost-on-retry": Exercise(
        "06-checkpoints-lost-on-retry.yaml",
        "a retried pod starts again from step 0",
        "back /checkpoints with the PersistentVolumeClaim training-checkpoints instead of an emptyDir",
        _check_checkpoints,
    ),
}


def load_broken(name: str) -> list[Manifest]:
    """The broken objects of exercise `name` (a fresh copy each time)."""
    if name not in EXERCISES:
        raise KeyError(f"no exercise {name!r}; known: {', '.join(EXERCISES)}")
    path = exercise_dir() / EXERCISES[name].file
    return copy.deepcopy(parse_yaml(path.read_text(), str(path)))


def grade(name: str, objects: list[Manifest]) -> Grade:
    """Check a fix: course validation (schema, CRDs, policy) plus the exercise's own check."""
    exercise = EXERCISES[name]
    problems = [str(f) for f in validate(objects).findings]
    problems += exercise.check(objects)
    return Grade(name, problems)
