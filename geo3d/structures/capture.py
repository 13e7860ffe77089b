"""The in-memory capture: frames of a multi-camera rig with optional depth, labels and LiDAR.

Every reader in :mod:`geo3d.io` produces a :class:`Capture`, and everything downstream (datasets,
fusion, NeRF, splatting, occupancy) consumes one. Conventions (``docs/conventions.md``): poses are
4x4 float64 ``sensor2world`` matrices with OpenCV camera axes, ``K`` is 3x3 in pixels with pixel
centres at integer coordinates, lengths are metres, timestamps seconds.

Pixel data is held by :class:`ArraySource`: either an array in memory or a file decoded on demand,
so a capture of thousands of images costs only its metadata until pixels are asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geo3d.errors import CaptureError
from geo3d.geometry.poses import invert_pose, transform_points

if TYPE_CHECKING:
    from geo3d.structures.occupancy import SemanticOccupancy


@dataclass(frozen=True, eq=False)
class ArraySource:
    """An array that is either in memory or decoded from a file on each :meth:`load`.

    Attributes:
        array: the data, when it lives in memory.
        path: the file it comes from (kept for messages and for ``geo3d info``), if any.
        loader: zero-argument callable returning the array, for file-backed data.
    """

    array: np.ndarray | None = None
    path: Path | None = None
    loader: Callable[[], np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.array is None and self.loader is None:
            raise ValueError("ArraySource needs an array or a loader")

    @classmethod
    def of(cls, array: np.ndarray) -> ArraySource:
        """Wrap an in-memory array."""
        return cls(array=np.asarray(array))

    def load(self) -> np.ndarray:
        """Return the array (decoding the file for file-backed sources)."""
        if self.array is not None:
            return self.array
        return self.loader()  # type: ignore[misc]

    def __repr__(self) -> str:
        if self.array is not None:
            return f"ArraySource(array {self.array.dtype}{list(self.array.shape)})"
        return f"ArraySource(path={str(self.path)!r})"


@dataclass(eq=False)
class CameraFrame:
    """One image of one camera at one instant.

    Attributes:
        camera: sensor name, e.g. ``"CAM_FRONT"``; frames of the same camera share it.
        K: ``[3, 3]`` float64 pinhole intrinsics in pixels (pixel centres at integers).
        cam2world: ``[4, 4]`` float64 camera-to-world pose, OpenCV axes, metres.
        width, height: image size in pixels.
        image: ``[H, W, C]`` uint8 pixels (C = 3 RGB or 4 RGBA), see :meth:`load_image`.
        timestamp: seconds, or None when the source has none.
        depth: optional ``[H, W]`` float32 metric depth along the optical axis (z, not ray length);
            0 marks pixels with no measurement.
        semantic: optional ``[H, W]`` integer class label per pixel.
        instance: optional ``[H, W]`` integer instance id per pixel (0 = none).
        distortion: optional OpenCV distortion coefficients ``(k1, k2, p1, p2[, k3[, k4, k5, k6]])``;
            None for an ideal pinhole. geo3d's camera ops assume undistorted images.
    """

    camera: str
    K: np.ndarray
    cam2world: np.ndarray
    width: int
    height: int
    image: ArraySource
    timestamp: float | None = None
    depth: ArraySource | None = None
    semantic: ArraySource | None = None
    instance: ArraySource | None = None
    distortion: np.ndarray | None = None

    def load_image_uint8(self) -> np.ndarray:
        """``[H, W, C]`` uint8 pixels as stored (C = 3 or 4)."""
        pixels = self.image.load()
        where = self.image.path or f"camera {self.camera!r}"
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
            raise CaptureError(f"{where}: expected an [H, W, 3|4] uint8 image, got {pixels.dtype}{list(pixels.shape)}")
        if pixels.shape[:2] != (self.height, self.width):
            raise CaptureError(
                f"{where}: image is {pixels.shape[1]}x{pixels.shape[0]} but the calibration says "
                f"{self.width}x{self.height}"
            )
        return pixels

    def load_image(self) -> np.ndarray:
        """``[H, W, C]`` float32 in [0, 1] (C = 3 RGB, or 4 RGBA with straight alpha)."""
        return self.load_image_uint8().astype(np.float32) / 255.0

    def load_depth(self) -> np.ndarray | None:
        """``[H, W]`` float32 depth in metres (0 = invalid), or None."""
        return None if self.depth is None else self._checked(self.depth, "depth", np.floating)

    def load_semantic(self) -> np.ndarray | None:
        """``[H, W]`` integer semantic labels, or None."""
        return None if self.semantic is None else self._checked(self.semantic, "semantic", np.integer)

    def load_instance(self) -> np.ndarray | None:
        """``[H, W]`` integer instance ids, or None."""
        return None if self.instance is None else self._checked(self.instance, "instance", np.integer)

    def _checked(self, source: ArraySource, what: str, kind: type) -> np.ndarray:
        arr = source.load()
        where = source.path or f"camera {self.camera!r}"
        if arr.shape != (self.height, self.width) or not np.issubdtype(arr.dtype, kind):
            raise CaptureError(
                f"{where}: expected {what} of shape [{self.height}, {self.width}] ({kind.__name__}), "
                f"got {arr.dtype}{list(arr.shape)}"
            )
        return arr

    @property
    def world2cam(self) -> np.ndarray:
        """``[4, 4]`` world-to-camera (inverse of ``cam2world``)."""
        return invert_pose(self.cam2world)


@dataclass(eq=False)
class LidarSweep:
    """One LiDAR sweep with its pose.

    Attributes:
        sensor: sensor name, e.g. ``"LIDAR_TOP"``.
        points: ``[N, C]`` float32 in the sensor frame; the first three columns are x, y, z metres.
        columns: the name of each of the C columns, e.g. ``("x", "y", "z", "intensity", "ring")``.
        sensor2world: ``[4, 4]`` float64 sensor-to-world pose.
        timestamp: seconds, or None.
        semantic: optional ``[N]`` integer class label per point.
        instance: optional ``[N]`` integer instance id per point.
    """

    sensor: str
    points: ArraySource
    columns: tuple[str, ...]
    sensor2world: np.ndarray
    timestamp: float | None = None
    semantic: ArraySource | None = None
    instance: ArraySource | None = None

    def load_points(self) -> np.ndarray:
        """``[N, C]`` float32 points in the sensor frame."""
        pts = self.points.load()
        where = self.points.path or f"LiDAR {self.sensor!r}"
        if pts.ndim != 2 or pts.shape[1] != len(self.columns) or pts.shape[1] < 3:
            raise CaptureError(f"{where}: expected [N, {len(self.columns)}] points, got shape {list(pts.shape)}")
        return pts

    def points_world(self) -> np.ndarray:
        """``[N, 3]`` float64 point positions in the world frame."""
        return transform_points(self.sensor2world, self.load_points()[:, :3].astype(np.float64))

    def load_labels(self, which: str = "semantic") -> np.ndarray | None:
        """``[N]`` integer labels (``"semantic"`` or ``"instance"``), or None."""
        source = self.semantic if which == "semantic" else self.instance
        return None if source is None else source.load()


@dataclass(eq=False)
class SparsePoints:
    """A sparse world-frame point set that comes with a capture (e.g. COLMAP's ``points3D``).

    Attributes:
        xyz: ``[N, 3]`` float64 world positions, metres.
        rgb: optional ``[N, 3]`` uint8 colours.
        error: optional ``[N]`` float64 reprojection error in pixels.
    """

    xyz: np.ndarray
    rgb: np.ndarray | None = None
    error: np.ndarray | None = None


@dataclass(eq=False)
class Frame:
    """Everything recorded at one instant by a rig.

    Attributes:
        index: position of the frame in the capture (0-based).
        cameras: camera name -> :class:`CameraFrame`.
        lidar: sensor name -> :class:`LidarSweep`.
        timestamp: seconds, or None.
        ego2world: optional ``[4, 4]`` float64 pose of the vehicle/rig body.
        occupancy: optional semantic occupancy ground truth around the rig at this instant
            (:class:`~geo3d.structures.occupancy.SemanticOccupancy`; an ``"ego"`` grid is placed
            in the world by ``ego2world``).
    """

    index: int
    cameras: dict[str, CameraFrame] = field(default_factory=dict)
    lidar: dict[str, LidarSweep] = field(default_factory=dict)
    timestamp: float | None = None
    ego2world: np.ndarray | None = None
    occupancy: SemanticOccupancy | None = None


@dataclass(eq=False)
class Capture:
    """A multi-camera capture: a list of :class:`Frame` plus where it came from.

    Attributes:
        frames: the frames, in time order where the source has one.
        source_format: name of the reader that produced it (``"blender"``, ``"nuscenes"``, ...).
        source: the path it was read from, if any.
        world_frame: what the world frame is (e.g. ``"nuScenes global"``), for people.
        points3d: optional sparse world points that come with the capture.
        metadata: JSON-serialisable extras of the source (e.g. ``{"split": "train"}``).
    """

    frames: list[Frame]
    source_format: str = "memory"
    source: str | None = None
    world_frame: str = "world"
    points3d: SparsePoints | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def camera_names(self) -> list[str]:
        """Names of the cameras, in order of first appearance."""
        names: dict[str, None] = {}
        for frame in self.frames:
            for name in frame.cameras:
                names.setdefault(name, None)
        return list(names)

    @property
    def lidar_names(self) -> list[str]:
        """Names of the LiDAR sensors, in order of first appearance."""
        names: dict[str, None] = {}
        for frame in self.frames:
            for name in frame.lidar:
                names.setdefault(name, None)
        return list(names)

    def camera_frames(self, camera: str | None = None) -> Iterator[CameraFrame]:
        """Every :class:`CameraFrame` (of one camera if ``camera`` is given), frame by frame."""
        for frame in self.frames:
            for name, cam in frame.cameras.items():
                if camera is None or name == camera:
                    yield cam

    def lidar_sweeps(self) -> Iterator[LidarSweep]:
        """Every :class:`LidarSweep`, frame by frame."""
        for frame in self.frames:
            yield from frame.lidar.values()

    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        return (
            f"Capture({self.source_format}, {len(self.frames)} frames, cameras={self.camera_names}, "
            f"lidar={self.lidar_names}, source={self.source!r})"
        )
