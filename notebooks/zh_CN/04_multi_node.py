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
#     catalog: notebooks/locale/zh_CN/LC_MESSAGES/04_multi_node.po
#     generated_by: python -m kubecourse.i18n build (edit the catalog, not this file)
#     language: zh_CN
#     source: notebooks/04_multi_node.py
# ---

# %% [markdown]
# # 04 · 多节点 DDP：四种写法，外加一次弹性重启
#
# **你将做什么：** 把一份多节点训练规约分别渲染成[索引作业（Indexed Job）](../../docs/glossary.md#indexed-job)
# 加[无头服务（Headless Service）](../../docs/glossary.md#headless-service)、JobSet、PyTorchJob 和
# TrainJob，并加以比较；在本地后端上运行 2 个节点 x 2 个进程（两个 Pod，每个都是 127.0.0.1 上的
# `torchrun` 启动器）；让一个工作进程（worker）在中途挂掉，观察 torchrun 在每个节点上重启工作进程组，
# 以及实验程序从检查点恢复。
#
# **为什么：** 多节点正是在 Kubernetes 上训练最容易卡住的地方：谁是 rank 0，其他进程如何找到它
# （一个可能还不存在的 Pod 的 DNS 名称），以及一个进程挂掉时会发生什么。
#
# **前置条件：** 02、03。**用时：** 30 分钟（冒烟规模：约一分钟）。

# %% tags=["parameters"]
SMOKE = True  # 实验程序的 --smoke 预设，CPU
BACKEND = "local"  # "local" 或 "kubernetes"（$KUBECONFIG；需要镜像和一个支持 RWX 的存储类）
NAMESPACE = ""  # 空：$KUBECOURSE_NAMESPACE，否则取 kubeconfig 上下文，再否则 "kubecourse"
JOB_NAME = "lm-multinode"
IMAGE = "ghcr.io/kubecourse/labs:0.1.0"
NODES = 2
PROCS_PER_NODE = 2
STEPS = 80  # 本次运行的优化器步数
CHECKPOINT_EVERY = 20
CRASH_AT_STEP = 25  # 最后一个 rank 在这一步之前被 SIGKILL 杀死，晚于第一个检查点
TIMEOUT_S = 300

# %%
import dataclasses
import os
import subprocess

from kubecourse import TrainingClient
from kubecourse.contract import FaultInjected, Resumed, StartLine, parse_line, records
from kubecourse.course import record_outcome
from kubecourse.display import events_view, status_view
from kubecourse.manifests import repo_root
from kubecourse.multinode import (
    KINDS,
    MultiNodeSpec,
    comparison_table,
    render_all,
    side_by_side,
    variant_diff,
)

ROOT = repo_root()
client = TrainingClient(backend=BACKEND, namespace=NAMESPACE)

# %% [markdown]
# ## 1. 一份规约，四种渲染
# `manifests/02-multinode/` 以四个普通 YAML 文件描述同一个训练。辅助包把一份类型化规约应用到每个文件上；
# 每个选项都知道它的值在每种类型中位于何处（节点数在 Job 中是 `completions`，在 JobSet 中是其 Job 的
# `completions`，在 PyTorchJob 中是 `1 + Worker.replicas`，在 TrainJob 中是 `numNodes`）。

# %%
cluster_spec = MultiNodeSpec(nodes=NODES, procs_per_node=PROCS_PER_NODE, gpus=1, image=IMAGE)
rendered = render_all(cluster_spec)
comparison_table()

# %%
side_by_side(rendered)

# %% [markdown]
# 换一个控制器会改变什么？下面的 diff 把两种类型的 Pod 模板字段对齐到 `pod.` 之下，只显示真正的差异：
# 索引作业需要自己的 Service 和 `subdomain`；JobSet 会自己创建 Service，并由自己的名称派生出各名称；
# PyTorchJob 和 TrainJob 则由 Operator 注入 rank 和主节点地址。

# %%
variant_diff(rendered, "Job", "JobSet")

# %%
variant_diff(rendered, "PyTorchJob", "TrainJob")

# %% [markdown]
# 四者都能通过校验：内置类型对照 Kubernetes 模式，定制资源对照 JobSet、Training Operator 和 Trainer v2
# 的 CRD，再加上课程策略。

# %%
reports = {kind: client.validate(objects) for kind, objects in rendered.items()}
for kind, report in reports.items():
    print(f"{kind:11s}", "ok" if report.ok else report, report.skipped or "")

