"""Data structures shared across geo3d: the multi-camera :class:`Capture`, its parts,
:class:`SemanticOccupancy` ground truth, :class:`TriangleMesh`, point-cloud :class:`ShapeSet` datasets, and the
open-vocabulary voxel field :class:`OpenVocabField` (the artefact of ``geo3d reconstruct``)."""

from geo3d.structures.capture import ArraySource, CameraFrame, Capture, Frame, LidarSweep, SparsePoints
from geo3d.structures.field import FieldError, OpenVocabField
from geo3d.structures.mesh import TriangleMesh, read_mesh
from geo3d.structures.occupancy import SemanticOccupancy
from geo3d.structures.shapes import ShapeSet, normalize_unit_sphere, sample_surface

__all__ = ["ArraySource", "CameraFrame", "Capture", "FieldError", "Frame", "LidarSweep", "OpenVocabField",
           "SemanticOccupancy", "ShapeSet", "SparsePoints", "TriangleMesh", "normalize_unit_sphere", "read_mesh", "sample_surface"]
