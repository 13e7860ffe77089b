"""Built-in synthetic data: labelled street scenes rendered into multi-camera + LiDAR captures.

:func:`build_street_scene` makes a procedural street of labelled meshes, :func:`nuscenes_like_rig`
and :class:`LidarSpec` describe the sensors, and :func:`render_capture` ray-casts them (with Open3D,
loaded lazily) into a :class:`~geo3d.structures.Capture` with depth, semantic and instance ground
truth. Class ids are those of :data:`CLASS_NAMES` (nuScenes-lidarseg / Occ3D, 0 = free / no hit).
"""

from geo3d.synthetic.classes import (
    CLASS_IDS,
    CLASS_NAMES,
    CLASS_PALETTE,
    FREE,
    THING_CLASSES,
    class_id,
    colorize_labels,
)
from geo3d.synthetic.raycast import (
    LIDAR_COLUMNS,
    CameraRender,
    LidarRender,
    RayHits,
    SceneRaycaster,
    render_camera,
    render_capture,
    render_frame,
    simulate_lidar,
)
from geo3d.synthetic.scene import Actor, LabelledMesh, SyntheticScene, place_model
from geo3d.synthetic.street import LEAD_IN_M, StreetConfig, build_street_scene
from geo3d.synthetic.road import LAYOUTS, RoadPath, Segment, make_route
from geo3d.synthetic.primitives import ObjectModel, Part
from geo3d.synthetic.objects import MODELS
from geo3d.synthetic.sensors import (
    LidarSpec,
    SurroundRig,
    camera_rotation_from_yaw,
    nuscenes_like_rig,
    straight_ego_poses,
)
from geo3d.synthetic.textures import TEXTURES, value_noise

__all__ = [
    "LAYOUTS",
    "LEAD_IN_M",
    "MODELS",
    "Actor",
    "ObjectModel",
    "Part",
    "RoadPath",
    "Segment",
    "StreetConfig",
    "make_route",
    "place_model",
    "render_frame",
    "CLASS_IDS",
    "CLASS_NAMES",
    "CLASS_PALETTE",
    "FREE",
    "LIDAR_COLUMNS",
    "TEXTURES",
    "THING_CLASSES",
    "CameraRender",
    "LabelledMesh",
    "LidarRender",
    "LidarSpec",
    "RayHits",
    "SceneRaycaster",
    "SurroundRig",
    "SyntheticScene",
    "build_street_scene",
    "camera_rotation_from_yaw",
    "class_id",
    "colorize_labels",
    "nuscenes_like_rig",
    "render_camera",
    "render_capture",
    "simulate_lidar",
    "straight_ego_poses",
    "value_noise",
]
