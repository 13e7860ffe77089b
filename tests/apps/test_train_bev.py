"""``geo3d train bev``: --compare end to end on tiny prepared samples (table, metrics.json, checkpoints),
the pre-trained weights really reaching the fine-tuned network, a from-scratch run, and bad options
exiting non-zero with a one-line message."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from geo3d.language.label_teacher import LabelTeacher
from geo3d.occupancy.bev import BevSegmentationNet, label_subset
from geo3d.occupancy.dataset import SyntheticOccupancyDataset
from geo3d.occupancy.network import OccupancyNet, OccupancyNetConfig
from geo3d.occupancy.store import save_sample
from geo3d.synthetic.classes import CLASS_NAMES
from geo3d.synthetic.generate import SynthConfig
from geo3d.training.checkpoint import load_checkpoint, restore, save_checkpoint
from geo3d_apps import cli
from geo3d_apps.train_bev import load_backbone
from text_encoder_stub import HashEncoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_SYNTH = SynthConfig(seed=0, frames=3, width=96, height=54, lidar_beams=16, lidar_azimuth_steps=360,
                         occupancy_lower=(-8.0, -8.0, -1.0), occupancy_upper=(8.0, 8.0, 3.0), voxel_size_m=0.5,
                         shadows=False)
FAST = ["--steps", "30", "--lr", "0.01", "--threads", "1"]


@pytest.fixture
def main(monkeypatch):
    """``geo3d_apps.cli.main`` with the ``train bev`` task registered (as the lead registers it)."""
    train = next(c for c in cli.COMMANDS if c.name == "train")
    if not any(t.name == "bev" for t in train.tasks):
        task = cli.Task("bev", "Fine-tune an occupancy network for BEV segmentation on few labels (OccFeat).",
                        "BevConfig", "run_bev", module="train_bev")
        monkeypatch.setattr(cli, "COMMANDS", tuple(replace(c, tasks=(*c.tasks, task)) if c.name == "train" else c
                                                   for c in cli.COMMANDS))
    return cli.main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """6 training + 3 validation tiny prepared samples, and a 'pre-trained' tiny occupancy checkpoint
    (a seeded net whose weights were moved away from their initialisation)."""
    root = tmp_path_factory.mktemp("bev")
    teacher = LabelTeacher(HashEncoder(dim=12), CLASS_NAMES, patch_size=8)
    dataset = SyntheticOccupancyDataset([0, 1, 2], TINY_SYNTH, None, teacher, OccupancyNetConfig.tiny().image_size)
    for i in range(9):
        split, index = ("train", i) if i < 6 else ("val", i - 6)
        save_sample(root / split / f"sample_{index:06d}.pt", dataset[i])
    net = OccupancyNet(OccupancyNetConfig.tiny(seed=3))
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    save_checkpoint(root / "occupancy.pt", net, epoch=2, config={"steps": 10},
                    extra={"task": "train/occupancy", "net_config": net.config.to_dict(), "text_encoder": "minilm"})
    return root, net


def _args(root, out, *extra):
    return ["train", "bev", "--train-samples", str(root / "train"), "--val-samples", str(root / "val"),
            "--out", str(out), *FAST, *extra]


def test_load_backbone_copies_the_weights(data):
    root, pretrained = data
    net, checkpoint = load_backbone(root / "occupancy.pt")
    assert net.config == pretrained.config and checkpoint.epoch == 2
    fresh = OccupancyNet(pretrained.config).state_dict()
    for name, value in pretrained.state_dict().items():
        assert torch.equal(net.state_dict()[name], value), name
    assert any(not torch.equal(fresh[name], value) for name, value in pretrained.state_dict().items())


def test_compare_end_to_end(data, tmp_path, main, capsys):
    root, pretrained = data
    out = tmp_path / "run"
    assert main(_args(root, out, "--pretrained", str(root / "occupancy.pt"), "--compare", "--label-fraction",
                      "0.5")) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split() == ["arm", "labelled", "frames", "vehicle", "IoU", "drivable", "IoU", "mean"]
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert set(rows) == {"pretrained", "scratch"} and rows["pretrained"][1] == rows["scratch"][1] == "3/6"
    assert "pre-training gain" in captured.out and "fine-tuning (pretrained)" in captured.err
    metrics = json.loads((out / "metrics.json").read_text())
    subset = label_subset(6, 0.5, 0).tolist()
    assert metrics["labelled_indices"] == subset and metrics["labelled_frames"] == 3
    assert metrics["labelled_files"] == [f"sample_{i:06d}.pt" for i in subset]
    assert metrics["train_frames"] == 6 and metrics["val_frames"] == 3
    arms = metrics["arms"]
    assert set(arms) == {"pretrained", "scratch"}
    for arm, row in rows.items():
        result = arms[arm]
        assert set(result["iou"]) == {"vehicle", "drivable"} and len(result["history"]) == 30
        assert result["val_frames"] == 3
        assert float(row[-1]) == pytest.approx(100 * result["mean_iou"], abs=0.051)
        assert float(row[3]) == pytest.approx(100 * result["iou"]["drivable"], abs=0.051)
        assert result["history"][-1]["loss"] < result["history"][0]["loss"]
    # same labelled frames, steps and seed, but other initial backbone weights
    assert arms["pretrained"]["history"][0]["loss"] != arms["scratch"]["history"][0]["loss"]
    assert arms["pretrained"]["pretrained"] == str(root / "occupancy.pt") and arms["scratch"]["pretrained"] is None
    for arm in ("pretrained", "scratch"):
        checkpoint = load_checkpoint(out / f"bev_{arm}.pt")
        assert checkpoint.extra["task"] == "train/bev" and checkpoint.extra["arm"] == arm
        net = BevSegmentationNet(OccupancyNet(OccupancyNetConfig.from_dict(checkpoint.extra["net_config"])), 2)
        restore(checkpoint, net)
    # the scratch arm starts from the pre-trained architecture's own initialisation
    assert checkpoint.extra["net_config"] == pretrained.config.to_dict()


def test_frozen_backbone_keeps_the_pretrained_weights(data, tmp_path, main, capsys):
    root, pretrained = data
    out = tmp_path / "frozen"
    assert main(_args(root, out, "--pretrained", str(root / "occupancy.pt"), "--freeze-backbone", "--steps", "5")) == 0
    assert "pretrained" in capsys.readouterr().out
    state = load_checkpoint(out / "bev_pretrained.pt").model
    for name, value in pretrained.state_dict().items():
        assert torch.equal(state[f"backbone.{name}"], value), name
    assert json.loads((out / "metrics.json").read_text())["options"]["freeze_backbone"] is True


def test_scratch_run_with_the_tiny_net(data, tmp_path, main, capsys):
    root, _ = data
    out = tmp_path / "scratch"
    assert main(_args(root, out, "--net", "tiny", "--label-fraction", "0.05", "--max-val-frames", "2")) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["scratch", "1/6"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["arms"]) == ["scratch"] and metrics["val_frames"] == 2
    assert load_checkpoint(out / "bev_scratch.pt").extra["net_config"] == OccupancyNetConfig.tiny().to_dict()


def test_bad_options_exit_non_zero(data, tmp_path, main, capsys):
    root, _ = data
    (tmp_path / "empty").mkdir()
    not_occupancy = tmp_path / "other.pt"
    save_checkpoint(not_occupancy, torch.nn.Linear(2, 2), epoch=0, extra={"task": "train/pointnet"})
    no_config = tmp_path / "no_config.pt"
    save_checkpoint(no_config, torch.nn.Linear(2, 2), epoch=0)
    out = str(tmp_path / "out")
    cases = [
        (["train", "bev", "--val-samples", str(root / "val")], "--train-samples is required"),
        (_args(root, out, "--compare"), "--compare needs --pretrained"),
        (_args(root, out, "--pretrained", str(tmp_path / "missing.pt")), "file not found"),
        (_args(root, out, "--label-fraction", "0"), "--label-fraction must lie in (0, 1]"),
        (_args(root, out, "--steps", "0"), "--steps must be a positive int"),
        (_args(root, out, "--pos-weight", "1", "2", "3"), "--pos-weight takes 1 or 2 numbers"),
        (["train", "bev", "--train-samples", str(tmp_path / "empty"), "--val-samples", str(root / "val"), "--out",
          out], "no sample_*.pt prepared samples"),
        (_args(root, out, "--pretrained", str(not_occupancy)), "'train/pointnet' checkpoint, not an occupancy"),
        (_args(root, out, "--pretrained", str(no_config)), "no net_config"),
        (_args(root, out, "--pretrained", str(root / "train" / "sample_000000.pt")), "not a geo3d checkpoint"),
    ]
    for args, message in cases:
        assert main(args) == 1, message
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert main(_args(root, out, "--net", "huge")) == 2  # a usage error from the option parser
    assert not (tmp_path / "out" / "metrics.json").exists()
