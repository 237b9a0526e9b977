# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kubecourse_i18n
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   kubecourse_i18n:
#     catalog: notebooks/locale/zh_CN/LC_MESSAGES/11_fault_diagnosis_recovery.po
#     generated_by: python -m kubecourse.i18n build (edit the catalog, not this file)
#     language: zh_CN
#     source: notebooks/11_fault_diagnosis_recovery.py
# ---

# %% [markdown]
# # 11 · 故障诊断与恢复：故意弄坏它，说出原因，精确恢复
#
# **你将做什么：** 在随机的步上用 SIGKILL 杀掉一个训练 Pod，[抢占（preempt）](../../docs/glossary.md#preemption)
# 它（带宽限期的 SIGTERM），注入一个 NaN 损失和一个挂起的 rank，在写检查点的中途杀掉进程；用
# `client.diagnose()` 诊断每一种故障；证明每次恢复后的运行最终权重都与未中断的运行**逐位相同**。
# 然后诊断录制下来的集群故障（OOMKilled、因 GPU 不足而 Pending、ImagePullBackOff、NCCL 超时……），
# 并修复六个有问题的清单。
#
# **为什么：** 在集群上，Pod 会因为与你的代码毫无关系的原因而死掉：抢占、腾空节点、OOM kill、网络分区。
# 一个能从最后一个完整检查点*精确*恢复的作业只损失几分钟，而不是整次运行；一个能读懂证据的人几分钟就能
# 修好它。
#
# **前置条件：** 02、10。**用时：** 30 分钟（冒烟规模：不到一分钟）。
# [运维手册（runbook）](../../docs/zh_CN/runbook.md)：`docs/runbook.md`。

# %% tags=["parameters"]
SMOKE = True  # 极小的运行（每个 20 个优化器步，在一个 CPU 线程上约训练 3 秒）
BACKEND = "local"  # "local"（本机上的进程）或 "kubernetes"（$KUBECONFIG）
NAMESPACE = ""  # 空：$KUBECOURSE_NAMESPACE，否则取 kubeconfig 上下文，再否则 "kubecourse"
IMAGE = "ghcr.io/kubecourse/labs:0.1.0"
KILL_SEED = 11  # 决定 Pod 在哪些步被杀掉和被抢占
TIMEOUT_S = 600

# %%
import io
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from kubecourse import TrainingClient, render
from kubecourse.contract import StepLine, parse_line
from kubecourse.course import record_outcome
from kubecourse.diagnose import case_dir, classify_case, load_case
from kubecourse.exercises import EXERCISES, grade, load_broken
from kubecourse.manifests import pod_spec, trainer_container
from labs.common.checkpoint import load_latest

client = TrainingClient(backend=BACKEND, namespace=NAMESPACE)

# %% [markdown]
# ## 1. 同一个极小运行的五个副本
# 五个作业都以相同的种子训练同样的 20 步，每 3 步做一次检查点。`reference` 不受干扰地运行；其他几个
# 被故意弄坏：
#
# | 作业 | 故障 | 应当发生什么 |
# |---|---|---|
# | `killed` | 在随机的步上 SIGKILL | Job 控制器重试（计入 `backoffLimit`）；新的 Pod 从最新的完整检查点恢复 |
# | `preempted` | 在随机的步上抢占 | SIGTERM：实验程序写检查点并以 143 退出；`podFailurePolicy` 的 DisruptionTarget 规则忽略这次失败；新的 Pod 从该检查点恢复 |
# | `nan` | 第 8 步 NaN 损失，`--on-nonfinite=fail` | 以退出码 4 退出并指明是哪一步；重试从第 6 步恢复 |
# | `hang` | rank 0 在第 5 步之前挂起，`--watchdog-s=3` | 看门狗（watchdog）在 3 秒后以退出码 3 退出；重试从第 3 步恢复 |

# %%
TINY = [
    "--data-dir=/data",
    "--dataset=$(DATASET)",
    "--out-dir=/checkpoints/$(JOB_NAME)",
    "--smoke",
    "--train-subset=320",
    "--test-subset=200",
    "--epochs=2",
    "--batch-size=32",
    "--log-every=1",
    "--checkpoint-every=3",
    "--num-threads=1",
]


def tiny_job(name: str, *extra: str, backoff_limit: int = 3, prepare: bool = False):
    objects = render(
        "01",
        name=name,
        namespace=NAMESPACE,
        image=IMAGE,
        env={"DATASET": "synthetic"},
        args=TINY + list(extra),
        backoff_limit=backoff_limit,
    )
    for obj in objects:
        if obj["kind"] == "Job" and prepare:  # only the init container runs: it fills the data PVC
            trainer_container(pod_spec(obj)).update(
                command=["python", "-c", "print('data ready')"], args=[]
            )
        elif obj["kind"] == "Job":
            # The data is already on the data PVC (the prepare job below), so every pod can skip
            # the init container that would check it: 8 fewer process starts.
            pod_spec(obj).pop("initContainers")
    return objects


