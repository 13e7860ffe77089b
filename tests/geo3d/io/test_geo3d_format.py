import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from geo3d.errors import CaptureError
from geo3d.io.capture_writer import CaptureExistsError, CaptureWriter, write_capture
from geo3d.io.geo3d_format import FORMAT_VERSION, MANIFEST, read_geo3d, sniff_geo3d
from geo3d.structures import ArraySource

from capture_factory import assert_same_capture, make_capture


def test_round_trip_preserves_every_field_exactly(tmp_path):
    capture = make_capture()
    write_capture(capture, tmp_path / "cap")
    again = read_geo3d(tmp_path / "cap")
    assert_same_capture(capture, again)
    # and a second generation is identical too (file-backed sources re-encode losslessly)
    write_capture(again, tmp_path / "cap2")
    assert_same_capture(capture, read_geo3d(tmp_path / "cap2"))
    assert sniff_geo3d(tmp_path / "cap") and not sniff_geo3d(tmp_path)


def test_existing_output_needs_overwrite_and_is_replaced_whole(tmp_path):
    write_capture(make_capture(0), tmp_path / "cap")
    with pytest.raises(FileExistsError):
        write_capture(make_capture(1), tmp_path / "cap")
    write_capture(make_capture(1, frames=1), tmp_path / "cap", overwrite=True)
    assert len(read_geo3d(tmp_path / "cap")) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["cap"]  # no temporary folders left behind


def test_failed_write_leaves_nothing(tmp_path):
    capture = make_capture()
    capture.frames[1].cameras["CAM_FRONT"].image = ArraySource.of(np.zeros((2, 2), np.float32))
    with pytest.raises(CaptureError):
        write_capture(capture, tmp_path / "cap")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_writer_process_leaves_no_partial_capture(tmp_path):
    # A child process writes a large capture and is killed mid-way: the target never appears.
    script = (
        "import numpy as np, sys\n"
        "sys.path.insert(0, %r)\n"
        "from capture_factory import make_capture\n"
        "from geo3d.structures import ArraySource\n"
        "from geo3d.io.capture_writer import write_capture\n"
        "cap = make_capture(frames=400)\n"
        "for cam in cap.camera_frames():\n"
        "    cam.width, cam.height = 640, 480\n"
        "    cam.image = ArraySource.of(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8))\n"
        "    cam.depth = cam.semantic = cam.instance = None\n"
        "print('start', flush=True)\n"
        "write_capture(cap, %r)\n"
    ) % (str(Path(__file__).resolve().parents[2]), str(tmp_path / "cap"))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "start"
    import time

    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cap").exists()


def test_version_and_corruption_errors(tmp_path):
    write_capture(make_capture(), tmp_path / "cap")
    manifest = tmp_path / "cap" / MANIFEST
    data = json.loads(manifest.read_text())

    data["version"] = FORMAT_VERSION + 1
    manifest.write_text(json.dumps(data))
    with pytest.raises(CaptureError, match="newer geo3d"):
        read_geo3d(tmp_path / "cap")

    data["version"] = FORMAT_VERSION
    del data["frames"][0]["cameras"]["CAM_FRONT"]["K"]
    manifest.write_text(json.dumps(data))
    with pytest.raises(CaptureError, match="frame 0 camera 'CAM_FRONT': missing key 'K'"):
        read_geo3d(tmp_path / "cap")

    manifest.write_text(manifest.read_text()[:100])
    with pytest.raises(CaptureError, match="corrupt manifest"):
        read_geo3d(tmp_path / "cap")


def test_truncated_array_and_missing_file(tmp_path):
    write_capture(make_capture(), tmp_path / "cap")
    lidar_file = tmp_path / "cap" / "lidar" / "LIDAR_TOP" / "000000.npy"
    lidar_file.write_bytes(lidar_file.read_bytes()[:-40])
    capture = read_geo3d(tmp_path / "cap")
    with pytest.raises(CaptureError, match="corrupt or truncated"):
        next(capture.lidar_sweeps()).load_points()
    next((tmp_path / "cap" / "images").rglob("*.png")).unlink()
    with pytest.raises(CaptureError, match="file not found"):
        read_geo3d(tmp_path / "cap")


# -- compression, occupancy, versions --------------------------------------------------------------


def _array_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.np[yz]"))


