"""Check manifests before anything is submitted: schemas, CRD schemas and the course policy.

Four layers, each producing `Finding`s that name the object and the field:
  1. built-in kinds against the Kubernetes OpenAPI schema of a pinned minor (kubernetes-validate,
     strict: unknown fields are errors, an unknown kind is an error);
  2. custom resources (Kueue, JobSet, Kubeflow, Volcano, Prometheus Operator) against the
     `openAPIV3Schema` of their upstream CRD files in ../shared/crds (skipped, with the reason
     recorded, where that folder is absent);
  3. the Job/Pod API rules a schema cannot express, which the API server answers with 422/400
     (kubecourse.semantic: restartPolicy in a Job, mounts of undefined volumes, limits below
     requests, quantities, room for the Indexed pod index in the name, ...);
  4. the course policy (kubecourse.policy): Pod Security "restricted", pinned images, requests and
     limits, no secret values written into a manifest, RBAC without wildcards or admin bindings.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from . import constants as C
from .errors import Finding, ManifestError
from .manifests import Manifest, object_id, repo_root
from .policy import pod_specs, policy_findings
from .semantic import semantic_findings

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Kinds whose names end up in pod labels or DNS names and so must be DNS-1123 labels (<= 63).
_LABEL_NAMED_KINDS = {"Job", "Service", "Namespace", "JobSet", "PyTorchJob", "TrainJob"}


@dataclass
class Report:
    """What validate() found: problems (each naming a field) and layers that were skipped, with why."""

    findings: list[Finding] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def raise_for_findings(self) -> None:
        if self.findings:
            raise ManifestError(self.findings, summary="manifests failed validation")

    def __str__(self) -> str:
        lines = [f"checked {len(self.checked)} object(s): {', '.join(self.checked)}"]
        lines += [f"  FAIL {f}" for f in self.findings] or ["  all checks passed"]
        lines += [f"  skipped: {s}" for s in self.skipped]
        return "\n".join(lines)


def json_path(parts) -> str:
    """["spec", "containers", 0, "image"] -> "spec.containers[0].image"."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


# --------------------------------------------------------------------------------------------------
# 1. Built-in kinds
# --------------------------------------------------------------------------------------------------


def _schema_error_finding(obj: Manifest, error: jsonschema.ValidationError, rule: str) -> Finding:
    path = list(error.absolute_path)
    message = error.message
    if error.validator == "additionalProperties":
        # Name the unexpected field itself, not its parent.
        unexpected = re.findall(r"'([^']+)' (?:was|were) unexpected", message) or re.findall(
            r"\('([^']+)'", message
        )
        if unexpected:
            path.append(unexpected[0])
            message = f"unknown field {unexpected[0]!r} (strict validation: typos are errors)"
    if error.validator == "required":
        missing = re.findall(r"^'([^']+)' is a required property", message)
        if missing:
            path.append(missing[0])
    if len(message) > 240:
        message = message[:240] + "..."
    return Finding(object_id(obj), json_path(path), message, rule)


def _check_metadata(obj: Manifest) -> list[Finding]:
    meta = obj.get("metadata")
    oid = object_id(obj)
    if not isinstance(meta, dict) or not meta.get("name"):
        return [Finding(oid, "metadata.name", "every object needs a name", "schema")]
    name = meta["name"]
    limit = 63 if obj.get("kind") in _LABEL_NAMED_KINDS else 253
    if (
        not isinstance(name, str)
        or len(name) > limit
        or not _DNS_SUBDOMAIN.match(name)
        or (limit == 63 and "." in name)
    ):
        return [
            Finding(
                oid,
                "metadata.name",
                f"{name!r} is not a valid name: lower-case letters, digits and '-', at most {limit} characters",
                "schema",
            )
        ]
    namespace = meta.get("namespace")
    if namespace is not None and (
        not isinstance(namespace, str)
        or len(namespace) > 63
        or not _DNS_SUBDOMAIN.match(namespace)
        or "." in namespace
    ):
        return [
            Finding(
                oid,
                "metadata.namespace",
                f"{namespace!r} is not a valid namespace (a DNS-1123 label)",
                "schema",
            )
        ]
    return []


def _validate_builtin(obj: Manifest, version: str) -> list[Finding]:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [_schema_error_finding(obj, exc, "schema")]
    return []


# --------------------------------------------------------------------------------------------------
# 2. Custom resources against upstream CRDs
# --------------------------------------------------------------------------------------------------


