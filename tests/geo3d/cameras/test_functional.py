"""Tests of geo3d.cameras.functional against independent NumPy float64 references (hand-written
OpenCV formulas, np.linalg.inv, brute-force loops), kornia as a second reference, and gradcheck."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from geo3d.cameras import functional as F

# ------------------------------------------------------------------------------------------ helpers


def make_K(fx=520.0, fy=470.0, skew=3.5, cx=319.5, cy=241.25) -> np.ndarray:
    """Non-square pixels and a skew by default."""
    return np.array([[fx, skew, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def random_cam2world(rng: np.random.Generator, count: int) -> np.ndarray:
    poses = np.tile(np.eye(4), (count, 1, 1))
    poses[:, :3, :3] = Rotation.random(count, random_state=rng).as_matrix()
    poses[:, :3, 3] = rng.uniform(-3, 3, size=(count, 3))
    return poses


def points_in_front(rng, cam2world: np.ndarray, count: int, z_range=(1.0, 8.0)) -> np.ndarray:
    """World points with camera z in ``z_range`` and roughly inside a 60-degree cone."""
    z = rng.uniform(*z_range, size=count)
    xy = rng.uniform(-0.6, 0.6, size=(count, 2)) * z[:, None]
    points_cam = np.column_stack([xy, z])
    return points_cam @ cam2world[:3, :3].T + cam2world[:3, 3]


def ref_project_cam(points_cam: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The OpenCV pinhole formula, written out."""
    x, y, z = points_cam[..., 0], points_cam[..., 1], points_cam[..., 2]
    u = K[0, 0] * x / z + K[0, 1] * y / z + K[0, 2]
    v = K[1, 1] * y / z + K[1, 2]
    return np.stack([u, v], -1), z


def ref_world_to_cam(points_world: np.ndarray, cam2world: np.ndarray) -> np.ndarray:
    world2cam = np.linalg.inv(cam2world)
    homogeneous = np.column_stack([points_world, np.ones(len(points_world))])
    return (homogeneous @ world2cam.T)[:, :3]


def t64(array) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array), dtype=torch.float64)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# --------------------------------------------------------------------------------------- projection


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-9), (torch.float32, 2e-3)])
def test_project_points_matches_opencv_formula(rng, dtype, tol):
    K = make_K()
    points_cam = np.column_stack([rng.uniform(-2, 2, (200, 2)), rng.uniform(0.5, 10, 200)])
    uv_ref, z_ref = ref_project_cam(points_cam, K)
    uv, depth = F.project_points(torch.as_tensor(points_cam, dtype=dtype), torch.as_tensor(K, dtype=dtype))
    assert uv.dtype == dtype and uv.shape == (200, 2) and depth.shape == (200,)
    np.testing.assert_allclose(uv.double().numpy(), uv_ref, atol=tol, rtol=0)
    np.testing.assert_allclose(depth.double().numpy(), z_ref, rtol=1e-6)


def test_project_points_matches_kornia_without_skew(rng):
    kornia_camera = pytest.importorskip("kornia.geometry.camera")
    K = make_K(skew=0.0)
    points_cam = t64(np.column_stack([rng.uniform(-2, 2, (100, 2)), rng.uniform(0.5, 10, 100)]))
    uv, _ = F.project_points(points_cam, t64(K))
    expected = kornia_camera.project_points(points_cam, t64(K))
    torch.testing.assert_close(uv, expected, atol=1e-9, rtol=0)
    back = F.unproject_points(uv, points_cam[:, 2], t64(K))
    expected_back = kornia_camera.unproject_points(uv, points_cam[:, 2:], t64(K))
    torch.testing.assert_close(back, expected_back, atol=1e-9, rtol=0)


