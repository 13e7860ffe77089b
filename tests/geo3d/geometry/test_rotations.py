import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from geo3d.geometry import matrix_to_quaternion, quaternion_to_matrix


def _random_quats(n, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_quaternion_to_matrix_matches_scipy_wxyz_order():
    q = _random_quats(100)
    expected = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()  # scipy is (x, y, z, w)
    np.testing.assert_allclose(quaternion_to_matrix(q), expected, atol=1e-12)


def test_quaternion_to_matrix_torch_matches_numpy_and_kornia():
    import kornia

    q = _random_quats(50, seed=1)
    out = quaternion_to_matrix(torch.from_numpy(q))
    np.testing.assert_allclose(out.numpy(), quaternion_to_matrix(q), atol=1e-12)
    ref = kornia.geometry.conversions.quaternion_to_rotation_matrix(torch.from_numpy(q))
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-12)


def test_quaternion_scale_invariant_and_batched():
    q = _random_quats(6).reshape(2, 3, 4)
    np.testing.assert_allclose(quaternion_to_matrix(3.5 * q), quaternion_to_matrix(q), atol=1e-12)
    assert quaternion_to_matrix(q).shape == (2, 3, 3, 3)


@pytest.mark.parametrize("angle", [0.0, np.pi / 2, np.pi - 1e-9, np.pi])
def test_matrix_to_quaternion_round_trip_including_near_pi(angle):
    axes = np.eye(3).tolist() + [[1 / np.sqrt(3)] * 3]
    mats = Rotation.from_rotvec(np.array(axes) * angle).as_matrix()
    q = matrix_to_quaternion(mats)
    assert (q[:, 0] >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(quaternion_to_matrix(q), mats, atol=1e-9)


def test_matrix_to_quaternion_random_matches_scipy_up_to_sign():
    mats = Rotation.random(200, random_state=3).as_matrix()
    q = matrix_to_quaternion(mats)
    ref = Rotation.from_matrix(mats).as_quat()[:, [3, 0, 1, 2]]
    ref *= np.sign(ref[:, :1])
    np.testing.assert_allclose(q, ref, atol=1e-9)


def test_quaternion_to_matrix_gradcheck():
    q = torch.tensor(_random_quats(3, seed=4), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(quaternion_to_matrix, (q,))
