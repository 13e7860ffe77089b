"""ShapeSet validation, subsets, the .npz round trip, unit-sphere normalisation and surface sampling."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from geo3d.errors import CaptureError
from geo3d.structures.shapes import FORMAT_NAME, ShapeSet, normalize_unit_sphere, sample_surface


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def make_set(num_shapes: int = 6, num_points: int = 16, normals: bool = True, seed: int = 0) -> ShapeSet:
    rng = np.random.default_rng(seed)
    return ShapeSet(
        points=rng.normal(size=(num_shapes, num_points, 3)),
        labels=np.arange(num_shapes) % 3,
        class_names=("car", "bus", "traffic_cone"),
        names=tuple(f"obj/instance_{i}" for i in range(num_shapes)),
        normals=_unit(rng.normal(size=(num_shapes, num_points, 3))) if normals else None,
        split="test",
        metadata={"source": "unit test", "normalized": False, "nested": {"a": [1, 2.5, None]}},
    )


# ------------------------------------------------------------------------------------- ShapeSet


def test_shapeset_coerces_dtypes_and_reports_sizes():
    shapes = make_set()
    assert shapes.points.dtype == np.float32 and shapes.normals.dtype == np.float32
    assert shapes.labels.dtype == np.int64
    assert len(shapes) == 6 and shapes.num_classes == 3 and shapes.num_points == 16
    np.testing.assert_array_equal(shapes.class_counts(), [2, 2, 2])
    assert shapes.class_counts().dtype == np.int64
    assert "shapes=6" in repr(shapes)
    default_names = ShapeSet(points=np.zeros((2, 1, 3)), labels=[0, 0], class_names=("a",))
    assert default_names.names == ("shape_000000", "shape_000001") and default_names.normals is None


def test_class_counts_include_empty_classes():
    shapes = ShapeSet(points=np.zeros((3, 2, 3)), labels=[2, 2, 0], class_names=("a", "b", "c"))
    np.testing.assert_array_equal(shapes.class_counts(), [1, 0, 2])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"points": np.zeros((2, 4))}, r"\[M, P, 3\]"),
        ({"points": np.zeros((2, 4, 2))}, r"\[M, P, 3\]"),
        ({"points": np.full((2, 4, 3), np.nan)}, "NaN"),
        ({"labels": [0, 3]}, r"\[0, 3\)"),
        ({"labels": [0, -1]}, r"\[0, 3\)"),
        ({"labels": [0.0, 1.0]}, "integers"),
        ({"labels": [0]}, r"\[M\]"),
        ({"class_names": ("a", "a", "b")}, "duplicates"),
        ({"names": ("only_one",)}, "2 strings"),
        ({"normals": np.ones((2, 4, 3))}, "unit length"),
        ({"normals": np.ones((2, 5, 3))}, "must match"),
        ({"metadata": {"bad": object()}}, "JSON"),
        ({"metadata": {"bad": float("nan")}}, "JSON"),
    ],
)
def test_shapeset_validation(change, message):
    kwargs = {"points": np.zeros((2, 4, 3)), "labels": [0, 1], "class_names": ("a", "b", "c")}
    kwargs.update(change)
    with pytest.raises(ValueError, match=message):
        ShapeSet(**kwargs)


def test_subset_by_mask_indices_and_slice():
    shapes = make_set()
    by_mask = shapes.subset(shapes.labels == 1)
    assert by_mask.names == ("obj/instance_1", "obj/instance_4")
    np.testing.assert_array_equal(by_mask.points, shapes.points[[1, 4]])
    np.testing.assert_array_equal(by_mask.normals, shapes.normals[[1, 4]])
    assert by_mask.class_names == shapes.class_names and by_mask.split == "test"
    assert by_mask.metadata == shapes.metadata and by_mask.metadata is not shapes.metadata
    by_index = shapes.subset([5, 0])
    assert by_index.names == ("obj/instance_5", "obj/instance_0")
    np.testing.assert_array_equal(by_index.labels, [2, 0])
    assert shapes.subset(slice(1, 3)).names == ("obj/instance_1", "obj/instance_2")
    empty = shapes.subset([])
    assert len(empty) == 0 and empty.points.shape == (0, 16, 3)
    with pytest.raises(ValueError, match="mask"):
        shapes.subset(np.ones(5, dtype=bool))
    with pytest.raises(ValueError, match="out of range"):
        shapes.subset([6])


# ------------------------------------------------------------------------------------ save / load


@pytest.mark.parametrize("normals", [True, False])
@pytest.mark.parametrize("compressed", [False, True])
def test_save_load_round_trip_is_exact(tmp_path, normals, compressed):
    shapes = make_set(normals=normals)
    shapes.names = ("é/ü", *shapes.names[1:])
    path = shapes.save(tmp_path / "sets" / "shapes.npz", compressed=compressed)
    assert path == tmp_path / "sets" / "shapes.npz"
    assert [p.name for p in path.parent.iterdir()] == ["shapes.npz"]  # no temporary file left behind
    loaded = ShapeSet.load(path)
    np.testing.assert_array_equal(loaded.points, shapes.points)
    assert loaded.points.dtype == np.float32 and loaded.labels.dtype == np.int64
    np.testing.assert_array_equal(loaded.labels, shapes.labels)
    if normals:
        np.testing.assert_array_equal(loaded.normals, shapes.normals)
    else:
        assert loaded.normals is None
    assert loaded.class_names == shapes.class_names and loaded.names == shapes.names
    assert loaded.split == "test" and loaded.metadata == shapes.metadata


def test_empty_set_round_trips(tmp_path):
    empty = make_set().subset([])
    loaded = ShapeSet.load(empty.save(tmp_path / "empty.npz"))
    assert len(loaded) == 0 and loaded.points.shape == (0, 16, 3)


def test_load_truncated_file_fails_cleanly(tmp_path):
    path = make_set().save(tmp_path / "shapes.npz")
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 30):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(CaptureError, match=rf"cut{cut}\.npz.*(corrupt|truncated)"):
            ShapeSet.load(bad)


def test_load_corrupt_member_fails_cleanly(tmp_path):
    path = make_set().save(tmp_path / "shapes.npz")
    data = bytearray(path.read_bytes())
    start = data.find(b"points.npy") + 200  # inside the stored points array: CRC mismatch
    data[start : start + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    with pytest.raises(CaptureError, match="shapes.npz"):
        ShapeSet.load(path)


def _write_npz(path, header, **arrays):
    np.savez(path, header=np.array(json.dumps(header)), **arrays)


def test_load_rejects_missing_wrong_format_and_newer_version(tmp_path):
    with pytest.raises(CaptureError, match="nothing.npz: file not found"):
        ShapeSet.load(tmp_path / "nothing.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(CaptureError, match="text.npz"):
        ShapeSet.load(tmp_path / "text.npz")
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(CaptureError, match="array.npy: not a shape-set .npz"):
        ShapeSet.load(tmp_path / "array.npy")
    arrays = {"points": np.zeros((1, 2, 3), np.float32), "labels": np.zeros(1, np.int64)}
    header = {"format": FORMAT_NAME, "version": 99, "class_names": ["a"], "names": ["x"], "split": "train",
              "metadata": {}}  # fmt: skip
    _write_npz(tmp_path / "newer.npz", header, **arrays)
    with pytest.raises(CaptureError, match="newer.npz: shape-set format version 99 is newer"):
        ShapeSet.load(tmp_path / "newer.npz")
    _write_npz(tmp_path / "other.npz", {**header, "format": "something-else", "version": 1}, **arrays)
    with pytest.raises(CaptureError, match="other.npz: not a geo3d shape set"):
        ShapeSet.load(tmp_path / "other.npz")
    _write_npz(tmp_path / "nolabels.npz", {**header, "version": 1}, points=arrays["points"])
    with pytest.raises(CaptureError, match="nolabels.npz: .*missing entries"):
        ShapeSet.load(tmp_path / "nolabels.npz")
    _write_npz(tmp_path / "badlabels.npz", {**header, "version": 1}, points=arrays["points"], labels=[4])
    with pytest.raises(CaptureError, match="badlabels.npz: invalid shape set"):
        ShapeSet.load(tmp_path / "badlabels.npz")
    np.savez(tmp_path / "badjson.npz", header=np.array("{not json"), **arrays)
    with pytest.raises(CaptureError, match="badjson.npz: corrupt header"):
        ShapeSet.load(tmp_path / "badjson.npz")


def test_load_does_not_unpickle(tmp_path):
    arrays = {"points": np.zeros((1, 2, 3), np.float32), "labels": np.zeros(1, np.int64)}
    np.savez(tmp_path / "pickled.npz", header=np.array([{"format": FORMAT_NAME}], dtype=object), **arrays)
    with pytest.raises(CaptureError, match="pickled.npz"):
        ShapeSet.load(tmp_path / "pickled.npz")
    assert zipfile.is_zipfile(tmp_path / "pickled.npz")


# -------------------------------------------------------------------------- normalize_unit_sphere


def test_normalize_unit_sphere_batched():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(2, 4, 50, 3)) * 7.0 + rng.normal(size=(2, 4, 1, 3)) * 20
    normalized, centre, scale = normalize_unit_sphere(points)
    assert normalized.shape == points.shape and centre.shape == (2, 4, 3) and scale.shape == (2, 4)
    np.testing.assert_allclose(normalized.mean(axis=-2), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=-1).max(axis=-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(normalized * scale[..., None, None] + centre[..., None, :], points, rtol=1e-12)


def test_normalize_unit_sphere_keeps_float32_and_handles_a_single_point():
    points = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 3.0]], dtype=np.float32)
    normalized, centre, scale = normalize_unit_sphere(points)
    assert normalized.dtype == np.float32 and centre.dtype == np.float32
    np.testing.assert_allclose(normalized, [[-1, 0, 0], [1, 0, 0]])
    np.testing.assert_allclose(centre, [2, 2, 3]) and np.testing.assert_allclose(scale, 1.0)
    same, centre, scale = normalize_unit_sphere(np.ones((5, 3)))
    np.testing.assert_array_equal(same, 0.0) and np.testing.assert_array_equal(scale, 1.0)
    with pytest.raises(ValueError, match=r"\[..., P, 3\]"):
        normalize_unit_sphere(np.zeros((4, 2)))


# --------------------------------------------------------------------------------- sample_surface


def _chi_square(observed: np.ndarray, expected: np.ndarray) -> float:
    return float(((observed - expected) ** 2 / expected).sum())


def test_sample_surface_is_uniform_on_a_unit_square():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=float)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    points, normals = sample_surface(vertices, faces, 40_000, np.random.default_rng(0))
    assert points.shape == (40_000, 3) and normals.shape == (40_000, 3)
    np.testing.assert_array_equal(points[:, 2], 0.0)
    assert points[:, :2].min() >= 0.0 and points[:, :2].max() <= 1.0
    np.testing.assert_allclose(normals, np.broadcast_to([0, 0, 1], normals.shape))  # counter-clockwise
    counts, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=4, range=[[0, 1], [0, 1]])
    # 15 degrees of freedom: P(chi2 > 37.7) = 0.001
    assert _chi_square(counts.ravel(), np.full(16, 40_000 / 16)) < 37.7


def test_sample_surface_face_counts_follow_area_and_normals_are_face_normals():
    # four disjoint triangles (told apart by x) of areas 0.5, 1, 2, 0 in different orientations
    rng = np.random.default_rng(3)
    triangles, normals_expected = [], []
    for i, size in enumerate([1.0, np.sqrt(2), 2.0, 0.0]):
        rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        local = np.array([[0, 0, 0], [size, 0, 0], [0, size, 0]]) @ rotation.T * 0.2
        triangles.append(local + [10.0 * i, 0, 0])
        normals_expected.append(rotation[:, 2])
    vertices = np.concatenate(triangles)
    faces = np.arange(12).reshape(4, 3)
    points, normals = sample_surface(vertices, faces, 30_000, np.random.default_rng(7))
    face = np.round(points[:, 0] / 10.0).astype(int)
    counts = np.bincount(face, minlength=4)
    assert counts[3] == 0  # zero-area face never picked
    assert _chi_square(counts[:3], 30_000 * np.array([0.5, 1, 2]) / 3.5) < 13.8  # 2 dof, p = 0.001
    np.testing.assert_allclose(normals, np.array(normals_expected)[face], atol=1e-12)
    # every point lies in its triangle's plane
    offsets = points - vertices[faces[face, 0]]
    np.testing.assert_allclose((offsets * normals).sum(axis=1), 0.0, atol=1e-12)


def test_sample_surface_on_a_cube_has_outward_normals_and_equal_faces():
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=float)
    faces = []
    for axis in range(3):
        for sign in (-1, 1):
            quad = [i for i in range(8) if corners[i, axis] == sign]
            # counter-clockwise seen from +axis (u x v = axis), reversed on the -axis side: outward
            u, v = np.eye(3)[(axis + 1) % 3], np.eye(3)[(axis + 2) % 3]
            quad.sort(key=lambda i: np.arctan2(corners[i] @ v, corners[i] @ u))
            if sign < 0:
                quad.reverse()
            faces += [[quad[0], quad[1], quad[2]], [quad[0], quad[2], quad[3]]]
    points, normals = sample_surface(corners, np.array(faces), 12_000, 5)
    np.testing.assert_allclose(np.abs(points).max(axis=1), 1.0)
    on_face = np.abs(points).argmax(axis=1)
    expected = np.zeros_like(points)
    expected[np.arange(len(points)), on_face] = np.sign(points[np.arange(len(points)), on_face])
    np.testing.assert_allclose(normals, expected, atol=1e-12)
    side = on_face * 2 + (points[np.arange(len(points)), on_face] > 0)
    assert _chi_square(np.bincount(side, minlength=6), np.full(6, 2000.0)) < 20.5  # 5 dof, p = 0.001


def test_sample_surface_is_deterministic_given_the_generator():
    rng = np.random.default_rng(0)
    vertices, faces = rng.normal(size=(30, 3)), rng.integers(0, 30, size=(40, 3))
    first = sample_surface(vertices, faces, 100, np.random.default_rng(42))
    second = sample_surface(vertices, faces, 100, np.random.default_rng(42))
    np.testing.assert_array_equal(first[0], second[0]) and np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], sample_surface(vertices, faces, 100, np.random.default_rng(43))[0])
    np.testing.assert_array_equal(sample_surface(vertices, faces, 100, 42)[0], first[0])  # int seed
    assert sample_surface(vertices, faces, 0, 0)[0].shape == (0, 3)


@pytest.mark.parametrize(
    ("vertices", "faces", "message"),
    [
        (np.zeros((3, 2)), [[0, 1, 2]], "vertices"),
        (np.eye(3), [[0, 1, 3]], "out of range"),
        (np.eye(3), [[0, 1]], "faces"),
        (np.eye(3), np.zeros((0, 3), dtype=int), "non-zero area"),
        (np.zeros((3, 3)), [[0, 1, 2]], "non-zero area"),
        (np.full((3, 3), np.nan), [[0, 1, 2]], "NaN"),
    ],
)
def test_sample_surface_rejects_bad_meshes(vertices, faces, message):
    with pytest.raises(ValueError, match=message):
        sample_surface(vertices, np.asarray(faces), 10, 0)
