"""An in-process fake Kubernetes API server that speaks real HTTP.

The course's Kubernetes backend is tested through the official `kubernetes` client exactly as it
runs against a cluster: the client builds real requests, this server answers with the JSON (and
`Status` errors, chunked watch streams, `text/plain` logs) a real kube-apiserver would send. No
client method is patched, so a wrong query parameter or a mis-read response fails the test.

    with FakeApiServer() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        api.on_create("Job", lambda api, job: api.run_job(job, logs={0: ["step 1 loss 2.0"]}))
        ...  # the code under test loads `kubeconfig` and talks to api.url

What it keeps: a generic object store for any resource path (core, named groups, CRDs), watch
history (so a watch from a resourceVersion replays, and an expired one gets 410), pod logs, and a
tiny opt-in Job controller (`run_job`). What it leaves out is listed in `KNOWN_DIFFERENCES`.

Standard library plus PyYAML only; the server never imports `kubernetes`.
"""

from __future__ import annotations

import base64
import collections
import copy
import dataclasses
import json
import os
import random
import re
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml

from . import apirules

KNOWN_DIFFERENCES = """\
- Strategic merge patch is applied as a JSON merge patch (lists are replaced, not merged by key).
- Server-side apply (application/apply-patch+yaml) is a merge patch that creates when missing; no
  field managers or conflicts.
- Deletion is immediate: no graceful period for pods, finalizers other than the garbage collector's
  own only delay deletion until an update removes them. Garbage collection follows
  ownerReferences synchronously. batch/v1 Jobs default to propagationPolicy=Orphan, as the real
  API does (with the same Warning header).
- A watch filters each event on the object's new state; an object that stops matching a selector
  gets no synthetic DELETED. No BOOKMARK events are sent (sendInitialEvents is ignored).
- Validation covers names, labels, and the Job/Pod rules learners hit (tests/fakes/apirules.py:
  restartPolicy, podFailurePolicy, volumes and mounts, container/volume names, resources and
  quantities, downward-API fieldPaths, ports, Indexed name length, backoffLimit & co.); other
  fields of built-in kinds, and every field of a custom resource, are accepted as sent.
- An unparsable quantity fails decoding (400), as for real; a valid one is stored as sent (a real
  server answers with its canonical string: `nvidia.com/gpu: 1` comes back as "1"). fieldValidation=Strict rejects unknown
  fields (400) of built-in kinds only, checked against the OpenAPI schema data shipped with
  kubernetes-validate; CRD schemas are not checked. Without Strict, unknown fields are stored as
  sent (a real server drops them with a Warning header).
- A namespaced create needs its namespace (404 `namespaces "x" not found`, as the
  NamespaceLifecycle admission plugin answers; a dry-run namespace is not stored, so it does not
  exist for the objects inside it). default, kube-system, kube-public and kube-node-lease exist
  from the start; put_object (a test helper) does not check. Deleting a namespace removes its
  objects at once (no Terminating phase that lasts).
- Defaulting exists only for Pods (phase Pending), Jobs (selector, labels, parallelism,
  completions, backoffLimit, completionMode, suspend) and Namespaces; CRD status is dropped on
  create as if every CRD had a status subresource.
- Field selectors accept the common per-resource fields (metadata.*, pods status.phase and
  spec.nodeName, events involvedObject.*/reason/type/source, ...); others get 400 as for real.
- run_job runs every pod at once and never retries a failed pod (no backoffLimit accounting);
  tests/fakes/cluster.py adds a real Job controller, scheduler and kubelet (see its
  CLUSTER_DIFFERENCES).
- pods/eviction sets the DisruptionTarget condition and deletes the pod (PodDisruptionBudgets are
  not checked); a deleted pod's DELETED event carries deletionGracePeriodSeconds (the request's,
  else the pod's terminationGracePeriodSeconds) but the pod is gone at once, unless
  `graceful_pods` is set (FakeCluster: its kubelet ends a Terminating pod and then removes it).
- pods/exec, attach, portforward and binding are not served.
- Pod logs ignore timestamps, previous, sinceSeconds and limitBytes. The log of a pod without
  spec.nodeName is answered 204 No Content with no body (follow too), as a real server does; a
  scheduled pod that is still Pending gets 400 "is waiting to start".
"""

# --- Resource table ---------------------------------------------------------------------------


class Resource(NamedTuple):
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool


_RESOURCES = [
    Resource("", "v1", "namespaces", "Namespace", False),
    Resource("", "v1", "nodes", "Node", False),
    Resource("", "v1", "persistentvolumes", "PersistentVolume", False),
    Resource("", "v1", "pods", "Pod", True),
    Resource("", "v1", "services", "Service", True),
    Resource("", "v1", "endpoints", "Endpoints", True),
    Resource("", "v1", "configmaps", "ConfigMap", True),
    Resource("", "v1", "secrets", "Secret", True),
    Resource("", "v1", "events", "Event", True),
    Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", True),
    Resource("", "v1", "resourcequotas", "ResourceQuota", True),
    Resource("", "v1", "limitranges", "LimitRange", True),
    Resource("batch", "v1", "jobs", "Job", True),
    Resource("batch", "v1", "cronjobs", "CronJob", True),
    Resource("apps", "v1", "deployments", "Deployment", True),
    Resource("apps", "v1", "statefulsets", "StatefulSet", True),
    Resource("apps", "v1", "replicasets", "ReplicaSet", True),
    Resource("apps", "v1", "daemonsets", "DaemonSet", True),
    Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True),
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True),
    Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True),
    Resource("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False),
    Resource("storage.k8s.io", "v1", "storageclasses", "StorageClass", False),
    Resource("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    Resource(
        "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False
    ),
    Resource("jobset.x-k8s.io", "v1alpha2", "jobsets", "JobSet", True),
    Resource("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob", True),
    Resource("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob", True),
    Resource("trainer.kubeflow.org", "v1alpha1", "trainingruntimes", "TrainingRuntime", True),
    Resource(
        "trainer.kubeflow.org",
        "v1alpha1",
        "clustertrainingruntimes",
        "ClusterTrainingRuntime",
        False,
    ),
    Resource("kueue.x-k8s.io", "v1beta1", "workloads", "Workload", True),
    Resource("kueue.x-k8s.io", "v1beta1", "localqueues", "LocalQueue", True),
    Resource("kueue.x-k8s.io", "v1beta1", "clusterqueues", "ClusterQueue", False),
    Resource("kueue.x-k8s.io", "v1beta1", "resourceflavors", "ResourceFlavor", False),
    Resource("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor", True),
    Resource("monitoring.coreos.com", "v1", "podmonitors", "PodMonitor", True),
]
_BY_PLURAL = {(r.group, r.plural): r for r in _RESOURCES}
_BY_KIND = {(r.group, r.kind): r for r in _RESOURCES}
# Built-in groups answer DELETE with a Status and omit kind/apiVersion on list items; CRDs do not.
_BUILTIN_GROUPS = {r.group for r in _RESOURCES if "." not in r.group or r.group.endswith(".k8s.io")}
_BUILTIN_GROUPS -= {"jobset.x-k8s.io", "kueue.x-k8s.io"}

# Labels the Job controller puts on a Job's pod template and pods (batch/v1, Kubernetes >= 1.27).
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"

# Field selectors each resource supports (metadata.name/namespace work everywhere).
_FIELD_LABELS = {
    ("", "pods"): {
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    },
    ("", "events"): {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    },
    ("batch", "jobs"): {"status.successful"},
    ("", "secrets"): {"type"},
    ("", "namespaces"): {"status.phase"},
    ("", "nodes"): {"spec.unschedulable"},
}

_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what the apiserver uses for generateName
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def _resource(group: str, plural: str) -> Resource:
    """The table entry, or a namespaced guess for a CRD the table does not know."""
    if (group, plural) in _BY_PLURAL:
        return _BY_PLURAL[(group, plural)]
    kinds = {r.kind for r in _RESOURCES if r.plural == plural}
    if len(kinds) == 1:
        kind = kinds.pop()
    else:
        singular = plural[:-3] + "y" if plural.endswith("ies") else plural.removesuffix("s")
        kind = singular[:1].upper() + singular[1:]
    return Resource(group, "", plural, kind, True)


def _resource_for_kind(api_version: str, kind: str) -> Resource:
    group, _, version = api_version.rpartition("/")
    if (group, kind) in _BY_KIND:
        return _BY_KIND[(group, kind)]._replace(version=version)
    lower = kind.lower()
    plural = lower[:-1] + "ies" if lower.endswith("y") else lower + "s"
    return Resource(group, version, plural, kind, True)


def _default_group(plural: str, group: str) -> str:
    """Let helpers say `api.get("jobs", name)`: an unambiguous plural finds its group."""
    if group or ("", plural) in _BY_PLURAL:
        return group
    groups = {r.group for r in _RESOURCES if r.plural == plural}
    return groups.pop() if len(groups) == 1 else group


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _random_suffix(n: int = 5) -> str:
    return "".join(random.choice(_NAME_ALPHABET) for _ in range(n))


def _qualified(group: str, plural: str) -> str:
    return f"{plural}.{group}" if group else plural


# --- Errors: every failure is a metav1.Status, as the real apiserver sends ----------------------


