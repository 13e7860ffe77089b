"""Triangle meshes as plain arrays: :class:`TriangleMesh`.

A mesh is ``vertices [V, 3]`` (float, metres, in the frame its producer states) and ``faces [F, 3]``
(int64 vertex indices, counter-clockwise seen from outside, so that the right-hand normal
``(v1 - v0) x (v2 - v0)`` points outwards), with optional unit ``vertex_normals [V, 3]`` and
``vertex_colors [V, 3]`` (float in [0, 1]). Arrays are NumPy: meshes come from and go to files,
Open3D and trimesh; ops that need tensors convert at their boundary.

Conversions: :meth:`TriangleMesh.from_open3d` / :meth:`to_open3d`, :meth:`from_trimesh` /
:meth:`to_trimesh`; :func:`read_mesh` reads PLY/OBJ/STL/OFF through trimesh and :meth:`save`
writes atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geo3d.errors import MeshError


@dataclass(frozen=True)
class TriangleMesh:
    """A triangle mesh (NumPy arrays).

    Attributes:
        vertices: ``[V, 3]`` float vertex positions.
        faces: ``[F, 3]`` int64 vertex indices, counter-clockwise seen from outside.
        vertex_normals: optional ``[V, 3]`` unit normals pointing outwards.
        vertex_colors: optional ``[V, 3]`` RGB in [0, 1].
    """

    vertices: np.ndarray
    faces: np.ndarray
    vertex_normals: np.ndarray | None = None
    vertex_colors: np.ndarray | None = None

    def __post_init__(self) -> None:
        vertices = np.asarray(self.vertices)
        faces = np.asarray(self.faces)
        if vertices.ndim != 2 or vertices.shape[1] != 3:
            raise MeshError(f"mesh vertices must have shape [V, 3], got {list(vertices.shape)}")
        if faces.ndim != 2 or faces.shape[1] != 3:
            if faces.size == 0:
                faces = faces.reshape(0, 3)
            else:
                raise MeshError(f"mesh faces must have shape [F, 3], got {list(faces.shape)}")
        if not np.issubdtype(vertices.dtype, np.floating):
            vertices = vertices.astype(np.float64)
        if not np.isfinite(vertices).all():
            raise MeshError(f"mesh vertices hold {int((~np.isfinite(vertices)).any(axis=1).sum())} non-finite rows")
        if faces.size and not np.issubdtype(faces.dtype, np.integer):
            raise MeshError(f"mesh faces must be integers, got {faces.dtype}")
        faces = faces.astype(np.int64, copy=False)
        if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
            raise MeshError(f"mesh face indices must lie in [0, {len(vertices)}), got [{faces.min()}, {faces.max()}]")
        object.__setattr__(self, "vertices", vertices)
        object.__setattr__(self, "faces", faces)
        for name in ("vertex_normals", "vertex_colors"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value)
                if value.shape != vertices.shape:
                    raise MeshError(f"mesh {name} must have shape {list(vertices.shape)}, got {list(value.shape)}")
                object.__setattr__(self, name, value)

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def bounds(self) -> np.ndarray:
        """``[2, 3]``: the min and max corner of the vertices' axis-aligned box."""
        if self.num_vertices == 0:
            raise MeshError("an empty mesh has no bounds")
        return np.stack([self.vertices.min(axis=0), self.vertices.max(axis=0)])

    def face_normals(self) -> np.ndarray:
        """``[F, 3]`` unit right-hand normals of the faces (zero for degenerate faces)."""
        v = self.vertices[self.faces]
        n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
        length = np.linalg.norm(n, axis=1, keepdims=True)
        return np.divide(n, length, out=np.zeros_like(n), where=length > 0)

    def area(self) -> float:
        """Total surface area (square units of the vertices)."""
        v = self.vertices[self.faces]
        return float(0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1).sum())

    # -- conversions -------------------------------------------------------------------------------
    @classmethod
    def from_open3d(cls, mesh) -> TriangleMesh:
        """From an ``open3d.geometry.TriangleMesh`` (normals and colours kept when present)."""
        normals = np.asarray(mesh.vertex_normals) if mesh.has_vertex_normals() else None
        colors = np.asarray(mesh.vertex_colors) if mesh.has_vertex_colors() else None
        return cls(np.asarray(mesh.vertices).copy(), np.asarray(mesh.triangles).astype(np.int64),
                   None if normals is None else normals.copy(), None if colors is None else colors.copy())

    def to_open3d(self):
        """An ``open3d.geometry.TriangleMesh`` (float64 copies)."""
        from geo3d.utils.optional import require

        o3d = require("open3d")
        mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(self.vertices.astype(np.float64)),
                                         o3d.utility.Vector3iVector(self.faces.astype(np.int32)))
        if self.vertex_normals is not None:
            mesh.vertex_normals = o3d.utility.Vector3dVector(self.vertex_normals.astype(np.float64))
        if self.vertex_colors is not None:
            mesh.vertex_colors = o3d.utility.Vector3dVector(np.clip(self.vertex_colors, 0, 1).astype(np.float64))
        return mesh

    @classmethod
    def from_trimesh(cls, mesh) -> TriangleMesh:
        """From a ``trimesh.Trimesh`` (vertex normals are not copied: trimesh computes them lazily)."""
        return cls(np.asarray(mesh.vertices, dtype=np.float64).copy(), np.asarray(mesh.faces, dtype=np.int64).copy())

    def to_trimesh(self):
        """A ``trimesh.Trimesh`` without processing (vertices and faces kept as they are)."""
        from geo3d.utils.optional import require

        trimesh = require("trimesh")
        colors = None if self.vertex_colors is None else (np.clip(self.vertex_colors, 0, 1) * 255).astype(np.uint8)
        return trimesh.Trimesh(self.vertices, self.faces, vertex_normals=self.vertex_normals,
                               vertex_colors=colors, process=False)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the mesh (format from the suffix: ``.ply``, ``.obj``, ``.stl``, ``.off``) atomically."""
        from geo3d.utils.atomic import atomic_write_bytes

        path = Path(path)
        data = self.to_trimesh().export(file_type=path.suffix.lstrip(".").lower())
        return atomic_write_bytes(path, data if isinstance(data, bytes) else data.encode())


def read_mesh(path: str | os.PathLike) -> TriangleMesh:
    """Read a triangle mesh file (PLY, OBJ, STL, OFF, ...) through trimesh, without processing.

    Raises:
        MeshError: the file is missing, unreadable, or holds no triangles.
    """
    from geo3d.utils.optional import require

    trimesh = require("trimesh")
    path = Path(path)
    if not path.is_file():
        raise MeshError(f"{path}: no such mesh file")
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as error:  # trimesh raises many kinds on corrupt files
        raise MeshError(f"{path}: cannot read the mesh ({type(error).__name__}: {error})") from error
    if not hasattr(mesh, "faces") or len(mesh.faces) == 0:
        raise MeshError(f"{path}: holds no triangles")
    return TriangleMesh.from_trimesh(mesh)
