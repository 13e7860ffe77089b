"""geo3d's own on-disk capture format (a folder with a JSON manifest), see ``docs/capture_format.md``.

Layout (``<ext>`` is ``.npy``, or ``.npz`` in a compressed capture)::

    capture.json                       manifest: format name and version, calibration, frame list
    images/<camera>/<frame>.png        uint8 RGB or RGBA, lossless
    depth/<camera>/<frame><ext>        float32 [H, W] metres, 0 = invalid
    semantic|instance/<camera>/<frame><ext>   integer [H, W]
    lidar/<sensor>/<frame><ext>        float32 [N, C] in the sensor frame
    lidar_semantic|lidar_instance/<sensor>/<frame><ext>   integer [N]
    occupancy/<frame>.npz              Occ3D-style semantics / mask_camera / mask_lidar (+ instances)
    points3d/{xyz,rgb,error}<ext>      optional sparse world points

Matrices and timestamps are stored as JSON numbers, which Python writes with the shortest repr that
reads back to the same float64: a round trip is exact. This module holds the reader; the writer
(:class:`CaptureWriter`, :func:`write_capture`: atomic, incremental and resumable) is in
:mod:`geo3d.io.capture_writer`.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from geo3d.errors import CaptureError
from geo3d.geometry.poses import check_intrinsics, check_pose
from geo3d.io.images import read_image_uint8
from geo3d.structures.capture import ArraySource, CameraFrame, Capture, Frame, LidarSweep, SparsePoints
from geo3d.structures.occupancy import SemanticOccupancy

FORMAT_NAME = "geo3d-capture"
FORMAT_VERSION = 2
"""Newest version this geo3d reads and writes. Version 2 = version 1 + ``.npz`` array files; a
capture without compressed arrays is still written as version 1 (readable by older geo3d)."""
READ_VERSIONS = (1, 2)
MANIFEST = "capture.json"
NPZ_KEY = "data"
"""Name of the single array inside a compressed (``.npz``) array file: ``np.load(f)["data"]``."""
OCCUPANCY_KEYS = ("semantics", "mask_camera", "mask_lidar", "instances")
"""Array names inside ``occupancy/<frame>.npz`` (Occ3D's ``labels.npz`` names, plus ``instances``)."""


def _load_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CaptureError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError) as exc:
        raise CaptureError(f"{path}: corrupt or truncated .npy file ({exc})") from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise CaptureError(f"{path}: expected a single .npy array, found an .npz archive")
    return arr


