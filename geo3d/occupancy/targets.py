"""Occupancy targets from LiDAR returns: occupied where a beam returned, free where beams passed through,
unknown elsewhere (the self-supervised occupancy target of POP-3D and OccFeat).

The grid is axis-aligned in the frame of the points (``grid_origin`` and every point in the same frame,
metres): voxel ``(i, j, k)`` covers ``grid_origin + [i, i + 1) * voxel_size`` along x (likewise y, z),
as in :mod:`geo3d.voxels` and :class:`geo3d.synthetic.OccupancyGridSpec` (whose ``origin``,
``voxel_size`` and ``shape`` can be passed as they are).

Rules:

- A return ``p`` *hits* the voxel ``floor((p - grid_origin) / voxel_size)`` when that lies in the grid.
- A ray is the segment from its sensor origin ``o`` to its return ``p``. It crosses a voxel when the
  segment passes through the voxel's open interior; the voxel of its own return is not counted as
  crossed by that ray. Segments that start or end outside the grid count for the part inside.
- ``max_range`` (metres): a return farther than this from its origin is not a hit; its ray still
  proves the space up to ``max_range`` free, so it is truncated there (and the truncated end's voxel
  counts as crossed).
- State: **occupied wins**. ``state = 1`` where ``hits >= min_hits``; otherwise ``0`` (free) where at
  least one ray crossed the voxel; otherwise ``-1`` (unknown). A voxel with fewer than ``min_hits``
  returns is treated as if it had none (a filter against isolated noisy returns).

Traversal (exact, vectorised): every crossing of a ray with an interior grid plane ``x = i`` (or
``y = j``, ``z = k``) enters exactly one new voxel, so the crossed voxels are the voxel where the
clipped segment starts plus one voxel per plane crossing: the Amanatides-Woo sequence without its
sequential loop. Rays are mirrored per axis so that every direction component is ``>= 0`` and grouped
by octant; the crossings of all rays of a chunk are enumerated at once (packed, at most ``X + Y + Z``
per ray) in float64. The voxel entered at a crossing is the one that holds the ray just after it
(``floor`` of the other coordinates in mirrored space), and a crossing through an edge or corner (several
planes at once) is counted once. Returns end their segments exactly. A ray lying in a grid plane (a
zero direction component at an integral coordinate) touches no interior there; it is given the voxels
on the plane's upper side, the ``floor`` rule of hits. Otherwise the only approximation is round-off: a
ray passing within float64 round-off of an edge may be given a voxel it touches only there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from geo3d.errors import Geo3dError


class OccupancyError(Geo3dError, ValueError):
    """A malformed argument of :mod:`geo3d.occupancy`: wrong shape or dtype, NaN/inf values, empty input,
    unknown option, or inputs that do not match. The message names the argument and the problem."""


class OccupancyTargets(NamedTuple):
    """Result of :func:`lidar_occupancy_targets`; all ``[X, Y, Z]``.

    Attributes:
        state: int8, ``1`` occupied, ``0`` free, ``-1`` unknown (the target of :func:`occupancy_loss`).
        hits: int32 number of returns in each voxel (after ``max_range``).
        free_counts: int32 number of rays that crossed each voxel before their return.
    """

    state: torch.Tensor
    hits: torch.Tensor
    free_counts: torch.Tensor


UNKNOWN, FREE, OCCUPIED = -1, 0, 1
"""Values of :attr:`OccupancyTargets.state`."""


def check_finite_tensor(value, name: str, *, ndim: int | None = None, last: int | None = None,
                        floating: bool = True) -> torch.Tensor:
    """``value`` as a tensor, checked: ``ndim`` dimensions, last dimension ``last``, finite (floats)."""
    if not isinstance(value, torch.Tensor):
        raise OccupancyError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None and value.ndim != ndim:
        raise OccupancyError(f"{name} must have {ndim} dimensions, got shape {list(value.shape)}")
    if last is not None and (value.ndim == 0 or value.shape[-1] != last):
        raise OccupancyError(f"{name} must have a last dimension of {last}, got shape {list(value.shape)}")
    if floating:
        if not value.dtype.is_floating_point:
            raise OccupancyError(f"{name} must be a floating point tensor, got {value.dtype}")
        if not bool(torch.isfinite(value).all()):
            raise OccupancyError(f"{name} holds NaN or inf values")
    return value


def _grid_args(grid_origin, voxel_size, shape) -> tuple[torch.Tensor, float, tuple[int, int, int]]:
    origin = torch.as_tensor(grid_origin, dtype=torch.float64).reshape(-1)
    if origin.shape != (3,) or not bool(torch.isfinite(origin).all()):
        raise OccupancyError(f"grid_origin must be 3 finite numbers, got {grid_origin!r}")
    try:
        size = float(voxel_size)
    except (TypeError, ValueError):
        raise OccupancyError(f"voxel_size must be a number, got {voxel_size!r}") from None
    if not (size > 0 and size < float("inf")):
        raise OccupancyError(f"voxel_size must be finite and > 0, got {voxel_size!r}")
    dims = tuple(shape) if isinstance(shape, Sequence) else ()
    if len(dims) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise OccupancyError(f"shape must be 3 positive ints (X, Y, Z), got {shape!r}")
    return origin, size, dims  # type: ignore[return-value]


def _voxel_keys(ijk: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    return (ijk[:, 0] * shape[1] + ijk[:, 1]) * shape[2] + ijk[:, 2]


def _axis_crossings(start: torch.Tensor, delta: torch.Tensor, a0: torch.Tensor, a1: torch.Tensor,
                    shape: tuple[int, int, int], flips: tuple[bool, bool, bool], axis: int) -> torch.Tensor:
    """Keys of the voxels entered where the rays cross the interior planes normal to ``axis``.

    ``a0``, ``a1`` ``[R]`` are the ``axis`` coordinates where the clipped segments start and end.
    ``start`` and ``delta`` are mirrored so that ``delta >= 0``; ``flips[a]`` says axis ``a`` was
    mirrored (``x -> shape[a] - x``), which maps the mirrored index ``i`` back to ``shape[a] - 1 - i``.
    Moving in +``axis``, the voxel entered at plane ``k`` has index ``k`` on it, ``floor`` on the others.
    """
    b, c = [a for a in range(3) if a != axis]
    d_a = delta[:, axis]
    k_lo = (torch.floor(a0) + 1).clamp_(min=1).long()  # planes strictly between the ends, interior only
    k_hi = (torch.ceil(a1) - 1).clamp_(max=shape[axis] - 1).long()
    counts = torch.where(d_a > 0, (k_hi - k_lo + 1).clamp_(min=0), 0)
    total = int(counts.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.int64)
    ray = torch.repeat_interleave(counts)
    local = torch.arange(total) - (torch.cumsum(counts, 0) - counts)[ray]
    moving = torch.where(d_a > 0, d_a, torch.ones_like(d_a))
    strides = (shape[1] * shape[2], shape[2], 1)
    key = k_lo[ray].add_(local)
    const = 0
    sign_a = -1 if flips[axis] else 1
    if flips[axis]:
        const += (shape[axis] - 1) * strides[axis]
    key.mul_(sign_a * strides[axis])
    shared = None  # crossings of an edge or corner, also counted at a plane of a lower axis
    for other in (b, c):
        rate = delta[:, other] / moving  # d_other / d_axis
        first = start[:, other] + (k_lo.double() - start[:, axis]) * rate  # coordinate at plane k_lo
        coord = local.double().mul_(rate[ray]).add_(first[ray])
        floored = torch.floor(coord)
        if other < axis:
            tie = (coord == floored) & (floored >= 1) & (floored <= shape[other] - 1) & (rate > 0)[ray]
            shared = tie if shared is None else shared | tie
        index = floored.clamp_(0, shape[other] - 1).long()  # clamp: round-off on the faces
        sign = -1 if flips[other] else 1
        if flips[other]:
            const += (shape[other] - 1) * strides[other]
        key.add_(index.mul_(sign * strides[other]))
    key.add_(const)
    return key if shared is None else key[~shared]


def _traverse_chunk(start: torch.Tensor, delta: torch.Tensor, t_end: torch.Tensor, end: torch.Tensor,
                    shape: tuple[int, int, int]) -> torch.Tensor:
    """``[X * Y * Z]`` number of the rays ``start + t * delta``, ``t in [0, t_end]``, that pass through
    each voxel (``start``, ``delta``, ``end`` ``[R, 3]`` float64 in voxel units: the grid spans
    ``[0, shape]``; ``end`` is the segment's end ``start + t_end * delta``, exact for returns)."""
    count = shape[0] * shape[1] * shape[2]
    extent = torch.tensor(shape, dtype=torch.float64)
    flip = delta < 0
    start = torch.where(flip, extent - start, start)
    end = torch.where(flip, extent - end, end)
    delta = delta.abs()
    moving = delta > 0
    safe = torch.where(moving, delta, torch.ones_like(delta))
    enter = torch.where(moving, -start / safe, -float("inf")).amax(1)
    leave = torch.where(moving, (extent - start) / safe, float("inf")).amin(1)
    parallel_out = (~moving & ((start < 0) | (start >= extent))).any(1)
    t0 = enter.clamp(min=0.0)
    t1 = torch.minimum(t_end, leave)
    inside = (t0 < t1) & ~parallel_out
    seg_start = start + t0[:, None] * delta
    seg_end = torch.where((t1 == t_end)[:, None], end, start + t1[:, None] * delta)  # returns end exactly
    octant = (flip[:, 0].long() * 4 + flip[:, 1].long() * 2 + flip[:, 2].long())
    keys = []
    high = torch.tensor(shape) - 1
    for code in range(8):
        rows = torch.nonzero(inside & (octant == code)).squeeze(1)
        if not len(rows):
            continue
        flips = (bool(code & 4), bool(code & 2), bool(code & 1))
        s, d, a, b = start[rows], delta[rows], seg_start[rows], seg_end[rows]
        first = torch.floor(a).long()
        first = torch.minimum(first.clamp_(min=0), high)  # round-off on the faces
        first = torch.where(torch.tensor(flips), high - first, first)
        keys.append(_voxel_keys(first, shape))
        keys.extend(_axis_crossings(s, d, a[:, axis], b[:, axis], shape, flips, axis)
                    for axis in range(3) if shape[axis] > 1)
    if not keys:
        return torch.zeros(count, dtype=torch.int64)
    return torch.bincount(torch.cat(keys), minlength=count)


def lidar_occupancy_targets(points: torch.Tensor, sensor_origins, grid_origin, voxel_size: float,
                            shape: Sequence[int], *, max_range: float | None = None, min_hits: int = 1,
                            chunk_size: int = 32768) -> OccupancyTargets:
    """Occupied / free / unknown voxels from LiDAR returns by exact ray traversal (module docstring).

    Args:
        points: ``[N, 3]`` float returns, metres, in the grid's frame (e.g. the ego frame of the grid;
            move sensor-frame points with ``sensor2ego`` first).
        sensor_origins: ``[3]`` origin of every ray (one sweep), or ``[N, 3]`` per return (several
            sweeps aggregated), metres, same frame.
        grid_origin: ``[3]`` min corner of voxel ``(0, 0, 0)``, metres, same frame.
        voxel_size: edge of a cubic voxel, metres.
        shape: ``(X, Y, Z)`` voxels per axis.
        max_range: returns farther than this (metres) from their origin are not hits and their rays
            stop there; None keeps every return.
        min_hits: returns a voxel needs to be occupied (>= 1).
        chunk_size: rays traversed at once (memory ~ ``chunk_size * (X + Y + Z) * 100`` bytes at most).

    Returns:
        :class:`OccupancyTargets` of ``[X, Y, Z]`` tensors on the CPU.
    """
    origin, size, dims = _grid_args(grid_origin, voxel_size, shape)
    points = check_finite_tensor(points, "points", ndim=2, last=3)
    if not isinstance(sensor_origins, torch.Tensor):
        sensor_origins = torch.as_tensor(sensor_origins, dtype=torch.float64)
    origins = check_finite_tensor(sensor_origins, "sensor_origins", last=3)
    if origins.shape not in ((3,), (len(points), 3)):
        raise OccupancyError(f"sensor_origins must be [3] or [{len(points)}, 3], got {list(origins.shape)}")
    if max_range is not None and not (float(max_range) > 0 and float(max_range) < float("inf")):
        raise OccupancyError(f"max_range must be finite and > 0 or None, got {max_range!r}")
    if not isinstance(min_hits, int) or isinstance(min_hits, bool) or min_hits < 1:
        raise OccupancyError(f"min_hits must be an int >= 1, got {min_hits!r}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise OccupancyError(f"chunk_size must be an int >= 1, got {chunk_size!r}")

    count = dims[0] * dims[1] * dims[2]
    p = (points.detach().to("cpu", torch.float64) - origin) / size
    o = ((origins.detach().to("cpu", torch.float64) - origin) / size).expand(len(points), 3)
    delta = p - o
    t_end = torch.ones(len(p), dtype=torch.float64)
    is_hit = torch.ones(len(p), dtype=torch.bool)
    end = p
    if max_range is not None:
        length_m = delta.norm(dim=1) * size
        far = length_m > float(max_range)
        t_end = torch.where(far, float(max_range) / length_m.clamp(min=1e-300), t_end)
        end = torch.where(far[:, None], o + t_end[:, None] * delta, p)
        is_hit = ~far
    hit_ijk = torch.floor(p).long()
    in_grid = ((hit_ijk >= 0) & (hit_ijk < torch.tensor(dims))).all(1) & is_hit
    hit_keys = _voxel_keys(hit_ijk[in_grid], dims)
    hits = torch.bincount(hit_keys, minlength=count)
    free = torch.zeros(count, dtype=torch.int64)
    for begin in range(0, len(p), chunk_size):
        stop = begin + chunk_size
        free += _traverse_chunk(o[begin:stop], delta[begin:stop], t_end[begin:stop], end[begin:stop], dims)
    # A ray's traversal ends in its return's voxel, which that ray does not cross, unless the return
    # lies on the voxel's face it would enter through (then the traversal stopped before that voxel).
    on_entry_face = ((delta[in_grid] > 0) & (p[in_grid] == torch.floor(p[in_grid]))).any(1)
    free -= torch.bincount(hit_keys[~on_entry_face], minlength=count)
    free.clamp_(min=0)  # a return within round-off of a face
    state = torch.full((count,), UNKNOWN, dtype=torch.int8)
    state[free > 0] = FREE
    state[hits >= min_hits] = OCCUPIED
    return OccupancyTargets(state.reshape(dims), hits.to(torch.int32).reshape(dims),
                            free.to(torch.int32).reshape(dims))
