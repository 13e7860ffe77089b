import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from geo3d.errors import CalibrationError
from geo3d.geometry import check_intrinsics, check_pose, invert_pose, make_pose, transform_points


def _poses(n, seed=0):
    rng = np.random.default_rng(seed)
    return make_pose(Rotation.random(n, random_state=seed).as_matrix(), rng.normal(size=(n, 3)) * 10)


def test_invert_pose_matches_general_inverse_numpy_and_torch():
    poses = _poses(20)
    np.testing.assert_allclose(invert_pose(poses), np.linalg.inv(poses), atol=1e-12)
    out = invert_pose(torch.from_numpy(poses))
    np.testing.assert_allclose(out.numpy(), np.linalg.inv(poses), atol=1e-12)


def test_make_pose_from_quaternion_and_transform_points():
    rot = Rotation.random(random_state=1)
    q_wxyz = rot.as_quat()[[3, 0, 1, 2]]
    pose = make_pose(q_wxyz, [1.0, 2.0, 3.0])
    pts = np.random.default_rng(0).normal(size=(10, 3))
    np.testing.assert_allclose(transform_points(pose, pts), rot.apply(pts) + [1, 2, 3], atol=1e-12)
    tp = transform_points(torch.from_numpy(pose), torch.from_numpy(pts))
    np.testing.assert_allclose(tp.numpy(), rot.apply(pts) + [1, 2, 3], atol=1e-12)


def test_make_pose_rejects_bad_rotation_shape():
    with pytest.raises(ValueError, match="rotation"):
        make_pose(np.ones((2, 2)), np.zeros(3))


def test_check_pose_accepts_float32_rounding():
    pose = _poses(1)[0].astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(check_pose(pose), pose)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.eye(3), "4x4"),
        (np.diag([1.0, 1.0, np.nan, 1.0]), "NaN"),
        (np.diag([1.0, 1.0, 1.2, 1.0]), "orthonormal"),
        (np.diag([1.0, 1.0, -1.0, 1.0]), "reflection"),
        (np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]], float), "last row"),
        ("not a matrix", "numeric"),
    ],
)
def test_check_pose_errors_name_the_problem(bad, message):
    with pytest.raises(CalibrationError, match=message) as info:
        check_pose(bad, "cams.json: frame 7")
    assert "cams.json: frame 7" in str(info.value)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.eye(4), "3x3"),
        (np.array([[-5.0, 0, 1], [0, 5, 1], [0, 0, 1]]), "focal"),
        (np.array([[5.0, 0, 1], [0, 5, 1], [0, 1, 1]]), "last row"),
        (np.array([[5.0, 0, np.inf], [0, 5, 1], [0, 0, 1]]), "NaN or inf"),
    ],
)
def test_check_intrinsics_errors(bad, message):
    with pytest.raises(CalibrationError, match=message):
        check_intrinsics(bad, "K")
