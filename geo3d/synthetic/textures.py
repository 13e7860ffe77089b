"""Procedural surface textures of the synthetic renderer: albedo as a function of the hit point.

A texture is a function ``(points_world [N, 3], normals_world [N, 3], base_rgb [N, 3]) -> [N, 3]``
returning the albedo (RGB in [0, 1]) at world points on a surface with the given unit normals and
base colour. Textures are deterministic functions of position, so every view of a surface sees the
same pattern (what multi-view methods need). Register new ones in :data:`TEXTURES`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Texture = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _hash01(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, salt: int) -> np.ndarray:
    """Pseudo-random float64 in [0, 1) per integer lattice point (a 64-bit integer mix)."""
    h = ix.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    h ^= iy.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    h ^= iz.astype(np.uint64) * np.uint64(0x165667B19E3779F9)
    h ^= np.uint64(salt * 0x27D4EB2F165667C5 % (1 << 64))
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    return (h >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def value_noise(points: np.ndarray, cell_m: float, salt: int = 0) -> np.ndarray:
    """Smooth 3D value noise in [0, 1]: ``[N, 3]`` world points (metres) -> ``[N]``.

    Random values on a lattice of spacing ``cell_m``, interpolated trilinearly with smoothstep
    weights. ``salt`` picks an independent pattern.
    """
    scaled = np.asarray(points, dtype=np.float64) / cell_m
    base = np.floor(scaled)
    frac = scaled - base
    w = frac * frac * (3.0 - 2.0 * frac)
    base = base.astype(np.int64)
    out = np.zeros(len(scaled))
    for dx in (0, 1):
        wx = w[:, 0] if dx else 1.0 - w[:, 0]
        for dy in (0, 1):
            wy = w[:, 1] if dy else 1.0 - w[:, 1]
            for dz in (0, 1):
                wz = w[:, 2] if dz else 1.0 - w[:, 2]
                out += wx * wy * wz * _hash01(base[:, 0] + dx, base[:, 1] + dy, base[:, 2] + dz, salt)
    return out


def _scaled(base: np.ndarray, factor: np.ndarray) -> np.ndarray:
    return np.clip(base * factor[:, None], 0.0, 1.0)


def noise(points: np.ndarray, normals: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Subtle +-8 % brightness variation at 0.5 m and 0.1 m scales (painted or plain surfaces)."""
    return _scaled(base, 0.92 + 0.1 * value_noise(points, 0.5, 1) + 0.06 * value_noise(points, 0.1, 2))


def asphalt(points: np.ndarray, normals: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Road surface: fine grain plus large darker patches."""
    grain = value_noise(points, 0.08, 3)
    patches = value_noise(points, 3.0, 4)
    return _scaled(base, 0.75 + 0.25 * grain + 0.25 * patches)


def grass(points: np.ndarray, normals: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Lawn: strong fine variation plus yellowish patches."""
    factor = 0.6 + 0.5 * value_noise(points, 0.06, 5) + 0.2 * value_noise(points, 1.5, 6)
    out = _scaled(base, factor)
    dry = value_noise(points, 4.0, 7)[:, None]
    return np.clip(out + 0.12 * dry * np.array([0.8, 0.6, 0.0]), 0.0, 1.0)


def paving(points: np.ndarray, normals: np.ndarray, base: np.ndarray, tile_m: float = 0.6) -> np.ndarray:
    """Pavement slabs ``tile_m`` wide on horizontal faces (dark joints, per-slab shade)."""
    cell = np.floor(points[:, :2] / tile_m).astype(np.int64)
    slab = _hash01(cell[:, 0], cell[:, 1], np.zeros_like(cell[:, 0]), 8)
    frac = points[:, :2] / tile_m - cell
    joint = (np.minimum(frac, 1.0 - frac).min(axis=1) < 0.04) & (np.abs(normals[:, 2]) > 0.5)
    factor = 0.85 + 0.2 * slab + 0.05 * value_noise(points, 0.05, 9)
    return _scaled(base, np.where(joint, 0.55, factor))


def facade(points: np.ndarray, normals: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Building walls with a grid of windows (3 m floors, 2.5 m bays) on vertical faces."""
    out = _scaled(base, 0.9 + 0.15 * value_noise(points, 0.3, 10))
    vertical = np.abs(normals[:, 2]) < 0.5
    tangent = np.stack([-normals[:, 1], normals[:, 0]], axis=1)
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-9)
    along = (points[:, :2] * tangent).sum(axis=1) / 2.5
    floor = points[:, 2] / 3.0
    in_window = (np.abs(along - np.floor(along) - 0.5) < 0.28) & (floor - np.floor(floor) > 0.3)
    in_window &= (floor - np.floor(floor) < 0.8) & (floor > 0.3) & vertical
    cell = np.floor(np.stack([along, floor], axis=1)).astype(np.int64)
    wall = np.round((points[:, :2] * normals[:, :2]).sum(axis=1)).astype(np.int64)  # plane offset
    shade = _hash01(cell[:, 0], cell[:, 1], wall, 11)
    glass = np.array([0.2, 0.25, 0.32])[None] * (0.7 + 0.8 * shade[:, None])
    return np.where(in_window[:, None], np.clip(glass, 0.0, 1.0), out)


def foliage(points: np.ndarray, normals: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Tree crowns: clumpy dark/light leaves."""
    return _scaled(base, 0.55 + 0.6 * value_noise(points, 0.12, 12) + 0.2 * value_noise(points, 0.6, 13))


def stripes(points: np.ndarray, normals: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Horizontal white bands every 0.25 m of height (traffic cones, barriers)."""
    band = np.floor(points[:, 2] / 0.25).astype(np.int64) % 2 == 1
    return np.where(band[:, None], 0.92, base)


TEXTURES: dict[str, Texture] = {
    "noise": noise,
    "asphalt": asphalt,
    "grass": grass,
    "paving": paving,
    "facade": facade,
    "foliage": foliage,
    "stripes": stripes,
}
"""Texture name -> function; ``LabelledMesh.texture`` names one of these (None = plain colour)."""


def apply_textures(
    texture_names: list[str | None], mesh_index: np.ndarray, points: np.ndarray, normals: np.ndarray,
    base: np.ndarray,
) -> np.ndarray:
    """Albedo ``[N, 3]`` of hits on several meshes.

    Args:
        texture_names: texture of each mesh (None = plain ``base`` colour).
        mesh_index: ``[N]`` index of the mesh each hit is on.
        points, normals: ``[N, 3]`` world hit points and the hit faces' unit normals (as stored in
            the mesh, not flipped towards the viewer, so that textures are view-independent).
        base: ``[N, 3]`` base colour of each hit's mesh.
    """
    out = base.copy()
    names = np.array([name or "" for name in texture_names], dtype=object)
    for name in sorted({name for name in texture_names if name}):
        select = (names == name)[mesh_index]
        if select.any():
            out[select] = TEXTURES[name](points[select], normals[select], base[select])
    return out
