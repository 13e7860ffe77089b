"""Closed triangle-mesh primitives and object models in a local frame, and their placement.

Every primitive is a closed (watertight) convex mesh, so that ray parity tells inside from outside
(the occupancy ground truth relies on it) and the surface of a composite object is the union of
its parts. An object's local frame is x forward (its length), y left, z up, origin on the ground
at the centre of its footprint, metres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from geo3d.synthetic.classes import THING_CLASSES, class_id
from geo3d.synthetic.textures import TEXTURES


@dataclass(eq=False)
class Part:
    """One closed convex mesh of an object with its appearance.

    Attributes:
        vertices: ``[V, 3]`` float64, local frame, metres.
        faces: ``[F, 3]`` int64 (winding arbitrary: shading is two-sided, parity ignores it).
        color: base albedo, RGB in [0, 1].
        texture: name in :data:`geo3d.synthetic.textures.TEXTURES` or None.
    """

    vertices: np.ndarray
    faces: np.ndarray
    color: tuple[float, float, float] = (0.5, 0.5, 0.5)
    texture: str | None = None

    def __post_init__(self) -> None:
        self.vertices = np.asarray(self.vertices, dtype=np.float64)
        self.faces = np.asarray(self.faces, dtype=np.int64)
        self.color = tuple(float(c) for c in np.clip(self.color, 0.0, 1.0))  # type: ignore[assignment]
        if self.texture is not None and self.texture not in TEXTURES:
            raise ValueError(f"unknown texture {self.texture!r}; expected one of {', '.join(TEXTURES)}")


@dataclass(eq=False)
class ObjectModel:
    """A procedural object: closed convex parts in its local frame, all of one class.

    Attributes:
        kind: the model's name (``"car"``, ``"street_lamp"``, ...), finer than the class.
        semantic: class name in :data:`~geo3d.synthetic.classes.CLASS_NAMES`.
        parts: the parts.
        metadata: JSON-serialisable facts (variant, dimensions).
    """

    kind: str
    semantic: str
    parts: list[Part] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        class_id(self.semantic)

    @property
    def is_thing(self) -> bool:
        """Whether instances of it get an instance id (:data:`THING_CLASSES`)."""
        return self.semantic in THING_CLASSES

    def bounds(self) -> np.ndarray:
        """``[2, 3]`` local min / max corner of all parts, metres."""
        vertices = np.concatenate([p.vertices for p in self.parts])
        return np.stack([vertices.min(axis=0), vertices.max(axis=0)])

    def add(self, vertices: np.ndarray, faces: np.ndarray, color, texture: str | None = None) -> None:
        self.parts.append(Part(vertices, faces, color, texture))


def yaw_matrix(yaw: float) -> np.ndarray:
    """``[3, 3]`` rotation about +z by ``yaw`` radians (counter-clockwise seen from above)."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def box(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box between corners ``lo`` and ``hi`` ``[3]``: ``(vertices [8, 3], faces [12, 3])``."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    if np.any(hi <= lo):
        raise ValueError(f"box needs hi > lo, got {lo.tolist()} .. {hi.tolist()}")
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=np.float64)
    return lo + corners * (hi - lo), _BOX_FACES.copy()


_BOX_FACES = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                       [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]], dtype=np.int64)


