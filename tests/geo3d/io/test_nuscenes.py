"""Tests of geo3d.io.nuscenes: the shared nuScenes keyframe (mmdetection3d info pickle) and JSON
tables written here from its calibration.

References are independent of the reader: the pickle read with plain ``pickle``, matrices composed
by hand (quaternions through scipy), LiDAR files read with ``np.fromfile``, images with PIL, and
the nuScenes annotators' ``num_lidar_pts`` per box.
"""

from __future__ import annotations

import copy
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from geo3d.errors import CalibrationError, CaptureError
from geo3d.io.nuscenes import (
    read_nuscenes_info,
    read_nuscenes_tables,
    sniff_nuscenes_info,
    sniff_nuscenes_tables,
)

PKL = "n015-2018-07-24-11-22-45+0800.pkl"
LIDAR_FILE = "n015-2018-07-24-11-22-45+0800__LIDAR_TOP__1532402927647951.pcd.bin"
shared = pytest.mark.shared_data


def _raw(nuscenes_dir: Path) -> dict:
    with open(nuscenes_dir / PKL, "rb") as f:
        return pickle.load(f)


def _write_pickle(path: Path, info: dict, protocol: int = 4) -> Path:
    with open(path, "wb") as f:
        pickle.dump(info, f, protocol=protocol)
    return path


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(b).max())


