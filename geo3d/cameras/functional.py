"""Pinhole camera ops on plain tensors: projection, unprojection, rays, depth maps, frustum tests.

Conventions (``docs/conventions.md``): OpenCV camera axes (x right, y down, z forward), poses are
4x4 ``cam2world`` matrices, lengths are metres, depth is **z-depth** (0 = no measurement).
``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` is in pixels with pixel centres at integer
coordinates, so pixel ``(u, v)`` = (column, row) covers ``[u - 0.5, u + 0.5) x [v - 0.5, v + 0.5)``
and an image spans ``[-0.5, W - 0.5) x [-0.5, H - 0.5)``.

Only ``fx, s, cx, fy, cy`` are read from ``K``; the other entries are taken as 0 and 1 whatever
they hold. Every function is pure PyTorch, works in the dtype of its inputs (float32 or float64), broadcasts
over leading batch dimensions (``K [..., 3, 3]`` and ``cam2world [..., 4, 4]`` broadcast against
the batch dimensions of the points) and, except :func:`points_to_depth` and :func:`frustum_mask`,
is differentiable. Shapes are checked (``ValueError`` naming the argument); values are not (no NaN
check, which would cost a device sync per call): :class:`geo3d.cameras.PinholeCameras` validates
its values once at construction.

Precision: in float32 keep world coordinates within a few hundred metres of the origin (re-centre
nuScenes global coordinates first); a 1 km offset costs about 0.1 px of projection error.
"""

from __future__ import annotations

import math
from numbers import Integral
from typing import NamedTuple

import torch
from torch import Tensor

from geo3d.geometry.poses import invert_pose

DEPTH_EPS = 1e-8
"""Smallest ``|z|`` (metres) :func:`project_points` divides by: ``z`` in ``(-eps, eps)`` is clamped
to ``+-eps`` keeping its sign (0 counts as positive), so points on the camera plane give huge but
finite pixels. Their ``depth`` is returned unclamped: callers mask with ``depth > 0`` (or a near
plane) before using ``uv``."""


class Projection(NamedTuple):
    """Pixels and z-depths of projected points.

    Attributes:
        uv: ``[..., N, 2]`` pixel coordinates (column, row); meaningful only where ``depth > 0``.
        depth: ``[..., N]`` camera-frame z in metres (negative behind the camera).
    """

    uv: Tensor
    depth: Tensor


class Rays(NamedTuple):
    """Camera rays in the world frame; a point on a ray is ``origins + t * directions``.

    Attributes:
        origins: ``[..., 3]`` camera centres in world metres (an expanded view of the camera
            centres: call ``.contiguous()`` before writing into it).
        directions: ``[..., 3]`` unit-length directions in the world frame.
        near, far: ``[...]`` ray-parameter range ``t`` in metres along the unit direction
            (expanded views, like ``origins``).
        z_per_unit: ``[...]`` camera-frame z gained per metre along the ray, ``1 / |K^-1 [u, v, 1]|``:
            a hit at ``t`` has z-depth ``t * z_per_unit`` (converts ray lengths to depth maps).
    """

    origins: Tensor
    directions: Tensor
    near: Tensor
    far: Tensor
    z_per_unit: Tensor


class DepthPoints(NamedTuple):
    """World points of the valid pixels of a depth-map batch (see :func:`valid_depth_points`).

    Attributes:
        points_world: ``[M, 3]`` world metres.
        camera_index: ``[M]`` int64 camera of each point.
        pixels: ``[M, 2]`` int64 pixel ``(u, v)`` = (column, row) of each point.
    """

    points_world: Tensor
    camera_index: Tensor
    pixels: Tensor


# --------------------------------------------------------------------------------------------- checks


