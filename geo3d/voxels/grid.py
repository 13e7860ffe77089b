"""The regular voxel grid of geo3d (:class:`VoxelGrid`) and trilinear sampling of voxel values.

Conventions (docs/voxels.md): a grid has ``origin [3]`` (world position of the min corner of voxel
``(0, 0, 0)``, metres), ``voxel_size`` (cubic voxels, metres, > 0) and ``shape (X, Y, Z)``. Voxel
``(i, j, k)`` covers ``[origin + i*s, origin + (i+1)*s)`` per axis, its centre is
``origin + (i + 0.5) * s`` and a point falls in voxel ``floor((p - origin) / s)``. Indices are int64
``[M, 3]`` in ``(i, j, k) = (x, y, z)`` order; values are channels-last.

One class holds both layouts: a *dense* grid has ``dense [X, Y, Z, C]``; a *sparse* grid has
``indices [M, 3]`` (unique, inside ``shape``, sorted by linear key ``(i*Y + j)*Z + k``) and
``values [M, C]``. ``grid.is_sparse`` tells which; :meth:`VoxelGrid.to_dense` /
:meth:`VoxelGrid.to_sparse` convert. Conversions from and to points and meshes live in
:mod:`geo3d.voxels.conversions`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

from geo3d.errors import VoxelError

Padding = Literal["zeros", "border", "nan"]


class VoxelLookup(NamedTuple):
    """Result of :meth:`VoxelGrid.index_of`.

    Attributes:
        indices: ``[N, 3]`` int64 voxel index ``floor((p - origin) / voxel_size)`` of every point (may
            lie outside the grid).
        inside: ``[N]`` bool, True where the index lies inside ``shape``.
    """

    indices: torch.Tensor
    inside: torch.Tensor


def check_voxel_size(voxel_size, name: str = "voxel_size") -> float:
    """``voxel_size`` as a float, or :class:`VoxelError` unless it is one finite number > 0."""
    try:
        size = float(voxel_size)
    except (TypeError, ValueError):
        raise VoxelError(f"{name} must be one number (cubic voxels, metres), got {voxel_size!r}") from None
    if not (math.isfinite(size) and size > 0):
        raise VoxelError(f"{name} must be finite and > 0, got {voxel_size!r}")
    return size


def check_points(points, name: str = "points", allow_empty: bool = True) -> torch.Tensor:
    """``points`` as a floating ``[N, 3]`` tensor, or :class:`VoxelError` (wrong shape, NaN/inf, empty)."""
    if not isinstance(points, torch.Tensor):
        points = torch.as_tensor(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise VoxelError(f"{name}: expected shape [N, 3], got {list(points.shape)}")
    if not points.is_floating_point():
        points = points.to(torch.float32)
    if points.shape[0] == 0 and not allow_empty:
        raise VoxelError(f"{name}: empty point cloud (0 points)")
    bad = ~torch.isfinite(points).all(dim=1)
    if bool(bad.any()):
        raise VoxelError(f"{name}: {int(bad.sum())} of {points.shape[0]} points hold NaN/inf coordinates")
    return points


def _as_origin(origin, device) -> torch.Tensor:
    corner = torch.as_tensor(origin, dtype=torch.float64, device=device).reshape(-1)
    if corner.shape != (3,) or not bool(torch.isfinite(corner).all()):
        raise VoxelError(f"origin must be 3 finite numbers (metres), got {origin!r}")
    return corner


def linear_keys(indices: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """``[M]`` int64 keys ``(i*Y + j)*Z + k`` of ``[M, 3]`` indices inside ``shape`` (x slowest)."""
    return (indices[:, 0] * shape[1] + indices[:, 1]) * shape[2] + indices[:, 2]


def unravel_keys(keys: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of :func:`linear_keys`: ``[M]`` keys -> ``[M, 3]`` int64 indices."""
    yz = shape[1] * shape[2]
    return torch.stack([keys // yz, (keys // shape[2]) % shape[1], keys % shape[2]], dim=1)


@dataclass(frozen=True)
class VoxelGrid:
    """A regular grid of cubic voxels with channels-last values, dense or sparse (module docstring).

    Attributes:
        origin: ``[3]`` float64 world position of the min corner of voxel ``(0, 0, 0)``, metres.
        voxel_size: voxel edge length, metres (> 0).
        shape: ``(X, Y, Z)`` voxels per axis (each >= 1).
        dense: ``[X, Y, Z, C]`` values of every voxel (dense grid), else None.
        indices: ``[M, 3]`` int64 voxel indices (sparse grid: unique, inside ``shape``, sorted by
            linear key), else None.
        values: ``[M, C]`` values of ``indices`` (sparse grid), else None.

    Construct with ``VoxelGrid(origin, voxel_size, shape, dense=...)`` or ``(..., indices=..., values=...)``;
    both are validated (:class:`VoxelError`). Sparse indices are sorted on construction.
    """

    origin: torch.Tensor
    voxel_size: float
    shape: tuple[int, int, int]
    dense: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    values: torch.Tensor | None = None

    def __post_init__(self) -> None:
        size = check_voxel_size(self.voxel_size)
        shape = tuple(int(n) for n in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise VoxelError(f"shape must be 3 positive voxel counts (X, Y, Z), got {self.shape!r}")
        if (self.dense is None) == (self.indices is None):
            raise VoxelError("a VoxelGrid needs either dense values or sparse indices + values (exactly one)")
        device = (self.dense if self.dense is not None else self.indices).device
        object.__setattr__(self, "voxel_size", size)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "origin", _as_origin(self.origin, device))
        if self.dense is not None:
            if self.values is not None:
                raise VoxelError("values are the sparse layout's; a dense grid holds them in dense")
            dense = self.dense if self.dense.ndim == 4 else self.dense[..., None]
            if tuple(dense.shape[:3]) != shape or dense.ndim != 4:
                raise VoxelError(f"dense: expected shape [{shape[0]}, {shape[1]}, {shape[2]}, C], "
                                 f"got {list(self.dense.shape)}")
            object.__setattr__(self, "dense", dense)
            return
        indices, values = self.indices, self.values
        if indices.ndim != 2 or indices.shape[1] != 3 or indices.dtype != torch.int64:
            raise VoxelError(f"indices: expected int64 [M, 3], got {indices.dtype} {list(indices.shape)}")
        if values is None:
            raise VoxelError("a sparse VoxelGrid needs values [M, C] with its indices")
        values = values if values.ndim == 2 else values.reshape(values.shape[0], -1)
        if values.shape[0] != indices.shape[0]:
            raise VoxelError(f"values: expected {indices.shape[0]} rows (one per index), got {list(values.shape)}")
        if indices.shape[0]:
            low, high = indices.min(0).values, indices.max(0).values
            if bool((low < 0).any()) or any(int(h) >= n for h, n in zip(high, shape, strict=True)):
                raise VoxelError(f"indices must lie in [0, {list(shape)}), got range {low.tolist()}..{high.tolist()}")
            keys = linear_keys(indices, shape)
            order = torch.argsort(keys)
            keys = keys[order]
            if bool((keys[1:] == keys[:-1]).any()):
                raise VoxelError(f"indices: {int((keys[1:] == keys[:-1]).sum())} duplicate voxel(s); sparse "
                                 f"indices must be unique")
            if not bool((order[1:] > order[:-1]).all()):
                indices, values = indices[order], values[order]
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "values", values)

    # ----------------------------------------------------------------------------------------- views
    @property
    def is_sparse(self) -> bool:
        """True for the ``indices`` + ``values`` layout."""
        return self.dense is None

    @property
    def num_channels(self) -> int:
        """``C``, the number of values per voxel."""
        return int(self.values.shape[1] if self.is_sparse else self.dense.shape[3])

    @property
    def device(self) -> torch.device:
        return self.values.device if self.is_sparse else self.dense.device

    def to(self, device) -> VoxelGrid:
        """The same grid with its tensors on ``device``."""
        if self.is_sparse:
            return VoxelGrid(self.origin.to(device), self.voxel_size, self.shape, indices=self.indices.to(device),
                             values=self.values.to(device))
        return VoxelGrid(self.origin.to(device), self.voxel_size, self.shape, dense=self.dense.to(device))

    @classmethod
    def from_bounds(cls, bounds, voxel_size: float, channels: int = 1, *, sparse: bool = True, fill: float = 0.0,
                    dtype: torch.dtype = torch.float32, device=None) -> VoxelGrid:
        """A grid covering the box ``bounds`` (``[2, 3]`` min and max corners, metres).

        ``origin = bounds[0]`` and ``shape = ceil((bounds[1] - bounds[0]) / voxel_size)`` (at least 1),
        so the grid covers the box, overhanging its max side by less than one voxel. ``sparse`` gives an
        empty sparse grid (0 voxels, ``channels`` channels), else a dense one filled with ``fill``.
        """
        size = check_voxel_size(voxel_size)
        box = torch.as_tensor(bounds, dtype=torch.float64).cpu()
        if box.shape != (2, 3) or not bool(torch.isfinite(box).all()) or bool((box[1] < box[0]).any()):
            raise VoxelError(f"bounds must be [2, 3] finite (min corner, max corner) with max >= min, got {bounds!r}")
        shape = tuple(max(1, math.ceil(float(e) / size - 1e-9)) for e in (box[1] - box[0]))
        if math.prod(shape) >= 2**62:
            raise VoxelError(f"voxel_size {size} is too small for bounds {box.tolist()} ({list(shape)} voxels)")
        if sparse:
            return cls(box[0], size, shape, indices=torch.zeros((0, 3), dtype=torch.int64, device=device),
                       values=torch.zeros((0, channels), dtype=dtype, device=device))
        return cls(box[0], size, shape, dense=torch.full((*shape, channels), fill, dtype=dtype, device=device))

    def bounds(self) -> torch.Tensor:
        """``[2, 3]`` float64 min and max corners of the grid box, metres."""
        extent = torch.tensor(self.shape, dtype=torch.float64, device=self.origin.device) * self.voxel_size
        return torch.stack([self.origin, self.origin + extent])

    def index_of(self, points: torch.Tensor) -> VoxelLookup:
        """Voxel index ``floor((p - origin) / voxel_size)`` of ``points [N, 3]`` (metres, grid frame),
        computed in float64, with an ``inside`` mask (:class:`VoxelLookup`)."""
        points = check_points(points)
        scaled = torch.floor((points.to(torch.float64) - self.origin.to(points.device)) / self.voxel_size)
        limit = torch.tensor(self.shape, dtype=torch.float64, device=points.device)
        inside = ((scaled >= 0) & (scaled < limit)).all(dim=1)
        return VoxelLookup(scaled.clamp(-(2.0**62), 2.0**62).to(torch.int64), inside)

    def centers(self, indices: torch.Tensor | None = None) -> torch.Tensor:
        """``[M, 3]`` float64 world centres ``origin + (index + 0.5) * voxel_size`` of ``indices``
        (default: :meth:`occupied_indices`)."""
        indices = self.occupied_indices() if indices is None else indices
        return self.origin.to(indices.device) + (indices.to(torch.float64) + 0.5) * self.voxel_size

    def occupied_indices(self) -> torch.Tensor:
        """``[M, 3]`` int64 indices of the stored voxels (sparse) or of the voxels with a non-zero value
        in any channel (dense), sorted by linear key."""
        if self.is_sparse:
            return self.indices
        return torch.nonzero((self.dense != 0).any(dim=3))

    def to_dense(self, fill: float = 0.0) -> VoxelGrid:
        """The dense grid: sparse values scattered into ``[X, Y, Z, C]`` filled with ``fill`` elsewhere
        (``fill=float('nan')`` marks unobserved voxels for :func:`geo3d.voxels.conversions.grid_to_mesh`)."""
        if not self.is_sparse:
            return self
        dense = torch.full((*self.shape, self.num_channels), fill, dtype=self.values.dtype, device=self.device)
        dense[self.indices[:, 0], self.indices[:, 1], self.indices[:, 2]] = self.values
        return VoxelGrid(self.origin, self.voxel_size, self.shape, dense=dense)

    def to_sparse(self, mask: torch.Tensor | None = None, threshold: float | None = None,
                  channel: int = 0) -> VoxelGrid:
        """The sparse grid of the kept voxels of a dense grid: those where ``mask [X, Y, Z]`` is True,
        else where ``dense[..., channel] > threshold``, else where any channel is non-zero. A sparse
        grid is filtered the same way (``mask`` then is ``[M]``)."""
        data = self.values if self.is_sparse else self.dense
        if mask is None:
            if threshold is not None:
                mask = data[..., channel] > threshold
            else:
                mask = (data != 0).any(dim=-1)
        mask = torch.as_tensor(mask, device=self.device)
        if mask.dtype != torch.bool or tuple(mask.shape) != tuple(data.shape[:-1]):
            raise VoxelError(f"mask: expected bool {list(data.shape[:-1])}, got {mask.dtype} {list(mask.shape)}")
        if self.is_sparse:
            return VoxelGrid(self.origin, self.voxel_size, self.shape, indices=self.indices[mask],
                             values=self.values[mask])
        indices = torch.nonzero(mask)
        return VoxelGrid(self.origin, self.voxel_size, self.shape, indices=indices, values=self.dense[mask])

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """``[N]`` int64 row in ``values`` of every voxel index ``[N, 3]`` of a sparse grid, -1 where the
        voxel is not stored or lies outside the grid (``torch.searchsorted`` on the sorted linear keys)."""
        if not self.is_sparse:
            raise VoxelError("lookup needs a sparse grid (use dense[i, j, k] on a dense one)")
        limit = torch.tensor(self.shape, device=indices.device)
        inside = ((indices >= 0) & (indices < limit)).all(dim=1)
        if self.indices.shape[0] == 0:
            return torch.full(inside.shape, -1, dtype=torch.int64, device=indices.device)
        stored = linear_keys(self.indices, self.shape)
        keys = linear_keys(indices.clamp(min=0).minimum(limit - 1), self.shape)
        rows = torch.searchsorted(stored, keys).clamp(max=stored.shape[0] - 1)
        found = inside & (stored[rows] == keys)
        return torch.where(found, rows, torch.full_like(rows, -1))

    def sample(self, points: torch.Tensor, padding: Padding = "zeros") -> torch.Tensor:
        """Trilinear interpolation of the values at ``points [N, 3]`` (values sit at voxel centres):
        :func:`trilinear_sample` for dense grids, :func:`sample_sparse` for sparse ones."""
        if self.is_sparse:
            return sample_sparse(self, points, padding)
        return trilinear_sample(self.dense, self.origin, self.voxel_size, points, padding)


# ------------------------------------------------------------------------------------ trilinear
def _corner_weights(points: torch.Tensor, origin: torch.Tensor, voxel_size: float):
    """Base voxel ``[N, 3]`` int64 (the lower of the 8 centres around each point) and fractions
    ``[N, 3]`` in [0, 1) (differentiable w.r.t. points)."""
    continuous = (points - origin.to(points)) / voxel_size - 0.5
    base = torch.floor(continuous.detach())
    return base.to(torch.int64), continuous - base


_CORNERS = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=torch.int64)


