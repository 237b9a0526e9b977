"""What a real kube-apiserver rejects when a Job or Pod is created, for the fake API server.

Written from the Kubernetes API rules (pkg/apis/core/validation and pkg/apis/batch/validation, as
of v1.34/v1.36), independently of kubecourse (the fake never imports it): the fake must catch what
the course's own checks miss, not agree with them by construction. Three layers, in the order the
server applies them:

  1. decoding (400 BadRequest): a quantity that does not parse ("4 cores", "16GB") fails the
     whole body: `Job in version "v1" cannot be handled as a Job: quantities must match ...`;
  2. strict field validation (400 BadRequest, only with `fieldValidation=Strict`): unknown fields,
     checked against the OpenAPI schema data the kubernetes-validate package ships (JSON files
     only; its validator is not used): `strict decoding error: unknown field "spec.backofLimit"`;
  3. validation (422 Invalid, one StatusCause per problem): `causes(kind, obj)`.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

Cause = tuple[str, str, str]  # (reason, field, message) as in metav1.StatusCause

QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
QUANTITY_HELP = (
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)
_SUFFIX = {
    "": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": 10**3,
    "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "Ki": 2**10, "Mi": 2**20,
    "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"
)
_STANDARD_CONTAINER_RESOURCES = {"cpu", "memory", "ephemeral-storage"}
# Downward API fields a container's env may read (validEnvDownwardAPIFieldPathExpressions).
_ENV_FIELD_PATHS = {
    "metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
    "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs",
}  # fmt: skip
_FIELD_LABELS = _ENV_FIELD_PATHS | {"metadata.labels", "metadata.annotations"}
_SUBSCRIPTED = re.compile(r"^metadata\.(labels|annotations)\['[^']+'\]$")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")


# --- 1. decoding ---------------------------------------------------------------------------------


def parse_quantity(text: Any) -> Decimal | None:
    """A resource.Quantity's value, None when it does not parse."""
    if isinstance(text, (int, float)):
        return Decimal(str(text))
    match = QUANTITY.match(str(text))
    if not match:
        return None
    number, suffix = match.groups()
    try:
        if suffix in _SUFFIX:
            return Decimal(number) * Decimal(_SUFFIX[suffix])
        if suffix[:1] in "eE":
            return Decimal(number) * Decimal(10) ** int(suffix[1:])
    except (InvalidOperation, ValueError):
        return None
    return None


def _quantity_fields(obj: Any) -> list[Any]:
    """Every value that decodes into a resource.Quantity: requests/limits of containers and
    PVCs, and emptyDir sizeLimit."""
    found: list[Any] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("requests", "limits") and isinstance(value, dict):
                found += list(value.values())
            elif key == "sizeLimit":
                found.append(value)
            else:
                found += _quantity_fields(value)
    elif isinstance(obj, list):
        for value in obj:
            found += _quantity_fields(value)
    return found


def decode_error(kind: str, version: str, obj: dict) -> str | None:
    """The 400 message a body with an unparsable quantity gets, None when it decodes."""
    for value in _quantity_fields(obj.get("spec")):
        if parse_quantity(value) is None:
            return f'{kind} in version "{version}" cannot be handled as a {kind}: {QUANTITY_HELP}'
    return None


# --- 2. strict field validation ------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _definitions() -> tuple[Path, dict]:
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or not spec.submodule_search_locations:
        return Path(), {}
    root = Path(spec.submodule_search_locations[0]) / "kubernetes-json-schema"
    versions = sorted(
        root.glob("v1.3*-local"), key=lambda p: [int(x) for x in p.name[1:-6].split(".")]
    )
    if not versions:
        return Path(), {}
    folder = versions[-1]
    document = json.loads((folder / "_definitions.json").read_text())
    return folder, document.get("$defs") or document.get("definitions") or {}


def _schema_for(group: str, version: str, kind: str) -> dict | None:
    folder, _ = _definitions()
    name = (
        f"{kind.lower()}-{group.split('.')[0]}-{version}.json"
        if group
        else f"{kind.lower()}-{version}.json"
    )
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else None


def _resolve(schema: dict) -> dict:
    ref = schema.get("$ref")
    if ref:
        return _resolve(_definitions()[1].get(ref.rsplit("/", 1)[-1], {}))
    return schema


def _unknown(value: Any, schema: dict, path: str) -> list[str]:
    schema = _resolve(schema)
    if isinstance(value, dict) and "properties" in schema:
        out = []
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            if key not in schema["properties"]:
                out.append(child)
            else:
                out += _unknown(item, schema["properties"][key], child)
        return out
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        return [
            x
            for key, item in value.items()
            for x in _unknown(item, schema["additionalProperties"], f"{path}.{key}")
        ]
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [
            x
            for i, item in enumerate(value)
            for x in _unknown(item, schema["items"], f"{path}[{i}]")
        ]
    return []


