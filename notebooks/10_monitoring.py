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
# # 10 · Monitoring a training job: Prometheus metrics, a live dashboard, alerts
#
# **What you will do:** run the training Job of `manifests/05-monitoring/` with its Prometheus
# exporter on, scrape every rank with a real Prometheus server, watch a live dashboard while the job
# trains, ask PromQL questions, and fire an alert on purpose (a NaN loss).
#
# **Why:** a training job fails silently more often than loudly: a NaN loss, a stalled rank, a
# throughput drop, an idle GPU, a checkpoint that stopped being written. Logs tell you afterwards;
# metrics and alerts tell you while it happens, for every rank at once.
#
# **Prerequisites:** 02. **Time:** 20 minutes (smoke: under a minute). Needs the `prometheus` binary
# (`make setup` installs it; on a cluster the Prometheus Operator runs it).

# %% tags=["parameters"]
SMOKE = True  # synthetic data, a short run
BACKEND = "local"  # "local": processes + a local Prometheus scraping them (on a cluster the
# Prometheus Operator scrapes the pods: see "On a real cluster")
NAMESPACE = ""  # empty: $KUBECOURSE_NAMESPACE, else the kubeconfig context, else "kubecourse"
JOB_NAME = "cifar10-monitored-smoke"
IMAGE = "ghcr.io/kubecourse/labs:0.1.0"
NAN_AT_STEP = 12  # inject a NaN loss at this optimizer step (0: no fault); fires an alert
TIMEOUT_S = 600

# %%
import urllib.request

from kubecourse import TrainingClient, render
from kubecourse.course import record_outcome
from kubecourse.display import yaml_view
from kubecourse.monitoring import LiveDashboard, PrometheusServer, free_port

client = TrainingClient(backend=BACKEND, namespace=NAMESPACE)

# %% [markdown]
# ## 1. What the trainer exports
# `labs/common/metrics.py` (`PrometheusExporter`) serves `/metrics` on `METRICS_PORT` + local rank,
# with labels `training_job` and `rank`: loss, learning rate, samples/s, a step-time histogram,
# checkpoint save time and age, progress, non-finite steps, MFU (when the model's FLOPs and the GPU's
# peak are known) and GPU utilisation/memory through NVML when there is a GPU. Without
# `METRICS_PORT` every call is a no-op, so the training loop never branches on it.
#
# The lesson's Job is lesson 01's with three additions: the `METRICS_PORT` variable, a container port
# named `metrics`, and the pod label the PodMonitor selects.

# %%
port = free_port()  # locally every job needs its own port; in a pod 9400 is always free
options = {
    "name": JOB_NAME,
    "namespace": NAMESPACE,
    "image": IMAGE,
    "env": {"DATASET": "synthetic", "METRICS_PORT": str(port), "METRICS_ADDR": "127.0.0.1"},
}
if SMOKE:
    options["args"] = [
        "--data-dir=/data",
        "--dataset=$(DATASET)",
        "--out-dir=/checkpoints/$(JOB_NAME)",
        "--smoke",
        "--prepare",
        "--epochs=2",
        "--train-subset=1280",
        "--log-every=2",
        "--checkpoint-every=10",
        "--num-threads=1",
        "--on-nonfinite=skip",  # the job survives the NaN; the alert still fires
        f"--inject-nan-at-step={NAN_AT_STEP}",
    ]
objects = render("05", **options)
yaml_view([o for o in objects if o["kind"] in ("PodMonitor", "Job")])

# %% [markdown]
# ## 2. A real Prometheus, scraping the ranks
# `PrometheusServer` starts Debian's `prometheus` on 127.0.0.1 with a temporary storage folder, a
# 1-second scrape and rule-evaluation interval (production: 15-60 s), and the course's alert rules,
# `monitoring/training-alerts.rules.yml`: the same groups as `manifests/05-monitoring/prometheusrule.yaml`.
# On a cluster the PodMonitor gives the Prometheus Operator the same scrape config.

# %%
prom = PrometheusServer(targets=[f"127.0.0.1:{port}"]).start()
print("prometheus at", prom.url)
print(prom.config_text())
print([r["name"] for r in prom.rules()])

# %% [markdown]
# ## 3. Submit and watch the live dashboard
# The dashboard's panels are PromQL range queries, redrawn every two seconds until the job ends
# (`kubectl port-forward` + Grafana on a cluster: `grafana-dashboard.yaml` holds the same panels).
# While it runs we also watch `/api/v1/alerts`.

# %%
client.reset_volume("training-checkpoints", JOB_NAME)  # a PVC outlives jobs: start empty
job = client.submit(objects)
fired: dict[str, dict] = {}
scrape_text = ""


def job_finished() -> bool:
    global scrape_text
    if not scrape_text and BACKEND == "local":
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
                scrape_text = reply.read().decode()
        except OSError:
            pass  # the trainer is still starting (or already gone)
    for alert in prom.alerts("firing"):
        fired.setdefault(alert["labels"]["alertname"], alert)
    return client.status(job).done


dashboard = LiveDashboard(prom, window_s=120)
dashboard.show()  # one picture, replaced by a fresh PNG at every update
figure = dashboard.run(until=job_finished, every_s=2.0, timeout_s=TIMEOUT_S)
status = client.wait(job, timeout_s=TIMEOUT_S, progress=False)

# %% [markdown]
# What Prometheus read from the trainer: one scrape of `/metrics` taken during the run (on a pod:
# `kubectl port-forward pod/<pod> 9400` and `curl localhost:9400/metrics`), and the series it stored.

