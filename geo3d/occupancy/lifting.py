"""Parameter-free 2D-to-3D lifting: sample image features at the projections of 3D points (Simple-BEV).

Every query point (typically a voxel centre of a grid in the ego frame) is projected into every camera;
where it lies in front of the camera (``z > near``) and inside the feature map, the camera's features are
sampled bilinearly at its pixel, and the point's feature is the mean over the cameras that see it (zero
where none does). The lifting has no parameters, so everything it learns is in the image encoder before
it and the 3D decoder after it; averaging makes the result independent of the order of the cameras.

Pixel conventions (``docs/conventions.md``): pixel centres are at integer coordinates and an image of
width ``W`` spans ``[-0.5, W - 0.5]``. A feature map of width ``w`` computed from it covers the same
extent, so image pixel ``u`` is feature pixel ``(u + 0.5) * w / W - 0.5`` (:func:`scale_intrinsics`).
Sampling uses ``grid_sample(align_corners=False)``, whose normalised ``-1`` / ``+1`` are the outer edges
``-0.5`` / ``w - 0.5`` of the map: the same convention. Points in the half-pixel border between the
outermost centres and the edge take the border values (``padding_mode="border"``), so the sampled value
is the bilinear interpolation of the feature map with coordinates clamped to ``[0, w - 1] x [0, h - 1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from geo3d.occupancy.targets import OccupancyError, check_finite_tensor
from geo3d.synthetic.occupancy import OccupancyGridSpec

DEFAULT_NEAR_M = 0.1
"""Default near plane (metres of camera z): points closer or behind a camera are not seen by it."""

DEFAULT_CHUNK_POINTS = 1 << 16
"""Default number of points lifted at once (bounds memory to ``B * C * F * chunk`` sampled values)."""


class LiftedFeatures(NamedTuple):
    """Result of :func:`lift_image_features`.

    Attributes:
        volume: ``[B, F, P]`` mean feature of each point over the cameras that see it (0 where none).
        count: ``[B, P]`` int64 number of cameras that see each point.
    """

    volume: torch.Tensor
    count: torch.Tensor


def check_image_size(size, name: str) -> tuple[int, int]:
    """``size`` as ``(H, W)`` Python ints; :class:`OccupancyError` unless two positive integers."""
    if (not isinstance(size, Sequence) or len(size) != 2
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size)):
        raise OccupancyError(f"{name} must be (H, W), two positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def scale_intrinsics(K: torch.Tensor, image_size: Sequence[int], feature_size: Sequence[int]) -> torch.Tensor:
    """Intrinsics of a feature map (or resized image) that covers the same extent as the image.

    With pixel centres at integer coordinates, image pixel ``u`` becomes ``(u + 0.5) * w / W - 0.5`` on a
    map of width ``w`` (likewise ``v``): ``fx, s, cx`` are scaled by ``w / W`` with ``cx' = (cx + 0.5) *
    w / W - 0.5``, and ``fy, cy`` by ``h / H`` the same way.

    Args:
        K: ``[..., 3, 3]`` float intrinsics of the image, pixels.
        image_size: ``(H, W)`` of the image, pixels.
        feature_size: ``(h, w)`` of the feature map, pixels.

    Returns:
        ``[..., 3, 3]`` intrinsics of the feature map (same dtype; differentiable w.r.t. ``K``).
    """
    K = check_finite_tensor(K, "K")
    if K.ndim < 2 or K.shape[-2:] != (3, 3):
        raise OccupancyError(f"K must be [..., 3, 3], got {list(K.shape)}")
    height, width = check_image_size(image_size, "image_size")
    feat_h, feat_w = check_image_size(feature_size, "feature_size")
    sx, sy = feat_w / width, feat_h / height
    scale = K.new_tensor([[sx, sx, sx], [sy, sy, sy], [1.0, 1.0, 1.0]])
    shift = K.new_tensor([[0.0, 0.0, 0.5 * sx - 0.5], [0.0, 0.0, 0.5 * sy - 0.5], [0.0, 0.0, 0.0]])
    return K * scale + shift


def voxel_centers(spec: OccupancyGridSpec, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """``[X, Y, Z, 3]`` centres of the voxels of ``spec`` (metres, the grid's frame, usually ego).

    Voxel ``(i, j, k)`` has centre ``lower + (i + 0.5, j + 0.5, k + 0.5) * voxel_size``
    (:class:`~geo3d.synthetic.OccupancyGridSpec`).
    """
    if not isinstance(spec, OccupancyGridSpec):
        raise OccupancyError(f"spec must be an OccupancyGridSpec, got {type(spec).__name__}")
    return torch.as_tensor(spec.voxel_centers(), dtype=dtype, device=device)


def _check_lifting_inputs(features, K_feat, cam2ego, points_ego) -> None:
    check_finite_tensor(features, "features", ndim=5)
    batch, cams = features.shape[:2]
    if 0 in features.shape:
        raise OccupancyError(f"features must be non-empty [B, C, F, h, w], got {list(features.shape)}")
    check_finite_tensor(K_feat, "K_feat", ndim=4)
    if K_feat.shape != (batch, cams, 3, 3):
        raise OccupancyError(f"K_feat must be [{batch}, {cams}, 3, 3] to match features, got {list(K_feat.shape)}")
    check_finite_tensor(cam2ego, "cam2ego", ndim=4)
    if cam2ego.shape != (batch, cams, 4, 4):
        raise OccupancyError(f"cam2ego must be [{batch}, {cams}, 4, 4] to match features, "
                             f"got {list(cam2ego.shape)}")
    check_finite_tensor(points_ego, "points_ego", ndim=2, last=3)


def lift_image_features(features: torch.Tensor, K_feat: torch.Tensor, cam2ego: torch.Tensor,
                        points_ego: torch.Tensor, *, near: float = DEFAULT_NEAR_M,
                        chunk_size: int = DEFAULT_CHUNK_POINTS) -> LiftedFeatures:
    """Average, over the cameras that see them, the bilinearly sampled features of 3D points.

    A point ``p`` is seen by camera ``c`` when ``p_cam = inv(cam2ego[c]) @ p`` has ``z > near`` and its
    pixel ``K_feat[c] @ p_cam / z`` lies in ``[-0.5, w - 0.5] x [-0.5, h - 0.5]`` (the feature map's
    extent). Its feature there is the bilinear interpolation of ``features[c]`` (coordinates clamped to the
    outermost pixel centres, see the module docstring).

    Args:
        features: ``[B, C, F, h, w]`` float feature maps of ``C`` cameras.
        K_feat: ``[B, C, 3, 3]`` intrinsics of the feature maps in feature pixels (image ``K`` through
            :func:`scale_intrinsics`).
        cam2ego: ``[B, C, 4, 4]`` camera-to-ego poses (OpenCV camera axes), metres.
        points_ego: ``[P, 3]`` query points in the ego frame, metres (e.g. :func:`voxel_centers` flattened).
        near: near plane in metres of camera z (> 0).
        chunk_size: points processed at once (memory ~ ``B * C * F * chunk_size`` values).

    Returns:
        :class:`LiftedFeatures` with ``volume [B, F, P]`` (dtype of ``features``; differentiable w.r.t.
        ``features``) and ``count [B, P]``.
    """
    _check_lifting_inputs(features, K_feat, cam2ego, points_ego)
    if not (float(near) > 0 and float(near) < float("inf")):
        raise OccupancyError(f"near must be finite and > 0, got {near!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise OccupancyError(f"chunk_size must be a positive int, got {chunk_size!r}")
    batch, cams, channels, feat_h, feat_w = features.shape
    dtype = features.dtype
    ego2cam = torch.linalg.inv(cam2ego.to(dtype))  # [B, C, 4, 4]
    K_feat = K_feat.to(dtype)
    flat = features.reshape(batch * cams, channels, feat_h, feat_w)
    points_ego = points_ego.to(dtype=dtype, device=features.device)
    volumes, counts = [], []
    for start in range(0, len(points_ego), chunk_size):
        points = points_ego[start:start + chunk_size]  # [P', 3]
        points_cam = torch.einsum("bcij,pj->bcpi", ego2cam[..., :3, :3], points) + ego2cam[..., None, :3, 3]
        depth = points_cam[..., 2]
        safe_depth = torch.where(depth > near, depth, torch.ones_like(depth))
        x_n, y_n = points_cam[..., 0] / safe_depth, points_cam[..., 1] / safe_depth
        u = K_feat[..., 0, 0, None] * x_n + K_feat[..., 0, 1, None] * y_n + K_feat[..., 0, 2, None]
        v = K_feat[..., 1, 1, None] * y_n + K_feat[..., 1, 2, None]
        seen = (depth > near) & (u >= -0.5) & (u <= feat_w - 0.5) & (v >= -0.5) & (v <= feat_h - 0.5)
        # grid_sample(align_corners=False): -1 and +1 are the outer edges -0.5 and size - 0.5.
        grid = torch.stack([(2.0 * u + 1.0) / feat_w - 1.0, (2.0 * v + 1.0) / feat_h - 1.0], dim=-1)
        grid = torch.where(seen[..., None], grid, torch.zeros_like(grid))  # keep far-off values finite
        sampled = F.grid_sample(flat, grid.reshape(batch * cams, 1, -1, 2), mode="bilinear",
                                padding_mode="border", align_corners=False)  # [B*C, F, 1, P']
        sampled = sampled.reshape(batch, cams, channels, -1) * seen[:, :, None].to(dtype)
        count = seen.sum(1)  # [B, P']
        volumes.append(sampled.sum(1) / count.clamp(min=1)[:, None].to(dtype))
        counts.append(count)
    if not volumes:
        return LiftedFeatures(features.new_zeros(batch, channels, 0),
                              torch.zeros(batch, 0, dtype=torch.int64, device=features.device))
    return LiftedFeatures(torch.cat(volumes, -1), torch.cat(counts, -1))
