"""``geo3d train occupancy`` and ``geo3d eval occupancy`` end to end on the tiny preset: the run folder,
resuming a finished run, refusals, the evaluation report and its JSON, bad options."""

from __future__ import annotations

import json

import pytest
import torch

from geo3d.occupancy.training import load_occupancy_net
from geo3d_apps.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("occupancy")
    run = root / "run"
    args = ["train", "occupancy", "--config", "tiny", "--out", str(run), "--workers", "0",
            "--samples-dir", str(root / "samples")]
    assert main(args) == 0
    return root, run, args


def test_train_writes_checkpoints_metrics_and_resumes(tiny_run, capsys):
    root, run, args = tiny_run
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert all("val_occupancy_iou" in h and "val_distill_cosine" in h and "val_miou" in h for h in history)
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "checkpoints" / "best.pt").is_file()
    net, checkpoint = load_occupancy_net(run / "checkpoints" / "last.pt")
    assert checkpoint.extra["step"] == 8 and checkpoint.extra["text_encoder"] == "minilm"
    assert tuple(net.config.output_grid.shape) == (20, 20, 4)  # the tiny preset's 1.6 m grid
    # the same command again: resumes at the end (nothing left), same weights
    before = [p.clone() for p in net.parameters()]
    capsys.readouterr()
    assert main(args) == 0
    assert "resuming" in capsys.readouterr().err
    after, _ = load_occupancy_net(run / "checkpoints" / "last.pt")
    assert all(torch.equal(a, b) for a, b in zip(before, after.parameters()))
    # other options in the same folder are refused
    assert main([*args, "--lr", "0.01"]) == 1
    assert "other options" in capsys.readouterr().err


def test_eval_prints_the_table_and_writes_json(tiny_run, capsys, tmp_path):
    root, run, _ = tiny_run
    report = tmp_path / "report.json"
    code = main(["eval", "occupancy", "--checkpoint", str(run), "--scenes", "1", "--frames", "1", "--workers", "0",
                 "--samples-dir", str(root / "eval"), "--json", str(report)])
    assert code == 0
    out = capsys.readouterr().out
    for method in ("model", "projection baseline", "oracle"):
        assert method in out
    data = json.loads(report.read_text())
    assert data["frames"] == 1 and set(data["methods"]) == {"model", "projection baseline", "oracle"}
    assert data["methods"]["oracle"]["occupancy_iou"] == pytest.approx(1.0)


@pytest.mark.parametrize("extra, message", [
    (["--scenes", "0"], "scenes"),
    (["--seed-start", "5000"], "used for training"),
    (["--data", "/nonexistent/capture"], "not found"),
])
def test_eval_bad_options(tiny_run, capsys, extra, message):
    _, run, _ = tiny_run
    assert main(["eval", "occupancy", "--checkpoint", str(run), "--workers", "0", *extra]) == 1
    assert message in capsys.readouterr().err


def test_eval_bad_checkpoint(tmp_path, capsys):
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    assert main(["eval", "occupancy", "--checkpoint", str(tmp_path / "broken.pt")]) == 1
    assert "broken.pt" in capsys.readouterr().err


def test_train_bad_options(tmp_path, capsys):
    assert main(["train", "occupancy", "--out", str(tmp_path / "r"), "--frames", "0"]) == 1
    assert "frames" in capsys.readouterr().err
    assert main(["train", "occupancy", "--out", str(tmp_path / "r"), "--data", str(tmp_path)]) == 1
    assert "--val-data" in capsys.readouterr().err
    assert main(["train", "occupancy", "--out", str(tmp_path / "r"), "--teacher", "dino"]) == 1
    assert "unknown teacher" in capsys.readouterr().err


def test_the_shipped_checkpoint_loads_and_sees_the_lidar_geometry():
    """assets/occupancy/occupancy.pt: an occupancy checkpoint with a calibrated threshold whose network
    separates the voxels the LiDAR hits from those its rays cross on a held-out frame (its untrained
    twin does not)."""
    from geo3d.language.label_teacher import LabelTeacher
    from geo3d.occupancy.network import OccupancyNet
    from geo3d.occupancy.samples import make_sample
    from geo3d.structures.capture import Capture
    from geo3d.synthetic.classes import CLASS_NAMES
    from geo3d.synthetic.generate import SynthConfig, make_scene, synthesize_frame
    from geo3d_apps.eval_occupancy import SHIPPED_CHECKPOINT
    from text_encoder_stub import HashEncoder

    assert SHIPPED_CHECKPOINT.stat().st_size <= 20 * 2**20
    net, checkpoint = load_occupancy_net(SHIPPED_CHECKPOINT)
    assert checkpoint.extra["task"] == "train/occupancy" and checkpoint.extra["text_encoder"] == "minilm"
    threshold = checkpoint.extra["threshold"]
    config = SynthConfig(seed=9100, frames=1)
    frame = synthesize_frame(make_scene(config), 0, config)
    sample = make_sample(Capture([frame], metadata={"capture_id": "t"}), 0, config.grid_spec(),
                         LabelTeacher(HashEncoder(dim=8), CLASS_NAMES), image_size=(224, 400))

    def separation(model):  # P(occupied | LiDAR hit) - P(occupied | LiDAR free)
        with torch.no_grad():
            occupied = model(sample.images[None], sample.K[None], sample.cam2ego[None]).occupancy_logits[0] > threshold
        return float(occupied[sample.occupancy_state == 1].float().mean() - occupied[sample.occupancy_state == 0]
                     .float().mean())

    assert separation(net) > 0.5
    assert abs(separation(OccupancyNet(net.config).eval())) < 0.25  # the untrained twin cannot tell