def unknown_fields(group: str, version: str, kind: str, obj: dict) -> list[str]:
    """Field paths the kind's schema does not declare (empty for kinds without schema data)."""
    schema = _schema_for(group, version, kind)
    return _unknown(obj, schema, "") if schema else []


def strict_error(fields: list[str]) -> str:
    return "strict decoding error: " + ", ".join(f'unknown field "{f}"' for f in fields)


# --- 3. validation (422) -------------------------------------------------------------------------


def _invalid(field: str, value: Any, message: str) -> Cause:
    shown = f'"{value}"' if isinstance(value, str) else json.dumps(value)
    return ("FieldValueInvalid", field, f"Invalid value: {shown}: {message}")


def _nonnegative(spec: dict, key: str, at: str) -> list[Cause]:
    value = spec.get(key)
    if isinstance(value, int) and value < 0:
        return [_invalid(f"{at}.{key}", value, "must be greater than or equal to 0")]
    return []


def job_causes(obj: dict) -> list[Cause]:
    """validateJob: the JobSpec rules learners hit (the pod template is pod_spec_causes)."""
    name = (obj.get("metadata") or {}).get("name") or ""
    spec = obj.get("spec") or {}
    causes: list[Cause] = []
    for key in ("parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished"):
        causes += _nonnegative(spec, key, "spec")
    deadline = spec.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and deadline < 0:
        causes.append(
            _invalid("spec.activeDeadlineSeconds", deadline, "must be greater than or equal to 0")
        )
    indexed = spec.get("completionMode") == "Indexed"
    completions = spec.get("completions")
    if indexed and isinstance(completions, int) and completions > 0:
        # The Job controller names Indexed pods' hostnames <job>-<index>: a DNS label (<= 63).
        hostname = f"{name}-{completions - 1}"
        if len(hostname) > 63 or not _DNS_LABEL.match(hostname):
            message = f"will not able to create pod with invalid DNS label: {hostname}"
            causes.append(_invalid("metadata.name", name, message))
    if spec.get("backoffLimitPerIndex") is not None and not indexed:
        causes.append(
            _invalid(
                "spec.backoffLimitPerIndex",
                spec["backoffLimitPerIndex"],
                "requires indexed completion mode",
            )
        )
    template = spec.get("template") or {}
    restart = (template.get("spec") or {}).get("restartPolicy")
    if spec.get("podFailurePolicy") is not None and restart not in (None, "Never"):
        causes.append(
            _invalid(
                "spec.template.spec.restartPolicy",
                restart,
                'only "Never" is supported when podFailurePolicy is specified',
            )
        )
    causes += _pod_failure_policy_causes(spec.get("podFailurePolicy") or {})
    causes += label_causes((template.get("metadata") or {}).get("labels"), "spec.template.labels")
    return causes


def _pod_failure_policy_causes(policy: dict) -> list[Cause]:
    causes: list[Cause] = []
    for i, rule in enumerate(policy.get("rules") or []):
        at = f"spec.podFailurePolicy.rules[{i}]"
        action = rule.get("action")
        if action not in ("FailJob", "FailIndex", "Ignore", "Count"):
            supported = '"Count", "FailIndex", "FailJob", "Ignore"'
            causes.append(
                ("FieldValueNotSupported", f"{at}.action",
                 f'Unsupported value: "{action}": supported values: {supported}')
            )  # fmt: skip
        exit_codes = rule.get("onExitCodes") or {}
        if exit_codes.get("operator") == "In":
            for j, code in enumerate(exit_codes.get("values") or []):
                if code == 0:
                    causes.append(
                        _invalid(
                            f"{at}.onExitCodes.values[{j}]", 0, "must not be 0 for the In operator"
                        )
                    )
    return causes


def label_causes(labels: Any, at: str) -> list[Cause]:
    causes = []
    for value in (labels or {}).values():
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            causes.append(
                _invalid(at, value, "a valid label must be an empty string or consist of "
                         "alphanumeric characters, '-', '_' or '.', and must start and end with "
                         "an alphanumeric character, at most 63 characters")
            )  # fmt: skip
    return causes


def pod_spec_causes(spec: dict, at: str) -> list[Cause]:
    """ValidatePodSpec: containers, volumes and their mounts, resources, env, ports."""
    causes: list[Cause] = []
    volumes = spec.get("volumes") or []
    seen: set[str] = set()
    for i, volume in enumerate(volumes):
        name = (volume or {}).get("name")
        if name in seen:
            causes.append(
                ("FieldValueDuplicate", f"{at}.volumes[{i}].name", f'Duplicate value: "{name}"')
            )
        seen.add(name)
    names: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(group) or []):
            causes += _container_causes(container or {}, f"{at}.{group}[{i}]", seen, names)
    deadline = spec.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and deadline < 1:
        causes.append(
            _invalid(
                f"{at}.activeDeadlineSeconds",
                deadline,
                "must be between 1 and 2147483647, inclusive",
            )
        )
    return causes


