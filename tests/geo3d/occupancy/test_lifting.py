"""2D-to-3D lifting: intrinsics scaling, a brute-force projection + bilinear reference, visibility, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geo3d.cameras.functional import project_points
from geo3d.occupancy.lifting import lift_image_features, scale_intrinsics, voxel_centers
from geo3d.occupancy.targets import OccupancyError
from geo3d.synthetic.occupancy import OccupancyGridSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def look_at_cam2ego(eye, target) -> torch.Tensor:
    """OpenCV camera at ``eye`` looking at ``target`` (ego z up): x right, y down, z forward."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, eye
    return torch.from_numpy(pose)


def bilinear_clamped(feature_map: np.ndarray, u: float, v: float) -> np.ndarray:
    """Hand-written bilinear interpolation of ``[F, h, w]`` at (u, v), coordinates clamped to the centres."""
    _, height, width = feature_map.shape
    u, v = min(max(u, 0.0), width - 1.0), min(max(v, 0.0), height - 1.0)
    u0, v0 = int(math.floor(u)), int(math.floor(v))
    u1, v1 = min(u0 + 1, width - 1), min(v0 + 1, height - 1)
    a, b = u - u0, v - v0
    return ((1 - a) * (1 - b) * feature_map[:, v0, u0] + a * (1 - b) * feature_map[:, v0, u1]
            + (1 - a) * b * feature_map[:, v1, u0] + a * b * feature_map[:, v1, u1])


def lift_reference(features, K_feat, cam2ego, points, near):
    """Loop over batch, points and cameras; project with geo3d.cameras; bilinear by hand."""
    features, K_feat, cam2ego, points = (t.detach().double() for t in (features, K_feat, cam2ego, points))
    batch, cams, channels, height, width = features.shape
    volume = np.zeros((batch, channels, len(points)))
    count = np.zeros((batch, len(points)), dtype=np.int64)
    for b in range(batch):
        for c in range(cams):
            ego2cam = torch.linalg.inv(cam2ego[b, c])
            points_cam = points @ ego2cam[:3, :3].T + ego2cam[:3, 3]
            uv, depth = project_points(points_cam, K_feat[b, c])
            for p in range(len(points)):
                u, v = float(uv[p, 0]), float(uv[p, 1])
                if depth[p] > near and -0.5 <= u <= width - 0.5 and -0.5 <= v <= height - 0.5:
                    volume[b, :, p] += bilinear_clamped(features[b, c].numpy(), u, v)
                    count[b, p] += 1
    return volume / np.maximum(count, 1)[:, None], count


