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
    Actor,
    RoadPath,
    Segment,
    LabelledMesh,
    SyntheticScene,
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


def test_actor_moves_along_its_path_and_keeps_its_instance():
    from geo3d.synthetic import MODELS

    path = RoadPath.from_segments([Segment("straight", 100.0)])
    model = MODELS["car"](np.random.default_rng(0))
    actor = Actor(model, 7, path, s0=20.0, lateral_m=1.5, speed_mps=4.0, direction=-1)
    scene = SyntheticScene([], actors=[actor])
    np.testing.assert_allclose(actor.pose_at(0.0), (20.0, 1.5, np.pi))
    np.testing.assert_allclose(actor.pose_at(2.0), (12.0, 1.5, np.pi))
    at0, at2 = scene.meshes_at(0.0), scene.meshes_at(2.0)
    assert len(at0) == len(model.parts) and {m.instance for m in at0 + at2} == {7}
    for a, b in zip(at0, at2):
        np.testing.assert_allclose(b.vertices - a.vertices, np.broadcast_to([-8.0, 0.0, 0.0], a.vertices.shape),
                                   atol=1e-9)
    with pytest.raises(ValueError, match="ego"):
        scene.ego2world(0.0)