def _check_shape(tensor: Tensor, name: str, trailing: tuple) -> None:
    """Raise unless ``tensor`` is a tensor whose last dims match ``trailing`` (str = any size)."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    got = tuple(tensor.shape[-len(trailing) :]) if tensor.ndim >= len(trailing) else None
    if got is None or any(isinstance(t, int) and g != t for g, t in zip(got, trailing)):
        want = ", ".join(str(t) for t in trailing)
        raise ValueError(f"{name} must have shape [..., {want}], got {list(tensor.shape)}")


def _check_image_size(height: int, width: int) -> None:
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _safe_depth(z: Tensor) -> Tensor:
    """``z`` with ``|z| >= DEPTH_EPS``, sign preserved (0 -> +eps)."""
    return torch.where(z < 0, z.clamp(max=-DEPTH_EPS), z.clamp(min=DEPTH_EPS))


def _matrix(rows) -> Tensor:
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def _pinhole_K(K: Tensor) -> Tensor:
    """``[..., 3, 3]`` rebuilt from ``fx, s, cx, fy, cy`` alone (the other entries read as 0 / 1)."""
    fx, s, cx, fy, cy = K[..., 0, 0], K[..., 0, 1], K[..., 0, 2], K[..., 1, 1], K[..., 1, 2]
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    return _matrix(((fx, s, cx), (zero, fy, cy), (zero, zero, one)))


def _inverse_intrinsics(K: Tensor) -> Tensor:
    """``[..., 3, 3]`` closed-form inverse of the pinhole ``K`` (differentiable, no LAPACK)."""
    fx, s, cx, fy, cy = K[..., 0, 0], K[..., 0, 1], K[..., 0, 2], K[..., 1, 1], K[..., 1, 2]
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    return _matrix(
        (
            (1 / fx, -s / (fx * fy), (s * cy - cx * fy) / (fx * fy)),
            (zero, 1 / fy, -cy / fy),
            (zero, zero, one),
        )
    )


def _pixel_rays_cam_z1(uv: Tensor, K: Tensor, cam2world: Tensor) -> Tensor:
    """``[..., R, 3]`` world-frame directions ``R K^-1 [u, v, 1]`` (camera z component = 1)."""
    pixels_h = torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)
    pixel2world_rot = cam2world[..., :3, :3] @ _inverse_intrinsics(K)
    return pixels_h @ pixel2world_rot.mT


# ----------------------------------------------------------------------------------------- projection


def project_points(points_cam: Tensor, K: Tensor) -> Projection:
    """Project camera-frame points with a pinhole ``K`` (OpenCV model with skew).

    ``u = fx x/z + s y/z + cx``, ``v = fy y/z + cy``; ``z`` is clamped away from 0 as described in
    :data:`DEPTH_EPS`, so mask with ``depth > 0`` before using ``uv``.

    Args:
        points_cam: ``[..., N, 3]`` points in the camera frame, metres.
        K: ``[..., 3, 3]`` intrinsics in pixels.

    Returns:
        :class:`Projection` with ``uv [..., N, 2]`` and ``depth [..., N]`` (= z).
    """
    _check_shape(points_cam, "points_cam", ("N", 3))
    _check_shape(K, "K", (3, 3))
    depth = points_cam[..., 2]
    safe_depth = _safe_depth(depth)
    x_normalised, y_normalised = points_cam[..., 0] / safe_depth, points_cam[..., 1] / safe_depth
    fx, s, cx = K[..., 0, 0, None], K[..., 0, 1, None], K[..., 0, 2, None]
    fy, cy = K[..., 1, 1, None], K[..., 1, 2, None]
    u = fx * x_normalised + s * y_normalised + cx
    v = (fy * y_normalised + cy).expand_as(u)
    return Projection(torch.stack([u, v], dim=-1), depth.expand_as(u))


def unproject_points(uv: Tensor, depth: Tensor, K: Tensor) -> Tensor:
    """Lift pixels with z-depths to camera-frame points (inverse of :func:`project_points`).

    Args:
        uv: ``[..., N, 2]`` pixel coordinates (column, row).
        depth: ``[..., N]`` z-depth in metres (not the ray length).
        K: ``[..., 3, 3]`` intrinsics in pixels.

    Returns:
        ``[..., N, 3]`` camera-frame points, metres.
    """
    _check_shape(uv, "uv", ("N", 2))
    _check_shape(depth, "depth", ("N",))
    _check_shape(K, "K", (3, 3))
    fx, s, cx = K[..., 0, 0, None], K[..., 0, 1, None], K[..., 0, 2, None]
    fy, cy = K[..., 1, 1, None], K[..., 1, 2, None]
    y_normalised = (uv[..., 1] - cy) / fy
    x_normalised = (uv[..., 0] - cx - s * y_normalised) / fx
    x_cam, y_cam = x_normalised * depth, y_normalised * depth
    return torch.stack([x_cam, y_cam, depth.expand_as(x_cam)], dim=-1)


def world_to_pixels(points_world: Tensor, K: Tensor, cam2world: Tensor) -> Projection:
    """Project world points into cameras.

    Composes ``K @ world2cam[:3]`` into one ``[..., 3, 4]`` matrix and applies it in a single
    matmul; ``world2cam`` is the rigid inverse of ``cam2world`` (``R^T, -R^T t``).

    Args:
        points_world: ``[..., N, 3]`` world points, metres (e.g. ``[N, 3]`` shared by all cameras).
        K: ``[..., 3, 3]`` intrinsics in pixels.
        cam2world: ``[..., 4, 4]`` camera-to-world poses.

    Returns:
        :class:`Projection` with ``uv [..., N, 2]`` and ``depth [..., N]``, the batch dims being
        the broadcast of those of the three inputs (``[C, N, ...]`` for ``[N, 3]`` points and C cameras).
    """
    _check_shape(points_world, "points_world", ("N", 3))
    _check_shape(K, "K", (3, 3))
    _check_shape(cam2world, "cam2world", (4, 4))
    world2pixel = _pinhole_K(K) @ invert_pose(cam2world)[..., :3, :]  # [..., 3, 4]
    pixels_h = points_world @ world2pixel[..., :3].mT + world2pixel[..., None, :, 3]
    depth = pixels_h[..., 2]
    return Projection(pixels_h[..., :2] / _safe_depth(depth)[..., None], depth)


# ----------------------------------------------------------------------------------------------- rays


def pixel_grid(height: int, width: int, device=None, dtype: torch.dtype | None = None) -> Tensor:
    """``[H, W, 2]`` pixel-centre coordinates ``(u, v)`` = (column, row): ``grid[v, u] == (u, v)``."""
    _check_image_size(height, width)
    dtype = dtype or torch.get_default_dtype()
    rows = torch.arange(height, device=device, dtype=dtype)
    cols = torch.arange(width, device=device, dtype=dtype)
    v, u = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack([u, v], dim=-1)


def _full_view(value, like: Tensor) -> Tensor:
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).expand(like.shape)


def rays_from_pixels(uv: Tensor, K: Tensor, cam2world: Tensor, near=0.0, far=math.inf) -> Rays:
    """World rays through arbitrary (e.g. randomly sampled, sub-pixel) pixel positions.

    Args:
        uv: ``[..., R, 2]`` pixel coordinates (column, row); integers are pixel centres.
        K: ``[..., 3, 3]`` intrinsics in pixels.
        cam2world: ``[..., 4, 4]`` camera-to-world poses.
        near, far: ray-parameter range in metres along the unit direction (not z); floats or
            tensors broadcastable to the ray batch shape ``[..., R]``.

    Returns:
        :class:`Rays` with ``[..., R, 3]`` origins/directions and ``[..., R]`` near/far/z_per_unit.
    """
    _check_shape(uv, "uv", ("R", 2))
    _check_shape(K, "K", (3, 3))
    _check_shape(cam2world, "cam2world", (4, 4))
    directions_z1 = _pixel_rays_cam_z1(uv, K, cam2world)
    length = torch.linalg.vector_norm(directions_z1, dim=-1)
    directions = directions_z1 / length[..., None]
    origins = cam2world[..., None, :3, 3].expand_as(directions)
    z_per_unit = 1.0 / length
    return Rays(origins, directions, _full_view(near, z_per_unit), _full_view(far, z_per_unit), z_per_unit)


def generate_rays(K: Tensor, cam2world: Tensor, height: int, width: int, near=0.0, far=math.inf) -> Rays:
    """One world ray through the centre of every pixel of every camera.

    Args:
        K: ``[C, 3, 3]`` (or any ``[..., 3, 3]``) intrinsics in pixels.
        cam2world: ``[C, 4, 4]`` camera-to-world poses.
        height, width: image size in pixels.
        near, far: ray-parameter range in metres along the unit direction; floats or tensors
            broadcastable to ``[C, H, W]`` (per camera: ``near[:, None, None]``).

    Returns:
        :class:`Rays`: origins/directions ``[C, H, W, 3]``, near/far/z_per_unit ``[C, H, W]``.
        The ray of pixel ``(u, v)`` is at ``[c, v, u]``.
    """
    _check_shape(K, "K", (3, 3))
    _check_shape(cam2world, "cam2world", (4, 4))
    dtype = torch.promote_types(K.dtype, cam2world.dtype)
    uv = pixel_grid(height, width, device=K.device, dtype=dtype).reshape(height * width, 2)
    rays = rays_from_pixels(uv, K, cam2world)
    directions = rays.directions.unflatten(-2, (height, width))
    z_per_unit = rays.z_per_unit.unflatten(-1, (height, width))
    origins = cam2world[..., None, None, :3, 3].expand_as(directions)
    return Rays(origins, directions, _full_view(near, z_per_unit), _full_view(far, z_per_unit), z_per_unit)


# ----------------------------------------------------------------------------------------- depth maps


def depth_to_points(depth: Tensor, K: Tensor, cam2world: Tensor) -> Tensor:
    """World point of every pixel of z-depth maps: ``cam2world @ (depth * K^-1 [u, v, 1])``.

    Pure PyTorch (kornia's ``depth_to_3d_v2`` wants ``K`` exactly ``[B, 3, 3]``, returns camera-frame
    points and ignores skew). Pixels with depth 0 (no measurement) come out as the camera centre
    and mean nothing: mask them with ``depth > 0`` or use :func:`valid_depth_points`.

    Args:
        depth: ``[..., H, W]`` z-depth in metres (e.g. ``[C, H, W]``).
        K: ``[..., 3, 3]`` intrinsics in pixels.
        cam2world: ``[..., 4, 4]`` camera-to-world poses.

    Returns:
        ``[..., H, W, 3]`` world points, metres.
    """
    _check_shape(depth, "depth", ("H", "W"))
    _check_shape(K, "K", (3, 3))
    _check_shape(cam2world, "cam2world", (4, 4))
    height, width = depth.shape[-2:]
    uv = pixel_grid(height, width, device=depth.device, dtype=depth.dtype).reshape(height * width, 2)
    directions_z1 = _pixel_rays_cam_z1(uv, K, cam2world)  # [..., H*W, 3]
    points = cam2world[..., None, :3, 3] + depth.flatten(-2)[..., None] * directions_z1
    return points.unflatten(-2, (height, width))


def valid_depth_points(depth: Tensor, K: Tensor, cam2world: Tensor) -> DepthPoints:
    """World points of the pixels with a finite depth > 0, gathered from ``[C, H, W]`` depth maps.

    Args:
        depth: ``[C, H, W]`` z-depth in metres, 0 = no measurement.
        K: ``[C, 3, 3]`` intrinsics; cam2world: ``[C, 4, 4]`` poses.

    Returns:
        :class:`DepthPoints` in camera-major, row-major pixel order.
    """
    _check_shape(depth, "depth", ("H", "W"))
    if depth.ndim != 3:
        raise ValueError(f"depth must have shape [C, H, W], got {list(depth.shape)}")
    points = depth_to_points(depth, K, cam2world)
    valid = (depth > 0) & torch.isfinite(depth)
    camera_index, rows, cols = valid.nonzero(as_tuple=True)
    return DepthPoints(points[valid], camera_index, torch.stack([cols, rows], dim=-1))


@torch.no_grad()
def points_to_depth(
    points_world: Tensor, K: Tensor, cam2world: Tensor, height: int, width: int, near: float = 1e-6
) -> Tensor:
    """Z-buffer world points into depth maps (not differentiable).

    A point lands in the pixel whose centre is nearest (``floor(uv + 0.5)``, so a point exactly on
    a pixel border goes right/down, matching :func:`frustum_mask`'s ``[-0.5, W - 0.5)``); it is
    kept only when ``z > near`` and inside the image; each pixel keeps the smallest z.

    Args:
        points_world: ``[N, 3]`` world points in metres (or ``[C, N, 3]``, one set per camera).
        K: ``[C, 3, 3]`` (or any ``[..., 3, 3]``) intrinsics in pixels.
        cam2world: ``[C, 4, 4]`` camera-to-world poses.
        height, width: image size in pixels.
        near: smallest z (metres, exclusive) a point must have.

    Returns:
        ``[C, H, W]`` z-depth in metres, 0 where no point landed; dtype of the points.
    """
    _check_image_size(height, width)
    projection = world_to_pixels(points_world, K, cam2world)
    batch = projection.depth.shape[:-1]
    num_images = math.prod(batch)
    pixel = torch.floor(projection.uv + 0.5)
    u, v = pixel.unbind(-1)
    inside = (projection.depth > near) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    image_index = torch.arange(num_images, device=u.device).reshape(batch + (1,))
    u_index = u.clamp(0, width - 1).long()
    v_index = v.clamp(0, height - 1).long()
    flat_index = (image_index * height + v_index) * width + u_index
    discard = num_images * height * width  # one extra bin collects the rejected points
    flat_index = torch.where(inside, flat_index, discard)
    zbuffer = projection.depth.new_zeros(discard + 1)  # include_self=False: pixels no point hits stay 0
    zbuffer.scatter_reduce_(
        0, flat_index.reshape(-1), projection.depth.reshape(-1), "amin", include_self=False
    )
    return zbuffer[:-1].reshape(batch + (height, width))


@torch.no_grad()
def frustum_mask(
    points_world: Tensor,
    K: Tensor,
    cam2world: Tensor,
    height: int,
    width: int,
    near: float = 0.0,
    far: float = math.inf,
) -> Tensor:
    """Which points each camera sees: ``near < z <= far`` and ``uv`` in ``[-0.5, W-0.5) x [-0.5, H-0.5)``.

    Args:
        points_world: ``[N, 3]`` world points in metres (or ``[C, N, 3]``).
        K: ``[C, 3, 3]`` intrinsics; cam2world: ``[C, 4, 4]`` poses.
        height, width: image size in pixels.
        near, far: z range in metres (z-depth, not ray length).

    Returns:
        ``[C, N]`` bool; NaN points are outside.
    """
    _check_image_size(height, width)
    uv, depth = world_to_pixels(points_world, K, cam2world)
    u, v = uv.unbind(-1)
    in_depth = (depth > near) & (depth <= far)
    return in_depth & (u >= -0.5) & (u < width - 0.5) & (v >= -0.5) & (v < height - 0.5)
