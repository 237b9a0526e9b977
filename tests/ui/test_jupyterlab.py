"""What learners see: notebooks 02, 04 and 10 run in JupyterLab in a real browser (Chromium).

Papermill proves the asserts pass; this proves the page shows what the lessons promise: the live
dashboard and plots are pictures of a sensible size (never `<Figure size ...>` text), the
side-by-side YAML is left-aligned with its indentation intact, the wait bar ends at 100% and green,
and no widget fails to display. Screenshots go to build/ui/ (the course summary links them).
Skips, with the reason, only where Chromium is not installed (scripts/ensure-chromium.sh).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.guards import HANG_GUARD_S
from tests.ui.jupyterlab import (
    CELLS_JS,
    COLUMN_LAYOUT_JS,
    MISSING_GLYPHS_JS,
    PANEL_JS,
    RUN_ALL_JS,
    LabServer,
    find_chromium,
    loopback_only,
)

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "build" / "ui"
NOTEBOOKS = ["02_job_on_kubernetes", "04_multi_node", "10_monitoring"]
RUN_TIMEOUT_S = max(900, HANG_GUARD_S)  # a hang guard: each notebook takes ~1 minute idle
ZH_DIR = REPO / "notebooks" / "zh_CN"

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(3 * RUN_TIMEOUT_S)]


def _chromium() -> str:
    path = find_chromium()
    if path is None:
        reason = "chromium is not installed (run scripts/ensure-chromium.sh): no browser test"
        print(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    _chromium()
    from kubecourse.course import kernel_name

    kernel_name()  # as `make course` does: one kernelspec for this environment
    root = tmp_path_factory.mktemp("lab")
    for name in NOTEBOOKS:
        shutil.copy(REPO / "notebooks" / f"{name}.ipynb", root)
    if ZH_DIR.is_dir():
        shutil.copytree(ZH_DIR, root / "zh_CN")
    server = LabServer(root, tmp_path_factory.mktemp("lab-state")).start(timeout_s=HANG_GUARD_S)
    server.kernelspecs = server.api("kernelspecs")["kernelspecs"]  # what the launcher offers
    yield server
    server.stop()


@pytest.fixture
def page(browser, lab):
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    context.route("**/*", loopback_only)
    page = context.new_page()
    yield page
    context.close()


def _open(page, lab, path: str) -> None:
    """Open `path` alone in a fresh workspace and wait for its kernel to be idle."""
    workspace = path.replace("/", "-").removesuffix(".ipynb")
    page.goto(f"{lab.url}/lab/workspaces/{workspace}/tree/{path}?reset&token={lab.token}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=HANG_GUARD_S * 1000)
    page.wait_for_function(
        f"(path) => ({PANEL_JS})(path)?.sessionContext?.session?.kernel?.status === 'idle'",
        arg=path,
        timeout=HANG_GUARD_S * 1000,
    )


def _run_all(page, path: str) -> list[dict]:
    """Run every cell; wait until every code cell ran (or one failed); returns the cells."""
    page.evaluate(RUN_ALL_JS, path)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        time.sleep(2)
        state = page.evaluate(CELLS_JS, path)
        code = [c for c in state["cells"] if c["cell_type"] == "code"]
        errors = [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]
        assert not errors, f"a cell failed: {errors[0]['ename']}: {errors[0]['evalue']}"
        if state["kernel"] == "idle" and all(c.get("execution_count") for c in code):
            return state["cells"]
    raise AssertionError(f"{path} did not finish within {RUN_TIMEOUT_S} s")


def _assert_nothing_broken(page) -> None:
    outputs = page.locator(".jp-OutputArea-output")
    texts = outputs.all_inner_texts()
    assert not [t for t in texts if "<Figure size" in t], "a figure is shown as its text"
    assert not [t for t in texts if "Error displaying widget" in t]
    for image in page.locator(".jp-OutputArea-output img, .jp-OutputArea-output svg").all():
        box = image.bounding_box()
        assert box and box["width"] >= 300 and box["height"] >= 150, f"a tiny picture: {box}"
        if image.evaluate("e => e.tagName") == "IMG":
            assert image.evaluate("e => e.complete && e.naturalWidth > 0"), "an image not loaded"


def _assert_bars_full_and_green(page, shot: str) -> None:
    bars = page.locator(".jp-OutputArea-output .widget-hprogress")
    assert bars.count() >= 1, "client.wait showed no progress bar"
    for i in range(bars.count()):
        track, fill = bars.nth(i).locator(".progress"), bars.nth(i).locator(".progress-bar")
        classes = fill.get_attribute("class") or ""
        assert "progress-bar-danger" not in classes, "a succeeded job ended with a red bar"
        assert "progress-bar-success" in classes, classes
        track_box, fill_box = track.bounding_box(), fill.bounding_box()
        assert track_box["width"] >= 300, f"the bar is {track_box['width']:.0f} px wide"
        assert fill_box["width"] >= track_box["width"] - 2, "the bar did not reach 100%"
        label = bars.nth(i).locator("xpath=..").inner_text()
        assert "100%" in label and "Succeeded" in label, label
    bars.first.locator("xpath=..").scroll_into_view_if_needed()
    bars.first.locator("xpath=../..").screenshot(path=SHOTS / shot)


def _assert_columns_readable(page) -> None:
    columns = page.locator(".jp-OutputArea-output .kc-columns pre")
    assert columns.count() == 4, "the side-by-side view shows four kinds"
    for i in range(columns.count()):
        layout = columns.nth(i).evaluate(COLUMN_LAYOUT_JS)
        assert layout["textAlign"] in ("left", "start") and layout["whiteSpace"] == "pre"
        assert not [line for line in layout["lines"] if line["wrapped"]], "a YAML line wrapped"
        for line in layout["lines"]:
            expected = layout["origin"] + line["indent"] * layout["space"]
            assert abs(line["left"] - expected) < 2, (
                f"line not where its indentation puts it: {line}"
            )
    # Taller than the window: a window-sized shot from its top, as a learner scrolls to it.
    page.locator(".kc-columns").first.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.screenshot(path=SHOTS / "04_multi_node-side-by-side.png")


def _screenshot(page, name: str) -> None:
    page.screenshot(path=SHOTS / f"{name}.png")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_renders_in_jupyterlab(page, lab, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    _open(page, lab, f"{name}.ipynb")
    assert not page.locator(".jp-mod-dirty").count(), "the notebook is marked unsaved on open"
    _run_all(page, f"{name}.ipynb")
    _assert_nothing_broken(page)
    if name == "02_job_on_kubernetes":
        _assert_bars_full_and_green(page, f"{name}-progress.png")
    if name == "04_multi_node":
        _assert_columns_readable(page)
        _assert_bars_full_and_green(page, f"{name}-progress.png")
    if name == "10_monitoring":
        dashboard = page.locator(".jp-OutputArea-output img").first
        box = dashboard.bounding_box()
        natural = dashboard.evaluate("e => [e.naturalWidth, e.naturalHeight]")
        assert box["width"] >= 600 and natural[0] >= 600, f"dashboard {box} natural {natural}"
        dashboard.scroll_into_view_if_needed()
        dashboard.screenshot(path=SHOTS / f"{name}-dashboard.png")
    _screenshot(page, name)


def test_one_kernel_for_the_environment(lab):
    specs = lab.kernelspecs
    python = [s for s in specs.values() if s["spec"]["language"] == "python"]
    assert [s["spec"]["display_name"] for s in python] == ["Python 3 (ipykernel)"], specs.keys()


def test_missing_glyph_check_sees_tofu(browser, tmp_path):
    """The font check itself: CJK text is flagged where no CJK font exists, passes where one does."""
    import os

    page = browser.new_page()
    page.set_content("<p style='font-family: sans-serif'>分布式训练 Kubernetes</p>")
    found = page.locator("p").evaluate(MISSING_GLYPHS_JS)
    page.close()
    if found["missing"]:
        pytest.fail(f"no CJK font: {found} (scripts/ensure-chromium.sh installs fonts-noto-cjk)")
    assert found["checked"] == 5
    conf = tmp_path / "fonts.conf"
    dejavu = "/usr/share/fonts/truetype/dejavu"
    if not Path(dejavu).is_dir():
        pytest.skip(f"{dejavu} is absent: cannot build a browser without CJK fonts to compare")
    conf.write_text(
        f"<?xml version='1.0'?><fontconfig><dir>{dejavu}</dir>"
        f"<cachedir>{tmp_path / 'cache'}</cachedir></fontconfig>"
    )
    bare = browser.browser_type.launch(
        executable_path=find_chromium(),
        args=["--no-sandbox"],
        env={**os.environ, "FONTCONFIG_FILE": str(conf)},
    )
    page = bare.new_page()
    page.set_content("<p style='font-family: sans-serif'>分布式训练 Kubernetes</p>")
    missing = page.locator("p").evaluate(MISSING_GLYPHS_JS)["missing"]
    bare.close()
    assert missing, "a browser without CJK fonts drew tofu boxes and the check did not see them"


def test_chinese_notebook_renders_without_missing_glyphs(page, lab):
    chinese = sorted(ZH_DIR.glob("[0-9][0-9]_*.ipynb")) if ZH_DIR.is_dir() else []
    if not chinese:
        reason = (
            f"no Chinese notebooks yet ({ZH_DIR.relative_to(REPO)}/ is absent): font check skipped"
        )
        print(reason)
        pytest.skip(reason)
    SHOTS.mkdir(parents=True, exist_ok=True)
    _open(page, lab, f"zh_CN/{chinese[0].name}")
    markdown = page.locator(".jp-MarkdownOutput")
    checked = 0
    for i in range(markdown.count()):
        found = markdown.nth(i).evaluate(MISSING_GLYPHS_JS)
        assert not found["missing"], f"missing glyphs in {chinese[0].name}: {found}"
        checked += found["checked"]
    assert checked > 0, f"{chinese[0].name} has no Chinese text in its markdown"
    _screenshot(page, f"zh_CN-{chinese[0].stem}")
