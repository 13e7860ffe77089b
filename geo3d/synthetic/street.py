"""The procedural street: a seeded route of straight roads, curves and junctions, with everything a
driving scene holds, labelled with the Occ3D / nuScenes-lidarseg classes.

Cross-section (lateral offset ``d`` from the main road's centre line, + = left, right-hand traffic):
the ego lane ``[-lane, 0]``, the oncoming lane ``[0, lane]``, a parking strip on each side (usually),
a 15 cm kerb and a sidewalk, sometimes a grass verge with trees and bushes, then buildings set back
from the sidewalk. A big terrain slab (top at z = -0.1) fills everything else. Ground slabs are
0.2 m thick or more below z = 0 (the road is thicker than the terrain it overlaps), so that in a
voxel at ground level the road, sidewalk or island outweighs the terrain under it. Junctions add a
crossing road with zebra crossings, traffic lights, traffic islands (``other_flat``), and vehicles
waiting at the stop lines. Moving traffic drives in both lanes, pedestrians walk the sidewalks.

Every scene contains, just ahead of the ego's start on its right, a roadworks zone (construction
vehicle, barriers, cones), a bus stop, a parked trailer, a parked motorcycle, a bicycle rack and a
median island, so that every class of the vocabulary is seen within the first frames.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from geo3d.synthetic.objects import MODELS
from geo3d.synthetic.primitives import ObjectModel, box, sweep
from geo3d.synthetic.road import LAYOUTS, RoadPath, Segment, make_route
from geo3d.synthetic.scene import Actor, LabelledMesh, SyntheticScene, place_model
from geo3d.synthetic.classes import class_id

INSTANCES_PER_STREAM = 1000
"""Instance ids come in blocks, one per random stream, so that they too are stable as a route grows."""

LEAD_IN_M = 40.0
"""Road behind the ego's start position, metres (the ego starts at arc length ``LEAD_IN_M``)."""


