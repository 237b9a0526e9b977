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
#     catalog: notebooks/locale/zh_CN/LC_MESSAGES/10_monitoring.po
#     generated_by: python -m kubecourse.i18n build (edit the catalog, not this file)
#     language: zh_CN
#     source: notebooks/10_monitoring.py
# ---

# %% [markdown]
# # 10 · 监控训练作业：Prometheus 指标、实时仪表盘、告警
#
# **你将做什么：** 在开启 Prometheus 导出器（exporter）的情况下运行 `manifests/05-monitoring/` 的训练 Job，
# 用一个真实的 [Prometheus](../../docs/glossary.md#prometheus) 服务器抓取每个 rank，在作业训练时观看实时
# 仪表盘，用 [PromQL](../../docs/glossary.md#promql) 提问，并故意触发一次告警（NaN 损失）。
#
# **为什么：** 训练作业更常是悄无声息地失败，而不是大张旗鼓地失败：NaN 损失、停滞的 rank、吞吐量下降、
# 闲置的 GPU、不再写入的检查点。日志在事后告诉你；指标和告警在事情发生时就告诉你，而且同时覆盖每个 rank。
#
# **前置条件：** 02。**用时：** 20 分钟（冒烟规模：不到一分钟）。需要 `prometheus` 可执行文件
# （`make setup` 会安装它；在集群上由 Prometheus Operator 运行它）。

# %% tags=["parameters"]
SMOKE = True  # 合成数据，一次短运行
BACKEND = "local"  # "local"：本地进程 + 一个抓取它们的本地 Prometheus（在集群上由
# Prometheus Operator 抓取各 Pod：见“在真实集群上”）
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
# ## 1. 训练程序导出了什么
# `labs/common/metrics.py`（`PrometheusExporter`）在 `METRICS_PORT` + 本地 rank 端口上提供 `/metrics`，
# 带有 `training_job` 和 `rank` 标签：损失、学习率、每秒样本数、每步用时直方图、检查点保存时间和检查点
# 年龄、进度、非有限值步数、MFU（模型算力利用率，已知模型 FLOPs 和 GPU 峰值时），以及有 GPU 时通过 NVML
# 获取的 GPU 利用率/显存。没有 `METRICS_PORT` 时，每个调用都是空操作，所以训练循环从不需要为它分支。
#
# 本课的 Job 就是第 01 课的 Job 加上三处：`METRICS_PORT` 变量、一个名为 `metrics` 的容器端口，以及
# PodMonitor 所选择的 Pod 标签。

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
# ## 2. 一个真实的 Prometheus，抓取各个 rank
# `PrometheusServer` 在 127.0.0.1 上启动 Debian 的 `prometheus`，使用一个临时存储文件夹、1 秒的抓取和
# 规则评估间隔（生产环境：15-60 秒），以及课程的告警规则 `monitoring/training-alerts.rules.yml`：与
# `manifests/05-monitoring/prometheusrule.yaml` 中的规则组相同。在集群上，PodMonitor 为 Prometheus
# Operator 提供同样的抓取配置。

# %%
prom = PrometheusServer(targets=[f"127.0.0.1:{port}"]).start()
print("prometheus at", prom.url)
print(prom.config_text())
print([r["name"] for r in prom.rules()])

# %% [markdown]
# ## 3. 提交并观看实时仪表盘
# 仪表盘的各个面板都是 PromQL 范围查询，每两秒重绘一次，直到作业结束（在集群上用 `kubectl port-forward`
# + Grafana：`grafana-dashboard.yaml` 包含同样的面板）。运行期间我们还会观察 `/api/v1/alerts`。

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
# Prometheus 从训练程序读到了什么：运行期间抓取的一次 `/metrics`（在 Pod 上：
# `kubectl port-forward pod/<pod> 9400` 然后 `curl localhost:9400/metrics`），以及它存储的时间序列。

# %%
print("\n".join(line for line in scrape_text.splitlines() if line.startswith("kubecourse_"))[:3000])
names = [n for n in prom.api("label/__name__/values") if n.startswith("kubecourse_")]
print(len(names), "kubecourse series names stored:", ", ".join(names))

# %% [markdown]
# ## 4. 用 PromQL 提问
# 作业已经结束，它的抓取目标也没有了，所以即时查询只会找到过期的序列；`*_over_time(...[5m])` 会回看整个运行过程。

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
# ## 5. 我们故意触发的告警
# `--inject-nan-at-step` 把某一步的损失变成 NaN；`--on-nonfinite=skip` 丢弃了那次更新（权重保持有限值），
# 并把它计入 `kubecourse_train_nonfinite_steps_total`。规则 `TrainingLossNotFinite`
# （`increase(...[10m]) > 0`，`for: 0m`）在几秒内就触发了。

# %%
for name, alert in fired.items():
    print(name, alert["labels"], alert["annotations"]["summary"], sep="\n  ")

# %% [markdown]
# ## 6. 断言结果

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
# ## 在真实集群上
# 在已安装 kube-prometheus-stack（Prometheus Operator + Grafana）以及（有 GPU 时）NVIDIA GPU Operator
# （DCGM exporter）的集群上：
#
# ```bash
# kubectl apply -k manifests/01-cifar10-job/          # PVC
# kubectl apply -k manifests/05-monitoring/           # PodMonitor、规则、仪表盘、Job
# kubectl get podmonitor,prometheusrule,configmap -l course.kubecourse.dev/lesson=10
# kubectl -n monitoring port-forward svc/kube-prometheus-stack-prometheus 9090 &
# curl -s 'localhost:9090/api/v1/query?query=kubecourse_train_loss'
# kubectl -n monitoring port-forward svc/kube-prometheus-stack-grafana 3000:80   # "kubecourse / training"
# ```
# `PrometheusServer` 与集群中的 Prometheus 有相同的 API：设置 `port=9090`，就能让
# `kubecourse.monitoring.PrometheusServer.query` 代码指向 port-forward 的端口。
#
# ## 清理

# %%
client.delete(job)
prom.stop()
client.close()
