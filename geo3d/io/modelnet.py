"""ModelNet40 / ModelNet10 readers for shape classification: both common layouts, and OFF meshes.

Layouts (:func:`detect_modelnet_layout` tells them apart, :func:`read_modelnet40` dispatches):

``"normal_resampled"`` (``modelnet40_normal_resampled``, the PointNet++ release)::

    modelnet40_shape_names.txt        class names, one a line; the label is the line index
    modelnet40_train.txt, _test.txt   shape ids, one a line, e.g. ``airplane_0001``, ``night_stand_0003``
    airplane/airplane_0001.txt        10000 lines ``x,y,z,nx,ny,nz`` (comma-separated)
    (modelnet10_*.txt alongside: the ModelNet10 subset of the same files)

``"off"`` (the original ``ModelNet40.zip``)::

    <class>/<split>/<class>_0001.off  one triangle/polygon mesh per shape; classes = sorted folder names

Conventions (all readers return a :class:`geo3d.structures.shapes.ShapeSet`):

- **Point subset** of the resampled layout: the *first* ``num_points`` lines of each file, as in
  PointNet++'s ``ModelNetDataLoader`` without ``use_uniform_sample`` (the files are already
  uniformly resampled, so the first N are a uniform subset). The other convention, farthest-point
  sampling over all 10000 points, is not done here; read ``num_points=None`` (all points) and
  subsample yourself.
- **OFF meshes** are sampled with :func:`geo3d.structures.shapes.sample_surface` (area-weighted,
  face normals by the right-hand rule: ModelNet meshes are not consistently oriented, so some normals
  point inward). Each shape's generator is derived from ``seed`` and the shape's name, so a shape
  gets the same points whatever the order or subset of files read.
- **Normalisation** (``normalize=True``): :func:`geo3d.structures.shapes.normalize_unit_sphere`
  per shape *after* taking the subset (centroid at 0, farthest point at distance 1), PointNet++'s
  ``pc_normalize``. ``metadata["normalized"]`` records it. Normals are unit length either way.
- Units and axes are the files' own (ModelNet is not metric); nothing is reoriented.

Errors are :class:`geo3d.errors.CaptureError` naming the file (and line, where one is at fault).
"""

from __future__ import annotations

import hashlib
import re
from itertools import islice
from pathlib import Path

import numpy as np

from geo3d.errors import CaptureError
from geo3d.structures.shapes import ShapeSet, normalize_unit_sphere, sample_surface

SPLITS = ("train", "test")
VARIANTS = ("modelnet40", "modelnet10")
_OFF_HEADER = re.compile(r"(C?N?OFF)(.*)")


