"""Benchmark of geo3d.points (neighbours, Chamfer, sampling) against references timed in the same process.

| op | geo3d | reference |
|---|---|---|
| Chamfer forward + backward, two N-point clouds (N = 20k, 100k, 1M) | ``chamfer_distance`` | two raw scipy ``cKDTree`` build + query passes (all cores), the floor; chunked brute force (torch ``cdist`` + min); pytorch3d's ``chamfer_distance`` when installed |
| 8 nearest neighbours of 100k points among 100k | ``knn`` | one raw ``cKDTree`` build + query |
| farthest point sampling, 1024 of 100k points | ``farthest_point_sampling`` | NumPy loop |
| voxel downsampling of 1M points (5 cm) | ``voxel_downsample`` | Open3D ``voxel_down_sample`` |

Clouds are points sampled on the two bunny meshes of ``../shared/data/meshes`` (the raw scan vs the
watertight reconstruction) when present, else on a unit sphere. The two meshes come in different
frames (the scan in metres, 15 cm tall; the watertight one scaled into [-0.5, 0.5]^3), so each is
centred on its bounding box and scaled to a unit diagonal first: the clouds then sample the same
surface (mean nearest-neighbour distance 0.0045 at 20k points), as a reconstruction and its ground
truth do. Each timing is the median over ``--repeats`` runs after
one warm-up; the brute-force reference at 100k runs once (it takes minutes) and is skipped at 1M,
where geo3d and the floor run once each. Usage::

    python benchmarks/bench_points.py --repeats 5 --out benchmarks/results/points.json
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from benchutil import machine_info, median_seconds, write_report

from geo3d.points import chamfer_distance, farthest_point_sampling, knn, voxel_downsample

SHARED_MESHES = Path(os.environ.get("GEO3D_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "meshes"


def surface_clouds(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Two float32 ``[count, 3]`` clouds sampled on two versions of the same surface."""
    from geo3d.structures.shapes import sample_surface

    rng = np.random.default_rng(seed)
    names = ("bunny_scan.ply", "bunny_watertight.ply")
    if all((SHARED_MESHES / n).is_file() for n in names):
        import trimesh

        clouds = []
        for name in names:
            mesh = trimesh.load(SHARED_MESHES / name, force="mesh")
            vertices = np.asarray(mesh.vertices)
            low, high = vertices.min(axis=0), vertices.max(axis=0)
            vertices = (vertices - (low + high) / 2) / np.linalg.norm(high - low)  # same frame for both
            clouds.append(sample_surface(vertices, np.asarray(mesh.faces), count, rng)[0])
        source = "bunny_scan vs bunny_watertight (../shared/data/meshes), each centred and scaled to a unit box diagonal"
    else:
        clouds = [rng.normal(size=(count, 3)) for _ in range(2)]
        clouds = [c / np.linalg.norm(c, axis=1, keepdims=True) for c in clouds]
        source = "unit sphere (shared meshes not found)"
    return torch.from_numpy(clouds[0]).float(), torch.from_numpy(clouds[1]).float(), source


def kdtree_floor(x: np.ndarray, y: np.ndarray) -> None:
    """Two raw KD-tree passes (build on one cloud, query the other, all cores)."""
    from scipy.spatial import cKDTree

    cKDTree(y, leafsize=16).query(x, k=1, workers=-1)
    cKDTree(x, leafsize=16).query(y, k=1, workers=-1)


