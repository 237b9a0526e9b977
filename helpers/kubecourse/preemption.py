"""Preempt a real training run at random moments and measure the work each disruption loses.

    from kubecourse.preemption import ha_job, run_preemption_experiment
    run = run_preemption_experiment(client, ha_job("ha-demo", checkpoint_every=10),
                                    disruptions=["SIGTERM", "SIGKILL", "SIGKILL"], seed=0)
    print(run.table())

The job is lesson 04's preemption-tolerant Job (manifests/04-production/jobs/job-ha.yaml) with the
CIFAR lab at smoke size (on the local backend, or a cluster: the same facade verbs). While it trains, the experiment follows its log
and, at a random step within the next two checkpoint intervals, disrupts the running pod:
  * "SIGTERM" = `client.preempt`: the DisruptionTarget condition, SIGTERM, SIGKILL after the
    grace period. The lab finishes its step, writes a final checkpoint and exits 143; the Job's
    podFailurePolicy ignores the failure and a new pod resumes. Expected loss: ~0 steps.
  * "SIGKILL" = `client.kill`: a crash with no chance to save (what the Young/Daly model
    assumes). The new pod resumes from the last periodic checkpoint. Expected loss: half an
    interval on average, never more than one interval.
Lost work per disruption = the last step the killed pod logged - the step the next pod resumed
from (the lab prints `resumed_from=N` when it starts). The trainer must log every step
(`--log-every=1`) for the count to be exact. The signal goes out right after a step is logged, so a
SIGKILL loses up to K completed steps (mean about (K+1)/2, half a step above the model's K/2, which counts
time and so also the step in flight).
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass, field

from . import contract
from .manifests import Manifest, apply_options, load_lesson

KINDS = ("SIGTERM", "SIGKILL")


def ha_job(
    name: str,
    *,
    namespace: str = "default",
    checkpoint_every: int = 10,
    epochs: int = 3,
    train_subset: int = 2000,
    image: str | None = None,
) -> list[Manifest]:
    """Lesson 04's HA Job and its PVCs, at smoke size, logging every step, checkpointing every
    `checkpoint_every` steps. The lab's --smoke batch is 64 images, so an epoch has
    train_subset // 64 steps (31 for the smoke preset's 2000)."""
    objects = [
        o
        for o in load_lesson("04", part="jobs")
        if o["kind"] == "PersistentVolumeClaim" or o["metadata"]["name"] == "cifar10-ha"
    ]
    args = [
        "--data-dir=/data",
        "--dataset=$(DATASET)",
        "--out-dir=/checkpoints/$(JOB_NAME)",
        "--smoke",
        "--prepare",
        f"--epochs={epochs}",
        f"--train-subset={train_subset}",
        "--test-subset=256",  # the end-of-epoch evals are not what this experiment measures
        f"--checkpoint-every={checkpoint_every}",
        "--log-every=1",
    ]
    options = {"name": name, "namespace": namespace, "env": {"DATASET": "synthetic"}, "args": args}
    if image:
        options["image"] = image
    return apply_options(objects, **options)


@dataclass
class Disruption:
    """One disruption: which signal, which pod, and what it cost."""

    kind: str
    pod: str
    at_step: int  # last step the disrupted pod completed (and logged)
    resumed_from: int | None = None  # step the replacement pod resumed from
    restart_s: float | None = None  # signal -> first training step of the replacement pod
    signalled_at: float = 0.0

    @property
    def lost_steps(self) -> int | None:
        return None if self.resumed_from is None else self.at_step - self.resumed_from


