"""The course policy: security and hygiene rules for any set of manifests, with per-field findings.

    from kubecourse.policy import check_policy
    for finding in check_policy(objects):
        print(finding)      # Job/x: spec.template.spec.containers[0].image: image 'x' is not pinned ...

What it checks, and why:
  * Pod Security Standard "restricted" (what a namespace labelled
    `pod-security.kubernetes.io/enforce: restricted` admits): non-root, no privilege escalation,
    all capabilities dropped (only NET_BIND_SERVICE may be added), a seccomp profile, no privileged
    containers, no host namespaces, ports or hostPath, only the volume types the standard allows;
  * pinned images (a tag other than `latest`, or a digest): the pod that retries at 3 a.m. runs
    the code you tested;
  * cpu and memory requests and limits on every container (quotas and the scheduler need them),
    GPU requests equal to limits;
  * no secret values written into a manifest (Secret data, env values of secret-looking names);
  * RBAC: no wildcards in apiGroups/resources/verbs, no escalate/bind/impersonate verbs, no
    binding to `cluster-admin`/`admin`/`edit`, nor to the anonymous or all-authenticated groups;
  * a container's own settings win over the pod's: `runAsNonRoot: false` or an `Unconfined`
    seccomp/AppArmor profile on a container fails even when the pod sets the safe value;
    ephemeral (debug) containers are checked like the others; procMount must be Default; only
    the safe sysctls are allowed;
  * `image_warnings`: images pinned by tag only, not by digest (a warning for cluster runs).
It reads workloads of every kind the course uses: Pod, batch/v1 Job and CronJob, JobSet,
PyTorchJob, Volcano Job (batch.volcano.sh), and Deployment-like objects with a pod template.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator

from . import constants as C
from .errors import Finding
from .manifests import Manifest, object_id

_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|CREDENTIAL)", re.I)
_PLACEHOLDER = re.compile(r"^\s*(<[^>]*>|REPLACE[-_ A-Z]*|CHANGE[-_ ]?ME|PLACEHOLDER)\s*$", re.I)
# Volume types Pod Security "restricted" allows (everything else, hostPath first, is rejected).
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
# Roles that make a subject an administrator of a namespace or of the whole cluster (`edit` can
# read every Secret of the namespace and run anything as any ServiceAccount in it).
ADMIN_ROLES = {"cluster-admin", "admin", "edit"}
# Sysctls Pod Security "baseline"/"restricted" allow (namespaced, no effect outside the pod).
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
_SECCOMP_OK = ("RuntimeDefault", "Localhost")
# Env var names that hold where a secret is (a file), not the secret itself.
_REFERENCE_NAME = re.compile(r"_(PATH|FILE|DIR)$", re.I)
# Groups everybody (or every logged-in identity) belongs to: binding them grants the world.
OPEN_GROUPS = {"system:anonymous", "system:unauthenticated", "system:authenticated"}
# Verbs that let a subject grant itself more than it has.
ESCALATING_VERBS = {"escalate", "bind", "impersonate"}


def image_pinned(image: str) -> bool:
    """A digest, or a tag other than `latest` (`repo:1.2.3`, not `repo` or `repo:latest`)."""
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and not last.endswith(":latest")


def pod_specs(obj: Manifest) -> Iterator[tuple[str, Manifest]]:
    """Every pod spec inside an object, with its path."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]

    def template_spec(holder: Manifest) -> Manifest:
        return ((holder.get("template") or {}).get("spec")) or {}

    if kind == "Pod":
        yield "spec", spec
    elif kind == "Job" and group == "batch.volcano.sh":
        for i, task in enumerate(spec.get("tasks") or []):
            yield f"spec.tasks[{i}].template.spec", template_spec(task)
    elif kind == "CronJob":
        job_spec = (spec.get("jobTemplate") or {}).get("spec") or {}
        yield "spec.jobTemplate.spec.template.spec", template_spec(job_spec)
    elif kind == "JobSet":
        for i, rjob in enumerate(spec.get("replicatedJobs") or []):
            inner = (rjob.get("template") or {}).get("spec") or {}
            yield f"spec.replicatedJobs[{i}].template.spec.template.spec", template_spec(inner)
    elif kind == "PyTorchJob":
        for role, replica in (spec.get("pytorchReplicaSpecs") or {}).items():
            yield f"spec.pytorchReplicaSpecs.{role}.template.spec", template_spec(replica)
    elif kind in ("TrainingRuntime", "ClusterTrainingRuntime"):  # a JobSet template inside
        jobset = template_spec(spec)
        for i, rjob in enumerate(jobset.get("replicatedJobs") or []):
            inner = (rjob.get("template") or {}).get("spec") or {}
            yield (
                f"spec.template.spec.replicatedJobs[{i}].template.spec.template.spec",
                template_spec(inner),
            )
    elif isinstance(spec.get("template"), dict) and "spec" in spec["template"]:
        # batch/v1 Job, Deployment, StatefulSet, DaemonSet, ReplicaSet.
        yield "spec.template.spec", template_spec(spec)


