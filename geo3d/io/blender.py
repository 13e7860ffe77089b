"""Reader for NeRF / Blender ``transforms.json`` captures (also the nerfstudio / instant-ngp variant).

The file holds camera-to-world matrices in OpenGL axes (x right, y up, looking down -z) and either
a horizontal field of view ``camera_angle_x`` (principal point at the image centre) or explicit
``fl_x, fl_y, cx, cy`` in nerfstudio's continuous pixel coordinates (centre of the first pixel at
(0.5, 0.5)). Both are converted to geo3d's conventions: OpenCV axes, pixel centres at integers.
"""

from __future__ import annotations

import json
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from geo3d.errors import CalibrationError, CaptureError
from geo3d.geometry.conventions import (
    colmap_principal_point_to_opencv,
    intrinsics_from_fov,
    opengl_to_opencv_cam2world,
)
from geo3d.geometry.poses import check_intrinsics, check_pose
from geo3d.io.images import image_size, read_image_uint8
from geo3d.structures.capture import ArraySource, CameraFrame, Capture, Frame

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = ("", ".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".exr")
CAMERA_NAME = "camera"


def _transforms_files(path: Path, split: str) -> list[tuple[str, Path]]:
    if path.is_file():
        return [(split if split != "all" else "all", path)]
    if not path.is_dir():
        raise CaptureError(f"{path}: no such file or folder")
    if (path / "transforms.json").is_file() and split in ("all", "train") and not any(
        (path / f"transforms_{s}.json").is_file() for s in SPLITS
    ):
        return [("all", path / "transforms.json")]
    wanted = SPLITS if split == "all" else (split,)
    found = [(s, path / f"transforms_{s}.json") for s in wanted if (path / f"transforms_{s}.json").is_file()]
    if not found:
        names = ", ".join(f"transforms_{s}.json" for s in wanted)
        raise CaptureError(f"{path}: no {names} (or transforms.json) found")
    return found


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise CaptureError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise CaptureError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise CaptureError(f"{path}: expected a JSON object with a 'frames' list")
    return data


def _resolve_image(folder: Path, file_path: str) -> Path | None:
    base = folder / file_path
    for suffix in IMAGE_SUFFIXES:
        candidate = base.with_name(base.name + suffix) if suffix else base
        if candidate.is_file():
            return candidate
    return None


def _intrinsics(spec: dict[str, Any], width: int, height: int, what: str) -> np.ndarray:
    """K from a frame's (or the file's) keys; ``spec`` holds file-level keys overridden per frame."""
    try:
        if "fl_x" in spec:
            fx = float(spec["fl_x"])
            fy = float(spec.get("fl_y", fx))
            cx_c = float(spec.get("cx", width / 2.0))
            cy_c = float(spec.get("cy", height / 2.0))
            cx, cy = colmap_principal_point_to_opencv(cx_c, cy_c)
            K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        elif "camera_angle_x" in spec:
            fov_y = spec.get("camera_angle_y")
            K = intrinsics_from_fov(width, height, float(spec["camera_angle_x"]), None if fov_y is None else float(fov_y))
        else:
            raise CalibrationError(f"{what}: missing intrinsics: neither 'camera_angle_x' nor 'fl_x' is given")
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{what}: invalid intrinsics ({exc})") from None
    return check_intrinsics(K, what)


def _distortion(spec: dict[str, Any]) -> np.ndarray | None:
    coeffs = [float(spec.get(k, 0.0)) for k in ("k1", "k2", "p1", "p2", "k3")]
    return None if not any(coeffs) else np.array(coeffs)


def read_blender(path: str | Path, split: str = "train") -> Capture:
    """Read a NeRF/Blender capture.

    Args:
        path: a folder with ``transforms_{train,val,test}.json`` (or ``transforms.json``), or one
            such JSON file.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (every split present; the frame
            indices of each are in ``capture.metadata["splits"]``).

    Returns:
        A :class:`Capture` with one single-camera :class:`Frame` per image (camera ``"camera"``),
        images ``[H, W, 4]`` RGBA (Blender scenes; composite over a background yourself) or
        ``[H, W, 3]``. Frames whose image file is missing are skipped with a warning.

    Raises:
        CaptureError / CalibrationError naming the file and frame for unreadable JSON, missing
        intrinsics, a malformed ``transform_matrix`` or unreadable images.
    """
    path = Path(path)
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split must be one of {SPLITS + ('all',)}, got {split!r}")
    frames: list[Frame] = []
    splits: dict[str, list[int]] = {}
    for split_name, json_path in _transforms_files(path, split):
        data = _load_json(json_path)
        file_spec = {k: v for k, v in data.items() if k != "frames"}
        skipped = 0
        for i, entry in enumerate(data["frames"]):
            what = f"{json_path}: frame {i}"
            if not isinstance(entry, dict) or "file_path" not in entry or "transform_matrix" not in entry:
                raise CaptureError(f"{what}: needs 'file_path' and 'transform_matrix'")
            image_path = _resolve_image(json_path.parent, str(entry["file_path"]))
            if image_path is None:
                skipped += 1
                continue
            spec = {**file_spec, **entry}
            if "w" in spec and "h" in spec:
                width, height = int(spec["w"]), int(spec["h"])
            else:
                width, height = image_size(image_path)
            cam2world_gl = check_pose(entry["transform_matrix"], f"{what} transform_matrix")
            camera = CameraFrame(
                camera=CAMERA_NAME,
                K=_intrinsics(spec, width, height, what),
                cam2world=opengl_to_opencv_cam2world(cam2world_gl),
                width=width,
                height=height,
                image=ArraySource(path=image_path, loader=partial(read_image_uint8, image_path)),
                distortion=_distortion(spec),
            )
            splits.setdefault(split_name, []).append(len(frames))
            frames.append(Frame(index=len(frames), cameras={CAMERA_NAME: camera}))
        if skipped:
            warnings.warn(f"{json_path}: skipped {skipped} frame(s) whose image file is missing", stacklevel=2)
    if not frames:
        raise CaptureError(f"{path}: no frame with an existing image")
    return Capture(
        frames=frames,
        source_format="blender",
        source=str(path),
        world_frame="transforms.json world (Blender scene)",
        metadata={"splits": splits},
    )


def sniff_blender(path: str | Path) -> bool:
    """True if ``path`` looks like a NeRF/Blender capture (a transforms*.json file or folder)."""
    path = Path(path)
    if path.is_file():
        return path.suffix == ".json" and path.name.startswith("transforms")
    return path.is_dir() and any(
        (path / name).is_file() for name in ("transforms.json", *(f"transforms_{s}.json" for s in SPLITS))
    )
