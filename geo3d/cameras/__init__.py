"""Pinhole cameras: plain-tensor ops (:mod:`geo3d.cameras.functional`), the batched
:class:`PinholeCameras` container and the multi-camera :class:`CameraRig`.

Conventions: ``docs/conventions.md`` (OpenCV axes, ``cam2world`` 4x4 poses, ``K`` in pixels with
pixel centres at integer coordinates, z-depth, metres).
"""

from geo3d.cameras.cameras import PinholeCameras
from geo3d.cameras.functional import (
    DEPTH_EPS,
    DepthPoints,
    Projection,
    Rays,
    depth_to_points,
    frustum_mask,
    generate_rays,
    pixel_grid,
    points_to_depth,
    project_points,
    rays_from_pixels,
    unproject_points,
    valid_depth_points,
    world_to_pixels,
)
from geo3d.cameras.rig import CameraRig

__all__ = [
    "DEPTH_EPS",
    "CameraRig",
    "DepthPoints",
    "PinholeCameras",
    "Projection",
    "Rays",
    "depth_to_points",
    "frustum_mask",
    "generate_rays",
    "pixel_grid",
    "points_to_depth",
    "project_points",
    "rays_from_pixels",
    "unproject_points",
    "valid_depth_points",
    "world_to_pixels",
]
