"""Evaluation of open-vocabulary occupancy: occupancy IoU, zero-shot semantic mIoU, text retrieval mAP.

- Occupancy IoU: IoU of the occupied class (occupied vs free) over the voxels of a visibility mask
  (Occ3D's ``mask_camera``), ``TP / (TP + FP + FN)``.
- Semantic mIoU: a confusion matrix over a fixed number of classes (rows ground truth, columns
  prediction) accumulated over frames; IoU per class ``C[c, c] / (row c + column c - C[c, c])``, NaN
  where a class is neither in the ground truth nor predicted; the mean skips NaN. In the zero-shot
  protocol every predicted-occupied voxel takes the class whose text embedding is most similar to its
  feature (:func:`zero_shot_labels`), predicted-free voxels take class 0 (``free``), and the mean runs
  over the 16 classes ``1..16`` of :data:`geo3d.synthetic.CLASS_NAMES` (free stays in the matrix, so
  predicting free on an occupied voxel is a miss, but its own IoU is not averaged), as in Occ3D.
- Retrieval (POP-3D's protocol): for each text query, the LiDAR points are ranked by the cosine
  similarity of their predicted features to the query's embedding and scored by the non-interpolated
  average precision against the points' ground-truth relevance; mAP is the mean over the queries that
  have at least one relevant point. :data:`QUERY_SET` holds queries for the synthetic vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

import torch
import torch.nn.functional as F

from geo3d.occupancy.targets import OccupancyError, check_finite_tensor
from geo3d.synthetic.classes import CLASS_IDS, CLASS_NAMES

SEMANTIC_CLASSES: tuple[int, ...] = tuple(range(1, len(CLASS_NAMES)))
"""Class ids averaged by the zero-shot semantic mIoU: every class of :data:`CLASS_NAMES` but free (0)."""

_VEHICLES = ("bicycle", "bus", "car", "construction_vehicle", "motorcycle", "trailer", "truck")

QUERY_SET: Mapping[str, tuple[str, ...]] = MappingProxyType({
    # synonyms of single classes, words outside the class vocabulary
    "automobile": ("car",),
    "passenger car": ("car",),
    "lorry": ("truck",),
    "motorbike": ("motorcycle",),
    "pedal bike": ("bicycle",),
    "person": ("pedestrian",),
    "human": ("pedestrian",),
    "construction machinery": ("construction_vehicle",),
    "road cone": ("traffic_cone",),
    "road barrier": ("barrier",),
    "road": ("driveable_surface",),
    "footpath": ("sidewalk",),
    "grass": ("terrain",),
    "tree": ("vegetation",),
    "building": ("manmade",),
    # in-vocabulary words, for reference
    "car": ("car",),
    "bus": ("bus",),
    "truck": ("truck",),
    # super-categories (nuScenes' taxonomy: vehicle.*, flat.*)
    "vehicle": _VEHICLES,
    "motor vehicle": ("bus", "car", "construction_vehicle", "motorcycle", "truck"),
    "two-wheeler": ("bicycle", "motorcycle"),
    "heavy vehicle": ("bus", "construction_vehicle", "trailer", "truck"),
    "greenery": ("terrain", "vegetation"),
    "ground": ("driveable_surface", "other_flat", "sidewalk", "terrain"),
})
"""Text query -> the classes of :data:`CLASS_NAMES` whose points are relevant to it.

