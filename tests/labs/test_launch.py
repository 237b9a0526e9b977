"""labs/launch.sh: what it decides from each Kubernetes environment (table-driven, --dry-run), how it
fails, and that it waits for the master's DNS name with a bound."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.guards import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "labs" / "launch.sh"
# Variables any of the cases sets; cleared first so the host environment cannot leak in.
KNOWN = (
    "PET_NNODES PET_NODE_RANK PET_NPROC_PER_NODE PET_MASTER_ADDR PET_MASTER_PORT JOBSET_NAME "
    "REPLICATED_JOB_NAME JOB_INDEX JOB_COMPLETION_INDEX NNODES NPROC_PER_NODE MASTER_ADDR "
    "MASTER_PORT RANK WORLD_SIZE JOB_NAME RDZV_ID MAX_RESTARTS DNS_TIMEOUT_S"
).split()


def launch(env: dict[str, str], *flags: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in KNOWN}
    return subprocess.run(
        ["bash", str(LAUNCH), *flags, "--", "-m", "labs.lm_pretrain", "--smoke"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        cwd=REPO,
    )


def decision(out: str) -> dict[str, str]:
    line = next(x for x in out.splitlines() if x.startswith("launch: source="))
    return dict(re.findall(r"(\w+)=(\S+)", line.split(" nnodes=", 1)[1].join(["nnodes=", ""])))


CASES = [
    # (id, env, flags, expected nnodes, node_rank, nproc, master, source starts with)
    ("nothing: one node", {}, [], "1", "0", "1", "127.0.0.1:29500", "flags"),
    (
        "indexed job",
        {
            "JOB_COMPLETION_INDEX": "1",
            "NNODES": "2",
            "NPROC_PER_NODE": "4",
            "MASTER_ADDR": "lm-job-0.lm-job",
            "JOB_NAME": "lm-job",
        },
        [],
        "2",
        "1",
        "4",
        "lm-job-0.lm-job:29500",
        "Indexed Job",
    ),
    (
        "jobset derives the master",
        {
            "JOBSET_NAME": "lm-jobset",
            "REPLICATED_JOB_NAME": "workers",
            "JOB_INDEX": "0",
            "JOB_COMPLETION_INDEX": "2",
            "NNODES": "3",
        },
        [],
        "3",
        "2",
        "1",
        "lm-jobset-workers-0-0.lm-jobset:29500",
        "JobSet",
    ),
    (
        "pytorchjob: RANK and WORLD_SIZE count pods",
        {
            "RANK": "1",
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "lm-pytorchjob-master-0",
            "MASTER_PORT": "23456",
        },
        [],
        "2",
        "1",
        "1",
        "lm-pytorchjob-master-0:23456",
        "PyTorchJob",
    ),
    (
        "trainjob PET variables win",
        {
            "PET_NNODES": "4",
            "PET_NODE_RANK": "3",
            "PET_NPROC_PER_NODE": "8",
            "PET_MASTER_ADDR": "lm-trainjob-node-0-0.lm-trainjob",
            "PET_MASTER_PORT": "29400",
            "JOB_COMPLETION_INDEX": "3",
        },
        [],
        "4",
        "3",
        "8",
        "lm-trainjob-node-0-0.lm-trainjob:29400",
        "TrainJob",
    ),
    (
        "flags beat the environment",
        {"JOB_COMPLETION_INDEX": "1", "NNODES": "2", "MASTER_ADDR": "a.b"},
        ["--nnodes", "3", "--node-rank", "2", "--nproc-per-node", "2", "--master-addr", "host"],
        "3",
        "2",
        "2",
        "host:29500",
        "Indexed Job",
    ),
]


@pytest.mark.parametrize(
    "env, flags, nnodes, node_rank, nproc, master, source",
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_decides_from_the_environment(env, flags, nnodes, node_rank, nproc, master, source):
    result = launch(env, "--dry-run", *flags)
    assert result.returncode == 0, result.stderr
    got = decision(result.stdout)
    assert (got["nnodes"], got["node_rank"], got["nproc_per_node"], got["master"]) == (
        nnodes,
        node_rank,
        nproc,
        master,
    )
    assert f"source={source}" in result.stdout
    command = next(x for x in result.stdout.splitlines() if "would run" in x)
    host, port = master.rsplit(":", 1)
    assert f"--rdzv-endpoint={host}:{port}" in command and "--rdzv-backend=c10d" in command
    assert f"--nnodes={nnodes}" in command and f"--nproc-per-node={nproc}" in command
    assert "--max-restarts=3" in command and command.endswith("-m labs.lm_pretrain --smoke")


@pytest.mark.parametrize(
    "env, flags, message",
    [
        ({"JOB_COMPLETION_INDEX": "2", "NNODES": "2", "MASTER_ADDR": "m"}, [], "not below nnodes"),
        ({}, ["--nproc-per-node", "two"], "--nproc-per-node must be a non-negative integer"),
        ({}, ["--bogus", "1"], "unknown flag --bogus"),
        ({}, ["--nnodes"], "--nnodes needs a value"),
    ],
    ids=["rank-too-big", "not-a-number", "unknown-flag", "flag-without-value"],
)
def test_bad_input_exits_3_naming_the_problem(env, flags, message):
    result = launch(env, "--dry-run", *flags)
    assert result.returncode == 3
    assert message in result.stderr


def test_waits_for_dns_then_gives_up_with_exit_4():
    start = time.monotonic()
    result = launch(
        {}, "--master-addr", "no-such-pod-0.no-such-service.invalid", "--dns-timeout", "2"
    )
    assert result.returncode == 4, result.stdout + result.stderr
    assert "did not resolve within 2s" in result.stderr
    assert time.monotonic() - start >= 1.5  # it waited (the bound itself is the hang guard)
