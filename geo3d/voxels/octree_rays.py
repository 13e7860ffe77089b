"""Ray traversal of a sparse :class:`~geo3d.voxels.octree.Octree`: the intervals of each ray inside
occupied leaves, packed as nerfacc packs its samples (``ray_indices``, ``t_starts``, ``t_ends``), the
hook NeRF and occupancy rendering use to skip empty space.

The traversal is top-down and vectorised: at every level the active (ray, node) pairs expand into the
node's occupied children, a slab test intersects each ray with each child's box, and the pairs whose
interval within ``[near, far]`` has positive length go on to the next level. Work therefore grows
with the occupied nodes a ray crosses, not with the empty space. The slab test runs in the rays'
dtype (float32 rays: float32, float64 rays: float64). Box corners at every level are float64 products
``origin + ijk * cell`` (``cell`` a power-of-two multiple of ``leaf_size``) cast to that dtype, so a
child's box lies inside its parent's and neighbouring boxes share their faces exactly, hence the same
``t`` where a ray leaves one leaf and enters the next.

Rays parallel to an axis (a zero direction component) are handled explicitly instead of through
IEEE ``inf`` arithmetic (``0 * inf`` is NaN): such a ray is inside that axis' slab for all ``t``
when its origin lies in ``[lo, hi)`` (``[lo, hi]`` on the cube's upper face, as in
:meth:`Octree.locate`) and never otherwise. Origins inside the tree are fine: intervals are clipped
to ``near``.

``t`` is in units of the direction's length (metres for unit directions); the ray point is
``origin + t * direction``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch

from geo3d.errors import VoxelError
from geo3d.voxels.morton import morton_decode_unchecked

if TYPE_CHECKING:
    from geo3d.voxels.octree import Octree


class RayIntervals(NamedTuple):
    """Packed ray intervals inside occupied nodes, sorted by ray then by ``t``.

    Attributes:
        ray_indices: ``[K]`` int64 ray of each interval.
        t_starts: ``[K]`` entry parameter (dtype of the directions).
        t_ends: ``[K]`` exit parameter, ``> t_starts``.
        leaf_indices: ``[K]`` int64 row of the node in ``codes[level]`` (the leaves by default); with
            ``merge=True``, the first node of the merged run.
    """

    ray_indices: torch.Tensor
    t_starts: torch.Tensor
    t_ends: torch.Tensor
    leaf_indices: torch.Tensor


class RayHits(NamedTuple):
    """Result of :func:`ray_first_hit`.

    Attributes:
        t: ``[R]`` parameter where each ray enters its first occupied node (``inf`` when none; ``near``
            when the ray starts inside one).
        leaf_indices: ``[R]`` int64 row of that node, -1 when the ray hits nothing in ``[near, far]``.
    """

    t: torch.Tensor
    leaf_indices: torch.Tensor


def _as_rays(origins: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    for name, value in (("origins", origins), ("directions", directions)):
        if not isinstance(value, torch.Tensor):
            raise VoxelError(f"{name} must be a [R, 3] tensor, got {type(value).__name__}")
        if value.ndim != 2 or value.shape[1] != 3 or not value.dtype.is_floating_point:
            raise VoxelError(f"{name} must be a floating point [R, 3] tensor, got {tuple(value.shape)} "
                             f"{value.dtype}")
        if not bool(torch.isfinite(value).all()):
            raise VoxelError(f"{name} holds NaN or inf values")
    if origins.shape != directions.shape:
        raise VoxelError(f"origins {tuple(origins.shape)} and directions {tuple(directions.shape)} differ in shape")
    if bool((directions == 0).all(1).any()):
        raise VoxelError("directions holds a zero vector: every ray needs a direction")
    return origins, directions


def _as_range(name: str, value: float | torch.Tensor, rays: int, device: torch.device,
              allow_inf: bool) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=torch.float64, device=device)
    if value.ndim == 0:
        value = value.expand(rays)
    if value.shape != (rays,):
        raise VoxelError(f"{name} must be a number or a [R] = [{rays}] tensor, got shape {tuple(value.shape)}")
    if bool(torch.isnan(value).any()) or (not allow_inf and not bool(torch.isfinite(value).all())):
        raise VoxelError(f"{name} must be {'non-NaN' if allow_inf else 'finite'}")
    return value


def _slab(origins: torch.Tensor, inverse: torch.Tensor, low: torch.Tensor, high: torch.Tensor,
          near: torch.Tensor, far: torch.Tensor, parallel: tuple[torch.Tensor, torch.Tensor] | None,
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit ``t`` of rays (``origins [P, 3]``, ``inverse [P, 3]`` = 1 / direction, 0 where
    the direction component is 0) through boxes ``[low, high)`` ``[P, 3]``, clipped to ``[near, far]``;
    empty where exit <= entry. ``parallel`` = (``moving [P, 3]`` non-zero direction components,
    ``closed [P, 3]`` box faces on the cube's upper faces, closed there), None when no ray has a zero
    component."""
    t_low, t_high = (low - origins) * inverse, (high - origins) * inverse
    enter, leave = torch.minimum(t_low, t_high), torch.maximum(t_low, t_high)
    if parallel is not None:  # the origin's side of the slab decides, for all t (no 0 * inf NaN)
        moving, closed = parallel
        inside = (origins >= low) & ((origins < high) | (closed & (origins == high)))
        outside_t = torch.where(inside, -math.inf, math.inf).to(enter.dtype)
        enter = torch.where(moving, enter, outside_t)
        leave = torch.where(moving, leave, -outside_t)
    return torch.maximum(enter.amax(1), near), torch.minimum(leave.amin(1), far)


