"""Load a manifest set's plain YAML and apply typed options to it.

Manifest sets are the folders manifests/NN-topic/, numbered on their own (01-05); the lessons are
the notebooks (00-11). `kubecourse.coursemap.MANIFEST_SETS` maps one to the other; the functions
below keep their historical names (`load_lesson("01")` loads manifest set 01, used by lesson 02).

The YAML files under manifests/NN-topic/ are complete, valid objects a learner can `kubectl apply`
as they are. Python never templates them: it loads them into dicts and applies small typed options,
each of which patches the dicts and says clearly when it does not apply.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import constants as C
from .errors import Finding, ManifestError, OptionError

Manifest = dict[str, Any]

# RFC 1123 label (namespaces, Job names: a Job's name becomes a pod label value, so 63 chars max).
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
# A Kubernetes quantity: 500m, 2, 1.5, 16Gi, 512Mi, 1e3.
_QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|e[0-9]+)?$")


# --------------------------------------------------------------------------------------------------
# Finding the repository and a lesson's files
# --------------------------------------------------------------------------------------------------


def repo_root() -> Path:
    """The course repository (the folder holding manifests/ and labs/)."""
    here = Path(__file__).resolve().parents[2]
    if (here / "manifests").is_dir() and (here / "labs").is_dir():
        return here
    for candidate in [Path.cwd(), *Path.cwd().parents]:
        if (candidate / "manifests").is_dir() and (candidate / "labs").is_dir():
            return candidate
    raise FileNotFoundError(
        "cannot find the course repository (a folder with manifests/ and labs/)"
    )


def lesson_dir(lesson: str | int) -> Path:
    """manifests/NN-topic for a manifest set given as 1, "01", or "01-cifar10-job"."""
    root = repo_root() / "manifests"
    key = f"{int(lesson):02d}" if isinstance(lesson, int) or str(lesson).isdigit() else str(lesson)
    matches = sorted(
        p for p in root.iterdir() if p.is_dir() and (p.name == key or p.name.startswith(f"{key}-"))
    )
    if len(matches) != 1:
        known = ", ".join(sorted(p.name for p in root.iterdir() if p.is_dir()))
        raise ManifestError(
            Finding(
                "lesson",
                "lesson",
                f"no single manifest folder matches {lesson!r}; known: {known}",
                "option",
            )
        )
    return matches[0]


def object_id(obj: Manifest) -> str:
    """ "Kind/name" for messages."""
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', '?')}/{meta.get('name', '?')}"


def parse_yaml(text: str, source: str = "<string>") -> list[Manifest]:
    """Every non-empty document of a multi-document YAML text, as dicts."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ManifestError(
            Finding(source, where, f"broken YAML: {getattr(exc, 'problem', exc)}", "yaml")
        ) from exc
    objects = []
    for number, doc in enumerate(docs):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestError(
                Finding(
                    source,
                    f"document {number}",
                    f"expected a mapping (an object), got {type(doc).__name__}",
                    "yaml",
                )
            )
        objects.append(doc)
    return objects


def sort_for_creation(objects: Iterable[Manifest]) -> list[Manifest]:
    """Dependencies first (Namespace, Secret, PVC, Service ... then the workload); stable otherwise."""
    rank = {kind: i for i, kind in enumerate(C.KIND_ORDER)}
    return sorted(objects, key=lambda o: rank.get(o.get("kind", ""), len(rank)))


# Kustomize drops objects carrying this annotation from `kubectl apply -k` (e.g. an example Secret
# kept beside the manifests for reading and validation); load_lesson drops them the same way.
LOCAL_CONFIG_ANNOTATION = "config.kubernetes.io/local-config"