def random_rig(batch: int, cams: int, generator: torch.Generator):
    poses = []
    for b in range(batch):
        for c in range(cams):
            yaw = 2 * math.pi * c / cams + 0.3 * b
            eye = [0.2 * b, 0.1 * c, 1.0]
            poses.append(look_at_cam2ego(eye, [eye[0] + math.cos(yaw), eye[1] + math.sin(yaw), 0.8]))
    cam2ego = torch.stack(poses).reshape(batch, cams, 4, 4)
    K = torch.tensor([[1.6, 0.3, 3.1], [0.0, 1.4, 2.2], [0.0, 0.0, 1.0]], dtype=torch.float64)
    K = K + 0.2 * torch.rand(batch, cams, 3, 3, generator=generator, dtype=torch.float64) * torch.tensor(
        [[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    return K, cam2ego


def test_scale_intrinsics_pixel_centres_and_round_trip():
    K = torch.tensor([[500.0, 2.0, 319.5], [0.0, 480.0, 239.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    K_small = scale_intrinsics(K, (480, 640), (60, 80))
    points_cam = torch.tensor([[0.3, -0.2, 2.0], [-1.0, 0.5, 5.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    uv = project_points(points_cam, K).uv
    uv_small = project_points(points_cam, K_small).uv
    # Same extent: image pixel u is feature pixel (u + 0.5) * w / W - 0.5.
    expected = torch.stack([(uv[:, 0] + 0.5) * 80 / 640 - 0.5, (uv[:, 1] + 0.5) * 60 / 480 - 0.5], 1)
    torch.testing.assert_close(uv_small, expected)
    # The image centre ((W - 1) / 2, (H - 1) / 2) stays the centre; the edges -0.5 stay edges.
    assert K_small[0, 2].item() == pytest.approx((80 - 1) / 2)
    assert K_small[1, 2].item() == pytest.approx((60 - 1) / 2)
    torch.testing.assert_close(scale_intrinsics(K_small, (60, 80), (480, 640)), K)
    batched = scale_intrinsics(K.expand(2, 3, 3, 3), (480, 640), (60, 80))
    torch.testing.assert_close(batched, K_small.expand(2, 3, 3, 3))


def test_scale_intrinsics_errors():
    K = torch.eye(3)
    with pytest.raises(OccupancyError, match="image_size"):
        scale_intrinsics(K, (0, 640), (60, 80))
    with pytest.raises(OccupancyError, match="feature_size"):
        scale_intrinsics(K, (480, 640), (60,))
    with pytest.raises(OccupancyError, match="K must be"):
        scale_intrinsics(torch.eye(4), (480, 640), (60, 80))
    with pytest.raises(OccupancyError, match="NaN"):
        scale_intrinsics(torch.full((3, 3), float("nan")), (480, 640), (60, 80))


def test_voxel_centers_match_spec():
    spec = OccupancyGridSpec((-2.0, -1.0, 0.0), (2.0, 1.0, 1.0), 0.5)
    centres = voxel_centers(spec, dtype=torch.float64)
    assert centres.shape == (8, 4, 2, 3)
    np.testing.assert_allclose(centres.numpy(), spec.voxel_centers())
    np.testing.assert_allclose(centres[1, 2, 0].numpy(), [-2.0 + 0.75, -1.0 + 1.25, 0.25])
    with pytest.raises(OccupancyError, match="spec"):
        voxel_centers((8, 4, 2))


@pytest.mark.parametrize("chunk_size", [7, 1 << 16])
def test_lifting_matches_brute_force(chunk_size):
    generator = torch.Generator().manual_seed(0)
    batch, cams, channels, height, width = 2, 3, 4, 5, 7
    features = torch.randn(batch, cams, channels, height, width, generator=generator, dtype=torch.float64)
    K, cam2ego = random_rig(batch, cams, generator)
    points = torch.rand(60, 3, generator=generator, dtype=torch.float64) * torch.tensor([8.0, 8.0, 2.0]) \
        - torch.tensor([4.0, 4.0, 0.0])
    lifted = lift_image_features(features, K, cam2ego, points, near=0.1, chunk_size=chunk_size)
    volume, count = lift_reference(features, K, cam2ego, points, 0.1)
    assert lifted.volume.shape == (batch, channels, 60) and lifted.count.dtype == torch.int64
    np.testing.assert_array_equal(lifted.count.numpy(), count)
    assert (count == 0).any() and (count == 1).any() and (count >= 2).any()  # the case exercises all paths
    np.testing.assert_allclose(lifted.volume.numpy(), volume, atol=1e-10)


def test_points_behind_or_outside_are_excluded_and_centres_exact():
    features = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(1, 1, 2, 4, 6)
    K = torch.tensor([[[[2.0, 0.0, 2.5], [0.0, 2.0, 1.5], [0.0, 0.0, 1.0]]]])
    cam2ego = torch.eye(4).reshape(1, 1, 4, 4)
    points = torch.tensor([
        [(4 - 2.5) / 2 * 3.0, (1 - 1.5) / 2 * 3.0, 3.0],   # the centre of pixel (u=4, v=1)
        [0.0, 0.0, -2.0],                                    # behind the camera
        [0.0, 0.0, 0.05],                                    # in front, but nearer than near
        [(6.2 - 2.5) / 2, 0.0, 1.0],                         # u = 6.2 > w - 0.5
        [(5.4 - 2.5) / 2, (-0.4 - 1.5) / 2, 1.0],            # in the border half-pixel: clamped to (5, 0)
    ])
    lifted = lift_image_features(features, K, cam2ego, points, near=0.1)
    np.testing.assert_array_equal(lifted.count[0].numpy(), [1, 0, 0, 0, 1])
    torch.testing.assert_close(lifted.volume[0, :, 0], features[0, 0, :, 1, 4])
    torch.testing.assert_close(lifted.volume[0, :, 4], features[0, 0, :, 0, 5])
    assert bool((lifted.volume[0, :, 1:4] == 0).all())


def test_average_over_cameras_that_see_a_point():
    generator = torch.Generator().manual_seed(1)
    maps = torch.randn(1, 3, 3, 5, 5, generator=generator)
    K = torch.tensor([[2.0, 0.0, 2.0], [0.0, 2.0, 2.0], [0.0, 0.0, 1.0]]).expand(1, 3, 3, 3)
    front, back = torch.eye(4), torch.diag(torch.tensor([-1.0, 1.0, -1.0, 1.0]))  # back looks along -z
    cam2ego = torch.stack([front, front, back])[None]
    points = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, -2.0]])
    lifted = lift_image_features(maps, K, cam2ego, points)
    np.testing.assert_array_equal(lifted.count[0].numpy(), [2, 1])
    torch.testing.assert_close(lifted.volume[0, :, 0], 0.5 * (maps[0, 0, :, 2, 2] + maps[0, 1, :, 2, 2]))
    torch.testing.assert_close(lifted.volume[0, :, 1], maps[0, 2, :, 2, 2])


def test_gradcheck_wrt_features():
    generator = torch.Generator().manual_seed(2)
    K, cam2ego = random_rig(1, 2, generator)
    features = torch.randn(1, 2, 2, 5, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    points = torch.rand(12, 3, generator=generator, dtype=torch.float64) * 6.0 - torch.tensor([3.0, 3.0, 2.0])
    assert bool((lift_image_features(features, K, cam2ego, points).count > 0).any())
    assert torch.autograd.gradcheck(lambda f: lift_image_features(f, K, cam2ego, points).volume, (features,))


def test_lifting_empty_points_and_errors():
    features = torch.zeros(1, 2, 3, 4, 5)
    K = torch.eye(3).expand(1, 2, 3, 3)
    cam2ego = torch.eye(4).expand(1, 2, 4, 4)
    empty = lift_image_features(features, K, cam2ego, torch.zeros(0, 3))
    assert empty.volume.shape == (1, 3, 0) and empty.count.shape == (1, 0)
    points = torch.zeros(4, 3)
    with pytest.raises(OccupancyError, match="K_feat"):
        lift_image_features(features, K[:, :1], cam2ego, points)
    with pytest.raises(OccupancyError, match="cam2ego"):
        lift_image_features(features, K, torch.eye(4).expand(2, 2, 4, 4), points)
    with pytest.raises(OccupancyError, match="points_ego"):
        lift_image_features(features, K, cam2ego, torch.zeros(4, 2))
    with pytest.raises(OccupancyError, match="features"):
        lift_image_features(features[:, :, :, :0], K, cam2ego, points)
    with pytest.raises(OccupancyError, match="NaN"):
        lift_image_features(features, K, cam2ego, torch.full((4, 3), float("inf")))
    with pytest.raises(OccupancyError, match="near"):
        lift_image_features(features, K, cam2ego, points, near=0.0)
    with pytest.raises(OccupancyError, match="chunk_size"):
        lift_image_features(features, K, cam2ego, points, chunk_size=0)
