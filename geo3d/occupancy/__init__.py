"""Open-vocabulary 3D occupancy in the style of POP-3D and OccFeat (docs/occupancy.md).

This package holds the network, its training samples, the self-supervised targets, the losses and
the evaluation. :class:`OccupancyNet` (:class:`OccupancyNetConfig`) lifts image features into a voxel
volume (:func:`lift_image_features`, parameter-free as in Simple-BEV) and decodes occupancy and
language features; :func:`make_sample` / :class:`SyntheticOccupancyDataset` /
:class:`CaptureOccupancyDataset` turn capture frames into inputs and targets;
:func:`lidar_occupancy_targets` turns LiDAR returns into occupied / free / unknown voxels (exact ray
traversal); :func:`occupancy_loss` (cross-entropy + Lovász) and :func:`feature_distillation_loss`
train the occupancy and language heads; :func:`occupancy_iou`, :class:`ConfusionAccumulator`,
:func:`semantic_miou`, :func:`zero_shot_labels` and :func:`retrieval_map` (with :data:`QUERY_SET`)
evaluate them. :mod:`~geo3d.occupancy.store` keeps prepared samples on disk,
:mod:`~geo3d.occupancy.training` trains the network (:class:`OccupancyTrainer`, DDP under
``torchrun``), :mod:`~geo3d.occupancy.evaluation` runs it against the projection baseline and the
oracle (:func:`evaluate_occupancy`, :func:`format_report`), and :mod:`~geo3d.occupancy.bev` is the
OccFeat mode (a BEV segmentation head fine-tuned on a pre-trained network).
"""

from geo3d.occupancy.dataset import CaptureOccupancyDataset, SyntheticOccupancyDataset
from geo3d.occupancy.lifting import LiftedFeatures, lift_image_features, scale_intrinsics, voxel_centers
from geo3d.occupancy.network import OccupancyNet, OccupancyNetConfig, OccupancyOutput
from geo3d.occupancy.samples import OccupancyBatch, OccupancySample, collate_samples, make_sample
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
from geo3d.occupancy.store import PreparedSamples, load_sample, prepare_samples, save_sample
from geo3d.occupancy.training import (
    OccupancyTrainConfig, OccupancyTrainer, calibrate_threshold, load_occupancy_net, validation_metrics,
)
from geo3d.occupancy.evaluation import (
    METHODS, FramePrediction, OccupancyEvaluation, OccupancyEvaluator, evaluate_occupancy, predict_frame,
)
from geo3d.occupancy.report import format_report
from geo3d.occupancy.bev import (
    BEV_CLASSES, BevSegmentationNet, bev_labels, bev_segmentation_loss, evaluate_bev, label_subset, train_bev_head,
)

__all__ = [
    "CaptureOccupancyDataset", "SyntheticOccupancyDataset",
    "LiftedFeatures", "lift_image_features", "scale_intrinsics", "voxel_centers",
    "OccupancyNet", "OccupancyNetConfig", "OccupancyOutput",
    "OccupancyBatch", "OccupancySample", "collate_samples", "make_sample",
    "FREE", "OCCUPIED", "UNKNOWN", "OccupancyError", "OccupancyTargets", "lidar_occupancy_targets",
    "OccupancyLoss", "feature_distillation_loss", "jaccard_increments", "lovasz_hinge", "lovasz_softmax",
    "occupancy_loss",
    "QUERY_SET", "SEMANTIC_CLASSES", "ConfusionAccumulator", "RetrievalResult", "SemanticIoU", "average_precision",
    "occupancy_iou", "query_relevance", "retrieval_map", "semantic_miou", "zero_shot_labels",
    "PreparedSamples", "load_sample", "prepare_samples", "save_sample",
    "OccupancyTrainConfig", "OccupancyTrainer", "calibrate_threshold", "load_occupancy_net", "validation_metrics",
    "METHODS", "FramePrediction", "OccupancyEvaluation", "OccupancyEvaluator", "evaluate_occupancy", "predict_frame",
    "format_report",
    "BEV_CLASSES", "BevSegmentationNet", "bev_labels", "bev_segmentation_loss", "evaluate_bev", "label_subset",
    "train_bev_head",
]  # fmt: skip