def _project(P: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``[N, 2]`` and depth ``[N]`` of ``[N, 3]`` points under a 3x4 projection."""
    homog = points @ P[:, :3].T + P[:, 3]
    return homog[:, :2] / homog[:, 2:3], homog[:, 2]


# --------------------------------------------------------------------------------------------
# Info pickle on the shared sample


@shared
def test_info_sample_layout(nuscenes_dir):
    raw = _raw(nuscenes_dir)["data_list"][0]
    capture = read_nuscenes_info(nuscenes_dir / PKL)
    assert capture.source_format == "nuscenes-info" and len(capture) == 1
    frame = capture.frames[0]
    assert list(frame.cameras) == list(raw["images"]) and len(frame.cameras) == 6
    assert all(name.startswith("CAM_") for name in frame.cameras)
    for name, cam in frame.cameras.items():
        assert (cam.width, cam.height) == (1600, 900)
        assert cam.timestamp == raw["images"][name]["timestamp"]
        assert 1.5e9 < cam.timestamp < 1.6e9  # seconds (July 2018), not microseconds
        np.testing.assert_array_equal(cam.K, np.array(raw["images"][name]["cam2img"]))
    assert frame.timestamp == raw["timestamp"]
    np.testing.assert_array_equal(frame.ego2world, np.array(raw["ego2global"]))
    assert capture.lidar_names == ["LIDAR_TOP"]
    sweep = frame.lidar["LIDAR_TOP"]
    points = sweep.load_points()
    assert points.shape == (34688, 5) and points.dtype == np.float32
    assert sweep.columns == ("x", "y", "z", "intensity", "ring")
    expected = np.fromfile(nuscenes_dir / LIDAR_FILE, dtype=np.float32).reshape(-1, 5)
    np.testing.assert_array_equal(points, expected)


@shared
@pytest.mark.parametrize("world", ["global", "ego"])
def test_info_projection_reproduces_pickle(nuscenes_dir, world):
    raw = _raw(nuscenes_dir)["data_list"][0]
    capture = read_nuscenes_info(nuscenes_dir / PKL, world=world)
    sweep = capture.frames[0].lidar["LIDAR_TOP"]
    points = sweep.load_points()[:, :3].astype(np.float64)
    for name, cam in capture.frames[0].cameras.items():
        lidar2cam = np.array(raw["images"][name]["lidar2cam"])
        P_ref = np.array(raw["images"][name]["cam2img"]) @ lidar2cam[:3]
        lidar2cam_read = np.linalg.inv(cam.cam2world) @ sweep.sensor2world
        P_read = cam.K @ lidar2cam_read[:3]
        assert _rel_err(lidar2cam_read, lidar2cam) < 1e-9, name
        assert _rel_err(P_read, P_ref) < 1e-9, name
        uv_read, z_read = _project(P_read, points)
        uv_ref, z_ref = _project(P_ref, points)
        front = z_ref > 0.5
        np.testing.assert_allclose(uv_read[front], uv_ref[front], atol=1e-6)
        in_bounds = (uv_read >= -0.5) & (uv_read < [cam.width - 0.5, cam.height - 0.5])
        inside = (z_read > 0) & in_bounds.all(axis=1)
        assert inside.sum() > 1000, (name, inside.sum())
    if world == "ego":
        assert "ego frame" in capture.world_frame
        np.testing.assert_allclose(capture.frames[0].ego2world, np.eye(4), atol=1e-12)
        lidar2ego = np.array(raw["lidar_points"]["lidar2ego"])
        np.testing.assert_allclose(sweep.sensor2world, lidar2ego, atol=1e-9)
        assert np.abs(sweep.sensor2world[:3, 3]).max() < 5  # small coordinates
    else:
        assert "global" in capture.world_frame


@shared
def test_info_images_load_as_uint8(nuscenes_dir):
    capture = read_nuscenes_info(nuscenes_dir / PKL)
    for cam in capture.frames[0].cameras.values():
        pixels = cam.load_image_uint8()
        assert pixels.shape == (900, 1600, 3) and pixels.dtype == np.uint8
    cam = capture.frames[0].cameras["CAM_FRONT"]
    with Image.open(cam.image.path) as image:
        np.testing.assert_array_equal(cam.load_image_uint8(), np.asarray(image.convert("RGB")))


@shared
def test_info_boxes_in_metadata(nuscenes_dir):
    info = _raw(nuscenes_dir)
    capture = read_nuscenes_info(nuscenes_dir / PKL)
    metadata = json.loads(json.dumps(capture.metadata))  # JSON-serialisable as promised
    boxes = metadata["samples"][0]["boxes"]
    instances = info["data_list"][0]["instances"]
    assert len(boxes) == len(instances) == 69
    names = {v: k for k, v in info["metainfo"]["categories"].items()}
    for box, inst in zip(boxes, instances):
        assert box["box"] == pytest.approx(list(inst["bbox_3d"]), abs=0)
        assert box["label"] == names.get(inst["bbox_label_3d"])
    # The documented box convention (centre, l along the heading, yaw about +z, LiDAR frame)
    # reproduces the annotators' per-box LiDAR point counts.
    points = read_nuscenes_info(nuscenes_dir / PKL).frames[0].lidar["LIDAR_TOP"].load_points()[:, :3]
    total = miscount = 0
    for box in boxes:
        x, y, z, length, width, height, yaw = box["box"]
        d = points - np.array([x, y, z])
        along = np.cos(yaw) * d[:, 0] + np.sin(yaw) * d[:, 1]
        across = -np.sin(yaw) * d[:, 0] + np.cos(yaw) * d[:, 1]
        inside = (np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)
        n = np.sum(inside & (np.abs(d[:, 2]) <= height / 2))
        total += box["num_lidar_pts"]
        miscount += abs(int(n) - box["num_lidar_pts"])
    assert total > 500 and miscount < 0.1 * total


@shared
def test_info_resolves_relative_and_bare_names(tmp_path, nuscenes_dir):
    info = _raw(nuscenes_dir)
    entry = info["data_list"][0]
    for name, image in entry["images"].items():
        image["img_path"] = f"samples/{name}/{image['img_path']}"
    entry["lidar_points"]["lidar_path"] = "samples/LIDAR_TOP/" + entry["lidar_points"]["lidar_path"]
    path = _write_pickle(tmp_path / "moved.pkl", info)
    capture = read_nuscenes_info(path, data_root=nuscenes_dir)  # found by basename
    assert capture.frames[0].lidar["LIDAR_TOP"].points.path == nuscenes_dir / LIDAR_FILE
    with pytest.raises(CaptureError, match="LIDAR_TOP__1532402927647951.pcd.bin"):
        read_nuscenes_info(path)  # default data_root: the pickle's folder, which has no data


@shared
@pytest.mark.parametrize("protocol", [2, 5])
def test_info_with_numpy_arrays_and_several_samples(tmp_path, nuscenes_dir, protocol):
    info = _raw(nuscenes_dir)
    entry0 = info["data_list"][0]
    entry1 = copy.deepcopy(entry0)
    move = np.eye(4)
    move[:3, :3] = Rotation.from_euler("z", 0.2).as_matrix()
    move[:3, 3] = [10.0, -3.0, 0.5]
    ego0 = np.array(entry0["ego2global"])
    ego1 = move @ ego0
    entry1.update(ego2global=ego1, token="second", timestamp=entry0["timestamp"] + 0.5)
    for image in entry1["images"].values():  # matrices as NumPy arrays, as some converters store them
        image["cam2img"], image["lidar2cam"] = np.array(image["cam2img"]), np.array(image["lidar2cam"])
    info["data_list"].append(entry1)
    path = _write_pickle(tmp_path / "two.pkl", info, protocol=protocol)

    capture = read_nuscenes_info(path, data_root=nuscenes_dir)
    assert [s["token"] for s in capture.metadata["samples"]] == [entry0["token"], "second"]
    assert len(capture) == 2
    np.testing.assert_allclose(capture.frames[1].ego2world, ego1, atol=1e-9)

    ego = read_nuscenes_info(path, data_root=nuscenes_dir, world="ego")
    np.testing.assert_allclose(ego.frames[0].ego2world, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(ego.frames[1].ego2world, np.linalg.inv(ego0) @ ego1, atol=1e-9)
    lidar2ego = np.array(entry0["lidar_points"]["lidar2ego"])
    lidar2cam = np.array(entry1["images"]["CAM_BACK"]["lidar2cam"])
    expected = np.linalg.inv(ego0) @ ego1 @ lidar2ego @ np.linalg.inv(lidar2cam)
    np.testing.assert_allclose(ego.frames[1].cameras["CAM_BACK"].cam2world, expected, atol=1e-9)

    single = read_nuscenes_info(path, data_root=nuscenes_dir, sample_index=1)
    assert len(single) == 1 and single.metadata["samples"][0]["index"] == 1
    np.testing.assert_allclose(single.frames[0].ego2world, ego1, atol=1e-9)
    with pytest.raises(CaptureError, match="out of range"):
        read_nuscenes_info(path, data_root=nuscenes_dir, sample_index=2)


def _drop(key):
    def mutate(entry):
        del entry["images"]["CAM_BACK"][key]

    return mutate


def _set_cam(key, fn):
    def mutate(entry):
        entry["images"]["CAM_BACK"][key] = fn(np.array(entry["images"]["CAM_BACK"][key]))

    return mutate


def _scaled_rotation(m):
    m = m.copy()
    m[:3, :3] *= 1.01
    return m


def _negative_focal(K):
    K = K.copy()
    K[0, 0] = -K[0, 0]
    return K


@shared
@pytest.mark.parametrize(
    "mutate, error, fragments",
    [
        (_drop("cam2img"), CalibrationError, ["bad.pkl", "CAM_BACK", "cam2img"]),
        (_drop("lidar2cam"), CalibrationError, ["bad.pkl", "CAM_BACK", "lidar2cam"]),
        (_drop("img_path"), CaptureError, ["bad.pkl", "CAM_BACK", "img_path"]),
        (_set_cam("lidar2cam", lambda m: m[:3, :3]), CalibrationError, ["CAM_BACK", "lidar2cam", "shape"]),
        (_set_cam("lidar2cam", _scaled_rotation), CalibrationError, ["CAM_BACK", "lidar2cam", "orthonormal"]),
        (_set_cam("cam2img", _negative_focal), CalibrationError, ["CAM_BACK", "cam2img", "focal"]),
        (_set_cam("img_path", lambda p: "gone.jpg"), CaptureError, ["CAM_BACK", "gone.jpg", "not found"]),
        (lambda e: e.pop("ego2global"), CalibrationError, ["bad.pkl", "data_list[0]", "ego2global"]),
        (lambda e: e.pop("lidar_points"), CaptureError, ["bad.pkl", "lidar_points"]),
        (lambda e: e["lidar_points"].pop("lidar2ego"), CalibrationError, ["lidar_points", "lidar2ego"]),
    ],
)
def test_info_bad_input(tmp_path, nuscenes_dir, mutate, error, fragments):
    info = _raw(nuscenes_dir)
    mutate(info["data_list"][0])
    path = _write_pickle(tmp_path / "bad.pkl", info)
    with pytest.raises(error) as caught:
        read_nuscenes_info(path, data_root=nuscenes_dir)
    for fragment in fragments:
        assert fragment in str(caught.value)


@shared
def test_info_truncated_lidar_file(tmp_path, nuscenes_dir):
    truncated = tmp_path / "cut.pcd.bin"
    truncated.write_bytes((nuscenes_dir / LIDAR_FILE).read_bytes()[: 20 * 100 + 7])
    info = _raw(nuscenes_dir)
    info["data_list"][0]["lidar_points"]["lidar_path"] = str(truncated)
    path = _write_pickle(tmp_path / "cut.pkl", info)
    with pytest.raises(CaptureError, match=r"cut\.pcd\.bin.*multiple of 20"):
        read_nuscenes_info(path, data_root=nuscenes_dir)


def test_info_refuses_code_in_pickles(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = _write_pickle(tmp_path / "evil.pkl", {"data_list": [Payload()]})
    with pytest.raises(CaptureError, match="refusing"):
        read_nuscenes_info(path)
    assert not marker.exists()
    with pytest.raises(CaptureError, match="data_list"):
        read_nuscenes_info(_write_pickle(tmp_path / "other.pkl", {"infos": []}))


@shared
@shared
def test_a_folder_with_one_info_pickle_reads_as_that_pickle(tmp_path, nuscenes_dir):
    from geo3d.io import read_capture

    by_folder, by_file = read_capture(nuscenes_dir), read_capture(nuscenes_dir / PKL)
    assert by_folder.source_format == by_file.source_format == "nuscenes-info"
    assert len(by_folder.frames) == len(by_file.frames) == 1
    a, b = by_folder.frames[0], by_file.frames[0]
    assert list(a.cameras) == list(b.cameras) and np.array_equal(a.ego2world, b.ego2world)
    for name in a.cameras:
        assert np.array_equal(a.cameras[name].cam2world, b.cameras[name].cam2world)
    # two info pickles in one folder: ambiguous, not a capture
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.pkl", "b.pkl"):
        (two / name).write_bytes((nuscenes_dir / PKL).read_bytes())
    assert not sniff_nuscenes_info(two)
    with pytest.raises(CaptureError, match="exactly one"):
        read_nuscenes_info(two)


def test_sniffers(tmp_path, nuscenes_dir):
    assert sniff_nuscenes_info(nuscenes_dir / PKL)
    assert not sniff_nuscenes_info(nuscenes_dir / LIDAR_FILE)
    assert sniff_nuscenes_info(nuscenes_dir)  # a folder holding exactly one info pickle
    assert not sniff_nuscenes_info(_write_pickle(tmp_path / "other.pkl", {"data_list": [1, 2]}))
    assert not sniff_nuscenes_info(tmp_path)  # no info pickle in it
    assert not sniff_nuscenes_tables(nuscenes_dir)
    assert not sniff_nuscenes_tables(tmp_path)
    (tmp_path / "v1.0-mini").mkdir()
    assert not sniff_nuscenes_tables(tmp_path)
    (tmp_path / "v1.0-mini" / "sample.json").write_text("[]")
    assert sniff_nuscenes_tables(tmp_path)


# --------------------------------------------------------------------------------------------
# JSON tables, written from the sample's calibration

VERSION = "v1.0-test"
T0_US = 1532402927647951


def _quat_wxyz(rotation: np.ndarray) -> list[float]:
    x, y, z, w = Rotation.from_matrix(rotation).as_quat()
    return [w, x, y, z]


def _pose_wxyz(quat: list[float], translation) -> np.ndarray:
    """4x4 from a (w, x, y, z) quaternion via scipy (independent of geo3d's conversion)."""
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_quat([quat[1], quat[2], quat[3], quat[0]]).as_matrix()
    pose[:3, 3] = translation
    return pose


def _build_tables(root: Path, raw_entry: dict) -> dict:
    """Write a nuScenes layout with 3 samples in 2 scenes; return the expected values.

    Each camera's sample_data has its own ego pose (0.25 m ahead of the LiDAR's), so a reader that
    used the LiDAR's ego pose for the cameras would fail.
    """
    cams = list(raw_entry["images"])
    sensors = [{"token": f"s-{c}", "channel": c, "modality": "camera"} for c in cams]
    sensors += [{"token": "s-LIDAR_TOP", "channel": "LIDAR_TOP", "modality": "lidar"},
                {"token": "s-RADAR_FRONT", "channel": "RADAR_FRONT", "modality": "radar"}]  # fmt: skip
    calibrated, sensor2ego = [], {}
    for c in cams + ["LIDAR_TOP", "RADAR_FRONT"]:
        m = np.eye(4)
        if c in raw_entry["images"]:
            m = np.array(raw_entry["images"][c]["cam2ego"])
        elif c == "LIDAR_TOP":
            m = np.array(raw_entry["lidar_points"]["lidar2ego"])
        quat, intrinsic = _quat_wxyz(m[:3, :3]), raw_entry["images"].get(c, {}).get("cam2img", [])
        calibrated.append({"token": f"cs-{c}", "sensor_token": f"s-{c}",
                           "translation": m[:3, 3].tolist(), "rotation": quat, "camera_intrinsic": intrinsic})
        sensor2ego[c] = _pose_wxyz(quat, m[:3, 3])
    ego0 = np.array(raw_entry["ego2global"])
    samples, sample_data, ego_poses = [], [], []
    expected = {"order": ["k0", "k1", "k2"], "cam2world": {}, "lidar2world": {}, "ego": {}, "points": {},
                "time": {}, "cam_time": {}, "size": {}}  # fmt: skip
    # sample token -> (time after T0 in microseconds, scene, yaw of the moved ego pose)
    offsets = {"k0": (0, "scene-a", 0.0), "k1": (500_000, "scene-a", 0.1), "k2": (10**8, "scene-b", 0.3)}
    for k, (dt, scene, yaw) in offsets.items():
        move = np.eye(4)
        move[:3, :3] = Rotation.from_euler("z", yaw).as_matrix()
        move[:3, 3] = [dt / 1e5, 2.0 * yaw, 0.0]
        lidar_ego = move @ ego0
        t = T0_US + dt
        samples.append({"token": k, "timestamp": t, "scene_token": f"tok-{scene}", "prev": "", "next": ""})
        for j, c in enumerate(cams + ["LIDAR_TOP", "RADAR_FRONT"]):
            pose = lidar_ego.copy()
            if c.startswith("CAM"):
                pose[:3, 3] += pose[:3, 0] * 0.25  # the car moved 0.25 m forward before this exposure
            ts = t - (10_000 * (j + 1) if c.startswith("CAM") else 0)
            quat = _quat_wxyz(pose[:3, :3])
            ego_poses.append({"token": f"ep-{k}-{c}", "timestamp": ts, "rotation": quat,
                              "translation": pose[:3, 3].tolist()})  # fmt: skip
            ego2global = _pose_wxyz(quat, pose[:3, 3])
            row = {"token": f"sd-{k}-{c}", "sample_token": k, "ego_pose_token": f"ep-{k}-{c}",
                   "calibrated_sensor_token": f"cs-{c}", "timestamp": ts, "is_key_frame": True,
                   "prev": "", "next": ""}  # fmt: skip
            if c.startswith("CAM"):
                png = c == "CAM_BACK_LEFT"
                size = (12, 10) if png else (16, 8)
                row["filename"] = f"samples/{c}/{k}.{'png' if png else 'jpg'}"
                if not png:  # CAM_BACK_LEFT leaves the size to the image header
                    row.update(width=16, height=8)
                (root / "samples" / c).mkdir(parents=True, exist_ok=True)
                Image.new("RGB", size, (10 * j, 80, 160)).save(root / row["filename"])
                expected["cam2world"][k, c] = ego2global @ sensor2ego[c]
                expected["cam_time"][k, c] = ts / 1e6
                expected["size"][c] = size
                sample_data.append({**row, "token": f"sweep-{k}-{c}", "is_key_frame": False,
                                    "filename": f"sweeps/{c}/gone.jpg"})  # fmt: skip
            elif c == "LIDAR_TOP":
                row["filename"] = f"samples/LIDAR_TOP/{k}.pcd.bin"
                points = np.random.default_rng(len(sample_data)).normal(size=(7, 5)).astype(np.float32)
                (root / "samples/LIDAR_TOP").mkdir(parents=True, exist_ok=True)
                points.tofile(root / row["filename"])
                expected["points"][k] = points
                expected["lidar2world"][k] = ego2global @ sensor2ego[c]
                expected["ego"][k] = ego2global
            else:
                row["filename"] = f"samples/RADAR_FRONT/{k}.pcd"  # never opened
            sample_data.append(row)
        expected["time"][k] = t / 1e6
    scenes = [{"token": "tok-scene-b", "name": "scene-b"}, {"token": "tok-scene-a", "name": "scene-a"}]
    tables = {"sample": samples[::-1], "sample_data": sample_data, "calibrated_sensor": calibrated,
              "ego_pose": ego_poses, "sensor": sensors, "scene": scenes}  # fmt: skip
    (root / VERSION).mkdir(parents=True)
    for name, rows in tables.items():
        (root / VERSION / f"{name}.json").write_text(json.dumps(rows))
    expected["cams"], expected["sensor2ego"] = cams, sensor2ego
    expected["K"] = {c: np.array(raw_entry["images"][c]["cam2img"]) for c in cams}
    return expected


@pytest.fixture
def tables(tmp_path, nuscenes_dir):
    root = tmp_path / "nusc"
    return root, _build_tables(root, _raw(nuscenes_dir)["data_list"][0])


def _edit(root: Path, table: str, fn) -> None:
    file = root / VERSION / f"{table}.json"
    rows = json.loads(file.read_text())
    fn(rows)
    file.write_text(json.dumps(rows))


@shared
def test_tables_poses_order_and_units(tables):
    root, expected = tables
    capture = read_nuscenes_tables(root)
    assert capture.source_format == "nuscenes" and "global" in capture.world_frame
    assert [s["token"] for s in capture.metadata["samples"]] == expected["order"]
    assert capture.camera_names == expected["cams"] and capture.lidar_names == ["LIDAR_TOP"]
    for frame, k in zip(capture.frames, expected["order"]):
        assert frame.timestamp == pytest.approx(expected["time"][k], rel=1e-15)
        for c, cam in frame.cameras.items():
            np.testing.assert_allclose(cam.cam2world, expected["cam2world"][k, c], rtol=0, atol=1e-9)
            np.testing.assert_array_equal(cam.K, expected["K"][c])
            assert cam.timestamp == pytest.approx(expected["cam_time"][k, c], rel=1e-15)
            assert (cam.width, cam.height) == expected["size"][c]
            assert cam.load_image_uint8().shape == expected["size"][c][::-1] + (3,)
        sweep = frame.lidar["LIDAR_TOP"]
        np.testing.assert_allclose(sweep.sensor2world, expected["lidar2world"][k], rtol=0, atol=1e-9)
        np.testing.assert_array_equal(sweep.load_points(), expected["points"][k])
        np.testing.assert_allclose(frame.ego2world, expected["ego"][k], rtol=0, atol=1e-9)
    # The camera's own ego pose matters: the LiDAR's would put CAM_FRONT 0.25 m off.
    cam = capture.frames[0].cameras["CAM_FRONT"]
    lidar_based = expected["ego"]["k0"] @ expected["sensor2ego"]["CAM_FRONT"]
    assert np.linalg.norm(lidar_based[:3, 3] - cam.cam2world[:3, 3]) == pytest.approx(0.25, abs=1e-6)


@shared
def test_tables_scene_selection_and_ego_world(tables):
    root, expected = tables
    b = read_nuscenes_tables(root, scene="scene-b")
    assert [s["token"] for s in b.metadata["samples"]] == ["k2"]
    a = read_nuscenes_tables(root, version=VERSION, scene="tok-scene-a", world="ego")
    assert [s["token"] for s in a.metadata["samples"]] == ["k0", "k1"]
    world2ego0 = np.linalg.inv(expected["ego"]["k0"])
    np.testing.assert_allclose(a.frames[0].ego2world, np.eye(4), atol=1e-12)
    for frame, k in zip(a.frames, ["k0", "k1"]):
        for c, cam in frame.cameras.items():
            np.testing.assert_allclose(cam.cam2world, world2ego0 @ expected["cam2world"][k, c], atol=1e-9)
    with pytest.raises(CaptureError, match="scene-a"):
        read_nuscenes_tables(root, scene="scene-zzz")


@shared
def test_tables_version_folders(tables, tmp_path):
    root, _ = tables
    shutil.copytree(root / VERSION, root / "v1.0-other")
    with pytest.raises(CaptureError, match=r"v1\.0-other.*v1\.0-test|v1\.0-test.*v1\.0-other"):
        read_nuscenes_tables(root)
    assert len(read_nuscenes_tables(root, version=VERSION)) == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CaptureError, match=r"v1\.0"):
        read_nuscenes_tables(empty)
    with pytest.raises(CaptureError, match="v1.0-nope"):
        read_nuscenes_tables(root, version="v1.0-nope")


def _set_row(token, key, value):
    def fn(rows):
        next(r for r in rows if r["token"] == token)[key] = value

    return fn


@shared
@pytest.mark.parametrize(
    "table, fn, error, fragments",
    [
        ("calibrated_sensor", None, CaptureError, ["calibrated_sensor.json", "not found"]),
        ("sample_data", _set_row("sd-k1-CAM_FRONT", "ego_pose_token", "dangling"), CaptureError,
         ["sd-k1-CAM_FRONT", "dangling", "ego_pose"]),
        ("calibrated_sensor", _set_row("cs-LIDAR_TOP", "sensor_token", "ghost"), CaptureError,
         ["cs-LIDAR_TOP", "ghost", "sensor"]),
        ("calibrated_sensor", _set_row("cs-CAM_BACK", "camera_intrinsic", []), CalibrationError,
         ["cs-CAM_BACK", "camera_intrinsic", "shape"]),
        ("calibrated_sensor", _set_row("cs-CAM_BACK", "rotation", [2.0, 0.0, 0.0, 0.0]), CalibrationError,
         ["cs-CAM_BACK", "unit length"]),
        ("ego_pose", _set_row("ep-k2-LIDAR_TOP", "translation", [1.0, 2.0]), CalibrationError,
         ["ep-k2-LIDAR_TOP", "translation"]),
        ("sample_data", _set_row("sd-k0-CAM_FRONT", "filename", "samples/CAM_FRONT/nope.jpg"), CaptureError,
         ["nope.jpg", "not found"]),
    ],
)  # fmt: skip
def test_tables_bad_input(tables, table, fn, error, fragments):
    root, _ = tables
    if fn is None:
        (root / VERSION / f"{table}.json").unlink()
    else:
        _edit(root, table, fn)
    with pytest.raises(error) as caught:
        read_nuscenes_tables(root)
    for fragment in fragments:
        assert fragment in str(caught.value)


@shared
def test_tables_truncated_lidar_file(tables):
    root, _ = tables
    file = root / "samples/LIDAR_TOP/k1.pcd.bin"
    file.write_bytes(file.read_bytes()[:-3])
    with pytest.raises(CaptureError, match="k1.pcd.bin"):
        read_nuscenes_tables(root)
