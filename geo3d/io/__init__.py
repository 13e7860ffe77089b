"""Capture I/O: readers of other tools' formats, geo3d's own format, and image files.

Every capture reader returns a :class:`geo3d.structures.Capture` in geo3d's conventions
(``docs/conventions.md``); :func:`read_capture` detects the format. The ModelNet readers
(:mod:`geo3d.io.modelnet`) return a :class:`geo3d.structures.shapes.ShapeSet` for shape
classification, and :func:`read_off` reads an OFF mesh.
"""

from geo3d.io.blender import read_blender
from geo3d.io.colmap import read_colmap
from geo3d.io.detect import FORMAT_NAMES, FORMATS, detect_format, get_format, read_capture
from geo3d.io.capture_writer import CaptureExistsError, CaptureWriter, write_capture
from geo3d.io.geo3d_format import read_geo3d
from geo3d.io.modelnet import (
    detect_modelnet_layout,
    read_modelnet40,
    read_modelnet40_normal_resampled,
    read_modelnet40_off,
    read_off,
)
from geo3d.io.nuscenes import read_nuscenes_info, read_nuscenes_tables
from geo3d.io.rgbd import read_7scenes

__all__ = [
    "CaptureExistsError",
    "CaptureWriter",
    "FORMATS",
    "FORMAT_NAMES",
    "detect_format",
    "detect_modelnet_layout",
    "get_format",
    "read_7scenes",
    "read_blender",
    "read_capture",
    "read_colmap",
    "read_geo3d",
    "read_modelnet40",
    "read_modelnet40_normal_resampled",
    "read_modelnet40_off",
    "read_nuscenes_info",
    "read_nuscenes_tables",
    "read_off",
    "write_capture",
]
