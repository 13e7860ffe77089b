"""Scores of a field's query answers against voxel ground truth (synthetic scenes).

:func:`query_voxel_scores`: the voxels that answer a query vs the ground-truth voxels of the classes
the query stands for, both restricted to a mask (default: Occ3D's camera-visibility mask, the voxels
a camera ray reaches; hidden interiors are neither rewarded nor punished).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from geo3d.structures.field import FieldError, OpenVocabField


class QueryScores(NamedTuple):
    """IoU, precision and recall of retrieved voxels; ``predicted`` / ``relevant`` / ``hits`` voxel counts."""

    iou: float
    precision: float
    recall: float
    predicted: int
    relevant: int
    hits: int

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in self._asdict().items()}


def query_voxel_scores(field_: OpenVocabField, selected: np.ndarray, gt_semantics: np.ndarray,
                       class_ids: Sequence[int], mask: np.ndarray | None = None) -> QueryScores:
    """Retrieved voxels vs the ground-truth voxels of ``class_ids``.

    Args:
        field_: the field (its grid must be the ground truth's).
        selected: ``[M]`` bool, the feature voxels that answer the query (``QueryResult.selected``).
        gt_semantics: ``[X, Y, Z]`` int class per voxel (0 free).
        class_ids: the classes relevant to the query.
        mask: ``[X, Y, Z]`` bool voxels that count (e.g. the camera-visibility mask); None: all.

    Returns:
        :class:`QueryScores` (NaN where a ratio has no denominator).
    """
    gt = np.asarray(gt_semantics)
    if gt.shape != field_.shape:
        raise FieldError(f"ground truth has shape {list(gt.shape)} but the field {list(field_.shape)}")
    selected = np.asarray(selected, dtype=bool)
    if selected.shape != (field_.num_features,):
        raise FieldError(f"selected must be [{field_.num_features}] bool, got {list(selected.shape)}")
    mask = np.ones(gt.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != gt.shape:
        raise FieldError(f"mask has shape {list(mask.shape)} but the ground truth {list(gt.shape)}")
    predicted = np.zeros(gt.shape, bool)
    predicted[tuple(field_.indices[selected].T.astype(np.int64))] = True
    predicted &= mask
    relevant = np.isin(gt, np.asarray(list(class_ids), dtype=gt.dtype)) & mask
    hits = int((predicted & relevant).sum())
    n_pred, n_rel = int(predicted.sum()), int(relevant.sum())
    union = n_pred + n_rel - hits
    nan = float("nan")
    return QueryScores(hits / union if union else nan, hits / n_pred if n_pred else nan,
                       hits / n_rel if n_rel else nan, n_pred, n_rel, hits)
