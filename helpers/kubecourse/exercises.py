"""Broken-manifest exercises (lesson 11) and the grader that checks a learner's fix.

Each exercise is a file in notebooks/exercises/11/ that is wrong in one realistic way (its header
describes the symptom, not the fix). The learner loads it, fixes the objects, and calls

    grade("missing-dev-shm", fixed_objects)      # Grade(passed, problems)

The grader runs the course validation (Kubernetes schema, CRD schemas, policy) and the exercise's
own check of the fix. It checks the outcome, not one spelling of it: any toleration that matches
the GPU taint passes, any Secret name works for the token, and so on.
"""

from __future__ import annotations

import copy
import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import constants as C
from .manifests import Manifest, parse_yaml, pod_spec, repo_root, trainer_container
from .validation import validate


@dataclass(frozen=True)
class Exercise:
    file: str
    symptom: str
    fix: str  # the solution, in words (the notebook shows it after the check passes)
    check: Callable[[list[Manifest]], list[str]]  # problems left in the learner's objects


@dataclass
class Grade:
    exercise: str
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if self.passed:
            return f"{self.exercise}: PASSED"
        return f"{self.exercise}: not yet\n" + "\n".join(f"  - {p}" for p in self.problems)

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(str(self))}</pre>"


def exercise_dir() -> Path:
    return repo_root() / "notebooks" / "exercises" / "11"


def _jobs(objects: list[Manifest]) -> list[Manifest]:
    return [o for o in objects if o.get("kind") == "Job"]


def _one_job(objects: list[Manifest]) -> tuple[Manifest | None, list[str]]:
    jobs = _jobs(objects)
    if len(jobs) != 1:
        return None, [f"expected exactly one Job, found {len(jobs)}"]
    return jobs[0], []


def _check_dev_shm(objects: list[Manifest]) -> list[str]:
    job, problems = _one_job(objects)
    if job is None:
        return problems
    spec = pod_spec(job)
    memory_volumes = {
        v["name"]
        for v in spec.get("volumes") or []
        if (v.get("emptyDir") or {}).get("medium") == "Memory"
    }
    mounts = trainer_container(spec).get("volumeMounts") or []
    shm = [m for m in mounts if m.get("mountPath") == "/dev/shm"]
    if not shm:
        return ["the trainer has no volumeMount at /dev/shm (the runtime's default is 64 MiB)"]
    if shm[0]["name"] not in memory_volumes:
        return [
            f"/dev/shm is mounted from {shm[0]['name']!r}, which is not an emptyDir with medium: Memory"
        ]
    return []


def _env(container: Manifest, name: str) -> Manifest | None:
    return next((e for e in container.get("env") or [] if e.get("name") == name), None)


def _check_master_address(objects: list[Manifest]) -> list[str]:
    job, problems = _one_job(objects)
    if job is None:
        return problems
    name, spec = job["metadata"]["name"], pod_spec(job)
    subdomain = spec.get("subdomain")
    services = {
        o["metadata"]["name"]: o
        for o in objects
        if o.get("kind") == "Service" and (o.get("spec") or {}).get("clusterIP") == "None"
    }
    if not subdomain:
        problems.append("the pod template has no subdomain: its pods get no stable DNS names")
    elif subdomain not in services:
        problems.append(
            f"no headless Service named {subdomain!r} (the pods' subdomain) in the file"
        )
    else:
        selector = services[subdomain]["spec"].get("selector") or {}
        if selector.get(C.JOB_NAME_LABEL) != name:
            problems.append(
                f"Service {subdomain} does not select the Job's pods ({C.JOB_NAME_LABEL}: {name})"
            )
    master = _env(trainer_container(spec), "MASTER_ADDR")
    expected = f"{name}-0.{subdomain}"
    if master is None or master.get("value") not in (
        expected,
        f"{expected}.{job['metadata'].get('namespace', 'default')}.svc",
    ):
        got = None if master is None else master.get("value")
        problems.append(f"MASTER_ADDR is {got!r}; rank 0 of this Job is reachable as {expected!r}")
    return problems


def _check_toleration(objects: list[Manifest]) -> list[str]:
    job, problems = _one_job(objects)
    if job is None:
        return problems
    for t in pod_spec(job).get("tolerations") or []:
        key_ok = t.get("key") == C.GPU_RESOURCE or (
            t.get("operator") == "Exists" and not t.get("key")
        )
        value_ok = t.get("operator") == "Exists" or t.get("value") == "present"
        if key_ok and value_ok and t.get("effect") in (None, "", "NoSchedule"):
            return []
    return [f"no toleration matches the GPU nodes' taint {C.GPU_RESOURCE}=present:NoSchedule"]


