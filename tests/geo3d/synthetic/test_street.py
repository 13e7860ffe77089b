"""The procedural street: determinism, layouts, labels, a clear ego lane, moving traffic."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from geo3d.synthetic import (
    CLASS_IDS,
    CLASS_NAMES,
    LAYOUTS,
    LEAD_IN_M,
    THING_CLASSES,
    StreetConfig,
    build_street_scene,
)
from geo3d.geometry import transform_points


def _fingerprint(scene, time_s=3.0):
    meshes = scene.meshes_at(time_s)
    vertices = np.concatenate([m.vertices for m in meshes])
    labels = [(m.semantic, m.instance, m.color, m.texture) for m in meshes]
    return vertices, labels, scene.sun_direction, scene.ego2world(time_s)


def test_same_seed_same_scene_other_seed_other_scene():
    a, b, c = build_street_scene(3), build_street_scene(3), build_street_scene(4)
    fa, fb, fc = _fingerprint(a), _fingerprint(b), _fingerprint(c)
    np.testing.assert_array_equal(fa[0], fb[0])
    assert fa[1] == fb[1] and np.array_equal(fa[2], fb[2]) and np.array_equal(fa[3], fb[3])
    assert fa[0].shape != fc[0].shape or not np.array_equal(fa[0], fc[0])
    assert a.metadata["route"] != c.metadata["route"] and not np.array_equal(fa[2], fc[2])
    assert a.metadata["seed"] == 3 and a.metadata["config"]["layout"] == "random"


@pytest.mark.parametrize("layout", LAYOUTS[1:])
def test_layouts(layout):
    scene = build_street_scene(11, layout=layout, duration_s=4.0)
    route = scene.metadata["route"]
    assert route[1]["kind"] == layout
    assert sum(seg["length_m"] for seg in route) >= LEAD_IN_M + 6.0 * 4.0 + 100.0
    if layout == "junction":
        assert scene.metadata["junctions_s"] and any(m.semantic == CLASS_IDS["other_flat"] for m in scene.meshes)
    heading = [np.arctan2(scene.ego2world(t)[1, 0], scene.ego2world(t)[0, 0]) for t in (0.0, 30.0)]
    if layout == "curve":  # the ego turns with the road
        assert abs(heading[1] - heading[0]) > np.radians(5)


@pytest.fixture(scope="module")
def scene():
    return build_street_scene(5, duration_s=10.0)


def test_meshes_closed_labels_consistent(scene):
    things = {CLASS_IDS[name] for name in THING_CLASSES}
    owner: dict[int, int] = {}
    meshes = scene.meshes_at(2.0)
    for mesh in meshes:
        assert trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).is_watertight
        if mesh.semantic in things:
            assert mesh.instance >= 1 and owner.setdefault(mesh.instance, mesh.semantic) == mesh.semantic
        else:
            assert mesh.instance == 0
    present = {CLASS_NAMES[m.semantic] for m in meshes}
    assert present == set(CLASS_NAMES[1:]), set(CLASS_NAMES[1:]) - present
    cars = {m.instance: m.color for m in meshes if m.semantic == CLASS_IDS["car"] and m.texture == "noise"}
    assert len(set(cars.values())) > 0.8 * len(cars) > 3  # per-instance paint


def test_ego_lane_is_clear_for_the_whole_drive(scene):
    flat = {CLASS_IDS[n] for n in ("driveable_surface", "sidewalk", "terrain", "other_flat")}
    for time_s in np.arange(0.0, 10.01, 1.0):
        world2ego = np.linalg.inv(scene.ego2world(time_s))
        for mesh in scene.meshes_at(time_s):
            local = transform_points(world2ego, mesh.vertices)
            lo, hi = local.min(axis=0), local.max(axis=0)
            if mesh.semantic in flat and hi[2] < 0.2:
                continue
            hits_ego = lo[0] < 2.6 and hi[0] > -2.6 and lo[1] < 1.0 and hi[1] > -1.0 and lo[2] < 2.0 and hi[2] > 0.2
            assert not hits_ego, (time_s, CLASS_NAMES[mesh.semantic], mesh.instance, lo, hi)


def test_traffic_moves_and_lighting_varies(scene):
    moving = [a for a in scene.actors if a.speed_mps > 0]
    assert len(moving) >= 5 and {a.model.kind for a in moving} >= {"car", "pedestrian"}
    for actor in moving[:5]:
        (x0, y0, _), (x1, y1, _) = actor.pose_at(0.0), actor.pose_at(1.0)
        assert np.hypot(x1 - x0, y1 - y0) == pytest.approx(actor.speed_mps, rel=0.02)
    lights = {tuple(build_street_scene(s, duration_s=0.0).sun_direction.round(3)) for s in range(4)}
    assert len(lights) == 4


def test_config_validation():
    with pytest.raises(ValueError, match="layout"):
        StreetConfig(layout="maze")
    with pytest.raises(ValueError, match="traffic_density"):
        StreetConfig(traffic_density=2.0)
    with pytest.raises(TypeError):
        build_street_scene(0, lanes=3)
