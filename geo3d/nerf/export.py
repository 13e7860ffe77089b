"""Exporting a radiance field: density grids, occupancy, marching-cubes meshes, depth point clouds, files.

Works for any field given as a callable ``density_fn(points [N, 3] world metres) -> [N] density``
(volume density sigma in 1/m, as NeRF defines it), so nothing here depends on a network type.

Grid convention (as :mod:`geo3d.voxels` and :class:`~geo3d.structures.SemanticOccupancy`): the box
``aabb = (xmin, ymin, zmin, xmax, ymax, zmax)`` (world metres) is split into ``resolution = (X, Y, Z)``
cells of ``voxel_size = (aabb[3:] - aabb[:3]) / resolution`` (not necessarily cubic); cell ``(i, j, k)``
starts at ``aabb[:3] + [i, j, k] * voxel_size`` and its value is the field at its centre
``aabb[:3] + ([i, j, k] + 0.5) * voxel_size``, the lattice marching cubes runs on.

Files are written atomically (:mod:`geo3d.utils.atomic`: temporary file beside the target, rename).
Meshes go through :meth:`geo3d.structures.TriangleMesh.save`; geo3d has no point-cloud PLY writer, so
:func:`write_point_cloud_ply` writes binary PLY itself. Occupancy files use the Occ3D / capture-format
array name ``semantics`` plus the grid geometry and read back as a :class:`~geo3d.structures.SemanticOccupancy`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from geo3d.cameras.functional import valid_depth_points
from geo3d.structures.mesh import TriangleMesh
from geo3d.structures.occupancy import SemanticOccupancy
from geo3d.utils.atomic import atomic_write_bytes

OCCUPANCY_FORMAT = "geo3d.nerf.occupancy"
OCCUPANCY_VERSION = 1


def _check_aabb(aabb) -> Tensor:
    """``aabb`` as a ``[6]`` float64 CPU tensor with ``min < max`` per axis, or ValueError."""
    try:
        box = torch.as_tensor(aabb).detach().to("cpu", torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        box = torch.zeros(0, dtype=torch.float64)
    if box.shape != (6,) or not bool(torch.isfinite(box).all()):
        raise ValueError(f"aabb must be 6 finite numbers (xmin, ymin, zmin, xmax, ymax, zmax), got {aabb!r}")
    if not bool((box[3:] > box[:3]).all()):
        raise ValueError(f"aabb must have max > min on every axis, got {box.tolist()}")
    return box


def _check_resolution(resolution) -> tuple[int, int, int]:
    values = (resolution,) * 3 if isinstance(resolution, Integral) else tuple(np.atleast_1d(resolution).tolist())
    if len(values) != 3 or any(isinstance(n, bool) or not isinstance(n, Integral) or n < 1 for n in values):
        raise ValueError(f"resolution must be a positive int or 3 positive ints (X, Y, Z), got {resolution!r}")
    return tuple(int(n) for n in values)  # type: ignore[return-value]


def _check_grid(grid, name: str) -> Tensor:
    if not isinstance(grid, Tensor):
        grid = torch.as_tensor(np.asarray(grid))
    if grid.ndim != 3 or min(grid.shape) < 1:
        raise ValueError(f"{name} must have shape [X, Y, Z], got {list(grid.shape)}")
    return grid


def voxel_size_of(aabb, resolution) -> Tensor:
    """``[3]`` float64 cell edge lengths ``(aabb[3:] - aabb[:3]) / resolution`` in metres."""
    box = _check_aabb(aabb)
    return (box[3:] - box[:3]) / torch.tensor(_check_resolution(resolution), dtype=torch.float64)


@torch.no_grad()
def density_grid(density_fn: Callable[[Tensor], Tensor], aabb, resolution: int | tuple[int, int, int],
                 chunk: int = 65536, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """Sample a density field at the cell centres of a box, chunk by chunk, without gradients.

    Args:
        density_fn: maps ``[N, 3]`` world points (metres, ``dtype`` on ``device``) to ``[N]`` (or
            ``[N, 1]``) volume density sigma in 1/m. Called with ``N <= chunk``, in x-major order.
        aabb: ``[6]`` box ``(xmin, ymin, zmin, xmax, ymax, zmax)`` in world metres.
        resolution: cells per axis, one int or ``(X, Y, Z)``.
        chunk: points per call of ``density_fn``.
        device: where the points are made and the grid is kept (default CPU).
        dtype: dtype of the points and of the grid.

    Returns:
        ``[X, Y, Z]`` densities; ``grid[i, j, k]`` is sampled at ``aabb[:3] + ([i, j, k] + 0.5) * voxel_size``.

    Raises:
        ValueError: a bad ``aabb``, ``resolution``, ``chunk`` or ``density_fn`` (not callable, wrong shape, NaN).
    """
    if not callable(density_fn):
        raise ValueError(f"density_fn must be callable, got {type(density_fn).__name__}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    box = _check_aabb(aabb)
    shape = _check_resolution(resolution)
    size = voxel_size_of(box, shape)
    device = torch.device("cpu") if device is None else torch.device(device)
    lower, size = box[:3].to(device), size.to(device)
    total = math.prod(shape)
    out = torch.empty(total, dtype=dtype, device=device)
    for start in range(0, total, chunk):
        flat = torch.arange(start, min(start + chunk, total), device=device)
        ijk = torch.stack([flat // (shape[1] * shape[2]), (flat // shape[2]) % shape[1], flat % shape[2]], -1)
        points = (lower + (ijk.to(torch.float64) + 0.5) * size).to(dtype)
        values = torch.as_tensor(density_fn(points))
        if values.shape not in ((len(flat),), (len(flat), 1)):
            raise ValueError(f"density_fn must return [N] or [N, 1] for {len(flat)} points, got {list(values.shape)}")
        values = values.reshape(-1).to(device=device, dtype=dtype)
        if bool(torch.isnan(values).any()):
            raise ValueError(f"density_fn returned {int(torch.isnan(values).sum())} NaN densities")
        out[start:start + len(flat)] = values
    return out.reshape(shape)


def density_for_alpha(alpha: float, step_size: float) -> float:
    """Density sigma (1/m) whose opacity over ``step_size`` metres is ``alpha``: ``-ln(1 - alpha) / step``."""
    return -math.log1p(-alpha) / step_size


def occupancy_from_density(density: Tensor, step_size: float | None = None, alpha_threshold: float = 0.01,
                           density_threshold: float | None = None) -> Tensor:
    """Occupied cells of a density grid, by opacity over a step or by density.

    A ray segment of length ``step_size`` through density sigma has opacity
    ``alpha = 1 - exp(-sigma * step_size)`` (the volume-rendering alpha of NeRF). A cell is occupied when
    ``alpha > alpha_threshold``, i.e. ``sigma > -ln(1 - alpha_threshold) / step_size``
    (:func:`density_for_alpha`); with ``density_threshold`` given instead, when ``sigma > density_threshold``.
    NaN densities are never occupied.

    Args:
        density: ``[X, Y, Z]`` density in 1/m (e.g. from :func:`density_grid`).
        step_size: ray-marching step in metres (typically the cell size or the renderer's step);
            required unless ``density_threshold`` is given.
        alpha_threshold: opacity threshold in ``(0, 1)``.
        density_threshold: optional threshold on sigma (1/m) itself; replaces the alpha test.

    Returns:
        ``[X, Y, Z]`` bool, on the device of ``density``.

    Raises:
        ValueError: a bad ``density`` shape, ``step_size`` (missing, not finite and > 0),
            ``alpha_threshold`` outside ``(0, 1)`` or a non-finite ``density_threshold``.
    """
    density = _check_grid(density, "density")
    if density_threshold is not None:
        if not math.isfinite(float(density_threshold)):
            raise ValueError(f"density_threshold must be finite, got {density_threshold!r}")
        return density > float(density_threshold)
    if step_size is None or not (math.isfinite(float(step_size)) and float(step_size) > 0):
        raise ValueError(f"step_size must be finite and > 0 metres (or pass density_threshold), got {step_size!r}")
    if not 0.0 < float(alpha_threshold) < 1.0:
        raise ValueError(f"alpha_threshold must lie in (0, 1), got {alpha_threshold!r}")
    alpha = -torch.expm1(-density.double() * float(step_size))
    return alpha > float(alpha_threshold)


def mesh_from_density(density: Tensor, aabb, level: float) -> tuple[Tensor, Tensor]:
    """Iso-surface ``density == level`` of a :func:`density_grid` (scikit-image marching cubes).

    Runs :func:`geo3d.voxels.marching_cubes` (``skimage.measure.marching_cubes``, Lewiner) on the
    lattice of cell centres: spacing ``voxel_size = (aabb[3:] - aabb[:3]) / [X, Y, Z]`` and sample
    ``[0, 0, 0]`` at ``aabb[:3] + voxel_size / 2``, so vertices come out in world metres. Faces wind
    counter-clockwise seen from the low-density side (normals point out of the dense region). The
    surface is open where the dense region reaches the outermost cell centres.

    Args:
        density: ``[X, Y, Z]`` density (1/m), >= 2 cells per axis; NaN cells make no triangles, +-inf is
            clamped to +-3e38.
        aabb: the ``[6]`` box the grid was sampled in (world metres).
        level: iso-value (1/m).

    Returns:
        ``(vertices [V, 3] float32 world metres, faces [F, 3] int64)``, CPU tensors.

    Raises:
        ValueError: bad shapes, a non-finite ``level``, or a ``level`` the density never crosses (the
            message names the grid's min and max).
    """
    from geo3d.voxels.marching_cubes import marching_cubes

    density = _check_grid(density, "density")
    if min(density.shape) < 2:
        raise ValueError(f"density needs at least 2 cells per axis for marching cubes, got {list(density.shape)}")
    if not math.isfinite(float(level)):
        raise ValueError(f"level must be finite, got {level!r}")
    values = np.nan_to_num(density.detach().to("cpu", torch.float32).numpy(), nan=np.nan, posinf=3e38, neginf=-3e38)
    finite = values[np.isfinite(values)]
    size = voxel_size_of(aabb, tuple(density.shape)).numpy()
    if finite.size == 0 or not finite.min() < level < finite.max():
        low, high = (finite.min(), finite.max()) if finite.size else (float("nan"), float("nan"))
        raise ValueError(f"level {level} is not crossed by the density (min {low:.6g}, max {high:.6g})")
    origin = _check_aabb(aabb)[:3].numpy() + 0.5 * size
    mesh = marching_cubes(values, float(level), sample_origin=origin, spacing=size, inside="above")
    if mesh.num_faces == 0:
        raise ValueError(f"level {level} is crossed only next to NaN cells (min {finite.min():.6g}): no triangles")
    return torch.from_numpy(mesh.vertices.astype(np.float32)), torch.from_numpy(mesh.faces)


def points_from_depth(depth: Tensor, K: Tensor, cam2world: Tensor, colors: Tensor | None = None,
                      opacity: Tensor | None = None, min_opacity: float = 0.5) -> tuple[Tensor, Tensor | None]:
    """Back-project the valid pixels of one rendered z-depth map to world points.

    A pixel is kept when its depth is finite and > 0 and, with ``opacity`` given, when
    ``opacity >= min_opacity`` (background rays of a NeRF render have low accumulated opacity and
    meaningless depth). Uses :func:`geo3d.cameras.functional.valid_depth_points`: pixel ``(u, v)``'s
    centre is at integer coordinates, its point is ``cam2world @ (depth * K^-1 [u, v, 1])``.

    Args:
        depth: ``[H, W]`` z-depth in metres (0 = none; a ray-length depth ``t`` is ``t * Rays.z_per_unit``).
        K: ``[3, 3]`` intrinsics in pixels.
        cam2world: ``[4, 4]`` camera-to-world pose (OpenCV camera axes).
        colors: optional ``[H, W, 3]`` RGB in ``[0, 1]``.
        opacity: optional ``[H, W]`` accumulated opacity in ``[0, 1]``.
        min_opacity: opacity a pixel needs, in ``[0, 1]``.

    Returns:
        ``(points [N, 3] world metres, colors [N, 3] or None)``, row-major pixel order, dtype of ``depth``.

    Raises:
        ValueError: a non-tensor or wrongly shaped argument, or ``min_opacity`` outside ``[0, 1]``.
    """
    for name, value, want in (("depth", depth, "[H, W]"), ("K", K, "[3, 3]"), ("cam2world", cam2world, "[4, 4]")):
        if not isinstance(value, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        ok = value.ndim == 2 if name == "depth" else tuple(value.shape) == ((3, 3) if name == "K" else (4, 4))
        if not ok:
            raise ValueError(f"{name} must have shape {want}, got {list(value.shape)}")
    if not depth.is_floating_point():
        raise ValueError(f"depth must be a float tensor (metres), got {depth.dtype}")
    height, width = depth.shape
    for name, value, shape in (("colors", colors, (height, width, 3)), ("opacity", opacity, (height, width))):
        if value is not None and (not isinstance(value, Tensor) or tuple(value.shape) != shape):
            got = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{name} must be a tensor of shape {list(shape)} (like depth), got {got}")
    if not 0.0 <= float(min_opacity) <= 1.0:
        raise ValueError(f"min_opacity must lie in [0, 1], got {min_opacity!r}")
    if opacity is not None:
        depth = torch.where(opacity.to(depth.device) >= float(min_opacity), depth, torch.zeros_like(depth))
    found = valid_depth_points(depth[None], K.to(depth)[None], cam2world.to(depth)[None])
    if colors is None:
        return found.points_world, None
    u, v = found.pixels.to(colors.device).unbind(-1)
    return found.points_world, colors[v, u]


# ---------------------------------------------------------------------------------------------- files


def _numpy(value, name: str, shape: tuple, dtype=None) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
    if array.ndim != len(shape) or any(s is not None and a != s for a, s in zip(array.shape, shape)):
        want = ", ".join("N" if s is None else str(s) for s in shape)
        raise ValueError(f"{name} must have shape [{want}], got {list(array.shape)}")
    return array if dtype is None else array.astype(dtype)


def _check_suffix(path, suffix: str) -> Path:
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise ValueError(f"path must end in {suffix}, got {str(path)!r}")
    return path


def write_point_cloud_ply(path: str | os.PathLike, points, colors=None) -> Path:
    """Write points (float32 x, y, z) and optional uchar RGB as binary little-endian PLY, atomically; returns the path.

    Args:
        path: target file, ending in ``.ply``.
        points: ``[N, 3]`` coordinates (tensor or array, metres; stored as float32).
        colors: optional ``[N, 3]``: float RGB in ``[0, 1]`` (clipped, rounded to uint8) or uint8.
    """
    path = _check_suffix(path, ".ply")
    xyz = _numpy(points, "points", (None, 3), np.float32)
    if not np.isfinite(xyz).all():
        raise ValueError(f"points hold {int((~np.isfinite(xyz)).any(axis=1).sum())} non-finite rows")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    rgb = None
    if colors is not None:
        rgb = _numpy(colors, "colors", (len(xyz), 3))
        if rgb.dtype != np.uint8:
            rgb = np.round(np.clip(np.nan_to_num(rgb.astype(np.float64)), 0.0, 1.0) * 255.0).astype(np.uint8)
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.empty(len(xyz), dtype=fields)
    columns = [xyz] if rgb is None else [xyz, rgb]
    for index, (name, kind) in enumerate(fields):
        vertex[name] = columns[index // 3][:, index % 3]
    header = f"ply\nformat binary_little_endian 1.0\ncomment geo3d.nerf point cloud\nelement vertex {len(xyz)}\n"
    header += "".join(f"property {'float' if kind == '<f4' else 'uchar'} {name}\n" for name, kind in fields)
    return atomic_write_bytes(path, (header + "end_header\n").encode("ascii") + vertex.tobytes())


def write_mesh_ply(path: str | os.PathLike, vertices, faces) -> Path:
    """Write a triangle mesh as binary PLY atomically (:meth:`geo3d.structures.TriangleMesh.save`); returns the path.

    Args:
        path: target file, ending in ``.ply``.
        vertices: ``[V, 3]`` float positions (metres); faces: ``[F, 3]`` int vertex indices.
    """
    path = _check_suffix(path, ".ply")
    verts = _numpy(vertices, "vertices", (None, 3), np.float64)
    tris = _numpy(faces, "faces", (None, 3))
    if tris.size and not np.issubdtype(tris.dtype, np.integer):
        raise ValueError(f"faces must hold integers, got {tris.dtype}")
    return TriangleMesh(verts, tris.astype(np.int64)).save(path)


def save_occupancy_npz(path: str | os.PathLike, occupancy, aabb, density=None) -> Path:
    """Write an occupancy grid (and optionally its densities) as a compressed ``.npz`` atomically; returns the path.

    Members: ``semantics`` ``[X, Y, Z]`` uint8 (1 occupied, 0 free; the Occ3D / capture-format name),
    ``origin`` ``[3]`` float64 min corner (``aabb[:3]``), ``voxel_size`` ``[3]`` float64, ``aabb`` ``[6]``
    float64, ``format`` and ``version``, and ``density`` ``[X, Y, Z]`` float32 when given.

    Args:
        path: target file, ending in ``.npz``.
        occupancy: ``[X, Y, Z]`` bool (e.g. :func:`occupancy_from_density`).
        aabb: ``[6]`` box the grid covers (world metres).
        density: optional ``[X, Y, Z]`` density (1/m).
    """
    from geo3d.io.capture_writer import encode_npz

    path = _check_suffix(path, ".npz")
    occ = _check_grid(occupancy, "occupancy").detach().cpu().numpy()
    if occ.dtype != np.bool_:
        raise ValueError(f"occupancy must be a bool grid, got {occ.dtype}")
    box = _check_aabb(aabb)
    arrays = {"format": np.array([OCCUPANCY_FORMAT]), "version": np.array([OCCUPANCY_VERSION], dtype=np.int64),
              "semantics": occ.astype(np.uint8), "origin": box[:3].numpy(),
              "voxel_size": voxel_size_of(box, occ.shape).numpy(), "aabb": box.numpy()}
    if density is not None:
        dens = _check_grid(density, "density").detach().cpu().numpy()
        if dens.shape != occ.shape:
            raise ValueError(f"density must have the occupancy's shape {list(occ.shape)}, got {list(dens.shape)}")
        arrays["density"] = dens.astype(np.float32)
    return atomic_write_bytes(path, encode_npz(arrays))


def load_occupancy_npz(path: str | os.PathLike) -> tuple[SemanticOccupancy, np.ndarray | None]:
    """Read a :func:`save_occupancy_npz` file: ``(SemanticOccupancy in the "world" frame, density or None)``."""
    with np.load(Path(path), allow_pickle=False) as data:
        if "format" not in data.files or str(data["format"].reshape(-1)[0]) != OCCUPANCY_FORMAT:
            raise ValueError(f"{path}: not a {OCCUPANCY_FORMAT} file")
        occupancy = SemanticOccupancy(data["semantics"], data["origin"], data["voxel_size"], frame="world")
        return occupancy, (data["density"] if "density" in data.files else None)
