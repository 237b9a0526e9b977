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
#     catalog: notebooks/locale/zh_CN/LC_MESSAGES/08_production.po
#     generated_by: python -m kubecourse.i18n build (edit the catalog, not this file)
#     language: zh_CN
#     source: notebooks/08_production.py
# ---

# %% [markdown]
# # 08 · 生产环境：配额、队列、成组调度、安全，以及一个供 N 名学员使用的工作坊
#
# **你将做什么：** 阅读第 04 课的两组清单（给集群管理员的 `admin/`，给团队的 `jobs/`），对照 Kubernetes 和
# CRD 模式校验它们，用课程的安全策略检查它们（并看策略抓住一个故意写得不安全的作业），算出团队的
# [资源配额（ResourceQuota）](../../docs/glossary.md#resourcequota)能接纳什么，再用工作坊工具给三名学员
# 各分配一份隔离的、受配额约束的集群资源（试运行、应用、列出、清理），并配上预检（`kubecourse doctor`）、
# 每名学员的凭据和进度看板。
#
# **为什么：** 在共享 GPU 集群上，问题从“它能训练吗？”变成了“谁可以运行什么、用多少、按什么顺序、被抢占时
# 会怎样？”Kubernetes 的回答是[名字空间（namespace）](../../docs/glossary.md#namespace)、
# Pod 安全准入（Pod Security Admission）、配额、[RBAC](../../docs/glossary.md#rbac) 和网络策略
# （NetworkPolicy）；Kueue 和 Volcano 在此之上增加了排队、借用、[抢占（preemption）](../../docs/glossary.md#preemption)
# 以及全有或全无的[成组调度（gang scheduling）](../../docs/glossary.md#gang-scheduling)。
#
# **前置条件：** 02。**用时：** 30 分钟（冒烟规模：远不到一分钟；这里不训练任何东西，笔记本 09 会抢占
# 一次真实的运行）。

# %% tags=["parameters"]
SMOKE = True  # 这里没有任何东西依赖它：检查在任何规模下都相同
BACKEND = "local"  # "local" (objects recorded in memory) or "kubernetes" (cluster admin)
LEARNERS = 3  # 工作坊的人数
GPUS_PER_LEARNER = 2  # 多节点课程运行 2 个 Pod，每个 1 块 GPU
SERVER_DRY_RUN = True  # kubernetes: send the workshop as a server-side dry run (stores nothing)

# %%
import copy

from kubecourse import TrainingClient, apply_options, load_lesson, validate
from kubecourse.access import lesson_rights, role_rights
from kubecourse.cluster import ClusterApi
from kubecourse.course import record_outcome
from kubecourse.display import yaml_view
from kubecourse.doctor import preflight
from kubecourse.manifests import lesson_dir, object_id, repo_root
from kubecourse.policy import check_policy, findings_table
from kubecourse.quota import how_many_fit, job_requests
from kubecourse.workshop import DRY_RUN_NOTE, NOT_CHECKED, Workshop, lesson_sized_quota

ROOT = repo_root()
client = TrainingClient(backend=BACKEND)

# %% [markdown]
# ## 1. 两个部分：`admin/` 和 `jobs/`
# 集群管理员为每个团队应用一次 `admin/`（它创建集群作用域的对象：[优先级类（PriorityClass）](../../docs/glossary.md#priorityclass)、
# Kueue ClusterQueue、一个 Volcano Queue）。团队则用 `admin/rbac-learner.yaml` 中权限很窄的 Role 应用
# `jobs/`。每个文件开头都说明它教什么，以及它的 kubectl 命令。

# %%
folder = lesson_dir("04")
print((folder / "README.md").read_text())
admin = load_lesson("04", part="admin")
jobs = load_lesson("04", part="jobs")
for name, objects in (("admin", admin), ("jobs", jobs)):
    print(f"{name}: {len(objects)} objects:", ", ".join(object_id(o) for o in objects))

