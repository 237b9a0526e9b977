"""The Job and Pod API rules a schema cannot express: what the API server would answer 422/400.

kubernetes-validate checks each field's type against the OpenAPI schema; the server also checks
how fields fit together (pkg/apis/core/validation, pkg/apis/batch/validation). These are the rules
learners hit, checked before anything is submitted, each a Finding naming the object and the field
(rule "semantic/<id>", the ids in RULES):

  Job   restartPolicy Never/OnFailure (Always restarts the trainer forever; the server refuses it),
        only Never with a podFailurePolicy, backoffLimit/completions/parallelism/
        ttlSecondsAfterFinished >= 0, activeDeadlineSeconds >= 1, Indexed: completions set and
        room in the name for "-<index>" (pod hostnames are DNS labels, at most 63 characters),
        backoffLimitPerIndex only when Indexed, podFailurePolicy actions and exit codes;
  Pod   unique container, volume, mount-path, port and env names, an image on every container,
        mounts of defined volumes, quantities that parse ("4 cores" does not), requests <= limits
        (== for GPUs and other extended resources), resource names ("gpu" is not one), downward-API
        fieldPaths an env var may read, ports 1-65535 with names of at most 15 characters,
        imagePullPolicy values, container names that are DNS labels;
  any   label keys and values (at most 63 characters, alphanumeric at both ends).

Pod templates are found in every kind the course submits (kubecourse.policy.pod_specs); the Job
rules apply to batch/v1 Jobs and to the Job templates inside a JobSet.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal

from . import constants as C
from .errors import Finding
from .manifests import Manifest, object_id
from .policy import pod_specs

Report = Callable[[str, str, str], None]  # (rule id, field, message)

# resource.Quantity's grammar (apimachinery): number, then a binary/decimal suffix or exponent.
QUANTITY = re.compile(
    r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][-+]?[0-9]+)?$"
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_STANDARD_RESOURCES = {"cpu", "memory", "ephemeral-storage"}
# Downward API fields an env var may read (a volume may also read all labels/annotations).
ENV_FIELD_PATHS = (
    "metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
    "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs",
)  # fmt: skip
_SUBSCRIPTED = re.compile(r"^metadata\.(labels|annotations)\['[^']+'\]$")
POD_FAILURE_ACTIONS = ("FailJob", "FailIndex", "Ignore", "Count")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
HOSTNAME_MAX = 63
RULES = (
    "nonnegative", "active-deadline", "job-restart-policy", "pod-failure-policy-restart",
    "indexed-completions", "backoff-limit-per-index", "indexed-name-room", "pod-failure-action",
    "pod-failure-exit-code-0", "duplicate-volume", "duplicate-container", "container-name",
    "image-missing", "image-pull-policy", "mount-undefined-volume", "duplicate-mount-path",
    "port-range", "port-name", "duplicate-env", "env-field-path", "resource-name", "quantity",
    "extended-limit-missing", "extended-equal", "request-above-limit", "label-key", "label-value",
)  # fmt: skip
_SUFFIX = {"": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3")}
_SUFFIX.update({s: Decimal(1000) ** (i + 1) for i, s in enumerate("kMGTPE")})
_SUFFIX.update({s + "i": Decimal(1024) ** (i + 1) for i, s in enumerate("KMGTPE")})


def quantity_value(value: object) -> Decimal | None:
    """The number a resource.Quantity stands for ("500m" -> 0.5, "2Gi" -> 2147483648), None when
    it does not parse (the API server rejects the whole object then, with 400)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Decimal(str(value))
    match = QUANTITY.match(str(value))
    if not match:
        return None
    number = Decimal(
        match.group(1) if not str(value).startswith(("+", "-")) else str(value)[0] + match.group(1)
    )
    suffix = match.group(3) or ""
    if suffix[:1] in ("e", "E"):
        return number * Decimal(10) ** int(suffix[1:])
    return number * _SUFFIX[suffix]