def _secret_findings(obj: Manifest, bad) -> None:
    for section in ("data", "stringData"):
        for key, value in (obj.get(section) or {}).items():
            text = str(value)
            if section == "data":
                try:
                    text = base64.b64decode(text).decode()
                except Exception:  # noqa: BLE001 - undecodable data is still a literal value
                    pass
            if not _PLACEHOLDER.match(text):
                bad(
                    f"{section}.{key}",
                    "secret value written into the manifest; create it with "
                    "`kubectl create secret generic ... --from-literal` and keep only a placeholder here",
                )


def _pod_findings(base: str, spec: Manifest, bad) -> None:
    pod_sc = spec.get("securityContext") or {}
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host):
            bad(f"{base}.{host}", f"{host} shares the node's namespace (Pod Security 'restricted')")
    for i, volume in enumerate(spec.get("volumes") or []):
        types = [k for k in volume if k != "name"]
        for vtype in types:
            if vtype not in RESTRICTED_VOLUME_TYPES:
                bad(
                    f"{base}.volumes[{i}].{vtype}",
                    f"volume type {vtype!r} is not allowed by Pod Security 'restricted' "
                    f"(allowed: {', '.join(sorted(RESTRICTED_VOLUME_TYPES))})",
                )
    if pod_sc.get("runAsUser") == 0:
        bad(f"{base}.securityContext.runAsUser", "runAsUser 0 is root")
    _pod_security_findings(base, spec, bad)
    containers = [
        (section, i, c)
        for section in ("initContainers", "containers", "ephemeralContainers")
        for i, c in enumerate(spec.get(section) or [])
    ]
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type") in _SECCOMP_OK
    every_container_seccomp = bool(containers)
    for section, i, container in containers:
        where = f"{base}.{section}[{i}]"
        if not _container_findings(where, container, pod_sc, bad, section == "ephemeralContainers"):
            every_container_seccomp = False
    if not (pod_seccomp or every_container_seccomp):
        bad(
            f"{base}.securityContext.seccompProfile",
            "set seccompProfile.type: RuntimeDefault (Pod Security 'restricted')",
        )


