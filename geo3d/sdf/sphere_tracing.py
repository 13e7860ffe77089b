"""Sphere tracing (Hart 1996) of any SDF, and depth / normal images through the geo3d camera model.

:func:`sphere_trace` marches each ray ``o + t d`` by the SDF value, ``t <- t + step_scale * f(o + t d)``,
until ``|f| < epsilon`` (a hit) or ``t > far`` or ``max_steps`` (a miss). For a true distance
(1-Lipschitz) function with ``step_scale <= 1`` no step crosses the surface; for fitted neural SDFs,
which are only approximately distances, a ``step_scale`` of 0.8-0.9 trades speed for safety. Only
the rays still marching are evaluated (compacted, ``chunk_size`` points per call of ``sdf_fn``).
Normals at the hits are the normalised gradient, from autograd (``sdf_fn`` must be differentiable
in the points) or central differences (any ``sdf_fn``, e.g. a mesh SDF).

:func:`render_sdf` traces one ray per pixel (:func:`geo3d.cameras.functional.generate_rays`, OpenCV
axes, ``cam2world`` poses) and returns z-depth maps (metres, **0 where the ray misses**, the geo3d
convention for "no measurement"), world-frame normal maps and hit masks; :func:`shade_normals`
turns a normal map into an RGB image and :func:`look_at` builds a ``cam2world`` pose.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from geo3d.cameras.functional import generate_rays
from geo3d.errors import SDFError

SDFFunction = Callable[[Tensor], Tensor]


class SphereTraceResult(NamedTuple):
    """Result of :func:`sphere_trace` (``[...]`` = the rays' batch shape).

    Attributes:
        t: ``[...]`` ray parameter of the hit along the unit direction (metres); ``inf`` for misses.
        points: ``[...,  3]`` hit points (world); 0 for misses.
        hit: ``[...]`` bool, True where ``|sdf| < epsilon`` was reached within ``[near, far]``.
        normals: ``[..., 3]`` unit outward normals at the hits (world); 0 for misses.
        steps: ``[...]`` int64 SDF evaluations each ray took.
    """

    t: Tensor
    points: Tensor
    hit: Tensor
    normals: Tensor
    steps: Tensor


class SDFRender(NamedTuple):
    """Result of :func:`render_sdf`.

    Attributes:
        depth: ``[C, H, W]`` z-depth in metres (camera-frame z of the hit), 0 where the ray misses.
        normals: ``[C, H, W, 3]`` unit world-frame normals, 0 where the ray misses.
        hit: ``[C, H, W]`` bool.
        steps: ``[C, H, W]`` int64 SDF evaluations per pixel.
    """

    depth: Tensor
    normals: Tensor
    hit: Tensor
    steps: Tensor


def _check_rays(origins: Tensor, directions: Tensor) -> None:
    for name, tensor in (("origins", origins), ("directions", directions)):
        if not isinstance(tensor, Tensor) or tensor.ndim < 1 or tensor.shape[-1] != 3:
            shape = list(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
            raise SDFError(f"{name} must be a [..., 3] tensor, got {shape}")
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise SDFError(f"{name} must hold finite floating-point values")
    try:
        torch.broadcast_shapes(origins.shape, directions.shape)
    except RuntimeError as exc:
        raise SDFError(f"origins {list(origins.shape)} and directions {list(directions.shape)} "
                       "do not broadcast") from exc
    if (directions.norm(dim=-1) == 0).any():
        raise SDFError("directions must be non-zero vectors")


def _call(sdf_fn: SDFFunction, points: Tensor, chunk_size: int) -> Tensor:
    parts = []
    for start in range(0, len(points), chunk_size):
        values = sdf_fn(points[start:start + chunk_size])
        parts.append(values.reshape(-1).to(points.dtype))
    return torch.cat(parts) if parts else points.new_zeros(0)


def sdf_normals(sdf_fn: SDFFunction, points: Tensor, method: Literal["autograd", "central"] = "central",
                eps: float = 1e-3, chunk_size: int = 65_536) -> Tensor:
    """Unit gradients of ``sdf_fn`` at ``points [M, 3]`` -> ``[M, 3]`` (outward for negative-inside SDFs).

    ``"autograd"`` differentiates ``sdf_fn`` (it must be differentiable in its input); ``"central"`` uses
    central differences with step ``eps`` (world units) on each axis (6 evaluations per point).
    """
    if method not in ("autograd", "central"):
        raise SDFError(f"normal method must be 'autograd' or 'central', got {method!r}")
    if len(points) == 0:
        return points.new_zeros(0, 3)
    if method == "autograd":
        grads = []
        with torch.enable_grad():
            for start in range(0, len(points), chunk_size):
                chunk = points[start:start + chunk_size].detach().requires_grad_(True)
                values = sdf_fn(chunk)
                if not values.requires_grad:
                    raise SDFError("sdf_fn is not differentiable in its input: use normal_method='central'")
                (grad,) = torch.autograd.grad(values.sum(), chunk)
                grads.append(grad.detach())
        grad = torch.cat(grads)
    else:
        if not (math.isfinite(eps) and eps > 0):
            raise SDFError(f"normal_eps must be > 0, got {eps!r}")
        offsets = torch.eye(3, dtype=points.dtype, device=points.device) * eps  # [3, 3]
        probes = torch.cat((points[:, None] + offsets, points[:, None] - offsets), dim=1)  # [M, 6, 3]
        with torch.no_grad():
            values = _call(sdf_fn, probes.reshape(-1, 3), chunk_size).view(-1, 6)
        grad = (values[:, :3] - values[:, 3:]) / (2 * eps)
    return torch.nn.functional.normalize(grad, dim=-1)


def ray_box_intersection(origins: Tensor, directions: Tensor, bounds) -> tuple[Tensor, Tensor]:
    """Slab test: ``(t_enter [...], t_exit [...])`` of rays ``o + t d`` with the box ``bounds [2, 3]``;
    ``t_enter > t_exit`` where the ray misses the box (``t`` in units of ``|d|``)."""
    box = torch.as_tensor(np.asarray(bounds, dtype=np.float64), dtype=origins.dtype, device=origins.device)
    if box.shape != (2, 3) or not torch.isfinite(box).all() or not (box[1] > box[0]).all():
        raise SDFError(f"bounds must be a finite [2, 3] box with max > min, got {box.tolist()}")
    inverse = 1.0 / directions  # +-inf on axis-parallel rays: the slab is [-inf, inf] or empty
    t0 = (box[0] - origins) * inverse
    t1 = (box[1] - origins) * inverse
    low, high = torch.minimum(t0, t1), torch.maximum(t0, t1)
    # 0 * inf = nan when the origin lies on a slab plane of an axis-parallel ray: that axis does not limit
    low = torch.where(torch.isnan(low), torch.full_like(low, -math.inf), low)
    high = torch.where(torch.isnan(high), torch.full_like(high, math.inf), high)
    return low.amax(dim=-1), high.amin(dim=-1)


def sphere_trace(sdf_fn: SDFFunction, origins: Tensor, directions: Tensor, near=0.0, far=10.0,
                 max_steps: int = 128, epsilon: float = 1e-4, step_scale: float = 1.0, bounds=None,
                 normal_method: Literal["autograd", "central"] = "central", normal_eps: float = 1e-3,
                 chunk_size: int = 65_536) -> SphereTraceResult:
    """March rays through an SDF to its zero level set.

    Args:
        sdf_fn: ``[M, 3] -> [M]`` signed distance (negative inside), world units.
        origins: ``[..., 3]`` ray origins (world).
        directions: ``[..., 3]`` ray directions (normalised here; ``t`` is in metres along them).
        near, far: ``t`` range, floats or tensors broadcastable to the rays' batch shape (``far`` finite).
        max_steps: most SDF evaluations per ray.
        epsilon: a ray hits when ``|sdf| < epsilon`` (world units).
        step_scale: fraction of the SDF value stepped (``(0, 1]``; < 1 for SDFs steeper than 1).
        bounds: optional ``[2, 3]`` box containing the shape: rays start at their entry into it and
            miss when they leave it (saves steps; a neural SDF is only trained there).
        normal_method: ``"central"`` differences (any ``sdf_fn``) or ``"autograd"``.
        normal_eps: central-difference step, world units.
        chunk_size: most points per call of ``sdf_fn``.

    Returns:
        :class:`SphereTraceResult`.
    """
    _check_rays(origins, directions)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise SDFError(f"max_steps must be a positive integer, got {max_steps!r}")
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0):
        raise SDFError(f"epsilon must be > 0, got {epsilon!r}")
    if not (isinstance(step_scale, (int, float)) and 0 < step_scale <= 1):
        raise SDFError(f"step_scale must lie in (0, 1], got {step_scale!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise SDFError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    shape = torch.broadcast_shapes(origins.shape, directions.shape)[:-1]
    dtype = torch.promote_types(origins.dtype, directions.dtype)
    o = origins.to(dtype).expand(*shape, 3).reshape(-1, 3)
    d = torch.nn.functional.normalize(directions.to(dtype).expand(*shape, 3).reshape(-1, 3), dim=-1)
    t_near = torch.as_tensor(near, dtype=dtype, device=o.device).expand(shape).reshape(-1).clone()
    t_far = torch.as_tensor(far, dtype=dtype, device=o.device).expand(shape).reshape(-1).clone()
    if not torch.isfinite(t_far).all() or not torch.isfinite(t_near).all():
        raise SDFError("near and far must be finite")
    if bounds is not None:
        enter, leave = ray_box_intersection(o, d, bounds)
        t_near = torch.maximum(t_near, enter)
        t_far = torch.minimum(t_far, leave)
    count = len(o)
    t = t_near.clone()
    hit = torch.zeros(count, dtype=torch.bool, device=o.device)
    steps = torch.zeros(count, dtype=torch.int64, device=o.device)
    active = torch.nonzero(t_near <= t_far).squeeze(1)
    with torch.no_grad():
        for _ in range(max_steps):
            if len(active) == 0:
                break
            values = _call(sdf_fn, o[active] + t[active, None] * d[active], chunk_size)
            steps[active] += 1
            converged = values.abs() < epsilon
            hit[active[converged]] = True
            t[active] = torch.where(converged, t[active], t[active] + step_scale * values)
            keep = ~converged & (t[active] <= t_far[active]) & (t[active] >= t_near[active] - epsilon)
            active = active[keep]
    points = torch.where(hit[:, None], o + t[:, None] * d, torch.zeros_like(o))
    normals = torch.zeros_like(o)
    if hit.any():
        normals[hit] = sdf_normals(sdf_fn, points[hit], normal_method, normal_eps, chunk_size).to(dtype)
    t = torch.where(hit, t, torch.full_like(t, math.inf))
    return SphereTraceResult(t.view(shape), points.view(*shape, 3), hit.view(shape), normals.view(*shape, 3),
                             steps.view(shape))


def render_sdf(sdf_fn: SDFFunction, K: Tensor, cam2world: Tensor, height: int, width: int, near=0.0,
               far=10.0, bounds=None, **trace_options) -> SDFRender:
    """Depth, normal and hit images of an SDF seen by pinhole cameras.

    Args:
        sdf_fn: ``[M, 3] -> [M]`` signed distance, world units.
        K: ``[C, 3, 3]`` intrinsics in pixels; cam2world: ``[C, 4, 4]`` poses (OpenCV axes).
        height, width: image size in pixels.
        near, far: ray range in metres along the unit ray direction.
        bounds: optional ``[2, 3]`` box around the shape (see :func:`sphere_trace`).
        trace_options: further :func:`sphere_trace` arguments (``max_steps``, ``epsilon``, ...).

    Returns:
        :class:`SDFRender`; depth is the camera-frame z of the hit (``t * z_per_unit``), 0 for misses.
    """
    rays = generate_rays(K, cam2world, height, width)
    result = sphere_trace(sdf_fn, rays.origins, rays.directions, near, far, bounds=bounds, **trace_options)
    depth = torch.where(result.hit, result.t * rays.z_per_unit, torch.zeros_like(result.t))
    return SDFRender(depth, result.normals, result.hit, result.steps)


def shade_normals(normals: Tensor, hit: Tensor, background=(255, 255, 255)) -> np.ndarray:
    """RGB image of a normal map: ``(n + 1) / 2`` per channel where ``hit``, ``background`` elsewhere.

    Args:
        normals: ``[H, W, 3]`` unit normals (any frame; world normals give a view-independent colouring).
        hit: ``[H, W]`` bool.
        background: RGB of the pixels without a hit.

    Returns:
        ``[H, W, 3]`` uint8 NumPy array.
    """
    if not isinstance(normals, Tensor) or normals.ndim != 3 or normals.shape[-1] != 3:
        raise SDFError(f"normals must be a [H, W, 3] tensor, got {getattr(normals, 'shape', type(normals))}")
    if not isinstance(hit, Tensor) or tuple(hit.shape) != tuple(normals.shape[:2]):
        raise SDFError(f"hit must be a [H, W] tensor matching normals {list(normals.shape[:2])}")
    colours = ((normals.detach().cpu().double() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    image = np.empty_like(colours)
    image[:] = np.asarray(background, dtype=np.uint8)
    mask = hit.cpu().numpy().astype(bool)
    image[mask] = colours[mask]
    return image


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> Tensor:
    """``[4, 4]`` float64 ``cam2world`` of a camera at ``eye`` looking at ``target`` (OpenCV axes: z
    forward, y down, x right), with ``up`` (world) pointing up in the image."""
    eye, target, up = (torch.as_tensor(v, dtype=torch.float64) for v in (eye, target, up))
    forward = target - eye
    if forward.norm() == 0:
        raise SDFError("look_at needs eye != target")
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, up)
    if right.norm() < 1e-9:
        raise SDFError("look_at: up is parallel to the viewing direction")
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, eye
    return pose
