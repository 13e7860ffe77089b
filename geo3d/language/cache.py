"""On-disk cache of dense teacher features, one file per capture frame and camera.

Real teachers cost a ViT forward pass per image, and distillation revisits every frame each epoch,
so features are computed once and read back. Layout under ``root``::

    <root>/<sha256(teacher.identity)[:16]>/manifest.json             {"identity", "space", "dim", "format"}
    <root>/<...>/<capture id>/frame_<index:06d>/<camera>.npy         [h, w, D] float16 features
    <root>/<...>/<capture id>/frame_<index:06d>/<camera>.json        stride, image size, shape, sha256

The key is the teacher's :attr:`~geo3d.language.teachers.DenseTeacher.identity` (type, checkpoint,
config hash, resolution, degradation parameters), so two teachers never share entries. An entry is
valid when its JSON sidecar (written last: it marks the entry complete) and the ``.npy`` agree
(shape, dtype, checksum) and the folder's manifest holds the same identity; otherwise, e.g. after an
interrupted write, a truncated or corrupt file, or a manifest of another teacher, the entry is
recomputed and rewritten with a warning, never an exception. Every write is atomic
(:mod:`geo3d.utils.atomic`).

Features are stored in float16 and renormalised to unit length when read (float16 keeps ~3 decimal
digits: cosine similarities change by < 1e-3). A miss returns the same float16-rounded values a later
hit reads, so results never depend on whether the cache was warm.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from geo3d.language.teachers import DenseFeatures, DenseTeacher, TeacherError
from geo3d.utils.atomic import atomic_write_bytes, atomic_write_text

CACHE_FORMAT = 1
"""Version of the on-disk layout; entries of another version are recomputed."""

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _safe_name(value: str, what: str) -> str:
    """A file-system-safe folder / file name for ``value``: itself when it is safe, otherwise its safe
    characters plus a hash of the original (so distinct ids never collide)."""
    if not isinstance(value, str) or not value.strip():
        raise TeacherError(f"{what} must be a non-empty string, got {value!r}")
    if _SAFE_NAME.match(value):
        return value
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", value).strip("._")[:60] or "id"
    return f"{cleaned}-{hashlib.sha256(value.encode()).hexdigest()[:10]}"


class FeatureCache:
    """Cache of dense teacher features per capture, frame and camera (module docstring: layout).

    Args:
        root: cache folder (created on first write).

    Attributes:
        hits: entries read back from disk.
        misses: entries computed (absent, invalid or of another identity).
        invalid: entries found on disk but unusable (corrupt, truncated, mismatched), a subset of misses.
    """

    def __init__(self, root: str | Path) -> None:
        if root is None or (isinstance(root, str) and not root.strip()):
            raise TeacherError(f"root must be a folder path, got {root!r}")
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise TeacherError(f"root {self.root} exists and is not a folder")
        self.hits = 0
        self.misses = 0
        self.invalid = 0
        self._checked_manifests: dict[Path, bool] = {}

    def teacher_dir(self, teacher: DenseTeacher) -> Path:
        """``root / sha256(teacher.identity)[:16]``: the folder of one teacher's entries."""
        identity = _identity_of(teacher)
        return self.root / hashlib.sha256(identity.encode()).hexdigest()[:16]

    def entry_path(self, capture_id: str, frame_index: int, camera_name: str, teacher: DenseTeacher) -> Path:
        """Path of the ``.npy`` features of one entry (its sidecar has the suffix ``.json``)."""
        if isinstance(frame_index, bool) or not isinstance(frame_index, (int, np.integer)) or frame_index < 0:
            raise TeacherError(f"frame_index must be a non-negative int, got {frame_index!r}")
        folder = self.teacher_dir(teacher) / _safe_name(capture_id, "capture_id") / f"frame_{int(frame_index):06d}"
        return folder / f"{_safe_name(camera_name, 'camera_name')}.npy"

    def get_or_compute(
        self,
        capture_id: str,
        frame_index: int,
        camera_name: str,
        teacher: DenseTeacher,
        compute: Callable[[], DenseFeatures],
    ) -> DenseFeatures:
        """Features of one camera image: read from the cache, or computed, stored and returned.

        Args:
            capture_id: identifies the capture (any non-empty string; unsafe characters are replaced
                in the folder name, with a hash keeping ids apart).
            frame_index: frame number in the capture (>= 0).
            camera_name: sensor name, e.g. ``"CAM_FRONT"``.
            teacher: the teacher whose :attr:`identity` keys the entry.
            compute: called without arguments on a miss; returns the teacher's :class:`DenseFeatures`
                for this one image (``features [1, h, w, D]``), e.g. ``lambda: teacher(image[None])``.

        Returns:
            :class:`DenseFeatures` with ``features [1, h, w, D]`` float32 unit rows (float16-rounded).
        """
        path = self.entry_path(capture_id, frame_index, camera_name, teacher)
        manifest_ok = self._manifest_ok(teacher)
        if manifest_ok:
            cached = self._read(path, teacher)
            if cached is not None:
                self.hits += 1
                return cached
        self.misses += 1
        result = compute()
        features, stride, image_size = self._check_computed(result, teacher)
        if not manifest_ok:
            self._write_manifest(teacher)
        return self._write(path, features, stride, image_size)

    def _manifest_ok(self, teacher: DenseTeacher) -> bool:
        """True when the teacher folder's manifest exists and holds this identity; warns (once per
        folder) when a manifest of another identity, or a corrupt one, is found."""
        folder = self.teacher_dir(teacher)
        if self._checked_manifests.get(folder):
            return True
        path = folder / "manifest.json"
        if not path.is_file():
            return False
        try:
            manifest = json.loads(path.read_text())
            ok = manifest.get("identity") == teacher.identity and manifest.get("format") == CACHE_FORMAT
        except (OSError, ValueError, AttributeError):
            ok = False
        if not ok:
            warnings.warn(
                f"feature cache {path}: manifest is corrupt or of another teacher; recomputing its entries",
                stacklevel=3,
            )
            self.invalid += 1
        self._checked_manifests[folder] = ok
        return ok

    def _write_manifest(self, teacher: DenseTeacher) -> None:
        folder = self.teacher_dir(teacher)
        manifest = {
            "identity": teacher.identity, "space": teacher.space, "dim": int(teacher.dim), "format": CACHE_FORMAT,
        }  # fmt: skip
        atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=1) + "\n")
        self._checked_manifests[folder] = True

    def _read(self, path: Path, teacher: DenseTeacher) -> DenseFeatures | None:
        sidecar = path.with_suffix(".json")
        if not sidecar.is_file() and not path.is_file():
            return None  # a plain miss
        try:
            meta = json.loads(sidecar.read_text())
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != meta["sha256"]:
                raise ValueError("checksum mismatch (truncated or modified file)")
            features = np.load(io.BytesIO(data), allow_pickle=False)
            shape = tuple(int(s) for s in meta["shape"])
            if features.dtype != np.float16 or features.shape != shape or shape[-1] != teacher.dim:
                raise ValueError(
                    f"expected float16 {shape} with D = {teacher.dim}, found {features.dtype} {features.shape}"
                )
            stride = (float(meta["stride"][0]), float(meta["stride"][1]))
            image_size = (int(meta["image_size"][0]), int(meta["image_size"][1]))
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            warnings.warn(f"feature cache entry {path} is unusable ({exc}); recomputing it", stacklevel=4)
            self.invalid += 1
            return None
        return _as_dense(features, stride, image_size)

    def _check_computed(self, result, teacher: DenseTeacher) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
        if not isinstance(result, DenseFeatures):
            raise TeacherError(f"compute must return DenseFeatures, got {type(result).__name__}")
        features = result.features
        if features.ndim == 4 and features.shape[0] == 1:
            features = features[0]
        if features.ndim != 3 or features.shape[-1] != teacher.dim or 0 in features.shape:
            raise TeacherError(
                f"compute must return features [1, h, w, {teacher.dim}] for one camera, "
                f"got {list(result.features.shape)}"
            )
        features = features.detach().float().cpu()
        if not bool(torch.isfinite(features).all()):
            raise TeacherError("compute returned NaN or inf features")
        return features.numpy().astype(np.float16), result.stride, result.image_size

    def _write(self, path: Path, features: np.ndarray, stride, image_size) -> DenseFeatures:
        buffer = io.BytesIO()
        np.save(buffer, features, allow_pickle=False)
        data = buffer.getvalue()
        atomic_write_bytes(path, data)
        meta = {
            "shape": list(features.shape),
            "stride": [float(stride[0]), float(stride[1])],
            "image_size": [int(image_size[0]), int(image_size[1])],
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        atomic_write_text(path.with_suffix(".json"), json.dumps(meta) + "\n")  # written last: marks the entry complete
        return _as_dense(features, (float(stride[0]), float(stride[1])), (int(image_size[0]), int(image_size[1])))

    def clear(self, teacher: DenseTeacher | None = None) -> None:
        """Delete the entries of one teacher (or, with None, the whole cache folder)."""
        import shutil

        target = self.root if teacher is None else self.teacher_dir(teacher)
        shutil.rmtree(target, ignore_errors=True)
        self._checked_manifests.clear()


def _identity_of(teacher) -> str:
    identity = getattr(teacher, "identity", None)
    if not isinstance(identity, str) or not identity:
        raise TeacherError(f"teacher must have a non-empty string identity, got {identity!r}")
    return identity


def _as_dense(features: np.ndarray, stride: tuple[float, float], image_size: tuple[int, int]) -> DenseFeatures:
    tensor = torch.nn.functional.normalize(torch.from_numpy(features.astype(np.float32)), dim=-1)
    return DenseFeatures(tensor[None], stride, image_size)
