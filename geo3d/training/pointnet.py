"""Training and evaluating :class:`geo3d.models.PointNetClassifier` on a :class:`ShapeSet`.

Recipe (the PointNet paper's, with the settings of :class:`PointNetTrainConfig`):

- **Data**: each shape set becomes ``points [M, P, C]`` (xyz, plus normals with ``use_normals``) and
  ``labels [M]`` (:func:`shape_set_tensors`). Training takes a random subset of ``num_points`` of
  each shape's ``P`` points every epoch (all of them when ``num_points == P``); evaluation takes the
  first ``num_points`` (the stored points are an i.i.d. uniform surface sample, so the first N are a
  uniform subset too: the ModelNet convention of :mod:`geo3d.io.modelnet`).
- **Augmentation** (training only, :func:`augment_points`, in this order): a random rotation about
  the up axis ``z`` (uniform angle; also applied to the normals) when ``rotate_z``; a random
  isotropic scale in ``[scale_min, scale_max]`` per shape (off by default); Gaussian jitter of every
  coordinate (``jitter_sigma`` 0.02 as in the paper, clipped to ``+-jitter_clip``). Normals are never
  scaled or jittered.
- **Loss**: cross-entropy plus ``regularizer_weight`` times :func:`orthogonality_regularizer` of the
  feature transform (the paper: 0.001).
- **Optimiser**: Adam (``learning_rate``, ``weight_decay``), the rate multiplied by
  :func:`learning_rate_factor` each epoch: ``"step"`` halves it every ``lr_step_epochs`` epochs
  (20), ``"cosine"`` anneals it to ``lr_min_factor`` times the start (for short runs).
- **Determinism**: all randomness of epoch ``e`` (shuffling, point subsets, augmentation, dropout)
  comes from generators seeded with ``(seed, e)``, and the initial weights from ``seed``, so a run
  resumed from a checkpoint after epoch ``e`` continues exactly as the uninterrupted run (on the same
  machine and thread count). The caller's global torch random state is left untouched.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from geo3d.errors import CaptureError
from geo3d.io.modelnet import detect_modelnet_layout, read_modelnet40
from geo3d.models.pointnet import PointNetClassifier, orthogonality_regularizer
from geo3d.structures.shapes import ShapeSet
from geo3d.training.checkpoint import Checkpoint, restore, save_checkpoint
from geo3d.training.metrics import ClassificationMetrics, classification_metrics


@dataclass
class PointNetTrainConfig:
    """Hyper-parameters of PointNet classification training (network, optimiser and augmentation
    defaults: the paper's; the schedule and epochs suit a long run, the presets train for a few)."""

    seed: int = 0
    """Seed of the initial weights and of every epoch's shuffling, augmentation and dropout."""
    epochs: int = 250
    """Epochs to train."""
    batch_size: int = 32
    """Shapes per optimisation step (the last, incomplete batch of an epoch is dropped)."""
    num_points: int = 1024
    """Points per shape fed to the network (a random subset in training, the first ones in evaluation)."""
    use_normals: bool = False
    """Feed the normals as 3 more channels per point (needs a shape set with normals)."""
    width: int = 64
    """Network width w: per-point MLPs (w, w) and (w, 2w, 16w); the global feature has 16w channels."""
    input_transform: bool = True
    """Use the 3x3 input transform net (T-Net) on xyz."""
    feature_transform: bool = True
    """Use the w x w feature transform net and its orthogonality regulariser."""
    dropout: float = 0.3
    """Dropout probability before the last layer (the paper: keep ratio 0.7)."""
    regularizer_weight: float = 0.001
    """Weight of the feature transform's orthogonality regulariser in the loss."""
    learning_rate: float = 0.001
    """Adam's initial learning rate."""
    weight_decay: float = 0.0
    """Adam's L2 weight decay."""
    lr_schedule: Literal["step", "cosine"] = "step"
    """Learning-rate schedule: halve every lr_step_epochs ("step") or cosine annealing ("cosine")."""
    lr_step_epochs: int = 20
    """"step" schedule: epochs between halvings of the learning rate."""
    lr_min_factor: float = 0.01
    """"cosine" schedule: the final learning rate as a fraction of the initial one."""
    rotate_z: bool = True
    """Augment with a random rotation about the up axis z."""
    scale_min: float = 1.0
    """Augment with a random isotropic scale of at least this (e.g. 0.8; 1 and 1: no scaling)..."""
    scale_max: float = 1.0
    """...and at most this (e.g. 1.25)."""
    jitter_sigma: float = 0.02
    """Standard deviation of the Gaussian jitter added to each coordinate (0: none)."""
    jitter_clip: float = 0.05
    """The jitter is clipped to +- this."""
    eval_batch_size: int = 64
    """Shapes per batch in evaluation."""

    def check(self) -> None:
        """Raise ValueError naming the first bad field."""
        positive = ("epochs", "batch_size", "num_points", "width", "eval_batch_size", "lr_step_epochs")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (for BatchNorm), got {self.batch_size}")
        finite = ("dropout", "regularizer_weight", "learning_rate", "weight_decay", "lr_min_factor",
                  "scale_min", "scale_max", "jitter_sigma", "jitter_clip")
        for name in finite:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(f"need 0 < scale_min <= scale_max, got {self.scale_min}, {self.scale_max}")


class ShapeTensors(NamedTuple):
    """A shape set as tensors: ``points [M, P, C]`` float32 (xyz, then normals) and ``labels [M]`` int64."""

    points: torch.Tensor
    labels: torch.Tensor


def shape_set_tensors(shapes: ShapeSet, use_normals: bool = False) -> ShapeTensors:
    """``ShapeTensors`` of a set: ``C = 6`` (xyz, normal) with ``use_normals``, else ``C = 3``."""
    points = shapes.points
    if use_normals:
        if shapes.normals is None:
            raise ValueError(f"use_normals: the {shapes.split} shape set has no normals")
        points = np.concatenate([points, shapes.normals], axis=-1)
    return ShapeTensors(torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)),
                        torch.from_numpy(shapes.labels.astype(np.int64)))


