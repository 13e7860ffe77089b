"""A sparse octree over occupied voxels: Morton-sorted nodes per level, point location, neighbour
leaves, per-level feature pooling and ray traversal (:mod:`geo3d.voxels.octree_rays`).

Conventions (shared with :mod:`geo3d.voxels.grid`; ``docs/octree.md`` has the full page):

- The tree covers the cube ``[origin, origin + size]^3`` with ``size = leaf_size * 2^depth``. Level 0
  is the root, level ``depth`` holds the leaves: voxels of ``leaf_size`` metres. At level ``L`` the
  integer coordinates ``(i, j, k)`` index cells of ``size / 2^L`` metres, the cell
  ``[origin + (i, j, k) * cell, origin + (i, j, k) * cell + cell)``.
- A point ``p`` falls in the leaf ``floor((p - origin) / leaf_size)``; cells are half-open, except that
  points on the cube's upper faces belong to the last cell (so every point the tree was built from
  is located, including those on the bounds the caller gave).
- Nodes are identified by Morton codes (:mod:`geo3d.voxels.morton`: x in the lowest bit); the parent
  of code ``c`` is ``c >> 3`` and its slot among the parent's children ``c & 7``.

Only occupied nodes are stored: per level the sorted codes, an 8-bit mask of occupied children and
the row of the first child in the next level (children of a node are contiguous there, as the codes
are sorted), plus per-leaf point counts and optional features. Memory grows with the number of
occupied leaves (about ``8 * 8 / 7`` bytes of codes per leaf plus masks and pointers), never with the
bounding box. All queries are vectorised torch ops (``searchsorted`` over sorted codes) that run on
any device.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Literal, NamedTuple

import torch

from geo3d.errors import VoxelError
from geo3d.voxels.morton import MORTON_BITS, morton_decode_unchecked, morton_encode_unchecked

if TYPE_CHECKING:
    from geo3d.voxels.octree_rays import RayHits, RayIntervals

Reduce = Literal["mean", "max", "min", "sum"]
NEIGHBOR_CHUNK = 1 << 22
"""(query, offset) pairs :meth:`Octree.neighbor_leaves` looks up at once."""
_REDUCE_OPS = {"mean": "mean", "max": "amax", "min": "amin", "sum": "sum"}


class KnnLeaves(NamedTuple):
    """Result of :meth:`Octree.knn_leaves`.

    Attributes:
        leaf_indices: ``[Q, k]`` int64 rows into the leaf level, nearest first (-1 when the tree has
            fewer than ``k`` leaves).
        distances: ``[Q, k]`` float64 Euclidean distances in metres from the query point to the leaf
            centres (``inf`` for missing slots).
    """

    leaf_indices: torch.Tensor
    distances: torch.Tensor


def _as_points(name: str, points: object, allow_empty: bool = False) -> torch.Tensor:
    """Validate a ``[N, 3]`` floating point cloud (finite, non-empty unless allowed)."""
    if not isinstance(points, torch.Tensor):
        try:
            points = torch.as_tensor(points)
        except (TypeError, ValueError, RuntimeError) as error:
            raise VoxelError(f"{name} must be a [N, 3] tensor of coordinates: {error}") from None
    if points.ndim != 2 or points.shape[1] != 3:
        raise VoxelError(f"{name} must have shape [N, 3], got {tuple(points.shape)}")
    if not points.dtype.is_floating_point:
        raise VoxelError(f"{name} must be a floating point tensor, got dtype {points.dtype}")
    if points.shape[0] == 0 and not allow_empty:
        raise VoxelError(f"{name} is empty: an octree needs at least one point")
    if not bool(torch.isfinite(points).all()):
        bad = int((~torch.isfinite(points).all(1)).nonzero()[0, 0])
        raise VoxelError(f"{name} holds NaN or inf coordinates (first at row {bad})")
    return points


def _check_leaf_size(leaf_size: float) -> float:
    try:
        value = float(leaf_size)
    except (TypeError, ValueError):
        raise VoxelError(f"leaf_size must be a positive number of metres, got {leaf_size!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise VoxelError(f"leaf_size must be a positive finite number of metres, got {leaf_size!r}")
    return value


def _check_depth(depth: object) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= MORTON_BITS:
        raise VoxelError(f"depth must be an integer in [0, {MORTON_BITS}] (63-bit Morton codes), got {depth!r}")
    return depth


def _check_features(features: torch.Tensor | None, rows: int, name: str = "features") -> torch.Tensor | None:
    if features is None:
        return None
    if not isinstance(features, torch.Tensor):
        raise VoxelError(f"{name} must be a torch.Tensor [N, C], got {type(features).__name__}")
    if features.ndim == 1:
        features = features[:, None]
    if features.ndim != 2 or features.shape[0] != rows:
        raise VoxelError(f"{name} must have shape [{rows}, C], got {tuple(features.shape)}")
    if features.dtype.is_floating_point and not bool(torch.isfinite(features).all()):
        raise VoxelError(f"{name} holds NaN or inf values")
    return features


def _check_reduce(reduce: str) -> str:
    if reduce not in _REDUCE_OPS:
        raise VoxelError(f"reduce must be one of {sorted(_REDUCE_OPS)}, got {reduce!r}")
    return reduce


def _depth_for(cells: float) -> int:
    """Smallest depth with ``2^depth >= cells`` (at least 0)."""
    depth = max(0, math.ceil(math.log2(cells))) if cells > 1 else 0
    while (1 << depth) < cells:
        depth += 1
    return depth


def _group_reduce(values: torch.Tensor, group: torch.Tensor, groups: int, reduce: str,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    """Reduce rows of ``values [N, C]`` into ``groups`` rows by ``group [N]``; ``mean`` is weighted by
    ``weights [N]`` when given."""
    if reduce == "mean" and weights is not None:
        w = weights.to(values.dtype)[:, None]
        total = values.new_zeros((groups, values.shape[1])).index_add_(0, group, values * w)
        norm = values.new_zeros((groups, 1)).index_add_(0, group, w)
        return total / norm.clamp(min=torch.finfo(values.dtype).tiny)
    index = group[:, None].expand(-1, values.shape[1])
    out = values.new_zeros((groups, values.shape[1]))
    return out.scatter_reduce_(0, index, values, reduce=_REDUCE_OPS[reduce], include_self=False)


class Octree:
    """Sparse octree of occupied voxels (module docstring for the conventions).

    Build it with :meth:`from_points`, :meth:`from_voxel_indices` or :meth:`from_voxel_grid`.

    Attributes:
        origin: ``[3]`` float64 lower corner of the cube, metres (world frame of the input points).
        leaf_size: edge of a leaf voxel, metres.
        depth: number of levels below the root (0..21); leaves live at level ``depth``.
        codes: ``depth + 1`` sorted int64 tensors ``[M_L]``, the Morton codes of the occupied nodes of
            level ``L`` (coordinates at that level's resolution).
        child_masks: ``depth + 1`` uint8 tensors ``[M_L]``; bit ``c`` is set when child slot ``c`` is
            occupied (all zero at the leaf level).
        children_start: ``depth`` int64 tensors ``[M_L]`` (levels 0..depth-1): row in ``codes[L + 1]``
            of the node's first child; its children are the next ``popcount(mask)`` rows.
        point_counts: ``[M_depth]`` int64 points per leaf (1 per voxel when built from voxels).
        features: ``[M_depth, C]`` per-leaf features, or None.
    """

    def __init__(self, origin: torch.Tensor, leaf_size: float, depth: int, codes: list[torch.Tensor],
                 child_masks: list[torch.Tensor], children_start: list[torch.Tensor],
                 point_counts: torch.Tensor, features: torch.Tensor | None = None) -> None:
        self.origin = origin
        self.leaf_size = float(leaf_size)
        self.depth = int(depth)
        self.codes = tuple(codes)
        self.child_masks = tuple(child_masks)
        self.children_start = tuple(children_start)
        self.point_counts = point_counts
        self.features = features

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_points(cls, points: torch.Tensor, leaf_size: float, depth: int | None = None,
                    bounds: torch.Tensor | tuple | None = None, features: torch.Tensor | None = None,
                    reduce: Reduce = "mean") -> Octree:
        """Octree whose leaves are the ``leaf_size`` voxels holding at least one point.

        Args:
            points: ``[N, 3]`` float points in metres, N >= 1, finite.
            leaf_size: leaf voxel edge in metres, > 0.
            depth: levels below the root. Default: the smallest depth whose cube holds every point.
            bounds: ``[2, 3]`` (lower, upper) corners of the region to cover, metres; the cube starts
                at ``lower`` and is the smallest power-of-two multiple of ``leaf_size`` covering
                ``upper`` (or exactly ``depth`` levels when given). Every point must lie inside, up to
                the rounding of its dtype (float32 points rounded just past float64 bounds are snapped
                onto them, and :meth:`locate` treats such points the same way).
                Default: ``lower`` is the points' minimum rounded down to a multiple of ``leaf_size``
                (leaves then align with the world voxel grid ``floor(p / leaf_size)``).
            features: ``[N, C]`` (or ``[N]``) per-point features reduced into each leaf.
            reduce: ``"mean"``, ``"max"``, ``"min"`` or ``"sum"`` of the features of a leaf's points.

        Returns:
            The :class:`Octree`; identical tensors for any order of the input points (up to float
            rounding of ``"mean"``/``"sum"`` feature reductions).

        Raises:
            VoxelError: empty cloud, NaN/inf points, ``leaf_size <= 0``, depth outside [0, 21], points
                outside ``bounds`` or outside the cube of the given depth, bad features or reduce.
        """
        points = _as_points("points", points)
        leaf_size = _check_leaf_size(leaf_size)
        _check_reduce(reduce)
        features = _check_features(features, points.shape[0])
        if depth is not None:
            _check_depth(depth)
        p64 = points.detach().to(torch.float64)
        low_point, high_point = p64.min(0).values, p64.max(0).values
        if bounds is None:
            origin = torch.floor(low_point / leaf_size) * leaf_size
            origin = torch.where(origin > low_point, origin - leaf_size, origin)  # rounding in the division
            cells_needed = float(((high_point - origin) / leaf_size).floor().max()) + 1
        else:
            if not isinstance(bounds, torch.Tensor):  # (lower, upper) as sequences or arrays
                try:
                    bounds = torch.tensor([[float(v) for v in corner] for corner in bounds], dtype=torch.float64)
                except (TypeError, ValueError):
                    raise VoxelError(f"bounds must be [2, 3] (lower, upper) corners, got {bounds!r}") from None
            box = torch.as_tensor(bounds, dtype=torch.float64, device=points.device)
            if box.shape != (2, 3) or not bool(torch.isfinite(box).all()) or bool((box[1] < box[0]).any()):
                raise VoxelError(f"bounds must be finite [2, 3] (lower, upper) corners with lower <= upper, "
                                 f"got {box.tolist() if box.numel() <= 6 else tuple(box.shape)}")
            slack = 4 * torch.finfo(points.dtype).eps * float(box.abs().max())  # rounding of float32 input
            outside = ((p64 < box[0] - slack) | (p64 > box[1] + slack)).any(1)
            if bool(outside.any()):
                row = int(outside.nonzero()[0, 0])
                raise VoxelError(f"points: {int(outside.sum())} points lie outside bounds {box.tolist()} "
                                 f"(first at row {row}: {p64[row].tolist()})")
            origin = box[0]
            # the largest extent in leaves, less a rounding error: (size, size / 2^d) gives depth d
            cells_needed = max(float((box[1] - box[0]).max()) / leaf_size * (1 - 1e-12), 1.0)
        if depth is None:
            depth = _depth_for(cells_needed)
            if depth > MORTON_BITS:
                raise VoxelError(f"the points span {cells_needed:.0f} leaves of {leaf_size} m per axis, more "
                                 f"than 2^{MORTON_BITS}: use a larger leaf_size")
        elif (1 << depth) < cells_needed:
            raise VoxelError(f"depth={depth} gives a cube of {leaf_size * (1 << depth)} m, too small for the "
                             f"{'bounds' if bounds is not None else 'points'} ({cells_needed:.0f} leaves per "
                             f"axis needed)")
        tree_shell = cls(origin, leaf_size, depth, [], [], [], torch.zeros(0, dtype=torch.int64))
        ijk, inside = tree_shell._point_cells(p64, points.dtype)
        if not bool(inside.all()):  # only reachable through float rounding at the cube's faces
            row = int((~inside).nonzero()[0, 0])
            raise VoxelError(f"points: row {row} {p64[row].tolist()} lies outside the octree cube")
        return cls._build(ijk, origin, leaf_size, depth, features, reduce)

    @classmethod
    def from_voxel_indices(cls, indices: torch.Tensor, origin: torch.Tensor | tuple, leaf_size: float,
                           depth: int | None = None, features: torch.Tensor | None = None,
                           reduce: Reduce = "mean") -> Octree:
        """Octree whose leaves are the given occupied voxels.

        Args:
            indices: ``[M, 3]`` integer voxel coordinates ``(i, j, k) >= 0``; voxel ``(i, j, k)`` spans
                ``origin + (i, j, k) * leaf_size`` to ``+ leaf_size``. Duplicates are merged.
            origin: ``[3]`` world position of voxel (0, 0, 0)'s lower corner, metres.
            leaf_size: voxel edge in metres, > 0.
            depth: levels below the root; default the smallest whose cube holds every index.
            features: ``[M, C]`` per-voxel features (reduced with ``reduce`` over duplicates).
            reduce: reduction of duplicate voxels' features.

        Raises:
            VoxelError: empty or negative indices, bad origin/leaf size/depth/features.
        """
        if not isinstance(indices, torch.Tensor) or indices.ndim != 2 or indices.shape[1] != 3:
            shape = tuple(indices.shape) if isinstance(indices, torch.Tensor) else type(indices).__name__
            raise VoxelError(f"indices must be a [M, 3] integer tensor, got {shape}")
        if indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise VoxelError(f"indices must hold integers, got dtype {indices.dtype}")
        if indices.shape[0] == 0:
            raise VoxelError("indices is empty: an octree needs at least one occupied voxel")
        if bool((indices < 0).any()):
            raise VoxelError(f"indices must be >= 0, got minimum {int(indices.min())}")
        leaf_size = _check_leaf_size(leaf_size)
        origin = torch.as_tensor(origin, dtype=torch.float64, device=indices.device).reshape(-1)
        if origin.shape != (3,) or not bool(torch.isfinite(origin).all()):
            raise VoxelError(f"origin must be 3 finite coordinates, got {origin.tolist()}")
        _check_reduce(reduce)
        features = _check_features(features, indices.shape[0])
        cells_needed = int(indices.max()) + 1
        if cells_needed > (1 << MORTON_BITS):
            raise VoxelError(f"indices must be < 2^{MORTON_BITS} (63-bit Morton codes), got {cells_needed - 1}")
        if depth is None:
            depth = _depth_for(cells_needed)
        _check_depth(depth)
        if cells_needed > (1 << depth):
            raise VoxelError(f"indices reach {cells_needed - 1}, outside a depth-{depth} tree "
                             f"({1 << depth} leaves per axis)")
        return cls._build(indices.to(torch.int64), origin, leaf_size, depth, features, reduce)

    @classmethod
    def from_voxel_grid(cls, grid: object, depth: int | None = None) -> Octree:
        """Octree whose leaves are the occupied voxels of a :class:`geo3d.voxels.grid.VoxelGrid`.

        A sparse grid (``indices [M, 3]``, ``values [M, C]``) gives its voxels and their values as
        features; a dense grid (``dense [X, Y, Z, C]``) gives the voxels with any non-zero channel.
        The grid's ``origin`` and ``voxel_size`` become the octree's; the cube is padded to a power of
        two above the grid's shape.

        Raises:
            VoxelError: the grid has no occupied voxel, or misses the fields above.
        """
        try:
            origin, voxel_size = grid.origin, grid.voxel_size
        except AttributeError:
            raise VoxelError(f"grid must have origin and voxel_size, got {type(grid).__name__}") from None
        indices = getattr(grid, "indices", None)
        values = getattr(grid, "values", None)
        if indices is None:
            dense = getattr(grid, "dense", None)
            if dense is None:
                raise VoxelError(f"grid {type(grid).__name__} has neither sparse indices nor dense values")
            dense = torch.as_tensor(dense)
            if dense.ndim == 3:
                dense = dense[..., None]
            occupied = (dense != 0).any(-1)
            indices = occupied.nonzero()
            values = dense[occupied]
        indices = torch.as_tensor(indices)
        if values is not None:
            values = torch.as_tensor(values)
        shape = getattr(grid, "shape", None)
        if depth is None and shape is not None:
            depth = _depth_for(float(max(int(s) for s in tuple(shape)[:3])))
        return cls.from_voxel_indices(indices, torch.as_tensor(origin), float(voxel_size), depth, values)

    @classmethod
    def _build(cls, ijk: torch.Tensor, origin: torch.Tensor, leaf_size: float, depth: int,
               features: torch.Tensor | None, reduce: str) -> Octree:
        """Sort the leaf codes, reduce features per leaf and derive every coarser level."""
        point_codes = morton_encode_unchecked(ijk)
        leaf_codes, inverse, counts = torch.unique(point_codes, sorted=True, return_inverse=True,
                                                   return_counts=True)
        leaf_features = None
        if features is not None and leaf_codes.shape[0] == features.shape[0]:  # one row per leaf: reorder
            leaf_features = features.new_empty(features.shape).index_copy_(0, inverse, features)
        elif features is not None:
            leaf_features = _group_reduce(features, inverse, leaf_codes.shape[0], reduce)
        codes = [leaf_codes]
        masks = [torch.zeros_like(leaf_codes, dtype=torch.uint8)]
        starts = []
        child_codes = leaf_codes
        for _ in range(depth):
            parent_codes, child_counts = torch.unique_consecutive(child_codes >> 3, return_counts=True)
            parent_row = torch.repeat_interleave(torch.arange(parent_codes.shape[0], device=ijk.device),
                                                 child_counts)
            slot_bits = torch.ones_like(child_codes) << (child_codes & 7)
            mask = torch.zeros_like(parent_codes).index_add_(0, parent_row, slot_bits)
            codes.append(parent_codes)
            masks.append(mask.to(torch.uint8))
            starts.append(torch.cumsum(child_counts, 0) - child_counts)
            child_codes = parent_codes
        return cls(origin.to(ijk.device), leaf_size, depth, codes[::-1], masks[::-1], starts[::-1], counts,
                   leaf_features)

    # ------------------------------------------------------------------ basic properties
    @property
    def size(self) -> float:
        """Edge of the cube covered by the tree, metres (``leaf_size * 2^depth``)."""
        return self.leaf_size * (1 << self.depth)

    @property
    def device(self) -> torch.device:
        return self.codes[-1].device

    @property
    def num_leaves(self) -> int:
        """Number of occupied leaves ``M_depth``."""
        return int(self.codes[-1].shape[0])

    @property
    def num_nodes(self) -> int:
        """Number of stored (occupied) nodes over all levels."""
        return sum(int(c.shape[0]) for c in self.codes)

    def cell_size(self, level: int | None = None) -> float:
        """Edge of a node at ``level`` in metres (``size / 2^level``; default the leaf level)."""
        return self.leaf_size * (1 << (self.depth - self._check_level(level)))

    def memory_bytes(self) -> int:
        """Bytes held by the tree's tensors (codes, masks, pointers, counts, features, origin)."""
        tensors = [*self.codes, *self.child_masks, *self.children_start, self.point_counts, self.origin]
        if self.features is not None:
            tensors.append(self.features)
        return sum(t.numel() * t.element_size() for t in tensors)

    def to(self, device: torch.device | str) -> Octree:
        """The same tree with every tensor on ``device``."""
        move = lambda ts: [t.to(device) for t in ts]  # noqa: E731
        return Octree(self.origin.to(device), self.leaf_size, self.depth, move(self.codes),
                      move(self.child_masks), move(self.children_start), self.point_counts.to(device),
                      None if self.features is None else self.features.to(device))

    def __repr__(self) -> str:
        feats = "none" if self.features is None else f"[{self.num_leaves}, {self.features.shape[1]}]"
        origin = ", ".join(f"{v:.4g}" for v in self.origin.tolist())
        return (f"Octree(depth={self.depth}, leaf_size={self.leaf_size:.4g} m, size={self.size:.4g} m, "
                f"origin=({origin}), leaves={self.num_leaves}, nodes={self.num_nodes}, features={feats}, "
                f"memory={self.memory_bytes() / 1024:.1f} KiB, device={self.device})")

    def _check_level(self, level: int | None) -> int:
        if level is None:
            return self.depth
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= self.depth:
            raise VoxelError(f"level must be an integer in [0, {self.depth}], got {level!r}")
        return level

    # ------------------------------------------------------------------ node geometry
    def node_coords(self, level: int | None = None) -> torch.Tensor:
        """``[M_L, 3]`` int64 cell coordinates ``(i, j, k)`` of the occupied nodes of ``level``."""
        return morton_decode_unchecked(self.codes[self._check_level(level)])

    def node_centers(self, level: int | None = None) -> torch.Tensor:
        """``[M_L, 3]`` float64 world centres (metres) of the occupied nodes of ``level`` (default leaves)."""
        level = self._check_level(level)
        cell = self.cell_size(level)
        return self.origin + (self.node_coords(level).to(torch.float64) + 0.5) * cell

    def parent_index(self, level: int) -> torch.Tensor:
        """``[M_level]`` int64 row in level ``level - 1`` of each node's parent (``level >= 1``)."""
        level = self._check_level(level)
        if level == 0:
            raise VoxelError("level 0 is the root: it has no parent")
        return torch.repeat_interleave(torch.arange(self.codes[level - 1].shape[0], device=self.device),
                                       self._child_counts(level - 1))

    def _child_counts(self, level: int) -> torch.Tensor:
        """``[M_level]`` number of occupied children of each node of ``level < depth``."""
        start = self.children_start[level]
        end = torch.cat([start[1:], start.new_tensor([self.codes[level + 1].shape[0]])])
        return end - start

    # ------------------------------------------------------------------ point queries
    def _point_cells(self, points64: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Leaf coordinates ``[Q, 3]`` of float64 points (not clamped to the cube, except that points
        on the cube's upper faces map to the last cell) and ``[Q]`` whether each lies in the cube.
        Points within the rounding error of their original ``dtype`` outside a face count as on it."""
        cells = 1 << self.depth
        far_away = 2.0 * (1 << MORTON_BITS)  # clamp before the int64 cast (no overflow far outside)
        ijk = ((points64 - self.origin) / self.leaf_size).clamp_(-far_away, far_away).floor_().to(torch.int64)
        inside = ((ijk >= 0) & (ijk < cells)).all(1)
        rows = (~inside).nonzero()[:, 0]
        if rows.numel():  # points a rounding error outside the cube's faces count as on them
            rel = (points64[rows] - self.origin) / self.leaf_size
            scale = float(self.origin.abs().max()) + self.size
            tolerance = max(1e-9 * cells, 4 * torch.finfo(dtype).eps * scale / self.leaf_size)
            rel = torch.where((rel < 0) & (rel >= -tolerance), torch.zeros_like(rel), rel)
            rel = torch.where((rel >= cells) & (rel <= cells + tolerance), torch.full_like(rel, cells - 1), rel)
            ijk[rows] = torch.floor(rel.clamp(-far_away, far_away)).to(torch.int64)
            inside[rows] = ((rel >= 0) & (rel < cells)).all(1)
        return ijk, inside

    def _lookup(self, ijk: torch.Tensor, valid: torch.Tensor, level: int) -> torch.Tensor:
        """Row in ``codes[level]`` of the node at level-``level`` coordinates ``ijk`` (-1 if absent)."""
        table = self.codes[level]
        query = morton_encode_unchecked(torch.where(valid[..., None], ijk, torch.zeros_like(ijk)))
        row = torch.searchsorted(table, query.reshape(-1)).reshape(query.shape)
        row = row.clamp(max=table.shape[0] - 1)
        found = valid & (table[row] == query)
        return torch.where(found, row, torch.full_like(row, -1))

    def locate(self, points: torch.Tensor, level: int | None = None) -> torch.Tensor:
        """Index of the occupied node holding each point (binary search over the sorted codes).

        Args:
            points: ``[Q, 3]`` float query points, metres, finite (Q may be 0).
            level: tree level to search (default the leaf level ``depth``).

        Returns:
            ``[Q]`` int64 row into ``codes[level]`` (for leaves: into ``features`` / ``point_counts``),
            -1 for points outside the cube or in an empty cell.

        Raises:
            VoxelError: bad shape, NaN/inf coordinates, bad level.
        """
        points = _as_points("points", points, allow_empty=True)
        level = self._check_level(level)
        ijk, inside = self._point_cells(points.to(device=self.device, dtype=torch.float64), points.dtype)
        return self._lookup(ijk >> (self.depth - level), inside, level)

    def neighbor_leaves(self, query: torch.Tensor, radius_cells: int = 1) -> torch.Tensor:
        """Occupied leaves in the ``(2 r + 1)^3`` block of cells around each query.

        Args:
            query: ``[Q]`` int64 leaf rows, or ``[Q, 3]`` float points (their leaf cell, occupied or
                not, even outside the cube) in metres.
            radius_cells: ``r >= 0``, the block's half-width in leaves (1: the 26 face, edge and
                corner neighbours plus the cell itself).

        Returns:
            ``[Q, (2 r + 1)^3]`` int64 leaf rows, -1 where the cell is empty or outside the cube.
            Column ``((dx + r) * (2 r + 1) + (dy + r)) * (2 r + 1) + (dz + r)`` holds offset
            ``(dx, dy, dz)``: the cell itself is the middle column.

        Raises:
            VoxelError: bad query shape/dtype, leaf rows out of range, ``radius_cells < 0``.
        """
        if isinstance(radius_cells, bool) or not isinstance(radius_cells, int) or radius_cells < 0:
            raise VoxelError(f"radius_cells must be an integer >= 0, got {radius_cells!r}")
        if isinstance(query, torch.Tensor) and not query.dtype.is_floating_point:
            if query.ndim != 1:
                raise VoxelError(f"leaf indices must have shape [Q], got {tuple(query.shape)}")
            if query.numel() and (bool((query < 0).any()) or bool((query >= self.num_leaves).any())):
                raise VoxelError(f"leaf indices must lie in [0, {self.num_leaves}), got values in "
                                 f"[{int(query.min())}, {int(query.max())}]")
            ijk = morton_decode_unchecked(self.codes[-1][query.to(self.device, torch.int64)])
        else:
            points = _as_points("query", query, allow_empty=True)
            ijk, _ = self._point_cells(points.to(device=self.device, dtype=torch.float64), points.dtype)
        span = range(-radius_cells, radius_cells + 1)
        offsets = torch.tensor(list(itertools.product(span, span, span)), dtype=torch.int64, device=self.device)
        rows = max(1, NEIGHBOR_CHUNK // offsets.shape[0])  # bounds the [rows, O, 3] cells held at once
        parts = []
        for start in range(0, max(ijk.shape[0], 1), rows):
            cells = ijk[start:start + rows, None, :] + offsets[None]
            valid = ((cells >= 0) & (cells < (1 << self.depth))).all(-1)
            parts.append(self._lookup(cells, valid, self.depth))
        return torch.cat(parts)

    def knn_leaves(self, points: torch.Tensor, k: int) -> KnnLeaves:
        """The ``k`` occupied leaves whose centres are nearest to each point (exact, Euclidean).

        "k-neighbour leaves" are ranked by the distance from the query to the leaf *centre*; ties
        between equidistant centres are broken arbitrarily. The search is a KD-tree over the leaf
        centres on the CPU and chunked brute force on CUDA (:func:`geo3d.points.knn`).

        Args:
            points: ``[Q, 3]`` float query points, metres (anywhere, inside the cube or not).
            k: leaves per query, >= 1.

        Returns:
            :class:`KnnLeaves` (``leaf_indices``, ``distances``), both ``[Q, k]``, nearest first.

        Raises:
            VoxelError: bad points or ``k < 1``.
        """
        from geo3d.points.neighbors import knn

        points = _as_points("points", points, allow_empty=True)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise VoxelError(f"k must be an integer >= 1, got {k!r}")
        centres = self.node_centers()
        if points.shape[0] == 0:
            empty = torch.zeros((0, k), device=self.device)
            return KnnLeaves(empty.to(torch.int64), empty.to(torch.float64))
        result = knn(points.to(device=self.device, dtype=torch.float64), centres, k)
        return KnnLeaves(result.indices, result.distances)

    # ------------------------------------------------------------------ pooling
    def pool(self, features: torch.Tensor | None = None, reduce: Reduce = "mean") -> list[torch.Tensor]:
        """Features of every level, pooled bottom-up from the leaves (parents from their children).

        Args:
            features: ``[M_depth, C]`` (or ``[M_depth]``) leaf features; default :attr:`features`.
            reduce: ``"mean"`` (weighted by the children's point counts, so a parent's mean is the
                mean over all its points), ``"max"``, ``"min"`` or ``"sum"``.

        Returns:
            ``depth + 1`` tensors, ``[M_L, C]`` for level ``L = 0..depth`` (the last is ``features``).

        Raises:
            VoxelError: no features, wrong row count, unknown reduce.
        """
        _check_reduce(reduce)
        if features is None:
            if self.features is None:
                raise VoxelError("pool needs features: the tree has none and none were given")
            features = self.features
        features = _check_features(features, self.num_leaves)
        levels = [features]
        weights = self.point_counts
        for level in range(self.depth - 1, -1, -1):
            parent = self.parent_index(level + 1)
            size = self.codes[level].shape[0]
            levels.append(_group_reduce(levels[-1], parent, size, reduce, weights))
            if reduce == "mean":
                weights = torch.zeros(size, dtype=torch.int64, device=self.device).index_add_(0, parent, weights)
        return levels[::-1]

    def to_voxel_grid(self):
        """The leaves as a sparse :class:`geo3d.voxels.grid.VoxelGrid` of shape ``(2^depth,) * 3`` with
        the tree's origin and ``leaf_size``; values are the leaf features, else the point counts
        (``[M, 1]`` float32)."""
        from geo3d.voxels.grid import VoxelGrid

        cells = 1 << self.depth
        values = self.features if self.features is not None else self.point_counts.to(torch.float32)[:, None]
        return VoxelGrid(self.origin, self.leaf_size, (cells, cells, cells), indices=self.node_coords(),
                         values=values)

    # ------------------------------------------------------------------ rays and conversion
    def ray_intervals(self, origins: torch.Tensor, directions: torch.Tensor, near: float | torch.Tensor = 0.0,
                      far: float | torch.Tensor = math.inf, level: int | None = None,
                      merge: bool = False) -> RayIntervals:
        """Packed intervals of rays inside occupied nodes; see
        :func:`geo3d.voxels.octree_rays.ray_intervals` (returns ``RayIntervals``)."""
        from geo3d.voxels.octree_rays import ray_intervals

        return ray_intervals(self, origins, directions, near, far, level=level, merge=merge)

    def ray_first_hit(self, origins: torch.Tensor, directions: torch.Tensor, near: float | torch.Tensor = 0.0,
                      far: float | torch.Tensor = math.inf, level: int | None = None) -> RayHits:
        """First occupied node along each ray; see :func:`geo3d.voxels.octree_rays.ray_first_hit`."""
        from geo3d.voxels.octree_rays import ray_first_hit

        return ray_first_hit(self, origins, directions, near, far, level=level)
