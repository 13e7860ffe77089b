"""``geo3d synth``: generate a synthetic driving capture (or a shape-classification set).

``geo3d synth --out DIR --seed S --frames N`` writes a geo3d capture folder: six cameras (RGB,
depth, semantic, instance), a 32-beam LiDAR with per-point labels, and Occ3D-like semantic
occupancy with camera / LiDAR visibility masks per frame. Frames are written as they are made to
``DIR.partial``; rerunning the same command after an interruption resumes there. ``--kind shapes``
writes ``train.npz`` and ``test.npz`` shape sets sampled from the same object models.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass
class Config:
    """Generate a synthetic multi-camera + LiDAR capture with full ground truth, or a shape set."""

    out: Path = Path("out/synth")
    """Output folder (a capture folder, or with --kind shapes a folder for train.npz / test.npz)."""
    kind: Literal["capture", "shapes"] = "capture"
    """What to generate: a driving capture, or a point-cloud shape-classification set."""
    seed: int = 0
    """Seed of the scene (or of the shape set): the same seed gives identical files."""
    frames: int = 20
    """Frames of the drive."""
    frame_interval_s: float = 0.5
    """Time between frames, seconds."""
    width: int = 400
    """Camera image width, pixels."""
    height: int = 225
    """Camera image height, pixels."""
    layout: Literal["random", "straight", "curve", "junction"] = "random"
    """Road layout just ahead of the start (later segments are random)."""
    ego_speed_mps: float = 6.0
    """Ego speed, metres per second."""
    parked_density: float = 0.6
    """Fraction of parking slots holding a vehicle, 0..1."""
    traffic_density: float = 0.5
    """Moving traffic, 0 (none) .. 1 (dense)."""
    pedestrian_density: float = 0.4
    """Walking pedestrians per 10 m of sidewalk, 0..1."""
    lidar_beams: int = 32
    """LiDAR beams (rings)."""
    voxel_size_m: float = 0.4
    """Occupancy voxel size, metres (0.4 gives Occ3D's 200 x 200 x 16)."""
    occupancy: bool = True
    """Compute semantic occupancy ground truth and visibility masks."""
    compress: bool = True
    """Store depth, label and LiDAR arrays compressed (.npz)."""
    overwrite: bool = False
    """Replace an existing output (and discard a partial run made with other options)."""
    preview: Path | None = None
    """Also save a PNG of frame 0: six cameras and the occupancy bird's-eye view."""
    per_class: int = 50
    """--kind shapes: shapes per class in the train split (the test split gets a fifth, at least 5)."""
    num_points: int = 1024
    """--kind shapes: points per shape."""


def synth_config(config: Config):
    """The library's :class:`geo3d.synthetic.generate.SynthConfig` for the command's options."""
    from geo3d.synthetic.generate import SynthConfig

    return SynthConfig(seed=config.seed, frames=config.frames, frame_interval_s=config.frame_interval_s,
                       width=config.width, height=config.height, layout=config.layout,
                       ego_speed_mps=config.ego_speed_mps, parked_density=config.parked_density,
                       traffic_density=config.traffic_density, pedestrian_density=config.pedestrian_density,
                       lidar_beams=config.lidar_beams, occupancy=config.occupancy, voxel_size_m=config.voxel_size_m)


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _write_preview(frame, path: Path) -> None:
    from geo3d.io.images import encode_png
    from geo3d.synthetic.preview import frame_preview
    from geo3d.utils.atomic import atomic_write_bytes

    atomic_write_bytes(path, encode_png(frame_preview(frame)))
    print(f"preview: {path}")


def _run_shapes(config: Config) -> int:
    from tqdm import tqdm

    from geo3d.synthetic.shapes import SHAPE_CLASSES, make_shape_set

    if config.out.exists() and not config.overwrite and any(config.out.iterdir()):
        raise FileExistsError(f"{config.out} already exists and is not empty (pass --overwrite to replace it)")
    start = time.perf_counter()
    for split, count in (("train", config.per_class), ("test", max(5, config.per_class // 5))):
        shapes = make_shape_set(split, count, config.num_points, config.seed,
                                progress=lambda todo, split=split: tqdm(todo, desc=f"shapes {split}", unit="shape"))
        shapes.save(config.out / f"{split}.npz")
        print(f"{split}: {len(shapes)} shapes x {config.num_points} points, {len(SHAPE_CLASSES)} classes "
              f"-> {config.out / f'{split}.npz'}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def run(config: Config) -> int:
    if config.kind == "shapes":
        return _run_shapes(config)
    from tqdm import tqdm

    from geo3d.io import read_capture
    from geo3d.synthetic.generate import write_synthetic_capture

    synth = synth_config(config)
    start = time.perf_counter()
    out = write_synthetic_capture(synth, config.out, overwrite=config.overwrite, compress=config.compress,
                                  progress=lambda todo: tqdm(list(todo), desc="frames", unit="frame"))
    elapsed = time.perf_counter() - start
    capture = read_capture(out)
    first = capture.frames[0]
    summary = {"out": str(out), "frames": len(capture.frames), "seconds": round(elapsed, 2),
               "bytes": _folder_size(out), "cameras": capture.camera_names, "lidar": capture.lidar_names,
               "route": [seg["kind"] for seg in capture.metadata["scene"]["route"]]}
    if first.occupancy is not None:
        semantics = first.occupancy.load_semantics()
        summary["occupancy_shape"] = list(semantics.shape)
        summary["occupied_voxels_frame0"] = int((semantics > 0).sum())
    print(json.dumps(summary, indent=1))
    if config.preview is not None:
        _write_preview(first, config.preview)
    return 0