faulty = {
    "killed": tiny_job("killed"),
    "preempted": tiny_job("preempted"),
    "nan": tiny_job("nan", "--inject-nan-at-step=8", "--on-nonfinite=fail", backoff_limit=1),
    "hang": tiny_job("hang", "--inject-hang-at-step=5", "--watchdog-s=3", backoff_limit=1),
}

# %%
jobs = {}
# The data set once, by a job whose init container writes it to the data PVC.
prepare = client.submit(tiny_job("prepare-data", prepare=True))
assert client.wait(prepare, timeout_s=TIMEOUT_S, progress=False).phase == "Succeeded"
client.delete(prepare)
for name in ["reference", *faulty]:
    client.reset_volume("training-checkpoints", name)  # start from nothing
jobs["reference"] = client.submit(tiny_job("reference"))
for name, objects in faulty.items():
    jobs[name] = client.submit(objects)

# %% [markdown]
# ## 2. 在随机的步上 kill -9 一个作业，抢占另一个
# `client.kill(job)` 让一个正在运行的 Pod 崩溃：SIGKILL，没有机会写检查点，就像 OOM killer 或节点崩溃那样
# （在集群上：强制删除该 Pod）。`client.preempt(job)` 驱逐它：DisruptionTarget 状况、SIGTERM，宽限期后再
# SIGKILL（实验程序在收到 SIGTERM 时写检查点并以 143 退出）。每个调用都会打印对应的 kubectl 命令。

# %%
rng = random.Random(KILL_SEED)
kill_at, preempt_at = rng.randint(2, 7), rng.randint(8, 14)
print(f"SIGKILL at step {kill_at}, preemption at step {preempt_at} (seed {KILL_SEED})")
disruptions = []


def disrupt_at(name: str, at_step: int, action) -> None:
    """Follow the job's log; at the first line of step >= at_step, disrupt its running pod."""
    for line in client.iter_logs(jobs[name], follow=True):
        record = parse_line(line.text)
        if isinstance(record, StepLine) and record.step >= at_step:
            disruptions.append((action.__name__, record.step, action(jobs[name])))
            return


disrupt_at("killed", kill_at, client.kill)
disrupt_at("preempted", preempt_at, client.preempt)
print(disruptions)

# %%
statuses = {
    name: client.wait(ref, timeout_s=TIMEOUT_S, progress=False) for name, ref in jobs.items()
}
for name, status in statuses.items():
    print(
        f"{name:10s} {status.phase:10s} pods: {[(p.name[-5:], p.exit_code, p.reason) for p in status.pods]}"
    )

# %% [markdown]
# ## 3. 诊断：每个作业发生了什么？
# `client.diagnose(job)` 收集各个 Pod（阶段、状况、容器退出码和原因）、事件以及每个 Pod 日志的末尾，并
# 给出原因及其证据和修复办法，根本原因排在最前。这些作业最终都成功了；诊断告诉我们它们挺过了什么。

# %%
diagnoses = {name: client.diagnose(ref) for name, ref in jobs.items()}
for diagnosis in diagnoses.values():
    print(diagnosis, end="\n\n")

# %% [markdown]
# ## 4. 逐位相同的恢复
# 精确恢复需要每一份状态：权重、优化器动量、学习率调度、EMA、各个随机数生成器，以及在数据顺序中的位置
# （每个批次的数据增强是 `(seed, epoch, rank, batch index)` 的纯函数）。比较最终检查点中的每一个张量。


# %%
def final_checkpoint(name: str) -> dict:
    """The newest checkpoint of a job, read from the checkpoints PVC."""
    files = client.list_volume("training-checkpoints", f"{name}/checkpoints")
    newest = sorted(f for f in files if f.startswith("ckpt-step-") and f.endswith(".pt"))[-1]
    data = client.read_volume("training-checkpoints", f"{name}/checkpoints/{newest}")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def bitwise_equal(a: dict, b: dict) -> bool:
    return a["step"] == b["step"] and all(
        torch.equal(a["model"][k], b["model"][k]) for k in a["model"]
    )


reference = final_checkpoint("reference")
equal = {name: bitwise_equal(reference, final_checkpoint(name)) for name in faulty}
print(equal)

