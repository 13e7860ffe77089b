"""geo3d's own on-disk capture format (a folder with a JSON manifest), see ``docs/capture_format.md``.

Layout::

    capture.json                       manifest: format name and version, calibration, frame list
    images/<camera>/<frame>.png        uint8 RGB or RGBA, lossless
    depth/<camera>/<frame>.npy         float32 [H, W] metres, 0 = invalid
    semantic|instance/<camera>/<frame>.npy   integer [H, W]
    lidar/<sensor>/<frame>.npy         float32 [N, C] in the sensor frame
    lidar_semantic|lidar_instance/<sensor>/<frame>.npy   integer [N]
    points3d/{xyz,rgb,error}.npy       optional sparse world points

Matrices and timestamps are stored as JSON numbers, which Python writes with the shortest repr that
reads back to the same float64: a round trip is exact. Writes are atomic (the folder is built under
a temporary name and renamed into place).
"""

from __future__ import annotations

import io
import json
import re
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from geo3d.errors import CaptureError
from geo3d.geometry.poses import check_intrinsics, check_pose
from geo3d.io.images import encode_png, read_image_uint8
from geo3d.structures.capture import ArraySource, CameraFrame, Capture, Frame, LidarSweep, SparsePoints
from geo3d.utils.atomic import atomic_directory

FORMAT_NAME = "geo3d-capture"
FORMAT_VERSION = 1
MANIFEST = "capture.json"


def _safe_names(names: list[str]) -> dict[str, str]:
    """Folder name per sensor name: only ``[A-Za-z0-9._-]``, unique."""
    out: dict[str, str] = {}
    for i, name in enumerate(names):
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name) or f"sensor{i}"
        if safe in out.values() or safe.startswith("."):
            safe = f"{i:02d}_{safe.lstrip('.')}"
        out[name] = safe
    return out


def _save_npy(root: Path, rel: str, array: np.ndarray) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    path.write_bytes(buffer.getvalue())
    return rel


def _save_png(root: Path, rel: str, pixels: np.ndarray) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(pixels))
    return rel


def _matrix(value: np.ndarray | None) -> list | None:
    return None if value is None else np.asarray(value, dtype=np.float64).tolist()


