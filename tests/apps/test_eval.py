"""``geo3d eval pointnet``: reproduces the accuracy the training reported, matches an independent
evaluation of the checkpoint, and fails clearly on bad checkpoints, data and options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from geo3d.models import PointNetClassifier
from geo3d.structures import ShapeSet
from geo3d_apps.cli import main

# tiny models: one torch thread is as fast as two and does not stall beside other jobs
pytestmark = pytest.mark.usefixtures("one_torch_thread")




@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval") / "run"
    assert main(["train", "pointnet", "--config", "tiny", "--out", str(folder), "--seed", "2"]) == 0
    return folder


def test_eval_reproduces_the_reported_accuracy(run, tmp_path, capsys):
    capsys.readouterr()
    reported = json.loads((run / "metrics.json").read_text())
    out = tmp_path / "eval.json"
    assert main(["eval", "pointnet", "--checkpoint", str(run), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["overall_accuracy"] == reported["overall_accuracy"]
    assert result["mean_class_accuracy"] == reported["mean_class_accuracy"]
    assert result["per_class"] == reported["test"]["per_class"] and result["shapes"] == 40
    assert f"overall accuracy {reported['overall_accuracy']:.4f}" in printed
    assert "traffic_cone" in printed and "shapes" in printed  # the per-class table


def test_eval_matches_an_independent_evaluation(run, tmp_path):
    """Load the weights into a fresh classifier by hand and count correct predictions with NumPy."""
    checkpoint = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    config = checkpoint["config"]
    model = PointNetClassifier(5, 3, config["width"], config["input_transform"], config["feature_transform"])
    model.load_state_dict(checkpoint["model"])
    model.eval()
    test = ShapeSet.load(run / "data" / "test.npz")
    with torch.no_grad():
        predictions = model(torch.from_numpy(test.points[:, : config["num_points"]])).argmax(1).numpy()
    correct = predictions == test.labels
    per_class = [correct[test.labels == k].mean() for k in range(5)]
    out = tmp_path / "best.json"
    assert main(["eval", "pointnet", "--checkpoint", str(run / "checkpoints" / "best.pt"), "--data",
                 str(run / "data"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["overall_accuracy"] == pytest.approx(correct.mean())
    assert result["mean_class_accuracy"] == pytest.approx(np.mean(per_class))
    # and on the training split
    assert main(["eval", "pointnet", "--checkpoint", str(run), "--split", "train", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["shapes"] == 70


def test_bad_checkpoints_data_and_options_exit_non_zero(run, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((run / "checkpoints" / "last.pt").read_bytes()[:-100])
    assert main(["eval", "pointnet", "--checkpoint", str(corrupt)]) == 1
    assert "corrupt.pt: not a checkpoint, or truncated" in capsys.readouterr().err
    assert main(["eval", "pointnet", "--checkpoint", str(tmp_path / "none.pt")]) == 1
    assert "none.pt: checkpoint not found" in capsys.readouterr().err
    assert main(["eval", "pointnet", "--checkpoint", str(tmp_path)]) == 1
    assert "without checkpoints/last.pt" in capsys.readouterr().err
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}}, foreign)
    assert main(["eval", "pointnet", "--checkpoint", str(foreign)]) == 1
    assert "not a geo3d checkpoint" in capsys.readouterr().err
    assert main(["eval", "pointnet", "--checkpoint", str(run), "--data", str(tmp_path / "gone")]) == 1
    assert "gone: data folder not found" in capsys.readouterr().err
    # data with other classes than the checkpoint's
    other = ShapeSet.load(run / "data" / "test.npz")
    renamed = ShapeSet(other.points, other.labels, tuple(f"x{c}" for c in other.class_names))
    renamed.save(tmp_path / "d" / "test.npz")
    assert main(["eval", "pointnet", "--checkpoint", str(run), "--data", str(tmp_path / "d")]) == 1
    assert "differ from the checkpoint's" in capsys.readouterr().err
    assert main(["eval", "pointnet"]) == 2  # --checkpoint is required
    assert main(["eval", "pointnet", "--checkpoint", str(run), "--split", "val"]) == 2
