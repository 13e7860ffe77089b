"""Evaluating any SDF on a lattice in chunks, slicing it, and extracting its zero level set as a mesh.

An SDF here is any callable ``sdf_fn(points [M, 3]) -> [M]`` (a :class:`geo3d.sdf.neural.NeuralSDF`,
an analytic shape, a :class:`geo3d.sdf.mesh.MeshSDF`, a lambda). The lattice of ``resolution =
(X, Y, Z)`` samples spans ``bounds`` corner to corner: sample ``[i, j, k]`` lies at ``bounds[0] + (i,
j, k) * spacing`` with ``spacing = (bounds[1] - bounds[0]) / (resolution - 1)``.

Memory: the points are generated chunk by chunk (``chunk_size`` points at most, in ``[i]``-major
order), evaluated under ``torch.no_grad`` and written into one float32 ``[X, Y, Z]`` array, the only
full-size buffer (256^3: 64 MiB; the point lattice itself, 192 MiB at float32, never exists). The
values do not depend on ``chunk_size`` for a callable that evaluates points independently.
:func:`extract_mesh` then calls :func:`geo3d.voxels.marching_cubes.marching_cubes` (negative inside,
outward normals).
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Integral

import numpy as np
import torch

from geo3d.errors import SDFError
from geo3d.sdf._inputs import check_bounds
from geo3d.structures.mesh import TriangleMesh
from geo3d.voxels.marching_cubes import marching_cubes

SDFFunction = Callable[[torch.Tensor], torch.Tensor]
"""``sdf_fn(points [M, 3]) -> [M]`` signed distances (negative inside), world units."""

DEFAULT_CHUNK_SIZE = 262_144
"""Points evaluated per call of ``sdf_fn`` by default (a 64^3 block; 3 MiB of float32 points)."""


def _resolution(resolution, name: str = "resolution") -> tuple[int, int, int]:
    try:
        values = (resolution,) * 3 if isinstance(resolution, Integral) else tuple(resolution)
    except TypeError:
        values = ()
    if len(values) != 3 or any(isinstance(v, bool) or not isinstance(v, Integral) for v in values):
        raise SDFError(f"{name} must be an int or 3 ints (X, Y, Z), got {resolution!r}")
    if any(v < 2 for v in values):
        raise SDFError(f"{name} must be >= 2 samples per axis, got {resolution!r}")
    return tuple(int(v) for v in values)


def _chunk_size(chunk_size) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, Integral) or chunk_size < 1:
        raise SDFError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)


def lattice_spacing(bounds, resolution) -> np.ndarray:
    """``[3]`` float64 step between samples of the lattice of ``resolution`` spanning ``bounds``."""
    box, res = check_bounds(bounds), _resolution(resolution)
    return ((box[1] - box[0]) / (torch.tensor(res, dtype=torch.float64) - 1)).numpy()


def _evaluate(sdf_fn: SDFFunction, points: torch.Tensor, name: str = "sdf_fn") -> torch.Tensor:
    values = sdf_fn(points)
    if not isinstance(values, torch.Tensor):
        values = torch.as_tensor(np.asarray(values))
    if values.shape != points.shape[:-1]:
        values = values.reshape(-1) if values.numel() == len(points) else values
        if values.shape != points.shape[:-1]:
            raise SDFError(f"{name} must return [M] values for [M, 3] points, got {list(values.shape)} "
                           f"for {list(points.shape)}")
    return values.detach().to("cpu", torch.float32)


def evaluate_grid(sdf_fn: SDFFunction, bounds, resolution, chunk_size: int = DEFAULT_CHUNK_SIZE,
                  device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``sdf_fn`` on the lattice spanning ``bounds``, evaluated ``chunk_size`` points at a time.

    Args:
        sdf_fn: ``[M, 3] -> [M]`` callable.
        bounds: ``[2, 3]`` box (min corner, max corner), world units; its corners are samples.
        resolution: samples per axis, an int or ``(X, Y, Z)`` (each >= 2).
        chunk_size: most points passed to ``sdf_fn`` at once.
        device: device of the query points (default CPU); values come back to the CPU.
        dtype: dtype of the query points.

    Returns:
        ``[X, Y, Z]`` float32 CPU tensor; ``[i, j, k]`` is the value at ``bounds[0] + (i, j, k) * spacing``.
    """
    box, (nx, ny, nz), chunk = check_bounds(bounds), _resolution(resolution), _chunk_size(chunk_size)
    axes = [torch.linspace(float(box[0, a]), float(box[1, a]), n, dtype=torch.float64)
            for a, n in enumerate((nx, ny, nz))]
    values = torch.empty(nx * ny * nz, dtype=torch.float32)
    plane = ny * nz
    with torch.no_grad():
        for start in range(0, nx * ny * nz, chunk):
            flat = torch.arange(start, min(start + chunk, nx * ny * nz), dtype=torch.int64)
            i, rest = flat // plane, flat % plane
            points = torch.stack((axes[0][i], axes[1][rest // nz], axes[2][rest % nz]), dim=-1)
            values[start:start + len(flat)] = _evaluate(sdf_fn, points.to(device=device, dtype=dtype))
    return values.view(nx, ny, nz)


def evaluate_slice(sdf_fn: SDFFunction, bounds, axis: int, position: float, resolution,
                   chunk_size: int = DEFAULT_CHUNK_SIZE, device=None) -> torch.Tensor:
    """``sdf_fn`` on a planar lattice at ``coordinate[axis] = position`` across ``bounds``.

    Args:
        sdf_fn: ``[M, 3] -> [M]`` callable.
        bounds: ``[2, 3]`` box; the slice spans it along the two other axes ``(a, b)`` (in increasing
            order: axis 2 -> (x, y), axis 1 -> (x, z), axis 0 -> (y, z)).
        axis: 0, 1 or 2, the axis normal to the slice.
        position: world coordinate of the slice along ``axis`` (need not lie inside ``bounds``).
        resolution: samples along ``(a, b)``: an int (both) or ``(H, W)``.
        chunk_size: most points per call.
        device: device of the query points.

    Returns:
        ``[H, W]`` float32 CPU tensor, row ``r`` at ``b = bounds[1, b] - r * step`` (top row at the
        maximum, as an image shows it) and column ``c`` at ``a = bounds[0, a] + c * step``.
    """
    box = check_bounds(bounds)
    if isinstance(axis, bool) or axis not in (0, 1, 2):
        raise SDFError(f"axis must be 0, 1 or 2, got {axis!r}")
    if not np.isfinite(float(position)):
        raise SDFError(f"position must be finite, got {position!r}")
    height, width = ((resolution, resolution) if isinstance(resolution, Integral) else tuple(resolution))
    _resolution((height, width, 2))
    a, b = [d for d in range(3) if d != axis]
    cols = torch.linspace(float(box[0, a]), float(box[1, a]), width, dtype=torch.float64)
    rows = torch.linspace(float(box[1, b]), float(box[0, b]), height, dtype=torch.float64)
    grid = torch.empty(height, width, 3, dtype=torch.float64)
    grid[..., a] = cols[None, :]
    grid[..., b] = rows[:, None]
    grid[..., axis] = float(position)
    points = grid.reshape(-1, 3).float()
    chunk = _chunk_size(chunk_size)
    with torch.no_grad():
        values = torch.cat([_evaluate(sdf_fn, points[s:s + chunk].to(device)) for s in range(0, len(points), chunk)])
    return values.view(height, width)


def _coarse_indices(size: int, factor: int) -> torch.Tensor:
    """Fine sample indices kept by the coarse lattice along one axis: every ``factor``-th and the last."""
    indices = torch.arange(0, size, factor, dtype=torch.int64)
    return indices if indices[-1] == size - 1 else torch.cat((indices, torch.tensor([size - 1])))


def evaluate_grid_narrow_band(sdf_fn: SDFFunction, bounds, resolution, coarse_factor: int = 4,
                              band_safety: float = 1.5, chunk_size: int = DEFAULT_CHUNK_SIZE,
                              device=None) -> torch.Tensor:
    """Like :func:`evaluate_grid` but evaluating the fine lattice only near the surface.

    The SDF is first evaluated on the coarse lattice made of every ``coarse_factor``-th fine sample
    (and the last one per axis). A coarse cell is *active* when one of its 8 corners has ``|sdf| <=
    band_safety * coarse cell diagonal``: for a 1-Lipschitz SDF (a true distance: ``band_safety = 1``
    suffices) the zero level can only cross active cells. Fine samples of active cells are evaluated;
    the others take the value of their coarse cell's lower corner, whose sign they share, so marching
    cubes produces the same triangles as on the dense lattice. Fitted neural SDFs are only roughly
    1-Lipschitz, hence the safety factor. Costs about ``1 / coarse_factor^3`` of the dense lattice plus the band.

    Returns:
        ``[X, Y, Z]`` float32 CPU tensor: exact values in the band, sign-correct coarse values elsewhere.
    """
    box, res, chunk = check_bounds(bounds), _resolution(resolution), _chunk_size(chunk_size)
    if isinstance(coarse_factor, bool) or not isinstance(coarse_factor, Integral) or coarse_factor < 1:
        raise SDFError(f"coarse_factor must be a positive integer, got {coarse_factor!r}")
    if not (isinstance(band_safety, (int, float)) and np.isfinite(band_safety) and band_safety >= 1):
        raise SDFError(f"band_safety must be a finite number >= 1, got {band_safety!r}")
    if coarse_factor == 1:
        return evaluate_grid(sdf_fn, box, res, chunk, device)
    spacing = torch.from_numpy(lattice_spacing(box, res))
    coarse = [_coarse_indices(n, coarse_factor) for n in res]
    coarse_values = torch.empty([len(c) for c in coarse], dtype=torch.float32)
    # coarse lattice: non-uniform only in its last step, so evaluate it from explicit coordinates
    axes = [box[0, a] + coarse[a].double() * spacing[a] for a in range(3)]
    grid = _AxisLattice(axes)
    with torch.no_grad():
        flat = coarse_values.view(-1)
        for start in range(0, flat.numel(), chunk):
            points = grid.points(start, min(start + chunk, flat.numel()))
            flat[start:start + len(points)] = _evaluate(sdf_fn, points.to(device=device, dtype=torch.float32))
    corners_abs = coarse_values.abs()
    cell_min = -torch.nn.functional.max_pool3d(-corners_abs[None, None], kernel_size=2, stride=1)[0, 0]
    cell_diagonal = float(spacing.norm()) * coarse_factor
    active_cells = cell_min <= band_safety * cell_diagonal  # [Cx-1, Cy-1, Cz-1]
    # fine cell -> its coarse cell; a fine sample is evaluated when a fine cell touching it is active
    fine_to_cell = [torch.clamp(torch.arange(n - 1) // coarse_factor, max=len(c) - 2) for n, c in zip(res, coarse)]
    active_fine_cells = active_cells[fine_to_cell[0][:, None, None], fine_to_cell[1][None, :, None],
                                     fine_to_cell[2][None, None, :]]
    evaluate_mask = torch.nn.functional.max_pool3d(active_fine_cells[None, None].float(), kernel_size=2, stride=1,
                                                   padding=1)[0, 0] > 0  # [X, Y, Z]
    del active_fine_cells
    fine_to_sample = [torch.clamp(torch.arange(n) // coarse_factor, max=len(c) - 1) for n, c in zip(res, coarse)]
    values = coarse_values[fine_to_sample[0][:, None, None], fine_to_sample[1][None, :, None],
                           fine_to_sample[2][None, None, :]].contiguous()
    fine_axes = [box[0, a] + torch.arange(res[a], dtype=torch.float64) * spacing[a] for a in range(3)]
    fine_grid = _AxisLattice(fine_axes)
    selected = evaluate_mask.view(-1).nonzero().squeeze(1)
    del evaluate_mask
    flat = values.view(-1)
    with torch.no_grad():
        for start in range(0, len(selected), chunk):
            index = selected[start:start + chunk]
            points = fine_grid.points_at(index)
            flat[index] = _evaluate(sdf_fn, points.to(device=device, dtype=torch.float32))
    return values


class _AxisLattice:
    """Points of the lattice ``axes[0] x axes[1] x axes[2]`` by flat (``[i]``-major) index, float64."""

    def __init__(self, axes: list[torch.Tensor]) -> None:
        self.axes = axes
        self.plane = len(axes[1]) * len(axes[2])
        self.depth = len(axes[2])

    def points_at(self, flat: torch.Tensor) -> torch.Tensor:
        i, rest = flat // self.plane, flat % self.plane
        return torch.stack((self.axes[0][i], self.axes[1][rest // self.depth], self.axes[2][rest % self.depth]), -1)

    def points(self, start: int, stop: int) -> torch.Tensor:
        return self.points_at(torch.arange(start, stop, dtype=torch.int64))


def extract_mesh(sdf_fn: SDFFunction, bounds, resolution, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 level: float = 0.0, device=None, coarse_factor: int = 1, band_safety: float = 1.5) -> TriangleMesh:
    """Triangulate the ``level`` set of ``sdf_fn`` inside ``bounds`` by marching cubes.

    Args:
        sdf_fn: ``[M, 3] -> [M]`` callable (negative inside).
        bounds: ``[2, 3]`` box (min corner, max corner), world units; give it a margin around the shape
            (a surface crossing the box's faces leaves the mesh open there).
        resolution: samples per axis, an int or ``(X, Y, Z)``, each >= 2 (256 -> 64 MiB of values).
        chunk_size: most points per call of ``sdf_fn``.
        level: iso-value (0: the surface).
        device: device of the query points (e.g. the network's).
        coarse_factor: 1 evaluates every lattice sample; ``> 1`` evaluates only a narrow band around
            the surface found on a lattice ``coarse_factor`` times coarser (:func:`evaluate_grid_narrow_band`:
            the same triangles for a distance-like SDF, several times faster at 256^3). Only for
            ``level = 0``.
        band_safety: width of that band in coarse cell diagonals (>= 1; allows for SDFs steeper than 1).

    Returns:
        :class:`TriangleMesh` in world units with outward vertex normals; empty when the level is
        not crossed inside ``bounds``.
    """
    if not np.isfinite(float(level)):
        raise SDFError(f"level must be finite, got {level!r}")
    if coarse_factor != 1:
        if float(level) != 0.0:
            raise SDFError(f"coarse_factor > 1 needs level = 0 (the band is around the zero level), got {level!r}")
        values = evaluate_grid_narrow_band(sdf_fn, bounds, resolution, coarse_factor, band_safety, chunk_size, device)
    else:
        values = evaluate_grid(sdf_fn, bounds, resolution, chunk_size, device)
    return marching_cubes(values.numpy(), level=float(level), sample_origin=check_bounds(bounds)[0].numpy(),
                          spacing=lattice_spacing(bounds, resolution), inside="below")


__all__ = ["SDFFunction", "evaluate_grid", "evaluate_grid_narrow_band", "evaluate_slice", "extract_mesh",
           "lattice_spacing"]
