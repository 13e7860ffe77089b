"""Open-vocabulary fields: reconstruction methods that turn a capture into an
:class:`~geo3d.structures.OpenVocabField`, text queries on a field, and pictures of it.

- :mod:`geo3d.fields.methods`: the method registry (:func:`get_method`, :func:`register_method`,
  :class:`ReconstructionMethod`, :class:`Resources`); built-in :mod:`~geo3d.fields.fusion` (training-free:
  measured geometry + a dense 2D teacher averaged over views) and :mod:`~geo3d.fields.pop3d` (the
  feed-forward occupancy network).
- :mod:`geo3d.fields.inputs`: checks of a capture's frame before a method runs.
- :mod:`geo3d.fields.query`: relevance of every feature voxel to a text (LERF relevancy or a softmax
  over a vocabulary), connected components with 3D boxes (:class:`FieldQuery`).
- :mod:`geo3d.fields.scoring`: IoU / precision / recall of query answers against voxel ground truth.
- :mod:`geo3d.fields.view`: camera presets, colours, colour bars and headless Open3D renders.
"""

from geo3d.fields.methods import Resources, ReconstructionMethod, get_method, method_names, register_method
from geo3d.fields.query import (
    QUERY_MODES,
    Component,
    FieldQuery,
    QueryResult,
    connected_components,
    format_results,
    score_field,
)
from geo3d.fields.scoring import QueryScores, query_voxel_scores
from geo3d.fields.view import CAMERA_PRESETS, CameraView, camera_view, field_colors, render_field, save_screenshot

__all__ = [
    "CAMERA_PRESETS",
    "QUERY_MODES",
    "CameraView",
    "Component",
    "FieldQuery",
    "QueryResult",
    "QueryScores",
    "ReconstructionMethod",
    "Resources",
    "camera_view",
    "connected_components",
    "field_colors",
    "format_results",
    "get_method",
    "method_names",
    "query_voxel_scores",
    "register_method",
    "render_field",
    "save_screenshot",
    "score_field",
]
