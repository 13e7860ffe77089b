"""Reader for RGB-D sequences in the Microsoft 7-Scenes layout (also used by tsdf-fusion-python).

A sequence folder holds, per frame id ``XXXXXX``:

- ``frame-XXXXXX.color.png`` or ``.color.jpg``: 640x480 RGB;
- ``frame-XXXXXX.depth.png``: uint16 depth in millimetres, 0 = no measurement;
- ``frame-XXXXXX.pose.txt``: 4x4 camera-to-world matrix (OpenCV axes, metres) as 16 numbers;

and optionally ``camera-intrinsics.txt``, a 3x3 ``K``. These are geo3d's conventions already
(``docs/conventions.md``): poses are read as they are and depth is divided by ``depth_scale``.

The Kinect's depth and colour cameras are not registered exactly in 7-Scenes: each has its own
intrinsics (about 585 px for depth, 525 px for colour) and they are a few centimetres apart. Like
tsdf-fusion-python, geo3d uses the depth intrinsics for both images, which is exact for depth and
off by a few pixels for colour.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from functools import partial
from pathlib import Path

import numpy as np

from geo3d.errors import CaptureError
from geo3d.geometry.poses import ORTHONORMAL_TOL, check_intrinsics, check_pose
from geo3d.io.images import image_size, read_depth_png, read_image_uint8
from geo3d.structures.capture import ArraySource, CameraFrame, Capture, Frame

CAMERA_NAME = "rgbd"

DEFAULT_INTRINSICS = np.array([[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]])
"""The 7-Scenes depth camera (fx = fy = 585, cx = 320, cy = 240), used when the folder has no
``camera-intrinsics.txt``."""

POSE_ORTHONORMAL_TOL = ORTHONORMAL_TOL
"""Largest ``|R^T R - I|`` entry accepted in a pose file (geo3d's default). 7-Scenes poses come from
KinectFusion and are not exactly orthonormal: up to 1.8e-4 on the shared sample. The poses are kept
as they are."""

INTRINSICS_FILE = "camera-intrinsics.txt"

_REQUIRED = (("color", "color.png or .color.jpg"), ("depth", "depth.png"), ("pose", "pose.txt"))
_FRAME_FILE = re.compile(r"frame-(\d+)\.(color\.png|color\.jpg|depth\.png|pose\.txt)")

# MSVC writes non-finite numbers as 1.#INF, -1.#IND, 1.#QNAN ...
_MSVC_NON_FINITE = re.compile(r"^[-+]?\d(\.\d*)?#(INF|IND|QNAN|SNAN)\d*$", re.IGNORECASE)


def _frame_files(path: Path) -> dict[int, dict[str, Path]]:
    """frame id -> {"color": path, "depth": path, "pose": path} (only the kinds present)."""
    frames: dict[int, dict[str, Path]] = {}
    with os.scandir(path) as entries:
        names = [(entry.name, entry.path) for entry in entries]
    for name, file in names:
        match = _FRAME_FILE.fullmatch(name)
        if match:
            kind = match.group(2).split(".")[0]
            files = frames.setdefault(int(match.group(1)), {})
            # A .color.png wins over a .color.jpg of the same frame.
            if kind != "color" or "color" not in files or name.endswith(".png"):
                files[kind] = Path(file)
    return frames


def _numbers(path: Path, count: int) -> np.ndarray:
    """The ``count`` whitespace-separated numbers of a text file (MSVC's ``1.#INF`` read as inf)."""
    try:
        tokens = path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise CaptureError(f"{path}: cannot read ({exc})") from None
    if len(tokens) != count:
        raise CaptureError(f"{path}: expected {count} numbers, got {len(tokens)}")
    values = []
    for token in tokens:
        try:
            values.append(float(token))
        except ValueError:
            if not _MSVC_NON_FINITE.match(token):
                raise CaptureError(f"{path}: {token!r} is not a number") from None
            values.append(math.nan)
    return np.array(values, dtype=np.float64)


def read_pose_txt(path: str | Path) -> np.ndarray | None:
    """``[4, 4]`` float64 camera-to-world from a 7-Scenes ``pose.txt``, or None when it holds
    inf/NaN (7-Scenes' mark of lost tracking).

    Raises:
        CaptureError: unreadable, or not 16 numbers.
        CalibrationError: not a rigid pose within :data:`POSE_ORTHONORMAL_TOL`.
    """
    path = Path(path)
    pose = _numbers(path, 16).reshape(4, 4)
    if not np.isfinite(pose).all():
        return None
    return check_pose(pose, str(path), tol=POSE_ORTHONORMAL_TOL)


def _intrinsics(path: Path) -> tuple[np.ndarray, str]:
    file = path / INTRINSICS_FILE
    if not file.is_file():
        warnings.warn(
            f"{path}: no {INTRINSICS_FILE}; using the 7-Scenes default fx=fy=585, cx=320, cy=240",
            stacklevel=3,
        )
        return DEFAULT_INTRINSICS.copy(), "default"
    return check_intrinsics(_numbers(file, 9).reshape(3, 3), str(file)), "file"


def read_7scenes(path: str | Path, depth_scale: float = 1000.0) -> Capture:
    """Read a 7-Scenes RGB-D sequence folder as a :class:`Capture`.

    Args:
        path: folder of ``frame-XXXXXX.{color.png|color.jpg, depth.png, pose.txt}`` files and an
            optional ``camera-intrinsics.txt`` (module docstring).
        depth_scale: depth PNG units per metre (1000: millimetres).

    Returns:
        One :class:`Frame` per frame id, in increasing id order (ids in
        ``metadata["frame_ids"]``), each with one :class:`CameraFrame` named ``"rgbd"``: ``K``
        ``[3, 3]`` from the intrinsics file (the depth camera's, used for colour too), ``cam2world``
        ``[4, 4]`` float64 (OpenCV axes, metres), ``[H, W, 3]`` uint8 colour and ``[H, W]``
        float32 depth in metres (0 = invalid), both decoded lazily. The image size comes from the
        first colour image's header. No timestamps.

    Frames whose pose holds inf/NaN (lost tracking) are skipped with one warning. A missing
    ``camera-intrinsics.txt`` gives the 7-Scenes default ``K`` and a warning.

    Raises:
        CaptureError: no frames; a frame without its colour, depth or pose file (naming the missing
            file: a partial copy is an error, not something to skip silently); an unreadable pose or
            intrinsics file; an unreadable image or depth PNG (when it is loaded).
        CalibrationError: a pose that is not rigid, or invalid intrinsics (naming the file).
    """
    path = Path(path)
    if not path.is_dir():
        raise CaptureError(f"{path}: no such folder")
    if not depth_scale > 0:
        raise ValueError(f"depth_scale must be > 0, got {depth_scale}")
    files_by_id = _frame_files(path)
    if not files_by_id:
        raise CaptureError(f"{path}: no frame-XXXXXX.{{color,depth,pose}} files (7-Scenes layout)")
    for frame_id, files in sorted(files_by_id.items()):
        for kind, suffix in _REQUIRED:
            if kind not in files:
                missing = path / f"frame-{frame_id:06d}.{suffix}"
                raise CaptureError(f"{missing}: missing (the frame's other files exist)")
    K, intrinsics_source = _intrinsics(path)
    first = files_by_id[min(files_by_id)]
    width, height = image_size(first["color"])

    frames: list[Frame] = []
    frame_ids: list[int] = []
    lost: list[int] = []
    for frame_id, files in sorted(files_by_id.items()):
        cam2world = read_pose_txt(files["pose"])
        if cam2world is None:
            lost.append(frame_id)
            continue
        camera = CameraFrame(
            camera=CAMERA_NAME,
            K=K.copy(),
            cam2world=cam2world,
            width=width,
            height=height,
            image=ArraySource(path=files["color"], loader=partial(read_image_uint8, files["color"])),
            depth=ArraySource(
                path=files["depth"], loader=partial(read_depth_png, files["depth"], scale=depth_scale)
            ),
        )
        frames.append(Frame(index=len(frames), cameras={CAMERA_NAME: camera}))
        frame_ids.append(frame_id)
    if lost:
        warnings.warn(
            f"{path}: skipped {len(lost)} frame(s) whose pose is inf/NaN (lost tracking): ids {lost[:10]}"
            + (" ..." if len(lost) > 10 else ""),
            stacklevel=2,
        )
    if not frames:
        raise CaptureError(f"{path}: every frame has an inf/NaN pose")
    return Capture(
        frames=frames,
        source_format="7scenes",
        source=str(path),
        world_frame="7-Scenes scene frame (KinectFusion world, metres)",
        metadata={"frame_ids": frame_ids, "depth_scale": float(depth_scale), "intrinsics": intrinsics_source},
    )


def sniff_7scenes(path: str | Path) -> bool:
    """True if ``path`` is a folder with at least one ``frame-*.pose.txt`` and one
    ``frame-*.depth.png`` (stops scanning as soon as both are seen)."""
    path = Path(path)
    if not path.is_dir():
        return False
    seen: set[str] = set()
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                match = _FRAME_FILE.fullmatch(entry.name)
                if match and match.group(2) in ("pose.txt", "depth.png"):
                    seen.add(match.group(2))
                    if len(seen) == 2:
                        return True
    except OSError:
        return False
    return False