def _check_queue(objects: list[Manifest]) -> list[str]:
    job, problems = _one_job(objects)
    if job is None:
        return problems
    queues = {o["metadata"]["name"] for o in objects if o.get("kind") == "LocalQueue"}
    label = (job["metadata"].get("labels") or {}).get(C.KUEUE_QUEUE_LABEL)
    if label is None:
        return [f"the Job has no {C.KUEUE_QUEUE_LABEL} label: Kueue would not manage it"]
    if label not in queues:
        return [
            f"{C.KUEUE_QUEUE_LABEL}={label!r} names no LocalQueue here (have: {sorted(queues)})"
        ]
    return []


def _check_secret(objects: list[Manifest]) -> list[str]:
    job, problems = _one_job(objects)
    if job is None:
        return problems
    token = _env(trainer_container(pod_spec(job)), "HF_TOKEN")
    if token is None:
        return ["the trainer lost its HF_TOKEN variable (it still needs the token)"]
    if "value" in token:
        return ["HF_TOKEN still has an inline value"]
    if "secretKeyRef" not in (token.get("valueFrom") or {}):
        return ["HF_TOKEN should come from valueFrom.secretKeyRef"]
    return []


def _check_checkpoints(objects: list[Manifest]) -> list[str]:
    job, problems = _one_job(objects)
    if job is None:
        return problems
    spec = pod_spec(job)
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for mount in trainer_container(spec).get("volumeMounts") or []:
        if mount.get("mountPath") == "/checkpoints":
            volume = volumes.get(mount["name"], {})
            if "persistentVolumeClaim" not in volume:
                return [
                    "/checkpoints is not backed by a PersistentVolumeClaim: it dies with the pod"
                ]
            return []
    return ["the trainer has no volume mounted at /checkpoints"]


EXERCISES: dict[str, Exercise] = {
    "missing-dev-shm": Exercise(
        "01-missing-dev-shm.yaml",
        "DataLoader workers die with a bus error",
        "add a volume {name: dshm, emptyDir: {medium: Memory, sizeLimit: 2Gi}} and mount it at "
        "/dev/shm in the trainer",
        _check_dev_shm,
    ),
    "wrong-master-address": Exercise(
        "02-wrong-master-address.yaml",
        "both ranks time out connecting to the rendezvous",
        "MASTER_ADDR must be <job>-0.<subdomain>: ddp-0.ddp-workers (the headless Service is "
        "ddp-workers, not ddp-worker)",
        _check_master_address,
    ),
    "missing-gpu-toleration": Exercise(
        "03-missing-gpu-toleration.yaml",
        "the pod stays Pending: untolerated taint",
        "add tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]",
        _check_toleration,
    ),
    "queue-name-mismatch": Exercise(
        "04-queue-name-mismatch.yaml",
        "the Job stays suspended with no pods",
        "set the label kueue.x-k8s.io/queue-name to the LocalQueue's name, team-a",
        _check_queue,
    ),
    "secret-inline": Exercise(
        "05-secret-inline.yaml",
        "the validator rejects an inline token",
        "create the Secret out of band (kubectl create secret generic hf-token "
        "--from-literal=token=...) and use env valueFrom.secretKeyRef {name: hf-token, key: token}",
        _check_secret,
    ),
    "checkpoints-lost-on-retry": Exercise(
        "06-checkpoints-lost-on-retry.yaml",
        "a retried pod starts again from step 0",
        "back /checkpoints with the PersistentVolumeClaim training-checkpoints instead of an emptyDir",
        _check_checkpoints,
    ),
}


def load_broken(name: str) -> list[Manifest]:
    """The broken objects of exercise `name` (a fresh copy each time)."""
    if name not in EXERCISES:
        raise KeyError(f"no exercise {name!r}; known: {', '.join(EXERCISES)}")
    path = exercise_dir() / EXERCISES[name].file
    return copy.deepcopy(parse_yaml(path.read_text(), str(path)))


def grade(name: str, objects: list[Manifest]) -> Grade:
    """Check a fix: course validation (schema, CRDs, policy) plus the exercise's own check."""
    exercise = EXERCISES[name]
    problems = [str(f) for f in validate(objects).findings]
    problems += exercise.check(objects)
    return Grade(name, problems)


