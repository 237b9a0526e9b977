"""What learners see: figures as images, columns of YAML, the wait bar, kubectl twins, and the
static check of executed notebooks (kubecourse.figures, display, progress, nbcheck)."""

from __future__ import annotations

import base64
import io
import json

import pytest

from kubecourse import display
from kubecourse.figures import Figure, FigureImage, png_bytes
from kubecourse.monitoring import DASHBOARD_PANELS, LiveDashboard
from kubecourse.nbcheck import PNG_SIGNATURE, check_executed, check_tree, notebook_problems
from kubecourse.progress import JobBar
from kubecourse.types import JobStatus


def _format(obj) -> dict:
    """What a fresh IPython (no inline backend registered) sends to the notebook for obj."""
    from IPython.core.formatters import DisplayFormatter

    data, _ = DisplayFormatter().format(obj)
    return data


def test_course_figure_is_a_png_whatever_the_backend():
    import matplotlib.figure

    plain = matplotlib.figure.Figure(figsize=(4, 2))
    plain.add_subplot().plot([1, 2])
    assert set(_format(plain)) == {"text/plain"}  # the bug: only "<Figure size 400x200 ...>"
    course = Figure(figsize=(4, 2))
    course.add_subplot().plot([1, 2])
    course.axes[0].set_title("loss")
    data = _format(course)
    assert base64.b64decode(data["image/png"]).startswith(PNG_SIGNATURE)
    assert data["text/plain"] == "[figure 400x200: loss]"
    snapshot = _format(FigureImage(course))
    assert base64.b64decode(snapshot["image/png"]) == png_bytes(course)


def test_columns_keep_yaml_indentation_left_aligned_and_unwrapped():
    body = "spec:\n  template:\n    spec: {}\n"
    view = display.columns_view({"Job": body, "JobSet": body})
    assert "<td" not in view.html, "JupyterLab right-aligns table cells"
    assert view.html.count("white-space:pre;") == 2 and "text-align:left" in view.html
    assert "    spec: {}" in view.html  # indentation is in the HTML as it is in the YAML
    assert str(view).startswith("# ===== Job =====\nspec:\n  template:")


def _status(phase: str, reason: str = "") -> JobStatus:
    return JobStatus(name="j", namespace="default", phase=phase, reason=reason)


@pytest.mark.parametrize(
    "steps, final, n, style",
    [
        ([(0, 93), (90, 93)], "Succeeded", 93, "success"),  # last logged step 90: still 100 %
        ([None, None], "Succeeded", 1, "success"),  # the trainer never said: full when it ends
        ([(0, 93), (40, 93)], "Failed", 40, "danger"),
        ([(0, 93), (93, 93)], "Failed", 93, "danger"),  # failed after its last step: still red
    ],
    ids=["succeeded", "no-total", "failed", "failed-at-the-end"],
)
def test_wait_bar_ends_full_and_green_only_on_success(steps, final, n, style):
    from tqdm.notebook import tqdm_notebook

    bar = JobBar("j", tqdm_class=tqdm_notebook)
    for step in steps:
        bar.update(_status("Running"), step)
    widget = bar.bar.container.children[1]
    if steps[-1] is not None:
        assert widget.max == 93 and widget.layout.width is None, "the bar knows its total"
    bar.finish(_status(final, "PodFailurePolicy" if final == "Failed" else ""))
    assert (bar.bar.n, widget.bar_style) == (n, style)
    assert widget.value == n and (style == "danger") == (
        widget.value < widget.max or final != "Succeeded"
    )
    text = repr(bar.bar.container)  # what an untrusted, executed notebook shows instead
    assert final in text and "?step/s" not in text
    if final == "Succeeded":
        assert "100%" in text


def test_text_bar_in_a_terminal_ends_at_the_total():
    from tqdm import tqdm

    class Quiet(tqdm):
        def __init__(self, **kwargs):
            super().__init__(**kwargs, file=io.StringIO())

    bar = JobBar("j", tqdm_class=Quiet)
    bar.update(_status("Running"), (90, 93))
    bar.finish(_status("Succeeded"))
    assert (bar.bar.n, bar.bar.total) == (93, 93)


def test_kubectl_twin_is_printed_once_per_cell(local_backend, tmp_path, capsys, monkeypatch):
    from kubecourse import TrainingClient

    cell = {"now": 1}
    monkeypatch.setattr(display, "current_cell", lambda: cell["now"])
    with TrainingClient(backend=local_backend, rendered_dir=tmp_path) as client:
        for _ in range(3):  # a polling loop in one cell
            client._twin("status", client._ref("j"))
        cell["now"] = 2  # the next cell shows it again
        client._twin("status", client._ref("j"))
        monkeypatch.setattr(display, "current_cell", lambda: None)  # a script: no repeats in a row
        client._twin("status", client._ref("j"))
        client._twin("status", client._ref("j"))
        client._twin("events", client._ref("j"))
        client._twin("status", client._ref("j"))
    printed = [line.split()[2:5] for line in capsys.readouterr().out.splitlines()]
    assert printed == [["get", "job", "j"]] * 3 + [["events", "-n", "default"]] + [
        ["get", "job", "j"]
    ]


