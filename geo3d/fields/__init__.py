"""Open-vocabulary fields: reconstruction methods that turn a capture into an
:class:`~geo3d.structures.OpenVocabField`, and text queries on a field.

- :mod:`geo3d.fields.query`: relevance of every feature voxel to a text (LERF relevancy or a softmax
  over a vocabulary), connected components with 3D boxes (:class:`FieldQuery`).
"""

from geo3d.fields.query import (
    QUERY_MODES,
    Component,
    FieldQuery,
    QueryResult,
    connected_components,
    format_results,
    score_field,
)

__all__ = [
    "QUERY_MODES",
    "Component",
    "FieldQuery",
    "QueryResult",
    "connected_components",
    "format_results",
    "score_field",
]
