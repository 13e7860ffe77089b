"""Open-vocabulary 3D occupancy in the style of POP-3D and OccFeat (docs/occupancy.md).

This package holds the self-supervised targets, the losses and the evaluation:
:func:`lidar_occupancy_targets` turns LiDAR returns into occupied / free / unknown voxels (exact ray
traversal); :func:`occupancy_loss` (cross-entropy + Lovász) and :func:`feature_distillation_loss`
train the occupancy and language heads; :func:`occupancy_iou`, :class:`ConfusionAccumulator`,
:func:`semantic_miou`, :func:`zero_shot_labels` and :func:`retrieval_map` (with :data:`QUERY_SET`)
evaluate them.
"""

from geo3d.occupancy.targets import (
    FREE, OCCUPIED, UNKNOWN, OccupancyError, OccupancyTargets, lidar_occupancy_targets,
)
from geo3d.occupancy.losses import (
    OccupancyLoss, feature_distillation_loss, jaccard_increments, lovasz_hinge, lovasz_softmax, occupancy_loss,
)
from geo3d.occupancy.metrics import (
    QUERY_SET, SEMANTIC_CLASSES, ConfusionAccumulator, RetrievalResult, SemanticIoU, average_precision,
    occupancy_iou, query_relevance, retrieval_map, semantic_miou, zero_shot_labels,
)

__all__ = [
    "FREE", "OCCUPIED", "UNKNOWN", "OccupancyError", "OccupancyTargets", "lidar_occupancy_targets",
    "OccupancyLoss", "feature_distillation_loss", "jaccard_increments", "lovasz_hinge", "lovasz_softmax",
    "occupancy_loss",
    "QUERY_SET", "SEMANTIC_CLASSES", "ConfusionAccumulator", "RetrievalResult", "SemanticIoU", "average_precision",
    "occupancy_iou", "query_relevance", "retrieval_map", "semantic_miou", "zero_shot_labels",
]  # fmt: skip
