"""Iso-surface extraction from a dense lattice of samples (scikit-image's Lewiner marching cubes).

The one marching-cubes entry point of geo3d: voxel grids, TSDF volumes and SDF fields (neural or
analytic, evaluated in chunks by :func:`geo3d.sdf.extract_mesh`) all end here.
"""

from __future__ import annotations

import numpy as np

from geo3d.errors import MeshError
from geo3d.structures.mesh import TriangleMesh


def marching_cubes(values, level: float = 0.0, sample_origin=(0.0, 0.0, 0.0), spacing=1.0, mask=None,
                   inside: str = "below") -> TriangleMesh:
    """Triangulate the ``level`` iso-surface of samples on a regular lattice.

    Args:
        values: ``[X, Y, Z]`` samples (NumPy or torch, converted to float32 NumPy); sample ``[i, j, k]``
            lies at ``sample_origin + (i, j, k) * spacing`` in world units. NaN samples are treated as
            unobserved: cubes touching one make no triangles.
        level: the iso-value (0 for signed distances).
        sample_origin: ``[3]`` world position of sample ``[0, 0, 0]``.
        spacing: lattice step, a scalar or ``[3]`` per axis (world units).
        mask: optional ``[X, Y, Z]`` bool, ``False`` where samples must not be used (e.g. TSDF voxels
            never observed); cubes touching a masked sample make no triangles.
        inside: ``"below"`` when values under ``level`` are inside (signed distances, negative inside)
            or ``"above"`` (occupancy, density): faces are oriented so that normals point outwards.

    Returns:
        A :class:`TriangleMesh` in world units with outward unit vertex normals (from the field's
        gradient); empty (0 vertices) when the level is not crossed.
    """
    from geo3d.utils.optional import require

    measure = require("skimage.measure")
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 3:
        raise MeshError(f"marching cubes needs a [X, Y, Z] lattice, got shape {list(values.shape)}")
    if min(values.shape) < 2:
        raise MeshError(f"marching cubes needs at least 2 samples per axis, got {list(values.shape)}")
    if inside not in ("below", "above"):
        raise MeshError(f"inside must be 'below' or 'above', got {inside!r}")
    spacing = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,))
    if not (np.isfinite(spacing).all() and (spacing > 0).all()):
        raise MeshError(f"lattice spacing must be positive and finite, got {spacing.tolist()}")
    valid = np.isfinite(values)
    if mask is not None:
        if hasattr(mask, "detach"):
            mask = mask.detach().cpu().numpy()
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != values.shape:
            raise MeshError(f"mask shape {list(mask.shape)} differs from the values' {list(values.shape)}")
        valid &= mask
    empty = TriangleMesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), np.zeros((0, 3)))
    if not valid.any():
        return empty
    finite = values[valid]
    if not (finite.min() <= level <= finite.max()) or finite.min() == finite.max():
        return empty
    filled = np.where(valid, values, level + (1.0 if inside == "below" else -1.0)).astype(np.float32)
    # measured on a sphere: skimage's "descent" winding faces towards smaller values, and its vertex
    # normals point down the gradient whatever the winding
    try:
        verts, faces, normals, _ = measure.marching_cubes(
            filled, level=level, spacing=tuple(spacing), mask=None if valid.all() else _cube_mask(valid),
            gradient_direction="descent" if inside == "below" else "ascent", allow_degenerate=False,
        )
    except RuntimeError as error:  # the level is crossed only in cubes that touch unobserved samples
        if "No surface found" in str(error):
            return empty
        raise
    faces = faces.astype(np.int64)
    if inside == "below":
        normals = -normals
    verts = verts.astype(np.float64) + np.asarray(sample_origin, dtype=np.float64)
    return TriangleMesh(verts, faces, normals.astype(np.float64))


def _cube_mask(valid: np.ndarray) -> np.ndarray:
    """``[X, Y, Z]`` bool for scikit-image: True at sample ``s`` when the cube spanning samples ``s - 1``
    to ``s`` has all 8 corners valid (measured: scikit-image tests a cube's mask at its last corner)."""
    block = valid.copy()
    for axis in range(3):
        lower = [slice(None)] * 3
        upper = [slice(None)] * 3
        lower[axis], upper[axis] = slice(None, -1), slice(1, None)
        shifted = np.zeros_like(block)
        shifted[tuple(upper)] = block[tuple(upper)] & block[tuple(lower)]
        block = shifted
    return block
