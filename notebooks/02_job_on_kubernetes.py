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
# # 02 · The same training as a Kubernetes Job
#
# **What you will do:** read the Dockerfile that bakes the labs into an image, render the lesson's
# Job manifest with typed options, validate it, submit it, follow its logs and status, and clean up.
#
# **Why:** a Job is the smallest Kubernetes object that runs training to completion and retries it
# when a pod fails. The local backend runs the *same* rendered pod spec as local processes, so
# everything here works without a cluster; set `BACKEND = "kubernetes"` to use a real one.
#
# **Prerequisites:** 01. **Time:** 20 minutes (smoke: about a minute).

# %% tags=["parameters"]
SMOKE = True  # synthetic data and the lab's --smoke preset
BACKEND = "local"  # "local" (processes on this machine) or "kubernetes" ($KUBECONFIG)
NAMESPACE = ""  # empty: $KUBECOURSE_NAMESPACE, else the kubeconfig context, else "kubecourse"
JOB_NAME = "cifar10-smoke"
IMAGE = "ghcr.io/kubecourse/labs:0.1.0"  # build and push it first for a real cluster (see below)
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
# ## 1. The image
# Pods run images, not notebooks. `labs/Dockerfile` starts from a pinned CUDA PyTorch image, adds a
# non-root user and copies the labs in; nothing is pip-installed when the pod starts.

# %%
print((ROOT / "labs" / "Dockerfile").read_text())

# %% [markdown]
# ```bash
# docker build -f labs/Dockerfile -t <registry>/kubecourse-labs:0.1.0 .
# docker push <registry>/kubecourse-labs:0.1.0
# ```
#
# ## 2. Render: the plain manifests plus typed options
# `manifests/01-cifar10-job/` holds plain YAML you could `kubectl apply` as is. The helper loads it
# and applies typed options; here a name, the image, and for smoke size the synthetic data set and
# the lab's `--smoke` preset. The diff shows exactly what the options changed.

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
# ## 3. Validate before submitting
# Three layers: the Kubernetes schema of a pinned version (strict: a typo'd field is an error), CRD
# schemas for custom resources, and the course policy (pinned image, requests and limits, non-root,
# no privilege escalation, no inline secrets). A bad option never reaches the backend:

# %%
report = client.validate(objects)
print(report)
try:
    render("01", name="Bad_Name", gpus=-1)
except ManifestError as error:
    print(error)

# %% [markdown]
# ## 4. Submit, follow, wait
# Each call prints its kubectl twin. On the local backend the PVCs are folders under `.course/volumes`
# and the paths the pod sees (`/data`, `/checkpoints`) are mapped onto them.

# %%
client.reset_volume("training-checkpoints", JOB_NAME)  # a PVC outlives jobs: start from nothing
job = client.submit(objects)
logs = client.logs(job, follow=True)

# %%
status = client.wait(job, timeout_s=TIMEOUT_S)
print(events_view(client.events(job)))

# %% [markdown]
# `status()` answers at any time, not only at the end: the phase, the counts the Job controller keeps
# (`active`, `succeeded`, `failed`) and each pod with its exit code.

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
# ## On a real cluster
# Build and push the image, then run this notebook with `BACKEND = "kubernetes"` and
# `IMAGE = "<registry>/kubecourse-labs:0.1.0"`, or by hand:
#
# ```bash
# kubectl apply -k manifests/01-cifar10-job/
# kubectl get job cifar10-train -w
# kubectl logs -f job/cifar10-train -c trainer
# kubectl describe job cifar10-train      # podFailurePolicy, backoffLimit, events
# ```
# On a GPU node the trainer picks CUDA with bf16 autocast automatically.
#
# ## Clean up
# Delete the jobs (their pods go too, `--cascade=foreground`); the PVCs and their data stay for the
# next lessons.

# %%
client.delete(job)
client.delete(bad_job)
client.close()
