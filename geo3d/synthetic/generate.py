"""Synthetic datasets end to end: a seeded street, a drive through it, every sensor and all the
ground truth of each frame, written frame by frame to geo3d's capture format (resumable).

:class:`SynthConfig` says what to make; :func:`synthesize_frame` makes one :class:`Frame` (six
cameras with RGB, depth, semantic and instance maps, a LiDAR sweep with per-point labels, and
Occ3D-like semantic occupancy with camera / LiDAR visibility masks in the ego frame);
:func:`generate_capture` makes a capture in memory and :func:`write_synthetic_capture` writes one to
disk, resuming an interrupted run. The same config and seed give the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from geo3d.structures.capture import ArraySource, Capture, Frame
from geo3d.structures.occupancy import SemanticOccupancy
from geo3d.synthetic.classes import CLASS_NAMES
from geo3d.synthetic.occupancy import (
    OccupancyGridSpec,
    camera_visibility_mask,
    lidar_range_image,
    lidar_visibility_mask,
    semantic_occupancy,
)
from geo3d.synthetic.raycast import CULL_RADIUS_M, LIDAR_COLUMNS, SceneRaycaster, render_frame
from geo3d.synthetic.scene import SyntheticScene
from geo3d.synthetic.sensors import LidarSpec, SurroundRig, nuscenes_like_rig
from geo3d.synthetic.street import StreetConfig, build_street_scene

GENERATOR_VERSION = 1
"""Bumped whenever the generator's output for a given config changes (it keys resumed runs)."""


@dataclass(frozen=True)
class SynthConfig:
    """What :func:`generate_capture` makes.

    Attributes:
        seed: seeds the scene (layout, objects, colours, lighting, traffic).
        frames: number of frames of the drive.
        frame_interval_s: time between frames, seconds (nuScenes keyframes: 0.5 s).
        width, height: camera image size in pixels (six nuScenes-like cameras).
        layout: route layout, one of ``geo3d.synthetic.LAYOUTS``.
        ego_speed_mps: ego speed, metres per second.
        parked_density, traffic_density, pedestrian_density: see :class:`StreetConfig`.
        lidar_beams, lidar_fov_down_deg, lidar_fov_up_deg, lidar_azimuth_steps, lidar_max_range_m:
            the spinning LiDAR (defaults: an HDL-32E as on nuScenes).
        occupancy: make the semantic occupancy ground truth and visibility masks.
        voxel_size_m, occupancy_lower, occupancy_upper: the occupancy grid in the ego frame, metres
            (defaults: Occ3D-nuScenes' 200 x 200 x 16 box).
        shadows: cast sun shadows in the images.
    """

    seed: int = 0
    frames: int = 20
    frame_interval_s: float = 0.5
    width: int = 400
    height: int = 225
    layout: str = "random"
    ego_speed_mps: float = 6.0
    parked_density: float = 0.6
    traffic_density: float = 0.5
    pedestrian_density: float = 0.4
    lidar_beams: int = 32
    lidar_fov_down_deg: float = -30.67
    lidar_fov_up_deg: float = 10.67
    lidar_azimuth_steps: int = 1084
    lidar_max_range_m: float = 70.0
    occupancy: bool = True
    voxel_size_m: float = 0.4
    occupancy_lower: tuple[float, float, float] = (-40.0, -40.0, -1.0)
    occupancy_upper: tuple[float, float, float] = (40.0, 40.0, 5.4)
    shadows: bool = True
    street: StreetConfig = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        if self.width < 8 or self.height < 8:
            raise ValueError(f"image size must be at least 8 x 8 pixels, got {self.width} x {self.height}")
        if not (self.frame_interval_s > 0 and math.isfinite(self.frame_interval_s)):
            raise ValueError(f"frame_interval_s must be > 0, got {self.frame_interval_s}")
        if self.lidar_beams < 1 or self.lidar_azimuth_steps < 1 or not self.lidar_max_range_m > 0:
            raise ValueError("the LiDAR needs >= 1 beam, >= 1 azimuth step and a positive range")
        street = StreetConfig(layout=self.layout, duration_s=(self.frames - 1) * self.frame_interval_s,
                              ego_speed_mps=self.ego_speed_mps, parked_density=self.parked_density,
                              traffic_density=self.traffic_density, pedestrian_density=self.pedestrian_density)
        object.__setattr__(self, "street", street)
        self.grid_spec()  # validates the grid

    def grid_spec(self) -> OccupancyGridSpec:
        """The occupancy grid."""
        return OccupancyGridSpec(lower=tuple(map(float, self.occupancy_lower)),
                                 upper=tuple(map(float, self.occupancy_upper)), voxel_size=float(self.voxel_size_m))

    def rig(self) -> SurroundRig:
        """The six cameras."""
        return nuscenes_like_rig(self.width, self.height)

    def lidar(self) -> LidarSpec:
        """The LiDAR."""
        return LidarSpec(beams=self.lidar_beams, fov_down_deg=self.lidar_fov_down_deg, fov_up_deg=self.lidar_fov_up_deg,
                         azimuth_steps=self.lidar_azimuth_steps, max_range_m=self.lidar_max_range_m)

    def to_dict(self) -> dict:
        """JSON-serialisable fields (recorded in the capture's metadata; keys resumed runs)."""
        out = asdict(self)
        out.pop("street", None)
        out["occupancy_lower"], out["occupancy_upper"] = list(self.occupancy_lower), list(self.occupancy_upper)
        return out


