"""Losses of the two heads of an open-vocabulary occupancy network (POP-3D, OccFeat).

- Occupancy head (class-agnostic): cross-entropy plus the Lovász-softmax loss on the LiDAR targets of
  :func:`~geo3d.occupancy.lidar_occupancy_targets` (``-1`` = unknown voxels are ignored).
- Language head (``D``-dim features): distillation to teacher features (a 2D vision-language model's
  features sampled where LiDAR points project into the cameras), cosine and/or L2.

The Lovász losses (Berman, Rannen Triki, Blaschko, CVPR 2018) are the Lovász extension of the Jaccard
loss ``Delta(M) = |M| / |G u M|`` of a set ``M`` of mispredicted elements, ``G`` the ground-truth
elements of the class. For errors ``m in [0, 1]^P`` sorted decreasingly (``pi``), with ``M_i`` the first
``i`` sorted elements, the extension is the piecewise-linear interpolation

    ``Delta_bar(m) = sum_i m_pi(i) * (Delta(M_i) - Delta(M_(i-1)))``,  ``Delta(M_0) = 0``,

where ``Delta(M_i) = 1 - (|G| - fg_i) / (|G| + bg_i)`` with ``fg_i`` / ``bg_i`` the ground-truth /
other elements among the first ``i``. On 0/1 errors it equals the Jaccard loss ``1 - IoU`` exactly, and
its (sub)gradient with respect to ``m_pi(i)`` is the ``i``-th increment (sorting is piecewise constant).
Lovász-softmax uses the errors ``|1[y = c] - p_c|`` per class and averages over classes; the Lovász
hinge uses the hinge errors ``max(0, 1 - s * logit)`` (``s = +-1``) of a binary problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from geo3d.occupancy.targets import OccupancyError, check_finite_tensor

DistillationKind = Literal["cosine", "l2", "cosine+l2"]


class OccupancyLoss(NamedTuple):
    """Result of :func:`occupancy_loss` (scalar tensors).

    Attributes:
        total: ``ce + lovasz_weight * lovasz``.
        ce: (weighted) cross-entropy averaged over the known voxels.
        lovasz: the Lovász term (softmax over {free, occupied}, or hinge).
    """

    total: torch.Tensor
    ce: torch.Tensor
    lovasz: torch.Tensor


def _labels(labels, name: str, count: int) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool \
            or labels.ndim != 1 or len(labels) != count:
        raise OccupancyError(f"{name} must be an integer [{count}] tensor, got "
                             f"{getattr(labels, 'dtype', type(labels).__name__)} "
                             f"{list(getattr(labels, 'shape', []))}")
    return labels


def jaccard_increments(foreground_sorted: torch.Tensor) -> torch.Tensor:
    """``[P]`` increments ``Delta(M_i) - Delta(M_(i-1))`` of the Jaccard loss along a sorted order.

    Args:
        foreground_sorted: ``[P]`` float, 1 where the ``i``-th element (by decreasing error) belongs to
            the class, else 0.
    """
    total = foreground_sorted.sum()
    fg_seen = torch.cumsum(foreground_sorted, 0)
    bg_seen = torch.cumsum(1.0 - foreground_sorted, 0)
    loss_prefix = 1.0 - (total - fg_seen) / (total + bg_seen)  # the denominator is >= 1 for i >= 1
    return torch.diff(loss_prefix, prepend=loss_prefix.new_zeros(1))


def _lovasz_extension(errors: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
    errors_sorted, order = torch.sort(errors, descending=True)
    return torch.dot(errors_sorted, jaccard_increments(foreground[order].to(errors.dtype)))


def lovasz_softmax(probs: torch.Tensor, labels: torch.Tensor, classes: str | Sequence[int] = "present",
                   ignore_index: int | None = None) -> torch.Tensor:
    """Lovász-softmax loss: mean over classes of the Lovász extension of ``1 - IoU_c``.

    Args:
        probs: ``[P, C]`` class probabilities (e.g. a softmax), each in [0, 1].
        labels: ``[P]`` int class ids in ``[0, C)`` (or ``ignore_index``).
        classes: ``"present"`` (the classes occurring in the kept labels), ``"all"``, or a list of ids.
        ignore_index: label of elements left out (e.g. -1 for unknown voxels).

    Returns:
        Scalar tensor; 0 (attached to the graph) when no element or no class remains.
    """
    probs = check_finite_tensor(probs, "probs", ndim=2)
    labels = _labels(labels, "labels", len(probs))
    if ignore_index is not None:
        keep = labels != ignore_index
        probs, labels = probs[keep], labels[keep]
    num_classes = probs.shape[1]
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise OccupancyError(f"labels must lie in [0, {num_classes}) (or be ignore_index), got "
                             f"{int(labels.min())}..{int(labels.max())}")
    if isinstance(classes, str):
        if classes == "present":
            chosen = torch.unique(labels).tolist()
        elif classes == "all":
            chosen = list(range(num_classes))
        else:
            raise OccupancyError(f"classes must be 'present', 'all' or a list of class ids, got {classes!r}")
    else:
        chosen = [int(c) for c in classes]
        if any(c < 0 or c >= num_classes for c in chosen):
            raise OccupancyError(f"classes must be ids in [0, {num_classes}), got {list(classes)}")
    if not len(labels) or not chosen:
        return probs.sum() * 0.0
    terms = []
    for c in chosen:
        foreground = labels == c
        terms.append(_lovasz_extension((foreground.to(probs.dtype) - probs[:, c]).abs(), foreground))
    return torch.stack(terms).mean()


def lovasz_hinge(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int | None = None) -> torch.Tensor:
    """Binary Lovász hinge loss: the Lovász extension of the foreground's ``1 - IoU`` on hinge errors.

    Args:
        logits: ``[P]`` real scores, positive = foreground.
        labels: ``[P]`` int, 1 foreground, 0 background (or ``ignore_index``).
        ignore_index: label of elements left out.

    Returns:
        Scalar tensor; 0 (attached to the graph) without elements.
    """
    logits = check_finite_tensor(logits, "logits", ndim=1)
    labels = _labels(labels, "labels", len(logits))
    if ignore_index is not None:
        keep = labels != ignore_index
        logits, labels = logits[keep], labels[keep]
    if len(labels) and not bool(((labels == 0) | (labels == 1)).all()):
        raise OccupancyError("labels of lovasz_hinge must be 0 or 1 (or ignore_index)")
    if not len(labels):
        return logits.sum() * 0.0
    signs = 2.0 * labels.to(logits.dtype) - 1.0
    return _lovasz_extension(F.relu(1.0 - logits * signs), labels == 1)


def occupancy_loss(logits: torch.Tensor, target: torch.Tensor, *, pos_weight: float | None = None,
                   lovasz_weight: float = 1.0, lovasz: Literal["softmax", "hinge"] = "softmax") -> OccupancyLoss:
    """Cross-entropy + Lovász loss of a class-agnostic occupancy head (POP-3D's occupancy loss).

    The cross-entropy of voxel ``v`` is weighted by ``pos_weight`` where the target is occupied (as
    ``BCEWithLogitsLoss(pos_weight=...)``) and averaged over the known voxels (not over the weights),
    so one binary logit ``l`` and two logits ``[0, l]`` give the same loss. The Lovász term pools the
    known voxels of the whole batch (not per sample), as TPVFormer and POP-3D do.

    Args:
        logits: ``[B, X, Y, Z]`` occupancy logits, or ``[B, 2, X, Y, Z]`` (free, occupied) logits.
        target: ``[B, X, Y, Z]`` int, 1 occupied, 0 free, -1 unknown (ignored), as
            :attr:`OccupancyTargets.state` (stacked).
        pos_weight: weight of occupied voxels in the cross-entropy (None: 1).
        lovasz_weight: factor of the Lovász term (0 disables it).
        lovasz: ``"softmax"`` (Lovász-softmax over {free, occupied}, both classes when present) or
            ``"hinge"`` (binary Lovász hinge on the occupancy logit, ``l1 - l0`` for two logits).

    Returns:
        :class:`OccupancyLoss`; every term is 0 (attached to the graph) when no voxel is known.
    """
    logits = check_finite_tensor(logits, "logits")
    if not isinstance(target, torch.Tensor) or target.dtype.is_floating_point or target.dtype == torch.bool:
        raise OccupancyError(f"target must be an integer tensor of -1/0/1, got {getattr(target, 'dtype', target)}")
    if logits.ndim == 5 and logits.shape[1] == 2:
        grid_shape = logits.shape[:1] + logits.shape[2:]
        binary = logits[:, 1] - logits[:, 0]
    elif logits.ndim == 4:
        grid_shape, binary = logits.shape, logits
    else:
        raise OccupancyError(f"logits must be [B, X, Y, Z] or [B, 2, X, Y, Z], got {list(logits.shape)}")
    if tuple(target.shape) != tuple(grid_shape):
        raise OccupancyError(f"target must be {list(grid_shape)} to match logits, got {list(target.shape)}")
    if target.numel() and not bool(((target >= -1) & (target <= 1)).all()):
        raise OccupancyError("target must hold only -1 (unknown), 0 (free) and 1 (occupied)")
    if pos_weight is not None and not (float(pos_weight) > 0 and float(pos_weight) < float("inf")):
        raise OccupancyError(f"pos_weight must be finite and > 0 or None, got {pos_weight!r}")
    if not (float(lovasz_weight) >= 0 and float(lovasz_weight) < float("inf")):
        raise OccupancyError(f"lovasz_weight must be finite and >= 0, got {lovasz_weight!r}")
    if lovasz not in ("softmax", "hinge"):
        raise OccupancyError(f"lovasz must be 'softmax' or 'hinge', got {lovasz!r}")

    known = target >= 0
    values = binary[known]
    labels = target[known].long()
    if not len(labels):
        zero = logits.sum() * 0.0
        return OccupancyLoss(zero, zero, zero)
    occupied = labels.to(values.dtype)
    ce_per_voxel = F.binary_cross_entropy_with_logits(values, occupied, reduction="none")
    if pos_weight is not None:
        ce_per_voxel = ce_per_voxel * (1.0 + (float(pos_weight) - 1.0) * occupied)
    ce = ce_per_voxel.mean()
    if float(lovasz_weight) == 0:
        lovasz_term = values.sum() * 0.0
    elif lovasz == "hinge":
        lovasz_term = lovasz_hinge(values, labels)
    else:
        p_occupied = torch.sigmoid(values)
        lovasz_term = lovasz_softmax(torch.stack([1.0 - p_occupied, p_occupied], 1), labels)
    return OccupancyLoss(ce + float(lovasz_weight) * lovasz_term, ce, lovasz_term)


def feature_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, kind: DistillationKind = "cosine",
                              weights: torch.Tensor | None = None) -> torch.Tensor:
    """Distillation of the language head's features to teacher features at the same points.

    Per point ``i``: ``"cosine"`` ``1 - cos(s_i, t_i)`` (in [0, 2]; vectors of norm < 1e-8 count as
    norm 1e-8), ``"l2"`` the mean squared difference over the ``D`` channels ``|s_i - t_i|^2 / D``
    (torch's ``mse_loss``), ``"cosine+l2"`` their sum. The result is the weighted mean over points
    ``sum w_i l_i / sum w_i``. The teacher is a target: no gradient flows into it.

    Args:
        student: ``[N, D]`` predicted features (e.g. sampled from the 3D feature volume at LiDAR points).
        teacher: ``[N, D]`` teacher features (e.g. the 2D model's features at the points' pixels).
        kind: ``"cosine"``, ``"l2"`` or ``"cosine+l2"``.
        weights: ``[N]`` non-negative per-point weights (None: all 1); they must not all be 0.

    Returns:
        Scalar tensor; 0 (attached to the graph) when ``N == 0``.
    """
    student = check_finite_tensor(student, "student", ndim=2)
    teacher = check_finite_tensor(teacher, "teacher", ndim=2)
    if student.shape != teacher.shape:
        raise OccupancyError(f"student {list(student.shape)} and teacher {list(teacher.shape)} differ in shape")
    if student.shape[1] == 0:
        raise OccupancyError("student and teacher need at least one feature channel (D >= 1)")
    if kind not in ("cosine", "l2", "cosine+l2"):
        raise OccupancyError(f"kind must be 'cosine', 'l2' or 'cosine+l2', got {kind!r}")
    if weights is not None:
        weights = check_finite_tensor(weights, "weights", ndim=1)
        if len(weights) != len(student):
            raise OccupancyError(f"weights must be [{len(student)}], got {list(weights.shape)}")
        if bool((weights < 0).any()) or (len(weights) and float(weights.sum()) <= 0):
            raise OccupancyError("weights must be >= 0 and not all 0")
    if not len(student):
        return student.sum() * 0.0
    teacher = teacher.detach().to(student.dtype)
    per_point = student.new_zeros(len(student))
    if kind in ("cosine", "cosine+l2"):
        per_point = per_point + (1.0 - F.cosine_similarity(student, teacher, dim=1, eps=1e-8))
    if kind in ("l2", "cosine+l2"):
        per_point = per_point + (student - teacher).square().mean(1)
    if weights is None:
        return per_point.mean()
    weights = weights.to(student.dtype)
    return (weights * per_point).sum() / weights.sum()
