"""Benchmark of the synthetic-data generator (``geo3d synth``): the cost of one frame, by stage.

One frame at the defaults: six 400x225 cameras, a 32-beam LiDAR, 200 x 200 x 16 semantic occupancy
(0.4 m) with camera and LiDAR visibility masks, written compressed. The budget (issue 3) is 2 s per
frame on a 2-core CPU. Stages are timed on the same frames (medians over ``--repeats`` frames of one
drive, after one warm-up frame).

Reference, timed in the same process: occupancy by point-in-mesh tests of the voxel centres (Open3D
``RaycastingScene.compute_occupancy`` on the grid's 640k centres), the obvious way to voxelise
closed meshes. It is reported for speed and for what it misses: thin objects and ground slabs
thinner than a voxel whose centres they do not contain (``voxels_missed_by_reference``).

Usage::

    python benchmarks/bench_synth.py --repeats 5 --out benchmarks/results/synth.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchutil import machine_info, write_report

from geo3d.io.capture_writer import CaptureWriter
from geo3d.synthetic import LIDAR_COLUMNS, SceneRaycaster, render_frame, simulate_lidar
from geo3d.synthetic.generate import SynthConfig, make_scene
from geo3d.synthetic.occupancy import (
    camera_visibility_mask,
    lidar_range_image,
    lidar_visibility_mask,
    semantic_occupancy,
)
from geo3d.synthetic.raycast import CULL_RADIUS_M
from geo3d.utils.optional import require


def _reference_occupancy(meshes, ego2world, spec) -> np.ndarray:
    """Voxel-centre point-in-mesh occupancy, one Open3D scene per mesh (parity per closed mesh)."""
    o3d = require("open3d")
    centres = spec.voxel_centers().reshape(-1, 3)
    world = centres @ ego2world[:3, :3].T + ego2world[:3, 3]
    lo, hi = world.min(axis=0), world.max(axis=0)
    occupied = np.zeros(len(world), dtype=bool)
    for mesh in meshes:
        mlo, mhi = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
        if np.any(mhi < lo) or np.any(mlo > hi):
            continue
        near = np.flatnonzero(np.all((world >= mlo) & (world <= mhi), axis=1))
        if not len(near):
            continue
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                            o3d.core.Tensor(mesh.faces.astype(np.uint32)))
        inside = scene.compute_occupancy(o3d.core.Tensor(world[near].astype(np.float32))).numpy() > 0.5
        occupied[near[inside]] = True
    return occupied.reshape(spec.shape)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed frames (median reported)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = parser.parse_args(argv)
    config = SynthConfig(frames=args.repeats + 1)
    start = time.perf_counter()
    scene = make_scene(config)
    scene_s = time.perf_counter() - start
    rig, lidar, spec = config.rig(), config.lidar(), config.grid_spec()
    stages: dict[str, list[float]] = {k: [] for k in ("raycaster", "sensors", "occupancy", "mask_camera", "mask_lidar",
                                                      "write", "total", "of_which_lidar", "reference_occupancy")}
    missed = []
    with tempfile.TemporaryDirectory() as tmp:
        writer = CaptureWriter(Path(tmp) / "capture", compress=True)
        for index in range(config.frames):
            times = {}
            time_s = index * config.frame_interval_s
            ego2world = scene.ego2world(time_s)
            t = time.perf_counter()
            caster = SceneRaycaster(scene, time_s, center=ego2world[:3, 3], radius_m=CULL_RADIUS_M)
            times["raycaster"] = time.perf_counter() - t
            t = time.perf_counter()
            frame = render_frame(caster, rig, ego2world, index, time_s, lidar)
            times["sensors"] = time.perf_counter() - t
            t = time.perf_counter()
            simulate_lidar(caster, ego2world @ lidar.lidar2ego, lidar)  # its share of "sensors", again
            lidar_share = time.perf_counter() - t
            t = time.perf_counter()
            labels = semantic_occupancy(caster.meshes, ego2world, spec)
            times["occupancy"] = time.perf_counter() - t
            cams = [frame.cameras[n] for n in rig.names]
            t = time.perf_counter()
            camera_visibility_mask(spec, ego2world, np.stack([c.K for c in cams]), np.stack([c.cam2world for c in cams]),
                                   np.stack([c.load_depth() for c in cams]))
            times["mask_camera"] = time.perf_counter() - t
            t = time.perf_counter()
            points = frame.lidar["LIDAR_TOP"].load_points()
            ranges = lidar_range_image(points[:, :3], points[:, LIDAR_COLUMNS.index("ring")].astype(np.int64), lidar)
            lidar_visibility_mask(spec, ego2world, frame.lidar["LIDAR_TOP"].sensor2world, lidar, ranges)
            times["mask_lidar"] = time.perf_counter() - t
            t = time.perf_counter()
            writer.write_frame(frame)
            times["write"] = time.perf_counter() - t
            times["total"] = sum(times.values())
            times["of_which_lidar"] = lidar_share
            t = time.perf_counter()
            reference = _reference_occupancy(caster.meshes, ego2world, spec)
            times["reference_occupancy"] = time.perf_counter() - t
            ours = labels.semantics > 0
            missed.append(int((ours & ~reference).sum()))
            if index:  # frame 0 warms up caches and imports
                for key, value in times.items():
                    stages[key].append(value)
        writer.abort()
    medians = {k: statistics.median(v) for k, v in stages.items()}
    result = {
        "benchmark": "synth",
        "machine": machine_info(),
        "config": config.to_dict(),
        "repeats": args.repeats,
        "scene_build_s": scene_s,
        "median_s": medians,
        "frame_budget_s": 2.0,
        "frame_over_budget": medians["total"] / 2.0,
        "occupancy_speedup_vs_reference": medians["reference_occupancy"] / medians["occupancy"],
        "voxels_missed_by_reference": int(statistics.median(missed)),
    }
    write_report(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
