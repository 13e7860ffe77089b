"""Occupancy training: schedule, distillation draws, the step's losses against a hand computation, exact
resume, checkpoint loading, and DistributedDataParallel with two gloo processes (replicas identical and
equal to a single-process reference that averages the two processes' gradients)."""

from __future__ import annotations

import dataclasses
import math
import os

import pytest
import torch
import torch.multiprocessing as mp

from geo3d.language.label_teacher import LabelTeacher
from geo3d.occupancy.dataset import SyntheticOccupancyDataset
from geo3d.occupancy.losses import feature_distillation_loss, occupancy_loss
from geo3d.occupancy.network import OccupancyNet, OccupancyNetConfig
from geo3d.occupancy.samples import collate_samples
from geo3d.occupancy.store import load_sample, save_sample
from geo3d.occupancy.targets import OccupancyError
from geo3d.occupancy.training import (
    OccupancyTrainConfig,
    OccupancyTrainer,
    _TrainingModule,
    draw_distillation,
    learning_rate_factor,
    load_occupancy_net,
    training_losses,
    validation_metrics,
)
from geo3d.synthetic.classes import CLASS_NAMES
from geo3d.synthetic.generate import SynthConfig
from geo3d.training.checkpoint import CheckpointError, save_checkpoint
from text_encoder_stub import HashEncoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SYNTH = SynthConfig(seed=0, frames=2, width=64, height=36, lidar_beams=8, lidar_azimuth_steps=240,
                    occupancy_lower=(-8.0, -8.0, -1.0), occupancy_upper=(8.0, 8.0, 3.0), voxel_size_m=0.5,
                    shadows=False)
NET = OccupancyNetConfig.tiny(image_size=(32, 48), language_dim=16)  # output grid = SYNTH's 32 x 32 x 8


@pytest.fixture(scope="module")
def samples():
    teacher = LabelTeacher(HashEncoder(dim=16), CLASS_NAMES, patch_size=8)
    data = SyntheticOccupancyDataset([3], SYNTH, None, teacher, (36, 64))
    return [data[0], data[1]]


def _config(**overrides) -> OccupancyTrainConfig:
    values = dict(epochs=2, lr=1e-2, warmup_steps=1, distill_points=64, seed=1)
    values.update(overrides)
    return OccupancyTrainConfig(**values)


def _flat(net) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def test_learning_rate_schedule():
    values = [learning_rate_factor(s, 100, 10, 0.1) for s in range(101)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)  # linear warm-up (s + 1) / 10
    assert values[10] == pytest.approx(1.0) and values[100] == pytest.approx(0.1)
    assert values[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(values[10:], values[11:]))


def test_config_check():
    for bad in (dict(epochs=0), dict(lr=0.0), dict(lr=float("nan")), dict(distill_kind="dot"),
                dict(min_lr_ratio=2.0), dict(occupancy_weight=0.0, distill_weight=0.0), dict(pos_weight=-1.0),
                dict(distill_points=-1)):
        with pytest.raises(OccupancyError):
            _config(**bad).check()


def test_draw_distillation_subsets_each_sample(samples):
    batch = collate_samples(samples)
    points, features, weights = draw_distillation(batch, 50, torch.Generator().manual_seed(0))
    assert points.shape == (2, 50, 3) and features.shape == (2, 50, 16) and bool((weights == 1).all())
    for b, sample in enumerate(samples):  # every drawn point is one of the sample's, without repetition
        match = torch.cdist(points[b], sample.distill_points_ego, compute_mode="donot_use_mm_for_euclid_dist").min(1)
        assert float(match.values.max()) == 0.0
        assert len(set(match.indices.tolist())) == 50
        assert torch.equal(features[b], sample.distill_features[match.indices])
    again = draw_distillation(batch, 50, torch.Generator().manual_seed(0))[0]
    assert torch.equal(points, again)
    everything = draw_distillation(batch, 0, torch.Generator())  # 0: all points, padding weighted 0
    assert torch.equal(everything[2].sum(1).long(), batch.distill_lengths)


def test_step_losses_match_a_hand_computation(samples):
    net = OccupancyNet(NET)
    config = _config(distill_points=0, lovasz_weight=0.5, distill_weight=2.0, pos_weight=3.0)
    batch = collate_samples(samples[:1])
    total, parts = training_losses(_TrainingModule(net), batch, config, torch.Generator())
    with torch.no_grad():
        output = net(batch.images, batch.K, batch.cam2ego)
        occ = occupancy_loss(output.occupancy_logits, batch.occupancy_state, pos_weight=3.0, lovasz_weight=0.5)
        student = net.language_features(output, samples[0].distill_points_ego)[0]
        distill = feature_distillation_loss(student, samples[0].distill_features)
    assert float(total.detach()) == pytest.approx(float(occ.total + 2.0 * distill), rel=1e-5)
    assert parts["distill"] == pytest.approx(float(distill), rel=1e-5)
    assert parts["occupancy"] == pytest.approx(float(occ.total), rel=1e-5)


