"""Small helpers shared by every layer: optional imports, atomic file writes, JSON-ready values."""

from geo3d.utils.atomic import atomic_directory, atomic_write_bytes, atomic_write_text
from geo3d.utils.jsonable import json_ready
from geo3d.utils.optional import require

__all__ = ["atomic_directory", "atomic_write_bytes", "atomic_write_text", "json_ready", "require"]
