"""The course policy over any manifest set: each rule finds its field, the course manifests pass."""

from __future__ import annotations

import copy

import pytest

from kubecourse.manifests import load_lesson
from kubecourse.policy import (
    check_policy,
    findings_table,
    image_pinned,
    image_warnings,
    policy_findings,
)

from .jobs import job

GOOD = job("good", "print(1)")
POD = "spec.template.spec"
C0 = f"{POD}.containers[0]"


def _with(path: str, value):
    obj = copy.deepcopy(GOOD)
    target = obj
    *parents, last = path.split(".")
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[last] = value
    return obj


def _container(key, value):
    obj = copy.deepcopy(GOOD)
    obj["spec"]["template"]["spec"]["containers"][0][key] = value
    return obj


def _as_root():
    obj = _container(
        "securityContext", {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    )
    obj["spec"]["template"]["spec"]["securityContext"] = {
        "seccompProfile": {"type": "RuntimeDefault"}
    }
    return obj


@pytest.mark.parametrize(
    "obj, field",
    [
        (_container("image", "ghcr.io/x/y:latest"), f"{C0}.image"),
        (_container("image", "ghcr.io/x/y"), f"{C0}.image"),
        (_container("resources", {}), f"{C0}.resources.requests.cpu"),
        (_as_root(), f"{C0}.securityContext.runAsNonRoot"),
        (
            _container(
                "securityContext",
                {
                    "runAsNonRoot": True,
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
                },
            ),
            f"{C0}.securityContext.capabilities.add",
        ),
        (
            _container(
                "securityContext",
                {
                    "runAsNonRoot": True,
                    "privileged": True,
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
            ),
            f"{C0}.securityContext.privileged",
        ),
        (_container("env", [{"name": "HF_TOKEN", "value": "hf_abc"}]), f"{C0}.env[0].value"),
        (_container("ports", [{"containerPort": 80, "hostPort": 80}]), f"{C0}.ports[0].hostPort"),
        (_with("spec.template.spec.hostNetwork", True), f"{POD}.hostNetwork"),
        (
            _with("spec.template.spec.volumes", [{"name": "h", "hostPath": {"path": "/"}}]),
            f"{POD}.volumes[0].hostPath",
        ),
        (
            _with("spec.template.spec.securityContext", {"runAsNonRoot": True}),
            f"{POD}.securityContext.seccompProfile",
        ),
        (
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "s"},
                "stringData": {"token": "abc"},
            },
            "stringData.token",
        ),
        (
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "r"},
                "rules": [{"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}],
            },
            "rules[0].resources",
        ),
        (
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "r"},
                "rules": [
                    {
                        "apiGroups": ["rbac.authorization.k8s.io"],
                        "resources": ["roles"],
                        "verbs": ["escalate"],
                    }
                ],
            },
            "rules[0].verbs",
        ),
        (
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "b"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "x", "namespace": "y"}],
            },
            "roleRef.name",
        ),
        (
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "b"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
                "subjects": [{"kind": "Group", "name": "system:authenticated"}],
            },
            "subjects[0].name",
        ),
    ],
    ids=[
        "latest",
        "no-tag",
        "no-resources",
        "root",
        "cap-add",
        "privileged",
        "inline-secret-env",
        "host-port",
        "host-network",
        "host-path",
        "no-seccomp",
        "secret-value",
        "rbac-wildcard",
        "rbac-escalate",
        "cluster-admin",
        "open-group",
    ],
)
def test_each_rule_names_its_field(obj, field):
    fields = [f.field for f in policy_findings(obj)]
    assert field in fields, fields


def test_a_compliant_job_has_no_findings_and_container_level_seccomp_counts():
    assert check_policy([GOOD]) == []
    obj = copy.deepcopy(GOOD)
    pod = obj["spec"]["template"]["spec"]
    pod["securityContext"].pop("seccompProfile")
    pod["containers"][0]["securityContext"]["seccompProfile"] = {"type": "RuntimeDefault"}
    assert check_policy([obj]) == []


def test_volcano_job_pods_are_checked():
    vcjob = {
        "apiVersion": "batch.volcano.sh/v1alpha1",
        "kind": "Job",
        "metadata": {"name": "v"},
        "spec": {
            "tasks": [
                {
                    "name": "w",
                    "template": {"spec": {"containers": [{"name": "c", "image": "x:latest"}]}},
                }
            ]
        },
    }
    fields = [f.field for f in check_policy([vcjob])]
    assert "spec.tasks[0].template.spec.containers[0].image" in fields


@pytest.mark.parametrize("lesson, part", [("01", None), ("04", "admin"), ("04", "jobs")])
def test_the_course_manifests_comply(lesson, part):
    assert check_policy(load_lesson(lesson, part=part)) == []


@pytest.mark.parametrize(
    "image, pinned",
    [
        ("a:1.0", True),
        ("a", False),
        ("a:latest", False),
        ("reg:5000/a", False),
        ("reg:5000/a:1", True),
        ("a@sha256:ab", True),
    ],
)
def test_image_pinned(image, pinned):
    assert image_pinned(image) is pinned


