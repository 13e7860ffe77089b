"""Run every ``benchmarks/bench_*.py`` and write its JSON to ``benchmarks/results/<name>.json``.

Usage: ``python benchmarks/run_all.py [--repeats N] [--only cameras]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names (bench_<name>.py) to run")
    args = parser.parse_args(argv)
    for script in sorted(HERE.glob("bench_*.py")):
        name = script.stem.removeprefix("bench_")
        if args.only and name not in args.only:
            continue
        spec = importlib.util.spec_from_file_location(script.stem, script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"== {name}", flush=True)
        module.main(["--repeats", str(args.repeats), "--out", str(HERE / "results" / f"{name}.json")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