def _blend(corner_values: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
    """``[8, N, C]`` corner values (order of ``_CORNERS``) and ``[N, 3]`` fractions -> ``[N, C]``."""
    out = 0.0
    for c, (a, b, d) in enumerate(_CORNERS.tolist()):
        w = ((frac[:, 0] if a else 1 - frac[:, 0]) * (frac[:, 1] if b else 1 - frac[:, 1])
             * (frac[:, 2] if d else 1 - frac[:, 2]))
        out = out + w[:, None] * corner_values[c]
    return out


def _check_padding(padding: str) -> None:
    if padding not in ("zeros", "border", "nan"):
        raise VoxelError(f"padding must be 'zeros', 'border' or 'nan', got {padding!r}")


def trilinear_sample(values: torch.Tensor, origin, voxel_size: float, points: torch.Tensor,
                     padding: Padding = "zeros", method: Literal["gather", "grid_sample"] = "gather") -> torch.Tensor:
    """Trilinear interpolation of a dense feature grid at continuous points.

    Value ``values[i, j, k]`` sits at the voxel centre ``origin + (i, j, k, + 0.5) * voxel_size``; a point
    blends the 8 centres around it. Differentiable w.r.t. ``values`` and ``points``.

    Args:
        values: ``[X, Y, Z, C]`` (or ``[X, Y, Z]``) channels-last floating values.
        origin: ``[3]`` min corner of voxel (0, 0, 0), metres.
        voxel_size: voxel edge, metres (> 0).
        points: ``[N, 3]`` query points, metres, grid frame.
        padding: what neighbours outside the grid hold: ``"zeros"`` (0, the value fades to 0 over the
            half voxel beyond the outer centres), ``"border"`` (the nearest voxel: coordinates clamped
            to the outer centres) or ``"nan"`` (NaN wherever a neighbour lies outside).
        method: ``"gather"`` (8 gathers, the reference) or ``"grid_sample"``
            (``torch.nn.functional.grid_sample`` with ``align_corners=False``: -1 and +1 are the grid
            box faces, so voxel centres sit where that convention puts them). Both agree.

    Returns:
        ``[N, C]`` (``[N]`` for ``[X, Y, Z]`` values), dtype of ``values``.
    """
    _check_padding(padding)
    squeeze = values.ndim == 3
    values = values[..., None] if squeeze else values
    if values.ndim != 4 or not values.is_floating_point():
        raise VoxelError(f"values: expected floating [X, Y, Z, C], got {values.dtype} {list(values.shape)}")
    size = check_voxel_size(voxel_size)
    corner = _as_origin(origin, values.device).to(values.dtype)
    points = check_points(points).to(values.dtype)
    shape = torch.tensor(values.shape[:3], device=values.device)
    if method == "grid_sample":
        out = _grid_sample(values, corner, size, points, padding)
    elif method == "gather":
        base, frac = _corner_weights(points, corner, size)
        if padding == "border":
            frac = torch.where((base < 0) | (base >= shape - 1), torch.zeros_like(frac), frac)
            base = base.clamp(min=0).minimum(shape - 1)
        idx = base[None] + _CORNERS.to(base.device)[:, None]  # [8, N, 3]
        inside = ((idx >= 0) & (idx < shape)).all(dim=2)
        clamped = idx.clamp(min=0).minimum(shape - 1)
        corner_values = values[clamped[..., 0], clamped[..., 1], clamped[..., 2]]  # [8, N, C]
        if padding != "border":
            corner_values = torch.where(inside[..., None], corner_values, torch.zeros_like(corner_values))
        out = _blend(corner_values, frac)
        if padding == "nan":
            out = torch.where(inside.all(dim=0)[:, None], out, torch.full_like(out, math.nan))
    else:
        raise VoxelError(f"method must be 'gather' or 'grid_sample', got {method!r}")
    return out[:, 0] if squeeze else out


def _grid_sample(values, corner, size, points, padding):
    extent = torch.tensor(values.shape[:3], dtype=values.dtype, device=values.device) * size
    normalised = 2.0 * (points - corner) / extent - 1.0  # align_corners=False: +-1 at the box faces
    grid = normalised.reshape(1, 1, 1, -1, 3)  # grid_sample's last dim is (x -> W, y -> H, z -> D)
    volume = values.permute(3, 2, 1, 0)[None]  # [1, C, Z, Y, X]
    mode = "border" if padding == "border" else "zeros"
    out = torch.nn.functional.grid_sample(volume, grid, mode="bilinear", padding_mode=mode, align_corners=False)
    out = out.reshape(values.shape[3], -1).T
    if padding == "nan":
        continuous = (points - corner) / size - 0.5
        limit = torch.tensor(values.shape[:3], dtype=values.dtype, device=values.device) - 1
        ok = ((continuous >= 0) & (continuous <= limit)).all(dim=1)
        # a point exactly on the last centre has base = X-1 and an outside neighbour of weight 0
        ok &= (torch.floor(continuous) < limit).all(dim=1)
        out = torch.where(ok[:, None], out, torch.full_like(out, math.nan))
    return out


def sample_sparse(grid: VoxelGrid, points: torch.Tensor, padding: Padding = "zeros") -> torch.Tensor:
    """Trilinear interpolation of a sparse grid's ``values [M, C]`` at ``points [N, 3]`` (metres).

    The 8 neighbour centres of each point are found by :meth:`VoxelGrid.lookup` (binary search on the
    sorted linear keys). Missing voxels (not stored, or outside the grid) hold 0 with
    ``padding="zeros"``, make the result NaN with ``"nan"``, and with ``"border"`` drop out of the
    blend (the remaining weights are renormalised; NaN when all 8 are missing). Differentiable w.r.t.
    ``values`` and ``points``. Returns ``[N, C]``.
    """
    _check_padding(padding)
    if not grid.is_sparse:
        raise VoxelError("sample_sparse needs a sparse grid (use trilinear_sample on dense values)")
    values = grid.values if grid.values.is_floating_point() else grid.values.to(torch.float32)
    points = check_points(points).to(values.dtype)
    base, frac = _corner_weights(points, grid.origin, grid.voxel_size)
    idx = base[None] + _CORNERS.to(base.device)[:, None]  # [8, N, 3]
    rows = grid.lookup(idx.reshape(-1, 3)).reshape(8, -1)
    found = rows >= 0
    if values.shape[0] == 0:
        corner_values = values.new_zeros((8, points.shape[0], values.shape[1]))
    else:
        corner_values = values[rows.clamp(min=0)]
        corner_values = torch.where(found[..., None], corner_values, torch.zeros_like(corner_values))
    out = _blend(corner_values, frac)
    if padding == "nan":
        out = torch.where(found.all(dim=0)[:, None], out, torch.full_like(out, math.nan))
    elif padding == "border":
        weight = _blend(found.to(values.dtype)[..., None], frac)
        out = out / weight  # 0/0 = NaN when no neighbour is stored
    return out
