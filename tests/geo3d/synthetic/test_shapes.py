"""The shape-classification set: outer-surface points with outward normals, held-out instances."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from geo3d.synthetic import MODELS, ObjectModel
from geo3d.synthetic.primitives import box
from geo3d.synthetic.shapes import SHAPE_CLASSES, make_shape_set, object_surface_points


def test_union_of_overlapping_parts_is_sampled_on_its_outer_surface():
    model = ObjectModel("two_boxes", "car")
    model.add(*box([0, 0, 0], [2, 2, 2]), (0.5, 0.5, 0.5))
    model.add(*box([1, 0, 0], [3, 2, 2]), (0.5, 0.5, 0.5))
    points, normals = object_surface_points(model, 4000, np.random.default_rng(0))
    # distance to the boundary of the union box [0, 3] x [0, 2] x [0, 2]
    lo, hi = np.array([0, 0, 0]), np.array([3, 2, 2])
    to_boundary = np.minimum(np.abs(points - lo), np.abs(points - hi)).min(axis=1)
    assert to_boundary.max() < 1e-9
    # area weighting: the two 3 x 2 faces at y = 0 and y = 2 hold 12 / 32 of the outer area
    on_y = (np.abs(points[:, 1]) < 1e-9) | (np.abs(points[:, 1] - 2) < 1e-9)
    assert on_y.mean() == pytest.approx(12 / 32, abs=0.03)
    outward = points + 1e-3 * normals
    assert not np.any(np.all((outward > lo) & (outward < hi), axis=1))


@pytest.mark.parametrize("kind", ["car", "bicycle", "construction_vehicle", "pedestrian"])
def test_points_are_on_parts_and_outside_the_others(kind):
    model = MODELS[kind](np.random.default_rng(2))
    points, normals = object_surface_points(model, 600, np.random.default_rng(3))
    meshes = [trimesh.Trimesh(p.vertices, p.faces, process=False) for p in model.parts]
    distance = np.min([np.abs(trimesh.proximity.signed_distance(m, points)) for m in meshes], axis=0)
    assert distance.max() < 1e-6
    inside = np.any([m.contains(points + 1e-4 * normals) for m in meshes], axis=0)
    assert inside.mean() < 0.01  # a step along the normal leaves the object (grazing edges aside)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-9)


def test_shape_set_splits_and_determinism():
    train = make_shape_set("train", per_class=2, num_points=256, seed=1)
    again = make_shape_set("train", per_class=2, num_points=256, seed=1)
    test = make_shape_set("test", per_class=2, num_points=256, seed=1)
    assert train.class_names == SHAPE_CLASSES and len(train) == 2 * len(SHAPE_CLASSES)
    np.testing.assert_array_equal(train.points, again.points)
    assert not np.array_equal(train.points, test.points) and set(train.names).isdisjoint(test.names)
    np.testing.assert_array_equal(train.class_counts(), 2)
    norms = np.linalg.norm(train.points - train.points.mean(axis=1, keepdims=True), axis=2)
    np.testing.assert_allclose(norms.max(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="split"):
        make_shape_set("val")
    with pytest.raises(ValueError, match="unknown shape classes"):
        make_shape_set(classes=("unicorn",))
