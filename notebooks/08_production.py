# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · Production: quotas, queues, gang scheduling, security and a workshop for N learners
#
# **What you will do:** read lesson 04's two manifest sets (`admin/` for the cluster admin, `jobs/`
# for the team), validate them against the Kubernetes and CRD schemas, check them against the
# course's security policy (and watch the policy catch a deliberately insecure job), work out what
# the team's ResourceQuota admits, and give three learners an isolated, quota-bounded slice of a
# cluster with the workshop tooling (dry run, apply, list, clean up), with the preflight
# (`kubecourse doctor`), per-learner credentials and the progress board.
#
# **Why:** on a shared GPU cluster the questions change from "does it train?" to "who may run
# what, how much, in which order, and what happens when it is preempted?" Kubernetes answers with
# namespaces, Pod Security Admission, quotas, RBAC and NetworkPolicies; Kueue and Volcano add
# queueing, borrowing, preemption and all-or-nothing (gang) scheduling.
#
# **Prerequisites:** 02. **Time:** 30 minutes (smoke: well under a minute; nothing trains here,
# notebook 09 preempts a real run).

# %% tags=["parameters"]
SMOKE = True  # nothing here depends on it: the checks are the same at any size
BACKEND = "local"  # "local" (objects recorded in memory) or "kubernetes" (cluster admin)
LEARNERS = 3  # workshop size
GPUS_PER_LEARNER = 2  # the multi-node lessons run 2 pods with 1 GPU each
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
# ## 1. Two halves: `admin/` and `jobs/`
# A cluster admin applies `admin/` once per team (it creates cluster-scoped things: PriorityClasses,
# Kueue ClusterQueues, a Volcano Queue). The team applies `jobs/` with the narrow Role from
# `admin/rbac-learner.yaml`. Each file opens with what it teaches and its kubectl commands.

# %%
folder = lesson_dir("04")
print((folder / "README.md").read_text())
admin = load_lesson("04", part="admin")
jobs = load_lesson("04", part="jobs")
for name, objects in (("admin", admin), ("jobs", jobs)):
    print(f"{name}: {len(objects)} objects:", ", ".join(object_id(o) for o in objects))

# %% [markdown]
# The HA Job is the one to read closely: the podFailurePolicy decides what a failure means.

# %%
ha_job = next(o for o in jobs if o["metadata"]["name"] == "cifar10-ha")
yaml_view({"podFailurePolicy": ha_job["spec"]["podFailurePolicy"]})

# %% [markdown]
# ## 2. Validate: schemas, CRD schemas, policy
# Built-in kinds against the Kubernetes 1.34 schema (strict), Kueue and Volcano objects against the
# upstream CRDs' `openAPIV3Schema`, then the course policy. The kubectl twin:
# `kubectl apply -k manifests/04-production/admin/ --dry-run=server --validate=strict`.

# %%
report = validate(admin + jobs)
print(report)

# %% [markdown]
# ## 3. The policy check, and an insecure job it must catch
# `kubecourse.policy.check_policy` works on any manifest set: Pod Security "restricted" (non-root,
# no privilege escalation, capabilities dropped, seccomp, no host namespaces or hostPath), pinned
# images, requests and limits, no inline secrets, RBAC without wildcards or admin bindings.
# Below, the same HA job with the mistakes people make under deadline pressure, plus a "just make
# it work" RoleBinding.

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
# On a cluster the namespace's `pod-security.kubernetes.io/enforce: restricted` label would
# reject that pod at creation (`pods "..." is forbidden: violates PodSecurity "restricted:v1.34"`);
# the policy check tells you the same thing, field by field, before anything is sent.
#
# ## 4. What does the quota admit?
# A ResourceQuota sums the requests of every pod in the namespace. Each of the lesson's jobs asks
# for 4 CPUs, 16 GiB and one GPU per pod; the team quota allows 64 CPUs, 256 GiB and 8 GPUs.

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
# The quota is the hard wall: the 9th GPU pod is rejected by the API server (`exceeded quota`) and
# the Job controller keeps retrying. Kueue avoids that: the queued Job waits, suspended, until its
# ClusterQueue has quota for *all* its pods, and may borrow idle GPUs from its cohort (up to
# `borrowingLimit`) or preempt lower-priority workloads. The helper's `queue=` option adds what
# Kueue needs to any Job:

# %%
queued = apply_options([ha_job], queue="team-a-queue")[0]
print(
    "labels:",
    queued["metadata"]["labels"].get("kueue.x-k8s.io/queue-name"),
    "suspend:",
    queued["spec"]["suspend"],
)