# %% [markdown]
# ## 2. Pod 如何知道自己是谁：`labs/launch.sh`
# 每种写法都运行同一个脚本。它从控制器提供的信息中读取节点 rank 和主节点（JOB_COMPLETION_INDEX、
# JOBSET_NAME、PyTorchJob 的 RANK/WORLD_SIZE、Trainer 的 PET_*），等到主节点的 DNS 名称可以解析
# （无头服务只在 Pod 存在之后才发布它的名称），打印它的决定，然后以 `--max-restarts` 和 c10d 汇合
# （rendezvous）方式 exec `torchrun`。`--dry-run` 只显示决定，不运行任何东西：


# %%
def launch_decision(env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in env}
    done = subprocess.run(
        ["bash", "labs/launch.sh", "--dry-run", "--", "-m", "labs.lm_pretrain"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout + done.stderr


print(
    launch_decision({"JOB_COMPLETION_INDEX": "1", "NNODES": "2", "MASTER_ADDR": "lm-job-0.lm-job"})
)

# %% [markdown]
# ## 3. 在本机上运行两个节点 x 两个进程
# 本地后端把索引作业的两个 Pod 作为两个进程组运行，并模拟了集群 DNS：`lm-multinode-0.lm-job`
# （无头服务下的一个 Pod 名称）解析为 127.0.0.1，Service 的端口 29500 变成本作业专用的一个空闲本地端口
# （Pod 有各自的网络名字空间，而同一台机器上的进程没有）。日志带有节点和 rank 前缀。

# %%
smoke = ["--smoke", "--num-threads=1"] if SMOKE else []
run_spec = dataclasses.replace(
    cluster_spec,
    gpus=0 if BACKEND == "local" else cluster_spec.gpus,
    name=JOB_NAME,
    namespace=NAMESPACE,
    args=(
        "--",
        "-m",
        "labs.lm_pretrain",
        "--out-dir=/checkpoints/$(JOB_NAME)",
        *smoke,
        f"--steps={STEPS}",
        f"--checkpoint-every={CHECKPOINT_EVERY}",
        "--log-every=10",
        f"--inject-crash-at-step={CRASH_AT_STEP}",
    ),
    env=(("OMP_NUM_THREADS", "1"), ("MAX_RESTARTS", "2")),
)
objects = render_all(run_spec)["Job"]
client.reset_volume("lm-checkpoints", JOB_NAME)  # the checkpoint PVC outlives jobs: start empty
job = client.submit(objects)

# %% [markdown]
# ## 4. 一个工作进程在运行中途挂掉
# 第一个检查点之后几步，一个工作进程（不是 Pod）收到 SIGKILL，就像 OOM killer 会做的那样：
# `--inject-crash-at-step` 让最后一个 rank 在那一步之前杀死自己，只此一次（检查点卷上的一个标记文件
# 让重启后的工作进程不再这样做）。它的 torchrun 代理（agent）察觉后，停止自己的另一个工作进程，并重新
# 进入 c10d 汇合；另一个节点的代理看到新一轮汇合，也重启自己的工作进程。每个工作进程都从头开始，实验程序
# 从最新的完整检查点恢复。在真实集群上手动操作时，你会从外部杀掉它：
# `kubectl exec -n <namespace> lm-multinode-1-<suffix> -- pkill -KILL -f labs.lm_pretrain`
# （节点 1 的 Pod；`pkill` 杀掉它本地的工作进程，随后是同样的重启）。

# %%
killed = None
lines = []
for line in client.iter_logs(job, follow=True):
    lines.append(line)
    print(line.prefixed())
    fault = parse_line(line.text)
    if killed is None and isinstance(fault, FaultInjected) and fault.kind == "crash":
        killed = {"rank": fault.rank, "pid": int(fault.values["pid"]), "before_step": fault.step}
        print(f"*** worker rank {killed['rank']} (pid {killed['pid']}) got SIGKILL ***")

# %%
status = client.wait(job, timeout_s=TIMEOUT_S)
status_view(status)

# %%
print(events_view(client.events(job)))

# %% [markdown]
# ## 5. 断言结果
# 作业成功；torchrun 重启了工作进程组（实验程序启动了两次）；它从不早于杀进程前所写的那个检查点恢复，
# 并完成了全部步数。

# %%
texts = [line.text for line in lines]
resumed = [r.step for r in records(texts, Resumed)]
starts = [s for s in records(texts, StartLine) if s.lab == "lm_pretrain"]  # one per (re)start
result = client.result(job) or {}
print("killed:", killed, "| resumed from:", resumed, "| training starts:", len(starts))
print(
    "result:",
    {k: result.get(k) for k in ("steps", "resumed_from_step", "final_loss", "world_size")},
)
assert status.phase == "Succeeded", f"{status.phase}: {status.reason} {status.message}"
assert killed is not None, "no worker was killed"
assert killed["rank"] == NODES * PROCS_PER_NODE - 1 and killed["before_step"] == CRASH_AT_STEP
assert len(starts) == 2, f"expected one start and one elastic restart, saw {len(starts)}"
assert resumed and resumed[0] >= CHECKPOINT_EVERY and resumed[0] % CHECKPOINT_EVERY == 0
assert starts[-1].resumed_from == resumed[-1]
assert result["steps"] == STEPS and result["resumed_from_step"] == resumed[-1]
assert result["world_size"] == NODES * PROCS_PER_NODE

# %%
assert all(r.ok for r in reports.values()) and len(reports) == len(KINDS)
record_outcome(
    "04_multi_node",
    backend=BACKEND,
    phase=status.phase,
    nodes=NODES,
    procs_per_node=PROCS_PER_NODE,
    killed_rank=killed["rank"] if killed else None,
    resumed_from_step=resumed[-1] if resumed else None,
    steps=result.get("steps"),
    final_loss=result.get("final_loss"),
    kinds_validated=sum(r.ok for r in reports.values()),
)

# %% [markdown]
# ## 练习 1：哪个 rank 是哪个
# 上面那次运行的每个工作进程都从 torchrun 得到 `RANK`，它由所在节点的 rank（Pod 的完成索引）和该节点上的
# 本地 rank 算出。按 torchrun 给进程编号的方式编写 `global_rank(node_rank, local_rank,
# procs_per_node)`；检查会尝试几种集群形态。（已填入一个参考答案：修改它，再重新运行检查。）


# %%
def global_rank(node_rank: int, local_rank: int, procs_per_node: int) -> int:
    # BEGIN SOLUTION
    return node_rank * procs_per_node + local_rank
    # END SOLUTION


# %%
from kubecourse.exercises import require

require("04-global-rank", global_rank)
print(f"node 1, local rank 1 of this run is rank {global_rank(1, 1, PROCS_PER_NODE)}")

# %% [markdown]
# ## 练习 2：PyTorchJob 的 Pod 看到了什么
# Kubeflow Training Operator 在每个 Pod 中设置 `RANK`、`WORLD_SIZE`、`MASTER_ADDR` 和 `MASTER_PORT`，
# 但那里的 RANK 是 *Pod* 的 rank，WORLD_SIZE 是 *Pod* 的数量。写出名为 `lm-pytorchjob` 的 3 节点
# PyTorchJob 中第二个 Worker 得到的环境变量（Master 是 Pod 0），使 `launch.sh` 判定为
# node_rank=2、nnodes=3，主节点为 `lm-pytorchjob-master-0:23456`。（已填入一个参考答案。）

# %%
# BEGIN SOLUTION
pytorchjob_env = {
    "RANK": "2",
    "WORLD_SIZE": "3",
    "MASTER_ADDR": "lm-pytorchjob-master-0",
    "MASTER_PORT": "23456",
}
# END SOLUTION

# %%
require("04-pytorchjob-env", pytorchjob_env, decide=launch_decision)
print(launch_decision(pytorchjob_env))

# %% [markdown]
# ## 在真实集群上
# 选择你的集群已有的控制器；每个文件的头部都有确切的命令。
#
# ```bash
# kubectl apply -f manifests/02-multinode/pvc.yaml                       # ReadWriteMany 存储
# kubectl apply -f manifests/02-multinode/service.yaml -f manifests/02-multinode/indexed-job.yaml
# kubectl apply -f manifests/02-multinode/jobset.yaml                     # JobSet 控制器
# kubectl apply -f manifests/02-multinode/pytorchjob.yaml                 # Training Operator v1
# kubectl apply -f manifests/02-multinode/training-runtime.yaml -f manifests/02-multinode/trainjob.yaml
# kubectl logs -f -l batch.kubernetes.io/job-name=lm-job --prefix --max-log-requests=16
# ```
# 或者在这里：以 `BACKEND = "kubernetes"` 调用 `client.submit(render_all(cluster_spec)["JobSet"])`。
# 本地运行展示不了的东西：NCCL 选对网络接口（`NCCL_SOCKET_IFNAME`）、`/dev/shm` 的大小，以及 Pod 落到
# 不同机器上（[反亲和性（anti-affinity）](../../docs/glossary.md#affinity)规则）。
#
# ## 清理

# %%
client.delete(job)
client.close()
