"""The course map: one table of lessons, read by notebook 00, the README and the instructor guide.

    python -m kubecourse.coursemap --readme    # rewrite the README's course map from LESSONS

Lessons are numbered like their notebooks (00-11). Manifests live in five *manifest sets*
(`manifests/NN-topic/`), numbered on their own; MANIFEST_SETS says which lessons use which, and every
manifest's first line names both ("# Lessons 03-05, manifest set 02 - ..."). `render("02")` and
`kubecourse render 02` take a manifest set number.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

from .manifests import repo_root

# The seed's five parts, in order: (key, Chinese title, English title).
PARTS = [
    ("basics", "基础入门", "basics: one GPU, one Job"),
    ("distributed", "进阶实战", "distributed training"),
    ("finetune", "微调优化", "fine-tuning and quantization"),
    ("production", "生产部署", "production: scheduling, security, cost"),
    ("operations", "监控运维", "monitoring and operations"),
]


@dataclass(frozen=True)
class Lesson:
    number: str  # the notebook number: notebooks/NN_topic.py
    title: str
    part: str  # a PARTS key
    minutes: int  # workshop time, reading and exercise included (the notebook's "Time:")
    lab: str = "-"
    manifests: str = "-"
    cpu: str = "yes"  # what runs on a CPU-only machine (the smoke path CI runs)
    gpu: str = "-"  # what a GPU adds
    cluster: str = "-"  # what a real cluster adds


LESSONS = [
    Lesson("00", 'setup', "basics", 5, lab='-', manifests='-', cpu='yes', gpu='-', cluster='detects one'),
    Lesson("01", 'CIFAR-10 on one GPU', "basics", 15, lab='`labs/cifar10.py`, `labs/prepare_data.py`', manifests='-', cpu='yes (synthetic data)', gpu='bf16 autocast, channels_last', cluster='-'),
    Lesson("02", 'a Job on Kubernetes', "basics", 20, lab='same lab in `labs/Dockerfile`', manifests='set 01: `manifests/01-cifar10-job/`', cpu='yes (local backend)', gpu='yes', cluster='`BACKEND="kubernetes"`'),
    Lesson("03", 'DDP on one node', "distributed", 15, lab='`labs/lm_pretrain.py` (the course Llama), `labs/common/distributed.py`', manifests='-', cpu='yes (2 gloo processes)', gpu='NCCL, bf16 autocast', cluster='-'),
    Lesson("04", 'multi-node, four ways', "distributed", 30, lab='`labs/launch.sh` + `labs/lm_pretrain.py`', manifests='set 02: `manifests/02-multinode/` (Indexed Job + Service, JobSet, PyTorchJob, TrainJob)', cpu='yes (2 local nodes x 2 processes, elastic restart)', gpu='yes', cluster='`BACKEND="kubernetes"`'),
    Lesson("05", 'FSDP2, DCP, DeepSpeed, comm tuning', "distributed", 30, lab='`labs/lm_pretrain.py --strategy fsdp/deepspeed`, `labs/ddp_comm_sweep.py`, `labs/deepspeed/`', manifests='set 02: `manifests/02-multinode/`', cpu='yes (DeepSpeed skipped with its reason)', gpu='bf16 FSDP2, DeepSpeed ZeRO-2/3', cluster="via lesson 04's manifests"),
    Lesson("06", 'LoRA fine-tuning as a Job', "finetune", 20, lab='`labs/finetune.py` (`labs/common/tiny_lm.py`, `labs/common/instructions.py`)', manifests='set 03: `manifests/03-finetune/`', cpu='yes (tiny offline model, local backend)', gpu='bf16 compute, peak step memory', cluster='`BACKEND="kubernetes"`, `MODEL_ID=...`'),
    Lesson("07", 'QLoRA and quantization', "finetune", 20, lab='`labs/finetune.py --method qlora`, `labs/quantize.py`', manifests='set 03: `manifests/03-finetune/` (`METHOD=qlora`)', cpu='yes (bitsandbytes 4-bit on CPU)', gpu='nf4 on GPU, `benchmarks/gpu_lora_qlora.py`', cluster='same Job'),
    Lesson("08", 'production: quotas, Kueue/Volcano, security, workshops', "production", 30, lab='-', manifests='set 04: `manifests/04-production/admin/`, `.../jobs/`', cpu='yes (validate, policy, quota, workshop on the local backend)', gpu='-', cluster='`BACKEND="kubernetes"` (workshop, server-side dry run)'),
    Lesson("09", 'cost: spot, checkpoint intervals, budgets, preemption', "production", 30, lab='`labs/cifar10.py` preempted for real', manifests='set 04: `manifests/04-production/jobs/job-ha.yaml`', cpu='yes (local backend)', gpu='-', cluster='`kubectl delete pod` / `drain` (see notebook)'),
    Lesson("10", 'monitoring: metrics, dashboard, alerts', "operations", 20, lab='same lab with `METRICS_PORT` (`labs/common/metrics.py`)', manifests='set 05: `manifests/05-monitoring/`, `monitoring/` (rules + promtool tests)', cpu='yes (local backend + local Prometheus)', gpu='NVML GPU gauges, MFU', cluster='PodMonitor, PrometheusRule, Grafana, DCGM'),
    Lesson("11", 'fault diagnosis and recovery', "operations", 30, lab='same lab: `--watchdog-s`, `--on-nonfinite`, `--inject-*`', manifests='`notebooks/exercises/11/` (broken on purpose)', cpu='yes (local kill/preempt)', gpu='-', cluster='`diagnose()` via the API'),
]  # fmt: skip

# manifest set -> (folder, the lessons that use it)
MANIFEST_SETS = {
    "00": ("00-course", ("00",)),  # the course namespace, before any lesson on a cluster
    "01": ("01-cifar10-job", ("02", "11")),
    "02": ("02-multinode", ("03", "04", "05")),
    "03": ("03-finetune", ("06", "07")),
    "04": ("04-production", ("08", "09")),
    "05": ("05-monitoring", ("10", "11")),
}


def manifest_set_lessons(manifest_set: str) -> str:
    """The lessons using a manifest set, as its headers spell them: "03-05" or "02, 11"."""
    lessons = MANIFEST_SETS[manifest_set][1]
    numbers = [int(n) for n in lessons]
    if len(numbers) > 1 and numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"{lessons[0]}-{lessons[-1]}"
    return ", ".join(lessons)


def lesson_table() -> str:
    """The short table notebook 00 shows: what each lesson needs and how long it takes."""
    titles = {key: f"{zh} ({en})" for key, zh, en in PARTS}
    lines = [
        "| lesson | part | CPU (smoke) | GPU | cluster | minutes |",
        "|---|---|---|---|---|---|",
    ]
    for lesson in LESSONS:
        lines.append(
            f"| {lesson.number} {lesson.title} | {titles[lesson.part]} | {lesson.cpu} | "
            f"{lesson.gpu} | {lesson.cluster} | {lesson.minutes} |"
        )
    return "\n".join(lines)


def readme_course_map() -> str:
    """The README's course map: the lessons grouped into the five parts."""
    lines = []
    for key, zh, en in PARTS:
        lessons = [lesson for lesson in LESSONS if lesson.part == key]
        minutes = sum(lesson.minutes for lesson in lessons)
        lines += [f"### {zh} · {en} ({minutes} min)", ""]
        lines += [
            "| lesson | lab | manifests | CPU smoke | GPU | cluster |",
            "|---|---|---|---|---|---|",
        ]
        for lesson in lessons:
            notebook = next(repo_root().glob(f"notebooks/{lesson.number}_*.ipynb")).name
            lines.append(
                f"| {lesson.number} [{lesson.title}](notebooks/{notebook}) | {lesson.lab} | "
                f"{lesson.manifests} | {lesson.cpu} | {lesson.gpu} | {lesson.cluster} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip("\n")


START, END = (
    "<!-- course-map: generated by `python -m kubecourse.coursemap --readme` -->",
    "<!-- /course-map -->",
)


def readme_block(text: str) -> str:
    """The generated part of README.md (between the markers)."""
    found = re.search(re.escape(START) + r"\n(.*?)\n" + re.escape(END), text, flags=re.S)
    return found.group(1) if found else ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", action="store_true", help="rewrite README.md's course map")
    args = parser.parse_args(argv)
    if not args.readme:
        print(readme_course_map())
        return
    path = repo_root() / "README.md"
    text = path.read_text()
    old = readme_block(text)
    if START not in text:
        raise SystemExit(f"README.md has no {START} marker")
    path.write_text(
        text.replace(f"{START}\n{old}\n{END}", f"{START}\n{readme_course_map()}\n{END}")
    )
    print(f"wrote the course map into {path}")


if __name__ == "__main__":
    main()
