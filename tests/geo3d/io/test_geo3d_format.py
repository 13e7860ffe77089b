import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from geo3d.errors import CaptureError
from geo3d.io.geo3d_format import FORMAT_VERSION, MANIFEST, read_geo3d, sniff_geo3d, write_capture
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
        "from geo3d.io.geo3d_format import write_capture\n"
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
