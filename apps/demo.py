"""``geo3d demo``: the main job, end to end, on the built-in synthetic capture.

Today's path (it grows as the occupancy, NeRF and splatting pieces land):

1. build a procedural street scene from a seed and render it with a six-camera surround rig and a
   32-beam LiDAR (RGB, depth, semantic and instance ground truth, semantic occupancy);
2. write the capture in geo3d's format (atomically) and read it back with format detection;
3. summarise it as ``geo3d info`` does (LiDAR points inside each camera image);
4. check the sensors against each other: LiDAR points z-buffered into every camera vs the rendered
   depth;
5. fuse all camera depth maps into one labelled, coloured world point cloud on a voxel grid and
   compare it with the LiDAR (distance and label agreement), then export it as PLY.

Outputs (under ``--out``): ``capture/`` (geo3d capture), ``fused_rgb.ply``, ``fused_semantic.ply``,
``summary.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Config:
    """Render the built-in synthetic capture, write and re-read it, check the sensors against each
    other, fuse the depth maps into a labelled point cloud and export it."""

    out: Path = Path("out/demo")
    """Output folder (replaced if it exists)."""
    seed: int = 0
    """Scene seed: the same seed gives the same scene, images and points."""
    frames: int = 2
    """Frames of the drive (0.5 s apart, the ego at 6 m/s)."""
    width: int = 400
    """Camera image width in pixels."""
    height: int = 225
    """Camera image height in pixels."""
    voxel_size_m: float = 0.2
    """Voxel edge of the fused point cloud, metres."""
    max_range_m: float = 40.0
    """Camera depths beyond this are not fused, metres."""


def _step(index: int, total: int, text: str) -> float:
    print(f"[{index}/{total}] {text}", flush=True)
    return time.perf_counter()


def voxel_fuse(points, colors, labels, voxel_size_m: float):
    """Average points and colours per voxel and take the most frequent label.

    Args:
        points: ``[N, 3]`` float64 world points (metres); colors: ``[N, 3]`` uint8; labels: ``[N]`` int.

    Returns:
        ``(points [M, 3], colors [M, 3] uint8, labels [M], counts [M])``, one row per occupied voxel.
    """
    import numpy as np

    keys = np.floor(points / voxel_size_m).astype(np.int64)
    _, voxel, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    voxel = voxel.reshape(-1)
    n_vox = counts.shape[0]
    mean_points = np.stack([np.bincount(voxel, points[:, i], n_vox) for i in range(3)], 1) / counts[:, None]
    mean_colors = np.stack([np.bincount(voxel, colors[:, i].astype(np.float64), n_vox) for i in range(3)], 1)
    mean_colors = np.clip(np.round(mean_colors / counts[:, None]), 0, 255).astype(np.uint8)
    n_labels = int(labels.max()) + 1
    votes = np.bincount(voxel * n_labels + labels, minlength=n_vox * n_labels).reshape(n_vox, n_labels)
    return mean_points, mean_colors, votes.argmax(1), counts


def _export_ply(path: Path, points, colors) -> None:
    import trimesh

    from geo3d.utils import atomic_write_bytes

    cloud = trimesh.PointCloud(vertices=points, colors=colors)
    atomic_write_bytes(path, cloud.export(file_type="ply"))


def _sensor_agreement(capture) -> dict[str, Any]:
    """LiDAR points z-buffered into each camera vs the camera's own depth map."""
    import numpy as np
    import torch

    from geo3d.cameras import PinholeCameras

    diffs = []
    for frame in capture.frames:
        if not frame.lidar:
            continue
        points = torch.as_tensor(np.concatenate([s.points_world() for s in frame.lidar.values()]))
        cams = PinholeCameras.from_camera_frames(list(frame.cameras.values()), dtype=torch.float64)
        lidar_depth = cams.points_to_depth(points).numpy()
        camera_depth = np.stack([c.load_depth() for c in frame.cameras.values()])
        both = (lidar_depth > 0) & (camera_depth > 0)
        diffs.append(np.abs(lidar_depth[both] - camera_depth[both]) / camera_depth[both])
    rel = np.concatenate(diffs) if diffs else np.zeros(0)
    if rel.size == 0:
        return {"pixels_compared": 0}
    # A LiDAR point lands on the nearest pixel centre but is anywhere inside that pixel: on ground
    # seen at a grazing angle the depth changes by metres across one pixel, so compare relatively.
    return {
        "pixels_compared": int(rel.size),
        "median_rel_diff": float(np.median(rel)),
        "within_1pct": float(np.mean(rel < 0.01)),
    }


def _fuse(capture, voxel_size_m: float, max_range_m: float):
    import numpy as np
    import torch
    from tqdm import tqdm

    from geo3d.cameras import PinholeCameras, valid_depth_points

    all_points, all_colors, all_labels = [], [], []
    for frame in tqdm(capture.frames, desc="fusing depth maps", unit="frame", leave=False):
        cams_list = list(frame.cameras.values())
        cams = PinholeCameras.from_camera_frames(cams_list, dtype=torch.float64)
        depth = torch.as_tensor(np.stack([c.load_depth() for c in cams_list]).astype(np.float64))
        depth[depth > max_range_m] = 0.0
        gathered = valid_depth_points(depth, cams.K, cams.cam2world)
        cam_idx, cols, rows = (t.numpy() for t in (gathered.camera_index, *gathered.pixels.unbind(-1)))
        images = np.stack([c.load_image_uint8()[..., :3] for c in cams_list])
        labels = np.stack([c.load_semantic() for c in cams_list])
        all_points.append(gathered.points_world.numpy())
        all_colors.append(images[cam_idx, rows, cols])
        all_labels.append(labels[cam_idx, rows, cols])
    return voxel_fuse(np.concatenate(all_points), np.concatenate(all_colors), np.concatenate(all_labels), voxel_size_m)


