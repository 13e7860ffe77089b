"""Training of :class:`~geo3d.occupancy.network.OccupancyNet`: losses of one step, optimiser and schedule,
validation, checkpoints, and data-parallel training with PyTorch's ``DistributedDataParallel``.

One step on a batch (:class:`~geo3d.occupancy.samples.OccupancyBatch`):

- occupancy: :func:`~geo3d.occupancy.losses.occupancy_loss` (cross-entropy + Lovász-softmax) of the
  occupancy logits against the LiDAR targets (unknown voxels ignored);
- language: :func:`~geo3d.occupancy.losses.feature_distillation_loss` between the student's features
  at the distillation points (LiDAR returns seen by a camera) and the teacher's features there; at most
  ``distill_points`` points per sample and step are drawn (uniformly, seeded by the step), which keeps a
  step's cost independent of the LiDAR density;
- total ``occupancy_weight * occupancy + distill_weight * distillation``; AdamW; a linear warm-up of
  ``warmup_steps`` then a cosine decay to ``min_lr_ratio * lr`` over the run; gradient-norm clipping.

Data-parallel training: when ``torch.distributed`` is initialised with more than one process (the
app is launched with ``torchrun``), :class:`OccupancyTrainer` wraps the network in
``DistributedDataParallel``; each process takes its own batches (``DistributedSampler``) and DDP
all-reduces (averages) the gradients, so the replicas stay identical. Both heads run inside the
wrapped module's ``forward`` (:class:`_TrainingModule`), as DDP requires.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geo3d.occupancy.losses import feature_distillation_loss, occupancy_loss
from geo3d.occupancy.metrics import ConfusionAccumulator
from geo3d.occupancy.network import OccupancyNet, OccupancyNetConfig
from geo3d.occupancy.samples import OccupancyBatch
from geo3d.occupancy.targets import OccupancyError

DISTILL_KINDS = ("cosine", "l2", "cosine+l2")


@dataclass
class OccupancyTrainConfig:
    """Optimisation of :class:`OccupancyNet` (module docstring).

    Attributes:
        epochs: passes over the training frames.
        batch_size: frames per step and process.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps from ``lr / warmup_steps``.
        min_lr_ratio: final learning rate of the cosine decay, as a fraction of ``lr``.
        grad_clip: maximum gradient norm (0 disables clipping).
        occupancy_weight, distill_weight: weights of the two heads' losses.
        lovasz_weight: weight of the Lovász term inside the occupancy loss.
        pos_weight: weight of occupied voxels in the cross-entropy (None: 1).
        distill_kind: ``"cosine"``, ``"l2"`` or ``"cosine+l2"``.
        distill_points: distillation points drawn per sample and step (0: all).
        seed: seeds the initial weights' shuffle order and the point draws (the net's own seed is
            in its config).
    """

    epochs: int = 6
    batch_size: int = 1
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    grad_clip: float = 5.0
    occupancy_weight: float = 1.0
    distill_weight: float = 1.0
    lovasz_weight: float = 1.0
    pos_weight: float | None = None
    distill_kind: str = "cosine"
    distill_points: int = 4096
    seed: int = 0

    def check(self) -> None:
        """Raise :class:`OccupancyError` for an invalid value."""
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OccupancyError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("warmup_steps", "distill_points"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise OccupancyError(f"{name} must be an int >= 0, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise OccupancyError(f"lr must be a finite number > 0, got {self.lr!r}")
        for name in ("weight_decay", "grad_clip", "occupancy_weight", "distill_weight", "lovasz_weight"):
            value = getattr(self, name)
            finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not (finite and value >= 0):
                raise OccupancyError(f"{name} must be a finite number >= 0, got {value!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise OccupancyError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.pos_weight is not None and not (math.isfinite(self.pos_weight) and self.pos_weight > 0):
            raise OccupancyError(f"pos_weight must be a finite number > 0 or None, got {self.pos_weight!r}")
        if self.distill_kind not in DISTILL_KINDS:
            raise OccupancyError(f"distill_kind must be one of {DISTILL_KINDS}, got {self.distill_kind!r}")
        if self.occupancy_weight == 0 and self.distill_weight == 0:
            raise OccupancyError("occupancy_weight and distill_weight are both 0: nothing to train")


def learning_rate_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based): linear warm-up to 1
    over ``warmup_steps``, then a half-cosine from 1 to ``min_lr_ratio`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def draw_distillation(batch: OccupancyBatch, count: int, generator: torch.Generator
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """At most ``count`` distillation points per sample, uniformly without replacement (0: all).

    Returns:
        ``points [B, M, 3]``, ``features [B, M, D]``, ``weights [B, M]`` (1 for a drawn point, 0 for
        padding, ``M = min(count, longest sample)``).
    """
    lengths = batch.distill_lengths.tolist()
    longest = max(lengths) if lengths else 0
    size = longest if count == 0 else min(count, longest)
    points = batch.distill_points_ego.new_zeros(len(lengths), size, 3)
    features = batch.distill_features.new_zeros(len(lengths), size, batch.distill_features.shape[-1])
    weights = batch.distill_points_ego.new_zeros(len(lengths), size)
    for b, length in enumerate(lengths):
        if length == 0 or size == 0:
            continue
        if length > size:
            take = torch.randperm(length, generator=generator)[:size].to(points.device)
        else:
            take = torch.arange(length, device=points.device)
        points[b, :len(take)] = batch.distill_points_ego[b, take]
        features[b, :len(take)] = batch.distill_features[b, take]
        weights[b, :len(take)] = 1.0
    return points, features, weights


class _TrainingModule(nn.Module):
    """Both heads in one ``forward`` (what ``DistributedDataParallel`` wraps)."""

    def __init__(self, net: OccupancyNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images, K, cam2ego, points):
        output = self.net(images, K, cam2ego)
        return output.occupancy_logits, self.net.language_features(output, points)


class StepLosses(dict):
    """Loss values of a step as floats: ``total``, ``occupancy``, ``ce``, ``lovasz``, ``distill``."""


def training_losses(module: nn.Module, batch: OccupancyBatch, config: OccupancyTrainConfig,
                    generator: torch.Generator) -> tuple[torch.Tensor, StepLosses]:
    """The loss of one batch (module docstring) and its parts; ``module`` is a :class:`_TrainingModule`
    (or its DDP wrapper)."""
    points, teacher, weights = draw_distillation(batch, config.distill_points, generator)
    logits, student = module(batch.images, batch.K, batch.cam2ego, points)
    occ = occupancy_loss(logits, batch.occupancy_state, pos_weight=config.pos_weight,
                         lovasz_weight=config.lovasz_weight)
    distill = feature_distillation_loss(student.reshape(-1, student.shape[-1]),
                                        teacher.reshape(-1, teacher.shape[-1]), kind=config.distill_kind,
                                        weights=weights.reshape(-1))
    total = config.occupancy_weight * occ.total + config.distill_weight * distill
    parts = StepLosses(total=float(total.detach()), occupancy=float(occ.total.detach()), ce=float(occ.ce.detach()),
                       lovasz=float(occ.lovasz.detach()), distill=float(distill.detach()))
    return total, parts


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class OccupancyTrainer:
    """Optimiser, schedule and step counter of one training run of ``net``.

    Args:
        net: the network (moved to ``device``).
        config: :class:`OccupancyTrainConfig`.
        steps_per_epoch: optimiser steps per epoch of this process (for the schedule).
        device: where to train.

    With ``torch.distributed`` initialised and more than one process, the network is wrapped in
    ``DistributedDataParallel`` (gloo on CPUs, NCCL on GPUs: the caller's ``init_process_group``).
    """

    def __init__(self, net: OccupancyNet, config: OccupancyTrainConfig, steps_per_epoch: int,
                 device: str | torch.device = "cpu") -> None:
        config.check()
        if not isinstance(net, OccupancyNet):
            raise OccupancyError(f"net must be an OccupancyNet, got {type(net).__name__}")
        if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
            raise OccupancyError(f"steps_per_epoch must be an int >= 1, got {steps_per_epoch!r}")
        self.config = config
        self.device = torch.device(device)
        self.net = net.to(self.device)
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = steps_per_epoch * config.epochs
        self.rank, self.world_size = _world()
        module: nn.Module = _TrainingModule(self.net)
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index or 0] if self.device.type == "cuda" else None
            module = DistributedDataParallel(module, device_ids=device_ids)
        self.module = module
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: learning_rate_factor(
            step, self.total_steps, config.warmup_steps, config.min_lr_ratio))
        self.step = 0

    @property
    def epoch(self) -> int:
        """Completed epochs."""
        return self.step // self.steps_per_epoch

    def step_generator(self) -> torch.Generator:
        """The generator of the current step's point draws (seed, step and rank: resumable)."""
        return torch.Generator().manual_seed(hash((self.config.seed, self.step, self.rank)) & 0x7FFF_FFFF_FFFF)

    def train_step(self, batch: OccupancyBatch) -> StepLosses:
        """One optimiser step on ``batch``; returns the loss parts (and the learning rate used, ``lr``)."""
        self.module.train()
        batch = batch.to(self.device)
        total, parts = training_losses(self.module, batch, self.config, self.step_generator())
        if not torch.isfinite(total):
            raise OccupancyError(f"step {self.step}: the loss is not finite ({parts})")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.config.grad_clip > 0:
            parts["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.config.grad_clip))
        parts["lr"] = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return parts

    def save(self, path: str | Path, *, config: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
             extra: dict[str, Any] | None = None) -> Path:
        """Checkpoint the network, optimiser, schedule and step (atomically)."""
        from geo3d.training.checkpoint import save_checkpoint

        info = {"task": "train/occupancy", "net_config": self.net.config.to_dict(), "step": self.step,
                "steps_per_epoch": self.steps_per_epoch, "train_config": asdict(self.config), **(extra or {})}
        return save_checkpoint(path, self.net, epoch=self.epoch, optimizer=self.optimizer,
                               scheduler=self.scheduler, config=config, metrics=metrics, extra=info)

    def resume(self, checkpoint) -> int:
        """Restore a checkpoint of the same run; returns the step to continue from."""
        from geo3d.training.checkpoint import CheckpointError, restore

        saved = checkpoint.extra.get("steps_per_epoch")
        if saved is not None and saved != self.steps_per_epoch:
            raise CheckpointError(f"{checkpoint.path}: saved with {saved} steps per epoch, this run has "
                                  f"{self.steps_per_epoch} (other data or batch size); start over")
        restore(checkpoint, self.net, self.optimizer, self.scheduler)
        self.step = int(checkpoint.extra.get("step", checkpoint.epoch * self.steps_per_epoch))
        return self.step


def load_occupancy_net(path: str | Path, map_location: str | torch.device = "cpu"):
    """An :class:`OccupancyNet` rebuilt from a checkpoint of ``geo3d train occupancy`` (its config in
    ``extra["net_config"]``) with its weights; returns ``(net in eval mode, Checkpoint)``.

    Raises:
        CheckpointError: unreadable file, not an occupancy checkpoint, or weights that do not fit.
    """
    from geo3d.training.checkpoint import CheckpointError, load_checkpoint, restore

    checkpoint = load_checkpoint(path, map_location=map_location)
    if not isinstance(checkpoint.extra.get("net_config"), dict):
        raise CheckpointError(f"{path}: not an occupancy checkpoint (no net_config in its extra; task "
                              f"{checkpoint.extra.get('task')!r})")
    try:
        config = OccupancyNetConfig.from_dict(checkpoint.extra["net_config"])
    except (OccupancyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid network config ({exc})") from None
    net = OccupancyNet(config)
    restore(checkpoint, net)
    return net.eval(), checkpoint


@torch.no_grad()
def validation_metrics(net: OccupancyNet, samples, class_embeddings: torch.Tensor | None = None,
                       device: str | torch.device = "cpu") -> dict[str, float]:
    """Quick validation over samples (one frame at a time), for progress reports during training.

    Returns ``target_iou`` (occupied-class IoU against the LiDAR targets' known voxels),
    ``distill_cosine`` (mean cosine between student and teacher features at the distillation points),
    and, for samples with ground truth, ``occupancy_iou`` (against the ground truth inside the camera
    mask) and, with ``class_embeddings [16, D]`` (classes 1..16), ``miou`` (zero-shot, as in
    :mod:`geo3d.occupancy.metrics`). ``geo3d eval occupancy`` gives the full report.
    """
    from geo3d.occupancy.metrics import SEMANTIC_CLASSES, zero_shot_labels

    net.eval()
    targets = ConfusionAccumulator(2)
    truth = ConfusionAccumulator(2)
    semantic = ConfusionAccumulator(len(SEMANTIC_CLASSES) + 1)
    cosines, count, with_truth = 0.0, 0, False
    for sample in samples:
        output = net(sample.images[None].to(device), sample.K[None].to(device), sample.cam2ego[None].to(device))
        occupied = (output.occupancy_logits[0] > 0).cpu()
        known = sample.occupancy_state >= 0
        targets.update(occupied, sample.occupancy_state == 1, known)
        if len(sample.distill_points_ego):
            student = net.language_features(output, sample.distill_points_ego.to(device))[0].cpu()
            cosines += float((student * sample.distill_features).sum(-1).sum())
            count += len(student)
        if sample.gt_semantics is not None and sample.gt_visible is not None:
            with_truth = True
            truth.update(occupied, sample.gt_semantics > 0, sample.gt_visible)
            if class_embeddings is not None:
                labels = torch.zeros_like(sample.gt_semantics)
                if occupied.any():
                    features = net.dense_language_features(output, occupied[None].to(device)).cpu()
                    labels[occupied] = zero_shot_labels(features, class_embeddings.cpu(),
                                                        torch.tensor(SEMANTIC_CLASSES))
                semantic.update(labels, sample.gt_semantics, sample.gt_visible)
    result = {"target_iou": float(targets.iou()[1]), "distill_cosine": cosines / max(count, 1)}
    if with_truth:
        result["occupancy_iou"] = float(truth.iou()[1])
        if class_embeddings is not None:
            result["miou"] = semantic.miou(SEMANTIC_CLASSES)
    return result


@torch.no_grad()
def calibrate_threshold(net: OccupancyNet, samples, candidates=None, device: str | torch.device = "cpu"
                        ) -> tuple[float, dict[float, float]]:
    """The occupancy-logit threshold with the best ground-truth IoU (camera mask) on ``samples``.

    LiDAR targets leave most of the grid unknown, so the logit at which a voxel is best called occupied
    need not be 0; choose it on validation frames (never on the evaluation frames) and pass it to the
    evaluation. Returns ``(threshold, {candidate: IoU})``; candidates default to -3.0 .. 3.0 in steps
    of 0.25. Samples need ``gt_semantics`` and ``gt_visible``.
    """
    values = [float(c) for c in (torch.arange(-12, 13) * 0.25 if candidates is None else candidates)]
    if not values:
        raise OccupancyError("candidates is empty")
    tallies = {c: torch.zeros(3, dtype=torch.float64) for c in values}  # intersection, predicted, truth
    net.eval()
    seen = 0
    for sample in samples:
        if sample.gt_semantics is None or sample.gt_visible is None:
            raise OccupancyError("calibrate_threshold needs samples with gt_semantics and gt_visible")
        logits = net(sample.images[None].to(device), sample.K[None].to(device),
                     sample.cam2ego[None].to(device)).occupancy_logits[0].cpu()
        visible = sample.gt_visible
        truth = (sample.gt_semantics > 0) & visible
        scores = logits[visible]
        truth_visible = truth[visible]
        for c in values:
            predicted = scores > c
            tallies[c] += torch.tensor([float((predicted & truth_visible).sum()), float(predicted.sum()),
                                        float(truth_visible.sum())], dtype=torch.float64)
        seen += 1
    if seen == 0:
        raise OccupancyError("samples is empty: nothing to calibrate on")
    ious = {c: float(t[0] / max(float(t[1] + t[2] - t[0]), 1.0)) for c, t in tallies.items()}
    best = max(values, key=lambda c: (ious[c], -abs(c)))
    return best, ious