def test_findings_table_lists_object_field_and_problem():
    text = findings_table(policy_findings(_container("image", "x:latest")))
    assert "Job/good" in text and f"{C0}.image" in text and "not pinned" in text
    assert findings_table([]) == "no policy findings"


def _sc(**extra):
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        **extra,
    }


def _pod(key, value):
    obj = copy.deepcopy(GOOD)
    obj["spec"]["template"]["spec"][key] = value
    return obj


def _pod_sc(**extra):
    obj = copy.deepcopy(GOOD)
    obj["spec"]["template"]["spec"]["securityContext"].update(extra)
    return obj


def _annotated(annotations):
    obj = copy.deepcopy(GOOD)
    obj["spec"]["template"].setdefault("metadata", {})["annotations"] = annotations
    return obj


_DEBUG = {"name": "debug", "image": "busybox:1.37", "securityContext": {"privileged": True}}
_EDIT = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "RoleBinding",
    "metadata": {"name": "b"},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
    "subjects": [{"kind": "User", "name": "u"}],
}


@pytest.mark.parametrize(
    "obj, field",
    [
        # a container's own value wins over the pod's safe one
        (
            _container("securityContext", _sc(runAsNonRoot=False)),
            f"{C0}.securityContext.runAsNonRoot",
        ),
        (
            _container("securityContext", _sc(seccompProfile={"type": "Unconfined"})),
            f"{C0}.securityContext.seccompProfile.type",
        ),
        (
            _container("securityContext", _sc(appArmorProfile={"type": "Unconfined"})),
            f"{C0}.securityContext.appArmorProfile.type",
        ),
        (
            _container("securityContext", _sc(procMount="Unmasked")),
            f"{C0}.securityContext.procMount",
        ),
        (
            _pod("ephemeralContainers", [_DEBUG]),
            f"{POD}.ephemeralContainers[0].securityContext.privileged",
        ),
        (
            _pod_sc(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
            f"{POD}.securityContext.sysctls[0].name",
        ),
        (
            _pod_sc(appArmorProfile={"type": "Unconfined"}),
            f"{POD}.securityContext.appArmorProfile.type",
        ),
        (
            _annotated({"container.apparmor.security.beta.kubernetes.io/trainer": "unconfined"}),
            "spec.template.metadata.annotations",
        ),
        (_EDIT, "roleRef.name"),
    ],
    ids=[
        "container-runAsNonRoot-false",
        "container-seccomp-unconfined",
        "container-apparmor-unconfined",
        "procMount",
        "ephemeral-privileged",
        "unsafe-sysctl",
        "pod-apparmor-unconfined",
        "apparmor-annotation",
        "edit-binding",
    ],
)
def test_the_review_findings_are_caught(obj, field):
    fields = [f.field for f in policy_findings(obj)]
    assert field in fields, fields


@pytest.mark.parametrize(
    "obj",
    [
        _pod_sc(sysctls=[{"name": "net.ipv4.ip_local_port_range", "value": "30000 32767"}]),
        _container(
            "env",
            [{"name": "HF_TOKEN_PATH", "value": "/var/run/secrets/huggingface/token"}],
        ),
        _container("securityContext", _sc(procMount="Default", readOnlyRootFilesystem=True)),
    ],
    ids=["safe-sysctl", "token-file-path", "default-procMount"],
)
def test_safe_settings_pass(obj):
    assert check_policy([obj]) == []


def test_ephemeral_containers_need_no_resources():
    debug = {**_DEBUG, "image": "busybox:1.37", "securityContext": _sc()}
    assert check_policy([_pod("ephemeralContainers", [debug])]) == []


@pytest.mark.parametrize(
    "image, warned",
    [
        ("ghcr.io/kubecourse/labs:0.1.0", True),
        ("ghcr.io/kubecourse/labs@sha256:" + "a" * 64, False),
        ("ghcr.io/kubecourse/labs:0.1.0@sha256:" + "a" * 64, False),
    ],
)
def test_image_warnings_for_tag_only_images(image, warned):
    fields = [f.field for f in image_warnings([_container("image", image)])]
    assert (f"{C0}.image" in fields) is warned


@pytest.mark.parametrize("lesson", ["02", "03", "05"])
def test_every_lesson_complies(lesson):
    assert check_policy(load_lesson(lesson)) == []


@pytest.mark.parametrize(
    "image, ok",
    [
        ("ghcr.io/kubecourse/labs@sha256:" + "0123456789abcdef" * 4, True),
        ("ghcr.io/kubecourse/labs:0.1.0@sha256:" + "0123456789abcdef" * 4, True),
        ("ghcr.io/kubecourse/labs@sha256:abc", False),
        ("ghcr.io/kubecourse/labs:latest", False),
    ],
)
def test_the_image_option_accepts_a_digest(image, ok):
    from kubecourse import OptionError, render

    if ok:
        job = next(o for o in render("01", image=image) if o["kind"] == "Job")
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == image
    else:
        with pytest.raises(OptionError):
            render("01", image=image)
