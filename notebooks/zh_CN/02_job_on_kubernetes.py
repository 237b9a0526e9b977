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
#     catalog: notebooks/locale/zh_CN/LC_MESSAGES/02_job_on_kubernetes.po
#     generated_by: python -m kubecourse.i18n build (edit the catalog, not this file)
#     language: zh_CN
#     source: notebooks/02_job_on_kubernetes.py
# ---

# %% [markdown]
# # 02 · 把同一训练作为 Kubernetes Job 运行
#
# **你将做什么：** 阅读把实验程序打包进镜像的 Dockerfile，用类型化选项（typed options）渲染本课的
# Job 清单（manifest），校验它、提交它、跟踪它的日志和状态，最后清理。
#
# **为什么：** [Job（作业）](../../docs/glossary.md#job)是能把训练运行到完成、并在 Pod 失败时重试的
# 最小 Kubernetes 对象。本地后端把*同一份*渲染好的 Pod 规约（pod spec）作为本地进程运行，所以这里的
# 一切无需集群也能工作；设置 `BACKEND = "kubernetes"` 即可使用真实集群。
#
# **前置条件：** 01。**用时：** 20 分钟（冒烟规模：约一分钟）。

# %% tags=["parameters"]
SMOKE = True  # 合成数据和实验程序的 --smoke 预设
BACKEND = "local"  # "local"（本机上的进程）或 "kubernetes"（$KUBECONFIG）
NAMESPACE = ""  # empty: $KUBECOURSE_NAMESPACE, else the kubeconfig context, else "kubecourse"
JOB_NAME = "cifar10-smoke"
IMAGE = "ghcr.io/kubecourse/labs:0.1.0"  # 用于真实集群时，先构建并推送它（见下文）
TIMEOUT_S = 600

# %%
from kubecourse import ManifestError, TrainingClient, load_lesson, render
from kubecourse.contract import Checkpoint, Done, records
from kubecourse.course import record_outcome
from kubecourse.display import diff_view, events_view, status_view, yaml_view
from kubecourse.manifests import repo_root

ROOT = repo_root()
client = TrainingClient(backend=BACKEND, namespace=NAMESPACE)

# %% [markdown]
# ## 1. 镜像
# Pod 运行的是容器镜像（image），不是笔记本。`labs/Dockerfile` 基于一个固定版本的 CUDA PyTorch
# 镜像，添加一个非 root 用户并复制实验程序；Pod 启动时不会 pip install 任何东西。

# %%
print((ROOT / "labs" / "Dockerfile").read_text())

# %% [markdown]
# ```bash
# docker build -f labs/Dockerfile -t <registry>/kubecourse-labs:0.1.0 .
# docker push <registry>/kubecourse-labs:0.1.0
# ```
#
# ## 2. 渲染：普通清单加类型化选项
# `manifests/01-cifar10-job/` 中是可以直接 `kubectl apply` 的普通 YAML。辅助包加载它并应用类型化选项；
# 这里是名称、镜像，以及冒烟规模下的合成数据集和实验程序的 `--smoke` 预设。差异（diff）准确显示了
# 选项改了什么。

# %%
options = {"name": JOB_NAME, "namespace": NAMESPACE, "image": IMAGE}
if SMOKE:
    # The manifest's explicit --epochs/--checkpoint-every would win over the lab's --smoke preset,
    # so smoke runs replace the trainer's args instead of appending to them.
    smoke_args = [
        "--data-dir=/data",
        "--dataset=$(DATASET)",
        "--out-dir=/checkpoints/$(JOB_NAME)",
        "--smoke",
    ]
    options.update(env={"DATASET": "synthetic"}, args=smoke_args, deadline_s=TIMEOUT_S)
base = load_lesson("01")
objects = render("01", **options)
diff_view(base, objects)

# %%
yaml_view([o for o in objects if o["kind"] == "Job"])

# %% [markdown]
# ## 3. 提交前校验
# 三层校验：固定版本的 Kubernetes 模式（schema，严格模式：字段拼错即报错）、定制资源的 CRD 模式，以及
# 课程策略（固定版本的镜像、请求和限制、非 root、禁止特权提升、不内联 Secret）。错误的选项永远到不了后端：