def _level_boxes(tree: Octree, level: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lower and upper corners ``[M_L, 3]`` of every node of ``level`` (float64 products cast to
    ``dtype``: faces shared by neighbours are the same number) and which upper faces lie on the cube's."""
    ijk = morton_decode_unchecked(tree.codes[level])
    cell = tree.cell_size(level)
    low = (tree.origin + ijk.to(torch.float64) * cell).to(dtype)
    high = (tree.origin + (ijk + 1).to(torch.float64) * cell).to(dtype)
    return low, high, (ijk + 1) == (1 << level)


RAY_CHUNK = 65_536
"""Rays traversed together; bounds the (ray, node) pairs held at once (tens of bytes each)."""


def _traverse(tree: Octree, boxes: list[tuple[torch.Tensor, ...]], child_counts: list[torch.Tensor],
              origins: torch.Tensor, directions: torch.Tensor, near: torch.Tensor, far: torch.Tensor,
              ) -> tuple[torch.Tensor, ...]:
    """(ray, node, t_enter, t_exit) of every ray crossing an occupied node of the last level in
    ``boxes``, ordered by ray (the expansion keeps the rays' order), not by ``t``."""
    device = tree.device
    moving = directions != 0
    has_parallel = not bool(moving.all())
    inverse = torch.where(moving, 1.0 / torch.where(moving, directions, torch.ones_like(directions)),
                          torch.zeros_like(directions))
    rays = torch.arange(origins.shape[0], device=device)
    nodes = torch.zeros_like(rays)

    def clip(level: int) -> tuple[torch.Tensor, torch.Tensor]:
        low, high, closed = boxes[level]
        parallel = (moving[rays], closed[nodes]) if has_parallel else None
        return _slab(origins[rays], inverse[rays], low[nodes], high[nodes], near[rays], far[rays], parallel)

    enter, leave = clip(0)
    for current in range(1, len(boxes)):  # expand every kept (ray, node) pair into the node's children
        keep = leave > enter
        rays, nodes = rays[keep], nodes[keep]
        counts = child_counts[current - 1][nodes]
        first = tree.children_start[current - 1][nodes]
        rays = torch.repeat_interleave(rays, counts)
        group_start = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        nodes = torch.repeat_interleave(first, counts) + torch.arange(rays.shape[0], device=device) - group_start
        enter, leave = clip(current)
    keep = leave > enter
    return rays[keep], nodes[keep], enter[keep], leave[keep]


def ray_intervals(tree: Octree, origins: torch.Tensor, directions: torch.Tensor,
                  near: float | torch.Tensor = 0.0, far: float | torch.Tensor = math.inf,
                  level: int | None = None, merge: bool = False) -> RayIntervals:
    """Intervals ``[t_start, t_end]`` of each ray inside the occupied nodes of ``level``.

    Args:
        tree: the :class:`~geo3d.voxels.octree.Octree`.
        origins: ``[R, 3]`` float ray origins, metres, world frame (inside or outside the tree).
        directions: ``[R, 3]`` float directions (any non-zero length; components may be 0).
        near: ``float`` or ``[R]``, start of the ray segment considered.
        far: ``float`` or ``[R]`` (``inf`` allowed), end of the segment; ``near <= far``.
        level: tree level whose nodes bound the intervals (default the leaves).
        merge: merge intervals of a ray that touch (gap <= ``1e-9 * leaf_size / |direction|``) into
            one, e.g. to get the occupied spans of a ray rather than one interval per leaf.

    Returns:
        :class:`RayIntervals` sorted by ray, then by ``t``; intervals have positive length.

    Raises:
        VoxelError: bad shapes, NaN/inf origins or directions, zero directions, bad near/far/level.
    """
    origins, directions = _as_rays(origins, directions)
    level = tree._check_level(level)
    device, out_dtype = tree.device, directions.dtype
    dtype = torch.promote_types(torch.promote_types(origins.dtype, directions.dtype), torch.float32)
    o = origins.to(device=device, dtype=dtype)
    d = directions.to(device=device, dtype=dtype)
    near = _as_range("near", near, o.shape[0], device, allow_inf=False)
    far = _as_range("far", far, o.shape[0], device, allow_inf=True)
    if bool((far < near).any()):
        raise VoxelError("far must be >= near for every ray")
    if o.shape[0] == 0:
        empty = torch.zeros(0, dtype=out_dtype, device=device)
        return RayIntervals(empty.to(torch.int64), empty, empty.clone(), empty.to(torch.int64))
    near, far = near.to(dtype), far.to(dtype)
    boxes = [_level_boxes(tree, current, dtype) for current in range(level + 1)]
    child_counts = [tree._child_counts(current) for current in range(level)]
    parts = []
    for start in range(0, o.shape[0], RAY_CHUNK):
        chunk = slice(start, start + RAY_CHUNK)
        found = _traverse(tree, boxes, child_counts, o[chunk], d[chunk], near[chunk], far[chunk])
        parts.append((found[0] + start, *found[1:]))
    rays, nodes, enter, leave = (torch.cat(column) for column in zip(*parts, strict=True))
    order = torch.argsort(enter, stable=True)
    order = order[torch.argsort(rays[order], stable=True)]
    rays, nodes, enter, leave = rays[order], nodes[order], enter[order], leave[order]
    if merge and rays.numel():  # touching: the gap is below the rounding of t in ``dtype``
        gap = 1e-9 * tree.leaf_size / d.norm(dim=1)[rays] + 4 * torch.finfo(dtype).eps * leave.abs()
        new_run = torch.ones_like(rays, dtype=torch.bool)
        new_run[1:] = (rays[1:] != rays[:-1]) | (enter[1:] > leave[:-1] + gap[:-1])
        run = torch.cumsum(new_run.to(torch.int64), 0) - 1
        runs = int(run[-1]) + 1
        leave = torch.full((runs,), -math.inf, dtype=dtype, device=device).scatter_reduce_(
            0, run, leave, reduce="amax")
        rays, nodes, enter = rays[new_run], nodes[new_run], enter[new_run]
    return RayIntervals(rays, enter.to(out_dtype), leave.to(out_dtype), nodes)


def ray_first_hit(tree: Octree, origins: torch.Tensor, directions: torch.Tensor,
                  near: float | torch.Tensor = 0.0, far: float | torch.Tensor = math.inf,
                  level: int | None = None) -> RayHits:
    """First occupied node of ``level`` (default the leaves) each ray enters within ``[near, far]``.

    Arguments as for :func:`ray_intervals`. Returns :class:`RayHits` (``t`` and ``leaf_indices``,
    ``[R]`` each).
    """
    packed = ray_intervals(tree, origins, directions, near, far, level=level)
    rays = origins.shape[0]
    t = torch.full((rays,), math.inf, dtype=directions.dtype, device=tree.device)
    leaf = torch.full((rays,), -1, dtype=torch.int64, device=tree.device)
    if packed.ray_indices.numel():
        first = torch.ones_like(packed.ray_indices, dtype=torch.bool)
        first[1:] = packed.ray_indices[1:] != packed.ray_indices[:-1]
        t[packed.ray_indices[first]] = packed.t_starts[first]
        leaf[packed.ray_indices[first]] = packed.leaf_indices[first]
    return RayHits(t, leaf)