# %% [markdown]
# 值得仔细阅读的是高可用（HA）Job：podFailurePolicy 决定了一次失败意味着什么。

# %%
ha_job = next(o for o in jobs if o["metadata"]["name"] == "cifar10-ha")
yaml_view({"podFailurePolicy": ha_job["spec"]["podFailurePolicy"]})

# %% [markdown]
# ## 2. 校验：模式、CRD 模式、策略
# 内置类型对照 Kubernetes 1.34 模式（严格模式），Kueue 和 Volcano 对象对照上游 CRD 的
# `openAPIV3Schema`，然后是课程策略。对应的 kubectl 命令：
# `kubectl apply -k manifests/04-production/admin/ --dry-run=server --validate=strict`。

# %%
report = validate(admin + jobs)
print(report)

# %% [markdown]
# ## 3. 策略检查，以及它必须抓住的不安全作业
# `kubecourse.policy.check_policy` 适用于任何一组清单：Pod 安全标准 "restricted"（非 root、禁止特权提升、
# 丢弃所有权能（capabilities）、seccomp、不使用主机名字空间或 hostPath）、固定版本的镜像、请求和限制、
# 不内联 Secret、RBAC 中不用通配符或管理员绑定。下面是同一个 HA 作业，带着人们在截止日期压力下常犯的
# 错误，外加一个“先让它跑起来再说”的 RoleBinding。

# %%
course_findings = check_policy(admin + jobs)
print("course manifests:", findings_table(course_findings))

insecure = copy.deepcopy(ha_job)
insecure["metadata"]["name"] = "cifar10-insecure"
pod = insecure["spec"]["template"]["spec"]
pod["hostNetwork"] = True  # "NCCL was slow"
pod["securityContext"] = {}  # runs as the image's user (often root), no seccomp
trainer = pod["containers"][0]
trainer["image"] = "ghcr.io/kubecourse/labs:latest"
trainer["securityContext"] = {"privileged": True}
trainer["env"].append({"name": "WANDB_API_KEY", "value": "3f1c9a0e"})
del trainer["resources"]["limits"]
admin_binding = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "RoleBinding",
    "metadata": {"name": "learner-admin", "namespace": "ml-team-a"},
    "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "cluster-admin",
    },
    "subjects": [{"kind": "ServiceAccount", "name": "learner", "namespace": "ml-team-a"}],
}
insecure_findings = check_policy([insecure, admin_binding])
print(findings_table(insecure_findings))

# %% [markdown]
# 在集群上，名字空间的 `pod-security.kubernetes.io/enforce: restricted` 标签会在创建时拒绝那个 Pod
# （`pods "..." is forbidden: violates PodSecurity "restricted:v1.34"`）；策略检查在发送任何东西之前，
# 逐个字段告诉你同样的事情。
#
# ## 4. 配额能接纳什么？
# 资源配额对名字空间中每个 Pod 的请求（requests）求和。本课的每个作业每个 Pod 请求 4 个 CPU、16 GiB
# 内存和一块 GPU；团队配额允许 64 个 CPU、256 GiB 和 8 块 GPU。

# %%
quota = next(o for o in admin if o["metadata"]["name"] == "team-a-quota")
print("quota:", quota["spec"]["hard"])
admits = {}
for job in [o for o in jobs if o["kind"] == "Job"]:
    needs = job_requests(job)
    answer = how_many_fit(quota, job)
    admits[job["metadata"]["name"]] = answer["fits"]
    print(
        f"{object_id(job):<18} pods={needs['pods']} gpu={needs.get('requests.nvidia.com/gpu')} "
        f"cpu={needs['cpu']} -> {answer['fits']} at once, limited by {answer['limited_by']}"
    )

