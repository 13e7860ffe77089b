"""Checks of the capture a reconstruction method reads, with one clear error per problem.

Every method calls :func:`check_frame` before any work, so bad input fails before an output exists:
a frame without cameras, a camera whose image is missing or unreadable, cameras of different image
sizes (where the method needs one size), NaN/inf or non-rigid poses and intrinsics, a LiDAR sweep
without points (where the method uses LiDAR), NaN/inf LiDAR points.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from geo3d.errors import CaptureError
from geo3d.structures.capture import Capture, Frame
from geo3d.structures.field import FieldError


def frame_at(capture: Capture, frame_index: int) -> Frame:
    """``capture.frames[frame_index]`` with a clear error for a bad index or an empty capture."""
    if not isinstance(capture, Capture):
        raise FieldError(f"capture must be a Capture, got {type(capture).__name__}")
    if not capture.frames:
        raise FieldError("the capture has no frames")
    if isinstance(frame_index, bool) or not isinstance(frame_index, (int, np.integer)) \
            or not 0 <= frame_index < len(capture.frames):
        raise FieldError(f"frame {frame_index!r} is out of range: the capture has frames 0..{len(capture.frames) - 1}")
    return capture.frames[int(frame_index)]


def _check_pose(matrix, what: str) -> np.ndarray:
    value = None if matrix is None else np.asarray(matrix, dtype=np.float64)
    if value is None or value.shape != (4, 4):
        raise FieldError(f"{what} is missing or not a 4x4 matrix (missing calibration)")
    if not np.isfinite(value).all():
        raise FieldError(f"{what} holds NaN or inf")
    rotation = value[:3, :3]
    if np.abs(rotation @ rotation.T - np.eye(3)).max() > 1e-4 or np.linalg.det(rotation) <= 0 \
            or np.abs(value[3] - [0, 0, 0, 1]).max() > 1e-9:
        raise FieldError(f"{what} is not a rigid transform (rotation not orthonormal or bottom row not 0 0 0 1)")
    return value


def check_frame(frame: Frame, *, needs_lidar: bool = False, same_image_size: bool = False,
                cameras_required: Sequence[str] | None = None) -> None:
    """Raise :class:`FieldError` naming the first problem of ``frame`` for a reconstruction.

    Args:
        frame: the frame.
        needs_lidar: the method reads LiDAR: at least one sweep with at least one finite point.
        same_image_size: all cameras must have the same image size.
        cameras_required: camera names the method needs (e.g. the rig a network was trained on).
    """
    where = f"frame {frame.index}"
    if not frame.cameras:
        raise FieldError(f"{where} has no cameras")
    if cameras_required:
        missing = [name for name in cameras_required if name not in frame.cameras]
        if missing:
            raise FieldError(f"{where} is missing cameras {missing} (has {list(frame.cameras)})")
    _check_pose(frame.ego2world, f"{where} ego2world")
    sizes = {}
    for name, cam in frame.cameras.items():
        K = np.asarray(cam.K, dtype=np.float64) if cam.K is not None else None
        if K is None or K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise FieldError(f"{where} camera {name!r}: intrinsics K missing, NaN/inf or not a pinhole matrix")
        _check_pose(cam.cam2world, f"{where} camera {name!r} cam2world")
        try:
            cam.load_image_uint8()  # checks the decoded size against the calibration's
        except (OSError, CaptureError, ValueError) as error:
            raise FieldError(f"{where} camera {name!r}: cannot load its image ({error})") from None
        sizes[name] = (int(cam.width), int(cam.height))
    if same_image_size and len(set(sizes.values())) > 1:
        raise FieldError(f"{where}: cameras have inconsistent image sizes "
                         + ", ".join(f"{n} {w}x{h}" for n, (w, h) in sizes.items()))
    if needs_lidar:
        if not frame.lidar:
            raise FieldError(f"{where} has no LiDAR sweep")
        total = 0
        for name, sweep in frame.lidar.items():
            _check_pose(sweep.sensor2world, f"{where} LiDAR {name!r} sensor2world")
            try:
                points = sweep.load_points()
            except (OSError, CaptureError, ValueError) as error:
                raise FieldError(f"{where} LiDAR {name!r}: points missing or unreadable ({error})") from None
            if not np.isfinite(points[:, :3]).all():
                raise FieldError(f"{where} LiDAR {name!r} holds NaN or inf points")
            total += len(points)
        if total == 0:
            raise FieldError(f"{where}: the LiDAR sweep is empty (0 points)")
