"""geo3d train nerf / geo3d eval nerf on a small Blender capture made from the shared lego scene."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geo3d_apps.cli import main

LEGO = Path(__file__).resolve().parents[3] / "shared" / "data" / "lego_200"
SIZE = 40


@pytest.fixture(scope="module")
def small_lego(tmp_path_factory) -> Path:
    """12 training and 2 test views of lego at 40x40 (written to a temporary folder, not the repo)."""
    if not LEGO.is_dir():
        pytest.skip("../shared/data/lego_200 is absent")
    root = tmp_path_factory.mktemp("lego_small")
    for split, count in (("train", 12), ("test", 2)):
        data = json.loads((LEGO / f"transforms_{split}.json").read_text())
        frames = []
        for frame in data["frames"][::max(1, len(data["frames"]) // count)][:count]:
            source = LEGO / (frame["file_path"] + ("" if frame["file_path"].endswith(".png") else ".png"))
            name = f"{split}/{Path(source).stem}"
            (root / split).mkdir(exist_ok=True)
            Image.open(source).resize((SIZE, SIZE), Image.LANCZOS).save(root / f"{name}.png")
            frames.append({"file_path": f"./{name}", "transform_matrix": frame["transform_matrix"]})
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": data["camera_angle_x"],
                                                                    "frames": frames}))
    return root


def _train(capture, out, *extra):
    return main(["train", "nerf", str(capture), "--config", "quick", "--out", str(out), "--steps", "200",
                 "--target-samples", "8192", "--checkpoint-every", "30", "--threads", "1", *extra])


@pytest.fixture(scope="module")
def trained(small_lego, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "nerf"
    assert _train(small_lego, out) == 0
    return out


def test_train_writes_checkpoint_and_metrics(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["steps"] == 200 and metrics["held_out_images"] == 2
    assert np.isfinite(metrics["psnr"]) and metrics["psnr"] > 10.0  # a white image scores ~9 dB on lego
    assert (trained / "checkpoints" / "last.pt").is_file()
    assert not list(trained.rglob("*.tmp*"))


def test_rerun_resumes_and_other_options_are_refused(trained, small_lego, capsys):
    before = json.loads((trained / "metrics.json").read_text())
    assert _train(small_lego, trained) == 0
    assert "resuming" in capsys.readouterr().err
    after = json.loads((trained / "metrics.json").read_text())
    assert after["steps"] == 200 and after["psnr"] == pytest.approx(before["psnr"], abs=1e-6)
    assert _train(small_lego, trained, "--hidden", "32") != 0
    assert "hidden" in capsys.readouterr().err


def test_resume_continues_a_stopped_run(small_lego, tmp_path):
    out = tmp_path / "nerf"
    assert _train(small_lego, out, "--minutes", "0.0001") == 0  # stops after the first step
    from geo3d.training.checkpoint import load_checkpoint

    first = load_checkpoint(out / "checkpoints" / "last.pt").epoch
    assert 1 <= first < 200
    assert _train(small_lego, out) == 0
    assert load_checkpoint(out / "checkpoints" / "last.pt").epoch == 200


def test_eval_scores_renders_and_exports(trained, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "nerf", str(trained), "--out", str(out), "--depth", "--points", "--occupancy",
                 "--grid-resolution", "48", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "LPIPS unavailable" in printed or "LPIPS" in printed
    result = json.loads((out / "metrics.json").read_text())
    assert result["views"] == 2
    train_metrics = json.loads((trained / "metrics.json").read_text())
    assert result["mean"]["psnr"] == pytest.approx(train_metrics["psnr"], abs=1e-3)  # same renders, same PSNR
    assert 0 < result["mean"]["ssim"] <= 1
    side = np.asarray(Image.open(out / "images" / "000.png"))
    assert side.shape == (SIZE, 2 * SIZE, 3)
    depth = np.load(out / "depth" / "000.npy")
    assert depth.shape == (SIZE, SIZE) and np.isfinite(depth).all() and (depth >= 0).all()
    from geo3d.nerf.export import load_occupancy_npz

    occupancy, density = load_occupancy_npz(out / "occupancy.npz")
    assert density.shape == (48, 48, 48)
    level = -np.log(1 - 0.5) / (3.0 / 48)  # --mesh-alpha 0.5 over one 6.25 cm cell of the 3 m box
    np.testing.assert_array_equal(occupancy.load_semantics() > 0, density > level)
    import trimesh

    cloud = trimesh.load(out / "points.ply")
    points = np.asarray(cloud.vertices)
    # the lego sits inside the Blender box; back-projected depth lands there too
    assert len(points) > 0 and (np.abs(points) <= 1.5 + 1e-3).all()
    assert torch.isfinite(torch.from_numpy(points)).all()


def test_bad_inputs_exit_nonzero(tmp_path, small_lego, capsys):
    assert main(["train", "nerf", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) != 0
    assert "missing" in capsys.readouterr().err
    assert main(["train", "nerf", str(small_lego), "--out", str(tmp_path / "o"), "--background", "green"]) != 0
    assert "background" in capsys.readouterr().err
    assert main(["eval", "nerf", str(tmp_path / "nothing")]) != 0
    assert "checkpoint" in capsys.readouterr().err
