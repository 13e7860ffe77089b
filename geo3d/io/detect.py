"""Format detection and one entry point, :func:`read_capture`, for every capture geo3d reads."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geo3d.errors import CaptureError, UnknownFormatError
from geo3d.structures.capture import Capture


@dataclass(frozen=True)
class CaptureFormat:
    """A readable capture format: its name, the module and the names of its sniff/read functions."""

    name: str
    description: str
    module: str
    sniff: str
    read: str

    def sniffer(self) -> Callable[[Path], bool]:
        return getattr(importlib.import_module(self.module), self.sniff)

    def reader(self) -> Callable[..., Capture]:
        return getattr(importlib.import_module(self.module), self.read)


# Order matters: the first format whose sniffer accepts a path wins.
FORMATS: tuple[CaptureFormat, ...] = (
    CaptureFormat("geo3d", "geo3d capture folder (capture.json)", "geo3d.io.geo3d_format", "sniff_geo3d", "read_geo3d"),
    CaptureFormat("nuscenes", "nuScenes tables (v1.0-*/sample.json ...)", "geo3d.io.nuscenes",
                  "sniff_nuscenes_tables", "read_nuscenes_tables"),
    CaptureFormat("nuscenes-info", "mmdetection3d nuScenes info pickle", "geo3d.io.nuscenes",
                  "sniff_nuscenes_info", "read_nuscenes_info"),
    CaptureFormat("colmap", "COLMAP sparse model (cameras/images/points3D .bin|.txt)", "geo3d.io.colmap",
                  "sniff_colmap", "read_colmap"),
    CaptureFormat("blender", "NeRF/Blender transforms.json", "geo3d.io.blender", "sniff_blender", "read_blender"),
    CaptureFormat("7scenes", "RGB-D frames in the 7-Scenes layout", "geo3d.io.rgbd", "sniff_7scenes", "read_7scenes"),
)  # fmt: skip

FORMAT_NAMES = tuple(f.name for f in FORMATS)


def get_format(name: str) -> CaptureFormat:
    """The :class:`CaptureFormat` called ``name``; ValueError listing the known names otherwise."""
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise ValueError(f"unknown capture format {name!r}; known formats: {', '.join(FORMAT_NAMES)}")


def detect_format(path: str | Path) -> CaptureFormat:
    """The format of the capture at ``path``.

    Raises:
        CaptureError: ``path`` does not exist.
        UnknownFormatError: no reader recognises it (the message lists the formats tried).
    """
    path = Path(path)
    if not path.exists():
        raise CaptureError(f"{path}: no such file or folder")
    for fmt in FORMATS:
        if fmt.sniffer()(path):
            return fmt
    known = "; ".join(f"{f.name}: {f.description}" for f in FORMATS)
    raise UnknownFormatError(f"{path}: not a capture geo3d can read (tried {known})")


def read_capture(path: str | Path, format: str | None = None, **options: Any) -> Capture:
    """Read any capture geo3d knows, detecting its format unless ``format`` names one.

    ``options`` go to the format's reader (e.g. ``split="test"`` for Blender, ``world="ego"`` for
    nuScenes).
    """
    fmt = get_format(format) if format is not None else detect_format(path)
    return fmt.reader()(Path(path), **options)
