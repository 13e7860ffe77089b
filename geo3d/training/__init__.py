"""Training loops, checkpoints and metrics (layer 5).

- :mod:`geo3d.training.checkpoint`: atomic, verified checkpoints (``save_checkpoint``,
  ``load_checkpoint``, ``restore``).
- :mod:`geo3d.training.metrics`: confusion matrix, overall / per-class / mean class accuracy.
- :mod:`geo3d.training.pointnet`: PointNet shape classification (``PointNetTrainConfig``,
  ``PointNetTrainer``).
"""

from geo3d.training.checkpoint import Checkpoint, CheckpointError, load_checkpoint, restore, save_checkpoint
from geo3d.training.metrics import (
    ClassificationMetrics,
    classification_metrics,
    confusion_matrix,
    mean_class_accuracy,
    overall_accuracy,
    per_class_accuracy,
)
from geo3d.training.pointnet import (
    EpochStats,
    PointNetTrainConfig,
    PointNetTrainer,
    ShapeTensors,
    augment_points,
    learning_rate_factor,
    load_shape_split,
    shape_set_tensors,
)

__all__ = [
    "Checkpoint", "CheckpointError", "ClassificationMetrics", "EpochStats", "PointNetTrainConfig",
    "PointNetTrainer", "ShapeTensors", "augment_points", "classification_metrics", "confusion_matrix",
    "learning_rate_factor", "load_checkpoint", "load_shape_split", "mean_class_accuracy", "overall_accuracy",
    "per_class_accuracy", "restore", "save_checkpoint", "shape_set_tensors",
]  # fmt: skip
