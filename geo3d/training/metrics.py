"""Classification metrics: confusion matrix, overall accuracy, per-class and mean class accuracy.

Conventions (the ones PointNet and ModelNet40 papers report):

- **Overall accuracy** (OA): correct predictions / all predictions.
- **Per-class accuracy** of class ``k``: correct predictions among the samples whose *true* label is
  ``k`` (the recall of ``k``). A class absent from the labels has no accuracy: NaN.
- **Mean class accuracy** (mAcc): the mean of the per-class accuracies over the classes *present in
  the labels*; absent classes are left out (not counted as 0 or 1). So on a test split holding
  every class it is the usual balanced accuracy.

Inputs are integer labels, NumPy arrays or torch tensors (moved to the CPU); results are NumPy.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


def _labels(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {array.dtype}")
    return array.astype(np.int64)


def confusion_matrix(predictions: Any, labels: Any, num_classes: int) -> np.ndarray:
    """``[K, K]`` int64 counts: entry ``[t, p]`` is the number of samples of true class ``t``
    predicted as ``p`` (rows: truth, columns: prediction).

    Args:
        predictions: ``[M]`` predicted class indices in ``[0, K)``.
        labels: ``[M]`` true class indices in ``[0, K)``.
        num_classes: ``K``.

    Raises:
        ValueError: shapes differ, non-integer values, or indices outside ``[0, K)``.
    """
    predictions, labels = _labels(predictions, "predictions"), _labels(labels, "labels")
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ in length")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    for name, values in (("predictions", predictions), ("labels", labels)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            got = f"[{values.min()}, {values.max()}]"
            raise ValueError(f"{name} must lie in [0, {num_classes}), got values in {got}")
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def overall_accuracy(confusion: np.ndarray) -> float:
    """Correct / total from a confusion matrix; NaN when it counts no samples."""
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else float("nan")


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """``[K]`` float64: diagonal / row sums; NaN for classes with no samples (absent from the labels)."""
    counts = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.diag(confusion) / np.maximum(counts, 1), np.nan)


def mean_class_accuracy(confusion: np.ndarray) -> float:
    """Mean of :func:`per_class_accuracy` over the classes present in the labels; NaN if none are."""
    accuracy = per_class_accuracy(confusion)
    present = ~np.isnan(accuracy)
    return float(accuracy[present].mean()) if present.any() else float("nan")


class ClassificationMetrics(NamedTuple):
    """All of the above for one set of predictions.

    Attributes:
        overall_accuracy: OA in [0, 1].
        mean_class_accuracy: mAcc in [0, 1] over the classes present in the labels.
        per_class_accuracy: ``[K]`` accuracy per class (NaN where the class has no samples).
        class_counts: ``[K]`` number of samples per true class.
        confusion: ``[K, K]`` confusion matrix (rows: truth, columns: prediction).
    """

    overall_accuracy: float
    mean_class_accuracy: float
    per_class_accuracy: np.ndarray
    class_counts: np.ndarray
    confusion: np.ndarray

    def to_dict(self, class_names: tuple[str, ...] | list[str] | None = None) -> dict[str, Any]:
        """JSON-friendly values (NaN per-class accuracies become None)."""
        names = [str(k) for k in range(len(self.class_counts))] if class_names is None else list(class_names)
        return {
            "overall_accuracy": self.overall_accuracy,
            "mean_class_accuracy": self.mean_class_accuracy,
            "per_class": {name: {"accuracy": None if np.isnan(acc) else float(acc), "count": int(count)}
                          for name, acc, count in zip(names, self.per_class_accuracy, self.class_counts)},
            "confusion": self.confusion.tolist(),
        }


def classification_metrics(predictions: Any, labels: Any, num_classes: int) -> ClassificationMetrics:
    """:class:`ClassificationMetrics` of ``predictions [M]`` against ``labels [M]`` over ``K`` classes."""
    confusion = confusion_matrix(predictions, labels, num_classes)
    return ClassificationMetrics(overall_accuracy(confusion), mean_class_accuracy(confusion),
                                 per_class_accuracy(confusion), confusion.sum(axis=1), confusion)
