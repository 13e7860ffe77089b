"""Benchmark of the sparse octree (geo3d.voxels.octree) against Open3D's octree, timed in the same process.

| op | geo3d | reference |
|---|---|---|
| build from 1M points, depth 8 | ``Octree.from_points`` (float32 tensor in) | Open3D ``Octree(max_depth=8).convert_from_point_cloud`` (prebuilt ``PointCloud``) |
| locate 1M query points | ``Octree.locate`` (one vectorised call) | Open3D ``locate_leaf_node``, one Python call per point: timed on ``--open3d-queries`` points and extrapolated linearly to 1M (``open3d_locate_extrapolated``) |
| 27 neighbour leaves and 8 nearest leaves of 100k queries | ``neighbor_leaves``, ``knn_leaves`` | raw scipy ``cKDTree`` build + query over the leaf centres (the floor of ``knn_leaves``) |
| ray traversal, 64k rays | ``Octree.ray_intervals`` and ``ray_first_hit`` | none in Open3D's octree (reported alone) |

Points are 1M area-weighted surface samples (``geo3d.structures.shapes.sample_surface``) of the
shared watertight bunny (``../shared/data/meshes/bunny_watertight.ply``, a 1 m box, read as metres),
or of a unit sphere when the shared data is absent. Both octrees cover the same cube: Open3D's
(bounding box grown by 1 %), passed to geo3d as ``bounds`` with ``leaf_size = size / 2^depth``, so
their leaves are the same cells (checked: the leaf cell each tree returns for the Open3D query subset
must agree, ``located_cells_agree``). Queries: half the surface samples jittered by 5 mm, half uniform
in the cube. Rays: origins on a sphere of radius 2 m around the object, aimed at uniform points of the
cube. Each timing is the median over ``--repeats`` runs after one warm-up (Open3D's build and locate
loop run ``--repeats`` times without warm-up: they take seconds). Usage::

    python benchmarks/bench_octree.py --repeats 5 --out benchmarks/results/octree.json
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from benchutil import machine_info, median_seconds, write_report

from geo3d.voxels.octree import Octree

SHARED_MESHES = Path(os.environ.get("GEO3D_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "meshes"


def surface_points(count: int, seed: int) -> tuple[np.ndarray, str]:
    """``[count, 3]`` float64 surface samples of the bunny (or a unit sphere) and their source."""
    from geo3d.structures.shapes import sample_surface

    rng = np.random.default_rng(seed)
    path = SHARED_MESHES / "bunny_watertight.ply"
    if path.is_file():
        import trimesh

        mesh = trimesh.load(path, force="mesh")
        points = sample_surface(np.asarray(mesh.vertices), np.asarray(mesh.faces), count, rng)[0]
        return points, "bunny_watertight surface samples (../shared/data/meshes, a 1 m box, metres)"
    points = rng.normal(size=(count, 3))
    return points / np.linalg.norm(points, axis=1, keepdims=True), "unit sphere (shared meshes not found)"


def query_points(points: np.ndarray, low: np.ndarray, size: float, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    near = points[rng.integers(0, len(points), count // 2)] + rng.normal(scale=0.005, size=(count // 2, 3))
    uniform = rng.uniform(low, low + size, size=(count - count // 2, 3))
    return np.clip(np.concatenate([near, uniform]), low, low + size * (1 - 1e-9))


def camera_rays(low: np.ndarray, size: float, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    centre = low + size / 2
    origins = rng.normal(size=(count, 3))
    origins = centre + 2.0 * origins / np.linalg.norm(origins, axis=1, keepdims=True)
    directions = rng.uniform(low, low + size, size=(count, 3)) - origins
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return torch.from_numpy(origins).float(), torch.from_numpy(directions).float()


def open3d_rows(o3d, cloud, depth: int, queries: np.ndarray, repeats: int) -> tuple[dict, object]:
    """Open3D build and per-point locate timings, and the tree of the last build."""
    holder = {}

    def build() -> None:
        tree = o3d.geometry.Octree(max_depth=depth)
        tree.convert_from_point_cloud(cloud, size_expand=0.01)
        holder["tree"] = tree

    row = {"open3d_build_s": median_seconds(build, repeats, warmup=0)}
    reference = holder["tree"]
    row["open3d_locate_subset_s"] = median_seconds(lambda: [reference.locate_leaf_node(q) for q in queries],
                                                   repeats, warmup=0)
    return row, reference


def agreement(tree: Octree, reference, queries: np.ndarray) -> dict:
    """Fraction of the Open3D subset where both trees return the same leaf cell (or both none)."""
    rows = tree.locate(torch.from_numpy(queries)).numpy()
    cells = tree.node_coords()[torch.from_numpy(rows).clamp(min=0)].numpy()
    origin = tree.origin.numpy()
    same, both_empty = 0, 0
    for query, row, cell in zip(queries, rows, cells, strict=True):
        node, info = reference.locate_leaf_node(query)
        if node is None or row < 0:
            same += int(node is None and row < 0)
            both_empty += int(node is None and row < 0)
            continue
        reference_cell = np.rint((np.asarray(info.origin) - origin) / tree.leaf_size)
        same += int((reference_cell == cell).all())
    return {"located_cells_agree": same / len(queries), "subset_empty_in_both": both_empty}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    parser.add_argument("--points", type=int, default=1_000_000, help="points the octrees are built from")
    parser.add_argument("--queries", type=int, default=1_000_000, help="query points for locate")
    parser.add_argument("--open3d-queries", type=int, default=10_000,
                        help="queries Open3D's per-point locate is timed on (extrapolated to --queries)")
    parser.add_argument("--rays", type=int, default=65_536, help="rays of the traversal benchmark")
    parser.add_argument("--neighbor-queries", type=int, default=100_000,
                        help="queries of the neighbour-leaf and k-nearest-leaf timings")
    parser.add_argument("--depth", type=int, default=8, help="octree depth (levels below the root)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice); 1 keeps timings steady on a busy machine")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    points, source = surface_points(args.points, seed=0)
    points32 = torch.from_numpy(points).float()
    report = {"benchmark": "octree", "repeats": args.repeats, "points": args.points, "queries": args.queries,
              "depth": args.depth, "cloud": source}
    try:
        import open3d as o3d
    except ImportError:
        o3d = None
    if o3d is not None:
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
        probe = o3d.geometry.Octree(max_depth=args.depth)
        probe.convert_from_point_cloud(cloud, size_expand=0.01)
        low, size = np.asarray(probe.origin, dtype=np.float64), float(probe.size)
    else:  # the same cube rule as Open3D: the bounding box's largest side grown by 1 %, centred
        lo, hi = points.min(0), points.max(0)
        size = float((hi - lo).max()) * 1.01
        low = (lo + hi) / 2 - size / 2
    leaf_size = size / 2**args.depth
    bounds = [low, low + size]
    queries = query_points(points, low, size, args.queries, seed=1)
    queries32 = torch.from_numpy(queries).float()
    subset = queries[np.random.default_rng(2).choice(len(queries), args.open3d_queries, replace=False)]

    holder = {}

    def build() -> None:
        holder["tree"] = Octree.from_points(points32, leaf_size, bounds=bounds)

    report["geo3d_build_s"] = median_seconds(build, args.repeats)
    tree = holder["tree"]
    report["geo3d_locate_s"] = median_seconds(lambda: tree.locate(queries32), args.repeats)
    report["tree"] = {"leaves": tree.num_leaves, "nodes": tree.num_nodes, "memory_bytes": tree.memory_bytes(),
                      "leaf_size_m": leaf_size, "size_m": size, "queries_in_occupied_leaves":
                      float((tree.locate(queries32) >= 0).float().mean())}
    print(f"geo3d: build {report['geo3d_build_s']:.3f} s, locate {report['geo3d_locate_s']:.3f} s; {tree}",
          flush=True)
    if o3d is not None:
        row, reference = open3d_rows(o3d, cloud, args.depth, subset, args.repeats)
        row["open3d_locate_subset_queries"] = args.open3d_queries
        row["open3d_locate_extrapolated_s"] = row["open3d_locate_subset_s"] * args.queries / args.open3d_queries
        row["open3d_locate_note"] = (f"Open3D's locate_leaf_node takes one point per Python call: timed on "
                                     f"{args.open3d_queries} queries, extrapolated linearly to {args.queries}")
        row["speedup_build_vs_open3d"] = row["open3d_build_s"] / report["geo3d_build_s"]
        row["speedup_locate_vs_open3d"] = row["open3d_locate_extrapolated_s"] / report["geo3d_locate_s"]
        row.update(agreement(tree, reference, subset))
        report["open3d"] = row
        print(f"open3d: build {row['open3d_build_s']:.3f} s (x{row['speedup_build_vs_open3d']:.1f}), locate "
              f"{row['open3d_locate_extrapolated_s']:.1f} s extrapolated (x{row['speedup_locate_vs_open3d']:.0f}); "
              f"cells agree on {row['located_cells_agree']:.4%} of the subset", flush=True)
    else:
        report["open3d"] = None
    from scipy.spatial import cKDTree

    near_queries = queries32[: args.neighbor_queries]
    centres = tree.node_centers().numpy()
    report["neighbours"] = {
        "queries": int(near_queries.shape[0]),
        "geo3d_neighbor_leaves_27_s": median_seconds(lambda: tree.neighbor_leaves(near_queries), args.repeats),
        "geo3d_knn_leaves_k8_s": median_seconds(lambda: tree.knn_leaves(near_queries, 8), args.repeats),
        "scipy_ckdtree_k8_floor_s": median_seconds(
            lambda: cKDTree(centres).query(near_queries.double().numpy(), k=8), args.repeats),
        "note": "knn_leaves = KD-tree over leaf centres (geo3d.points.knn); the floor is a raw cKDTree "
                "build + query over the same centres (workers=1)",
    }
    origins, directions = camera_rays(low, size, args.rays, seed=3)
    intervals = tree.ray_intervals(origins, directions)
    report["rays"] = {
        "rays": args.rays,
        "geo3d_ray_intervals_s": median_seconds(lambda: tree.ray_intervals(origins, directions), args.repeats),
        "geo3d_ray_intervals_merged_s": median_seconds(
            lambda: tree.ray_intervals(origins, directions, merge=True), args.repeats),
        "geo3d_ray_first_hit_s": median_seconds(lambda: tree.ray_first_hit(origins, directions), args.repeats),
        "intervals": int(intervals.ray_indices.numel()),
        "rays_hitting": int(torch.unique(intervals.ray_indices).numel()),
    }
    print(f"rays: {args.rays} in {report['rays']['geo3d_ray_intervals_s']:.3f} s, "
          f"{report['rays']['intervals']} intervals", flush=True)
    report["machine"] = machine_info()
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
