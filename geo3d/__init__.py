"""geo3d: 3D perception and neural rendering in PyTorch.

``import geo3d`` is cheap: it imports neither torch nor any back-end. Sub-packages load on first
attribute access (``geo3d.cameras``, ``geo3d.io``, ...), see ``docs/architecture.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_SUBPACKAGES = (
    "cameras", "errors", "fields", "geometry", "io", "language", "models", "nn", "occupancy", "points", "render",
    "sdf", "structures", "synthetic", "training", "utils", "voxels",
)

if TYPE_CHECKING:  # pragma: no cover
    from geo3d import (  # noqa: F401
        cameras, errors, fields, geometry, io, language, models, nn, occupancy, points, render, sdf, structures,
        synthetic, training, utils, voxels,
    )


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"geo3d.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'geo3d' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_SUBPACKAGES))


__all__ = ["__version__", *_SUBPACKAGES]
