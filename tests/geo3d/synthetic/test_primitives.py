"""Mesh primitives: closed, with the volumes of their analytic shapes (trimesh as the reference)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trimesh

from geo3d.synthetic.primitives import bar, box, cylinder, ellipsoid, hull, place_vertices, prism, sweep, yaw_matrix


def _mesh(vertices, faces) -> trimesh.Trimesh:
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.is_watertight
    return mesh


def test_box_and_hull_volumes():
    assert _mesh(*box([0, 0, 0], [1, 2, 3])).volume == pytest.approx(6.0)
    with pytest.raises(ValueError, match="hi > lo"):
        box([0, 0, 0], [1, 0, 1])
    pts = np.random.default_rng(0).normal(size=(40, 3))
    vertices, faces = hull(pts)
    from scipy.spatial import ConvexHull

    assert abs(_mesh(vertices, faces).volume) == pytest.approx(ConvexHull(pts).volume)
    tri = [(0, 0), (2, 0), (0, 1)]  # right triangle of area 1, extruded 3 m
    assert abs(_mesh(*prism(tri, -1.5, 1.5)).volume) == pytest.approx(3.0)


@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_cylinder_frustum_cone(axis):
    n, r, h = 16, 0.5, 2.0
    polygon = 0.5 * n * r * r * math.sin(2 * math.pi / n)
    vertices, faces = cylinder([1, 2, 3], r, h, axis=axis, sections=n)
    assert abs(_mesh(vertices, faces).volume) == pytest.approx(polygon * h)
    k = "xyz".index(axis)
    np.testing.assert_allclose([vertices[:, k].min(), vertices[:, k].max()], [[1, 2, 3][k] - 1, [1, 2, 3][k] + 1])
    cone = _mesh(*cylinder([0, 0, 0], r, h, sections=n, top_radius=0.0))
    assert abs(cone.volume) == pytest.approx(polygon * h / 3)
    frustum = _mesh(*cylinder([0, 0, 0], r, h, sections=n, top_radius=r / 2))
    assert abs(frustum.volume) == pytest.approx(polygon * h * (1 + 0.5 + 0.25) / 3)


def test_ellipsoid_and_bar():
    mesh = _mesh(*ellipsoid([0, 0, 1], [1.0, 2.0, 0.5], subdivisions=4))
    assert abs(mesh.volume) == pytest.approx(4 / 3 * math.pi * 1.0, rel=0.01)
    beam = _mesh(*bar([0, 0, 0], [3, 4, 0], 0.2))
    assert abs(beam.volume) == pytest.approx(5.0 * 0.04)


def test_sweep_straight_and_arc():
    xy = np.stack([np.linspace(0, 10, 11), np.zeros(11)], 1)
    slab = _mesh(*sweep(xy, np.zeros(11), -1.0, 2.0, 0.0, 0.5))
    assert abs(slab.volume) == pytest.approx(10 * 3 * 0.5)
    # a quarter circle of radius 20, strip between 1 and 3 m left of it (radii 19..17 about the centre)
    angles = np.linspace(0, math.pi / 2, 400)
    xy = 20.0 * np.stack([np.sin(angles), 1 - np.cos(angles)], 1)
    ring = _mesh(*sweep(xy, angles, 1.0, 3.0, 0.0, 1.0))
    assert abs(ring.volume) == pytest.approx(math.pi / 4 * (19**2 - 17**2), rel=1e-3)
    with pytest.raises(ValueError):
        sweep(xy, angles, 3.0, 1.0, 0.0, 1.0)


def test_place_vertices_turns_then_moves():
    out = place_vertices(np.array([[1.0, 0.0, 0.5]]), 10.0, 20.0, math.pi / 2, 1.0)
    np.testing.assert_allclose(out, [[10.0, 21.0, 1.5]], atol=1e-12)
    np.testing.assert_allclose(yaw_matrix(0.3) @ yaw_matrix(-0.3), np.eye(3), atol=1e-15)
