"""geo3d.fields.scoring: query_voxel_scores against counts made by hand (a tiny grid worked out on paper,
random grids counted voxel by voxel), the NaN cases and the shape errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geo3d.fields.scoring import QueryScores, query_voxel_scores
from geo3d.structures import OpenVocabField
from geo3d.structures.field import FieldError


def make_field(shape, indices) -> OpenVocabField:
    indices = np.asarray(indices, dtype=np.int64).reshape(-1, 3)
    feats = np.zeros((len(indices), 2), np.float32)
    feats[:, 0] = 1.0
    return OpenVocabField((0, 0, 0), 0.5, "ego", np.ones(shape, np.float32), indices, feats, "test")


def test_a_grid_counted_on_paper():
    # 4 x 1 x 1 grid; feature voxels x = 0, 1, 2, 3; ground truth: car (4) at x = 1, 2, 3, road (11) at x = 0
    field_ = make_field((4, 1, 1), [[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]])
    gt = np.array([11, 4, 4, 4]).reshape(4, 1, 1)
    selected = np.array([True, True, False, False])  # predicted x = 0 (wrong) and x = 1 (right)
    scores = query_voxel_scores(field_, selected, gt, [4])
    # hits 1, predicted 2, relevant 3, union 4
    assert scores == QueryScores(iou=0.25, precision=0.5, recall=1 / 3, predicted=2, relevant=3, hits=1)
    # several classes: car or road -> relevant 4, hits 2
    assert query_voxel_scores(field_, selected, gt, [4, 11]) == QueryScores(0.5, 1.0, 0.5, 2, 4, 2)
    # a mask hides x = 0: predicted 1, relevant 3, hits 1
    mask = np.array([False, True, True, True]).reshape(4, 1, 1)
    assert query_voxel_scores(field_, selected, gt, [4], mask) == QueryScores(1 / 3, 1.0, 1 / 3, 1, 3, 1)


def test_nan_cases():
    field_ = make_field((3, 1, 1), [[0, 0, 0], [2, 0, 0]])
    gt = np.array([0, 4, 0]).reshape(3, 1, 1)
    # nothing predicted: precision undefined, recall and IoU 0
    none = query_voxel_scores(field_, np.zeros(2, bool), gt, [4])
    assert math.isnan(none.precision) and none.recall == 0.0 and none.iou == 0.0 and none.relevant == 1
    assert none.to_dict() == {"iou": 0.0, "precision": None, "recall": 0.0, "predicted": 0, "relevant": 1, "hits": 0}
    # nothing relevant: recall undefined, precision and IoU 0
    absent = query_voxel_scores(field_, np.array([True, False]), gt, [7])
    assert math.isnan(absent.recall) and absent.precision == 0.0 and absent.iou == 0.0 and absent.predicted == 1
    # neither: all three undefined
    both = query_voxel_scores(field_, np.zeros(2, bool), gt, [7])
    assert all(math.isnan(v) for v in both[:3]) and both[3:] == (0, 0, 0)
    assert both.to_dict()["iou"] is None
    # an empty field (M = 0) predicts nothing
    empty = query_voxel_scores(make_field((3, 1, 1), []), np.zeros(0, bool), gt, [4])
    assert empty.predicted == 0 and empty.relevant == 1 and math.isnan(empty.precision)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_grids_against_voxel_by_voxel_counts(seed):
    rng = np.random.default_rng(seed)
    shape = (5, 4, 3)
    all_voxels = np.argwhere(np.ones(shape, bool))
    indices = all_voxels[rng.uniform(size=len(all_voxels)) < 0.6]
    field_ = make_field(shape, indices)
    selected = rng.uniform(size=field_.num_features) < 0.5
    gt = rng.integers(0, 5, shape)
    mask = rng.uniform(size=shape) < 0.7 if seed % 2 else None
    classes = [1, 3]
    hits = predicted = relevant = 0
    chosen = {tuple(ijk) for ijk, s in zip(field_.indices.tolist(), selected) if s}
    for i in range(shape[0]):
        for j in range(shape[1]):
            for k in range(shape[2]):
                if mask is not None and not mask[i, j, k]:
                    continue
                is_pred = (i, j, k) in chosen
                is_rel = int(gt[i, j, k]) in classes
                predicted += is_pred
                relevant += is_rel
                hits += is_pred and is_rel
    scores = query_voxel_scores(field_, selected, gt, classes, mask)
    assert (scores.predicted, scores.relevant, scores.hits) == (predicted, relevant, hits)
    assert scores.iou == pytest.approx(hits / (predicted + relevant - hits))
    assert scores.precision == pytest.approx(hits / predicted) and scores.recall == pytest.approx(hits / relevant)


def test_shape_errors():
    field_ = make_field((3, 2, 1), [[0, 0, 0], [1, 1, 0]])
    gt = np.zeros((3, 2, 1), np.int64)
    with pytest.raises(FieldError, match=r"ground truth has shape \[3, 2\] but the field \[3, 2, 1\]"):
        query_voxel_scores(field_, np.ones(2, bool), gt[..., 0], [4])
    with pytest.raises(FieldError, match=r"selected must be \[2\] bool, got \[3\]"):
        query_voxel_scores(field_, np.ones(3, bool), gt, [4])
    with pytest.raises(FieldError, match=r"mask has shape \[3, 2, 2\]"):
        query_voxel_scores(field_, np.ones(2, bool), gt, [4], mask=np.ones((3, 2, 2), bool))
