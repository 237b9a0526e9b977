"""Pod planning: a pod spec -> the processes, environment, folders and network a local run uses.

`plan_pod()` is pure: it reads the pod (metadata + spec) and what the pod refers to (ConfigMaps,
Secrets, through `lookup`) and answers a `PodPlan`; nothing is started or written. `materialize()`
then creates the folders and the ConfigMap/Secret files. The local backend and the fake cluster's
kubelet (tests/fakes/kubelet.py) both run pods through this, so a pod means the same in both.

What is modelled (see the local backend's docstring for the whole list):
  * `$(VAR)` expansion in command/args/env, downward-API `fieldRef`s, Secret/ConfigMap `keyRef`s,
    `envFrom`; `JOB_COMPLETION_INDEX` from the completion-index annotation;
  * volumes are folders: a PVC is `<volumes_root>/<namespace>/<claim>` (it outlives pods), an
    emptyDir/ConfigMap/Secret lives in the pod's folder; every arg/env value under a mountPath is
    rewritten to the folder (longest mountPath first), `subPath` included;
  * the image's `python`/`torchrun` are this environment's interpreter and launcher;
  * cluster DNS for pods under a headless Service is 127.0.0.1, and each Service port is mapped
    to a free local port (`Network`).
"""

from __future__ import annotations

import base64
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ... import constants as C
from ...manifests import Manifest

# Host variables a container image would also define (PATH to find python, locale, thread counts).
PASSTHROUGH_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "VIRTUAL_ENV",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "PYTHONPATH",
    "HF_HOME",
    "HF_HUB_OFFLINE",
)
_VAR_REF = re.compile(r"\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)|\$\$")
_FIELD_LABEL = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")

Lookup = Callable[
    [str, str], "Manifest | None"
]  # (kind, name) -> the object in the pod's namespace


class PodConfigError(Exception):
    """The pod cannot start (Kubernetes: CreateContainerConfigError)."""


