"""Reader for COLMAP sparse reconstructions: ``cameras``, ``images`` and ``points3D`` as .bin or .txt.

COLMAP stores world-to-camera poses (``qvec`` (w, x, y, z), ``tvec``) with OpenCV camera axes and
puts the centre of the top-left pixel at (0.5, 0.5). The reader converts both to geo3d's
conventions (``docs/conventions.md``): ``cam2world`` 4x4, principal point minus 0.5. Lengths are
in the reconstruction's units: metres only if the model was geo-registered or scaled.

Layouts accepted by :func:`read_colmap` (the first that holds a model wins):

- a model folder holding ``cameras``, ``images`` and ``points3D`` (all ``.bin``, else all ``.txt``),
  or one of those files;
- a project folder with the model in ``sparse/0/``, ``sparse/`` or ``0/``.

Images are decoded lazily from ``images_dir / name``. The default ``images_dir`` is the first
existing of ``<project>/images`` (``<project>`` being the folder that holds ``sparse/``),
``<model>/images`` and ``<model>/../images``. If none exists the frames are still returned (poses
and calibration are usable on their own), a warning says so, and loading pixels raises a
:class:`CaptureError` naming the missing file.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from geo3d.errors import CalibrationError, CaptureError
from geo3d.geometry.conventions import colmap_principal_point_to_opencv, colmap_to_cam2world
from geo3d.geometry.poses import check_intrinsics, check_pose
from geo3d.io.images import read_image_uint8
from geo3d.structures.capture import ArraySource, CameraFrame, Capture, Frame, SparsePoints

CAMERA_MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
"""COLMAP camera model id -> (name, number of parameters), as in COLMAP's ``models.h``."""

MODEL_PARAMS = {name: count for name, count in CAMERA_MODELS.values()}

SUPPORTED_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")
"""Models with a pinhole ``K`` plus (optionally) OpenCV radial-tangential distortion."""

MODEL_FILES = ("cameras", "images", "points3D")


@dataclass(frozen=True)
class ColmapCamera:
    """One entry of ``cameras.bin|txt``: ``params`` in COLMAP's order and pixel convention."""

    camera_id: int
    model: str
    width: int
    height: int
    params: np.ndarray


@dataclass(frozen=True)
class ColmapImage:
    """One entry of ``images.bin|txt``: world-to-camera ``qvec`` (w, x, y, z) and ``tvec``."""

    image_id: int
    qvec: np.ndarray
    tvec: np.ndarray
    camera_id: int
    name: str


# ---------------------------------------------------------------------------------------------
# Binary files


