"""OccFeat mode: fine-tune a pre-trained occupancy network for BEV semantic segmentation.

OccFeat (Sirko-Galouchenko et al., CVPR-W 2024) pre-trains a camera-to-BEV network without labels, with
3D occupancy and foundation-feature distillation losses (here :func:`~geo3d.occupancy.occupancy_loss` and
:func:`~geo3d.occupancy.feature_distillation_loss` on an :class:`~geo3d.occupancy.network.OccupancyNet`),
then fine-tunes it for BEV segmentation (vehicles, as Simple-BEV); the gain is largest with few labels.
This module is the fine-tuning side: :func:`bev_labels` (BEV targets from Occ3D-style ground truth),
:class:`BevSegmentationNet` (a head on the backbone's BEV features), :func:`bev_segmentation_loss` and
:class:`BevIoUAccumulator`, :func:`train_bev_head` / :func:`evaluate_bev` (seeded, deterministic AdamW
fine-tuning on prepared samples) and :func:`label_subset` (the labelled frames of a few-label run).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from geo3d.occupancy.losses import lovasz_hinge
from geo3d.occupancy.network import OccupancyNet
from geo3d.occupancy.samples import OccupancySample
from geo3d.occupancy.targets import OccupancyError, check_finite_tensor
from geo3d.synthetic.classes import CLASS_IDS, CLASS_NAMES

BEV_CLASSES: dict[str, tuple[str, ...]] = {
    "vehicle": ("bicycle", "bus", "car", "construction_vehicle", "motorcycle", "trailer", "truck"),
    "drivable": ("driveable_surface",),
}
"""Default BEV classes: group name -> class names of :data:`~geo3d.synthetic.classes.CLASS_NAMES`.
``vehicle`` is nuScenes' ``vehicle.*`` super-category (Simple-BEV / OccFeat's vehicle segmentation)."""

SIMPLE_BEV_POS_WEIGHT = 2.13
"""Positive-class weight of the vehicle BCE in Lift-Splat-Shoot and Simple-BEV."""


# ----------------------------------------------------------------------------------------------- labels


class BevLabels(NamedTuple):
    """Result of :func:`bev_labels`.

    Attributes:
        targets: ``[K, X, Y]`` (or ``[B, K, X, Y]``) bool, column ``(x, y)`` belongs to class group ``k``.
        valid: ``[X, Y]`` (or ``[B, X, Y]``) bool, columns with at least one camera-visible voxel.
    """

    targets: torch.Tensor
    valid: torch.Tensor


def class_groups(classes: Mapping[str, Sequence[str]] = BEV_CLASSES) -> tuple[tuple[str, ...], list[list[int]]]:
    """``(group names, class ids per group)`` of a mapping group name -> class names, checked.

    Raises:
        OccupancyError: an empty mapping or group, or a name that is not a class (or is ``free``).
    """
    if not isinstance(classes, Mapping) or not classes:
        raise OccupancyError(f"classes must be a non-empty mapping of group name -> class names, got {classes!r}")
    names, ids = [], []
    for group, members in classes.items():
        if not isinstance(group, str) or not group:
            raise OccupancyError(f"classes: group names must be non-empty strings, got {group!r}")
        if isinstance(members, str) or not isinstance(members, Sequence) or not members:
            raise OccupancyError(f"classes[{group!r}] must be a non-empty sequence of class names, got {members!r}")
        unknown = [m for m in members if m not in CLASS_IDS or m == CLASS_NAMES[0]]
        if unknown:
            raise OccupancyError(f"classes[{group!r}]: {unknown} are not object or surface classes of "
                                 f"CLASS_NAMES ({', '.join(CLASS_NAMES[1:])})")
        names.append(group)
        ids.append(sorted({CLASS_IDS[m] for m in members}))
    return tuple(names), ids


def bev_labels(gt_semantics: torch.Tensor, gt_visible: torch.Tensor,
               classes: Mapping[str, Sequence[str]] = BEV_CLASSES) -> BevLabels:
    """BEV segmentation targets from a semantic occupancy grid (Occ3D style, z up).

    Args:
        gt_semantics: ``[X, Y, Z]`` or ``[B, X, Y, Z]`` integer class ids of
            :data:`~geo3d.synthetic.classes.CLASS_NAMES` (0 free).
        gt_visible: bool, same shape: camera visibility of each voxel.
        classes: group name -> class names (default :data:`BEV_CLASSES`); the order gives ``k``.

    Returns:
        :class:`BevLabels` ``targets [(B,) K, X, Y]`` (any voxel of the column in the group) and
        ``valid [(B,) X, Y]`` (any voxel of the column visible).
    """
    if not isinstance(gt_semantics, torch.Tensor) or gt_semantics.dtype.is_floating_point \
            or gt_semantics.dtype == torch.bool or gt_semantics.ndim not in (3, 4):
        raise OccupancyError(f"gt_semantics must be an integer [X, Y, Z] or [B, X, Y, Z] tensor, got "
                             f"{_describe(gt_semantics)}")
    if not isinstance(gt_visible, torch.Tensor) or gt_visible.dtype != torch.bool \
            or gt_visible.shape != gt_semantics.shape:
        raise OccupancyError(f"gt_visible must be a bool tensor of gt_semantics' shape {list(gt_semantics.shape)}, "
                             f"got {_describe(gt_visible)}")
    _, ids = class_groups(classes)
    if gt_semantics.numel() and (int(gt_semantics.min()) < 0 or int(gt_semantics.max()) >= len(CLASS_NAMES)):
        raise OccupancyError(f"gt_semantics ids must lie in [0, {len(CLASS_NAMES)}), got "
                             f"{int(gt_semantics.min())}..{int(gt_semantics.max())}")
    table = torch.zeros(len(ids), len(CLASS_NAMES), dtype=torch.bool, device=gt_semantics.device)
    for k, group in enumerate(ids):
        table[k, group] = True
    semantics = gt_semantics.long()
    targets = torch.stack([table[k][semantics].any(dim=-1) for k in range(len(ids))], dim=-3)
    return BevLabels(targets, gt_visible.any(dim=-1))


def label_subset(num_frames: int, fraction: float, seed: int = 0) -> torch.Tensor:
    """The labelled frames of a few-label experiment: ``max(1, fraction * num_frames rounded half up)`` indices.

    The indices are the first ones of a permutation of ``range(num_frames)`` drawn by a generator seeded
    with ``seed``, returned sorted: the same arguments always give the same subset, and with one seed the
    subset of a smaller fraction is contained in that of a larger one.

    Returns:
        ``[L]`` int64 sorted distinct indices in ``[0, num_frames)``.
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise OccupancyError(f"num_frames must be a positive int, got {num_frames!r}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise OccupancyError(f"fraction must be a number in (0, 1], got {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise OccupancyError(f"seed must be an int, got {seed!r}")
    count = min(num_frames, max(1, math.floor(fraction * num_frames + 0.5)))
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(num_frames, generator=generator)[:count].sort().values


# ----------------------------------------------------------------------------------------------- network


class BevSegmentationNet(nn.Module):
    """An :class:`OccupancyNet` backbone with a BEV segmentation head on its BEV features.

    Head: 3x3 convolution ``W0 -> hidden``, GroupNorm, ReLU, 1x1 convolution ``hidden -> K s s`` and a
    pixel shuffle by ``s = backbone.config.upsample``, so each lifting cell predicts the ``s x s`` cells of
    the output grid it covers (the occupancy head's channel-to-height, without the height). The last bias
    starts at ``logit(prior)``.

    Args:
        backbone: the (pre-trained or fresh) occupancy network; its ``bev`` output is the head's input.
        num_classes: ``K``, the number of BEV classes.
        hidden: channels of the head's hidden layer (default ``backbone.config.occupancy_hidden``).
        prior: initial probability of each class in every cell, in (0, 1): one number or ``K``
            (:meth:`set_prior`; :func:`train_bev_head` sets it from the labels by default).
        seed: seed of the head's initialisation (the backbone keeps its weights).
    """

    def __init__(self, backbone: OccupancyNet, num_classes: int, *, hidden: int | None = None,
                 prior: float | Sequence[float] = 0.1, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(backbone, OccupancyNet):
            raise OccupancyError(f"backbone must be an OccupancyNet, got {type(backbone).__name__}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise OccupancyError(f"num_classes must be a positive int, got {num_classes!r}")
        hidden = backbone.config.occupancy_hidden if hidden is None else hidden
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise OccupancyError(f"hidden must be a positive int, got {hidden!r}")
        self.backbone = backbone
        self.num_classes = num_classes
        self.upsample = backbone.config.upsample
        width = backbone.config.bev_widths[0]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = nn.Sequential(nn.Conv2d(width, hidden, 3, padding=1, bias=False),
                                      nn.GroupNorm(math.gcd(8, hidden), hidden), nn.ReLU(inplace=True),
                                      nn.Conv2d(hidden, num_classes * self.upsample ** 2, 1))
        self.head.to(next(backbone.parameters()).device)
        self.set_prior(prior)

    @torch.no_grad()
    def set_prior(self, prior: float | Sequence[float] | torch.Tensor) -> None:
        """Set the last bias so that the head predicts probability ``prior[k]`` for class ``k`` when its
        hidden features are 0 (``logit(prior)``; one number for all classes or ``K``, each in (0, 1)).

        Adam moves a bias by at most about the learning rate per step, so with a short fine-tuning a bias
        that starts far from a class's frequency (a drivable surface covering half of the cells, a prior
        of 0.1) never catches up; starting at the frequency avoids that (RetinaNet's prior initialisation).
        """
        values = _per_class(prior, self.num_classes, "prior", probability=True)
        logits = torch.tensor([math.log(v / (1.0 - v)) for v in values])
        bias = self.head[-1].bias
        bias.copy_(logits.repeat_interleave(self.upsample ** 2).to(bias))

    @property
    def grid_xy(self) -> tuple[int, int]:
        """``(X, Y)`` of the logits: the backbone's output grid."""
        return tuple(self.backbone.config.output_grid.shape[:2])

    def head_logits(self, bev: torch.Tensor) -> torch.Tensor:
        """``[B, W0, X', Y']`` BEV features -> ``[B, K, X, Y]`` logits (``X = s X'``, ``Y = s Y'``)."""
        return F.pixel_shuffle(self.head(bev), self.upsample)

    def forward(self, images: torch.Tensor, K: torch.Tensor, cam2ego: torch.Tensor) -> torch.Tensor:
        """BEV logits of a batch of camera rigs.

        Args:
            images: ``[B, C, 3, H, W]`` float RGB in [0, 1]; K: ``[B, C, 3, 3]`` pixels;
                cam2ego: ``[B, C, 4, 4]`` metres, OpenCV camera axes (as :meth:`OccupancyNet.forward`).

        Returns:
            ``[B, K, X, Y]`` logits on the output grid's cells (> 0: the class is there).
        """
        return self.head_logits(self.backbone(images, K, cam2ego).bev)

    def segmentation_parameters(self, include_backbone: bool = True) -> list[nn.Parameter]:
        """Parameters that the BEV logits depend on: encoder, BEV decoder and head (the backbone's
        occupancy and language heads are left out), or the head alone."""
        modules = [self.backbone.encoder, self.backbone.decoder, self.head] if include_backbone else [self.head]
        return [p for module in modules for p in module.parameters()]


# ----------------------------------------------------------------------------------------------- loss, IoU


class BevLoss(NamedTuple):
    """Result of :func:`bev_segmentation_loss` (scalar tensors).

    Attributes:
        total: ``bce + lovasz_weight * lovasz``.
        bce: (weighted) binary cross-entropy averaged over valid cells and classes.
        lovasz: mean over classes of the Lovász hinge on the valid cells (0 when disabled).
    """

    total: torch.Tensor
    bce: torch.Tensor
    lovasz: torch.Tensor


def _per_class(value, count: int, name: str, *, probability: bool = False) -> list[float]:
    """One number or ``count`` numbers (sequence or tensor) -> ``count`` floats, each > 0 (and < 1 for a
    probability); :class:`OccupancyError` naming ``name`` otherwise."""
    values = value.detach().reshape(-1).tolist() if isinstance(value, torch.Tensor) else value
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values] * count
    what = "probability in (0, 1)" if probability else "positive finite number"
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) != count or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < (1 if probability else math.inf)
            for v in values):
        raise OccupancyError(f"{name} must be one {what} or {count} (one per class), got {value!r}")
    return [float(v) for v in values]


def _describe(value) -> str:
    """``"<dtype> [shape]"`` of a tensor, the type name of anything else (for error messages)."""
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} {list(value.shape)}"
    return type(value).__name__


