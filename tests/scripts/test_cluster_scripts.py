"""scripts/cluster-up.sh, cluster-down.sh and build-image.sh in --dry-run mode: every command is
printed, none is run (kubectl/helm/kind/docker on PATH are tripwires), every chart is installed at
the pin of cluster/versions.env, and docs/cluster-setup.md states the same pins."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from kubecourse.cluster import pinned_versions
from tests.guards import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = pinned_versions()
TOOLS = ("kubectl", "helm", "kind", "docker", "podman", "buildah")


@pytest.fixture
def tripwire(tmp_path):
    """A PATH whose cluster tools only record that they were called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "called"
    for tool in TOOLS:
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\necho {tool} "$@" >> {log}\nexit 97\n')
        script.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return env, log


def _dry_run(script, *args, env):
    result = subprocess.run(
        [str(ROOT / "scripts" / script), *args, "--dry-run"],
        capture_output=True, text=True, env=env, timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    commands = [
        shlex.split(line[2:]) for line in result.stdout.splitlines() if line.startswith("+ ")
    ]
    return commands, result.stdout


def _helm(commands):
    """release -> (chart, version) of every `helm upgrade --install`."""
    out = {}
    for cmd in commands:
        if cmd[:3] == ["helm", "upgrade", "--install"]:
            assert "--version" in cmd, cmd  # every chart is pinned
            out[cmd[3]] = (cmd[4], cmd[cmd.index("--version") + 1])
    return out


@pytest.mark.parametrize(
    "args, releases",
    [
        (
            ["--kind"],
            {"kueue", "jobset", "kubeflow-trainer", "volcano", "kube-prometheus-stack", "nfs"},
        ),
        (
            ["--existing", "--gpu"],
            {
                "gpu-operator",
                "kueue",
                "jobset",
                "kubeflow-trainer",
                "volcano",
                "kube-prometheus-stack",
                "nfs",
            },
        ),
    ],
    ids=["kind", "gpu-cluster"],
)
def test_cluster_up_installs_every_operator_at_its_pin(args, releases, tripwire):
    env, log = tripwire
    commands, out = _dry_run("cluster-up.sh", *args, env=env)
    assert not log.exists(), f"a dry run ran: {log.read_text()}"
    helm = _helm(commands)
    assert set(helm) == releases
    pins = {
        "gpu-operator": ("GPU_OPERATOR_CHART", "GPU_OPERATOR_VERSION"),
        "kueue": ("KUEUE_CHART", "KUEUE_VERSION"),
        "jobset": ("JOBSET_CHART", "JOBSET_VERSION"),
        "kubeflow-trainer": ("TRAINER_CHART", "TRAINER_VERSION"),
        "volcano": ("VOLCANO_CHART", "VOLCANO_VERSION"),
        "kube-prometheus-stack": ("PROMETHEUS_STACK_CHART", "PROMETHEUS_STACK_VERSION"),
        "nfs": ("NFS_CHART", "NFS_VERSION"),
    }
    for release, (chart, version) in helm.items():
        assert (chart, version) == (VERSIONS[pins[release][0]], VERSIONS[pins[release][1]])
    assert [
        "kubectl",
        "apply",
        "--server-side",
        "-k",
        VERSIONS["TRAINING_OPERATOR_KUSTOMIZE"],
    ] in commands
    assert f">= v{VERSIONS['KUBERNETES_MIN']}" in out  # the minimum version is checked
    assert commands[-1][-3:] == ["doctor", "--namespace", "kubecourse"]
    kind = [c for c in commands if c[:1] == ["kind"]]
    if "--kind" in args:
        assert kind[0][:3] == ["kind", "create", "cluster"]
        assert kind[0][kind[0].index("--image") + 1] == VERSIONS["KIND_NODE_IMAGE"]
    else:
        assert kind == []
        gpu_sharing = [
            "kubectl",
            "apply",
            "-f",
            str(ROOT / "manifests/04-production/admin/gpu-sharing.yaml"),
        ]
        assert commands.index(gpu_sharing) < [
            c[3] if c[:1] == ["helm"] else "" for c in commands
        ].index("gpu-operator")


def test_cluster_up_loads_the_lab_image_into_kind(tripwire):
    env, _ = tripwire
    commands, _ = _dry_run(
        "cluster-up.sh", "--kind", "--image", "ghcr.io/kubecourse/labs:0.1.0", env=env
    )
    assert [
        "kind",
        "load",
        "docker-image",
        "ghcr.io/kubecourse/labs:0.1.0",
        "--name",
        "kubecourse",
    ] in commands


@pytest.mark.parametrize("mode", ["--kind", "--existing"])
def test_cluster_down_undoes_it(mode, tripwire):
    env, log = tripwire
    commands, _ = _dry_run("cluster-down.sh", mode, env=env)
    assert not log.exists()
    if mode == "--kind":
        assert commands == [["kind", "delete", "cluster", "--name", "kubecourse"]]
    else:
        uninstalled = {c[2] for c in commands if c[:2] == ["helm", "uninstall"]}
        assert uninstalled == {
            "gpu-operator",
            "kueue",
            "jobset",
            "kubeflow-trainer",
            "volcano",
            "kube-prometheus-stack",
            "nfs",
        }


@pytest.mark.parametrize(
    "present, tool",
    [
        (("docker", "podman", "buildah"), "docker"),
        (("podman", "buildah"), "podman"),
        (("buildah",), "buildah"),
        ((), "docker"),
    ],
)
def test_make_image_uses_the_tool_that_exists(present, tool, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in present:
        (bin_dir / name).write_text("#!/bin/sh\nexit 97\n")
        (bin_dir / name).chmod(0o755)
    for name in ("bash", "env", "sed", "mkdir", "dirname", "printf", "cat"):
        path = subprocess.run(
            ["sh", "-c", f"command -v {name}"], capture_output=True, text=True
        ).stdout.strip()
        if path:
            (bin_dir / name).symlink_to(path)
    env = {**os.environ, "PATH": str(bin_dir)}
    commands, out = _dry_run("build-image.sh", "--kind", env=env)
    assert commands[0][0] == tool and str(ROOT / "labs/Dockerfile") in commands[0]
    assert commands[1][:3] == ["kind", "load", "docker-image"]
    assert "build/image.env" in out
    if not present:
        assert "none of docker, podman, buildah" in out


def test_the_docs_state_every_pin_and_the_minimum_version():
    docs = (ROOT / "docs" / "cluster-setup.md").read_text()
    for key, value in VERSIONS.items():
        assert value in docs, f"docs/cluster-setup.md does not state {key}={value}"
    assert f"Kubernetes {VERSIONS['KUBERNETES_MIN']}" in docs


def test_the_minimum_version_matches_what_the_manifests_are_validated_against():
    from kubecourse import constants as C

    assert VERSIONS["KUBERNETES_VALIDATED"] == C.KUBERNETES_VERSION
    minimum = tuple(int(p) for p in VERSIONS["KUBERNETES_MIN"].split("."))
    assert minimum <= tuple(int(p) for p in C.KUBERNETES_VERSION.split(".")[:2])