def hull(points) -> tuple[np.ndarray, np.ndarray]:
    """Convex hull of ``points [N, 3]`` (N >= 4, not coplanar) as a closed mesh, faces wound
    counter-clockwise seen from outside (normals point out)."""
    from scipy.spatial import ConvexHull

    points = np.asarray(points, dtype=np.float64)
    result = ConvexHull(points)
    used = np.unique(result.simplices)
    remap = np.full(len(points), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    vertices, faces = points[used], remap[result.simplices].astype(np.int64)
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    inward = (np.cross(b - a, c - a) * (a - vertices.mean(axis=0))).sum(axis=1) < 0
    faces[inward] = faces[inward][:, ::-1]
    return vertices, faces


def prism(profile_xz, y0: float, y1: float) -> tuple[np.ndarray, np.ndarray]:
    """Extrude a convex side profile ``[K, 2]`` (x, z points) along y from ``y0`` to ``y1``."""
    profile = np.asarray(profile_xz, dtype=np.float64)
    points = np.concatenate([np.insert(profile, 1, y, axis=1) for y in (y0, y1)])
    return hull(points)


@lru_cache(maxsize=None)
def _unit_cylinder(sections: int) -> tuple[np.ndarray, np.ndarray]:
    angles = 2.0 * math.pi * np.arange(sections) / sections
    ring = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    vertices = np.concatenate([np.insert(ring, 2, -0.5, axis=1), np.insert(ring, 2, 0.5, axis=1),
                               [[0.0, 0.0, -0.5], [0.0, 0.0, 0.5]]])
    i = np.arange(sections)
    j = (i + 1) % sections
    bottom, top = 2 * sections, 2 * sections + 1
    faces = np.concatenate([np.stack([i, j, j + sections], 1), np.stack([i, j + sections, i + sections], 1),
                            np.stack([np.full(sections, bottom), j, i], 1),
                            np.stack([np.full(sections, top), i + sections, j + sections], 1)])
    return vertices, faces.astype(np.int64)


def cylinder(center, radius: float, height: float, axis: str = "z", sections: int = 16,
             top_radius: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cylinder (or frustum if ``top_radius`` differs) about the ``"x"``, ``"y"`` or ``"z"`` axis
    through ``center [3]``; ``height`` along the axis. ``top_radius=0`` gives a cone."""
    vertices, faces = _unit_cylinder(sections)
    vertices = vertices.copy()
    if top_radius is not None:
        top = vertices[:, 2] > 0
        if top_radius == 0:
            count = sections
            vertices = np.concatenate([vertices[:count], [[0.0, 0.0, 0.5]], [[0.0, 0.0, -0.5]]])
            i = np.arange(count)
            j = (i + 1) % count
            faces = np.concatenate([np.stack([i, j, np.full(count, count)], 1),
                                    np.stack([np.full(count, count + 1), j, i], 1)]).astype(np.int64)
            vertices[:count, :2] *= radius
        else:
            vertices[:, :2] *= np.where(top, top_radius, radius)[:, None]
    else:
        vertices[:, :2] *= radius
    vertices[:, 2] *= height
    order = {"z": [0, 1, 2], "x": [2, 0, 1], "y": [1, 2, 0]}[axis]
    return vertices[:, order] + np.asarray(center, dtype=np.float64), faces


@lru_cache(maxsize=None)
def _unit_sphere(subdivisions: int) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=1.0)
    return np.array(mesh.vertices), np.array(mesh.faces, dtype=np.int64)


def ellipsoid(center, radii, subdivisions: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Icosphere scaled by ``radii [3]`` (or a scalar) about ``center [3]``."""
    vertices, faces = _unit_sphere(subdivisions)
    return vertices * np.asarray(radii, dtype=np.float64) + np.asarray(center, dtype=np.float64), faces.copy()


def bar(a, b, thickness: float) -> tuple[np.ndarray, np.ndarray]:
    """A square bar of side ``thickness`` from point ``a [3]`` to ``b [3]`` (frame tubes, booms)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    axis = (b - a) / np.linalg.norm(b - a)
    helper = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(axis, helper)
    u /= np.linalg.norm(u)
    v = np.cross(axis, u)
    h = thickness / 2
    offsets = [su * h * u + sv * h * v for su in (-1, 1) for sv in (-1, 1)]
    return hull([end + o for end in (a, b) for o in offsets])


def sweep(xy: np.ndarray, heading: np.ndarray, d0: float, d1: float, z0: float, z1: float
          ) -> tuple[np.ndarray, np.ndarray]:
    """A closed slab swept along a 2D path: lateral offsets ``[d0, d1]`` (left of the path, metres)
    and heights ``[z0, z1]``, at path samples ``xy [N, 2]`` with headings ``[N]`` (radians).

    Not convex on curves, but closed: parity and shading work the same.
    """
    xy = np.asarray(xy, dtype=np.float64)
    normal = np.stack([-np.sin(heading), np.cos(heading)], axis=1)
    count = len(xy)
    if count < 2 or d1 <= d0 or z1 <= z0:
        raise ValueError("sweep needs >= 2 samples, d1 > d0 and z1 > z0")
    corners = [(d0, z0), (d1, z0), (d1, z1), (d0, z1)]
    vertices = np.concatenate([np.concatenate([xy + d * normal, np.full((count, 1), z)], axis=1)
                               for d, z in corners])  # corner-major: index c * count + i
    i = np.arange(count - 1)
    faces = []
    for c in range(4):
        a, b = c * count, ((c + 1) % 4) * count
        faces += [np.stack([a + i, b + i, b + i + 1], 1), np.stack([a + i, b + i + 1, a + i + 1], 1)]
    for end in (0, count - 1):
        ring = [c * count + end for c in range(4)]
        faces.append(np.array([[ring[0], ring[1], ring[2]], [ring[0], ring[2], ring[3]]]))
    return vertices, np.concatenate(faces).astype(np.int64)


def place_vertices(vertices: np.ndarray, x: float, y: float, yaw: float, z: float = 0.0) -> np.ndarray:
    """Local ``[V, 3]`` -> world: turn by ``yaw`` about z, then move to ``(x, y, z)``."""
    return vertices @ yaw_matrix(yaw).T + np.array([x, y, z])