# %% [markdown]
# ## 5. 在写检查点的中途被杀掉
# 检查点先写入临时文件、fsync，再重命名（`labs/common/checkpoint.py`）。这里一个进程缓慢地保存检查点
# （`slow_write_s`：先写一半字节、暂停、再写其余部分），并在暂停时被杀掉：残缺的临时文件永远不会被加载；
# 加载的是上一个完整的检查点。

# %%
torn_dir = Path(tempfile.mkdtemp(prefix="torn-write-")) / "checkpoints"
writer = (
    "import sys, torch; from labs.common import checkpoint as c; d = sys.argv[1]; "
    "c.save_checkpoint({'step': 3, 'w': torch.ones(4)}, d, 3); print('saved 3', flush=True); "
    "c.save_checkpoint({'step': 6, 'w': torch.zeros(10**6)}, d, 6, slow_write_s=60)"
)
proc = subprocess.Popen(
    [sys.executable, "-c", writer, str(torn_dir)], stdout=subprocess.PIPE, text=True
)
assert proc.stdout.readline().strip() == "saved 3"
deadline = time.monotonic() + 600  # a hang guard: the half is on disk within a second when idle


def torn_bytes() -> int:
    """Bytes of step 6's temp file (0 until its first half is written and fsynced)."""
    return sum(p.stat().st_size for p in torn_dir.glob("*.tmp") if p.exists())


while torn_bytes() == 0 and time.monotonic() < deadline:
    time.sleep(0.02)  # the writer fsyncs the first half, then pauses 60 s: kill it in the pause
assert torn_bytes() > 0, "the slow checkpoint write never started"
proc.kill()
proc.wait(timeout=30)
print("on disk after the kill:", sorted(p.name for p in torn_dir.iterdir()))

torn_state, torn_path = load_latest(torn_dir)
print("loaded:", torn_path.name, "step", torn_state["step"])

# %% [markdown]
# ## 6. 录制下来的集群故障
# 本地后端没有调度器、kubelet 或镜像仓库。这些故障是按 API 服务器呈现的样子录制下来的
# （`notebooks/exercises/11/cases/*.json`：Job、它的 Pod、事件和日志末尾）；`classify()` 应用的规则与
# `diagnose()` 在真实集群上使用的规则相同。

# %%
recorded = {}
for path in sorted(case_dir().glob("*.json")):
    case = load_case(path.stem)
    recorded[path.stem] = (classify_case(case), case)
    primary = recorded[path.stem][0].primary
    print(f"{path.stem:28s} -> {primary.kind:18s} {primary.evidence[0][:90]}")
print()
print(recorded["pending-untolerated-taint"][0])

# %% [markdown]
# ## 7. 断言结果

# %%
assert all(d.kinds == c["expect"] for d, c in recorded.values()), {
    n: d.kinds for n, (d, c) in recorded.items() if d.kinds != c["expect"]
}
assert torn_state["step"] == 3 and not list(torn_dir.glob("*.tmp"))
assert all(s.phase == "Succeeded" for s in statuses.values()), statuses
assert [d[0] for d in disruptions] == ["kill", "preempt"], disruptions
assert diagnoses["reference"].kinds == []
assert diagnoses["killed"].kinds == ["Killed"], diagnoses["killed"]
assert diagnoses["preempted"].kinds == ["Preempted"], diagnoses["preempted"]
assert diagnoses["nan"].kinds == ["NaNLoss"] and diagnoses["hang"].kinds == ["Hung"]
# The crash counts against backoffLimit; the preemption (DisruptionTarget) is ignored.
assert (statuses["killed"].failed, statuses["preempted"].failed) == (1, 0), statuses
assert equal == {name: True for name in faulty}, f"not bitwise equal: {equal}"
record_outcome(
    "11_fault_diagnosis_recovery",
    backend=BACKEND,
    disruptions=[f"{kind}@{step}" for kind, step, _ in disruptions],
    bitwise_equal=equal,
    diagnoses={name: d.kinds for name, d in diagnoses.items()},
    recorded_cases_correct=len(recorded),
)

# %% [markdown]
# ## 练习：修复六个有问题的清单
# `notebooks/exercises/11/` 中的每个文件都是一个以某种真实方式出错的 Job；它的头部给出了集群上会看到的
# 症状（读一读：`print(open(path).read())`）。把修复写成一个修改已加载对象的函数；`grade()` 会校验结果
# （模式、CRD、策略）并检查修复本身。（已填入参考答案：修改其中一个，再重新运行检查，看看评分器的对象。）

# %%
for name, exercise in EXERCISES.items():
    print(f"{name:28s} {exercise.file:36s} symptom: {exercise.symptom}")
print()
print(grade("missing-gpu-toleration", load_broken("missing-gpu-toleration")))


# %%
def job_of(objects):
    return next(o for o in objects if o["kind"] == "Job")


