"""The semantic class vocabulary of geo3d's synthetic data: nuScenes-lidarseg / Occ3D's 16 classes.

A class id is its index in :data:`CLASS_NAMES`. Id 0 is ``"free"``: empty space in an occupancy grid,
and "no hit" (sky, or beyond the sensor's range) in rendered labels. Ids 1..16 follow the order of
the Occ3D-nuScenes benchmark (its ``others`` class, unused here, is replaced by ``free``).

Instances follow nuScenes-panoptic: objects of the :data:`THING_CLASSES` get instance ids >= 1,
unique within a scene; "stuff" (road, sidewalk, terrain, buildings, vegetation, ...) has instance 0.
"""

from __future__ import annotations

import numpy as np

from geo3d.structures.field import CLASS_PALETTE

CLASS_NAMES: tuple[str, ...] = (
    "free",
    "barrier",
    "bicycle",
    "bus",
    "car",
    "construction_vehicle",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "trailer",
    "truck",
    "driveable_surface",
    "other_flat",
    "sidewalk",
    "terrain",
    "manmade",
    "vegetation",
)
"""Class names; the id of a class is its index. 0 = free space / no hit."""

CLASS_IDS: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}
"""Class name -> id."""

FREE = 0
"""Id of free space, and of pixels / LiDAR beams that hit nothing."""

THING_CLASSES: tuple[str, ...] = CLASS_NAMES[1:11]
"""Countable objects (barrier .. truck): they get instance ids >= 1; the other classes get 0."""

# CLASS_PALETTE, the display colour per class id, is defined with the field type (layer 1, which cannot
# import this package) and re-exported here.


def class_id(name: str) -> int:
    """Id of the class ``name`` (one of :data:`CLASS_NAMES`); raises KeyError naming the choices."""
    try:
        return CLASS_IDS[name]
    except KeyError:
        raise KeyError(f"unknown class {name!r}; expected one of {', '.join(CLASS_NAMES)}") from None


def colorize_labels(labels: np.ndarray) -> np.ndarray:
    """``[...]`` integer class ids -> ``[..., 3]`` uint8 display colours (ids out of range -> black)."""
    labels = np.asarray(labels)
    valid = (labels >= 0) & (labels < len(CLASS_NAMES))
    return np.where(valid[..., None], CLASS_PALETTE[np.where(valid, labels, 0)], 0).astype(np.uint8)
