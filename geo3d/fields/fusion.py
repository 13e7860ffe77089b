"""``fusion``: a training-free open-vocabulary field from measured geometry and a dense 2D teacher
(POP-3D's projection baseline, made into a field).

Per fused frame (the reference frame, or several frames moved into its ego frame):

1. **geometry**: the LiDAR returns (``geometry="lidar"``) or the camera depth maps back-projected
   (``"depth"``, every ``depth_stride``-th pixel, up to ``max_depth`` metres); ``"auto"`` takes the
   LiDAR when the frame has a sweep, else the depth maps. Each point is a ray from its sensor centre.
2. **features**: the dense teacher runs on every camera image; every point is projected into every
   camera (z-depth > ``min_depth``, inside the image) and takes the mean of the teacher features
   sampled bilinearly at its pixels, renormalised: the features are averaged over the views that see
   the point. Its colour is the mean of the pixels. No occlusion test: a point seen by a camera
   whose view of it is blocked takes the blocker's feature (rare across the small overlaps of a
   surround rig; the depth geometry sees each point from its own camera).
3. **voxels**: rays are traversed exactly through the grid (:func:`geo3d.occupancy.lidar_occupancy_targets`);
   the occupancy of a voxel with ``h`` returns is ``1 - 2^-h`` (one return: 0.5, the default threshold;
   two: 0.75, ...), 0 for voxels without returns (free or unseen). The feature of a voxel is the
   renormalised mean of its points' features, its colour their mean colour, its class the zero-shot
   class of the feature among the 16 Occ3D classes (``labels``, for class colouring).

Voxels with returns but no camera view have an occupancy but no feature (they are not listed in
``field.indices``: queries and the viewer do not see them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from geo3d.cameras.functional import valid_depth_points, world_to_pixels
from geo3d.fields.inputs import check_frame, frame_at
from geo3d.fields.methods import Progress, ReconstructionMethod, register_method
from geo3d.geometry.poses import invert_pose
from geo3d.language.teachers import sample_features
from geo3d.occupancy.samples import camera_features
from geo3d.occupancy.targets import lidar_occupancy_targets
from geo3d.structures.capture import Capture, Frame
from geo3d.structures.field import FieldError, OpenVocabField
from geo3d.synthetic.occupancy import OccupancyGridSpec
from geo3d.voxels.conversions import voxelize_points

GEOMETRIES = ("auto", "lidar", "depth")


@dataclass
class FusionOptions:
    """Settings of the ``fusion`` method (module docstring)."""

    geometry: str = "auto"
    """Where the points come from: ``"lidar"``, ``"depth"`` (camera depth maps) or ``"auto"``."""
    fuse_frames: tuple[int, ...] = ()
    """Frames fused into the reference frame's ego grid (empty: the reference frame alone). Moving
    objects smear across frames: fuse static scenes."""
    lower: tuple[float, float, float] = (-40.0, -40.0, -1.0)
    """Grid min corner, metres, ego frame of the reference frame."""
    upper: tuple[float, float, float] = (40.0, 40.0, 5.4)
    """Grid max corner, metres."""
    voxel_size: float = 0.4
    """Voxel edge, metres."""
    min_depth: float = 0.1
    """A point counts as seen by a camera beyond this z-depth, metres."""
    depth_stride: int = 2
    """``"depth"`` geometry: every n-th pixel row and column is back-projected."""
    max_depth: float = 60.0
    """``"depth"`` geometry: depths beyond this (metres) are dropped (sky, far background)."""
    feature_dtype: str = "float16"
    """Stored feature precision: ``"float16"`` or ``"float32"``."""
    extra: dict = field(default_factory=dict)
    """Free-form notes stored in the field's metadata."""

    def check(self) -> None:
        """Raise :class:`FieldError` naming the first bad option."""
        if self.geometry not in GEOMETRIES:
            raise FieldError(f"unknown geometry {self.geometry!r} (choose one of {', '.join(GEOMETRIES)})")
        if self.feature_dtype not in ("float16", "float32"):
            raise FieldError(f"feature_dtype must be 'float16' or 'float32', got {self.feature_dtype!r}")
        if int(self.depth_stride) < 1:
            raise FieldError(f"depth_stride must be >= 1, got {self.depth_stride}")
        if not (self.min_depth >= 0 and self.max_depth > self.min_depth):
            raise FieldError(f"need 0 <= min_depth < max_depth, got {self.min_depth} and {self.max_depth}")
        self.grid()

    def grid(self) -> OccupancyGridSpec:
        try:
            return OccupancyGridSpec(lower=tuple(self.lower), upper=tuple(self.upper), voxel_size=self.voxel_size)
        except ValueError as error:
            raise FieldError(f"invalid grid: {error}") from None


