"""Point-cloud subsampling: :func:`farthest_point_sampling` and :func:`voxel_downsample`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch

from geo3d.errors import PointCloudError
from geo3d.points._inputs import PointsLike, as_point_batch


class SampledPoints(NamedTuple):
    """Result of :func:`farthest_point_sampling`.

    Attributes:
        points: ``[B, n, D]`` (``[n, D]`` unbatched) the chosen points, in the order they were chosen;
            zeros where ``indices`` is -1.
        indices: ``[B, n]`` (``[n]``) int64 rows of the chosen points in their cloud; -1 in the slots
            beyond a cloud's length when ``n`` exceeds it.
    """

    points: torch.Tensor
    indices: torch.Tensor


class VoxelDownsampled(NamedTuple):
    """Result of :func:`voxel_downsample`: one row per occupied voxel, sorted by voxel coordinate
    (x slowest, z fastest).

    Attributes:
        points: ``[M, D]`` one point per voxel (its mean, its first point, or the voxel centre).
        features: ``[M, F]`` per-voxel mean of the input features, or None.
        voxels: ``[M, 3]`` int64 integer voxel coordinates ``floor((p - origin) / voxel_size)``.
        counts: ``[M]`` int64 input points per voxel.
        inverse: ``[N]`` int64 output row of every input point.
    """

    points: torch.Tensor
    features: torch.Tensor | None
    voxels: torch.Tensor
    counts: torch.Tensor
    inverse: torch.Tensor


def farthest_point_sampling(points: PointsLike, n: int, lengths: torch.Tensor | Sequence[int] | None = None, *,
                            start_index: int | torch.Tensor = 0) -> SampledPoints:
    """Iterative farthest point sampling (the sampling layer of PointNet++).

    Starting from ``points[start_index]``, each step picks the point whose Euclidean distance to the
    points chosen so far is largest (the first such index on ties), so the result is deterministic
    given the start index. O(n N) time, pure torch (runs on CUDA tensors too).

    Args:
        points: ``[N, D]``, a padded batch ``[B, N, D]`` (+ ``lengths``), or a list of clouds.
        n: points to choose per cloud (>= 1). A cloud with fewer valid points gives all of them,
            then -1 indices.
        lengths: ``[B]`` valid points per cloud of a padded batch.
        start_index: the first point, an int or ``[B]`` int tensor (one per cloud), < the cloud length.
            Draw it at random (``torch.randint``) for random restarts.

    Returns:
        :class:`SampledPoints` with ``points [B, n, D]`` and ``indices [B, n]`` (batch dim dropped
        for an unbatched input).

    Raises:
        PointCloudError: bad shapes, NaN/inf, ``n < 1``, a start index outside its cloud.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise PointCloudError(f"n must be a positive integer, got {n!r}")
    batch = as_point_batch(points, lengths, name="points", dim=None)
    pts, lens = batch.points, batch.lengths
    num_batch, num_points = pts.shape[:2]
    device = pts.device
    start = torch.as_tensor(start_index, dtype=torch.int64, device=device).reshape(-1).expand(num_batch).clone()
    nonempty = lens > 0
    if bool(((start < 0) | (start >= lens.clamp(min=1))).any()):
        raise PointCloudError(f"start_index {start.tolist()} is outside the clouds (lengths {lens.tolist()})")
    indices = torch.full((num_batch, n), -1, dtype=torch.int64, device=device)
    if num_points == 0:
        return _sampled(pts, indices, batch.unbatched)
    work = pts.detach() if batch.is_full else torch.where(batch.valid[..., None], pts.detach(), 0.0)
    rows = torch.arange(num_batch, device=device)
    # squared distance of every point to the chosen set; padding is -inf so it is never chosen
    min_sq = torch.full((num_batch, num_points), float("inf"), dtype=work.dtype, device=device)
    min_sq = torch.where(batch.valid, min_sq, torch.full_like(min_sq, -float("inf")))
    current = start
    for step in range(min(n, num_points)):
        indices[:, step] = torch.where(lens > step, current, torch.full_like(current, -1))
        chosen = work[rows, current]  # [B, D]
        sq = (work - chosen[:, None, :]).square().sum(-1)
        min_sq = torch.minimum(min_sq, sq)
        current = min_sq.argmax(dim=1)
    indices = torch.where(nonempty[:, None], indices, torch.full_like(indices, -1))
    return _sampled(pts, indices, batch.unbatched)


def _sampled(pts: torch.Tensor, indices: torch.Tensor, unbatched: bool) -> SampledPoints:
    dim = pts.shape[-1]
    if pts.shape[1] == 0:
        chosen = pts.new_zeros((*indices.shape, dim))
    else:
        chosen = torch.gather(pts, 1, indices.clamp(min=0)[..., None].expand(-1, -1, dim))
        chosen = torch.where(indices[..., None] >= 0, chosen, torch.zeros_like(chosen))
    return SampledPoints(chosen[0], indices[0]) if unbatched else SampledPoints(chosen, indices)


