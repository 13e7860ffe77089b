"""Tests of geo3d.nerf.export against analytic densities, geo3d's projections and file readers."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from geo3d.cameras.functional import points_to_depth, world_to_pixels
from geo3d.nerf.export import (
    density_for_alpha, density_grid, load_occupancy_npz, mesh_from_density, occupancy_from_density,
    points_from_depth, save_occupancy_npz, voxel_size_of, write_mesh_ply, write_point_cloud_ply,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RADIUS, PEAK, WIDTH = 0.5, 10.0, 0.03  # density PEAK inside RADIUS, tanh edge of WIDTH metres
CENTRE = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)  # off-centre sphere ...
AABB = torch.cat([CENTRE - torch.tensor([0.7, 0.6, 0.8]), CENTRE + torch.tensor([0.75, 0.7, 0.65])])
RESOLUTION = (40, 44, 36)  # ... in a non-cubic box and grid: cells 36.3 x 29.5 x 40.3 mm


def sphere_density(points: torch.Tensor) -> torch.Tensor:
    """[N, 3] world metres -> [N] density: PEAK inside, 0 outside, PEAK / 2 exactly at RADIUS."""
    r = (points.double() - CENTRE).norm(dim=-1)
    return 0.5 * PEAK * (1 - torch.tanh((r - RADIUS) / WIDTH))


def test_density_grid_matches_closed_form_at_cell_centres():
    calls = []

    def fn(points):
        calls.append(points.shape[0])
        assert points.dtype == torch.float32 and not torch.is_grad_enabled()
        return sphere_density(points)[:, None]  # [N, 1] is accepted too

    grid = density_grid(fn, AABB.tolist(), RESOLUTION, chunk=10_000)
    assert grid.shape == RESOLUTION and grid.dtype == torch.float32
    assert max(calls) == 10_000 and sum(calls) == math.prod(RESOLUTION)
    lo, hi = AABB[:3].numpy(), AABB[3:].numpy()
    axes = [lo[d] + (np.arange(n) + 0.5) * (hi[d] - lo[d]) / n for d, n in enumerate(RESOLUTION)]
    centres = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    r = np.linalg.norm(centres - CENTRE.numpy(), axis=-1)
    expected = 0.5 * PEAK * (1 - np.tanh((r - RADIUS) / WIDTH))
    # float32 points: ~6e-8 m rounding times the steepest slope PEAK / (2 WIDTH) = 167 / m
    np.testing.assert_allclose(grid.numpy(), expected, atol=2e-4)
    assert grid[0, 0, 0] < 1e-6 and grid[20, 20, 20] > PEAK * 0.99  # corner empty, near the centre full
    cube = density_grid(sphere_density, AABB, 8, dtype=torch.float64)
    assert cube.shape == (8, 8, 8) and cube.dtype == torch.float64


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"aabb": [0, 0, 0, 1, 1]}, "aabb"),
        ({"aabb": [0, 0, 0, 1, -1, 1]}, "aabb"),
        ({"aabb": [0, 0, 0, 1, math.nan, 1]}, "aabb"),
        ({"resolution": (4, 4)}, "resolution"),
        ({"resolution": 0}, "resolution"),
        ({"resolution": (4, 4.0, 4)}, "resolution"),
        ({"chunk": 0}, "chunk"),
        ({"density_fn": "sphere"}, "density_fn"),
        ({"density_fn": lambda p: p}, "density_fn must return"),
        ({"density_fn": lambda p: torch.full(p.shape[:1], math.nan)}, "NaN"),
    ],
)
def test_density_grid_rejects_bad_inputs(kwargs, name):
    args = {"density_fn": sphere_density, "aabb": [0, 0, 0, 1, 1, 1], "resolution": 4} | kwargs
    with pytest.raises(ValueError, match=name):
        density_grid(**args)


def test_occupancy_threshold_maths():
    step = 0.02
    sigma_star = density_for_alpha(0.01, step)  # -ln(0.99) / 0.02 = 0.5025 / m
    assert sigma_star == pytest.approx(-math.log(0.99) / step, rel=1e-12)
    assert 1 - math.exp(-sigma_star * step) == pytest.approx(0.01, rel=1e-12)
    density = torch.tensor([0.0, sigma_star * 0.999, sigma_star * 1.001, 100.0, -5.0, math.nan]).reshape(1, 2, 3)
    occupied = occupancy_from_density(density, step)
    assert occupied.dtype == torch.bool and occupied.shape == (1, 2, 3)
    assert occupied.flatten().tolist() == [False, False, True, True, False, False]
    # a larger step makes the same density more opaque
    assert occupancy_from_density(density, 10 * step, alpha_threshold=0.05).flatten().tolist() == [
        False, True, True, True, False, False]  # alpha(0.5 / m * 0.2 m) = 0.095 > 0.05
    by_density = occupancy_from_density(density, density_threshold=1.0)
    assert by_density.flatten().tolist() == [False, False, False, True, False, False]


@pytest.mark.parametrize(
    ("args", "kwargs", "name"),
    [
        ((torch.zeros(2, 2),), {"step_size": 0.1}, "density"),
        ((torch.zeros(2, 2, 2),), {}, "step_size"),
        ((torch.zeros(2, 2, 2),), {"step_size": -1.0}, "step_size"),
        ((torch.zeros(2, 2, 2),), {"step_size": 0.1, "alpha_threshold": 1.0}, "alpha_threshold"),
        ((torch.zeros(2, 2, 2),), {"density_threshold": math.inf}, "density_threshold"),
    ],
)
def test_occupancy_rejects_bad_inputs(args, kwargs, name):
    with pytest.raises(ValueError, match=name):
        occupancy_from_density(*args, **kwargs)


def test_marching_cubes_sphere_in_world_coordinates():
    trimesh = pytest.importorskip("trimesh")
    grid = density_grid(sphere_density, AABB, RESOLUTION)
    vertices, faces = mesh_from_density(grid, AABB, level=PEAK / 2)  # the tanh profile crosses PEAK/2 at RADIUS
    assert vertices.dtype == torch.float32 and faces.dtype == torch.int64 and faces.shape[1] == 3
    cell = voxel_size_of(AABB, RESOLUTION).numpy()
    radii = np.linalg.norm(vertices.double().numpy() - CENTRE.numpy(), axis=1)
    delta = np.abs(radii - RADIUS).max()
    assert delta < cell.max()  # within one cell, as asked; measured 2 mm (linear interpolation of the tanh)
    assert delta < 0.1 * cell.min()
    mesh = trimesh.Trimesh(vertices.numpy(), faces.numpy(), process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    # Volume bound: vertices lie in the shell r +- delta, so the (closed) mesh lies inside the ball of
    # radius r + delta; a triangle of edge <= e whose corners lie at radius >= rho = r - delta sags at most
    # rho - sqrt(rho^2 - e^2 / 3) <= e^2 / (3 rho) inwards (its enclosing circle has radius <= e / sqrt 3).
    edge = mesh.edges_unique_length.max()
    rho = RADIUS - delta
    low, high = 4 / 3 * math.pi * (rho - edge**2 / (3 * rho)) ** 3, 4 / 3 * math.pi * (RADIUS + delta) ** 3
    assert low < mesh.volume < high  # > 0: faces wind outwards; measured 0.3 % under 4/3 pi r^3
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * RADIUS**3, rel=0.03)
    # world mapping: a half-cell error in the origin would move the centroid by 15-20 mm
    np.testing.assert_allclose(mesh.center_mass, CENTRE.numpy(), atol=0.05 * cell.min())
    assert (mesh.bounds[0] > AABB[:3].numpy()).all() and (mesh.bounds[1] < AABB[3:].numpy()).all()


def test_mesh_from_density_rejects_bad_inputs():
    grid = density_grid(sphere_density, AABB, 6)
    with pytest.raises(ValueError, match=r"min 0\b.*max 10\b"):
        mesh_from_density(grid, AABB, level=20.0)
    with pytest.raises(ValueError, match="level"):
        mesh_from_density(grid, AABB, level=math.nan)
    with pytest.raises(ValueError, match="density"):
        mesh_from_density(grid[:, :, :1], AABB, level=5.0)
    with pytest.raises(ValueError, match="aabb"):
        mesh_from_density(grid, AABB[:5], level=5.0)


def _camera():
    K = torch.tensor([[60.0, 0.0, 31.5], [0.0, 55.0, 23.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    angle = 0.4
    rotation = torch.tensor([[math.cos(angle), 0.0, math.sin(angle)], [0.0, 1.0, 0.0],
                             [-math.sin(angle), 0.0, math.cos(angle)]], dtype=torch.float64)
    cam2world = torch.eye(4, dtype=torch.float64)
    cam2world[:3, :3], cam2world[:3, 3] = rotation, torch.tensor([0.5, -0.3, 1.2], dtype=torch.float64)
    return K, cam2world, 48, 64


def test_points_from_depth_round_trip():
    K, cam2world, height, width = _camera()
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randperm(height * width, generator=gen)[:500]
    v, u = pixels // width, pixels % width
    z = 1.0 + 2.0 * torch.rand(500, generator=gen, dtype=torch.float64)
    # known world points at pixel centres, by hand: p_cam = z K^-1 [u, v, 1]
    p_cam = torch.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1)
    points = p_cam @ cam2world[:3, :3].T + cam2world[:3, 3]
    depth = points_to_depth(points, K[None], cam2world[None], height, width)[0]  # geo3d's projection
    assert int((depth > 0).sum()) == 500
    colors = torch.rand(height, width, 3, generator=gen, dtype=torch.float64)
    back, back_colors = points_from_depth(depth, K, cam2world, colors)
    order = torch.argsort(pixels)  # points come back in row-major pixel order
    torch.testing.assert_close(back, points[order], atol=1e-9, rtol=0)
    torch.testing.assert_close(back_colors, colors[v, u][order])
    uv = world_to_pixels(back, K, cam2world).uv
    torch.testing.assert_close(uv, torch.stack([u, v], -1)[order].double(), atol=1e-6, rtol=0)
    # opacity mask; float32 inputs keep their dtype
    opacity = torch.zeros(height, width)
    opacity[v[:100], u[:100]] = 0.9
    kept, none = points_from_depth(depth.float(), K.float(), cam2world.float(), opacity=opacity, min_opacity=0.5)
    assert none is None and kept.shape == (100, 3) and kept.dtype == torch.float32
    torch.testing.assert_close(kept.double(), points[:100][torch.argsort(pixels[:100])], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"depth": torch.ones(1, 4, 5)}, "depth"),
        ({"depth": np.ones((4, 5))}, "depth"),
        ({"K": torch.eye(4)}, "K"),
        ({"cam2world": torch.eye(3)}, "cam2world"),
        ({"colors": torch.zeros(4, 5)}, "colors"),
        ({"opacity": torch.zeros(5, 4)}, "opacity"),
        ({"min_opacity": 1.5}, "min_opacity"),
    ],
)
def test_points_from_depth_rejects_bad_inputs(kwargs, name):
    args = {"depth": torch.ones(4, 5), "K": torch.eye(3), "cam2world": torch.eye(4)} | kwargs
    with pytest.raises(ValueError, match=name):
        points_from_depth(**args)


def _no_temp_files(folder):
    return [name for name in os.listdir(folder) if name.startswith(".") or name.endswith(".tmp")] == []


def test_point_cloud_ply_round_trip(tmp_path):
    trimesh = pytest.importorskip("trimesh")  # open3d reads these files too, but takes seconds to import
    gen = torch.Generator().manual_seed(1)
    points = torch.randn(257, 3, generator=gen)
    colors = torch.rand(257, 3, generator=gen)
    path = write_point_cloud_ply(tmp_path / "cloud.ply", points, colors)
    cloud = trimesh.load(path, process=False)
    np.testing.assert_array_equal(cloud.vertices, points.numpy())  # stored as float32
    np.testing.assert_array_equal(cloud.colors[:, :3], np.round(colors.numpy() * 255).astype(np.uint8))
    plain = write_point_cloud_ply(tmp_path / "plain.ply", points.numpy())
    assert len(trimesh.load(plain, process=False).vertices) == 257 and b"red" not in plain.read_bytes()[:300]
    empty = write_point_cloud_ply(tmp_path / "empty.ply", torch.zeros(0, 3))
    assert b"element vertex 0" in empty.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["cloud.ply", "empty.ply", "plain.ply"]


def test_mesh_ply_round_trip(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    grid = density_grid(sphere_density, AABB, 16)
    vertices, faces = mesh_from_density(grid, AABB, level=PEAK / 2)
    path = write_mesh_ply(tmp_path / "mesh.ply", vertices, faces)
    mesh = trimesh.load(path, process=False)
    np.testing.assert_allclose(mesh.vertices, vertices.numpy(), atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, faces.numpy())
    assert _no_temp_files(tmp_path)


def test_occupancy_npz_round_trip(tmp_path):
    density = density_grid(sphere_density, AABB, RESOLUTION)
    occupied = occupancy_from_density(density, step_size=0.03)
    path = save_occupancy_npz(tmp_path / "occ.npz", occupied, AABB, density=density)
    grid, stored = load_occupancy_npz(path)
    assert grid.frame == "world" and grid.shape == RESOLUTION
    np.testing.assert_array_equal(grid.occupied(), occupied.numpy())
    np.testing.assert_array_equal(stored, density.numpy())
    centres = grid.voxel_centers()  # SemanticOccupancy's centres = the cells density_grid sampled
    np.testing.assert_allclose(sphere_density(torch.from_numpy(centres).reshape(-1, 3)).reshape(RESOLUTION).numpy(),
                               density.numpy(), atol=2e-4)
    without, none = load_occupancy_npz(save_occupancy_npz(tmp_path / "bare.npz", occupied, AABB))
    assert none is None and without.occupied().sum() == occupied.sum()
    assert _no_temp_files(tmp_path)


def test_writes_are_atomic_and_validated(tmp_path, monkeypatch):
    points = torch.zeros(3, 3)
    write_point_cloud_ply(tmp_path / "keep.ply", points)
    before = (tmp_path / "keep.ply").read_bytes()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)  # the rename step fails: the old file stays, no temp left
    with pytest.raises(OSError, match="disk full"):
        write_point_cloud_ply(tmp_path / "keep.ply", torch.ones(5, 3))
    with pytest.raises(OSError, match="disk full"):
        save_occupancy_npz(tmp_path / "occ.npz", torch.zeros(2, 2, 2, dtype=torch.bool), [0, 0, 0, 1, 1, 1])
    monkeypatch.undo()
    assert (tmp_path / "keep.ply").read_bytes() == before and os.listdir(tmp_path) == ["keep.ply"]
    bad = [
        (lambda: write_point_cloud_ply(tmp_path / "a.txt", points), "path must end in .ply"),
        (lambda: write_point_cloud_ply(tmp_path / "a.ply", torch.zeros(3, 2)), "points"),
        (lambda: write_point_cloud_ply(tmp_path / "a.ply", points, torch.zeros(2, 3)), "colors"),
        (lambda: write_point_cloud_ply(tmp_path / "a.ply", points * math.nan), "points"),
        (lambda: write_mesh_ply(tmp_path / "m.ply", points, torch.zeros(1, 4, dtype=torch.int64)), "faces"),
        (lambda: write_mesh_ply(tmp_path / "m.ply", points, torch.zeros(1, 3)), "faces"),
        (lambda: save_occupancy_npz(tmp_path / "o.npz", torch.zeros(2, 2, 2), [0, 0, 0, 1, 1, 1]), "occupancy"),
        (lambda: save_occupancy_npz(tmp_path / "o.npz", torch.zeros(2, 2, dtype=torch.bool), [0] * 6), "occupancy"),
        (lambda: save_occupancy_npz(tmp_path / "o.npz", torch.zeros(2, 2, 2, dtype=torch.bool), [0] * 6), "aabb"),
        (lambda: save_occupancy_npz(tmp_path / "o.npz", torch.zeros(2, 2, 2, dtype=torch.bool), [0, 0, 0, 1, 1, 1],
                                    density=torch.zeros(3, 2, 2)), "density"),
    ]
    for call, name in bad:
        with pytest.raises(ValueError, match=name):
            call()
    assert os.listdir(tmp_path) == ["keep.ply"]
