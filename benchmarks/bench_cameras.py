"""Benchmark of geo3d.cameras ops against references timed in the same process.

| op | geo3d | reference |
|---|---|---|
| rays of 6 cameras at 900x1600 | ``generate_rays`` | nerf-pytorch-style ``get_rays`` loop over cameras |
| 1M world points into 6 cameras | ``world_to_pixels`` | kornia ``transform_points`` + ``project_points`` |
| 300k points z-buffered into 6 cameras at 900x1600 | ``points_to_depth`` | per-camera sort-based z-buffer |

Each timing is the median over ``--repeats`` runs after ``--warmup`` runs; each op's output is
also compared with its reference (``check``, ``difference``). In float32 a few hundred-thousandths
of the z-buffered pixels differ: points within ~1e-4 px of a pixel border round to different
pixels in the fused ``K @ world2cam`` projection and kornia's two-step one (none in float64).
Usage::

    python benchmarks/bench_cameras.py --repeats 5 --out bench_cameras.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from benchutil import machine_info

from geo3d.cameras import functional as F
from geo3d.geometry.poses import invert_pose
from geo3d.utils.atomic import atomic_write_text

HEIGHT, WIDTH, NUM_CAMERAS = 900, 1600, 6


def make_rig(device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Six nuScenes-like cameras (fx = fy = 1266, no skew) at 60-degree yaw steps around the origin."""
    K = torch.tensor([[1266.0, 0.0, 799.5], [0.0, 1266.0, 449.5], [0.0, 0.0, 1.0]]).repeat(NUM_CAMERAS, 1, 1)
    cam2world = np.tile(np.eye(4), (NUM_CAMERAS, 1, 1))
    cam_to_driving = np.array(
        [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=float
    )  # OpenCV axes -> x fwd, y left, z up
    for c in range(NUM_CAMERAS):
        yaw = Rotation.from_euler("z", 60 * c, degrees=True).as_matrix()
        cam2world[c, :3, :3] = yaw @ cam_to_driving
        cam2world[c, :3, 3] = yaw @ np.array([1.0, 0.0, 1.5])
    return K.to(device, dtype), torch.as_tensor(cam2world, dtype=dtype, device=device)


def random_points(count: int, device, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(count, 3, generator=generator) * torch.tensor([100.0, 100.0, 6.0]) - torch.tensor(
        [50.0, 50.0, 1.0]
    )
    return points.to(device)


# ------------------------------------------------------------------------------------- references


def reference_get_rays(K: torch.Tensor, cam2world: torch.Tensor, height: int, width: int):
    """The nerf-pytorch ``get_rays`` recipe (OpenCV axes), one camera at a time."""
    rows, cols = torch.meshgrid(
        torch.arange(height, device=K.device, dtype=K.dtype),
        torch.arange(width, device=K.device, dtype=K.dtype),
        indexing="ij",
    )
    all_origins, all_directions = [], []
    for k, pose in zip(K, cam2world):
        dirs = torch.stack(
            [(cols - k[0, 2]) / k[0, 0], (rows - k[1, 2]) / k[1, 1], torch.ones_like(cols)], -1
        )
        directions = torch.sum(dirs[..., None, :] * pose[:3, :3], -1)
        directions = directions / torch.linalg.vector_norm(directions, dim=-1, keepdim=True)
        all_directions.append(directions)
        all_origins.append(pose[:3, 3].expand(directions.shape))
    return torch.stack(all_origins), torch.stack(all_directions)


def reference_world_to_pixels(points_world, K, cam2world):
    from kornia.geometry.camera import project_points
    from kornia.geometry.linalg import transform_points

    points_cam = transform_points(invert_pose(cam2world), points_world.expand(len(K), -1, -1))
    return project_points(points_cam, K[:, None]), points_cam[..., 2]


def reference_points_to_depth(points_world, K, cam2world, height, width, near=1e-6):
    """Per camera: sort by z, then stably by pixel, and keep the first (nearest) point of each pixel."""
    uv, depth = reference_world_to_pixels(points_world, K, cam2world)
    out = depth.new_zeros(len(K), height * width)
    for c in range(len(K)):
        col, row = torch.floor(uv[c] + 0.5).unbind(-1)
        keep = (depth[c] > near) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
        pixel = (row[keep] * width + col[keep]).long()
        z = depth[c][keep]
        by_depth = torch.argsort(z, stable=True)
        pixel, z = pixel[by_depth], z[by_depth]
        by_pixel = torch.argsort(pixel, stable=True)
        pixel, z = pixel[by_pixel], z[by_pixel]
        first = torch.ones_like(pixel, dtype=torch.bool)
        first[1:] = pixel[1:] != pixel[:-1]
        out[c, pixel[first]] = z[first]
    return out.reshape(len(K), height, width)


# ------------------------------------------------------------------------------------------ timing


def median_ms(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> float:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def camera_machine_info(device: torch.device) -> dict:
    extra = {"device": str(device)}
    try:
        import kornia

        extra["kornia"] = kornia.__version__
    except ImportError:  # pragma: no cover
        extra["kornia"] = None
    if device.type == "cuda":
        extra["gpu"] = torch.cuda.get_device_name(device)
    return machine_info(**extra)


def in_view(projection: F.Projection) -> torch.Tensor:
    u, v = projection.uv.unbind(-1)
    return (projection.depth > 0) & (u >= -0.5) & (u < WIDTH - 0.5) & (v >= -0.5) & (v < HEIGHT - 0.5)


def run(repeats: int, warmup: int, device: torch.device) -> list[dict]:
    K, cam2world = make_rig(device)
    points_1m = random_points(1_000_000, device, seed=0)
    points_300k = random_points(300_000, device, seed=1)
    cases = [
        (
            "generate_rays 6x900x1600",
            "nerf-pytorch get_rays loop",
            lambda: F.generate_rays(K, cam2world, HEIGHT, WIDTH),
            lambda: reference_get_rays(K, cam2world, HEIGHT, WIDTH),
            lambda ours, ref: ("max |directions diff|", (ours.directions - ref[1]).abs().max()),
        ),
        (
            "world_to_pixels 1M pts x 6 cams",
            "kornia transform_points+project_points",
            lambda: F.world_to_pixels(points_1m, K, cam2world),
            lambda: reference_world_to_pixels(points_1m, K, cam2world),
            lambda ours, ref: ("max |uv diff| px in view", (ours.uv - ref[0])[in_view(ours)].abs().max()),
        ),
        (
            "points_to_depth 300k pts x 6 cams 900x1600",
            "sort-based z-buffer loop",
            lambda: F.points_to_depth(points_300k, K, cam2world, HEIGHT, WIDTH),
            lambda: reference_points_to_depth(points_300k, K, cam2world, HEIGHT, WIDTH),
            lambda ours, ref: ("pixels that differ", ((ours - ref).abs() > 1e-4).sum()),
        ),
    ]
    results = []
    with torch.no_grad():
        for name, reference_name, ours_fn, reference_fn, diff_fn in cases:
            check, difference = diff_fn(ours_fn(), reference_fn())
            ours_ms = median_ms(ours_fn, repeats, warmup, device)
            reference_ms = median_ms(reference_fn, repeats, warmup, device)
            results.append(
                {
                    "op": name,
                    "geo3d_ms": round(ours_ms, 3),
                    "reference": reference_name,
                    "reference_ms": round(reference_ms, 3),
                    "speedup_vs_reference": round(reference_ms / ours_ms, 3),
                    "check": check,
                    "difference": float(difference),
                }
            )
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per op (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", default=None, help="write the results as JSON here (atomically)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = run(args.repeats, args.warmup, device)
    report = {
        "machine": camera_machine_info(device),
        "config": {
            "repeats": args.repeats,
            "warmup": args.warmup,
            "dtype": "float32",
            "height": HEIGHT,
            "width": WIDTH,
            "cameras": NUM_CAMERAS,
        },
        "results": results,
    }
    header = f"{'op':<44} {'geo3d ms':>10} {'ref ms':>10} {'speedup':>8}  reference; check vs reference"
    print(header)
    print("-" * len(header))
    for row in results:
        check = f"{row['check']} = {row['difference']:.3g}"
        print(
            f"{row['op']:<44} {row['geo3d_ms']:>10.1f} {row['reference_ms']:>10.1f} "
            f"{row['speedup_vs_reference']:>7.2f}x  {row['reference']}; {check}"
        )
    info = report["machine"]
    print(
        f"\n{info['platform']}, {info['cpus']} CPUs, torch {info['torch']} "
        f"({info['torch_threads']} threads), device {info['device']}"
    )
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
