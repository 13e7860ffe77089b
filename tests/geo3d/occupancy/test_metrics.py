"""Occupancy metrics against scikit-learn and hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geo3d.occupancy import (
    QUERY_SET, SEMANTIC_CLASSES, ConfusionAccumulator, OccupancyError, average_precision, occupancy_iou,
    query_relevance, retrieval_map, semantic_miou, zero_shot_labels,
)
from geo3d.synthetic import CLASS_IDS, CLASS_NAMES

pytestmark = pytest.mark.usefixtures("one_torch_thread")
sklearn_metrics = pytest.importorskip("sklearn.metrics")


def test_occupancy_iou_hand_made_and_mask():
    pred = torch.tensor([True, True, False, False, True])
    gt = torch.tensor([True, False, True, False, True])
    assert occupancy_iou(pred, gt) == pytest.approx(2 / 4)
    mask = torch.tensor([True, False, True, True, True])  # drops the false positive
    assert occupancy_iou(pred, gt, mask) == pytest.approx(2 / 3)
    assert math.isnan(occupancy_iou(torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)))


def test_occupancy_iou_matches_sklearn_jaccard():
    rng = np.random.default_rng(0)
    pred, gt, mask = (rng.uniform(size=(3, 8, 8, 4)) < q for q in (0.3, 0.4, 0.7))
    expected = sklearn_metrics.jaccard_score(gt[mask], pred[mask])
    got = occupancy_iou(torch.from_numpy(pred), torch.from_numpy(gt), torch.from_numpy(mask))
    assert got == pytest.approx(expected, rel=1e-12)


def test_semantic_miou_matches_sklearn():
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 6, size=3000)
    pred = np.where(rng.uniform(size=3000) < 0.6, gt, rng.integers(0, 6, size=3000))
    pred[pred == 5] = 4  # class 5 is never predicted
    gt[gt == 3] = 2  # class 3 is never in the ground truth but predicted
    expected = sklearn_metrics.jaccard_score(gt, pred, labels=list(range(6)), average=None)
    matrix = sklearn_metrics.confusion_matrix(gt, pred, labels=list(range(6)))
    got = semantic_miou(torch.from_numpy(pred), torch.from_numpy(gt), 6)
    np.testing.assert_allclose(got.per_class.numpy(), expected, rtol=1e-12)
    assert got.miou == pytest.approx(expected.mean(), rel=1e-12)
    acc = ConfusionAccumulator(6)
    acc.update(torch.from_numpy(pred), torch.from_numpy(gt))
    np.testing.assert_array_equal(acc.matrix.numpy(), matrix)
    subset = semantic_miou(torch.from_numpy(pred), torch.from_numpy(gt), 6, classes=[1, 2, 4])
    assert subset.miou == pytest.approx(expected[[1, 2, 4]].mean(), rel=1e-12)


def test_ignore_index_mask_and_absent_classes():
    gt = torch.tensor([0, 1, 1, 255, 2, 2])
    pred = torch.tensor([0, 1, 2, 1, 2, 0])
    mask = torch.tensor([True, True, True, True, True, False])
    got = semantic_miou(pred, gt, 4, ignore_index=255, mask=mask)
    # kept: (0,0) (1,1) (1,2) (2,2): IoU0 = 1, IoU1 = 1/2, IoU2 = 1/2, class 3 absent -> NaN
    np.testing.assert_allclose(got.per_class.numpy()[:3], [1.0, 0.5, 0.5])
    assert math.isnan(float(got.per_class[3])) and got.miou == pytest.approx(2 / 3)
    # gt 0 skipped, class 0 not averaged: kept (1,1) (1,2) (2,2) (2,0) -> IoU1 = 1/2, IoU2 = 1/3, IoU0 = 0
    free_ignored = semantic_miou(torch.tensor([0, 1, 2, 2, 0]), torch.tensor([0, 1, 1, 2, 2]), 4, ignore_index=0)
    assert free_ignored.miou == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert float(free_ignored.per_class[0]) == 0.0


def test_accumulation_over_batches_equals_one_batch():
    rng = np.random.default_rng(2)
    gt = torch.from_numpy(rng.integers(0, 17, size=(4, 10, 10, 3)))
    pred = torch.from_numpy(rng.integers(0, 17, size=(4, 10, 10, 3)))
    mask = torch.from_numpy(rng.uniform(size=(4, 10, 10, 3)) < 0.8)
    whole = ConfusionAccumulator(17, ignore_index=0)
    whole.update(pred, gt, mask)
    parts = ConfusionAccumulator(17, ignore_index=0)
    for b in range(4):
        parts.update(pred[b], gt[b], mask[b])
    assert torch.equal(whole.matrix, parts.matrix)
    assert parts.miou(SEMANTIC_CLASSES) == whole.miou()
    parts.reset()
    assert int(parts.matrix.sum()) == 0


def test_binary_accumulator_gives_occupancy_iou():
    rng = np.random.default_rng(3)
    pred, gt, mask = (torch.from_numpy(rng.uniform(size=(2, 6, 6, 2)) < q) for q in (0.3, 0.4, 0.7))
    acc = ConfusionAccumulator(2)
    for b in range(2):
        acc.update(pred[b], gt[b], mask[b])
    assert float(acc.iou()[1]) == pytest.approx(occupancy_iou(pred, gt, mask), rel=1e-12)


def test_zero_shot_labels_argmax_cosine():
    classes = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 10.0]])
    features = torch.tensor([[5.0, 1.0, 0.0], [0.1, 0.2, 0.0], [1.0, 1.0, 1.5], [-1.0, -1.0, -1.0]])
    # cosine, not dot product: the long third embedding does not win the first row.
    assert zero_shot_labels(features, classes).tolist() == [0, 1, 2, 0]
    assert zero_shot_labels(features, classes, class_ids=[4, 7, 16]).tolist() == [4, 7, 16, 4]
    assert zero_shot_labels(torch.zeros(0, 3), classes).shape == (0,)


def test_average_precision_hand_made_and_sklearn():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    relevant = torch.tensor([True, False, True, False, True])
    assert average_precision(scores, relevant) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    rng = np.random.default_rng(4)
    for trial in range(20):
        n = int(rng.integers(1, 60))
        y = rng.uniform(size=n) < 0.3
        y[rng.integers(n)] = True
        s = rng.integers(0, 5, size=n).astype(float) if trial % 2 else rng.normal(size=n)  # with and without ties
        expected = sklearn_metrics.average_precision_score(y, s)
        assert average_precision(torch.from_numpy(s), torch.from_numpy(y)) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(average_precision(scores, torch.zeros(5, dtype=torch.bool)))


def test_retrieval_map_ranks_by_cosine_and_excludes_empty_queries():
    rng = np.random.default_rng(5)
    features = torch.from_numpy(rng.normal(size=(80, 8)))
    queries = torch.from_numpy(rng.normal(size=(3, 8)))
    relevance = torch.from_numpy(rng.uniform(size=(3, 80)) < 0.25)
    relevance[1] = False
    got = retrieval_map(features * torch.from_numpy(rng.uniform(0.1, 10, size=(80, 1))), queries, relevance)
    cosine = (features / features.norm(dim=1, keepdim=True)) @ (queries / queries.norm(dim=1, keepdim=True)).T
    expected = [sklearn_metrics.average_precision_score(relevance[q].numpy(), cosine[:, q].numpy()) for q in (0, 2)]
    assert got.excluded == (1,) and math.isnan(float(got.per_query_ap[1]))
    np.testing.assert_allclose(got.per_query_ap.numpy()[[0, 2]], expected, rtol=1e-10)
    assert got.map == pytest.approx(np.mean(expected), rel=1e-10)
    perfect = retrieval_map(torch.eye(3).double(), torch.eye(3).double(), torch.eye(3, dtype=torch.bool))
    assert perfect.map == 1.0 and perfect.excluded == ()


def test_query_set_and_relevance():
    assert set(QUERY_SET["vehicle"]) == {"bicycle", "bus", "car", "construction_vehicle", "motorcycle", "trailer",
                                         "truck"}
    assert QUERY_SET["person"] == ("pedestrian",)
    assert any(not set(text.replace("-", " ").split()) & set(CLASS_NAMES) for text in QUERY_SET)
    for names in QUERY_SET.values():
        assert names and set(names) <= set(CLASS_NAMES[1:])
    labels = torch.tensor([CLASS_IDS["car"], CLASS_IDS["terrain"], CLASS_IDS["vegetation"], 0])
    texts, relevance = query_relevance(labels)
    assert texts == list(QUERY_SET) and relevance.shape == (len(QUERY_SET), 4)
    assert relevance[texts.index("greenery")].tolist() == [False, True, True, False]
    assert relevance[texts.index("automobile")].tolist() == [True, False, False, False]
    with pytest.raises(OccupancyError, match="CLASS_NAMES"):
        query_relevance(labels, {"thing": ("spaceship",)})
    with pytest.raises(OccupancyError, match="non-empty"):
        query_relevance(labels, {" ": ("car",)})


@pytest.mark.parametrize("call, match", [
    (lambda: occupancy_iou(torch.ones(3), torch.ones(3, dtype=torch.bool)), "pred_occupied"),
    (lambda: occupancy_iou(torch.ones(3, dtype=torch.bool), torch.ones(4, dtype=torch.bool)), "match"),
    (lambda: semantic_miou(torch.tensor([0, 5]), torch.tensor([0, 1]), 3), "pred labels"),
    (lambda: semantic_miou(torch.tensor([0, 1]), torch.tensor([0, -3]), 3), "gt labels"),
    (lambda: semantic_miou(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), 3), "pred"),
    (lambda: ConfusionAccumulator(0), "num_classes"),
    (lambda: ConfusionAccumulator(3).miou([5]), "classes"),
    (lambda: zero_shot_labels(torch.rand(2, 3), torch.rand(4, 5)), "D ="),
    (lambda: zero_shot_labels(torch.rand(2, 3), torch.rand(0, 3)), "class_embeddings"),
    (lambda: average_precision(torch.tensor([0.1, float("nan")]), torch.tensor([True, False])), "scores"),
    (lambda: average_precision(torch.rand(3), torch.tensor([1, 0, 1])), "relevant"),
    (lambda: retrieval_map(torch.rand(5, 4), torch.rand(2, 4), torch.ones(5, 2, dtype=torch.bool)), "relevance"),
    (lambda: retrieval_map(torch.rand(5, 4), torch.rand(0, 4), torch.ones(0, 5, dtype=torch.bool)), "query"),
])
def test_errors(call, match):
    with pytest.raises(OccupancyError, match=match):
        call()
