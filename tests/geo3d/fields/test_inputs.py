"""geo3d.fields.inputs: check_frame names the first problem of a frame (cameras, poses, intrinsics,
images, sizes, LiDAR) and frame_at rejects bad indices; a sound frame passes every check."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from capture_factory import make_capture

from geo3d.fields.inputs import check_frame, frame_at
from geo3d.io.images import read_image_uint8, write_png
from geo3d.structures import ArraySource, Capture, Frame, LidarSweep
from geo3d.structures.field import FieldError


@pytest.fixture
def frame() -> Frame:
    """A sound frame: two cameras of 7 x 5 pixels (RGB and RGBA), one LiDAR sweep, rigid poses."""
    return make_capture(seed=4, frames=1, occupancy=False).frames[0]


def with_camera(frame: Frame, name: str, **changes) -> Frame:
    cameras = dict(frame.cameras)
    cameras[name] = dataclasses.replace(cameras[name], **changes)
    return dataclasses.replace(frame, cameras=cameras)


def with_sweep(frame: Frame, **changes) -> Frame:
    sweep = dataclasses.replace(frame.lidar["LIDAR_TOP"], **changes)
    return dataclasses.replace(frame, lidar={"LIDAR_TOP": sweep})


def test_a_sound_frame_passes(frame):
    check_frame(frame)
    check_frame(frame, needs_lidar=True, same_image_size=True, cameras_required=["CAM_FRONT"])


def test_cameras(frame):
    with pytest.raises(FieldError, match="frame 0 has no cameras"):
        check_frame(dataclasses.replace(frame, cameras={}))
    with pytest.raises(FieldError, match=r"missing cameras \['CAM_BACK'\]"):
        check_frame(frame, cameras_required=["CAM_FRONT", "CAM_BACK"])


def _scaled(pose):
    bad = np.array(pose, dtype=np.float64)
    bad[:3, :3] *= 1.5
    return bad


def _mirrored(pose):
    bad = np.array(pose, dtype=np.float64)
    bad[:3, 0] *= -1.0  # orthonormal, determinant -1
    return bad


def _bottom_row(pose):
    bad = np.array(pose, dtype=np.float64)
    bad[3, 0] = 0.1
    return bad


def _nan(pose):
    bad = np.array(pose, dtype=np.float64)
    bad[1, 3] = np.nan
    return bad


@pytest.mark.parametrize("make_bad, message", [
    (_nan, "holds NaN or inf"), (_scaled, "not a rigid transform"), (_mirrored, "not a rigid transform"),
    (_bottom_row, "not a rigid transform"), (lambda pose: pose[:3], "missing or not a 4x4"),
    (lambda pose: None, "missing or not a 4x4"),
])
def test_poses(frame, make_bad, message):
    with pytest.raises(FieldError, match=f"frame 0 ego2world.*{message}"):
        check_frame(dataclasses.replace(frame, ego2world=make_bad(frame.ego2world)))
    cam = frame.cameras["CAM/BACK LEFT"]
    with pytest.raises(FieldError, match=f"camera 'CAM/BACK LEFT' cam2world.*{message}"):
        check_frame(with_camera(frame, "CAM/BACK LEFT", cam2world=make_bad(cam.cam2world)))
    sweep = frame.lidar["LIDAR_TOP"]
    bad_lidar = with_sweep(frame, sensor2world=make_bad(sweep.sensor2world))
    check_frame(bad_lidar)  # LiDAR not read
    with pytest.raises(FieldError, match=f"LiDAR 'LIDAR_TOP' sensor2world.*{message}"):
        check_frame(bad_lidar, needs_lidar=True)


def test_a_slightly_noisy_rotation_is_rigid_enough(frame):
    pose = np.array(frame.ego2world)
    pose[:3, :3] *= 1.0 + 1e-6  # float32 round-off in files
    check_frame(dataclasses.replace(frame, ego2world=pose))


@pytest.mark.parametrize("K", [
    None, np.eye(2), np.array([[5.0, 0, 3], [0, np.nan, 2], [0, 0, 1]]),
    np.array([[5.0, 0, 3], [0, np.inf, 2], [0, 0, 1]]),
    np.array([[0.0, 0, 3], [0, 5, 2], [0, 0, 1]]), np.array([[5.0, 0, 3], [0, -5, 2], [0, 0, 1]]),
])
def test_intrinsics(frame, K):
    with pytest.raises(FieldError, match="camera 'CAM_FRONT': intrinsics K missing, NaN/inf or not a pinhole"):
        check_frame(with_camera(frame, "CAM_FRONT", K=K))


def test_images(frame, tmp_path):
    missing = tmp_path / "gone.png"
    source = ArraySource(path=missing, loader=lambda: read_image_uint8(missing))
    with pytest.raises(FieldError, match="camera 'CAM_FRONT': cannot load its image.*gone.png"):
        check_frame(with_camera(frame, "CAM_FRONT", image=source))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really")
    source = ArraySource(path=corrupt, loader=lambda: read_image_uint8(corrupt))
    with pytest.raises(FieldError, match="cannot load its image.*corrupt.png"):
        check_frame(with_camera(frame, "CAM_FRONT", image=source))

    def failing_loader():
        raise OSError("disk unplugged")

    with pytest.raises(FieldError, match="disk unplugged"):
        check_frame(with_camera(frame, "CAM_FRONT", image=ArraySource(path=Path("x.png"), loader=failing_loader)))
    # a readable file of the wrong size, and in-memory pixels of the wrong size or type
    small = tmp_path / "small.png"
    write_png(small, np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(FieldError, match="cannot load its image.*4x4.*7x5"):
        source = ArraySource(path=small, loader=lambda: read_image_uint8(small))
        check_frame(with_camera(frame, "CAM_FRONT", image=source))
    with pytest.raises(FieldError, match="CAM_FRONT"):
        check_frame(with_camera(frame, "CAM_FRONT", image=ArraySource.of(np.zeros((5, 7, 3), np.float32))))
    # the same file at the right size reads fine
    good = tmp_path / "good.png"
    write_png(good, np.zeros((5, 7, 3), np.uint8))
    check_frame(with_camera(frame, "CAM_FRONT", image=ArraySource(path=good, loader=lambda: read_image_uint8(good))))


def test_image_sizes(frame):
    K = frame.cameras["CAM_FRONT"].K
    bigger = with_camera(frame, "CAM_FRONT", width=9, height=6, K=K,
                         image=ArraySource.of(np.zeros((6, 9, 3), np.uint8)))
    check_frame(bigger)  # different sizes are fine unless a method needs one size
    with pytest.raises(FieldError, match="inconsistent image sizes CAM_FRONT 9x6, CAM/BACK LEFT 7x5"):
        check_frame(bigger, same_image_size=True)


def test_lidar(frame):
    no_lidar = dataclasses.replace(frame, lidar={})
    check_frame(no_lidar)
    with pytest.raises(FieldError, match="frame 0 has no LiDAR sweep"):
        check_frame(no_lidar, needs_lidar=True)
    empty = with_sweep(frame, points=ArraySource.of(np.zeros((0, 5), np.float32)))
    check_frame(empty)
    with pytest.raises(FieldError, match=r"the LiDAR sweep is empty \(0 points\)"):
        check_frame(empty, needs_lidar=True)
    points = frame.lidar["LIDAR_TOP"].load_points().copy()
    points[3, 1] = np.nan
    with pytest.raises(FieldError, match="LiDAR 'LIDAR_TOP' holds NaN or inf points"):
        check_frame(with_sweep(frame, points=ArraySource.of(points)), needs_lidar=True)
    points[3, 1], points[5, 3] = 0.0, np.nan  # a NaN intensity is not a bad point
    check_frame(with_sweep(frame, points=ArraySource.of(points)), needs_lidar=True)
    with pytest.raises(FieldError, match="points missing or unreadable"):
        check_frame(with_sweep(frame, points=ArraySource.of(points[:, :2])), needs_lidar=True)
    # a second, empty sweep beside a full one is fine: the frame has points
    extra = LidarSweep("LIDAR_EMPTY", ArraySource.of(np.zeros((0, 3), np.float32)), ("x", "y", "z"),
                       frame.lidar["LIDAR_TOP"].sensor2world)
    check_frame(dataclasses.replace(frame, lidar={**frame.lidar, "LIDAR_EMPTY": extra}), needs_lidar=True)


def test_frame_at():
    capture = make_capture(seed=1, frames=2, occupancy=False)
    assert frame_at(capture, 1) is capture.frames[1] and frame_at(capture, np.int64(0)) is capture.frames[0]
    for bad in (2, -1, True, 1.0, "0", None):
        with pytest.raises(FieldError, match=r"out of range: the capture has frames 0\.\.1"):
            frame_at(capture, bad)
    with pytest.raises(FieldError, match="no frames"):
        frame_at(Capture([]), 0)
    with pytest.raises(FieldError, match="must be a Capture"):
        frame_at(capture.frames, 0)
