"""4x4 rigid poses: construction, inversion, point transforms and validation of calibration.

A pose ``a2b`` maps homogeneous points from frame ``a`` to frame ``b``: ``p_b = a2b @ p_a``.
"""

from __future__ import annotations

import numpy as np

from geo3d.errors import CalibrationError
from geo3d.geometry.rotations import _is_torch, quaternion_to_matrix

ORTHONORMAL_TOL = 1e-3
"""Largest ``|R^T R - I|`` entry accepted for a rotation read from a file. Float32 text carries about
1e-7 of rounding, but real data sets are looser (7-Scenes poses reach 1.8e-4); a scaled or sheared
matrix, the error this check exists for, is far above 1e-3."""


def make_pose(rotation, translation) -> np.ndarray:
    """``[..., 4, 4]`` float64 pose from ``[..., 3, 3]`` rotation matrices (or ``[..., 4]``
    quaternions ``(w, x, y, z)``) and ``[..., 3]`` translations in metres."""
    rotation = np.asarray(rotation, dtype=np.float64)
    if rotation.shape[-2:] != (3, 3):
        if rotation.shape[-1:] != (4,):
            raise ValueError(f"rotation must be [..., 3, 3] or a quaternion [..., 4], got {rotation.shape}")
        rotation = quaternion_to_matrix(rotation)
    translation = np.asarray(translation, dtype=np.float64)
    batch = np.broadcast_shapes(rotation.shape[:-2], translation.shape[:-1])
    pose = np.zeros(batch + (4, 4))
    pose[..., :3, :3] = rotation
    pose[..., :3, 3] = translation
    pose[..., 3, 3] = 1.0
    return pose


def invert_pose(pose):
    """Inverse of rigid poses ``[..., 4, 4]`` (``R^T``, ``-R^T t``); NumPy or torch.

    Exact for rigid transforms and cheaper and better conditioned than a general inverse.
    """
    if _is_torch(pose):
        import torch

        rot_t = pose[..., :3, :3].transpose(-1, -2)
        trans = -(rot_t @ pose[..., :3, 3:4])
        bottom = pose[..., 3:4, :].new_zeros(pose.shape[:-2] + (1, 4))
        bottom[..., 3] = 1.0
        return torch.cat([torch.cat([rot_t, trans], dim=-1), bottom], dim=-2)
    pose = np.asarray(pose)
    out = np.zeros_like(pose, dtype=np.result_type(pose.dtype, np.float32))
    rot_t = np.swapaxes(pose[..., :3, :3], -1, -2)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ pose[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def transform_points(pose, points):
    """Apply ``[..., 4, 4]`` poses to ``[..., N, 3]`` points: ``R p + t``. NumPy or torch."""
    rot = pose[..., :3, :3]
    trans = pose[..., None, :3, 3]
    if _is_torch(points):
        return points @ rot.transpose(-1, -2) + trans
    return points @ np.swapaxes(rot, -1, -2) + trans


def check_pose(pose, what: str = "pose", tol: float = ORTHONORMAL_TOL) -> np.ndarray:
    """Validate a rigid 4x4 pose read from a file and return it as float64.

    Raises:
        CalibrationError: naming ``what`` (e.g. ``"transforms.json: frame 3 transform_matrix"``)
            when the shape is not 4x4, a value is NaN/inf, the last row is not ``[0, 0, 0, 1]``,
            the rotation is not orthonormal within ``tol`` or is a reflection.
    """
    try:
        arr = np.asarray(pose, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{what}: not a numeric 4x4 matrix ({exc})") from None
    if arr.shape != (4, 4):
        raise CalibrationError(f"{what}: expected a 4x4 matrix, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise CalibrationError(f"{what}: contains NaN or inf")
    if not np.allclose(arr[3], [0.0, 0.0, 0.0, 1.0], atol=tol):
        raise CalibrationError(f"{what}: last row is {arr[3].tolist()}, expected [0, 0, 0, 1]")
    rot = arr[:3, :3]
    err = np.abs(rot.T @ rot - np.eye(3)).max()
    if err > tol:
        raise CalibrationError(f"{what}: rotation is not orthonormal (max |R^T R - I| = {err:.3g})")
    if np.linalg.det(rot) < 0:
        raise CalibrationError(f"{what}: rotation has determinant < 0 (a reflection, not a pose)")
    arr[3] = [0.0, 0.0, 0.0, 1.0]
    return arr


def check_intrinsics(K, what: str = "intrinsics") -> np.ndarray:
    """Validate a 3x3 pinhole intrinsic matrix in pixels and return it as float64.

    Raises:
        CalibrationError: wrong shape, NaN/inf, non-positive focal lengths, or a last row other
            than ``[0, 0, 1]``.
    """
    try:
        arr = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{what}: not a numeric 3x3 matrix ({exc})") from None
    if arr.shape != (3, 3):
        raise CalibrationError(f"{what}: expected a 3x3 intrinsic matrix, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise CalibrationError(f"{what}: contains NaN or inf")
    if arr[0, 0] <= 0 or arr[1, 1] <= 0:
        raise CalibrationError(f"{what}: focal lengths must be > 0, got fx={arr[0, 0]}, fy={arr[1, 1]}")
    if not np.allclose(arr[2], [0.0, 0.0, 1.0]) or arr[1, 0] != 0:
        raise CalibrationError(f"{what}: not an upper-triangular K with last row [0, 0, 1]: {arr.tolist()}")
    return arr
