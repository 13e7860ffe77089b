"""PointNet training: beats chance on held-out synthetic shapes, deterministic, resumes exactly;
augmentation and data loading."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geo3d.errors import CaptureError
from geo3d.synthetic.shapes import make_shape_set
from geo3d.training.checkpoint import load_checkpoint
from geo3d.training.pointnet import (
    PointNetTrainConfig,
    PointNetTrainer,
    augment_points,
    learning_rate_factor,
    load_shape_split,
    shape_set_tensors,
)

CLASSES = ("car", "pedestrian", "tree", "traffic_cone", "bicycle")
SMALL = dict(width=16, batch_size=10, num_points=128, lr_schedule="cosine", learning_rate=0.003,
             rotate_z=False)

# tiny models: one torch thread is as fast as two and does not stall beside other jobs
pytestmark = pytest.mark.usefixtures("one_torch_thread")




@pytest.fixture(scope="module")
def shapes():
    train = make_shape_set("train", 14, 192, seed=3, classes=CLASSES)
    test = make_shape_set("test", 8, 192, seed=3, classes=CLASSES)
    return shape_set_tensors(train), shape_set_tensors(test)


def _weights(trainer):
    return [p.detach().clone() for p in trainer.model.state_dict().values()]


def test_trained_model_beats_chance_on_held_out_shapes(shapes):
    train, test = shapes
    trainer = PointNetTrainer(PointNetTrainConfig(epochs=8, **SMALL), len(CLASSES))
    before, _ = trainer.evaluate(test)
    for _ in range(8):
        stats = trainer.train_epoch(train)
    metrics, predictions = trainer.evaluate(test)
    chance = 1 / len(CLASSES)
    assert metrics.overall_accuracy >= 0.8, (before, metrics)  # chance is 0.2; held-out instances
    assert metrics.mean_class_accuracy >= 0.8
    assert stats.epoch == 8 and stats.loss < 1.0 and metrics.overall_accuracy > before.overall_accuracy
    assert predictions.shape == (len(test.labels),) and metrics.overall_accuracy > 3 * chance


def test_training_is_deterministic_and_resumes_exactly(shapes, tmp_path):
    train, _ = shapes
    config = PointNetTrainConfig(epochs=3, seed=7, **SMALL)
    straight = PointNetTrainer(config, len(CLASSES))
    torch.manual_seed(123)
    outside = torch.rand(3)
    for _ in range(3):
        straight.train_epoch(train)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), outside)  # the caller's random state is not consumed

    interrupted = PointNetTrainer(config, len(CLASSES))
    for _ in range(2):
        interrupted.train_epoch(train)
    interrupted.save(tmp_path / "last.pt")
    resumed = PointNetTrainer(config, len(CLASSES))
    assert resumed.resume(load_checkpoint(tmp_path / "last.pt")) == 2
    resumed.train_epoch(train)
    for a, b in zip(_weights(straight), _weights(resumed)):
        assert torch.equal(a, b)
    other_seed = PointNetTrainer(PointNetTrainConfig(epochs=3, seed=8, **SMALL), len(CLASSES))
    assert not torch.equal(_weights(other_seed)[0], _weights(straight)[0])


def test_augmentation_rotates_about_z_scales_and_jitters():
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(4, 50, 6)
    points[..., 3:] /= points[..., 3:].norm(dim=-1, keepdim=True)
    config = PointNetTrainConfig(rotate_z=True, scale_min=1.0, scale_max=1.0, jitter_sigma=0.0)
    rotated = augment_points(points, config, generator)
    # a rotation about z keeps z, the xy radius and the angle between point and normal
    torch.testing.assert_close(rotated[..., 2], points[..., 2])
    torch.testing.assert_close(rotated[..., :2].norm(dim=-1), points[..., :2].norm(dim=-1))
    cosines = (rotated[..., :3] * rotated[..., 3:]).sum(-1)
    torch.testing.assert_close(cosines, (points[..., :3] * points[..., 3:]).sum(-1))
    assert not torch.allclose(rotated, points)
    config = PointNetTrainConfig(rotate_z=False, scale_min=0.5, scale_max=2.0, jitter_sigma=0.0)
    scaled = augment_points(points, config, generator)
    ratio = scaled[..., :3].norm(dim=-1) / points[..., :3].norm(dim=-1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio)) and ((ratio >= 0.5) & (ratio <= 2.0)).all()
    torch.testing.assert_close(scaled[..., 3:], points[..., 3:])  # normals are not scaled
    config = PointNetTrainConfig(rotate_z=False, scale_min=1.0, scale_max=1.0, jitter_sigma=0.5,
                                 jitter_clip=0.05)
    jittered = augment_points(points, config, generator)
    assert 0 < float((jittered - points).abs().max()) <= 0.05 + 1e-6


def test_learning_rate_schedules():
    step = PointNetTrainConfig(lr_schedule="step", lr_step_epochs=20)
    assert [learning_rate_factor(step, e) for e in (0, 19, 20, 45)] == [1.0, 1.0, 0.5, 0.25]
    cosine = PointNetTrainConfig(lr_schedule="cosine", epochs=11, lr_min_factor=0.1)
    assert learning_rate_factor(cosine, 0) == 1.0 and math.isclose(learning_rate_factor(cosine, 10), 0.1)
    assert math.isclose(learning_rate_factor(cosine, 5), 0.55)


def test_bad_configs_and_data(tmp_path):
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        PointNetTrainConfig(batch_size=1).check()
    with pytest.raises(ValueError, match="learning_rate must be a finite number"):
        PointNetTrainConfig(learning_rate=float("nan")).check()
    with pytest.raises(ValueError, match="scale_min"):
        PointNetTrainConfig(scale_min=2.0, scale_max=1.0).check()
    trainer = PointNetTrainer(PointNetTrainConfig(num_points=256, width=8), 3)
    small = make_shape_set("train", 1, 64, classes=("car", "bus", "tree"))
    with pytest.raises(ValueError, match="fewer than num_points=256"):
        trainer.train_epoch(shape_set_tensors(small))
    with pytest.raises(ValueError, match="expected points"):
        trainer.evaluate(shape_set_tensors(small, use_normals=True))
    with pytest.raises(CaptureError, match="data folder not found"):
        load_shape_split(tmp_path / "nothing", "train")
    with pytest.raises(CaptureError, match="no train.npz"):
        load_shape_split(tmp_path, "train")
    small.save(tmp_path / "train.npz")
    assert np.array_equal(load_shape_split(tmp_path, "train").points, small.points)


def test_divergence_is_reported(shapes):
    train, _ = shapes
    trainer = PointNetTrainer(PointNetTrainConfig(epochs=1, **SMALL), len(CLASSES))
    with torch.no_grad():
        trainer.model.head[-1].weight.fill_(float("inf"))
    with pytest.raises(ValueError, match="training diverged: the loss is nan at epoch 1, step 1"):
        trainer.train_epoch(train)