# %%
report = client.validate(objects)
print(report)
try:
    render("01", name="Bad_Name", gpus=-1)
except ManifestError as error:
    print(error)

# %% [markdown]
# ## 4. 提交、跟踪、等待
# 每个调用都会打印对应的 kubectl 命令。在本地后端上，PVC 是 `.course/volumes` 下的文件夹，Pod 看到的
# 路径（`/data`、`/checkpoints`）映射到这些文件夹上。

# %%
client.reset_volume("training-checkpoints", JOB_NAME)  # a PVC outlives jobs: start from nothing
job = client.submit(objects)
logs = client.logs(job, follow=True)

# %%
status = client.wait(job, timeout_s=TIMEOUT_S)
print(events_view(client.events(job)))

# %% [markdown]
# `status()` 随时可以查询，而不只是在结束时：阶段（phase）、Job 控制器维护的计数（`active`、
# `succeeded`、`failed`），以及每个 Pod 及其退出码。

# %%
status_view(client.status(job))

# %% [markdown]
# ## 5. Assert the outcome
# The Job succeeded, the trainer saved checkpoints and reported its accuracy. The log lines follow
# one contract (`kubecourse.contract`); `client.result(job)` is the lab's result.json, read from
# its final `result` log line, and `client.list_volume` shows the files on the PVC.

# %%
texts = [line.text for line in logs]
done = records(texts, Done)
result = client.result(job)
assert status.phase == "Succeeded", f"job ended {status.phase}: {status.reason} {status.message}"
assert records(texts, Checkpoint), "the trainer saved no checkpoint"
assert done and result, "the trainer did not report its final accuracy"
test_acc = result["test_acc"]
assert abs(float(done[-1].fields["test_acc"]) - test_acc) <= 1e-4, (done[-1], result)
assert test_acc >= 0.4, f"test accuracy {test_acc} is not far above chance"
checkpoints = [
    f
    for f in client.list_volume("training-checkpoints", f"{JOB_NAME}/checkpoints")
    if f.endswith(".pt")
]
assert checkpoints, "no checkpoint file on the checkpoints PVC"
print("checkpoints on the PVC:", checkpoints)
record_outcome(
    "02_job_on_kubernetes",
    backend=BACKEND,
    phase=status.phase,
    test_acc=test_acc,
    duration_s=round(status.duration_s or 0, 1),
)

# %% [markdown]
# ## Exercise: make a bad configuration fail fast
# The Job's `podFailurePolicy` says: exit code 2 (the lab's "bad configuration" code) fails the Job
# at once instead of retrying it `backoffLimit` times. Render a job whose trainer gets a flag value
# the lab rejects (the options of section 2 can add trainer arguments), submit it, and check that it
# ends `Failed` with reason `PodFailurePolicy` after a single pod. (A solution is filled in: change
# it and re-run the check.)

# %%
# BEGIN SOLUTION
bad_objects = render(
    "01",
    name=f"{JOB_NAME}-bad",
    namespace=NAMESPACE,
    image=IMAGE,
    env={"DATASET": "synthetic"},
    extra_args=["--epochs=-1"],
)
# END SOLUTION
bad_job = client.submit(bad_objects)
bad_status = client.wait(bad_job, timeout_s=TIMEOUT_S, progress=False)

# %%
from kubecourse.exercises import require

require("02-fail-fast", bad_status)

# %% [markdown]
# ## 在真实集群上
# 构建并推送镜像，然后以 `BACKEND = "kubernetes"` 和 `IMAGE = "<registry>/kubecourse-labs:0.1.0"`
# 运行本笔记本，或手动执行：
#
# ```bash
# kubectl apply -k manifests/01-cifar10-job/
# kubectl get job cifar10-train -w
# kubectl logs -f job/cifar10-train -c trainer
# kubectl describe job cifar10-train      # podFailurePolicy、backoffLimit、事件
# ```
# 在 GPU 节点上，训练程序会自动选择 CUDA 和 bf16 autocast。
#
# ## 清理
# 删除这些作业（它们的 Pod 也会一并删除，`--cascade=foreground`）；PVC 及其中的数据保留给后面的课程。

# %%
client.delete(job)
client.delete(bad_job)
client.close()