class FramePoints:
    """The points of one frame in the reference ego frame, with their ray origins, features and colours."""

    def __init__(self, points: torch.Tensor, origins: torch.Tensor, features: torch.Tensor, colors: torch.Tensor,
                 seen: torch.Tensor) -> None:
        self.points, self.origins, self.features, self.colors, self.seen = points, origins, features, colors, seen


def resolve_geometry(frame: Frame, geometry: str) -> str:
    """``"lidar"`` or ``"depth"``: ``"auto"`` takes the LiDAR when the frame has a sweep with points, else the
    depth maps."""
    if geometry != "auto":
        return geometry
    for sweep in frame.lidar.values():
        if len(sweep.load_points()):
            return "lidar"
    return "depth"


def frame_points(frame: Frame, world2ref: np.ndarray, teacher, options: FusionOptions,
                 progress: Progress | None = None) -> FramePoints:
    """Points of ``frame`` (``[N, 3]`` float64 in the reference ego frame), their ray origins ``[N, 3]``,
    view-averaged unit teacher features ``[N, D]`` (zero rows where no camera sees the point), mean
    colours ``[N, 3]`` in [0, 255] and ``[N]`` bool seen-by-a-camera."""
    geometry = resolve_geometry(frame, options.geometry)
    cameras = list(frame.cameras.values())
    Ks = torch.from_numpy(np.stack([np.asarray(c.K, np.float64) for c in cameras]))
    cam2world = torch.from_numpy(np.stack([np.asarray(c.cam2world, np.float64) for c in cameras]))
    if geometry == "lidar":
        points, origins = [], []
        for sweep in frame.lidar.values():
            xyz = sweep.points_world()
            points.append(xyz)
            origins.append(np.broadcast_to(np.asarray(sweep.sensor2world)[:3, 3], xyz.shape))
        points_world = torch.from_numpy(np.concatenate(points))
        origins_world = torch.from_numpy(np.concatenate(origins).astype(np.float64))
    else:
        depths = [c.load_depth() for c in cameras]
        if any(d is None for d in depths):
            why = ("the LiDAR sweep is empty and " if options.geometry == "auto" and frame.lidar
                   else "geometry 'depth' needs a depth map for every camera; ")
            raise FieldError(f"frame {frame.index}: {why}cameras "
                             f"{[c.camera for c, d in zip(cameras, depths) if d is None]} have no depth map")
        if len({d.shape for d in depths}) > 1:
            raise FieldError(f"frame {frame.index}: depth maps of different sizes")
        depth = torch.from_numpy(np.stack(depths).astype(np.float64))
        depth[(depth > options.max_depth) | ~torch.isfinite(depth)] = 0.0
        stride = options.depth_stride
        keep = torch.zeros_like(depth, dtype=torch.bool)
        keep[:, ::stride, ::stride] = True
        depth[~keep] = 0.0
        gathered = valid_depth_points(depth, Ks, cam2world)
        points_world = gathered.points_world
        origins_world = cam2world[gathered.camera_index, :3, 3]
    if len(points_world) == 0:
        raise FieldError(f"frame {frame.index}: no {geometry} points to fuse")
    dense = camera_features(teacher, cameras)
    dim = int(teacher.dim)
    feature_sum = torch.zeros(len(points_world), dim)
    color_sum = torch.zeros(len(points_world), 3, dtype=torch.float64)
    views = torch.zeros(len(points_world), dtype=torch.int64)
    projection = world_to_pixels(points_world, Ks, cam2world)  # uv [C, N, 2], depth [C, N]
    for c, cam in enumerate(cameras):
        uv, z = projection.uv[c], projection.depth[c]
        inside = (z > options.min_depth) & (uv[:, 0] >= -0.5) & (uv[:, 0] < cam.width - 0.5) \
            & (uv[:, 1] >= -0.5) & (uv[:, 1] < cam.height - 0.5)
        rows = torch.nonzero(inside).squeeze(1)
        if len(rows) == 0:
            continue
        feature_sum[rows] += sample_features(dense[c], uv[rows].float())
        image = torch.from_numpy(np.asarray(cam.load_image_uint8())[..., :3].astype(np.float64))
        pixel = uv[rows].round().long()
        color_sum[rows] += image[pixel[:, 1].clamp(0, cam.height - 1), pixel[:, 0].clamp(0, cam.width - 1)]
        views[rows] += 1
        if progress is not None:
            progress(f"frame {frame.index}: cameras", c + 1, len(cameras))
    seen = views > 0
    features = F.normalize(feature_sum, dim=1, eps=1e-12)
    colors = color_sum / views.clamp(min=1)[:, None]
    rotation, translation = torch.from_numpy(world2ref[:3, :3]), torch.from_numpy(world2ref[:3, 3])
    return FramePoints(points_world @ rotation.T + translation, origins_world @ rotation.T + translation,
                       features, colors, seen)


