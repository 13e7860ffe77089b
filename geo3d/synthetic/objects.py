"""Procedural object models of the street scenes: vehicles, people, street furniture, vegetation.

Each builder takes a ``numpy.random.Generator`` and returns an :class:`ObjectModel` in its local
frame (x forward, y left, z up, origin on the ground at the footprint centre, metres). Sizes,
proportions, variants, colours and details vary within plausible ranges for the class, so that the
class is told by shape and context rather than by one flat colour. Riders of bicycles and
motorcycles belong to the cycle (as nuScenes' boxes include them). :data:`MODELS` maps a model kind
to its builder; the same builders make the street scenes and the shape-classification set.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from geo3d.synthetic.primitives import ObjectModel, bar, box, cylinder, ellipsoid, hull, prism

GLASS = (0.1, 0.13, 0.17)
TYRE = (0.05, 0.05, 0.05)
PAINTS = np.array([[0.88, 0.88, 0.88], [0.08, 0.08, 0.1], [0.5, 0.52, 0.55], [0.62, 0.07, 0.06],
                   [0.1, 0.2, 0.48], [0.82, 0.78, 0.68], [0.18, 0.33, 0.22], [0.7, 0.7, 0.72],
                   [0.35, 0.2, 0.12], [0.9, 0.75, 0.1]])
SKIN = np.array([[0.95, 0.8, 0.68], [0.85, 0.65, 0.5], [0.62, 0.44, 0.3], [0.4, 0.27, 0.18]])


def _jitter(rng: np.random.Generator, rgb, sigma: float = 0.03) -> np.ndarray:
    return np.clip(np.asarray(rgb, dtype=np.float64) + rng.normal(0.0, sigma, 3), 0.0, 1.0)


def _paint(rng: np.random.Generator) -> np.ndarray:
    return _jitter(rng, PAINTS[rng.integers(len(PAINTS))])


def _wheels(model: ObjectModel, xs, half_track: float, radius: float, width: float) -> None:
    for x in xs:
        for y in (-half_track, half_track):
            model.add(*cylinder([x, y, radius], radius, width, axis="y", sections=14), TYRE)


def _lights(model: ObjectModel, length: float, width: float, z: float) -> None:
    for x, color in ((length / 2, (0.95, 0.95, 0.85)), (-length / 2, (0.7, 0.05, 0.05))):
        for y in (-width / 2 + 0.25, width / 2 - 0.25):
            model.add(*box([x - 0.03, y - 0.15, z], [x + 0.03, y + 0.15, z + 0.12]), color)


def car(rng: np.random.Generator) -> ObjectModel:
    """Sedan, hatchback, SUV or van: a bevelled body, a tapered glass cabin, a roof, wheels, lights."""
    variant = str(rng.choice(["sedan", "hatchback", "suv", "van"], p=[0.4, 0.25, 0.25, 0.1]))
    length, width, height = {"sedan": (rng.uniform(4.3, 4.9), rng.uniform(1.75, 1.9), rng.uniform(1.4, 1.5)),
                             "hatchback": (rng.uniform(3.7, 4.3), rng.uniform(1.68, 1.8), rng.uniform(1.45, 1.55)),
                             "suv": (rng.uniform(4.4, 5.0), rng.uniform(1.85, 2.0), rng.uniform(1.65, 1.85)),
                             "van": (rng.uniform(4.8, 5.4), rng.uniform(1.9, 2.05), rng.uniform(1.9, 2.15))}[variant]
    hood, front, rear_base, rear_top = {"sedan": (0.22, 0.42, 0.1, 0.26), "hatchback": (0.22, 0.42, 0.03, 0.08),
                                        "suv": (0.2, 0.36, 0.02, 0.05), "van": (0.1, 0.22, 0.0, 0.02)}[variant]
    model = ObjectModel("car", "car", metadata={"variant": variant, "size": [length, width, height]})
    paint = _paint(rng)
    hx, base = length / 2, 0.25
    belt = base + (0.5 if variant != "van" else 0.55) * (height - base) * (0.9 if variant == "van" else 1.0)
    model.add(*prism([(-hx, base), (hx, base), (hx, belt - 0.12), (hx - 0.2, belt), (-hx + 0.1, belt),
                      (-hx, belt - 0.1)], -width / 2, width / 2), paint, "noise")
    x0, x1 = -hx + rear_base * length, hx - hood * length
    t0, t1 = -hx + rear_top * length, hx - front * length
    yb, yt = width / 2 - 0.06, width / 2 - 0.2
    cabin = [(x0, -yb, belt), (x0, yb, belt), (x1, -yb, belt), (x1, yb, belt),
             (t0, -yt, height - 0.06), (t0, yt, height - 0.06), (t1, -yt, height - 0.06), (t1, yt, height - 0.06)]
    model.add(*hull(cabin), GLASS)
    model.add(*box([t0 + 0.05, -yt - 0.02, height - 0.08], [t1 - 0.05, yt + 0.02, height]), paint, "noise")
    radius = rng.uniform(0.3, 0.36)
    axle = 0.5 * length - (0.75 if variant != "van" else 0.7)
    _wheels(model, (-axle, axle), width / 2 - 0.12, radius, 0.22)
    _lights(model, length, width, belt - 0.25)
    return model


def truck(rng: np.random.Generator) -> ObjectModel:
    """Box truck, tipper or tractor unit: a cab with a windscreen, a load body, 2-3 axles."""
    variant = str(rng.choice(["box", "tipper", "tractor"], p=[0.5, 0.25, 0.25]))
    length = {"box": rng.uniform(6.5, 9.5), "tipper": rng.uniform(6.5, 8.5), "tractor": rng.uniform(5.8, 6.6)}[variant]
    width, cab_h = rng.uniform(2.3, 2.5), rng.uniform(2.7, 3.2)
    model = ObjectModel("truck", "truck", metadata={"variant": variant, "size": [length, width, cab_h]})
    paint = _paint(rng)
    hx, hy = length / 2, width / 2
    model.add(*prism([(hx - 2.2, 0.55), (hx, 0.55), (hx, cab_h - 0.3), (hx - 0.25, cab_h), (hx - 2.2, cab_h)],
                     -hy, hy), paint, "noise")
    model.add(*box([hx - 0.5, -hy + 0.1, 1.5], [hx + 0.02, hy - 0.1, cab_h - 0.45]), GLASS)
    model.add(*box([-hx, -0.5, 0.7], [hx - 2.2, 0.5, 1.05]), (0.15, 0.15, 0.15))  # chassis
    if variant == "box":
        body_h = rng.uniform(3.0, 3.8)
        model.add(*box([-hx, -hy, 1.05], [hx - 2.35, hy, body_h]), _jitter(rng, [0.85, 0.85, 0.83], 0.06), "noise")
    elif variant == "tipper":
        model.add(*prism([(-hx, 1.1), (hx - 2.35, 1.1), (hx - 2.35, 2.4), (-hx + 0.3, 2.4)], -hy, hy),
                  _jitter(rng, [0.55, 0.5, 0.45], 0.08), "noise")
    else:
        model.add(*cylinder([-hx + 1.0, 0.0, 1.15], 0.6, 0.12, sections=12), (0.2, 0.2, 0.2))  # fifth wheel
    axles = [hx - 1.3] + ([-hx + 1.2, -hx + 2.5] if length > 7.5 else [-hx + 1.4])
    _wheels(model, axles, hy - 0.2, 0.5, 0.35)
    return model


def bus(rng: np.random.Generator) -> ObjectModel:
    """City or coach bus: a long body with a bevelled front, window bands, a door, two axles."""
    length, width, height = rng.uniform(10.0, 13.0), rng.uniform(2.45, 2.55), rng.uniform(3.0, 3.5)
    model = ObjectModel("bus", "bus", metadata={"size": [length, width, height]})
    paint = _jitter(rng, [[0.8, 0.1, 0.08], [0.95, 0.8, 0.1], [0.9, 0.9, 0.9], [0.1, 0.3, 0.6],
                          [0.2, 0.5, 0.3]][rng.integers(5)])
    hx, hy = length / 2, width / 2
    model.add(*prism([(-hx, 0.35), (hx, 0.35), (hx, height - 0.4), (hx - 0.3, height), (-hx, height)], -hy, hy),
              paint, "noise")
    model.add(*box([-hx + 0.6, -hy - 0.02, 1.25], [hx - 0.6, hy + 0.02, height - 0.45]), GLASS)
    model.add(*box([hx - 0.05, -hy + 0.1, 1.0], [hx + 0.02, hy - 0.1, height - 0.5]), GLASS)
    _wheels(model, (hx - 2.5, -hx + 3.0), hy - 0.25, 0.5, 0.32)
    return model


def trailer(rng: np.random.Generator) -> ObjectModel:
    """Semi-trailer (box or flatbed with cargo) or a small car trailer; wheels at the back, legs or a
    drawbar at the front."""
    variant = str(rng.choice(["box", "flatbed", "small"], p=[0.45, 0.3, 0.25]))
    length = {"box": rng.uniform(9.0, 13.0), "flatbed": rng.uniform(8.0, 12.0), "small": rng.uniform(2.5, 4.0)}[variant]
    width = 2.5 if variant != "small" else rng.uniform(1.5, 2.0)
    model = ObjectModel("trailer", "trailer", metadata={"variant": variant, "size": [length, width]})
    hx, hy = length / 2, width / 2
    deck = 1.2 if variant != "small" else 0.6
    color = _jitter(rng, [[0.85, 0.85, 0.85], [0.3, 0.35, 0.5], [0.55, 0.55, 0.55], [0.6, 0.15, 0.1]][rng.integers(4)])
    model.add(*box([-hx, -hy, deck - 0.25], [hx, hy, deck]), (0.2, 0.2, 0.22), "noise")
    if variant == "box":
        model.add(*box([-hx, -hy, deck], [hx, hy, rng.uniform(3.6, 4.0)]), color, "noise")
    elif variant == "flatbed":
        x = -hx + 0.3
        while x < hx - 1.5:
            size = rng.uniform(1.0, 2.2)
            model.add(*box([x, -hy + 0.2, deck], [x + size, hy - 0.2, deck + rng.uniform(0.6, 1.6)]),
                      _jitter(rng, [0.6, 0.45, 0.25], 0.1), "noise")
            x += size + rng.uniform(0.2, 0.8)
    else:
        model.add(*box([-hx, -hy, deck], [hx, hy, deck + 0.4]), color, "noise")
    if variant == "small":
        model.add(*bar([hx, 0, deck - 0.1], [hx + 1.2, 0, 0.45], 0.08), (0.2, 0.2, 0.2))
        _wheels(model, (0.0,), hy - 0.1, 0.3, 0.18)
    else:
        for y in (-hy + 0.4, hy - 0.4):
            model.add(*box([hx - 2.3, y - 0.06, 0.0], [hx - 2.18, y + 0.06, deck - 0.25]), (0.25, 0.25, 0.25))
        _wheels(model, (-hx + 1.0, -hx + 2.3), hy - 0.2, 0.5, 0.35)
    return model


def construction_vehicle(rng: np.random.Generator) -> ObjectModel:
    """Excavator (tracks, turntable body, boom, arm, bucket), wheel loader or road roller."""
    variant = str(rng.choice(["excavator", "loader", "roller"], p=[0.5, 0.3, 0.2]))
    model = ObjectModel("construction_vehicle", "construction_vehicle", metadata={"variant": variant})
    body = _jitter(rng, [[0.95, 0.7, 0.05], [0.95, 0.5, 0.05], [0.85, 0.8, 0.1]][rng.integers(3)])
    dark = (0.12, 0.12, 0.12)
    if variant == "excavator":
        length = rng.uniform(3.8, 4.8)
        for y in (-1.15, 1.15):
            model.add(*prism([(-length / 2, 0.15), (-length / 2 + 0.3, 0.0), (length / 2 - 0.3, 0.0),
                              (length / 2, 0.15), (length / 2 - 0.2, 0.8), (-length / 2 + 0.2, 0.8)],
                             y - 0.3, y + 0.3), dark, "noise")
        model.add(*box([-1.6, -1.3, 0.8], [1.2, 1.3, 1.9]), body, "noise")
        model.add(*box([0.3, 0.2, 1.9], [1.2, 1.2, 3.0]), body, "noise")
        model.add(*box([1.18, 0.3, 2.1], [1.22, 1.1, 2.9]), GLASS)
        lift = rng.uniform(0.3, 0.9)
        elbow = np.array([1.2 + 2.8 * math.cos(lift), -0.3, 1.6 + 2.8 * math.sin(lift)])
        tip = elbow + np.array([rng.uniform(0.6, 1.6), 0.0, -rng.uniform(1.5, 2.4)])
        model.add(*bar([1.0, -0.3, 1.5], elbow, 0.35), body)
        model.add(*bar(elbow, tip, 0.28), body)
        model.add(*hull([tip + [dx, dy, dz] for dx in (-0.1, 0.5) for dy in (-0.45, 0.45) for dz in (-0.5, 0.1)]), dark)
    elif variant == "loader":
        model.add(*box([-2.2, -1.1, 0.7], [1.0, 1.1, 1.8]), body, "noise")
        model.add(*box([-1.4, -0.8, 1.8], [-0.2, 0.8, 3.1]), body, "noise")
        model.add(*box([-0.22, -0.7, 2.0], [-0.18, 0.7, 3.0]), GLASS)
        _wheels(model, (-1.5, 0.6), 1.05, 0.75, 0.5)
        model.add(*bar([0.6, 0.0, 1.4], [2.0, 0.0, rng.uniform(0.5, 2.0)], 0.3), body)
        z = float(model.parts[-1].vertices[:, 2].min())
        model.add(*prism([(1.9, z - 0.1), (2.8, z - 0.1), (2.6, z + 0.8), (1.9, z + 0.9)], -1.3, 1.3), dark)
    else:
        model.add(*cylinder([1.4, 0.0, 0.75], 0.75, 2.0, axis="y", sections=20), (0.3, 0.3, 0.3))
        model.add(*box([-2.0, -0.9, 0.5], [0.6, 0.9, 1.6]), body, "noise")
        model.add(*box([-1.6, -0.7, 1.6], [-0.4, 0.7, 2.8]), body, "noise")
        _wheels(model, (-1.4,), 0.8, 0.6, 0.45)
    return model


def _rider(model: ObjectModel, rng: np.random.Generator, seat, bars) -> None:
    seat, bars = np.asarray(seat, float), np.asarray(bars, float)
    shirt, skin = _jitter(rng, rng.uniform(0.1, 0.8, 3), 0.0), SKIN[rng.integers(len(SKIN))]
    shoulder = seat + [0.25, 0.0, 0.55]
    model.add(*bar(seat + [0, 0, 0.05], shoulder, 0.32), shirt, "noise")
    model.add(*ellipsoid(shoulder + [0.05, 0.0, 0.22], [0.11, 0.1, 0.13], 1), skin)
    for y in (-0.17, 0.17):
        model.add(*bar(shoulder + [0, y, -0.05], bars + [0, y, 0], 0.08), shirt)
        model.add(*bar(seat + [0.05, y * 0.8, 0.0], seat + [0.35, y, -0.55], 0.12), (0.15, 0.15, 0.2))


def motorcycle(rng: np.random.Generator, rider: bool | None = None) -> ObjectModel:
    """A motorcycle or scooter, optionally with its rider."""
    rider = bool(rng.uniform() < 0.4) if rider is None else rider
    model = ObjectModel("motorcycle", "motorcycle", metadata={"rider": rider})
    paint, radius = _paint(rng), rng.uniform(0.27, 0.33)
    for x in (-0.72, 0.72):
        model.add(*cylinder([x, 0.0, radius], radius, 0.12, axis="y", sections=16), TYRE)
    model.add(*hull([[x, y, z] for x in (-0.5, 0.55) for y in (-0.16, 0.16) for z in (0.35, 0.85)]
                    + [[0.2, 0, 1.0]]), paint, "noise")
    model.add(*box([-0.7, -0.15, 0.82], [0.0, 0.15, 0.92]), (0.1, 0.1, 0.1))
    model.add(*bar([0.6, 0, 0.5], [0.62, 0, 1.05], 0.06), (0.3, 0.3, 0.3))
    model.add(*bar([0.62, -0.35, 1.05], [0.62, 0.35, 1.05], 0.04), (0.3, 0.3, 0.3))
    if rider:
        _rider(model, rng, [-0.3, 0.0, 0.92], [0.6, 0.0, 1.05])
    return model


def bicycle(rng: np.random.Generator, rider: bool | None = None) -> ObjectModel:
    """A bicycle (thin wheels, tube frame, saddle, handlebar), optionally with its rider."""
    rider = bool(rng.uniform() < 0.4) if rider is None else rider
    model = ObjectModel("bicycle", "bicycle", metadata={"rider": rider})
    frame, radius = _paint(rng), rng.uniform(0.3, 0.36)
    rear, front = np.array([-0.53, 0.0, radius]), np.array([0.53, 0.0, radius])
    for hub in (rear, front):
        model.add(*cylinder(hub, radius, 0.04, axis="y", sections=20), TYRE)
    crank, seat, head = np.array([-0.05, 0, 0.3]), np.array([-0.22, 0, 0.95]), np.array([0.42, 0, 0.95])
    for a, b in ((rear, seat), (rear, crank), (crank, seat), (crank, head), (seat, head), (head, front)):
        model.add(*bar(a, b, 0.04), frame)
    model.add(*box(seat + [-0.12, -0.06, 0.0], seat + [0.1, 0.06, 0.05]), (0.08, 0.08, 0.08))
    model.add(*bar(head + [0.02, -0.28, 0.1], head + [0.02, 0.28, 0.1], 0.035), (0.3, 0.3, 0.3))
    if rider:
        _rider(model, rng, seat + [0, 0, 0.05], head + [0.02, 0, 0.1])
    return model


def pedestrian(rng: np.random.Generator) -> ObjectModel:
    """Adult or child, standing or mid-stride: legs, torso, arms, head, sometimes a bag."""
    height = rng.uniform(1.5, 1.95) if rng.uniform() > 0.12 else rng.uniform(1.0, 1.4)
    stride = rng.uniform(0.0, 0.35) * height / 1.75
    model = ObjectModel("pedestrian", "pedestrian", metadata={"height": height, "stride": stride})
    s = height / 1.75
    hip, shoulder = 0.9 * s, 1.45 * s
    pants, shirt = _jitter(rng, rng.uniform(0.05, 0.6, 3), 0.0), _jitter(rng, rng.uniform(0.1, 0.9, 3), 0.0)
    skin = _jitter(rng, SKIN[rng.integers(len(SKIN))], 0.02)
    for y, phase in ((-0.1 * s, 1.0), (0.1 * s, -1.0)):
        model.add(*bar([0.0, y, hip], [phase * stride / 2, y, 0.04], 0.13 * s), pants, "noise")
        model.add(*box([phase * stride / 2 - 0.08, y - 0.05, 0.0], [phase * stride / 2 + 0.16, y + 0.05, 0.08]),
                  (0.1, 0.08, 0.06))
    width = rng.uniform(0.36, 0.46) * s
    model.add(*hull([[x, y, z] for x in (-0.1 * s, 0.1 * s) for y in (-width / 2, width / 2) for z in (shoulder,)]
                    + [[x, y, hip - 0.05] for x in (-0.09 * s, 0.09 * s) for y in (-0.15 * s, 0.15 * s)]), shirt, "noise")
    for y, phase in ((-width / 2 - 0.04, -1.0), (width / 2 + 0.04, 1.0)):
        model.add(*bar([0, y, shoulder - 0.03], [phase * stride * 0.4, y * 1.05, hip - 0.05 * s], 0.08 * s), shirt)
    model.add(*ellipsoid([0.0, 0.0, shoulder + 0.16 * s], [0.1 * s, 0.09 * s, 0.12 * s], 1), skin)
    if rng.uniform() < 0.3:
        model.add(*box([-0.28 * s, -0.14 * s, 1.05 * s], [-0.1 * s, 0.14 * s, 1.4 * s]), _paint(rng), "noise")
    return model


def traffic_cone(rng: np.random.Generator) -> ObjectModel:
    """A striped cone on a square base, 0.45-1 m tall."""
    height = rng.uniform(0.45, 1.0)
    model = ObjectModel("traffic_cone", "traffic_cone", metadata={"height": height})
    half = 0.2 * height / 0.7
    model.add(*box([-half, -half, 0.0], [half, half, 0.04]), (0.08, 0.08, 0.08))
    model.add(*cylinder([0, 0, 0.04 + (height - 0.04) / 2], 0.15 * height / 0.7, height - 0.04, top_radius=0.02,
                        sections=16), _jitter(rng, [0.95, 0.35, 0.05], 0.04), "stripes")
    return model


def barrier(rng: np.random.Generator) -> ObjectModel:
    """A concrete jersey barrier, a water-filled plastic barrier or a metal fence panel on feet
    (length along x)."""
    variant = str(rng.choice(["jersey", "plastic", "fence"]))
    length = rng.uniform(1.5, 3.0) if variant != "plastic" else rng.uniform(1.0, 2.0)
    model = ObjectModel("barrier", "barrier", metadata={"variant": variant, "length": length})
    hx = length / 2
    if variant == "jersey":
        height = rng.uniform(0.8, 1.05)
        model.add(*hull([[x, y, z] for x in (-hx, hx) for y, z in ((-0.3, 0), (0.3, 0), (-0.22, 0.25), (0.22, 0.25),
                                                                 (-0.09, height), (0.09, height))]),
                  _jitter(rng, [0.68, 0.67, 0.64], 0.05), "noise")
    elif variant == "plastic":
        model.add(*hull([[x, y, z] for x in (-hx, hx) for y, z in ((-0.25, 0), (0.25, 0), (-0.12, 0.9), (0.12, 0.9))]),
                  _jitter(rng, [[0.85, 0.1, 0.05], [0.95, 0.95, 0.95]][rng.integers(2)], 0.03), "stripes")
    else:
        for x in (-hx, hx):
            model.add(*box([x - 0.3, -0.15, 0.0], [x + 0.3, 0.15, 0.12]), (0.2, 0.2, 0.2))
            model.add(*bar([x, 0, 0.1], [x, 0, 1.1], 0.04), (0.6, 0.6, 0.6))
        model.add(*box([-hx, -0.01, 0.15], [hx, 0.01, 1.05]), _jitter(rng, [0.85, 0.3, 0.05], 0.04), "stripes")
    return model


def tree(rng: np.random.Generator) -> ObjectModel:
    """Broadleaf (1-3 crown lobes) or conifer: a tapered trunk and foliage."""
    conifer = bool(rng.uniform() < 0.25)
    trunk = rng.uniform(1.8, 3.2)
    model = ObjectModel("tree", "vegetation", metadata={"conifer": conifer})
    radius = rng.uniform(0.1, 0.22)
    model.add(*cylinder([0, 0, trunk / 2], radius, trunk, top_radius=radius * 0.7, sections=10),
              _jitter(rng, [0.33, 0.24, 0.15]), "noise")
    green = _jitter(rng, [0.18, 0.38, 0.14], 0.05)
    if conifer:
        height = rng.uniform(4.0, 9.0)
        model.add(*cylinder([0, 0, trunk * 0.6 + height / 2], rng.uniform(1.2, 2.2), height, top_radius=0.0,
                            sections=14), green * 0.8, "foliage")
    else:
        crown = rng.uniform(1.3, 2.6)
        for k in range(int(rng.integers(1, 4))):
            offset = rng.normal(0.0, 0.35 * crown, 3) * (k > 0)
            size = crown * rng.uniform(0.75, 1.0) * np.array([1.0, 1.0, rng.uniform(0.8, 1.15)])
            model.add(*ellipsoid([offset[0], offset[1], trunk + 0.6 * crown + 0.5 * offset[2]], size, 2),
                      green, "foliage")
    return model


def bush(rng: np.random.Generator) -> ObjectModel:
    """A low shrub of 1-4 flattened lobes, or a clipped hedge block (length along x)."""
    hedge = bool(rng.uniform() < 0.35)
    model = ObjectModel("bush", "vegetation", metadata={"hedge": hedge})
    green = _jitter(rng, [0.2, 0.4, 0.15], 0.05)
    if hedge:
        length = rng.uniform(2.0, 6.0)
        model.add(*box([-length / 2, -0.4, 0.0], [length / 2, 0.4, rng.uniform(0.7, 1.5)]), green, "foliage")
    else:
        for _ in range(int(rng.integers(1, 5))):
            r = rng.uniform(0.4, 0.9)
            c = [rng.normal(0, 0.4), rng.normal(0, 0.4), 0.75 * r]
            model.add(*ellipsoid(c, [r, r * rng.uniform(0.8, 1.2), r * 0.75], 2), green, "foliage")
    return model


def street_lamp(rng: np.random.Generator) -> ObjectModel:
    """A lamp post with an arm reaching over the road (+y) and a lamp head."""
    height = rng.uniform(5.0, 8.0)
    model = ObjectModel("street_lamp", "manmade", metadata={"height": height})
    grey = _jitter(rng, [0.32, 0.33, 0.32])
    model.add(*cylinder([0, 0, height / 2], 0.09, height, top_radius=0.06, sections=10), grey)
    arm = rng.uniform(0.8, 2.0)
    model.add(*bar([0, 0, height - 0.1], [0, arm, height + 0.2], 0.07), grey)
    model.add(*box([-0.2, arm - 0.1, height + 0.05], [0.2, arm + 0.45, height + 0.25]), (0.85, 0.85, 0.75))
    return model


def traffic_sign(rng: np.random.Generator) -> ObjectModel:
    """A post with a round, triangular or rectangular sign facing +x."""
    shape = str(rng.choice(["round", "triangle", "rectangle"]))
    top = rng.uniform(2.2, 2.8)
    model = ObjectModel("traffic_sign", "manmade", metadata={"shape": shape})
    model.add(*cylinder([0, 0, top / 2], 0.04, top, sections=8), (0.55, 0.56, 0.57))
    face = _jitter(rng, [[0.8, 0.1, 0.08], [0.1, 0.25, 0.7], [0.95, 0.95, 0.95], [0.95, 0.8, 0.1]][rng.integers(4)])
    if shape == "round":
        model.add(*cylinder([0.06, 0, top - 0.35], 0.33, 0.04, axis="x", sections=20), face)
    elif shape == "triangle":
        model.add(*hull([[x, y, z] for x in (0.04, 0.08) for y, z in ((-0.4, top - 0.7), (0.4, top - 0.7), (0, top))]), face)
    else:
        model.add(*box([0.04, -0.35, top - 0.9], [0.08, 0.35, top]), face)
    return model


def traffic_light(rng: np.random.Generator) -> ObjectModel:
    """A pole with a signal head (three lamps facing +x)."""
    height = rng.uniform(2.6, 3.4)
    model = ObjectModel("traffic_light", "manmade")
    model.add(*cylinder([0, 0, height / 2], 0.07, height, sections=10), (0.25, 0.26, 0.25))
    model.add(*box([-0.15, -0.17, height - 0.05], [0.15, 0.17, height + 0.95]), (0.12, 0.12, 0.12))
    lit = int(rng.integers(3))
    for k, color in enumerate(((0.9, 0.1, 0.1), (0.95, 0.75, 0.1), (0.1, 0.85, 0.3))):
        shade = np.asarray(color) * (1.0 if k == lit else 0.25)
        model.add(*cylinder([0.16, 0, height + 0.75 - 0.3 * k], 0.1, 0.04, axis="x", sections=12), shade)
    return model


def bus_shelter(rng: np.random.Generator) -> ObjectModel:
    """A bus shelter: roof, back panel, side panels and posts (length along x, open to +y)."""
    length = rng.uniform(3.0, 5.0)
    model = ObjectModel("bus_shelter", "manmade", metadata={"length": length})
    frame = _jitter(rng, [0.3, 0.32, 0.35])
    hx = length / 2
    model.add(*box([-hx, -0.9, 2.3], [hx, 0.9, 2.45]), frame)
    model.add(*box([-hx, -0.85, 0.1], [hx, -0.8, 2.3]), (0.55, 0.62, 0.66))
    for x in (-hx, hx):
        model.add(*box([x - 0.03, -0.85, 0.1], [x + 0.03, 0.0, 2.3]), (0.55, 0.62, 0.66))
        model.add(*box([x - 0.05, 0.75, 0.0], [x + 0.05, 0.85, 2.3]), frame)
    model.add(*box([-hx * 0.6, -0.7, 0.0], [hx * 0.6, -0.3, 0.45]), (0.4, 0.3, 0.2))
    return model


def building(rng: np.random.Generator, width: float | None = None, depth: float | None = None) -> ObjectModel:
    """A block (front face towards +y, frontage ``width`` along x), sometimes with a set-back upper
    part, a shop-front band and a roof parapet."""
    width = rng.uniform(8.0, 20.0) if width is None else width
    depth = rng.uniform(8.0, 16.0) if depth is None else depth
    height = float(rng.choice([rng.uniform(4.0, 9.0), rng.uniform(9.0, 18.0), rng.uniform(18.0, 30.0)], p=[0.35, 0.45, 0.2]))
    model = ObjectModel("building", "manmade", metadata={"size": [width, depth, height]})
    wall = _jitter(rng, [[0.75, 0.68, 0.58], [0.62, 0.38, 0.3], [0.8, 0.8, 0.78], [0.55, 0.55, 0.6],
                         [0.85, 0.75, 0.55], [0.45, 0.42, 0.4], [0.7, 0.6, 0.5]][rng.integers(7)], 0.04)
    hx, hy = width / 2, depth / 2
    model.add(*box([-hx, -hy, -0.15], [hx, hy, height]), wall, "facade")
    if height > 10 and rng.uniform() < 0.4:
        setback = rng.uniform(1.5, 3.0)
        model.add(*box([-hx + setback, -hy + setback, height - 0.1], [hx - setback, hy - setback,
                                                                     height + rng.uniform(3.0, 7.0)]), wall * 0.9, "facade")
    if rng.uniform() < 0.5:  # shop front: a darker glazed band at street level
        model.add(*box([-hx + 0.3, hy - 0.05, 0.2], [hx - 0.3, hy + 0.05, 3.2]), _jitter(rng, [0.18, 0.22, 0.26]))
    model.add(*box([-hx, -hy, height], [hx, hy, height + 0.4]), wall * 0.8)
    return model


MODELS: dict[str, Callable[[np.random.Generator], ObjectModel]] = {
    "car": car, "truck": truck, "bus": bus, "trailer": trailer, "construction_vehicle": construction_vehicle,
    "motorcycle": motorcycle, "bicycle": bicycle, "pedestrian": pedestrian, "traffic_cone": traffic_cone,
    "barrier": barrier, "tree": tree, "bush": bush, "street_lamp": street_lamp, "traffic_sign": traffic_sign,
    "traffic_light": traffic_light, "bus_shelter": bus_shelter, "building": building,
}  # fmt: skip
"""Model kind -> builder ``(rng) -> ObjectModel``."""
