"""COLMAP reader against models written here, in both formats, from a known ground truth.

The writers below follow COLMAP's documented file formats and are independent of the reader; the
ground-truth poses come from scipy (quaternions reordered from scipy's (x, y, z, w)), and the 2D
observations are projected in COLMAP's pixel convention (top-left pixel centre at (0.5, 0.5)).
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from geo3d.errors import CalibrationError, CaptureError
from geo3d.geometry.poses import invert_pose
from geo3d.io.colmap import read_colmap, sniff_colmap

MODEL_IDS = {"SIMPLE_PINHOLE": 0, "PINHOLE": 1, "SIMPLE_RADIAL": 2, "RADIAL": 3, "OPENCV": 4,
             "OPENCV_FISHEYE": 5, "FULL_OPENCV": 6}  # fmt: skip


@dataclass
class Model:
    cameras: list[tuple[int, str, int, int, list[float]]] = field(default_factory=list)
    # (image_id, qvec (w, x, y, z), tvec, camera_id, name, [(x, y, point3d_id)])
    images: list[tuple[int, np.ndarray, np.ndarray, int, str, list[tuple[float, float, int]]]] = field(
        default_factory=list
    )
    # (point_id, xyz, rgb, error, [(image_id, point2d_idx)])
    points: list[tuple[int, np.ndarray, tuple[int, int, int], float, list[tuple[int, int]]]] = field(
        default_factory=list
    )


def write_bin(folder: Path, model: Model) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = struct.pack("<Q", len(model.cameras))
    for camera_id, name, width, height, params in model.cameras:
        data += struct.pack("<iiQQ", camera_id, MODEL_IDS[name], width, height)
        data += struct.pack(f"<{len(params)}d", *params)
    (folder / "cameras.bin").write_bytes(data)
    data = struct.pack("<Q", len(model.images))
    for image_id, qvec, tvec, camera_id, name, points2d in model.images:
        data += struct.pack("<i4d3di", image_id, *qvec, *tvec, camera_id) + name.encode() + b"\x00"
        data += struct.pack("<Q", len(points2d))
        for x, y, point_id in points2d:
            data += struct.pack("<ddq", x, y, point_id)
    (folder / "images.bin").write_bytes(data)
    data = struct.pack("<Q", len(model.points))
    for point_id, xyz, rgb, error, track in model.points:
        data += struct.pack("<Q3d3BdQ", point_id, *xyz, *rgb, error, len(track))
        for image_id, idx in track:
            data += struct.pack("<ii", image_id, idx)
    (folder / "points3D.bin").write_bytes(data)


def write_txt(folder: Path, model: Model) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# Camera list with one line of data per camera:",
             "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    lines += [" ".join(map(repr, [i, m, w, h, *p])).replace("'", "") for i, m, w, h, p in model.cameras]
    (folder / "cameras.txt").write_text("\n".join(lines) + "\n")
    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
    ]
    for image_id, qvec, tvec, camera_id, name, points2d in model.images:
        header = [image_id, *map(float, qvec), *map(float, tvec), camera_id]
        lines.append(" ".join(map(repr, header)) + " " + name)
        lines.append(" ".join(f"{x!r} {y!r} {pid}" for x, y, pid in points2d))
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    lines = ["# 3D point list with one line of data per point:"]
    for point_id, xyz, rgb, error, track in model.points:
        fields = [point_id, *map(float, xyz), *rgb, error, *[v for pair in track for v in pair]]
        lines.append(" ".join(map(repr, fields)))
    (folder / "points3D.txt").write_text("\n".join(lines) + "\n")


def distort(xn, yn, k1=0.0, k2=0.0, p1=0.0, p2=0.0, k3=0.0, k4=0.0, k5=0.0, k6=0.0):
    """OpenCV's rational radial-tangential model (= COLMAP's FULL_OPENCV) on normalised coordinates."""
    r2 = xn * xn + yn * yn
    radial = (1 + k1 * r2 + k2 * r2**2 + k3 * r2**3) / (1 + k4 * r2 + k5 * r2**2 + k6 * r2**3)
    xd = xn * radial + 2 * p1 * xn * yn + p2 * (r2 + 2 * xn * xn)
    yd = yn * radial + p1 * (r2 + 2 * yn * yn) + 2 * p2 * xn * yn
    return xd, yd


# camera id -> (model, width, height, params in COLMAP order, fx, fy, cx, cy, OpenCV distortion)
CAMERAS = {
    1: ("PINHOLE", 40, 30, [35.0, 36.5, 20.3, 14.8], None),
    2: ("SIMPLE_RADIAL", 32, 24, [30.0, 16.1, 11.9, -0.07], dict(k1=-0.07)),
    3: ("OPENCV", 48, 36, [40.0, 41.0, 24.2, 17.6, -0.05, 0.01, 0.002, -0.001], dict(k1=-0.05, k2=0.01, p1=0.002, p2=-0.001)),
}  # fmt: skip
FOCAL_PP = {1: (35.0, 36.5, 20.3, 14.8), 2: (30.0, 30.0, 16.1, 11.9), 3: (40.0, 41.0, 24.2, 17.6)}
# (image id, camera id, name): names out of id order; the frame order (by name) is a, b, c, e, sub dir/d.
IMAGES = [(7, 1, "c.png"), (3, 2, "a.png"), (9, 3, "e.png"), (1, 1, "b.png"), (4, 3, "sub dir/d.png")]
POINT_IDS = [10, 2, 33, 4, 5, 6]


@pytest.fixture(scope="module")
def truth():
    """Ground truth: world2cam (R, t) per image id, the points, and the COLMAP model."""
    rng = np.random.default_rng(0)
    model = Model(cameras=[(cid, m, w, h, p) for cid, (m, w, h, p, _) in CAMERAS.items()])
    points_xyz = rng.uniform(-0.3, 0.3, (len(POINT_IDS), 3))
    tracks: dict[int, list[tuple[int, int]]] = {pid: [] for pid in POINT_IDS}
    world2cam = {}
    for k, (image_id, camera_id, name) in enumerate(IMAGES):
        centre = rng.normal(size=3)
        centre *= 4.0 / np.linalg.norm(centre)
        z = -centre / np.linalg.norm(centre)
        x = np.cross(rng.normal(size=3), z)
        x /= np.linalg.norm(x)
        cam2world_rot = np.stack([x, np.cross(z, x), z], axis=1)
        rot = cam2world_rot.T
        t = -rot @ centre
        qx, qy, qz, qw = Rotation.from_matrix(rot).as_quat()
        qvec = np.array([qw, qx, qy, qz]) * (-1.0 if k == 2 else 1.0)  # q and -q: the same rotation
        world2cam[image_id] = (rot, t)
        points2d = [] if k == 1 else [(1.5, 2.5, -1)]  # image "a.png" has no 2D points at all
        if k != 1:
            fx, fy, cx, cy = FOCAL_PP[camera_id]
            for pid, xyz in zip(POINT_IDS, points_xyz):
                p_cam = rot @ xyz + t
                xd, yd = distort(p_cam[0] / p_cam[2], p_cam[1] / p_cam[2], **(CAMERAS[camera_id][4] or {}))
                tracks[pid].append((image_id, len(points2d)))
                points2d.append((fx * xd + cx, fy * yd + cy, pid))
        model.images.append((image_id, qvec, t, camera_id, name, points2d))
    rgb = rng.integers(0, 256, (len(POINT_IDS), 3))
    errors = rng.uniform(0.1, 2.0, len(POINT_IDS))
    for i, pid in enumerate(POINT_IDS):
        colour = tuple(int(c) for c in rgb[i])
        model.points.append((pid, points_xyz[i], colour, float(errors[i]), tracks[pid]))
    return world2cam, model


def make_project(root: Path, model: Model, fmt: str) -> Path:
    """``root/sparse/0`` with the model and ``root/images`` with random PNGs of the right sizes."""
    (write_bin if fmt == "bin" else write_txt)(root / "sparse" / "0", model)
    rng = np.random.default_rng(1)
    for _, camera_id, name in IMAGES:
        _, width, height, _, _ = CAMERAS[camera_id]
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / "images" / name)
    return root


def read_quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_colmap(*args, **kwargs)


@pytest.fixture(params=["bin", "txt"])
def project(request, tmp_path, truth):
    return make_project(tmp_path / "project", truth[1], request.param)


def test_poses_intrinsics_and_order(project, truth):
    world2cam, _ = truth
    with pytest.warns(UserWarning, match="distortion"):
        capture = read_colmap(project)
    names = sorted(name for _, _, name in IMAGES)
    image_paths = [Path(c.image.path).relative_to(project / "images") for c in capture.camera_frames()]
    assert [p.as_posix() for p in image_paths] == names
    assert capture.camera_names == ["camera_2", "camera_1", "camera_3"]
    by_name = {name: (image_id, camera_id) for image_id, camera_id, name in IMAGES}
    for frame, name in zip(capture.frames, names):
        (camera,) = frame.cameras.values()
        image_id, camera_id = by_name[name]
        assert camera.camera == f"camera_{camera_id}"
        rot, t = world2cam[image_id]
        w2c = invert_pose(camera.cam2world)
        np.testing.assert_allclose(w2c[:3, :3], rot, atol=1e-12)
        np.testing.assert_allclose(w2c[:3, 3], t, atol=1e-12)
        fx, fy, cx, cy = FOCAL_PP[camera_id]
        np.testing.assert_array_equal(camera.K, [[fx, 0, cx - 0.5], [0, fy, cy - 0.5], [0, 0, 1]])
        assert (camera.width, camera.height) == CAMERAS[camera_id][1:3]
    assert capture.metadata["image_ids"] == [by_name[n][0] for n in names]


def test_projection_lands_on_observations(project, truth):
    """Project each 3D point with the capture's K, cam2world and distortion: it must land on the
    written COLMAP observation minus 0.5 (geo3d puts pixel centres at integers)."""
    _, model = truth
    capture = read_quiet(project)
    xyz_by_id = dict(zip(sorted(POINT_IDS), capture.points3d.xyz))
    frame_by_image_id = dict(zip(capture.metadata["image_ids"], capture.frames))
    checked = 0
    for image_id, _, _, _, _, points2d in model.images:
        (camera,) = frame_by_image_id[image_id].cameras.values()
        w2c = np.linalg.inv(camera.cam2world)
        for u_colmap, v_colmap, pid in points2d:
            if pid < 0:
                continue
            p_cam = w2c[:3, :3] @ xyz_by_id[pid] + w2c[:3, 3]
            coeffs = [] if camera.distortion is None else list(camera.distortion)
            xd, yd = distort(p_cam[0] / p_cam[2], p_cam[1] / p_cam[2], *coeffs)
            u, v, _ = camera.K @ [xd, yd, 1.0]
            np.testing.assert_allclose([u, v], [u_colmap - 0.5, v_colmap - 0.5], atol=1e-9)
            checked += 1
    assert checked == 4 * len(POINT_IDS)


def test_points3d(project, truth):
    _, model = truth
    capture = read_quiet(project)
    expected = sorted(model.points, key=lambda p: p[0])
    np.testing.assert_array_equal(capture.points3d.xyz, [p[1] for p in expected])
    np.testing.assert_array_equal(capture.points3d.rgb, [p[2] for p in expected])
    np.testing.assert_array_equal(capture.points3d.error, [p[3] for p in expected])
    assert capture.points3d.xyz.dtype == np.float64 and capture.points3d.rgb.dtype == np.uint8


def test_bin_and_txt_give_identical_captures(tmp_path, truth):
    a = read_quiet(make_project(tmp_path / "b", truth[1], "bin"))
    b = read_quiet(make_project(tmp_path / "t", truth[1], "txt"))
    assert len(a.frames) == len(b.frames) == len(IMAGES)
    for fa, fb in zip(a.frames, b.frames):
        (ca,), (cb,) = fa.cameras.values(), fb.cameras.values()
        assert (ca.camera, ca.width, ca.height) == (cb.camera, cb.width, cb.height)
        np.testing.assert_array_equal(ca.K, cb.K)
        np.testing.assert_array_equal(ca.cam2world, cb.cam2world)
        assert (ca.distortion is None) == (cb.distortion is None)
        if ca.distortion is not None:
            np.testing.assert_array_equal(ca.distortion, cb.distortion)
        np.testing.assert_array_equal(ca.load_image_uint8(), cb.load_image_uint8())
    for name in ("xyz", "rgb", "error"):
        np.testing.assert_array_equal(getattr(a.points3d, name), getattr(b.points3d, name))
    assert (a.metadata["format"], b.metadata["format"]) == ("bin", "txt")


def test_images_are_found_from_any_layout_entry(project):
    expected = np.asarray(Image.open(project / "images" / "sub dir" / "d.png"))
    model_dir = project / "sparse" / "0"
    for entry in (project, project / "sparse", model_dir, next(model_dir.iterdir())):
        capture = read_quiet(entry)
        assert Path(capture.metadata["images_dir"]) == project / "images"
        np.testing.assert_array_equal(capture.frames[4].cameras["camera_3"].load_image_uint8(), expected)
    moved = project.parent / "elsewhere"
    (project / "images").rename(moved)
    capture = read_quiet(project, images_dir=moved)
    np.testing.assert_array_equal(capture.frames[4].cameras["camera_3"].load_image_uint8(), expected)


def test_missing_images_folder_keeps_frames_and_fails_on_load(project):
    (project / "images" / "sub dir" / "d.png").unlink()
    (project / "images" / "sub dir").rmdir()
    for file in (project / "images").iterdir():
        file.unlink()
    (project / "images").rmdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        capture = read_colmap(project)
    assert any("image folder" in str(w.message) for w in caught)
    assert len(capture.frames) == len(IMAGES)
    with pytest.raises(CaptureError, match=r"images/a\.png"):
        capture.frames[0].cameras["camera_2"].load_image_uint8()


@pytest.mark.parametrize(
    "model, params, K, distortion",
    [
        ("SIMPLE_PINHOLE", [50.0, 20.0, 10.0], [50, 50, 19.5, 9.5], None),
        ("PINHOLE", [50.0, 51.0, 20.0, 10.0], [50, 51, 19.5, 9.5], None),
        ("SIMPLE_RADIAL", [50.0, 20.0, 10.0, 0.1], [50, 50, 19.5, 9.5], [0.1, 0, 0, 0]),
        ("RADIAL", [50.0, 20.0, 10.0, 0.1, -0.2], [50, 50, 19.5, 9.5], [0.1, -0.2, 0, 0]),
        ("OPENCV", [50.0, 51.0, 20.0, 10.0, 0.1, -0.2, 0.01, 0.02], [50, 51, 19.5, 9.5], [0.1, -0.2, 0.01, 0.02]),
        ("OPENCV", [50.0, 51.0, 20.0, 10.0, 0.0, 0.0, 0.0, 0.0], [50, 51, 19.5, 9.5], None),
        ("FULL_OPENCV", [50.0, 51.0, 20.0, 10.0, 0.1, -0.2, 0.01, 0.02, 0.3, 0.4, 0.5, 0.6], [50, 51, 19.5, 9.5],
         [0.1, -0.2, 0.01, 0.02, 0.3, 0.4, 0.5, 0.6]),
    ],
)  # fmt: skip
@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_camera_models(tmp_path, model, params, K, distortion, fmt):
    identity = (1, np.array([1.0, 0, 0, 0]), np.zeros(3), 5, "x.png", [])
    colmap = Model(cameras=[(5, model, 40, 20, params)], images=[identity])
    (write_bin if fmt == "bin" else write_txt)(tmp_path, colmap)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        capture = read_colmap(tmp_path)
    (camera,) = capture.frames[0].cameras.values()
    fx, fy, cx, cy = K
    np.testing.assert_array_equal(camera.K, [[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    assert camera.camera == "camera_5" and capture.points3d is None
    if distortion is None:
        assert camera.distortion is None
    else:
        np.testing.assert_array_equal(camera.distortion, distortion)
    assert sum("distortion" in str(w.message) for w in caught) == (distortion is not None)


@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_unsupported_model_is_named(tmp_path, fmt):
    colmap = Model(cameras=[(1, "OPENCV_FISHEYE", 40, 20, [50.0, 50.0, 20.0, 10.0, 0.1, 0.0, 0.0, 0.0])],
                   images=[(1, np.array([1.0, 0, 0, 0]), np.zeros(3), 1, "x.png", [])])  # fmt: skip
    (write_bin if fmt == "bin" else write_txt)(tmp_path, colmap)
    with pytest.raises(CaptureError, match="OPENCV_FISHEYE"):
        read_quiet(tmp_path)


@pytest.mark.parametrize("name", ["cameras.bin", "images.bin", "points3D.bin"])
def test_truncated_bin_names_file_and_field(tmp_path, truth, name):
    write_bin(tmp_path, truth[1])
    data = (tmp_path / name).read_bytes()
    for cut in (3, 8, 20, len(data) // 2, len(data) - 1):
        (tmp_path / name).write_bytes(data[:cut])
        with pytest.raises(CaptureError, match=rf"{name}: truncated or corrupt file: .*(reading|has no end)"):
            read_quiet(tmp_path)
    (tmp_path / name).write_bytes(data + b"\x00")
    with pytest.raises(CaptureError, match=rf"{name}: corrupt file: 1 unexpected bytes"):
        read_quiet(tmp_path)


def test_corrupt_count_fails_fast(tmp_path, truth):
    write_bin(tmp_path, truth[1])
    data = (tmp_path / "points3D.bin").read_bytes()
    (tmp_path / "points3D.bin").write_bytes(struct.pack("<Q", 2**60) + data[8:])
    message = rf"points3D\.bin: truncated or corrupt file: reading {2**60} 3D points"
    with pytest.raises(CaptureError, match=message):
        read_quiet(tmp_path)


@pytest.mark.parametrize(
    "name, line, replacement, message",
    [
        ("cameras.txt", 3, "1 PINHOLE 40 30 35.0 36.5 20.3", r"cameras\.txt: line 3: camera model PINHOLE takes 4"),
        ("cameras.txt", 4, "2 SIMPLE_RADIAL 32 24 30.0 16.1 abc -0.07", r"cameras\.txt: line 4: camera parameters"),
        ("cameras.txt", 5, "3 OPENCV 48", r"cameras\.txt: line 5: expected CAMERA_ID"),
        ("images.txt", 4, "7 1.0 0.0 0.0 0.0 0.0 0.0 0.0 1", r"images\.txt: line 4: expected IMAGE_ID .* got 9 fields"),
        ("images.txt", 5, "1.0 2.0", r"images\.txt: line 5: 2D points of image 7"),
        ("points3D.txt", 2, "10 0.0 0.0 0.0 1 2 3 0.5 7", r"points3D\.txt: line 2: expected POINT3D_ID"),
        ("points3D.txt", 3, "2 0.0 0.0 0.0 1 2 300 0.5", r"points3D\.txt: line 3: colour"),
    ],
)  # fmt: skip
def test_bad_text_line_names_file_and_line(tmp_path, truth, name, line, replacement, message):
    write_txt(tmp_path, truth[1])
    lines = (tmp_path / name).read_text().splitlines()
    lines[line - 1] = replacement
    (tmp_path / name).write_text("\n".join(lines) + "\n")
    with pytest.raises(CaptureError, match=message):
        read_quiet(tmp_path)


def test_missing_files_unknown_camera_and_zero_quaternion(tmp_path, truth):
    with pytest.raises(CaptureError, match="no such file or folder"):
        read_colmap(tmp_path / "nope")
    with pytest.raises(CaptureError, match="no COLMAP model"):
        read_colmap(tmp_path)
    write_bin(tmp_path / "m", truth[1])
    (tmp_path / "m" / "images.bin").unlink()
    with pytest.raises(CaptureError, match=r"incomplete COLMAP model, missing images\.bin"):
        read_colmap(tmp_path / "m")
    colmap = Model(cameras=[(1, "PINHOLE", 4, 4, [5.0, 5.0, 2.0, 2.0])],
                   images=[(1, np.array([1.0, 0, 0, 0]), np.zeros(3), 2, "x.png", [])])  # fmt: skip
    write_txt(tmp_path / "u", colmap)
    message = r"images\.txt: image 1 \('x\.png'\): camera 2 is not in cameras\.txt"
    with pytest.raises(CaptureError, match=message):
        read_quiet(tmp_path / "u")
    colmap.cameras[0] = (2, "PINHOLE", 4, 4, [5.0, 5.0, 2.0, 2.0])
    colmap.images = [(1, np.zeros(4), np.zeros(3), 2, "x.png", [])]
    write_bin(tmp_path / "q", colmap)
    with pytest.raises(CalibrationError, match=r"images\.bin: image 1 \('x\.png'\): quaternion .* is not a rotation"):
        read_quiet(tmp_path / "q")


def test_sniff(tmp_path, truth):
    project = make_project(tmp_path / "p", truth[1], "txt")
    assert sniff_colmap(project) and sniff_colmap(project / "sparse" / "0")
    assert sniff_colmap(project / "sparse" / "0" / "cameras.txt")
    assert not sniff_colmap(project / "images") and not sniff_colmap(tmp_path / "missing")
    assert not sniff_colmap(project / "images" / "a.png")
