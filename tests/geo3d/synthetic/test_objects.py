"""Object models: closed parts, one class each, plausible and varied sizes."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from geo3d.synthetic import CLASS_NAMES, MODELS

SIZES = {  # kind: (length range, height range) in metres, from the builders' documented variants
    "car": ((3.6, 5.5), (1.3, 2.2)), "truck": ((5.7, 10.0), (2.5, 4.0)), "bus": ((9.9, 13.2), (2.9, 3.6)),
    "pedestrian": ((0.2, 1.2), (0.95, 2.0)), "traffic_cone": ((0.1, 0.7), (0.44, 1.01)),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_models_are_closed_and_varied(kind):
    extents = []
    for seed in range(6):
        model = MODELS[kind](np.random.default_rng(seed))
        assert model.kind == kind and model.semantic in CLASS_NAMES[1:] and model.parts
        for part in model.parts:
            mesh = trimesh.Trimesh(part.vertices, part.faces, process=False)
            assert mesh.is_watertight, (kind, seed)
            assert all(0.0 <= c <= 1.0 for c in part.color)
        lo, hi = model.bounds()
        assert lo[2] >= -0.16 - 1e-9  # stands on the ground (buildings sink into it)
        extents.append(hi - lo)
        if kind in SIZES:
            (l0, l1), (h0, h1) = SIZES[kind]
            assert l0 <= hi[0] - lo[0] <= l1 and h0 <= hi[2] <= h1, (kind, seed, hi - lo)
    assert np.ptp(np.array(extents), axis=0).max() > 0.05  # sizes vary between instances
    again = MODELS[kind](np.random.default_rng(0))
    np.testing.assert_array_equal(np.concatenate([p.vertices for p in again.parts]),
                                  np.concatenate([p.vertices for p in MODELS[kind](np.random.default_rng(0)).parts]))


def test_thing_models_have_their_class():
    expected = {"car": "car", "truck": "truck", "bus": "bus", "trailer": "trailer", "motorcycle": "motorcycle",
                "bicycle": "bicycle", "pedestrian": "pedestrian", "traffic_cone": "traffic_cone",
                "barrier": "barrier", "construction_vehicle": "construction_vehicle", "tree": "vegetation",
                "bush": "vegetation", "building": "manmade", "street_lamp": "manmade"}
    for kind, cls in expected.items():
        model = MODELS[kind](np.random.default_rng(1))
        assert model.semantic == cls and model.is_thing == (cls not in ("vegetation", "manmade"))
