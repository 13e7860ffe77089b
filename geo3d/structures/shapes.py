"""Point-cloud shape sets for shape classification (PointNet and friends).

A :class:`ShapeSet` holds ``M`` shapes of ``P`` points each (``points [M, P, 3]`` float32, optional
unit ``normals [M, P, 3]``), one class label per shape, and the names needed to trace a shape back to
its source. Readers (:mod:`geo3d.io.modelnet`) and generators produce one; training code consumes it.
Whether the clouds are normalised is recorded by the producer in ``metadata`` (key ``"normalized"``).

Helpers:

- :func:`normalize_unit_sphere`: the ModelNet / PointNet convention, centre each cloud at the mean of
  its points and scale it so that the farthest point is at distance 1.
- :func:`sample_surface`: area-weighted uniform samples on a triangle mesh with the faces' normals,
  deterministic given the random generator (pure NumPy, no trimesh).

On disk a shape set is one ``.npz`` file (:meth:`ShapeSet.save`, :meth:`ShapeSet.load`): arrays
``points``, ``labels`` and optionally ``normals``, plus ``header``, a JSON string with the format
name and version, class names, shape names, split and metadata. No pickles.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geo3d.errors import CaptureError
from geo3d.utils.atomic import atomic_write_bytes

FORMAT_NAME = "geo3d-shapeset"
FORMAT_VERSION = 1
NORMAL_TOLERANCE = 1e-3
"""Largest accepted deviation of a normal's length from 1."""


