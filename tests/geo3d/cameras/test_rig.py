"""Tests of geo3d.cameras.CameraRig against poses composed by hand in NumPy float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from geo3d.cameras import CameraRig, PinholeCameras
from geo3d.structures.capture import ArraySource, CameraFrame, Frame

NAMES = ("CAM_FRONT", "CAM_LEFT", "CAM_BACK")


def make_poses(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    poses = np.tile(np.eye(4), (count, 1, 1))
    poses[:, :3, :3] = Rotation.random(count, random_state=rng).as_matrix()
    poses[:, :3, 3] = rng.uniform(-5, 5, size=(count, 3))
    return poses


def make_Ks(count: int) -> np.ndarray:
    return np.stack([[[30.0 + i, 0.2 * i, 15.5], [0.0, 28.0, 11.5], [0.0, 0.0, 1.0]] for i in range(count)])


def make_rig(dtype=torch.float64) -> CameraRig:
    return CameraRig.from_numpy(NAMES, make_Ks(3), make_poses(3, seed=1), 32, 24, dtype=dtype)


def make_frame(ego2world, cam2worlds, sizes=((32, 24),) * 3) -> Frame:
    cameras = {}
    for name, K, pose, (width, height) in zip(NAMES, make_Ks(3), cam2worlds, sizes):
        image = ArraySource.of(np.zeros((height, width, 3), dtype=np.uint8))
        cameras[name] = CameraFrame(name, K, pose, width, height, image)
    return Frame(index=7, cameras=cameras, ego2world=ego2world)


def test_cameras_at_one_pose_composes_ego2world_with_cam2ego():
    rig = make_rig()
    ego2world = make_poses(1, seed=2)[0]
    cameras = rig.cameras_at(torch.from_numpy(ego2world))
    assert isinstance(cameras, PinholeCameras) and len(cameras) == 3 and cameras.names == NAMES
    for c in range(3):
        np.testing.assert_allclose(
            cameras.cam2world[c].numpy(), ego2world @ rig.cam2ego[c].numpy(), atol=1e-12
        )
    assert torch.equal(cameras.K, rig.K) and (cameras.width, cameras.height) == (32, 24)


def test_cameras_at_several_poses_is_pose_major():
    rig = make_rig()
    ego2world = make_poses(4, seed=3)
    cameras = rig.cameras_at(ego2world)  # NumPy input is accepted too
    assert len(cameras) == 12 and cameras.names == NAMES * 4
    for b in range(4):
        for c in range(3):
            expected = ego2world[b] @ rig.cam2ego[c].numpy()
            np.testing.assert_allclose(cameras.cam2world[b * 3 + c].numpy(), expected, atol=1e-12)
            assert torch.equal(cameras.K[b * 3 + c], rig.K[c])


def test_cameras_at_rejects_bad_pose_shape():
    with pytest.raises(ValueError, match=r"ego2world must have shape \[4, 4\] or \[B, 4, 4\], got \[3, 3\]"):
        make_rig().cameras_at(torch.eye(3))


def test_cameras_at_passes_gradients_to_the_ego_pose():
    rig = make_rig()
    ego2world = torch.from_numpy(make_poses(1, seed=4)[0]).requires_grad_()
    points = rig.cameras_at(ego2world.detach()).depth_to_points(
        torch.full((3, 24, 32), 2.0, dtype=torch.float64)
    )
    points = points[:, ::8, ::8].reshape(-1, 3)

    def project(pose):
        return rig.cameras_at(pose).project(points).uv

    assert torch.autograd.gradcheck(project, (ego2world,))


def test_from_frame_round_trips_the_camera_poses():
    ego2world = make_poses(1, seed=5)[0]
    cam2worlds = make_poses(3, seed=6)
    frame = make_frame(ego2world, cam2worlds)
    rig = CameraRig.from_frame(frame, dtype=torch.float64)
    assert rig.names == NAMES and (rig.width, rig.height) == (32, 24) and len(rig) == 3
    for c in range(3):
        np.testing.assert_allclose(
            rig.cam2ego[c].numpy(), np.linalg.inv(ego2world) @ cam2worlds[c], atol=1e-12
        )
    np.testing.assert_array_equal(rig.K.numpy(), make_Ks(3))
    cameras = rig.cameras_at(frame.ego2world)
    np.testing.assert_allclose(cameras.cam2world.numpy(), cam2worlds, atol=1e-12)
    # the same rig at another instant: the cameras move with the body
    moved = make_poses(1, seed=7)[0]
    np.testing.assert_allclose(
        rig.cameras_at(moved).cam2world.numpy(), moved @ np.linalg.inv(ego2world) @ cam2worlds, atol=1e-12
    )
    assert CameraRig.from_frame(frame).K.dtype == torch.float32


def test_from_frame_needs_ego2world_and_one_image_size():
    with pytest.raises(ValueError, match=r"frame 7 has no ego2world"):
        CameraRig.from_frame(make_frame(None, make_poses(3, seed=8)))
    frame = make_frame(np.eye(4), make_poses(3, seed=8), sizes=((32, 24), (32, 24), (64, 48)))
    with pytest.raises(ValueError, match=r"camera 'CAM_BACK' is 64x48"):
        CameraRig.from_frame(frame)
    with pytest.raises(ValueError, match=r"frame 3 has no cameras"):
        CameraRig.from_frame(Frame(index=3, ego2world=np.eye(4)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"names": ("a", "b")}, r"names has 2 entries for 3 cameras"),
        ({"cam2ego": torch.eye(4, dtype=torch.float64)[None]}, r"K has 3 cameras but cam2ego has 1"),
        ({"K": torch.ones(3, 3, 3, dtype=torch.float64) * float("nan")}, r"K contains NaN or inf"),
    ],
)
def test_bad_rig_arguments_raise_value_error(kwargs, message):
    rig = make_rig()
    args = {"names": rig.names, "K": rig.K, "cam2ego": rig.cam2ego, "width": 32, "height": 24}
    args.update(kwargs)
    with pytest.raises(ValueError, match=r"^CameraRig: " + message):
        CameraRig(**args)


def test_to_float32():
    rig = make_rig().to(dtype=torch.float32)
    assert rig.K.dtype == rig.cam2ego.dtype == torch.float32 and rig.names == NAMES
    assert rig.cameras_at(np.eye(4)).dtype == torch.float32
