"""Writing geo3d's capture format: frame by frame, atomically, resumable after a kill.

:class:`CaptureWriter` builds a capture in a staging folder ``<path>.partial`` beside the target.
Each :meth:`~CaptureWriter.write_frame` writes the frame's files, then its frame record
``_frames/<index>.json`` atomically, so a frame counts as done only once all its files are on disk.
:meth:`~CaptureWriter.finish` writes ``capture.json`` and renames the staging folder to the target.
A rerun with the same ``resume_key`` finds the staging folder and skips the frames already written
(:attr:`~CaptureWriter.completed`). :func:`write_capture` writes a whole in-memory capture with it.

The layout and the decisions behind it are in ``docs/capture_format.md``; the reader is
:func:`geo3d.io.geo3d_format.read_geo3d`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from geo3d.errors import CaptureError
from geo3d.io.geo3d_format import FORMAT_NAME, MANIFEST, NPZ_KEY
from geo3d.io.images import encode_png
from geo3d.structures.capture import Capture, Frame, SparsePoints
from geo3d.structures.occupancy import SemanticOccupancy
from geo3d.utils.atomic import atomic_write_text

STAGING_SUFFIX = ".partial"
PROGRESS = "_progress.json"
FRAMES_DIR = "_frames"
PROGRESS_FORMAT = FORMAT_NAME + STAGING_SUFFIX
_EXISTS = "{path} already exists (pass overwrite=True, --overwrite, to replace it)"
ZLIB_LEVEL = 6
"""Deflate level of ``.npz`` files, chosen by measurement on a synthetic nuScenes-like frame
(``docs/capture_format.md``): level 6 (zlib's default) makes the arrays 11 % smaller than level 1
for 25-45 ms more per frame; level 9 saves under 1 % more at about twice level 6's time."""


class CaptureExistsError(CaptureError, FileExistsError):
    """The target capture folder exists and ``overwrite`` was not given."""


def sensor_folder(name: str) -> str:
    """Folder name of a sensor: the name itself when it is made of ``[A-Za-z0-9._-]`` (and does not
    start with a dot); otherwise the name with other characters replaced by ``_`` plus ``-`` and 8
    hex digits of its SHA-1, so that the folder depends on the name alone (stable across frames and
    runs) and two names never share a folder."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if safe == name and name and not name.startswith("."):
        return name
    return f"{safe.lstrip('.') or 'sensor'}-{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"


def encode_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """Bytes of a compressed ``.npz`` (what ``np.savez_compressed`` writes, at :data:`ZLIB_LEVEL`).

    Members carry a fixed date (1980-01-01) instead of the current time, so the same arrays always
    give the same bytes (a synthetic dataset made twice from one seed is identical file for file).
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=ZLIB_LEVEL) as archive:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            level_slot = "compress_level" if hasattr(zipfile.ZipInfo, "compress_level") else "_compresslevel"
            setattr(info, level_slot, ZLIB_LEVEL)  # renamed in Python 3.13
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _write_file(root: Path, rel: str, data: bytes) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return rel


def _save_array(root: Path, stem: str, array: np.ndarray, compress: bool) -> str:
    """Write ``array`` as ``<stem>.npz`` (compressed, member :data:`NPZ_KEY`) or ``<stem>.npy``."""
    if compress:
        return _write_file(root, f"{stem}.npz", encode_npz({NPZ_KEY: array}))
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return _write_file(root, f"{stem}.npy", buffer.getvalue())


def _matrix(value: np.ndarray | None) -> list | None:
    return None if value is None else np.asarray(value, dtype=np.float64).tolist()


def _occupancy_entry(root: Path, occ: SemanticOccupancy, stem: str) -> dict[str, Any]:
    """Write ``occupancy/<stem>.npz`` (Occ3D key names; masks as uint8 0/1) and return its record."""
    arrays = {"semantics": occ.load_semantics()}
    for which in ("camera", "lidar"):
        mask = occ.load_mask(which)
        if mask is not None:
            arrays[f"mask_{which}"] = mask.astype(np.uint8)
    instances = occ.load_instances()
    if instances is not None:
        arrays["instances"] = instances
    return {
        "file": _write_file(root, f"occupancy/{stem}.npz", encode_npz(arrays)),
        "keys": list(arrays),
        "shape": list(occ.shape),  # type: ignore[arg-type]
        "origin": occ.origin.tolist(),
        "voxel_size": occ.voxel_size.tolist(),
        "frame": occ.frame,
        "free_label": occ.free_label,
    }


