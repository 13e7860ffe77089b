"""Point-cloud ops: neighbour search, sampling, Chamfer distance and F-score, Earth Mover's Distance.

All ops take one cloud ``[N, 3]``, a padded batch ``[B, N, 3]`` with ``lengths [B]``, or a list of
clouds, and raise :class:`geo3d.errors.PointCloudError` on malformed input. Conventions and how they
map to pytorch3d and kaolin: ``docs/points.md``.
"""

from geo3d.points._inputs import PointBatch, as_point_batch
from geo3d.points.emd import EXACT_MAX_POINTS, EMDMatching, TransportPlan, earth_movers_distance, emd_matching
from geo3d.points.chamfer import FScore, NearestCosts, chamfer_distance, f_score, nearest_costs
from geo3d.points.neighbors import Neighbors, ball_query, knn, pairwise_distances
from geo3d.points.sampling import SampledPoints, VoxelDownsampled, farthest_point_sampling, voxel_downsample

__all__ = [
    "EMDMatching",
    "EXACT_MAX_POINTS",
    "TransportPlan",
    "earth_movers_distance",
    "emd_matching",
    "FScore",
    "NearestCosts",
    "Neighbors",
    "PointBatch",
    "SampledPoints",
    "VoxelDownsampled",
    "as_point_batch",
    "ball_query",
    "chamfer_distance",
    "f_score",
    "farthest_point_sampling",
    "knn",
    "nearest_costs",
    "pairwise_distances",
    "voxel_downsample",
]
