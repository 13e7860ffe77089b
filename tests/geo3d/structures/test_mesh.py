"""TriangleMesh validation, geometry helpers, Open3D / trimesh conversions and file round trips."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from geo3d.errors import MeshError
from geo3d.structures.mesh import TriangleMesh, read_mesh


def unit_cube() -> TriangleMesh:
    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    return TriangleMesh.from_trimesh(box)


def test_validation_names_the_problem():
    with pytest.raises(MeshError, match=r"vertices must have shape \[V, 3\]"):
        TriangleMesh(np.zeros((4, 2)), np.zeros((1, 3), dtype=int))
    with pytest.raises(MeshError, match=r"faces must have shape \[F, 3\]"):
        TriangleMesh(np.zeros((4, 3)), np.zeros((2, 4), dtype=int))
    with pytest.raises(MeshError, match="non-finite"):
        TriangleMesh(np.array([[0, 0, 0], [1, 0, np.nan], [0, 1, 0]], float), np.array([[0, 1, 2]]))
    with pytest.raises(MeshError, match=r"indices must lie in \[0, 3\)"):
        TriangleMesh(np.eye(3), np.array([[0, 1, 3]]))
    with pytest.raises(MeshError, match="must be integers"):
        TriangleMesh(np.eye(3), np.array([[0.0, 1.0, 2.0]]))
    with pytest.raises(MeshError, match="vertex_normals"):
        TriangleMesh(np.eye(3), np.array([[0, 1, 2]]), vertex_normals=np.zeros((2, 3)))
    with pytest.raises(MeshError, match="empty mesh"):
        TriangleMesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=int)).bounds()


def test_area_bounds_and_outward_face_normals_match_trimesh():
    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    mesh = TriangleMesh.from_trimesh(box)
    assert mesh.area() == pytest.approx(box.area)
    np.testing.assert_allclose(mesh.bounds(), box.bounds)
    np.testing.assert_allclose(mesh.face_normals(), box.face_normals, atol=1e-12)
    centres = mesh.vertices[mesh.faces].mean(axis=1)
    assert ((mesh.face_normals() * centres).sum(axis=1) > 0).all()  # outward on a box centred at 0


def test_open3d_round_trip_keeps_arrays():
    mesh = unit_cube()
    rng = np.random.default_rng(0)
    normals = rng.normal(size=mesh.vertices.shape)
    colors = rng.uniform(size=mesh.vertices.shape)
    mesh = TriangleMesh(mesh.vertices, mesh.faces, normals, colors)
    back = TriangleMesh.from_open3d(mesh.to_open3d())
    np.testing.assert_array_equal(back.vertices, mesh.vertices)
    np.testing.assert_array_equal(back.faces, mesh.faces)
    np.testing.assert_allclose(back.vertex_normals, normals)
    np.testing.assert_allclose(back.vertex_colors, colors)


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".stl", ".off"])
def test_save_and_read_round_trip(tmp_path, suffix):
    mesh = unit_cube()
    path = mesh.save(tmp_path / f"cube{suffix}")
    back = read_mesh(path)
    # STL stores triangle soup: compare the triangles' corner coordinates, not the indices
    np.testing.assert_allclose(np.sort(back.vertices[back.faces].reshape(-1, 9), axis=0),
                               np.sort(mesh.vertices[mesh.faces].reshape(-1, 9), axis=0), atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == [f"cube{suffix}"]  # atomic: no temporary left behind


def test_read_mesh_errors(tmp_path):
    with pytest.raises(MeshError, match="no such mesh file"):
        read_mesh(tmp_path / "missing.ply")
    truncated = tmp_path / "truncated.ply"
    full = unit_cube().to_trimesh().export(file_type="ply")
    truncated.write_bytes(full[: len(full) // 2])
    with pytest.raises(MeshError, match="truncated.ply"):
        read_mesh(truncated)
    points_only = tmp_path / "points.ply"
    points_only.write_bytes(trimesh.PointCloud(np.random.default_rng(0).normal(size=(10, 3))).export(file_type="ply"))
    with pytest.raises(MeshError, match="no triangles"):
        read_mesh(points_only)


def test_shared_bunny_reads(meshes_dir):
    mesh = read_mesh(meshes_dir / "bunny_watertight.ply")
    assert mesh.num_vertices == 2885 and mesh.num_faces > 0
    assert (np.abs(mesh.bounds()) <= 0.51).all()