def is_local_config(obj: Manifest) -> bool:
    """True for an object marked `config.kubernetes.io/local-config: "true"` (never applied)."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(LOCAL_CONFIG_ANNOTATION, "")).lower() == "true"


def load_lesson(lesson: str | int, part: str | None = None) -> list[Manifest]:
    """Every object of a manifest set (kustomization.yaml excluded), creation-ordered.

    A lesson split into subfolders (04-production/admin, 04-production/jobs) loads all of them, or
    only one with `part="admin"`. Like `kubectl apply -k`, objects marked local-config are left out."""
    folder = lesson_dir(lesson)
    if part is not None:
        parts = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if part not in parts:
            raise ManifestError(
                Finding(
                    folder.name, "part", f"no part {part!r}; parts: {parts or 'none'}", "option"
                )
            )
        folder = folder / part
    objects: list[Manifest] = []
    for path in sorted(folder.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        parsed = parse_yaml(path.read_text(), source=str(path.relative_to(repo_root())))
        objects.extend(o for o in parsed if not is_local_config(o))
    return sort_for_creation(objects)


# --------------------------------------------------------------------------------------------------
# Navigating the objects
# --------------------------------------------------------------------------------------------------


def workload(objects: list[Manifest]) -> Manifest:
    """The one training workload (Job, JobSet, PyTorchJob or TrainJob) in a manifest set."""
    found = [o for o in objects if o.get("kind") in C.WORKLOAD_KINDS]
    if len(found) != 1:
        kinds = ", ".join(object_id(o) for o in objects) or "nothing"
        raise ManifestError(
            Finding(
                "manifests",
                "kind",
                f"expected exactly one workload ({'/'.join(C.WORKLOAD_KINDS)}), found: {kinds}",
                "option",
            )
        )
    return found[0]


def pod_spec(job: Manifest) -> Manifest:
    """The pod spec of a batch/v1 Job."""
    if job.get("kind") != "Job":
        raise OptionError(
            "kind", f"{object_id(job)}: this option applies to a batch/v1 Job", object_id(job)
        )
    return job.setdefault("spec", {}).setdefault("template", {}).setdefault("spec", {})


def pod_templates(obj: Manifest) -> list[Manifest]:
    """Every pod spec of a workload: Job (one), JobSet (one per replicated Job), PyTorchJob (one per
    replica type). A TrainJob has none of its own (its runtime holds them): []."""
    kind, spec = obj.get("kind"), obj.setdefault("spec", {})
    if kind == "Job":
        return [pod_spec(obj)]
    if kind == "JobSet":
        return [
            r["template"]["spec"]["template"].setdefault("spec", {})
            for r in spec.get("replicatedJobs") or []
        ]
    if kind == "PyTorchJob":
        return [
            r["template"].setdefault("spec", {})
            for r in (spec.get("pytorchReplicaSpecs") or {}).values()
        ]
    return []


def trainers(objects: list[Manifest]) -> list[Manifest]:
    """The trainer container of every pod template of the workload; for a TrainJob its `trainer`
    block (image, command, args, env and resources per node live there)."""
    obj = workload(objects)
    if obj.get("kind") == "TrainJob":
        return [obj.setdefault("spec", {}).setdefault("trainer", {})]
    return [trainer_container(spec) for spec in pod_templates(obj)]


def _resources_of(container: Manifest) -> Manifest:
    # A TrainJob's trainer block calls it resourcesPerNode; a container calls it resources.
    key = (
        "resourcesPerNode"
        if "numNodes" in container or "resourcesPerNode" in container
        else "resources"
    )
    return container.setdefault(key, {})


def _set_env(container: Manifest, key: str, value: str) -> None:
    env = container.setdefault("env", [])
    existing = next((e for e in env if e.get("name") == key), None)
    if existing is None:
        env.append({"name": key, "value": value})
    else:
        existing.clear()
        existing.update({"name": key, "value": value})


def trainer_container(spec: Manifest) -> Manifest:
    """The container named "trainer", else the first container."""
    containers = spec.get("containers") or []
    if not containers:
        raise ManifestError(
            Finding("pod", "spec.template.spec.containers", "the pod has no containers", "option")
        )
    return next((c for c in containers if c.get("name") == "trainer"), containers[0])


def all_containers(spec: Manifest) -> list[Manifest]:
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


# --------------------------------------------------------------------------------------------------
# Typed options
# --------------------------------------------------------------------------------------------------


class Option:
    """A typed change to a manifest set. `field` names it in errors; apply() patches a copy."""

    field: str = "option"

    def check(self) -> None:
        """Raise OptionError naming the field when the value itself is bad."""

    def apply(self, objects: list[Manifest]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise OptionError(field, message)


@dataclass(frozen=True)
class Name(Option):
    """The workload's metadata.name (a DNS-1123 label: it becomes a pod label value)."""

    value: str
    field = "name"

    def check(self) -> None:
        _require(
            isinstance(self.value, str)
            and len(self.value) <= 63
            and bool(_DNS_LABEL.match(self.value)),
            "name",
            f"{self.value!r} is not a valid job name: lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters",
        )

    def apply(self, objects: list[Manifest]) -> None:
        target = workload(objects)
        old = target["metadata"]["name"]
        target["metadata"]["name"] = self.value
        # The job's own NetworkPolicy (<name>-peers) selects its pods by the controller's
        # job-name label: it follows the new name.
        for obj in objects:
            if obj.get("kind") == "NetworkPolicy":
                _rename_job_selectors(obj, old, self.value)
                if obj["metadata"].get("name") == f"{old}-peers":
                    obj["metadata"]["name"] = f"{self.value}-peers"