Rules: membership follows the nuScenes-lidarseg class definitions, so a query is relevant to a
whole class or not at all (no query names a sub-type such as "van" or "excavator", which the
class-level ground truth cannot separate). "vehicle" is nuScenes' ``vehicle.*`` (bicycles and
trailers included); "motor vehicle" drops the unpowered ones; "heavy vehicle" is the classes of
vehicles larger than cars; "greenery" is living plant cover (trees and bushes = vegetation, grass =
terrain); "ground" is nuScenes' ``flat.*``. Street lamps, signs and traffic lights are part of
``manmade`` in the synthetic scenes, so they are not queries of their own."""


def query_relevance(point_labels: torch.Tensor, queries: Mapping[str, Sequence[str]] = QUERY_SET
                    ) -> tuple[list[str], torch.Tensor]:
    """Ground-truth relevance of labelled points to text queries.

    Args:
        point_labels: ``[N]`` int class ids of :data:`CLASS_NAMES` (e.g. ``LidarSweep.load_labels()``).
        queries: query text -> class names (default :data:`QUERY_SET`).

    Returns:
        ``(texts [Q], relevance [Q, N] bool)``.
    """
    labels = _int_tensor(point_labels, "point_labels").reshape(-1)
    texts, rows = [], []
    for text, names in queries.items():
        if not isinstance(text, str) or not text.strip():
            raise OccupancyError(f"query texts must be non-empty strings, got {text!r}")
        unknown = [n for n in names if n not in CLASS_IDS]
        if unknown or not names:
            raise OccupancyError(f"query {text!r} must name classes of CLASS_NAMES, got {list(names)}")
        texts.append(text)
        rows.append(torch.isin(labels, torch.tensor([CLASS_IDS[n] for n in names])))
    if not rows:
        raise OccupancyError("queries is empty")
    return texts, torch.stack(rows)


def _int_tensor(value, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise OccupancyError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype.is_floating_point or value.is_complex():
        raise OccupancyError(f"{name} must hold integers or bools, got {value.dtype}")
    return value.long() if value.dtype == torch.bool else value


def _bool_tensor(value, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dtype != torch.bool:
        raise OccupancyError(f"{name} must be a bool tensor, got {getattr(value, 'dtype', type(value).__name__)}")
    return value


def _check_same_shape(reference: torch.Tensor, value: torch.Tensor | None, name: str, other: str) -> None:
    if value is not None and value.shape != reference.shape:
        raise OccupancyError(f"{name} {list(value.shape)} must match {other} {list(reference.shape)}")


def occupancy_iou(pred_occupied: torch.Tensor, gt_occupied: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """IoU of the occupied class, ``|pred & gt| / |pred | gt|``, over the voxels where ``mask`` is True.

    Args:
        pred_occupied: ``[...]`` bool predicted occupancy (e.g. ``sigmoid(logit) > 0.5``).
        gt_occupied: ``[...]`` bool ground-truth occupancy, same shape.
        mask: ``[...]`` bool voxels to evaluate (e.g. camera visibility); None = all.

    Returns:
        The IoU in [0, 1]; NaN when no evaluated voxel is occupied in either.
    """
    pred, gt = _bool_tensor(pred_occupied, "pred_occupied"), _bool_tensor(gt_occupied, "gt_occupied")
    _check_same_shape(gt, pred, "pred_occupied", "gt_occupied")
    if mask is not None:
        _check_same_shape(gt, _bool_tensor(mask, "mask"), "mask", "gt_occupied")
        pred, gt = pred & mask, gt & mask
    union = int((pred | gt).sum())
    return int((pred & gt).sum()) / union if union else float("nan")


class SemanticIoU(NamedTuple):
    """Result of :func:`semantic_miou`.

    Attributes:
        miou: mean IoU over the averaged classes that are not NaN (NaN if all are).
        per_class: ``[K]`` float64 IoU per class id, NaN where a class is neither present nor predicted.
    """

    miou: float
    per_class: torch.Tensor


class ConfusionAccumulator:
    """Confusion matrix over ``num_classes`` classes accumulated over frames (rows ground truth, columns
    prediction), with per-class IoU and mIoU.

    Args:
        num_classes: number of classes ``K``; labels are ``0..K-1``.
        ignore_index: ground-truth label of elements to skip entirely (e.g. 255 for "not annotated");
            may lie outside ``0..K-1``. Inside that range, its class is also left out of :meth:`miou`.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise OccupancyError(f"num_classes must be an int >= 1, got {num_classes!r}")
        if ignore_index is not None and not isinstance(ignore_index, int):
            raise OccupancyError(f"ignore_index must be an int or None, got {ignore_index!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        """Forget every update."""
        self.matrix.zero_()

    def update(self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add the elements of one frame (or batch).

        Args:
            pred: ``[...]`` int (or bool, for two classes) predicted labels in ``0..K-1``.
            gt: ``[...]`` int (or bool) ground-truth labels in ``0..K-1`` or ``ignore_index``.
            mask: ``[...]`` bool elements to count (e.g. a visibility mask); None = all.
        """
        pred, gt = _int_tensor(pred, "pred"), _int_tensor(gt, "gt")
        _check_same_shape(gt, pred, "pred", "gt")
        keep = torch.ones_like(gt, dtype=torch.bool) if mask is None else _bool_tensor(mask, "mask")
        _check_same_shape(gt, keep, "mask", "gt")
        if self.ignore_index is not None:
            keep = keep & (gt != self.ignore_index)
        pred, gt = pred[keep].cpu(), gt[keep].cpu()
        k = self.num_classes
        for name, value in (("pred", pred), ("gt", gt)):
            if len(value) and (int(value.min()) < 0 or int(value.max()) >= k):
                raise OccupancyError(f"{name} labels must lie in [0, {k}) (gt: or be ignore_index), got "
                                     f"{int(value.min())}..{int(value.max())}")
        self.matrix += torch.bincount(gt * k + pred, minlength=k * k).reshape(k, k)

    def iou(self) -> torch.Tensor:
        """``[K]`` float64 IoU per class; NaN where the class is neither in the ground truth nor predicted."""
        matrix = self.matrix.double()
        tp = matrix.diagonal()
        union = matrix.sum(0) + matrix.sum(1) - tp
        return torch.where(union > 0, tp / union.clamp(min=1), float("nan"))

    def miou(self, classes: Sequence[int] | None = None) -> float:
        """Mean of :meth:`iou` over ``classes`` (default: all but ``ignore_index``), NaN entries skipped.

        Returns NaN when every averaged class is NaN.
        """
        per_class = self.iou()
        if classes is None:
            classes = [c for c in range(self.num_classes) if c != self.ignore_index]
        classes = list(classes)
        if not classes or any(not isinstance(c, int) or c < 0 or c >= self.num_classes for c in classes):
            raise OccupancyError(f"classes must be a non-empty list of ids in [0, {self.num_classes}), got {classes}")
        values = per_class[classes]
        values = values[~torch.isnan(values)]
        return float(values.mean()) if len(values) else float("nan")


def semantic_miou(pred_labels: torch.Tensor, gt_labels: torch.Tensor, num_classes: int,
                  ignore_index: int | None = None, mask: torch.Tensor | None = None,
                  classes: Sequence[int] | None = None) -> SemanticIoU:
    """Per-class IoU and mIoU of one set of labels (a :class:`ConfusionAccumulator` with one update).

    Args:
        pred_labels: ``[...]`` int predicted class ids in ``0..num_classes-1``.
        gt_labels: ``[...]`` int ground-truth class ids (or ``ignore_index``).
        num_classes: number of classes ``K``.
        ignore_index: ground-truth label skipped entirely (see :class:`ConfusionAccumulator`).
        mask: ``[...]`` bool elements to evaluate; None = all.
        classes: class ids averaged (default all but ``ignore_index``; :data:`SEMANTIC_CLASSES` for the
            zero-shot protocol of the module docstring).
    """
    accumulator = ConfusionAccumulator(num_classes, ignore_index)
    accumulator.update(pred_labels, gt_labels, mask)
    return SemanticIoU(accumulator.miou(classes), accumulator.iou())


def _unit_rows(value: torch.Tensor) -> torch.Tensor:
    return F.normalize(value.double(), dim=-1, eps=1e-12)


def zero_shot_labels(features: torch.Tensor, class_embeddings: torch.Tensor,
                     class_ids: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
    """Class of each feature: the class embedding of largest cosine similarity.

    Args:
        features: ``[M, D]`` predicted language features (e.g. of the predicted-occupied voxels).
        class_embeddings: ``[K, D]`` text embeddings of the class prompts (one per class).
        class_ids: ``[K]`` label returned for each embedding (default ``0..K-1``), e.g. ``1..16`` for
            embeddings of ``CLASS_NAMES[1:]``.

    Returns:
        ``[M]`` int64 labels (the first class wins ties).
    """
    features = check_finite_tensor(features, "features", ndim=2)
    class_embeddings = check_finite_tensor(class_embeddings, "class_embeddings", ndim=2)
    if len(class_embeddings) == 0:
        raise OccupancyError("class_embeddings is empty: at least one class is needed")
    if features.shape[1] != class_embeddings.shape[1]:
        raise OccupancyError(f"features have D = {features.shape[1]} but class_embeddings "
                             f"D = {class_embeddings.shape[1]}")
    ids = torch.arange(len(class_embeddings)) if class_ids is None else torch.as_tensor(class_ids).long().reshape(-1)
    if len(ids) != len(class_embeddings):
        raise OccupancyError(f"class_ids must have {len(class_embeddings)} entries, got {len(ids)}")
    similarity = _unit_rows(features) @ _unit_rows(class_embeddings.to(features.device)).T
    return ids.to(features.device)[similarity.argmax(1)] if len(features) else ids[:0].to(features.device)


def average_precision(scores: torch.Tensor, relevant: torch.Tensor) -> float:
    """Non-interpolated average precision of ranking by ``scores`` (higher first), scikit-learn's
    ``average_precision_score``: ``sum_n (R_n - R_(n-1)) P_n`` over the distinct score thresholds, which
    is the mean of the precision at each relevant item when scores have no ties (tied items share one
    threshold, so their order does not matter).

    Args:
        scores: ``[N]`` finite float scores.
        relevant: ``[N]`` bool ground-truth relevance.

    Returns:
        AP in [0, 1]; NaN when no item is relevant.
    """
    scores = check_finite_tensor(scores, "scores", ndim=1)
    relevant = _bool_tensor(relevant, "relevant")
    _check_same_shape(scores, relevant, "relevant", "scores")
    positives = int(relevant.sum())
    if positives == 0:
        return float("nan")
    ordered, order = torch.sort(scores.detach().double().cpu(), descending=True, stable=True)
    hits = relevant.cpu()[order].double()
    last_of_tie = torch.cat([torch.nonzero(ordered[1:] != ordered[:-1]).squeeze(1), torch.tensor([len(ordered) - 1])])
    true_pos = torch.cumsum(hits, 0)[last_of_tie]
    precision = true_pos / (last_of_tie + 1).double()
    recall_step = torch.diff(true_pos, prepend=true_pos.new_zeros(1)) / positives
    return float((recall_step * precision).sum())


class RetrievalResult(NamedTuple):
    """Result of :func:`retrieval_map`.

    Attributes:
        map: mean AP over the evaluated queries (NaN if none has a relevant point).
        per_query_ap: ``[Q]`` float64 AP per query, NaN for the excluded ones.
        excluded: indices of the queries without any relevant point (left out of the mean).
    """

    map: float
    per_query_ap: torch.Tensor
    excluded: tuple[int, ...]


def retrieval_map(point_features: torch.Tensor, query_embeddings: torch.Tensor,
                  relevance: torch.Tensor) -> RetrievalResult:
    """Text-driven retrieval mAP over LiDAR points (POP-3D's protocol, module docstring).

    Args:
        point_features: ``[N, D]`` predicted language features at the LiDAR points.
        query_embeddings: ``[Q, D]`` text embeddings of the queries.
        relevance: ``[Q, N]`` bool ground-truth membership of each point in each query
            (:func:`query_relevance`).

    Returns:
        :class:`RetrievalResult`.
    """
    point_features = check_finite_tensor(point_features, "point_features", ndim=2)
    query_embeddings = check_finite_tensor(query_embeddings, "query_embeddings", ndim=2)
    relevance = _bool_tensor(relevance, "relevance")
    if point_features.shape[1] != query_embeddings.shape[1]:
        raise OccupancyError(f"point_features have D = {point_features.shape[1]} but query_embeddings "
                             f"D = {query_embeddings.shape[1]}")
    if len(query_embeddings) == 0:
        raise OccupancyError("query_embeddings is empty: at least one query is needed")
    expected = (len(query_embeddings), len(point_features))
    if tuple(relevance.shape) != expected:
        raise OccupancyError(f"relevance must be {list(expected)} (queries x points), got {list(relevance.shape)}")
    points = _unit_rows(point_features.detach()).cpu()
    queries = _unit_rows(query_embeddings.detach()).cpu()
    relevance = relevance.cpu()
    per_query = torch.full((len(queries),), float("nan"), dtype=torch.float64)
    for q in range(len(queries)):
        if bool(relevance[q].any()):
            per_query[q] = average_precision(points @ queries[q], relevance[q])
    excluded = tuple(int(q) for q in torch.nonzero(torch.isnan(per_query)).squeeze(1))
    evaluated = per_query[~torch.isnan(per_query)]
    return RetrievalResult(float(evaluated.mean()) if len(evaluated) else float("nan"), per_query, excluded)