def load_shape_split(root: str | Path, split: str, num_points: int | None = None) -> ShapeSet:
    """One split of a shape-classification data folder.

    ``root`` is either a folder with ``<split>.npz`` (:meth:`ShapeSet.save`, as ``geo3d synth --kind
    shapes`` writes) or a ModelNet40 / ModelNet10 root in either layout of :mod:`geo3d.io.modelnet`
    (read with ``num_points`` points per shape, normals, unit-sphere normalisation).

    Raises:
        CaptureError: ``root`` is missing or holds neither; corrupt files (the message names them).
    """
    root = Path(root)
    if not root.is_dir():
        raise CaptureError(f"{root}: data folder not found" if not root.exists() else f"{root}: not a folder")
    path = root / f"{split}.npz"
    if path.is_file():
        return ShapeSet.load(path)
    if detect_modelnet_layout(root) is not None:
        return read_modelnet40(root, split, num_points or 1024)
    raise CaptureError(f"{root}: no {split}.npz (geo3d synth --kind shapes --out {root}) and not a "
                       "ModelNet40 folder (modelnet40_shape_names.txt or <class>/<split>/*.off)")


def augment_points(points: torch.Tensor, config: PointNetTrainConfig, generator: torch.Generator
                   ) -> torch.Tensor:
    """Random rotation about z, isotropic scale and clipped jitter (see the module docstring).

    Args:
        points: ``[B, N, C]`` xyz in channels 0:3, normals (if any) in 3:6.
        generator: source of the random numbers.

    Returns:
        ``[B, N, C]`` new tensor.
    """
    batch = points.shape[0]
    xyz, rest = points[..., :3], points[..., 3:]
    if config.rotate_z:
        angle = torch.rand(batch, generator=generator) * (2 * math.pi)
        cos, sin, zero, one = torch.cos(angle), torch.sin(angle), torch.zeros(batch), torch.ones(batch)
        # row vectors: p' = p @ R^T with R the rotation by `angle` about z
        rotation_t = torch.stack([cos, sin, zero, -sin, cos, zero, zero, zero, one], dim=1).view(batch, 3, 3)
        xyz = xyz @ rotation_t
        if rest.shape[-1] >= 3:
            rest = torch.cat([rest[..., :3] @ rotation_t, rest[..., 3:]], dim=-1)
    if config.scale_max > config.scale_min or config.scale_min != 1.0:
        spread = config.scale_max - config.scale_min
        scale = config.scale_min + torch.rand(batch, generator=generator) * spread
        xyz = xyz * scale[:, None, None]
    if config.jitter_sigma > 0:
        noise = torch.randn(xyz.shape, generator=generator) * config.jitter_sigma
        xyz = xyz + noise.clamp(-config.jitter_clip, config.jitter_clip)
    return torch.cat([xyz, rest], dim=-1) if rest.shape[-1] else xyz.contiguous()