# %% [markdown]
# 配额是一堵硬墙：第 9 个 GPU Pod 会被 API 服务器拒绝（`exceeded quota`），而 Job 控制器会不断重试。
# Kueue 避免了这种情况：排队的 Job 保持挂起（suspended）并等待，直到它的 ClusterQueue 有足够配额容纳它的
# *全部* Pod，并且可以从所在的队列组（cohort）借用空闲 GPU（最多到 `borrowingLimit`），或者抢占优先级
# 更低的工作负载。辅助包的 `queue=` 选项为任何 Job 添加 Kueue 所需的内容：

# %%
queued = apply_options([ha_job], queue="team-a-queue")[0]
print(
    "labels:",
    queued["metadata"]["labels"].get("kueue.x-k8s.io/queue-name"),
    "suspend:",
    queued["spec"]["suspend"],
)

# %% [markdown]
# ## 5. 工作坊：N 名学员，每人一份隔离的资源
# `Workshop(learners=N)` 从上面的管理员清单派生出：每名学员一个名字空间（带 restricted Pod 安全标签）、
# 按学员规模设定的配额和限制范围（LimitRange）、一个接入共享工作坊 ClusterQueue 的 LocalQueue、学员 Role
# 以及网络策略。先做一次试运行（dry run）：表格就是将要创建的内容。对应的终端命令：
# `kubecourse workshop up --learners 3`。

# %%
workshop = Workshop(learners=LEARNERS, gpus=GPUS_PER_LEARNER)  # cpu/memory: the largest lesson
workshop_objects = workshop.render()
print(workshop.table(workshop_objects))
workshop_report = workshop.validate(workshop_objects)
print(workshop_report)

# %% [markdown]
# 每名学员的 Role 恰好是各课所用的权限（`kubecourse.access` 从每一课的清单和辅助包的调用中推导出它；缺少或多出
# 一项权限，测试就会失败），配额的大小保证最大的一课也放得下：

# %%
print("learner quota (largest lesson):", lesson_sized_quota())
learner_role = next(o for o in workshop_objects if o["kind"] == "Role")
print("learner rights:", len(role_rights(learner_role)), "=", len(lesson_rights()), "needed")

# %% [markdown]
# 现在通过客户端来做。本地后端只记录这些对象（本地没有任何东西会强制执行配额或网络策略）；在 Kubernetes 上
# 则会创建它们。`SERVER_DRY_RUN` 先发送 `dryRun=All`：经过准入和校验但不存储；由于试运行也不会存储
# Namespace，学员名字空间中的对象会被报告为未检查（对应命令：
# `kubecourse workshop up --learners 3 --apply --backend kubernetes --server-dry-run`，加上
# `--create-namespaces` 则真正创建名字空间，其余对象试运行）。

# %%
dry_run = BACKEND == "kubernetes" and SERVER_DRY_RUN
created = workshop.up(client, dry_run=dry_run)
print(workshop.table(workshop_objects, created))
if NOT_CHECKED in created.values():
    print("note:", DRY_RUN_NOTE)
present_after_up = len(workshop.present(client))
print(f"{present_after_up} of {len(workshop_objects)} objects present")

# %% [markdown]
# ## 6. 预检、凭据和进度看板
# `kubecourse doctor` 在一课开始前检查一个名字空间（API 及其版本、Operator 的 API 组、GPU 节点、存储类、
# LocalQueue，以及通过 SelfSubjectAccessReview 检查每一项权限）；`kubecourse workshop creds --learners 3`
# 为每名学员写一个 kubeconfig，其中是通过 TokenRequest API 获得的服务账号令牌（一天后过期，上下文中带有该学员
# 的名字空间和队列）；`kubecourse workshop status --learners 3` 就是看板：每名学员运行了哪些课的作业、结果
# 如何（依据作业的课程标签）。没有集群时，doctor 说明它将检查什么，看板为空。

