"""Named converters between geo3d's conventions and those of other tools.

geo3d: OpenCV camera axes (x right, y down, z forward), ``cam2world`` 4x4, pixel centres at integer
coordinates. Everything here is NumPy float64 (it runs once per file read, where exactness matters
more than speed); see ``docs/conventions.md`` for the table of conventions.
"""

from __future__ import annotations

import math

import numpy as np

from geo3d.geometry.poses import invert_pose, make_pose
from geo3d.geometry.rotations import matrix_to_quaternion

OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])
"""Right-multiplying a ``cam2world`` by this flips the camera's y and z axes: OpenGL/Blender
(x right, y up, looking down -z) <-> OpenCV (x right, y down, looking down +z). It is its own
inverse."""


def opengl_to_opencv_cam2world(cam2world_gl) -> np.ndarray:
    """``[..., 4, 4]`` OpenGL/Blender camera-to-world (NeRF ``transform_matrix``) -> OpenCV."""
    return np.asarray(cam2world_gl, dtype=np.float64) @ OPENGL_TO_OPENCV


def opencv_to_opengl_cam2world(cam2world_cv) -> np.ndarray:
    """``[..., 4, 4]`` OpenCV camera-to-world -> OpenGL/Blender (the inverse of the above)."""
    return np.asarray(cam2world_cv, dtype=np.float64) @ OPENGL_TO_OPENCV


def colmap_to_cam2world(qvec, tvec) -> np.ndarray:
    """COLMAP image pose -> ``cam2world``.

    COLMAP stores world-to-camera: ``qvec`` ``[..., 4]`` as ``(w, x, y, z)`` and ``tvec``
    ``[..., 3]`` such that ``p_cam = R(qvec) p_world + tvec``. COLMAP's camera axes are OpenCV's.
    """
    return invert_pose(make_pose(np.asarray(qvec, dtype=np.float64), tvec))


def cam2world_to_colmap(cam2world) -> tuple[np.ndarray, np.ndarray]:
    """``cam2world`` ``[..., 4, 4]`` -> COLMAP ``(qvec [..., 4] (w, x, y, z), tvec [..., 3])``."""
    world2cam = invert_pose(np.asarray(cam2world, dtype=np.float64))
    return matrix_to_quaternion(world2cam[..., :3, :3]), world2cam[..., :3, 3].copy()


def colmap_principal_point_to_opencv(cx: float, cy: float) -> tuple[float, float]:
    """COLMAP (and nerfstudio / Blender continuous) image coordinates put the centre of the first
    pixel at (0.5, 0.5); geo3d (OpenCV) puts it at (0, 0). Shift the principal point by -0.5."""
    return cx - 0.5, cy - 0.5


def opencv_principal_point_to_colmap(cx: float, cy: float) -> tuple[float, float]:
    """Inverse of :func:`colmap_principal_point_to_opencv`."""
    return cx + 0.5, cy + 0.5


def intrinsics_from_fov(
    width: int, height: int, fov_x: float, fov_y: float | None = None
) -> np.ndarray:
    """3x3 pinhole ``K`` (pixels, OpenCV pixel centres) for an image whose optical axis goes
    through the image centre, from the full horizontal field of view ``fov_x`` (radians) and
    optionally the vertical one (else square pixels, ``fy = fx``).

    The image centre in geo3d's pixel coordinates is ``((W - 1) / 2, (H - 1) / 2)``.
    """
    fx = 0.5 * width / math.tan(0.5 * fov_x)
    fy = fx if fov_y is None else 0.5 * height / math.tan(0.5 * fov_y)
    return np.array([[fx, 0.0, (width - 1) / 2.0], [0.0, fy, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def nuscenes_sensor2world(
    sensor2ego_rotation, sensor2ego_translation, ego2global_rotation, ego2global_translation
) -> np.ndarray:
    """nuScenes calibration -> ``sensor2global`` 4x4: ``ego2global @ sensor2ego``.

    Rotations are the tables' quaternions ``(w, x, y, z)`` (or 3x3 matrices), translations metres.
    nuScenes camera frames already use OpenCV axes.
    """
    sensor2ego = make_pose(sensor2ego_rotation, sensor2ego_translation)
    ego2global = make_pose(ego2global_rotation, ego2global_translation)
    return ego2global @ sensor2ego
