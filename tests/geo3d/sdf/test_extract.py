"""Chunked lattice evaluation, slices and marching-cubes extraction of analytic SDFs: vertex
accuracy, watertightness (trimesh), chunk-size invariance, the narrow band, and peak batch size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geo3d.errors import SDFError
from geo3d.sdf.analytic import box_sdf, sphere_sdf
from geo3d.sdf.extract import evaluate_grid, evaluate_grid_narrow_band, evaluate_slice, extract_mesh, lattice_spacing

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BOUNDS = ((-1.0, -0.9, -0.8), (1.0, 1.1, 0.9))
CENTER = (0.05, 0.1, 0.02)


def sphere(points):
    return sphere_sdf(points, 0.6, CENTER)


def box(points):
    return box_sdf(points, (0.5, 0.4, 0.3), CENTER)


class CountingSDF:
    """Records the largest batch it was called with."""

    def __init__(self, fn):
        self.fn, self.max_batch, self.calls, self.total = fn, 0, 0, 0

    def __call__(self, points):
        self.max_batch = max(self.max_batch, len(points))
        self.calls += 1
        self.total += len(points)
        return self.fn(points)


def test_grid_matches_direct_evaluation():
    resolution = (7, 9, 11)
    values = evaluate_grid(sphere, BOUNDS, resolution, chunk_size=50)
    axes = [np.linspace(BOUNDS[0][a], BOUNDS[1][a], n) for a, n in enumerate(resolution)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    expected = np.linalg.norm(points - np.array(CENTER), axis=-1) - 0.6
    assert values.shape == resolution and values.dtype == torch.float32
    np.testing.assert_allclose(values.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(lattice_spacing(BOUNDS, resolution), [2 / 6, 2 / 8, 1.7 / 10])


def test_chunk_size_does_not_change_values_and_bounds_the_batch():
    reference = evaluate_grid(sphere, BOUNDS, 24, chunk_size=24**3)
    counting = CountingSDF(sphere)
    chunked = evaluate_grid(counting, BOUNDS, 24, chunk_size=1000)
    assert torch.equal(chunked, reference)
    assert counting.max_batch == 1000 and counting.calls == -(-24**3 // 1000)
    counting = CountingSDF(sphere)
    mesh_small = extract_mesh(counting, BOUNDS, 24, chunk_size=777)
    mesh_large = extract_mesh(sphere, BOUNDS, 24, chunk_size=10**6)
    assert counting.max_batch <= 777
    assert np.array_equal(mesh_small.vertices, mesh_large.vertices)
    assert np.array_equal(mesh_small.faces, mesh_large.faces)


@pytest.mark.parametrize("shape, exact", [("sphere", sphere), ("box", box)])
def test_extracted_vertices_lie_on_the_surface_and_mesh_is_watertight(shape, exact):
    resolution = 48
    mesh = extract_mesh(exact, BOUNDS, resolution, chunk_size=5000)
    spacing = lattice_spacing(BOUNDS, resolution)
    distance = exact(torch.from_numpy(mesh.vertices)).abs().numpy()
    # vertices interpolate linearly along lattice edges; for a sphere the error is second order in the
    # voxel size (measured ~1e-3 voxels); at the box's edges the interpolated corner can sit up to
    # about half a voxel inside.
    bound = 0.01 * spacing.max() if shape == "sphere" else 0.5 * spacing.max()
    assert distance.max() < bound
    trimesh_mesh = mesh.to_trimesh()
    assert trimesh_mesh.is_watertight and trimesh_mesh.is_winding_consistent
    # outward normals: positive volume
    assert trimesh_mesh.volume > 0
    expected_volume = 4 / 3 * np.pi * 0.6**3 if shape == "sphere" else 1.0 * 0.8 * 0.6
    assert abs(trimesh_mesh.volume - expected_volume) < 0.02 * expected_volume
    normals_expected = torch.nn.functional.normalize(
        torch.from_numpy(mesh.vertices) - torch.tensor(CENTER, dtype=torch.float64), dim=-1).numpy()
    if shape == "sphere":
        assert (np.sum(mesh.vertex_normals * normals_expected, axis=1) > 0.99).all()


def test_narrow_band_gives_the_same_mesh_with_fewer_evaluations():
    dense_counter, band_counter = CountingSDF(sphere), CountingSDF(sphere)
    dense = evaluate_grid(dense_counter, BOUNDS, 61, chunk_size=4096)
    band = evaluate_grid_narrow_band(band_counter, BOUNDS, 61, coarse_factor=4, band_safety=1.0, chunk_size=4096)
    assert band_counter.max_batch <= 4096
    assert torch.equal(torch.sign(band), torch.sign(dense))
    near = dense.abs() < 2 * float(np.linalg.norm(lattice_spacing(BOUNDS, 61)))
    assert torch.equal(band[near], dense[near])
    mesh_dense = extract_mesh(sphere, BOUNDS, 61)
    mesh_band = extract_mesh(sphere, BOUNDS, 61, coarse_factor=4)
    assert np.array_equal(mesh_dense.faces, mesh_band.faces)
    assert np.array_equal(mesh_dense.vertices, mesh_band.vertices)
    assert dense_counter.total == 61**3 and band_counter.total < 0.5 * 61**3


def test_slice_orientation_and_values():
    values = evaluate_slice(sphere, BOUNDS, axis=2, position=0.02, resolution=(5, 9))
    assert values.shape == (5, 9)
    # top row is y max, first column x min
    top_left = torch.tensor([[BOUNDS[0][0], BOUNDS[1][1], 0.02]])
    bottom_right = torch.tensor([[BOUNDS[1][0], BOUNDS[0][1], 0.02]])
    torch.testing.assert_close(values[0, 0], sphere(top_left)[0])
    torch.testing.assert_close(values[-1, -1], sphere(bottom_right)[0])
    x_slice = evaluate_slice(sphere, BOUNDS, axis=0, position=0.05, resolution=11)
    assert x_slice.shape == (11, 11) and x_slice.min() < 0 < x_slice.max()


def test_empty_when_the_level_is_not_crossed():
    mesh = extract_mesh(lambda p: sphere_sdf(p, 0.1, (5.0, 5.0, 5.0)), BOUNDS, 8)
    assert mesh.num_vertices == 0 and mesh.num_faces == 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(bounds=((0, 0, 0), (1, 1, 0))), "bounds"), (dict(bounds=((0, 0), (1, 1))), "bounds"),
    (dict(resolution=1), "resolution"), (dict(resolution=(4, 4)), "resolution"), (dict(resolution=4.5), "resolution"),
    (dict(chunk_size=0), "chunk_size"), (dict(level=float("nan")), "level"),
    (dict(coarse_factor=0), "coarse_factor"), (dict(coarse_factor=2, level=0.1), "level = 0"),
    (dict(coarse_factor=2, band_safety=0.5), "band_safety"),
])
def test_bad_arguments(kwargs, match):
    options = dict(bounds=BOUNDS, resolution=8)
    options.update(kwargs)
    with pytest.raises(SDFError, match=match):
        extract_mesh(sphere, **options)


def test_bad_sdf_output_and_slice_arguments():
    with pytest.raises(SDFError, match="sdf_fn must return"):
        evaluate_grid(lambda p: p, BOUNDS, 4)
    with pytest.raises(SDFError, match="axis"):
        evaluate_slice(sphere, BOUNDS, axis=3, position=0.0, resolution=4)
    with pytest.raises(SDFError, match="position"):
        evaluate_slice(sphere, BOUNDS, axis=1, position=float("inf"), resolution=4)
