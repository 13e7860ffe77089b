"""Conversions between voxel grids (:class:`geo3d.voxels.grid.VoxelGrid`), points and triangle meshes.

- points -> voxels: :func:`voxelize_points` / :func:`points_to_voxels` scatter a cloud (occupancy,
  counts, or the mean / sum / max of per-point features) into a sparse or dense grid;
- mesh -> voxels: :func:`mesh_to_voxels` (surface voxels by an exact triangle/box overlap test, or
  solid voxels for watertight meshes);
- voxels -> mesh: :func:`grid_to_mesh` (marching cubes on a value channel) and :func:`occupancy_to_mesh`
  (the visible cube faces of occupied voxels, or marching cubes of the occupancy);
- voxels -> points: :func:`grid_to_points` (voxel centres and their values).

Grid conventions are those of :mod:`geo3d.voxels.grid` (docs/voxels.md).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numpy as np
import torch

from geo3d.errors import MeshError, VoxelError
from geo3d.points.sampling import voxel_downsample
from geo3d.structures.mesh import TriangleMesh
from geo3d.voxels.grid import VoxelGrid, _as_origin, check_points, check_voxel_size, linear_keys
from geo3d.voxels.marching_cubes import marching_cubes

Reduce = Literal["occupancy", "count", "mean", "sum", "max"]


class PointVoxelization(NamedTuple):
    """Result of :func:`voxelize_points`.

    Attributes:
        grid: the :class:`VoxelGrid` (sparse unless ``dense=True`` was asked).
        voxel_of_point: ``[N]`` int64 row in ``grid.indices`` / ``grid.values`` of every input point's
            voxel (sparse result; for a dense result the row of :meth:`VoxelGrid.occupied_indices`
            order), -1 for dropped points.
        num_dropped: points that fell outside the given ``shape`` and were left out.
    """

    grid: VoxelGrid
    voxel_of_point: torch.Tensor
    num_dropped: int


def voxelize_points(points: torch.Tensor, voxel_size: float, origin=None, shape=None, features=None,
                    reduce: Reduce = "occupancy", dense: bool = False) -> PointVoxelization:
    """Scatter a point cloud into voxels.

    Args:
        points: ``[N, 3]`` coordinates, metres (any frame: the grid is in the same frame).
        voxel_size: voxel edge, metres (> 0).
        origin: ``[3]`` min corner of voxel (0, 0, 0); default ``floor(min(points) / voxel_size) *
            voxel_size``, a corner of the lattice through (0, 0, 0), so clouds in one frame share voxels.
        shape: ``(X, Y, Z)``; default just large enough for every point. Points outside a given shape
            are dropped; :attr:`PointVoxelization.num_dropped` counts them.
        features: ``[N, C]`` per-point values for ``reduce`` in ``"mean"``, ``"sum"``, ``"max"``.
        reduce: per-voxel value: ``"occupancy"`` (bool ``[M, 1]``, True), ``"count"`` (int64 ``[M, 1]``
            points per voxel), ``"mean"`` / ``"sum"`` / ``"max"`` of ``features`` (``[M, C]``, their dtype;
            mean and sum are differentiable w.r.t. features).
        dense: return a dense grid (``[X, Y, Z, C]``; empty voxels hold 0 / False) instead of a sparse one.

    Returns:
        :class:`PointVoxelization`; the sparse grid stores the occupied voxels sorted by linear key.

    Raises:
        VoxelError: wrong shapes, NaN/inf points or features, voxel_size <= 0, an empty cloud without
            ``origin`` and ``shape``, features missing or given for the wrong ``reduce``, unknown ``reduce``.
    """
    if reduce not in ("occupancy", "count", "mean", "sum", "max"):
        raise VoxelError(f"reduce must be 'occupancy', 'count', 'mean', 'sum' or 'max', got {reduce!r}")
    size = check_voxel_size(voxel_size)
    points = check_points(points)
    num_points, device = points.shape[0], points.device
    needs_features = reduce in ("mean", "sum", "max")
    if needs_features and features is None:
        raise VoxelError(f"reduce={reduce!r} needs features [N, C]")
    if features is not None:
        if not needs_features:
            raise VoxelError(f"features are only used by reduce='mean'|'sum'|'max', not {reduce!r}")
        if features.ndim != 2 or features.shape[0] != num_points:
            raise VoxelError(f"features: expected shape [{num_points}, C], got {list(features.shape)}")
        if features.is_floating_point() and not bool(torch.isfinite(features).all()):
            raise VoxelError("features hold NaN/inf values")
    if num_points == 0 and (origin is None or shape is None):
        raise VoxelError("points: empty point cloud (0 points); give origin and shape for an empty grid")
    coords = points.detach().to(torch.float64)
    corner = (torch.floor(coords.min(0).values / size) * size if origin is None else _as_origin(origin, device))
    scaled = torch.floor((coords - corner) / size)
    if num_points and float(scaled.abs().max()) >= 2.0**40:
        raise VoxelError(f"voxel_size {size} is too small for the cloud's coordinates (indices beyond 2^40)")
    voxels = scaled.to(torch.int64)
    if shape is None:
        grid_shape = tuple(int(n) + 1 for n in voxels.max(0).values)
    else:
        grid_shape = tuple(int(n) for n in shape)
        if len(grid_shape) != 3 or min(grid_shape) < 1:
            raise VoxelError(f"shape must be 3 positive voxel counts, got {shape!r}")
    if math.prod(grid_shape) >= 2**62:
        raise VoxelError(f"grid shape {list(grid_shape)} is too large (linear keys beyond 2^62)")
    limit = torch.tensor(grid_shape, device=device)
    kept = ((voxels >= 0) & (voxels < limit)).all(dim=1)
    num_dropped = int((~kept).sum())
    kept_rows = torch.nonzero(kept)[:, 0]
    # geo3d.points.voxel_downsample owns the key/unique step (same floor, same x-slowest order)
    down = voxel_downsample(points[kept_rows].detach(), size, origin=corner, reduce="center")
    indices, counts, inverse = down.voxels, down.counts, down.inverse
    num_voxels = indices.shape[0]
    if reduce == "occupancy":
        values = torch.ones((num_voxels, 1), dtype=torch.bool, device=device)
    elif reduce == "count":
        values = counts[:, None]
    else:
        picked = features[kept_rows]
        if reduce == "max":
            values = picked.new_zeros((num_voxels, picked.shape[1])).scatter_reduce(
                0, inverse[:, None].expand_as(picked), picked, reduce="amax", include_self=False)
        else:
            values = picked.new_zeros((num_voxels, picked.shape[1])).index_add(0, inverse, picked)
            if reduce == "mean":
                values = values / counts.to(values.dtype)[:, None]
    voxel_of_point = torch.full((num_points,), -1, dtype=torch.int64, device=device)
    voxel_of_point[kept_rows] = inverse
    grid = VoxelGrid(corner, size, grid_shape, indices=indices, values=values)
    return PointVoxelization(grid.to_dense() if dense else grid, voxel_of_point, num_dropped)


def points_to_voxels(points: torch.Tensor, voxel_size: float, origin=None, shape=None, features=None,
                     reduce: Reduce = "occupancy", dense: bool = False) -> VoxelGrid:
    """The grid of :func:`voxelize_points` (same arguments); points outside a given ``shape`` are dropped
    silently here (use :func:`voxelize_points` to count them)."""
    return voxelize_points(points, voxel_size, origin, shape, features, reduce, dense).grid


def grid_to_points(grid: VoxelGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """``(centres [M, 3] float64, values [M, C])`` of the occupied voxels
    (:meth:`VoxelGrid.occupied_indices`: stored voxels of a sparse grid, non-zero ones of a dense grid)."""
    indices = grid.occupied_indices()
    values = grid.values if grid.is_sparse else grid.dense[indices[:, 0], indices[:, 1], indices[:, 2]]
    return grid.centers(indices), values


# ------------------------------------------------------------------------------------ voxels -> mesh
def grid_to_mesh(grid: VoxelGrid, level: float = 0.0, channel: int = 0, inside: Literal["below", "above"] = "below",
                 mask: torch.Tensor | None = None) -> TriangleMesh:
    """Marching cubes of one channel of a grid, with samples at the voxel centres
    (``sample_origin = origin + 0.5 * voxel_size``, spacing ``voxel_size``).

    A sparse grid is densified with NaN in the voxels it does not store (they make no triangles).
    ``mask [X, Y, Z]`` bool marks further voxels to leave out. ``inside`` as in
    :func:`geo3d.voxels.marching_cubes.marching_cubes` (signed distances: ``"below"``). Returns a
    :class:`TriangleMesh` in world units with outward normals.
    """
    if not 0 <= channel < grid.num_channels:
        raise VoxelError(f"channel {channel} out of range for a grid of {grid.num_channels} channel(s)")
    dense = grid.to_dense(fill=math.nan) if grid.is_sparse else grid
    values = dense.dense[..., channel].detach().to(torch.float32)
    if min(grid.shape) < 2:
        raise VoxelError(f"grid_to_mesh needs at least 2 voxels per axis, got shape {list(grid.shape)}")
    sample_origin = (grid.origin + 0.5 * grid.voxel_size).cpu().numpy()
    return marching_cubes(values, level=level, sample_origin=sample_origin, spacing=grid.voxel_size, mask=mask,
                          inside=inside)


# the 6 faces of a unit cube as (axis, side) with their 4 corners counter-clockwise seen from outside
_CUBE_FACES = {
    (0, 0): [(0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0)], (0, 1): [(1, 0, 0), (1, 1, 0), (1, 1, 1), (1, 0, 1)],
    (1, 0): [(0, 0, 0), (1, 0, 0), (1, 0, 1), (0, 0, 1)], (1, 1): [(0, 1, 0), (0, 1, 1), (1, 1, 1), (1, 1, 0)],
    (2, 0): [(0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 0, 0)], (2, 1): [(0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)],
}


def occupancy_to_mesh(grid: VoxelGrid, mode: Literal["cubes", "marching_cubes"] = "cubes", channel: int = 0,
                      threshold: float = 0.5) -> TriangleMesh:
    """Mesh of the occupied voxels (``value[channel] > threshold``; bool grids: True).

    ``mode="cubes"``: the visible faces of the occupied voxel cubes (faces shared by two occupied voxels
    are left out), two triangles per face, outward winding, shared corners welded: a watertight,
    blocky surface exactly on the voxel boundaries (for viewers). ``mode="marching_cubes"``: the
    ``threshold`` iso-surface of the 0/1 occupancy (padded by one empty voxel so it closes), smoother,
    lying half a voxel inside the cube faces.
    """
    if not 0 <= channel < grid.num_channels:
        raise VoxelError(f"channel {channel} out of range for a grid of {grid.num_channels} channel(s)")
    data = grid.values if grid.is_sparse else grid.dense
    occupied = data[..., channel] if data.dtype == torch.bool else data[..., channel] > threshold
    indices = grid.to_sparse(mask=occupied).indices.cpu()
    size = grid.voxel_size
    origin = grid.origin.cpu().numpy()
    if mode == "marching_cubes":
        occ = torch.zeros(tuple(n + 2 for n in grid.shape), dtype=torch.float32)
        occ[indices[:, 0] + 1, indices[:, 1] + 1, indices[:, 2] + 1] = 1.0
        return marching_cubes(occ, level=0.5,
                              sample_origin=origin - 0.5 * size, spacing=size, inside="above")
    if mode != "cubes":
        raise VoxelError(f"mode must be 'cubes' or 'marching_cubes', got {mode!r}")
    if indices.shape[0] == 0:
        return TriangleMesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64))
    padded_shape = tuple(n + 2 for n in grid.shape)
    keys = linear_keys(indices + 1, padded_shape)
    stored = torch.sort(keys).values
    quads = []
    for (axis, side), corners in _CUBE_FACES.items():
        step = torch.zeros(3, dtype=torch.int64)
        step[axis] = 1 if side else -1
        neighbour = linear_keys(indices + 1 + step, padded_shape)
        pos = torch.searchsorted(stored, neighbour).clamp(max=stored.shape[0] - 1)
        visible = stored[pos] != neighbour
        base = indices[visible]
        quads.append(base[:, None, :] + torch.tensor(corners, dtype=torch.int64)[None])  # [Q, 4, 3]
    quads = torch.cat(quads).numpy()
    corner_ids, inverse = np.unique(quads.reshape(-1, 3), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1, 4)
    faces = np.concatenate([inverse[:, [0, 1, 2]], inverse[:, [0, 2, 3]]])
    return TriangleMesh(origin + corner_ids.astype(np.float64) * size, faces.astype(np.int64))


# ------------------------------------------------------------------------------------ mesh -> voxels
def _triangle_box_overlap(tri: np.ndarray, centre: np.ndarray, half: float) -> np.ndarray:
    """Separating-axis test (Akenine-Moeller) of triangles ``[P, 3, 3]`` against axis-aligned cubes
    (``centre [P, 3]``, half edge ``half``): ``[P]`` bool, True when they overlap (touching counts)."""
    v = tri - centre[:, None, :]
    edges = np.stack([v[:, 1] - v[:, 0], v[:, 2] - v[:, 1], v[:, 0] - v[:, 2]], axis=1)  # [P, 3, 3]
    overlap = np.ones(len(tri), dtype=bool)
    eps = 1e-12 * max(half, 1.0)
    # 9 axes: box axis e_a x triangle edge; their projections computed without forming the cross products
    for a in range(3):
        b, c = (a + 1) % 3, (a + 2) % 3
        for e in range(3):
            axis = np.zeros((len(tri), 3))
            axis[:, b] = -edges[:, e, c]
            axis[:, c] = edges[:, e, b]
            proj = np.einsum("pvk,pk->pv", v, axis)
            radius = half * np.abs(axis).sum(axis=1)
            overlap &= ~((proj.min(axis=1) > radius + eps) | (proj.max(axis=1) < -radius - eps))
    # 3 box face normals
    overlap &= ~((v.min(axis=1) > half + eps) | (v.max(axis=1) < -half - eps)).any(axis=1)
    # triangle plane
    normal = np.cross(edges[:, 0], edges[:, 1])
    dist = np.einsum("pk,pk->p", normal, v[:, 0])
    radius = half * np.abs(normal).sum(axis=1)
    overlap &= np.abs(dist) <= radius + eps
    return overlap


def _surface_voxels(vertices: np.ndarray, faces: np.ndarray, origin: np.ndarray, size: float,
                    shape: tuple[int, int, int], chunk: int = 1 << 20) -> np.ndarray:
    """``[M, 3]`` int64 unique indices (inside ``shape``) of the voxels that triangles touch."""
    tris = vertices[faces]  # [F, 3, 3]
    low = np.floor((tris.min(axis=1) - origin) / size).astype(np.int64)
    high = np.floor((tris.max(axis=1) - origin) / size).astype(np.int64)
    low = np.maximum(low, 0)
    high = np.minimum(high, np.asarray(shape) - 1)
    extent = np.maximum(high - low + 1, 0)
    per_face = extent.prod(axis=1)
    ends = np.cumsum(per_face)  # candidate pairs up to and including each face
    found = []
    first = 0
    while first < len(faces):  # groups of whole faces with about `chunk` triangle/voxel pairs each
        done = ends[first - 1] if first else 0
        last = max(int(np.searchsorted(ends, done + chunk, side="right")), first + 1)
        ids = np.repeat(np.arange(first, last), per_face[first:last])
        local = np.arange(len(ids)) - (ends[ids] - per_face[ids] - done)
        ext = extent[ids]
        offset = np.stack([local // (ext[:, 1] * ext[:, 2]), (local // ext[:, 2]) % ext[:, 1], local % ext[:, 2]], 1)
        voxel = low[ids] + offset
        centre = origin + (voxel + 0.5) * size
        hit = _triangle_box_overlap(tris[ids], centre, 0.5 * size)
        found.append(voxel[hit])
        first = last
    if not found:
        return np.zeros((0, 3), dtype=np.int64)
    return np.unique(np.concatenate(found), axis=0)


def _check_watertight(faces: np.ndarray) -> None:
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    if (counts != 2).any():
        raise MeshError(f"mode='solid' needs a watertight mesh: {int((counts != 2).sum())} of {len(counts)} edges "
                        f"are not shared by exactly two faces (use mode='surface', or repair the mesh)")


def mesh_to_voxels(mesh: TriangleMesh, voxel_size: float, mode: Literal["surface", "solid"] = "surface",
                   origin=None, shape=None, device=None) -> VoxelGrid:
    """Voxelise a triangle mesh into a sparse occupancy grid (bool values ``[M, 1]``).

    ``mode="surface"``: every voxel that a triangle touches, by an exact separating-axis triangle/box
    test (13 axes, vectorised over triangle x candidate-voxel pairs; touching counts, so a triangle
    exactly on a voxel face marks both voxels). ``mode="solid"``: the surface voxels plus the voxels
    whose centre is inside the mesh (Open3D ``RaycastingScene.compute_occupancy``); needs a watertight
    mesh (every edge shared by exactly two faces), else :class:`MeshError`.

    Args:
        mesh: the :class:`TriangleMesh` (world units).
        voxel_size: voxel edge (> 0), same units.
        origin: ``[3]`` min corner of voxel (0, 0, 0); default ``floor(min vertex / voxel_size) * voxel_size``.
        shape: ``(X, Y, Z)``; default covers the mesh. Parts of the mesh outside are cut off.
        device: device of the returned tensors.

    Returns:
        Sparse :class:`VoxelGrid` with bool ``values [M, 1]`` (True).
    """
    size = check_voxel_size(voxel_size)
    if not isinstance(mesh, TriangleMesh):
        raise MeshError(f"mesh must be a TriangleMesh, got {type(mesh).__name__}")
    if mesh.num_faces == 0:
        raise MeshError("mesh has no faces to voxelise")
    if mode not in ("surface", "solid"):
        raise VoxelError(f"mode must be 'surface' or 'solid', got {mode!r}")
    vertices = mesh.vertices.astype(np.float64)
    corner = (np.floor(vertices.min(axis=0) / size) * size if origin is None
              else _as_origin(origin, "cpu").numpy())
    if shape is None:
        shape = tuple(int(n) + 1 for n in np.floor((vertices.max(axis=0) - corner) / size))
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise VoxelError(f"shape must be 3 positive voxel counts, got {shape!r}")
    if mode == "solid":
        _check_watertight(mesh.faces)
    indices = _surface_voxels(vertices, mesh.faces, corner, size, shape)
    if mode == "solid":
        indices = np.unique(np.concatenate([indices, _interior_voxels(mesh, corner, size, shape)]), axis=0)
    indices = torch.as_tensor(indices, dtype=torch.int64, device=device)
    values = torch.ones((indices.shape[0], 1), dtype=torch.bool, device=device)
    return VoxelGrid(torch.as_tensor(corner), size, shape, indices=indices, values=values)


def _interior_voxels(mesh: TriangleMesh, origin: np.ndarray, size: float, shape: tuple[int, int, int],
                     chunk: int = 1 << 22) -> np.ndarray:
    """Indices of the voxels (inside ``shape``, restricted to the mesh's box) whose centre is inside."""
    from geo3d.utils.optional import require

    o3d = require("open3d")
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                        o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    low = np.maximum(np.floor((mesh.vertices.min(axis=0) - origin) / size).astype(np.int64), 0)
    high = np.minimum(np.floor((mesh.vertices.max(axis=0) - origin) / size).astype(np.int64), np.asarray(shape) - 1)
    if (high < low).any():
        return np.zeros((0, 3), dtype=np.int64)
    axes = [np.arange(lo, hi + 1) for lo, hi in zip(low, high, strict=True)]
    found = []
    plane = len(axes[1]) * len(axes[2])
    rows_per_chunk = max(1, chunk // plane)
    for begin in range(0, len(axes[0]), rows_per_chunk):
        block = np.stack(np.meshgrid(axes[0][begin:begin + rows_per_chunk], axes[1], axes[2], indexing="ij"), -1)
        block = block.reshape(-1, 3)
        centres = (origin + (block + 0.5) * size).astype(np.float32)
        occupied = scene.compute_occupancy(o3d.core.Tensor(centres)).numpy() > 0.5
        found.append(block[occupied])
    return np.concatenate(found)
