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
#     catalog: notebooks/locale/zh_CN/LC_MESSAGES/00_setup.po
#     generated_by: python -m kubecourse.i18n build (edit the catalog, not this file)
#     language: zh_CN
#     source: notebooks/00_setup.py
# ---

# %% [markdown]
# # 00 · 环境准备：这台机器能跑这门课吗？
#
# **你将做什么：** 检查 Python、PyTorch、加速器（accelerator）、磁盘，以及能否连上 Kubernetes
# 集群，然后看各课将使用哪个[后端（backend）](../../docs/glossary.md#backend)。
#
# **为什么：** 后面的每一课都在*本地后端*（local backend，即本机上的进程，无需集群）或真实集群上运行
# 同一个训练作业。事先知道自己用的是哪一个，可以少些意外。
#
# **前置条件：** 已运行 `make setup`（或 `make lab`）创建 `.venv`。**用时：** 5 分钟。

# %% tags=["parameters"]
SMOKE = True  # CI 和笔记本电脑：处处使用小规模
BACKEND = "auto"  # "auto"（集群有响应时用 kubernetes，否则用 local）、"local" 或 "kubernetes"

# %% [markdown]
# ## 检查环境
# `check_environment()` 在子进程中检查 torch：辅助包（helpers）从不导入 torch，只有实验程序（labs，
# 即在 Pod 中运行的程序）才导入。

# %%
from kubecourse.course import record_outcome
from kubecourse.env import check_environment

report = check_environment()
for key, value in report.items():
    print(f"{key:14s} {value}")

# %% [markdown]
# 与刚才检查对应的 kubectl 命令：
#
# ```bash
# kubectl version            # 客户端和服务器版本：集群是否可达？
# kubectl config current-context
# kubectl get nodes -L nvidia.com/gpu.product   # 哪些节点有哪些 GPU
# ```

# %%
backend = report["backend"] if BACKEND == "auto" else BACKEND
device = "cuda" if report["torch"].get("cuda") else "cpu"
print(f"lessons will use the {backend!r} backend and train on {device!r}")
if not report["cluster"]["reachable"]:
    print("no cluster:", report["cluster"]["why"], "-> the local backend runs every lesson")

# %% [markdown]
# ## 集群课程的预检：`kubecourse doctor`
# 在集群上开始一课之前，`kubecourse doctor`（这个单元格对应的终端命令）会检查 API 服务器及其版本、各课用到的
# Operator 的 API 组、GPU 节点、存储类、LocalQueue，以及各课需要的每一项权限（SelfSubjectAccessReview）：
# 每项检查一行，并附上修复办法。没有 kubeconfig 时，它只说明将会检查什么；这里不会有任何失败。

# %%
from kubecourse.doctor import preflight

doctor = preflight()
print(doctor)

# %% [markdown]
# ## What each lesson needs
# From the course map (`kubecourse.coursemap`, the same table the README and the instructor guide
# show): what runs on this CPU, what a GPU or a cluster adds, and the workshop minutes.

# %%
from IPython.display import Markdown

from kubecourse.coursemap import LESSONS, lesson_table

Markdown(lesson_table())

# %% [markdown]
# ## 断言结果

# %%
assert report["torch"].get("torch", "").startswith("2."), (
    f"torch is not importable: {report['torch']}"
)
assert report["disk_free_gib"] > 1.0, "the lessons need at least 1 GiB of free disk"
assert backend in ("local", "kubernetes"), f"unknown backend {backend!r}"
if backend == "kubernetes":
    assert report["cluster"]["reachable"], "BACKEND='kubernetes' but no cluster answers"
assert [lesson.number for lesson in LESSONS] == [f"{n:02d}" for n in range(len(LESSONS))]
record_outcome(
    "00_setup",
    backend=backend,
    device=device,
    torch=report["torch"].get("torch"),
    cluster_reachable=report["cluster"]["reachable"],
)

# %% [markdown]
# ## Exercise: threads per process
# PyTorch starts one compute thread per core in *every* process. Lesson 03 runs two training
# processes on one machine: with the default, each spawns a thread per core and they fight over
# them. Write `threads_per_process(cores, processes)`: how many threads each process should use so
# that every core is busy once (and each process has at least one thread). The check tries it on
# several machines, including this one. (A solution is filled in: change it and re-run the check.)


# %%
def threads_per_process(cores: int, processes: int) -> int:
    # BEGIN SOLUTION
    return max(1, cores // processes)
    # END SOLUTION


# %%
from kubecourse.exercises import require

require("00-threads", threads_per_process, cores=report["cpus"] or 1)
print(f"here: {threads_per_process(report['cpus'] or 1, 2)} thread(s) for each of 2 processes")

# %% [markdown]
# ## 在真实集群上
# 把 `KUBECONFIG` 指向你的集群（或在集群内以服务账号（ServiceAccount）运行 JupyterLab），然后重新运行：
# 集群一行会变成 `reachable: True`，`BACKEND="auto"` 会选择 `kubernetes`。
#
# ## 清理
# 无需清理：本课只是查看了一下环境。