class ApiError(Exception):
    """A failure answered with a Status object (`code` is also the HTTP status)."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details, self.headers = details, headers or {}

    def status(self) -> dict:
        return _status("Failure", self.code, self.reason, self.message, self.details)


def _status(state: str, code: int, reason: str = "", message: str = "", details=None) -> dict:
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": state}
    if message:
        out["message"] = message
    if reason:
        out["reason"] = reason
    if details:
        out["details"] = details
    out["code"] = code
    return out


def _details(group: str, kind: str, name: str | None = None, **extra) -> dict:
    details: dict[str, Any] = {}
    if name is not None:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = kind
    details.update(extra)
    return details


def _not_found(group: str, plural: str, name: str) -> ApiError:
    message = f'{_qualified(group, plural)} "{name}" not found'
    return ApiError(404, "NotFound", message, _details(group, plural, name))


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _conflict(group: str, plural: str, name: str) -> ApiError:
    message = (
        f'Operation cannot be fulfilled on {_qualified(group, plural)} "{name}": the object has '
        "been modified; please apply your changes to the latest version and try again"
    )
    return ApiError(409, "Conflict", message, _details(group, plural, name))


def _invalid(res: Resource, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """causes: (reason, field, message) as in metav1.StatusCause."""
    parts = [f"{f}: {m}" for _, f, m in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    kind = f"{res.kind}.{res.group}" if res.group else res.kind
    message = f'{kind} "{name}" is invalid: {joined}'
    details = _details(
        res.group,
        res.kind,
        name,
        causes=[{"reason": r, "message": m, "field": f} for r, f, m in causes],
    )
    return ApiError(422, "Invalid", message, details)


_FAULT_MESSAGES = {
    "InternalError": "Internal error occurred: injected by FakeApiServer.fail_next",
    "TooManyRequests": "Too many requests, please try again later.",
    "ServiceUnavailable": "The server is currently unable to handle the request",
    "Timeout": "The server was unable to return a response in the time allotted",
}


# --- Selectors ----------------------------------------------------------------------------------

_REQUIREMENT = re.compile(
    r"""^\s*(?:
        !\s*(?P<absent>[^\s!=,()]+)
      | (?P<setkey>[^\s!=,()]+)\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\)
      | (?P<key>[^\s!=,()]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s,()]*)
      | (?P<present>[^\s!=,()]+)
    )\s*$""",
    re.X,
)

Predicate = Callable[[dict], bool]


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside `in (a,b)` parentheses."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def parse_label_selector(selector: str | None) -> Predicate:
    """`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, comma-separated AND."""
    checks: list[Predicate] = []
    for part in _split_top_level(selector or ""):
        m = _REQUIREMENT.match(part)
        if not m:
            raise _bad_request(f"unable to parse requirement: {part!r}")
        if m["absent"]:
            checks.append(lambda labels, k=m["absent"]: k not in labels)
        elif m["present"]:
            checks.append(lambda labels, k=m["present"]: k in labels)
        elif m["setkey"]:
            values = {v.strip() for v in m["values"].split(",") if v.strip()}
            if m["setop"] == "in":
                checks.append(lambda labels, k=m["setkey"], vs=values: labels.get(k) in vs)
            else:
                checks.append(lambda labels, k=m["setkey"], vs=values: labels.get(k) not in vs)
        elif m["op"] == "!=":
            checks.append(lambda labels, k=m["key"], v=m["value"]: labels.get(k) != v)
        else:
            checks.append(lambda labels, k=m["key"], v=m["value"]: labels.get(k) == v)
    return lambda obj: all(c((obj.get("metadata") or {}).get("labels") or {}) for c in checks)


def _field_value(obj: dict, path: str) -> str:
    if path == "source":  # events: `source` means source.component
        path = "source.component"
    value: Any = obj
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_field_selector(selector: str | None, group: str, plural: str) -> Predicate:
    """`field=value`, `field==value`, `field!=value`, comma-separated AND."""
    supported = {"metadata.name", "metadata.namespace"} | _FIELD_LABELS.get((group, plural), set())
    checks: list[Predicate] = []
    for part in (selector or "").split(","):
        if not part.strip():
            continue
        m = re.match(r"^\s*([^\s!=]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise _bad_request(f"invalid selector: '{selector}'; can't understand '{part}'")
        path, op, value = m.groups()
        if path not in supported:
            raise _bad_request(f'field label not supported: "{path}"')
        if op == "!=":
            checks.append(lambda o, p=path, v=value: _field_value(o, p) != v)
        else:
            checks.append(lambda o, p=path, v=value: _field_value(o, p) == v)
    return lambda obj: all(c(obj) for c in checks)


# --- Patches ------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (`null` deletes a key; lists are replaced)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):  # strategic-merge directives such as $setElementOrder
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _bad_request(f"json patch path must start with '/': {path!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def json_patch(doc: Any, operations: list) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, test, copy, move."""
    doc = copy.deepcopy(doc)

    def parent(tokens):
        node = doc
        for t in tokens[:-1]:
            node = node[int(t)] if isinstance(node, list) else node[t]
        return node

    def get(tokens):
        node = doc
        for t in tokens:
            node = node[int(t)] if isinstance(node, list) else node[t]
        return node

    def remove(tokens):
        node = parent(tokens)
        return node.pop(int(tokens[-1]) if isinstance(node, list) else tokens[-1])

    def add(tokens, value):
        nonlocal doc
        if not tokens:
            doc = value
            return
        node = parent(tokens)
        if isinstance(node, list):
            node.insert(len(node) if tokens[-1] == "-" else int(tokens[-1]), value)
        else:
            node[tokens[-1]] = value

    for op in operations:
        if not isinstance(op, dict):
            raise _bad_request("json patch operations must be objects")
        kind, tokens = op.get("op"), _pointer(op.get("path", ""))
        try:
            if kind == "add":
                add(tokens, copy.deepcopy(op["value"]))
            elif kind == "remove":
                remove(tokens)
            elif kind == "replace":
                remove(tokens)
                add(tokens, copy.deepcopy(op["value"]))
            elif kind == "test":
                if get(tokens) != op["value"]:
                    raise ApiError(422, "Invalid", f"testing value {op['path']} failed")
            elif kind in ("copy", "move"):
                source = _pointer(op["from"])
                value = remove(source) if kind == "move" else copy.deepcopy(get(source))
                add(tokens, value)
            else:
                raise _bad_request(f"Unexpected kind: {kind}")
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise ApiError(
                422,
                "Invalid",
                f"the server rejected our request due to an error in our request: {e}",
            ) from e
    return doc


# --- Validation ---------------------------------------------------------------------------------

_SUBDOMAIN_HELP = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_HELP = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_LABEL_VALUE_HELP = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  "
    "or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


def _validate(res: Resource, obj: dict) -> None:
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    causes: list[tuple[str, str, str]] = []
    if not name:
        causes.append(
            (
                "FieldValueRequired",
                "metadata.name",
                "Required value: name or generateName is required",
            )
        )
    elif res.plural == "namespaces":
        if len(name) > 63 or not re.fullmatch(_DNS1123_LABEL, name):
            causes.append(
                ("FieldValueInvalid", "metadata.name", f'Invalid value: "{name}": {_LABEL_HELP}')
            )
    elif len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        causes.append(
            ("FieldValueInvalid", "metadata.name", f'Invalid value: "{name}": {_SUBDOMAIN_HELP}')
        )
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, label_name = key.rpartition("/")
        if (
            len(label_name) > 63
            or not _LABEL_NAME.fullmatch(label_name)
            or (prefix and not _DNS1123_SUBDOMAIN.fullmatch(prefix))
        ):
            causes.append(
                (
                    "FieldValueInvalid",
                    "metadata.labels",
                    f'Invalid value: "{key}": invalid label key',
                )
            )
        if not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
            causes.append(
                (
                    "FieldValueInvalid",
                    "metadata.labels",
                    f'Invalid value: "{value}": {_LABEL_VALUE_HELP}',
                )
            )
        elif len(value) > 63:
            causes.append(
                (
                    "FieldValueInvalid",
                    "metadata.labels",
                    f'Invalid value: "{value}": must be no more than 63 characters',
                )
            )
    spec = obj.get("spec") or {}
    if (res.group, res.plural) == ("", "pods"):
        causes += _pod_spec_causes(spec, "spec", job=False)
    if (res.group, res.plural) == ("batch", "jobs"):
        if len(name) > 63:  # the name becomes the job-name label value on every pod
            causes.append(
                (
                    "FieldValueInvalid",
                    "spec.template.labels",
                    f'Invalid value: "{name}": must be no more than 63 characters',
                )
            )
        if spec.get("completionMode") == "Indexed" and spec.get("completions") is None:
            causes.append(
                (
                    "FieldValueRequired",
                    "spec.completions",
                    "Required value: when completion mode is Indexed",
                )
            )
        template_spec = (spec.get("template") or {}).get("spec") or {}
        causes += _pod_spec_causes(template_spec, "spec.template.spec", job=True)
    if causes:
        raise _invalid(res, name, causes)


def _pod_spec_causes(spec: dict, at: str, job: bool) -> list[tuple[str, str, str]]:
    causes = []
    containers = spec.get("containers") or []
    if not containers:
        causes.append(("FieldValueRequired", f"{at}.containers", "Required value"))
    for i, c in enumerate(containers):
        for key in ("name", "image"):
            if not (c or {}).get(key):
                causes.append(
                    ("FieldValueRequired", f"{at}.containers[{i}].{key}", "Required value")
                )
    if job:
        policy = spec.get("restartPolicy")
        if policy is None:
            causes.append(
                (
                    "FieldValueRequired",
                    f"{at}.restartPolicy",
                    'Required value: valid values: "OnFailure", "Never"',
                )
            )
        elif policy not in ("OnFailure", "Never"):
            causes.append(
                (
                    "FieldValueNotSupported",
                    f"{at}.restartPolicy",
                    f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"',
                )
            )
    return causes


# --- Defaulting ---------------------------------------------------------------------------------


def _default_new(res: Resource, obj: dict, keep_status: bool) -> None:
    """What the apiserver fills in on create (status is reset unless a test helper sets it)."""
    meta = obj["metadata"]
    if not keep_status:
        obj.pop("status", None)
    _canonical_quantities(obj.get("spec"))
    if (res.group, res.plural) == ("", "pods"):
        obj.setdefault("status", {}).setdefault("phase", "Pending")
        obj.setdefault("spec", {}).setdefault("restartPolicy", "Always")
    elif (res.group, res.plural) == ("", "namespaces"):
        obj.setdefault("status", {}).setdefault("phase", "Active")
    elif (res.group, res.plural) == ("batch", "jobs"):
        spec = obj.setdefault("spec", {})
        if spec.get("parallelism") is None and spec.get("completions") is None:
            spec["completions"] = 1
        spec.setdefault("parallelism", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
        labels = {
            CONTROLLER_UID_LABEL: meta["uid"],
            JOB_NAME_LABEL: meta["name"],
            "controller-uid": meta["uid"],
            "job-name": meta["name"],
        }
        if not spec.get("manualSelector"):
            spec["selector"] = {"matchLabels": {CONTROLLER_UID_LABEL: meta["uid"]}}
        template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
        template_meta["labels"] = {**(template_meta.get("labels") or {}), **labels}
        obj.setdefault("status", {})


def _canonical_quantities(node: Any) -> None:
    """Resource quantities as the apiserver stores them: strings (`1` -> "1", `0.5` -> "500m"),
    in every `resources.requests/limits` of a spec (pods, templates of any workload)."""
    if isinstance(node, list):
        for item in node:
            _canonical_quantities(item)
        return
    if not isinstance(node, dict):
        return
    resources = node.get("resources")
    if isinstance(resources, dict):
        for section in ("requests", "limits"):
            values = resources.get(section)
            if isinstance(values, dict):
                for key, value in values.items():
                    if isinstance(value, bool) or not isinstance(value, int | float):
                        continue
                    values[key] = (
                        str(int(value)) if value == int(value) else f"{round(value * 1000)}m"
                    )
    for value in node.values():
        _canonical_quantities(value)


def _spec_part(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


# --- Public records ----------------------------------------------------------------------------


@dataclass
class Request:
    """One request as the server received it (the query keeps the last value of each key)."""

    method: str
    path: str
    query: dict[str, str]
    body: object | None
    content_type: str | None = None
    status: int | None = None  # the HTTP status answered (200 for a stream that started)


@dataclass
class _Fault:
    count: int
    status: int
    reason: str
    message: str
    method: str | None
    path_contains: str | None
    retry_after: int | None


@dataclass
class _Event:
    rv: int
    type: str
    group: str
    plural: str
    namespace: str
    obj: dict


@dataclass
class _WatchToken:
    dropped: bool = False
    abrupt: bool = True


@dataclass
class _Target:
    res: Resource
    version: str
    namespace: str | None  # "" for cluster-scoped, None for "all namespaces"
    name: str | None
    sub: str | None

    @property
    def group(self) -> str:
        return self.res.group

    @property
    def plural(self) -> str:
        return self.res.plural

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


class _Dropped(Exception):
    """A watch was ended by drop_watches(abrupt=True)."""


class _Stopped(Exception):
    """The server is stopping (or the object a controller works on is gone)."""


def _parse_path(path: str) -> _Target | None:
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace: str | None
    if (
        len(rest) >= 3
        and rest[0] == "namespaces"
        and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
    ):
        namespace, rest = rest[1], rest[2:]
        res = _resource(group, rest[0])
        if not res.namespaced:
            return None
    elif rest:
        res = _resource(group, rest[0])
        if res.namespaced and len(rest) > 1:
            return None
        namespace = None if res.namespaced else ""
    else:
        return None
    if len(rest) > 3:
        return None
    return _Target(
        res=res,
        version=version,
        namespace=namespace,
        name=rest[1] if len(rest) > 1 else None,
        sub=rest[2] if len(rest) > 2 else None,
    )


# --- The server ---------------------------------------------------------------------------------


class FakeApiServer:
    """A kube-apiserver stand-in on 127.0.0.1 for one test (see the module docstring)."""

    def __init__(self, require_token: str | None = None, history_limit: int = 1000):
        self.require_token = require_token
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._stop_event = threading.Event()
        self._store: dict[tuple[str, str], dict[tuple[str, str], dict]] = {}
        self._rv = 0
        self._history: collections.deque[_Event] = collections.deque()
        self._history_limit = history_limit
        self._min_rv = 0  # every event with rv > _min_rv is still in _history
        self._logs: dict[tuple[str, str, str], str] = {}
        # With a kubelet (FakeCluster), a pod deleted with a grace period stays, Terminating,
        # until the kubelet has stopped its containers and removes it (grace 0), as for real.
        self.graceful_pods = False
        self._requests: list[Request] = []
        self._faults: list[_Fault] = []
        self._watch_tokens: dict[int, _WatchToken] = {}
        self._watch_count = 0
        self._callbacks: dict[str, list[Callable[[FakeApiServer, dict], None]]] = {}
        self._listeners: list[Callable[[str, str, str, dict], None]] = []  # see subscribe()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._httpd: _HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self.errors: list[str] = []  # tracebacks: on_create callbacks and the fake's own bugs
        self.deletions: list[dict] = []  # every DELETE with its options, in order
        # Extra endpoints (tests/fakes/cluster_api.py): each hook(handler, method, path, query,
        # body) answers (code, json) to serve the request itself, or None to pass it on.
        self.routes: list[Callable[..., tuple[int, Any] | None]] = []
        for namespace in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.put_object(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
            )

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> FakeApiServer:
        if self._httpd is not None:
            raise RuntimeError("FakeApiServer already started")
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler, self)
        self._serve_thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="fake-apiserver",
            daemon=True,
        )
        self._serve_thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._stop_event.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd.close_connections()
        if self._serve_thread is not None:
            self._serve_thread.join(5)
        for thread in list(self._threads):
            thread.join(5)

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()
        if exc_type is None and self.errors:
            raise RuntimeError("FakeApiServer saw errors:\n" + "\n".join(self.errors))

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FakeApiServer not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(
        self, path: str | os.PathLike, namespace: str = "default", token: str = "fake-token"
    ) -> str:
        """Write a kubeconfig for this server; returns the path as a str (what
        `kubernetes.config.load_kube_config(config_file=...)` accepts)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake-user", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake-user", "namespace": namespace},
                }
            ],
            "current-context": "fake",
            "preferences": {},
        }
        with open(path, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
        return os.fspath(path)

    # -- test hooks -------------------------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    @property
    def watch_count(self) -> int:
        """How many watch requests were served (a reconnect counts again)."""
        with self._lock:
            return self._watch_count

    @property
    def resource_version(self) -> str:
        with self._lock:
            return str(self._rv)

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        reason: str = "InternalError",
        method: str | None = None,
        path_contains: str | None = None,
        retry_after: int | None = None,
        message: str | None = None,
    ) -> None:
        """The next `count` requests that match get this Status instead of an answer.

        `path_contains` is matched against the path and query (so "watch=true" picks watches);
        `retry_after` adds the Retry-After header and details.retryAfterSeconds.
        """
        with self._lock:
            self._faults.append(
                _Fault(
                    count,
                    status,
                    reason,
                    message or _FAULT_MESSAGES.get(reason, f"injected {reason}"),
                    method.upper() if method else None,
                    path_contains,
                    retry_after,
                )
            )

    def compact(self) -> None:
        """Forget the watch history, as etcd compaction does: older resourceVersions get 410."""
        with self._cond:
            self._history.clear()
            self._min_rv = self._rv
            self._cond.notify_all()

    def drop_watches(self, abrupt: bool = True) -> int:
        """End every open watch: abruptly (connection cut mid-stream) or cleanly (as the
        apiserver does when its own timeout fires). Returns how many were ended."""
        with self._cond:
            for token in self._watch_tokens.values():
                token.dropped, token.abrupt = True, abrupt
            self._cond.notify_all()
            return len(self._watch_tokens)

    def wait_for(self, predicate: Callable[[FakeApiServer], bool], timeout: float = 5.0) -> bool:
        """Block until predicate(api) is true; False on timeout. Re-checked on every change of
        the server's state, and every 50 ms for predicates that look elsewhere."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping:
                    return False
                self._cond.wait(min(remaining, 0.05))
            return True

    def subscribe(self, listener: Callable[[str, str, str, dict], None]) -> None:
        """listener(type, group, plural, obj) for every stored change, in order: the fake
        cluster's controllers, scheduler and kubelet (tests/fakes/cluster.py) watch through it.
        It is called with the server's lock held: hand the event to a queue, do nothing slow."""
        with self._lock:
            self._listeners.append(listener)

    def on_create(self, kind: str, callback: Callable[[FakeApiServer, dict], None]) -> None:
        """Run callback(api, obj) in a background thread after each object of `kind` is created."""
        with self._lock:
            self._callbacks.setdefault(kind, []).append(callback)

    # -- direct state helpers (thread-safe; they emit watch events like API writes) ---------------

    def get(
        self, plural: str, name: str, namespace: str = "default", group: str = ""
    ) -> dict | None:
        group = _default_group(plural, group)
        res = _resource(group, plural)
        with self._lock:
            obj = self._bucket(group, plural).get((namespace if res.namespaced else "", name))
            return copy.deepcopy(obj)

    def objects(self, plural: str, namespace: str | None = None, group: str = "") -> list[dict]:
        group = _default_group(plural, group)
        with self._lock:
            return [copy.deepcopy(o) for o in self._select(group, plural, namespace)]

    def put_object(self, obj: dict) -> dict:
        """Create or replace from a full object (status included, no validation)."""
        res = _resource_for_kind(obj["apiVersion"], obj["kind"])
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            meta.setdefault("namespace", "default")
        else:
            meta.pop("namespace", None)
        with self._lock:
            old = self._bucket(res.group, res.plural).get((meta.get("namespace", ""), meta["name"]))
            if old is None:
                return self._insert(res, obj, keep_status=True)
            for key in ("uid", "creationTimestamp", "generation"):
                if key in old["metadata"]:
                    meta.setdefault(key, old["metadata"][key])
            if _spec_part(obj) != _spec_part(old):
                meta["generation"] = old["metadata"].get("generation", 1) + 1
            return self._commit(res, obj, "MODIFIED")

    def patch_status(
        self, plural: str, name: str, status: dict, namespace: str = "default", group: str = ""
    ) -> dict:
        """Merge-patch `status` into the object's status (None deletes a key)."""
        group = _default_group(plural, group)
        res = _resource(group, plural)
        with self._lock:
            old = self._bucket(group, plural).get((namespace if res.namespaced else "", name))
            if old is None:
                raise KeyError(f"{_qualified(group, plural)} {namespace}/{name} not found")
            new = copy.deepcopy(old)
            new["status"] = merge_patch(old.get("status") or {}, status)
            if new == old:
                return copy.deepcopy(old)
            return self._commit(res, new, "MODIFIED")

    def append_log(
        self, pod_name: str, text: str, namespace: str = "default", container: str | None = None
    ) -> None:
        """Append to a pod's log (a newline is added when `text` lacks one)."""
        if not text.endswith("\n"):
            text += "\n"
        with self._cond:
            pod = self._bucket("", "pods").get((namespace, pod_name))
            if pod is None:
                raise KeyError(f"pod {namespace}/{pod_name} not found")
            key = (namespace, pod_name, container or _container_names(pod)[0])
            self._logs[key] = self._logs.get(key, "") + text
            self._cond.notify_all()

    def log_text(
        self, pod_name: str, namespace: str = "default", container: str | None = None
    ) -> str:
        with self._lock:
            pod = self._bucket("", "pods").get((namespace, pod_name)) or {}
            return self._logs.get((namespace, pod_name, container or _container_names(pod)[0]), "")

    def add_event(
        self,
        namespace: str,
        involved: dict,
        reason: str,
        message: str,
        type: str = "Normal",
        count: int = 1,
        component: str = "fake-apiserver",
    ) -> dict:
        """Record a core/v1 Event about `involved` (kind, name, and optionally uid, apiVersion)."""
        now = _now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{involved['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": namespace,
            },
            "involvedObject": {"namespace": namespace, **involved},
            "reason": reason,
            "message": message,
            "type": type,
            "count": count,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": "",
        }
        return self.put_object(event)

    # -- the Job controller -----------------------------------------------------------------------

    def run_job(
        self,
        job: dict | str,
        pods: int | None = None,
        outcome: str = "Succeeded",
        logs: dict[int, list[str]] | None = None,
        exit_code: int = 0,
        reason: str | None = None,
        step_delay: float = 0.01,
        container_reason: str | None = None,
        namespace: str = "default",
    ) -> dict | None:
        """Play the Job controller and kubelet for one Job, synchronously.

        Creates the pods (Pending → Running), writes `logs[index]` line by line with `step_delay`
        between lines, terminates every pod with `outcome`, and writes the Job status and events
        the real controller does. Waits while the Job is suspended (Kueue). `reason` is the
        Failed condition's reason (default BackoffLimitExceeded); `container_reason` the
        terminated container's (default Completed, OOMKilled for exit code 137, else Error).
        Returns the final Job, or None if the Job was deleted or the server stopped.
        """
        if outcome not in ("Succeeded", "Failed"):
            raise ValueError(f"outcome must be Succeeded or Failed, not {outcome!r}")
        if isinstance(job, str):
            job = self.get("jobs", job, namespace, group="batch") or {}
        meta = job.get("metadata") or {}
        name, ns = meta.get("name"), meta.get("namespace", namespace)
        try:
            return self._run_job(
                name, ns, pods, outcome, logs or {}, exit_code, reason, step_delay, container_reason
            )
        except (_Stopped, KeyError):
            return None

    def _run_job(
        self, name, ns, pods, outcome, logs, exit_code, reason, step_delay, container_reason
    ) -> dict:
        run = _ScriptedJob(self, name, ns, step_delay)
        job = run.current()
        run.uid = job["metadata"]["uid"]
        conditions = list((job.get("status") or {}).get("conditions") or [])
        if job["spec"].get("suspend"):
            job = self._wait_job_resumed(run, conditions)

        spec = job["spec"]
        count = pods or spec.get("completions") or spec.get("parallelism") or 1
        indexed = spec.get("completionMode") == "Indexed"
        run.status(
            {
                "startTime": _now(),
                "active": count,
                "ready": 0,
                "terminating": 0,
                "uncountedTerminatedPods": {},
                "conditions": conditions or None,
            }
        )
        pod_names = self._create_job_pods(run, job, count, indexed)
        run.sleep()

        started = _now()
        for pod_name in pod_names:
            self._kubelet_start(pod_name, ns, started)
        run.status({"ready": count})
        run.sleep()
        self._write_job_logs(run, pod_names, logs)

        succeeded = outcome == "Succeeded"
        code = exit_code if succeeded or exit_code else 1
        if container_reason is None:
            container_reason = "Completed" if succeeded else "OOMKilled" if code == 137 else "Error"
        for pod_name in pod_names:
            self._kubelet_finish(pod_name, ns, outcome, code, container_reason, started)
        run.current()
        return self._finish_job(run, conditions, count, indexed, succeeded, reason)

    def _wait_job_resumed(self, run: _ScriptedJob, conditions: list[dict]) -> dict:
        """Mark the Job Suspended, wait until it is resumed (Kueue admits it), return it then.
        `conditions` is updated in place: the Suspended condition turns False (JobResumed)."""
        conditions.append(_condition("Suspended", "JobSuspended", "Job suspended"))
        run.status({"conditions": conditions})
        run.event("Suspended", "Job suspended")
        self.wait_for(lambda api: not run.current()["spec"].get("suspend"), timeout=1e9)
        job = run.current()
        conditions[-1] = _condition("Suspended", "JobResumed", "Job resumed", status="False")
        run.event("Resumed", "Job resumed")
        return job

    def _create_job_pods(
        self, run: _ScriptedJob, job: dict, count: int, indexed: bool
    ) -> list[str]:
        pod_names = []
        for index in range(count):
            pod = self.put_object(_job_pod(job, index, indexed))
            pod_names.append(pod["metadata"]["name"])
            run.event("SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
        return pod_names

    def _write_job_logs(
        self, run: _ScriptedJob, pod_names: list[str], logs: dict[int, list[str]]
    ) -> None:
        """One line per pod (`logs[index]`) per step, a step_delay apart; a deleted pod gets none."""
        for step in range(max((len(lines) for lines in logs.values()), default=0)):
            for index, pod_name in enumerate(pod_names):
                lines = logs.get(index) or []
                if step < len(lines) and self.get("pods", pod_name, run.namespace) is not None:
                    self.append_log(pod_name, lines[step], run.namespace)
            run.sleep()

    def _finish_job(
        self,
        run: _ScriptedJob,
        conditions: list[dict],
        count: int,
        indexed: bool,
        succeeded: bool,
        reason: str | None,
    ) -> dict:
        """The final Job status (counters, the two terminal conditions) and its event."""
        now = _now()
        if succeeded:
            message = "Reached expected number of succeeded pods"
            conditions += [
                _condition("SuccessCriteriaMet", "CompletionsReached", message, now=now),
                _condition("Complete", "CompletionsReached", message, now=now),
            ]
            final: dict[str, Any] = {"succeeded": count, "completionTime": now}
            if indexed:
                final["completedIndexes"] = "0" if count == 1 else f"0-{count - 1}"
        else:
            failure = reason or "BackoffLimitExceeded"
            message = (
                "Job has reached the specified backoff limit"
                if failure == "BackoffLimitExceeded"
                else f"Job failed: {failure}"
            )
            conditions += [
                _condition("FailureTarget", failure, message, now=now),
                _condition("Failed", failure, message, now=now),
            ]
            final = {"failed": count}
        final.update({"active": None, "ready": 0, "terminating": 0, "conditions": conditions})
        result = run.status(final)
        if succeeded:
            run.event("Completed", "Job completed")
        else:
            run.event(failure, message, type="Warning")
        return result

    def _kubelet_start(self, pod_name: str, ns: str, started: str) -> None:
        pod = self.get("pods", pod_name, ns)
        if pod is None:
            return
        pod_ref = {
            "kind": "Pod",
            "name": pod_name,
            "uid": pod["metadata"]["uid"],
            "apiVersion": "v1",
        }
        pod["spec"]["nodeName"] = "fake-node"
        self.put_object(pod)
        self.add_event(
            ns,
            pod_ref,
            "Scheduled",
            f"Successfully assigned {ns}/{pod_name} to fake-node",
            component="default-scheduler",
        )
        containers = pod["spec"].get("containers") or []
        for c in containers:
            image = c.get("image", "")
            self.add_event(
                ns, pod_ref, "Pulled", f'Container image "{image}" already present on machine',
                component="kubelet",
            )  # fmt: skip
            self.add_event(
                ns, pod_ref, "Created", f"Created container: {c['name']}", component="kubelet"
            )
            self.add_event(
                ns, pod_ref, "Started", f"Started container {c['name']}", component="kubelet"
            )
        self.patch_status(
            "pods",
            pod_name,
            {
                "phase": "Running",
                "hostIP": "10.0.0.1",
                "podIP": f"10.244.0.{random.randint(2, 254)}",
                "startTime": started,
                "conditions": [
                    {"type": t, "status": "True", "lastTransitionTime": started}
                    for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                ],
                "containerStatuses": [
                    {
                        "name": c["name"],
                        "image": c.get("image", ""),
                        "imageID": "",
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": started}},
                    }
                    for c in containers
                ],
            },
            ns,
        )

    def _kubelet_finish(self, pod_name, ns, outcome, code, container_reason, started) -> None:
        pod = self.get("pods", pod_name, ns)
        if pod is None:
            return
        now = _now()
        ready_reason = "PodCompleted" if outcome == "Succeeded" else "PodFailed"
        statuses = []
        for c in pod["spec"].get("containers") or []:
            terminated = {
                "exitCode": code,
                "reason": container_reason,
                "startedAt": started,
                "finishedAt": now,
                "containerID": f"containerd://{uuid.uuid4().hex}",
            }
            statuses.append(
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
            )
        conditions = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
            {"type": "Initialized", "status": "True", "lastTransitionTime": started},
            {"type": "ContainersReady", "status": "False", "reason": ready_reason},
            {"type": "Ready", "status": "False", "reason": ready_reason, "lastTransitionTime": now},
        ]
        self.patch_status(
            "pods",
            pod_name,
            {"phase": outcome, "conditions": conditions, "containerStatuses": statuses},
            ns,
        )

    # -- store internals (call with the lock held) -------------------------------------------------

    def _bucket(self, group: str, plural: str) -> dict[tuple[str, str], dict]:
        return self._store.setdefault((group, plural), {})

    def _select(
        self,
        group: str,
        plural: str,
        namespace: str | None,
        label: Predicate | None = None,
        fields: Predicate | None = None,
    ) -> list[dict]:
        out = []
        for (ns, _), obj in sorted(self._bucket(group, plural).items()):
            if namespace is not None and ns != namespace and namespace != "":
                continue
            if (label is None or label(obj)) and (fields is None or fields(obj)):
                out.append(obj)
        return out

    def _emit(self, type_: str, group: str, plural: str, obj: dict) -> None:
        self._history.append(
            _Event(
                self._rv,
                type_,
                group,
                plural,
                obj["metadata"].get("namespace", ""),
                copy.deepcopy(obj),
            )
        )
        while len(self._history) > self._history_limit:
            self._min_rv = self._history.popleft().rv
        for listener in self._listeners:
            listener(type_, group, plural, self._history[-1].obj)
        self._cond.notify_all()

    def _insert(self, res: Resource, obj: dict, keep_status: bool) -> dict:
        meta = obj["metadata"]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        meta.setdefault("generation", 1)
        obj.setdefault("apiVersion", f"{res.group}/{res.version}" if res.group else res.version)
        obj.setdefault("kind", res.kind)
        _default_new(res, obj, keep_status)
        stored = self._commit(res, obj, "ADDED")
        for callback in self._callbacks.get(res.kind, []):
            thread = threading.Thread(
                target=self._run_callback, args=(callback, copy.deepcopy(stored)), daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return stored

    def _commit(self, res: Resource, obj: dict, type_: str) -> dict:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        self._bucket(res.group, res.plural)[key] = obj
        self._emit(type_, res.group, res.plural, obj)
        return copy.deepcopy(obj)

    def _remove(self, res: Resource, obj: dict, policy: str) -> dict:
        """Delete now, then garbage-collect dependents (ownerReferences) per `policy`."""
        meta = obj["metadata"]
        self._bucket(res.group, res.plural).pop((meta.get("namespace", ""), meta["name"]), None)
        self._rv += 1
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self._rv)
        self._emit("DELETED", res.group, res.plural, gone)
        if (res.group, res.plural) == ("", "pods"):
            ns, name = meta.get("namespace", ""), meta["name"]
            for key in [k for k in self._logs if k[:2] == (ns, name)]:
                del self._logs[key]
        if policy != "Orphan":
            for dep_res, dep in self._dependents(meta["uid"]):
                self._remove(dep_res, dep, "Background")
        return gone

    def _dependents(self, uid: str) -> list[tuple[Resource, dict]]:
        out = []
        for (group, plural), bucket in self._store.items():
            for obj in list(bucket.values()):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == uid for ref in refs):
                    out.append((_resource(group, plural), obj))
        return out

    def _run_callback(self, callback, obj: dict) -> None:
        try:
            callback(self, obj)
        except Exception:
            if not self._stopping:
                with self._lock:
                    self.errors.append(traceback.format_exc())

    # -- API operations (the HTTP handler's verbs) ------------------------------------------------

    def _authorize(self, headers) -> None:
        if self.require_token is None:
            return
        if headers.get("Authorization") != f"Bearer {self.require_token}":
            raise ApiError(401, "Unauthorized", "Unauthorized")

    def _take_fault(self, method: str, target: str) -> ApiError | None:
        """target: the request's path and query string, e.g. /api/v1/pods?watch=true."""
        with self._lock:
            for fault in self._faults:
                if fault.method and fault.method != method:
                    continue
                if fault.path_contains and fault.path_contains not in target:
                    continue
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                headers, details = {}, None
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(fault.retry_after)
                    details = {"retryAfterSeconds": fault.retry_after}
                return ApiError(fault.status, fault.reason, fault.message, details, headers)
        return None

    def _api_get(self, t: _Target) -> dict:
        with self._lock:
            obj = self._bucket(t.group, t.plural).get((t.namespace or "", t.name))
            if obj is None:
                raise _not_found(t.group, t.plural, t.name)
            return copy.deepcopy(obj)

    def _api_list(self, t: _Target, query: dict[str, str]) -> dict:
        label = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"), t.group, t.plural)
        with self._lock:
            items = [
                copy.deepcopy(o)
                for o in self._select(t.group, t.plural, t.namespace, label, fields)
            ]
            rv = str(self._rv)
        kind = items[0].get("kind", t.res.kind) if items else t.res.kind
        metadata: dict[str, Any] = {"resourceVersion": rv}
        start = 0
        if query.get("continue"):
            try:
                start = int(base64.urlsafe_b64decode(query["continue"]).decode())
            except ValueError as e:
                raise _bad_request(f"continue key is not valid: {e}") from e
        limit = int(query.get("limit") or 0)
        end = start + limit if limit > 0 else len(items)
        if end < len(items):
            metadata["continue"] = base64.urlsafe_b64encode(str(end).encode()).decode()
            metadata["remainingItemCount"] = len(items) - end
        items = items[start:end]
        if t.group in _BUILTIN_GROUPS:  # built-in lists omit each item's kind/apiVersion
            for item in items:
                item.pop("kind", None)
                item.pop("apiVersion", None)
        return {
            "kind": f"{kind}List",
            "apiVersion": t.api_version,
            "metadata": metadata,
            "items": items,
        }

    def _admit(self, t: _Target, body: Any, query: dict[str, str]) -> None:
        """What the real server checks on create before storing (tests/fakes/apirules.py):
        decoding (400), strict fields (400), the namespace's existence (404), validation (422)."""
        if not isinstance(body, dict):
            return
        error = apirules.decode_error(t.res.kind, t.res.version, body)
        if error:
            raise _bad_request(error)
        if query.get("fieldValidation") == "Strict":
            unknown = apirules.unknown_fields(t.group, t.res.version, t.res.kind, body)
            if unknown:
                raise _bad_request(apirules.strict_error(unknown))
        if t.namespace and t.res.namespaced:
            with self._lock:
                if ("", t.namespace) not in self._bucket("", "namespaces"):
                    raise _not_found("", "namespaces", t.namespace)
        found = apirules.causes(t.group, t.res.kind, body)
        if found:
            try:
                _validate(t.res, body)
            except ApiError as first:
                found = [
                    (c["reason"], c["field"], c["message"]) for c in first.details["causes"]
                ] + found
            raise _invalid(t.res, (body.get("metadata") or {}).get("name") or "", found)

    def _api_create(self, t: _Target, body: Any, dry_run: bool) -> dict:
        if not isinstance(body, dict):
            raise _bad_request("the body of the request was in an unknown format")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise _bad_request("metadata must be an object")
        if t.namespace:
            if meta.get("namespace") and meta["namespace"] != t.namespace:
                raise _bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            meta["namespace"] = t.namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + _random_suffix()
        obj.setdefault("apiVersion", t.api_version)
        obj.setdefault("kind", t.res.kind)
        _validate(t.res, obj)
        with self._lock:
            if (t.namespace or "", meta["name"]) in self._bucket(t.group, t.plural):
                message = f'{_qualified(t.group, t.plural)} "{meta["name"]}" already exists'
                raise ApiError(
                    409, "AlreadyExists", message, _details(t.group, t.plural, meta["name"])
                )
            for key in ("resourceVersion", "uid", "deletionTimestamp"):
                meta.pop(key, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta["generation"] = 1
            if dry_run:
                _default_new(t.res, obj, keep_status=False)
                return obj
            return self._insert(t.res, obj, keep_status=False)

    def _api_update(self, t: _Target, new: Any, dry_run: bool, check_rv: str | None) -> dict:
        """PUT semantics: the main resource keeps the old status; /status keeps all but status."""
        if not isinstance(new, dict):
            raise _bad_request("the body of the request was in an unknown format")
        with self._lock:
            old = self._bucket(t.group, t.plural).get((t.namespace or "", t.name))
            if old is None:
                raise _not_found(t.group, t.plural, t.name)
            new_meta = new.get("metadata") or {}
            if new_meta.get("name", t.name) != t.name:
                raise _bad_request(
                    f"the name of the object ({new_meta.get('name')}) does not match the name on "
                    f"the URL ({t.name})"
                )
            if check_rv and check_rv != old["metadata"]["resourceVersion"]:
                raise _conflict(t.group, t.plural, t.name)
            if t.sub == "status":
                merged = copy.deepcopy(old)
                if "status" in new:
                    merged["status"] = copy.deepcopy(new["status"])
                else:
                    merged.pop("status", None)
            else:
                merged = copy.deepcopy(new)
                merged.setdefault("apiVersion", old.get("apiVersion"))
                merged.setdefault("kind", old.get("kind"))
                meta = merged.setdefault("metadata", {})
                for key in ("uid", "creationTimestamp", "generation", "deletionTimestamp"):
                    if key in old["metadata"]:
                        meta[key] = old["metadata"][key]
                    else:
                        meta.pop(key, None)
                meta["name"] = t.name
                if t.namespace:
                    meta["namespace"] = t.namespace
                if "status" in old:
                    merged["status"] = copy.deepcopy(old["status"])
                else:
                    merged.pop("status", None)
                if _spec_part(merged) != _spec_part(old):
                    meta["generation"] = old["metadata"].get("generation", 1) + 1
                _validate(t.res, merged)
            merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            if merged == old or dry_run:
                return copy.deepcopy(merged)
            meta = merged["metadata"]
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                return self._remove(t.res, merged, "Background")
            return self._commit(t.res, merged, "MODIFIED")

    def _api_patch(
        self, t: _Target, patch: Any, content_type: str, dry_run: bool
    ) -> tuple[int, dict]:
        """Returns (HTTP status, object): server-side apply of a missing object creates it."""
        content_type = content_type.split(";")[0].strip()
        with self._lock:
            old = self._bucket(t.group, t.plural).get((t.namespace or "", t.name))
            if old is None:
                if content_type == "application/apply-patch+yaml" and t.sub is None:
                    if isinstance(patch, dict):
                        patch.setdefault("metadata", {}).setdefault("name", t.name)
                    return 201, self._api_create(t, patch, dry_run)
                raise _not_found(t.group, t.plural, t.name)
            if content_type == "application/json-patch+json":
                if not isinstance(patch, list):
                    raise _bad_request("json patch must be a list of operations")
                patched = json_patch(old, patch)
                check_rv = None
            elif content_type in (
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
                "application/apply-patch+yaml",
            ):
                if not isinstance(patch, dict):
                    raise _bad_request("merge patch must be a JSON object")
                patched = merge_patch(old, patch)
                check_rv = (patch.get("metadata") or {}).get("resourceVersion")
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: application/json-patch+json, application/merge-patch+json, "
                    "application/apply-patch+yaml, application/strategic-merge-patch+json; "
                    f'got "{content_type}"',
                )
            return 200, self._api_update(t, patched, dry_run, check_rv)

    def _api_delete(self, t: _Target, query: dict, body: Any, dry_run: bool) -> tuple[dict, dict]:
        options = body if isinstance(body, dict) else {}
        policy, headers = _propagation_policy(t, query, options)
        with self._lock:
            obj = self._bucket(t.group, t.plural).get((t.namespace or "", t.name))
            if obj is None:
                raise _not_found(t.group, t.plural, t.name)
            preconditions = options.get("preconditions") or {}
            for key in ("uid", "resourceVersion"):
                if preconditions.get(key) and preconditions[key] != obj["metadata"].get(key):
                    raise _conflict(t.group, t.plural, t.name)
            self.deletions.append(_deletion_record(t, query, options, policy, dry_run))
            marked = copy.deepcopy(obj)
            meta = marked["metadata"]
            meta["deletionTimestamp"] = meta.get("deletionTimestamp") or _now()
            meta["deletionGracePeriodSeconds"] = _grace_period(t, obj, query, options)
            gc_finalizer = {"Orphan": "orphan", "Foreground": "foregroundDeletion"}.get(policy)
            returns_object = t.group not in _BUILTIN_GROUPS or t.plural == "pods"
            success = _status(
                "Success",
                200,
                details=_details(t.group, t.plural, t.name, uid=obj["metadata"]["uid"]),
            )
            if meta.get("finalizers"):
                # Someone else's finalizer: the object waits, marked for deletion.
                if dry_run:
                    return marked, headers
                return self._commit(t.res, marked, "MODIFIED"), headers
            if dry_run:
                if gc_finalizer:
                    meta["finalizers"] = [gc_finalizer]
                    return marked, headers
                return (obj if returns_object else success), headers
            if t.plural == "namespaces":
                return self._delete_namespace(t, marked), headers
            if gc_finalizer:
                return self._delete_through_gc_finalizer(t, marked, gc_finalizer, policy), headers
            if t.plural == "pods" and self._terminates(obj, meta["deletionGracePeriodSeconds"]):
                return self._commit(t.res, marked, "MODIFIED"), headers  # the kubelet ends it
            # A pod's DELETED event carries its grace period: the fake kubelet stops it with that.
            gone = self._remove(t.res, marked if t.plural == "pods" else obj, policy)
            return (gone if returns_object else success), headers

    def _delete_namespace(self, t: _Target, marked: dict) -> dict:
        """Terminating, then everything in it and the namespace itself go (call with the lock)."""
        marked["status"] = {"phase": "Terminating"}
        response = self._commit(t.res, marked, "MODIFIED")
        for (group, plural), bucket in list(self._store.items()):
            for (ns, _), child in list(bucket.items()):
                if ns == t.name:
                    self._remove(_resource(group, plural), child, "Background")
        self._remove(t.res, self._bucket(t.group, t.plural)[("", t.name)], "Background")
        return response

    def _delete_through_gc_finalizer(
        self, t: _Target, marked: dict, gc_finalizer: str, policy: str
    ) -> dict:
        """Orphan/Foreground: the object carries the garbage collector's finalizer while its
        dependents are deleted (Foreground) or lose their ownerReference to it (Orphan); then it
        goes. Returns the object as committed with the finalizer, which the DELETE answers (call
        with the lock)."""
        meta = marked["metadata"]
        meta["finalizers"] = [gc_finalizer]
        response = self._commit(t.res, marked, "MODIFIED")
        if policy == "Foreground":
            for dep_res, dep in self._dependents(meta["uid"]):
                self._remove(dep_res, dep, "Foreground")
        else:
            for dep_res, dep in self._dependents(meta["uid"]):
                orphaned = copy.deepcopy(dep)
                refs = orphaned["metadata"].get("ownerReferences") or []
                refs = [r for r in refs if r.get("uid") != meta["uid"]]
                if refs:
                    orphaned["metadata"]["ownerReferences"] = refs
                else:
                    orphaned["metadata"].pop("ownerReferences", None)
                self._commit(dep_res, orphaned, "MODIFIED")
        final = self._bucket(t.group, t.plural)[(t.namespace or "", t.name)]
        final["metadata"].pop("finalizers")  # the garbage collector is done
        self._remove(t.res, final, "Orphan")
        return response

    def _terminates(self, pod: dict, grace: int) -> bool:
        """A graceful delete of a pod a kubelet runs: it stays (deletionTimestamp) until then."""
        phase = (pod.get("status") or {}).get("phase")
        bound = bool((pod.get("spec") or {}).get("nodeName"))
        return self.graceful_pods and grace > 0 and bound and phase not in ("Succeeded", "Failed")

    def _api_evict(self, t: _Target, body: Any) -> dict:
        """POST pods/<name>/eviction (policy/v1 Eviction): the DisruptionTarget condition, then a
        graceful delete, as the eviction API does (PodDisruptionBudgets are not checked)."""
        with self._lock:
            pod = self._bucket("", "pods").get((t.namespace or "", t.name))
            if pod is None:
                raise _not_found("", "pods", t.name)
            conditions = [
                c
                for c in (pod.get("status") or {}).get("conditions") or []
                if c.get("type") != "DisruptionTarget"
            ]
            message = "Eviction API: evicting"
            conditions.append(_condition("DisruptionTarget", "EvictionByEvictionAPI", message))
            self.patch_status("pods", t.name, {"conditions": conditions}, t.namespace or "")
        options = (body or {}).get("deleteOptions") if isinstance(body, dict) else None
        self._api_delete(dataclasses.replace(t, sub=None), {}, options or {}, dry_run=False)
        return _status("Success", 201)

    def _api_delete_collection(self, t: _Target, query: dict, dry_run: bool) -> dict:
        label = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"), t.group, t.plural)
        with self._lock:
            names = [
                o["metadata"] for o in self._select(t.group, t.plural, t.namespace, label, fields)
            ]
            for meta in names:
                target = _Target(t.res, t.version, meta.get("namespace", ""), meta["name"], None)
                self._api_delete(target, query, None, dry_run)
        return _status("Success", 200)

    # -- streams ----------------------------------------------------------------------------------

    def _open_watch(self, t: _Target, query: dict[str, str]) -> Iterator[bytes]:
        """Validate a watch request now (errors become a plain Status response), stream later."""
        label = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"), t.group, t.plural)
        try:
            timeout = float(query.get("timeoutSeconds") or 0)
            since = int(query.get("resourceVersion") or "0")
        except ValueError as e:
            raise _bad_request(f"invalid watch parameter: {e}") from e
        return self._watch_stream(t, label, fields, timeout, since)

    def _watch_stream(
        self, t: _Target, label: Predicate, fields: Predicate, timeout: float, since: int
    ) -> Iterator[bytes]:
        """Newline-delimited watch events; raises _Dropped when cut abruptly."""
        token = _WatchToken()

        def matches(e: _Event) -> bool:
            return (
                (e.group, e.plural) == (t.group, t.plural)
                and (not t.namespace or e.namespace == t.namespace)
                and label(e.obj)
                and fields(e.obj)
            )

        def line(type_: str, obj: dict) -> bytes:
            return (json.dumps({"type": type_, "object": obj}) + "\n").encode()

        def expired(asked: int) -> bytes:
            message = f"too old resource version: {asked} ({self._min_rv + 1})"
            return line("ERROR", _status("Failure", 410, "Expired", message))

        with self._cond:
            self._watch_count += 1
            self._watch_tokens[id(token)] = token
            self._cond.notify_all()
            if since == 0:  # no resourceVersion: the current state as ADDED, then changes
                objs = self._select(t.group, t.plural, t.namespace, label, fields)
                batch, gone = [line("ADDED", o) for o in objs], False
            elif since < self._min_rv:
                batch, gone = [expired(since)], True
            else:
                batch = [line(e.type, e.obj) for e in self._history if e.rv > since and matches(e)]
                gone = False
            cursor = self._rv
        try:
            yield from batch
            deadline = time.monotonic() + timeout if timeout else None
            while not gone:
                with self._cond:
                    while not (self._rv > cursor or token.dropped or self._stopping):
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            return
                        self._cond.wait(remaining)
                    if token.dropped and token.abrupt:
                        raise _Dropped
                    if token.dropped or self._stopping:
                        return
                    if cursor < self._min_rv:  # compacted while this watch lagged behind
                        batch, gone = [expired(cursor)], True
                    else:
                        batch = [
                            line(e.type, e.obj)
                            for e in self._history
                            if e.rv > cursor and matches(e)
                        ]
                    cursor = self._rv
                yield from batch
        finally:
            with self._lock:
                self._watch_tokens.pop(id(token), None)

    def _log_lines(self, t: _Target, query: dict[str, str]) -> tuple[Iterator[bytes] | None, str]:
        """The pod's log (text) and, for follow, a generator of what follows; validates first."""
        with self._lock:
            pod = self._bucket("", "pods").get((t.namespace, t.name))
            if pod is None:
                raise _not_found("", "pods", t.name)
            if not (pod.get("spec") or {}).get("nodeName"):
                return None, ""  # LogLocation is empty for a pod without a node: 204 No Content
            names = _container_names(pod)
            container = query.get("container")
            if container and container not in names:
                raise _bad_request(f"container {container} is not valid for pod {t.name}")
            if not container and len(names) > 1:
                raise _bad_request(
                    f"a container name must be specified for pod {t.name}, choose one of: "
                    f"[{' '.join(names)}]"
                )
            container = container or names[0]
            status = pod.get("status") or {}
            if status.get("phase", "Pending") == "Pending":
                waiting = "ContainerCreating"
                for cs in status.get("containerStatuses") or []:
                    if cs.get("name") == container:
                        waiting = ((cs.get("state") or {}).get("waiting") or {}).get(
                            "reason", waiting
                        )
                raise _bad_request(
                    f'container "{container}" in pod "{t.name}" is waiting to start: {waiting}'
                )
            key = (t.namespace, t.name, container)
            text = self._logs.get(key, "")
            if query.get("tailLines"):
                tail = int(query["tailLines"])
                lines = text.splitlines(keepends=True)
                text = "".join(lines[-tail:]) if tail > 0 else ""
            sent = len(self._logs.get(key, ""))

        def follow() -> Iterator[bytes]:
            nonlocal sent
            while True:
                with self._cond:
                    while True:
                        current = self._logs.get(key, "")
                        live = self._bucket("", "pods").get((t.namespace, t.name))
                        done = (
                            live is None
                            or (live.get("status") or {}).get("phase") in ("Succeeded", "Failed")
                            or self._stopping
                        )
                        if len(current) > sent or done:
                            break
                        self._cond.wait()
                    chunk, sent = current[sent:], len(current)
                if chunk:
                    yield chunk.encode()
                if done:
                    return

        return follow(), text


def _propagation_policy(t: _Target, query: dict, options: dict) -> tuple[str, dict]:
    """A delete's propagationPolicy (from the query, else the DeleteOptions body; the legacy
    orphanDependents maps onto it) and the response headers that go with it."""
    policy = query.get("propagationPolicy") or options.get("propagationPolicy")
    orphan = query.get("orphanDependents") or options.get("orphanDependents")
    headers = {}
    if policy is None and orphan is not None:
        policy = "Orphan" if str(orphan).lower() == "true" else "Background"
    if policy is None:
        if (t.group, t.plural) == ("batch", "jobs"):
            policy = "Orphan"
            headers["Warning"] = (
                '299 - "child pods are preserved by default when jobs are deleted; set '
                "propagationPolicy=Background to remove them or set propagationPolicy=Orphan "
                'to suppress this warning"'
            )
        else:
            policy = "Background"
    if policy not in ("Orphan", "Background", "Foreground"):
        raise _bad_request(f"propagationPolicy: Unsupported value: {policy!r}")
    return policy, headers


def _deletion_record(t: _Target, query: dict, options: dict, policy: str, dry_run: bool) -> dict:
    """One entry of FakeApiServer.deletions: what a test asserts a delete asked for."""
    return {
        "group": t.group,
        "plural": t.plural,
        "namespace": t.namespace or "",
        "name": t.name,
        "propagationPolicy": policy,
        "gracePeriodSeconds": query.get("gracePeriodSeconds") or options.get("gracePeriodSeconds"),
        "dryRun": dry_run,
    }


def _grace_period(t: _Target, obj: dict, query: dict, options: dict) -> int:
    """deletionGracePeriodSeconds: the request's, else a pod's terminationGracePeriodSeconds."""
    asked = query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
    if asked is not None:
        return int(asked)
    if t.plural == "pods":
        return int((obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
    return 0


def _container_names(pod: dict) -> list[str]:
    return [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []] or [""]


def _condition(type_: str, reason: str, message: str, now: str | None = None, status: str = "True"):
    now = now or _now()
    return {
        "type": type_,
        "status": status,
        "lastProbeTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }


def _job_pod(job: dict, index: int, indexed: bool) -> dict:
    """The pod the Job controller would create for completion `index`."""
    meta, spec = job["metadata"], job["spec"]
    name, uid = meta["name"], meta["uid"]
    template = copy.deepcopy(spec.get("template") or {})
    template_meta = template.get("metadata") or {}
    labels = {
        **(template_meta.get("labels") or {}),
        CONTROLLER_UID_LABEL: uid,
        JOB_NAME_LABEL: name,
        "controller-uid": uid,
        "job-name": name,
    }
    annotations = dict(template_meta.get("annotations") or {})
    pod_spec = template.get("spec") or {}
    generate_name = f"{name}-"
    if indexed:
        labels[COMPLETION_INDEX] = annotations[COMPLETION_INDEX] = str(index)
        generate_name = f"{name}-{index}-"
        pod_spec.setdefault("hostname", f"{name}-{index}")
        for c in pod_spec.get("containers") or []:
            env = [e for e in c.get("env") or [] if e.get("name") != "JOB_COMPLETION_INDEX"]
            env.append(
                {
                    "name": "JOB_COMPLETION_INDEX",
                    "valueFrom": {
                        "fieldRef": {
                            "apiVersion": "v1",
                            "fieldPath": f"metadata.labels['{COMPLETION_INDEX}']",
                        }
                    },
                }
            )
            c["env"] = env
    pod_meta = {
        "name": generate_name + _random_suffix(),
        "generateName": generate_name,
        "namespace": meta.get("namespace", "default"),
        "labels": labels,
        "ownerReferences": [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": name,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if annotations:
        pod_meta["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": pod_meta,
        "spec": pod_spec,
        "status": {"phase": "Pending"},
    }


@dataclass
class _ScriptedJob:
    """The Job one run_job call plays. `current` re-reads it and raises _Stopped once it is
    deleted or the server stops; `sleep` waits step_delay and raises _Stopped when the server
    stops: the script then ends instead of writing pods and status for a Job that is gone."""

    api: FakeApiServer
    name: str
    namespace: str
    step_delay: float
    uid: str = ""

    def current(self) -> dict:
        obj = self.api.get("jobs", self.name, self.namespace, group="batch")
        if obj is None or self.api._stopping:
            raise _Stopped
        return obj

    def status(self, patch: dict) -> dict:
        return self.api.patch_status("jobs", self.name, patch, self.namespace, group="batch")

    def sleep(self) -> None:
        if self.api._stop_event.wait(self.step_delay):
            raise _Stopped

    def event(self, reason: str, message: str, type: str = "Normal") -> None:
        involved = {"kind": "Job", "name": self.name, "uid": self.uid, "apiVersion": "batch/v1"}
        self.api.add_event(
            self.namespace, involved, reason, message, type=type, component="job-controller"
        )


# --- HTTP ---------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, handler, api: FakeApiServer):
        super().__init__(address, handler)
        self.api = api
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def track(self, conn: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            (self._connections.add if open_ else self._connections.discard)(conn)

    def close_connections(self) -> None:
        """Cut keep-alive connections too, so a stopped server refuses like a dead one."""
        with self._connections_lock:
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# Go's http.StatusText where Python's phrase varies by version (3.13: "Unprocessable Content").
_GO_STATUS_TEXT = {422: "Unprocessable Entity"}
_DISCOVERY_PATHS = ("/version", "/api", "/apis", "/healthz", "/readyz", "/livez")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-kube-apiserver"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: _HTTPServer

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_OPTIONS(self) -> None:
        self._handle("OPTIONS")

    # -- plumbing ---------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, code: int, data: bytes, content_type: str, headers: dict | None = None) -> None:
        self._request.status = code
        self.send_response(code, _GO_STATUS_TEXT.get(code))
        self.send_header("Content-Type", content_type)
        if code != 204:  # as Go's net/http: a 204 carries no Content-Length
            self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_json(self, code: int, obj: Any, headers: dict | None = None) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json", headers)

    def _send_error(self, error: ApiError) -> None:
        self._send_json(error.code, error.status(), error.headers)

    def _stream(self, content_type: str, chunks: Iterator[bytes], first: bytes = b"") -> None:
        """Answer 200 with Transfer-Encoding: chunked, one chunk per item."""
        self._request.status = 200
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        try:
            self.wfile.flush()
            if first:
                self._chunk(first)
            for data in chunks:
                self._chunk(data)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except _Dropped:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError):
            self.close_connection = True

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    # -- dispatch ---------------------------------------------------------------------------------

    def _handle(self, method: str) -> None:
        api = self.server.api
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        raw = self._read_body()
        content_type = self.headers.get("Content-Type")
        body: Any = None
        parse_error = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                if content_type and "yaml" in content_type:
                    body = yaml.safe_load(raw)
                else:
                    body = raw.decode("utf-8", "replace")
                    parse_error = "couldn't get version/kind; json parse error"
        self._request = Request(method, path, query, body, content_type)
        with api._lock:
            api._requests.append(self._request)
        try:
            api._authorize(self.headers)
            fault = api._take_fault(method, unquote(self.path))
            if fault is not None:
                raise fault
            if parse_error and method in ("POST", "PUT", "PATCH"):
                raise _bad_request(parse_error)
            self._route(method, path, query, body, content_type or "application/json")
        except ApiError as e:
            self._send_error(e)
        except OSError:  # the client went away (or stop() cut the connection)
            self.close_connection = True
        except Exception:  # a bug in the fake: answer like the apiserver, and fail the test
            with api._lock:
                api.errors.append(traceback.format_exc())
            if self._request.status is None:
                self._send_error(ApiError(500, "InternalError", "FakeApiServer failed"))
            else:
                self.close_connection = True

    def _route(self, method: str, path: str, query: dict, body: Any, content_type: str) -> None:
        api = self.server.api
        for hook in list(api.routes):
            answer = hook(self, method, path, query, body)
            if answer is not None:
                self._send_json(*answer)
                return
        if method == "GET" and path.rstrip("/") in _DISCOVERY_PATHS:
            self._discovery(path.rstrip("/"))
            return
        t = _parse_path(path)
        if t is None:
            if method == "GET" and _discovery_group(path) is not None:
                self._send_json(200, _discovery_group(path))
                return
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        dry_run = query.get("dryRun") == "All"
        if query.get("dryRun") not in (None, "All"):
            raise _bad_request(f"dryRun: Unsupported value: {query['dryRun']!r}")
        if method == "POST" and t.sub == "eviction" and t.plural == "pods" and t.name:
            self._send_json(201, api._api_evict(t, body))
            return
        if t.sub not in (None, "status", "log") or (t.sub == "log" and t.plural != "pods"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if method == "GET" and t.name is None:
            if query.get("watch") in ("true", "1"):
                self._stream("application/json", api._open_watch(t, query))
            else:
                self._send_json(200, api._api_list(t, query))
        elif method == "GET" and t.sub == "log":
            follow, text = api._log_lines(t, query)
            if follow is None:  # no node yet: the kubelet has no log, the server answers 204
                self._send(204, b"", "text/plain")
            elif query.get("follow") in ("true", "1"):
                self._stream("text/plain", follow, text.encode())
            else:
                self._send(200, text.encode(), "text/plain")
        elif method == "GET":
            self._send_json(200, api._api_get(t))
        elif method == "POST" and t.name is None:
            api._admit(t, body, query)
            self._send_json(201, api._api_create(t, body, dry_run))
        elif method == "PUT" and t.name is not None and t.sub != "log":
            metadata = (body.get("metadata") if isinstance(body, dict) else None) or {}
            check_rv = metadata.get("resourceVersion")
            self._send_json(200, api._api_update(t, body, dry_run, check_rv))
        elif method == "PATCH" and t.name is not None and t.sub != "log":
            code, result = api._api_patch(t, body, content_type, dry_run)
            self._send_json(code, result)
        elif method == "DELETE" and t.name is not None and t.sub is None:
            result, headers = api._api_delete(t, query, body, dry_run)
            self._send_json(200, result, headers)
        elif method == "DELETE" and t.name is None:
            self._send_json(200, api._api_delete_collection(t, query, dry_run))
        else:
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )

    def _discovery(self, path: str) -> None:
        if path in ("/healthz", "/readyz", "/livez"):
            self._send(200, b"ok", "text/plain")
        elif path == "/version":
            self._send_json(
                200,
                {
                    "major": "1",
                    "minor": "34",
                    "emulationMajor": "1",
                    "emulationMinor": "34",
                    "gitVersion": "v1.34.0",
                    "gitCommit": "0000000000000000000000000000000000000000",
                    "gitTreeState": "clean",
                    "buildDate": "2025-08-27T00:00:00Z",
                    "goVersion": "go1.24.6",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                },
            )
        elif path == "/api":
            self._send_json(
                200,
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {
                            "clientCIDR": "0.0.0.0/0",
                            "serverAddress": f"127.0.0.1:{self.server.api.port}",
                        }
                    ],
                },
            )
        else:
            groups: dict[str, list[str]] = {}
            for r in _RESOURCES:
                if r.group and r.version not in groups.setdefault(r.group, []):
                    groups[r.group].append(r.version)
            self._send_json(
                200,
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [_group_doc(g, vs) for g, vs in groups.items()],
                },
            )


def _group_doc(group: str, versions: list[str]) -> dict:
    docs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": docs, "preferredVersion": docs[0]}


def _discovery_group(path: str) -> dict | None:
    """/api/v1, /apis/{group} and /apis/{group}/{version} from the resource table."""
    parts = [p for p in path.split("/") if p]
    if parts == ["api", "v1"]:
        group, version = "", "v1"
    elif len(parts) == 2 and parts[0] == "apis":
        versions = sorted({r.version for r in _RESOURCES if r.group == parts[1]})
        return (
            {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(parts[1], versions)}
            if versions
            else None
        )
    elif len(parts) == 3 and parts[0] == "apis":
        group, version = parts[1], parts[2]
    else:
        return None
    resources = []
    for r in _RESOURCES:
        if (r.group, r.version) != (group, version):
            continue
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        resources.append(
            {
                "name": r.plural,
                "singularName": r.kind.lower(),
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": verbs,
            }
        )
        resources.append(
            {
                "name": f"{r.plural}/status",
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }
        )
        if r.plural == "pods":
            resources.append(
                {
                    "name": "pods/log",
                    "singularName": "",
                    "namespaced": True,
                    "kind": "Pod",
                    "verbs": ["get"],
                }
            )
    if not resources:
        return None
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }
