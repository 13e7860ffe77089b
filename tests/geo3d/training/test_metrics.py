"""Classification metrics against brute-force loops over the samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geo3d.training.metrics import (
    classification_metrics,
    confusion_matrix,
    mean_class_accuracy,
    overall_accuracy,
    per_class_accuracy,
)


def _brute_force(predictions, labels, k):
    confusion = np.zeros((k, k), dtype=np.int64)
    for p, t in zip(predictions, labels):
        confusion[t, p] += 1
    correct = sum(int(p == t) for p, t in zip(predictions, labels))
    per_class = []
    for c in range(k):
        members = [i for i, t in enumerate(labels) if t == c]
        per_class.append(sum(predictions[i] == c for i in members) / len(members) if members else None)
    present = [a for a in per_class if a is not None]
    return confusion, correct / len(labels), per_class, sum(present) / len(present)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    k = 7
    labels = rng.integers(0, k - 2, size=200)  # the last two classes are absent from the labels
    predictions = np.where(rng.random(200) < 0.6, labels, rng.integers(0, k, size=200))
    confusion, oa, per_class, macc = _brute_force(predictions.tolist(), labels.tolist(), k)
    got = classification_metrics(torch.from_numpy(predictions), labels, k)
    np.testing.assert_array_equal(got.confusion, confusion)
    np.testing.assert_array_equal(confusion_matrix(predictions, labels, k), confusion)
    assert got.overall_accuracy == pytest.approx(oa) == overall_accuracy(confusion)
    assert got.mean_class_accuracy == pytest.approx(macc) == mean_class_accuracy(confusion)
    for a, b in zip(per_class_accuracy(confusion), per_class):
        assert (math.isnan(a) and b is None) or a == pytest.approx(b)
    assert got.class_counts.tolist() == np.bincount(labels, minlength=k).tolist()
    as_dict = got.to_dict([f"c{i}" for i in range(k)])
    assert as_dict["per_class"]["c6"] == {"accuracy": None, "count": 0}


def test_balanced_vs_overall_accuracy_differ_on_imbalanced_labels():
    labels = np.array([0] * 9 + [1])
    predictions = np.zeros(10, dtype=np.int64)  # always class 0
    metrics = classification_metrics(predictions, labels, 2)
    assert metrics.overall_accuracy == 0.9 and metrics.mean_class_accuracy == 0.5


def test_bad_inputs():
    with pytest.raises(ValueError, match="differ in length"):
        confusion_matrix([0, 1], [0], 2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        confusion_matrix([0, 1], [0, 2], 2)
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix([0.5], [0], 2)
    empty = confusion_matrix([], [], 3)
    assert math.isnan(overall_accuracy(empty)) and math.isnan(mean_class_accuracy(empty))
