"""``geo3d train pointnet``: end to end on the tiny preset, resume after an interruption, refusals
and bad options; the task table of the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from geo3d_apps.cli import main

TINY = ["--config", "tiny"]

# tiny models: one torch thread is as fast as two and does not stall beside other jobs
pytestmark = pytest.mark.usefixtures("one_torch_thread")




def _history(run):
    return json.loads((run / "metrics.json").read_text())["history"]


def _accuracies(run):
    return [(r["epoch"], r["test_overall_accuracy"], r["loss"]) for r in _history(run)]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One complete tiny run (generates its shape set into run/data)."""
    run = tmp_path_factory.mktemp("train") / "run"
    assert main(["train", "pointnet", *TINY, "--out", str(run)]) == 0
    return run


def test_train_end_to_end_writes_a_run_folder_and_beats_chance(tiny_run, capsys):
    results = json.loads((tiny_run / "metrics.json").read_text())
    assert results["epochs"] == 8 and len(results["history"]) == 8
    assert results["overall_accuracy"] >= 0.8  # 5 classes: chance is 0.2
    assert results["test"]["per_class"]["car"]["count"] == 8
    assert all((tiny_run / "checkpoints" / name).is_file() for name in ("last.pt", "best.pt"))
    assert (tiny_run / "data" / "train.npz").is_file() and (tiny_run / "config.yaml").is_file()
    # rerunning a finished run trains nothing and reports the same accuracy
    assert main(["train", "pointnet", *TINY, "--out", str(tiny_run)]) == 0
    captured = capsys.readouterr()
    assert "using the cached shape set" in captured.err and "already trained (8 epochs)" in captured.err
    assert f"overall accuracy {results['overall_accuracy']:.4f}" in captured.out
    assert "epoch 1/8" not in captured.out


