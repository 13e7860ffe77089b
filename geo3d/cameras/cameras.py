"""A batch of pinhole cameras of one image size: :class:`PinholeCameras`.

A convenience container over the plain-tensor ops of :mod:`geo3d.cameras.functional`; every method
delegates to one of them. Conventions: ``docs/conventions.md`` (OpenCV axes, ``cam2world`` poses,
``K`` in pixels with pixel centres at integers, metres, z-depth).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import torch
from torch import Tensor

from geo3d.cameras import functional as F
from geo3d.geometry.poses import ORTHONORMAL_TOL, invert_pose
from geo3d.structures.capture import CameraFrame


def check_camera_batch(owner: str, K: Tensor, pose: Tensor, pose_name: str, width, height, names) -> None:
    """Validate a batch of C cameras (shared by :class:`PinholeCameras` and ``CameraRig``).

    Raises:
        TypeError: ``K`` or the pose is not a tensor, or ``names`` is a str.
        ValueError: naming the argument: shapes other than ``K [C, 3, 3]`` and ``pose [C, 4, 4]``,
            dtypes that are not floating point or differ, different devices, NaN/inf, a ``K`` that
            is not ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` with ``fx, fy > 0``, a pose whose last
            row is not ``[0, 0, 0, 1]`` (both within ``ORTHONORMAL_TOL``, so that gradcheck's
            perturbations pass; the ops never read those entries), non-positive sizes, or a
            ``names`` that is a str or of the wrong length.
    """
    for name, tensor, size in (("K", K, 3), (pose_name, pose, 4)):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{owner}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.ndim != 3 or tensor.shape[1:] != (size, size):
            raise ValueError(f"{owner}: {name} must have shape [C, {size}, {size}], got {list(tensor.shape)}")
        if not tensor.is_floating_point():
            raise ValueError(f"{owner}: {name} must be a floating-point tensor, got {tensor.dtype}")
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{owner}: {name} contains NaN or inf")
    if pose.shape[0] != K.shape[0]:
        raise ValueError(
            f"{owner}: K has {K.shape[0]} cameras but {pose_name} has {pose.shape[0]} "
            f"(K {list(K.shape)}, {pose_name} {list(pose.shape)})"
        )
    if K.dtype != pose.dtype or K.device != pose.device:
        raise ValueError(
            f"{owner}: K ({K.dtype}, {K.device}) and {pose_name} ({pose.dtype}, {pose.device}) "
            "must share dtype and device"
        )
    if K.shape[0]:
        pinhole_zeros_one = torch.stack([K[:, 1, 0], K[:, 2, 0], K[:, 2, 1], K[:, 2, 2] - 1], dim=-1)
        is_pinhole = (pinhole_zeros_one.abs() <= ORTHONORMAL_TOL).all(-1)
        bad_K = ~(is_pinhole & (K[:, 0, 0] > 0) & (K[:, 1, 1] > 0))
        if bool(bad_K.any()):
            index = int(bad_K.nonzero()[0, 0])
            raise ValueError(
                f"{owner}: K[{index}] must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0, "
                f"got {K[index].tolist()}"
            )
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=pose.dtype, device=pose.device)
        bad_pose = ~torch.isclose(pose[:, 3], bottom, rtol=0.0, atol=ORTHONORMAL_TOL).all(-1)
        if bool(bad_pose.any()):
            index = int(bad_pose.nonzero()[0, 0])
            raise ValueError(
                f"{owner}: {pose_name}[{index}] last row must be [0, 0, 0, 1], got {pose[index, 3].tolist()}"
            )
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value <= 0:
            raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    if isinstance(names, str):
        raise TypeError(f"{owner}: names must be a sequence of camera names, got the str {names!r}")
    if names is not None and len(names) != K.shape[0]:
        raise ValueError(f"{owner}: names has {len(names)} entries for {K.shape[0]} cameras")


def common_image_size(frames: Sequence[CameraFrame]) -> tuple[int, int]:
    """``(width, height)`` shared by ``frames``; ``ValueError`` naming the first camera that differs."""
    if not frames:
        raise ValueError("frames is empty: need at least one CameraFrame")
    width, height = int(frames[0].width), int(frames[0].height)
    for frame in frames[1:]:
        if (int(frame.width), int(frame.height)) != (width, height):
            raise ValueError(
                f"camera {frame.camera!r} is {frame.width}x{frame.height} but camera "
                f"{frames[0].camera!r} is {width}x{height}: a camera batch needs one image size"
            )
    return width, height


@dataclass(frozen=True, eq=False)
class PinholeCameras:
    """C pinhole cameras sharing one image size.

    Attributes:
        K: ``[C, 3, 3]`` intrinsics in pixels, ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]``.
        cam2world: ``[C, 4, 4]`` camera-to-world poses (OpenCV axes, metres); same dtype/device as K.
        width, height: image size in pixels.
        names: optional camera names, one per camera.
    """

    K: Tensor
    cam2world: Tensor
    width: int
    height: int
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        check_camera_batch(
            "PinholeCameras", self.K, self.cam2world, "cam2world", self.width, self.height, self.names
        )
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        if self.names is not None:
            object.__setattr__(self, "names", tuple(self.names))

    # ------------------------------------------------------------------------------- constructors

    @classmethod
    def from_numpy(
        cls,
        K,
        cam2world,
        width: int,
        height: int,
        names: Sequence[str] | None = None,
        dtype: torch.dtype = torch.float32,
        device=None,
    ) -> PinholeCameras:
        """From arrays: ``K [C, 3, 3]`` (or one ``[3, 3]``) and ``cam2world [C, 4, 4]`` (or ``[4, 4]``)."""
        K = np.asarray(K, dtype=np.float64)
        cam2world = np.asarray(cam2world, dtype=np.float64)
        K = K[None] if K.ndim == 2 else K
        cam2world = cam2world[None] if cam2world.ndim == 2 else cam2world
        return cls(
            torch.as_tensor(K, dtype=dtype, device=device),
            torch.as_tensor(cam2world, dtype=dtype, device=device),
            width,
            height,
            None if names is None else tuple(names),
        )

    @classmethod
    def from_camera_frames(
        cls, frames: Sequence[CameraFrame], dtype: torch.dtype = torch.float32, device=None
    ) -> PinholeCameras:
        """From :class:`~geo3d.structures.capture.CameraFrame` s of one image size (names = ``frame.camera``).

        The frames' ``distortion`` is not modelled (the ops assume undistorted images); a warning
        names the cameras whose coefficients are non-zero.
        """
        distorted = sorted({f.camera for f in frames if f.distortion is not None and np.any(f.distortion)})
        if distorted:
            warnings.warn(
                f"cameras {distorted} have lens distortion, which PinholeCameras ignores: undistort the "
                "images first (e.g. COLMAP's image_undistorter) for exact projections",
                stacklevel=2,
            )
        width, height = common_image_size(frames)
        return cls.from_numpy(
            np.stack([frame.K for frame in frames]),
            np.stack([frame.cam2world for frame in frames]),
            width,
            height,
            names=[frame.camera for frame in frames],
            dtype=dtype,
            device=device,
        )

    # ---------------------------------------------------------------------------------- container

    def __len__(self) -> int:
        return self.K.shape[0]

    def __getitem__(self, index) -> PinholeCameras:
        """Cameras selected by an int, slice, list of ints, int tensor or bool mask (always a batch)."""
        if isinstance(index, Tensor):
            index = index.cpu()
        selected = torch.arange(len(self))[index]
        selected = selected.reshape(-1)
        names = None if self.names is None else tuple(self.names[i] for i in selected.tolist())
        on_device = selected.to(self.K.device)
        return PinholeCameras(self.K[on_device], self.cam2world[on_device], self.width, self.height, names)

    def to(self, device=None, dtype: torch.dtype | None = None) -> PinholeCameras:
        """Copy on another device and/or floating dtype."""
        return dataclasses.replace(
            self,
            K=self.K.to(device=device, dtype=dtype),
            cam2world=self.cam2world.to(device=device, dtype=dtype),
        )

    @property
    def device(self) -> torch.device:
        return self.K.device

    @property
    def dtype(self) -> torch.dtype:
        return self.K.dtype

    @property
    def world2cam(self) -> Tensor:
        """``[C, 4, 4]`` world-to-camera poses (rigid inverse of ``cam2world``)."""
        return invert_pose(self.cam2world)

    @property
    def centers(self) -> Tensor:
        """``[C, 3]`` camera centres in world metres."""
        return self.cam2world[:, :3, 3]

    def __repr__(self) -> str:
        names = "" if self.names is None else f", names={list(self.names)}"
        size = f"{self.width}x{self.height}"
        return f"PinholeCameras({len(self)} cameras, {size}, {self.dtype}, {self.device}{names})"

    # ---------------------------------------------------------------------------------------- ops

    def project(self, points_world: Tensor) -> F.Projection:
        """Project ``[N, 3]`` (or ``[C, N, 3]``) world points: ``uv [C, N, 2]``, ``depth [C, N]``."""
        return F.world_to_pixels(points_world, self.K, self.cam2world)

    def generate_rays(self, near=0.0, far=math.inf) -> F.Rays:
        """A ray per pixel centre, ``[C, H, W, ...]``; see :func:`~geo3d.cameras.functional.generate_rays`."""
        return F.generate_rays(self.K, self.cam2world, self.height, self.width, near, far)

    def rays_from_pixels(self, uv: Tensor, near=0.0, far=math.inf) -> F.Rays:
        """Rays through ``uv [C, R, 2]`` pixel positions, ``[C, R, ...]``."""
        return F.rays_from_pixels(uv, self.K, self.cam2world, near, far)

    def _check_depth(self, depth: Tensor) -> None:
        expected = (len(self), self.height, self.width)
        if not isinstance(depth, Tensor) or tuple(depth.shape) != expected:
            got = list(depth.shape) if isinstance(depth, Tensor) else type(depth).__name__
            raise ValueError(f"depth must have shape [C, H, W] = {list(expected)}, got {got}")

    def depth_to_points(self, depth: Tensor) -> Tensor:
        """``[C, H, W, 3]`` world points of ``depth [C, H, W]`` (pixels with depth 0 mean nothing)."""
        self._check_depth(depth)
        return F.depth_to_points(depth, self.K, self.cam2world)

    def valid_depth_points(self, depth: Tensor) -> F.DepthPoints:
        """World points, camera index and pixel of each pixel of ``depth [C, H, W]`` with depth > 0."""
        self._check_depth(depth)
        return F.valid_depth_points(depth, self.K, self.cam2world)

    def points_to_depth(self, points_world: Tensor, near: float = 1e-6) -> Tensor:
        """``[C, H, W]`` z-buffered depth of ``[N, 3]`` world points, 0 where empty."""
        return F.points_to_depth(points_world, self.K, self.cam2world, self.height, self.width, near)

    def frustum_mask(self, points_world: Tensor, near: float = 0.0, far: float = math.inf) -> Tensor:
        """``[C, N]`` bool: which cameras see which of the ``[N, 3]`` world points."""
        return F.frustum_mask(points_world, self.K, self.cam2world, self.height, self.width, near, far)
