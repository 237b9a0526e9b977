"""`python -m benchmarks --out build/bench`: run every benchmarks/bench_*.py, write JSON + markdown."""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("build/bench"))
    parser.add_argument("--only", default="", help="substring of the benchmark module names to run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for path in sorted(Path(__file__).parent.glob("bench_*.py")):
        if args.only not in path.stem:
            continue
        module = importlib.import_module(f"benchmarks.{path.stem}")
        print(f"== {path.stem}", flush=True)
        start = time.perf_counter()
        result = module.run()
        result.setdefault("name", path.stem)
        result["module"] = path.stem
        result["wall_s"] = round(time.perf_counter() - start, 1)
        print(json.dumps(result, indent=2), flush=True)
        results.append(result)
    machine = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor(),
    }
    (args.out / "results.json").write_text(
        json.dumps({"machine": machine, "results": results}, indent=2)
    )
    lines = [
        f"# Benchmarks ({machine['platform']})",
        "",
        "| benchmark | result | goal |",
        "|---|---|---|",
    ]
    lines += [f"| {r['name']} | {r.get('summary', '')} | {r.get('goal', '')} |" for r in results]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'results.md'}")


if __name__ == "__main__":
    main()
