"""A static check of executed notebooks: would a learner see the pictures, or only their names?

    python -m kubecourse.nbcheck build/            # every executed notebook below build/

It reads the saved outputs (no kernel, no browser) and reports:
  * an output that is only the text of a matplotlib Figure (`<Figure size 700x320 with 1 Axes>`):
    the figure was displayed while no PNG formatter was registered;
  * an output that lives only in a widget (`Output()`): the saved notebook shows no content;
  * a progress bar whose saved text is its state at creation (`0step [00:00, ?step/s]`);
  * a figure that `record_outcome` listed but did not save as a PNG next to the outcome.
The notebook tests and `make course` run it on every notebook they execute.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FIGURE_TEXT = re.compile(r"^<(matplotlib\.figure\.)?Figure size [\d.]+x[\d.]+ with \d+ Axes>$")
_WIDGET_ONLY_TEXT = re.compile(r"^(Output|VBox|HBox|Box)\(.*\)$", re.S)
_UNSTARTED_BAR = re.compile(r"(^|: )0\w* \[00:00, \?\w*/s\]$")


def _text(value) -> str:
    return ("".join(value) if isinstance(value, list) else str(value)).strip()


def _output_problem(output: dict) -> str | None:
    if output.get("output_type") == "stream":
        lines = _text(output.get("text", "")).splitlines()
        return next(
            (f"prints a Figure as text: {line!r}" for line in lines if _FIGURE_TEXT.match(line)),
            None,
        )
    data = output.get("data") or {}
    plain = _text(data.get("text/plain", ""))
    rich = set(data) - {"text/plain"}
    widget = "application/vnd.jupyter.widget-view+json"
    if not rich and _FIGURE_TEXT.match(plain):
        return f"a matplotlib Figure shown only as text: {plain!r}"
    if rich == {widget} and _WIDGET_ONLY_TEXT.match(plain):
        return f"content only inside a widget (the saved notebook shows {plain[:40]!r})"
    if rich == {widget} and _UNSTARTED_BAR.search(plain):
        return f"a progress bar saved in its first state: {plain!r}"
    return None


def notebook_problems(notebook_path: Path) -> list[str]:
    """Problems in the saved outputs of one executed notebook ("name: cell N: what")."""
    notebook = json.loads(Path(notebook_path).read_text())
    problems = []
    for number, cell in enumerate(notebook.get("cells", [])):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            problem = _output_problem(output)
            if problem:
                problems.append(f"{Path(notebook_path).name}: cell {number}: {problem}")
    return problems


def outcome_problems(outcome_json: Path) -> list[str]:
    """Every figure an outcome lists exists beside it as a real PNG."""
    outcome = json.loads(Path(outcome_json).read_text())
    problems = []
    for name in outcome.get("figures", []):
        path = Path(outcome_json).parent / name
        if not path.is_file():
            problems.append(f"{Path(outcome_json).name}: figure {name} was not saved")
        elif not path.read_bytes().startswith(PNG_SIGNATURE) or path.stat().st_size < 1000:
            problems.append(f"{Path(outcome_json).name}: figure {name} is not a PNG image")
    return problems


def check_executed(notebook_path: Path, outcome_dir: Path | None = None) -> list[str]:
    """The notebook's output problems plus those of its recorded outcome (when there is one)."""
    problems = notebook_problems(notebook_path)
    outcome = (outcome_dir or Path(notebook_path).parent / "outcomes") / (
        Path(notebook_path).stem + ".json"
    )
    if outcome.is_file():
        problems += outcome_problems(outcome)
    return problems


def check_tree(root: Path) -> list[str]:
    """check_executed() for every notebook below root (checkpoint folders skipped)."""
    return [
        problem
        for path in sorted(Path(root).rglob("*.ipynb"))
        if ".ipynb_checkpoints" not in path.parts
        for problem in check_executed(path)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path, nargs="?", default=Path("build"))
    args = parser.parse_args(argv)
    problems = check_tree(args.root)
    print("\n".join(problems) or f"no output problems in the notebooks below {args.root}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
