"""The nuScenes-like rig and the LiDAR spec against the nominal numbers written out here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geo3d.synthetic import (
    LidarSpec,
    SurroundRig,
    camera_rotation_from_yaw,
    nuscenes_like_rig,
    straight_ego_poses,
)

NOMINAL_YAW_DEG = {"CAM_FRONT": 0, "CAM_FRONT_RIGHT": -55, "CAM_FRONT_LEFT": 55, "CAM_BACK": 180,
                   "CAM_BACK_LEFT": 110, "CAM_BACK_RIGHT": -110}


def test_rig_axes_follow_opencv_and_the_nominal_yaws():
    rig = nuscenes_like_rig()
    assert rig.names == tuple(NOMINAL_YAW_DEG) and len(rig) == 6
    assert rig.K.shape == (6, 3, 3) and rig.cam2ego.shape == (6, 4, 4) and rig.K.dtype == np.float64
    for name, cam2ego in zip(rig.names, rig.cam2ego):
        rotation = cam2ego[:3, :3]
        np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
        assert np.linalg.det(rotation) == pytest.approx(1.0)
        axis = rotation @ [0.0, 0.0, 1.0]  # optical axis in ego
        yaw = math.degrees(math.atan2(axis[1], axis[0]))
        assert (yaw - NOMINAL_YAW_DEG[name] + 180) % 360 - 180 == pytest.approx(0.0, abs=1e-9)
        assert axis[2] == pytest.approx(0.0, abs=1e-12)  # horizontal
        np.testing.assert_allclose(rotation @ [0.0, 1.0, 0.0], [0, 0, -1], atol=1e-12)  # image down = down
        right = rotation @ [1.0, 0.0, 0.0]  # image right = the optical axis turned 90 deg clockwise
        np.testing.assert_allclose(right, [axis[1], -axis[0], 0.0], atol=1e-12)
        assert 1.4 < cam2ego[2, 3] < 1.6


def test_rig_intrinsics_centre_and_fov():
    rig = nuscenes_like_rig(400, 225)
    for name, K in zip(rig.names, rig.K):
        assert K[0, 2] == 199.5 and K[1, 2] == 112.0 and K[0, 0] == K[1, 1]
        fov = 2 * math.degrees(math.atan(200.0 / K[0, 0]))  # image spans [-0.5, W - 0.5]
        assert fov == pytest.approx(110.0 if name == "CAM_BACK" else 70.0)


def test_six_cameras_see_every_azimuth():
    """Each horizontal ego direction projects inside at least one image (and some into two)."""
    rig = nuscenes_like_rig()
    azimuths = np.radians(np.arange(0.0, 360.0, 0.25))
    directions_ego = np.stack([np.cos(azimuths), np.sin(azimuths), np.zeros_like(azimuths)], axis=1)
    seen_by = np.zeros(len(azimuths), dtype=int)
    for K, cam2ego in zip(rig.K, rig.cam2ego):
        d_cam = directions_ego @ cam2ego[:3, :3]  # R^T d for each row
        ahead = d_cam[:, 2] > 1e-9
        u = K[0, 0] * d_cam[:, 0] / np.where(ahead, d_cam[:, 2], 1.0) + K[0, 2]
        seen_by += ahead & (u >= -0.5) & (u <= rig.width - 0.5)
    assert (seen_by >= 1).all(), np.degrees(azimuths[seen_by == 0])
    assert (seen_by >= 2).mean() > 0.1  # neighbours overlap


def test_rig_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="cam2ego"):
        SurroundRig(("A", "B"), np.zeros((2, 3, 3)), np.zeros((1, 4, 4)), 10, 10)


def test_camera_rotation_with_pitch_looks_down():
    rotation = camera_rotation_from_yaw(math.radians(90), pitch=math.radians(30))
    np.testing.assert_allclose(rotation[:, 2], [0.0, math.cos(math.radians(30)), -0.5], atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)


def test_lidar_spec_beams():
    spec = LidarSpec()
    elevations = np.degrees(spec.elevations())
    assert len(elevations) == 32
    assert elevations[0] == pytest.approx(-30.67) and elevations[-1] == pytest.approx(10.67)
    np.testing.assert_allclose(np.diff(elevations), 41.34 / 31)
    directions, ring = spec.directions()
    assert directions.shape == (32 * 1084, 3) and ring.shape == (32 * 1084,)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0)
    np.testing.assert_allclose(np.degrees(np.arcsin(directions[:, 2])), elevations[ring], atol=1e-9)
    assert spec.lidar2ego[2, 3] == pytest.approx(1.84)
    assert spec.to_dict()["beams"] == 32


def test_straight_ego_poses():
    poses = straight_ego_poses(4, step_m=2.5, start_x_m=-1.0)
    assert poses.shape == (4, 4, 4)
    np.testing.assert_allclose(poses[:, 0, 3], [-1.0, 1.5, 4.0, 6.5])
    np.testing.assert_allclose(poses[:, :3, :3], np.broadcast_to(np.eye(3), (4, 3, 3)))
