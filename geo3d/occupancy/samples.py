"""Training samples of the occupancy network: one capture frame -> network inputs, self-supervised
targets (LiDAR occupancy, teacher features at projected LiDAR points) and evaluation ground truth.

:func:`make_sample` builds an :class:`OccupancySample` from frame ``frame_index`` of a
:class:`~geo3d.structures.capture.Capture` (synthetic or real, e.g. a nuScenes info pickle read by
:func:`geo3d.io.read_capture`); :func:`collate_samples` stacks samples into an :class:`OccupancyBatch`.
The torch datasets are in :mod:`geo3d.occupancy.dataset`.

Frames. Everything is in the frame's **ego frame** (x forward, y left, z up, metres): the occupancy
grid (:class:`~geo3d.synthetic.OccupancyGridSpec`), ``cam2ego = inv(ego2world) @ cam2world``, the LiDAR
points ``inv(ego2world) @ lidar2world @ p`` and their ray origins (the sensor centres). A frame without
``ego2world`` is an error.

Images. Each camera image (uint8, alpha dropped) is converted to float in [0, 1] and resized to
``image_size = (H, W)`` by bilinear interpolation with antialiasing (``torch.nn.functional.interpolate
(mode="bilinear", antialias=True, align_corners=False)``), which maps the image's extent onto the new
extent. With pixel centres at integer coordinates (``docs/conventions.md``) a pixel ``u`` of a ``W0``
wide image lands at ``u' = (u + 0.5) * W / W0 - 0.5``, so ``K`` is scaled as::

    fx' = fx sx,  s' = s sx,  cx' = (cx + 0.5) sx - 0.5,   fy' = fy sy,  cy' = (cy + 0.5) sy - 0.5

with ``sx = W / W0``, ``sy = H / H0``. Cameras of different sizes are all resized to ``image_size``;
``image_size=None`` keeps the original size and then requires all cameras to share it.

Distillation targets (POP-3D). The teacher runs on the **original-resolution** camera inputs (its
own resolution is part of its identity, and the cached features do not depend on the network's input
size). Every LiDAR point is projected into every camera with its original ``K`` and ``cam2world``; it
is a distillation point when, in at least one camera, its z-depth is ``> min_depth`` and its pixel
lies inside the image (``-0.5 <= u < W0 - 0.5``, likewise ``v``). A point seen by several cameras
takes the feature of **the camera where it projects nearest to the image centre** (distance
normalised by the half-width and half-height, ties to the first camera in the frame's order): the
overlap of surround cameras lies on their borders, where lens effects and the teacher's border
patches are worst, so the central view is the better target; averaging two views would blur features
across objects the two cameras see with different occlusions. The feature is
:func:`~geo3d.language.teachers.sample_features` (bilinear, renormalised) at that pixel.

Teacher inputs. A teacher gets either RGB images or semantic label images; :func:`teacher_inputs`
decides: a teacher with a method ``inputs_from_frames(camera_frames)`` is asked for its input batch;
otherwise its attribute ``input_kind`` (``"rgb"`` or ``"semantic"``) selects ``[C, H, W, 3]`` uint8
RGB or ``[C, H, W]`` labels (``CameraFrame.load_semantic()``). A
:class:`~geo3d.language.label_teacher.LabelTeacher` without these takes labels, any other teacher
(e.g. :class:`~geo3d.language.maskclip.MaskCLIPTeacher`) RGB.

Cache. With a :class:`~geo3d.language.cache.FeatureCache` the features of each camera are read from
or written to the entry ``(capture id, frame.index, camera name, teacher.identity)``; the capture id
is :func:`capture_id_of`. Cached features are float16-rounded (cosine changes < 1e-3).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from geo3d.cameras.functional import world_to_pixels
from geo3d.geometry.poses import invert_pose
from geo3d.language.teachers import DenseFeatures, sample_features
from geo3d.occupancy.lifting import check_image_size, scale_intrinsics
from geo3d.occupancy.targets import OccupancyError, lidar_occupancy_targets
from geo3d.structures.capture import Capture, CameraFrame, Frame
from geo3d.synthetic.occupancy import OccupancyGridSpec

INPUT_KINDS = ("rgb", "semantic")
"""Values of a teacher's ``input_kind``."""