def voxel_downsample(points: torch.Tensor, voxel_size: float | Sequence[float], features: torch.Tensor | None = None,
                     *, origin: Sequence[float] | torch.Tensor | None = None,
                     reduce: Literal["mean", "first", "center"] = "mean") -> VoxelDownsampled:
    """Keep one point per occupied voxel of a regular grid.

    Voxel ``(i, j, k)`` covers ``origin + [i, i+1) * voxel_size`` (and likewise for y, z); the default
    ``origin`` is (0, 0, 0), a grid fixed in the cloud's frame, so two clouds in the same frame share
    their voxels. Open3D's ``voxel_down_sample`` places its grid at ``min_bound - voxel_size / 2``
    instead; pass that as ``origin`` with ``reduce="mean"`` to get its points.

    Args:
        points: ``[N, 3]`` coordinates, metres (one cloud; loop over a batch).
        voxel_size: edge length, metres, > 0; a scalar or ``[3]`` per axis.
        features: optional ``[N, F]`` per-point values (colours, normals, embeddings), averaged per voxel.
        origin: ``[3]`` corner of voxel (0, 0, 0), metres.
        reduce: the point kept per voxel: ``"mean"`` of its points (differentiable), ``"first"`` of its
            points in input order, or the voxel ``"center"``.

    Returns:
        :class:`VoxelDownsampled` (rows sorted by voxel coordinate).

    Raises:
        PointCloudError: wrong shapes, NaN/inf, non-positive voxel size, unknown ``reduce``.
    """
    batch = as_point_batch(points, name="points", dim=3)
    if not batch.unbatched:
        raise PointCloudError(f"points: expected one [N, 3] cloud, got shape {tuple(points.shape)}")
    if reduce not in ("mean", "first", "center"):
        raise PointCloudError(f"reduce must be 'mean', 'first' or 'center', got {reduce!r}")
    size = torch.as_tensor(voxel_size, dtype=torch.float64).reshape(-1)
    if size.numel() not in (1, 3) or not bool(torch.isfinite(size).all()) or bool((size <= 0).any()):
        raise PointCloudError(f"voxel_size must be one or three finite numbers > 0, got {voxel_size!r}")
    size = size.expand(3)
    corner = torch.zeros(3, dtype=torch.float64) if origin is None else torch.as_tensor(origin, dtype=torch.float64)
    if corner.shape != (3,) or not bool(torch.isfinite(corner).all()):
        raise PointCloudError(f"origin must be 3 finite numbers, got {origin!r}")
    num_points = points.shape[0]
    if features is not None and (features.ndim != 2 or features.shape[0] != num_points):
        raise PointCloudError(f"features: expected shape [{num_points}, F], got {tuple(features.shape)}")
    device = points.device
    scaled = torch.floor((points.detach().to(torch.float64) - corner.to(device)) / size.to(device))
    if num_points and float(scaled.abs().max()) >= 2.0**52:
        raise PointCloudError(f"voxel_size {voxel_size!r} is too small for the cloud's coordinates "
                              f"(voxel indices beyond 2^52)")
    voxels = scaled.to(torch.int64)
    if num_points == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return VoxelDownsampled(points[:0], None if features is None else features[:0], voxels, empty, empty)
    low = voxels.min(0).values
    extent = voxels.max(0).values - low + 1
    if float(extent.to(torch.float64).prod()) >= 2.0**62:
        raise PointCloudError(f"voxel_size {voxel_size!r} is too small for the cloud's extent ({extent.tolist()} voxels)")
    shifted = voxels - low
    key = (shifted[:, 0] * extent[1] + shifted[:, 1]) * extent[2] + shifted[:, 2]
    unique_keys, inverse, counts = torch.unique(key, sorted=True, return_inverse=True, return_counts=True)
    num_voxels = unique_keys.shape[0]
    out_voxels = torch.stack([unique_keys // (extent[1] * extent[2]), (unique_keys // extent[2]) % extent[1],
                              unique_keys % extent[2]], dim=1) + low
    counts_f = counts.to(points.dtype)[:, None]
    if reduce == "mean":
        kept = points.new_zeros((num_voxels, 3)).index_add(0, inverse, points) / counts_f
    elif reduce == "first":
        first = torch.full((num_voxels,), num_points, dtype=torch.int64, device=device)
        first = first.scatter_reduce(0, inverse, torch.arange(num_points, device=device), reduce="amin")
        kept = points[first]
    else:
        kept = ((out_voxels.to(torch.float64) + 0.5) * size.to(device) + corner.to(device)).to(points.dtype)
    pooled = None
    if features is not None:
        pooled = features.new_zeros((num_voxels, features.shape[1])).index_add(0, inverse, features)
        pooled = pooled / counts.to(features.dtype)[:, None]
    return VoxelDownsampled(kept, pooled, out_voxels, counts, inverse)