def default_crd_dir() -> Path:
    """$KUBECOURSE_CRD_DIR, else ../shared/crds beside the repository."""
    env = os.environ.get("KUBECOURSE_CRD_DIR")
    return Path(env) if env else repo_root().parent / "shared" / "crds"


@functools.lru_cache(maxsize=32)
def _crd_schemas(crd_dir: str, group: str) -> dict[tuple[str, str, str], dict]:
    """(group, version, kind) -> openAPIV3Schema, from the group's CRD files (<group>_<plural>.yaml)."""
    schemas = {}
    for path in sorted(Path(crd_dir).glob(f"{group}_*.yaml")):
        # libyaml's loader when present: the CRD files are megabytes, pure-Python parsing takes seconds.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        for doc in yaml.load_all(path.read_text(), Loader=loader):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec.get("versions", []):
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if schema:
                    schemas[(spec["group"], version["name"], spec["names"]["kind"])] = schema
    return schemas


def _strict(schema: Any) -> Any:
    """Make a structural CRD schema reject unknown fields, as `kubectl apply --validate=strict` does."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _validate_custom(obj: Manifest, crd_dir: Path, report: Report) -> list[Finding]:
    group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
    if not crd_dir.is_dir():
        report.skipped.append(f"{object_id(obj)}: CRD schema check skipped, {crd_dir} is absent")
        return []
    schemas = _crd_schemas(str(crd_dir), group)
    schema = schemas.get((group, version, obj.get("kind")))
    if schema is None:
        known = sorted({f"{g}/{v} {k}" for g, v, k in schemas if g == group}) or [
            "none for this group"
        ]
        return [
            Finding(
                object_id(obj),
                "apiVersion/kind",
                f"unknown kind {obj.get('apiVersion')} {obj.get('kind')}; known: {', '.join(known)}",
                "crd",
            )
        ]
    validator = jsonschema.Draft7Validator(_strict(schema))
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    return [_schema_error_finding(obj, e, "crd") for e in errors]


# --------------------------------------------------------------------------------------------------
# 3. Course policy
# --------------------------------------------------------------------------------------------------


# The rules live in kubecourse.policy (reusable over any manifest set); re-exported here for
# callers of validation.policy_findings / validation.pod_specs.
__all__ = ["Report", "check", "json_path", "policy_findings", "pod_specs", "validate"]


# --------------------------------------------------------------------------------------------------
# All layers
# --------------------------------------------------------------------------------------------------


def is_builtin(obj: Manifest) -> bool:
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    return (
        group == ""
        or group.endswith(".k8s.io")
        and not group.endswith(".x-k8s.io")
        or "." not in group
    )


def validate(
    objects: list[Manifest],
    *,
    policy: bool = True,
    crd_dir: Path | str | None = None,
    kubernetes_version: str = C.KUBERNETES_VERSION,
) -> Report:
    """Validate every object; returns a Report (see Report.raise_for_findings)."""
    report = Report()
    crd_path = Path(crd_dir) if crd_dir is not None else default_crd_dir()
    for obj in objects:
        if not isinstance(obj, dict) or not obj.get("kind") or not obj.get("apiVersion"):
            missing = "kind" if isinstance(obj, dict) and not obj.get("kind") else "apiVersion"
            report.findings.append(
                Finding(
                    object_id(obj) if isinstance(obj, dict) else "?",
                    missing,
                    f"{missing} is required",
                    "schema",
                )
            )
            continue
        report.checked.append(object_id(obj))
        found = _check_metadata(obj)
        if is_builtin(obj):
            try:
                found += _validate_builtin(obj, kubernetes_version)
            except kubernetes_validate.SchemaNotFoundError:
                found.append(
                    Finding(
                        object_id(obj),
                        "apiVersion/kind",
                        f"unknown kind {obj['apiVersion']} {obj['kind']} in Kubernetes {kubernetes_version}",
                        "schema",
                    )
                )
        else:
            found += _validate_custom(obj, crd_path, report)
        found += semantic_findings(obj)
        if policy:
            found += policy_findings(obj)
        report.findings.extend(found)
    return report


def check(objects: list[Manifest], **kwargs: Any) -> Report:
    """validate() and raise ManifestError listing every finding; returns the report when clean."""
    report = validate(objects, **kwargs)
    report.raise_for_findings()
    return report
