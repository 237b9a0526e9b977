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
# # 00 · Setup: is this machine ready for the course?
#
# **What you will do:** check Python, PyTorch, the accelerator, disk, and whether a Kubernetes
# cluster is reachable, then see which backend the lessons will use.
#
# **Why:** every later lesson runs the same training job on the *local backend* (processes on this
# machine, no cluster needed) or on a real cluster. Knowing which one you have saves surprises.
#
# **Prerequisites:** `make setup` (or `make lab`) has created `.venv`. **Time:** 5 minutes.

# %% tags=["parameters"]
SMOKE = True  # CI and laptops: small sizes everywhere
BACKEND = "auto"  # "auto" (kubernetes when a cluster answers, else local), "local" or "kubernetes"

# %% [markdown]
# ## Check the environment
# `check_environment()` inspects torch in a subprocess: the helper package never imports torch, only
# the labs (the programs that run in pods) do.

# %%
from kubecourse.course import record_outcome
from kubecourse.env import check_environment

report = check_environment()
for key, value in report.items():
    print(f"{key:14s} {value}")

# %% [markdown]
# The kubectl equivalents of what was just checked:
#
# ```bash
# kubectl version            # client and server versions: is a cluster reachable?
# kubectl config current-context
# kubectl get nodes -L nvidia.com/gpu.product   # which nodes have which GPUs
# ```

# %%
backend = report["backend"] if BACKEND == "auto" else BACKEND
device = "cuda" if report["torch"].get("cuda") else "cpu"
print(f"lessons will use the {backend!r} backend and train on {device!r}")
if not report["cluster"]["reachable"]:
    print("no cluster:", report["cluster"]["why"], "-> the local backend runs every lesson")

# %% [markdown]
# ## Preflight for the cluster lessons: `kubecourse doctor`
# Before a lesson on a cluster, `kubecourse doctor` (the terminal twin of this cell) checks the API
# server and its version, the operators' API groups the lessons use, GPU nodes, storage classes,
# the LocalQueue, and every right the lessons need (SelfSubjectAccessReview): one line per check
# with the fix. Without a kubeconfig it only says what it would check; nothing fails here.

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
# ## Assert the outcome

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
# ## On a real cluster
# Point `KUBECONFIG` at your cluster (or run JupyterLab inside it, with a ServiceAccount) and re-run:
# the cluster line turns `reachable: True` and `BACKEND="auto"` picks `kubernetes`.
#
# ## Clean up
# Nothing to clean: this lesson only looked around.
