import json
import math
import warnings

import numpy as np
import pytest
from PIL import Image

from geo3d.errors import CalibrationError, CaptureError
from geo3d.io.blender import read_blender, sniff_blender


def test_lego_train_split_matches_the_json(lego_dir):
    capture = read_blender(lego_dir, split="train")
    data = json.loads((lego_dir / "transforms_train.json").read_text())
    assert len(capture) == len(data["frames"]) == 80
    frame = capture.frames[0].cameras["camera"]
    assert (frame.width, frame.height) == (200, 200)
    focal = 0.5 * 200 / math.tan(0.5 * data["camera_angle_x"])
    np.testing.assert_allclose(frame.K, [[focal, 0, 99.5], [0, focal, 99.5], [0, 0, 1]])
    # OpenCV cam2world = OpenGL cam2world with the camera's y and z axes negated
    gl = np.array(data["frames"][0]["transform_matrix"])
    np.testing.assert_allclose(frame.cam2world[:, 0], gl[:, 0])
    np.testing.assert_allclose(frame.cam2world[:, 1:3], -gl[:, 1:3])
    np.testing.assert_allclose(frame.cam2world[:, 3], gl[:, 3])
    image = frame.load_image()
    assert image.shape == (200, 200, 4) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    reference = np.asarray(Image.open(lego_dir / "train" / "r_0.png"), dtype=np.float32) / 255
    np.testing.assert_array_equal(image, reference)


def test_lego_cameras_look_at_the_object(lego_dir):
    # The lego sits at the world origin: every camera's +z (OpenCV forward) must point at it.
    capture = read_blender(lego_dir, split="all")
    assert set(capture.metadata["splits"]) == {"train", "test"}
    assert len(capture.metadata["splits"]["test"]) == 10
    for cam in capture.camera_frames():
        centre, forward = cam.cam2world[:3, 3], cam.cam2world[:3, 2]
        to_origin = -centre / np.linalg.norm(centre)
        assert forward @ to_origin > 0.99
        # projecting the origin lands near the image centre
        p = cam.world2cam @ np.array([0, 0, 0, 1.0])
        u, v = (cam.K @ p[:3])[:2] / p[2]
        assert abs(u - 99.5) < 20 and abs(v - 99.5) < 20


def _write_scene(folder, frames, **extra):
    folder.mkdir(parents=True, exist_ok=True)
    for entry in frames:
        image_path = folder / (entry["file_path"] + ".png")
        image_path.parent.mkdir(parents=True, exist_ok=True)
        if not entry.pop("_missing", False):
            Image.fromarray(np.full((6, 8, 3), 128, np.uint8)).save(image_path)
    (folder / "transforms.json").write_text(json.dumps({**extra, "frames": frames}))
    return folder


def test_nerfstudio_intrinsics_shift_principal_point_and_keep_distortion(tmp_path):
    folder = _write_scene(
        tmp_path / "s",
        [{"file_path": "images/a", "transform_matrix": np.eye(4).tolist()}],
        fl_x=10.0, fl_y=11.0, cx=4.0, cy=3.0, w=8, h=6, k1=0.1,
    )
    cam = read_blender(folder).frames[0].cameras["camera"]
    np.testing.assert_array_equal(cam.K, [[10, 0, 3.5], [0, 11, 2.5], [0, 0, 1]])
    np.testing.assert_array_equal(cam.distortion, [0.1, 0, 0, 0, 0])
    assert sniff_blender(folder) and sniff_blender(folder / "transforms.json")
    assert not sniff_blender(tmp_path)


def test_missing_image_is_skipped_with_a_warning(tmp_path):
    frames = [
        {"file_path": "images/a", "transform_matrix": np.eye(4).tolist()},
        {"file_path": "images/b", "transform_matrix": np.eye(4).tolist(), "_missing": True},
    ]
    folder = _write_scene(tmp_path / "s", frames, camera_angle_x=1.0)
    with pytest.warns(UserWarning, match="skipped 1 frame"):
        capture = read_blender(folder)
    assert len(capture) == 1


@pytest.mark.parametrize(
    "frames, extra, error, message",
    [
        ([{"file_path": "images/a", "transform_matrix": np.eye(3).tolist()}], {"camera_angle_x": 1.0},
         CalibrationError, "frame 0 transform_matrix: expected a 4x4"),
        ([{"file_path": "images/a", "transform_matrix": np.diag([2.0, 1, 1, 1]).tolist()}],
         {"camera_angle_x": 1.0}, CalibrationError, "not orthonormal"),
        ([{"file_path": "images/a", "transform_matrix": np.eye(4).tolist()}], {},
         CalibrationError, "missing intrinsics"),
        ([{"file_path": "images/a"}], {"camera_angle_x": 1.0}, CaptureError, "transform_matrix"),
    ],
)  # fmt: skip
def test_bad_calibration_names_file_and_frame(tmp_path, frames, extra, error, message):
    folder = _write_scene(tmp_path / "s", frames, **extra)
    with pytest.raises(error, match=message) as info:
        read_blender(folder)
    assert "transforms.json" in str(info.value)


def test_corrupt_json_and_unreadable_image(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "transforms.json").write_text("{not json")
    with pytest.raises(CaptureError, match="invalid JSON"):
        read_blender(folder)
    folder = _write_scene(tmp_path / "t", [{"file_path": "a", "transform_matrix": np.eye(4).tolist()}],
                          camera_angle_x=1.0)  # fmt: skip
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(CaptureError, match="a.png: unreadable image"):
        read_blender(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CaptureError, match="no transforms"):
            read_blender(tmp_path)
