"""Voxel grids and their conversions, sparse octrees (Morton codes, point location, neighbours,
pooling, ray traversal), TSDF fusion of posed depth images, and marching cubes (docs/voxels.md,
docs/octree.md).

A grid's voxel ``(i, j, k)`` covers ``[origin + i * s, origin + (i + 1) * s)`` per axis (metres, the
grid's world frame); its centre is ``origin + (i + 0.5) * s``.
"""

from geo3d.voxels.conversions import (
    PointVoxelization, grid_to_mesh, grid_to_points, mesh_to_voxels, occupancy_to_mesh, points_to_voxels,
    voxelize_points,
)
from geo3d.voxels.grid import VoxelGrid, VoxelLookup, sample_sparse, trilinear_sample
from geo3d.voxels.marching_cubes import marching_cubes
from geo3d.voxels.morton import morton_decode, morton_encode
from geo3d.voxels.octree import KnnLeaves, Octree
from geo3d.voxels.octree_rays import RayHits, RayIntervals, ray_first_hit, ray_intervals
from geo3d.voxels.tsdf import SurfacePoints, TSDFVolume, fuse_frames

__all__ = [
    "PointVoxelization", "grid_to_mesh", "grid_to_points", "mesh_to_voxels", "occupancy_to_mesh",
    "points_to_voxels", "voxelize_points",
    "VoxelGrid", "VoxelLookup", "sample_sparse", "trilinear_sample",
    "marching_cubes",
    "morton_decode", "morton_encode",
    "KnnLeaves", "Octree",
    "RayHits", "RayIntervals", "ray_first_hit", "ray_intervals",
    "SurfacePoints", "TSDFVolume", "fuse_frames",
]  # fmt: skip