def test_project_points_broadcasts_batch_dims(rng):
    Ks = t64(np.stack([make_K(fx=300 + 100 * i, skew=i) for i in range(3)]))  # [3, 3, 3]
    points_cam = t64(np.concatenate([rng.uniform(-1, 1, (2, 1, 7, 2)), rng.uniform(1, 4, (2, 1, 7, 1))], -1))
    uv, depth = F.project_points(points_cam, Ks)
    assert uv.shape == (2, 3, 7, 2) and depth.shape == (2, 3, 7)
    for b in range(2):
        for c in range(3):
            uv_ref, _ = ref_project_cam(points_cam[b, 0].numpy(), Ks[c].numpy())
            np.testing.assert_allclose(uv[b, c].numpy(), uv_ref, atol=1e-9)


def test_project_points_is_finite_at_zero_depth_and_keeps_the_sign():
    K = t64(make_K(skew=0.0))
    points_cam = t64([[1.0, 0.0, 0.0], [1.0, 0.0, 1e-12], [1.0, 0.0, -1e-12], [1.0, 0.0, -0.0]])
    uv, depth = F.project_points(points_cam, K)
    assert torch.isfinite(uv).all()
    assert depth.tolist() == [0.0, 1e-12, -1e-12, 0.0]
    cx = K[0, 2].item()
    assert uv[0, 0] > cx and uv[1, 0] > cx and uv[2, 0] < cx  # x > 0 goes right in front, left behind
    np.testing.assert_allclose(uv[1, 0].item(), cx + 520.0 / F.DEPTH_EPS, rtol=1e-9)


def test_unproject_points_matches_inverse_K_and_round_trips(rng):
    K = make_K()
    uv = rng.uniform([-10, -10], [650, 490], size=(50, 2))
    depth = rng.uniform(0.2, 30, size=50)
    points = F.unproject_points(t64(uv), t64(depth), t64(K))
    expected = (np.column_stack([uv, np.ones(50)]) @ np.linalg.inv(K).T) * depth[:, None]
    np.testing.assert_allclose(points.numpy(), expected, rtol=1e-10, atol=1e-10)
    uv_back, depth_back = F.project_points(points, t64(K))
    np.testing.assert_allclose(uv_back.numpy(), uv, atol=1e-9)
    np.testing.assert_allclose(depth_back.numpy(), depth, rtol=1e-12)


def test_world_to_pixels_matches_reference_and_per_camera_loop(rng):
    cam2world = random_cam2world(rng, 3)
    Ks = np.stack([make_K(), make_K(fx=300, fy=310, skew=-2), make_K(skew=0, cx=100, cy=80)])
    points_world = points_in_front(rng, cam2world[0], 100)
    uv, depth = F.world_to_pixels(t64(points_world), t64(Ks), t64(cam2world))
    assert uv.shape == (3, 100, 2) and depth.shape == (3, 100)
    for c in range(3):
        uv_ref, z_ref = ref_project_cam(ref_world_to_cam(points_world, cam2world[c]), Ks[c])
        ok = np.abs(z_ref) > 1e-3  # away from the camera plane, where uv is ill-conditioned
        np.testing.assert_allclose(uv[c].numpy()[ok], uv_ref[ok], rtol=1e-8, atol=1e-7)
        np.testing.assert_allclose(depth[c].numpy(), z_ref, atol=1e-10)
        single = F.world_to_pixels(t64(points_world), t64(Ks[c]), t64(cam2world[c]))
        torch.testing.assert_close(single.uv, uv[c], rtol=1e-12, atol=1e-9)


def test_world_to_pixels_float32_accuracy(rng):
    cam2world = random_cam2world(rng, 1)[0]
    points_world = points_in_front(rng, cam2world, 500)
    uv, _ = F.world_to_pixels(
        torch.tensor(points_world, dtype=torch.float32),
        torch.tensor(make_K(), dtype=torch.float32),
        torch.tensor(cam2world, dtype=torch.float32),
    )
    uv_ref, _ = ref_project_cam(ref_world_to_cam(points_world, cam2world), make_K())
    assert np.abs(uv.double().numpy() - uv_ref).max() < 5e-3


# --------------------------------------------------------------------------------------------- rays