@dataclass(eq=False)
class OccupancySample:
    """Inputs, targets and ground truth of one frame (module docstring: frames, resizing, choices).

    Attributes:
        images: ``[C, 3, H, W]`` float32 in [0, 1], resized to the network input size.
        K: ``[C, 3, 3]`` float32 intrinsics of the resized images, pixels (pixel centres at integers).
        cam2ego: ``[C, 4, 4]`` float32 camera-to-ego poses (OpenCV axes, metres).
        camera_names: the ``C`` camera names, in the frame's order.
        lidar_points_ego: ``[N, 3]`` float32 LiDAR returns in the ego frame, metres (all sweeps).
        lidar_origin_ego: ``[N, 3]`` float32 origin (sensor centre) of each return's ray, ego frame.
        occupancy_state: ``[X, Y, Z]`` int8, 1 occupied / 0 free / -1 unknown
            (:func:`~geo3d.occupancy.lidar_occupancy_targets` on the grid spec).
        distill_points_ego: ``[M, 3]`` float32 LiDAR points seen by at least one camera, ego frame.
        distill_features: ``[M, D]`` float32 unit teacher features at their projections.
        distill_index: ``[M]`` int64 index of each distillation point in ``lidar_points_ego``.
        distill_camera: ``[M]`` int64 camera whose feature was taken (index into ``camera_names``).
        distill_uv: ``[M, 2]`` float32 pixel of the point in that camera's ORIGINAL image (the
            teacher's input), ``(u, v)``.
        gt_semantics: optional ``[X, Y, Z]`` int64 class ids (0 free), the frame's ground truth.
        gt_visible: optional ``[X, Y, Z]`` bool camera visibility mask (Occ3D ``mask_camera``).
        lidar_labels: optional ``[N]`` int64 semantic class of each LiDAR point.
        frame_id: ``frame.index`` of the frame in its capture.
        capture_id: identity of the capture (:func:`capture_id_of`).
    """

    images: Tensor
    K: Tensor
    cam2ego: Tensor
    camera_names: tuple[str, ...]
    lidar_points_ego: Tensor
    lidar_origin_ego: Tensor
    occupancy_state: Tensor
    distill_points_ego: Tensor
    distill_features: Tensor
    distill_index: Tensor
    distill_camera: Tensor
    distill_uv: Tensor
    gt_semantics: Tensor | None
    gt_visible: Tensor | None
    lidar_labels: Tensor | None
    frame_id: int
    capture_id: str


# ------------------------------------------------------------------------------------- small helpers


def capture_id_of(capture: Capture) -> str:
    """A stable identity of a capture, the key of its cached features.

    ``capture.metadata["capture_id"]`` when set; for a synthetic capture ``"synthetic-<hash>"`` of
    its generator config (seed included); for a capture read from disk its file or folder name plus a
    hash of its path. Raises :class:`OccupancyError` when none applies (pass ``capture_id``).
    """
    meta = capture.metadata or {}
    if isinstance(meta.get("capture_id"), str) and meta["capture_id"].strip():
        return meta["capture_id"]
    if meta.get("generator") == "geo3d.synthetic" and isinstance(meta.get("config"), dict):
        text = json.dumps({"version": meta.get("generator_version"), "config": meta["config"]}, sort_keys=True)
        return f"synthetic-seed{meta.get('seed')}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    if capture.source:
        name = str(capture.source).rstrip("/").split("/")[-1] or "capture"
        return f"{name}-{hashlib.sha256(str(capture.source).encode()).hexdigest()[:10]}"
    raise OccupancyError(
        "capture has no identity (no metadata['capture_id'], generator config or source path): pass capture_id"
    )