def _rename_job_selectors(node: Any, old: str, new: str) -> None:
    if isinstance(node, dict):
        labels = node.get("matchLabels")
        if isinstance(labels, dict):
            for key in C.JOB_NAME_LABELS:
                if labels.get(key) == old:
                    labels[key] = new
        for value in node.values():
            _rename_job_selectors(value, old, new)
    elif isinstance(node, list):
        for value in node:
            _rename_job_selectors(value, old, new)


@dataclass(frozen=True)
class Namespace(Option):
    """metadata.namespace of every namespaced object ("": resolved by kubecourse.context:
    $KUBECOURSE_NAMESPACE, else the kubeconfig context's namespace, else the course namespace)."""

    value: str
    field = "namespace"

    @property
    def resolved(self) -> str:
        from .context import resolve_namespace

        return resolve_namespace(self.value) if self.value == "" else self.value

    def check(self) -> None:
        value = self.resolved if isinstance(self.value, str) else self.value
        _require(
            isinstance(value, str) and len(value) <= 63 and bool(_DNS_LABEL.match(value)),
            "namespace",
            f"{value!r} is not a valid namespace: a DNS-1123 label (lower-case letters, digits, '-'; at most 63 characters)",
        )

    def apply(self, objects: list[Manifest]) -> None:
        for obj in objects:
            if C.RESOURCES.get(obj.get("kind", ""), ("", True))[1]:
                obj.setdefault("metadata", {})["namespace"] = self.resolved


@dataclass(frozen=True)
class Image(Option):
    """The container image of the trainer (and of init containers that used the same image)."""

    value: str
    field = "image"

    def check(self) -> None:
        _require(
            isinstance(self.value, str) and bool(self.value.strip()),
            "image",
            "the image must be a non-empty string",
        )
        last = self.value.rsplit("/", 1)[-1]
        pinned = "@sha256:" in self.value or (":" in last and not last.endswith(":latest"))
        _require(
            pinned,
            "image",
            f"{self.value!r} is not pinned: give an explicit version tag or digest, never ':latest'",
        )
        digest = self.value.partition("@sha256:")[2]
        _require(
            "@sha256:" not in self.value or bool(re.fullmatch(r"[0-9a-f]{64}", digest)),
            "image",
            f"{self.value!r}: a digest is @sha256: and 64 hex digits (what `make image` records)",
        )

    def apply(self, objects: list[Manifest]) -> None:
        obj = workload(objects)
        if obj.get("kind") == "TrainJob":
            trainers(objects)[0]["image"] = self.value
            return
        for spec in pod_templates(obj):
            old = trainer_container(spec).get("image")
            for container in all_containers(spec):
                if container is trainer_container(spec) or container.get("image") == old:
                    container["image"] = self.value


@dataclass(frozen=True)
class Command(Option):
    """Replace the trainer container's command (the image's ENTRYPOINT)."""

    value: tuple[str, ...]
    field = "command"

    def check(self) -> None:
        _require(
            len(self.value) > 0 and all(isinstance(v, str) for v in self.value),
            "command",
            "the command must be a non-empty list of strings",
        )

    def apply(self, objects: list[Manifest]) -> None:
        for trainer in trainers(objects):
            trainer["command"] = list(self.value)


@dataclass(frozen=True)
class Args(Option):
    """Replace the trainer container's args."""

    value: tuple[str, ...]
    field = "args"

    def check(self) -> None:
        _require(
            all(isinstance(v, str) for v in self.value), "args", "args must be a list of strings"
        )

    def apply(self, objects: list[Manifest]) -> None:
        for trainer in trainers(objects):
            trainer["args"] = list(self.value)


