"""Rigid transforms, rotations and the converters between the camera conventions of other tools.

geo3d's own convention (``docs/conventions.md``): OpenCV camera axes (x right, y down, z forward),
4x4 ``cam2world`` poses, quaternions ``(w, x, y, z)``, metres.
"""

from geo3d.geometry.conventions import (
    OPENGL_TO_OPENCV,
    cam2world_to_colmap,
    colmap_principal_point_to_opencv,
    colmap_to_cam2world,
    intrinsics_from_fov,
    nuscenes_sensor2world,
    opencv_principal_point_to_colmap,
    opencv_to_opengl_cam2world,
    opengl_to_opencv_cam2world,
)
from geo3d.geometry.poses import (
    check_intrinsics,
    check_pose,
    invert_pose,
    make_pose,
    transform_points,
)
from geo3d.geometry.rotations import matrix_to_quaternion, quaternion_to_matrix

__all__ = [
    "OPENGL_TO_OPENCV",
    "cam2world_to_colmap",
    "check_intrinsics",
    "check_pose",
    "colmap_principal_point_to_opencv",
    "colmap_to_cam2world",
    "intrinsics_from_fov",
    "invert_pose",
    "make_pose",
    "matrix_to_quaternion",
    "nuscenes_sensor2world",
    "opencv_principal_point_to_colmap",
    "opencv_to_opengl_cam2world",
    "opengl_to_opencv_cam2world",
    "quaternion_to_matrix",
    "transform_points",
]
