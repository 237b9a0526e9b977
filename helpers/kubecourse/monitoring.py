"""A real Prometheus for local runs: start it, let it scrape the ranks, ask it PromQL, read alerts.

    from kubecourse.monitoring import PrometheusServer, free_port
    port = free_port()                                   # the lab serves METRICS_PORT + local rank
    with PrometheusServer(targets=[f"127.0.0.1:{port}"]) as prom:
        ...                                              # run the job with env METRICS_PORT=port
        prom.query("rate(kubecourse_train_samples_total[30s])")
        prom.alerts()                                    # the course's alert rules, evaluated live

The server is Debian's `prometheus` binary (installed by `make setup` through
scripts/ensure-prometheus.sh) on 127.0.0.1 with a temporary storage folder, a 1 s scrape and rule
evaluation interval (a production server uses 15-60 s) and the course's alert rules
(monitoring/training-alerts.rules.yml, the same groups as manifests/05-monitoring/prometheusrule.yaml).
Targets are a file_sd file, so `add_targets()` works while the server runs. Queries go through the
HTTP API with urllib. A missing binary raises PrometheusNotFound: never a silent skip.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .errors import CourseError
from .manifests import repo_root

PROMETHEUS_ENV = "KUBECOURSE_PROMETHEUS"  # path of the prometheus binary, if not on PATH
RULES_FILE = "monitoring/training-alerts.rules.yml"
SCRAPE_JOB = "training"  # Prometheus's own `job` label of the scraped ranks
# The live dashboard's panels: title -> PromQL (the Grafana dashboard in manifests/05-monitoring
# asks the same questions over longer windows). The trainer registers its gauges at 0 when it starts;
# loss and samples/s are gated on the first log interval (samples/s > 0) so that the panels do not
# start with zeros the trainer never measured. Progress at 0 before the first step is a real reading.
DASHBOARD_PANELS = {
    "loss": "kubecourse_train_loss and kubecourse_train_samples_per_second > 0",
    "samples/s": "kubecourse_train_samples_per_second > 0",
    "step time p90 (s)": (
        "histogram_quantile(0.9, sum by (le, rank) (rate(kubecourse_train_step_seconds_bucket[10s])))"
    ),
    "progress (steps)": "kubecourse_train_last_step",
}
# The y-axis label of each panel (a panel not listed here is labelled with its title).
DASHBOARD_UNITS = {
    "loss": "cross-entropy",
    "samples/s": "samples / s",
    "step time p90 (s)": "seconds",
    "progress (steps)": "optimizer steps",
}


class PrometheusNotFound(CourseError):
    """The prometheus binary is missing: install it (make setup / scripts/ensure-prometheus.sh)."""


class PrometheusError(CourseError):
    """Prometheus did not start, or answered a query with an error (the message says which)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_prometheus() -> str:
    """Path of the prometheus binary: $KUBECOURSE_PROMETHEUS, PATH, or /usr/bin/prometheus."""
    for candidate in (
        os.environ.get(PROMETHEUS_ENV),
        shutil.which("prometheus"),
        "/usr/bin/prometheus",
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise PrometheusNotFound(
        "prometheus is not installed: run `make setup` or `scripts/ensure-prometheus.sh` "
        f"(Debian/Ubuntu: apt-get install prometheus), or set {PROMETHEUS_ENV} to the binary"
    )


def rules_path() -> Path:
    return repo_root() / RULES_FILE


def _to_float(value: str) -> float:
    return float(value)  # Prometheus sends "NaN", "+Inf", "-Inf" as strings; float() reads all


class PrometheusServer:
    """A Prometheus server process for one lesson (use it as a context manager).

    targets: "host:port" of every rank's /metrics (more with add_targets()).
    rule_files: alert/recording rule files (default: the course's training alerts).
    """

    def __init__(
        self,
        targets: Iterable[str] = (),
        *,
        rule_files: Iterable[str | Path] | None = None,
        scrape_interval_s: float = 1.0,
        evaluation_interval_s: float = 1.0,
        port: int | None = None,
        binary: str | None = None,
        start_timeout_s: float = 60.0,
    ):
        self.targets = list(targets)
        self.rule_files = [
            Path(p) for p in (rule_files if rule_files is not None else [rules_path()])
        ]
        self.scrape_interval_s = scrape_interval_s
        self.evaluation_interval_s = evaluation_interval_s
        self.port = port
        self.binary = binary
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen | None = None
        self._dir: Path | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        """The prometheus.yml this server runs with (JSON is valid YAML)."""
        assert self._dir is not None
        config = {
            "global": {
                "scrape_interval": f"{self.scrape_interval_s:g}s",
                "scrape_timeout": f"{min(self.scrape_interval_s, 10):g}s",
                "evaluation_interval": f"{self.evaluation_interval_s:g}s",
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": SCRAPE_JOB,
                    "file_sd_configs": [
                        {"files": [str(self._dir / "targets.json")], "refresh_interval": "1s"}
                    ],
                }
            ],
        }
        return json.dumps(config, indent=2)

    def start(self) -> PrometheusServer:
        binary = self.binary or find_prometheus()
        for path in self.rule_files:
            if not path.is_file():
                raise PrometheusError(f"rule file {path} does not exist")
        self._dir = Path(tempfile.mkdtemp(prefix="kubecourse-prometheus-"))
        self.port = self.port or free_port()
        self._write_targets()
        (self._dir / "prometheus.yml").write_text(self.config_text())
        self._log = open(self._dir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={self._dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1d",
                "--web.enable-lifecycle",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise PrometheusError(
                    f"prometheus exited with code {self.process.returncode} at start:\n{tail}"
                )
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        tail = self.log_tail()
        self.stop()
        raise PrometheusError(f"prometheus not ready after {self.start_timeout_s:.0f} s:\n{tail}")

    def log_tail(self, lines: int = 20) -> str:
        if self._dir is None or not (self._dir / "prometheus.log").exists():
            return ""
        text = (self._dir / "prometheus.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and delete its storage."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- targets --------------------------------------------------------------------------------

    def _write_targets(self) -> None:
        groups = [{"targets": self.targets, "labels": {}}] if self.targets else []
        tmp = self._dir / "targets.json.tmp"
        tmp.write_text(json.dumps(groups))
        os.replace(tmp, self._dir / "targets.json")  # file_sd never reads half a file

    def add_targets(self, targets: Iterable[str]) -> None:
        """Scrape more endpoints (picked up within a second, no restart)."""
        self.targets += [t for t in targets if t not in self.targets]
        if self._dir is not None:
            self._write_targets()

    # -- the HTTP API ---------------------------------------------------------------------------

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; returns `data`, raises PrometheusError with the server's message."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as e:
            try:
                body = json.loads(e.read())
            except ValueError:
                raise PrometheusError(f"GET {path}: HTTP {e.code}") from e
        except urllib.error.URLError as e:
            raise PrometheusError(f"GET {path}: prometheus at {self.url} unreachable: {e}") from e
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """An instant query: [(labels, value)] (a scalar result comes back as one unlabelled row)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        if data["resultType"] == "scalar":
            return [({}, _to_float(data["result"][1]))]
        return [(r["metric"], _to_float(r["value"][1])) for r in data["result"]]

    def value(self, promql: str, default: float | None = None) -> float | None:
        """The single value of an instant query (default when it returns nothing)."""
        rows = self.query(promql)
        if not rows:
            return default
        if len(rows) > 1:
            raise PrometheusError(f"{promql!r} returned {len(rows)} series; aggregate it first")
        return rows[0][1]

    def query_range(
        self, promql: str, start: float, end: float, step_s: float = 1.0
    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        """A range query: [(labels, [(unix time, value), ...])]."""
        data = self.api("query_range", query=promql, start=start, end=end, step=f"{step_s:g}s")
        return [
            (r["metric"], [(float(t), _to_float(v)) for t, v in r["values"]])
            for r in data["result"]
        ]

    def alerts(self, state: str | None = None) -> list[dict[str, Any]]:
        """Active alerts (pending and firing) as the API returns them; filter by `state`."""
        found = self.api("alerts")["alerts"]
        return [a for a in found if state is None or a["state"] == state]

    def rules(self) -> list[dict[str, Any]]:
        """Loaded rules with their health and last error (a broken expr shows up here)."""
        return [r for g in self.api("rules")["groups"] for r in g["rules"]]

    def active_targets(self) -> list[dict[str, Any]]:
        return self.api("targets")["activeTargets"]

    def wait_until(
        self, predicate: Callable[[PrometheusServer], Any], timeout_s: float = 30.0, every_s=0.5
    ) -> Any:
        """Poll `predicate(self)` until it returns something truthy; PrometheusError on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = predicate(self)
            if result:
                return result
            if time.monotonic() > deadline:
                raise PrometheusError(f"condition not met within {timeout_s:.0f} s")
            time.sleep(every_s)


# ------------------------------------------------------------------------------------------------
# The live dashboard: a notebook image that is redrawn while a job runs.


class LiveDashboard:
    """Panels of PromQL range queries, redrawn in one notebook output while a job runs.

    `show()` displays a picture with a display id; every `update()` replaces it with a freshly
    rendered PNG (kubecourse.figures), so the output is an image in JupyterLab whatever
    matplotlib's backend, and the executed notebook keeps the final picture. `run(until=...)`
    updates every `every_s` seconds until `until()` is true (the job ended).
    """

    def __init__(
        self,
        prom: PrometheusServer,
        panels: dict[str, str] | None = None,
        window_s: float = 120.0,
        step_s: float = 1.0,
        title: str | None = None,
    ):
        self.prom = prom
        self.panels = dict(panels or DASHBOARD_PANELS)
        self.window_s = window_s
        self.step_s = step_s
        self.title = title
        self.updates = 0
        self.figure = None
        self.data: dict[str, list] = {}
        self._handle = None
        self._start = time.time()

    def _suptitle(self) -> str:
        """The run's own name, from the scraped series' `training_job` label."""
        jobs = sorted(
            {
                labels.get("training_job", "")
                for series in self.data.values()
                for labels, _ in series
            }
            - {""}
        )
        return self.title or (f"training job {', '.join(jobs)}" if jobs else "waiting for data")

    def _draw(self):
        from .figures import Figure

        n = len(self.panels)
        cols = 2 if n > 1 else 1
        rows = (n + cols - 1) // cols
        figure = Figure(figsize=(5.5 * cols, 2.6 * rows), layout="constrained")
        axes = figure.subplots(rows, cols, sharex=True, squeeze=False).ravel()
        now = time.time() - self._start
        left = max(0.0, now - self.window_s)  # the window every panel shows (seconds)
        right = max(now, left + 10.0)
        for ax in axes[n:]:
            ax.set_visible(False)
        for ax, title in zip(axes, self.panels, strict=False):
            series = self.data.get(title, [])
            for labels, points in series:
                t = [p[0] - self._start for p in points]
                ax.plot(t, [p[1] for p in points], label=f"rank {labels.get('rank', '?')}")
            if not any(points for _, points in series):
                ax.text(
                    0.5,
                    0.5,
                    "no samples yet",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    color="grey",
                )
            ax.set_title(title, fontsize=10)
            ax.set_ylabel(DASHBOARD_UNITS.get(title, title), fontsize=8)
            ax.set_xlim(left, right)  # one time range for every panel
            if any(points for _, points in series):
                ax.legend(fontsize=7, loc="upper left")
        for ax in axes[max(0, n - cols) : n]:
            ax.set_xlabel("seconds since the dashboard started", fontsize=8)
        figure.suptitle(self._suptitle(), fontsize=11)
        return figure

    def update(self) -> None:
        """Query every panel over the last `window_s` seconds and redraw."""
        end = time.time()
        start = max(self._start, end - self.window_s)
        self.data = {
            title: self.prom.query_range(q, start, end, self.step_s)
            for title, q in self.panels.items()
        }
        self.updates += 1
        self.figure = self._draw()
        if self._handle is not None:
            from .figures import FigureImage

            self._handle.update(FigureImage(self.figure))

    def show(self) -> None:
        """Display the dashboard (in a notebook); every update replaces the picture."""
        from IPython.display import display

        from .figures import FigureImage

        self._handle = display(FigureImage(self._draw()), display_id=True)

    def run(self, until: Callable[[], bool], every_s: float = 2.0, timeout_s: float = 600.0):
        """Update until `until()` is true (checked between updates), then once more; returns the
        final figure."""
        deadline = time.monotonic() + timeout_s
        while not until() and time.monotonic() < deadline:
            self.update()
            time.sleep(every_s)
        self.update()
        return self.figure
