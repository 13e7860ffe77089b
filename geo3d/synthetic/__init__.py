"""Built-in synthetic data: labelled street scenes rendered into multi-camera + LiDAR captures.

:func:`build_street_scene` makes a procedural street (a seeded route of straights, curves and
junctions, with the object models of :data:`MODELS`, moving traffic and varied lighting);
:func:`nuscenes_like_rig` and :class:`LidarSpec` describe the sensors; :func:`render_frame`
ray-casts them (with Open3D, loaded lazily); :func:`semantic_occupancy` and the visibility masks
make Occ3D-like ground truth; :class:`SynthConfig`, :func:`generate_capture` and
:func:`write_synthetic_capture` put it all together into a :class:`~geo3d.structures.Capture`
(what ``geo3d synth`` runs). :func:`make_shape_set` samples a shape-classification set from the
same object models. Class ids are those of :data:`CLASS_NAMES` (nuScenes-lidarseg / Occ3D, 0 = free).
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
from geo3d.synthetic.generate import (
    SynthConfig,
    generate_capture,
    make_scene,
    synthesize_frame,
    write_synthetic_capture,
)
from geo3d.synthetic.occupancy import (
    OccupancyGridSpec,
    OccupancyLabels,
    camera_visibility_mask,
    lidar_range_image,
    lidar_visibility_mask,
    semantic_occupancy,
)
from geo3d.synthetic.preview import frame_preview, occupancy_bev
from geo3d.synthetic.shapes import SHAPE_CLASSES, make_shape_set
from geo3d.synthetic.sensors import (
    LidarSpec,
    SurroundRig,
    camera_rotation_from_yaw,
    nuscenes_like_rig,
    straight_ego_poses,
)
from geo3d.synthetic.textures import TEXTURES, value_noise

__all__ = [
    "SynthConfig",
    "generate_capture",
    "make_scene",
    "synthesize_frame",
    "write_synthetic_capture",
    "OccupancyGridSpec",
    "OccupancyLabels",
    "camera_visibility_mask",
    "lidar_range_image",
    "lidar_visibility_mask",
    "semantic_occupancy",
    "frame_preview",
    "occupancy_bev",
    "SHAPE_CLASSES",
    "make_shape_set",
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