def teacher_inputs(teacher, cameras: Sequence[CameraFrame]):
    """The teacher's input batch for a list of camera frames (module docstring: teacher inputs).

    Returns:
        ``[C, H, W, 3]`` uint8 RGB (``input_kind="rgb"``), ``[C, H, W]`` int64 labels
        (``"semantic"``), or whatever ``teacher.inputs_from_frames(cameras)`` returns.
    """
    if callable(getattr(teacher, "inputs_from_frames", None)):
        return teacher.inputs_from_frames(list(cameras))
    kind = getattr(teacher, "input_kind", None)
    if kind is None:
        from geo3d.language.label_teacher import LabelTeacher

        kind = "semantic" if isinstance(teacher, LabelTeacher) else "rgb"
    if kind not in INPUT_KINDS:
        raise OccupancyError(f"teacher.input_kind must be one of {INPUT_KINDS}, got {kind!r}")
    if kind == "rgb":
        return np.stack([cam.load_image_uint8()[..., :3] for cam in cameras])
    labels = []
    for cam in cameras:
        label = cam.load_semantic()
        if label is None:
            raise OccupancyError(f"camera {cam.camera!r} has no semantic label image, which the teacher "
                                 f"{type(teacher).__name__} needs (input_kind='semantic')")
        labels.append(label.astype(np.int64))
    return np.stack(labels)


def _check_matrix(value, shape: tuple[int, int], what: str) -> np.ndarray:
    if value is None:
        raise OccupancyError(f"{what} is missing (calibration)")
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape or not np.isfinite(arr).all():
        raise OccupancyError(f"{what} must be a finite {list(shape)} matrix, got {arr.dtype}{list(arr.shape)}")
    return arr


def _check_grid_spec(grid_spec) -> OccupancyGridSpec:
    if not isinstance(grid_spec, OccupancyGridSpec):
        raise OccupancyError(f"grid_spec must be an OccupancyGridSpec, got {type(grid_spec).__name__}")
    return grid_spec


def check_teacher(teacher, feature_dim: int | None = None):
    """Check that ``teacher`` is a dense teacher (callable, ``dim``, ``identity``) of dimension
    ``feature_dim`` when given; returns it."""
    for attr in ("dim", "identity"):
        if not hasattr(teacher, attr):
            raise OccupancyError(f"teacher must be a DenseTeacher (dim, identity, __call__); it has no {attr!r}")
    if not callable(teacher):
        raise OccupancyError(f"teacher must be callable (a DenseTeacher), got {type(teacher).__name__}")
    if feature_dim is not None:
        if isinstance(feature_dim, bool) or not isinstance(feature_dim, (int, np.integer)) or feature_dim < 1:
            raise OccupancyError(f"feature_dim must be a positive int or None, got {feature_dim!r}")
        if int(teacher.dim) != int(feature_dim):
            raise OccupancyError(f"teacher {teacher!r} has feature dim {teacher.dim}, but feature_dim={feature_dim}")
    return teacher


# ----------------------------------------------------------------------------------------- features


def camera_features(teacher, cameras: Sequence[CameraFrame], *, cache=None, capture_id: str | None = None,
                    frame_index: int = 0) -> list[DenseFeatures]:
    """Dense teacher features of each camera (through ``cache`` when given).

    Returns:
        One :class:`DenseFeatures` per camera with ``features [1, h, w, D]``; its ``image_size`` is
        checked against the camera's ``(height, width)``.
    """
    if cache is not None:
        if capture_id is None:
            raise OccupancyError("capture_id is needed to key the feature cache")
        out = []
        for cam in cameras:
            def compute(cam=cam):
                return teacher(teacher_inputs(teacher, [cam]))
            out.append(cache.get_or_compute(capture_id, int(frame_index), cam.camera, teacher, compute))
    else:
        sizes = {(cam.height, cam.width) for cam in cameras}
        if len(sizes) == 1:  # one batched call
            dense = teacher(teacher_inputs(teacher, cameras))
            out = [DenseFeatures(dense.features[c:c + 1], dense.stride, dense.image_size) for c in range(len(cameras))]
        else:
            out = [teacher(teacher_inputs(teacher, [cam])) for cam in cameras]
    for cam, dense in zip(cameras, out):
        if not isinstance(dense, DenseFeatures) or dense.features.ndim != 4 or dense.features.shape[0] != 1:
            raise OccupancyError(f"teacher returned malformed features for camera {cam.camera!r}")
        if dense.features.shape[-1] != int(teacher.dim):
            raise OccupancyError(f"teacher returned D = {dense.features.shape[-1]} for camera {cam.camera!r}, "
                                 f"but its dim is {teacher.dim}")
        if tuple(dense.image_size) != (cam.height, cam.width):
            raise OccupancyError(f"teacher features of camera {cam.camera!r} are for a {tuple(dense.image_size)} "
                                 f"image, but the camera is {(cam.height, cam.width)} (stale cache?)")
    return out


