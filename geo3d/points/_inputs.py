"""Validation and batching of point-cloud arguments shared by the ops of :mod:`geo3d.points`.

Every op accepts one cloud ``[N, D]``, a padded batch ``[B, N, D]`` with optional ``lengths [B]``
(cloud ``b`` is ``points[b, :lengths[b]]``; the padding is ignored, whatever it holds), or a list of
``[N_b, D]`` tensors (a ragged batch, padded here). :func:`as_point_batch` turns all three into a
:class:`PointBatch` and raises :class:`geo3d.errors.PointCloudError` naming the argument on bad input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from geo3d.errors import PointCloudError

PointsLike = torch.Tensor | Sequence[torch.Tensor]


class PointBatch(NamedTuple):
    """A padded batch of point clouds.

    Attributes:
        points: ``[B, N, D]`` coordinates; rows at or beyond ``lengths[b]`` are padding.
        lengths: ``[B]`` int64, number of valid points per cloud.
        unbatched: True when the caller passed a single ``[N, D]`` cloud (results drop the batch dim).
    """

    points: torch.Tensor
    lengths: torch.Tensor
    unbatched: bool

    @property
    def valid(self) -> torch.Tensor:
        """``[B, N]`` bool, True for valid (non-padding) points."""
        n = self.points.shape[1]
        return torch.arange(n, device=self.points.device)[None, :] < self.lengths[:, None]

    @property
    def is_full(self) -> bool:
        """True when no cloud is padded (every length equals N)."""
        return bool((self.lengths == self.points.shape[1]).all())


def as_point_batch(points: PointsLike, lengths: torch.Tensor | Sequence[int] | None = None, *,
                   name: str = "points", dim: int | None = 3, check_finite: bool = True) -> PointBatch:
    """Check and pad a point-cloud argument.

    Args:
        points: ``[N, D]``, ``[B, N, D]`` (floating point), or a list of ``[N_b, D]`` tensors.
        lengths: ``[B]`` valid points per cloud of a padded batch (default: all ``N``); not allowed
            with a single cloud or a list.
        name: argument name used in error messages.
        dim: required size ``D`` of the last dimension (3 for xyz); None accepts any ``D >= 1``.
        check_finite: raise when a valid (non-padding) coordinate is NaN or inf.

    Returns:
        :class:`PointBatch` with ``points [B, N, D]`` and ``lengths [B]`` on the points' device.

    Raises:
        PointCloudError: wrong type, dimensionality, dtype, lengths, or non-finite coordinates.
    """
    if isinstance(points, (list, tuple)):
        if lengths is not None:
            raise PointCloudError(f"{name}: lengths cannot be given with a list of clouds (they are its sizes)")
        if len(points) == 0:
            raise PointCloudError(f"{name}: empty list of point clouds")
        for i, cloud in enumerate(points):
            if not isinstance(cloud, torch.Tensor) or cloud.ndim != 2:
                shape = tuple(cloud.shape) if isinstance(cloud, torch.Tensor) else type(cloud).__name__
                raise PointCloudError(f"{name}[{i}]: expected a [N, D] tensor, got {shape}")
        d = points[0].shape[1]
        if any(c.shape[1] != d for c in points):
            raise PointCloudError(f"{name}: clouds have different last dimensions {[c.shape[1] for c in points]}")
        lens = torch.tensor([c.shape[0] for c in points], dtype=torch.int64, device=points[0].device)
        dtype = points[0].dtype
        if any(c.dtype != dtype or c.device != points[0].device for c in points):
            raise PointCloudError(f"{name}: clouds have different dtypes or devices "
                                  f"{sorted({f'{c.dtype}/{c.device}' for c in points})}")
        padded = points[0].new_zeros((len(points), int(lens.max()), d), dtype=dtype)
        for i, cloud in enumerate(points):
            padded[i, : cloud.shape[0]] = cloud
        batch = PointBatch(padded, lens, False)
    elif isinstance(points, torch.Tensor):
        if points.ndim == 2:
            if lengths is not None:
                raise PointCloudError(f"{name}: lengths given for a single [N, D] cloud; pass [B, N, D]")
            batch = PointBatch(points[None], torch.full((1,), points.shape[0], dtype=torch.int64,
                                                        device=points.device), True)
        elif points.ndim == 3:
            if lengths is None:
                lens = torch.full((points.shape[0],), points.shape[1], dtype=torch.int64, device=points.device)
            else:
                lens = torch.as_tensor(lengths, device=points.device)
                if lens.ndim != 1 or lens.shape[0] != points.shape[0]:
                    raise PointCloudError(f"{name}: lengths must have shape [{points.shape[0]}] "
                                          f"(one per cloud), got {tuple(lens.shape)}")
                if lens.dtype.is_floating_point or lens.dtype == torch.bool:
                    raise PointCloudError(f"{name}: lengths must be integers, got {lens.dtype}")
                lens = lens.to(torch.int64)
                if lens.numel() and (int(lens.min()) < 0 or int(lens.max()) > points.shape[1]):
                    raise PointCloudError(f"{name}: lengths must lie in [0, {points.shape[1]}], "
                                          f"got {lens.tolist()}")
            batch = PointBatch(points, lens, False)
        else:
            raise PointCloudError(f"{name}: expected [N, D] or [B, N, D] points, got shape {tuple(points.shape)}")
    else:
        raise PointCloudError(f"{name}: expected a tensor or a list of tensors, got {type(points).__name__}")
    pts = batch.points
    if not pts.dtype.is_floating_point:
        raise PointCloudError(f"{name}: coordinates must be floating point, got {pts.dtype}")
    if dim is not None and pts.shape[-1] != dim:
        raise PointCloudError(f"{name}: expected {dim} coordinates per point (last dim), got {pts.shape[-1]}")
    if pts.shape[-1] < 1:
        raise PointCloudError(f"{name}: points have no coordinates (last dim 0)")
    # one reduction settles the common case: the sum of finite numbers is finite unless it overflows
    if check_finite and pts.numel() and not (batch.is_full and bool(torch.isfinite(pts.sum()))):
        bad = ~torch.isfinite(pts).all(dim=-1)
        if not batch.is_full:
            bad &= batch.valid
        if bool(bad.any()):
            b, i = (int(v) for v in bad.nonzero()[0])
            where = f"point {i}" if batch.unbatched else f"cloud {b}, point {i}"
            raise PointCloudError(f"{name}: {int(bad.sum())} point(s) have NaN/inf coordinates "
                                  f"(first: {where})")
    return batch


def check_pair(x: PointBatch, y: PointBatch, names: tuple[str, str] = ("x", "y")) -> None:
    """Raise :class:`PointCloudError` unless ``x`` and ``y`` have the same batch size, point
    dimension, dtype and device."""
    a, b = names
    if x.points.shape[0] != y.points.shape[0]:
        raise PointCloudError(f"{a} and {b} have different batch sizes: {x.points.shape[0]} vs {y.points.shape[0]}")
    if x.points.shape[-1] != y.points.shape[-1]:
        raise PointCloudError(f"{a} and {b} have different point dimensions: "
                              f"{x.points.shape[-1]} vs {y.points.shape[-1]}")
    if x.points.device != y.points.device:
        raise PointCloudError(f"{a} and {b} are on different devices: {x.points.device} vs {y.points.device}")
    if x.points.dtype != y.points.dtype:
        raise PointCloudError(f"{a} and {b} have different dtypes: {x.points.dtype} vs {y.points.dtype}")


def check_weights(weights: torch.Tensor | Sequence[torch.Tensor] | None, batch: PointBatch,
                  name: str) -> torch.Tensor | None:
    """Per-point weights ``[N]`` / ``[B, N]`` / list of ``[N_b]`` as ``[B, N]`` (padding zero), checked
    to be finite and non-negative; None stays None."""
    if weights is None:
        return None
    if isinstance(weights, (list, tuple)):
        w = batch.points.new_zeros(batch.points.shape[:2])
        for i, wi in enumerate(weights):
            if wi.shape != (int(batch.lengths[i]),):
                raise PointCloudError(f"{name}[{i}]: expected shape [{int(batch.lengths[i])}], got {tuple(wi.shape)}")
            w[i, : wi.shape[0]] = wi
    else:
        w = weights[None] if (batch.unbatched and weights.ndim == 1) else weights
        if tuple(w.shape) != tuple(batch.points.shape[:2]):
            raise PointCloudError(f"{name}: expected shape {list(batch.points.shape[:2])} (one weight per point), "
                                  f"got {list(weights.shape)}")
    w = w.to(batch.points.dtype)
    valid = batch.valid
    if bool((~torch.isfinite(w) & valid).any()) or bool(((w < 0) & valid).any()):
        raise PointCloudError(f"{name}: weights must be finite and non-negative")
    return torch.where(valid, w, torch.zeros((), dtype=w.dtype, device=w.device))