def expand_vars(text: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined names are replaced, `$$` escapes, unknown stay as is."""

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(replace, text)


@dataclass(frozen=True)
class Network:
    """Cluster DNS and Service ports as a job's pods see them (every pod here is 127.0.0.1)."""

    host_pattern: re.Pattern | None = None
    ports: dict[int, int] = field(default_factory=dict)

    @classmethod
    def for_services(
        cls, objects: list[Manifest], namespace: str, free_port: Callable[[], int] | None = None
    ) -> Network:
        """From the headless Services (clusterIP: None) among `objects`: their pod host names, and
        a free local port per Service port."""
        services = [
            o
            for o in objects
            if o.get("kind") == "Service" and (o.get("spec") or {}).get("clusterIP") == "None"
        ]
        if not services:
            return cls()
        names = "|".join(re.escape(s["metadata"]["name"]) for s in services)
        ns = re.escape(namespace)
        pattern = re.compile(
            rf"\b[a-z0-9]([-a-z0-9]*[a-z0-9])?\.(?:{names})(?:\.{ns}(?:\.svc(?:\.cluster\.local)?)?)?\b"
        )
        ports: dict[int, int] = {}
        for service in services:
            for port in (service.get("spec") or {}).get("ports") or []:
                ports.setdefault(int(port["port"]), (free_port or _free_port)())
        return cls(pattern, ports)

    def map(self, value: str, env_name: str = "") -> str:
        if self.host_pattern is None:
            return value
        if "PORT" in env_name and value.isdigit() and int(value) in self.ports:
            return str(self.ports[int(value)])
        mapped = self.host_pattern.sub("127.0.0.1", value)
        if mapped != value:
            mapped = re.sub(
                r"127\.0\.0\.1:(\d+)",
                lambda m: f"127.0.0.1:{self.ports.get(int(m.group(1)), int(m.group(1)))}",
                mapped,
            )
        return mapped


@dataclass(frozen=True)
class ContainerPlan:
    name: str
    argv: list[str]
    env: dict[str, str]
    init: bool = False


@dataclass(frozen=True)
class PodPlan:
    """Everything needed to run the pod: containers in order (init first), folders, files."""

    containers: list[ContainerPlan]
    folders: list[Path]  # created before the first container starts
    files: dict[Path, str]  # ConfigMap/Secret volume keys
    grace_s: float  # terminationGracePeriodSeconds

    @property
    def init_containers(self) -> list[ContainerPlan]:
        return [c for c in self.containers if c.init]

    @property
    def main_containers(self) -> list[ContainerPlan]:
        return [c for c in self.containers if not c.init]


@dataclass(frozen=True)
class PodContext:
    """Where a pod runs here: its folders, interpreter and network."""

    volumes_root: Path  # PVC <claim> of namespace <ns> is volumes_root/<ns>/<claim>
    pod_dir: Path  # emptyDir, ConfigMap and Secret volumes
    python: str
    lookup: Lookup
    network: Network = field(default_factory=Network)
    host_env: dict[str, str] = field(default_factory=dict)  # PASSTHROUGH_ENV values of the host


def pvc_dir(volumes_root: Path, namespace: str, claim: str) -> Path:
    return volumes_root / namespace / claim


def plan_pod(pod: Manifest, ctx: PodContext) -> PodPlan:
    """The pod as local processes (raises PodConfigError where the kubelet could not start it)."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    namespace = meta.get("namespace", "default")
    local, files = _volume_folders(spec, namespace, ctx)
    containers = []
    inits = list(spec.get("initContainers") or [])
    for container in inits + list(spec.get("containers") or []):
        mounts = _mounts(container, local)
        argv, env = _container_command(pod, container, mounts, ctx)
        containers.append(ContainerPlan(container["name"], argv, env, container in inits))
    folders = sorted(set(local.values()))
    for container in inits + list(spec.get("containers") or []):
        folders += [
            local[m["name"]] / m["subPath"]
            for m in container.get("volumeMounts") or []
            if m.get("subPath") and m["name"] in local
        ]
    grace = float(spec.get("terminationGracePeriodSeconds", 30))
    return PodPlan(containers, folders, files, grace)


def materialize(plan: PodPlan) -> None:
    """Create the plan's folders and write its ConfigMap/Secret files."""
    for folder in plan.folders:
        folder.mkdir(parents=True, exist_ok=True)
    for path, text in plan.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _volume_folders(
    spec: Manifest, namespace: str, ctx: PodContext
) -> tuple[dict[str, Path], dict[Path, str]]:
    local: dict[str, Path] = {}
    files: dict[Path, str] = {}
    for volume in spec.get("volumes") or []:
        vname = volume["name"]
        path = ctx.pod_dir / "volumes" / vname  # emptyDir, hostPath, CSI...: an empty folder
        if "persistentVolumeClaim" in volume:
            path = pvc_dir(
                ctx.volumes_root, namespace, volume["persistentVolumeClaim"]["claimName"]
            )
        elif "configMap" in volume or "secret" in volume:
            kind, ref = (
                ("ConfigMap", volume["configMap"]["name"])
                if "configMap" in volume
                else ("Secret", volume["secret"]["secretName"])
            )
            for key, value in lookup_data(ctx.lookup, namespace, kind, ref).items():
                files[path / key] = value
        local[vname] = path
    return local, files


def _mounts(container: Manifest, local: dict[str, Path]) -> list[tuple[str, Path]]:
    """(mountPath, local folder) pairs of a container, longest mountPath first."""
    pairs = []
    for mount in container.get("volumeMounts") or []:
        if mount["mountPath"] == "/dev/shm":
            continue  # the host's /dev/shm already is shared memory
        if mount["name"] not in local:
            raise PodConfigError(
                f"container {container['name']}: volumeMount {mount['name']!r} names no volume"
            )
        target = local[mount["name"]]
        if mount.get("subPath"):
            target = target / mount["subPath"]
        pairs.append((mount["mountPath"].rstrip("/") or "/", target))
    return sorted(pairs, key=lambda p: -len(p[0]))


def lookup_data(lookup: Lookup, namespace: str, kind: str, name: str) -> dict[str, str]:
    """The string data of a ConfigMap or Secret (Secret `data` is base64-decoded)."""
    obj = lookup(kind, name)
    if obj is None:
        raise PodConfigError(
            f"{kind.lower()} {name!r} not found in namespace {namespace!r}: submit it with the job"
        )
    data = dict(obj.get("stringData") or {})
    if kind == "Secret":
        data.update({k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()})
    else:
        data.update(obj.get("data") or {})
    return data


def _container_command(
    pod: Manifest, container: Manifest, mounts: list[tuple[str, Path]], ctx: PodContext
) -> tuple[list[str], dict[str, str]]:
    """(argv, env) exactly as the pod would run them, with mount paths mapped to local folders."""
    meta = pod.get("metadata") or {}
    namespace = meta.get("namespace", "default")
    env = dict(ctx.host_env)
    env.update({"PYTHONUNBUFFERED": "1", "HOSTNAME": meta.get("name", "")})
    index = (meta.get("annotations") or {}).get(C.COMPLETION_INDEX_ANNOTATION)
    if index is not None:
        env[C.ENV_COMPLETION_INDEX] = str(index)
    for entry in container.get("env") or []:
        if "value" in entry:
            env[entry["name"]] = expand_vars(str(entry["value"]), env)
        elif "valueFrom" in entry:
            env[entry["name"]] = _value_from(pod, entry["name"], entry["valueFrom"], ctx)
        else:
            env[entry["name"]] = ""
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            ref = source["configMapRef"]["name"]
            env.update(lookup_data(ctx.lookup, namespace, "ConfigMap", ref))
        if "secretRef" in source:
            env.update(lookup_data(ctx.lookup, namespace, "Secret", source["secretRef"]["name"]))
    command = [expand_vars(part, env) for part in container.get("command") or []]
    args = [expand_vars(part, env) for part in container.get("args") or []]
    if not command:
        raise PodConfigError(
            f"container {container['name']} has no command: the local backend cannot "
            "read the image's ENTRYPOINT, so the manifest must spell it out"
        )
    # Only what the pod spec says is a path inside the container: this machine's interpreter and
    # passed-through host values (PATH, PYTHONPATH, ...) may lie under a mountPath such as /tmp.
    pod_keys = set(env) - set(ctx.host_env) | {e["name"] for e in container.get("env") or []}
    command = [map_path(part, mounts) for part in command]
    argv = local_program(command, ctx.python) + [map_path(a, mounts) for a in args]
    argv = [ctx.network.map(a) for a in argv]
    env = {
        k: ctx.network.map(map_path(v, mounts) if k in pod_keys else v, k) for k, v in env.items()
    }
    # The image's `python`/`torchrun` are this environment's, also for scripts that call them.
    env["PATH"] = str(Path(ctx.python).parent) + os.pathsep + env.get("PATH", os.defpath)
    return argv, env


def local_program(command: list[str], python: str) -> list[str]:
    """The image's `python` / `torchrun` are this environment's interpreter and launcher."""
    program = command[0]
    if program in ("python", "python3") or program.endswith(("/python", "/python3")):
        return [python, *command[1:]]
    if program == "torchrun":
        return [python, "-m", "torch.distributed.run", *command[1:]]
    return command


def map_path(value: str, mounts: list[tuple[str, Path]]) -> str:
    """A value (or the value of a `--flag=value`) under a mountPath, rewritten to its folder."""
    prefix, sep, rest = value.partition("=") if value.startswith("-") else ("", "", value)
    for mount_path, local in mounts:
        if rest == mount_path or rest.startswith(mount_path + "/"):
            rest = str(local) + rest[len(mount_path) :]
            break
    return f"{prefix}{sep}{rest}"


def _value_from(pod: Manifest, name: str, source: Manifest, ctx: PodContext) -> str:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    namespace = meta.get("namespace", "default")
    if "fieldRef" in source:
        path = source["fieldRef"]["fieldPath"]
        simple = {
            "metadata.name": meta.get("name", ""),
            "metadata.namespace": namespace,
            "metadata.uid": meta.get("uid", ""),
            "spec.nodeName": spec.get("nodeName") or "localhost",
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
            "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        }
        if path in simple:
            return simple[path]
        match = _FIELD_LABEL.match(path)
        if match:
            table = meta.get("labels" if match.group(1) == "labels" else "annotations") or {}
            return table.get(match.group(2), "")
        raise PodConfigError(f"env {name}: fieldRef {path!r} is not supported by the local backend")
    if "resourceFieldRef" in source:
        return "0"
    for key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
        if key in source:
            ref = source[key]
            try:
                data = lookup_data(ctx.lookup, namespace, kind, ref["name"])
            except PodConfigError:
                if ref.get("optional"):
                    return ""
                raise
            if ref["key"] not in data:
                raise PodConfigError(
                    f"env {name}: key {ref['key']!r} not found in {kind.lower()} {ref['name']!r}"
                )
            return data[ref["key"]]
    raise PodConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")


def host_env() -> dict[str, str]:
    """The PASSTHROUGH_ENV values of this process's environment."""
    return {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}


def _free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