def test_compressed_round_trip_is_exact_and_uses_npz(tmp_path):
    capture = make_capture(frames=3)
    write_capture(capture, tmp_path / "plain")
    write_capture(capture, tmp_path / "small", compress=True)
    again = read_geo3d(tmp_path / "small")
    assert_same_capture(capture, again)
    plain, small = _array_files(tmp_path / "plain"), _array_files(tmp_path / "small")
    assert all(f.endswith(".npy") or f.startswith("occupancy/") for f in plain)
    assert all(f.endswith(".npz") for f in small) and len(small) == len(plain)
    assert json.loads((tmp_path / "plain" / MANIFEST).read_text())["version"] == 1  # older geo3d reads it
    assert json.loads((tmp_path / "small" / MANIFEST).read_text())["version"] == 2
    # other programs read the arrays with NumPy alone: one array, key "data"
    depth = np.load(tmp_path / "small" / "depth" / "CAM_FRONT" / "000001.npz")
    assert depth.files == ["data"]
    np.testing.assert_array_equal(depth["data"], capture.frames[1].cameras["CAM_FRONT"].load_depth())
    # and a compressed capture read back can be written uncompressed again, still exact
    write_capture(again, tmp_path / "plain2")
    assert_same_capture(capture, read_geo3d(tmp_path / "plain2"))


def test_occupancy_file_uses_occ3d_keys(tmp_path):
    capture = make_capture(frames=3)
    write_capture(capture, tmp_path / "cap")
    frames = json.loads((tmp_path / "cap" / MANIFEST).read_text())["frames"]
    record = frames[0]["occupancy"]
    occ = capture.frames[0].occupancy
    assert record["file"] == "occupancy/000000.npz" and record["frame"] == "ego" and record["shape"] == [6, 5, 3]
    assert record["origin"] == occ.origin.tolist() and record["voxel_size"] == occ.voxel_size.tolist()
    assert frames[1]["occupancy"]["keys"] == ["semantics", "mask_lidar"] and frames[2]["occupancy"] is None
    with np.load(tmp_path / "cap" / record["file"]) as labels:  # as Occ3D's labels.npz
        assert sorted(labels.files) == ["instances", "mask_camera", "mask_lidar", "semantics"]
        assert labels["semantics"].dtype == np.uint8 and labels["mask_camera"].dtype == np.uint8
        np.testing.assert_array_equal(labels["mask_camera"], occ.load_mask("camera"))
    # reading is lazy: nothing is decoded until asked
    lazy = read_geo3d(tmp_path / "cap").frames[0].occupancy
    assert lazy.semantics.array is None and lazy.semantics.path == tmp_path / "cap" / record["file"]


def test_captures_without_occupancy_key_still_read(tmp_path):
    # files written before occupancy existed have no "occupancy" key at all
    write_capture(make_capture(), tmp_path / "cap")
    manifest = tmp_path / "cap" / MANIFEST
    data = json.loads(manifest.read_text())
    for frame in data["frames"]:
        del frame["occupancy"]
    manifest.write_text(json.dumps(data))
    expected = make_capture()
    for frame in expected.frames:
        frame.occupancy = None
    assert_same_capture(expected, read_geo3d(tmp_path / "cap"))


def test_corrupt_npz_files_name_the_file(tmp_path):
    write_capture(make_capture(), tmp_path / "cap", compress=True)
    occ_file = tmp_path / "cap" / "occupancy" / "000000.npz"
    occ_file.write_bytes(occ_file.read_bytes()[:-100])
    occ = read_geo3d(tmp_path / "cap").frames[0].occupancy
    with pytest.raises(CaptureError, match=r"occupancy/000000.npz: corrupt or truncated .npz"):
        occ.load_semantics()
    depth_file = tmp_path / "cap" / "depth" / "CAM_FRONT" / "000000.npz"
    data = bytearray(depth_file.read_bytes())
    data[60:90] = bytes(30)  # damage the deflated stream inside the archive
    depth_file.write_bytes(bytes(data))
    cam = read_geo3d(tmp_path / "cap").frames[0].cameras["CAM_FRONT"]
    with pytest.raises(CaptureError, match=r"CAM_FRONT/000000.npz: corrupt or truncated .npz"):
        cam.load_depth()
    # a declared occupancy array missing from the file
    manifest = tmp_path / "cap" / MANIFEST
    data = json.loads(manifest.read_text())
    data["frames"][1]["occupancy"]["keys"].append("mask_camera")
    manifest.write_text(json.dumps(data))
    with pytest.raises(CaptureError, match=r"000001.npz: no array 'mask_camera'"):
        read_geo3d(tmp_path / "cap").frames[1].occupancy.load_mask("camera")
    data["frames"][1]["occupancy"]["voxel_size"] = [0.5, -1, 0.5]
    manifest.write_text(json.dumps(data))
    with pytest.raises(CaptureError, match="frame 1 occupancy: occupancy voxel_size must be positive"):
        read_geo3d(tmp_path / "cap")


