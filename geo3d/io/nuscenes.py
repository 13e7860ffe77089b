"""nuScenes readers: mmdetection3d info pickles and the official JSON tables (no devkit needed).

Both produce a :class:`~geo3d.structures.capture.Capture` with one :class:`Frame` per nuScenes
sample (key frame): the surround cameras (``CAM_*``) and the LiDAR sweep (``LIDAR_TOP``, ``[N, 5]``
float32 ``x, y, z, intensity, ring`` in the sensor frame, metres). Poses are float64 4x4
``sensor2world`` in the nuScenes global (map) frame, or, with ``world="ego"``, in the ego frame of
the first frame, which keeps coordinates small (the global frame is kilometres from its origin,
too far for float32 ops). nuScenes camera frames already use OpenCV axes; images are undistorted.

Pickles: loading a pickle can execute code stored in the file, so only read files you trust.
:func:`read_nuscenes_info` uses a restricted unpickler that accepts only plain Python containers
and NumPy arrays, dtypes and scalars, and refuses anything else before it runs.
"""

from __future__ import annotations

import builtins
import codecs
import collections
import functools
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from geo3d.errors import CalibrationError, CaptureError
from geo3d.geometry.conventions import nuscenes_sensor2world
from geo3d.geometry.poses import check_intrinsics, check_pose, make_pose
from geo3d.io.images import image_size, read_image_uint8
from geo3d.structures.capture import ArraySource, CameraFrame, Capture, Frame, LidarSweep

LIDAR_COLUMNS = ("x", "y", "z", "intensity", "ring")
"""Columns of a nuScenes ``.pcd.bin`` sweep (float32, little-endian); extra columns are named
``feature5``, ``feature6``, ..."""

BOX_COLUMNS = ("x", "y", "z", "l", "w", "h", "yaw")
"""Columns of the 3D boxes kept from an info pickle: the box centre (x, y, z) in the LiDAR frame,
metres; length l along the heading, width w, height h; yaw in radians about +z from +x."""

WORLD_FRAMES = ("global", "ego")


# ---------------------------------------------------------------------------------------------
# Restricted unpickling


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles store NumPy's raw bytes as ``_codecs.encode(text, "latin1")``.
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, encoding)


