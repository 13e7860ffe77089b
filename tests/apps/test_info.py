import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from geo3d_apps.cli import main

from capture_factory import make_capture


def _info_json(capsys, *args):
    assert main(["info", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_info_on_nuscenes_sample_counts_lidar_points_per_camera(nuscenes_dir, capsys):
    pkl = next(nuscenes_dir.glob("*.pkl"))
    summary = _info_json(capsys, pkl)
    assert summary["format"] == "nuscenes-info"
    assert summary["frames"] == 1 and len(summary["cameras"]) == 6
    assert summary["lidar"]["LIDAR_TOP"]["points_per_sweep"]["mean"] == 34688
    # independent count: project the sweep by hand with the pickle's own matrices
    import pickle

    raw = pickle.loads(pkl.read_bytes())["data_list"][0]
    points = np.fromfile(nuscenes_dir / Path(raw["lidar_points"]["lidar_path"]).name, np.float32).reshape(-1, 5)
    homo = np.c_[points[:, :3].astype(np.float64), np.ones(len(points))]
    for name, cam in raw["images"].items():
        p = (np.array(cam["lidar2cam"]) @ homo.T)[:3]
        uvz = np.array(cam["cam2img"])[:3, :3] @ p
        z = uvz[2]
        u, v = uvz[0] / np.where(z > 0, z, 1), uvz[1] / np.where(z > 0, z, 1)
        inside = (z > 0) & (u >= -0.5) & (u < 1599.5) & (v >= -0.5) & (v < 899.5)
        counted = summary["cameras"][name]["lidar_points_in_image"]["mean"]
        assert counted == inside.sum() and counted > 1000, name
        assert summary["cameras"][name]["resolutions"] == ["1600x900"]


def test_info_text_and_geo3d_format(tmp_path, capsys):
    from geo3d.io import write_capture

    write_capture(make_capture(), tmp_path / "cap")
    assert main(["info", str(tmp_path / "cap")]) == 0
    text = capsys.readouterr().out
    assert "format   geo3d" in text and "originally test" in text
    assert "CAM_FRONT" in text and "LIDAR_TOP: 2 sweep(s)" in text
    summary = _info_json(capsys, tmp_path / "cap")
    assert summary["cameras"]["CAM_FRONT"]["has"] == ["depth", "semantic", "instance"]
    assert summary["points3d"] == 20


def test_info_summarises_occupancy_ground_truth(tmp_path, capsys):
    from geo3d.io import write_capture

    capture = make_capture(frames=3)  # frames 0 and 1 have grids, frame 2 none
    write_capture(capture, tmp_path / "cap", compress=True)
    occ = capture.frames[0].occupancy
    summary = _info_json(capsys, tmp_path / "cap")["occupancy"]
    assert summary["frames"] == 2 and summary["shape"] == [6, 5, 3] and summary["grid_frame"] == "ego"
    assert summary["voxel_size_m"] == occ.voxel_size.tolist()
    assert summary["first_frame_occupied_voxels"] == np.count_nonzero(occ.load_semantics()) > 0
    for which in ("camera", "lidar"):
        assert summary["first_frame_mask_coverage"][which] == pytest.approx(occ.load_mask(which).mean())
    assert main(["info", str(tmp_path / "cap")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("occupancy"))
    count = f"{summary['first_frame_occupied_voxels']:,} occupied voxels"
    assert "2 frame(s), grid 6x5x3 of 0.4x0.4x" in line and "(ego frame)" in line and count in line
    assert f"camera mask {occ.load_mask('camera').mean():.1%}" in line

    write_capture(make_capture(occupancy=False), tmp_path / "plain")
    assert _info_json(capsys, tmp_path / "plain")["occupancy"] is None
    assert main(["info", str(tmp_path / "plain")]) == 0
    assert "occupancy" not in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["missing", "unknown", "corrupt"])
def test_info_bad_input_exits_nonzero_with_reason(tmp_path, capsys, kind):
    target = tmp_path / "x"
    if kind == "unknown":
        target.mkdir()
        (target / "notes.txt").write_text("hello")
    elif kind == "corrupt":
        target.mkdir()
        (target / "capture.json").write_text('{"format": "geo3d-capture", "version": 1, "frames": [{"cam')
    assert main(["info", str(target)]) == 1
    err = capsys.readouterr().err
    expected = {"missing": "no such file", "unknown": "not a capture geo3d can read", "corrupt": "corrupt manifest"}
    assert err.startswith("geo3d info: error:") and expected[kind] in err and str(target) in err


def test_console_script_usage_errors():
    exe = Path(sys.executable).with_name("geo3d")
    run = [str(exe)] if exe.exists() else [sys.executable, "-m", "geo3d_apps"]
    out = subprocess.run([*run, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "info" in out.stdout and "demo" in out.stdout
    out = subprocess.run([*run, "frobnicate"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown command 'frobnicate'" in out.stderr
    out = subprocess.run([*run, "info", "--no-such-flag"], capture_output=True, text=True)
    assert out.returncode == 2
    out = subprocess.run([*run, "info", "/nonexistent/capture"], capture_output=True, text=True)
    assert out.returncode == 1 and "no such file" in out.stderr and "Traceback" not in out.stderr
