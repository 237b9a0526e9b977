"""One multi-node training spec, rendered as four Kubernetes kinds (lesson 02, notebook 04).

`manifests/02-multinode/` holds the same training as plain YAML in four shapes: an Indexed Job +
headless Service (built-in), a JobSet, a Kubeflow PyTorchJob (v1) and a Kubeflow TrainJob (Trainer
v2) with its TrainingRuntime. `MultiNodeSpec` is what they have in common (nodes, processes per
node, GPUs, image, name, args, env); `render_variant(kind, spec)` loads that kind's files and
applies the spec as typed options, each of which knows where its value lives in each kind
(`Nodes`: Job completions / JobSet completions / PyTorchJob Worker replicas + 1 / TrainJob numNodes).
No templating: the YAML files are complete, and `kubectl apply -f` works on each as is.

    from kubecourse.multinode import MultiNodeSpec, render_all, side_by_side
    rendered = render_all(MultiNodeSpec(nodes=2, procs_per_node=8, gpus=8))
    side_by_side(rendered)          # four columns in a notebook
    variant_diff(rendered, "Job", "JobSet")
"""

from __future__ import annotations

import difflib
import html
import re
from dataclasses import dataclass, field

from . import manifests as M
from .display import _View, columns_view, to_yaml
from .errors import OptionError
from .manifests import Manifest

LESSON = "02"
KINDS = ("Job", "JobSet", "PyTorchJob", "TrainJob")
# Which files of manifests/02-multinode make up each variant (the PVC is shared).
VARIANT_FILES: dict[str, tuple[str, ...]] = {
    "Job": ("pvc.yaml", "service.yaml", "indexed-job.yaml"),
    "JobSet": ("pvc.yaml", "jobset.yaml"),
    "PyTorchJob": ("pvc.yaml", "pytorchjob.yaml"),
    "TrainJob": ("pvc.yaml", "training-runtime.yaml", "trainjob.yaml"),
}
# Who sets the node rank and the master address in each kind (for the comparison table).
WHO_DOES_WHAT: dict[str, dict[str, str]] = {
    "Job": {
        "controller": "built-in Job controller",
        "node rank": "JOB_COMPLETION_INDEX (Indexed Job)",
        "master address": "$(JOB_NAME)-0.<headless Service> (you write the Service)",
        "nodes": "spec.completions = spec.parallelism",
        "procs per node": "NPROC_PER_NODE env -> launch.sh -> torchrun",
    },
    "JobSet": {
        "controller": "JobSet (kubernetes-sigs)",
        "node rank": "JOB_COMPLETION_INDEX inside the replicated Job",
        "master address": "<jobset>-<rjob>-0-0.<jobset> (JobSet makes the Service)",
        "nodes": "replicatedJobs[0] completions = parallelism",
        "procs per node": "NPROC_PER_NODE env -> launch.sh -> torchrun",
    },
    "PyTorchJob": {
        "controller": "Kubeflow Training Operator v1",
        "node rank": "RANK (the operator; counts pods)",
        "master address": "MASTER_ADDR (the operator; Master pod's Service)",
        "nodes": "1 Master + Worker.replicas",
        "procs per node": "spec.nprocPerNode",
    },
    "TrainJob": {
        "controller": "Kubeflow Trainer v2 (renders a JobSet)",
        "node rank": "PET_NODE_RANK (injected by the torch runtime)",
        "master address": "PET_MASTER_ADDR (injected)",
        "nodes": "spec.trainer.numNodes",
        "procs per node": "spec.trainer.numProcPerNode",
    },
}


@dataclass(frozen=True)
class MultiNodeSpec:
    """What every rendering shares. None keeps the value the YAML file has."""

    nodes: int = 2
    procs_per_node: int = 1
    gpus: int | None = None  # whole GPUs per pod (requests == limits); 0 removes them
    image: str | None = None
    name: str | None = None  # the workload's name (each kind has its own default)
    namespace: str | None = None
    args: tuple[str, ...] | None = None  # the trainer's args (launch.sh flags, "--", the lab's)
    env: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    cpu: str | None = None
    memory: str | None = None

    def options(self) -> list[M.Option]:
        """The typed options this spec stands for (each checks its value before anything applies)."""
        opts: list[M.Option] = [M.Nodes(self.nodes), M.ProcsPerNode(self.procs_per_node)]
        optional = [
            (self.gpus, M.Gpus),
            (self.image, M.Image),
            (self.name, M.Name),
            (self.namespace, M.Namespace),
            (self.cpu, M.Cpu),
            (self.memory, M.Memory),
        ]
        opts += [cls(value) for value, cls in optional if value is not None]
        if self.args is not None:
            opts.append(M.Args(tuple(self.args)))
        if self.env:
            opts.append(M.Env(tuple(self.env)))
        return opts


def load_variant(kind: str) -> list[Manifest]:
    """The plain objects of one rendering, creation-ordered."""
    if kind not in VARIANT_FILES:
        raise OptionError("kind", f"unknown multi-node kind {kind!r}; choose one of {KINDS}")
    folder = M.lesson_dir(LESSON)
    objects: list[Manifest] = []
    for file in VARIANT_FILES[kind]:
        path = folder / file
        objects += M.parse_yaml(path.read_text(), str(path.relative_to(M.repo_root())))
    return M.sort_for_creation(objects)