def class_labels(features: torch.Tensor, text_encoder) -> np.ndarray:
    """``[M]`` int16 zero-shot class (ids 1..16 of the Occ3D classes) of unit features ``[M, D]``."""
    from geo3d.language.prompts import SYNTHETIC_CLASS_PHRASES, encode_classes
    from geo3d.occupancy.metrics import SEMANTIC_CLASSES, zero_shot_labels

    if len(features) == 0:
        return np.zeros(0, np.int16)
    classes = encode_classes(text_encoder, SYNTHETIC_CLASS_PHRASES).float().cpu()
    return zero_shot_labels(features.float().cpu(), classes, SEMANTIC_CLASSES).numpy().astype(np.int16)


@register_method
class FusionMethod(ReconstructionMethod):
    name = "fusion"
    summary = ("training-free: LiDAR or depth geometry, dense teacher features projected into the voxels "
               "and averaged over views (POP-3D's projection baseline)")
    Options = FusionOptions
    needs = ("teacher",)

    def _teacher(self, capture: Capture):
        teacher = self.resources.teacher
        if callable(teacher) and not hasattr(teacher, "dim"):
            teacher = teacher(capture)
        if teacher is None:
            raise FieldError("method 'fusion' needs a dense teacher (Resources.teacher)")
        return teacher

    def reconstruct(self, capture: Capture, frame_index: int = 0, progress: Progress | None = None
                    ) -> OpenVocabField:
        options = self.options
        options.check()
        grid = options.grid()
        encoder = self.resources.text_encoder
        if encoder is None:
            raise FieldError("method 'fusion' needs the text encoder of its teacher's space (Resources.text_encoder)")
        reference = frame_at(capture, frame_index)
        fused = [int(frame_index)] if not options.fuse_frames else [int(i) for i in options.fuse_frames]
        frames = [frame_at(capture, i) for i in fused]
        for frame in frames:
            check_frame(frame, needs_lidar=resolve_geometry(frame, options.geometry) == "lidar")
        ref_pose = np.asarray(reference.ego2world, np.float64)
        world2ref = invert_pose(ref_pose)
        teacher = self._teacher(capture)
        if getattr(teacher, "space", None) != encoder.space:
            raise FieldError(f"the teacher's features live in space {getattr(teacher, 'space', None)!r} but the "
                             f"text encoder's in {encoder.space!r}: they must match")
        start = time.perf_counter()
        parts = []
        for done, frame in enumerate(frames):
            parts.append(frame_points(frame, world2ref, teacher, options, progress))
            if progress is not None:
                progress("fusing frames", done + 1, len(frames))
        points = torch.cat([p.points for p in parts])
        origins = torch.cat([p.origins for p in parts])
        seen = torch.cat([p.seen for p in parts])
        targets = lidar_occupancy_targets(points, origins, grid.lower, grid.voxel_size, grid.shape)
        hits = targets.hits.numpy().astype(np.float64)
        occupancy = (1.0 - np.exp2(-hits)).astype(np.float32)
        # features and colours of the seen points, voxel means in one scatter
        values = torch.cat([torch.cat([p.features for p in parts]).double(),
                            torch.cat([p.colors for p in parts])], dim=1)[seen]
        scattered = voxelize_points(points[seen], grid.voxel_size, origin=grid.lower, shape=grid.shape,
                                    features=values, reduce="mean")
        dim = values.shape[1] - 3
        index = scattered.grid.indices.numpy()
        means = scattered.grid.values
        features = F.normalize(means[:, :dim], dim=1, eps=1e-12)
        keep = features.norm(dim=1) > 0.5  # drop voxels whose features cancel exactly
        features, index, means = features[keep], index[keep], means[keep]
        colors = means[:, dim:].round().clamp(0, 255).to(torch.uint8).numpy()
        metadata = {
            "method": self.name, "capture": capture.source, "capture_format": capture.source_format,
            "frame": int(frame_index), "frames_fused": fused, "ego2world": ref_pose.tolist(),
            "timestamp": reference.timestamp, "text_encoder": self.resources.text_encoder_spec,
            "teacher": getattr(teacher, "identity", type(teacher).__name__), "options": self.options_dict(),
            "points": int(len(points)), "points_seen": int(seen.sum()),
            "seconds": round(time.perf_counter() - start, 3),
        }
        return OpenVocabField(origin=grid.lower, voxel_size=grid.voxel_size, frame="ego", occupancy=occupancy,
                              indices=index, features=features.numpy().astype(options.feature_dtype),
                              space=encoder.space, colors=colors, labels=class_labels(features, encoder),
                              metadata=metadata)