def select_views(uv: Tensor, depth: Tensor, sizes: Sequence[tuple[int, int]], min_depth: float
                 ) -> tuple[Tensor, Tensor]:
    """Choose, per point, the camera where it projects nearest to the image centre.

    Args:
        uv: ``[C, N, 2]`` pixels of N points in C cameras.
        depth: ``[C, N]`` z-depths, metres.
        sizes: ``(H, W)`` of each camera.
        min_depth: smallest z-depth that counts as in front, metres.

    Returns:
        ``(seen [N] bool, camera [N] int64)``: whether some camera sees the point (in front, pixel in
        ``[-0.5, W - 0.5) x [-0.5, H - 0.5)``) and which camera is chosen (meaningless where unseen).
    """
    hw = torch.tensor([[w, h] for h, w in sizes], dtype=uv.dtype)[:, None, :]  # [C, 1, 2]
    inside = (depth > min_depth) & (uv >= -0.5).all(-1) & (uv < hw - 0.5).all(-1)
    centre = (hw - 1.0) / 2.0
    offset = ((uv - centre) / (hw / 2.0)).abs().amax(-1)  # [C, N] normalised Chebyshev distance
    offset = torch.where(inside, offset, torch.full_like(offset, float("inf")))
    camera = offset.argmin(0)  # argmin returns the first minimum: ties go to the first camera
    return inside.any(0), camera


# ------------------------------------------------------------------------------------------- sample


def resize_image(image: np.ndarray, size: tuple[int, int]) -> Tensor:
    """``[H, W, 3+]`` uint8 image -> ``[3, h, w]`` float32 in [0, 1] at ``size = (h, w)`` (antialiased bilinear)."""
    # np.array copies: sources may hold read-only arrays
    pixels = torch.from_numpy(np.array(image[..., :3])).permute(2, 0, 1).float().div_(255.0)
    if tuple(pixels.shape[1:]) == size:
        return pixels
    out = torch.nn.functional.interpolate(pixels[None], size=size, mode="bilinear", align_corners=False,
                                          antialias=True)[0]
    return out.clamp_(0.0, 1.0)


def box_point_labels(points: np.ndarray, boxes: Sequence[dict]) -> np.ndarray:
    """Class of each point from annotated 3D boxes: the id (:data:`geo3d.synthetic.classes.CLASS_IDS`)
    of the box holding it, 0 outside every box (background: "not an annotated thing").

    Args:
        points: ``[N, 3]`` points in the boxes' frame, metres.
        boxes: dicts with ``"box": [x, y, z, l, w, h, yaw]`` (centre, size along the box's x / y / z,
            yaw about z, radians) and ``"label"`` (a class name); boxes of other labels are skipped.
            A point in several boxes takes the last one's class.

    Returns:
        ``[N]`` int64 class ids.
    """
    from geo3d.synthetic.classes import CLASS_IDS

    labels = np.zeros(len(points), dtype=np.int64)
    for box in boxes:
        cls = CLASS_IDS.get(box.get("label"))
        if cls is None:
            continue
        x, y, z, length, width, height, yaw = map(float, box["box"][:7])
        d = points - np.array([x, y, z])
        c, s = np.cos(yaw), np.sin(yaw)
        along, across = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
        inside = (np.abs(along) <= length / 2) & (np.abs(across) <= width / 2) & (np.abs(d[:, 2]) <= height / 2)
        labels[inside] = cls
    return labels