@dataclass
class PreemptionRun:
    """The outcome of one experiment (one job, several disruptions)."""

    job: str
    checkpoint_every: int
    total_steps: int
    phase: str
    disruptions: list[Disruption] = field(default_factory=list)
    wall_s: float = 0.0

    def lost(self, kind: str) -> list[int]:
        return [
            d.lost_steps for d in self.disruptions if d.kind == kind and d.lost_steps is not None
        ]

    def mean_lost(self, kind: str) -> float | None:
        values = self.lost(kind)
        return statistics.fmean(values) if values else None

    def predicted_lost(self, kind: str) -> float:
        """The model's expectation: SIGKILL at a random moment loses half an interval on average;
        SIGTERM with a final checkpoint loses nothing."""
        return self.checkpoint_every / 2 if kind == "SIGKILL" else 0.0

    def table(self) -> str:
        lines = ["kind     pod                      at step  resumed from  lost steps  restart s"]
        for d in self.disruptions:
            restart = f"{d.restart_s:.1f}" if d.restart_s is not None else "-"
            lines.append(
                f"{d.kind:<8} {d.pod:<24} {d.at_step:>7}  {d.resumed_from!s:>12}  "
                f"{d.lost_steps!s:>10}  {restart:>9}"
            )
        for kind in KINDS:
            mean = self.mean_lost(kind)
            if mean is not None:
                lines.append(
                    f"{kind}: mean lost {mean:.1f} steps over {len(self.lost(kind))}, predicted "
                    f"{self.predicted_lost(kind):.1f} (interval {self.checkpoint_every})"
                )
        return "\n".join(lines)


def run_preemption_experiment(
    client,
    objects: list[Manifest],
    *,
    disruptions: list[str],
    seed: int = 0,
    timeout_s: float = 300.0,
) -> PreemptionRun:
    """Submit `objects` (see ha_job) through `client` (a TrainingClient on any backend),
    disrupt the running pod once per entry of `disruptions` ("SIGTERM" or "SIGKILL") at random
    steps, wait for the end, and return what each disruption lost. Deletes the job afterwards."""
    for kind in disruptions:
        if kind not in KINDS:
            raise ValueError(f"disruptions: {kind!r} is not one of {KINDS}")
    job = next(o for o in objects if o["kind"] == "Job")
    name, namespace = job["metadata"]["name"], job["metadata"].get("namespace", "default")
    args = job["spec"]["template"]["spec"]["containers"][0].get("args") or []
    every = next(
        (int(a.split("=", 1)[1]) for a in args if a.startswith("--checkpoint-every=")), None
    )
    if not every:
        raise ValueError("the trainer's args need --checkpoint-every=N (see ha_job)")
    # A PVC outlives jobs: start from an empty checkpoint folder so the first pod starts at step 0.
    client.reset_volume("training-checkpoints", name, namespace=namespace)

    rng = random.Random(seed)
    plan = list(disruptions)
    run = PreemptionRun(name, every, 0, "Pending")
    by_pod: dict[str, Disruption] = {}
    pending: Disruption | None = None
    target: int | None = None
    start = time.monotonic()
    ref = client.submit(objects)
    try:
        for line in client.iter_logs(ref, follow=True):
            if time.monotonic() - start > timeout_s:
                raise TimeoutError(f"preemption experiment {name} ran over {timeout_s:.0f} s")
            record = contract.parse_line(line.text)
            if isinstance(record, contract.StartLine):
                if pending is not None and line.pod != pending.pod:
                    pending.resumed_from = record.resumed_from or 0
                continue
            if isinstance(record, contract.Stopped) and line.pod in by_pod:
                by_pod[line.pod].at_step = record.step
                continue
            if not isinstance(record, contract.StepLine):
                continue
            step, run.total_steps = record.step, record.total
            if line.pod in by_pod:  # the disrupted pod finished a step before the signal landed
                by_pod[line.pod].at_step = max(by_pod[line.pod].at_step, step)
                continue
            if pending is not None and pending.restart_s is None and line.pod != pending.pod:
                pending.restart_s = time.monotonic() - pending.signalled_at
            if not plan:
                continue
            if target is None:
                # A random point within the next two checkpoint intervals of this pod.
                target = step + rng.randint(0, 2 * every - 1)
            if step >= target and step < run.total_steps - 2:
                kind = plan.pop(0)
                signalled = time.monotonic()
                pod = (client.preempt if kind == "SIGTERM" else client.kill)(ref)
                pending = Disruption(kind, pod, step, signalled_at=signalled)
                by_pod[pod] = pending
                run.disruptions.append(pending)
                target = None
        status = client.wait(
            ref, timeout_s=max(1.0, timeout_s - (time.monotonic() - start)), progress=False
        )
        run.phase = status.phase
    finally:
        client.delete(ref)
    run.wall_s = time.monotonic() - start
    return run


__all__ = ["Disruption", "PreemptionRun", "ha_job", "run_preemption_experiment"]