def _frame_entry(root: Path, frame: Frame, compress: bool) -> dict[str, Any]:
    """Write every file of ``frame`` under ``root`` and return its manifest record."""
    stem = f"{frame.index:06d}"
    cameras_json = {}
    for name, cam in frame.cameras.items():
        sub = f"{sensor_folder(name)}/{stem}"
        entry: dict[str, Any] = {
            "K": _matrix(cam.K),
            "cam2world": _matrix(cam.cam2world),
            "width": int(cam.width),
            "height": int(cam.height),
            "timestamp": cam.timestamp,
            "image": _write_file(root, f"images/{sub}.png", encode_png(cam.load_image_uint8())),
            "distortion": None if cam.distortion is None else np.asarray(cam.distortion, float).tolist(),
        }
        for key in ("depth", "semantic", "instance"):
            arr = getattr(cam, f"load_{key}")()
            entry[key] = None if arr is None else _save_array(root, f"{key}/{sub}", arr, compress)
        cameras_json[name] = entry
    lidar_json = {}
    for name, sweep in frame.lidar.items():
        sub = f"{sensor_folder(name)}/{stem}"
        entry = {
            "points": _save_array(root, f"lidar/{sub}", sweep.load_points(), compress),
            "columns": list(sweep.columns),
            "sensor2world": _matrix(sweep.sensor2world),
            "timestamp": sweep.timestamp,
        }
        for key in ("semantic", "instance"):
            labels = sweep.load_labels(key)
            entry[key] = None if labels is None else _save_array(root, f"lidar_{key}/{sub}", labels, compress)
        lidar_json[name] = entry
    return {
        "index": int(frame.index),
        "timestamp": frame.timestamp,
        "ego2world": _matrix(frame.ego2world),
        "cameras": cameras_json,
        "lidar": lidar_json,
        "occupancy": None if frame.occupancy is None else _occupancy_entry(root, frame.occupancy, stem),
    }


def _to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, indent=1, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CaptureError(f"{what}: holds values that cannot be stored as JSON ({exc})") from None


def _differences(stored: dict, wanted: dict) -> list[str]:
    """Names of the settings that differ (a nested resume key is compared by its top-level keys)."""
    out = []
    for key in ("compress", "resume_key"):
        a, b = stored.get(key), wanted[key]
        if a == b:
            continue
        if key == "resume_key" and isinstance(a, dict) and isinstance(b, dict):
            out += [f"resume_key[{k!r}]" for k in sorted(set(a) | set(b), key=str) if a.get(k) != b.get(k)]
        else:
            out.append(key)
    return out