# %%
print("\n".join(line for line in scrape_text.splitlines() if line.startswith("kubecourse_"))[:3000])
names = [n for n in prom.api("label/__name__/values") if n.startswith("kubecourse_")]
print(len(names), "kubecourse series names stored:", ", ".join(names))

# %% [markdown]
# ## 4. Ask PromQL
# The job has ended and its target is gone, so instant queries would find only stale series;
# `*_over_time(...[5m])` looks back over the run.

# %%
QUERIES = {
    "last step seen": "max_over_time(kubecourse_train_last_step[5m])",
    "steps planned": "max_over_time(kubecourse_train_total_steps[5m])",
    "samples trained": "max_over_time(kubecourse_train_samples_total[5m])",
    "non-finite steps": "max_over_time(kubecourse_train_nonfinite_steps_total[5m])",
    "median step time (s)": (
        "histogram_quantile(0.5, max_over_time(kubecourse_train_step_seconds_bucket[5m]))"
    ),
    "checkpoint saves": "max_over_time(kubecourse_train_checkpoint_save_seconds_count[5m])",
    "mean checkpoint save (s)": (
        "max_over_time(kubecourse_train_checkpoint_save_seconds_sum[5m])"
        " / max_over_time(kubecourse_train_checkpoint_save_seconds_count[5m])"
    ),
    "peak samples/s": "max_over_time(kubecourse_train_samples_per_second[5m])",
}
answers = {name: prom.value(q) for name, q in QUERIES.items()}
for name, value in answers.items():
    print(f"{name:26s} {value}")

# %% [markdown]
# ## 5. The alert we fired on purpose
# `--inject-nan-at-step` turned one step's loss into NaN; `--on-nonfinite=skip` dropped that update
# (the weights stay finite) and counted it in `kubecourse_train_nonfinite_steps_total`. The rule
# `TrainingLossNotFinite` (`increase(...[10m]) > 0`, `for: 0m`) fired within seconds.

# %%
for name, alert in fired.items():
    print(name, alert["labels"], alert["annotations"]["summary"], sep="\n  ")

# %% [markdown]
# ## 6. Assert the outcome

# %%
assert status.phase == "Succeeded", f"job ended {status.phase}: {status.reason} {status.message}"
assert answers["steps planned"] == 40, answers
assert answers["last step seen"] >= NAN_AT_STEP, answers
assert answers["samples trained"] >= NAN_AT_STEP * 64, answers
assert answers["non-finite steps"] == (1 if NAN_AT_STEP else 0), answers
assert 0 < answers["median step time (s)"] < 10, answers
assert answers["checkpoint saves"] >= 1 and answers["mean checkpoint save (s)"] > 0, answers
if NAN_AT_STEP:
    assert "TrainingLossNotFinite" in fired, f"the NaN alert did not fire: {list(fired)}"
    assert fired["TrainingLossNotFinite"]["labels"]["training_job"] == JOB_NAME
assert "TrainingStalled" not in fired and dashboard.updates >= 2
record_outcome(
    "10_monitoring",
    figures={"dashboard": dashboard.figure},
    phase=status.phase,
    alerts_fired=sorted(fired),
    last_step_seen=answers["last step seen"],
    median_step_s=round(answers["median step time (s)"], 4),
    mean_checkpoint_save_s=round(answers["mean checkpoint save (s)"], 4),
    dashboard_updates=dashboard.updates,
)

# %% [markdown]
# ## Exercise: how many steps were slow?
# A Prometheus histogram is three series: `_bucket{le="..."}` (how many observations were **at
# most** `le` seconds: the buckets are cumulative), `_sum` and `_count`. Write a PromQL query for
# the **fraction** of optimizer steps that took longer than `THRESHOLD` seconds (one of the
# exporter's bucket bounds, written in the `le` label as `repr(float(THRESHOLD))`), looking back
# over the run as above. The check evaluates it on this Prometheus.
# (A solution is filled in: change it and re-run the check.)

# %%
STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)  # labs/common/metrics.py
THRESHOLD = max([b for b in STEP_BUCKETS if b <= answers["median step time (s)"]] or [0.01])
# BEGIN SOLUTION
# sum(): the bucket series have an `le` label the count has not; `/` matches equal label sets
my_query = (
    f'1 - sum(max_over_time(kubecourse_train_step_seconds_bucket{{le="{float(THRESHOLD)!r}"}}[5m]))'
    " / sum(max_over_time(kubecourse_train_step_seconds_count[5m]))"
)
# END SOLUTION

# %%
from kubecourse.exercises import require

require("10-slow-steps", my_query, evaluate=prom.value, threshold=THRESHOLD)
print(f"{prom.value(my_query):.0%} of the steps took longer than {THRESHOLD} s")

# %% [markdown]
# ## On a real cluster
# With kube-prometheus-stack (Prometheus Operator + Grafana) and, for GPUs, the NVIDIA GPU Operator
# (DCGM exporter) installed:
#
# ```bash
# kubectl apply -k manifests/01-cifar10-job/          # the PVCs
# kubectl apply -k manifests/05-monitoring/           # PodMonitor, rules, dashboard, the Job
# kubectl get podmonitor,prometheusrule,configmap -l course.kubecourse.dev/lesson=10
# kubectl -n monitoring port-forward svc/kube-prometheus-stack-prometheus 9090 &
# curl -s 'localhost:9090/api/v1/query?query=kubecourse_train_loss'
# kubectl -n monitoring port-forward svc/kube-prometheus-stack-grafana 3000:80   # "kubecourse / training"
# ```
# `PrometheusServer` has the same API as the cluster's Prometheus: point
# `kubecourse.monitoring.PrometheusServer.query` code at the port-forward by setting `port=9090`.
#
# ## Clean up

# %%
client.delete(job)
prom.stop()
client.close()