def test_pixel_grid_holds_column_row_at_integer_centres():
    grid = F.pixel_grid(3, 5, dtype=torch.float64)
    assert grid.shape == (3, 5, 2) and grid.dtype == torch.float64
    for v in range(3):
        for u in range(5):
            assert grid[v, u].tolist() == [u, v]


def test_ray_hit_reprojects_to_its_pixel_with_z_equal_t_times_z_per_unit(rng):
    height, width = 6, 8
    cam2world = random_cam2world(rng, 2)
    Ks = np.stack([make_K(fx=7, fy=6, skew=0.4, cx=3.2, cy=2.7), make_K(fx=9, fy=9, skew=0, cx=3.5, cy=2.5)])
    rays = F.generate_rays(t64(Ks), t64(cam2world), height, width, near=0.1, far=50.0)
    assert rays.origins.shape == rays.directions.shape == (2, height, width, 3)
    assert rays.near.shape == rays.far.shape == rays.z_per_unit.shape == (2, height, width)
    assert (rays.near == 0.1).all() and (rays.far == 50.0).all()
    np.testing.assert_allclose(torch.linalg.vector_norm(rays.directions, dim=-1).numpy(), 1.0, atol=1e-12)
    t = rng.uniform(0.5, 20, size=(height, width))
    v, u = np.mgrid[0:height, 0:width]
    for c in range(2):
        np.testing.assert_allclose(
            rays.origins[c].numpy(), np.broadcast_to(cam2world[c, :3, 3], (height, width, 3))
        )
        hits = rays.origins[c].numpy() + t[..., None] * rays.directions[c].numpy()
        uv_ref, z_ref = ref_project_cam(ref_world_to_cam(hits.reshape(-1, 3), cam2world[c]), Ks[c])
        np.testing.assert_allclose(uv_ref, np.stack([u, v], -1).reshape(-1, 2), atol=1e-9)
        np.testing.assert_allclose(z_ref, (t * rays.z_per_unit[c].numpy()).reshape(-1), rtol=1e-10)


def test_centre_pixel_ray_is_the_optical_axis(rng):
    height, width = 7, 9
    K = make_K(fx=11, fy=13, skew=2.0, cx=(width - 1) / 2, cy=(height - 1) / 2)
    cam2world = random_cam2world(rng, 1)
    rays = F.generate_rays(t64(K[None]), t64(cam2world), height, width)
    np.testing.assert_allclose(rays.directions[0, 3, 4].numpy(), cam2world[0, :3, 2], atol=1e-12)
    assert rays.z_per_unit[0, 3, 4].item() == pytest.approx(1.0, abs=1e-12)
    assert (rays.z_per_unit[0] <= 1.0 + 1e-12).all()


