"""``geo3d info PATH``: detect a capture's format and summarise it (for people, or as JSON)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tyro

FormatName = Literal["geo3d", "nuscenes", "nuscenes-info", "colmap", "blender", "7scenes"]


@dataclass
class Config:
    """Summarise a capture: format, frames, cameras with resolution and intrinsics, LiDAR sweeps,
    and per camera how many LiDAR points project inside the image."""

    path: tyro.conf.Positional[Path]
    """Capture to read: a file or folder in any format geo3d reads."""
    format: FormatName | None = None
    """Force a reader instead of detecting the format."""
    json: bool = False
    """Print the summary as JSON on stdout (for programs)."""
    max_frames: int = 100
    """Frames used to count LiDAR points inside each image (the first N with LiDAR)."""


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "mean": sum(values) / len(values), "max": max(values)}


def summarize_capture(capture, max_frames: int = 100) -> dict[str, Any]:
    """A JSON-friendly summary of a :class:`geo3d.structures.Capture`."""
    import numpy as np

    cameras: dict[str, dict[str, Any]] = {}
    for cam in capture.camera_frames():
        entry = cameras.setdefault(
            cam.camera,
            {"images": 0, "sizes": set(), "K_first": cam.K, "K_varies": False, "distortion": False,
             "depth": False, "semantic": False, "instance": False},
        )  # fmt: skip
        entry["images"] += 1
        entry["sizes"].add((cam.width, cam.height))
        entry["K_varies"] |= not np.array_equal(cam.K, entry["K_first"])
        entry["distortion"] |= cam.distortion is not None
        for key in ("depth", "semantic", "instance"):
            entry[key] |= getattr(cam, key) is not None
    lidar: dict[str, dict[str, Any]] = {}
    in_image: dict[str, list[float]] = {name: [] for name in cameras}
    frames_counted = 0
    for frame in capture.frames:
        counting = bool(frame.lidar) and bool(frame.cameras) and frames_counted < max_frames
        points_world = []
        for name, sweep in frame.lidar.items():
            points = sweep.load_points()
            entry = lidar.setdefault(name, {"sweeps": 0, "points": [], "columns": list(sweep.columns)})
            entry["sweeps"] += 1
            entry["points"].append(int(points.shape[0]))
            if counting:
                points_world.append(sweep.points_world())
        if counting:
            frames_counted += 1
            _count_in_images(frame, np.concatenate(points_world), in_image)
    timestamps = [f.timestamp for f in capture.frames if f.timestamp is not None]
    timestamps += [c.timestamp for c in capture.camera_frames() if c.timestamp is not None]
    summary = {
        "format": capture.source_format,
        "source": capture.source,
        "world_frame": capture.world_frame,
        "frames": len(capture.frames),
        "time_span_s": [min(timestamps), max(timestamps)] if timestamps else None,
        "cameras": {},
        "lidar": {},
        "points3d": None if capture.points3d is None else int(len(capture.points3d.xyz)),
        "occupancy": _occupancy_summary(capture),
        "metadata_keys": sorted(capture.metadata),
    }
    for name, entry in cameras.items():
        K = entry["K_first"]
        summary["cameras"][name] = {
            "images": entry["images"],
            "resolutions": sorted(f"{w}x{h}" for w, h in entry["sizes"]),
            "intrinsics": {"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2]},
            "intrinsics_vary": entry["K_varies"],
            "distortion": entry["distortion"],
            "has": [k for k in ("depth", "semantic", "instance") if entry[k]],
            "lidar_points_in_image": _stats(in_image[name]),
        }
    for name, entry in lidar.items():
        summary["lidar"][name] = {
            "sweeps": entry["sweeps"],
            "points_per_sweep": _stats(entry["points"]),
            "columns": entry["columns"],
        }
    summary["lidar_frames_counted"] = frames_counted
    return summary


def _occupancy_summary(capture) -> dict[str, Any] | None:
    """Occupancy ground truth: how many frames have it, and the first grid's size and coverage."""
    frames = [f for f in capture.frames if f.occupancy is not None]
    if not frames:
        return None
    occ = frames[0].occupancy
    masks = {which: occ.load_mask(which) for which in ("camera", "lidar")}
    return {
        "frames": len(frames),
        "shape": list(occ.shape),
        "voxel_size_m": occ.voxel_size.tolist(),
        "grid_frame": occ.frame,
        "first_frame_occupied_voxels": int(occ.occupied().sum()),
        "first_frame_mask_coverage": {k: None if m is None else float(m.mean()) for k, m in masks.items()},
    }