@dataclass(frozen=True)
class StreetConfig:
    """How a street scene is drawn (everything else comes from the seed).

    Attributes:
        layout: one of :data:`~geo3d.synthetic.road.LAYOUTS` (the feature just ahead of the start).
        duration_s: how long the ego drives; the route is long enough for it plus 100 m of view.
        ego_speed_mps: the ego's speed along its lane, metres per second.
        parked_density: fraction of parking-strip slots holding a vehicle, in [0, 1].
        traffic_density: moving vehicles per 100 m of each lane, roughly, times 4 (0 = none).
        pedestrian_density: walking pedestrians per 10 m of sidewalk, roughly (0 = none).
    """

    layout: str = "random"
    duration_s: float = 10.0
    ego_speed_mps: float = 6.0
    parked_density: float = 0.6
    traffic_density: float = 0.5
    pedestrian_density: float = 0.4

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; expected one of {', '.join(LAYOUTS)}")
        for name in ("parked_density", "traffic_density", "pedestrian_density"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not (self.duration_s >= 0 and self.ego_speed_mps >= 0):
            raise ValueError("duration_s and ego_speed_mps must be >= 0")


class _Street:
    """Builder state: the scene, the rng, the cross-section and the zones kept clear."""

    def __init__(self, seed: int, config: StreetConfig) -> None:
        self.seed, self.config, self.scene = seed, config, SyntheticScene()
        rng = self.use(0)
        self.lane = float(rng.uniform(3.0, 3.6))
        self.park = {side: (2.3 if rng.uniform() < 0.85 else 0.0) for side in (-1, 1)}
        self.half = {side: self.lane + self.park[side] for side in (-1, 1)}  # carriageway edge
        self.walk = {side: float(rng.uniform(2.6, 4.5)) for side in (-1, 1)}
        self.verge = {side: (float(rng.uniform(1.5, 3.0)) if rng.uniform() < 0.6 else 0.0) for side in (-1, 1)}
        self.setback = {side: float(rng.uniform(0.0, 3.0)) for side in (-1, 1)}
        self.min_length = LEAD_IN_M + config.ego_speed_mps * config.duration_s + 100.0
        self.segments = make_route(self.use(1), config.layout, self.min_length, LEAD_IN_M)
        self.path = RoadPath.from_segments(self.segments)
        self.junctions: list[dict] = []
        self.parking_taken = {-1: [], 1: []}  # (s0, s1) intervals per side

    # -- helpers ---------------------------------------------------------------------------------
    def use(self, *key: int) -> np.random.Generator:
        """Switch to the random stream ``[seed, *key]`` (and to a fresh block of instance ids).

        Each stage of the build, and each side of the road, draws from its own stream in a fixed
        order, so a longer drive (more route) extends a scene without changing what is near the
        start: the first frames of a 200-frame drive are those of a 20-frame one.
        """
        padded = (*key, 0, 0)[:3]
        self.rng = np.random.default_rng([self.seed, *key])
        self.next_instance = self.instance_base = 1 + INSTANCES_PER_STREAM * (4096 * padded[0] + 8 * padded[1] + padded[2])
        return self.rng

    def instance_for(self, model: ObjectModel) -> int:
        if not model.is_thing:
            return 0
        if self.next_instance >= self.instance_base + INSTANCES_PER_STREAM:
            raise RuntimeError("too many objects in one random stream; raise INSTANCES_PER_STREAM")
        self.next_instance += 1
        return self.next_instance - 1

    def put(self, model: ObjectModel, s: float, d: float, yaw_offset: float = 0.0, z: float = 0.0,
            path: RoadPath | None = None) -> None:
        x, y, heading = (path or self.path).pose(s, d)
        self.scene.meshes += place_model(model, float(x), float(y), float(heading) + yaw_offset,
                                         self.instance_for(model), z)

    def model(self, kind: str, **kwargs) -> ObjectModel:
        return MODELS[kind](self.rng, **kwargs)

    def slab(self, cls: str, s0: float, s1: float, d0: float, d1: float, z0: float, z1: float,
             color, texture: str | None, path: RoadPath | None = None) -> None:
        if s1 - s0 < 0.05:
            return
        xy, heading = (path or self.path).samples(s0, s1)
        vertices, faces = sweep(xy, heading, d0, d1, z0, z1)
        self.scene.meshes.append(LabelledMesh(vertices, faces, class_id(cls), 0, color, texture))

    def free_intervals(self, zones: list[tuple[float, float]], s0: float = 0.0, s1: float | None = None
                       ) -> list[tuple[float, float]]:
        """``[s0, s1]`` minus the union of ``zones``."""
        s1 = self.path.length if s1 is None else s1
        out, cursor = [], s0
        for a, b in sorted(zones):
            if b <= cursor:
                continue
            if a > cursor:
                out.append((cursor, min(a, s1)))
            cursor = max(cursor, b)
        if cursor < s1:
            out.append((cursor, s1))
        return [(a, b) for a, b in out if b > a]

    def zones(self, widen: float) -> list[tuple[float, float]]:
        return [(j["s"] - j["half"] - widen, j["s"] + j["half"] + widen) for j in self.junctions]

    def side_yaw(self, side: int) -> float:
        """Yaw offset that turns a model's +y (its front for buildings, arm of lamps) to the road."""
        return 0.0 if side < 0 else math.pi


def _lighting(st: _Street) -> None:
    rng, scene = st.use(2), st.scene
    overcast = rng.uniform() < 0.3
    azimuth, elevation = rng.uniform(0, 2 * math.pi), math.radians(rng.uniform(12.0, 70.0))
    scene.sun_direction = np.array([math.cos(elevation) * math.cos(azimuth),
                                    math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
    if overcast:
        scene.sun_intensity, scene.ambient = float(rng.uniform(0.1, 0.3)), float(rng.uniform(0.6, 0.75))
        grey = rng.uniform(0.65, 0.8)
        scene.sky_horizon, scene.sky_zenith = (grey, grey, grey + 0.03), (grey - 0.1, grey - 0.08, grey - 0.04)
    else:
        scene.sun_intensity, scene.ambient = float(rng.uniform(0.5, 0.9)), float(rng.uniform(0.3, 0.5))
        scene.sky_horizon = tuple(np.clip(np.array([0.84, 0.88, 0.94]) + rng.normal(0, 0.03, 3), 0, 1))
        scene.sky_zenith = tuple(np.clip(np.array([0.33, 0.52, 0.82]) + rng.normal(0, 0.04, 3), 0, 1))
    scene.metadata["lighting"] = {"overcast": bool(overcast), "sun_azimuth_deg": math.degrees(azimuth),
                                  "sun_elevation_deg": math.degrees(elevation),
                                  "sun_intensity": scene.sun_intensity, "ambient": scene.ambient}


def _ground_and_road(st: _Street) -> None:
    lo, hi = st.path.xy.min(axis=0) - 90.0, st.path.xy.max(axis=0) + 90.0
    vertices, faces = box([lo[0], lo[1], -0.2], [hi[0], hi[1], -0.1])
    st.scene.meshes.append(LabelledMesh(vertices, faces, class_id("terrain"), 0, (0.36, 0.42, 0.25), "grass"))
    length = st.path.length
    st.slab("driveable_surface", 0.0, length, -st.half[-1], st.half[1], -0.2, 0.0, (0.3, 0.3, 0.32), "asphalt")
    white = (0.9, 0.9, 0.88)
    junction_zones = st.zones(1.0)
    for side in (-1, 1):
        if st.park[side]:
            for a, b in st.free_intervals(junction_zones):
                d = side * st.lane
                st.slab("driveable_surface", a, b, d - 0.06, d + 0.06, 0.0, 0.005, white, None)
    median = st.scene.metadata.get("median_island")
    dash_zones = junction_zones + ([tuple(median)] if median else [])
    for a, b in st.free_intervals(dash_zones):
        for s in np.arange(a + 1.0, b - 3.0, 9.0):
            st.slab("driveable_surface", s, s + 3.0, -0.06, 0.06, 0.0, 0.005, white, None)
    for side in (-1, 1):
        edge = side * st.half[side]
        for a, b in st.free_intervals(st.zones(0.0)):
            st.slab("sidewalk", a, b, *sorted((edge, edge + side * 0.2)), -0.2, 0.16, (0.6, 0.6, 0.58), "noise")
            st.slab("sidewalk", a, b, *sorted((edge + side * 0.2, edge + side * st.walk[side])), -0.2, 0.15,
                    (0.7, 0.68, 0.64), "paving")
        if st.verge[side]:
            inner = st.half[side] + st.walk[side]
            for a, b in st.free_intervals(st.zones(3.0)):
                st.slab("terrain", a, b, *sorted((side * inner, side * (inner + st.verge[side]))), -0.2, 0.1,
                        (0.3, 0.45, 0.2), "grass")


def _junctions(st: _Street) -> None:
    """Record each junction (crossing road geometry) before the main road is laid out."""
    s = 0.0
    st.use(3)
    for seg in st.segments:
        if seg.kind == "junction":
            centre = s + seg.length_m / 2
            lane = float(st.rng.uniform(3.0, 3.5))
            walk = float(st.rng.uniform(2.5, 3.5))
            x, y, heading = st.path.pose(centre)
            start = np.array([float(x), float(y)]) - 50.0 * np.array([-math.sin(heading), math.cos(heading)])
            path = RoadPath.from_segments([Segment("straight", 100.0)], start, float(heading) + math.pi / 2)
            st.junctions.append({"s": centre, "half": lane, "lane": lane, "walk": walk, "path": path})
        s += seg.length_m


def _build_junction(st: _Street, j: dict, index: int) -> None:
    rng, path, lane, walk = st.use(4, index), j["path"], j["lane"], j["walk"]
    right, left = 50.0 - st.half[-1], 50.0 + st.half[1]  # crossing arc lengths at the main road's edges
    white = (0.9, 0.9, 0.88)
    for a, b in ((0.0, right), (left, 100.0)):
        st.slab("driveable_surface", a, b, -lane, lane, -0.2, 0.0, (0.3, 0.3, 0.32), "asphalt", path)
    for a, b in ((0.0, right - st.walk[-1]), (left + st.walk[1], 100.0)):
        for side in (-1, 1):
            st.slab("sidewalk", a, b, *sorted((side * lane, side * (lane + walk))), -0.2, 0.15,
                    (0.68, 0.67, 0.63), "paving", path)
        for s in np.arange(a + 4.0, b - 2.0, rng.uniform(8.0, 12.0)):
            side = 1 if rng.uniform() < 0.5 else -1
            st.put(st.model("tree"), s, side * (lane + walk - 0.6), path=path, z=0.15)
    islands = ((right - 10.0, right - 2.0), (left + 2.0, left + 10.0))
    for a, b in islands:  # traffic islands splitting the crossing road's mouths, with a keep-right sign
        st.slab("other_flat", a, b, -0.6, 0.6, -0.2, 0.13, (0.55, 0.55, 0.52), "noise", path)
        st.put(st.model("traffic_sign"), (a + b) / 2, 0.0, -math.pi / 2, 0.13, path)
    for a, b in ((0.0, islands[0][0]), (islands[1][1], 100.0)):
        for s in np.arange(a + 1.0, b - 3.0, 9.0):
            st.slab("driveable_surface", s, s + 3.0, -0.06, 0.06, 0.0, 0.005, white, None, path)
    centre = j["s"]
    for sz in (centre - lane - 2.5, centre + lane + 2.5):  # zebra crossings on the main road
        for d in np.arange(-st.half[-1] + 0.5, st.half[1] - 0.5, 1.0):
            st.slab("driveable_surface", sz - 1.5, sz + 1.5, d, d + 0.5, 0.0, 0.005, white, None)
    for s, side, yaw in ((centre - lane - 0.8, -1, math.pi), (centre + lane + 0.8, 1, 0.0)):
        st.put(st.model("traffic_light"), s, side * (st.half[side] + 0.5), yaw, 0.15)
    for s0, d, yaw, sign in ((right - st.walk[-1] - 1.0, -lane / 2 - 0.2, 0.0, -1),
                             (left + st.walk[1] + 1.0, lane / 2 + 0.2, math.pi, 1)):
        s = s0
        for _ in range(int(rng.integers(0, 3))):  # a queue waiting at the stop line
            model = st.model(str(rng.choice(["car", "car", "truck", "bus"])))
            length = float(model.bounds()[1, 0] - model.bounds()[0, 0])
            st.put(model, s + sign * length / 2, d, yaw, path=path)
            s += sign * (length + rng.uniform(1.0, 2.5))


def _guaranteed(st: _Street) -> None:
    """The roadworks, bus stop, trailer, motorcycle, bicycle rack and median island near the start."""
    rng = st.use(5)
    side, d_park = -1, -(st.lane + st.park[-1] / 2)
    kerb = st.half[-1]
    order = list(rng.permutation(["roadworks", "bus_stop", "trailer", "motorcycle"]))
    s = LEAD_IN_M + float(rng.uniform(18.0, 26.0))
    blocked = st.zones(4.0)
    for item in order:
        size = {"roadworks": 16.0, "bus_stop": 15.0, "trailer": 20.0, "motorcycle": 3.0}[item]
        while any(a < s + size and s < b for a, b in blocked):
            s = max(b for a, b in blocked if a < s + size and s < b) + 0.5
        st.parking_taken[side].append((s, s + size))
        if item == "roadworks":
            st.put(st.model("construction_vehicle"), s + 8.0, d_park - 0.3, float(rng.uniform(-0.3, 0.3)))
            for k in range(5):
                st.put(st.model("traffic_cone"), s + 1.0 + 3.5 * k, -st.lane - 0.25)
            for x in (s + 0.2, s + 15.2):
                st.put(st.model("barrier"), x, d_park, math.pi / 2)
        elif item == "bus_stop":
            st.put(st.model("bus"), s + 7.0, d_park + 0.1)
            sign_s = s + 13.5
            st.put(st.model("traffic_sign"), sign_s, -(kerb + 0.5), math.pi, 0.15)
            back = kerb + st.walk[side]
            if st.walk[side] >= 3.6 or st.verge[side] >= 2.0:
                depth = back - 0.9 if st.walk[side] >= 3.6 else back + st.verge[side] / 2
                z = 0.15 if st.walk[side] >= 3.6 else 0.1
                st.put(st.model("bus_shelter"), s + 6.0, -depth, st.side_yaw(side), z)
            for k in range(int(rng.integers(1, 4))):
                st.put(st.model("pedestrian"), s + 4.0 + 1.2 * k, -(kerb + 1.8), float(rng.uniform(0, 6.28)), 0.15)
        elif item == "trailer":
            model = st.model("trailer")
            length = float(np.ptp(model.bounds()[:, 0]))
            st.put(model, s + 0.5 + length / 2, d_park + 0.1)
            if length > 6.0 and rng.uniform() < 0.6:
                st.parking_taken[side][-1] = (s, s + 0.5 + length + 7.0)
                st.put(st.model("truck"), s + length + 3.6, d_park + 0.1)
        else:
            st.put(st.model("motorcycle", rider=False), s + 1.5, d_park, float(rng.normal(0, 0.1)))
        s += size + float(rng.uniform(1.0, 4.0))
    s_rack = LEAD_IN_M + float(rng.uniform(6.0, 30.0))
    while any(a < s_rack + 4 and s_rack < b for a, b in st.zones(2.0)):
        s_rack += 5.0
    for k in range(int(rng.integers(2, 6))):  # a bicycle rack on the right sidewalk
        st.put(st.model("bicycle", rider=False), s_rack + 0.7 * k, -(kerb + st.walk[side] - 0.9), math.pi / 2, 0.15)
    s_med = LEAD_IN_M + float(rng.uniform(20.0, 45.0))
    while any(a < s_med + 10 and s_med < b for a, b in st.zones(6.0)):
        s_med += 10.0
    st.slab("other_flat", s_med, s_med + 10.0, -0.5, 0.5, -0.2, 0.13, (0.55, 0.55, 0.52), "noise")
    st.put(st.model("traffic_sign"), s_med + 1.0, 0.0, math.pi, 0.13)
    st.scene.metadata["median_island"] = [s_med - 1.0, s_med + 11.0]


def _roadside(st: _Street) -> None:
    for side in (-1, 1):
        kerb, walk, verge = st.half[side], st.walk[side], st.verge[side]
        key = (side + 1) // 2
        rng = st.use(6, key, 0)
        for a, b in st.free_intervals(st.zones(1.5)):  # lamps in the furniture zone
            for s in np.arange(a + rng.uniform(2, 12), b - 1, rng.uniform(20, 30)):
                st.put(st.model("street_lamp"), s, side * (kerb + 0.5), st.side_yaw(side), 0.15)
        rng = st.use(6, key, 1)
        for a, b in st.free_intervals(st.zones(1.5)):  # signs in the furniture zone
            for s in np.arange(a + rng.uniform(5, 30), b - 1, rng.uniform(25, 45)):
                st.put(st.model("traffic_sign"), s, side * (kerb + 0.6), 0.0 if side > 0 else math.pi, 0.15)
        rng = st.use(6, key, 2)
        if verge:
            for a, b in st.free_intervals(st.zones(3.0)):
                s = a + rng.uniform(1, 6)
                while s < b - 1:
                    kind = "tree" if rng.uniform() < 0.65 else "bush"
                    st.put(st.model(kind), s, side * (kerb + walk + verge / 2), float(rng.uniform(0, 6.28)), 0.1)
                    s += rng.uniform(4.0, 12.0)
        front = kerb + walk + verge + st.setback[side]
        rng = st.use(6, key, 3)
        placed: list[np.ndarray] = []
        for a, b in st.free_intervals(st.zones(4.0)):
            s = a
            while s < b - 6.0:
                width = min(float(rng.uniform(8.0, 20.0)), b - s)
                depth = float(rng.uniform(8.0, 16.0))
                centre_d = side * (front + depth / 2)
                x, y, heading = st.path.pose(s + width / 2, centre_d)
                corners = _footprint(float(x), float(y), float(heading), width, depth)
                if _clear_of_road(st, corners, front - 0.3) and not any(_overlap(corners, c) for c in placed[-3:]):
                    st.put(st.model("building", width=width, depth=depth), s + width / 2, centre_d, st.side_yaw(side),
                           path=None)
                    placed.append(corners)
                    if st.setback[side] > 1.5 and verge == 0 and rng.uniform() < 0.5:
                        st.put(st.model("bush"), s + width / 2, side * (front - 0.8), 0.0, -0.1)
                    s += width + float(rng.uniform(0.0, 4.0))
                else:
                    s += 3.0


def _footprint(x: float, y: float, heading: float, length: float, width: float) -> np.ndarray:
    c, s = math.cos(heading), math.sin(heading)
    local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [length / 2, width / 2]
    return local @ np.array([[c, s], [-s, c]]) + [x, y]


def _clear_of_road(st: _Street, corners: np.ndarray, min_distance: float) -> bool:
    """Whether the rectangle (and its edge midpoints) stays ``min_distance`` from every road centre."""
    points = np.concatenate([corners, (corners + np.roll(corners, 1, axis=0)) / 2])
    centres = [st.path.xy] + [j["path"].xy for j in st.junctions]
    distances = [np.min(np.linalg.norm(points[:, None] - c[None], axis=-1), axis=1) for c in centres]
    main_ok = np.all(distances[0] >= min_distance - 0.5)
    cross_ok = all(np.all(d >= j["lane"] + j["walk"] + 1.0) for d, j in zip(distances[1:], st.junctions))
    return bool(main_ok and cross_ok)


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test of two convex quadrilaterals ``[4, 2]``."""
    for poly in (a, b):
        for k in range(4):
            edge = poly[(k + 1) % 4] - poly[k]
            axis = np.array([-edge[1], edge[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() <= pb.min() or pb.max() <= pa.min():
                return False
    return True


PARKED = (("car", 0.74), ("truck", 0.07), ("bus", 0.03), ("trailer", 0.05), ("motorcycle", 0.07), ("bicycle", 0.04))


def _parking(st: _Street) -> None:
    density = st.config.parked_density
    kinds, weights = zip(*PARKED)
    for side in (-1, 1):
        rng = st.use(7, (side + 1) // 2)
        if not st.park[side]:
            continue
        d = side * (st.lane + st.park[side] / 2)
        keep_clear = st.zones(st.walk[side] + 1.0) + st.parking_taken[side]
        if side < 0:
            keep_clear.append((LEAD_IN_M - 6.0, LEAD_IN_M + 6.0))  # the ego's side cameras see past it
        for a, b in st.free_intervals(keep_clear):
            s = a + float(rng.uniform(0.3, 3.0))
            while True:
                kind = str(rng.choice(kinds, p=np.array(weights) / sum(weights)))
                model = st.model(kind, rider=False) if kind in ("motorcycle", "bicycle") else st.model(kind)
                length = float(np.ptp(model.bounds()[:, 0]))
                if s + length > b - 0.3:
                    break
                if rng.uniform() < density:
                    st.put(model, s + length / 2, d + side * float(rng.uniform(-0.1, 0.15)),
                           (0.0 if side < 0 else math.pi) + float(rng.normal(0, 0.02)))
                    s += length + float(rng.uniform(0.8, 3.0))
                else:
                    s += float(rng.uniform(4.0, 8.0))


MOVING = (("car", 0.72), ("truck", 0.08), ("bus", 0.05), ("motorcycle", 0.08), ("bicycle", 0.07))


def _traffic(st: _Street) -> None:
    """Moving vehicles in both lanes and pedestrians walking the sidewalks (as :class:`Actor`)."""
    config, scene = st.config, st.scene
    kinds, weights = zip(*MOVING)
    v_ego, horizon = config.ego_speed_mps, config.duration_s
    rate = config.traffic_density

    def vehicle() -> tuple[ObjectModel, float, float]:
        kind = str(st.rng.choice(kinds, p=np.array(weights) / sum(weights)))
        model = st.model(kind, rider=True) if kind in ("motorcycle", "bicycle") else st.model(kind)
        return model, float(np.ptp(model.bounds()[:, 0])), (0.8 if kind in ("motorcycle", "bicycle") else 0.0)

    def add(model, s0, lateral, speed, direction):
        scene.actors.append(Actor(model, st.instance_for(model), st.path, float(s0), float(lateral),
                                  float(speed), direction))

    if rate > 0:
        rng = st.use(8, 0)
        speed = float(rng.uniform(6.0, 11.0))  # oncoming lane: one speed, so gaps never close
        s, end = LEAD_IN_M - 25.0, LEAD_IN_M + (v_ego + speed) * horizon + 90.0
        while s < end:
            model, length, shift = vehicle()
            add(model, s + length / 2, st.lane / 2 + shift, speed, -1)
            s += length + float(rng.uniform(8.0, 40.0)) / rate
        rng = st.use(8, 1)
        speed = v_ego + float(rng.uniform(1.5, 4.0))  # ahead of the ego, faster than it
        s = LEAD_IN_M + float(rng.uniform(12.0, 25.0))
        for _ in range(int(rng.integers(1, 4))):
            model, length, shift = vehicle()
            add(model, s + length / 2, -st.lane / 2 - shift, speed, 1)
            s += length + float(rng.uniform(10.0, 30.0))
        rng = st.use(8, 2)
        s = LEAD_IN_M - float(rng.uniform(10.0, 18.0))  # behind the ego, at its speed
        for _ in range(int(rng.integers(0, 3))):
            model, length, shift = vehicle()
            add(model, s - length / 2, -st.lane / 2 - shift, v_ego, 1)
            s -= length + float(rng.uniform(8.0, 20.0))
    span = (LEAD_IN_M - 30.0, LEAD_IN_M + v_ego * horizon + 60.0)
    if config.pedestrian_density > 0:
        for side in (-1, 1):  # walkers spaced along each sidewalk (mean gap 20 m / density)
            rng = st.use(9, (side + 1) // 2)
            s = span[0] + float(rng.exponential(20.0 / config.pedestrian_density))
            while s < span[1]:
                model = st.model("pedestrian")
                lateral = side * (st.half[side] + float(rng.uniform(1.0, 1.7)))
                direction = 1 if rng.uniform() < 0.5 else -1
                scene.actors.append(Actor(model, st.instance_for(model), st.path, s, lateral,
                                          float(rng.uniform(0.8, 1.6)), direction, z=0.15))
                s += float(rng.exponential(20.0 / config.pedestrian_density))

def build_street_scene(seed: int, config: StreetConfig | None = None, **overrides) -> SyntheticScene:
    """A procedural street scene with its ego drive, deterministic for ``seed`` and ``config``.

    Args:
        seed: seeds the ``numpy.random.Generator`` that draws every layout choice, size, pose,
            colour and speed: the same seed and config give the same scene, bit for bit.
        config: the :class:`StreetConfig` (default one); ``overrides`` replace its fields.

    Returns:
        The scene: static meshes, moving :class:`Actor`s, lighting, and the ego drive (its lane on
        ``scene.ego_path`` at ``ego_lane_offset_m``, starting at arc length :data:`LEAD_IN_M`, at
        ``ego_speed_mps``); ``scene.metadata`` records the seed, config, route and cross-section.
    """
    config = config or StreetConfig()
    if overrides:
        config = StreetConfig(**{**asdict(config), **overrides})
    st = _Street(int(seed), config)
    scene = st.scene
    _lighting(st)
    _junctions(st)
    _guaranteed(st)
    _ground_and_road(st)
    for index, j in enumerate(st.junctions):
        _build_junction(st, j, index)
    _roadside(st)
    _parking(st)
    _traffic(st)
    scene.ego_path, scene.ego_lane_offset_m = st.path, -st.lane / 2
    scene.ego_start_s, scene.ego_speed_mps = LEAD_IN_M, config.ego_speed_mps
    scene.metadata.update({
        "generator": "build_street_scene", "seed": int(seed), "config": asdict(config),
        "route": [seg.to_dict() for seg in st.segments], "lane_width_m": st.lane,
        "parking_width_m": {str(k): v for k, v in st.park.items()}, "sidewalk_width_m": {str(k): v for k, v in st.walk.items()},
        "verge_width_m": {str(k): v for k, v in st.verge.items()}, "junctions_s": [j["s"] for j in st.junctions],
        "num_static_meshes": len(scene.meshes), "num_actors": len(scene.actors),
    })
    return scene