def make_scene(config: SynthConfig) -> SyntheticScene:
    """The street scene of ``config`` (deterministic)."""
    return build_street_scene(config.seed, config.street)


def synthesize_frame(scene: SyntheticScene, index: int, config: SynthConfig, *, rig: SurroundRig | None = None,
                     lidar_spec: LidarSpec | None = None) -> Frame:
    """Frame ``index`` of the drive: time ``index * frame_interval_s``, ego pose from the scene.

    The frame carries the sensors of :func:`~geo3d.synthetic.raycast.render_frame` and, with
    ``config.occupancy``, a :class:`SemanticOccupancy` in the ego frame: ``semantics`` (class ids,
    0 = free), ``instances``, ``mask_camera`` and ``mask_lidar`` (voxels the cameras / the LiDAR
    observe), computed from the same posed meshes the sensors saw.
    """
    rig = rig or config.rig()
    lidar_spec = lidar_spec or config.lidar()
    time_s = index * config.frame_interval_s
    ego2world = scene.ego2world(time_s)
    caster = SceneRaycaster(scene, time_s, center=ego2world[:3, 3], radius_m=CULL_RADIUS_M)
    frame = render_frame(caster, rig, ego2world, index, time_s, lidar_spec,
                         np.random.default_rng([config.seed, index]), shadows=config.shadows)
    if config.occupancy:
        spec = config.grid_spec()
        labels = semantic_occupancy(caster.meshes, ego2world, spec)
        cameras = [frame.cameras[name] for name in rig.names]
        mask_camera = camera_visibility_mask(spec, ego2world, np.stack([c.K for c in cameras]),
                                             np.stack([c.cam2world for c in cameras]),
                                             np.stack([c.load_depth() for c in cameras]))
        sweep = frame.lidar["LIDAR_TOP"]
        points = sweep.load_points()
        ranges = lidar_range_image(points[:, :3], points[:, LIDAR_COLUMNS.index("ring")].astype(np.int64), lidar_spec)
        mask_lidar = lidar_visibility_mask(spec, ego2world, sweep.sensor2world, lidar_spec, ranges)
        frame.occupancy = SemanticOccupancy(
            semantics=ArraySource.of(labels.semantics), origin=np.asarray(spec.lower, dtype=np.float64),
            voxel_size=np.full(3, spec.voxel_size), frame="ego", mask_camera=ArraySource.of(mask_camera),
            mask_lidar=ArraySource.of(mask_lidar), instances=ArraySource.of(labels.instances))
    return frame


def capture_metadata(config: SynthConfig, scene: SyntheticScene) -> dict:
    """The metadata of a synthetic capture: generator, config, class names, scene facts, LiDAR."""
    return {"generator": "geo3d.synthetic", "generator_version": GENERATOR_VERSION, "config": config.to_dict(),
            "seed": int(config.seed), "class_names": list(CLASS_NAMES), "scene": dict(scene.metadata),
            "lidar": config.lidar().to_dict(), "frame_interval_s": config.frame_interval_s,
            "occupancy": config.grid_spec().to_dict() if config.occupancy else None}


WORLD_FRAME = "synthetic world (z up, metres)"


def generate_capture(config: SynthConfig, progress: Callable[[Iterable[int]], Iterable[int]] | None = None
                     ) -> Capture:
    """The whole capture of ``config`` in memory; ``progress`` may wrap the frame loop (e.g. tqdm)."""
    scene, rig, lidar_spec = make_scene(config), config.rig(), config.lidar()
    indices: Iterable[int] = range(config.frames)
    if progress is not None:
        indices = progress(indices)
    frames = [synthesize_frame(scene, i, config, rig=rig, lidar_spec=lidar_spec) for i in indices]
    return Capture(frames, source_format="synthetic", world_frame=WORLD_FRAME, metadata=capture_metadata(config, scene))


def write_synthetic_capture(config: SynthConfig, path: str | Path, *, overwrite: bool = False, compress: bool = True,
                            progress: Callable[[Iterable[int]], Iterable[int]] | None = None) -> Path:
    """Generate ``config`` and write it to the capture folder ``path``, frame by frame.

    Frames go to ``<path>.partial`` as they are made; an interrupted run resumes from the frames
    already there when called again with the same config (a different config is an error unless
    ``overwrite``). The folder appears at ``path`` only when complete. ``progress`` wraps the loop
    over the frames still to make.
    """
    from geo3d.io.capture_writer import CaptureWriter

    resume_key = {"generator_version": GENERATOR_VERSION, "config": config.to_dict(), "compress": compress}
    writer = CaptureWriter(path, overwrite=overwrite, compress=compress, resume_key=resume_key)
    scene, rig, lidar_spec = make_scene(config), config.rig(), config.lidar()
    todo: Iterable[int] = [i for i in range(config.frames) if i not in writer.completed]
    if progress is not None:
        todo = progress(todo)
    for index in todo:
        writer.write_frame(synthesize_frame(scene, index, config, rig=rig, lidar_spec=lidar_spec))
    return writer.finish(source_format="synthetic", source=None, world_frame=WORLD_FRAME,
                         metadata=capture_metadata(config, scene))
