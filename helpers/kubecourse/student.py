"""Student versions of the notebooks: every solution replaced by a stub, every check kept.

    python -m kubecourse.student --out build/student      # `make student`

In a notebook source (notebooks/NN_topic.py) a solution is a region of a code cell:

    # BEGIN SOLUTION
    threads = len(os.sched_getaffinity(0))
    # END SOLUTION

The student version keeps the lines around the region and replaces the region by a stub: each
top-level assignment to a name becomes `name = ...  # YOUR CODE`; everything else is dropped, with
one `...  # YOUR CODE` line when nothing is left (in a function body: the function returns None).
The check cell after it is unchanged, so it fails until the learner writes a solution;
tests/helpers/test_exercise_checks.py proves that for every region.
"""

from __future__ import annotations

import argparse
import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

from .manifests import repo_root

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
STUB_MARK = "  # YOUR CODE"


@dataclass(frozen=True)
class Region:
    """One solution region: its lines [start, end) in the source (markers excluded), its indent."""

    start: int
    end: int
    indent: str


def regions(lines: list[str]) -> list[Region]:
    """The solution regions of a source, in order; a marker without its partner is an error."""
    found, start, indent = [], None, ""
    for number, line in enumerate(lines):
        stripped = line.strip()
        if stripped == BEGIN:
            if start is not None:
                raise ValueError(f"line {number + 1}: {BEGIN} inside another solution")
            start, indent = number + 1, line[: len(line) - len(line.lstrip())]
        elif stripped == END:
            if start is None:
                raise ValueError(f"line {number + 1}: {END} without {BEGIN}")
            found.append(Region(start, number, indent))
            start = None
    if start is not None:
        raise ValueError(f"line {start}: {BEGIN} is never closed")
    return found


def stub(solution: list[str], indent: str) -> list[str]:
    """The stub for one region: assignments keep their target with `...`; all else is `...`."""
    tree = ast.parse(textwrap.dedent("\n".join(solution)))
    stubs = []
    for node in tree.body:
        # Only names: `x = ...` leaves the learner a blank to fill; `d["k"] = ...` would edit data.
        if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            targets = " = ".join(ast.unparse(t) for t in node.targets)
            stubs.append(f"{indent}{targets} = ...{STUB_MARK}")
    return stubs or [f"{indent}...{STUB_MARK}"]


def student_text(text: str, only: int | None = None) -> str:
    """`text` with its solution regions stubbed (all, or only the `only`-th) and markers removed."""
    lines = text.splitlines()
    found = regions(lines)
    out, position = [], 0
    for number, region in enumerate(found):
        out += lines[position : region.start - 1]  # up to the BEGIN marker
        body = lines[region.start : region.end]
        out += stub(body, region.indent) if only in (None, number) else body
        position = region.end + 1  # after the END marker
    out += lines[position:]
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def solution_text(text: str) -> str:
    """`text` with the markers removed and every solution kept (what the instructor runs)."""
    return "\n".join(line for line in text.splitlines() if line.strip() not in (BEGIN, END)) + (
        "\n" if text.endswith("\n") else ""
    )


def build(out_dir: Path) -> list[Path]:
    """Write out_dir/notebooks/NN_topic.{py,ipynb} for every lesson with its solutions stubbed."""
    from .course import sync

    target = out_dir / "notebooks"
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sources():
        text = source.read_text()
        if not regions(text.splitlines()):
            raise ValueError(f"{source.name}: no solution region: every lesson has an exercise")
        copy = target / source.name
        copy.write_text(student_text(text))
        written.append(copy)
    return written + sync(written)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=repo_root() / "build" / "student")
    args = parser.parse_args(argv)
    for path in build(args.out):
        print(f"wrote {path}")
    count = sum(len(regions(p.read_text().splitlines())) for p in sources())
    print(f"{count} solutions replaced by stubs; the checks are unchanged")


def sources() -> list[Path]:
    """The lesson sources (notebooks/NN_topic.py), in lesson order."""
    from .course import notebook_dir

    return sorted(notebook_dir().glob("[0-9][0-9]_*.py"))


if __name__ == "__main__":
    main()
