"""Per-voxel operations of the evaluation's baseline and oracle (:mod:`geo3d.occupancy.evaluation`):
teacher features of LiDAR points gathered into voxels, transferred from the nearest point to voxel
centres, and voxel classes by zero-shot classification of their features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from geo3d.occupancy.metrics import SEMANTIC_CLASSES, zero_shot_labels
from geo3d.occupancy.targets import OccupancyError, check_finite_tensor
from geo3d.points.neighbors import knn
from geo3d.synthetic.occupancy import OccupancyGridSpec
from geo3d.voxels.conversions import voxelize_points


class PointVoxels(NamedTuple):
    """Result of :func:`voxelize_point_features`.

    Attributes:
        occupied: ``[X, Y, Z]`` bool, voxels holding at least one point.
        features: ``[V, D]`` float32 renormalised mean feature of each occupied voxel, in the order of
            ``torch.nonzero(occupied)`` (a zero vector where the features cancel exactly).
        counts: ``[V]`` int64 points in each occupied voxel, same order.
    """

    occupied: torch.Tensor
    features: torch.Tensor
    counts: torch.Tensor


def _check_grid(grid_spec) -> OccupancyGridSpec:
    if not isinstance(grid_spec, OccupancyGridSpec):
        raise OccupancyError(f"grid_spec must be an OccupancyGridSpec, got {type(grid_spec).__name__}")
    return grid_spec


def _check_points_features(points_ego, features, points_name: str, features_name: str):
    points = check_finite_tensor(points_ego, points_name, ndim=2, last=3)
    features = check_finite_tensor(features, features_name, ndim=2)
    if len(features) != len(points):
        raise OccupancyError(f"{features_name} has {len(features)} rows for {len(points)} {points_name}")
    return points.detach().cpu(), features.detach().cpu()


def _voxel_index(points: torch.Tensor, spec: OccupancyGridSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """``[M, 3]`` int64 voxel of each point, ``floor((p - lower) / voxel_size)`` in float64, and ``[M]``
    inside the grid."""
    index = torch.floor((points.double() - torch.tensor(spec.lower, dtype=torch.float64)) / spec.voxel_size).long()
    return index, ((index >= 0) & (index < torch.tensor(spec.shape))).all(1)


def voxelize_point_features(points_ego: torch.Tensor, features: torch.Tensor,
                            grid_spec: OccupancyGridSpec) -> PointVoxels:
    """Occupancy and mean feature of the voxels that hold points (the projection baseline's voxels).

    Point ``p`` lies in voxel ``floor((p - grid_spec.lower) / voxel_size)`` (float64); points outside the
    grid are ignored.

    Args:
        points_ego: ``[M, 3]`` points in the grid's frame (ego), metres.
        features: ``[M, D]`` float feature per point (e.g. unit teacher features).
        grid_spec: the voxel grid.

    Returns:
        :class:`PointVoxels`.
    """
    spec = _check_grid(grid_spec)
    return _voxelize(*_check_points_features(points_ego, features, "points_ego", "features"), spec)


def _voxelize(points: torch.Tensor, features: torch.Tensor, spec: OccupancyGridSpec) -> PointVoxels:
    # geo3d.voxels owns the scatter (same float64 floor, voxels sorted x-slowest = torch.nonzero order)
    scattered = voxelize_points(points, spec.voxel_size, origin=spec.lower, shape=spec.shape,
                                features=features.double(), reduce="mean")
    index = scattered.grid.indices
    occupied = torch.zeros(spec.shape, dtype=torch.bool)
    occupied[index[:, 0], index[:, 1], index[:, 2]] = True
    rows = scattered.voxel_of_point
    counts = torch.bincount(rows[rows >= 0], minlength=len(index))
    return PointVoxels(occupied, F.normalize(scattered.grid.values, dim=1, eps=1e-12).float(), counts)


def nearest_point_features(voxel_mask: torch.Tensor, points_ego: torch.Tensor, features: torch.Tensor,
                           grid_spec: OccupancyGridSpec) -> torch.Tensor:
    """Feature of the point nearest (Euclidean, 3D) to the centre of each selected voxel (the oracle's transfer).

    Args:
        voxel_mask: ``[X, Y, Z]`` bool voxels of ``grid_spec`` to fill (e.g. ground-truth occupied).
        points_ego: ``[M, 3]`` points in the grid's frame, metres (``M >= 1`` when any voxel is selected).
        features: ``[M, D]`` feature per point.
        grid_spec: the voxel grid; voxel ``(i, j, k)`` has centre ``lower + ((i, j, k) + 0.5) * voxel_size``.

    Returns:
        ``[V, D]`` features (dtype of ``features``) in the order of ``torch.nonzero(voxel_mask)``; ties
        between equidistant points are broken arbitrarily.
    """
    spec = _check_grid(grid_spec)
    points, features = _check_points_features(points_ego, features, "points_ego", "features")
    return _nearest(_check_voxel_mask(voxel_mask, spec, "voxel_mask"), points, features, spec)


def _nearest(mask: torch.Tensor, points: torch.Tensor, features: torch.Tensor, spec: OccupancyGridSpec) -> torch.Tensor:
    index = torch.nonzero(mask)
    if len(index) == 0:
        return features.new_zeros(0, features.shape[1])
    if len(points) == 0:
        raise OccupancyError(f"points_ego is empty but voxel_mask selects {len(index)} voxels")
    centres = torch.tensor(spec.lower, dtype=torch.float64) + (index.double() + 0.5) * spec.voxel_size
    nearest = knn(centres, points.double(), 1).indices[:, 0]
    return features[nearest]


def zero_shot_volume(occupied: torch.Tensor, occupied_features: torch.Tensor, class_embeddings: torch.Tensor,
                     class_ids: torch.Tensor | Sequence[int] = SEMANTIC_CLASSES) -> torch.Tensor:
    """Zero-shot semantic volume: occupied voxels take the class of the most similar prompt, others 0.

    Args:
        occupied: ``[X, Y, Z]`` bool predicted occupancy.
        occupied_features: ``[V, D]`` features of the occupied voxels, order of ``torch.nonzero(occupied)``.
        class_embeddings: ``[K, D]`` text embeddings of the class prompts.
        class_ids: ``[K]`` label of each embedding (default ``1..16``, :data:`SEMANTIC_CLASSES`).

    Returns:
        ``[X, Y, Z]`` int64 class ids (0 = free).
    """
    if not isinstance(occupied, torch.Tensor) or occupied.dtype != torch.bool or occupied.ndim != 3:
        got = f"{getattr(occupied, 'dtype', type(occupied).__name__)} {list(getattr(occupied, 'shape', []))}"
        raise OccupancyError(f"occupied must be a [X, Y, Z] bool tensor, got {got}")
    occupied = occupied.cpu()
    features = check_finite_tensor(occupied_features, "occupied_features", ndim=2).detach().cpu()
    if len(features) != int(occupied.sum()):
        raise OccupancyError(f"occupied_features has {len(features)} rows but occupied selects {int(occupied.sum())} "
                             "voxels")
    return _zero_shot(occupied, features, class_embeddings.detach().cpu(), class_ids)


def _zero_shot(occupied: torch.Tensor, features: torch.Tensor, class_embeddings: torch.Tensor,
               class_ids: torch.Tensor | Sequence[int] = SEMANTIC_CLASSES) -> torch.Tensor:
    labels = torch.zeros(occupied.shape, dtype=torch.int64)
    labels[occupied] = zero_shot_labels(features, class_embeddings, class_ids)  # checks the features once
    return labels


def _check_voxel_mask(value, spec: OccupancyGridSpec, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dtype != torch.bool or tuple(value.shape) != spec.shape:
        raise OccupancyError(f"{name} must be a bool tensor of the grid's shape {list(spec.shape)}, got "
                             f"{getattr(value, 'dtype', type(value).__name__)} {list(getattr(value, 'shape', []))}")
    return value.cpu()
