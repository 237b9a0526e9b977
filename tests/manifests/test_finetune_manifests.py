"""Lesson 03 (fine-tuning): the token comes from a Secret by reference; the example Secret is
valid, holds only a placeholder, and is never applied (kustomize and load_lesson both skip it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubecourse import load_lesson, render, validate
from kubecourse.manifests import is_local_config, parse_yaml, pod_spec, trainer_container, workload

FOLDER = Path(__file__).resolve().parents[2] / "manifests" / "03-finetune"


def test_job_reads_the_token_from_a_secret_file():
    job = workload(load_lesson("03"))
    trainer = trainer_container(pod_spec(job))
    env = {e["name"]: e for e in trainer["env"]}
    assert "HF_TOKEN" not in env  # a file, not an environment variable
    path = env["HF_TOKEN_PATH"]["value"]
    mount = next(m for m in trainer["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    assert mount["readOnly"] is True
    volume = next(v for v in pod_spec(job)["volumes"] if v["name"] == mount["name"])
    (source,) = volume["projected"]["sources"]
    assert source["secret"] == {
        "name": "hf-token",
        "optional": True,
        "items": [{"key": "token", "path": path.rsplit("/", 1)[1]}],
    }
    resources = trainer_container(pod_spec(job))["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod_spec(job)["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"model-cache", "finetune-outputs"}


def test_example_secret_is_a_placeholder_that_is_never_applied():
    (secret,) = parse_yaml((FOLDER / "hf-token-secret.example.yaml").read_text())
    assert secret["kind"] == "Secret" and is_local_config(secret)
    assert validate([secret]).ok  # a placeholder passes the no-inline-secret policy
    kinds = [o["kind"] for o in load_lesson("03")]
    assert "Secret" not in kinds and kinds.count("PersistentVolumeClaim") == 2
    listed = yaml.safe_load((FOLDER / "kustomization.yaml").read_text())["resources"]
    assert "hf-token-secret.example.yaml" in listed  # listed, and dropped by kustomize's build


@pytest.mark.parametrize(
    ("annotations", "local"),
    [
        ({}, False),
        ({"config.kubernetes.io/local-config": "true"}, True),
        ({"config.kubernetes.io/local-config": "false"}, False),
        (None, False),
    ],
)
def test_is_local_config(annotations, local):
    meta = {"name": "x"} if annotations is None else {"name": "x", "annotations": annotations}
    assert is_local_config({"kind": "Secret", "metadata": meta}) is local


def test_a_real_token_in_the_secret_fails_the_policy():
    (secret,) = parse_yaml((FOLDER / "hf-token-secret.example.yaml").read_text())
    secret["stringData"]["token"] = "hf_abcdefghijklmnopqrstuvwxyz0123456789"
    report = validate([secret])
    assert not report.ok and "stringData.token" in str(report)


def test_render_sets_model_and_method():
    job = workload(render("03", name="ft", env={"MODEL_ID": "", "METHOD": "lora"}))
    env = {e["name"]: e.get("value") for e in trainer_container(pod_spec(job))["env"]}
    assert env["MODEL_ID"] == "" and env["METHOD"] == "lora"