def read_off(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an ASCII OFF mesh.

    Handles ``#`` comments and blank lines, ModelNet's glued header (``OFF490 518 0`` on one line),
    the counts on the header line or the next one, extra per-vertex or per-face columns (``COFF``,
    ``NOFF``, face colours; ignored), and polygons with more than 3 vertices, which are
    fan-triangulated ``(i0, i1, i2), (i0, i2, i3), ...``.

    Returns:
        ``(vertices [V, 3] float64, faces [F, 3] int64)``; ``F`` counts triangles after the fan.

    Raises:
        CaptureError: missing, binary, corrupt or truncated file; the message names the file and the
            line at fault.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise CaptureError(f"{path}: file not found") from None
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read ({exc})") from None
    except UnicodeDecodeError:
        raise CaptureError(f"{path}: not an ASCII OFF file (binary OFF is not supported)") from None
    fast = _parse_off_fast(text)
    return fast if fast is not None else _parse_off_lines(text, path)


def _parse_off_fast(text: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Vectorised parse of the common case (plain ``OFF``, no comments, only triangles); None when the
    file is anything else or has a problem, so that :func:`_parse_off_lines` handles or reports it."""
    if "#" in text:
        return None
    tokens = text.split()
    if not tokens or not re.fullmatch(r"OFF\d*", tokens[0]):
        return None
    glued = tokens[0][3:]
    counts, rest = ([glued, *tokens[1:3]], tokens[3:]) if glued else (tokens[1:4], tokens[4:])
    try:
        num_vertices, num_faces = int(counts[0]), int(counts[1])
    except (ValueError, IndexError):
        return None
    if num_vertices < 0 or num_faces < 0 or len(rest) != 3 * num_vertices + 4 * num_faces:
        return None
    try:
        vertices = np.array(rest[: 3 * num_vertices], dtype=np.float64).reshape(num_vertices, 3)
        faces = np.array(rest[3 * num_vertices :], dtype=np.int64).reshape(num_faces, 4)
    except ValueError:
        return None
    if not np.isfinite(vertices).all() or (faces[:, 0] != 3).any():
        return None
    faces = np.ascontiguousarray(faces[:, 1:])
    if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
        return None
    return vertices, faces


def _parse_off_lines(text: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Line-by-line parse of any ASCII OFF file, with errors that name the line."""
    lines = text.splitlines()
    entries = ((i, toks) for i, line in enumerate(lines, 1) if (toks := line.split("#", 1)[0].split()))

    def next_entry(what: str) -> tuple[int, list[str]]:
        try:
            return next(entries)
        except StopIteration:
            message = f"truncated OFF file: it ends (line {len(lines)}) before {what}"
            raise CaptureError(f"{path}: {message}") from None

    lineno, toks = next_entry("the OFF header")
    header = _OFF_HEADER.fullmatch(toks[0])
    if header is None:
        raise CaptureError(f"{path}, line {lineno}: not an OFF file (header {toks[0]!r}, expected 'OFF')")
    counts = ([header.group(2)] if header.group(2) else []) + toks[1:]
    if not counts:
        lineno, counts = next_entry("the vertex and face counts")
    try:
        num_vertices, num_faces = int(counts[0]), int(counts[1])
        if num_vertices < 0 or num_faces < 0:
            raise ValueError
    except (ValueError, IndexError):
        expected = "expected 'vertex_count face_count [edge_count]'"
        raise CaptureError(f"{path}, line {lineno}: {expected}, got {' '.join(counts)!r}") from None

    vertices = np.empty((num_vertices, 3), dtype=np.float64)
    for k in range(num_vertices):
        lineno, toks = next_entry(f"vertex {k} of {num_vertices}")
        try:
            if len(toks) < 3:
                raise ValueError
            vertices[k] = [float(t) for t in toks[:3]]
        except ValueError:
            got = " ".join(toks)
            raise CaptureError(f"{path}, line {lineno}: vertex {k}: expected 'x y z', got {got!r}") from None
        if not np.isfinite(vertices[k]).all():
            raise CaptureError(f"{path}, line {lineno}: vertex {k} is not finite ({' '.join(toks[:3])})")

    triangles: list[tuple[int, int, int]] = []
    for k in range(num_faces):
        lineno, toks = next_entry(f"face {k} of {num_faces}")
        try:
            n = int(toks[0])
            index = [int(t) for t in toks[1 : 1 + n]]
            if n < 3 or len(index) < n:
                raise ValueError
        except ValueError:
            raise CaptureError(
                f"{path}, line {lineno}: face {k}: expected 'n i1 ... in' with n >= 3, got {' '.join(toks)!r}"
            ) from None
        if min(index) < 0 or max(index) >= num_vertices:
            raise CaptureError(
                f"{path}, line {lineno}: face {k}: vertex index out of range [0, {num_vertices}): {index}"
            )
        triangles.extend((index[0], index[j], index[j + 1]) for j in range(1, n - 1))
    return vertices, np.array(triangles, dtype=np.int64).reshape(-1, 3)


def _read_lines(path: Path, what: str) -> list[str]:
    """Non-blank stripped lines of a small text file (class names, split lists)."""
    try:
        return [s for line in path.read_text(encoding="utf-8").splitlines() if (s := line.strip())]
    except FileNotFoundError:
        raise CaptureError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CaptureError(f"{path}: cannot read {what} ({exc})") from None


def _read_points_txt(path: Path, num_points: int | None, min_columns: int) -> np.ndarray:
    """``[N, C]`` float64 from the first ``num_points`` non-blank lines (all if None) of a comma-separated
    text file; unit normals in columns 3:6 when ``min_columns >= 6``. numpy >= 1.23's C ``loadtxt`` on
    just those lines is the fastest parser tried (vs ``str.split`` + ``np.array``, ``np.fromstring``)."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines, linenos = list(islice(handle, num_points)), None
            if not all(map(str.strip, lines)):  # blank lines (rare): skip them, number the rest
                numbered = [(i, ln) for i, ln in enumerate(lines, 1) if ln.strip()]
                more = ((i, ln) for i, ln in enumerate(handle, len(lines) + 1) if ln.strip())
                numbered += islice(more, None if num_points is None else num_points - len(numbered))
                lines, linenos = [ln for _, ln in numbered], [i for i, _ in numbered]
    except FileNotFoundError:
        raise CaptureError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CaptureError(f"{path}: cannot read ({exc})") from None

    def line(k: int) -> int:  # 1-based line number of the k-th point
        return linenos[k] if linenos is not None else k + 1

    if num_points is not None and len(lines) < num_points:
        raise CaptureError(f"{path}: has {len(lines)} points, fewer than num_points={num_points}")
    if not lines:
        raise CaptureError(f"{path}: no points")
    try:
        data = np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        columns = len(lines[0].split(","))
        for k, text in enumerate(lines):  # find the line at fault for the message
            parts = text.split(",")
            try:
                if len(parts) != columns:
                    raise ValueError
                [float(p) for p in parts]
            except ValueError:
                expected = f"expected {columns} comma-separated numbers"
                raise CaptureError(f"{path}, line {line(k)}: {expected}, got {text.strip()!r}") from None
        raise CaptureError(f"{path}: cannot parse ({exc})") from None
    if data.shape[1] < min_columns:
        raise CaptureError(f"{path}: {data.shape[1]} columns, expected >= {min_columns} (x,y,z,nx,ny,nz)")
    bad = ~np.isfinite(data).all(axis=1)
    if bad.any():
        raise CaptureError(f"{path}, line {line(int(bad.argmax()))}: NaN or inf")
    if min_columns >= 6:  # renormalise (the files hold 6 decimals); a zero normal is an error
        length = np.linalg.norm(data[:, 3:6], axis=1)
        if (length < 1e-12).any():
            raise CaptureError(f"{path}, line {line(int((length < 1e-12).argmax()))}: zero-length normal")
        data[:, 3:6] /= length[:, None]
    return data


def read_modelnet40_normal_resampled(
    root: str | Path,
    split: str = "train",
    num_points: int | None = 1024,
    *,
    normals: bool = True,
    normalize: bool = True,
    variant: str | None = None,
) -> ShapeSet:
    """Read a split of ``modelnet40_normal_resampled`` (see the module docstring for the layout).

    Args:
        root: the folder holding ``modelnet40_shape_names.txt``.
        split: ``"train"`` or ``"test"``.
        num_points: ``P``, the first ``P`` points of each file (None: all, which must agree).
        normals: read the normals columns (``x,y,z,nx,ny,nz``); False leaves ``normals=None``.
        normalize: centre and scale each shape into the unit sphere (after taking the first ``P``).
        variant: ``"modelnet40"`` or ``"modelnet10"`` (the files' prefix); None picks modelnet40
            when its shape-names file exists, else modelnet10.

    Returns:
        a :class:`ShapeSet` with ``names`` the shape ids (``"airplane_0001"``) and labels the line
        index of the class in the shape-names file.
    """
    root = Path(root)
    _check_args(split, num_points, allow_none=True)
    if variant is None:
        variant = next((v for v in VARIANTS if (root / f"{v}_shape_names.txt").is_file()), VARIANTS[0])
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    class_file, split_file = root / f"{variant}_shape_names.txt", root / f"{variant}_{split}.txt"
    class_names = tuple(_read_lines(class_file, "class names file"))
    if len(set(class_names)) != len(class_names):
        raise CaptureError(f"{class_file}: duplicate class names")
    label_of = {name: i for i, name in enumerate(class_names)}
    ids = _read_lines(split_file, "split list")

    points, normals_out, labels = [], [], []
    for shape_id in ids:
        class_name = shape_id.rsplit("_", 1)[0]
        if class_name not in label_of:
            problem = f"class {class_name!r} not in {class_file.name}"
            raise CaptureError(f"{split_file}: shape {shape_id!r}: {problem}")
        path = root / class_name / f"{shape_id}.txt"
        data = _read_points_txt(path, num_points, 6 if normals else 3)
        if points and len(data) != len(points[0]):
            problem = f"{len(data)} points, but {ids[0]} has {len(points[0])} (set num_points)"
            raise CaptureError(f"{path}: {problem}")
        points.append(data[:, :3])
        if normals:
            normals_out.append(data[:, 3:6])
        labels.append(label_of[class_name])
    return _shape_set(
        points, normals_out if normals else None, labels, class_names, ids, split, normalize, num_points,
        {"source": "modelnet_normal_resampled", "variant": variant, "root": str(root), "sampling": "first_n"},
    )  # fmt: skip


def _shape_rng(seed: int, name: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the shape's name (not on reading order)."""
    digest = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:16], "little")
    return np.random.default_rng(np.random.SeedSequence([int(seed), digest]))


def _off_classes(root: Path) -> list[str]:
    """Class folders of the OFF layout: sorted subfolders that have a ``train`` or ``test`` folder."""
    return sorted(c.name for c in root.iterdir() if c.is_dir() and any((c / s).is_dir() for s in SPLITS))


def read_modelnet40_off(
    root: str | Path,
    split: str = "train",
    num_points: int = 1024,
    *,
    seed: int = 0,
    normalize: bool = True,
    normals: bool = True,
) -> ShapeSet:
    """Read a split of the original ModelNet40 (or ModelNet10) mesh layout, sampling each surface.

    Args:
        root: the folder holding ``<class>/<split>/*.off``.
        split: ``"train"`` or ``"test"``.
        num_points: ``P`` area-weighted surface samples per mesh, with face normals.
        seed: sampling seed; each shape's generator is derived from ``seed`` and its name.
        normalize: centre and scale each sampled cloud into the unit sphere.
        normals: keep the face normals (False: ``normals=None``).

    Returns:
        a :class:`ShapeSet`; classes are the sorted class folder names, ``names`` the file stems.
    """
    root = Path(root)
    _check_args(split, num_points, allow_none=False)
    if not root.is_dir():
        raise CaptureError(f"{root}: not a directory")
    class_names = tuple(_off_classes(root))
    if not class_names:
        raise CaptureError(f"{root}: no ModelNet class folders (<class>/{split}/*.off)")
    points, normals_out, labels, names = [], [], [], []
    for label, class_name in enumerate(class_names):
        for path in sorted((root / class_name / split).glob("*.off")):
            if path.name.startswith("."):
                continue
            vertices, faces = read_off(path)
            try:
                p, n = sample_surface(vertices, faces, num_points, _shape_rng(seed, path.stem))
            except ValueError as exc:
                raise CaptureError(f"{path}: cannot sample the surface ({exc})") from None
            points.append(p)
            normals_out.append(n)
            labels.append(label)
            names.append(path.stem)
    return _shape_set(
        points, normals_out if normals else None, labels, class_names, names, split, normalize, num_points,
        {"source": "modelnet_off", "root": str(root), "sampling": "area_weighted_surface", "seed": int(seed),
         "normal_source": "face winding (right-hand rule)"},
    )  # fmt: skip


def _check_args(split: str, num_points: int | None, allow_none: bool) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if num_points is None and allow_none:
        return
    if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) or num_points < 1:
        raise ValueError(f"num_points must be a positive integer, got {num_points!r}")