class CaptureWriter:
    """Write a capture frame by frame into ``<path>.partial``, then move it to ``path`` atomically.

    Args:
        path: the capture folder to create.
        overwrite: replace an existing ``path`` at :meth:`finish`, and discard a staging folder that
            belongs to another job (different ``resume_key`` or ``compress``) instead of failing.
        compress: write depth, semantic, instance, LiDAR and points3d arrays as compressed ``.npz``
            (format version 2) instead of ``.npy`` (version 1). Occupancy is always ``.npz``.
        resume_key: JSON-serialisable description of the job (e.g. generator settings). A staging
            folder left by an interrupted writer with the same key (and ``compress``) is resumed:
            :attr:`completed` lists its finished frames. None makes the write non-resumable: a
            staging folder left by another non-resumable write is discarded.

    Raises:
        CaptureExistsError: ``path`` exists and ``overwrite`` is False (before anything is written).
        CaptureError: the staging folder belongs to another job (the message says what differs)
            or is not a geo3d staging folder, and ``overwrite`` is False.

    Use it as a context manager: leaving the block without :meth:`finish` (or by an exception)
    keeps a resumable staging folder for the next run and deletes a non-resumable one. Only one
    writer may use a given ``path`` at a time. Files are safe against the process being killed; the
    frame records are fsynced, the data files are not (a power cut may lose recent frames' data).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        overwrite: bool = False,
        compress: bool = False,
        resume_key: dict | None = None,
    ) -> None:
        self.path = Path(path)
        self.staging = self.path.with_name(self.path.name + STAGING_SUFFIX)
        self.overwrite = overwrite
        self.compress = bool(compress)
        if resume_key is not None and not isinstance(resume_key, dict):
            kind = type(resume_key).__name__
            raise CaptureError(f"{self.staging}: resume_key must be a dict or None, not {kind}")
        # keys are compared as they read back from JSON (tuples become lists, ...)
        key_text = _to_json(resume_key, f"{self.staging} resume_key")
        self.resume_key: dict | None = json.loads(key_text)
        self._done = False
        if self.path.exists() and not overwrite:
            raise CaptureExistsError(_EXISTS.format(path=self.path))
        self.completed: set[int] = self._open_staging()

    # -- staging folder -----------------------------------------------------------------------------

    def _open_staging(self) -> set[int]:
        """Resume the staging folder, or (re)create it; returns the indices of the finished frames."""
        settings = {"format": PROGRESS_FORMAT, "resume_key": self.resume_key, "compress": self.compress}
        if self.staging.exists():
            stored = self._read_progress()
            differences = None if stored is None else _differences(stored, settings)
            if self.resume_key is not None and differences == []:
                return {int(p.stem) for p in (self.staging / FRAMES_DIR).glob("*.json") if p.stem.isdigit()}
            stale = stored is not None and stored.get("resume_key") is None  # left by a non-resumable write
            if not (self.overwrite or stale):
                if stored is None:
                    problem = f"is not a geo3d staging folder (no readable {PROGRESS})"
                elif self.resume_key is None:
                    problem = "holds a resumable unfinished capture but no resume_key was given"
                else:
                    problem = f"holds an unfinished capture of another job ({', '.join(differences)} differ)"
                raise CaptureError(
                    f"{self.staging} {problem}; pass overwrite=True (--overwrite) to discard it and start "
                    f"again, or rerun with the same settings to resume"
                )
            shutil.rmtree(self.staging) if self.staging.is_dir() else self.staging.unlink()
        self._create(settings)
        return set()

    def _read_progress(self) -> dict | None:
        try:
            stored = json.loads((self.staging / PROGRESS).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return stored if isinstance(stored, dict) and stored.get("format") == PROGRESS_FORMAT else None

    def _create(self, settings: dict) -> None:
        """Create the staging folder with its progress file in one rename (so it is never half made)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.staging.name}.", suffix=".tmp", dir=self.path.parent))
        try:
            (tmp / FRAMES_DIR).mkdir()
            atomic_write_text(tmp / PROGRESS, _to_json(settings, str(self.staging / PROGRESS)))
            os.rename(tmp, self.staging)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CaptureError(f"{self.staging}: cannot create the staging folder ({exc})") from None

    def _record(self, index: int) -> Path:
        return self.staging / FRAMES_DIR / f"{index:06d}.json"

    def _check_open(self) -> None:
        if self._done:
            raise CaptureError(f"{self.staging}: this writer has already finished or been aborted")

    # -- public API ---------------------------------------------------------------------------------

    def write_frame(self, frame: Frame) -> None:
        """Write ``frame``'s files, then its record; the frame is in :attr:`completed` afterwards.

        Files are named by ``frame.index`` (an int >= 0); writing an index again replaces it.

        Raises:
            CaptureError: a bad index, an array that does not fit its calibration, or a value that
                cannot be stored as JSON (the frame then stays incomplete).
        """
        self._check_open()
        index = frame.index
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or index < 0:
            raise CaptureError(f"{self.staging}: frame index must be an integer >= 0, got {index!r}")
        index = int(index)
        record = self._record(index)
        if index in self.completed:  # a rewrite: the frame is incomplete until its new record lands
            record.unlink(missing_ok=True)
            self.completed.discard(index)
        text = _to_json(_frame_entry(self.staging, frame, self.compress), f"{self.staging}: frame {index}")
        atomic_write_text(record, text)
        self.completed.add(index)

    def finish(
        self,
        *,
        source_format: str,
        source: str | None = None,
        world_frame: str = "world",
        metadata: dict[str, Any] | None = None,
        points3d: SparsePoints | None = None,
    ) -> Path:
        """Write ``capture.json`` (frames sorted by index) and move the capture to ``path``.

        The arguments are the :class:`~geo3d.structures.Capture` fields of the same names.

        Raises:
            CaptureExistsError: ``path`` appeared meanwhile and ``overwrite`` is False (the staging
                folder is kept, so a rerun with ``overwrite=True`` resumes).
            CaptureError: a frame record is unreadable, or ``metadata`` is not JSON-serialisable.
        """
        self._check_open()
        frames = []
        for record in sorted((self.staging / FRAMES_DIR).glob("*.json")):
            try:
                frames.append(json.loads(record.read_text()))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                problem = f"corrupt frame record ({exc}); delete it to write the frame again"
                raise CaptureError(f"{record}: {problem}") from None
        frames.sort(key=lambda entry: entry["index"])
        points_json = None
        if points3d is not None:
            points_json = {}
            for key in ("xyz", "rgb", "error"):
                value = getattr(points3d, key)
                stem = f"points3d/{key}"
                points_json[key] = None if value is None else _save_array(self.staging, stem, value, self.compress)
        manifest = {
            "format": FORMAT_NAME,
            "version": 2 if self.compress else 1,  # 1 when nothing needs version 2: older geo3d reads it
            "source_format": source_format,
            "source": source,
            "world_frame": world_frame,
            "metadata": metadata or {},
            "points3d": points_json,
            "frames": frames,
        }
        text = _to_json(manifest, str(self.path))
        if self.path.exists() and not self.overwrite:
            raise CaptureExistsError(_EXISTS.format(path=self.path))
        atomic_write_text(self.staging / MANIFEST, text)
        # bookkeeping goes before the rename: a kill in between leaves a staging folder that resumes
        shutil.rmtree(self.staging / FRAMES_DIR)
        (self.staging / PROGRESS).unlink()
        old = None
        if self.path.exists() or self.path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".old", dir=self.path.parent))
            os.rmdir(old)
            os.replace(self.path, old)
        os.replace(self.staging, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        self._done = True
        return self.path

    def abort(self) -> None:
        """Delete the staging folder (everything written so far); the writer cannot be used after."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self._done = True

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._done and self.resume_key is None:
            self.abort()

    def __repr__(self) -> str:
        done = len(self.completed)
        return f"CaptureWriter({str(self.path)!r}, {done} frames written, compress={self.compress})"


def write_capture(
    capture: Capture, path: str | os.PathLike, overwrite: bool = False, *, compress: bool = False
) -> Path:
    """Write ``capture`` to the folder ``path`` in geo3d's format; returns the path.

    Pixels and points of file-backed sources are decoded and re-encoded losslessly (uint8 PNG for
    images, ``.npy`` or with ``compress=True`` deflated ``.npz`` for everything else), so reading
    the result gives back every value and dtype exactly. The folder appears only once complete
    (built in ``<path>.partial``); with ``overwrite=False`` an existing ``path`` is an error.

    Raises:
        CaptureExistsError: ``path`` exists and ``overwrite`` is False.
        CaptureError: two frames share an index, or the capture holds data that cannot be stored.
    """
    indices = [frame.index for frame in capture.frames]
    if len(set(indices)) != len(indices):
        raise CaptureError(f"{path}: frame indices must be unique, got {indices}")
    with CaptureWriter(path, overwrite=overwrite, compress=compress) as writer:
        for frame in capture.frames:
            writer.write_frame(frame)
        return writer.finish(
            source_format=capture.source_format,
            source=capture.source,
            world_frame=capture.world_frame,
            metadata=capture.metadata,
            points3d=capture.points3d,
        )