# %% [markdown]
# ## 5. A workshop: N learners, each with an isolated slice
# `Workshop(learners=N)` derives, from the admin manifests above, one namespace per learner with
# the restricted Pod Security labels, a quota and LimitRange sized per learner, a LocalQueue into a
# shared workshop ClusterQueue, the learner Role and the NetworkPolicies. A dry run first: the table
# is what would be created. The terminal twin: `kubecourse workshop up --learners 3`.

# %%
workshop = Workshop(learners=LEARNERS, gpus=GPUS_PER_LEARNER)  # cpu/memory: the largest lesson
workshop_objects = workshop.render()
print(workshop.table(workshop_objects))
workshop_report = workshop.validate(workshop_objects)
print(workshop_report)

# %% [markdown]
# Each learner's Role is exactly what the lessons use (`kubecourse.access` derives it from every
# lesson's manifests and the helper's calls; a test fails on a missing or a surplus right), and the
# quota is sized so the largest lesson fits:

# %%
print("learner quota (largest lesson):", lesson_sized_quota())
learner_role = next(o for o in workshop_objects if o["kind"] == "Role")
print("learner rights:", len(role_rights(learner_role)), "=", len(lesson_rights()), "needed")

# %% [markdown]
# Now through the client. The local backend only records the objects (nothing locally enforces a
# quota or a NetworkPolicy); on Kubernetes this creates them. `SERVER_DRY_RUN` sends `dryRun=All`
# first: admission and validation without storing, and since a dry run stores no Namespace either,
# the objects inside the learner namespaces are reported as not checked (twin:
# `kubecourse workshop up --learners 3 --apply --backend kubernetes --server-dry-run`, add
# `--create-namespaces` to create the namespaces for real and dry-run the rest).

# %%
dry_run = BACKEND == "kubernetes" and SERVER_DRY_RUN
created = workshop.up(client, dry_run=dry_run)
print(workshop.table(workshop_objects, created))
if NOT_CHECKED in created.values():
    print("note:", DRY_RUN_NOTE)
present_after_up = len(workshop.present(client))
print(f"{present_after_up} of {len(workshop_objects)} objects present")

# %% [markdown]
# ## 6. Preflight, credentials and the progress board
# `kubecourse doctor` checks a namespace before a lesson (API and version, the operators' API
# groups, GPU nodes, storage classes, the LocalQueue, and every right through
# SelfSubjectAccessReview); `kubecourse workshop creds --learners 3` writes one kubeconfig per
# learner with a ServiceAccount token from the TokenRequest API (expiring after a day, the
# learner's namespace and queue in its context); `kubecourse workshop status --learners 3` is the
# board: per learner, which lessons' jobs ran and how they ended (from the jobs' lesson labels).
# Without a cluster the doctor says what it would check and the board is empty.

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
# ## On a real cluster
# As a cluster admin, with Kueue and Volcano installed:
#
# ```bash
# kubectl apply -k manifests/04-production/admin/
# kubectl apply -k manifests/04-production/jobs/ --as=system:serviceaccount:ml-team-a:learner
# kubectl get workloads -n ml-team-a -w            # Kueue: pending -> admitted (QuotaReserved, Admitted)
# kubectl describe clusterqueue team-a             # borrowed quota, pending workloads
# kubectl get vcjob,podgroup -n ml-team-a          # Volcano: the gang starts whole or not at all
# kubectl auth can-i create secrets -n ml-team-a --as=system:serviceaccount:ml-team-a:learner   # no
# kubecourse workshop up --learners 20 --apply --backend kubernetes
# kubecourse workshop creds --learners 20 --out kubeconfigs/   # hand learner-07.kubeconfig to learner 7
# KUBECONFIG=kubeconfigs/learner-07.kubeconfig kubecourse doctor --lesson 02   # as that learner
# kubecourse workshop status --learners 20                      # the progress board
# kubecourse workshop down --learners 20 --apply --backend kubernetes   # idempotent
# ```
# Run this notebook with `BACKEND = "kubernetes"` to send the workshop (server-side dry run by
# default; set `SERVER_DRY_RUN = False` to create it, the cleanup cell removes it).
#
# ## Clean up

# %%
removed = workshop.down(client)
present_after_down = len(workshop.present(client))
print(
    f"removed: {sum(r == 'deleted' for r in removed.values())}, still present: {present_after_down}"
)
assert present_after_down == 0, "the workshop left objects behind"
assert dry_run or set(removed.values()) == {"deleted"}, removed
client.close()