def _shape_set(points, normals, labels, class_names, names, split, normalize, num_points, metadata):
    """Stack per-shape ``[P, 3]`` arrays into a ShapeSet, normalising each cloud if asked."""
    count = len(points)
    stacked = np.stack(points) if count else np.zeros((0, num_points or 0, 3))
    if normalize and count:
        stacked = normalize_unit_sphere(stacked)[0]
    metadata = {**metadata, "num_points": int(stacked.shape[1]), "normalized": bool(normalize),
                "normalization": "unit_sphere" if normalize else None}  # fmt: skip
    return ShapeSet(
        points=stacked,
        labels=np.asarray(labels, dtype=np.int64),
        class_names=tuple(class_names),
        names=tuple(names),
        normals=None if normals is None else (np.stack(normals) if count else np.zeros_like(stacked)),
        split=split,
        metadata=metadata,
    )


def detect_modelnet_layout(root: str | Path) -> str | None:
    """``"normal_resampled"``, ``"off"`` or None: which ModelNet layout the folder ``root`` holds."""
    root = Path(root)
    if not root.is_dir():
        return None
    if any((root / f"{v}_shape_names.txt").is_file() for v in VARIANTS):
        return "normal_resampled"
    for class_name in _off_classes(root):
        if any(next((root / class_name / s).glob("*.off"), None) is not None for s in SPLITS):
            return "off"
    return None


def read_modelnet40(
    root: str | Path,
    split: str = "train",
    num_points: int = 1024,
    *,
    normals: bool = True,
    normalize: bool = True,
    seed: int = 0,
) -> ShapeSet:
    """Read a ModelNet split from either layout (:func:`detect_modelnet_layout`).

    ``seed`` only matters for the OFF layout (surface sampling); the resampled layout takes the
    first ``num_points`` points of each file.

    Raises:
        CaptureError: ``root`` holds neither layout.
    """
    layout = detect_modelnet_layout(root)
    if layout == "normal_resampled":
        return read_modelnet40_normal_resampled(root, split, num_points, normals=normals, normalize=normalize)
    if layout == "off":
        return read_modelnet40_off(root, split, num_points, seed=seed, normalize=normalize, normals=normals)
    raise CaptureError(
        f"{root}: not a ModelNet folder: expected modelnet40_shape_names.txt (modelnet40_normal_resampled) "
        "or <class>/<train|test>/*.off (ModelNet40 meshes)"
    )
