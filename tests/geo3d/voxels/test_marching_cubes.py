"""Tests of geo3d.voxels.marching_cubes against analytic signed distances."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geo3d.errors import MeshError
from geo3d.voxels.marching_cubes import marching_cubes

RADIUS, SPACING = 0.35, 0.025
ORIGIN = np.array([-0.5, -0.45, -0.55])
CENTRE = np.array([0.02, -0.01, 0.03])


def _sphere_sdf(shape=(41, 38, 43)):
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return np.linalg.norm(ORIGIN + idx * SPACING - CENTRE, axis=-1) - RADIUS


def test_sphere_round_trip():
    mesh = marching_cubes(_sphere_sdf(), 0.0, sample_origin=ORIGIN, spacing=SPACING)
    radii = np.linalg.norm(mesh.vertices - CENTRE, axis=1)
    assert np.abs(radii - RADIUS).max() < 0.05 * SPACING  # linear interpolation of a smooth SDF
    tm = mesh.to_trimesh()
    assert tm.is_watertight and tm.is_winding_consistent
    assert tm.volume == pytest.approx(4 / 3 * math.pi * RADIUS**3, rel=0.01)  # > 0: faces wind outwards
    radial = (mesh.vertices - CENTRE) / radii[:, None]
    assert (np.einsum("ij,ij->i", mesh.vertex_normals, radial) > 0.99).all()
    face_normals = mesh.face_normals()
    face_radial = mesh.vertices[mesh.faces].mean(1) - CENTRE
    assert (np.einsum("ij,ij->i", face_normals, face_radial) > 0).all()


def test_level_and_anisotropic_spacing():
    spacing = np.array([0.02, 0.03, 0.025])
    shape = (50, 34, 42)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    sdf = np.linalg.norm(ORIGIN + idx * spacing - CENTRE, axis=-1) - RADIUS
    mesh = marching_cubes(sdf, level=0.05, sample_origin=ORIGIN, spacing=spacing)
    radii = np.linalg.norm(mesh.vertices - CENTRE, axis=1)
    assert np.abs(radii - (RADIUS + 0.05)).max() < 0.002


def test_inside_above_gives_the_same_outward_surface():
    sdf = _sphere_sdf()
    below = marching_cubes(sdf, 0.0, ORIGIN, SPACING)
    above = marching_cubes(-sdf, 0.0, ORIGIN, SPACING, inside="above")  # density: large inside
    np.testing.assert_allclose(np.sort(above.vertices, axis=0), np.sort(below.vertices, axis=0), atol=1e-5)
    assert above.to_trimesh().volume == pytest.approx(below.to_trimesh().volume, rel=1e-6)
    radial = above.vertices - CENTRE
    assert (np.einsum("ij,ij->i", above.vertex_normals, radial) > 0).all()


def test_mask_and_nan_remove_the_same_cubes():
    sdf = _sphere_sdf()
    mask = np.ones(sdf.shape, dtype=bool)
    mask[:20] = False  # samples with x index < 20 unobserved
    masked = marching_cubes(sdf, 0.0, ORIGIN, SPACING, mask=mask)
    nan = sdf.copy()
    nan[:20] = np.nan
    with_nan = marching_cubes(nan, 0.0, ORIGIN, SPACING)
    # no triangle uses a cube that touches a masked sample: every vertex has x >= x of sample 20
    assert masked.vertices[:, 0].min() >= ORIGIN[0] + 20 * SPACING - 1e-9
    assert masked.num_faces > 1000
    np.testing.assert_allclose(np.sort(with_nan.vertices, axis=0), np.sort(masked.vertices, axis=0))
    full = marching_cubes(sdf, 0.0, ORIGIN, SPACING)
    kept = full.vertices[:, 0] >= ORIGIN[0] + 20 * SPACING - 1e-9
    assert masked.num_vertices == int(kept.sum())


def test_level_not_crossed_gives_an_empty_mesh():
    assert marching_cubes(np.ones((4, 4, 4)), 0.0).num_faces == 0
    assert marching_cubes(np.full((4, 4, 4), np.nan), 0.0).num_vertices == 0


def test_crossing_only_between_masked_samples_gives_an_empty_mesh():
    values = np.ones((4, 4, 4))
    values[0, 0, 0] = -1.0  # valid, but its only cube has the masked corner (1, 1, 1)
    mask = np.ones((4, 4, 4), dtype=bool)
    mask[1, 1, 1] = False
    assert marching_cubes(values, 0.0, mask=mask).num_faces == 0


def test_errors():
    with pytest.raises(MeshError, match="lattice"):
        marching_cubes(np.zeros((4, 4)), 0.0)
    with pytest.raises(MeshError, match="2 samples"):
        marching_cubes(np.zeros((1, 4, 4)), 0.0)
    with pytest.raises(MeshError, match="inside"):
        marching_cubes(_sphere_sdf((5, 5, 5)), 0.0, inside="outside")
    with pytest.raises(MeshError, match="spacing"):
        marching_cubes(_sphere_sdf((5, 5, 5)), 0.0, spacing=0.0)
    with pytest.raises(MeshError, match="mask"):
        marching_cubes(_sphere_sdf((5, 5, 5)), 0.0, mask=np.ones((4, 5, 5), dtype=bool))