@dataclass(frozen=True)
class ExtraArgs(Option):
    """Append to the trainer's args (later flags win in the labs, so this overrides)."""

    value: tuple[str, ...]
    field = "extra_args"

    def check(self) -> None:
        _require(
            all(isinstance(v, str) for v in self.value),
            "extra_args",
            "extra_args must be a list of strings",
        )

    def apply(self, objects: list[Manifest]) -> None:
        for container in trainers(objects):
            container["args"] = list(container.get("args") or []) + list(self.value)


# Flags that fix how long a lab trains; the labs' --smoke preset sets them, but an explicit flag in
# a manifest wins over a preset, so `smoke=True` removes them.
SMOKE_OVERRIDDEN_FLAGS = ("--epochs", "--steps", "--checkpoint-every", "--lr")


@dataclass(frozen=True)
class Smoke(Option):
    """smoke=True: the lab's --smoke preset really applies (the manifest's run-length flags go)."""

    value: bool
    field = "smoke"

    def check(self) -> None:
        _require(isinstance(self.value, bool), "smoke", "smoke must be true or false")

    def apply(self, objects: list[Manifest]) -> None:
        if not self.value:
            return
        for container in trainers(objects):
            args, kept, skip = list(container.get("args") or []), [], False
            for arg in args:
                if skip:
                    skip = False
                elif arg.split("=")[0] in SMOKE_OVERRIDDEN_FLAGS:
                    skip = "=" not in arg  # `--epochs 30`: drop the value too
                else:
                    kept.append(arg)
            container["args"] = kept + ([] if "--smoke" in kept else ["--smoke"])


@dataclass(frozen=True)
class Env(Option):
    """Set environment variables in every container (init containers too, so $(VAR) args agree)."""

    value: tuple[tuple[str, str], ...]
    field = "env"

    def check(self) -> None:
        for key, val in self.value:
            _require(
                isinstance(key, str) and bool(_ENV_NAME.match(key)),
                f"env.{key}",
                f"{key!r} is not a valid environment variable name",
            )
            _require(
                isinstance(val, str),
                f"env.{key}",
                f"the value must be a string, got {type(val).__name__}",
            )

    def apply(self, objects: list[Manifest]) -> None:
        obj = workload(objects)
        targets = (
            trainers(objects)
            if obj.get("kind") == "TrainJob"
            else [c for spec in pod_templates(obj) for c in all_containers(spec)]
        )
        for container in targets:
            for key, val in self.value:
                _set_env(container, key, val)


def _positive_int(value: Any, field: str, minimum: int = 1) -> None:
    _require(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        field,
        f"must be an integer >= {minimum}, got {value!r}",
    )


@dataclass(frozen=True)
class Nodes(Option):
    """How many pods ("nodes") run the job: Job completions (Indexed, rank = index), JobSet Job
    completions, PyTorchJob 1 Master + N-1 Workers, TrainJob numNodes; NNODES env follows."""

    value: int
    field = "nodes"

    def check(self) -> None:
        _positive_int(self.value, "nodes")

    def apply(self, objects: list[Manifest]) -> None:
        obj = workload(objects)
        kind, spec = obj.get("kind"), obj.setdefault("spec", {})
        if kind == "TrainJob":
            spec.setdefault("trainer", {})["numNodes"] = self.value
            return
        if kind == "PyTorchJob":
            replicas = spec.get("pytorchReplicaSpecs") or {}
            if "Worker" not in replicas and self.value > 1:
                raise OptionError(
                    "nodes", "the PyTorchJob has no Worker replica spec to scale", object_id(obj)
                )
            if "Worker" in replicas:
                replicas["Worker"]["replicas"] = self.value - 1  # the Master is node 0
            return
        jobs = (
            [spec]
            if kind == "Job"
            else [r["template"]["spec"] for r in spec.get("replicatedJobs") or []]
        )
        if kind == "Job":
            pod_spec(obj)
        for job_spec in jobs[:1]:  # the JobSet's first replicated Job holds the workers
            job_spec["completions"] = self.value
            job_spec["parallelism"] = self.value
            if self.value > 1:
                job_spec["completionMode"] = "Indexed"
        for trainer in trainers(objects):
            if any(e.get("name") == "NNODES" for e in trainer.get("env") or []):
                _set_env(trainer, "NNODES", str(self.value))