def _container_causes(container: dict, at: str, volumes: set[str], names: set[str]) -> list[Cause]:
    causes: list[Cause] = []
    name = container.get("name")
    if name in names:
        causes.append(("FieldValueDuplicate", f"{at}.name", f'Duplicate value: "{name}"'))
    elif isinstance(name, str) and name and (len(name) > 63 or not _DNS_LABEL.match(name)):
        causes.append(_invalid(f"{at}.name", name, "a lowercase RFC 1123 label must consist of "
                               "lower case alphanumeric characters or '-'"))  # fmt: skip
    names.add(name)
    policy = container.get("imagePullPolicy")
    if policy is not None and policy not in _PULL_POLICIES:
        causes.append(
            ("FieldValueNotSupported", f"{at}.imagePullPolicy",
             f'Unsupported value: "{policy}": supported values: "Always", "IfNotPresent", "Never"')
        )  # fmt: skip
    paths: set[str] = set()
    for j, mount in enumerate(container.get("volumeMounts") or []):
        if mount.get("name") not in volumes:
            causes.append(
                (
                    "FieldValueNotFound",
                    f"{at}.volumeMounts[{j}].name",
                    f'Not found: "{mount.get("name")}"',
                )
            )
        if mount.get("mountPath") in paths:
            causes.append(
                _invalid(
                    f"{at}.volumeMounts[{j}].mountPath", mount.get("mountPath"), "must be unique"
                )
            )
        paths.add(mount.get("mountPath"))
    for j, port in enumerate(container.get("ports") or []):
        number = port.get("containerPort")
        if isinstance(number, int) and not 1 <= number <= 65535:
            causes.append(
                _invalid(
                    f"{at}.ports[{j}].containerPort",
                    number,
                    "must be between 1 and 65535, inclusive",
                )
            )
    for j, env in enumerate(container.get("env") or []):
        field_ref = ((env or {}).get("valueFrom") or {}).get("fieldRef")
        if field_ref:
            causes += _field_ref_causes(
                field_ref.get("fieldPath") or "", f"{at}.env[{j}].valueFrom.fieldRef.fieldPath"
            )
    return causes + _resource_causes(container.get("resources") or {}, f"{at}.resources")


def _field_ref_causes(path: str, at: str) -> list[Cause]:
    if path in _ENV_FIELD_PATHS or _SUBSCRIPTED.match(path):
        return []
    if path in _FIELD_LABELS:
        supported = ", ".join(f'"{p}"' for p in sorted(_ENV_FIELD_PATHS))
        return [
            (
                "FieldValueNotSupported",
                at,
                f'Unsupported value: "{path}": supported values: {supported}',
            )
        ]
    return [_invalid(at, path, f"error converting fieldPath: field label not supported: {path}")]


def _resource_causes(resources: dict, at: str) -> list[Cause]:
    causes: list[Cause] = []
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    for section, values in (("limits", limits), ("requests", requests)):
        for name in values:
            if (
                name not in _STANDARD_CONTAINER_RESOURCES
                and not name.startswith("hugepages-")
                and ("/" not in name or not _QUALIFIED.match(name))
            ):
                causes.append(
                    _invalid(
                        f"{at}.{section}[{name}]",
                        name,
                        "must be a standard resource type or fully qualified",
                    )
                )
    for name, value in requests.items():
        request = parse_quantity(value)
        overcommit = name in _STANDARD_CONTAINER_RESOURCES or name.startswith("hugepages-")
        if name not in limits:
            if not overcommit:
                causes.append(
                    (
                        "FieldValueRequired",
                        f"{at}.limits[{name}]",
                        "Required value: Limit must be set for non overcommitable resources",
                    )
                )
            continue
        limit = parse_quantity(limits[name])
        if request is None or limit is None:
            continue
        if not overcommit and request != limit:
            causes.append(
                _invalid(
                    f"{at}.requests", str(value), f"must be equal to {name} limit of {limits[name]}"
                )
            )
        elif request > limit:
            causes.append(
                _invalid(
                    f"{at}.requests",
                    str(value),
                    f"must be less than or equal to {name} limit of {limits[name]}",
                )
            )
    return causes


def causes(group: str, kind: str, obj: dict) -> list[Cause]:
    """Every 422 cause of a Job or Pod (the checks the fake's apiserver.py does not already do)."""
    spec = obj.get("spec") or {}
    if (group, kind) == ("batch", "Job"):
        template_spec = (spec.get("template") or {}).get("spec") or {}
        return job_causes(obj) + pod_spec_causes(template_spec, "spec.template.spec")
    if (group, kind) == ("", "Pod"):
        return pod_spec_causes(spec, "spec")
    return []