# --------------------------------------------------------------------------------------------------
# Lesson exercises: one check per exercise, taking the learner's answer and what the lesson observed
# --------------------------------------------------------------------------------------------------
# Each notebook's exercise cell holds the solution between `# BEGIN SOLUTION` / `# END SOLUTION`
# (kubecourse.student stubs it out for learners); its check cell calls
#
#     require("00-threads", threads_per_process, cores=report["cpus"])
#
# A check returns the problems left (empty: passed). It tests the idea, not one spelling: functions
# are called on cases the lesson did not show, values are compared with what the run measured.


@dataclass(frozen=True)
class LessonExercise:
    lesson: str  # the notebook number
    idea: str  # the one idea the exercise tests (printed when it passes)
    check: Callable[..., list[str]]  # (answer, **observed) -> problems


def _call(function: Any, *args: Any) -> tuple[Any, str | None]:
    """Call the learner's function; an exception (a stub, a bug) becomes a problem, not a crash."""
    if not callable(function):
        return None, f"expected a function, got {function!r}"
    try:
        return function(*args), None
    except Exception as error:  # noqa: BLE001 - any error of the learner's code is a problem to show
        return None, f"{getattr(function, '__name__', 'the function')}{args} raised {error!r}"


def _check_threads(answer: Any, *, cores: int) -> list[str]:
    cases = [(8, 1, 8), (8, 2, 4), (8, 3, 2), (2, 4, 1), (cores, 2, max(1, cores // 2))]
    for total, processes, expected in cases:
        got, problem = _call(answer, total, processes)
        if problem:
            return [problem]
        if got != expected:
            return [
                f"threads_per_process({total}, {processes}) = {got!r}: {processes} processes x "
                f"{got!r} threads on {total} cores; want each core used once, at least 1 thread"
            ]
    return []


def _check_best_epoch(answer: Any, *, evals: list[dict]) -> list[str]:
    best = max(r["test_acc"] for r in evals)
    if not any(r["epoch"] == answer and r["test_acc"] == best for r in evals):
        return [f"epoch {answer!r} is not an epoch with the best test accuracy ({best:.3f})"]
    return []


def _check_fail_fast(answer: Any) -> list[str]:
    """answer: the JobStatus of the bad-configuration job."""
    problems = []
    if getattr(answer, "phase", None) != "Failed":
        problems.append(f"the job ended {getattr(answer, 'phase', answer)!r}, not Failed")
    elif answer.reason != "PodFailurePolicy":
        problems.append(
            f"it failed by {answer.reason!r}: the podFailurePolicy rule (exit code 2) did not "
            "decide it, the job was retried instead"
        )
    pods = getattr(answer, "pods", [])
    if len(pods) != 1 or pods[0].exit_code != 2:
        problems.append(
            f"want one pod that exited 2 (bad configuration), got {[p.exit_code for p in pods]}"
        )
    return problems


def _tokens_per_step(log: list[str]) -> int | None:
    import re

    found = re.search(r"tokens_per_step=(\d+)", "\n".join(log))
    return int(found.group(1)) if found else None


def _check_accumulate(
    answer: Any, *, log: list[str], baseline_log: list[str], world_size: int
) -> list[str]:
    """answer: result.json of the exercise run; the logs of it and of the plain DDP run."""
    if not isinstance(answer, dict):
        return [f"expected the run's result dict, got {answer!r}"]
    problems = []
    digests = answer.get("weights_digests") or []
    if len(digests) != world_size or len(set(digests)) != 1:
        problems.append(f"the replicas' weights differ: {digests}")
    mine, baseline = _tokens_per_step(log), _tokens_per_step(baseline_log)
    if mine is None or baseline is None or mine != 2 * baseline:
        problems.append(
            f"tokens per optimizer step {mine} vs {baseline} without accumulation: want twice as "
            "many (2 micro-batches per step)"
        )
    if answer.get("comm_hook") != "fp16":
        problems.append(f"the gradients travelled as {answer.get('comm_hook')!r}, not fp16")
    return problems


def _check_global_rank(answer: Any) -> list[str]:
    for nnodes, nproc in ((2, 2), (3, 8), (4, 1)):
        ranks = []
        for node in range(nnodes):
            for local in range(nproc):
                got, problem = _call(answer, node, local, nproc)
                if problem:
                    return [problem]
                ranks.append(got)
        if ranks != list(range(nnodes * nproc)):
            return [
                f"{nnodes} nodes x {nproc} processes give ranks {ranks}: torchrun numbers node 0's "
                f"processes first, each rank once, 0..{nnodes * nproc - 1}"
            ]
    return []


def _check_pytorchjob_env(answer: Any, *, decide: Callable[[dict], str]) -> list[str]:
    if not isinstance(answer, dict):
        return [f"expected the pod's environment as a dict, got {answer!r}"]
    decision = decide({str(k): str(v) for k, v in answer.items()})
    wanted = ("source=PyTorchJob", "nnodes=3 node_rank=2", "master=lm-pytorchjob-master-0:23456")
    missing = [w for w in wanted if w not in decision]
    return [f"launch.sh decided {decision.strip()!r}; missing {missing}"] if missing else []


def _check_fsdp_memory(
    answer: Any, *, n_params: int, world_size: int, fsdp_measured: int, ddp_measured: int
) -> list[str]:
    problems = []
    for ranks, measured, name in ((world_size, fsdp_measured, "FSDP2"), (1, ddp_measured, "DDP")):
        got, problem = _call(answer, n_params, ranks)
        if problem:
            return [problem]
        if not isinstance(got, (int, float)) or abs(got - measured) / measured > 0.05:
            problems.append(
                f"predicted {got!r} bytes per rank for {ranks} rank(s); {name} measured {measured:,}"
            )
    return problems


# peft's own count for these public configs (r=8, all seven projections): the published
# "trainable params" lines of Llama-2-7B (19,988,480) and Qwen2.5-0.5B (4,399,104).
_LORA_CASES = [
    (dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
          num_attention_heads=32, num_key_value_heads=32), 8, 19_988_480),
    (dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
          num_attention_heads=14, num_key_value_heads=2), 8, 4_399_104),
]  # fmt: skip


def _check_lora_params(
    answer: Any, *, config: dict | None = None, r: int = 8, reported: int | None = None
) -> list[str]:
    cases = list(_LORA_CASES)
    if config is not None and reported is not None:
        cases.append((config, r, reported))  # the lesson's own run
    for case_config, rank, expected in cases:
        got, problem = _call(answer, case_config, rank)
        if problem:
            return [problem]
        if got != expected:
            return [
                f"lora_params(hidden {case_config['hidden_size']}, {case_config['num_hidden_layers']} "
                f"layers, kv heads {case_config['num_key_value_heads']}, r={rank}) = {got!r}; "
                f"peft counts {expected:,}"
            ]
    return []


def _check_nf4_bits(answer: Any, *, measured: float) -> list[str]:
    if not isinstance(answer, (int, float)) or abs(answer - measured) / measured > 0.01:
        return [f"{answer!r} bits per weight; the nf4 tensors measured {measured:.4f}"]
    return []


def _check_policy_fix(answer: Any) -> list[str]:
    from .policy import check_policy

    if not isinstance(answer, dict) or answer.get("kind") != "Job":
        return [f"expected the fixed Job, got {type(answer).__name__}"]
    if not trainer_container(pod_spec(answer)).get("image"):
        return ["the Job lost its trainer container"]
    return [f"{f.field}: {f.message}" for f in check_policy([answer])]


def _check_gpu_slices(answer: Any, *, sharing: list[Manifest]) -> list[str]:
    from .gpushare import capacity

    cases = [
        (2, 8, "exclusive"),
        (2, 8, "time-sliced-4"),
        (1, 8, "all-1g.10gb"),
        (3, 4, "mixed-train-dev"),
        (1, 2, "mps-4"),
    ]
    for nodes, gpus, profile in cases:
        expected = capacity(sharing, nodes=nodes, gpus_per_node=gpus, profile=profile)
        got, problem = _call(answer, nodes, gpus, profile)
        if problem:
            return [problem]
        if got != expected:
            return [f"slices({nodes}, {gpus}, {profile!r}) = {got!r}; the configs give {expected}"]
    return []


def _check_fastest_in_budget(answer: Any, *, offers: dict, plan: Any, budget: float) -> list[str]:
    from .cost import estimate

    spot = {name: estimate(plan, offer, spot=True) for name, offer in offers.items()}
    cheapest = min(e.cost for e in spot.values())
    for limit in (budget, cheapest * 0.5, max(e.cost for e in spot.values()) * 2):
        fits = {n: e for n, e in spot.items() if e.cost <= limit}
        expected = min(fits, key=lambda n: fits[n].wall_h) if fits else None
        got, problem = _call(answer, offers, plan, limit)
        if problem:
            return [problem]
        if got != expected:
            return [
                f"budget {limit:.2f}: you chose {got!r}, the fastest spot offer within it is "
                f"{expected!r} (None when nothing fits)"
            ]
    return []


def _check_slow_steps(
    answer: Any, *, evaluate: Callable[[str], float], threshold: float
) -> list[str]:
    """answer: PromQL for the fraction of optimizer steps slower than `threshold` seconds."""
    if not isinstance(answer, str) or "kubecourse_train_step_seconds" not in answer:
        return [f"expected a PromQL query over the step-time histogram, got {answer!r}"]
    h = "kubecourse_train_step_seconds"
    le = repr(float(threshold))  # how the exporter writes a bucket bound: 0.1, 1.0, 10.0
    # sum(): the bucket series carry an `le` label the count lacks, so `/` would match nothing
    reference = evaluate(
        f'1 - sum(max_over_time({h}_bucket{{le="{le}"}}[5m])) / sum(max_over_time({h}_count[5m]))'
    )
    if reference is None:
        return [f"the step-time histogram has no bucket le={le!r}: pick one of its bounds"]
    try:
        got = evaluate(answer)
    except Exception as error:  # noqa: BLE001 - a bad query is the learner's problem to see
        return [f"Prometheus refused the query: {error}"]
    if got is None or not math.isfinite(got) or abs(got - reference) > 1e-9:
        return [
            f"your query gives {got!r}; {reference:.3f} of the steps took longer than {threshold} s"
        ]
    return []


def _check_fixes(answer: Any) -> list[str]:
    if not isinstance(answer, dict):
        return [f"expected a dict of fix functions, got {answer!r}"]
    problems = []
    for name in EXERCISES:
        objects = load_broken(name)
        _, problem = _call(answer.get(name), objects)
        result = grade(name, objects)
        problems += [problem] if problem else [str(result)] if not result.passed else []
    return problems


def _check_exit_codes(answer: Any, *, measured: dict[int, int]) -> list[str]:
    cases = {2: 130, 6: 134, 11: 139, **measured}  # SIGINT, SIGABRT, SIGSEGV + what the run saw
    for signal_number, expected in cases.items():
        got, problem = _call(answer, signal_number)
        if problem:
            return [problem]
        if got != expected:
            return [
                f"exit_code({signal_number}) = {got!r}; a container killed by it exits {expected}"
            ]
    return []


LESSON_EXERCISES: dict[str, LessonExercise] = {
    "00-threads": LessonExercise("00", "N processes share the cores: threads = cores // N", _check_threads),
    "01-best-epoch": LessonExercise("01", "the eval records name the best epoch", _check_best_epoch),
    "02-fail-fast": LessonExercise("02", "a podFailurePolicy rule fails a bad configuration at once", _check_fail_fast),
    "03-accumulate": LessonExercise("03", "accumulation doubles tokens per step; fp16 hook; replicas agree", _check_accumulate),
    "04-global-rank": LessonExercise("04", "global rank = node_rank x procs_per_node + local_rank", _check_global_rank),
    "04-pytorchjob-env": LessonExercise("04", "a PyTorchJob's RANK/WORLD_SIZE count pods, not processes", _check_pytorchjob_env),
    "05-fsdp-memory": LessonExercise("05", "FSDP divides 16 bytes/param (weights, grads, 2 AdamW moments) by the ranks", _check_fsdp_memory),
    "06-lora-params": LessonExercise("06", "LoRA adds r x (in + out) per adapted linear", _check_lora_params),
    "07-nf4-bits": LessonExercise("07", "nf4 costs 4 bits plus the block scales", _check_nf4_bits),
    "08-policy-fix": LessonExercise("08", "a restricted, pinned, limited pod with secrets by reference", _check_policy_fix),
    "08-gpu-slices": LessonExercise("08", "time-slicing replicas and MIG instances multiply schedulable GPUs", _check_gpu_slices),
    "09-fastest-in-budget": LessonExercise("09", "filter by budget first, then pick the fastest", _check_fastest_in_budget),
    "10-slow-steps": LessonExercise("10", "a bucket counts observations <= le: 1 - bucket / count are slower", _check_slow_steps),
    "11-fix-manifests": LessonExercise("11", "six broken manifests fixed", _check_fixes),
    "11-exit-codes": LessonExercise("11", "a signal N shows as exit code 128 + N", _check_exit_codes),
}  # fmt: skip


def check_exercise(exercise_id: str, answer: Any, **observed: Any) -> list[str]:
    """The problems left in `answer` for exercise `exercise_id` (empty: solved)."""
    return LESSON_EXERCISES[exercise_id].check(answer, **observed)


def require(exercise_id: str, answer: Any, **observed: Any) -> None:
    """The exercise check of a notebook: raise AssertionError naming what is left to fix."""
    problems = check_exercise(exercise_id, answer, **observed)
    if problems:
        raise AssertionError(f"{exercise_id}: not yet\n" + "\n".join(f"  - {p}" for p in problems))
    print(f"check passed ({exercise_id}): {LESSON_EXERCISES[exercise_id].idea}")