class _FakeProm:
    """query_range answers: loss only from t+5 s (the first log interval), progress from t."""

    def __init__(self, start: float):
        self.start = start

    def query_range(self, promql, start, end, step_s):
        labels = {"rank": "0", "training_job": "run-7"}
        first = self.start + (5 if "loss" in promql or "samples" in promql else 0)
        return [(labels, [(first + i, float(i)) for i in range(10)])]


def test_dashboard_panels_share_one_time_range_and_name_their_axes():
    dash = LiveDashboard(prom=None, window_s=60)
    dash.prom = _FakeProm(dash._start)
    dash.update()
    axes = [ax for ax in dash.figure.axes if ax.get_visible()]
    assert len(axes) == len(DASHBOARD_PANELS)
    assert len({ax.get_xlim() for ax in axes}) == 1, "one time range for every panel"
    assert all(ax.get_ylabel() for ax in axes), "every panel says what its y axis is"
    assert dash.figure._suptitle.get_text() == "training job run-7"  # the run's own name
    assert _format(dash.figure)["image/png"]
    loss_line = axes[0].lines[0]
    assert min(loss_line.get_xdata()) >= 5 - 1e-6, "no samples before the first log interval"


def test_dashboard_queries_gate_the_gauges_on_the_first_interval():
    assert "samples_per_second > 0" in DASHBOARD_PANELS["loss"]
    assert DASHBOARD_PANELS["samples/s"].endswith("> 0")


def _notebook(tmp_path, outputs: list[dict], name="01_demo.ipynb"):
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.from_dict(o) for o in outputs]
    nb.cells = [cell]
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


PNG_OUTPUT = {
    "output_type": "display_data",
    "metadata": {},
    "data": {
        "image/png": base64.b64encode(PNG_SIGNATURE).decode(),
        "text/plain": "<Figure size 700x320 with 1 Axes>",
    },
}
WIDGET = "application/vnd.jupyter.widget-view+json"


@pytest.mark.parametrize(
    "output, problem",
    [
        (PNG_OUTPUT, None),
        (
            {
                "output_type": "execute_result",
                "execution_count": 1,
                "metadata": {},
                "data": {"text/plain": "<Figure size 1100x520 with 4 Axes>"},
            },
            "Figure shown only as text",
        ),
        (
            {
                "output_type": "stream",
                "name": "stdout",
                "text": "<Figure size 640x480 with 1 Axes>\n",
            },
            "prints a Figure as text",
        ),
        (
            {
                "output_type": "display_data",
                "metadata": {},
                "data": {WIDGET: {"model_id": "a"}, "text/plain": "Output()"},
            },
            "only inside a widget",
        ),
        (
            {
                "output_type": "display_data",
                "metadata": {},
                "data": {
                    WIDGET: {"model_id": "b"},
                    "text/plain": "cifar10-smoke: 0step [00:00, ?step/s]",
                },
            },
            "progress bar saved in its first state",
        ),
        (
            {
                "output_type": "display_data",
                "metadata": {},
                "data": {
                    WIDGET: {"model_id": "c"},
                    "text/plain": "j: 100%|##########| 93/93 [00:20<00:00, 4.6step/s, Succeeded]",
                },
            },
            None,
        ),
    ],
    ids=["png", "figure-text", "printed-figure", "widget-only", "unstarted-bar", "finished-bar"],
)
def test_static_check_finds_outputs_a_learner_cannot_see(tmp_path, output, problem):
    problems = notebook_problems(_notebook(tmp_path, [output]))
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0] and "cell 0" in problems[0]


def test_static_check_wants_every_outcome_figure_saved_as_png(tmp_path):
    path = _notebook(tmp_path, [PNG_OUTPUT])
    outcomes = tmp_path / "outcomes"
    outcomes.mkdir()
    record = {
        "lesson": "01_demo",
        "numbers": {"x": 1},
        "figures": ["01_demo-a.png", "01_demo-b.png"],
    }
    (outcomes / "01_demo.json").write_text(json.dumps(record))
    figure = Figure(figsize=(2, 1))
    figure.add_subplot().plot([0, 1])
    (outcomes / "01_demo-a.png").write_bytes(png_bytes(figure))
    assert check_executed(path, outcomes) == ["01_demo.json: figure 01_demo-b.png was not saved"]
    (outcomes / "01_demo-b.png").write_text("<Figure size 200x100 with 1 Axes>")
    assert check_executed(path, outcomes) == [
        "01_demo.json: figure 01_demo-b.png is not a PNG image"
    ]
    (outcomes / "01_demo-b.png").write_bytes(png_bytes(figure))
    assert check_tree(tmp_path) == []


def test_course_summary_links_the_browser_screenshots(tmp_path):
    from kubecourse.course import screenshot_lines

    ui, course = tmp_path / "build" / "ui", tmp_path / "build" / "course"
    assert screenshot_lines(course, ui) == []
    ui.mkdir(parents=True)
    (ui / "10_monitoring-dashboard.png").write_bytes(PNG_SIGNATURE)
    lines = screenshot_lines(course, ui)
    assert lines[-1] == "![10_monitoring-dashboard](../ui/10_monitoring-dashboard.png)"