@dataclass(frozen=True)
class ProcsPerNode(Option):
    """Processes per pod (torchrun --nproc-per-node), read from the NPROC_PER_NODE env variable."""

    value: int
    field = "procs_per_node"

    def check(self) -> None:
        _positive_int(self.value, "procs_per_node")

    def apply(self, objects: list[Manifest]) -> None:
        obj = workload(objects)
        if obj.get("kind") == "TrainJob":
            trainers(objects)[0]["numProcPerNode"] = self.value
            return
        if obj.get("kind") == "PyTorchJob":
            obj["spec"]["nprocPerNode"] = str(self.value)  # the operator's field (a string)
        containers = trainers(objects)
        if obj.get("kind") != "PyTorchJob" and not all(
            any(e.get("name") == "NPROC_PER_NODE" for e in c.get("env") or []) for c in containers
        ):
            raise OptionError(
                "procs_per_node",
                "does not apply: the trainer container does not launch with torchrun "
                "(it has no NPROC_PER_NODE variable); this lesson runs one process per pod",
                object_id(obj),
            )
        for container in containers:
            if any(e.get("name") == "NPROC_PER_NODE" for e in container.get("env") or []):
                _set_env(container, "NPROC_PER_NODE", str(self.value))


def _all_resources(objects: list[Manifest]) -> list[Manifest]:
    return [_resources_of(trainer) for trainer in trainers(objects)]


@dataclass(frozen=True)
class Gpus(Option):
    """Whole NVIDIA GPUs per pod (requests == limits, as the device plugin requires). 0 removes them."""

    value: int
    field = "gpus"

    def check(self) -> None:
        _positive_int(self.value, "gpus", minimum=0)

    def apply(self, objects: list[Manifest]) -> None:
        for resources in _all_resources(objects):
            for section in ("requests", "limits"):
                if self.value == 0:
                    (resources.get(section) or {}).pop(C.GPU_RESOURCE, None)
                else:
                    resources.setdefault(section, {})[C.GPU_RESOURCE] = self.value


@dataclass(frozen=True)
class Cpu(Option):
    """CPU per pod as a Kubernetes quantity ("4", "500m"); sets requests and limits."""

    value: str
    field = "cpu"

    def check(self) -> None:
        _require(
            isinstance(self.value, str) and bool(_QUANTITY.match(self.value)),
            "cpu",
            f"{self.value!r} is not a Kubernetes quantity such as '4' or '500m'",
        )

    def apply(self, objects: list[Manifest]) -> None:
        for resources in _all_resources(objects):
            resources.setdefault("requests", {})["cpu"] = self.value
            resources.setdefault("limits", {})["cpu"] = self.value


@dataclass(frozen=True)
class Memory(Option):
    """Memory per pod as a Kubernetes quantity ("16Gi"); sets requests and limits (OOMKilled above it)."""

    value: str
    field = "memory"

    def check(self) -> None:
        _require(
            isinstance(self.value, str) and bool(_QUANTITY.match(self.value)),
            "memory",
            f"{self.value!r} is not a Kubernetes quantity such as '16Gi'",
        )

    def apply(self, objects: list[Manifest]) -> None:
        for resources in _all_resources(objects):
            resources.setdefault("requests", {})["memory"] = self.value
            resources.setdefault("limits", {})["memory"] = self.value


@dataclass(frozen=True)
class Volumes(Option):
    """Point pod volumes at other PersistentVolumeClaims: {volume name: claim name}."""

    value: tuple[tuple[str, str], ...]
    field = "volumes"

    def check(self) -> None:
        for volume, claim in self.value:
            _require(
                isinstance(claim, str) and bool(_DNS_LABEL.match(claim)),
                f"volumes.{volume}",
                f"{claim!r} is not a valid claim name",
            )

    def apply(self, objects: list[Manifest]) -> None:
        volumes = {v.get("name"): v for v in pod_spec(workload(objects)).get("volumes") or []}
        for volume, claim in self.value:
            target = volumes.get(volume)
            if target is None or "persistentVolumeClaim" not in target:
                pvcs = sorted(n for n, v in volumes.items() if "persistentVolumeClaim" in v)
                raise OptionError(
                    f"volumes.{volume}",
                    f"the pod has no PVC volume named {volume!r}; PVC volumes: {pvcs}",
                )
            target["persistentVolumeClaim"]["claimName"] = claim