def test_training_lowers_the_loss_and_resumes_exactly(samples, tmp_path):
    batches = [collate_samples([s]) for s in samples]
    trainer = OccupancyTrainer(OccupancyNet(NET), _config(epochs=6), steps_per_epoch=2)
    first = [trainer.train_step(batches[i % 2]) for i in range(4)]
    trainer.save(tmp_path / "ck.pt")
    rest = [trainer.train_step(batches[i % 2]) for i in range(4, 12)]
    assert rest[-1]["total"] < first[0]["total"]
    assert rest[-2]["distill"] < first[0]["distill"]
    # a fresh trainer restored from step 4 reproduces steps 4..11 exactly
    from geo3d.training.checkpoint import load_checkpoint

    resumed = OccupancyTrainer(OccupancyNet(dataclasses.replace(NET, seed=5)), _config(epochs=6),
                               steps_per_epoch=2)
    assert resumed.resume(load_checkpoint(tmp_path / "ck.pt")) == 4 and resumed.epoch == 2
    again = [resumed.train_step(batches[i % 2]) for i in range(4, 12)]
    assert [r["total"] for r in again] == [r["total"] for r in rest]
    assert torch.equal(_flat(resumed.net), _flat(trainer.net))
    with pytest.raises(CheckpointError, match="steps per epoch"):
        OccupancyTrainer(OccupancyNet(NET), _config(), steps_per_epoch=3).resume(load_checkpoint(tmp_path / "ck.pt"))


def test_load_occupancy_net_and_validation(samples, tmp_path):
    trainer = OccupancyTrainer(OccupancyNet(NET), _config(), steps_per_epoch=1)
    trainer.train_step(collate_samples(samples[:1]))
    path = trainer.save(tmp_path / "ck.pt")
    net, checkpoint = load_occupancy_net(path)
    assert torch.equal(_flat(net), _flat(trainer.net)) and not net.training
    assert checkpoint.extra["task"] == "train/occupancy" and checkpoint.extra["step"] == 1
    save_checkpoint(tmp_path / "other.pt", torch.nn.Linear(2, 2), epoch=0)
    with pytest.raises(CheckpointError, match="not an occupancy checkpoint"):
        load_occupancy_net(tmp_path / "other.pt")
    metrics = validation_metrics(net, samples)
    assert set(metrics) == {"target_iou", "distill_cosine", "occupancy_iou"}
    # distill_cosine is the mean cosine at every distillation point of both frames
    with torch.no_grad():
        cos = []
        for s in samples:
            out = net(s.images[None], s.K[None], s.cam2ego[None])
            cos.append((net.language_features(out, s.distill_points_ego)[0] * s.distill_features).sum(-1))
    assert metrics["distill_cosine"] == pytest.approx(float(torch.cat(cos).mean()), abs=1e-5)


def _ddp_worker(rank: int, world: int, folder: str, steps: int) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world)
    try:
        sample = load_sample(f"{folder}/sample{rank}.pt")
        trainer = OccupancyTrainer(OccupancyNet(NET), _config(), steps_per_epoch=steps)
        assert type(trainer.module).__name__ == "DistributedDataParallel"
        for _ in range(steps):
            trainer.train_step(collate_samples([sample]))
        torch.save(_flat(trainer.net), f"{folder}/params{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_distributed_data_parallel_keeps_replicas_identical(samples, tmp_path):
    steps = 3
    for rank, sample in enumerate(samples):
        save_sample(tmp_path / f"sample{rank}.pt", sample)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path), steps), nprocs=2, join=True)
    replicas = [torch.load(tmp_path / f"params{r}.pt") for r in range(2)]
    assert torch.equal(replicas[0], replicas[1])
    assert not torch.equal(replicas[0], _flat(OccupancyNet(NET)))  # they trained

    # reference in one process: average the two ranks' gradients by hand (what DDP's all-reduce does)
    config = _config()
    loaded = [load_sample(tmp_path / f"sample{r}.pt") for r in range(2)]
    net = OccupancyNet(NET)
    reference = OccupancyTrainer(net, config, steps_per_epoch=steps)
    for step in range(steps):
        grads = []
        for rank in range(2):
            reference.rank = rank
            total, _ = training_losses(reference.module, collate_samples([loaded[rank]]), config,
                                       reference.step_generator())
            net.zero_grad(set_to_none=True)
            total.backward()
            grads.append([p.grad.clone() for p in net.parameters()])
        for p, g0, g1 in zip(net.parameters(), *grads):
            p.grad = (g0 + g1) / 2
        torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
        reference.optimizer.step()
        reference.scheduler.step()
        reference.step += 1
    torch.testing.assert_close(replicas[0], _flat(net), rtol=1e-4, atol=1e-5)


def test_calibrate_threshold_picks_the_best_iou(samples):
    from geo3d.occupancy.metrics import occupancy_iou
    from geo3d.occupancy.training import calibrate_threshold

    net = OccupancyNet(NET)
    candidates = [-1.0, -0.5, 0.0, 0.5]
    best, ious = calibrate_threshold(net, samples, candidates)
    with torch.no_grad():
        logits = [net(s.images[None], s.K[None], s.cam2ego[None]).occupancy_logits[0] for s in samples]
    for c in candidates:  # pooled over both frames = IoU of the concatenated volumes
        pred = torch.cat([lg > c for lg in logits])
        truth = torch.cat([s.gt_semantics > 0 for s in samples])
        mask = torch.cat([s.gt_visible for s in samples])
        assert ious[c] == pytest.approx(occupancy_iou(pred, truth, mask), abs=1e-9)
    assert ious[best] == max(ious.values())
    with pytest.raises(OccupancyError):
        calibrate_threshold(net, [], candidates)
