"""kubecourse.monitoring against the real Prometheus binary, scraping a real exporter.

The exporter is the lab's PrometheusExporter started in this process (no training needed): the
test sets its numbers and watches Prometheus scrape them, evaluate the course's alert rules and
answer PromQL. A missing prometheus binary fails with a clear message (it is installed by setup).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from kubecourse.monitoring import (
    LiveDashboard,
    PrometheusError,
    PrometheusNotFound,
    PrometheusServer,
    find_prometheus,
    free_port,
)
from tests.guards import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def exporter():
    from labs.common.metrics import PrometheusExporter

    port = free_port()
    exp = PrometheusExporter.from_env(
        "unit", rank=0, local_rank=0, env={"METRICS_PORT": str(port), "METRICS_ADDR": "127.0.0.1"}
    )
    assert exp.enabled and exp.port == port
    yield exp
    exp.close()


@pytest.fixture
def prom(exporter):
    with PrometheusServer(targets=[f"127.0.0.1:{exporter.port}"]) as server:
        yield server
    assert server.process.poll() is not None, "stop() must end the server"


def test_missing_binary_is_an_error_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("KUBECOURSE_PROMETHEUS", str(tmp_path / "nope"))
    if Path("/usr/bin/prometheus").exists():
        with pytest.raises(PrometheusError, match="rule file"):
            PrometheusServer(rule_files=[tmp_path / "missing.yml"]).start()
        return
    with pytest.raises(PrometheusNotFound, match="ensure-prometheus.sh"):
        find_prometheus()


def test_scrapes_the_exporter_answers_promql_and_fires_the_nan_alert(exporter, prom):
    exporter.start(total_steps=100)
    for step in range(1, 11):
        exporter.step_done(step, seconds=0.05, samples=64)
    exporter.interval(loss=2.25, lr=0.1, samples_per_s=1280.0)
    exporter.checkpoint_saved(0.2)

    up = prom.wait_until(lambda p: p.value('up{job="training"}') == 1, timeout_s=HANG_GUARD_S)
    assert up
    prom.wait_until(lambda p: p.value("kubecourse_train_last_step") == 10, timeout_s=HANG_GUARD_S)
    rows = prom.query("kubecourse_train_loss")
    assert rows[0][0]["training_job"] == "unit" and rows[0][0]["rank"] == "0"
    assert rows[0][1] == 2.25
    assert prom.value("kubecourse_train_samples_total") == 640
    assert prom.value("kubecourse_train_step_seconds_count") == 10
    assert prom.value("kubecourse_train_total_steps") == 100
    p50 = prom.value("histogram_quantile(0.5, kubecourse_train_step_seconds_bucket)")
    assert 0.025 < p50 <= 0.05
    assert prom.value("time() - kubecourse_train_last_checkpoint_timestamp_seconds") < 60
    assert not prom.alerts(), "a healthy run fires nothing"
    names = set(prom.api("label/__name__/values"))
    assert "kubecourse_gpu_utilization_ratio" not in names, "no GPU: no GPU series (no false alert)"
    assert "kubecourse_train_mfu" not in names, "no known peak FLOP/s: no MFU series"
    assert all(r["health"] != "err" for r in prom.rules()), prom.rules()

    exporter.interval(loss=math.nan, lr=0.1, samples_per_s=1280.0)
    exporter.nonfinite_step()
    firing = prom.wait_until(lambda p: p.alerts("firing"), timeout_s=HANG_GUARD_S)
    assert [a["labels"]["alertname"] for a in firing] == ["TrainingLossNotFinite"]
    assert firing[0]["labels"]["training_job"] == "unit"
    assert math.isnan(prom.value("kubecourse_train_loss"))

    with pytest.raises(PrometheusError, match="bad_data"):
        prom.query("rate(kubecourse_train_samples_total[")  # the server's parse error surfaces

    dash = LiveDashboard(prom, window_s=60)
    figure = dash.run(until=lambda: dash.updates >= 2, every_s=0.1)
    assert dash.updates == 3 and figure is not None
    assert dash.data["loss"] and dash.data["progress (steps)"][0][1][-1][1] == 10


def test_add_targets_is_picked_up_without_restart(exporter):
    with PrometheusServer() as prom:
        assert prom.query("up") == []
        prom.add_targets([f"127.0.0.1:{exporter.port}"])
        prom.wait_until(lambda p: p.value("up") == 1, timeout_s=HANG_GUARD_S)


def test_grafana_dashboard_queries_parse_in_prometheus(prom):
    import yaml

    cm = yaml.safe_load((REPO / "manifests/05-monitoring/grafana-dashboard.yaml").read_text())
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["training-dashboard.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 8
    for expr in exprs:
        prom.query(expr)  # raises PrometheusError on a syntax error


def test_mfu_is_exported_when_the_peak_is_known(monkeypatch):
    import torch

    from labs.cifar10 import ResNet
    from labs.common.metrics import PrometheusExporter, training_flops_per_sample

    flops = training_flops_per_sample(ResNet(16), (3, 32, 32))
    # ResNet-8 at width 16 on 32x32: 12.5 M multiply-adds forward (counted by hand: stem 0.44 M,
    # stage 1 4.7 M, stage 2 3.7 M, stage 3 3.7 M) = 25 MFLOPs, x3 with the backward pass.
    assert flops == pytest.approx(75e6, rel=0.01), flops
    assert torch.is_grad_enabled()  # counting ran under no_grad and restored autograd
    monkeypatch.setenv("PEAK_TFLOPS", "1")
    exporter = PrometheusExporter(free_port(), "127.0.0.1", "mfu", 0)
    try:
        exporter.interval(2.0, 0.1, samples_per_s=1000.0, flops_per_sample=flops)
        assert exporter.mfu._value.get() == pytest.approx(1000 * flops / 1e12)
    finally:
        exporter.close()


def test_metrics_export_is_off_without_a_port():
    from labs.common.metrics import PrometheusExporter

    off = PrometheusExporter.from_env("x", 0, 0, env={})
    assert not off.enabled
    off.start(10)
    off.step_done(1, 0.1, 64)  # every call is a no-op
    off.interval(1.0, 0.1, 100.0)