def _check_targets(logits: torch.Tensor, targets, valid, what: str = "logits") -> None:
    batch, _, x, y = logits.shape
    if not isinstance(targets, torch.Tensor) or targets.dtype != torch.bool or targets.shape != logits.shape:
        raise OccupancyError(f"targets must be a bool tensor of {what}' shape {list(logits.shape)}, got "
                             f"{_describe(targets)}")
    if not isinstance(valid, torch.Tensor) or valid.dtype != torch.bool or valid.shape != (batch, x, y):
        raise OccupancyError(f"valid must be a bool [{batch}, {x}, {y}] tensor, got {_describe(valid)}")


def bev_segmentation_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, *,
                          pos_weight: float | Sequence[float] | torch.Tensor | None = None,
                          lovasz_weight: float = 0.0) -> BevLoss:
    """Per-class binary cross-entropy of BEV logits on the valid cells, plus an optional Lovász hinge.

    The cross-entropy is ``BCEWithLogitsLoss(pos_weight=...)`` per class and cell, averaged over the valid
    cells of the batch and the ``K`` classes (a mean over elements, not over weights), as in Lift-Splat-Shoot
    and Simple-BEV, which OccFeat follows (their vehicle ``pos_weight`` is :data:`SIMPLE_BEV_POS_WEIGHT`).

    The optional Lovász hinge (Berman et al., :func:`~geo3d.occupancy.losses.lovasz_hinge`), averaged over
    classes and pooled over the batch, is a convex surrogate of each class's ``1 - IoU``: the metric itself.
    With few labelled frames and small classes (vehicles cover a few percent of the cells) the cross-entropy
    is dominated by the background and the decision threshold drifts; the IoU surrogate counters that
    without hand-tuned weights. It is off by default (``lovasz_weight=0``), so that the default recipe is
    the papers' and few-label results compare with theirs.

    Args:
        logits: ``[B, K, X, Y]`` float logits.
        targets: ``[B, K, X, Y]`` bool BEV labels (:func:`bev_labels`).
        valid: ``[B, X, Y]`` bool cells that count.
        pos_weight: weight of positive cells, one number for all classes or ``K`` numbers; None: 1.
        lovasz_weight: factor of the Lovász term (0: off, not computed).

    Returns:
        :class:`BevLoss`; every term is 0 (attached to the graph) when no cell is valid.
    """
    logits = check_finite_tensor(logits, "logits", ndim=4)
    _check_targets(logits, targets, valid)
    if isinstance(lovasz_weight, bool) or not isinstance(lovasz_weight, (int, float)) \
            or not 0 <= lovasz_weight < float("inf"):
        raise OccupancyError(f"lovasz_weight must be a finite number >= 0, got {lovasz_weight!r}")
    count = logits.shape[1]
    weights = None if pos_weight is None else logits.new_tensor(_per_class(pos_weight, count, "pos_weight"))
    cells = valid.unsqueeze(1).expand_as(logits)
    zero = logits.sum() * 0.0
    if not bool(valid.any()):
        return BevLoss(zero, zero, zero)
    per_cell = F.binary_cross_entropy_with_logits(
        logits, targets.to(logits.dtype), reduction="none",
        pos_weight=None if weights is None else weights.reshape(1, count, 1, 1))
    bce = per_cell[cells].mean()
    lovasz = zero
    if lovasz_weight > 0:
        flat_logits = logits.transpose(0, 1)[cells.transpose(0, 1)].reshape(count, -1)
        flat_targets = targets.transpose(0, 1)[cells.transpose(0, 1)].reshape(count, -1).long()
        lovasz = torch.stack([lovasz_hinge(flat_logits[k], flat_targets[k]) for k in range(count)]).mean()
    return BevLoss(bce + lovasz_weight * lovasz, bce, lovasz)


