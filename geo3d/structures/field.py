"""Open-vocabulary occupancy fields: :class:`OpenVocabField`, the artefact geo3d's methods produce.

A field is an axis-aligned voxel grid in ``frame`` (``"ego"``, ``"world"``, ...). Voxel ``(i, j, k)``
covers ``origin + [i, j, k] * voxel_size`` to ``origin + [i + 1, j + 1, k + 1] * voxel_size`` (metres),
its centre is ``origin + ([i, j, k] + 0.5) * voxel_size`` (as in
:class:`~geo3d.structures.occupancy.SemanticOccupancy`). It holds a dense occupancy probability per
voxel and, sparsely for the ``M`` voxels listed in ``indices``, a unit language-aligned feature (in
the text space ``space``: queries must be encoded in the same space), optional RGB and class ids.

File format (``.npz``, a zip of ``.npy`` members written atomically), version :data:`FORMAT_VERSION`:

* ``format``: the string :data:`FORMAT_TAG`; ``version``: int64.
* ``header``: JSON (``origin``, ``voxel_size``, ``shape``, ``frame``, ``space``, ``metadata``).
* ``occupancy_u8``: ``[X, Y, Z]`` uint8, ``round(p * 255)``: probabilities come back within
  ``1 / 510`` (:data:`OCCUPANCY_PRECISION`) of the saved value.
* ``indices`` ``[M, 3]`` int32, ``features`` ``[M, D]`` as held (float16 or float32, bit-exact),
  optional ``colors`` ``[M, 3]`` uint8 and ``labels`` ``[M]`` int16.

Exports: :meth:`OpenVocabField.to_points` (xyz + uint8 RGB coloured by RGB, class or a relevance
score), :meth:`to_open3d` (``PointCloud`` or a cube ``TriangleMesh``) and :meth:`export_ply`.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from geo3d.errors import Geo3dError
from geo3d.structures.mesh import TriangleMesh
from geo3d.utils.atomic import atomic_write_bytes

FORMAT_TAG = "geo3d-openvocab-field"
FORMAT_VERSION = 1
OLDEST_SUPPORTED_VERSION = 1
OCCUPANCY_PRECISION = 1.0 / 510.0
"""Largest difference between a saved and a loaded occupancy probability (uint8 quantisation)."""

# Occ3D / nuScenes-lidarseg display colours of ids 0..16 (geo3d.synthetic.classes order); further ids
# get a deterministic hashed colour.
CLASS_PALETTE: np.ndarray = np.array(
    [
        [0, 0, 0],  # free
        [255, 120, 50],  # barrier
        [255, 192, 203],  # bicycle
        [255, 255, 0],  # bus
        [0, 150, 245],  # car
        [0, 255, 255],  # construction_vehicle
        [200, 180, 0],  # motorcycle
        [255, 0, 0],  # pedestrian
        [255, 240, 150],  # traffic_cone
        [135, 60, 0],  # trailer
        [160, 32, 240],  # truck
        [255, 0, 255],  # driveable_surface
        [139, 137, 137],  # other_flat
        [75, 0, 75],  # sidewalk
        [150, 240, 80],  # terrain
        [230, 230, 250],  # manmade
        [0, 175, 0],  # vegetation
    ],
    dtype=np.uint8,
)
"""``[17, 3]`` uint8 RGB display colour per class id of the Occ3D / synthetic classes (0 free, 1 barrier, ...
16 vegetation; :data:`geo3d.synthetic.classes.CLASS_NAMES`), for visualisation only."""
# viridis at 0, 1/4, 1/2, 3/4, 1 (its lightness rises monotonically, so relevance reads as brightness)
_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)
_UNIT_TOLERANCE = {np.dtype(np.float16): 5e-3, np.dtype(np.float32): 1e-4}
# 8 corners (bit 0 = x, bit 1 = y, bit 2 = z) and 12 outward, counter-clockwise triangles of a unit cube
_CUBE_CORNERS = np.array([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=np.float64)
_CUBE_FACES = np.array([[0, 2, 3], [0, 3, 1], [4, 5, 7], [4, 7, 6], [0, 1, 5], [0, 5, 4],
                        [2, 6, 7], [2, 7, 3], [0, 4, 6], [0, 6, 2], [1, 3, 7], [1, 7, 5]], dtype=np.int64)  # fmt: skip


class FieldError(Geo3dError, ValueError):
    """A malformed open-vocabulary field or field file, or a query in another text space."""


class VoxelLookup(NamedTuple):
    """Result of :meth:`OpenVocabField.world_to_index`."""

    indices: np.ndarray
    """``[N, 3]`` int64 voxel index of each point (outside the grid where ``inside`` is False)."""
    inside: np.ndarray
    """``[N]`` bool, True where the point lies in the grid."""


def class_colors(labels: np.ndarray) -> np.ndarray:
    """``[...]`` integer class ids -> ``[..., 3]`` uint8 display colours (ids > 16 get a hashed colour)."""
    labels = np.asarray(labels).astype(np.int64)
    hashed = ((labels[..., None] * np.array([2654435761, 40503, 97], dtype=np.int64)) >> 3) % 200 + 55
    known = CLASS_PALETTE[np.clip(labels, 0, len(CLASS_PALETTE) - 1)]
    return np.where((labels < len(CLASS_PALETTE))[..., None], known, hashed.astype(np.uint8)).astype(np.uint8)


def relevance_colors(relevance: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """``[N]`` scores -> ``[N, 3]`` uint8 viridis colours (dark purple = ``low``, yellow = ``high``).

    ``low`` / ``high`` default to the scores' min / max; scores are clipped to that range.
    """
    relevance = np.asarray(relevance, dtype=np.float64)
    if not np.isfinite(relevance).all():
        raise FieldError("relevance must be finite")
    if relevance.size == 0:
        return np.zeros((*relevance.shape, 3), dtype=np.uint8)
    low = float(relevance.min()) if low is None else float(low)
    high = float(relevance.max()) if high is None else float(high)
    t = np.clip((relevance - low) / (high - low), 0.0, 1.0) if high > low else np.full_like(relevance, 0.5)
    stops = np.linspace(0.0, 1.0, len(_VIRIDIS))
    rgb = np.stack([np.interp(t, stops, _VIRIDIS[:, c]) for c in range(3)], axis=-1)
    return np.round(rgb).astype(np.uint8)


def _array(value: Any, name: str, ndim: int, width: int | None = None) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != ndim or (width is not None and arr.shape[1] != width):
        want = f"[M, {width}]" if width is not None else ("[M]" if ndim == 1 else f"{ndim} dimensions")
        raise FieldError(f"field {name} must have shape {want}, got {list(arr.shape)}")
    return arr


@dataclass(eq=False)
class OpenVocabField:
    """A voxel grid with occupancy probabilities and sparse language features (NumPy arrays).

    Attributes:
        origin: ``[3]`` float64 lower corner of voxel ``(0, 0, 0)`` in ``frame``, metres.
        voxel_size: ``[3]`` float64 voxel edge lengths (metres); a scalar is broadcast.
        frame: the frame the grid is axis-aligned in, e.g. ``"ego"`` or ``"world"``.
        occupancy: ``[X, Y, Z]`` float32 occupancy probability in [0, 1]; ``shape`` is its shape.
        indices: ``[M, 3]`` int32 voxel indices that carry a feature, unique, in bounds, sorted
            lexicographically (C order of the grid); unsorted input is sorted together with the rows.
        features: ``[M, D]`` float16 or float32 unit-norm language features (other floats -> float32).
        space: id of the text-encoder space the features live in (see :meth:`check_space`).
        colors: optional ``[M, 3]`` uint8 RGB per feature voxel.
        labels: optional ``[M]`` int16 class id per feature voxel (>= 0).
        metadata: JSON-serialisable dict: capture, method, its config, ...

    Raises:
        FieldError: naming the argument and the problem (shapes, dtypes, NaN/inf, probabilities out
            of [0, 1], indices out of range or repeated, non-unit features, empty ``space``, ...).
    """

    origin: np.ndarray
    voxel_size: np.ndarray
    frame: str
    occupancy: np.ndarray
    indices: np.ndarray
    features: np.ndarray
    space: str
    colors: np.ndarray | None = None
    labels: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        origin = np.asarray(self.origin, dtype=np.float64)
        if origin.shape != (3,) or not np.isfinite(origin).all():
            raise FieldError(f"field origin must be 3 finite numbers (metres), got {self.origin!r}")
        try:
            size = np.broadcast_to(np.asarray(self.voxel_size, dtype=np.float64), (3,)).copy()
        except ValueError:
            raise FieldError(f"field voxel_size must be a number or 3 numbers, got {self.voxel_size!r}") from None
        if not np.isfinite(size).all() or (size <= 0).any():
            raise FieldError(f"field voxel_size must be positive and finite (metres), got {size.tolist()}")
        if not isinstance(self.frame, str) or not self.frame:
            raise FieldError(f"field frame must be a non-empty string, got {self.frame!r}")
        if not isinstance(self.space, str) or not self.space:
            raise FieldError(f"field space must name the text encoder's space, got {self.space!r}")
        occ = np.asarray(self.occupancy)
        if occ.ndim != 3 or min(occ.shape) <= 0:
            raise FieldError(f"field occupancy must have shape [X, Y, Z] with X, Y, Z > 0, got {list(occ.shape)}")
        if not np.issubdtype(occ.dtype, np.floating):
            raise FieldError(f"field occupancy must be float probabilities, got {occ.dtype}")
        occ = occ.astype(np.float32, copy=False)
        if not np.isfinite(occ).all():
            raise FieldError(f"field occupancy holds {int((~np.isfinite(occ)).sum())} NaN/inf values")
        if occ.size and (occ.min() < 0 or occ.max() > 1):
            raise FieldError(f"field occupancy must lie in [0, 1], got [{occ.min()}, {occ.max()}]")
        idx = _array(self.indices, "indices", 2, 3)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise FieldError(f"field indices must be integers, got {idx.dtype}")
        idx = idx.astype(np.int64)
        if idx.size and ((idx < 0).any() or (idx >= np.array(occ.shape)).any()):
            bad = idx[((idx < 0) | (idx >= np.array(occ.shape))).any(axis=1)][0].tolist()
            raise FieldError(f"field indices must lie in the grid {list(occ.shape)}, got {bad}")
        feats = _array(self.features, "features", 2)
        if len(feats) != len(idx):
            raise FieldError(f"field features must have one row per index ({len(idx)}), got {len(feats)}")
        if feats.shape[1] == 0:
            raise FieldError("field features must have at least one channel, got D = 0")
        if not np.issubdtype(feats.dtype, np.floating):
            raise FieldError(f"field features must be float16 or float32, got {feats.dtype}")
        if feats.dtype not in _UNIT_TOLERANCE:
            feats = feats.astype(np.float32)
        if not np.isfinite(feats).all():
            raise FieldError(f"field features hold {int((~np.isfinite(feats)).any(axis=1).sum())} NaN/inf rows")
        norms = np.linalg.norm(feats.astype(np.float64), axis=1)
        off = np.abs(norms - 1.0) > _UNIT_TOLERANCE[feats.dtype]
        if off.any():
            raise FieldError(f"field features must be unit rows; {int(off.sum())} rows are not "
                             f"(e.g. norm {norms[off][0]:.4g})")
        linear = np.ravel_multi_index(idx.T, occ.shape) if len(idx) else np.zeros(0, np.int64)
        order = np.argsort(linear, kind="stable")
        if len(linear) > 1 and (np.diff(linear[order]) == 0).any():
            dup = idx[order][np.flatnonzero(np.diff(linear[order]) == 0)[0]].tolist()
            raise FieldError(f"field indices must be unique; voxel {dup} appears more than once")
        sorted_already = bool((np.diff(linear) > 0).all())
        colors, labels = self.colors, self.labels
        if colors is not None:
            colors = _array(colors, "colors", 2, 3)
            if len(colors) != len(idx) or colors.dtype != np.uint8:
                raise FieldError(f"field colors must be [{len(idx)}, 3] uint8, got {list(colors.shape)} {colors.dtype}")
        if labels is not None:
            labels = _array(labels, "labels", 1)
            if len(labels) != len(idx) or not np.issubdtype(labels.dtype, np.integer):
                raise FieldError(f"field labels must be [{len(idx)}] integers, got {list(labels.shape)} {labels.dtype}")
            if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.int16).max):
                raise FieldError(f"field labels must lie in [0, 32767], got [{labels.min()}, {labels.max()}]")
            labels = labels.astype(np.int16)
        try:
            metadata = json.loads(json.dumps(dict(self.metadata)))
        except (TypeError, ValueError) as error:
            raise FieldError(f"field metadata must be a JSON-serialisable dict: {error}") from None
        if not sorted_already:
            idx, feats = idx[order], feats[order]
            colors = None if colors is None else colors[order]
            labels = None if labels is None else labels[order]
        self.origin, self.voxel_size, self.occupancy = origin, size, occ
        self.indices, self.features, self.colors, self.labels = idx.astype(np.int32), feats, colors, labels
        self.metadata = metadata

    # -- properties and lookups ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """``(X, Y, Z)`` voxels."""
        return tuple(int(n) for n in self.occupancy.shape)  # type: ignore[return-value]

    @property
    def feature_dim(self) -> int:
        """``D``, the feature width."""
        return int(self.features.shape[1])

    @property
    def num_features(self) -> int:
        """``M``, the number of voxels that carry a feature."""
        return int(self.indices.shape[0])

    def num_occupied(self, threshold: float = 0.5) -> int:
        """Number of voxels whose occupancy probability is >= ``threshold``."""
        return int(self.occupied_mask(threshold).sum())

    def occupied_mask(self, threshold: float = 0.5) -> np.ndarray:
        """``[X, Y, Z]`` bool, True where the occupancy probability is >= ``threshold``."""
        if not 0.0 <= float(threshold) <= 1.0:
            raise FieldError(f"threshold must lie in [0, 1], got {threshold}")
        return self.occupancy >= threshold

    def voxel_centers(self, indices: np.ndarray | None = None) -> np.ndarray:
        """``[M, 3]`` float64 centres (metres, ``frame``) of ``indices`` ``[M, 3]`` (default: :attr:`indices`)."""
        idx = self.indices if indices is None else _array(indices, "indices", 2, 3)
        return self.origin + (idx.astype(np.float64) + 0.5) * self.voxel_size

    def world_to_index(self, points: np.ndarray) -> VoxelLookup:
        """Voxel containing each of ``points`` ``[N, 3]`` (metres, in ``frame``; "world" is the field's frame).

        A point on a face between two voxels belongs to the upper one; the grid is half-open
        ``[origin, origin + shape * voxel_size)``.
        """
        points = _array(points, "points", 2, 3).astype(np.float64)
        if not np.isfinite(points).all():
            raise FieldError("points hold NaN/inf coordinates")
        idx = np.floor((points - self.origin) / self.voxel_size).astype(np.int64)
        inside = ((idx >= 0) & (idx < np.array(self.shape))).all(axis=1)
        return VoxelLookup(idx, inside)

    def feature_rows(self, indices: np.ndarray) -> np.ndarray:
        """``[N]`` int64 row of :attr:`features` for each voxel of ``indices`` ``[N, 3]``, -1 where none."""
        idx = _array(indices, "indices", 2, 3).astype(np.int64)
        inside = ((idx >= 0) & (idx < np.array(self.shape))).all(axis=1)
        rows = np.full(len(idx), -1, dtype=np.int64)
        if not inside.any() or self.num_features == 0:
            return rows
        keys = np.ravel_multi_index(self.indices.T.astype(np.int64), self.shape)
        query = np.ravel_multi_index(idx[inside].T, self.shape)
        pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
        rows[inside] = np.where(keys[pos] == query, pos, -1)
        return rows

    def check_space(self, space: str) -> None:
        """Raise :class:`FieldError` unless text queries encoded in ``space`` can be compared with the features."""
        if space != self.space:
            raise FieldError(f"queries must use the same text encoder: field space {self.space!r}, "
                             f"query space {space!r}")

    def subset(self, mask: np.ndarray) -> OpenVocabField:
        """A field keeping the feature voxels where ``mask`` ``[M]`` (bool) is True; occupancy is unchanged."""
        mask = np.asarray(mask)
        if mask.shape != (self.num_features,) or mask.dtype != np.bool_:
            raise FieldError(f"subset mask must be [{self.num_features}] bool, got {list(mask.shape)} {mask.dtype}")
        return OpenVocabField(self.origin, self.voxel_size, self.frame, self.occupancy, self.indices[mask],
                              self.features[mask], self.space, None if self.colors is None else self.colors[mask],
                              None if self.labels is None else self.labels[mask], self.metadata)

    # -- files --------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the field to ``path`` (``.npz``, format above) atomically; returns the path."""
        header = {"origin": self.origin.tolist(), "voxel_size": self.voxel_size.tolist(), "shape": list(self.shape),
                  "frame": self.frame, "space": self.space, "metadata": self.metadata}
        arrays = {"format": np.array(FORMAT_TAG), "version": np.array(FORMAT_VERSION, dtype=np.int64),
                  "header": np.array(json.dumps(header)),
                  "occupancy_u8": np.round(self.occupancy * 255.0).astype(np.uint8),
                  "indices": self.indices, "features": self.features}
        if self.colors is not None:
            arrays["colors"] = self.colors
        if self.labels is not None:
            arrays["labels"] = self.labels
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> OpenVocabField:
        """Read a field written by :meth:`save`.

        Raises:
            FieldError: naming the file: missing, truncated or corrupt (bad zip, CRC mismatch), not a
                field file, written by a newer geo3d or an unsupported older version, missing
                entries, or contents that fail validation.
        """
        path = Path(path)
        if not path.is_file():
            raise FieldError(f"{path}: no such field file")
        with open(path, "rb") as handle:
            if handle.read(4) != b"PK\x03\x04":
                raise FieldError(f"{path}: not a geo3d open-vocabulary field file (not an .npz archive)")
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {name: npz[name] for name in npz.files}
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as error:
            raise FieldError(f"{path}: truncated or corrupt field file ({type(error).__name__}: {error})") from None
        tag = data.get("format")
        if tag is None or tag.shape != () or str(tag) != FORMAT_TAG:
            raise FieldError(f"{path}: not a geo3d open-vocabulary field file (no '{FORMAT_TAG}' format tag)")
        try:
            version = int(data["version"])
        except (KeyError, TypeError, ValueError):
            raise FieldError(f"{path}: field file has no valid integer 'version'") from None
        if version > FORMAT_VERSION:
            raise FieldError(f"{path}: field file version {version} is newer than this geo3d supports "
                             f"({FORMAT_VERSION}); update geo3d to read it")
        if version < OLDEST_SUPPORTED_VERSION:
            raise FieldError(f"{path}: field file version {version} is older than the oldest supported "
                             f"({OLDEST_SUPPORTED_VERSION}); re-export it with the geo3d that wrote it")
        missing = [k for k in ("header", "occupancy_u8", "indices", "features") if k not in data]
        if missing:
            raise FieldError(f"{path}: field file lacks entries {missing}")
        try:
            header = json.loads(str(data["header"]))
            occ_u8 = data["occupancy_u8"]
            if occ_u8.dtype != np.uint8 or list(occ_u8.shape) != list(header["shape"]):
                raise FieldError(f"occupancy_u8 must be uint8 of shape {header['shape']}, got {occ_u8.dtype} "
                                 f"{list(occ_u8.shape)}")
            return cls(header["origin"], header["voxel_size"], header["frame"], occ_u8.astype(np.float32) / 255.0,
                       data["indices"], data["features"], header["space"], data.get("colors"), data.get("labels"),
                       header["metadata"])
        except (FieldError, KeyError, TypeError, ValueError) as error:
            raise FieldError(f"{path}: invalid field file contents: {error}") from None

    # -- exports ------------------------------------------------------------------------------------
    def _shown(self, color_by: str, relevance: np.ndarray | None, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the feature voxels to show (occupancy >= threshold) and their ``[K, 3]`` uint8 colours."""
        if color_by not in ("rgb", "class", "relevance"):
            raise FieldError(f"color_by must be 'rgb', 'class' or 'relevance', got {color_by!r}")
        if not 0.0 <= float(threshold) <= 1.0:
            raise FieldError(f"threshold must lie in [0, 1], got {threshold}")
        rows = np.flatnonzero(self.occupancy[tuple(self.indices.T.astype(np.int64))] >= threshold)
        if color_by == "rgb":
            if self.colors is None:
                raise FieldError("color_by='rgb' needs a field with colors")
            return rows, self.colors[rows]
        if color_by == "class":
            if self.labels is None:
                raise FieldError("color_by='class' needs a field with labels")
            return rows, class_colors(self.labels[rows])
        if relevance is None:
            raise FieldError("color_by='relevance' needs relevance, one score per feature voxel [M]")
        relevance = np.asarray(relevance, dtype=np.float64)
        if relevance.shape != (self.num_features,):
            raise FieldError(f"relevance must have shape [{self.num_features}], got {list(relevance.shape)}")
        return rows, relevance_colors(relevance[rows])

    def to_points(self, color_by: str = "rgb", relevance: np.ndarray | None = None,
                  threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """Centres and colours of the feature voxels with occupancy >= ``threshold``.

        Args:
            color_by: ``"rgb"`` (:attr:`colors`), ``"class"`` (:func:`class_colors` of :attr:`labels`) or
                ``"relevance"`` (:func:`relevance_colors`, scaled to the shown points' min..max).
            relevance: ``[M]`` score per feature voxel, e.g. cosine similarity to a text query.
            threshold: occupancy probability a voxel needs to be shown.

        Returns:
            ``xyz [K, 3]`` float64 voxel centres (metres, ``frame``) and ``rgb [K, 3]`` uint8.
        """
        rows, rgb = self._shown(color_by, relevance, threshold)
        return self.voxel_centers(self.indices[rows]), rgb

    def to_cubes(self, color_by: str = "rgb", relevance: np.ndarray | None = None,
                 threshold: float = 0.5) -> TriangleMesh:
        """One closed cube (8 vertices, 12 outward triangles) per shown voxel (see :meth:`to_points`)."""
        rows, rgb = self._shown(color_by, relevance, threshold)
        lower = self.origin + self.indices[rows].astype(np.float64) * self.voxel_size  # [K, 3]
        vertices = (lower[:, None, :] + _CUBE_CORNERS[None] * self.voxel_size).reshape(-1, 3)
        faces = (_CUBE_FACES[None] + 8 * np.arange(len(rows))[:, None, None]).reshape(-1, 3)
        colors = np.repeat(rgb.astype(np.float64) / 255.0, 8, axis=0)
        return TriangleMesh(vertices, faces, vertex_colors=colors)

    def to_open3d(self, mode: str = "points", color_by: str = "rgb", relevance: np.ndarray | None = None,
                  threshold: float = 0.5):
        """``open3d.geometry.PointCloud`` (``mode="points"``) or cube ``TriangleMesh`` (``mode="cubes"``)."""
        if mode == "cubes":
            return self.to_cubes(color_by, relevance, threshold).to_open3d()
        if mode != "points":
            raise FieldError(f"mode must be 'points' or 'cubes', got {mode!r}")
        from geo3d.utils.optional import require

        o3d = require("open3d")
        xyz, rgb = self.to_points(color_by, relevance, threshold)
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
        cloud.colors = o3d.utility.Vector3dVector(rgb.astype(np.float64) / 255.0)
        return cloud

    def export_ply(self, path: str | os.PathLike, mode: str = "points", color_by: str = "rgb",
                   relevance: np.ndarray | None = None, threshold: float = 0.5) -> Path:
        """Write shown voxels as a binary PLY (points with uchar RGB, or cubes) atomically; returns the path."""
        if Path(path).suffix.lower() != ".ply":
            raise FieldError(f"export_ply path must end in .ply, got {str(path)!r}")
        if mode == "cubes":
            return self.to_cubes(color_by, relevance, threshold).save(path)
        if mode != "points":
            raise FieldError(f"mode must be 'points' or 'cubes', got {mode!r}")
        xyz, rgb = self.to_points(color_by, relevance, threshold)
        vertex = np.empty(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                           ("red", "u1"), ("green", "u1"), ("blue", "u1")])
        for axis, name in enumerate("xyz"):
            vertex[name] = xyz[:, axis]
        for channel, name in enumerate(("red", "green", "blue")):
            vertex[name] = rgb[:, channel]
        header = ("ply\nformat binary_little_endian 1.0\ncomment geo3d OpenVocabField\n"
                  f"element vertex {len(xyz)}\nproperty float x\nproperty float y\nproperty float z\n"
                  "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
        return atomic_write_bytes(path, header.encode("ascii") + vertex.tobytes())

    def __repr__(self) -> str:
        return (f"OpenVocabField(shape={list(self.shape)}, voxel_size={self.voxel_size.tolist()}, "
                f"frame={self.frame!r}, features={self.num_features}x{self.feature_dim} {self.features.dtype}, "
                f"space={self.space!r})")