def _container_findings(
    where: str, container: Manifest, pod_sc: Manifest, bad, ephemeral: bool = False
) -> bool:
    """One container's findings; True when the container sets a safe seccomp profile itself.
    Ephemeral (debug) containers cannot have resources: only their security is checked."""
    _container_override_findings(where, container.get("securityContext") or {}, bad)
    image = container.get("image") or ""
    if image and not image_pinned(image):  # no image at all: kubecourse.semantic says so
        bad(
            f"{where}.image",
            f"image {image!r} is not pinned: use a version tag or digest, never ':latest' or no tag",
        )
    resources = container.get("resources") or {}
    for kind in ("requests", "limits") if not ephemeral else ():
        for resource in ("cpu", "memory"):
            if resource not in (resources.get(kind) or {}):
                bad(
                    f"{where}.resources.{kind}.{resource}",
                    f"{kind}.{resource} is not set (the scheduler and quotas need it)",
                )
    gpu_req = (resources.get("requests") or {}).get(C.GPU_RESOURCE)
    gpu_lim = (resources.get("limits") or {}).get(C.GPU_RESOURCE)
    if gpu_req is not None and gpu_lim is not None and str(gpu_req) != str(gpu_lim):
        bad(
            f"{where}.resources.limits.{C.GPU_RESOURCE}",
            "GPU requests and limits must be equal",
        )
    sc = container.get("securityContext") or {}
    if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
        bad(
            f"{where}.securityContext.runAsNonRoot",
            "containers must run as non-root (runAsNonRoot: true here or in the pod securityContext)",
        )
    if sc.get("runAsUser") == 0:
        bad(f"{where}.securityContext.runAsUser", "runAsUser 0 is root")
    if sc.get("allowPrivilegeEscalation") is not False:
        bad(
            f"{where}.securityContext.allowPrivilegeEscalation",
            "set allowPrivilegeEscalation: false",
        )
    if sc.get("privileged"):
        bad(f"{where}.securityContext.privileged", "privileged containers are not allowed")
    capabilities = sc.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        bad(
            f"{where}.securityContext.capabilities.drop",
            "drop all capabilities (drop: [ALL]) as Pod Security 'restricted' requires",
        )
    for added in capabilities.get("add") or []:
        if added != "NET_BIND_SERVICE":
            bad(
                f"{where}.securityContext.capabilities.add",
                f"capability {added!r} may not be added (only NET_BIND_SERVICE)",
            )
    for j, port in enumerate(container.get("ports") or []):
        if port.get("hostPort"):
            bad(f"{where}.ports[{j}].hostPort", "hostPort binds the node's port")
    for j, env in enumerate(container.get("env") or []):
        if (
            "value" in env
            and _SECRET_NAME.search(env.get("name", ""))
            and not _REFERENCE_NAME.search(env.get("name", ""))
            and not _PLACEHOLDER.match(str(env["value"]))
        ):
            bad(
                f"{where}.env[{j}].value",
                f"{env['name']} looks like a secret written inline; use valueFrom.secretKeyRef",
            )
    return (sc.get("seccompProfile") or {}).get("type") in _SECCOMP_OK


