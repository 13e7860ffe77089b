"""Scene containers, the class vocabulary and the procedural street."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from geo3d.synthetic import (
    CLASS_IDS,
    CLASS_NAMES,
    CLASS_PALETTE,
    THING_CLASSES,
    LabelledMesh,
    SyntheticScene,
    build_street_scene,
    class_id,
    colorize_labels,
    value_noise,
)


def test_class_vocabulary():
    assert len(CLASS_NAMES) == 17 and CLASS_NAMES[0] == "free" and CLASS_NAMES[-1] == "vegetation"
    assert CLASS_IDS["car"] == 4 and CLASS_IDS["driveable_surface"] == 11 and class_id("manmade") == 15
    assert THING_CLASSES == ("barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle",
                             "pedestrian", "traffic_cone", "trailer", "truck")
    assert CLASS_PALETTE.shape == (17, 3) and CLASS_PALETTE.dtype == np.uint8
    assert len({tuple(c) for c in CLASS_PALETTE}) == 17
    with pytest.raises(KeyError, match="unknown class"):
        class_id("tree")
    colours = colorize_labels(np.array([[4, 99], [-1, 0]]))
    np.testing.assert_array_equal(colours, [[CLASS_PALETTE[4], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]]])


def test_labelled_mesh_validation():
    tri = [[0, 0, 0], [1, 0, 0], [0, 1, 0]]
    mesh = LabelledMesh(tri, [[0, 1, 2]], 4, 2, (1, 0, 0), "noise")
    assert mesh.vertices.dtype == np.float64 and mesh.faces.dtype == np.int64
    with pytest.raises(ValueError, match="class id"):
        LabelledMesh(tri, [[0, 1, 2]], 0)
    with pytest.raises(ValueError, match="out of range"):
        LabelledMesh(tri, [[0, 1, 3]], 4)
    with pytest.raises(ValueError, match="texture"):
        LabelledMesh(tri, [[0, 1, 2]], 4, texture="marble")


def test_scene_merged_and_bounds():
    a = LabelledMesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]], 4)
    b = LabelledMesh([[0, 0, 5], [2, 0, 5], [0, 3, 5], [2, 3, 5]], [[0, 1, 2], [1, 3, 2]], 15)
    scene = SyntheticScene([a, b], sun_direction=[0, 0, 2])
    np.testing.assert_allclose(scene.sun_direction, [0, 0, 1])
    vertices, faces, mesh_index = scene.merged()
    assert vertices.shape == (7, 3)
    np.testing.assert_array_equal(faces, [[0, 1, 2], [3, 4, 5], [4, 6, 5]])
    np.testing.assert_array_equal(mesh_index, [0, 1, 1])
    np.testing.assert_allclose(scene.bounds(), [[0, 0, 0], [2, 3, 5]])


def _fingerprint(scene: SyntheticScene):
    vertices, faces, mesh_index = scene.merged()
    labels = [(m.semantic, m.instance, m.color, m.texture) for m in scene.meshes]
    return vertices, faces, labels, scene.sun_direction


def test_street_is_deterministic_per_seed():
    a, b, c = build_street_scene(3), build_street_scene(3), build_street_scene(4)
    fa, fb, fc = _fingerprint(a), _fingerprint(b), _fingerprint(c)
    np.testing.assert_array_equal(fa[0], fb[0])
    np.testing.assert_array_equal(fa[1], fb[1])
    assert fa[2] == fb[2] and np.array_equal(fa[3], fb[3])
    assert fa[0].shape != fc[0].shape or not np.array_equal(fa[0], fc[0])
    assert a.metadata["seed"] == 3


def test_street_layout(street_scene):
    semantic = {m.semantic for m in street_scene.meshes}
    for name in ("driveable_surface", "sidewalk", "terrain", "manmade", "vegetation", "car", "pedestrian",
                 "traffic_cone", "barrier"):
        assert CLASS_IDS[name] in semantic, name
    things = {CLASS_IDS[name] for name in THING_CLASSES}
    instances: dict[int, int] = {}
    for mesh in street_scene.meshes:
        if mesh.semantic in things:
            assert mesh.instance >= 1
            assert instances.setdefault(mesh.instance, mesh.semantic) == mesh.semantic  # one class each
        else:
            assert mesh.instance == 0
        assert all(0 <= c <= 1 for c in mesh.color)
    cars = [m for m in street_scene.meshes if m.semantic == CLASS_IDS["car"]]
    assert len({m.color for m in cars}) > 3  # per-instance colour variation
    # the ego lane (|y| < 1.75 m) is free of objects above the road along the whole street
    for mesh in street_scene.meshes:
        lo, hi = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
        over_lane = lo[1] < 1.5 and hi[1] > -1.5 and hi[2] > 0.01 and lo[2] < 3.0
        ahead = hi[0] > -20.0 and lo[0] < 56.0  # the barriers close the road beyond 58 m
        assert not (over_lane and ahead), (CLASS_NAMES[mesh.semantic], lo, hi)
    # the street spans -L/4 .. 3L/4 and the ground is at z = 0
    road = [m for m in street_scene.meshes if m.semantic == CLASS_IDS["driveable_surface"]][0]
    np.testing.assert_allclose(road.vertices[:, 0].min(), -20.0)
    np.testing.assert_allclose(road.vertices[:, 0].max(), 60.0)
    assert road.vertices[:, 2].max() == 0.0


def test_value_noise_is_smooth_and_in_range():
    points = np.random.default_rng(0).uniform(-50, 50, (2000, 3))
    values = value_noise(points, 0.7)
    assert values.min() >= 0 and values.max() <= 1 and values.std() > 0.05
    nearby = value_noise(points + 1e-4, 0.7)
    assert np.abs(nearby - values).max() < 1e-2  # continuous
    np.testing.assert_array_equal(values, value_noise(points, 0.7))


def test_import_is_light():
    code = "import sys, geo3d.synthetic; print(sorted({'open3d', 'trimesh', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