@dataclass(frozen=True)
class Queue(Option):
    """Submit through a Kueue LocalQueue: sets the queue label and creates the Job suspended."""

    value: str
    field = "queue"

    def check(self) -> None:
        _require(
            isinstance(self.value, str) and bool(_DNS_LABEL.match(self.value)),
            "queue",
            f"{self.value!r} is not a valid LocalQueue name",
        )

    def apply(self, objects: list[Manifest]) -> None:
        job = workload(objects)
        job["metadata"].setdefault("labels", {})[C.KUEUE_QUEUE_LABEL] = self.value
        # Kueue unsuspends the Job once the ClusterQueue has quota for it.
        job.setdefault("spec", {})["suspend"] = True


@dataclass(frozen=True)
class Priority(Option):
    """The pods' PriorityClass (preemption order on a shared cluster)."""

    value: str
    field = "priority"

    def check(self) -> None:
        _require(
            isinstance(self.value, str) and bool(_DNS_LABEL.match(self.value)),
            "priority",
            f"{self.value!r} is not a valid PriorityClass name",
        )

    def apply(self, objects: list[Manifest]) -> None:
        pod_spec(workload(objects))["priorityClassName"] = self.value


@dataclass(frozen=True)
class Deadline(Option):
    """activeDeadlineSeconds: the Job fails with DeadlineExceeded after this many seconds."""

    value: int
    field = "deadline_s"

    def check(self) -> None:
        _positive_int(self.value, "deadline_s")

    def apply(self, objects: list[Manifest]) -> None:
        job = workload(objects)
        pod_spec(job)
        job["spec"]["activeDeadlineSeconds"] = self.value


@dataclass(frozen=True)
class BackoffLimit(Option):
    """How many failed pods the Job retries before it fails (each retry resumes from a checkpoint)."""

    value: int
    field = "backoff_limit"

    def check(self) -> None:
        _positive_int(self.value, "backoff_limit", minimum=0)

    def apply(self, objects: list[Manifest]) -> None:
        job = workload(objects)
        pod_spec(job)
        job["spec"]["backoffLimit"] = self.value


# Working where the Hugging Face hub, PyPI or Docker Hub are out of reach (e.g. from mainland China).
MIRROR_KEYS = {
    "hf_endpoint": "HF_ENDPOINT",
    "pip_index_url": "PIP_INDEX_URL",
    "registry_prefix": "",
}


def with_registry_prefix(image: str, prefix: str) -> str:
    """`pytorch/pytorch:2.5` -> `<prefix>/docker.io/pytorch/pytorch:2.5` (the full reference under a
    mirror that proxies every registry by path, e.g. `m.daocloud.io`); tag and digest unchanged."""
    prefix = prefix.rstrip("/")
    if not prefix or image.startswith(prefix + "/"):
        return image
    first, _, rest = image.partition("/")
    if not rest:  # "busybox:1.36": an official Docker Hub image
        image = f"docker.io/library/{image}"
    elif not ("." in first or ":" in first or first == "localhost"):  # "user/repo": Docker Hub
        image = f"docker.io/{image}"
    return f"{prefix}/{image}"


@dataclass(frozen=True)
class Mirrors(Option):
    """Mirrors: HF_ENDPOINT and PIP_INDEX_URL in every container, a registry prefix on every image."""

    value: tuple[tuple[str, str], ...]
    field = "mirrors"

    def check(self) -> None:
        for key, val in self.value:
            _require(
                key in MIRROR_KEYS,
                f"mirrors.{key}",
                f"unknown mirror {key!r}; known: {', '.join(MIRROR_KEYS)}",
            )
            _require(isinstance(val, str), f"mirrors.{key}", "the value must be a string")
            if key == "registry_prefix":
                _require(
                    "://" not in val and " " not in val,
                    f"mirrors.{key}",
                    f"{val!r} must be a registry host (and path), like 'm.daocloud.io', no scheme",
                )
            elif val:
                _require(
                    bool(re.match(r"^https?://[^\s/]+", val)),
                    f"mirrors.{key}",
                    f"{val!r} must be an http(s) URL, like 'https://hf-mirror.com'",
                )

    def apply(self, objects: list[Manifest]) -> None:
        values = dict(self.value)
        env = tuple((MIRROR_KEYS[k], v) for k, v in values.items() if MIRROR_KEYS[k] and v)
        if env:
            Env(env).apply(objects)
        prefix = values.get("registry_prefix", "")
        if prefix:
            obj = workload(objects)
            if obj.get("kind") == "TrainJob":
                for trainer in trainers(objects):
                    if trainer.get("image"):
                        trainer["image"] = with_registry_prefix(trainer["image"], prefix)
            for spec in pod_templates(obj):
                for container in all_containers(spec):
                    if container.get("image"):
                        container["image"] = with_registry_prefix(container["image"], prefix)


