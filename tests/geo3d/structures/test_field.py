"""OpenVocabField: validation, geometry helpers, the versioned file format and PLY / Open3D exports."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from geo3d.structures.field import (
    CLASS_PALETTE,
    FORMAT_TAG,
    OCCUPANCY_PRECISION,
    FieldError,
    OpenVocabField,
    relevance_colors,
)

SHAPE = (6, 5, 4)


def make_field(dtype=np.float32, with_extras=True, seed=0) -> OpenVocabField:
    rng = np.random.default_rng(seed)
    occupancy = rng.uniform(size=SHAPE).astype(np.float32)
    flat = np.sort(rng.choice(np.prod(SHAPE), size=20, replace=False))
    indices = np.stack(np.unravel_index(flat, SHAPE), axis=1).astype(np.int32)
    occupancy[tuple(indices.T)] = np.maximum(occupancy[tuple(indices.T)], 0.6)  # feature voxels are occupied
    features = rng.normal(size=(20, 8))
    features = (features / np.linalg.norm(features, axis=1, keepdims=True)).astype(dtype)
    colors = rng.integers(0, 256, size=(20, 3), dtype=np.uint8) if with_extras else None
    labels = rng.integers(0, 17, size=20).astype(np.int16) if with_extras else None
    return OpenVocabField(np.array([-3.0, -2.5, -1.0]), 0.5, "ego", occupancy, indices, features, "minilm-v1",
                          colors, labels, {"capture": "scene-0001", "method": "pop3d", "config": {"epochs": 3}})


def rewrite_npz(src, dst, **changes):
    """Copy the .npz at ``src`` to ``dst`` with entries replaced (None removes one)."""
    with np.load(src) as npz:
        data = {k: npz[k] for k in npz.files}
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    np.savez(dst, **data)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_save_load_round_trip(tmp_path, dtype):
    field = make_field(dtype)
    path = field.save(tmp_path / "field.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["field.npz"]  # atomic: no temporary left behind
    back = OpenVocabField.load(path)
    np.testing.assert_array_equal(back.origin, field.origin)
    np.testing.assert_array_equal(back.voxel_size, [0.5, 0.5, 0.5])
    assert back.shape == SHAPE and back.frame == "ego" and back.space == "minilm-v1"
    assert np.abs(back.occupancy - field.occupancy).max() <= OCCUPANCY_PRECISION + 1e-7
    assert back.occupancy.dtype == np.float32
    np.testing.assert_array_equal(back.indices, field.indices)
    assert back.features.dtype == dtype
    np.testing.assert_array_equal(back.features, field.features)  # bit-exact
    np.testing.assert_array_equal(back.colors, field.colors)
    np.testing.assert_array_equal(back.labels, field.labels)
    assert back.metadata == {"capture": "scene-0001", "method": "pop3d", "config": {"epochs": 3}}
    bare = make_field(with_extras=False)
    again = OpenVocabField.load(bare.save(tmp_path / "bare.npz"))
    assert again.colors is None and again.labels is None


def test_load_errors_name_the_file_and_problem(tmp_path):
    path = make_field().save(tmp_path / "good.npz")
    with pytest.raises(FieldError, match="missing.npz: no such field file"):
        OpenVocabField.load(tmp_path / "missing.npz")
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(FieldError, match="cut.npz: truncated or corrupt"):
        OpenVocabField.load(tmp_path / "cut.npz")
    # flip one byte inside the stored features member (uncompressed copy so the CRC is what catches it)
    stored = tmp_path / "stored.npz"
    rewrite_npz(path, stored)
    raw = bytearray(stored.read_bytes())
    with zipfile.ZipFile(stored) as archive:
        info = archive.getinfo("features.npy")
    offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.file_size - 5
    raw[offset] ^= 0xFF
    (tmp_path / "crc.npz").write_bytes(bytes(raw))
    with pytest.raises(FieldError, match="crc.npz: truncated or corrupt.*CRC"):
        OpenVocabField.load(tmp_path / "crc.npz")
    np.savez(tmp_path / "foreign.npz", points=np.zeros((3, 3)))
    with pytest.raises(FieldError, match="foreign.npz: not a geo3d open-vocabulary field file"):
        OpenVocabField.load(tmp_path / "foreign.npz")
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(FieldError, match="array.npy: not a geo3d"):
        OpenVocabField.load(tmp_path / "array.npy")
    rewrite_npz(path, tmp_path / "newer.npz", version=np.array(2))
    with pytest.raises(FieldError, match="newer.npz: field file version 2 is newer.*update geo3d"):
        OpenVocabField.load(tmp_path / "newer.npz")
    rewrite_npz(path, tmp_path / "older.npz", version=np.array(0))
    with pytest.raises(FieldError, match="older.npz: field file version 0 is older"):
        OpenVocabField.load(tmp_path / "older.npz")
    rewrite_npz(path, tmp_path / "lacks.npz", features=None)
    with pytest.raises(FieldError, match=r"lacks.npz: field file lacks entries \['features'\]"):
        OpenVocabField.load(tmp_path / "lacks.npz")
    rewrite_npz(path, tmp_path / "bad.npz", indices=np.full((20, 3), 99, dtype=np.int32))
    with pytest.raises(FieldError, match="bad.npz: invalid field file contents: field indices must lie in the grid"):
        OpenVocabField.load(tmp_path / "bad.npz")
    with np.load(path) as npz:
        header = json.loads(str(npz["header"]))
    header["shape"] = [1, 2, 3]
    rewrite_npz(path, tmp_path / "shape.npz", header=np.array(json.dumps(header)))
    with pytest.raises(FieldError, match=r"shape.npz: invalid.*occupancy_u8 must be uint8 of shape \[1, 2, 3\]"):
        OpenVocabField.load(tmp_path / "shape.npz")
    assert np.load(path)["format"] == FORMAT_TAG


def test_validation_names_the_argument():
    f = make_field()
    args = dict(origin=f.origin, voxel_size=0.5, frame="ego", occupancy=f.occupancy, indices=f.indices,
                features=f.features, space="s")

    def build(**changes):
        return OpenVocabField(**{**args, **changes})

    with pytest.raises(FieldError, match="origin must be 3 finite"):
        build(origin=[0.0, np.nan, 0.0])
    with pytest.raises(FieldError, match="voxel_size must be positive"):
        build(voxel_size=0.0)
    occ = f.occupancy.copy()
    occ[0, 0, 0] = np.inf
    with pytest.raises(FieldError, match="occupancy holds 1 NaN/inf"):
        build(occupancy=occ)
    with pytest.raises(FieldError, match=r"occupancy must lie in \[0, 1\]"):
        build(occupancy=f.occupancy * 2)
    with pytest.raises(FieldError, match=r"occupancy must have shape \[X, Y, Z\]"):
        build(occupancy=f.occupancy[0])
    with pytest.raises(FieldError, match=r"indices must have shape \[M, 3\]"):
        build(indices=f.indices[:, :2])
    with pytest.raises(FieldError, match=r"indices must lie in the grid \[6, 5, 4\], got \[6, 0, 0\]"):
        build(indices=np.vstack([f.indices[:-1], [[6, 0, 0]]]))
    dup = f.indices.copy()
    dup[1] = dup[0]
    with pytest.raises(FieldError, match="indices must be unique"):
        build(indices=dup)
    with pytest.raises(FieldError, match="one row per index"):
        build(features=f.features[:-1])
    with pytest.raises(FieldError, match="must be unit rows"):
        build(features=f.features * 2)
    bad = f.features.copy()
    bad[3, 0] = np.nan
    with pytest.raises(FieldError, match="features hold 1 NaN/inf rows"):
        build(features=bad)
    with pytest.raises(FieldError, match="float16 or float32"):
        build(features=np.ones((20, 1), dtype=np.int32))
    with pytest.raises(FieldError, match=r"colors must be \[20, 3\] uint8"):
        build(colors=np.zeros((20, 3), dtype=np.float32))
    with pytest.raises(FieldError, match=r"labels must lie in \[0, 32767\]"):
        build(labels=np.full(20, -1))
    with pytest.raises(FieldError, match="space must name"):
        build(space="")
    with pytest.raises(FieldError, match="metadata must be a JSON-serialisable"):
        build(metadata={"x": object()})


def test_unsorted_indices_are_sorted_with_their_rows():
    f = make_field()
    perm = np.random.default_rng(1).permutation(20)
    g = OpenVocabField(f.origin, f.voxel_size, f.frame, f.occupancy, f.indices[perm], f.features[perm], f.space,
                       f.colors[perm], f.labels[perm])
    np.testing.assert_array_equal(g.indices, f.indices)
    np.testing.assert_array_equal(g.features, f.features)
    np.testing.assert_array_equal(g.colors, f.colors)
    np.testing.assert_array_equal(g.labels, f.labels)


def test_space_mismatch_is_an_error():
    f = make_field()
    f.check_space("minilm-v1")
    with pytest.raises(FieldError, match="queries must use the same text encoder: field space 'minilm-v1', "
                                         "query space 'clip-b16'"):
        f.check_space("clip-b16")


def test_voxel_centers_world_to_index_and_feature_rows_vs_brute_force():
    f = make_field()
    centres = f.voxel_centers()
    for row, (i, j, k) in enumerate(f.indices):
        expected = [-3.0 + (i + 0.5) * 0.5, -2.5 + (j + 0.5) * 0.5, -1.0 + (k + 0.5) * 0.5]
        np.testing.assert_allclose(centres[row], expected)
    lookup = f.world_to_index(centres + np.random.default_rng(2).uniform(-0.24, 0.24, size=centres.shape))
    np.testing.assert_array_equal(lookup.indices, f.indices)
    assert lookup.inside.all()
    # corners: lower corner is inside, upper corner of the grid is outside (half-open)
    edge = f.world_to_index(np.array([[-3.0, -2.5, -1.0], [0.0, 0.0, 1.0], [-3.01, 0.0, 0.0]]))
    np.testing.assert_array_equal(edge.indices[0], [0, 0, 0])
    np.testing.assert_array_equal(edge.inside, [True, False, False])
    everything = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), -1).reshape(-1, 3)
    rows = f.feature_rows(np.vstack([everything, [[-1, 0, 0]]]))
    for voxel, row in zip(everything, rows[:-1]):
        match = np.flatnonzero((f.indices == voxel).all(axis=1))
        assert row == (match[0] if len(match) else -1)
    assert rows[-1] == -1


def test_occupied_mask_and_subset():
    f = make_field()
    assert f.num_occupied(0.7) == int((f.occupancy >= 0.7).sum())
    np.testing.assert_array_equal(f.occupied_mask(0.3), f.occupancy >= 0.3)
    keep = f.labels > 8
    s = f.subset(keep)
    assert s.num_features == int(keep.sum()) and s.feature_dim == 8
    np.testing.assert_array_equal(s.indices, f.indices[keep])
    np.testing.assert_array_equal(s.colors, f.colors[keep])
    with pytest.raises(FieldError, match=r"subset mask must be \[20\] bool"):
        f.subset(np.ones(3, bool))


def test_relevance_colouring_is_monotonic_in_lightness():
    colors = relevance_colors(np.linspace(-1.0, 1.0, 50)).astype(np.float64)
    luma = colors @ np.array([0.2126, 0.7152, 0.0722])
    assert (np.diff(luma) > 0).all()
    np.testing.assert_array_equal(colors[0], [68, 1, 84])
    np.testing.assert_array_equal(colors[-1], [253, 231, 37])


def test_to_points_colours_and_threshold():
    f = make_field()
    xyz, rgb = f.to_points("rgb", threshold=0.0)
    np.testing.assert_allclose(xyz, f.voxel_centers())
    np.testing.assert_array_equal(rgb, f.colors)
    _, rgb = f.to_points("class", threshold=0.0)
    np.testing.assert_array_equal(rgb, CLASS_PALETTE[f.labels])
    shown = f.occupancy[tuple(f.indices.T)] >= 0.8
    xyz, _ = f.to_points("rgb", threshold=0.8)
    np.testing.assert_allclose(xyz, f.voxel_centers()[shown])
    relevance = np.arange(20.0)
    _, rgb = f.to_points("relevance", relevance=relevance, threshold=0.0)
    np.testing.assert_array_equal(rgb, relevance_colors(relevance))
    with pytest.raises(FieldError, match=r"relevance must have shape \[20\]"):
        f.to_points("relevance", relevance=np.zeros(3))
    with pytest.raises(FieldError, match="needs a field with colors"):
        make_field(with_extras=False).to_points("rgb")
    with pytest.raises(FieldError, match="color_by must be"):
        f.to_points("depth")


def test_point_ply_reads_back_in_open3d(tmp_path):
    o3d = pytest.importorskip("open3d")
    f = make_field()
    path = f.export_ply(tmp_path / "points.ply", color_by="rgb", threshold=0.0)
    assert [p.name for p in tmp_path.iterdir()] == ["points.ply"]
    cloud = o3d.io.read_point_cloud(str(path))
    np.testing.assert_allclose(np.asarray(cloud.points), f.voxel_centers(), atol=1e-6)
    np.testing.assert_array_equal(np.round(np.asarray(cloud.colors) * 255).astype(np.uint8), f.colors)
    pc = f.to_open3d("points", color_by="class", threshold=0.0)
    np.testing.assert_allclose(np.asarray(pc.colors), CLASS_PALETTE[f.labels] / 255.0)
    with pytest.raises(FieldError, match="must end in .ply"):
        f.export_ply(tmp_path / "points.obj")


def test_cube_export_counts_and_closed_outward_cubes(tmp_path):
    o3d = pytest.importorskip("open3d")
    f = make_field()
    mesh = f.to_cubes("class", threshold=0.0)
    assert mesh.num_vertices == 8 * 20 and mesh.num_faces == 12 * 20
    np.testing.assert_allclose(mesh.area(), 20 * 6 * 0.25)
    first = mesh.vertices[:8]
    np.testing.assert_allclose(first.min(0), f.origin + f.indices[0] * 0.5)
    np.testing.assert_allclose(first.max(0), f.origin + (f.indices[0] + 1) * 0.5)
    normals, centres = mesh.face_normals()[:12], mesh.vertices[mesh.faces[:12]].mean(axis=1)
    assert ((normals * (centres - first.mean(0))).sum(axis=1) > 0).all()  # outward
    path = f.export_ply(tmp_path / "cubes.ply", mode="cubes", color_by="class", threshold=0.0)
    back = o3d.io.read_triangle_mesh(str(path))
    assert len(back.vertices) == 160 and len(back.triangles) == 240
    np.testing.assert_allclose(np.asarray(back.vertex_colors)[::8], CLASS_PALETTE[f.labels] / 255.0, atol=1e-6)
    edges = np.sort(mesh.faces[:12][:, [[0, 1], [1, 2], [2, 0]]].reshape(-1, 2), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all()  # each cube is closed
    directed = mesh.faces[:12][:, [[0, 1], [1, 2], [2, 0]]].reshape(-1, 2)
    assert len(np.unique(directed, axis=0)) == 36  # consistently oriented: no directed edge twice
    o3d_mesh = f.to_open3d("cubes", color_by="rgb", threshold=0.0)
    assert len(o3d_mesh.triangles) == 240
    np.testing.assert_allclose(np.asarray(o3d_mesh.vertex_colors)[::8], f.colors / 255.0)