def render_variant(kind: str, spec: MultiNodeSpec | None = None) -> list[Manifest]:
    """One kind's objects with the spec applied (a deep copy; the files are untouched)."""
    return M.apply_options(load_variant(kind), (spec or MultiNodeSpec()).options())


def render_all(spec: MultiNodeSpec | None = None) -> dict[str, list[Manifest]]:
    """{kind: objects} for all four kinds, from the same spec."""
    return {kind: render_variant(kind, spec) for kind in KINDS}


def side_by_side(rendered: dict[str, list[Manifest]], only_workload: bool = True) -> _View:
    """The renderings in columns (HTML) / one after another (text)."""
    texts = {
        kind: to_yaml([M.workload(objs)] if only_workload else objs)
        for kind, objs in rendered.items()
    }
    return columns_view(texts)


# Where each kind keeps its (first) pod template: flattened paths start with "pod." instead.
_POD_PREFIX = re.compile(
    r"^(\w+:)?(spec\.template\.spec\.replicatedJobs\[[^]]+\]\.template\.spec\.template\.spec\."
    r"|spec\.replicatedJobs\[[^]]+\]\.template\.spec\.template\.spec\."
    r"|spec\.pytorchReplicaSpecs\.Master\.template\.spec\."
    r"|spec\.template\.spec\.)"
)


def flatten(obj: object, prefix: str = "") -> list[str]:
    """`path = value` lines of a manifest, pod-template paths shortened to `pod.`, so that two
    kinds line up in a diff (the same container field has the same path in every kind)."""
    if isinstance(obj, dict):
        return [line for k, v in obj.items() for line in flatten(v, f"{prefix}{k}.")]
    if isinstance(obj, list) and obj and all(isinstance(v, dict) and "name" in v for v in obj):
        return [line for v in obj for line in flatten(v, f"{prefix[:-1]}[{v['name']}].")]
    if isinstance(obj, list) and obj and any(isinstance(v, (dict, list)) for v in obj):
        return [line for i, v in enumerate(obj) for line in flatten(v, f"{prefix[:-1]}[{i}].")]
    path = prefix[:-1]
    if path.startswith("spec.pytorchReplicaSpecs.Worker."):
        return []  # the same pod template as the Master's; shown once
    path = _POD_PREFIX.sub("pod.", path, count=1)
    path = re.sub(r"^pod\.containers\[[^]]+\]", "pod.containers[trainer]", path)
    return [f"{path} = {obj!r}" if not isinstance(obj, str) else f"{path} = {obj}"]


def variant_diff(rendered: dict[str, list[Manifest]], before: str, after: str) -> _View:
    """What changes when you switch controllers: a diff of the two kinds' objects flattened to
    `path = value` lines (pod-template fields under `pod.` in every kind)."""

    def lines_of(kind: str) -> list[str]:
        main = M.workload(rendered[kind])
        objs = [o for o in rendered[kind] if o.get("kind") != "PersistentVolumeClaim"]
        return sorted(
            line
            for o in objs
            for line in flatten(o, "" if o is main else f"{o['kind']}:")
            if not line.endswith("].name = " + line.rpartition("[")[2].partition("]")[0])
        )

    lines = list(
        difflib.unified_diff(lines_of(before), lines_of(after), before, after, lineterm="", n=0)
    )
    text = "\n".join(lines) or "(no differences)"
    colours = {"+": "#e6ffec", "-": "#ffebe9", "@": "#ddf4ff"}
    rows = "".join(
        f"<div style='background:{colours.get(line[:1], 'transparent')}'>"
        f"{html.escape(line) or '&nbsp;'}</div>"
        for line in lines
    )
    return _View(text, f"<pre style='font-size:11px;line-height:1.2'>{rows or text}</pre>")


def comparison_table() -> _View:
    """Who sets what in each kind (rows: concern, columns: kind)."""
    concerns = list(WHO_DOES_WHAT["Job"])
    header = "| | " + " | ".join(KINDS) + " |\n|---|" + "---|" * len(KINDS)
    rows = [f"| {c} | " + " | ".join(WHO_DOES_WHAT[k][c] for k in KINDS) + " |" for c in concerns]
    text = "\n".join([header, *rows])
    cells = "".join(f"<th>{k}</th>" for k in KINDS)
    body = "".join(
        f"<tr><td><b>{c}</b></td>"
        + "".join(f"<td>{html.escape(WHO_DOES_WHAT[k][c])}</td>" for k in KINDS)
        + "</tr>"
        for c in concerns
    )
    return _View(text, f"<table><tr><th></th>{cells}</tr>{body}</table>")


__all__ = [
    "KINDS",
    "MultiNodeSpec",
    "comparison_table",
    "load_variant",
    "render_all",
    "render_variant",
    "side_by_side",
    "variant_diff",
]
