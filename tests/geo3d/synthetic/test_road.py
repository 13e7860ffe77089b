"""Road paths against closed-form lines and circles; random routes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geo3d.synthetic.road import LAYOUTS, RoadPath, Segment, make_route


def test_straight_then_arc_matches_geometry():
    radius = 50.0
    path = RoadPath.from_segments([Segment("straight", 30.0), Segment("curve", radius * math.pi / 2, 1 / radius)],
                                  start_xy=(5.0, -2.0), start_heading=0.0, step_m=0.5)
    assert path.length == pytest.approx(30.0 + radius * math.pi / 2)
    x, y, h = path.pose([0.0, 12.5, 30.0], [1.0, -1.0, 0.0])
    np.testing.assert_allclose(x, [5.0, 17.5, 35.0])
    np.testing.assert_allclose(y, [-1.0, -3.0, -2.0])
    # on the arc (a left turn about (35, 48)) a point at lateral offset d lies at radius R - d
    centre = np.array([35.0, -2.0 + radius])
    s = np.linspace(31.0, path.length - 1.0, 50)
    for d in (0.0, 3.0, -4.0):
        x, y, h = path.pose(s, d)
        r = np.hypot(x - centre[0], y - centre[1])
        np.testing.assert_allclose(r, radius - d, atol=0.5**2 / (8 * radius) + 1e-9)
        np.testing.assert_allclose(h, (s - 30.0) / radius, atol=1e-12)
    xe, ye, he = path.pose(path.length + 10.0)  # straight on beyond the end
    np.testing.assert_allclose([xe, ye, he], [35.0 + radius, -2.0 + radius + 10.0, math.pi / 2], atol=1e-9)
    xy, heading = path.samples(10.0, 40.0, step_m=2.0)
    assert np.all(np.diff(np.hypot(*np.diff(xy, axis=0).T)) < 2.0 + 1e-9) and len(xy) == len(heading)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_routes(layout):
    rng = np.random.default_rng(5)
    segments = make_route(rng, layout, 300.0, 40.0)
    assert segments[0] == Segment("straight", 40.0)
    assert sum(s.length_m for s in segments) >= 300.0
    if layout != "random":
        assert segments[1].kind == layout
    turned = np.cumsum([s.length_m * s.curvature for s in segments])
    assert np.all(np.abs(turned) <= math.radians(100) + 1e-9)
    with pytest.raises(ValueError, match="unknown layout"):
        make_route(rng, "roundabout", 100.0, 10.0)
    with pytest.raises(ValueError, match="increasing"):
        RoadPath(np.zeros((2, 2)), np.zeros(2), np.zeros(2))