@functools.cache
def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # NumPy < 1.26 has only numpy.core
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
        ("_codecs", "encode"): _latin1_encode,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{module}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{module}.numeric", "_frombuffer")] = numeric._frombuffer
    plain = ("bool", "int", "float", "complex", "str", "bytes", "bytearray", "list", "tuple",
             "dict", "set", "frozenset", "slice", "range")  # fmt: skip
    for name in plain:
        allowed[("builtins", name)] = getattr(builtins, name)
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only plain containers and NumPy arrays/dtypes/scalars."""

    def find_class(self, module: str, name: str) -> Any:
        found = _allowed_globals().get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only plain data, NumPy arrays)")
        return found


def _load_pickle(path: Path) -> Any:
    try:
        with path.open("rb") as f:
            return _RestrictedUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError,
            TypeError, ValueError, OSError) as exc:  # fmt: skip
        raise CaptureError(f"{path}: cannot read the pickle ({exc})") from None


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _check_world(world: str) -> None:
    if world not in WORLD_FRAMES:
        raise ValueError(f"world must be one of {WORLD_FRAMES}, got {world!r}")


def _mapping(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise CaptureError(f"{what}: expected a dict, got {type(value).__name__}")
    return value


def _field(row: dict, key: str, what: str, error: type[CaptureError] = CaptureError) -> Any:
    if key not in row:
        raise error(f"{what}: missing key {key!r}")
    return row[key]


def _pose_of(row: dict, key: str, what: str) -> np.ndarray:
    return check_pose(_field(row, key, what, CalibrationError), what=f"{what} {key}")


def _intrinsics_of(row: dict, key: str, what: str) -> np.ndarray:
    return check_intrinsics(_field(row, key, what, CalibrationError), what=f"{what} {key}")


def _lidar_columns(n_cols: int, what: str) -> tuple[str, ...]:
    if n_cols < 3:
        raise CaptureError(f"{what}: a LiDAR sweep needs at least 3 columns (x, y, z), got {n_cols}")
    return LIDAR_COLUMNS[:n_cols] + tuple(f"feature{i}" for i in range(len(LIDAR_COLUMNS), n_cols))


def _check_pcd_bin(path: Path, n_cols: int) -> None:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read the LiDAR file ({exc})") from None
    if size % (4 * n_cols):
        raise CaptureError(f"{path}: size {size} bytes is not a multiple of {4 * n_cols} ({n_cols} float32 "
                           "columns per point): truncated, or a different number of columns")  # fmt: skip


def _load_pcd_bin(path: Path, n_cols: int) -> np.ndarray:
    _check_pcd_bin(path, n_cols)
    return np.fromfile(path, dtype="<f4").astype(np.float32, copy=False).reshape(-1, n_cols)


def _pcd_source(path: Path, n_cols: int) -> ArraySource:
    """``[N, n_cols]`` float32 points of a ``.pcd.bin`` file, loaded on demand (size checked now)."""
    _check_pcd_bin(path, n_cols)
    return ArraySource(path=path, loader=functools.partial(_load_pcd_bin, path, n_cols))


def _image_source(path: Path) -> ArraySource:
    return ArraySource(path=path, loader=functools.partial(read_image_uint8, path))


def _rebase_to_first_ego(frames: list[Frame]) -> None:
    """Left-multiply every pose by ``inv(ego2world of frame 0)`` (the ``world="ego"`` option)."""
    if frames[0].ego2world is None:
        raise CaptureError("world='ego' needs the ego pose of frame 0, which has no sensor data")
    world2ego0 = np.linalg.inv(frames[0].ego2world)  # exact inverse, see _info_frame
    for frame in frames:
        if frame.ego2world is not None:
            frame.ego2world = world2ego0 @ frame.ego2world
        for cam in frame.cameras.values():
            cam.cam2world = world2ego0 @ cam.cam2world
        for sweep in frame.lidar.values():
            sweep.sensor2world = world2ego0 @ sweep.sensor2world


# ---------------------------------------------------------------------------------------------
# mmdetection3d info pickle


def read_nuscenes_info(path: str | Path, data_root: str | Path | None = None, sample_index: int | None = None,
                       world: str = "global") -> Capture:  # fmt: skip
    """Read an mmdetection3d (v1.x, ``info_version`` 1.1) nuScenes info pickle.

    Every entry of ``data_list`` becomes one :class:`Frame` with a :class:`CameraFrame` per entry
    of ``images`` (``cam2img`` 3x3 K in pixels, ``lidar2cam`` 4x4, ``img_path``, ``timestamp`` in
    seconds) and one :class:`LidarSweep` ``"LIDAR_TOP"`` (``lidar_points``: ``lidar_path``,
    ``lidar2ego`` 4x4, ``num_pts_feats``, default 5).

    Poses: ``lidar2world = ego2global @ lidar2ego`` and ``cam2world = lidar2world @ inv(lidar2cam)``,
    so ``K @ inv(cam2world) @ lidar2world`` is exactly the pickle's ``cam2img @ lidar2cam`` and
    LiDAR points project where mmdetection3d projects them. The pickle's single ``ego2global`` is
    the ego pose at the LiDAR timestamp, while the cameras fired tens of milliseconds apart from it
    (the car moved up to 0.33 m meanwhile): ``ego2global @ cam2ego`` would misplace the cameras
    by that much, and ``lidar2cam`` already carries the correction (it was made from each
    sample_data's own ego pose). ``Frame.ego2world`` is ``ego2global`` (at the LiDAR time).

    Files: ``img_path`` and ``lidar_path`` (bare names or relative paths) are looked up as
    ``data_root/path``, ``data_root/<basename>`` and ``data_root/samples/<sensor>/<basename>``
    (the nuScenes layout). Images are decoded and LiDAR files read only on ``load``; their
    existence, image size (from the header) and LiDAR file size are checked here.

    The 3D boxes (``instances``) go into ``capture.metadata["samples"][i]["boxes"]``, one list per
    frame, each box a dict ``{"label", "label_id", "box": [x, y, z, l, w, h, yaw], "valid",
    "num_lidar_pts", "velocity"}`` in the LiDAR frame of that frame (see :data:`BOX_COLUMNS`;
    ``label`` is None for ``label_id`` -1, a class outside ``metainfo["categories"]``; a velocity
    component is None where nuScenes has NaN).

    Args:
        path: the ``.pkl`` file, or a folder holding exactly one. Only read trusted files (see the module
            docstring).
        data_root: folder the file names are relative to; default: the pickle's folder.
        sample_index: read only ``data_list[sample_index]``; default: all entries.
        world: ``"global"`` (nuScenes map frame) or ``"ego"`` (ego frame of the first frame read).

    Raises:
        CaptureError: unreadable pickle, missing key or file, bad LiDAR file size.
        CalibrationError: a missing or invalid matrix (the message names file, entry, camera, key).
    """
    _check_world(world)
    path = Path(path)
    if path.is_dir():
        found = _info_pickles(path)
        if len(found) != 1:
            raise CaptureError(f"{path}: expected exactly one nuScenes info pickle in the folder, found {len(found)}")
        path = found[0]
    root = Path(data_root) if data_root is not None else path.parent
    info = _load_pickle(path)
    if not isinstance(info, dict) or not isinstance(info.get("data_list"), list):
        raise CaptureError(f"{path}: not an mmdetection3d info pickle (no 'data_list' list)")
    entries = list(enumerate(info["data_list"]))
    if sample_index is not None:
        if not -len(entries) <= sample_index < len(entries):
            raise CaptureError(f"{path}: sample_index {sample_index} out of range ({len(entries)} samples)")
        entries = [entries[sample_index]]
    if not entries:
        raise CaptureError(f"{path}: data_list is empty")
    metainfo = info.get("metainfo") if isinstance(info.get("metainfo"), dict) else {}
    id_to_label = {int(v): str(k) for k, v in (metainfo.get("categories") or {}).items()}

    frames, samples = [], []
    for out_index, (index, entry) in enumerate(entries):
        where = f"{path}: data_list[{index}]"
        entry = _mapping(entry, where)
        frames.append(_info_frame(entry, out_index, where, root))
        samples.append({
            "index": index,
            "token": entry.get("token"),
            "boxes": _info_boxes(entry.get("instances") or [], id_to_label, where),
        })  # fmt: skip
    world_frame = "nuScenes global (map) frame, metres"
    if world == "ego":
        _rebase_to_first_ego(frames)
        world_frame = f"ego frame of frame 0 (nuScenes sample {samples[0]['token']}, LiDAR time), metres"
    metadata = {
        "dataset": metainfo.get("dataset", "nuscenes"),
        "version": metainfo.get("version"),
        "box_columns": list(BOX_COLUMNS),
        "box_frame": "LIDAR_TOP sensor frame of each frame; (x, y, z) is the box centre",
        "samples": samples,
    }
    return Capture(frames=frames, source_format="nuscenes-info", source=str(path), world_frame=world_frame,
                   metadata=metadata)  # fmt: skip


def _resolve(root: Path, name: Any, sensor: str, what: str) -> Path:
    if not isinstance(name, str) or not name:
        raise CaptureError(f"{what}: expected a file name, got {name!r}")
    rel = Path(name)
    candidates = [root / rel, root / rel.name, root / "samples" / sensor / rel.name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(dict.fromkeys(str(c) for c in candidates))
    raise CaptureError(f"{what}: file {name!r} not found (looked for {looked})")


def _info_frame(entry: dict, index: int, where: str, root: Path) -> Frame:
    ego2global = _pose_of(entry, "ego2global", where)
    timestamp = float(_field(entry, "timestamp", where))
    lidar_where = f"{where} lidar_points"
    lidar = _mapping(_field(entry, "lidar_points", where), lidar_where)
    lidar2world = ego2global @ _pose_of(lidar, "lidar2ego", lidar_where)
    n_cols = int(lidar.get("num_pts_feats", 5))
    lidar_file = _resolve(root, _field(lidar, "lidar_path", lidar_where), "LIDAR_TOP", lidar_where)
    sweep = LidarSweep(sensor="LIDAR_TOP", points=_pcd_source(lidar_file, n_cols),
                       columns=_lidar_columns(n_cols, lidar_where), sensor2world=lidar2world,
                       timestamp=float(lidar.get("timestamp", timestamp)))  # fmt: skip
    frame = Frame(index=index, lidar={"LIDAR_TOP": sweep}, timestamp=timestamp, ego2world=ego2global)
    images = _mapping(_field(entry, "images", where), f"{where} images")
    for camera, image in images.items():
        cam_where = f"{where} images[{camera!r}]"
        image = _mapping(image, cam_where)
        K = _intrinsics_of(image, "cam2img", cam_where)
        lidar2cam = _pose_of(image, "lidar2cam", cam_where)
        if "cam2ego" in image:
            _pose_of(image, "cam2ego", cam_where)  # not used for the pose (see above), but must be sane
        image_file = _resolve(root, _field(image, "img_path", cam_where), str(camera), cam_where)
        width, height = image_size(image_file)
        cam_time = image.get("timestamp")
        # np.linalg.inv, not R^T: the pickle's rotations are orthonormal only to ~1e-7 (float32
        # origin), and only the exact inverse keeps inv(cam2world) @ lidar2world == lidar2cam.
        cam2world = lidar2world @ np.linalg.inv(lidar2cam)
        frame.cameras[str(camera)] = CameraFrame(
            camera=str(camera), K=K, cam2world=cam2world, width=int(width), height=int(height),
            image=_image_source(image_file), timestamp=None if cam_time is None else float(cam_time),
        )  # fmt: skip
    return frame


def _info_boxes(instances: Any, id_to_label: dict[int, str], where: str) -> list[dict]:
    boxes = []
    for i, inst in enumerate(instances if isinstance(instances, list) else []):
        inst_where = f"{where} instances[{i}]"
        inst = _mapping(inst, inst_where)
        try:
            box = np.asarray(_field(inst, "bbox_3d", inst_where), dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            box = np.zeros(0)
        if box.size < 7 or not np.isfinite(box[:7]).all():
            raise CaptureError(f"{inst_where} bbox_3d: expected 7 finite numbers (x, y, z, l, w, h, yaw)")
        label_id = int(inst.get("bbox_label_3d", inst.get("bbox_label", -1)))
        boxes.append({
            "label": id_to_label.get(label_id),
            "label_id": label_id,
            "box": box[:7].tolist(),
            "valid": bool(inst.get("bbox_3d_isvalid", True)),
            "num_lidar_pts": int(inst.get("num_lidar_pts", -1)),
            # nuScenes gives NaN velocity for boxes without a neighbouring annotation: store None (JSON)
            "velocity": [
                None if not np.isfinite(v) else float(v)
                for v in np.asarray(inst.get("velocity", []), dtype=np.float64).reshape(-1)
            ],
        })  # fmt: skip
    return boxes


# ---------------------------------------------------------------------------------------------
# Official nuScenes JSON tables

_TABLES = ("sample", "sample_data", "calibrated_sensor", "ego_pose", "sensor")


def _version_dir(root: Path, version: str | None) -> Path:
    if not root.is_dir():
        raise CaptureError(f"{root}: nuScenes dataroot not found or not a folder")
    if version is not None:
        table_dir = root / version
        if not table_dir.is_dir():
            raise CaptureError(f"{root}: no table folder {version!r}")
        return table_dir
    found = sorted(p for p in root.glob("v1.0-*") if p.is_dir())
    if len(found) != 1:
        names = ", ".join(p.name for p in found)
        problem = "no v1.0-* table folder" if not found else f"several table folders ({names}); pass version="
        raise CaptureError(f"{root}: {problem}")
    return found[0]


def _load_table(table_dir: Path, name: str) -> list[dict]:
    file = table_dir / f"{name}.json"
    try:
        with file.open("r", encoding="utf-8") as f:
            rows = json.load(f)
    except FileNotFoundError:
        raise CaptureError(f"{file}: nuScenes table {name}.json not found") from None
    except (OSError, ValueError) as exc:
        raise CaptureError(f"{file}: unreadable JSON table ({exc})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "token" in r for r in rows):
        raise CaptureError(f"{file}: expected a JSON list of records with a 'token'")
    return rows


class _Tables:
    """The tables of one ``v1.0-*`` folder, indexed by token; lookups raise errors naming both."""

    def __init__(self, table_dir: Path):
        self.dir = table_dir
        self.rows = {name: _load_table(table_dir, name) for name in _TABLES}
        self.by_token = {name: {r["token"]: r for r in rows} for name, rows in self.rows.items()}

    def where(self, table: str, row: dict) -> str:
        return f"{self.dir / table}.json: token {row['token']!r}"

    def field(self, table: str, row: dict, key: str, error: type[CaptureError] = CaptureError) -> Any:
        return _field(row, key, self.where(table, row), error)

    def follow(self, table: str, row: dict, key: str, target: str) -> dict:
        """The ``target`` record that ``row[key]`` (a token) points to."""
        token = self.field(table, row, key)
        if token not in self.by_token[target]:
            raise CaptureError(f"{self.where(table, row)}: {key} {token!r} is not in {target}.json")
        return self.by_token[target][token]

    def pose(self, table: str, row: dict) -> tuple[np.ndarray, np.ndarray]:
        """Validated ``(quaternion (w, x, y, z), translation)`` of a calibrated_sensor/ego_pose."""
        what = self.where(table, row)
        try:
            quat = np.asarray(self.field(table, row, "rotation", CalibrationError), dtype=np.float64)
            trans = np.asarray(self.field(table, row, "translation", CalibrationError), dtype=np.float64)
        except (TypeError, ValueError):
            raise CalibrationError(f"{what}: rotation/translation are not numbers") from None
        if quat.shape != (4,) or trans.shape != (3,) or not np.isfinite(np.r_[quat, trans]).all():
            raise CalibrationError(f"{what}: expected a finite quaternion (w, x, y, z) and a translation "
                                   f"(x, y, z), got shapes {quat.shape} and {trans.shape}")  # fmt: skip
        if abs(np.linalg.norm(quat) - 1.0) > 1e-3:
            raise CalibrationError(f"{what}: quaternion is not unit length (norm {np.linalg.norm(quat):.6g})")
        return quat, trans


def read_nuscenes_tables(dataroot: str | Path, version: str | None = None, scene: str | None = None,
                         world: str = "global") -> Capture:  # fmt: skip
    """Read the official nuScenes layout ``dataroot/v1.0-*/*.json`` without the devkit.

    Uses ``sample``, ``sample_data``, ``calibrated_sensor``, ``ego_pose`` and ``sensor`` (and
    ``scene`` to select a scene). Each sample becomes a :class:`Frame` holding the key-frame
    sample_data of every camera (``modality == "camera"``) and every LiDAR; radar is skipped.
    Poses: ``sensor2world = ego2global @ sensor2ego`` with the ego pose of *that* sample_data (so
    each camera gets the vehicle pose at its own exposure time); quaternions are ``(w, x, y, z)``.
    ``K`` is ``camera_intrinsic``; ``filename`` is relative to ``dataroot``; width/height come
    from sample_data, else from the image header. Timestamps: the tables' microseconds -> seconds.
    ``Frame.ego2world`` is the ego pose of the sample_data nearest in time to the sample (the
    LiDAR in nuScenes). LiDAR files are ``.pcd.bin`` with the 5 columns of :data:`LIDAR_COLUMNS`.
    Annotations (``sample_annotation.json``) are not read.

    Args:
        dataroot: the nuScenes root (holding ``samples/`` and ``v1.0-*/``).
        version: table folder name, e.g. ``"v1.0-mini"``; default: the only ``v1.0-*`` folder.
        scene: a scene ``name`` (``"scene-0061"``) or token; default: all samples, grouped by
            scene (scenes ordered by their first timestamp), each scene in time order.
        world: ``"global"`` (nuScenes map frame) or ``"ego"`` (ego frame of the first frame).

    Raises:
        CaptureError: missing folder, table, file or record (the message names table and token).
        CalibrationError: missing or invalid calibration.
    """
    _check_world(world)
    root = Path(dataroot)
    tables = _Tables(_version_dir(root, version))
    samples = _ordered_samples(tables, scene)
    key_data: dict[str, list[dict]] = {}
    for row in tables.rows["sample_data"]:
        if row.get("is_key_frame"):
            key_data.setdefault(tables.field("sample_data", row, "sample_token"), []).append(row)
    sensor_order = {r["token"]: i for i, r in enumerate(tables.rows["sensor"])}
    frames = [
        _table_frame(i, sample, key_data.get(sample["token"], []), tables, root, sensor_order)
        for i, sample in enumerate(samples)
    ]
    world_frame = "nuScenes global (map) frame, metres"
    if world == "ego":
        _rebase_to_first_ego(frames)
        world_frame = f"ego frame of frame 0 (nuScenes sample {samples[0]['token']}), metres"
    metadata = {
        "dataset": "nuscenes",
        "version": tables.dir.name,
        "samples": [{"token": s["token"], "scene_token": s.get("scene_token")} for s in samples],
    }
    return Capture(frames=frames, source_format="nuscenes", source=str(root), world_frame=world_frame,
                   metadata=metadata)  # fmt: skip


def _ordered_samples(tables: _Tables, scene: str | None) -> list[dict]:
    samples = tables.rows["sample"]
    if scene is not None:
        if not (tables.dir / "scene.json").exists():
            raise CaptureError(f"{tables.dir}: scene={scene!r} asked for but scene.json is missing")
        scenes = _load_table(tables.dir, "scene")
        match = [s for s in scenes if scene in (s.get("name"), s["token"])]
        if not match:
            names = ", ".join(str(s.get("name")) for s in scenes)
            raise CaptureError(f"{tables.dir / 'scene.json'}: no scene {scene!r} (scenes: {names})")
        samples = [s for s in samples if s.get("scene_token") == match[0]["token"]]
    if not samples:
        raise CaptureError(f"{tables.dir}: no samples" + ("" if scene is None else f" in scene {scene!r}"))
    groups: dict[Any, list[dict]] = {}
    for s in samples:
        tables.field("sample", s, "timestamp")
        groups.setdefault(s.get("scene_token"), []).append(s)
    ordered = sorted((sorted(g, key=lambda s: s["timestamp"]) for g in groups.values()),
                     key=lambda g: g[0]["timestamp"])  # fmt: skip
    return [s for group in ordered for s in group]


def _table_frame(index: int, sample: dict, data_rows: list[dict], tables: _Tables, root: Path,
                 sensor_order: dict[str, int]) -> Frame:  # fmt: skip
    sample_time = tables.field("sample", sample, "timestamp") / 1e6
    frame = Frame(index=index, timestamp=sample_time)
    linked = []
    for sd in data_rows:
        calib = tables.follow("sample_data", sd, "calibrated_sensor_token", "calibrated_sensor")
        sensor = tables.follow("calibrated_sensor", calib, "sensor_token", "sensor")
        linked.append((sd, calib, sensor, tables.follow("sample_data", sd, "ego_pose_token", "ego_pose")))
    linked.sort(key=lambda item: sensor_order[item[2]["token"]])
    nearest = None  # (|dt|, ego_pose row) of the sample_data nearest to the sample's time
    for sd, calib, sensor, ego in linked:
        modality = sensor.get("modality")
        if modality not in ("camera", "lidar"):
            continue
        channel = str(tables.field("sensor", sensor, "channel"))
        what = f"{tables.where('sample_data', sd)} ({channel})"
        if channel in frame.cameras or channel in frame.lidar:
            raise CaptureError(f"{what}: sample {sample['token']!r} has two key frames of {channel}")
        sensor2world = check_pose(
            nuscenes_sensor2world(*tables.pose("calibrated_sensor", calib), *tables.pose("ego_pose", ego)),
            what=f"{what} sensor2world",
        )
        timestamp = tables.field("sample_data", sd, "timestamp") / 1e6
        if nearest is None or abs(timestamp - sample_time) < nearest[0]:
            nearest = (abs(timestamp - sample_time), ego)
        file = root / str(tables.field("sample_data", sd, "filename"))
        if not file.is_file():
            raise CaptureError(f"{what}: file {file} not found")
        if modality == "lidar":
            frame.lidar[channel] = LidarSweep(
                sensor=channel, points=_pcd_source(file, len(LIDAR_COLUMNS)), columns=LIDAR_COLUMNS,
                sensor2world=sensor2world, timestamp=timestamp,
            )  # fmt: skip
            continue
        K = _intrinsics_of(calib, "camera_intrinsic", tables.where("calibrated_sensor", calib))
        width, height = sd.get("width"), sd.get("height")
        if not width or not height:
            width, height = image_size(file)
        frame.cameras[channel] = CameraFrame(
            camera=channel, K=K, cam2world=sensor2world, width=int(width), height=int(height),
            image=_image_source(file), timestamp=timestamp,
        )  # fmt: skip
    if nearest is not None:
        frame.ego2world = check_pose(make_pose(*tables.pose("ego_pose", nearest[1])),
                                     what=tables.where("ego_pose", nearest[1]))  # fmt: skip
    return frame


# ---------------------------------------------------------------------------------------------
# Format detection


def _info_pickles(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".pkl", ".pickle") and sniff_nuscenes_info(p))


def sniff_nuscenes_info(path: str | Path) -> bool:
    """True for a ``.pkl``/``.pickle`` file that looks like an mmdetection3d info pickle, or a folder
    holding exactly one such file (next to its images and LiDAR files).

    Cheap and safe: scans the first MiB of bytes for the keys ``data_list``, ``images`` and
    ``lidar_points`` instead of unpickling.
    """
    path = Path(path)
    if path.is_dir():
        try:
            return len(_info_pickles(path)) == 1
        except OSError:
            return False
    if path.suffix.lower() not in (".pkl", ".pickle") or not path.is_file():
        return False
    try:
        with path.open("rb") as f:
            head = f.read(1 << 20)
    except OSError:
        return False
    return all(key in head for key in (b"data_list", b"images", b"lidar_points"))


def sniff_nuscenes_tables(path: str | Path) -> bool:
    """True for a folder holding ``v1.0-*/sample.json`` (a nuScenes dataroot)."""
    path = Path(path)
    try:
        return path.is_dir() and any((p / "sample.json").is_file() for p in path.glob("v1.0-*"))
    except OSError:
        return False
