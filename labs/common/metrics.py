"""Metrics a notebook can read while the job runs.

`metrics.jsonl` gets one JSON object per line, appended and flushed immediately, so a notebook can
tail it for a live plot; every record has a `kind` ("train", "eval") and the optimizer `step`.
`result.json` is written once at the end, atomically. Only rank 0 writes either.

`PrometheusExporter` serves live metrics for Prometheus on every rank (METRICS_PORT). When the
optional `tensorboard` package is installed (`pip install -e '.[tensorboard]'`), every numeric
field of every record also goes to a TensorBoard event file in `OUT/tensorboard/` (tag
`<kind>/<field>`); a resumed run purges the events after its resume step, so the curves read like
an uninterrupted run's. Without the package nothing changes: metrics.jsonl is the source of truth.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from labs.common.data import write_bytes_atomic


class MetricsLog:
    """Append-only JSON-lines writer; disabled (a no-op) on every rank but 0.

    tensorboard_from: the step training (re)starts at; records also go to TensorBoard when the
    package is installed (None = never)."""

    def __init__(
        self, path: str | os.PathLike, enabled: bool = True, tensorboard_from: int | None = None
    ) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._file = None
        self._tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            if tensorboard_from is not None and tensorboard_available():
                from torch.utils.tensorboard import SummaryWriter

                log_dir = self.path.parent / "tensorboard"
                self._tb = SummaryWriter(str(log_dir), purge_step=tensorboard_from or None)

    def write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self._tb is not None:
            kind, step = record.get("kind", "metrics"), int(record.get("step", 0))
            for key, value in record.items():
                if key not in ("kind", "step") and isinstance(value, int | float):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def tensorboard_available() -> bool:
    """True when the optional `tensorboard` package is importable (checked without importing)."""
    return importlib.util.find_spec("tensorboard") is not None


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl ([] when it does not exist); a torn last line is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the line being written when the process was killed
    return records


def truncate_metrics(path: str | os.PathLike, step: int) -> None:
    """Drop records after `step`: a resumed run replays those steps and logs them again, so the
    file reads exactly like an uninterrupted run's."""
    path = Path(path)
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    write_bytes_atomic(path, "".join(json.dumps(r) + "\n" for r in kept).encode())