def write_capture(capture: Capture, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``capture`` to the folder ``path`` in geo3d's format; returns the path.

    Pixels and points of file-backed sources are decoded and re-encoded losslessly (uint8 PNG for
    images, ``.npy`` for everything else), so reading the result gives back every value exactly.
    The folder appears only once complete; with ``overwrite=False`` an existing ``path`` is an error.
    """
    path = Path(path)
    cam_dirs = _safe_names(capture.camera_names)
    lidar_dirs = _safe_names(capture.lidar_names)
    with atomic_directory(path, overwrite=overwrite) as root:
        frames_json = []
        for frame in capture.frames:
            stem = f"{frame.index:06d}"
            cameras_json = {}
            for name, cam in frame.cameras.items():
                sub = f"{cam_dirs[name]}/{stem}"
                entry: dict[str, Any] = {
                    "K": _matrix(cam.K),
                    "cam2world": _matrix(cam.cam2world),
                    "width": int(cam.width),
                    "height": int(cam.height),
                    "timestamp": cam.timestamp,
                    "image": _save_png(root, f"images/{sub}.png", cam.load_image_uint8()),
                    "distortion": None if cam.distortion is None else np.asarray(cam.distortion, float).tolist(),
                }
                for key, loader in (
                    ("depth", cam.load_depth),
                    ("semantic", cam.load_semantic),
                    ("instance", cam.load_instance),
                ):
                    arr = loader()
                    entry[key] = None if arr is None else _save_npy(root, f"{key}/{sub}.npy", arr)
                cameras_json[name] = entry
            lidar_json = {}
            for name, sweep in frame.lidar.items():
                sub = f"{lidar_dirs[name]}/{stem}"
                entry = {
                    "points": _save_npy(root, f"lidar/{sub}.npy", sweep.load_points()),
                    "columns": list(sweep.columns),
                    "sensor2world": _matrix(sweep.sensor2world),
                    "timestamp": sweep.timestamp,
                }
                for key in ("semantic", "instance"):
                    labels = sweep.load_labels(key)
                    entry[key] = None if labels is None else _save_npy(root, f"lidar_{key}/{sub}.npy", labels)
                lidar_json[name] = entry
            frames_json.append(
                {
                    "index": frame.index,
                    "timestamp": frame.timestamp,
                    "ego2world": _matrix(frame.ego2world),
                    "cameras": cameras_json,
                    "lidar": lidar_json,
                }
            )
        points_json = None
        if capture.points3d is not None:
            pts = capture.points3d
            points_json = {
                key: None if value is None else _save_npy(root, f"points3d/{key}.npy", value)
                for key, value in (("xyz", pts.xyz), ("rgb", pts.rgb), ("error", pts.error))
            }
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "source_format": capture.source_format,
            "source": capture.source,
            "world_frame": capture.world_frame,
            "metadata": capture.metadata,
            "points3d": points_json,
            "frames": frames_json,
        }
        try:
            text = json.dumps(manifest, indent=1, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise CaptureError(f"{path}: capture holds values that cannot be stored as JSON ({exc})") from None
        (root / MANIFEST).write_text(text)
    return path


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CaptureError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError) as exc:
        raise CaptureError(f"{path}: corrupt or truncated .npy file ({exc})") from None


def _get(obj: dict, key: str, what: str, kinds: tuple[type, ...] | type | None = None):
    if not isinstance(obj, dict) or key not in obj:
        raise CaptureError(f"{what}: missing key '{key}'")
    value = obj[key]
    if kinds is not None and not isinstance(value, kinds):
        raise CaptureError(f"{what}: '{key}' has the wrong type ({type(value).__name__})")
    return value


def _file(root: Path, rel: str | None, what: str) -> Path | None:
    if rel is None:
        return None
    if not isinstance(rel, str) or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise CaptureError(f"{what}: invalid relative path {rel!r}")
    path = root / rel
    if not path.is_file():
        raise CaptureError(f"{what}: file not found: {path}")
    return path


def _npy_source(root: Path, rel: str | None, what: str) -> ArraySource | None:
    path = _file(root, rel, what)
    return None if path is None else ArraySource(path=path, loader=partial(_load_npy, path))


def _optional_float(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise CaptureError(f"{what}: timestamp must be a number or null, got {value!r}")
    return float(value)


def read_geo3d(path: str | Path) -> Capture:
    """Read a capture written by :func:`write_capture`.

    Raises:
        CaptureError: the folder or manifest is missing or corrupt, the format version is not one
            this geo3d reads (older or newer), or a referenced file is missing.
    """
    root = Path(path)
    manifest_path = root / MANIFEST if root.is_dir() else root
    root = manifest_path.parent
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise CaptureError(f"{manifest_path}: not found (not a geo3d capture folder)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CaptureError(f"{manifest_path}: corrupt manifest ({exc})") from None
    what = str(manifest_path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise CaptureError(f"{what}: not a geo3d capture manifest (format != {FORMAT_NAME!r})")
    version = manifest.get("version")
    if version != FORMAT_VERSION:
        relation = "newer" if isinstance(version, int) and version > FORMAT_VERSION else "different"
        raise CaptureError(
            f"{what}: capture format version {version!r} was written by a {relation} geo3d; "
            f"this geo3d reads version {FORMAT_VERSION}"
        )
    frames = []
    for i, fj in enumerate(_get(manifest, "frames", what, list)):
        fwhat = f"{what}: frame {i}"
        cameras = {}
        for name, cj in _get(fj, "cameras", fwhat, dict).items():
            cwhat = f"{fwhat} camera {name!r}"
            image_path = _file(root, _get(cj, "image", cwhat, str), cwhat)
            distortion = cj.get("distortion")
            cameras[name] = CameraFrame(
                camera=name,
                K=check_intrinsics(_get(cj, "K", cwhat), f"{cwhat} K"),
                cam2world=check_pose(_get(cj, "cam2world", cwhat), f"{cwhat} cam2world"),
                width=int(_get(cj, "width", cwhat, int)),
                height=int(_get(cj, "height", cwhat, int)),
                timestamp=_optional_float(cj.get("timestamp"), cwhat),
                image=ArraySource(path=image_path, loader=partial(read_image_uint8, image_path)),
                depth=_npy_source(root, cj.get("depth"), cwhat),
                semantic=_npy_source(root, cj.get("semantic"), cwhat),
                instance=_npy_source(root, cj.get("instance"), cwhat),
                distortion=None if distortion is None else np.asarray(distortion, dtype=np.float64),
            )
        lidar = {}
        for name, lj in _get(fj, "lidar", fwhat, dict).items():
            lwhat = f"{fwhat} lidar {name!r}"
            lidar[name] = LidarSweep(
                sensor=name,
                points=_npy_source(root, _get(lj, "points", lwhat, str), lwhat),  # type: ignore[arg-type]
                columns=tuple(_get(lj, "columns", lwhat, list)),
                sensor2world=check_pose(_get(lj, "sensor2world", lwhat), f"{lwhat} sensor2world"),
                timestamp=_optional_float(lj.get("timestamp"), lwhat),
                semantic=_npy_source(root, lj.get("semantic"), lwhat),
                instance=_npy_source(root, lj.get("instance"), lwhat),
            )
        ego = fj.get("ego2world")
        frames.append(
            Frame(
                index=int(_get(fj, "index", fwhat, int)),
                cameras=cameras,
                lidar=lidar,
                timestamp=_optional_float(fj.get("timestamp"), fwhat),
                ego2world=None if ego is None else check_pose(ego, f"{fwhat} ego2world"),
            )
        )
    points3d = None
    pj = manifest.get("points3d")
    if pj is not None:
        pwhat = f"{what}: points3d"
        sources = {key: _npy_source(root, pj.get(key), pwhat) for key in ("xyz", "rgb", "error")}
        if sources["xyz"] is None:
            raise CaptureError(f"{pwhat}: missing 'xyz'")
        points3d = SparsePoints(**{k: None if s is None else s.load() for k, s in sources.items()})
    return Capture(
        frames=frames,
        source_format=manifest.get("source_format", "geo3d"),
        source=manifest.get("source"),
        world_frame=manifest.get("world_frame", "world"),
        points3d=points3d,
        metadata=manifest.get("metadata") or {},
    )


def sniff_geo3d(path: str | Path) -> bool:
    """True if ``path`` is a geo3d capture folder (or its manifest)."""
    path = Path(path)
    manifest = path / MANIFEST if path.is_dir() else path
    if manifest.name != MANIFEST or not manifest.is_file():
        return False
    try:
        with manifest.open("rb") as handle:
            return FORMAT_NAME.encode() in handle.read(256)
    except OSError:
        return False
