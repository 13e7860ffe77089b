"""Capture I/O: readers of other tools' formats, geo3d's own format, and image files.

Every reader returns a :class:`geo3d.structures.Capture` in geo3d's conventions
(``docs/conventions.md``); :func:`read_capture` detects the format.
"""

from geo3d.io.blender import read_blender
from geo3d.io.colmap import read_colmap
from geo3d.io.detect import FORMAT_NAMES, FORMATS, detect_format, get_format, read_capture
from geo3d.io.geo3d_format import read_geo3d, write_capture
from geo3d.io.nuscenes import read_nuscenes_info, read_nuscenes_tables
from geo3d.io.rgbd import read_7scenes

__all__ = [
    "FORMATS",
    "FORMAT_NAMES",
    "detect_format",
    "get_format",
    "read_7scenes",
    "read_blender",
    "read_capture",
    "read_colmap",
    "read_geo3d",
    "read_nuscenes_info",
    "read_nuscenes_tables",
    "write_capture",
]