def _count_in_images(frame, points_world, in_image: dict[str, list[float]]) -> None:
    """Append, per camera of ``frame``, how many world points fall inside its image (z > 0)."""
    import numpy as np
    import torch

    from geo3d.cameras import frustum_mask

    points = torch.as_tensor(points_world, dtype=torch.float64)
    for name, cam in frame.cameras.items():
        mask = frustum_mask(
            points,
            torch.as_tensor(cam.K[None], dtype=torch.float64),
            torch.as_tensor(cam.cam2world[None], dtype=torch.float64),
            cam.height,
            cam.width,
        )
        in_image[name].append(float(np.count_nonzero(mask.numpy())))


def format_summary(summary: dict[str, Any], fmt_description: str = "") -> str:
    """The summary as text for people."""
    lines = [
        f"source   {summary['source']}",
        f"format   {summary['format']}" + (f" ({fmt_description})" if fmt_description else "")
        + (f", originally {summary['source_format']}" if summary.get("source_format", summary["format"])
           not in (summary["format"], "memory") else ""),
        f"world    {summary['world_frame']}",
    ]
    span = summary["time_span_s"]
    span_text = f"  (time {span[0]:.3f} .. {span[1]:.3f} s)" if span else ""
    lines.append(f"frames   {summary['frames']}{span_text}")
    lines.append(f"cameras  {len(summary['cameras'])}")
    if summary["cameras"]:
        counted = summary["lidar_frames_counted"]
        header = f"  {'name':<18}{'images':>7}  {'size':<11}{'fx':>9}{'fy':>9}{'cx':>9}{'cy':>9}  {'extras':<27}"
        if counted:
            header += f"LiDAR points in image (mean of {counted} frame{'s' if counted > 1 else ''})"
        lines.append(header)
        for name, cam in summary["cameras"].items():
            k = cam["intrinsics"]
            extras = list(cam["has"]) + (["distortion"] if cam["distortion"] else [])
            extras += ["K varies"] if cam["intrinsics_vary"] else []
            row = (
                f"  {name:<18}{cam['images']:>7}  {','.join(cam['resolutions']):<11}"
                f"{k['fx']:>9.2f}{k['fy']:>9.2f}{k['cx']:>9.2f}{k['cy']:>9.2f}  {','.join(extras) or '-':<27}"
            )
            if cam["lidar_points_in_image"]:
                row += f"{cam['lidar_points_in_image']['mean']:,.0f}"
            lines.append(row)
    lines.append(f"lidar    {len(summary['lidar'])} sensor(s)")
    for name, sweep in summary["lidar"].items():
        pts = sweep["points_per_sweep"]
        lines.append(
            f"  {name}: {sweep['sweeps']} sweep(s), {pts['mean']:,.0f} points per sweep "
            f"(min {pts['min']:,}, max {pts['max']:,}), columns {', '.join(sweep['columns'])}"
        )
    occ = summary.get("occupancy")
    if occ:
        sizes = occ["voxel_size_m"]
        size = f"{sizes[0]:g}" if len(set(sizes)) == 1 else "x".join(f"{v:g}" for v in sizes)
        cover = [f"{k} mask {v:.1%}" for k, v in occ["first_frame_mask_coverage"].items() if v is not None]
        lines.append(
            f"occupancy {occ['frames']} frame(s), grid {'x'.join(map(str, occ['shape']))} of {size} m "
            f"({occ['grid_frame']} frame); first frame: {occ['first_frame_occupied_voxels']:,} occupied voxels"
            + "".join(f", {c}" for c in cover)
        )
    if summary["points3d"] is not None:
        lines.append(f"points3d {summary['points3d']:,} sparse points")
    if summary["metadata_keys"]:
        lines.append(f"metadata {', '.join(summary['metadata_keys'])}")
    return "\n".join(lines)


def run(config: Config) -> int:
    from geo3d.io import detect_format, get_format

    fmt = get_format(config.format) if config.format else detect_format(config.path)
    # summarise every split of a NeRF scene, not only the training views
    capture = fmt.reader()(config.path, split="all") if fmt.name == "blender" else fmt.reader()(config.path)
    summary = summarize_capture(capture, max_frames=config.max_frames)
    summary["source_format"], summary["format"] = summary["format"], fmt.name
    if config.json:
        json.dump(summary, sys.stdout, indent=2, default=float)
        sys.stdout.write("\n")
    else:
        print(format_summary(summary, fmt.description))
    return 0