# %%
doctor = preflight(namespace=workshop.namespaces()[0], queue="default")
print(doctor)
on_cluster = BACKEND == "kubernetes" and not dry_run
if on_cluster:
    cluster = ClusterApi()
    for row in workshop.credentials(cluster, ROOT / ".course" / "workshop-kubeconfigs"):
        print(row["learner"], row["kubeconfig"], "expires", row["expires"])
    board = workshop.board(workshop.jobs(cluster))
    cluster.close()
else:
    board = workshop.board([])
board

# %% [markdown]
# ## 7. Sharing GPUs: time-slicing, MPS and MIG
# A training job wants whole GPUs; a notebook, a smoke run or an inference server wastes most of
# one. The NVIDIA device plugin can advertise one physical GPU as several schedulable slices, in
# three ways (`admin/gpu-sharing.yaml` holds the course's configs; a node picks one by label,
# `nvidia.com/device-plugin.config=time-sliced-4` or `nvidia.com/mig.config=all-1g.10gb`):
#
# * **time-slicing**: each GPU is advertised as N `nvidia.com/gpu` replicas that take turns; no
#   memory or fault isolation (one pod can take all the memory), fine for development;
# * **MPS** (Multi-Process Service): one server runs the kernels of N clients at the same time, with
#   a per-client memory limit and share of the SMs; still no fault isolation;
# * **MIG** (A100, H100): the GPU is cut into hardware partitions with their own memory and SMs,
#   each advertised as its own resource (`nvidia.com/mig-1g.10gb`): real isolation, fixed sizes.
#
# The table says what each isolates; the cell after it counts, from the configs, how many
# one-slice pods two 8-GPU nodes run under each profile.
# Twin: `kubectl describe node <node> | grep -A8 Allocatable` shows the advertised slices.

# %%
from kubecourse.gpushare import ISOLATION, capacity, load_sharing, profiles, slices_per_gpu

sharing = load_sharing()
print(f"{'mode':13s} {'memory':45s} {'compute':40s} faults")
for mode, isolates in ISOLATION.items():
    print(f"{mode:13s} {isolates['memory']:45s} {isolates['compute']:40s} {isolates['faults']}")
print()
slices = {}
for profile, mode in profiles(sharing).items():
    slices[profile] = capacity(sharing, nodes=2, gpus_per_node=8, profile=profile)
    print(
        f"{profile:16s} {mode:13s} per GPU {slices_per_gpu(sharing, profile)} -> {slices[profile]} pods"
    )

# %% [markdown]
# A quota counts the *advertised* resource: with `time-sliced-4`, the team quota of 8
# `requests.nvidia.com/gpu` admits 8 pods that together hold only 2 physical GPUs, so size quotas
# in slices when a node pool shares its GPUs (and give MIG resources their own quota lines:
# `requests.nvidia.com/mig-1g.10gb`).

# %% [markdown]
# ## 8. Assert the outcome

# %%
assert report.ok, str(report)
assert course_findings == [], findings_table(course_findings)
insecure_fields = {f.field for f in insecure_findings}
for expected in (
    "spec.template.spec.hostNetwork",
    "spec.template.spec.containers[0].image",
    "spec.template.spec.containers[0].securityContext.privileged",
    "spec.template.spec.containers[0].env[2].value",
    "spec.template.spec.containers[0].resources.limits.cpu",
    "roleRef.name",
):
    assert expected in insecure_fields, (expected, sorted(insecure_fields))
assert admits == {"cifar10-queued": 4, "cifar10-ha": 8, "cifar10-gang": 4}, admits
assert workshop_report.ok, str(workshop_report)
assert len(workshop_objects) == 2 + 13 * LEARNERS
assert present_after_up == (0 if dry_run else len(workshop_objects))
assert role_rights(learner_role) == lesson_rights()
assert set(board.cells) == set(workshop.namespaces())
assert dry_run or set(created.values()) == {"created"}, created
assert slices["time-sliced-4"] == 4 * slices["exclusive"] and slices["all-1g.10gb"] == 7 * 16
record_outcome(
    "08_production",
    backend=BACKEND,
    objects_validated=len(report.checked),
    course_policy_findings=len(course_findings),
    insecure_policy_findings=len(insecure_findings),
    ha_jobs_the_quota_admits=admits["cifar10-ha"],
    workshop_objects=len(workshop_objects),
)