def brute_force_chamfer(x: torch.Tensor, y: torch.Tensor, chunk_pairs: int = 16 * 1024 * 1024) -> torch.Tensor:
    """Squared-L2 Chamfer by chunked all-pairs distances (torch ``cdist``, its fast matrix-product
    form) and ``argmin`` without autograd; the gradient flows through the matched pairs only."""

    def direction(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        chunk = max(1, chunk_pairs // b.shape[0])
        with torch.no_grad():
            nearest = torch.cat([torch.cdist(a[s:s + chunk], b).argmin(1) for s in range(0, a.shape[0], chunk)])
        return (a - b[nearest]).square().sum(-1).mean()

    return direction(x, y) + direction(y, x)


def chamfer_rows(sizes: list[int], repeats: int) -> tuple[list[dict], str]:
    rows, source = [], ""
    try:
        from pytorch3d.loss import chamfer_distance as p3d_chamfer
    except ImportError:
        p3d_chamfer = None
    for size in sizes:
        x, y, source = surface_clouds(size, seed=size)
        xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()

        def ours() -> None:
            xs.grad = ys.grad = None
            chamfer_distance(xs, ys).backward()

        x64, y64 = x.double().numpy(), y.double().numpy()
        runs, warmup = (repeats, 1) if size < 1_000_000 else (1, 0)  # a 1M run takes tens of seconds
        row = {"points": size, "runs": runs, "geo3d_fwd_bwd_s": median_seconds(ours, runs, warmup),
               "kdtree_floor_s": median_seconds(lambda: kdtree_floor(x64, y64), runs, warmup)}
        row["ratio_to_kdtree_floor"] = row["geo3d_fwd_bwd_s"] / row["kdtree_floor_s"]
        if size <= 100_000:
            def brute() -> None:
                xs.grad = ys.grad = None
                brute_force_chamfer(xs, ys).backward()

            runs = repeats if size <= 20_000 else 1
            row["brute_force_fwd_bwd_s"] = median_seconds(brute, runs, warmup=1 if size <= 20_000 else 0)
            row["brute_force_runs"] = runs
            row["speedup_vs_brute_force"] = row["brute_force_fwd_bwd_s"] / row["geo3d_fwd_bwd_s"]
            if size <= 20_000:  # the values agree (float64 brute force as the reference)
                with torch.no_grad():
                    row["value_geo3d"] = float(chamfer_distance(x.double(), y.double()))
                    row["value_brute_force"] = float(brute_force_chamfer(x.double(), y.double()))
        if p3d_chamfer is not None:
            def p3d() -> None:
                xs.grad = ys.grad = None
                p3d_chamfer(xs[None], ys[None])[0].backward()

            row["pytorch3d_fwd_bwd_s"] = median_seconds(p3d, repeats if size <= 20_000 else 1)
        rows.append(row)
        print(f"chamfer {size:>8} points: geo3d {row['geo3d_fwd_bwd_s']:.3f} s, KD-tree floor "
              f"{row['kdtree_floor_s']:.3f} s (x{row['ratio_to_kdtree_floor']:.2f})"
              + (f", brute force {row['brute_force_fwd_bwd_s']:.2f} s (x{row['speedup_vs_brute_force']:.0f} faster)"
                 if "brute_force_fwd_bwd_s" in row else ""), flush=True)
    return rows, source + ("" if p3d_chamfer else "; pytorch3d not installed (no wheel here, docs/setup.md)")


def other_rows(repeats: int) -> dict:
    from scipy.spatial import cKDTree

    x, y, _ = surface_clouds(100_000, seed=7)
    out = {}
    x64, y64 = x.double().numpy(), y.double().numpy()
    out["knn_k8_100k"] = {
        "geo3d_s": median_seconds(lambda: knn(x, y, 8), repeats),
        "kdtree_raw_s": median_seconds(lambda: cKDTree(y64, leafsize=16).query(x64, k=8, workers=-1), repeats)}
    out["knn_k8_100k"]["ratio"] = out["knn_k8_100k"]["geo3d_s"] / out["knn_k8_100k"]["kdtree_raw_s"]

    def numpy_fps(points: np.ndarray, n: int) -> None:
        chosen, dist = 0, np.full(len(points), np.inf)
        for _ in range(n):
            dist = np.minimum(dist, ((points - points[chosen]) ** 2).sum(1))
            chosen = int(np.argmax(dist))

    x32 = x.numpy()
    out["fps_1024_of_100k"] = {"geo3d_s": median_seconds(lambda: farthest_point_sampling(x, 1024), repeats),
                               "numpy_loop_s": median_seconds(lambda: numpy_fps(x32, 1024), repeats)}
    big, _, _ = surface_clouds(1_000_000, seed=8)
    row = {"geo3d_s": median_seconds(lambda: voxel_downsample(big, 0.005), repeats)}
    try:
        import open3d as o3d

        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(big.double().numpy()))
        row["open3d_s"] = median_seconds(lambda: cloud.voxel_down_sample(0.005), repeats)
        row["ratio_to_open3d"] = row["geo3d_s"] / row["open3d_s"]
    except ImportError:
        row["open3d_s"] = None
    row["voxels"] = int(voxel_downsample(big, 0.005).points.shape[0])
    out["voxel_downsample_1M_5mm"] = row
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[20_000, 100_000, 1_000_000],
                        help="cloud sizes of the Chamfer benchmark")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice); 1 keeps small ops steady on a busy machine")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    chamfer, source = chamfer_rows(args.sizes, args.repeats)
    report = {"benchmark": "points", "repeats": args.repeats, "machine": machine_info(), "clouds": source,
              "chamfer_squared_l2_mean": chamfer, **other_rows(args.repeats)}
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
