"""Tests of geo3d.voxels.grid (VoxelGrid, trilinear sampling) and geo3d.voxels.conversions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geo3d.errors import MeshError, VoxelError
from geo3d.structures.mesh import TriangleMesh, read_mesh
from geo3d.voxels.conversions import (
    grid_to_mesh,
    grid_to_points,
    mesh_to_voxels,
    occupancy_to_mesh,
    points_to_voxels,
    voxelize_points,
)
from geo3d.voxels.grid import VoxelGrid, sample_sparse, trilinear_sample

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cloud(n=500, seed=0):
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.uniform(-0.3, 0.7, (n, 3))), torch.as_tensor(rng.normal(size=(n, 4)))


# ------------------------------------------------------------------------------------ scatter
@pytest.mark.parametrize("reduce", ["occupancy", "count", "mean", "sum", "max"])
def test_points_to_voxels_matches_brute_force(reduce):
    points, features = _cloud()
    size = 0.13
    grid = points_to_voxels(points, size, features=None if reduce in ("occupancy", "count") else features,
                            reduce=reduce)
    origin = np.floor(points.numpy().min(0) / size) * size
    np.testing.assert_allclose(grid.origin.numpy(), origin)
    voxel = np.floor((points.numpy() - origin) / size).astype(np.int64)
    expected_idx, inverse = np.unique(voxel, axis=0, return_inverse=True)
    np.testing.assert_array_equal(grid.indices.numpy(), expected_idx)  # np.unique sorts x slowest, as geo3d
    assert grid.shape == tuple(voxel.max(0) + 1)
    for row in range(len(expected_idx)):
        members = inverse.reshape(-1) == row
        value = grid.values[row].numpy()
        if reduce == "occupancy":
            assert value.tolist() == [True]
        elif reduce == "count":
            assert value.tolist() == [members.sum()]
        else:
            ref = {"mean": np.mean, "sum": np.sum, "max": np.max}[reduce](features.numpy()[members], axis=0)
            np.testing.assert_allclose(value, ref, rtol=1e-12, atol=1e-12)


def test_points_outside_shape_are_dropped_and_counted():
    points = torch.tensor([[0.05, 0.05, 0.05], [0.15, 0.05, 0.05], [0.95, 0.05, 0.05], [-0.05, 0.0, 0.0]])
    result = voxelize_points(points, 0.1, origin=(0, 0, 0), shape=(2, 2, 2), reduce="count")
    assert result.num_dropped == 2
    assert result.voxel_of_point.tolist() == [0, 1, -1, -1]
    dense = voxelize_points(points, 0.1, origin=(0, 0, 0), shape=(2, 2, 2), reduce="count", dense=True).grid
    assert dense.dense.shape == (2, 2, 2, 1) and int(dense.dense.sum()) == 2 and int(dense.dense[1, 0, 0, 0]) == 1


def test_index_of_centers_round_trip_and_bounds():
    grid = VoxelGrid.from_bounds([[-1.0, 0.0, 2.0], [1.0, 0.5, 2.95]], 0.1)
    assert grid.shape == (20, 5, 10) and grid.is_sparse
    idx = torch.stack(torch.meshgrid(*[torch.arange(n) for n in grid.shape], indexing="ij"), -1).reshape(-1, 3)
    lookup = grid.index_of(grid.centers(idx))
    assert torch.equal(lookup.indices, idx) and bool(lookup.inside.all())
    outside = grid.index_of(torch.tensor([[-1.01, 0.15, 2.15], [0.0, 0.0, 3.0]]))
    assert outside.inside.tolist() == [False, False] and outside.indices[0].tolist() == [-1, 1, 1]
    np.testing.assert_allclose(grid.bounds().numpy(), [[-1, 0, 2], [1, 0.5, 3.0]], atol=1e-12)


def test_dense_sparse_round_trip():
    rng = np.random.default_rng(1)
    dense = torch.as_tensor(rng.normal(size=(4, 5, 6, 2)))
    dense[rng.uniform(size=(4, 5, 6)) < 0.6] = 0.0
    grid = VoxelGrid((0.5, 0, -1), 0.25, (4, 5, 6), dense=dense)
    sparse = grid.to_sparse()
    assert sparse.is_sparse and sparse.indices.shape[0] == int((dense != 0).any(-1).sum())
    assert torch.equal(sparse.to_dense().dense, dense)
    assert torch.equal(sparse.occupied_indices(), grid.occupied_indices())
    by_threshold = grid.to_sparse(threshold=0.5, channel=1)
    assert torch.equal(by_threshold.values[:, 1] > 0.5, torch.ones(by_threshold.values.shape[0], dtype=torch.bool))
    centres, values = grid_to_points(sparse)
    assert torch.equal(values, sparse.values)
    np.testing.assert_allclose(centres.numpy(), np.array([0.5, 0, -1]) + (sparse.indices.numpy() + 0.5) * 0.25)
    # unsorted sparse input is sorted on construction
    shuffled = torch.randperm(sparse.indices.shape[0])
    again = VoxelGrid(sparse.origin, 0.25, sparse.shape, indices=sparse.indices[shuffled],
                      values=sparse.values[shuffled])
    assert torch.equal(again.indices, sparse.indices) and torch.equal(again.values, sparse.values)


# ------------------------------------------------------------------------------------ trilinear
def _scipy_reference(values, origin, size, points, fill):
    from scipy.interpolate import RegularGridInterpolator

    axes = [origin[a] + (np.arange(values.shape[a]) + 0.5) * size for a in range(3)]
    return RegularGridInterpolator(axes, values, bounds_error=False, fill_value=fill)(points)


@pytest.mark.parametrize("method", ["gather", "grid_sample"])
def test_trilinear_matches_scipy_inside_and_nan_outside(method):
    rng = np.random.default_rng(2)
    values = rng.normal(size=(5, 6, 7, 3))
    origin, size = np.array([0.2, -0.4, 1.0]), 0.3
    points = origin + rng.uniform(-0.3, 2.4, (400, 3))
    out = trilinear_sample(torch.as_tensor(values), origin, size, torch.as_tensor(points), padding="nan",
                           method=method).numpy()
    ref = _scipy_reference(values, origin, size, points, np.nan)
    assert (np.isnan(out) == np.isnan(ref)).all() and (~np.isnan(ref)).sum() > 100
    np.testing.assert_allclose(out[~np.isnan(ref)], ref[~np.isnan(ref)], atol=1e-10)


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_trilinear_methods_agree_and_border_clamps(padding):
    rng = np.random.default_rng(3)
    values = torch.as_tensor(rng.normal(size=(4, 3, 5, 2)))
    points = torch.as_tensor(rng.uniform(-0.5, 2.0, (300, 3)))
    a = trilinear_sample(values, (0, 0, 0), 0.4, points, padding=padding, method="gather")
    b = trilinear_sample(values, (0, 0, 0), 0.4, points, padding=padding, method="grid_sample")
    torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    if padding == "border":
        outer_centres = torch.tensor([1.4, 1.0, 1.8], dtype=torch.float64)
        clamped = points.clamp(min=0.2).minimum(outer_centres)
        ref = _scipy_reference(values.numpy(), np.zeros(3), 0.4, clamped.numpy(), np.nan)
        np.testing.assert_allclose(a.numpy(), ref, atol=1e-10)


def test_trilinear_exact_on_linear_function_and_sparse_agrees():
    size, origin = 0.2, torch.tensor([-0.5, 0.1, 0.3], dtype=torch.float64)
    idx = torch.stack(torch.meshgrid(*[torch.arange(n) for n in (6, 6, 6)], indexing="ij"), -1)
    centres = origin + (idx.double() + 0.5) * size
    linear = centres @ torch.tensor([1.5, -2.0, 0.7], dtype=torch.float64) + 0.3
    points = origin + 0.1 + torch.rand(200, 3, dtype=torch.float64) * 1.0  # inside the centres' hull
    expected = points @ torch.tensor([1.5, -2.0, 0.7], dtype=torch.float64) + 0.3
    torch.testing.assert_close(trilinear_sample(linear, origin, size, points), expected)
    sparse = VoxelGrid(origin, size, (6, 6, 6), dense=linear[..., None]).to_sparse(mask=torch.ones(6, 6, 6, dtype=bool))
    torch.testing.assert_close(sample_sparse(sparse, points)[:, 0], expected)
    # a missing voxel: zeros padding counts it as 0, border renormalises, nan flags it
    holed = sparse.to_sparse(mask=~torch.all(sparse.indices == torch.tensor([2, 2, 2]), dim=1))
    probe = origin + (torch.tensor([[2.5, 2.5, 2.5]], dtype=torch.float64) + 0.25) * size
    assert bool(torch.isnan(sample_sparse(holed, probe, "nan")).all())
    full = sample_sparse(sparse, probe, "zeros")
    zero = sample_sparse(holed, probe, "zeros")
    missing_weight = 0.75**3
    torch.testing.assert_close(full - zero, missing_weight * linear[2, 2, 2].reshape(1, 1))
    torch.testing.assert_close(sample_sparse(holed, probe, "border"), zero / (1 - missing_weight))


@pytest.mark.parametrize("method", ["gather", "grid_sample"])
def test_trilinear_gradcheck(method):
    values = torch.rand(3, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    points = (torch.rand(6, 3, dtype=torch.float64) * 0.5 + 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v, p: trilinear_sample(v, (0, 0, 0), 0.25, p, method=method),
                                    (values, points))


# ------------------------------------------------------------------------------------ meshes
def _box_mesh(low, high):
    import trimesh

    box = trimesh.creation.box(bounds=np.array([low, high]))
    return TriangleMesh(np.asarray(box.vertices), np.asarray(box.faces))


def test_surface_voxels_match_open3d(meshes_dir):
    o3d = pytest.importorskip("open3d")
    mesh = read_mesh(meshes_dir / "bunny_watertight.ply")
    size = 0.04
    grid = mesh_to_voxels(mesh, size)
    ref = o3d.geometry.VoxelGrid.create_from_triangle_mesh_within_bounds(
        mesh.to_open3d(), size, grid.origin.numpy(), grid.bounds()[1].numpy())
    ref_idx = {tuple(v.grid_index) for v in ref.get_voxels()}
    ours = {tuple(v) for v in grid.indices.tolist()}
    # Open3D tests a box inflated by a tiny epsilon: it may add voxels the triangle only grazes
    assert len(ours - ref_idx) == 0
    assert len(ref_idx - ours) <= 0.02 * len(ours)


def test_surface_voxels_do_not_depend_on_the_chunking():
    import trimesh

    from geo3d.voxels.conversions import _surface_voxels

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    args = (np.asarray(sphere.vertices), np.asarray(sphere.faces), np.full(3, -0.55), 0.05, (22, 22, 22))
    whole = _surface_voxels(*args)
    assert len(whole) > 500
    np.testing.assert_array_equal(_surface_voxels(*args, chunk=37), whole)
    # every voxel touched by the sphere surface is near it: centre within half a voxel diagonal of r = 0.5
    centres = -0.55 + (whole + 0.5) * 0.05
    assert (np.abs(np.linalg.norm(centres, axis=1) - 0.5) <= 0.05 * math.sqrt(3) / 2 + 1e-9).all()


def test_solid_voxels_of_box_and_sphere_match_volume():
    size = 0.05
    box = mesh_to_voxels(_box_mesh([0.012, 0.013, 0.011], [0.512, 0.313, 0.411]), size, mode="solid",
                         origin=(0, 0, 0))
    # voxels touched by the box [0.012, 0.512] x ... : indices 0..10, 0..6, 0..8
    assert box.indices.shape[0] == 11 * 7 * 9
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.5)
    grid = mesh_to_voxels(TriangleMesh(sphere.vertices, sphere.faces), 0.025, mode="solid")
    inside = (torch.linalg.norm(grid.centers(), dim=1) < 0.5 - 0.025 * math.sqrt(3) / 2).sum()
    volume = 4 / 3 * math.pi * 0.5**3 / 0.025**3
    assert grid.indices.shape[0] >= volume  # surface voxels overhang the sphere
    assert int(inside) > 0.85 * volume
    assert grid.indices.shape[0] < volume * 1.25


def test_solid_needs_watertight_mesh():
    open_box = _box_mesh([0, 0, 0], [1, 1, 1])
    open_box = TriangleMesh(open_box.vertices, open_box.faces[:-1])
    with pytest.raises(MeshError, match="watertight"):
        mesh_to_voxels(open_box, 0.1, mode="solid")


def test_grid_to_mesh_sphere_and_occupancy_cubes():
    size = 0.05
    grid = VoxelGrid.from_bounds([[-0.6] * 3, [0.6] * 3], size, sparse=False)
    centres = grid.centers(torch.nonzero(torch.ones(grid.shape, dtype=bool)))
    sdf = (torch.linalg.norm(centres, dim=1) - 0.4).reshape(*grid.shape, 1).float()
    mesh = grid_to_mesh(VoxelGrid(grid.origin, size, grid.shape, dense=sdf))
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(radii - 0.4).max() < 0.1 * size
    normals_out = (mesh.vertex_normals * mesh.vertices).sum(1) > 0
    assert normals_out.all()
    occupied = VoxelGrid(grid.origin, size, grid.shape, dense=sdf < 0)
    cubes = occupancy_to_mesh(occupied, mode="cubes")
    tm = cubes.to_trimesh()
    assert tm.is_watertight and tm.is_winding_consistent
    assert tm.volume == pytest.approx(int((sdf < 0).sum()) * size**3, rel=1e-9)
    smooth = occupancy_to_mesh(occupied, mode="marching_cubes")
    assert smooth.to_trimesh().volume == pytest.approx(4 / 3 * math.pi * 0.4**3, rel=0.1)


# ------------------------------------------------------------------------------------ errors
def test_errors_name_the_problem():
    points, _ = _cloud(10)
    bad = points.clone()
    bad[3, 1] = math.nan
    with pytest.raises(VoxelError, match="NaN"):
        points_to_voxels(bad, 0.1)
    for size in (0.0, -0.1, math.inf):
        with pytest.raises(VoxelError, match="voxel_size"):
            points_to_voxels(points, size)
    with pytest.raises(VoxelError, match="empty"):
        points_to_voxels(points[:0], 0.1)
    assert points_to_voxels(points[:0], 0.1, origin=(0, 0, 0), shape=(2, 2, 2)).indices.shape == (0, 3)
    with pytest.raises(VoxelError, match=r"\[N, 3\]"):
        points_to_voxels(points[:, :2], 0.1)
    with pytest.raises(VoxelError, match="features"):
        points_to_voxels(points, 0.1, reduce="mean")
    with pytest.raises(VoxelError, match="reduce"):
        points_to_voxels(points, 0.1, reduce="median")
    with pytest.raises(VoxelError, match="duplicate"):
        VoxelGrid((0, 0, 0), 0.1, (2, 2, 2), indices=torch.zeros((2, 3), dtype=torch.int64), values=torch.ones(2, 1))
    with pytest.raises(VoxelError, match="indices must lie"):
        VoxelGrid((0, 0, 0), 0.1, (2, 2, 2), indices=torch.tensor([[0, 2, 0]]), values=torch.ones(1, 1))
    with pytest.raises(VoxelError, match="dense"):
        VoxelGrid((0, 0, 0), 0.1, (2, 2, 2), dense=torch.zeros(2, 3, 2))
    with pytest.raises(VoxelError, match="shape"):
        VoxelGrid((0, 0, 0), 0.1, (2, 0, 2), dense=torch.zeros(2, 0, 2))
    with pytest.raises(VoxelError, match="padding"):
        trilinear_sample(torch.zeros(2, 2, 2), (0, 0, 0), 0.1, points, padding="reflect")
