import math

import numpy as np
from scipy.spatial.transform import Rotation

from geo3d.geometry import (
    OPENGL_TO_OPENCV,
    cam2world_to_colmap,
    colmap_principal_point_to_opencv,
    colmap_to_cam2world,
    intrinsics_from_fov,
    invert_pose,
    make_pose,
    nuscenes_sensor2world,
    opencv_principal_point_to_colmap,
    opencv_to_opengl_cam2world,
    opengl_to_opencv_cam2world,
)


def test_opengl_camera_looking_down_minus_z_sees_points_at_positive_opencv_z():
    # An OpenGL camera at the origin with identity pose looks down -z; y is up.
    c2w_cv = opengl_to_opencv_cam2world(np.eye(4))
    point_world = np.array([0.3, 0.2, -5.0, 1.0])  # in front, above and right of the camera
    p_cam = invert_pose(c2w_cv) @ point_world
    assert p_cam[2] == 5.0  # in front: +z in OpenCV
    assert p_cam[0] > 0 and p_cam[1] < 0  # right is +x, up is -y (y down)


def test_opengl_opencv_round_trip_and_self_inverse():
    pose = make_pose(Rotation.random(random_state=0).as_matrix(), [1, 2, 3])
    np.testing.assert_allclose(opencv_to_opengl_cam2world(opengl_to_opencv_cam2world(pose)), pose, atol=1e-15)
    np.testing.assert_array_equal(OPENGL_TO_OPENCV @ OPENGL_TO_OPENCV, np.eye(4))
    # the camera centre does not move, only the axes flip
    np.testing.assert_array_equal(opengl_to_opencv_cam2world(pose)[:3, 3], pose[:3, 3])


def test_colmap_world2cam_convention_and_round_trip():
    rot = Rotation.random(random_state=2)
    qvec = rot.as_quat()[[3, 0, 1, 2]]
    tvec = np.array([0.5, -1.0, 2.0])
    c2w = colmap_to_cam2world(qvec, tvec)
    point = np.array([1.0, 2.0, 3.0])
    # COLMAP: p_cam = R p_world + t
    p_cam = rot.apply(point) + tvec
    np.testing.assert_allclose((invert_pose(c2w) @ np.append(point, 1))[:3], p_cam, atol=1e-12)
    # the camera centre is -R^T t
    np.testing.assert_allclose(c2w[:3, 3], -rot.inv().apply(tvec), atol=1e-12)
    q2, t2 = cam2world_to_colmap(c2w)
    np.testing.assert_allclose(q2 * np.sign(q2[0]), qvec * np.sign(qvec[0]), atol=1e-12)
    np.testing.assert_allclose(t2, tvec, atol=1e-12)


def test_principal_point_shift_is_half_a_pixel():
    assert colmap_principal_point_to_opencv(320.0, 240.0) == (319.5, 239.5)
    assert opencv_principal_point_to_colmap(319.5, 239.5) == (320.0, 240.0)


def test_intrinsics_from_fov_puts_the_border_rays_at_the_fov():
    width, height, fov = 200, 100, math.radians(60)
    K = intrinsics_from_fov(width, height, fov)
    # The left edge of the image (u = -0.5) and the right edge (u = W - 0.5) subtend the full FOV.
    left = math.atan((-0.5 - K[0, 2]) / K[0, 0])
    right = math.atan((width - 0.5 - K[0, 2]) / K[0, 0])
    assert math.isclose(right - left, fov, rel_tol=1e-12)
    assert K[1, 1] == K[0, 0] and K[1, 2] == (height - 1) / 2


def test_nuscenes_sensor2world_composes_ego_and_sensor():
    q_s, t_s = Rotation.random(random_state=5), np.array([1.0, 0.0, 1.5])
    q_e, t_e = Rotation.random(random_state=6), np.array([600.0, 1600.0, 0.0])
    pose = nuscenes_sensor2world(q_s.as_quat()[[3, 0, 1, 2]], t_s, q_e.as_quat()[[3, 0, 1, 2]], t_e)
    p = np.array([2.0, -1.0, 10.0])
    expected = q_e.apply(q_s.apply(p) + t_s) + t_e
    np.testing.assert_allclose((pose @ np.append(p, 1))[:3], expected, atol=1e-9)