def _lidar_vs_fused(capture, fused_points, fused_labels, max_range_m: float) -> dict[str, Any]:
    import numpy as np
    from scipy.spatial import cKDTree

    points, labels = [], []
    for frame in capture.frames:
        for sweep in frame.lidar.values():
            world = sweep.points_world()
            near = np.linalg.norm(sweep.load_points()[:, :3], axis=1) < max_range_m
            points.append(world[near])
            labels.append(sweep.load_labels("semantic")[near])
    if not points:
        return {}
    points, labels = np.concatenate(points), np.concatenate(labels)
    dist, nearest = cKDTree(fused_points).query(points, workers=-1)
    return {
        "lidar_points": int(len(points)),
        "median_distance_to_fused_m": float(np.median(dist)),
        "p90_distance_to_fused_m": float(np.percentile(dist, 90)),
        "label_agreement": float(np.mean(fused_labels[nearest] == labels)),
    }


def run(config: Config) -> int:
    import numpy as np

    from geo3d.io import read_capture, write_capture
    from geo3d.synthetic import CLASS_NAMES, colorize_labels
    from geo3d.synthetic.generate import SynthConfig, generate_capture
    from geo3d.utils import atomic_write_text
    from geo3d_apps.info import format_summary, summarize_capture

    if config.frames < 1 or config.width < 8 or config.height < 8 or config.voxel_size_m <= 0:
        raise ValueError("frames must be >= 1, width/height >= 8 and voxel_size_m > 0")
    total, timings = 5, {}
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)

    t = _step(1, total, f"rendering the built-in street scene (seed {config.seed}): {config.frames} frame(s), "
                        f"6 cameras at {config.width}x{config.height}, 32-beam LiDAR")  # fmt: skip
    capture = generate_capture(SynthConfig(seed=config.seed, frames=config.frames, width=config.width,
                                           height=config.height))
    timings["render_s"] = time.perf_counter() - t

    t = _step(2, total, f"writing the capture to {out / 'capture'} and reading it back")
    write_capture(capture, out / "capture", overwrite=True)
    capture = read_capture(out / "capture")
    timings["write_read_s"] = time.perf_counter() - t

    t = _step(3, total, "summary (geo3d info)")
    summary = summarize_capture(capture)
    print(format_summary(summary))
    timings["info_s"] = time.perf_counter() - t

    t = _step(4, total, "LiDAR vs camera depth (LiDAR z-buffered into every camera)")
    agreement = _sensor_agreement(capture)
    print(f"    {agreement.get('pixels_compared', 0):,} pixels; median |difference| "
          f"{agreement.get('median_rel_diff', float('nan')) * 100:.2f}% of depth; "
          f"{agreement.get('within_1pct', float('nan')) * 100:.1f}% within 1%")  # fmt: skip
    timings["agreement_s"] = time.perf_counter() - t

    t = _step(5, total, f"fusing depth maps on a {config.voxel_size_m} m voxel grid and exporting PLY")
    points, colors, labels, counts = _fuse(capture, config.voxel_size_m, config.max_range_m)
    fused = _lidar_vs_fused(capture, points, labels, config.max_range_m)
    _export_ply(out / "fused_rgb.ply", points, colors)
    _export_ply(out / "fused_semantic.ply", points, colorize_labels(labels))
    timings["fuse_s"] = time.perf_counter() - t
    classes = {CLASS_NAMES[c]: int(n) for c, n in zip(*np.unique(labels, return_counts=True))}
    print(f"    {len(points):,} voxels from {int(counts.sum()):,} depth pixels; LiDAR to fused cloud: median "
          f"{fused.get('median_distance_to_fused_m', float('nan')) * 100:.1f} cm, labels agree "
          f"{fused.get('label_agreement', float('nan')) * 100:.1f}%")  # fmt: skip
    print("    voxels per class: " + ", ".join(f"{k} {v:,}" for k, v in sorted(classes.items(), key=lambda kv: -kv[1])))

    result = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(config).items()},
        "capture": {"frames": summary["frames"], "cameras": list(summary["cameras"]),
                    "lidar_points_per_sweep": summary["lidar"]["LIDAR_TOP"]["points_per_sweep"]},
        "sensor_agreement": agreement,
        "fused": {"voxels": int(len(points)), "voxels_per_class": classes, **fused},
        "timings_s": timings,
    }  # fmt: skip
    atomic_write_text(out / "summary.json", json.dumps(result, indent=2))
    print(f"done in {sum(timings.values()):.1f} s: {out / 'capture'}, {out / 'fused_rgb.ply'}, "
          f"{out / 'fused_semantic.ply'}, {out / 'summary.json'}")  # fmt: skip
    return 0