def semantic_findings(obj: Manifest) -> list[Finding]:
    """Every semantic problem of one object (empty when the server would accept it)."""
    findings: list[Finding] = []
    oid = object_id(obj)

    def bad(rule: str, field: str, message: str) -> None:
        findings.append(Finding(oid, field, message, f"semantic/{rule}"))

    _labels((obj.get("metadata") or {}).get("labels"), "metadata.labels", bad)
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Job" and group == "batch":
        _job(spec, (obj.get("metadata") or {}).get("name") or "", "spec", bad)
    elif obj.get("kind") == "JobSet":
        for i, rjob in enumerate(spec.get("replicatedJobs") or []):
            job_spec = ((rjob or {}).get("template") or {}).get("spec") or {}
            # JobSet names each Job <jobset>-<replicatedJob>-<job index>.
            job_name = f"{obj['metadata'].get('name', '')}-{rjob.get('name', '')}-{_count(rjob.get('replicas')) - 1}"
            _job(job_spec, job_name, f"spec.replicatedJobs[{i}].template.spec", bad)
    for path, pod in pod_specs(obj):
        _pod(pod, path, bad)
    return findings


def _count(value: object) -> int:
    """An int field's value (1 when unset or not an int: the schema layer reports the type)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


# --- Job -----------------------------------------------------------------------------------------


def _job(spec: Manifest, name: str, at: str, bad: Report) -> None:
    for key in ("backoffLimit", "completions", "parallelism", "ttlSecondsAfterFinished"):
        value = spec.get(key)
        if isinstance(value, int) and value < 0:
            bad("nonnegative", f"{at}.{key}", f"{key} is {value}: it must be 0 or more")
    deadline = spec.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and deadline <= 0:
        bad(
            "active-deadline",
            f"{at}.activeDeadlineSeconds",
            f"activeDeadlineSeconds is {deadline}: it must be at least 1 (seconds the whole Job "
            "may run; 0 would fail it at once with DeadlineExceeded)",
        )
    template = spec.get("template") or {}
    restart = (template.get("spec") or {}).get("restartPolicy")
    if not template.get("spec"):
        pass  # no pod template at all: the schema layer says it is required
    elif restart not in ("Never", "OnFailure"):
        bad(
            "job-restart-policy",
            f"{at}.template.spec.restartPolicy",
            f"restartPolicy {restart!r} is not allowed in a Job: use Never (the Job controller "
            "makes a new pod on failure, counted against backoffLimit) or OnFailure",
        )
    elif spec.get("podFailurePolicy") is not None and restart != "Never":
        bad(
            "pod-failure-policy-restart",
            f"{at}.template.spec.restartPolicy",
            f"restartPolicy {restart!r} with a podFailurePolicy: only Never is allowed (the "
            "policy decides about failed pods, so the kubelet must not restart them in place)",
        )
    _indexed(spec, name, at, bad)
    _pod_failure_policy(spec.get("podFailurePolicy") or {}, f"{at}.podFailurePolicy", bad)
    _labels((template.get("metadata") or {}).get("labels"), f"{at}.template.metadata.labels", bad)


def _indexed(spec: Manifest, name: str, at: str, bad: Report) -> None:
    indexed = spec.get("completionMode") == "Indexed"
    completions = spec.get("completions")
    if indexed and completions is None:
        bad(
            "indexed-completions",
            f"{at}.completions",
            "an Indexed Job needs completions (the number of indexes)",
        )
    if spec.get("backoffLimitPerIndex") is not None and not indexed:
        bad(
            "backoff-limit-per-index",
            f"{at}.backoffLimitPerIndex",
            "backoffLimitPerIndex needs completionMode: Indexed",
        )
    if indexed and isinstance(completions, int) and completions > 0 and name:
        hostname = f"{name}-{completions - 1}"
        if len(hostname) > HOSTNAME_MAX:
            room = HOSTNAME_MAX - 1 - len(str(completions - 1))
            bad(
                "indexed-name-room",
                "metadata.name",
                f"name {name!r} ({len(name)} characters) leaves no room for the pod index: the "
                f"pods' hostnames <name>-<index> (e.g. {hostname!r}) must be at most "
                f"{HOSTNAME_MAX} characters, so the name may have at most {room}",
            )


def _pod_failure_policy(policy: Manifest, at: str, bad: Report) -> None:
    for i, rule in enumerate(policy.get("rules") or []):
        action = (rule or {}).get("action")
        if action not in POD_FAILURE_ACTIONS:
            bad("pod-failure-action", f"{at}.rules[{i}].action",
                f"action {action!r} is not one of {', '.join(POD_FAILURE_ACTIONS)}")  # fmt: skip
        exit_codes = (rule or {}).get("onExitCodes") or {}
        if exit_codes.get("operator") == "In" and 0 in (exit_codes.get("values") or []):
            j = exit_codes["values"].index(0)
            bad("pod-failure-exit-code-0", f"{at}.rules[{i}].onExitCodes.values[{j}]",
                "exit code 0 (success) cannot be matched with operator In")  # fmt: skip


# --- Pod -----------------------------------------------------------------------------------------


def _pod(spec: Manifest, at: str, bad: Report) -> None:
    volumes = []
    for i, volume in enumerate(spec.get("volumes") or []):
        name = (volume or {}).get("name")
        if name in volumes:
            bad(
                "duplicate-volume", f"{at}.volumes[{i}].name", f"volume name {name!r} is used twice"
            )
        volumes.append(name)
    names: list[str] = []
    for section in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(section) or []):
            where = f"{at}.{section}[{i}]"
            name = (container or {}).get("name")
            if name in names:
                bad(
                    "duplicate-container",
                    f"{where}.name",
                    f"container name {name!r} is used twice in one pod",
                )
            elif isinstance(name, str) and name and not _DNS_LABEL.match(name):
                bad("container-name", f"{where}.name", f"container name {name!r} must be a DNS label: lower-case "
                    "letters, digits and '-', at most 63 characters")  # fmt: skip
            names.append(name)
            _container(container or {}, where, set(volumes), bad)


def _container(container: Manifest, at: str, volumes: set, bad: Report) -> None:
    name = container.get("name") or "?"
    if not container.get("image"):
        bad(
            "image-missing",
            f"{at}.image",
            f"container {name!r} has no image: the kubelet has nothing to run",
        )
    policy = container.get("imagePullPolicy")
    if policy is not None and policy not in PULL_POLICIES:
        bad(
            "image-pull-policy",
            f"{at}.imagePullPolicy",
            f"imagePullPolicy {policy!r} is not one of {', '.join(PULL_POLICIES)}",
        )
    paths: list[str] = []
    for j, mount in enumerate(container.get("volumeMounts") or []):
        if mount.get("name") not in volumes:
            bad("mount-undefined-volume", f"{at}.volumeMounts[{j}].name",
                f"mounts volume {mount.get('name')!r}, which spec.volumes does not define "
                f"(defined: {', '.join(sorted(map(str, volumes))) or 'none'})")  # fmt: skip
        if mount.get("mountPath") in paths:
            bad(
                "duplicate-mount-path",
                f"{at}.volumeMounts[{j}].mountPath",
                f"mountPath {mount.get('mountPath')!r} is used twice",
            )
        paths.append(mount.get("mountPath"))
    _ports(container.get("ports") or [], f"{at}.ports", bad)
    _env(container.get("env") or [], f"{at}.env", bad)
    _resources(container.get("resources") or {}, f"{at}.resources", bad)


def _ports(ports: list, at: str, bad: Report) -> None:
    for j, port in enumerate(ports):
        number, name = (port or {}).get("containerPort"), (port or {}).get("name")
        if isinstance(number, int) and not 1 <= number <= 65535:
            bad(
                "port-range",
                f"{at}[{j}].containerPort",
                f"containerPort {number} is not between 1 and 65535",
            )
        if name is not None and (len(name) > 15 or not _PORT_NAME.match(name) or "--" in name
                                 or not re.search("[a-z]", name)):  # fmt: skip
            bad("port-name", f"{at}[{j}].name", f"port name {name!r} must be at most 15 lower-case letters, "
                "digits and '-' with at least one letter (an IANA service name)")  # fmt: skip


def _env(env: list, at: str, bad: Report) -> None:
    seen: list[str] = []
    for j, var in enumerate(env):
        name = (var or {}).get("name")
        if name in seen:
            bad("duplicate-env", f"{at}[{j}].name", f"env var {name!r} is set twice: the last one silently wins "
                "(the server accepts it with only a warning)")  # fmt: skip
        seen.append(name)
        path = (((var or {}).get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if path is not None and path not in ENV_FIELD_PATHS and not _SUBSCRIPTED.match(path):
            bad("env-field-path", f"{at}[{j}].valueFrom.fieldRef.fieldPath",
                f"fieldPath {path!r} is not a field an env var can read; use one of "
                f"{', '.join(ENV_FIELD_PATHS)}, metadata.labels['<key>'] or "
                "metadata.annotations['<key>']")  # fmt: skip


def _resources(resources: Manifest, at: str, bad: Report) -> None:
    parsed: dict[str, dict[str, Decimal]] = {"requests": {}, "limits": {}}
    for section in ("requests", "limits"):
        for name, value in (resources.get(section) or {}).items():
            if (
                name not in _STANDARD_RESOURCES
                and not name.startswith("hugepages-")
                and not ("/" in name and _qualified(name))
            ):
                bad("resource-name", f"{at}.{section}.{name}", f"{name!r} is not a resource name: use cpu, memory, "
                    f"ephemeral-storage or a qualified name such as {C.GPU_RESOURCE}")  # fmt: skip
                continue
            number = quantity_value(value)
            if number is None:
                bad("quantity", f"{at}.{section}.{name}", f"{value!r} is not a quantity: write e.g. '4', "
                    "'500m' (cpu) or '16Gi' (memory), without spaces or words")  # fmt: skip
                continue
            parsed[section][name] = number
    for name, request in parsed["requests"].items():
        limit = parsed["limits"].get(name)
        extended = name not in _STANDARD_RESOURCES and not name.startswith("hugepages-")
        if extended and name not in (resources.get("limits") or {}):
            bad("extended-limit-missing", f"{at}.limits.{name}", f"{name} is requested but has no limit: extended resources "
                "such as GPUs need limits equal to requests")  # fmt: skip
        elif limit is not None and extended and request != limit:
            bad(
                "extended-equal",
                f"{at}.requests.{name}",
                f"requests.{name} must equal limits.{name} (GPUs are not shared)",
            )
        elif limit is not None and request > limit:
            bad("request-above-limit", f"{at}.requests.{name}", f"requests.{name} ({resources['requests'][name]}) is "
                f"above limits.{name} ({resources['limits'][name]}): a request can be at most the limit")  # fmt: skip


def _qualified(name: str) -> bool:
    prefix, _, short = name.rpartition("/")
    return (
        bool(_DNS_SUBDOMAIN.match(prefix)) and len(short) <= 63 and bool(_LABEL_NAME.match(short))
    )


def _labels(labels: object, at: str, bad: Report) -> None:
    if not isinstance(labels, dict):
        return
    for key, value in labels.items():
        prefix, _, short = str(key).rpartition("/")
        if (
            len(short) > 63
            or not _LABEL_NAME.match(short)
            or (prefix and not _DNS_SUBDOMAIN.match(prefix))
        ):
            bad("label-key", f"{at}.{key}", f"label key {key!r} is invalid: [prefix/]name, the name at most 63 "
                "alphanumeric characters, '-', '_' or '.'")  # fmt: skip
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            bad("label-value", f"{at}.{key}", f"label value {value!r} is invalid: at most 63 characters, letters, "
                "digits, '-', '_' or '.', starting and ending with a letter or digit (quote "
                "numbers and booleans in YAML)")  # fmt: skip
