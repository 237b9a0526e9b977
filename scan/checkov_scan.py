"""`make scan`: Checkov over manifests/, every failed check explained by scan/checkov-baseline.yaml.

    .venv-scan/bin/python scan/checkov_scan.py            # table + summary; exit 1 on a new finding
    python scan/checkov_scan.py --checkov PATH/TO/checkov  # another Checkov binary

Exit 1 when Checkov fails a check the baseline does not list, when a baseline entry has no reason,
or when an entry matches nothing any more (the baseline only shrinks with the findings). Exit 2
when Checkov cannot run. Standard library and PyYAML only (PyYAML comes with Checkov).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "scan" / "checkov-baseline.yaml"
DEFAULT_CHECKOV = ROOT / ".venv-scan" / "bin" / "checkov"


def run_checkov(checkov: str | Path, directory: Path) -> dict:
    """Checkov's JSON report for the kubernetes framework (passed/failed checks, summary)."""
    command = [str(checkov), "-d", str(directory), "--framework", "kubernetes", "-o", "json"]
    result = subprocess.run(command + ["--quiet"], capture_output=True, text=True, timeout=900)
    if result.returncode not in (0, 1) or not result.stdout.strip():
        raise RuntimeError(f"checkov failed ({result.returncode}): {result.stderr[-2000:]}")
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


def compare(report: dict, baseline: list[dict], directory: Path) -> dict:
    """{"new": [...], "explained": [...], "unreasoned": [...], "stale": [...]} of the findings."""
    used: set[int] = set()
    new, explained = [], []
    for failed in report.get("results", {}).get("failed_checks", []):
        path = failed["file_path"].lstrip("/").removeprefix(f"{directory.name}/")
        row = {"check": failed["check_id"], "file": path, "resource": failed["resource"]}
        match = next(
            (
                i
                for i, entry in enumerate(baseline)
                if entry.get("check") == failed["check_id"]
                and any(fnmatch.fnmatch(path, pattern) for pattern in entry.get("files", []))
            ),
            None,
        )
        if match is None:
            new.append({**row, "name": failed.get("check_name", "")})
        else:
            used.add(match)
            explained.append({**row, "reason": baseline[match]["reason"]})
    unreasoned = [e for e in baseline if not str(e.get("reason", "")).strip()]
    stale = [e for i, e in enumerate(baseline) if i not in used]
    return {"new": new, "explained": explained, "unreasoned": unreasoned, "stale": stale}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkov", default=str(DEFAULT_CHECKOV))
    parser.add_argument("--dir", default=str(ROOT / "manifests"))
    args = parser.parse_args(argv)
    directory = Path(args.dir)
    try:
        report = run_checkov(args.checkov, directory)
    except (OSError, RuntimeError, ValueError) as error:
        print(f"error: cannot run Checkov: {error}", file=sys.stderr)
        return 2
    result = compare(report, yaml.safe_load(BASELINE.read_text()) or [], directory)
    summary = report.get("summary", {})
    for row in result["explained"]:
        print(f"baseline  {row['check']:<11} {row['file']}  {row['resource']}")
    for row in result["new"]:
        print(f"NEW       {row['check']:<11} {row['file']}  {row['resource']}  {row['name']}")
    for entry in result["unreasoned"]:
        print(f"NO REASON {entry.get('check')} in {BASELINE.name}")
    for entry in result["stale"]:
        print(f"STALE     {entry.get('check')} {entry.get('files')}: matches nothing, remove it")
    print(
        f"checkov {summary.get('checkov_version')}: {summary.get('passed')} passed, "
        f"{summary.get('failed')} failed ({len(result['explained'])} in the baseline, "
        f"{len(result['new'])} new), {summary.get('resource_count')} resources"
    )
    return 1 if result["new"] or result["unreasoned"] or result["stale"] else 0


if __name__ == "__main__":
    sys.exit(main())