def _frame_boxes(capture: Capture, frame: Frame) -> list[dict] | None:
    """The annotated boxes of a frame from a nuScenes-style capture's metadata (LiDAR frame), or None."""
    for entry in capture.metadata.get("samples", []) if isinstance(capture.metadata, dict) else []:
        if isinstance(entry, dict) and entry.get("index") == frame.index and isinstance(entry.get("boxes"), list):
            return entry["boxes"]
    return None


def _lidar(frame: Frame, world2ego: np.ndarray, with_labels: bool, boxes: list[dict] | None = None):
    if not frame.lidar:
        raise OccupancyError(f"frame {frame.index} has no LiDAR sweep: occupancy and distillation targets need one")
    points, origins, labels = [], [], []
    for name, sweep in frame.lidar.items():
        sensor2ego = world2ego @ _check_matrix(sweep.sensor2world, (4, 4), f"frame {frame.index} LiDAR {name!r} "
                                                                           "sensor2world")
        xyz = sweep.load_points()[:, :3].astype(np.float64)
        if not np.isfinite(xyz).all():
            raise OccupancyError(f"frame {frame.index} LiDAR {name!r} holds NaN or inf points")
        points.append(xyz @ sensor2ego[:3, :3].T + sensor2ego[:3, 3])
        origins.append(np.broadcast_to(sensor2ego[:3, 3], xyz.shape))
        label = sweep.load_labels() if with_labels else None
        if with_labels and label is None and boxes is not None and (name == "LIDAR_TOP" or len(frame.lidar) == 1):
            label = box_point_labels(xyz, boxes)  # boxes are in this sensor's frame
        if label is not None and len(label) != len(xyz):
            raise OccupancyError(f"frame {frame.index} LiDAR {name!r}: {len(label)} labels for {len(xyz)} points")
        labels.append(label)
    pts = np.concatenate(points)
    if len(pts) == 0:
        raise OccupancyError(f"frame {frame.index} has no LiDAR points")
    lab = None if any(x is None for x in labels) else torch.from_numpy(np.concatenate(labels).astype(np.int64))
    return torch.from_numpy(pts), torch.from_numpy(np.concatenate(origins)), lab


def _ground_truth(frame: Frame, grid_spec: OccupancyGridSpec) -> tuple[Tensor | None, Tensor | None]:
    occ = frame.occupancy
    if occ is None:
        return None, None
    if occ.frame != "ego" or tuple(occ.shape) != grid_spec.shape or not np.allclose(occ.origin, grid_spec.origin) \
            or not np.allclose(occ.voxel_size, grid_spec.voxel_size):
        raise OccupancyError(
            f"frame {frame.index}: its occupancy ground truth ({occ.frame} grid {list(occ.shape)}, origin "
            f"{occ.origin.tolist()}, voxel {occ.voxel_size.tolist()}) does not match grid_spec (ego grid "
            f"{list(grid_spec.shape)}, origin {grid_spec.lower}, voxel {grid_spec.voxel_size}); "
            "use the grid the capture was generated with, or with_ground_truth=False"
        )
    semantics = torch.from_numpy(occ.load_semantics().astype(np.int64))
    mask = occ.load_mask("camera")
    return semantics, None if mask is None else torch.from_numpy(np.ascontiguousarray(mask))