# %% [markdown]
# ## Exercise 1: make the insecure job pass the policy
# Fix `fixed` (a copy of the insecure job) until `check_policy([fixed])` returns nothing: a pinned
# image, no host network, a restricted security context for the pod and the container, the secret
# from a Secret instead of a literal, limits back. (A solution is filled in: break it again and
# watch the check name the field.)

# %%
fixed = copy.deepcopy(insecure)
pod = fixed["spec"]["template"]["spec"]
# BEGIN SOLUTION
pod.pop("hostNetwork")
pod["securityContext"] = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
trainer = pod["containers"][0]
trainer["image"] = "ghcr.io/kubecourse/labs:0.1.0"
trainer["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
trainer["env"][-1] = {
    "name": "WANDB_API_KEY",
    "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "api-key"}},
}
trainer["resources"]["limits"] = dict(trainer["resources"]["requests"])
# END SOLUTION

# %%
from kubecourse.exercises import require

require("08-policy-fix", fixed)

# %% [markdown]
# ## Exercise 2: how many pods can share the GPUs?
# Write `slices(nodes, gpus_per_node, profile)`: how many pods asking for one GPU slice (one
# `nvidia.com/gpu` replica or one MIG instance) can run at once when every node uses `profile`
# from the course's `gpu-sharing.yaml`. Read the profiles from `sharing` (the parsed ConfigMaps) or
# with `slices_per_gpu`; the check tries every mode. (A solution is filled in.)


# %%
def slices(nodes: int, gpus_per_node: int, profile: str) -> int:
    # BEGIN SOLUTION
    return nodes * gpus_per_node * sum(slices_per_gpu(sharing, profile).values())
    # END SOLUTION


# %%
require("08-gpu-slices", slices, sharing=sharing)

# %% [markdown]
# ## 在真实集群上
# 以集群管理员身份，在已安装 Kueue 和 Volcano 的集群上：
#
# ```bash
# kubectl apply -k manifests/04-production/admin/
# kubectl apply -k manifests/04-production/jobs/ --as=system:serviceaccount:ml-team-a:learner
# kubectl get workloads -n ml-team-a -w            # Kueue：pending -> admitted（QuotaReserved、Admitted）
# kubectl describe clusterqueue team-a             # 借用的配额、待处理的工作负载
# kubectl get vcjob,podgroup -n ml-team-a          # Volcano：整组一起启动，否则都不启动
# kubectl auth can-i create secrets -n ml-team-a --as=system:serviceaccount:ml-team-a:learner   # no
# kubecourse workshop up --learners 20 --apply --backend kubernetes
# kubecourse workshop creds --learners 20 --out kubeconfigs/   # 把 learner-07.kubeconfig 交给第 7 名学员
# KUBECONFIG=kubeconfigs/learner-07.kubeconfig kubecourse doctor --lesson 02   # 以该学员的身份
# kubecourse workshop status --learners 20                      # 进度看板
# kubecourse workshop down --learners 20 --apply --backend kubernetes   # 幂等
# ```
# 以 `BACKEND = "kubernetes"` 运行本笔记本即可发送工作坊（默认是服务器端试运行；设置
# `SERVER_DRY_RUN = False` 才会真正创建，清理单元格会删除它）。
#
# ## 清理

# %%
removed = workshop.down(client)
present_after_down = len(workshop.present(client))
print(
    f"removed: {sum(r == 'deleted' for r in removed.values())}, still present: {present_after_down}"
)
assert present_after_down == 0, "the workshop left objects behind"
assert dry_run or set(removed.values()) == {"deleted"}, removed
client.close()