class _BinaryReader:
    """Little-endian reads from a whole file, with errors that name the file and the field."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data = path.read_bytes()
        except OSError as exc:
            raise CaptureError(f"{path}: cannot read ({exc})") from None
        self.offset = 0

    def _need(self, size: int, what: str) -> None:
        left = len(self.data) - self.offset
        if size > left:
            raise CaptureError(
                f"{self.path}: truncated or corrupt file: reading {what} needs {size} bytes at offset "
                f"{self.offset}, only {left} left"
            )

    def unpack(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        self._need(size, what)
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += size
        return values

    def skip(self, size: int, what: str) -> None:
        self._need(size, what)
        self.offset += size

    def count(self, what: str, min_record_bytes: int) -> int:
        """A uint64 record count, checked against the bytes left (a corrupt count fails fast)."""
        (n,) = self.unpack("Q", what)
        self._need(n * min_record_bytes, f"{n} {what.replace('number of ', '')}")
        return n

    def cstring(self, what: str) -> str:
        end = self.data.find(b"\x00", self.offset)
        if end < 0:
            raise CaptureError(
                f"{self.path}: truncated or corrupt file: {what} at offset {self.offset} has no end"
            )
        raw = self.data[self.offset : end]
        self.offset = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CaptureError(f"{self.path}: {what} at offset {self.offset} is not UTF-8 text") from None

    def finish(self) -> None:
        left = len(self.data) - self.offset
        if left:
            raise CaptureError(f"{self.path}: corrupt file: {left} unexpected bytes after the last record")


def _read_cameras_bin(path: Path) -> list[ColmapCamera]:
    reader = _BinaryReader(path)
    cameras = []
    for i in range(reader.count("number of cameras", 24)):
        camera_id, model_id, width, height = reader.unpack("IiQQ", f"camera {i} header")
        if model_id not in CAMERA_MODELS:
            raise CaptureError(
                f"{path}: camera {camera_id} has unknown model id {model_id} (corrupt file, or a model newer "
                f"than geo3d knows; it reads {', '.join(SUPPORTED_MODELS)})"
            )
        model, n_params = CAMERA_MODELS[model_id]
        params = reader.unpack(f"{n_params}d", f"the {n_params} {model} parameters of camera {camera_id}")
        cameras.append(ColmapCamera(camera_id, model, width, height, np.array(params)))
    reader.finish()
    return cameras


def _read_images_bin(path: Path) -> list[ColmapImage]:
    reader = _BinaryReader(path)
    images = []
    for i in range(reader.count("number of images", 73)):
        image_id, *pose, camera_id = reader.unpack("I7dI", f"image {i} header")
        name = reader.cstring(f"the name of image {image_id}")
        (n_points,) = reader.unpack("Q", f"the number of 2D points of image {image_id}")
        reader.skip(24 * n_points, f"the {n_points} 2D points of image {image_id}")
        images.append(ColmapImage(image_id, np.array(pose[:4]), np.array(pose[4:]), camera_id, name))
    reader.finish()
    return images


def _read_points3d_bin(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    reader = _BinaryReader(path)
    n = reader.count("number of 3D points", 51)
    ids = np.empty(n, np.int64)
    xyz = np.empty((n, 3))
    rgb = np.empty((n, 3), np.uint8)
    error = np.empty(n)
    for i in range(n):
        ids[i], *xyz[i], r, g, b, error[i], track_length = reader.unpack("Q3d3BdQ", f"3D point {i}")
        rgb[i] = (r, g, b)
        reader.skip(8 * track_length, f"the track ({track_length} entries) of 3D point {ids[i]}")
    reader.finish()
    return ids, xyz, rgb, error


# ---------------------------------------------------------------------------------------------
# Text files


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CaptureError(f"{path}: cannot read ({exc})") from None


def _records(path: Path):
    """``(line number, fields)`` of every line that is neither empty nor a ``#`` comment."""
    for lineno, line in enumerate(_lines(path), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield lineno, line.split()


def _parse(conv, fields: list[str], path: Path, lineno: int, what: str) -> list:
    try:
        return [conv(f) for f in fields]
    except ValueError:
        message = f"{path}: line {lineno}: {what} must be {conv.__name__} values, got {fields}"
        raise CaptureError(message) from None


def _read_cameras_txt(path: Path) -> list[ColmapCamera]:
    cameras = []
    for lineno, fields in _records(path):
        if len(fields) < 4:
            raise CaptureError(
                f"{path}: line {lineno}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS..., "
                f"got {len(fields)} fields"
            )
        camera_id, width, height = _parse(int, [fields[0], *fields[2:4]], path, lineno, "id, width, height")
        model = fields[1]
        if model not in MODEL_PARAMS:
            supported = ", ".join(SUPPORTED_MODELS)
            message = f"{path}: line {lineno}: unknown camera model {model!r} (geo3d reads {supported})"
            raise CaptureError(message)
        if len(fields) - 4 != MODEL_PARAMS[model]:
            raise CaptureError(
                f"{path}: line {lineno}: camera model {model} takes {MODEL_PARAMS[model]} parameters, "
                f"got {len(fields) - 4}"
            )
        params = np.array(_parse(float, fields[4:], path, lineno, "camera parameters"))
        cameras.append(ColmapCamera(camera_id, model, width, height, params))
    return cameras


def _read_images_txt(path: Path) -> list[ColmapImage]:
    """Each image takes two lines: the pose line, then its 2D points (a line that may be empty)."""
    lines = _lines(path)
    images = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        lineno = i
        # The name is the rest of the line, so that names with spaces survive.
        fields = line.split(maxsplit=9)
        if len(fields) < 10:
            raise CaptureError(
                f"{path}: line {lineno}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, "
                f"got {len(fields)} fields"
            )
        image_id, camera_id = _parse(int, [fields[0], fields[8]], path, lineno, "IMAGE_ID and CAMERA_ID")
        pose = np.array(_parse(float, fields[1:8], path, lineno, "QW QX QY QZ TX TY TZ"))
        points_line = lines[i].split() if i < len(lines) else []
        if len(points_line) % 3:
            raise CaptureError(
                f"{path}: line {i + 1}: 2D points of image {image_id} must be X Y POINT3D_ID triples, "
                f"got {len(points_line)} values"
            )
        i += 1
        images.append(ColmapImage(image_id, pose[:4], pose[4:], camera_id, fields[9]))
    return images


def _read_points3d_txt(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ids, xyz, rgb, error = [], [], [], []
    for lineno, fields in _records(path):
        if len(fields) < 8 or (len(fields) - 8) % 2:
            raise CaptureError(
                f"{path}: line {lineno}: expected POINT3D_ID X Y Z R G B ERROR and (IMAGE_ID, POINT2D_IDX) "
                f"pairs, got {len(fields)} fields"
            )
        ids.append(_parse(int, fields[:1], path, lineno, "POINT3D_ID")[0])
        xyz.append(_parse(float, fields[1:4], path, lineno, "X Y Z"))
        colour = _parse(int, fields[4:7], path, lineno, "R G B")
        if not all(0 <= c <= 255 for c in colour):
            raise CaptureError(f"{path}: line {lineno}: colour {colour} is outside 0..255")
        rgb.append(colour)
        error.append(_parse(float, fields[7:8], path, lineno, "ERROR")[0])
    return (
        np.array(ids, np.int64),
        np.array(xyz, np.float64).reshape(-1, 3),
        np.array(rgb, np.uint8).reshape(-1, 3),
        np.array(error, np.float64),
    )


_READERS = {
    ".bin": (_read_cameras_bin, _read_images_bin, _read_points3d_bin),
    ".txt": (_read_cameras_txt, _read_images_txt, _read_points3d_txt),
}

# ---------------------------------------------------------------------------------------------
# Layout


def _has_model(folder: Path) -> bool:
    return any((folder / f"cameras{ext}").is_file() for ext in _READERS)


def _find_model_dir(path: Path) -> Path:
    if path.is_file():
        if path.stem in MODEL_FILES and path.suffix in _READERS:
            return path.parent
        raise CaptureError(f"{path}: not a COLMAP model file (cameras/images/points3D .bin or .txt)")
    if not path.is_dir():
        raise CaptureError(f"{path}: no such file or folder")
    for candidate in (path, path / "sparse" / "0", path / "sparse", path / "0"):
        if _has_model(candidate):
            return candidate
    raise CaptureError(f"{path}: no COLMAP model (cameras.bin|txt) in it, nor in sparse/0, sparse or 0")


def _model_files(model_dir: Path) -> tuple[str, dict[str, Path]]:
    """``(".bin" | ".txt", {"cameras": path, ...})``: binary if all three .bin files exist."""
    for ext in _READERS:
        files = {name: model_dir / f"{name}{ext}" for name in MODEL_FILES}
        if all(p.is_file() for p in files.values()):
            return ext, files
    ext = ".bin" if (model_dir / "cameras.bin").is_file() else ".txt"
    missing = [f"{name}{ext}" for name in MODEL_FILES if not (model_dir / f"{name}{ext}").is_file()]
    raise CaptureError(f"{model_dir}: incomplete COLMAP model, missing {', '.join(missing)}")


def _default_images_dir(model_dir: Path) -> Path:
    candidates = []
    if model_dir.parent.name == "sparse":
        candidates.append(model_dir.parent.parent / "images")
    elif model_dir.name == "sparse":
        candidates.append(model_dir.parent / "images")
    candidates += [model_dir / "images", model_dir.parent / "images"]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def colmap_intrinsics(camera: ColmapCamera, what: str = "camera") -> tuple[np.ndarray, np.ndarray | None]:
    """geo3d ``K`` ``[3, 3]`` (pixel centres at integers) and OpenCV distortion of a COLMAP camera.

    Returns:
        ``(K, distortion)``; ``distortion`` is ``(k1, k2, p1, p2)`` for SIMPLE_RADIAL, RADIAL and
        OPENCV, ``(k1, k2, p1, p2, k3, k4, k5, k6)`` for FULL_OPENCV (OpenCV's rational model), and
        None for the pinhole models or when every coefficient is zero.

    Raises:
        CaptureError: for models other than :data:`SUPPORTED_MODELS` (fisheye, FOV, thin prism).
    """
    model, p = camera.model, np.asarray(camera.params, dtype=np.float64)
    if model not in SUPPORTED_MODELS:
        supported = ", ".join(SUPPORTED_MODELS)
        raise CaptureError(
            f"{what}: unsupported COLMAP camera model {model} (geo3d reads {supported}); "
            "undistort the images first, e.g. with `colmap image_undistorter`"
        )
    if len(p) != MODEL_PARAMS[model]:
        raise CaptureError(f"{what}: model {model} takes {MODEL_PARAMS[model]} parameters, got {len(p)}")
    if model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        fx = fy = p[0]
        cx, cy = p[1], p[2]
        # SIMPLE_RADIAL has k1, RADIAL k1 and k2: pad to OpenCV's (k1, k2, p1, p2).
        distortion = np.concatenate([p[3:], np.zeros(7 - len(p))]) if len(p) > 3 else None
    else:
        fx, fy, cx, cy = p[:4]
        distortion = p[4:].copy() if len(p) > 4 else None
    cx, cy = colmap_principal_point_to_opencv(cx, cy)
    K = check_intrinsics([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], what)
    if distortion is not None and not np.any(distortion):
        distortion = None
    return K, distortion


# ---------------------------------------------------------------------------------------------
# Public API


def read_colmap(path: str | Path, images_dir: str | Path | None = None) -> Capture:
    """Read a COLMAP sparse model (binary or text) as a :class:`Capture`.

    Args:
        path: a model folder (``cameras``/``images``/``points3D`` .bin or .txt; binary wins when both
            are complete), one of its files, or a project folder with the model in ``sparse/0``,
            ``sparse`` or ``0`` (see the module docstring).
        images_dir: folder the image names of ``images.bin|txt`` are relative to; default: the
            project's ``images`` folder (module docstring).

    Returns:
        One :class:`Frame` per COLMAP image, ordered by image name, each with one
        :class:`CameraFrame` named ``f"camera_{camera_id}"`` (images of one COLMAP camera share the
        name): ``K`` ``[3, 3]`` with the principal point shifted by -0.5 to geo3d's pixel centres,
        ``distortion`` in OpenCV order (or None; a warning says that geo3d's camera ops assume
        undistorted images), ``cam2world`` ``[4, 4]`` float64, ``width``/``height`` from the camera,
        ``[H, W, 3|4]`` uint8 images decoded lazily. ``points3d`` holds the model's points (``xyz``
        ``[N, 3]`` float64 world, ``rgb`` ``[N, 3]`` uint8, ``error`` ``[N]`` pixels) ordered by
        point id, or None when it has none. ``metadata`` gives ``model_dir``, ``format``
        (``"bin"``/``"txt"``), ``images_dir`` and the COLMAP ``image_ids`` in frame order.

    Raises:
        CaptureError: missing model files; a truncated or corrupt .bin (naming the file and the
            field being read); a malformed .txt line (naming the file and line number); an
            unsupported camera model (naming it; checked for every camera of the model, used or
            not); an image whose camera is not in ``cameras``; a model without images.
        CalibrationError: a degenerate pose or intrinsics (naming file and image or camera).
    """
    path = Path(path)
    model_dir = _find_model_dir(path)
    ext, files, cameras, images, points3d = _read_model(model_dir)
    intrinsics = {
        cid: colmap_intrinsics(camera, f"{files['cameras']}: camera {cid}") for cid, camera in cameras.items()
    }
    images_dir = Path(images_dir) if images_dir is not None else _default_images_dir(model_dir)
    if not images_dir.is_dir():
        warnings.warn(
            f"{model_dir}: image folder {images_dir} not found; poses and calibration are read, "
            "but loading pixels will fail (pass images_dir=)",
            stacklevel=2,
        )
    frames: list[Frame] = []
    images = sorted(images, key=lambda im: (im.name, im.image_id))
    for image in images:
        what = f"{files['images']}: image {image.image_id} ({image.name!r})"
        if image.camera_id not in cameras:
            raise CaptureError(f"{what}: camera {image.camera_id} is not in {files['cameras'].name}")
        if not np.linalg.norm(image.qvec) > 1e-12:
            raise CalibrationError(f"{what}: quaternion {image.qvec.tolist()} is not a rotation")
        camera = cameras[image.camera_id]
        K, distortion = intrinsics[image.camera_id]
        image_path = images_dir / image.name
        camera_frame = CameraFrame(
            camera=f"camera_{image.camera_id}",
            K=K.copy(),
            cam2world=check_pose(colmap_to_cam2world(image.qvec, image.tvec), what),
            width=int(camera.width),
            height=int(camera.height),
            image=ArraySource(path=image_path, loader=partial(read_image_uint8, image_path)),
            distortion=None if distortion is None else distortion.copy(),
        )
        frames.append(Frame(index=len(frames), cameras={camera_frame.camera: camera_frame}))
    if not frames:
        raise CaptureError(f"{files['images']}: the model has no images")
    if any(intrinsics[image.camera_id][1] is not None for image in images):
        warnings.warn(
            f"{model_dir}: cameras have lens distortion (CameraFrame.distortion); geo3d's camera ops "
            "assume undistorted images, so undistort them first (e.g. `colmap image_undistorter`)",
            stacklevel=2,
        )
    return Capture(
        frames=frames,
        source_format="colmap",
        source=str(path),
        world_frame="COLMAP model frame (arbitrary scale unless the model was geo-registered)",
        points3d=points3d,
        metadata={
            "model_dir": str(model_dir),
            "format": ext[1:],
            "images_dir": str(images_dir),
            "image_ids": [image.image_id for image in images],
        },
    )


def _read_model(
    model_dir: Path,
) -> tuple[str, dict[str, Path], dict[int, ColmapCamera], list[ColmapImage], SparsePoints | None]:
    """``(".bin" | ".txt", files, cameras by id, images, points or None)``, ids checked unique."""
    ext, files = _model_files(model_dir)
    read_cameras, read_images, read_points = _READERS[ext]
    cameras: dict[int, ColmapCamera] = {}
    for camera in read_cameras(files["cameras"]):
        if camera.camera_id in cameras:
            raise CaptureError(f"{files['cameras']}: camera id {camera.camera_id} appears twice")
        cameras[camera.camera_id] = camera
    images = read_images(files["images"])
    if len({image.image_id for image in images}) != len(images):
        raise CaptureError(f"{files['images']}: an image id appears twice")
    point_ids, xyz, rgb, error = read_points(files["points3D"])
    if len(np.unique(point_ids)) != len(point_ids):
        raise CaptureError(f"{files['points3D']}: a 3D point id appears twice")
    order = np.argsort(point_ids, kind="stable")
    points3d = SparsePoints(xyz=xyz[order], rgb=rgb[order], error=error[order]) if len(order) else None
    return ext, files, cameras, images, points3d


def sniff_colmap(path: str | Path) -> bool:
    """True if ``path`` looks like a COLMAP model or project (checks only file names)."""
    path = Path(path)
    try:
        if path.is_file():
            return path.stem in MODEL_FILES and path.suffix in _READERS
        return any(
            _has_model(folder) and any((folder / f"images{ext}").is_file() for ext in _READERS)
            for folder in (path, path / "sparse" / "0", path / "sparse", path / "0")
        )
    except OSError:
        return False