def _pod_security_findings(base: str, spec: Manifest, bad) -> None:
    """Pod-level settings Pod Security checks besides the ones in _pod_findings."""
    pod_sc = spec.get("securityContext") or {}
    for j, sysctl in enumerate(pod_sc.get("sysctls") or []):
        if sysctl.get("name") not in SAFE_SYSCTLS:
            bad(
                f"{base}.securityContext.sysctls[{j}].name",
                f"sysctl {sysctl.get('name')!r} is not one of the safe sysctls Pod Security allows",
            )
    if (pod_sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        bad(f"{base}.securityContext.appArmorProfile.type", "AppArmor must not be Unconfined")
    if (pod_sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        bad(f"{base}.securityContext.seccompProfile.type", "seccomp must not be Unconfined")


def _container_override_findings(where: str, sc: Manifest, bad) -> None:
    """What a container sets for itself wins over the pod: its unsafe values fail on their own."""
    if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        bad(f"{where}.securityContext.seccompProfile.type", "seccomp must not be Unconfined")
    if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        bad(f"{where}.securityContext.appArmorProfile.type", "AppArmor must not be Unconfined")
    if sc.get("procMount", "Default") != "Default":
        bad(f"{where}.securityContext.procMount", "procMount must be Default (masked /proc)")


def _apparmor_annotation_findings(obj: Manifest, bad) -> None:
    """The pre-1.30 AppArmor annotations on a pod template."""
    for base, _spec in pod_specs(obj):
        meta = _template_meta(obj, base)
        for key, value in (meta.get("annotations") or {}).items():
            if (
                key.startswith("container.apparmor.security.beta.kubernetes.io/")
                and value == "unconfined"
            ):
                bad(f"{base.removesuffix('.spec')}.metadata.annotations", f"{key}: unconfined")


def _template_meta(obj: Manifest, base: str) -> Manifest:
    if base == "spec":  # a Pod
        return obj.get("metadata") or {}
    node: object = obj
    for part in base.removesuffix(".spec").replace("]", "").replace("[", ".").split("."):
        node = node[int(part)] if isinstance(node, list) else (node or {}).get(part, {})  # type: ignore[union-attr]
    return (node or {}).get("metadata") or {}  # type: ignore[union-attr]


def image_warnings(objects: Iterable[Manifest]) -> list[Finding]:
    """Images pinned by tag only: a tag can be pushed again, a digest cannot. Not a policy
    failure (the local backend runs no image); a warning when the objects go to a cluster."""
    out = []
    for obj in objects:
        for base, spec in pod_specs(obj):
            for section in ("initContainers", "containers", "ephemeralContainers"):
                for i, container in enumerate(spec.get(section) or []):
                    image = container.get("image") or ""
                    if image_pinned(image) and "@sha256:" not in image:
                        out.append(
                            Finding(
                                object_id(obj),
                                f"{base}.{section}[{i}].image",
                                f"image {image!r} is pinned by tag only: render it with the "
                                "digest `make image` recorded (image=<repo>@sha256:...)",
                                "policy",
                            )
                        )
    return out


def _rbac_findings(obj: Manifest, bad) -> None:
    kind = obj.get("kind")
    if kind in ("Role", "ClusterRole"):
        for i, rule in enumerate(obj.get("rules") or []):
            for key in ("apiGroups", "resources", "verbs", "nonResourceURLs"):
                if "*" in (rule.get(key) or []):
                    bad(
                        f"rules[{i}].{key}",
                        f"wildcard '*' in {key}: list exactly what is needed (least privilege)",
                    )
            for verb in sorted(set(rule.get("verbs") or []) & ESCALATING_VERBS):
                bad(f"rules[{i}].verbs", f"verb {verb!r} lets the subject grant itself more rights")
    elif kind in ("RoleBinding", "ClusterRoleBinding"):
        role = (obj.get("roleRef") or {}).get("name")
        if role in ADMIN_ROLES:
            bad("roleRef.name", f"binding {role!r} grants full control; bind a narrow Role instead")
        for i, subject in enumerate(obj.get("subjects") or []):
            if subject.get("kind") == "Group" and subject.get("name") in OPEN_GROUPS:
                bad(f"subjects[{i}].name", f"group {subject['name']!r} includes everybody")


def _trainjob_findings(obj: Manifest, bad) -> None:
    """A TrainJob's pods come from its runtime (checked there); its trainer block is checked here."""
    trainer = (obj.get("spec") or {}).get("trainer") or {}
    if "image" in trainer and not image_pinned(trainer["image"]):
        bad(
            "spec.trainer.image",
            f"image {trainer['image']!r} is not pinned: use a version tag or digest",
        )
    resources = trainer.get("resourcesPerNode") or {}
    for section in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in (resources.get(section) or {}):
                bad(
                    f"spec.trainer.resourcesPerNode.{section}.{resource}",
                    f"{section}.{resource} is not set (the scheduler and quotas need it)",
                )


def policy_findings(obj: Manifest) -> list[Finding]:
    """The course policy for one object (see the module docstring); empty when it complies."""
    oid, out = object_id(obj), []

    def bad(path: str, message: str) -> None:
        out.append(Finding(oid, path, message, "policy"))

    if obj.get("kind") == "Secret":
        _secret_findings(obj, bad)
    if obj.get("kind") == "TrainJob":
        _trainjob_findings(obj, bad)
    _rbac_findings(obj, bad)
    _apparmor_annotation_findings(obj, bad)
    for base, spec in pod_specs(obj):
        _pod_findings(base, spec, bad)
    return out


def check_policy(objects: Iterable[Manifest]) -> list[Finding]:
    """Every policy finding over a manifest set (any kinds; objects without pods are checked as
    RBAC/Secrets where they are one). An empty list means the set complies."""
    return [finding for obj in objects for finding in policy_findings(obj)]


def findings_table(findings: Iterable[Finding]) -> str:
    """A plain-text table (object | field | problem) for notebooks and the CLI."""
    rows = [(f.obj, f.field, f.message) for f in findings]
    if not rows:
        return "no policy findings"
    width_obj = max(len(r[0]) for r in rows)
    width_field = max(len(r[1]) for r in rows)
    lines = [f"{'object':<{width_obj}}  {'field':<{width_field}}  problem"]
    lines += [f"{o:<{width_obj}}  {f:<{width_field}}  {m}" for o, f, m in rows]
    return "\n".join(lines)


__all__ = [
    "check_policy",
    "findings_table",
    "image_pinned",
    "image_warnings",
    "pod_specs",
    "policy_findings",
]
