"""The interactive `geo3d view` window, driven under a virtual X server (skipped without Xvfb)."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geo3d.structures.field import OpenVocabField

pytestmark = pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="needs xvfb-run (apt install xvfb)")


def test_the_window_answers_a_typed_query_and_switches_views(tmp_path):
    # a field with a ground slab (features of "road") and a box (features of "car"), in MiniLM space
    from geo3d.language import encode_prompts, get_text_encoder

    encoder = get_text_encoder("minilm")
    road, car = encode_prompts(encoder, ["road", "car"]).numpy()
    occupancy = np.zeros((40, 40, 8), np.float32)
    occupancy[:, :, 0] = 1.0
    occupancy[18:24, 18:21, 1:4] = 1.0
    index = np.argwhere(occupancy > 0)
    is_car = index[:, 2] > 0
    features = np.where(is_car[:, None], car, road).astype(np.float32)
    colors = np.where(is_car[:, None], [200, 30, 30], [90, 90, 90]).astype(np.uint8)
    field = OpenVocabField(origin=(-8, -8, -1), voxel_size=0.4, frame="ego", occupancy=occupancy, indices=index,
                           features=features, space=encoder.space, colors=colors, metadata={"text_encoder": "minilm"})
    path = field.save(tmp_path / "street.field.npz")
    out = tmp_path / "window.png"
    driver = Path(__file__).with_name("view_window_driver.py")
    run = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1024x768x24", sys.executable, str(driver), str(path),
                          str(out)], capture_output=True, text=True, timeout=180)
    assert "CAPTURED" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]
    status = next(line for line in run.stdout.splitlines() if line.startswith("STATUS"))
    assert '"road"' in status and f"{int((~is_car).sum())} voxels" in status
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape[:2] == (480, 640)
    pixels = image.reshape(-1, 3).astype(int)
    saturated = (pixels.max(1) - pixels.min(1)) > 60  # viridis: the voxels answering "road"
    grey = ((pixels.max(1) - pixels.min(1)) < 8) & (pixels.max(1) < 230)  # the car, dimmed (not an answer)
    assert saturated.sum() > grey.sum() > 50  # a 6 x 3 car on a 40 x 40 road, seen from above
