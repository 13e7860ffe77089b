"""Semantic occupancy ground truth: a voxel grid of class ids around the ego vehicle (as in Occ3D).

A :class:`SemanticOccupancy` is attached to a :class:`~geo3d.structures.Frame` as
``frame.occupancy``. The grid is axis-aligned in ``frame`` (``"ego"``: the frame's rig body frame,
the one ``Frame.ego2world`` maps to the world; or ``"world"``); voxel ``(i, j, k)`` covers the box
``origin + [i, j, k] * voxel_size`` to ``origin + [i + 1, j + 1, k + 1] * voxel_size`` (metres) and
its centre is at ``origin + ([i, j, k] + 0.5) * voxel_size``. Index coordinates follow the pixel
convention of ``docs/conventions.md``: integer index coordinates are voxel *centres*, so the grid
spans ``[-0.5, X - 0.5] x [-0.5, Y - 0.5] x [-0.5, Z - 0.5]`` in index coordinates.

Arrays are held in :class:`~geo3d.structures.capture.ArraySource` (in memory or decoded from a file
on demand); ``shape`` is stored on the object so that asking for it never decodes the grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geo3d.errors import CaptureError
from geo3d.structures.capture import ArraySource

OCCUPANCY_FRAMES = ("ego", "world")
MASK_NAMES = ("camera", "lidar")


@dataclass(eq=False)
class SemanticOccupancy:
    """A semantic voxel grid with optional visibility masks and instance ids.

    Attributes:
        semantics: ``[X, Y, Z]`` integer class id per voxel (uint8 in Occ3D and geo3d's synthetic
            data); ``free_label`` (0 by default) marks free space. Plain arrays given for any of
            the array fields are wrapped in :meth:`ArraySource.of`.
        origin: ``[3]`` float64 minimum corner of the grid (corner of voxel ``(0, 0, 0)``, not its
            centre) in ``frame``, metres.
        voxel_size: ``[3]`` float64 voxel edge lengths along x, y, z in metres (a scalar is
            broadcast).
        frame: the frame the grid is axis-aligned in: ``"ego"`` (the frame's ``ego2world`` maps it
            to the world) or ``"world"``.
        mask_camera: optional ``[X, Y, Z]`` bool (or uint8 0/1), True where a camera observes the
            voxel (Occ3D's ``mask_camera``).
        mask_lidar: optional ``[X, Y, Z]`` bool (or uint8 0/1), True where LiDAR observes the voxel.
        instances: optional ``[X, Y, Z]`` integer instance id per voxel (int32, 0 = none).
        shape: ``(X, Y, Z)``. Taken from ``semantics`` when that is in memory; pass it for a
            file-backed grid, or the grid is decoded once here to find it. Every ``load_*`` checks
            its array against it.
        free_label: the class id of free space (0 in geo3d; real Occ3D-nuScenes files use 17).

    Raises:
        ValueError: on construction, for a non-finite or wrongly shaped ``origin`` / ``voxel_size``,
            a non-positive voxel size, an unknown ``frame``, or in-memory arrays whose shape or
            dtype does not fit.
    """

    semantics: ArraySource
    origin: np.ndarray
    voxel_size: np.ndarray
    frame: str = "ego"
    mask_camera: ArraySource | None = None
    mask_lidar: ArraySource | None = None
    instances: ArraySource | None = None
    shape: tuple[int, int, int] | None = None
    free_label: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.semantics, ArraySource):
            self.semantics = ArraySource.of(self.semantics)
        for name in ("mask_camera", "mask_lidar", "instances"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, ArraySource):
                setattr(self, name, ArraySource.of(value))
        origin = np.asarray(self.origin, dtype=np.float64)
        if origin.shape != (3,) or not np.all(np.isfinite(origin)):
            raise ValueError(f"occupancy origin must be 3 finite numbers (metres), got {self.origin!r}")
        try:
            size = np.broadcast_to(np.asarray(self.voxel_size, dtype=np.float64), (3,)).copy()
        except ValueError:
            raise ValueError(f"occupancy voxel_size must be a number or 3 numbers, got {self.voxel_size!r}") from None
        if not np.all(np.isfinite(size)) or np.any(size <= 0):
            raise ValueError(f"occupancy voxel_size must be positive and finite (metres), got {size}")
        self.origin, self.voxel_size = origin, size
        if self.frame not in OCCUPANCY_FRAMES:
            raise ValueError(f"occupancy frame must be one of {OCCUPANCY_FRAMES}, got {self.frame!r}")
        if self.shape is None:
            self.shape = tuple(int(n) for n in self.semantics.load().shape)  # type: ignore[assignment]
        shape = tuple(int(n) for n in self.shape)  # type: ignore[union-attr]
        if len(shape) != 3 or min(shape) <= 0:
            raise ValueError(f"occupancy shape must be 3 positive sizes [X, Y, Z], got {self.shape!r}")
        self.shape = shape  # type: ignore[assignment]
        self.free_label = int(self.free_label)
        # arrays already in memory are checked now (file-backed ones on load)
        for name, kind in (("semantics", "labels"), ("mask_camera", "mask"), ("mask_lidar", "mask"),
                           ("instances", "labels")):  # fmt: skip
            source = getattr(self, name)
            if source is not None and source.array is not None:
                try:
                    self._check(source.array, name, kind, None)
                except CaptureError as exc:
                    raise ValueError(str(exc)) from None

    # -- arrays -------------------------------------------------------------------------------------

    def _check(self, arr: np.ndarray, name: str, kind: str, where: object) -> np.ndarray:
        where = where or f"occupancy {name}"
        if arr.shape != self.shape:
            raise CaptureError(f"{where}: expected {name} of shape {list(self.shape)}, got {list(arr.shape)}")
        if kind == "mask":
            ok = arr.dtype in (np.bool_, np.uint8)
        else:
            ok = np.issubdtype(arr.dtype, np.integer)
        if not ok:
            wanted = "bool or uint8" if kind == "mask" else "an integer dtype"
            raise CaptureError(f"{where}: {name} must be {wanted}, got {arr.dtype}")
        return arr

    def _load(self, source: ArraySource, name: str, kind: str) -> np.ndarray:
        return self._check(source.load(), name, kind, source.path)

    def load_semantics(self) -> np.ndarray:
        """``[X, Y, Z]`` integer class ids, dtype as stored (uint8 for Occ3D-style grids)."""
        return self._load(self.semantics, "semantics", "labels")

    def load_mask(self, which: str = "camera") -> np.ndarray | None:
        """``[X, Y, Z]`` bool visibility mask (``"camera"`` or ``"lidar"``), or None when absent.

        A uint8 mask (as in Occ3D's ``labels.npz``) is returned as ``mask != 0``.
        """
        if which not in MASK_NAMES:
            raise ValueError(f"mask must be one of {MASK_NAMES}, got {which!r}")
        source = self.mask_camera if which == "camera" else self.mask_lidar
        if source is None:
            return None
        mask = self._load(source, f"mask_{which}", "mask")
        return mask if mask.dtype == np.bool_ else mask != 0

    def load_instances(self) -> np.ndarray | None:
        """``[X, Y, Z]`` integer instance ids (0 = none), or None when absent."""
        return None if self.instances is None else self._load(self.instances, "instances", "labels")

    def occupied(self) -> np.ndarray:
        """``[X, Y, Z]`` bool, True where the class id is not ``free_label``."""
        return self.load_semantics() != self.free_label

    # -- geometry -----------------------------------------------------------------------------------

    def grid_to_frame(self) -> np.ndarray:
        """``[4, 4]`` float64 mapping index coordinates ``(i, j, k, 1)`` to ``frame`` coordinates.

        Integer indices map to voxel *centres*: ``p = origin + (ijk + 0.5) * voxel_size``.
        """
        out = np.eye(4)
        out[:3, :3] = np.diag(self.voxel_size)
        out[:3, 3] = self.origin + 0.5 * self.voxel_size
        return out

    def grid_to_world(self, ego2world: np.ndarray | None = None) -> np.ndarray:
        """``[4, 4]`` float64 mapping index coordinates ``(i, j, k, 1)`` to world coordinates.

        Integer indices map to voxel centres (see :meth:`grid_to_frame`). For an ``"ego"`` grid
        pass the frame's ``ego2world`` (``[4, 4]``); a ``"world"`` grid ignores it.
        """
        if self.frame == "world":
            return self.grid_to_frame()
        if ego2world is None:
            raise ValueError("grid_to_world needs ego2world for an occupancy grid in the ego frame")
        ego2world = np.asarray(ego2world, dtype=np.float64)
        if ego2world.shape != (4, 4):
            raise ValueError(f"ego2world must be [4, 4], got {list(ego2world.shape)}")
        return ego2world @ self.grid_to_frame()

    def voxel_centers(self) -> np.ndarray:
        """``[X, Y, Z, 3]`` float64 voxel centre positions in ``frame``, metres."""
        shape: tuple[int, int, int] = self.shape  # type: ignore[assignment]
        axes = [self.origin[d] + (np.arange(shape[d]) + 0.5) * self.voxel_size[d] for d in range(3)]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)

    def __repr__(self) -> str:
        extras = [n for n in ("mask_camera", "mask_lidar", "instances") if getattr(self, n) is not None]
        return (
            f"SemanticOccupancy(shape={list(self.shape or ())}, voxel_size={self.voxel_size.tolist()}, "
            f"origin={self.origin.tolist()}, frame={self.frame!r}, extras={extras})"
        )
