"""The shared Job controller (kubecourse.backends.local.controller) with a scripted host: no processes, no server.
Each pod's outcome comes from a script per index; the table says how the Job must end."""

from __future__ import annotations

import threading
import time

import pytest

from kubecourse.backends.local.controller import (
    JobController,
    JobSpec,
    PodOutcome,
    failure_action,
)

POLICY = [
    {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2]}},
    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
]
OK, CRASH, CONFIG, EVICTED = (
    (True, 1, False),
    (False, 137, False),
    (False, 2, False),
    (False, 143, True),
)


class ScriptedHost:
    def __init__(self, script: dict, delay_s: float = 0.0):
        self.lock = threading.Condition(threading.RLock())
        self.script = {k: list(v) for k, v in script.items()}
        self.delay_s = delay_s
        self.pods: list[tuple[int | None, str]] = []
        self.events: list[str] = []
        self.final: tuple[str, str] | None = None
        self.stop = False
        self.count = (0, 0)

    def create_pod(self, index):
        name = f"pod-{len(self.pods)}"
        self.pods.append((index, name))
        return (index, name)

    def run_pod(self, pod):
        index, name = pod
        time.sleep(self.delay_s)
        succeeded, code, disrupted = self.script[index].pop(0)
        return PodOutcome(name, succeeded, 0 if succeeded else code, disrupted)

    def stopped(self):
        return self.stop

    def counts(self, succeeded, failed):
        self.count = (succeeded, failed)

    def event(self, type_, reason, message):
        self.events.append(reason)

    def finish(self, phase, reason, message):
        self.final = (phase, reason)


CASES = [
    ("succeeds", {}, {None: [OK]}, ("Succeeded", "Completed"), (1, 0), 1),
    ("retry-then-succeed", {}, {None: [CRASH, OK]}, ("Succeeded", "Completed"), (1, 1), 2),
    (
        "backoff-limit",
        {"backoffLimit": 1},
        {None: [CRASH, CRASH]},
        ("Failed", "BackoffLimitExceeded"),
        (0, 2),
        2,
    ),
    (
        "fail-job-rule",
        {"backoffLimit": 5, "podFailurePolicy": {"rules": POLICY}},
        {None: [CONFIG]},
        ("Failed", "PodFailurePolicy"),
        (0, 0),
        1,
    ),
    (
        "disruption-ignored",
        {"backoffLimit": 0, "podFailurePolicy": {"rules": POLICY}},
        {None: [EVICTED, EVICTED, OK]},
        ("Succeeded", "Completed"),
        (1, 0),
        3,
    ),
    (
        "indexed-retries-its-index",
        {"completions": 2, "parallelism": 2, "completionMode": "Indexed"},
        {0: [OK], 1: [CRASH, OK]},
        ("Succeeded", "Completed"),
        (2, 1),
        3,
    ),
]


@pytest.mark.parametrize(
    ("spec", "script", "final", "counts", "pods"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_controller_outcomes(spec, script, final, counts, pods):
    host = ScriptedHost(script)
    JobController(JobSpec.from_job({"spec": spec}), host).run()
    assert host.final == final
    assert host.count == counts
    assert len(host.pods) == pods
    if spec.get("completionMode") == "Indexed":
        assert sorted(i for i, _ in host.pods) == [0, 1, 1]  # the retry keeps its index


def test_active_deadline_fails_the_job():
    host = ScriptedHost({None: [OK]}, delay_s=1.0)
    JobController(JobSpec.from_job({"spec": {"activeDeadlineSeconds": 0.2}}), host).run()
    assert host.final == ("Failed", "DeadlineExceeded")


def test_parallelism_bounds_the_running_pods():
    running, peak = [0], [0]

    class Counting(ScriptedHost):
        def run_pod(self, pod):
            with self.lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.05)
            with self.lock:
                running[0] -= 1
            return PodOutcome(pod[1], True, 0)

    host = Counting({})
    spec = {"completions": 4, "parallelism": 2, "completionMode": "Indexed"}
    JobController(JobSpec.from_job({"spec": spec}), host).run()
    assert host.final == ("Succeeded", "Completed") and peak[0] == 2


@pytest.mark.parametrize(
    ("outcome", "action"),
    [
        (PodOutcome("p", False, 2), "FailJob"),
        (PodOutcome("p", False, 143, disrupted=True), "Ignore"),
        (PodOutcome("p", False, 1), "Count"),
        (PodOutcome("p", False, None), "Count"),
    ],
)
def test_failure_action(outcome, action):
    assert failure_action(POLICY, outcome) == action


def test_not_in_exit_code_rule():
    rules = [{"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [0, 143]}}]
    assert failure_action(rules, PodOutcome("p", False, 3)) == "FailJob"
    assert failure_action(rules, PodOutcome("p", False, 143)) == "Count"
