"""``geo3d synth``: a capture the rest of geo3d reads, a preview picture, shape sets, bad options."""

from __future__ import annotations

import numpy as np

from geo3d.io import read_capture
from geo3d.structures import ShapeSet
from geo3d_apps.cli import main

SMALL = ["--frames", "2", "--width", "64", "--height", "36", "--seed", "5"]


def test_synth_writes_a_readable_capture_and_a_preview(tmp_path, capsys):
    out, preview = tmp_path / "cap", tmp_path / "preview.png"
    assert main(["synth", "--out", str(out), "--preview", str(preview), *SMALL]) == 0
    capture = read_capture(out)
    assert capture.source_format == "synthetic" and len(capture) == 2
    assert capture.metadata["config"]["seed"] == 5 and capture.metadata["class_names"][0] == "free"
    frame = capture.frames[1]
    assert len(frame.cameras) == 6 and frame.cameras["CAM_FRONT"].load_image_uint8().shape == (36, 64, 3)
    assert frame.occupancy.load_semantics().shape == (200, 200, 16)
    from PIL import Image

    image = np.asarray(Image.open(preview))
    assert image.shape[0] == 400 and image.shape[1] == 3 * 64 + 400 + 150
    assert '"frames": 2' in capsys.readouterr().out
    # the same command again: refused without --overwrite, identical with it
    assert main(["synth", "--out", str(out), *SMALL]) == 1
    assert "exists" in capsys.readouterr().err
    before = (out / "capture.json").read_bytes()
    assert main(["synth", "--out", str(out), "--overwrite", *SMALL]) == 0
    assert (out / "capture.json").read_bytes() == before


def test_synth_bad_options_exit_non_zero(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "x"), "--frames", "0"]) == 1
    assert "frames" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "x"), "--layout", "maze"]) == 2
    assert main(["synth", "--out", str(tmp_path / "x"), "--voxel-size-m", "0.33"]) == 1
    assert not (tmp_path / "x").exists()


def test_synth_shapes(tmp_path, capsys):
    out = tmp_path / "shapes"
    assert main(["synth", "--kind", "shapes", "--out", str(out), "--per-class", "2", "--num-points", "64"]) == 0
    train, test = ShapeSet.load(out / "train.npz"), ShapeSet.load(out / "test.npz")
    assert len(train) == 2 * train.num_classes and len(test) == 5 * test.num_classes
    assert train.points.shape[1:] == (64, 3) and set(train.names).isdisjoint(test.names)
