"""Every exercise check is real: it passes with the notebook's solution and fails with the stub.

Cheap by design: no notebook runs. For each solution region the test executes just the exercise's
answer cell and its check cell (`require(...)`), taken from the notebook source, in a namespace
holding what the lesson computed before (small, realistic inputs below) -- once as written, once
with that one region replaced by the student stub (kubecourse.student). Exercises whose answer is
a training run or a live Prometheus (02, 03, 10) check the outcome; for those the check is called
with the outcome of a solved and of an unsolved run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kubecourse.exercises import LESSON_EXERCISES, check_exercise
from kubecourse.student import BEGIN, END, build, regions, solution_text, student_text
from kubecourse.types import JobStatus, PodStatus
from tests.guards import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))
AT_LEAST = {"04": 2, "08": 2, "11": 2}  # exercises per lesson; 1 elsewhere


def cells(text: str) -> list[tuple[str, str]]:
    """(kind, source) of each jupytext percent cell."""
    parts = re.split(r"^# %%(.*)$", text, flags=re.M)
    return [
        ("markdown" if "[markdown]" in header else "code", body.strip("\n"))
        for header, body in zip(parts[1::2], parts[2::2], strict=True)
    ]


def exercise_cells(text: str) -> list[tuple[int, int]]:
    """(answer cell, check cell) index for each solution region, in order."""
    found = []
    all_cells = cells(text)
    for number, (_, body) in enumerate(all_cells):
        for _ in range(body.count(BEGIN)):
            check = next(
                i
                for i in range(number + 1, len(all_cells))
                if all_cells[i][0] == "code" and "require(" in all_cells[i][1]
            )
            found.append((number, check))
    return found


# What each lesson computed before its exercise: setup code, and notebook cells (found by a line
# they contain) executed after it, as the notebook would.
SETUP = {
    "00": ("report = {'cpus': 2}", []),
    "01": (
        "metrics = [{'kind': 'train', 'step': 1, 'loss': 2.3}]"
        " + [{'kind': 'eval', 'epoch': e, 'test_acc': a} for e, a in ((1, .3), (2, .5), (3, .45))]",
        [],
    ),
    "04": (
        "import os, subprocess\nfrom kubecourse.manifests import repo_root\nROOT = repo_root()\n"
        "PROCS_PER_NODE = 2\nfrom kubecourse.exercises import require",
        ["def launch_decision"],
    ),
    "05": (
        "import re\nNPROC = 2\nddp = type('Run', (), {'log': ['lm_pretrain: params=1000 x=1']})\n"
        "memory = {'DDP': {'total': 16_000}, 'FSDP2': {'total': 8_100}}",
        [],
    ),
    "06": ("LORA_R = 8\nMODEL_ID = 'a-hub-model'  # no local run: the published configs only", []),
    "07": (
        # section 1's tensors for a 1024 x 1024 matrix: packed codes, uint8 absmax, fp32 2nd level
        "nf4_bytes = 524_288 + 16_384 + 64 * 4 + 256 * 4\n"
        "weight = type('W', (), {'numel': staticmethod(lambda: 1024 * 1024)})",
        [],
    ),
    "08": (
        "from kubecourse.exercises import require",
        [
            "import copy",
            "admin = load_lesson",
            "ha_job = next",
            "insecure = copy.deepcopy",
            "sharing = load_sharing()",
        ],
    ),  # fmt: skip
    "09": ("", ["import math", "plan = RunPlan("]),
    "11": (
        "from kubecourse.exercises import EXERCISES, require\n"
        "from kubecourse.manifests import pod_spec, trainer_container\n"
        "from types import SimpleNamespace as N\n"
        "statuses = {'killed': N(pods=[N(exit_code=137), N(exit_code=0)]),"
        " 'preempted': N(pods=[N(exit_code=143), N(exit_code=0)])}",
        [],
    ),
}
RUN_BASED = {"02", "03", "10"}  # checked through their outcome (tests below)


def regions_of(source: Path) -> list[tuple[Path, int]]:
    return [(source, i) for i in range(len(regions(source.read_text().splitlines())))]


CASES = [
    case for source in SOURCES if source.name[:2] not in RUN_BASED for case in regions_of(source)
]


def run_exercise(text: str, original: str, lesson: str, region: int) -> dict:
    """Run the lesson's setup, then the answer and check cells of `region` of `text` (a variant of
    `original`, cell for cell) in one namespace."""
    all_cells = cells(text)
    parameters = next(body for kind, body in all_cells if kind == "code")
    setup_code, wanted = SETUP[lesson]
    namespace: dict = {"__name__": "exercise"}
    exec(parameters, namespace)
    exec(setup_code, namespace)
    for line in wanted:
        body = next(b for k, b in all_cells if k == "code" and line in b)
        exec(body, namespace)
    answer, check = exercise_cells(original)[region]
    exec(all_cells[answer][1], namespace)
    exec(all_cells[check][1], namespace)
    return namespace


@pytest.mark.parametrize(
    "source, region", CASES, ids=lambda v: v.stem if isinstance(v, Path) else v
)
def test_check_passes_with_the_solution_and_fails_with_the_stub(source, region):
    lesson, text = source.name[:2], source.read_text()
    run_exercise(solution_text(text), text, lesson, region)  # the solution passes its check
    with pytest.raises(AssertionError, match=r"^\d\d-[a-z0-9-]+: not yet"):
        run_exercise(student_text(text, only=region), text, lesson, region)


def test_every_lesson_has_its_exercises_and_each_check_is_used():
    used = set()
    for source in SOURCES:
        text, lesson = source.read_text(), source.name[:2]
        ids = re.findall(r'require\(\s*"([^"]+)"', text)
        assert ids and all(i.startswith(lesson + "-") for i in ids), (source.name, ids)
        assert len(set(ids)) >= AT_LEAST.get(lesson, 1), (source.name, ids)
        assert len(regions(text.splitlines())) >= len(set(ids)), (
            f"{source.name}: a check without a solution"
        )
        used |= set(ids)
    assert used == set(LESSON_EXERCISES), set(LESSON_EXERCISES) ^ used


def test_student_build_stubs_every_solution_and_keeps_every_check(tmp_path):
    written = build(tmp_path)
    for source in SOURCES:
        student = (tmp_path / "notebooks" / source.name).read_text()
        original = source.read_text()
        assert BEGIN not in student and END not in student
        assert student.count("# YOUR CODE") >= len(regions(original.splitlines()))
        assert student.count("require(") == original.count("require(")
        for region in regions(original.splitlines()):
            solution = [
                line for line in original.splitlines()[region.start : region.end] if line.strip()
            ]
            assert not all(line in student for line in solution), f"{source.name}: solution left in"
    assert sorted(p.name for p in written if p.suffix == ".ipynb") == [
        s.with_suffix(".ipynb").name for s in SOURCES
    ]


@pytest.mark.parametrize(
    "region, stub",
    [
        ("x = compute()\n", "x = ...  # YOUR CODE"),
        ("    return max(1, a // b)\n", "    ...  # YOUR CODE"),
        ("    k = 4\n    return k * n\n", "    k = ...  # YOUR CODE"),
        ('d["key"] = 1\nd.pop("other")\n', "...  # YOUR CODE"),  # never edits data in a stub
    ],
)
def test_stub_rules(region, stub):
    text = f"before\n{BEGIN}\n{region}{END}\nafter\n"
    indent = region[: len(region) - len(region.lstrip())]
    text = text.replace(f"\n{BEGIN}", f"\n{indent}{BEGIN}").replace(f"\n{END}", f"\n{indent}{END}")
    assert student_text(text) == f"before\n{stub}\nafter\n"
    assert solution_text(text) == f"before\n{region}after\n"


def test_unbalanced_markers_are_errors():
    for text in (f"{BEGIN}\nx = 1\n", f"x = 1\n{END}\n", f"{BEGIN}\n{BEGIN}\n{END}\n"):
        with pytest.raises(ValueError):
            regions(text.splitlines())


# --- exercises checked through their outcome ------------------------------------------------------


def _status(phase: str, reason: str, *exit_codes: int) -> JobStatus:
    pods = [PodStatus(f"bad-{i}", 0, "Failed", code) for i, code in enumerate(exit_codes)]
    return JobStatus("bad", "default", phase, reason, pods=pods)


def test_02_fail_fast_check():
    assert check_exercise("02-fail-fast", _status("Failed", "PodFailurePolicy", 2)) == []
    for unsolved in (
        _status("Succeeded", "", 0),  # the flag was valid: the job trained
        _status("Failed", "BackoffLimitExceeded", 1, 1, 1, 1),  # retried: no fail-fast rule hit
        ...,  # the stub
    ):
        assert check_exercise("02-fail-fast", unsolved), unsolved


def test_03_accumulate_check():
    baseline = ["lm_pretrain: strategy=ddp tokens_per_step=512 world_size=2"]
    solved_log = ["lm_pretrain: strategy=ddp tokens_per_step=1024 world_size=2"]
    solved = {"weights_digests": ["ab", "ab"], "comm_hook": "fp16"}
    observed = {"baseline_log": baseline, "world_size": 2}
    assert check_exercise("03-accumulate", solved, log=solved_log, **observed) == []
    stub_run = {"weights_digests": ["ab", "ab"], "comm_hook": "none"}  # no flags: a plain DDP run
    assert check_exercise("03-accumulate", stub_run, log=baseline, **observed)
    assert check_exercise(
        "03-accumulate", {**solved, "weights_digests": ["ab", "cd"]}, log=solved_log, **observed
    )
    assert check_exercise("03-accumulate", ..., log=baseline, **observed)


def _tiny_promql(series: dict[str, float]):
    """Evaluate `[1 - ]max_over_time(series[5m])[ / max_over_time(series[5m])]` over fixed maxima."""

    def one(term: str) -> float:
        term = re.sub(r"^\s*sum\((.*)\)\s*$", r"\1", term)  # one series here: sum() is itself
        found = re.fullmatch(r"\s*max_over_time\((\w+(?:\{[^}]*\})?)\[5m\]\)\s*", term)
        if not found or found.group(1) not in series:
            raise ValueError(f"bad_data: cannot evaluate {term!r}")
        return series[found.group(1)]

    def evaluate(query: str) -> float:
        complement = query.startswith("1 - ")
        parts = query.removeprefix("1 - ").split(" / ")
        value = one(parts[0])
        for part in parts[1:]:
            value /= one(part)
        return 1 - value if complement else value

    return evaluate


def test_10_slow_steps_check():
    h = "kubecourse_train_step_seconds"
    series = {f"{h}_count": 40.0, f"{h}_sum": 2.0, f'{h}_bucket{{le="0.05"}}': 30.0}
    series |= {f'{h}_bucket{{le="0.1"}}': 38.0, "kubecourse_train_last_step": 40.0}
    evaluate = _tiny_promql(series)
    notebook = next(s for s in SOURCES if s.name.startswith("10_")).read_text()
    answer_cell = cells(solution_text(notebook))[exercise_cells(notebook)[0][0]][1]
    namespace: dict = {"answers": {"median step time (s)": 0.07}}
    exec(answer_cell, namespace)  # the notebook's own solution, threshold 0.05 s
    assert namespace["THRESHOLD"] == 0.05
    assert (
        check_exercise("10-slow-steps", namespace["my_query"], evaluate=evaluate, threshold=0.05)
        == []
    )
    for unsolved in (
        ...,  # the stub
        f'sum(max_over_time({h}_bucket{{le="0.05"}}[5m])) / sum(max_over_time({h}_count[5m]))',  # fast
        f"max_over_time({h}_sum[5m]) / max_over_time({h}_count[5m])",  # the mean
        "0.25",  # a number, not a query over the histogram
    ):
        assert check_exercise("10-slow-steps", unsolved, evaluate=evaluate, threshold=0.05), (
            unsolved
        )


@pytest.mark.notebook
@pytest.mark.timeout(600)
def test_a_student_notebook_runs_until_its_check_and_fails_there(tmp_path):
    """End to end on the cheapest lesson: papermill runs student 00 and stops at its check."""
    import nbformat

    from kubecourse.course import execute

    build(tmp_path)
    with pytest.raises(Exception, match="00-threads: not yet"):
        execute(
            tmp_path / "notebooks" / "00_setup.ipynb",
            tmp_path / "out",
            cell_timeout_s=int(HANG_GUARD_S),
        )
    executed = nbformat.read(tmp_path / "out" / "00_setup.ipynb", as_version=4)
    ran = [c for c in executed.cells if c.cell_type == "code" and c.get("execution_count")]
    assert any("record_outcome(" in c.source for c in ran), "the lesson itself ran before the check"