@dataclass(eq=False)
class ShapeSet:
    """``M`` labelled point clouds of ``P`` points each.

    Attributes:
        points: ``[M, P, 3]`` float32 points per shape (coerced to float32, must be finite).
        labels: ``[M]`` int64 class index per shape, into ``class_names``.
        class_names: ``K`` unique class names; ``labels`` index this tuple.
        names: ``[M]`` per-shape identifiers, e.g. ``"airplane_0001"`` or ``"car/instance_17"``.
            ``None`` makes ``"shape_000000"``, ``"shape_000001"``, ...
        normals: optional ``[M, P, 3]`` float32 unit normals, one per point.
        split: which split this is, e.g. ``"train"`` or ``"test"``.
        metadata: JSON-serialisable description of how the set was made (source, sampling,
            ``"normalized"``, ...); stored by :meth:`save`.

    Raises:
        ValueError: wrong shapes or dtypes, labels out of range, non-finite values, normals that are
            not unit length, duplicate class names, metadata that JSON cannot store.
    """

    points: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    names: tuple[str, ...] | None = None
    normals: np.ndarray | None = None
    split: str = "train"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        points = np.asarray(self.points)
        if points.ndim != 3 or points.shape[-1] != 3:
            raise ValueError(f"ShapeSet.points must be [M, P, 3], got shape {points.shape}")
        if points.shape[0] > 0 and points.shape[1] == 0:
            raise ValueError("ShapeSet.points has 0 points per shape")
        if not np.issubdtype(points.dtype, np.number) or np.iscomplexobj(points):
            raise ValueError(f"ShapeSet.points must be real numbers, got dtype {points.dtype}")
        self.points = np.ascontiguousarray(points, dtype=np.float32)
        if not np.isfinite(self.points).all():
            raise ValueError("ShapeSet.points holds NaN or inf (or values too large for float32)")
        num_shapes = self.points.shape[0]

        self.class_names = tuple(self.class_names)
        if not all(isinstance(c, str) and c for c in self.class_names):
            raise ValueError(f"ShapeSet.class_names must be non-empty strings, got {self.class_names!r}")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"ShapeSet.class_names has duplicates: {self.class_names!r}")

        labels = np.asarray(self.labels)
        if labels.shape != (num_shapes,):
            raise ValueError(f"ShapeSet.labels must be [M] = [{num_shapes}], got shape {labels.shape}")
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"ShapeSet.labels must be integers, got dtype {labels.dtype}")
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)
        if labels.size and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError(
                f"ShapeSet.labels must be in [0, {len(self.class_names)}) (the class_names), got values in "
                f"[{self.labels.min()}, {self.labels.max()}]"
            )

        if self.names is None:
            self.names = tuple(f"shape_{i:06d}" for i in range(num_shapes))
        self.names = tuple(self.names)
        if len(self.names) != num_shapes or not all(isinstance(n, str) for n in self.names):
            raise ValueError(f"ShapeSet.names must be {num_shapes} strings, got {len(self.names)} items")

        if self.normals is not None:
            normals = np.asarray(self.normals)
            if normals.shape != self.points.shape:
                raise ValueError(f"ShapeSet.normals must match points {self.points.shape}: {normals.shape}")
            self.normals = np.ascontiguousarray(normals, dtype=np.float32)
            if not np.isfinite(self.normals).all():
                raise ValueError("ShapeSet.normals holds NaN or inf")
            length = np.linalg.norm(self.normals, axis=-1)
            if length.size and np.abs(length - 1.0).max() > NORMAL_TOLERANCE:
                worst = np.unravel_index(np.abs(length - 1.0).argmax(), length.shape)
                raise ValueError(
                    f"ShapeSet.normals must be unit length; shape {worst[0]} point {worst[1]} has length "
                    f"{length[worst]:.6g}"
                )

        if not isinstance(self.split, str):
            raise ValueError(f"ShapeSet.split must be a string, got {self.split!r}")
        if not isinstance(self.metadata, dict):
            raise ValueError(f"ShapeSet.metadata must be a dict, got {type(self.metadata).__name__}")
        try:
            json.dumps(self.metadata, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"ShapeSet.metadata must be JSON-serialisable ({exc})") from None

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def __repr__(self) -> str:
        return (
            f"ShapeSet(split={self.split!r}, shapes={len(self)}, points_per_shape={self.num_points}, "
            f"classes={self.num_classes}, normals={self.normals is not None})"
        )

    @property
    def num_classes(self) -> int:
        """``K``, the number of class names."""
        return len(self.class_names)

    @property
    def num_points(self) -> int:
        """``P``, the number of points per shape."""
        return int(self.points.shape[1])

    def class_counts(self) -> np.ndarray:
        """``[K]`` int64 number of shapes of each class, in ``class_names`` order."""
        return np.bincount(self.labels, minlength=self.num_classes).astype(np.int64)

    def subset(self, mask_or_indices: np.ndarray | list | slice) -> ShapeSet:
        """The shapes selected by a boolean mask ``[M]``, integer indices or a slice, as a new set.

        Class names, split and metadata are kept (class names are not pruned, so labels stay valid).
        Arrays are copies.
        """
        if isinstance(mask_or_indices, slice):
            index = np.arange(len(self))[mask_or_indices]
        else:
            index = np.asarray(mask_or_indices)
            if index.dtype == bool:
                if index.shape != (len(self),):
                    raise ValueError(f"subset: boolean mask must be [{len(self)}], got shape {index.shape}")
                index = np.flatnonzero(index)
            elif index.size == 0:
                index = np.zeros(0, dtype=np.int64)
            elif not np.issubdtype(index.dtype, np.integer) or index.ndim != 1:
                raise ValueError(f"subset: expected a boolean mask or 1-D integer indices, got {index.dtype}")
            elif index.min() < -len(self) or index.max() >= len(self):
                raise ValueError(f"subset: indices out of range for {len(self)} shapes")
        return ShapeSet(
            points=self.points[index],
            labels=self.labels[index],
            class_names=self.class_names,
            names=tuple(self.names[i] for i in index),
            normals=None if self.normals is None else self.normals[index],
            split=self.split,
            metadata=json.loads(json.dumps(self.metadata)),
        )

    def save(self, path: str | Path, compressed: bool = False) -> Path:
        """Write the set to one ``.npz`` file at ``path`` (exactly that name), atomically.

        Float32 arrays and JSON strings are stored as is, so :meth:`load` returns identical values.
        ``compressed`` deflates the arrays (smaller, slower; point coordinates compress poorly).
        """
        header = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "class_names": list(self.class_names),
            "names": list(self.names),
            "split": self.split,
            "metadata": self.metadata,
        }
        arrays = {"header": np.array(json.dumps(header)), "points": self.points, "labels": self.labels}
        if self.normals is not None:
            arrays["normals"] = self.normals
        buffer = io.BytesIO()
        (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
        return atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> ShapeSet:
        """Read a set written by :meth:`save`.

        Raises:
            CaptureError: the file is missing, not a shape-set ``.npz``, corrupt or truncated, written
                by a newer format version, or holds invalid data; the message names the file.
        """
        path = Path(path)
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise CaptureError(f"{path}: not a shape-set .npz file (a single .npy array)")
            with data:
                missing = {"header", "points", "labels"} - set(data.files)
                if missing:
                    raise CaptureError(f"{path}: not a geo3d shape set (missing entries {sorted(missing)})")
                header_text = str(data["header"][()])
                points, labels = data["points"], data["labels"]
                normals = data["normals"] if "normals" in data.files else None
        except FileNotFoundError:
            raise CaptureError(f"{path}: file not found") from None
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
            raise CaptureError(f"{path}: corrupt or truncated shape-set file ({exc})") from None
        try:
            header = json.loads(header_text)
        except json.JSONDecodeError as exc:
            raise CaptureError(f"{path}: corrupt header ({exc})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
            raise CaptureError(f"{path}: not a geo3d shape set (format != {FORMAT_NAME!r})")
        version = header.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise CaptureError(f"{path}: invalid format version {version!r}")
        if version > FORMAT_VERSION:
            raise CaptureError(
                f"{path}: shape-set format version {version} is newer than this geo3d reads "
                f"({FORMAT_VERSION}); update geo3d"
            )
        try:
            return cls(
                points=points,
                labels=labels,
                class_names=tuple(header["class_names"]),
                names=tuple(header["names"]),
                normals=normals,
                split=header["split"],
                metadata=header["metadata"],
            )
        except KeyError as exc:
            raise CaptureError(f"{path}: header misses key {exc}") from None
        except (TypeError, ValueError) as exc:
            raise CaptureError(f"{path}: invalid shape set ({exc})") from None


def normalize_unit_sphere(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre each cloud at its mean and scale it into the unit sphere (ModelNet / PointNet).

    This is PointNet++'s ``pc_normalize``: ``centre = mean(points)``, ``scale = max ||p - centre||``,
    ``normalized = (points - centre) / scale``, so the centroid is 0 and the farthest point is at
    distance exactly 1. Normals are unchanged by it (a translation and a uniform scale). A cloud
    whose points all coincide gets ``scale = 1`` (it becomes all zeros).

    Args:
        points: ``[..., P, 3]`` clouds (any leading batch dimensions).

    Returns:
        ``(normalized [..., P, 3], centre [..., 3], scale [...])`` with
        ``points == normalized * scale[..., None, None] + centre[..., None, :]``. Computed in float64;
        returned in the input's float dtype (float64 for integer input).
    """
    points = np.asarray(points)
    if points.ndim < 2 or points.shape[-1] != 3 or points.shape[-2] == 0:
        raise ValueError(f"normalize_unit_sphere: points must be [..., P, 3] with P > 0, got {points.shape}")
    dtype = points.dtype if np.issubdtype(points.dtype, np.floating) else np.float64
    p64 = points.astype(np.float64)
    centre = p64.mean(axis=-2)
    centred = p64 - centre[..., None, :]
    scale = np.sqrt((centred**2).sum(axis=-1)).max(axis=-1)
    scale = np.where(scale > 0, scale, 1.0)
    normalized = centred / scale[..., None, None]
    return normalized.astype(dtype), centre.astype(dtype), np.asarray(scale, dtype=dtype)


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, count: int, rng: np.random.Generator | int | None = None,
    *, return_faces: bool = False,
) -> tuple[np.ndarray, ...]:
    """``count`` points uniformly distributed over a triangle mesh's surface, with face normals.

    Each sample picks a face with probability proportional to its area, then a uniform point in the
    triangle (two uniforms ``u, v``, reflected into the triangle when ``u + v > 1``). The normal is the
    face's unit normal by the right-hand rule, ``normalize((b - a) x (c - a))`` for face ``(a, b, c)``,
    so it points outward for counter-clockwise faces seen from outside (meshes that are not
    consistently oriented give some inward normals). Zero-area faces are never picked.

    Args:
        vertices: ``[V, 3]`` vertex positions.
        faces: ``[F, 3]`` integer vertex indices.
        count: number of samples (>= 0).
        rng: ``np.random.Generator`` (or a seed for ``np.random.default_rng``); the result is a pure
            function of the mesh and the generator's state.
        return_faces: also return the index of the face each sample lies on.

    Returns:
        ``(points [count, 3], normals [count, 3])`` float64, plus ``faces [count]`` int64 with
        ``return_faces``.

    Raises:
        ValueError: bad shapes, indices out of range, non-finite vertices, or a mesh of zero area.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"sample_surface: vertices must be [V, 3], got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or (faces.size and not np.issubdtype(faces.dtype, np.integer)):
        raise ValueError(f"sample_surface: faces must be [F, 3] integers, got {faces.shape} {faces.dtype}")
    if count < 0:
        raise ValueError(f"sample_surface: count must be >= 0, got {count}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(f"sample_surface: face indices out of range for {len(vertices)} vertices")
    if not np.isfinite(vertices).all():
        raise ValueError("sample_surface: vertices hold NaN or inf")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    cross = np.cross(b - a, c - a)
    double_area = np.linalg.norm(cross, axis=1)
    cumulative = np.cumsum(double_area)
    if not len(cumulative) or not cumulative[-1] > 0:
        raise ValueError("sample_surface: the mesh has no faces of non-zero area")
    # inverse-CDF face choice; side="right" skips zero-area faces (their cumulative value repeats)
    face = np.searchsorted(cumulative, rng.random(count) * cumulative[-1], side="right")
    face = np.minimum(face, np.flatnonzero(double_area)[-1])  # rounding at the very end
    uv = rng.random((count, 2))
    flip = uv.sum(axis=1) > 1.0
    uv[flip] = 1.0 - uv[flip]
    points = a[face] + uv[:, :1] * (b[face] - a[face]) + uv[:, 1:] * (c[face] - a[face])
    normals = cross[face] / double_area[face, None]
    return (points, normals, face.astype(np.int64)) if return_faces else (points, normals)
