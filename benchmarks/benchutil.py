"""What every ``benchmarks/bench_*.py`` script shares: the machine description, median timing and
the JSON report (printed, and written atomically with ``--out``)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geo3d.utils.atomic import atomic_write_text


def machine_info(**extra: Any) -> dict[str, Any]:
    """Platform, CPUs available to this process, torch version and threads, the 1-minute load
    average (above ~0.5 another job shared the CPU), plus ``extra`` entries."""
    import torch

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    info.update(extra)
    return info


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_report(report: dict[str, Any], out: str | Path | None) -> None:
    """Print ``report`` as JSON and, when ``out`` is given, write it there atomically."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        atomic_write_text(out, text + "\n")