def learning_rate_factor(config: PointNetTrainConfig, epoch: int) -> float:
    """The learning rate of epoch ``epoch`` (0-based) as a fraction of ``config.learning_rate``."""
    if config.lr_schedule == "step":
        return 0.5 ** (epoch // config.lr_step_epochs)
    progress = min(epoch / max(1, config.epochs - 1), 1.0)
    return config.lr_min_factor + (1 - config.lr_min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


class EpochStats(NamedTuple):
    """One training epoch: ``epoch`` (1-based count of epochs done), mean ``loss``, training
    ``accuracy`` (on augmented shapes), the ``learning_rate`` used and the wall time ``seconds``."""

    epoch: int
    loss: float
    accuracy: float
    learning_rate: float
    seconds: float


class PointNetTrainer:
    """A PointNet classifier with its optimiser and schedule; trains epoch by epoch and evaluates.

    Args:
        config: hyper-parameters (checked).
        num_classes: ``K`` classes of the shape set.
    """

    def __init__(self, config: PointNetTrainConfig, num_classes: int) -> None:
        config.check()
        self.config = config
        self.num_classes = num_classes
        self.in_channels = 6 if config.use_normals else 3
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.model = PointNetClassifier(num_classes, self.in_channels, config.width,
                                            config.input_transform, config.feature_transform, config.dropout)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate,
                                          weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda epoch: learning_rate_factor(self.config, epoch))
        self.epoch = 0

    def _check_data(self, data: ShapeTensors, what: str) -> None:
        points, labels = data
        if points.ndim != 3 or points.shape[-1] != self.in_channels:
            raise ValueError(f"{what}: expected points [M, P, {self.in_channels}], got {tuple(points.shape)}")
        if points.shape[1] < self.config.num_points:
            raise ValueError(f"{what}: shapes have {points.shape[1]} points, fewer than num_points="
                             f"{self.config.num_points}")
        if labels.shape != (points.shape[0],) or (labels.numel() and int(labels.max()) >= self.num_classes):
            raise ValueError(f"{what}: labels must be [M] in [0, {self.num_classes})")

    def train_epoch(self, data: ShapeTensors, progress: Callable[[Iterable[int]], Iterable[int]] | None = None
                    ) -> EpochStats:
        """Run one epoch over ``data`` (shuffled); ``progress`` may wrap the loop over batches (tqdm:
        its ``set_postfix`` then shows the running loss and accuracy)."""
        self._check_data(data, "training data")
        config, count = self.config, data.points.shape[0]
        if count < 2:
            raise ValueError("training data: need at least 2 shapes (BatchNorm)")
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(_epoch_seed(config.seed, self.epoch))
        learning_rate = self.optimizer.param_groups[0]["lr"]
        order = torch.randperm(count, generator=generator)
        batch_size = min(config.batch_size, count)
        batches: Iterable[int] = range(count // batch_size)
        loss_sum = correct = seen = 0
        self.model.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_epoch_seed(config.seed + 1, self.epoch))  # dropout
            iterator = progress(batches) if progress is not None else batches
            for step in iterator:
                index = order[step * batch_size : (step + 1) * batch_size]
                points = self._subset(data.points[index], generator)
                points = augment_points(points, config, generator)
                labels = data.labels[index]
                logits, features = self.model.forward_with_features(points)
                loss = F.cross_entropy(logits, labels)
                if features.feature_transform is not None and config.regularizer_weight > 0:
                    regularizer = orthogonality_regularizer(features.feature_transform)
                    loss = loss + config.regularizer_weight * regularizer
                if not torch.isfinite(loss):
                    raise ValueError(f"training diverged: the loss is {float(loss.detach())} at epoch "
                                     f"{self.epoch + 1}, step {step + 1} (try a lower learning_rate)")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                loss_sum += float(loss.detach()) * len(index)
                correct += int((logits.argmax(1) == labels).sum())
                seen += len(index)
                if hasattr(iterator, "set_postfix"):
                    iterator.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                                         refresh=False)
        self.scheduler.step()
        self.epoch += 1
        seconds = time.perf_counter() - start
        return EpochStats(self.epoch, loss_sum / seen, correct / seen, learning_rate, seconds)

    def _subset(self, points: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A random subset of ``num_points`` points of each shape ``[B, P, C]`` -> ``[B, N, C]``."""
        batch, available, channels = points.shape
        if available == self.config.num_points:
            return points
        keep = torch.rand(batch, available, generator=generator).argsort(dim=1)[:, : self.config.num_points]
        return torch.gather(points, 1, keep[:, :, None].expand(-1, -1, channels))

    @torch.no_grad()
    def predict(self, points: torch.Tensor) -> torch.Tensor:
        """Logits ``[M, K]`` of shapes ``[M, P, C]`` (their first ``num_points`` points), in eval mode."""
        self.model.eval()
        points = points[:, : self.config.num_points]
        size = self.config.eval_batch_size
        return torch.cat([self.model(points[i : i + size]) for i in range(0, points.shape[0], size)])

    def evaluate(self, data: ShapeTensors) -> tuple[ClassificationMetrics, torch.Tensor]:
        """``(metrics, predictions [M])`` of the model on ``data`` (no augmentation)."""
        self._check_data(data, "evaluation data")
        predictions = self.predict(data.points).argmax(1)
        return classification_metrics(predictions, data.labels, self.num_classes), predictions

    def save(self, path, config: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
             extra: dict[str, Any] | None = None):
        """Checkpoint model, optimiser, schedule and epoch (see :func:`save_checkpoint`)."""
        return save_checkpoint(path, self.model, epoch=self.epoch, optimizer=self.optimizer,
                               scheduler=self.scheduler, config=config, metrics=metrics, extra=extra)

    def resume(self, checkpoint: Checkpoint, weights_only: bool = False) -> int:
        """Load a checkpoint's model (and, unless ``weights_only``, optimiser and schedule); returns the
        epoch training continues from."""
        if weights_only:
            restore(checkpoint, self.model)
        else:
            restore(checkpoint, self.model, self.optimizer, self.scheduler)
        self.epoch = checkpoint.epoch
        return self.epoch