def test_sensor_folders_depend_on_the_name_only(tmp_path):
    from geo3d.io.capture_writer import sensor_folder

    capture = make_capture(frames=2)
    # frame 1 lacks the first camera and has one whose name sanitises like "CAM/BACK LEFT"
    cams = capture.frames[1].cameras
    cams["CAM_BACK_LEFT"] = cams.pop("CAM_FRONT")
    cams["CAM_BACK_LEFT"].camera = "CAM_BACK_LEFT"
    write_capture(capture, tmp_path / "cap")
    frames = json.loads((tmp_path / "cap" / MANIFEST).read_text())["frames"]
    odd = sensor_folder("CAM/BACK LEFT")
    assert odd.startswith("CAM_BACK_LEFT-") and sensor_folder("CAM_BACK_LEFT") == "CAM_BACK_LEFT"
    names = ["", ".", "..", ".hidden", "a/b", "a_b", "a b"]
    folders = [sensor_folder(n) for n in names]
    assert len(set(folders)) == len(names) and folders[5] == "a_b"
    assert all(re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", f) for f in folders), folders
    assert frames[0]["cameras"]["CAM/BACK LEFT"]["image"] == f"images/{odd}/000000.png"
    assert frames[1]["cameras"]["CAM/BACK LEFT"]["image"] == f"images/{odd}/000001.png"
    assert frames[1]["cameras"]["CAM_BACK_LEFT"]["image"] == "images/CAM_BACK_LEFT/000001.png"
    assert_same_capture(capture, read_geo3d(tmp_path / "cap"))


# -- CaptureWriter ---------------------------------------------------------------------------------


def _finish(writer, capture):
    return writer.finish(source_format=capture.source_format, source=capture.source,
                         world_frame=capture.world_frame, metadata=capture.metadata, points3d=capture.points3d)  # fmt: skip


def test_writer_resumes_with_same_key_and_refuses_another(tmp_path):
    capture = make_capture(frames=4)
    key = {"seed": 0, "frames": 4, "scene": ("street", 1)}
    writer = CaptureWriter(tmp_path / "cap", resume_key=key)
    assert writer.completed == set() and writer.staging == tmp_path / "cap.partial"
    for i in (2, 0):
        writer.write_frame(capture.frames[i])
    del writer  # as if the process ended here

    again = CaptureWriter(tmp_path / "cap", resume_key={"seed": 0, "frames": 4, "scene": ["street", 1]})
    assert again.completed == {0, 2}
    with pytest.raises(CaptureError, match=r"another job \(resume_key\['seed'\] differ\).*overwrite"):
        CaptureWriter(tmp_path / "cap", resume_key={**key, "seed": 1})
    with pytest.raises(CaptureError, match=r"another job \(compress differ\)"):
        CaptureWriter(tmp_path / "cap", resume_key=key, compress=True)
    with pytest.raises(CaptureError, match="no resume_key was given"):
        CaptureWriter(tmp_path / "cap")
    assert CaptureWriter(tmp_path / "cap", resume_key=key).completed == {0, 2}  # the refusals changed nothing
    for frame in capture.frames:
        if frame.index not in again.completed:
            again.write_frame(frame)
    assert _finish(again, capture) == tmp_path / "cap"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cap"]
    assert not (tmp_path / "cap" / "_frames").exists() and not (tmp_path / "cap" / "_progress.json").exists()
    assert_same_capture(capture, read_geo3d(tmp_path / "cap"))  # frames sorted by index
    with pytest.raises(CaptureError, match="already finished"):
        again.write_frame(capture.frames[0])


def test_writer_overwrite_starts_fresh_and_existing_target_fails_early(tmp_path):
    capture = make_capture(frames=2)
    writer = CaptureWriter(tmp_path / "cap", resume_key={"a": 1})
    writer.write_frame(capture.frames[0])
    fresh = CaptureWriter(tmp_path / "cap", resume_key={"a": 2}, overwrite=True)
    assert fresh.completed == set()
    fresh.write_frame(capture.frames[1])
    _finish(fresh, capture)
    assert [f.index for f in read_geo3d(tmp_path / "cap").frames] == [1]
    with pytest.raises(CaptureExistsError, match="already exists"):
        CaptureWriter(tmp_path / "cap", resume_key={"a": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cap"]  # failed before creating anything
    # a staging folder that is not ours is never reused
    (tmp_path / "other.partial").mkdir()
    with pytest.raises(CaptureError, match="not a geo3d staging folder"):
        CaptureWriter(tmp_path / "other", resume_key={"a": 1})


def test_incomplete_frame_does_not_count_and_context_manager_rules(tmp_path):
    capture = make_capture(frames=2)
    capture.frames[1].cameras["CAM/BACK LEFT"].image = ArraySource.of(np.zeros((2, 2), np.float32))
    with pytest.raises(CaptureError, match="expected an"):
        with CaptureWriter(tmp_path / "cap", resume_key={"k": 1}) as writer:
            for frame in capture.frames:
                writer.write_frame(frame)
    # the failed frame wrote some files (its first camera) but is not complete; the staging is kept
    assert (tmp_path / "cap.partial" / "images" / "CAM_FRONT" / "000001.png").exists()
    assert CaptureWriter(tmp_path / "cap", resume_key={"k": 1}).completed == {0}
    # a non-resumable writer removes its staging folder when the block fails
    with pytest.raises(CaptureError):
        with CaptureWriter(tmp_path / "plain") as writer:
            writer.write_frame(capture.frames[1])
    assert not (tmp_path / "plain.partial").exists()
    # and a leftover from a killed non-resumable write is discarded by the next one
    (tmp_path / "cap.partial").rename(tmp_path / "plain.partial")
    (tmp_path / "plain.partial" / "_progress.json").write_text(
        json.dumps({"format": "geo3d-capture.partial", "resume_key": None, "compress": False}))
    assert CaptureWriter(tmp_path / "plain").completed == set()


@pytest.mark.parametrize("how", ["from_outside", "inside_a_frame"])
def test_killed_writer_resumes_to_the_full_capture(tmp_path, how):
    # A child process writes frame by frame and gets SIGKILL while writing frame 3: from the parent
    # as soon as frame 3's first file appears, or (deterministically) from inside frame 3, after its
    # camera files and before its LiDAR. Resuming in-process and finishing gives exactly the capture.
    tests_dir = str(Path(__file__).resolve().parents[2])
    script = (
        "import os, signal, sys\n"
        f"sys.path.insert(0, {tests_dir!r})\n"
        "from capture_factory import make_capture\n"
        "from geo3d.io.capture_writer import CaptureWriter\n"
        "from geo3d.structures import ArraySource\n"
        "capture = make_capture(frames=24, size=(240, 320))\n"
        f"if {how == 'inside_a_frame'}:\n"
        "    capture.frames[3].lidar['LIDAR_TOP'].points = ArraySource(loader=lambda: os.kill(os.getpid(), signal.SIGKILL))\n"
        f"writer = CaptureWriter({str(tmp_path / 'cap')!r}, resume_key={{'frames': 24}}, compress=True)\n"
        "for frame in capture.frames:\n"
        "    writer.write_frame(frame)\n"
        "    print(frame.index, flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    lines = [proc.stdout.readline().strip() for _ in range(3)]  # frames 0-2 are written
    first_file = tmp_path / "cap.partial" / "images" / "CAM_FRONT" / "000003.png"
    deadline = time.monotonic() + 30
    if how == "from_outside":
        while not first_file.exists() and time.monotonic() < deadline:
            time.sleep(0.0005)
        proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL and lines == ["0", "1", "2"]
    assert not (tmp_path / "cap").exists() and first_file.exists()

    capture = make_capture(frames=24, size=(240, 320))
    writer = CaptureWriter(tmp_path / "cap", resume_key={"frames": 24}, compress=True)
    assert {0, 1, 2} <= writer.completed and writer.completed == set(range(len(writer.completed)))
    if how == "inside_a_frame":  # frame 3 has files on disk but does not count as written
        assert writer.completed == {0, 1, 2} and (tmp_path / "cap.partial" / "depth" / "CAM_FRONT" / "000003.npz").exists()
    for frame in capture.frames:
        if frame.index not in writer.completed:
            writer.write_frame(frame)
    _finish(writer, capture)
    assert_same_capture(capture, read_geo3d(tmp_path / "cap"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cap"]
