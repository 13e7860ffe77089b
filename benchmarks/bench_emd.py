"""Benchmark of the Earth Mover's Distance (``geo3d.points.emd``): exact and approximate solvers.

Clouds: two independent area-uniform samples of the shared bunny scan mesh
(``../shared/data/meshes/bunny_scan.ply``, metres), the hard case for EMD solvers (two samples of one
surface: the EMD is of the order of the point spacing). Without the shared data, samples of a
synthetic closed surface (a bumpy sphere, radius ~0.1 m) are used and ``"clouds"`` says so.

Measured (medians over ``--repeats`` runs after a warm-up that also compiles the Numba kernels):

- exact EMD at 1k and 2k points against the reference, :func:`scipy.optimize.linear_sum_assignment`
  on the dense cost (cost matrix included), timed in the same process; the values must agree;
- the auction (approximate) at 2k and 10k points for three ``tolerance`` settings: time and relative
  error against the exact EMD (computed once per size by the exact solver, which at 10k takes a few
  seconds and 0.8 GB);
- clouds of different sizes (1000 vs 1500 points): the Sinkhorn method for three ``blur`` settings,
  error against the exact EMD obtained by repeating the points to 3000 vs 3000 (uniform masses: an
  assignment problem of the common multiple, solved exactly).

Usage::

    python benchmarks/bench_emd.py --repeats 5 --out benchmarks/results/emd.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

from benchutil import machine_info, write_report

from geo3d.points.emd import earth_movers_distance, exact_assignment
from geo3d.structures.shapes import sample_surface

SHARED_DATA = Path(os.environ.get("GEO3D_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))
SHARED_MESHES = SHARED_DATA / "meshes"


def _surface() -> tuple[np.ndarray, np.ndarray, str]:
    path = SHARED_MESHES / "bunny_scan.ply"
    if path.exists():
        import trimesh

        mesh = trimesh.load(path, process=False)
        return np.asarray(mesh.vertices), np.asarray(mesh.faces), f"bunny_scan.ply samples ({path})"
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.1)
    v = np.asarray(sphere.vertices)
    v = v * (1.0 + 0.15 * np.sin(5 * v[:, :1] / 0.1) * np.cos(3 * v[:, 1:2] / 0.1))
    return v, np.asarray(sphere.faces), "synthetic bumpy sphere samples (shared data not found)"


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _scipy_emd(x: np.ndarray, y: np.ndarray) -> float:
    cost = cdist(x, y)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def _exact_by_repetition(x: np.ndarray, y: np.ndarray) -> float:
    n, m = len(x), len(y)
    size = np.lcm(n, m)
    xr, yr = np.repeat(x, size // n, axis=0), np.repeat(y, size // m, axis=0)
    match = exact_assignment(xr, yr)
    return float(np.linalg.norm(xr - yr[match], axis=1).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = parser.parse_args(argv)
    vertices, faces, clouds = _surface()

    def pair(n: int, m: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        a = sample_surface(vertices, faces, n, np.random.default_rng(0))[0]
        b = sample_surface(vertices, faces, m or n, np.random.default_rng(1))[0]
        return a, b

    warm_x, warm_y = pair(200)
    earth_movers_distance(torch.from_numpy(warm_x), torch.from_numpy(warm_y), method="exact")
    earth_movers_distance(torch.from_numpy(warm_x), torch.from_numpy(warm_y[:150]))

    exact_rows, exact_values = [], {}
    for n in (1000, 2000):
        x, y = pair(n)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        run = lambda: earth_movers_distance(xt, yt, method="exact").item()  # noqa: E731
        ours_s, ours = _median_time(run, args.repeats)
        ref_s, ref = _median_time(lambda: _scipy_emd(x, y), args.repeats)
        exact_values[n] = ours
        exact_rows.append({"points": n, "emd_m": ours, "median_s": ours_s, "reference_scipy_lsa_s": ref_s,
                           "speedup_vs_reference": ref_s / ours_s,
                           "abs_difference_vs_reference": abs(ours - ref),
                           "mean_nn_distance_m": float(cKDTree(y).query(x)[0].mean())})

    approx_rows = []
    for n in (2000, 10000):
        x, y = pair(n)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        if n not in exact_values:
            start = time.perf_counter()
            exact_values[n] = earth_movers_distance(xt, yt, method="exact").item()
            exact_s = time.perf_counter() - start
        else:
            exact_s = next(r["median_s"] for r in exact_rows if r["points"] == n)
        for tolerance in (1e-2, 1e-3, 1e-4):
            run = lambda: earth_movers_distance(  # noqa: E731
                xt, yt, method="auction", tolerance=tolerance).item()
            seconds, value = _median_time(run, args.repeats)
            approx_rows.append({"points": n, "method": "auction", "tolerance": tolerance, "median_s": seconds,
                                "emd_m": value, "exact_emd_m": exact_values[n], "exact_s": exact_s,
                                "relative_error_vs_exact": (value - exact_values[n]) / exact_values[n]})

    x, y = pair(1000, 1500)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    start = time.perf_counter()
    reference = _exact_by_repetition(x, y)
    reference_s = time.perf_counter() - start
    nn = float(cKDTree(y).query(x)[0].mean())
    unequal_rows = []
    for factor in (0.25, 0.5, 1.0):
        run = lambda: earth_movers_distance(xt, yt, method="sinkhorn", blur=factor * nn).item()  # noqa: E731
        seconds, value = _median_time(run, args.repeats)
        unequal_rows.append({"points": [1000, 1500], "method": "sinkhorn", "blur_m": factor * nn,
                             "blur_over_mean_nn_distance": factor, "median_s": seconds, "emd_m": value,
                             "exact_emd_m": reference,
                             "relative_error_vs_exact": (value - reference) / reference})

    result = {
        "benchmark": "emd",
        "machine": machine_info(numba=_version("numba"), scipy=_version("scipy")),
        "clouds": clouds,
        "metric": "l2",
        "repeats": args.repeats,
        "exact": exact_rows,
        "approximate_equal_sizes": approx_rows,
        "unequal_sizes": {"rows": unequal_rows, "reference": "exact EMD by repetition to 3000 vs 3000 points",
                          "reference_s": reference_s},
        "budgets": {"exact_2k_s": 1.0, "approximate_2k_relative_error": 0.01, "approximate_10k_s": 3.0},
    }
    write_report(result, args.out)
    return 0


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - reporting only
        return None


if __name__ == "__main__":
    raise SystemExit(main())