class BevIoUAccumulator:
    """Per-class IoU of BEV predictions accumulated over frames, on valid cells.

    ``iou[k] = sum |pred_k & gt_k| / sum |pred_k | gt_k|`` over every cell added (frames are pooled, not
    averaged: Simple-BEV's protocol), NaN for a class that is neither in the ground truth nor predicted.

    Args:
        num_classes: ``K``.
    """

    def __init__(self, num_classes: int) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise OccupancyError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.intersection = torch.zeros(num_classes, dtype=torch.int64)
        self.union = torch.zeros(num_classes, dtype=torch.int64)

    def reset(self) -> None:
        """Forget every update."""
        self.intersection.zero_()
        self.union.zero_()

    def update(self, logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> None:
        """Add a batch.

        Args:
            logits: ``[B, K, X, Y]`` float logits (predicted where ``> 0``) or bool predictions.
            targets: ``[B, K, X, Y]`` bool labels.
            valid: ``[B, X, Y]`` bool cells to count.
        """
        if not isinstance(logits, torch.Tensor) or logits.ndim != 4 or logits.shape[1] != self.num_classes:
            raise OccupancyError(f"logits must be a [B, {self.num_classes}, X, Y] tensor, got {_describe(logits)}")
        pred = logits if logits.dtype == torch.bool else check_finite_tensor(logits, "logits") > 0
        _check_targets(logits, targets, valid)
        cells = valid.unsqueeze(1)
        self.intersection += ((pred & targets & cells).sum(dim=(0, 2, 3))).cpu()
        self.union += (((pred | targets) & cells).sum(dim=(0, 2, 3))).cpu()

    def iou(self) -> torch.Tensor:
        """``[K]`` float64 IoU per class (NaN where the union is empty)."""
        inter, union = self.intersection.double(), self.union.double()
        return torch.where(union > 0, inter / union.clamp(min=1), float("nan"))


# ----------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class BevTrainConfig:
    """Hyper-parameters of :func:`train_bev_head` (defaults: the few-label CPU experiment)."""

    steps: int = 150
    """Optimisation steps."""
    batch_size: int = 1
    """Frames per step."""
    lr: float = 2e-3
    """AdamW's peak learning rate."""
    weight_decay: float = 1e-4
    """AdamW's decoupled weight decay."""
    warmup_fraction: float = 0.1
    """Share of the steps with a linear warm-up from ``lr / warmup steps`` to ``lr``; a cosine decay follows."""
    final_lr_factor: float = 0.01
    """Learning rate of the last step as a fraction of ``lr``."""
    grad_clip: float | None = 5.0
    """Largest gradient norm (None: no clipping)."""
    pos_weight: tuple[float, ...] | float | None = (SIMPLE_BEV_POS_WEIGHT, 1.0)
    """BCE weight of positives: one number, or one per class (default: vehicle, drivable)."""
    lovasz_weight: float = 0.0
    """Factor of the Lovász hinge term (:func:`bev_segmentation_loss`)."""
    freeze_backbone: bool = False
    """Train the head alone (the backbone's weights stay as given)."""
    prior_from_labels: bool = True
    """Start the head's bias at each class's frequency on the valid cells of the labelled frames (clamped to
    [0.01, 0.99]; :meth:`BevSegmentationNet.set_prior`)."""
    seed: int = 0
    """Seed of the order in which the labelled frames are visited."""

    def check(self) -> None:
        """Raise :class:`OccupancyError` for an invalid value (naming it)."""
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OccupancyError(f"{name} must be a positive int, got {value!r}")
        for name, low, high in (("lr", 0, math.inf), ("grad_clip", 0, math.inf), ("weight_decay", -1, math.inf),
                                ("lovasz_weight", -1, math.inf), ("warmup_fraction", -1, 1),
                                ("final_lr_factor", -1, 1)):
            value = getattr(self, name)
            if name == "grad_clip" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    (value > 0 if low == 0 else value >= 0) and value <= high and math.isfinite(value)):
                bound = "> 0" if low == 0 else (">= 0" if high == math.inf else f"in [0, {high}]")
                raise OccupancyError(f"{name} must be a finite number {bound}, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise OccupancyError(f"seed must be an int, got {self.seed!r}")

    def lr_factor(self, step: int) -> float:
        """Learning rate of step ``step`` (0-based) as a fraction of ``lr``: linear warm-up over
        ``round(warmup_fraction * steps)`` steps to 1, then a cosine decay to ``final_lr_factor`` at the
        last step."""
        warmup = round(self.warmup_fraction * self.steps)
        if step < warmup:
            return (step + 1) / warmup
        decay = self.steps - warmup - 1
        progress = 1.0 if decay <= 0 else min(max((step - warmup) / decay, 0.0), 1.0)
        return self.final_lr_factor + (1.0 - self.final_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class BevTrainResult(NamedTuple):
    """Result of :func:`train_bev_head`.

    Attributes:
        history: one dict per step: ``step`` (1-based), ``loss``, ``bce``, ``lovasz``, ``lr`` (of that
            step), ``grad_norm`` (before clipping), ``frames`` (indices into ``samples``).
        seconds: wall time of the loop.
    """

    history: list[dict]
    seconds: float


SampleLike = OccupancySample | str | Path


def _sample(item: SampleLike, index: int) -> OccupancySample:
    if isinstance(item, (str, Path)):
        from geo3d.occupancy.store import load_sample

        item = load_sample(item)
    if not isinstance(item, OccupancySample):
        raise OccupancyError(f"samples[{index}] must be an OccupancySample or a prepared-sample path, "
                             f"got {type(item).__name__}")
    if item.gt_semantics is None or item.gt_visible is None:
        raise OccupancyError(f"samples[{index}] has no ground truth (gt_semantics / gt_visible): BEV labels need it")
    return item


def _truth(sample: OccupancySample) -> tuple[torch.Tensor, torch.Tensor]:
    return sample.gt_semantics, sample.gt_visible


def _batch(net: BevSegmentationNet, items: Sequence[OccupancySample], indices: Sequence[int],
           classes: Mapping[str, Sequence[str]]):
    """Stacked network inputs and BEV labels of some samples, on the network's device."""
    device = next(net.parameters()).device
    labels = [bev_labels(*_truth(s), classes) for s in items]
    for i, sample, label in zip(indices, items, labels):
        if tuple(label.valid.shape) != net.grid_xy:
            raise OccupancyError(f"samples[{i}]: ground-truth grid {tuple(sample.gt_semantics.shape)} does not match "
                                 f"the network's output grid {tuple(net.backbone.config.output_grid.shape)} in x, y")
    try:
        images = torch.stack([s.images for s in items])
        K = torch.stack([s.K for s in items])
        cam2ego = torch.stack([s.cam2ego for s in items])
    except RuntimeError:
        raise OccupancyError(f"samples{list(indices)}: samples of one batch must share cameras and image size; "
                             "use batch_size=1") from None
    targets = torch.stack([label.targets for label in labels])
    valid = torch.stack([label.valid for label in labels])
    return (images.to(device), K.to(device), cam2ego.to(device), targets.to(device), valid.to(device))


def _check_run(net, samples, classes) -> tuple[str, ...]:
    """The class group names, after checking the arguments shared by training and evaluation."""
    if not isinstance(net, BevSegmentationNet):
        raise OccupancyError(f"net must be a BevSegmentationNet, got {type(net).__name__}")
    names, _ = class_groups(classes)
    if len(names) != net.num_classes:
        raise OccupancyError(f"classes has {len(names)} groups but the network predicts {net.num_classes}")
    if isinstance(samples, (str, Path)) or not isinstance(samples, Sequence) or not samples:
        raise OccupancyError("samples must be a non-empty sequence of OccupancySample or prepared-sample paths")
    return names


def label_frequencies(samples: Sequence[SampleLike], classes: Mapping[str, Sequence[str]] = BEV_CLASSES
                      ) -> torch.Tensor:
    """``[K]`` float64 share of the valid cells of ``samples`` (pooled) that hold each class (0 without
    valid cells)."""
    names, _ = class_groups(classes)
    positives, cells = torch.zeros(len(names), dtype=torch.float64), 0
    for i, item in enumerate(samples):
        labels = bev_labels(*_truth(_sample(item, i)), classes)
        positives += (labels.targets & labels.valid).sum(dim=(-2, -1)).double()
        cells += int(labels.valid.sum())
    return positives / max(cells, 1)


def train_bev_head(net: BevSegmentationNet, samples: Sequence[SampleLike], config: BevTrainConfig | None = None, *,
                   classes: Mapping[str, Sequence[str]] = BEV_CLASSES,
                   progress: Callable[[int, float], None] | None = None) -> BevTrainResult:
    """Fine-tune ``net`` for BEV segmentation on labelled samples (in place).

    Every step takes the next ``batch_size`` frames of a stream of epochs, each epoch a permutation of the
    samples drawn by a generator seeded with ``config.seed``, computes :func:`bev_segmentation_loss` on the
    :func:`bev_labels` of their ground truth and takes an AdamW step on :meth:`BevSegmentationNet.
    segmentation_parameters` (the whole network but the occupancy / language heads; the head alone with
    ``freeze_backbone``, the backbone then running without gradients), with gradient clipping and the
    :meth:`BevTrainConfig.lr_factor` schedule. Nothing else is random, so a run is deterministic given the
    network's initial weights (on a CPU). No augmentation: the frames are used as they are.

    Args:
        net: the network to train (its weights change).
        samples: labelled samples, :class:`OccupancySample` or paths of prepared samples (loaded once).
        config: hyper-parameters (default :class:`BevTrainConfig`).
        classes: the BEV classes, ``K`` of them, in the order of the network's outputs.
        progress: called after every step with ``(step, loss)`` (1-based step).

    Returns:
        :class:`BevTrainResult` with the per-step history.
    """
    config = BevTrainConfig() if config is None else config
    if not isinstance(config, BevTrainConfig):
        raise OccupancyError(f"config must be a BevTrainConfig, got {type(config).__name__}")
    config.check()
    _check_run(net, samples, classes)
    items = [_sample(item, i) for i, item in enumerate(samples)]
    pos_weight = None if config.pos_weight is None else _per_class(config.pos_weight, net.num_classes, "pos_weight")
    if config.prior_from_labels:
        net.set_prior(label_frequencies(items, classes).clamp(0.01, 0.99))
    parameters = net.segmentation_parameters(include_backbone=not config.freeze_backbone)
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, config.lr_factor)
    generator = torch.Generator().manual_seed(config.seed)
    order: list[int] = []
    history = []
    net.train()
    start = time.perf_counter()
    for step in range(config.steps):
        while len(order) < config.batch_size:
            order.extend(torch.randperm(len(items), generator=generator).tolist())
        chosen, order = order[:config.batch_size], order[config.batch_size:]
        images, K, cam2ego, targets, valid = _batch(net, [items[i] for i in chosen], chosen, classes)
        if config.freeze_backbone:
            with torch.no_grad():
                bev = net.backbone(images, K, cam2ego).bev
            logits = net.head_logits(bev)
        else:
            logits = net(images, K, cam2ego)
        loss = bev_segmentation_loss(logits, targets, valid, pos_weight=pos_weight,
                                     lovasz_weight=config.lovasz_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        max_norm = config.grad_clip if config.grad_clip is not None else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, max_norm))
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        history.append({"step": step + 1, "loss": loss.total.item(), "bce": loss.bce.item(),
                        "lovasz": loss.lovasz.item(), "lr": lr, "grad_norm": grad_norm, "frames": chosen})
        if progress is not None:
            progress(step + 1, history[-1]["loss"])
    return BevTrainResult(history, time.perf_counter() - start)


