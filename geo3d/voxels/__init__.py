"""Voxel grids, sparse octrees, TSDF fusion and marching cubes (docs/voxels.md)."""

from geo3d.voxels.marching_cubes import marching_cubes

__all__ = ["marching_cubes"]
