"""Sensor rigs of the synthetic renderer: a nuScenes-like ring of six cameras and a spinning LiDAR.

Frames follow ``docs/conventions.md``: the ego frame has x forward, y left, z up; cameras use OpenCV
axes (x right, y down, z along the optical axis); poses are 4x4 float64 ``sensor2ego``; ``K`` is in
pixels with pixel centres at integer coordinates. All sensors of a frame fire at the same instant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from geo3d.geometry.conventions import intrinsics_from_fov
from geo3d.geometry.poses import make_pose

NUSCENES_CAMERAS: tuple[tuple[str, float, float, tuple[float, float, float]], ...] = (
    # name, yaw about ego z (degrees, + = to the left), horizontal FOV (degrees), position in ego (m)
    ("CAM_FRONT", 0.0, 70.0, (1.70, 0.0, 1.51)),
    ("CAM_FRONT_RIGHT", -55.0, 70.0, (1.55, -0.49, 1.50)),
    ("CAM_FRONT_LEFT", 55.0, 70.0, (1.52, 0.49, 1.51)),
    ("CAM_BACK", 180.0, 110.0, (0.03, 0.0, 1.57)),
    ("CAM_BACK_LEFT", 110.0, 70.0, (1.04, 0.48, 1.56)),
    ("CAM_BACK_RIGHT", -110.0, 70.0, (1.05, -0.48, 1.56)),
)
"""The cameras of :func:`nuscenes_like_rig`, in nuScenes' order."""


def camera_rotation_from_yaw(yaw: float, pitch: float = 0.0) -> np.ndarray:
    """``[3, 3]`` rotation camera (OpenCV) -> ego of a camera looking at azimuth ``yaw`` (radians,
    about ego z, 0 = forward, + = left) tilted down by ``pitch`` radians (0 = horizontal axis).

    Its columns are the camera's x (right), y (down) and z (optical axis) in ego coordinates.
    """
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    forward = np.array([cy * cp, sy * cp, -sp])
    right = np.array([sy, -cy, 0.0])
    down = np.cross(forward, right)
    return np.stack([right, down, forward], axis=1)


@dataclass(frozen=True, eq=False)
class SurroundRig:
    """Cameras rigidly mounted on the ego vehicle, all with the same image size.

    Attributes:
        names: camera names, e.g. ``("CAM_FRONT", ...)``.
        K: ``[C, 3, 3]`` float64 intrinsics in pixels.
        cam2ego: ``[C, 4, 4]`` float64 camera-to-ego poses (OpenCV camera axes).
        width, height: image size in pixels.
    """

    names: tuple[str, ...]
    K: np.ndarray
    cam2ego: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        count = len(self.names)
        if np.shape(self.K) != (count, 3, 3) or np.shape(self.cam2ego) != (count, 4, 4):
            raise ValueError(f"K must be [{count}, 3, 3] and cam2ego [{count}, 4, 4], got "
                             f"{list(np.shape(self.K))} and {list(np.shape(self.cam2ego))}")

    def __len__(self) -> int:
        return len(self.names)


def nuscenes_like_rig(width: int = 400, height: int = 225) -> SurroundRig:
    """Six cameras placed like nuScenes' (positions, yaws 0, -55, +55, 180, +110, -110 degrees).

    Optical axes are horizontal; the horizontal FOV is 70 degrees (110 for ``CAM_BACK``), with
    square pixels and the principal point at the image centre ``((W - 1) / 2, (H - 1) / 2)``.
    Neighbouring cameras overlap, so together they see every azimuth.
    """
    K = np.stack([intrinsics_from_fov(width, height, math.radians(fov)) for _, _, fov, _ in NUSCENES_CAMERAS])
    cam2ego = np.stack([make_pose(camera_rotation_from_yaw(math.radians(yaw)), position)
                        for _, yaw, _, position in NUSCENES_CAMERAS])
    return SurroundRig(tuple(name for name, *_ in NUSCENES_CAMERAS), K, cam2ego, width, height)


def _default_lidar2ego() -> np.ndarray:
    return make_pose(np.eye(3), [0.94, 0.0, 1.84])


@dataclass(frozen=True, eq=False)
class LidarSpec:
    """A spinning multi-beam LiDAR (defaults: nuScenes' Velodyne HDL-32E).

    Beams are evenly spaced in elevation from ``fov_down_deg`` (ring 0) to ``fov_up_deg`` (ring
    ``beams - 1``); each fires at ``azimuth_steps`` azimuths ``2 pi k / azimuth_steps`` measured from
    the sensor's +x towards +y. The sensor frame has x forward, y left, z up (nuScenes' LIDAR_TOP
    is turned 90 degrees about z; the synthetic one is not).

    Attributes:
        beams: number of lasers (rings).
        fov_down_deg, fov_up_deg: elevation of the lowest and highest beam, degrees.
        azimuth_steps: firings per revolution.
        max_range_m: returns farther than this are dropped.
        lidar2ego: ``[4, 4]`` float64 sensor-to-ego pose.
        range_noise_std_m: standard deviation of Gaussian noise added to each range (0 = exact).
        dropout: probability that a return is lost (0 = none).
    """

    beams: int = 32
    fov_down_deg: float = -30.67
    fov_up_deg: float = 10.67
    azimuth_steps: int = 1084
    max_range_m: float = 70.0
    lidar2ego: np.ndarray = field(default_factory=_default_lidar2ego)
    range_noise_std_m: float = 0.0
    dropout: float = 0.0

    def elevations(self) -> np.ndarray:
        """``[beams]`` float64 elevation of each ring, radians."""
        return np.radians(np.linspace(self.fov_down_deg, self.fov_up_deg, self.beams))

    def azimuths(self) -> np.ndarray:
        """``[azimuth_steps]`` float64 azimuths, radians."""
        return 2.0 * math.pi * np.arange(self.azimuth_steps) / self.azimuth_steps

    def directions(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit beam directions in the sensor frame, azimuth-major (one revolution, all rings at each
        azimuth): ``(directions [azimuth_steps * beams, 3] float64, ring [azimuth_steps * beams] int64)``."""
        az, el = np.meshgrid(self.azimuths(), self.elevations(), indexing="ij")
        directions = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)
        ring = np.broadcast_to(np.arange(self.beams), az.shape)
        return directions.reshape(-1, 3), ring.reshape(-1).copy()

    def to_dict(self) -> dict:
        """JSON-serialisable description (for ``Capture.metadata``)."""
        return {"beams": self.beams, "fov_down_deg": self.fov_down_deg, "fov_up_deg": self.fov_up_deg,
                "azimuth_steps": self.azimuth_steps, "max_range_m": self.max_range_m,
                "lidar2ego": np.asarray(self.lidar2ego).tolist(),
                "range_noise_std_m": self.range_noise_std_m, "dropout": self.dropout}


def straight_ego_poses(num_frames: int, step_m: float = 2.0, start_x_m: float = 0.0) -> np.ndarray:
    """``[num_frames, 4, 4]`` float64 ``ego2world`` poses of an ego driving along +x at ground level,
    ``step_m`` metres per frame, starting at ``(start_x_m, 0, 0)`` (the lane of
    :func:`~geo3d.synthetic.scene.build_street_scene`)."""
    translations = np.zeros((num_frames, 3))
    translations[:, 0] = start_x_m + step_m * np.arange(num_frames)
    return make_pose(np.broadcast_to(np.eye(3), (num_frames, 3, 3)), translations)