class BevEvaluation(NamedTuple):
    """Result of :func:`evaluate_bev`.

    Attributes:
        iou: class group name -> IoU over all frames (NaN: neither present nor predicted).
        mean_iou: mean of the non-NaN IoUs (NaN when all are).
        loss: mean over frames of :func:`bev_segmentation_loss` (its ``total``).
        frames: number of frames evaluated.
        intersection, union: ``[K]`` int64 cell counts behind ``iou``.
    """

    iou: dict[str, float]
    mean_iou: float
    loss: float
    frames: int
    intersection: torch.Tensor
    union: torch.Tensor


@torch.no_grad()
def evaluate_bev(net: BevSegmentationNet, samples: Sequence[SampleLike], *,
                 classes: Mapping[str, Sequence[str]] = BEV_CLASSES, batch_size: int = 1,
                 pos_weight: float | Sequence[float] | None = None, lovasz_weight: float = 0.0,
                 progress: Callable[[int], None] | None = None) -> BevEvaluation:
    """Per-class BEV IoU of ``net`` over frames (:class:`BevIoUAccumulator`, logits > 0, valid cells).

    Args:
        net: the network (put in eval mode; no gradients).
        samples: :class:`OccupancySample` or prepared-sample paths (loaded one batch at a time).
        classes: the BEV classes, in the order of the network's outputs.
        batch_size: frames per forward pass.
        pos_weight, lovasz_weight: of the reported loss (as in training, to compare with it).
        progress: called with the number of frames done after every batch.
    """
    names = _check_run(net, samples, classes)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise OccupancyError(f"batch_size must be a positive int, got {batch_size!r}")
    net.eval()
    accumulator = BevIoUAccumulator(net.num_classes)
    loss_sum = 0.0
    for first in range(0, len(samples), batch_size):
        indices = list(range(first, min(first + batch_size, len(samples))))
        items = [_sample(samples[i], i) for i in indices]
        images, K, cam2ego, targets, valid = _batch(net, items, indices, classes)
        logits = net(images, K, cam2ego)
        accumulator.update(logits, targets, valid)
        for b in range(len(items)):
            loss = bev_segmentation_loss(logits[b:b + 1], targets[b:b + 1], valid[b:b + 1], pos_weight=pos_weight,
                                         lovasz_weight=lovasz_weight)
            loss_sum += float(loss.total)
        if progress is not None:
            progress(indices[-1] + 1)
    per_class = accumulator.iou()
    finite = per_class[~torch.isnan(per_class)]
    return BevEvaluation({name: float(v) for name, v in zip(names, per_class)},
                         float(finite.mean()) if len(finite) else float("nan"), loss_sum / len(samples),
                         len(samples), accumulator.intersection.clone(), accumulator.union.clone())
