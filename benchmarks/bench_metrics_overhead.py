"""Cost of monitoring and recovery: Prometheus export overhead per step, checkpoint save and resume.

1. Metrics overhead (goal <= 2% of step time): the CIFAR lab trains in this process, alternately
   without and with METRICS_PORT (A/B/A/B..., so load drift hits both), on the smoke preset; the
   result is the ratio of median images/s. Because that end-to-end number is noisy on a shared
   machine, the exporter's per-step work (`step_done`, plus `interval` every log step) is also
   timed directly and divided by the measured step time: the precise estimate.
2. Checkpoint save and resume for the lab's default model (ResNet width 64, SGD momentum state):
   `save_checkpoint` (temp file + fsync + rename + fsync dir) and `load_latest` + load_state_dict.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPEATS = 3


def _train_once(data_dir: Path, out: Path, metrics_port: int) -> float:
    from labs import cifar10
    from labs.common.config import parse_config
    from labs.common.distributed import DistInfo
    from labs.common.metrics import METRICS_PORT_ENV

    argv = ["--data-dir", str(data_dir), "--dataset", "synthetic", "--out-dir", str(out)]
    argv += ["--smoke", "--epochs", "1", "--checkpoint-every", "0", "--log-every", "5"]
    cfg = parse_config(cifar10.TrainConfig, argv, presets={"smoke": cifar10.SMOKE})
    stop = threading.Event()
    if metrics_port:
        os.environ[METRICS_PORT_ENV] = str(metrics_port)
        # A scraper as eager as the lesson's Prometheus (every second), so the cost of serving
        # /metrics is in the measurement too.
        threading.Thread(target=_scrape, args=(metrics_port, stop), daemon=True).start()
    try:
        assert cifar10.train(cfg, DistInfo(), cifar10.StopFlag()) == 0
    finally:
        stop.set()
        os.environ.pop(METRICS_PORT_ENV, None)
    import json

    return json.loads((out / "result.json").read_text())["images_per_s"]


def _scrape(port: int, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                r.read()
        except OSError:
            pass  # not listening yet


def _exporter_cost_s(steps: int = 20000) -> float:
    """Seconds per step of the exporter's own work (step_done + 1/5 of an interval)."""
    from kubecourse.monitoring import free_port
    from labs.common.metrics import PrometheusExporter

    exporter = PrometheusExporter(free_port(), "127.0.0.1", "bench", 0)
    try:
        start = time.perf_counter()
        for step in range(steps):
            exporter.step_done(step, 0.1, 64)
            if step % 5 == 0:
                exporter.interval(2.0, 0.1, 700.0)
        return (time.perf_counter() - start) / steps
    finally:
        exporter.close()


def _checkpoint_times() -> dict:
    import torch

    from labs import cifar10
    from labs.common import checkpoint as ckpt

    model = cifar10.ResNet(64)
    cfg = cifar10.TrainConfig()
    optimizer = cifar10.make_optimizer(model, cfg)
    loss = model(torch.randn(8, 3, 32, 32)).square().mean()
    loss.backward()
    optimizer.step()  # momentum buffers exist, as in a real checkpoint
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 1}
    saves, loads = [], []
    with tempfile.TemporaryDirectory() as folder:
        for i in range(REPEATS):
            start = time.perf_counter()
            path = ckpt.save_checkpoint(state, folder, i + 1, keep=2)
            saves.append(time.perf_counter() - start)
            start = time.perf_counter()
            loaded, _ = ckpt.load_latest(folder, log=lambda m: None)
            model.load_state_dict(loaded["model"])
            optimizer.load_state_dict(loaded["optimizer"])
            loads.append(time.perf_counter() - start)
        size_mb = path.stat().st_size / 1e6
    return {
        "checkpoint_mb": round(size_mb, 1),
        "checkpoint_save_s": round(statistics.median(saves), 3),
        "checkpoint_resume_s": round(statistics.median(loads), 3),
    }


def run() -> dict:
    from kubecourse.monitoring import free_port
    from labs.common import data

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data.prepare_synthetic(root / "data", n_train=2000, n_test=1000, log=lambda m: None)
        _train_once(root / "data", root / "warmup", 0)
        without, with_metrics = [], []
        for i in range(REPEATS):
            without.append(_train_once(root / "data", root / f"off-{i}", 0))
            with_metrics.append(_train_once(root / "data", root / f"on-{i}", free_port()))
    off, on = statistics.median(without), statistics.median(with_metrics)
    step_s = 64 / off  # smoke batch 64 per step
    per_step = _exporter_cost_s()
    direct_pct = 100 * per_step / step_s
    end_to_end_pct = 100 * (off - on) / off
    ckpt = _checkpoint_times()
    return {
        "name": "monitoring + recovery: metrics export overhead, checkpoint save/resume",
        "images_per_s_without_metrics": off,
        "images_per_s_with_metrics": on,
        "overhead_end_to_end_pct": round(end_to_end_pct, 2),
        "exporter_us_per_step": round(per_step * 1e6, 1),
        "step_ms": round(step_s * 1e3, 1),
        "overhead_direct_pct": round(direct_pct, 4),
        "repeats": REPEATS,
        **ckpt,
        "summary": (
            f"metrics export: {per_step * 1e6:.0f} us/step = {direct_pct:.3f}% of a "
            f"{step_s * 1e3:.0f} ms step (end to end {off:.0f} vs {on:.0f} img/s: "
            f"{end_to_end_pct:+.1f}%, median of {REPEATS}); checkpoint "
            f"{ckpt['checkpoint_mb']} MB save {ckpt['checkpoint_save_s']} s, "
            f"resume {ckpt['checkpoint_resume_s']} s"
        ),
        "goal": "export overhead <= 2% of step time",
    }
