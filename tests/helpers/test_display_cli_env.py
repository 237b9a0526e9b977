"""Smaller helper modules: kubectl twins and views, the CLI, the environment check, lab metrics."""

from __future__ import annotations

import json

import pytest

from kubecourse import cli, display, load_lesson, render
from kubecourse.env import cluster_info
from kubecourse.lab import plot_metrics, read_metrics
from tests.fakes.apiserver import FakeApiServer


@pytest.mark.parametrize(
    "verb, kwargs, expected",
    [
        ("submit", {"path": "run.yaml"}, "kubectl apply -n team -f run.yaml"),
        (
            "submit",
            {"path": "run.yaml", "dry_run": True},
            "kubectl apply -n team -f run.yaml --dry-run=server",
        ),
        (
            "status",
            {},
            "kubectl get job j -n team -o wide && kubectl get pods -n team -l batch.kubernetes.io/job-name=j",
        ),
        (
            "wait",
            {"timeout_s": 60},
            "kubectl wait -n team --for=condition=complete --timeout=60s job/j",
        ),
        (
            "logs",
            {"follow": True, "index": 1},
            "kubectl logs -n team -l batch.kubernetes.io/job-name=j,batch.kubernetes.io/job-completion-index=1 -c trainer --prefix --max-log-requests=16 -f",
        ),
        ("events", {}, "kubectl events -n team --for job/j"),
        ("delete", {}, "kubectl delete job j -n team --cascade=foreground"),
    ],
)
def test_kubectl_twins(verb, kwargs, expected):
    assert display.kubectl(verb, "j", "team", **kwargs) == expected


def test_diff_view_shows_what_the_options_changed():
    view = display.diff_view(load_lesson("01"), render("01", name="renamed"))
    assert "-  name: cifar10-train" in str(view) and "+  name: renamed" in str(view)
    assert "#e6ffec" in view._repr_html_()
    assert str(display.diff_view(load_lesson("01"), load_lesson("01"))) == "(no differences)"


@pytest.mark.parametrize(
    "argv, code, needle",
    [
        (["render", "01", "--set", "name=from-cli", "--set", "gpus=0"], 0, "name: from-cli"),
        (["validate", "01"], 0, "all checks passed"),
        (["render", "01", "--set", "gpus=-1"], 2, "gpus"),
        (["validate", "01", "--set", "image=busybox"], 2, "image"),
    ],
)
def test_cli(argv, code, needle, capsys):
    assert cli.main(argv) == code
    out = capsys.readouterr()
    assert needle in out.out + out.err


def test_cluster_info_reports_reachable_and_unreachable(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cluster_info()["reachable"] is False
    with FakeApiServer() as api:
        monkeypatch.setenv("KUBECONFIG", api.write_kubeconfig(tmp_path / "kubeconfig"))
        info = cluster_info()
    assert info["reachable"] is True and info["server"].startswith("v1.")


def test_read_metrics_skips_a_line_being_written_and_plots(tmp_path):
    records = [
        {"kind": "train", "step": 1, "loss": 2.0},
        {"kind": "eval", "step": 1, "test_acc": 0.3},
    ]
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records) + '{"kind": "tra'
    )
    assert read_metrics(tmp_path) == records
    figure = plot_metrics(records)
    assert len(figure.axes) == 2 and figure.axes[1].get_ylabel() == "test accuracy"


@pytest.mark.parametrize(
    "eval_record, axes, eval_label",
    [
        ({"test_acc": 0.3}, 2, "test acc"),  # image classifiers: accuracy on a twin axis
        ({"eval_loss": 1.5}, 1, "eval loss"),  # language models: eval loss beside the train loss
    ],
    ids=["accuracy", "eval-loss"],
)
def test_plot_metrics_draws_what_the_lab_evaluates(eval_record, axes, eval_label):
    records = [
        {"kind": "train", "step": 1, "loss": 2.0},
        {"kind": "eval", "step": 1, **eval_record},
    ]
    figure = plot_metrics(records)
    assert len(figure.axes) == axes
    labels = [line.get_label() for ax in figure.axes for line in ax.get_lines()]
    assert labels == ["train loss", eval_label]