def write_json_atomic(path: str | os.PathLike, obj: dict[str, Any]) -> None:
    """Write a JSON file atomically (readers never see half of it)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


# ------------------------------------------------------------------------------------------------
# Prometheus: live numbers a server scrapes over HTTP (lessons 10-11).

METRICS_PORT_ENV = (
    "METRICS_PORT"  # base port; local rank r serves on METRICS_PORT + r; 0/unset = off
)
METRICS_ADDR_ENV = "METRICS_ADDR"  # bind address: 0.0.0.0 in a pod (the scraper is elsewhere)
PEAK_TFLOPS_ENV = (
    "PEAK_TFLOPS"  # the accelerator's peak dense TFLOP/s, for MFU when not in the table
)
# Peak dense bf16 TFLOP/s by GPU name fragment (vendor datasheets): what MFU divides by.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


class PrometheusExporter:
    """The trainer's Prometheus metrics, served on http://ADDR:PORT/metrics by a daemon thread.

    Every rank exports its own series (labels `training_job` and `rank`; not `job`, which is the
    scrape job's label in Prometheus and would be renamed `exported_job`). Names and meaning:

        kubecourse_train_loss                         mean training loss of the last log interval
        kubecourse_train_learning_rate                current learning rate
        kubecourse_train_samples_per_second           throughput of the last log interval (global)
        kubecourse_train_samples_total                samples trained (counter: rate() it)
        kubecourse_train_step_seconds                 histogram of optimizer-step wall time
        kubecourse_train_last_step / _total_steps     progress
        kubecourse_train_last_progress_timestamp_seconds   unix time of the last finished step
        kubecourse_train_checkpoint_save_seconds      histogram of checkpoint save time (rank 0)
        kubecourse_train_last_checkpoint_timestamp_seconds unix time of the last save (or start)
        kubecourse_train_nonfinite_steps_total        steps whose loss was NaN/inf
        kubecourse_train_mfu                          model FLOPs utilisation (FLOPs and peak known)
        kubecourse_gpu_utilization_ratio / kubecourse_gpu_memory_used_bytes   NVML (GPU + pynvml)

    `from_env()` returns a disabled exporter (every method a no-op) when METRICS_PORT is unset or
    0, so the hot path never branches on it. A port already in use disables export with a printed
    warning instead of stopping training.
    """

    def __init__(self, port: int, addr: str, training_job: str, rank: int, device_index=None):
        self.enabled = port > 0
        self.port = port
        self._gpu = None
        if not self.enabled:
            return
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            PlatformCollector,
            ProcessCollector,
            start_http_server,
        )

        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # RSS, CPU seconds, open files of this rank
        PlatformCollector(registry=self.registry)
        labels = {"training_job": training_job, "rank": str(rank)}

        def make(cls, name, doc, **kw):
            return cls(name, doc, list(labels), registry=self.registry, **kw).labels(**labels)

        self.loss = make(Gauge, "kubecourse_train_loss", "Mean training loss of the log interval")
        self.lr = make(Gauge, "kubecourse_train_learning_rate", "Current learning rate")
        self.samples_per_s = make(
            Gauge, "kubecourse_train_samples_per_second", "Global samples/s, last interval"
        )
        self.samples = make(Counter, "kubecourse_train_samples", "Samples trained (global)")
        self.step_seconds = make(
            Histogram,
            "kubecourse_train_step_seconds",
            "Wall time of one optimizer step",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.last_step = make(Gauge, "kubecourse_train_last_step", "Last finished optimizer step")
        self.total_steps = make(Gauge, "kubecourse_train_total_steps", "Optimizer steps planned")
        self.progress_ts = make(
            Gauge,
            "kubecourse_train_last_progress_timestamp_seconds",
            "Unix time of the last finished step",
        )
        self.ckpt_seconds = make(
            Histogram,
            "kubecourse_train_checkpoint_save_seconds",
            "Wall time of one checkpoint save",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
        )
        self.ckpt_ts = make(
            Gauge,
            "kubecourse_train_last_checkpoint_timestamp_seconds",
            "Unix time of the last checkpoint save (process start until the first one)",
        )
        self.nonfinite = make(
            Counter, "kubecourse_train_nonfinite_steps", "Steps whose loss was NaN or inf"
        )
        self.progress_ts.set_to_current_time()
        self.ckpt_ts.set_to_current_time()
        # Series that would read 0 without a GPU (and fire "GPU underutilised") exist only with
        # one; MFU only where the peak FLOP/s are known.
        self._gpu = _nvml_handle(device_index)
        self._peak = peak_flops(self._gpu)
        if self._peak:
            self.mfu = make(Gauge, "kubecourse_train_mfu", "Model FLOPs utilisation (0..1)")
        if self._gpu is not None:
            self.gpu_util = make(Gauge, "kubecourse_gpu_utilization_ratio", "GPU busy (NVML)")
            self.gpu_mem = make(Gauge, "kubecourse_gpu_memory_used_bytes", "GPU memory (NVML)")
        try:
            self.server, _ = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as e:
            print(f"warning: metrics export off: cannot listen on {addr}:{port}: {e}", flush=True)
            self.enabled = False

    @classmethod
    def from_env(
        cls, training_job: str, rank: int, local_rank: int, device_index=None, env=None
    ) -> PrometheusExporter:
        env = os.environ if env is None else env
        base = int(env.get(METRICS_PORT_ENV) or 0)
        port = base + local_rank if base > 0 else 0
        addr = env.get(METRICS_ADDR_ENV) or "0.0.0.0"
        return cls(port, addr, training_job, rank, device_index)

    def start(self, total_steps: int) -> None:
        if self.enabled:
            self.total_steps.set(total_steps)

    def step_done(self, step: int, seconds: float, samples: int) -> None:
        """After every optimizer step: cheap (no device sync, no formatting)."""
        if self.enabled:
            self.last_step.set(step)
            self.step_seconds.observe(seconds)
            self.samples.inc(samples)
            self.progress_ts.set_to_current_time()

    def interval(self, loss: float, lr: float, samples_per_s: float, flops_per_sample=None):
        """At each log step: the numbers that need a device sync, MFU and the GPU's state."""
        if not self.enabled:
            return
        self.loss.set(loss)
        self.lr.set(lr)
        self.samples_per_s.set(samples_per_s)
        if flops_per_sample and self._peak:
            self.mfu.set(samples_per_s * flops_per_sample / self._peak)
        if self._gpu is not None:
            import pynvml

            self.gpu_util.set(pynvml.nvmlDeviceGetUtilizationRates(self._gpu).gpu / 100)
            self.gpu_mem.set(pynvml.nvmlDeviceGetMemoryInfo(self._gpu).used)

    def checkpoint_saved(self, seconds: float) -> None:
        if self.enabled:
            self.ckpt_seconds.observe(seconds)
            self.ckpt_ts.set_to_current_time()

    def nonfinite_step(self) -> None:
        if self.enabled:
            self.nonfinite.inc()

    def close(self) -> None:
        if self.enabled:
            self.server.shutdown()
            self.server.server_close()
            self.enabled = False


def _nvml_handle(device_index):
    """The NVML handle of this rank's GPU, or None (no GPU, or pynvml not installed: the
    course image does not ship it; DCGM exporter covers GPUs on a cluster) with the reason printed."""
    if device_index is None:
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(device_index)
    except Exception as e:  # noqa: BLE001 - GPU gauges are optional; training goes on without them
        print(f"note: GPU metrics off ({type(e).__name__}: {e}); use DCGM exporter", flush=True)
        return None


def peak_flops(gpu_handle) -> float | None:
    """Peak FLOP/s for MFU: $PEAK_TFLOPS, else the GPU's datasheet number; None on CPU."""
    if os.environ.get(PEAK_TFLOPS_ENV):
        return float(os.environ[PEAK_TFLOPS_ENV]) * 1e12
    if gpu_handle is None:
        return None
    import pynvml

    name = pynvml.nvmlDeviceGetName(gpu_handle)
    name = name.decode() if isinstance(name, bytes) else name
    return next((t * 1e12 for k, t in PEAK_BF16_TFLOPS.items() if k in name), None)


def training_flops_per_sample(model, input_shape: tuple[int, ...]) -> float:
    """Forward+backward FLOPs of one sample (3x the forward's 2*MACs of every conv and linear),
    counted with hooks on a copy in eval mode: the real model's BN statistics and the RNGs are
    untouched, so a run's numbers do not depend on whether metrics are on."""
    import copy

    import torch

    clone = copy.deepcopy(model).eval().float()
    macs = [0]

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            kernel = module.in_channels // module.groups * module.kernel_size[0]
            macs[0] += output.numel() * kernel * module.kernel_size[1]
        elif isinstance(module, torch.nn.Linear):
            macs[0] += output.numel() * module.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in clone.modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    ]
    device = next(clone.parameters()).device
    with torch.no_grad():
        clone(torch.zeros(1, *input_shape, device=device))
    for h in handles:
        h.remove()
    return 3 * 2 * macs[0]
