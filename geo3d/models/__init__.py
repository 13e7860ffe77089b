"""Neural network models (layer 5): PointNet (:mod:`geo3d.models.pointnet`)."""

from geo3d.models.pointnet import (
    MaxPooledPointLayer,
    PointLayout,
    PointNetClassifier,
    PointNetEncoder,
    PointNetFeatures,
    PointNetSegmenter,
    TransformNet,
    max_pooled_point_layer_reference,
    orthogonality_regularizer,
    point_layout,
)

__all__ = [
    "MaxPooledPointLayer", "PointLayout", "PointNetClassifier", "PointNetEncoder", "PointNetFeatures",
    "PointNetSegmenter", "TransformNet", "max_pooled_point_layer_reference", "orthogonality_regularizer",
    "point_layout",
]  # fmt: skip
