"""ModelNet readers: OFF parsing (quirks, errors), the normal_resampled layout, the OFF layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from geo3d.errors import CaptureError
from geo3d.io import (
    detect_modelnet_layout,
    read_modelnet40,
    read_modelnet40_normal_resampled,
    read_modelnet40_off,
    read_off,
)
from geo3d.io.modelnet import _parse_off_fast, _parse_off_lines
from geo3d.structures.shapes import ShapeSet, normalize_unit_sphere

# ------------------------------------------------------------------------------------------- OFF

TETRA_VERTICES = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, 2.25, 0.0], [0.0, 0.0, -3.125]])
TETRA_FACES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def off_text(vertices, faces, header="OFF\n{v} {f} 0\n") -> str:
    lines = [header.format(v=len(vertices), f=len(faces))]
    lines += [" ".join(repr(float(c)) for c in v) + "\n" for v in vertices]
    lines += [f"{len(f)} " + " ".join(str(i) for i in f) + "\n" for f in faces]
    return "".join(lines)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "header",
    ["OFF\n{v} {f} 0\n", "OFF{v} {f} 0\n", "OFF {v} {f} 0\n", "# made by hand\nOFF\n\n# counts\n{v} {f} 6\n"],
    ids=["plain", "glued", "same-line", "comments"],
)
def test_read_off_values_and_header_variants(tmp_path, header):
    path = write(tmp_path / "tetra.off", off_text(TETRA_VERTICES, TETRA_FACES, header))
    vertices, faces = read_off(path)
    assert vertices.dtype == np.float64 and faces.dtype == np.int64
    np.testing.assert_array_equal(vertices, TETRA_VERTICES)
    np.testing.assert_array_equal(faces, TETRA_FACES)


def test_read_off_glued_header_modelnet_style(tmp_path):
    # the exact shape of ModelNet40's broken headers: "OFF" glued to the vertex count
    rng = np.random.default_rng(1)
    vertices, faces = rng.normal(size=(490, 3)), rng.integers(0, 490, size=(518, 3))
    text = off_text(vertices, faces, "OFF{v} {f} 0\n")
    assert text.splitlines()[0] == "OFF490 518 0"
    path = write(tmp_path / "glued.off", text)
    for got in (read_off(path), _parse_off_lines(text, path)):
        np.testing.assert_array_equal(got[0], vertices)
        np.testing.assert_array_equal(got[1], faces)


def test_read_off_fan_triangulates_polygons_and_ignores_extras(tmp_path):
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0.5, 1.5, 0], [2, 2, 2]], dtype=float)
    text = (
        "COFF\n6 3 0\n"
        + "".join(" ".join(map(str, v)) + " 255 0 0 255\n" for v in vertices)  # per-vertex colours
        + "4 0 1 2 3  # a quad\n5 0 1 2 4 3\n3 5 0 1 0.5 0.5 0.5\n"  # pentagon; face colour
    )
    got_vertices, faces = read_off(write(tmp_path / "poly.off", text))
    np.testing.assert_array_equal(got_vertices, vertices)
    np.testing.assert_array_equal(faces, [[0, 1, 2], [0, 2, 3], [0, 1, 2], [0, 2, 4], [0, 4, 3], [5, 0, 1]])


def test_fast_and_line_parsers_agree(tmp_path):
    rng = np.random.default_rng(0)
    vertices, faces = rng.normal(size=(200, 3)), rng.integers(0, 200, size=(300, 3))
    text = off_text(vertices, faces)
    assert _parse_off_fast(text) is not None  # triangles only: the vectorised path
    assert _parse_off_fast("\n4 0 ".join(text.rsplit("\n3 ", 1))) is None  # a quad: the line parser
    fast = read_off(write(tmp_path / "mesh.off", text))
    slow = _parse_off_lines(text, tmp_path / "mesh.off")
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fast[0], vertices)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("OFF\n4 4 0\n0 0 0\n1 0 0\n", r"truncated OFF file: it ends \(line 4\) before vertex 2 of 4"),
        ("OFF\n3 2 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", r"truncated .* before face 1 of 2"),
        ("OFF\n", "before the vertex and face counts"),
        ("", "before the OFF header"),
        ("PLY\n3 1 0\n", "line 1: not an OFF file"),
        ("OFF\nthree 1 0\n", "line 2: expected 'vertex_count face_count"),
        ("OFF\n3 1 0\n0 0 0\n1 zero 0\n0 1 0\n3 0 1 2\n", "line 4: vertex 1: expected 'x y z'"),
        ("OFF\n3 1 0\n0 0 0\n1 0\n0 1 0\n3 0 1 2\n", "line 4: vertex 1"),
        ("OFF\n3 1 0\n0 0 0\n1 0 nan\n0 1 0\n3 0 1 2\n", "line 4: vertex 1 is not finite"),
        ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 3\n", r"line 6: face 0: vertex index out of range \[0, 3\)"),
        ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n4 0 1 2\n", "line 6: face 0: expected 'n i1 ... in'"),
        ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n2 0 1\n", "line 6: face 0: expected 'n i1 ... in' with n >= 3"),
    ],
)
def test_read_off_errors_name_file_and_line(tmp_path, text, message):
    path = write(tmp_path / "bad_mesh.off", text)
    with pytest.raises(CaptureError, match=rf"bad_mesh\.off.*{message}"):
        read_off(path)


def test_read_off_missing_and_binary(tmp_path):
    with pytest.raises(CaptureError, match="missing.off: file not found"):
        read_off(tmp_path / "missing.off")
    (tmp_path / "binary.off").write_bytes(b"OFF BINARY\n\xff\xfe\x00\x01")
    with pytest.raises(CaptureError, match="binary.off: not an ASCII OFF file"):
        read_off(tmp_path / "binary.off")


# ------------------------------------------------------------------------------ normal_resampled

CLASSES = ("airplane", "chair", "night_stand")  # night_stand: class names may contain "_"


def make_resampled(root: Path, lines: int = 60, seed: int = 0, variant: str = "modelnet40") -> dict:
    """A tiny modelnet40_normal_resampled: 3 classes, 3 shapes each (2 train, 1 test); returns the
    float64 arrays written, by shape id."""
    rng = np.random.default_rng(seed)
    written = {}
    (root / f"{variant}_shape_names.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / f"{variant}_shape_names.txt").write_text("\n".join(CLASSES) + "\n")
    train, test = [], []
    for c in CLASSES:
        for i in range(1, 4):
            shape_id = f"{c}_{i:04d}"
            (train if i < 3 else test).append(shape_id)
            data = rng.normal(size=(lines, 6)) * [3, 2, 1, 1, 1, 1] + [5, 0, 0, 0, 0, 0]
            data[:, 3:] /= np.linalg.norm(data[:, 3:], axis=1, keepdims=True)
            written[shape_id] = data
            text = "\n".join(",".join(repr(float(v)) for v in row) for row in data) + "\n"
            write(root / c / f"{shape_id}.txt", text)
    (root / f"{variant}_train.txt").write_text("\n".join(train) + "\n")
    (root / f"{variant}_test.txt").write_text("\n".join(test) + "\n\n")
    return written


def test_resampled_reads_first_n_points_raw(tmp_path):
    written = make_resampled(tmp_path)
    shapes = read_modelnet40_normal_resampled(tmp_path, "train", num_points=20, normalize=False)
    assert isinstance(shapes, ShapeSet) and shapes.split == "train"
    assert shapes.class_names == CLASSES
    assert shapes.names == tuple(f"{c}_{i:04d}" for c in CLASSES for i in (1, 2))
    np.testing.assert_array_equal(shapes.labels, [0, 0, 1, 1, 2, 2])
    for k, name in enumerate(shapes.names):
        np.testing.assert_array_equal(shapes.points[k], written[name][:20, :3].astype(np.float32))
        np.testing.assert_allclose(shapes.normals[k], written[name][:20, 3:], atol=1e-6)
    assert shapes.metadata["sampling"] == "first_n" and shapes.metadata["normalized"] is False
    assert shapes.metadata["num_points"] == 20 and shapes.metadata["variant"] == "modelnet40"
    test = read_modelnet40_normal_resampled(tmp_path, "test", num_points=None, normalize=False)
    assert test.names == ("airplane_0003", "chair_0003", "night_stand_0003") and test.num_points == 60


def test_resampled_normalizes_the_first_n_points(tmp_path):
    written = make_resampled(tmp_path)
    shapes = read_modelnet40_normal_resampled(tmp_path, "test", num_points=25)
    assert shapes.metadata["normalized"] is True
    np.testing.assert_allclose(shapes.points.mean(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(shapes.points, axis=-1).max(axis=1), 1.0, rtol=1e-6)
    expected = normalize_unit_sphere(written["chair_0003"][:25, :3])[0]  # of the first 25, not of all
    np.testing.assert_allclose(shapes.points[1], expected, atol=1e-6)
    np.testing.assert_allclose(shapes.normals[1], written["chair_0003"][:25, 3:], atol=1e-6)


def test_resampled_without_normals_and_modelnet10_variant(tmp_path):
    make_resampled(tmp_path, variant="modelnet10")
    shapes = read_modelnet40_normal_resampled(tmp_path, "train", num_points=10, normals=False)
    assert shapes.normals is None and shapes.metadata["variant"] == "modelnet10" and len(shapes) == 6
    make_resampled(tmp_path, variant="modelnet40")  # both present: modelnet40 wins unless asked
    assert read_modelnet40_normal_resampled(tmp_path, num_points=10).metadata["variant"] == "modelnet40"
    assert read_modelnet40_normal_resampled(tmp_path, num_points=10, variant="modelnet10").metadata[
        "variant"] == "modelnet10"  # fmt: skip


def test_resampled_renormalizes_normals(tmp_path):
    make_resampled(tmp_path)
    path = tmp_path / "chair" / "chair_0001.txt"
    path.write_text("0,0,0,0,0,2\n1,0,0,0,3,4\n" + path.read_text())
    shapes = read_modelnet40_normal_resampled(tmp_path, num_points=5, normalize=False)
    np.testing.assert_allclose(shapes.normals[2, :2], [[0, 0, 1], [0, 0.6, 0.8]], atol=1e-7)


def test_resampled_errors_name_the_file(tmp_path):
    make_resampled(tmp_path, lines=30)
    with pytest.raises(CaptureError, match=r"airplane_0001\.txt: has 30 points, fewer than num_points=31"):
        read_modelnet40_normal_resampled(tmp_path, num_points=31)
    bad = tmp_path / "chair" / "chair_0002.txt"
    lines = bad.read_text().splitlines()
    lines[6] = lines[6].replace(",", ";", 1)
    bad.write_text("\n".join(lines))
    with pytest.raises(CaptureError, match=r"chair_0002\.txt, line 7: expected 6 comma-separated numbers"):
        read_modelnet40_normal_resampled(tmp_path, num_points=20)
    lines[6] = "0,0,0,0,0,0"
    bad.write_text("\n".join(lines))
    with pytest.raises(CaptureError, match=r"chair_0002\.txt, line 7: zero-length normal"):
        read_modelnet40_normal_resampled(tmp_path, num_points=20)
    lines[6] = "0,0,inf,0,0,1"
    bad.write_text("\n".join(lines))
    with pytest.raises(CaptureError, match=r"chair_0002\.txt, line 7: NaN or inf"):
        read_modelnet40_normal_resampled(tmp_path, num_points=20)
    assert len(read_modelnet40_normal_resampled(tmp_path, num_points=6)) == 6  # the bad line is not read
    (tmp_path / "night_stand" / "night_stand_0001.txt").unlink()
    with pytest.raises(CaptureError, match=r"night_stand_0001\.txt: file not found"):
        read_modelnet40_normal_resampled(tmp_path, num_points=6)
    (tmp_path / "modelnet40_test.txt").write_text("sofa_0001\n")
    with pytest.raises(CaptureError, match=r"modelnet40_test\.txt: shape 'sofa_0001': class 'sofa' not in"):
        read_modelnet40_normal_resampled(tmp_path, "test")
    with pytest.raises(ValueError, match="split"):
        read_modelnet40_normal_resampled(tmp_path, "val")
    with pytest.raises(ValueError, match="num_points"):
        read_modelnet40_normal_resampled(tmp_path, num_points=0)
    with pytest.raises(CaptureError, match="modelnet40_shape_names.txt: class names file not found"):
        read_modelnet40_normal_resampled(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------- OFF layout


def box(extents) -> tuple[np.ndarray, list[list[int]]]:
    """An axis-aligned box as 6 outward quads."""
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=float) * extents
    quads = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    return corners, quads


def make_off_layout(root: Path) -> None:
    """2 classes (written out of order), 2 train + 1 test meshes each; plus clutter to ignore."""
    for c, extents in (("table", (2.0, 1.0, 0.5)), ("bed", (1.0, 3.0, 1.0))):
        for i, split in ((1, "train"), (2, "train"), (3, "test")):
            vertices, quads = box(np.array(extents) * i)
            write(root / c / split / f"{c}_{i:04d}.off", off_text(vertices + 10.0, quads, "OFF{v} {f} 0\n"))
    write(root / "README.txt", "not a class")
    (root / "__MACOSX" / "bed").mkdir(parents=True)


def test_off_layout_samples_deterministically(tmp_path):
    make_off_layout(tmp_path)
    shapes = read_modelnet40_off(tmp_path, "train", num_points=300, seed=3, normalize=False)
    assert shapes.class_names == ("bed", "table")
    assert shapes.names == ("bed_0001", "bed_0002", "table_0001", "table_0002")
    np.testing.assert_array_equal(shapes.labels, [0, 0, 1, 1])
    assert shapes.points.shape == (4, 300, 3) and shapes.normals.shape == (4, 300, 3)
    # points on the box surface (table_0002: [10, 14] x [10, 12] x [10, 11]), normals along axes
    table = shapes.points[3].astype(np.float64) - 10.0
    distance_to_a_side = np.abs(np.concatenate([table, table - [4, 2, 1]], axis=1)).min(axis=1)
    np.testing.assert_allclose(distance_to_a_side, 0.0, atol=1e-5)
    np.testing.assert_allclose(np.abs(shapes.normals).max(axis=-1), 1.0)
    again = read_modelnet40_off(tmp_path, "train", num_points=300, seed=3, normalize=False)
    np.testing.assert_array_equal(again.points, shapes.points)
    other_seed = read_modelnet40_off(tmp_path, "train", num_points=300, seed=4, normalize=False)
    assert not np.array_equal(other_seed.points, shapes.points)
    assert shapes.metadata["seed"] == 3 and shapes.metadata["sampling"] == "area_weighted_surface"


def test_off_layout_sampling_is_independent_of_which_files_are_read(tmp_path):
    make_off_layout(tmp_path / "full")
    full = read_modelnet40_off(tmp_path / "full", "train", num_points=64, seed=1)
    shutil.copytree(tmp_path / "full" / "table", tmp_path / "part" / "table")  # bed missing: table is class 0
    (tmp_path / "part" / "table" / "train" / "table_0001.off").unlink()
    part = read_modelnet40_off(tmp_path / "part", "train", num_points=64, seed=1)
    assert part.names == ("table_0002",) and part.labels.tolist() == [0]
    np.testing.assert_array_equal(part.points[0], full.points[3])
    np.testing.assert_array_equal(part.normals[0], full.normals[3])


def test_off_layout_normalizes_and_reports_bad_meshes(tmp_path):
    make_off_layout(tmp_path)
    test = read_modelnet40_off(tmp_path, "test", num_points=128, normals=False)
    assert test.normals is None and test.names == ("bed_0003", "table_0003")
    np.testing.assert_allclose(test.points.mean(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(test.points, axis=-1).max(axis=1), 1.0, rtol=1e-6)
    write(tmp_path / "bed" / "test" / "bed_0004.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n2 0 0\n3 0 1 2\n")
    with pytest.raises(CaptureError, match=r"bed_0004\.off: cannot sample the surface .*non-zero area"):
        read_modelnet40_off(tmp_path, "test")
    write(tmp_path / "bed" / "test" / "bed_0004.off", "OFF\n3 1 0\n0 0 0\n")
    with pytest.raises(CaptureError, match=r"bed_0004\.off: truncated"):
        read_modelnet40_off(tmp_path, "test")
    with pytest.raises(CaptureError, match="no ModelNet class folders"):
        read_modelnet40_off(tmp_path / "bed" / "test", "test")


# ------------------------------------------------------------------------------ detect / dispatch


def test_detect_and_dispatch(tmp_path):
    make_resampled(tmp_path / "resampled")
    make_off_layout(tmp_path / "meshes")
    (tmp_path / "empty").mkdir()
    assert detect_modelnet_layout(tmp_path / "resampled") == "normal_resampled"
    assert detect_modelnet_layout(tmp_path / "meshes") == "off"
    assert detect_modelnet_layout(tmp_path / "empty") is None
    assert detect_modelnet_layout(tmp_path / "nowhere") is None
    resampled = read_modelnet40(tmp_path / "resampled", "test", num_points=16)
    assert resampled.metadata["source"] == "modelnet_normal_resampled" and len(resampled) == 3
    meshes = read_modelnet40(tmp_path / "meshes", "test", num_points=16, seed=2)
    direct = read_modelnet40_off(tmp_path / "meshes", "test", 16, seed=2)
    np.testing.assert_array_equal(meshes.points, direct.points)
    with pytest.raises(CaptureError, match="empty: not a ModelNet folder"):
        read_modelnet40(tmp_path / "empty")


def test_reader_output_round_trips_through_npz(tmp_path):
    make_off_layout(tmp_path / "meshes")
    shapes = read_modelnet40(tmp_path / "meshes", "train", num_points=32)
    loaded = ShapeSet.load(shapes.save(tmp_path / "cache.npz"))
    np.testing.assert_array_equal(loaded.points, shapes.points)
    assert loaded.metadata == shapes.metadata and loaded.names == shapes.names