_LIST_OPTIONS = {"command": Command, "args": Args, "extra_args": ExtraArgs}
_MAP_OPTIONS = {"env": Env, "volumes": Volumes, "mirrors": Mirrors}
_SCALAR_OPTIONS = {
    "name": Name,
    "namespace": Namespace,
    "image": Image,
    "nodes": Nodes,
    "procs_per_node": ProcsPerNode,
    "gpus": Gpus,
    "cpu": Cpu,
    "memory": Memory,
    "queue": Queue,
    "priority": Priority,
    "deadline_s": Deadline,
    "backoff_limit": BackoffLimit,
    "smoke": Smoke,
}
OPTION_NAMES = sorted([*_LIST_OPTIONS, *_MAP_OPTIONS, *_SCALAR_OPTIONS])


def options_from_dict(values: dict[str, Any]) -> list[Option]:
    """Typed options from plain keys (handy for papermill parameters); unknown keys are errors."""
    options: list[Option] = []
    for key, value in values.items():
        if value is None:
            continue
        if key in _LIST_OPTIONS:
            if isinstance(value, str) or not isinstance(value, (list, tuple)):
                raise OptionError(key, f"must be a list of strings, got {type(value).__name__}")
            options.append(_LIST_OPTIONS[key](tuple(value)))
        elif key in _MAP_OPTIONS:
            if not isinstance(value, dict):
                raise OptionError(key, f"must be a mapping, got {type(value).__name__}")
            options.append(_MAP_OPTIONS[key](tuple(value.items())))
        elif key in _SCALAR_OPTIONS:
            options.append(_SCALAR_OPTIONS[key](value))
        else:
            close = difflib.get_close_matches(key, OPTION_NAMES, n=1)
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else f"; known options: {', '.join(OPTION_NAMES)}"
            )
            raise OptionError(key, f"unknown option{hint}")
    return options


def apply_options(
    objects: list[Manifest], options: Iterable[Option] = (), **values: Any
) -> list[Manifest]:
    """A deep copy of `objects` with every option applied (checked first, so nothing half-applies)."""
    all_options = list(options) + options_from_dict(values)
    errors = []
    for option in all_options:
        if not isinstance(option, Option):
            errors.append(
                OptionError(
                    "options", f"expected an Option (Name, Image, Gpus, ...), got {option!r}"
                )
            )
            continue
        try:
            option.check()
        except OptionError as error:
            errors.append(error)
    if errors:
        raise errors[0] if len(errors) == 1 else OptionError.combine(errors)
    result = copy.deepcopy(objects)
    for option in all_options:
        option.apply(result)
    return result


def render(lesson: str | int, options: Iterable[Option] = (), **values: Any) -> list[Manifest]:
    """Load a manifest set and apply options: `render("01", name="my-run", gpus=0)`.
    Without a queue option the job goes to the configured LocalQueue, if any
    ($KUBECOURSE_QUEUE or the workshop kubeconfig's; see kubecourse.context)."""
    from .context import resolve_queue

    options = list(options)
    objects = load_lesson(lesson)
    given = "queue" in values or any(isinstance(o, Queue) for o in options)
    single = sum(o.get("kind") in C.WORKLOAD_KINDS for o in objects) == 1
    if not given and single and resolve_queue():
        values["queue"] = resolve_queue()
    return apply_options(objects, options, **values)


def option_fields() -> dict[str, str]:
    """Each option key with its one-line description (for the notebooks' option table)."""
    table = {**_LIST_OPTIONS, **_MAP_OPTIONS, **_SCALAR_OPTIONS}
    return {key: (table[key].__doc__ or "").strip().splitlines()[0] for key in OPTION_NAMES}


__all__ = [
    "Manifest",
    "Option",
    "Name",
    "Namespace",
    "Image",
    "Command",
    "Args",
    "ExtraArgs",
    "Env",
    "Nodes",
    "ProcsPerNode",
    "Gpus",
    "Cpu",
    "Memory",
    "Volumes",
    "Queue",
    "Priority",
    "Deadline",
    "BackoffLimit",
    "Mirrors",
    "with_registry_prefix",
    "apply_options",
    "load_lesson",
    "options_from_dict",
    "parse_yaml",
    "render",
    "repo_root",
    "workload",
]