def make_sample(capture: Capture, frame_index: int, grid_spec: OccupancyGridSpec, teacher, *,
                image_size: tuple[int, int] | None, cache=None, with_ground_truth: bool = True,
                capture_id: str | None = None, feature_dim: int | None = None, min_depth: float = 0.1,
                max_range: float | None = None, min_hits: int = 1) -> OccupancySample:
    """One training / evaluation sample from frame ``frame_index`` of ``capture`` (module docstring).

    Args:
        capture: the capture (frames need ``ego2world``, cameras and at least one LiDAR sweep).
        frame_index: position of the frame in ``capture.frames``.
        grid_spec: the occupancy grid in the ego frame.
        teacher: a dense teacher (:class:`~geo3d.language.teachers.DenseTeacher`) fed by
            :func:`teacher_inputs`, or None (no teacher: ``distill_features`` is ``[M, 0]``, the
            distillation points are still the LiDAR points seen by a camera).
        image_size: ``(H, W)`` network input size; None keeps the cameras' size (they must agree).
        cache: optional :class:`~geo3d.language.cache.FeatureCache` for the teacher features.
        with_ground_truth: add ``gt_semantics`` / ``gt_visible`` (when the frame has occupancy) and
            ``lidar_labels`` (when the sweeps have labels; for a sweep without labels in a capture with
            annotated 3D boxes, such as a nuScenes info pickle, the class of the box holding each point,
            0 outside the boxes: :func:`box_point_labels`).
        capture_id: key of the capture in the cache; default :func:`capture_id_of`.
        feature_dim: expected teacher dimension ``D`` (checked), or None.
        min_depth: smallest z-depth (metres) of a point in front of a camera.
        max_range, min_hits: passed to :func:`~geo3d.occupancy.lidar_occupancy_targets`.

    Returns:
        :class:`OccupancySample`.

    Raises:
        OccupancyError: bad arguments, a frame without LiDAR, ``ego2world`` or cameras, missing or
            invalid calibration, cameras of different sizes with ``image_size=None``, a teacher of
            another dimension than ``feature_dim``, ground truth on another grid.
    """
    if not isinstance(capture, Capture):
        raise OccupancyError(f"capture must be a Capture, got {type(capture).__name__}")
    if isinstance(frame_index, bool) or not isinstance(frame_index, (int, np.integer)) \
            or not -len(capture.frames) <= frame_index < len(capture.frames):
        raise OccupancyError(f"frame_index must be an int in [0, {len(capture.frames)}), got {frame_index!r}")
    grid_spec = _check_grid_spec(grid_spec)
    if teacher is not None:
        check_teacher(teacher, feature_dim)
    if image_size is not None:
        image_size = check_image_size(image_size, "image_size")
    if isinstance(min_depth, bool) or not isinstance(min_depth, (int, float)) or not 0 <= min_depth < float("inf"):
        raise OccupancyError(f"min_depth must be a finite number >= 0, got {min_depth!r}")
    if capture_id is not None and (not isinstance(capture_id, str) or not capture_id.strip()):
        raise OccupancyError(f"capture_id must be a non-empty string or None, got {capture_id!r}")
    frame = capture.frames[frame_index]
    if not frame.cameras:
        raise OccupancyError(f"frame {frame.index} has no cameras")
    ego2world = _check_matrix(frame.ego2world, (4, 4), f"frame {frame.index} ego2world")
    world2ego = invert_pose(ego2world)
    cameras = list(frame.cameras.values())
    names = tuple(frame.cameras)
    sizes = [(int(cam.height), int(cam.width)) for cam in cameras]
    if image_size is None:
        if len(set(sizes)) != 1:
            raise OccupancyError(f"frame {frame.index}: cameras have different image sizes "
                                 f"{dict(zip(names, sizes))}; pass image_size to resize them to one")
        image_size = sizes[0]
    Ks = np.stack([_check_matrix(cam.K, (3, 3), f"frame {frame.index} camera {cam.camera!r} K") for cam in cameras])
    cam2world = np.stack([_check_matrix(cam.cam2world, (4, 4), f"frame {frame.index} camera {cam.camera!r} "
                                        "cam2world") for cam in cameras])

    # network inputs
    images = torch.stack([resize_image(cam.load_image_uint8(), image_size) for cam in cameras])
    K_net = torch.stack([scale_intrinsics(torch.from_numpy(K), size, image_size) for K, size in zip(Ks, sizes)])
    cam2ego = torch.from_numpy(world2ego @ cam2world)

    # LiDAR and occupancy targets
    boxes = _frame_boxes(capture, frame) if with_ground_truth else None
    points, origins, labels = _lidar(frame, world2ego, with_ground_truth, boxes)
    targets = lidar_occupancy_targets(points, origins, grid_spec.origin, grid_spec.voxel_size, grid_spec.shape,
                                      max_range=max_range, min_hits=min_hits)

    # distillation targets
    cid = capture_id if capture_id is not None else (capture_id_of(capture) if cache is not None else None)
    if teacher is not None:
        dense = camera_features(teacher, cameras, cache=cache, capture_id=cid, frame_index=int(frame.index))
    points_world = points @ torch.from_numpy(ego2world[:3, :3]).T + torch.from_numpy(ego2world[:3, 3])
    proj = world_to_pixels(points_world, torch.from_numpy(Ks), torch.from_numpy(cam2world))  # [C, N, 2]
    seen, choice = select_views(proj.uv, proj.depth, sizes, float(min_depth))
    index = torch.nonzero(seen).squeeze(1)
    chosen = choice[index]
    uv = proj.uv[chosen, index]  # [M, 2]
    features = torch.zeros(len(index), int(teacher.dim) if teacher is not None else 0)
    for c in range(len(cameras)):
        rows = torch.nonzero(chosen == c).squeeze(1)
        if len(rows) and teacher is not None:
            features[rows] = sample_features(dense[c], uv[rows].float())

    gt_semantics = gt_visible = None
    if with_ground_truth:
        gt_semantics, gt_visible = _ground_truth(frame, grid_spec)
    return OccupancySample(
        images=images, K=K_net.float(), cam2ego=cam2ego.float(), camera_names=names,
        lidar_points_ego=points.float(), lidar_origin_ego=origins.float(), occupancy_state=targets.state,
        distill_points_ego=points[index].float(), distill_features=features, distill_index=index,
        distill_camera=chosen, distill_uv=uv.float(), gt_semantics=gt_semantics, gt_visible=gt_visible,
        lidar_labels=labels if with_ground_truth else None, frame_id=int(frame.index),
        capture_id=cid if cid is not None else _fallback_id(capture),
    )


