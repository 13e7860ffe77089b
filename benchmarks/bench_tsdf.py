"""Benchmark of geo3d TSDF fusion (:class:`geo3d.voxels.tsdf.TSDFVolume`) against Open3D's
``ScalableTSDFVolume``, timed in the same process on the same decoded frames.

Both fuse the RGB-D frames of ``../shared/data/rgbd_7scenes`` (60 frames, 640x480) with the same
settings (voxel size, ``sdf_trunc``, ``depth_max`` = Open3D's ``depth_trunc``, RGB colour) and then
extract a coloured triangle mesh. Reported per library: median seconds over ``--repeats`` runs (after
one warm-up) of integrate-all-frames and of mesh extraction, their sum, the ratio geo3d / Open3D
(> 1: geo3d slower), mesh sizes, geo3d's block and observed-voxel counts and voxel memory, and the
agreement of the two meshes (half the symmetric Chamfer-L2 of 100k area-weighted surface samples
each, and the median / mean distance from geo3d's samples to Open3D's mesh). Decoding the images is
not timed. Usage::

    python benchmarks/bench_tsdf.py --repeats 3 --out benchmarks/results/tsdf.json
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from benchutil import machine_info, median_seconds, write_report

from geo3d.voxels.tsdf import TSDFVolume

SHARED = Path(os.environ.get("GEO3D_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def load_frames(stride: int) -> list[dict]:
    from geo3d.io.rgbd import read_7scenes

    capture = read_7scenes(SHARED / "rgbd_7scenes")
    return [{"depth": f.load_depth(), "color": np.ascontiguousarray(f.load_image_uint8()), "K": f.K,
             "cam2world": f.cam2world, "size": (f.width, f.height)} for f in list(capture.camera_frames())[::stride]]


def fuse_geo3d(frames, voxel, trunc, depth_max, timings):
    start = time.perf_counter()
    volume = TSDFVolume(voxel, trunc, color=True)
    for f in frames:
        volume.integrate(f["depth"], f["K"], f["cam2world"], f["color"], depth_max=depth_max)
    middle = time.perf_counter()
    mesh = volume.extract_mesh()
    timings.append((middle - start, time.perf_counter() - middle))
    return volume, mesh


def fuse_open3d(frames, voxel, trunc, depth_max, timings):
    import open3d as o3d

    start = time.perf_counter()
    integration = o3d.pipelines.integration
    volume = integration.ScalableTSDFVolume(voxel_length=voxel, sdf_trunc=trunc,
                                            color_type=integration.TSDFVolumeColorType.RGB8)
    for f in frames:
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(f["color"]), o3d.geometry.Image(f["depth"].astype(np.float32)), depth_scale=1.0,
            depth_trunc=depth_max, convert_rgb_to_intensity=False)
        K = f["K"]
        intrinsic = o3d.camera.PinholeCameraIntrinsic(*f["size"], K[0, 0], K[1, 1], K[0, 2], K[1, 2])
        volume.integrate(rgbd, intrinsic, np.linalg.inv(f["cam2world"]))
    middle = time.perf_counter()
    mesh = volume.extract_triangle_mesh()
    timings.append((middle - start, time.perf_counter() - middle))
    return volume, mesh


def agreement(ours, ref_mesh, samples: int) -> dict:
    import open3d as o3d

    from geo3d.points.chamfer import chamfer_distance
    from geo3d.structures.shapes import sample_surface

    ref_v, ref_f = np.asarray(ref_mesh.vertices), np.asarray(ref_mesh.triangles)
    a, _ = sample_surface(ours.vertices, ours.faces, samples, 0)
    b, _ = sample_surface(ref_v, ref_f, samples, 1)
    chamfer = 0.5 * float(chamfer_distance(torch.as_tensor(a), torch.as_tensor(b), norm="l2"))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(ref_v.astype(np.float32)), o3d.core.Tensor(ref_f.astype(np.uint32)))
    to_ref = scene.compute_distance(o3d.core.Tensor(a.astype(np.float32))).numpy()
    return {"chamfer_l2_symmetric_mean_m": chamfer, "geo3d_to_open3d_median_m": float(np.median(to_ref)),
            "geo3d_to_open3d_mean_m": float(np.mean(to_ref)), "samples": samples}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per library (median reported)")
    parser.add_argument("--voxel", type=float, default=0.01, help="voxel size, metres")
    parser.add_argument("--trunc", type=float, default=0.04, help="sdf_trunc, metres")
    parser.add_argument("--depth-max", type=float, default=4.0, help="depth truncation, metres")
    parser.add_argument("--stride", type=int, default=1, help="use every n-th of the 60 frames")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    frames = load_frames(args.stride)
    settings = (args.voxel, args.trunc, args.depth_max)
    results = {}
    for name, fuse in (("geo3d", fuse_geo3d), ("open3d", fuse_open3d)):
        timings: list[tuple[float, float]] = []
        outputs = []
        total = median_seconds(lambda fuse=fuse, timings=timings, outputs=outputs: outputs.append(
            fuse(frames, *settings, timings)), args.repeats)
        volume, mesh = outputs[-1]
        integrate = float(np.median([t[0] for t in timings[1:]]))
        extract = float(np.median([t[1] for t in timings[1:]]))
        results[name] = {"total_s": total, "integrate_s": integrate, "extract_s": extract,
                         "integrate_ms_per_frame": 1000 * integrate / len(frames)}
        if name == "geo3d":
            results[name].update(vertices=mesh.num_vertices, triangles=mesh.num_faces, blocks=volume.num_blocks,
                                 block_resolution=volume.block_resolution,
                                 observed_voxels=int((volume.weight > 0).sum()),
                                 voxel_memory_mb=volume.memory_bytes() / 2**20)
            ours = mesh
        else:
            results[name].update(vertices=len(mesh.vertices), triangles=len(mesh.triangles))
            ref_mesh = mesh
    ratios = {k: results["geo3d"][k] / results["open3d"][k] for k in ("total_s", "integrate_s", "extract_s")}
    report = {"benchmark": "tsdf", "repeats": args.repeats, "machine": machine_info(), "frames": len(frames),
              "settings": {"voxel_m": args.voxel, "sdf_trunc_m": args.trunc, "depth_max_m": args.depth_max,
                           "color": "RGB"},
              "results": results, "ratio_geo3d_over_open3d": ratios,
              "agreement": agreement(ours, ref_mesh, 100_000)}
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
