"""Exceptions raised by geo3d.

Every error a user can cause with bad input derives from :class:`Geo3dError`, so the CLI can turn
them into a one-line message and a non-zero exit instead of a traceback.
"""

from __future__ import annotations


class Geo3dError(Exception):
    """Base class of the errors geo3d raises for bad input or a missing dependency."""


class CaptureError(Geo3dError):
    """A capture cannot be read or written: missing file, unreadable image, bad layout.

    The message names the file and the problem.
    """


class CalibrationError(CaptureError):
    """Camera or sensor calibration is missing or invalid (wrong matrix shape, non-orthonormal
    rotation, non-positive focal length, NaN/inf)."""


class UnknownFormatError(CaptureError):
    """No reader recognises the given path."""


class MissingDependencyError(Geo3dError, ImportError):
    """An optional dependency is not installed; the message names the pip extra that provides it."""


class PointCloudError(Geo3dError, ValueError):
    """A point-cloud argument is malformed: wrong dimensionality, NaN/inf coordinates, lengths out of
    range, or batch sizes that do not match. The message names the argument and the problem."""


class MeshError(Geo3dError, ValueError):
    """A malformed mesh (wrong shapes, non-finite vertices, face indices out of range, no triangles),
    or a mesh that cannot serve a request (e.g. not watertight when signed distances are asked for)."""


class SDFError(Geo3dError, ValueError):
    """A signed-distance argument is malformed: bad query points, bounds, resolution or options."""


class VoxelError(Geo3dError, ValueError):
    """A voxel-grid or octree argument is malformed: non-positive voxel size, empty input, shapes or
    indices out of range, NaN/inf coordinates, or grids that do not match."""
