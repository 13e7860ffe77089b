"""Benchmark of PointNet shape classification (``geo3d train pointnet``): data, speed, accuracy.

Measured, in one process:

1. **Shape-set generation**: ``make_shape_set`` for the preset's train and test splits (timed once;
   the sets are then written to a temporary folder for step 3).
2. **Training step** (batch 32 x 1024 points, the paper's network with both transforms, forward +
   backward + Adam): the median over ``--repeats`` steps with the fused max-pooled layer
   (``MaxPooledPointLayer``, geo3d's default) and with the plain ``Linear -> BatchNorm -> ReLU -> max``
   reference, timed in the same process; their ratio is the fast path's speed-up.
3. **Full training** of the preset through the CLI (``geo3d train pointnet --config PRESET --data
   <the sets of step 1>``), run once (``--repeats`` does not apply: it takes minutes): wall time,
   median epoch time, the test split's overall and mean class accuracy after the last epoch, and
   the first epoch whose test overall accuracy reached 90 %.
4. **OpenMP wait policy** (why ``geo3d train`` sets ``OMP_WAIT_POLICY=PASSIVE``): the median
   training step (32 x 512 points, 2 threads) in fresh processes with ``ACTIVE`` (spinning, like
   torch's default) and ``PASSIVE`` waiting, alone and beside one busy-looping process that stands
   for another job on the shared CPU.

Usage::

    python benchmarks/bench_pointnet.py --out benchmarks/results/pointnet.json
    python benchmarks/bench_pointnet.py --preset tiny --repeats 3      # a quick check of the script
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch, as geo3d train does (apps/train.py)

import torch  # noqa: E402

from benchutil import machine_info, write_report  # noqa: E402

from geo3d.models import PointNetClassifier, orthogonality_regularizer  # noqa: E402
from geo3d.synthetic.shapes import SHAPE_CLASSES, make_shape_set  # noqa: E402
from geo3d_apps.cli import main as cli_main  # noqa: E402
from geo3d_apps.config import load_preset, resolve_preset, to_dict  # noqa: E402
from geo3d_apps.train import PointNetConfig  # noqa: E402


def _step_seconds(fused: bool, repeats: int, num_points: int = 1024, batch: int = 32) -> float:
    torch.manual_seed(0)
    model = PointNetClassifier(16, fused=fused)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    points, labels = torch.randn(batch, num_points, 3), torch.randint(0, 16, (batch,))
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        logits, features = model.forward_with_features(points)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        loss = loss + 0.001 * orthogonality_regularizer(features.feature_transform)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _wait_policy_steps(repeats: int) -> dict[str, float]:
    """Median step seconds (32 x 512 points, 2 threads) per OpenMP wait policy, alone and beside a
    busy loop; each in a fresh process (the policy is read when torch loads OpenMP)."""
    results = {}
    for busy in (False, True):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            for policy in ("ACTIVE", "PASSIVE"):
                command = [sys.executable, __file__, "--step-only", "512", "--repeats", str(repeats)]
                done = subprocess.run(command, env={**os.environ, "OMP_WAIT_POLICY": policy},
                                      capture_output=True, text=True, check=True)
                results[f"{policy.lower()}_{'beside_busy_loop' if busy else 'alone'}"] = float(done.stdout)
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed training steps (median reported)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    parser.add_argument("--preset", default="default", help="configs/train/pointnet preset to train")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--step-only", type=int, default=None, help=argparse.SUPPRESS)  # for step 4
    args = parser.parse_args(argv)
    if args.step_only:
        torch.set_num_threads(2)
        print(_step_seconds(True, args.repeats, num_points=args.step_only))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    config: PointNetConfig = load_preset(PointNetConfig, resolve_preset("train/pointnet", args.preset))
    load_before = os.getloadavg()
    classes = tuple(config.shape_classes) or SHAPE_CLASSES

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        start = time.perf_counter()
        counts = {"train": config.shapes_per_class, "test": config.test_shapes_per_class}
        sets = {split: make_shape_set(split, count, config.shape_points, config.shape_seed, classes)
                for split, count in counts.items()}
        generation_s = time.perf_counter() - start
        for split, shapes in sets.items():
            shapes.save(data / f"{split}.npz")

        step_fused = _step_seconds(True, args.repeats)
        step_reference = _step_seconds(False, args.repeats)
        wait_policy = _wait_policy_steps(args.repeats)

        run = Path(tmp) / "run"
        command = ["train", "pointnet", "--config", args.preset, "--data", str(data), "--out", str(run)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = cli_main(command)
        train_wall_s = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"geo3d {' '.join(command)} failed with exit code {code}")
        results = json.loads((run / "metrics.json").read_text())

    history = results["history"]
    result = {
        "benchmark": "pointnet",
        "machine": machine_info(omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
                                # 1-minute load averages: above ~0.5 before the start, another job shared the CPU
                                load_average_before=load_before[0], load_average_after=os.getloadavg()[0]),
        "preset": args.preset,
        "config": to_dict(config),
        "command": "geo3d " + " ".join(command[:4]) + " --data DATA --out RUN",
        "shape_set": {"train_shapes": len(sets["train"]), "test_shapes": len(sets["test"]),
                      "classes": len(classes), "points": config.shape_points, "generation_s": generation_s},
        "repeats": args.repeats,
        "step_median_s": {"fused": step_fused, "reference": step_reference},
        "step_speedup_vs_reference": step_reference / step_fused,
        "omp_wait_policy_step_median_s": wait_policy,
        "training": {
            "runs": 1,
            "wall_s": train_wall_s,
            "epochs": len(history),
            "epoch_train_median_s": statistics.median(r["train_seconds"] for r in history),
            "epoch_eval_median_s": statistics.median(r["eval_seconds"] for r in history),
            "train_s": results["train_seconds"],
            "eval_s": results["eval_seconds"],
            "overall_accuracy": results["overall_accuracy"],
            "mean_class_accuracy": results["mean_class_accuracy"],
            "first_epoch_at_90": results["first_epoch_at_90"],
            "test_overall_accuracy_per_epoch": [round(r["test_overall_accuracy"], 4) for r in history],
        },
        "target": {"overall_accuracy": 0.9, "wall_s": 600.0},
        "per_class_accuracy": {k: v["accuracy"] for k, v in results["test"]["per_class"].items()},
        "confusion": {"classes": list(results["test"]["per_class"]),
                      "rows_truth": results["test"]["confusion"]},
    }
    write_report(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