def test_resume_after_interruption_continues_from_the_checkpoint(tiny_run, tmp_path, monkeypatch, capsys):
    from geo3d.training.pointnet import PointNetTrainer

    run = tmp_path / "run"
    data = ["--data", str(tiny_run / "data")]
    original = PointNetTrainer.train_epoch

    def interrupted(self, *args, **kwargs):
        if self.epoch == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PointNetTrainer, "train_epoch", interrupted)
    assert main(["train", "pointnet", *TINY, *data, "--out", str(run)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert [e for e, *_ in _accuracies(run)] == [1, 2, 3]
    monkeypatch.setattr(PointNetTrainer, "train_epoch", original)

    assert main(["train", "pointnet", *TINY, *data, "--out", str(run)]) == 0
    captured = capsys.readouterr()
    assert "resuming from" in captured.err and "(epoch 3 of 8 done)" in captured.err
    assert "epoch 4/8" in captured.out and "epoch 3/8" not in captured.out
    # the resumed run is the uninterrupted one: same losses and accuracies, epoch by epoch
    assert _accuracies(run) == _accuracies(tiny_run)


def test_a_run_folder_with_other_options_is_refused_unless_overwrite(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    data = ["--data", str(tiny_run / "data"), "--out", str(run)]
    assert main(["train", "pointnet", *TINY, *data, "--epochs", "1"]) == 0
    assert main(["train", "pointnet", *TINY, *data, "--epochs", "2"]) == 1
    assert "other options (epochs: 1 -> 2)" in capsys.readouterr().err
    assert main(["train", "pointnet", *TINY, *data, "--epochs", "2", "--overwrite"]) == 0
    assert len(_history(run)) == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    other = ["--data", str(tiny_run / "data"), "--out", str(tmp_path / "other")]
    assert main(["train", "pointnet", *TINY, *other]) == 1
    assert "not a geo3d train run folder" in capsys.readouterr().err


def test_corrupt_checkpoint_missing_data_and_bad_options_exit_non_zero(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    data = ["--data", str(tiny_run / "data"), "--out", str(run)]
    assert main(["train", "pointnet", *TINY, *data, "--epochs", "1"]) == 0
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    assert main(["train", "pointnet", *TINY, *data, "--epochs", "1"]) == 1
    assert "last.pt: not a checkpoint, or truncated" in capsys.readouterr().err

    out = ["--out", str(tmp_path / "x")]
    assert main(["train", "pointnet", *TINY, *out, "--data", str(tmp_path / "missing")]) == 1
    assert "missing: data folder not found" in capsys.readouterr().err
    assert main(["train", "pointnet", *TINY, *out, "--data", str(tmp_path)]) == 1
    assert "no train.npz" in capsys.readouterr().err
    assert main(["train", "pointnet", *TINY, *out, "--epochs", "0"]) == 1
    assert "epochs must be a positive integer" in capsys.readouterr().err
    assert main(["train", "pointnet", *TINY, *out, "--num-points", "500"]) == 1
    assert "shape_points (192) must be >= num_points (500)" in capsys.readouterr().err
    assert main(["train", "pointnet", *TINY, *out, "--lr-schedule", "linear"]) == 2
    assert main(["train", "pointnet", *TINY, *out, "--no-such-option"]) == 2
    assert main(["train", "pointnet", "--config", "nope"]) == 2
    assert "no preset 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_task_table(capsys):
    import dataclasses
    import importlib

    from geo3d_apps.cli import COMMANDS

    for command in COMMANDS:  # every task names a config dataclass and a run function of its module
        for task in command.tasks:
            module = importlib.import_module(f"geo3d_apps.{task.module or command.module}")
            assert dataclasses.is_dataclass(getattr(module, task.config))
            assert callable(getattr(module, task.run))
    assert main(["train"]) == 2
    assert "tasks:" in capsys.readouterr().err
    assert main(["train", "--help"]) == 0
    assert "pointnet" in capsys.readouterr().out
    assert main(["train", "nerf-w"]) == 2
    assert "unknown task 'nerf-w' (tasks: bev, nerf, occupancy, pointnet, sdf" in capsys.readouterr().err
    assert main(["eval", "--help"]) == 0 and "pointnet" in capsys.readouterr().out
    assert main(["train", "pointnet", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert all(text in help_text for text in ("geo3d train pointnet", "--num-points", "presets: default"))
    assert main(["--help"]) == 0
    listing = capsys.readouterr().out
    assert "train" in listing and "Tasks: bev, nerf, occupancy, pointnet, sdf." in listing


def test_default_preset_is_the_default_and_help_does_not_import_torch():
    from dataclasses import fields

    from geo3d_apps.config import load_preset, resolve_preset
    from geo3d_apps.train import PointNetConfig

    preset = load_preset(PointNetConfig, resolve_preset("train/pointnet", "default"))
    assert preset.num_points >= 1024 and preset.input_transform and preset.feature_transform
    names = {f.name for f in fields(PointNetConfig)}
    assert {"out", "data", "overwrite", "epochs", "num_points"} <= names
    code = ("import sys, io, contextlib\nfrom geo3d_apps.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['train', '--help'])\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def _fake_modelnet(root, per_split=(6, 3), lines=64):
    """A tiny modelnet40_normal_resampled: 2 classes told apart by their extent along x."""
    import numpy as np

    rng = np.random.default_rng(0)
    classes = ("airplane", "night_stand")
    (root / "modelnet40_shape_names.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "modelnet40_shape_names.txt").write_text("\n".join(classes) + "\n")
    ids = {"train": [], "test": []}
    for label, name in enumerate(classes):
        for i in range(sum(per_split)):
            shape_id = f"{name}_{i + 1:04d}"
            ids["train" if i < per_split[0] else "test"].append(shape_id)
            data = rng.normal(size=(lines, 6)) * ([4, 1, 1, 1, 1, 1] if label == 0 else [1, 1, 4, 1, 1, 1])
            data[:, 3:] /= np.linalg.norm(data[:, 3:], axis=1, keepdims=True)
            (root / name).mkdir(exist_ok=True)
            text = "\n".join(",".join(f"{v:.6f}" for v in row) for row in data)
            (root / name / f"{shape_id}.txt").write_text(text)
    for split, names in ids.items():
        (root / f"modelnet40_{split}.txt").write_text("\n".join(names) + "\n")


def test_train_and_eval_on_a_modelnet40_folder(tmp_path, capsys):
    root = tmp_path / "modelnet40_normal_resampled"
    _fake_modelnet(root)
    run = tmp_path / "run"
    options = ["--data", str(root), "--out", str(run), "--shape-points", "64", "--num-points", "32",
               "--epochs", "2", "--batch-size", "4", "--width", "8", "--use-normals"]
    assert main(["train", "pointnet", *options]) == 0
    captured = capsys.readouterr()
    assert "reading ModelNet (normal_resampled layout)" in captured.err
    assert "12 training / 6 test shapes, 2 classes" in captured.out
    assert not (run / "data").exists()
    assert main(["eval", "pointnet", "--checkpoint", str(run)]) == 0
    assert "airplane" in capsys.readouterr().out