def test_rays_hit_a_wall_at_the_analytic_point():
    """Driving axes (x forward, y left, z up); camera at (1, 2, 1.5) looking along +x at the wall x = 11."""
    height, width, distance = 5, 7, 10.0
    fx, fy, cx, cy = 4.0, 5.0, 3.0, 2.0
    cam2world = np.eye(4)
    cam2world[:3, :3] = np.array(
        [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=float
    )  # columns: cam x, y, z in world
    cam2world[:3, 3] = [1.0, 2.0, 1.5]
    K = make_K(fx=fx, fy=fy, skew=0.0, cx=cx, cy=cy)
    rays = F.generate_rays(t64(K[None]), t64(cam2world[None]), height, width)
    t_hit = distance / rays.directions[0, ..., 0]  # wall is `distance` ahead along world x
    hits = (rays.origins[0] + t_hit[..., None] * rays.directions[0]).numpy()
    v, u = np.mgrid[0:height, 0:width]
    expected = np.stack(
        [np.full(u.shape, 11.0), 2.0 - (u - cx) / fx * distance, 1.5 - (v - cy) / fy * distance], -1
    )
    np.testing.assert_allclose(hits, expected, atol=1e-12)
    np.testing.assert_allclose((t_hit * rays.z_per_unit[0]).numpy(), distance, rtol=1e-12)


def test_rays_from_pixels_agree_with_generate_rays_and_reproject_subpixel(rng):
    height, width = 4, 6
    cam2world = random_cam2world(rng, 2)
    Ks = t64(np.stack([make_K(fx=5, fy=6, cx=2.5, cy=1.5), make_K(fx=8, fy=7, skew=-1, cx=3, cy=2)]))
    full = F.generate_rays(Ks, t64(cam2world), height, width)
    rows = torch.from_numpy(rng.integers(0, height, size=(2, 10)))
    cols = torch.from_numpy(rng.integers(0, width, size=(2, 10)))
    uv = torch.stack([cols, rows], -1).double()
    sampled = F.rays_from_pixels(
        uv, Ks, t64(cam2world), near=torch.tensor([[0.5], [1.0]], dtype=torch.float64)
    )
    assert sampled.directions.shape == (2, 10, 3) and sampled.near.shape == (2, 10)
    assert (
        (sampled.near[0] == 0.5).all() and (sampled.near[1] == 1.0).all() and torch.isinf(sampled.far).all()
    )
    camera = torch.arange(2)[:, None]
    torch.testing.assert_close(sampled.directions, full.directions[camera, rows, cols], rtol=0, atol=1e-12)
    torch.testing.assert_close(sampled.z_per_unit, full.z_per_unit[camera, rows, cols], rtol=0, atol=1e-12)
    subpixel = t64(rng.uniform([-0.5, -0.5], [width - 0.5, height - 0.5], size=(2, 10, 2)))
    rays = F.rays_from_pixels(subpixel, Ks, t64(cam2world))
    hits = rays.origins + 3.0 * rays.directions
    uv_back, depth = F.world_to_pixels(hits, Ks, t64(cam2world))
    torch.testing.assert_close(uv_back, subpixel, rtol=0, atol=1e-9)
    torch.testing.assert_close(depth, 3.0 * rays.z_per_unit, rtol=1e-12, atol=0)


def test_generate_rays_batch_equals_per_camera_loop(rng):
    cam2world = t64(random_cam2world(rng, 3))
    Ks = t64(np.stack([make_K(fx=5 + i, fy=6, skew=i * 0.3, cx=2, cy=1.5) for i in range(3)]))
    batch = F.generate_rays(Ks, cam2world, 4, 5)
    for c in range(3):
        single = F.generate_rays(Ks[c], cam2world[c], 4, 5)
        assert single.directions.shape == (4, 5, 3)
        for name in ("origins", "directions", "z_per_unit"):
            torch.testing.assert_close(getattr(single, name), getattr(batch, name)[c], rtol=0, atol=1e-14)


# --------------------------------------------------------------------------------------- depth maps


def plane_depth(K: np.ndarray, height: int, width: int, normal_cam, offset: float) -> np.ndarray:
    """z-depth of the plane ``normal . p = offset`` (camera frame) seen through each pixel centre."""
    v, u = np.mgrid[0:height, 0:width]
    rays_cam = np.stack([u, v, np.ones_like(u)], -1).astype(float) @ np.linalg.inv(K).T  # z = 1
    return offset / (rays_cam @ np.asarray(normal_cam, dtype=float))


def test_depth_to_points_matches_inverse_K_reference(rng):
    height, width = 5, 6
    cam2world = random_cam2world(rng, 2)
    Ks = np.stack([make_K(fx=6, fy=5, skew=0.7, cx=2.5, cy=2), make_K(fx=4, fy=4, skew=0, cx=3, cy=2)])
    depth = rng.uniform(0.5, 5, size=(2, height, width))
    points = F.depth_to_points(t64(depth), t64(Ks), t64(cam2world))
    assert points.shape == (2, height, width, 3)
    v, u = np.mgrid[0:height, 0:width]
    for c in range(2):
        rays_cam = np.stack([u, v, np.ones_like(u)], -1).astype(float) @ np.linalg.inv(Ks[c]).T
        points_cam = (rays_cam * depth[c][..., None]).reshape(-1, 3)
        expected = (np.column_stack([points_cam, np.ones(len(points_cam))]) @ cam2world[c].T)[:, :3]
        np.testing.assert_allclose(points[c].reshape(-1, 3).numpy(), expected, atol=1e-12)


def test_depth_to_points_matches_kornia_in_the_camera_frame(rng):
    kornia_depth = pytest.importorskip("kornia.geometry.depth")
    K = t64(make_K(fx=6, fy=5, skew=0.0, cx=2.5, cy=2))[None]
    depth = t64(rng.uniform(0.5, 5, size=(1, 5, 6)))
    points = F.depth_to_points(depth, K, torch.eye(4, dtype=torch.float64)[None])
    torch.testing.assert_close(points, kornia_depth.depth_to_3d_v2(depth, K), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_depth_to_points_then_points_to_depth_is_exact(rng, dtype, rtol):
    height, width = 24, 32
    Ks = np.stack(
        [make_K(fx=30, fy=28, skew=1.5, cx=15.5, cy=11.5), make_K(fx=20, fy=20, skew=0, cx=16, cy=12)]
    )
    depth = np.stack(
        [
            plane_depth(Ks[0], height, width, normal_cam=[0.2, -0.3, 1.0], offset=4.0),
            plane_depth(Ks[1], height, width, normal_cam=[0.0, 0.5, 1.0], offset=2.0),
        ]
    )
    assert (depth > 0).all()
    depth[rng.random(depth.shape) < 0.2] = 0.0  # holes stay holes: they unproject to the camera centre, z = 0
    cam2world = random_cam2world(rng, 2)
    K_t, pose_t = torch.as_tensor(Ks, dtype=dtype), torch.as_tensor(cam2world, dtype=dtype)
    points = F.depth_to_points(torch.as_tensor(depth, dtype=dtype), K_t, pose_t)
    for c in range(2):
        rendered = F.points_to_depth(
            points[c].reshape(-1, 3), K_t[c : c + 1], pose_t[c : c + 1], height, width
        )
        assert rendered.shape == (1, height, width) and rendered.dtype == dtype
        assert torch.equal(rendered[0] > 0, torch.as_tensor(depth[c] > 0))
        np.testing.assert_allclose(rendered[0].double().numpy(), depth[c], rtol=rtol)


def test_valid_depth_points_gathers_positive_pixels(rng):
    cam2world = t64(random_cam2world(rng, 2))
    Ks = t64(np.stack([make_K(fx=5, fy=5, cx=2, cy=1.5)] * 2))
    depth = t64(rng.uniform(1, 3, size=(2, 4, 5)))
    depth[0, 1, 2] = 0.0
    depth[1, 3, 4] = 0.0
    depth[1, 0, 0] = math.nan
    depth[1, 2, 2] = math.inf
    gathered = F.valid_depth_points(depth, Ks, cam2world)
    assert len(gathered.points_world) == 2 * 4 * 5 - 4
    full = F.depth_to_points(depth, Ks, cam2world)
    u, v = gathered.pixels.unbind(-1)
    torch.testing.assert_close(gathered.points_world, full[gathered.camera_index, v, u], rtol=0, atol=0)
    assert [0, 2, 1] not in torch.column_stack([gathered.camera_index, u, v]).tolist()
    assert gathered.camera_index.tolist() == [0] * 19 + [1] * 17


def brute_force_zbuffer(points_world, Ks, cam2world, height, width, near):
    depth = np.zeros((len(Ks), height, width))
    for c in range(len(Ks)):
        points_cam = ref_world_to_cam(points_world, cam2world[c])
        for x, y, z in points_cam:
            if not z > near:
                continue
            u, v = ref_project_cam(np.array([x, y, z]), Ks[c])[0]
            col, row = math.floor(u + 0.5), math.floor(v + 0.5)
            if 0 <= col < width and 0 <= row < height and (depth[c, row, col] == 0 or z < depth[c, row, col]):
                depth[c, row, col] = z
    return depth


def test_points_to_depth_matches_brute_force_zbuffer(rng):
    height, width = 9, 12
    cam2world = random_cam2world(rng, 2)
    Ks = np.stack([make_K(fx=8, fy=7, skew=0.5, cx=5.5, cy=4), make_K(fx=10, fy=10, skew=0, cx=6, cy=4.5)])
    # many points per pixel (the minimum matters), some behind, some outside, one at z = 0
    points = np.concatenate(
        [points_in_front(rng, cam2world[0], 1500, (0.1, 6.0)), rng.uniform(-8, 8, (300, 3))]
    )
    points = np.concatenate([points, cam2world[0, :3, 3][None] + cam2world[0, :3, 0][None]])
    expected = brute_force_zbuffer(points, Ks, cam2world, height, width, near=0.2)
    rendered = F.points_to_depth(t64(points), t64(Ks), t64(cam2world), height, width, near=0.2)
    assert (expected[0] > 0).sum() > 80 and (expected[1] > 0).sum() > 5
    np.testing.assert_allclose(rendered.numpy(), expected, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------------------- frustum


def test_frustum_mask_matches_brute_force_with_border_cases(rng):
    height, width = 48, 64
    # identity pose and dyadic K: the border projections below are exact in float32 and float64
    K = make_K(fx=64, fy=32, skew=0, cx=31.5, cy=23.5)
    cam2world = np.stack([np.eye(4), random_cam2world(rng, 1)[0]])
    border = np.array(
        [
            [-0.5, 0.0, 1.0],  # u = -0.5: inside
            [0.5, 0.0, 1.0],  # u = W - 0.5: outside
            [0.0, -0.75, 1.0],  # v = -0.5: inside
            [0.0, 0.75, 1.0],  # v = H - 0.5: outside
            [-1.0, -1.5, 2.0],  # (u, v) = (-0.5, -0.5): inside
            [0.0, 0.0, 0.0],  # at the camera centre, z = 0: outside
            [0.1, 0.0, 0.0],  # on the camera plane: outside
            [0.0, 0.0, -1.0],  # behind: outside
            [0.0, 0.0, 1e-7],  # just in front: inside (u, v at the centre)
            [0.0, 0.0, 20.0],  # at far: inside
            [0.0, 0.0, 20.5],  # beyond far: outside
        ]
    )
    points = np.concatenate([border, rng.uniform(-6, 6, (400, 3))])
    Ks = np.stack([K, K])
    expected = np.zeros((2, len(points)), dtype=bool)
    for c in range(2):
        for i, point_cam in enumerate(ref_world_to_cam(points, cam2world[c])):
            z = point_cam[2]
            if 0.0 < z <= 20.0:
                u, v = ref_project_cam(point_cam, K)[0]
                expected[c, i] = -0.5 <= u < width - 0.5 and -0.5 <= v < height - 0.5
    assert expected[0, :11].tolist() == [
        True,
        False,
        True,
        False,
        True,
        False,
        False,
        False,
        True,
        True,
        False,
    ]
    for dtype in (torch.float64, torch.float32):
        mask = F.frustum_mask(
            torch.as_tensor(points, dtype=dtype),
            torch.as_tensor(Ks, dtype=dtype),
            torch.as_tensor(cam2world, dtype=dtype),
            height,
            width,
            far=20.0,
        )
        assert mask.shape == (2, len(points)) and mask.dtype == torch.bool
        assert mask[0, :11].tolist() == expected[0, :11].tolist()
        if dtype == torch.float64:
            assert mask.tolist() == expected.tolist()
    assert expected[:, 11:].any() and not expected[:, 11:].all()
    # points_to_depth uses the same pixel footprint: the border points land in pixels 0 and drop at W - 0.5
    # (and a centre at u = 2.5 goes to pixel 3: floor(u + 0.5), not round-half-to-even)
    half = np.array([[-29 / 64, 0.0, 1.0]])
    depth = F.points_to_depth(
        t64(np.concatenate([border[:5], half])), t64(K[None]), t64(np.eye(4)[None]), height, width
    )
    assert (
        depth[0, 24, 0] == 1.0 and depth[0, 0, 32] == 1.0 and depth[0, 0, 0] == 2.0 and depth[0, 24, 3] == 1.0
    )
    assert (depth > 0).sum() == 4


# ---------------------------------------------------------------------------------------- gradients


def _random_inputs(rng):
    K = t64(make_K(fx=5, fy=4, skew=0.3, cx=2, cy=1.5)).requires_grad_()
    cam2world = t64(random_cam2world(rng, 1)[0]).requires_grad_()
    return K, cam2world


def test_gradcheck_projection_ops(rng):
    K, cam2world = _random_inputs(rng)
    points_cam = t64(np.column_stack([rng.uniform(-1, 1, (4, 2)), rng.uniform(1, 3, 4)])).requires_grad_()
    assert torch.autograd.gradcheck(lambda p, k: tuple(F.project_points(p, k)), (points_cam, K))
    uv = t64(rng.uniform(0, 4, (4, 2))).requires_grad_()
    depth = t64(rng.uniform(1, 3, 4)).requires_grad_()
    assert torch.autograd.gradcheck(F.unproject_points, (uv, depth, K))
    points_world = (
        points_cam.detach() @ cam2world.detach()[:3, :3].T + cam2world.detach()[:3, 3]
    ).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda p, k, m: tuple(F.world_to_pixels(p, k, m)), (points_world, K, cam2world)
    )


def test_gradcheck_rays_and_depth_to_points(rng):
    K, cam2world = _random_inputs(rng)
    K3, pose3 = K[None], cam2world[None]

    def rays(k, m):
        out = F.generate_rays(k, m, 3, 4)
        return out.origins, out.directions, out.z_per_unit

    assert torch.autograd.gradcheck(rays, (K3, pose3))
    uv = t64(rng.uniform(0, 4, (1, 5, 2))).requires_grad_()
    assert torch.autograd.gradcheck(lambda p, k, m: F.rays_from_pixels(p, k, m).directions, (uv, K3, pose3))
    depth = t64(rng.uniform(1, 3, (1, 3, 4))).requires_grad_()
    assert torch.autograd.gradcheck(F.depth_to_points, (depth, K3, pose3))


# --------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: F.project_points(torch.zeros(5, 2), torch.eye(3)), "points_cam"),
        (lambda: F.project_points(torch.zeros(5, 3), torch.eye(4)), "K"),
        (lambda: F.unproject_points(torch.zeros(5, 3), torch.ones(5), torch.eye(3)), "uv"),
        (lambda: F.world_to_pixels(torch.zeros(5, 3), torch.eye(3), torch.eye(3)), "cam2world"),
        (lambda: F.generate_rays(torch.eye(3)[None], torch.eye(4)[None], 0, 4), "height"),
        (lambda: F.generate_rays(torch.eye(3)[None], torch.eye(4)[None], 3, 2.5), "width"),
        (lambda: F.depth_to_points(torch.ones(4), torch.eye(3), torch.eye(4)), "depth"),
        (
            lambda: F.points_to_depth(torch.zeros(5, 4), torch.eye(3)[None], torch.eye(4)[None], 3, 4),
            "points_world",
        ),
        (lambda: F.frustum_mask(torch.zeros(5, 3), torch.eye(3)[None], torch.eye(4)[None], -1, 4), "height"),
        (lambda: F.valid_depth_points(torch.ones(4, 4), torch.eye(3)[None], torch.eye(4)[None]), "depth"),
    ],
)
def test_bad_shapes_raise_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name} "):
        call()


def test_non_tensor_input_raises_type_error():
    with pytest.raises(TypeError, match="points_cam"):
        F.project_points(np.zeros((5, 3)), torch.eye(3))
