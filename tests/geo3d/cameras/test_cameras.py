"""Tests of geo3d.cameras.PinholeCameras: validation, constructors, indexing and the delegating ops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from geo3d.cameras import PinholeCameras
from geo3d.cameras import functional as F
from geo3d.structures.capture import ArraySource, CameraFrame


def make_K(fx=50.0, fy=45.0, skew=0.5, cx=15.5, cy=11.0) -> np.ndarray:
    return np.array([[fx, skew, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def make_poses(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    poses = np.tile(np.eye(4), (count, 1, 1))
    poses[:, :3, :3] = Rotation.random(count, random_state=rng).as_matrix()
    poses[:, :3, 3] = rng.uniform(-2, 2, size=(count, 3))
    return poses


def make_cameras(count=3, dtype=torch.float64) -> PinholeCameras:
    Ks = np.stack([make_K(fx=40 + 5 * i, skew=0.1 * i) for i in range(count)])
    return PinholeCameras.from_numpy(
        Ks, make_poses(count), 32, 24, names=[f"cam{i}" for i in range(count)], dtype=dtype
    )


def camera_frame(name: str, width: int, height: int, pose: np.ndarray, K=None) -> CameraFrame:
    image = ArraySource.of(np.zeros((height, width, 3), dtype=np.uint8))
    return CameraFrame(name, make_K() if K is None else K, pose, width, height, image)


# ---------------------------------------------------------------------------------------- validation


def test_from_numpy_builds_float32_batch_from_single_matrices():
    cameras = PinholeCameras.from_numpy(make_K(), make_poses(1)[0], 32, 24)
    assert len(cameras) == 1 and cameras.dtype == torch.float32
    assert cameras.K.shape == (1, 3, 3) and cameras.cam2world.shape == (1, 4, 4)
    np.testing.assert_allclose(cameras.K[0].numpy(), make_K(), rtol=1e-7)
    assert cameras.names is None and (cameras.width, cameras.height) == (32, 24)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"K": torch.eye(3)}, r"K must have shape \[C, 3, 3\], got \[3, 3\]"),
        ({"cam2world": torch.eye(4)[None].repeat(2, 1, 1)}, r"K has 1 cameras but cam2world has 2"),
        ({"cam2world": torch.eye(3)[None]}, r"cam2world must have shape \[C, 4, 4\], got \[1, 3, 3\]"),
        ({"K": torch.tensor([[[50.0, 0, math.nan], [0, 50, 10], [0, 0, 1]]])}, r"K contains NaN or inf"),
        (
            {"cam2world": torch.diag(torch.tensor([1.0, 1, 1, math.inf]))[None]},
            r"cam2world contains NaN or inf",
        ),
        ({"K": torch.tensor([[[50.0, 0, 10], [0, -50, 10], [0, 0, 1]]])}, r"K\[0\] must be"),
        ({"K": torch.tensor([[[50.0, 0, 10], [0, 50, 10], [0, 1, 1]]])}, r"K\[0\] must be"),
        ({"cam2world": torch.eye(4)[None] * 2}, r"cam2world\[0\] last row must be \[0, 0, 0, 1\]"),
        ({"K": torch.eye(3, dtype=torch.int64)[None]}, r"K must be a floating-point tensor"),
        (
            {"K": torch.eye(3, dtype=torch.float64)[None]},
            r"K \(torch.float64, cpu\) and cam2world \(torch.float32, cpu\) must share dtype and device",
        ),
        ({"width": 0}, r"width must be a positive int, got 0"),
        ({"height": 2.5}, r"height must be a positive int, got 2.5"),
        ({"names": ("a", "b")}, r"names has 2 entries for 1 cameras"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, message):
    args = {
        "K": torch.tensor(make_K(), dtype=torch.float32)[None],
        "cam2world": torch.eye(4)[None],
        "width": 32,
        "height": 24,
        "names": None,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=r"^PinholeCameras: " + message):
        PinholeCameras(**args)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"names": "a"}, r"names must be a sequence of camera names, got the str 'a'"),
        ({"K": np.eye(3)[None]}, r"K must be a torch.Tensor, got ndarray"),
    ],
)
def test_wrong_types_raise_type_error(kwargs, message):
    args = {"K": torch.eye(3)[None], "cam2world": torch.eye(4)[None], "width": 32, "height": 24}
    args.update(kwargs)
    with pytest.raises(TypeError, match=r"^PinholeCameras: " + message):
        PinholeCameras(**args)


def test_from_numpy_rejects_nan_pose():
    pose = make_poses(1)
    pose[0, 1, 3] = math.nan
    with pytest.raises(ValueError, match="cam2world contains NaN"):
        PinholeCameras.from_numpy(make_K(), pose, 32, 24)


def test_from_camera_frames_copies_calibration_and_names():
    poses = make_poses(2)
    frames = [
        camera_frame("CAM_A", 32, 24, poses[0]),
        camera_frame("CAM_B", 32, 24, poses[1], K=make_K(fx=70)),
    ]
    cameras = PinholeCameras.from_camera_frames(frames, dtype=torch.float64)
    assert cameras.names == ("CAM_A", "CAM_B") and (cameras.width, cameras.height) == (32, 24)
    np.testing.assert_array_equal(cameras.K.numpy(), np.stack([make_K(), make_K(fx=70)]))
    np.testing.assert_array_equal(cameras.cam2world.numpy(), poses)
    assert PinholeCameras.from_camera_frames(frames).dtype == torch.float32


def test_from_camera_frames_rejects_mixed_sizes_naming_the_camera():
    poses = make_poses(3)
    frames = [
        camera_frame("CAM_A", 32, 24, poses[0]),
        camera_frame("CAM_B", 32, 24, poses[1]),
        camera_frame("CAM_SMALL", 16, 12, poses[2]),
    ]
    with pytest.raises(ValueError, match=r"camera 'CAM_SMALL' is 16x12 but camera 'CAM_A' is 32x24"):
        PinholeCameras.from_camera_frames(frames)
    with pytest.raises(ValueError, match="frames is empty"):
        PinholeCameras.from_camera_frames([])


# -------------------------------------------------------------------------------------- container


@pytest.mark.parametrize(
    "index, expected",
    [
        (1, [1]),
        (-1, [3]),
        (slice(1, 3), [1, 2]),
        ([3, 0], [3, 0]),
        (torch.tensor([2, 2]), [2, 2]),
        (torch.tensor([True, False, False, True]), [0, 3]),
        (slice(4, None), []),
    ],
)
def test_getitem_selects_cameras_and_names(index, expected):
    cameras = make_cameras(4)
    picked = cameras[index]
    assert isinstance(picked, PinholeCameras) and len(picked) == len(expected)
    assert picked.names == tuple(f"cam{i}" for i in expected)
    assert torch.equal(picked.K, cameras.K[expected]) and torch.equal(
        picked.cam2world, cameras.cam2world[expected]
    )
    assert (picked.width, picked.height) == (cameras.width, cameras.height)


def test_getitem_out_of_range_raises_index_error():
    with pytest.raises(IndexError):
        make_cameras(2)[5]


def test_world2cam_is_the_inverse_pose():
    cameras = make_cameras(3)
    np.testing.assert_allclose(
        cameras.world2cam.numpy(), np.linalg.inv(cameras.cam2world.numpy()), atol=1e-12
    )
    np.testing.assert_allclose(cameras.centers.numpy(), cameras.cam2world[:, :3, 3].numpy())


def test_to_changes_dtype_and_keeps_everything_else():
    cameras = make_cameras(2)
    single = cameras.to(dtype=torch.float32)
    assert single.dtype == torch.float32 and single.cam2world.dtype == torch.float32
    assert single.names == cameras.names and (single.width, single.height) == (32, 24)
    torch.testing.assert_close(single.K.double(), cameras.K)
    assert cameras.dtype == torch.float64  # the original is untouched (frozen dataclass)
    with pytest.raises(AttributeError):
        cameras.width = 3  # type: ignore[misc]


# ------------------------------------------------------------------------------------------- ops


def test_project_matches_hand_written_formula_per_camera():
    cameras = make_cameras(3)
    rng = np.random.default_rng(3)
    points_world = rng.uniform(-4, 4, size=(50, 3))
    uv, depth = cameras.project(torch.from_numpy(points_world))
    assert uv.shape == (3, 50, 2) and depth.shape == (3, 50)
    for c in range(3):
        K, world2cam = cameras.K[c].numpy(), np.linalg.inv(cameras.cam2world[c].numpy())
        x, y, z = (points_world @ world2cam[:3, :3].T + world2cam[:3, 3]).T
        ok = np.abs(z) > 1e-3
        u = K[0, 0] * x / z + K[0, 1] * y / z + K[0, 2]
        v = K[1, 1] * y / z + K[1, 2]
        np.testing.assert_allclose(uv[c].numpy()[ok], np.stack([u, v], -1)[ok], rtol=1e-9, atol=1e-8)
        np.testing.assert_allclose(depth[c].numpy(), z, atol=1e-12)


def test_methods_delegate_to_functional_with_the_image_size():
    cameras = make_cameras(2)
    rays = cameras.generate_rays(near=0.5, far=9.0)
    expected = F.generate_rays(cameras.K, cameras.cam2world, 24, 32, 0.5, 9.0)
    assert rays.directions.shape == (2, 24, 32, 3)
    for got, want in zip(rays, expected):
        assert torch.equal(got, want)
    uv = torch.rand(2, 7, 2, dtype=torch.float64) * 20
    assert torch.equal(
        cameras.rays_from_pixels(uv).directions,
        F.rays_from_pixels(uv, cameras.K, cameras.cam2world).directions,
    )

    depth = torch.rand(2, 24, 32, dtype=torch.float64) + 1.0
    depth[0, 3, 4] = 0.0
    points = cameras.depth_to_points(depth)
    assert torch.equal(points, F.depth_to_points(depth, cameras.K, cameras.cam2world))
    rendered = cameras.points_to_depth(points[1].reshape(-1, 3))
    np.testing.assert_allclose(rendered[1].numpy(), depth[1].numpy(), rtol=1e-10)
    assert len(cameras.valid_depth_points(depth).points_world) == 2 * 24 * 32 - 1
    mask = cameras.frustum_mask(points[0].reshape(-1, 3), near=0.1, far=100.0)
    assert mask.shape == (2, 24 * 32) and mask[0].sum() == 24 * 32 - 1  # the depth-0 pixel is at z = 0


def test_depth_of_wrong_size_raises_naming_depth():
    cameras = make_cameras(2)
    with pytest.raises(
        ValueError, match=r"depth must have shape \[C, H, W\] = \[2, 24, 32\], got \[2, 32, 24\]"
    ):
        cameras.depth_to_points(torch.ones(2, 32, 24))
    with pytest.raises(ValueError, match=r"depth must have shape"):
        cameras.valid_depth_points(torch.ones(1, 24, 32))


def test_gradients_reach_K_and_cam2world_through_the_container():
    cameras = make_cameras(1)
    K = cameras.K.clone().requires_grad_()
    cam2world = cameras.cam2world.clone().requires_grad_()
    points = (
        torch.tensor([[0.1, 0.2, 3.0]], dtype=torch.float64) @ cameras.cam2world[0, :3, :3].T
        + cameras.centers
    )
    assert torch.autograd.gradcheck(
        lambda k, m: PinholeCameras(k, m, 32, 24).project(points).uv, (K, cam2world)
    )


def test_from_camera_frames_warns_about_lens_distortion():
    import warnings

    import numpy as np
    import pytest

    from geo3d.cameras import PinholeCameras
    from geo3d.structures import ArraySource, CameraFrame

    def frame(name, distortion):
        return CameraFrame(camera=name, K=np.array([[5.0, 0, 2], [0, 5, 2], [0, 0, 1]]), cam2world=np.eye(4),
                           width=4, height=4, image=ArraySource.of(np.zeros((4, 4, 3), np.uint8)),
                           distortion=distortion)  # fmt: skip

    with pytest.warns(UserWarning, match=r"\['b'\] have lens distortion"):
        PinholeCameras.from_camera_frames([frame("a", None), frame("b", np.array([0.1, 0, 0, 0]))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PinholeCameras.from_camera_frames([frame("a", None), frame("c", np.zeros(4))])
