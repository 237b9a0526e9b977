"""The alert rules: one source of truth, promtool-checked and unit-tested.

A missing promtool is an error (the setup installs it), never a skip: CI must prove the rules.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.guards import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "monitoring" / "training-alerts.rules.yml"
RULE_TESTS = REPO / "monitoring" / "training-alerts.test.yml"
PROMETHEUS_RULE = REPO / "manifests" / "05-monitoring" / "prometheusrule.yaml"
ALERTS = {
    "TrainingStalled",
    "TrainingLossNotFinite",
    "TrainingThroughputDrop",
    "TrainingGPUUnderutilised",
    "TrainingCheckpointTooOld",
}


def promtool() -> str:
    path = shutil.which("promtool") or "/usr/bin/promtool"
    assert Path(path).is_file(), (
        "promtool is missing: run `make setup` or scripts/ensure-prometheus.sh (apt-get install prometheus)"
    )
    return path


def test_prometheusrule_embeds_exactly_the_rule_file():
    plain = yaml.safe_load(RULES.read_text())
    operator = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert operator["spec"]["groups"] == plain["groups"], (
        "manifests/05-monitoring/prometheusrule.yaml drifted from monitoring/training-alerts.rules.yml: "
        "copy the groups across (the rule file is the source)"
    )
    assert {r["alert"] for g in plain["groups"] for r in g["rules"]} == ALERTS


def test_every_alert_has_a_unit_test_and_a_runbook_entry():
    tested = {
        t["alertname"]
        for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for t in case["alert_rule_test"]
        if t["exp_alerts"]
    }
    assert tested == ALERTS
    runbook = (REPO / "docs" / "runbook.md").read_text()
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            anchor = rule["annotations"]["runbook"].split("#")[1]
            assert f"## {anchor.replace('-', ' ')}".lower() in runbook.lower(), anchor


def test_promtool_checks_and_unit_tests_pass():
    check = subprocess.run(
        [promtool(), "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "5 rules found" in check.stdout
    run = subprocess.run(
        [promtool(), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        cwd=RULE_TESTS.parent,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_promtool_unit_tests_catch_a_broken_rule(tmp_path):
    # The tests can fail: loosen the NaN rule's threshold and they must.
    broken = RULES.read_text().replace(
        "increase(kubecourse_train_nonfinite_steps_total[10m]) > 0",
        "increase(kubecourse_train_nonfinite_steps_total[10m]) > 5",
    )
    (tmp_path / RULES.name).write_text(broken)
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    run = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        cwd=tmp_path,
    )
    assert run.returncode != 0 and "TrainingLossNotFinite" in run.stdout + run.stderr