def _fallback_id(capture: Capture) -> str:
    try:
        return capture_id_of(capture)
    except OccupancyError:
        return "capture"


# ------------------------------------------------------------------------------------------ collate


@dataclass(eq=False)
class OccupancyBatch:
    """A batch of :class:`OccupancySample` (B samples). Ragged point sets are padded to the longest
    sample with zeros (labels with -1) and come with their lengths; ``*_mask`` marks the real rows.

    Attributes:
        images: ``[B, C, 3, H, W]``; K: ``[B, C, 3, 3]``; cam2ego: ``[B, C, 4, 4]``.
        camera_names: the camera names (identical across the batch).
        lidar_points_ego, lidar_origin_ego: ``[B, Nmax, 3]``; lidar_lengths: ``[B]`` int64;
            lidar_mask: ``[B, Nmax]`` bool.
        occupancy_state: ``[B, X, Y, Z]`` int8.
        distill_points_ego: ``[B, Mmax, 3]``; distill_features: ``[B, Mmax, D]``; distill_lengths:
            ``[B]`` int64; distill_mask: ``[B, Mmax]`` bool.
        gt_semantics: ``[B, X, Y, Z]`` int64 or None; gt_visible: ``[B, X, Y, Z]`` bool or None;
            lidar_labels: ``[B, Nmax]`` int64 (-1 padding) or None (None unless every sample has it).
        frame_ids: ``[B]`` int64; capture_ids: the B capture ids.
    """

    images: Tensor
    K: Tensor
    cam2ego: Tensor
    camera_names: tuple[str, ...]
    lidar_points_ego: Tensor
    lidar_origin_ego: Tensor
    lidar_lengths: Tensor
    lidar_mask: Tensor
    occupancy_state: Tensor
    distill_points_ego: Tensor
    distill_features: Tensor
    distill_lengths: Tensor
    distill_mask: Tensor
    gt_semantics: Tensor | None
    gt_visible: Tensor | None
    lidar_labels: Tensor | None
    frame_ids: Tensor
    capture_ids: tuple[str, ...]

    def to(self, device) -> OccupancyBatch:
        """A copy with every tensor moved to ``device``."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return OccupancyBatch(**{k: v.to(device) if isinstance(v, Tensor) else v for k, v in values.items()})


def _pad(tensors: list[Tensor], value: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    lengths = torch.tensor([len(t) for t in tensors], dtype=torch.int64)
    longest = int(lengths.max()) if len(tensors) else 0
    out = tensors[0].new_full((len(tensors), longest, *tensors[0].shape[1:]), value)
    for i, t in enumerate(tensors):
        out[i, :len(t)] = t
    mask = torch.arange(longest)[None, :] < lengths[:, None]
    return out, lengths, mask


def collate_samples(samples: Sequence[OccupancySample]) -> OccupancyBatch:
    """Stack samples into an :class:`OccupancyBatch` (usable as a ``DataLoader`` ``collate_fn``).

    Fixed-size tensors are stacked; they must agree in shape (cameras, image size, grid), and the
    camera names must be the same. Raises :class:`OccupancyError` otherwise or for an empty list.
    """
    samples = list(samples) if isinstance(samples, Sequence) else samples
    if not isinstance(samples, list) or not samples:
        raise OccupancyError("samples must be a non-empty sequence of OccupancySample")
    for i, sample in enumerate(samples):
        if not isinstance(sample, OccupancySample):
            raise OccupancyError(f"samples[{i}] must be an OccupancySample, got {type(sample).__name__}")
    first = samples[0]
    for i, sample in enumerate(samples[1:], 1):
        if sample.camera_names != first.camera_names:
            raise OccupancyError(f"samples[{i}] has cameras {sample.camera_names}, samples[0] {first.camera_names}")
        for name in ("images", "occupancy_state"):
            if getattr(sample, name).shape != getattr(first, name).shape:
                raise OccupancyError(f"samples[{i}].{name} has shape {list(getattr(sample, name).shape)}, "
                                     f"samples[0] {list(getattr(first, name).shape)}")
        if sample.distill_features.shape[1] != first.distill_features.shape[1]:
            raise OccupancyError(f"samples[{i}] has feature dim {sample.distill_features.shape[1]}, "
                                 f"samples[0] {first.distill_features.shape[1]}")
    lidar, lidar_lengths, lidar_mask = _pad([s.lidar_points_ego for s in samples])
    origins, _, _ = _pad([s.lidar_origin_ego for s in samples])
    distill, distill_lengths, distill_mask = _pad([s.distill_points_ego for s in samples])
    features, _, _ = _pad([s.distill_features for s in samples])

    def optional(name):
        values = [getattr(s, name) for s in samples]
        return torch.stack(values) if all(v is not None for v in values) else None

    labels = None
    if all(s.lidar_labels is not None for s in samples):
        labels, _, _ = _pad([s.lidar_labels for s in samples], value=-1)
    return OccupancyBatch(
        images=torch.stack([s.images for s in samples]), K=torch.stack([s.K for s in samples]),
        cam2ego=torch.stack([s.cam2ego for s in samples]), camera_names=first.camera_names,
        lidar_points_ego=lidar, lidar_origin_ego=origins, lidar_lengths=lidar_lengths, lidar_mask=lidar_mask,
        occupancy_state=torch.stack([s.occupancy_state for s in samples]),
        distill_points_ego=distill, distill_features=features, distill_lengths=distill_lengths,
        distill_mask=distill_mask, gt_semantics=optional("gt_semantics"), gt_visible=optional("gt_visible"),
        lidar_labels=labels, frame_ids=torch.tensor([s.frame_id for s in samples], dtype=torch.int64),
        capture_ids=tuple(s.capture_id for s in samples),
    )
