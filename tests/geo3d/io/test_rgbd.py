"""7-Scenes RGB-D reader: the shared 60-frame sample (skipped when absent) and self-made folders.

References are independent of the reader: np.loadtxt for poses and intrinsics, PIL for pixels, and
a back-projection written here checked with scipy's cKDTree.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from geo3d.errors import CalibrationError, CaptureError
from geo3d.io.rgbd import POSE_ORTHONORMAL_TOL, read_7scenes, sniff_7scenes


def read_no_warnings(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return read_7scenes(path, **kwargs)


def write_frame(folder: Path, frame_id: int, pose=None, depth=None, size=(8, 6)) -> None:
    """A tiny self-made frame: random colour PNG, uint16 depth PNG, pose text."""
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    rng = np.random.default_rng(frame_id)
    stem = folder / f"frame-{frame_id:06d}"
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(f"{stem}.color.png")
    depth = rng.integers(0, 5000, (height, width)).astype(np.uint16) if depth is None else depth
    Image.fromarray(depth).save(f"{stem}.depth.png")
    pose = np.eye(4) if pose is None else pose
    np.savetxt(f"{stem}.pose.txt", pose)


def write_intrinsics(folder: Path) -> np.ndarray:
    K = np.array([[7.0, 0.0, 3.5], [0.0, 7.5, 2.5], [0.0, 0.0, 1.0]])
    np.savetxt(folder / "camera-intrinsics.txt", K)
    return K


# ----------------------------------------------------------------------------------------------
# The shared sample


@pytest.mark.shared_data
def test_shared_sample_frames_calibration_and_poses(rgbd_dir):
    capture = read_no_warnings(rgbd_dir)
    pose_files = sorted(rgbd_dir.glob("frame-*.pose.txt"))
    assert len(capture) == len(pose_files) == 60
    assert capture.camera_names == ["rgbd"]
    assert capture.metadata["frame_ids"] == [int(p.name[6:12]) for p in pose_files]
    K = np.loadtxt(rgbd_dir / "camera-intrinsics.txt")
    for frame, pose_file in zip(capture.frames, pose_files):
        camera = frame.cameras["rgbd"]
        np.testing.assert_array_equal(camera.cam2world, np.loadtxt(pose_file))
        np.testing.assert_array_equal(camera.K, K)
        assert (camera.width, camera.height) == (640, 480)
        assert Path(camera.depth.path).name == pose_file.name.replace("pose.txt", "depth.png")


@pytest.mark.shared_data
def test_shared_sample_poses_need_the_reader_tolerance(rgbd_dir):
    """7-Scenes rotations are not orthonormal to 1e-4 (check_pose's default); the reader's
    tolerance must accept every one of them."""
    errors = []
    for pose_file in rgbd_dir.glob("frame-*.pose.txt"):
        rot = np.loadtxt(pose_file)[:3, :3]
        errors.append(np.abs(rot.T @ rot - np.eye(3)).max())
    assert 1e-4 < max(errors) < POSE_ORTHONORMAL_TOL


@pytest.mark.shared_data
def test_shared_sample_depth_in_metres_and_colour(rgbd_dir):
    camera = read_no_warnings(rgbd_dir).frames[7].cameras["rgbd"]
    raw = np.asarray(Image.open(rgbd_dir / "frame-000035.depth.png"))
    depth = camera.load_depth()
    assert depth.dtype == np.float32 and depth.shape == (480, 640)
    np.testing.assert_allclose(depth, raw.astype(np.float64) / 1000.0, rtol=1e-6)
    assert ((depth == 0) == (raw == 0)).all() and (raw == 0).any()
    colour = np.asarray(Image.open(rgbd_dir / "frame-000035.color.jpg").convert("RGB"))
    np.testing.assert_array_equal(camera.load_image_uint8(), colour)


def _points_world(depth_m: np.ndarray, K: np.ndarray, cam2world: np.ndarray, step: int = 4) -> np.ndarray:
    """Back-project every ``step``-th pixel: x = (u - cx) z / fx, y = (v - cy) z / fy, then R p + t."""
    v, u = np.mgrid[0 : depth_m.shape[0] : step, 0 : depth_m.shape[1] : step]
    z = depth_m[::step, ::step].astype(np.float64)
    valid = z > 0
    x = (u[valid] - K[0, 2]) * z[valid] / K[0, 0]
    y = (v[valid] - K[1, 2]) * z[valid] / K[1, 1]
    points_cam = np.stack([x, y, z[valid]], axis=1)
    return points_cam @ cam2world[:3, :3].T + cam2world[:3, 3]


@pytest.mark.shared_data
def test_two_frames_overlap_in_world(rgbd_dir):
    """Frames 0 and 50 (0.17 m and 5 degrees apart) see the same surfaces: with the right poses and
    axes their world point clouds coincide to about a centimetre; wrong conventions do not."""
    capture = read_no_warnings(rgbd_dir)
    a, b = capture.frames[0].cameras["rgbd"], capture.frames[10].cameras["rgbd"]
    assert capture.metadata["frame_ids"][10] == 50

    def median_gap(transform) -> float:
        cloud_a = _points_world(a.load_depth(), a.K, transform(a.cam2world))
        cloud_b = _points_world(b.load_depth(), b.K, transform(b.cam2world))
        return float(np.median(cKDTree(cloud_a).query(cloud_b)[0]))

    assert median_gap(lambda pose: pose) < 0.05
    # Controls: the same test with the pose inverted or with OpenGL camera axes fails.
    assert median_gap(np.linalg.inv) > 0.05
    assert median_gap(lambda pose: pose @ np.diag([1.0, -1.0, -1.0, 1.0])) > 0.05


# ----------------------------------------------------------------------------------------------
# Self-made folders


def test_self_made_folder_and_depth_scale(tmp_path):
    K = write_intrinsics(tmp_path)
    depth = np.array([[0, 1, 5000, 65535]] * 3, dtype=np.uint16)
    pose = np.eye(4)
    pose[:3, 3] = [1.0, -2.0, 0.5]
    for frame_id in (12, 3, 100):
        write_frame(tmp_path, frame_id, pose=pose, depth=depth, size=(4, 3))
    capture = read_no_warnings(tmp_path, depth_scale=5000.0)
    assert capture.metadata["frame_ids"] == [3, 12, 100]
    assert [f.index for f in capture.frames] == [0, 1, 2]
    camera = capture.frames[1].cameras["rgbd"]
    np.testing.assert_array_equal(camera.K, K)
    np.testing.assert_array_equal(camera.cam2world, pose)
    np.testing.assert_allclose(camera.load_depth(), depth / 5000.0, rtol=1e-7)
    expected = np.asarray(Image.open(tmp_path / "frame-000012.color.png"))
    np.testing.assert_array_equal(camera.load_image_uint8(), expected)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "-1.#INF", "1.#QNAN"])
def test_lost_tracking_pose_is_skipped_with_warning(tmp_path, bad):
    write_intrinsics(tmp_path)
    for frame_id in (0, 1, 2):
        write_frame(tmp_path, frame_id)
    tokens = (tmp_path / "frame-000001.pose.txt").read_text().split()
    tokens[5] = bad
    (tmp_path / "frame-000001.pose.txt").write_text(" ".join(tokens))
    with pytest.warns(UserWarning, match=r"skipped 1 frame\(s\) whose pose is inf/NaN .*\[1\]"):
        capture = read_7scenes(tmp_path)
    assert capture.metadata["frame_ids"] == [0, 2]
    assert [f.index for f in capture.frames] == [0, 1]


def test_missing_intrinsics_warns_and_uses_default(tmp_path):
    write_frame(tmp_path, 0)
    with pytest.warns(UserWarning, match="camera-intrinsics.txt"):
        capture = read_7scenes(tmp_path)
    K = capture.frames[0].cameras["rgbd"].K
    np.testing.assert_array_equal(K, [[585, 0, 320], [0, 585, 240], [0, 0, 1]])
    assert capture.metadata["intrinsics"] == "default"


def test_corrupt_depth_png_fails_on_load_naming_file(tmp_path):
    write_intrinsics(tmp_path)
    write_frame(tmp_path, 0)
    (tmp_path / "frame-000000.depth.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    capture = read_no_warnings(tmp_path)
    with pytest.raises(CaptureError, match=r"frame-000000\.depth\.png: unreadable image"):
        capture.frames[0].cameras["rgbd"].load_depth()


@pytest.mark.parametrize("missing", ["depth.png", "pose.txt", "color.png"])
def test_frame_missing_a_file_is_an_error(tmp_path, missing):
    write_intrinsics(tmp_path)
    write_frame(tmp_path, 0)
    write_frame(tmp_path, 1)
    (tmp_path / f"frame-000001.{missing}").unlink()
    with pytest.raises(CaptureError, match=rf"frame-000001\.{missing.replace('.', '.*')}.*: missing"):
        read_7scenes(tmp_path)


def test_bad_pose_and_intrinsics_files(tmp_path):
    write_intrinsics(tmp_path)
    scaled = np.eye(4)
    scaled[:3, :3] *= 1.01  # not a rotation: 2% error in R^T R
    write_frame(tmp_path, 0, pose=scaled)
    with pytest.raises(CalibrationError, match=r"frame-000000\.pose\.txt: rotation is not orthonormal"):
        read_7scenes(tmp_path)
    (tmp_path / "frame-000000.pose.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n")
    with pytest.raises(CaptureError, match=r"frame-000000\.pose\.txt: expected 16 numbers, got 12"):
        read_7scenes(tmp_path)
    (tmp_path / "frame-000000.pose.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 x")
    with pytest.raises(CaptureError, match=r"pose\.txt: 'x' is not a number"):
        read_7scenes(tmp_path)
    np.savetxt(tmp_path / "frame-000000.pose.txt", np.eye(4))
    np.savetxt(tmp_path / "camera-intrinsics.txt", [[-5.0, 0, 3], [0, 5, 2], [0, 0, 1]])
    with pytest.raises(CalibrationError, match=r"camera-intrinsics\.txt: focal lengths must be > 0"):
        read_7scenes(tmp_path)


def test_not_a_sequence(tmp_path):
    with pytest.raises(CaptureError, match="no such folder"):
        read_7scenes(tmp_path / "missing")
    with pytest.raises(CaptureError, match="no frame-XXXXXX"):
        read_7scenes(tmp_path)


def test_sniff(tmp_path):
    assert not sniff_7scenes(tmp_path) and not sniff_7scenes(tmp_path / "missing")
    write_frame(tmp_path / "seq", 0)
    assert sniff_7scenes(tmp_path / "seq")
    assert not sniff_7scenes(tmp_path / "seq" / "frame-000000.pose.txt")
    (tmp_path / "seq" / "frame-000000.depth.png").unlink()
    assert not sniff_7scenes(tmp_path / "seq")


@pytest.mark.shared_data
def test_sniff_shared_sample(rgbd_dir, tmp_path):
    assert sniff_7scenes(rgbd_dir)
    # A partial copy (a frame without its depth) is refused, naming the missing file.
    for name in ("camera-intrinsics.txt", "frame-000000.color.jpg", "frame-000000.pose.txt"):
        shutil.copy(rgbd_dir / name, tmp_path / name)
    with pytest.raises(CaptureError, match=r"frame-000000\.depth\.png: missing"):
        read_7scenes(tmp_path)