def env_var(objects, name):
    return next(e for e in trainer_container(pod_spec(job_of(objects)))["env"] if e["name"] == name)


def fix_missing_dev_shm(objects):
    # BEGIN SOLUTION
    pod_spec(job_of(objects))["volumes"].append(
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}
    )
    trainer_container(pod_spec(job_of(objects)))["volumeMounts"].append(
        {"name": "dshm", "mountPath": "/dev/shm"}
    )
    # END SOLUTION


def fix_wrong_master_address(objects):
    # BEGIN SOLUTION
    env_var(objects, "MASTER_ADDR")["value"] = "ddp-0.ddp-workers"
    # END SOLUTION


def fix_missing_gpu_toleration(objects):
    # BEGIN SOLUTION
    pod_spec(job_of(objects))["tolerations"] = [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    # END SOLUTION


def fix_queue_name_mismatch(objects):
    # BEGIN SOLUTION
    job_of(objects)["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "team-a"
    # END SOLUTION


def fix_secret_inline(objects):
    # BEGIN SOLUTION
    token = env_var(objects, "HF_TOKEN")
    del token["value"]
    token["valueFrom"] = {"secretKeyRef": {"name": "hf-token", "key": "token"}}
    # END SOLUTION


def fix_checkpoints_lost_on_retry(objects):
    # BEGIN SOLUTION
    for volume in pod_spec(job_of(objects))["volumes"]:
        if volume["name"] == "checkpoints":
            volume.pop("emptyDir")
            volume["persistentVolumeClaim"] = {"claimName": "training-checkpoints"}
    # END SOLUTION


FIXES = {
    "missing-dev-shm": fix_missing_dev_shm,
    "wrong-master-address": fix_wrong_master_address,
    "missing-gpu-toleration": fix_missing_gpu_toleration,
    "queue-name-mismatch": fix_queue_name_mismatch,
    "secret-inline": fix_secret_inline,
    "checkpoints-lost-on-retry": fix_checkpoints_lost_on_retry,
}

# %%
from kubecourse.exercises import require

require("11-fix-manifests", FIXES)
for name, exercise in EXERCISES.items():
    print(f"  {name}: {exercise.fix}")

# %% [markdown]
# ## 练习 2：退出码就是证据
# 被杀掉的作业的第一个 Pod 以退出码 137 结束，被抢占的那个以 143 结束（见第 2 节中的状态）：被信号终止的容器
# 报告的[退出码](../../docs/glossary.md#exit-code)是一个由信号编号算出的数字（`signal.SIGKILL` 是 9，`signal.SIGTERM` 是 15）。编写 `exit_code(signal_number)`；
# 检查会尝试这里测到的信号以及另外三个（SIGINT、SIGABRT、SIGSEGV：CUDA 扩展中的段错误会表现为 139）。
# （已填入一个参考答案。）


# %%
def exit_code(signal_number: int) -> int:
    # BEGIN SOLUTION
    return 128 + signal_number
    # END SOLUTION


# %%
def signal_exit(status) -> int | None:
    """The exit code of the pod the disruption stopped (codes above 128 are signal deaths)."""
    return next((p.exit_code for p in status.pods if (p.exit_code or 0) > 128), None)


measured = {9: signal_exit(statuses["killed"]), 15: signal_exit(statuses["preempted"])}
measured = {number: code for number, code in measured.items() if code is not None}
print("measured here:", measured)
require("11-exit-codes", exit_code, measured=measured)

# %% [markdown]
# ## 在真实集群上
# ```bash
# kubectl describe job my-job                                # 状况、事件、podFailurePolicy
# kubectl get pods -l batch.kubernetes.io/job-name=my-job -o yaml   # 容器状态、DisruptionTarget
# kubectl events --for job/my-job                            # FailedScheduling、FailedCreate、镜像拉取
# kubectl logs -l batch.kubernetes.io/job-name=my-job --prefix --tail=200 --previous
# kubectl delete pod <pod> --grace-period=0 --force          # 一次崩溃，就像这里的 kill()
# kubectl drain <node> --ignore-daemonsets --delete-emptydir-data   # 驱逐（DisruptionTarget）
# ```
# `TrainingClient(backend="kubernetes").diagnose("my-job")` 通过 API 读取同样的证据。
# `docs/runbook.md`（[中文版](../../docs/zh_CN/runbook.md)）列出了每种原因及其症状、证据和修复办法。
#
# ## 清理

# %%
for ref in jobs.values():
    client.delete(ref)
for name in ["reference", *faulty]:
    client.reset_volume("training-checkpoints", name)
shutil.rmtree(torn_dir.parent, ignore_errors=True)
client.close()