def load_npz_member(path: Path, key: str) -> np.ndarray:
    """Array ``key`` of the ``.npz`` file ``path`` (only that member is decompressed).

    Raises:
        CaptureError: naming the file, when it is missing, not an ``.npz``, truncated or corrupt,
            or has no member ``key``.
    """
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CaptureError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise CaptureError(f"{path}: corrupt or truncated .npz file ({exc})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise CaptureError(f"{path}: expected an .npz archive, found a single .npy array")
    with npz:
        if key not in npz.files:
            raise CaptureError(f"{path}: no array {key!r} in the .npz file (it holds {npz.files})")
        try:
            return npz[key]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as exc:
            raise CaptureError(f"{path}: corrupt or truncated .npz file, array {key!r} ({exc})") from None


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


def _array_source(root: Path, rel: str | None, what: str) -> ArraySource | None:
    """A lazy source for an array file: ``.npy``, or ``.npz`` holding the array :data:`NPZ_KEY`."""
    path = _file(root, rel, what)
    if path is None:
        return None
    if path.suffix == ".npy":
        return ArraySource(path=path, loader=partial(_load_npy, path))
    if path.suffix == ".npz":
        return ArraySource(path=path, loader=partial(load_npz_member, path, NPZ_KEY))
    raise CaptureError(f"{what}: {path}: unsupported array file type (expected .npy or .npz)")


def _optional_float(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise CaptureError(f"{what}: timestamp must be a number or null, got {value!r}")
    return float(value)


def _read_occupancy(root: Path, oj: dict, what: str) -> SemanticOccupancy:
    path = _file(root, _get(oj, "file", what, str), what)
    keys = _get(oj, "keys", what, list)
    if "semantics" not in keys or not set(keys) <= set(OCCUPANCY_KEYS):
        allowed = list(OCCUPANCY_KEYS)
        raise CaptureError(f"{what}: 'keys' must include 'semantics' and only name {allowed}, got {keys}")
    sources = {k: ArraySource(path=path, loader=partial(load_npz_member, path, k)) if k in keys else None
               for k in OCCUPANCY_KEYS}  # fmt: skip
    shape = _get(oj, "shape", what, list)
    if len(shape) != 3 or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape):
        raise CaptureError(f"{what}: 'shape' must be 3 integers [X, Y, Z], got {shape}")
    try:
        return SemanticOccupancy(
            semantics=sources["semantics"],  # type: ignore[arg-type]
            origin=np.asarray(_get(oj, "origin", what, list), dtype=np.float64),
            voxel_size=np.asarray(_get(oj, "voxel_size", what, list), dtype=np.float64),
            frame=_get(oj, "frame", what, str),
            mask_camera=sources["mask_camera"],
            mask_lidar=sources["mask_lidar"],
            instances=sources["instances"],
            shape=tuple(shape),  # type: ignore[arg-type]
            free_label=int(oj.get("free_label", 0)),
        )
    except (ValueError, TypeError) as exc:
        raise CaptureError(f"{what}: {exc}") from None


def read_geo3d(path: str | Path) -> Capture:
    """Read a capture written by :func:`write_capture` / :class:`CaptureWriter` (versions 1 and 2).

    Only the manifest is read: images, arrays and occupancy grids are decoded on demand, and a
    truncated or corrupt file raises :class:`CaptureError` naming it when it is loaded.

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
    if version not in READ_VERSIONS or isinstance(version, bool):
        relation = "newer" if isinstance(version, int) and version > FORMAT_VERSION else "different"
        raise CaptureError(
            f"{what}: capture format version {version!r} was written by a {relation} geo3d; "
            f"this geo3d reads versions {', '.join(map(str, READ_VERSIONS))}"
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
                depth=_array_source(root, cj.get("depth"), cwhat),
                semantic=_array_source(root, cj.get("semantic"), cwhat),
                instance=_array_source(root, cj.get("instance"), cwhat),
                distortion=None if distortion is None else np.asarray(distortion, dtype=np.float64),
            )
        lidar = {}
        for name, lj in _get(fj, "lidar", fwhat, dict).items():
            lwhat = f"{fwhat} lidar {name!r}"
            lidar[name] = LidarSweep(
                sensor=name,
                points=_array_source(root, _get(lj, "points", lwhat, str), lwhat),  # type: ignore[arg-type]
                columns=tuple(_get(lj, "columns", lwhat, list)),
                sensor2world=check_pose(_get(lj, "sensor2world", lwhat), f"{lwhat} sensor2world"),
                timestamp=_optional_float(lj.get("timestamp"), lwhat),
                semantic=_array_source(root, lj.get("semantic"), lwhat),
                instance=_array_source(root, lj.get("instance"), lwhat),
            )
        ego = fj.get("ego2world")
        oj = fj.get("occupancy")  # absent in captures written before occupancy existed
        if oj is not None and not isinstance(oj, dict):
            raise CaptureError(f"{fwhat}: 'occupancy' must be an object or null")
        frames.append(
            Frame(
                index=int(_get(fj, "index", fwhat, int)),
                cameras=cameras,
                lidar=lidar,
                timestamp=_optional_float(fj.get("timestamp"), fwhat),
                ego2world=None if ego is None else check_pose(ego, f"{fwhat} ego2world"),
                occupancy=None if oj is None else _read_occupancy(root, oj, f"{fwhat} occupancy"),
            )
        )
    points3d = None
    pj = manifest.get("points3d")
    if pj is not None:
        pwhat = f"{what}: points3d"
        sources = {key: _array_source(root, pj.get(key), pwhat) for key in ("xyz", "rgb", "error")}
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


__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST",
    "NPZ_KEY",
    "OCCUPANCY_KEYS",
    "READ_VERSIONS",
    "load_npz_member",
    "read_geo3d",
    "sniff_geo3d",
]
