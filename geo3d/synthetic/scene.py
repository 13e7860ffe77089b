"""Synthetic scenes: labelled triangle meshes plus lighting, and a procedural street builder.

World axes are those of driving data (``docs/conventions.md``): x forward along the street, y left,
z up, metres, ground at z = 0. :func:`build_street_scene` puts the ego vehicle at the origin in the
right-hand driving lane, looking down +x. Class ids are :data:`geo3d.synthetic.classes.CLASS_NAMES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geo3d.synthetic.classes import CLASS_NAMES, THING_CLASSES, class_id
from geo3d.synthetic.textures import TEXTURES
from geo3d.utils.optional import require


@dataclass(eq=False)
class LabelledMesh:
    """One triangle mesh with its ground-truth labels and appearance.

    Attributes:
        vertices: ``[V, 3]`` float64 world positions, metres.
        faces: ``[F, 3]`` int64 vertex indices per triangle (either winding: shading is two-sided).
        semantic: class id (index into ``CLASS_NAMES``, >= 1).
        instance: instance id, >= 1 for objects of the ``THING_CLASSES``, 0 for stuff; the parts of
            one object (a car's body, cabin and wheels) share it.
        color: base albedo, RGB floats in [0, 1].
        texture: name of a procedural texture in :data:`geo3d.synthetic.textures.TEXTURES`, or None.
    """

    vertices: np.ndarray
    faces: np.ndarray
    semantic: int
    instance: int = 0
    color: tuple[float, float, float] = (0.5, 0.5, 0.5)
    texture: str | None = None

    def __post_init__(self) -> None:
        self.vertices = np.asarray(self.vertices, dtype=np.float64)
        self.faces = np.asarray(self.faces, dtype=np.int64)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"vertices must be [V, 3], got {list(self.vertices.shape)}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"faces must be [F, 3], got {list(self.faces.shape)}")
        if len(self.faces) and (self.faces.min() < 0 or self.faces.max() >= len(self.vertices)):
            raise ValueError("faces index vertices out of range")
        if not 1 <= self.semantic < len(CLASS_NAMES):
            raise ValueError(f"semantic must be a class id in 1..{len(CLASS_NAMES) - 1}, got {self.semantic}")
        if self.texture is not None and self.texture not in TEXTURES:
            raise ValueError(f"unknown texture {self.texture!r}; expected one of {', '.join(TEXTURES)}")
        self.color = tuple(float(c) for c in self.color)  # type: ignore[assignment]

    @classmethod
    def from_trimesh(cls, mesh: Any, semantic: int, instance: int = 0, color=(0.5, 0.5, 0.5),
                     texture: str | None = None) -> LabelledMesh:
        """Wrap a ``trimesh.Trimesh`` (its vertices and faces are copied)."""
        return cls(np.array(mesh.vertices), np.array(mesh.faces), semantic, instance, color, texture)


@dataclass(eq=False)
class SyntheticScene:
    """Labelled meshes and a directional light (sun + ambient + sky) in the world frame.

    Shading is Lambertian: ``albedo * (ambient + sun_intensity * max(0, n . sun_direction))`` where
    the sun is not occluded; rays that hit nothing take the sky colour, a gradient from
    ``sky_horizon`` to ``sky_zenith`` with the ray's elevation.

    Attributes:
        meshes: the labelled meshes.
        sun_direction: ``[3]`` unit vector from the scene towards the sun, world frame.
        sun_intensity: irradiance of the sun on a surface facing it (the albedo's multiplier).
        ambient: irradiance from the sky on every surface.
        sky_horizon, sky_zenith: RGB in [0, 1] of the sky at elevation 0 and 90 degrees.
        metadata: JSON-serialisable facts about how the scene was made (e.g. ``{"seed": 3}``).
    """

    meshes: list[LabelledMesh] = field(default_factory=list)
    sun_direction: np.ndarray = field(default_factory=lambda: _unit([-0.4, 0.35, 0.85]))
    sun_intensity: float = 0.7
    ambient: float = 0.45
    sky_horizon: tuple[float, float, float] = (0.84, 0.88, 0.94)
    sky_zenith: tuple[float, float, float] = (0.33, 0.52, 0.82)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sun_direction = _unit(self.sun_direction)

    def add(self, mesh: LabelledMesh) -> None:
        """Append a mesh."""
        self.meshes.append(mesh)

    def merged(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All meshes as one: ``(vertices [V, 3] float64, faces [F, 3] int64, mesh_index [F] int64)``
        where ``mesh_index`` says which entry of :attr:`meshes` each face comes from."""
        offsets = np.cumsum([0] + [len(m.vertices) for m in self.meshes])
        vertices = np.concatenate([m.vertices for m in self.meshes] or [np.zeros((0, 3))])
        faces = [m.faces + offset for m, offset in zip(self.meshes, offsets)]
        faces = np.concatenate(faces or [np.zeros((0, 3), np.int64)])
        mesh_index = np.repeat(np.arange(len(self.meshes)), [len(m.faces) for m in self.meshes])
        return vertices, faces, mesh_index

    def bounds(self) -> np.ndarray:
        """``[2, 3]`` axis-aligned min and max corner of all vertices, metres."""
        vertices = self.merged()[0]
        return np.stack([vertices.min(axis=0), vertices.max(axis=0)])


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


class _Builder:
    """Appends primitives to a scene; a fresh instance id per thing object."""

    def __init__(self, scene: SyntheticScene) -> None:
        self.scene = scene
        self.trimesh = require("trimesh")
        self.next_instance = 1

    def new_instance(self, cls: str) -> int:
        if cls not in THING_CLASSES:
            return 0
        self.next_instance += 1
        return self.next_instance - 1

    def add(self, mesh: Any, cls: str, instance: int, color, texture: str | None = None) -> None:
        color = np.clip(color, 0.0, 1.0)
        self.scene.add(LabelledMesh.from_trimesh(mesh, class_id(cls), instance, color, texture))

    def box(self, lo, hi, cls, instance, color, texture=None, yaw=0.0, pivot=None) -> None:
        """Axis-aligned box between corners ``lo``, ``hi``, then turned by ``yaw`` about z at ``pivot``."""
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        mesh = self.trimesh.creation.box(extents=hi - lo)
        mesh.apply_translation((lo + hi) / 2)
        self.add(self._turn(mesh, yaw, pivot), cls, instance, color, texture)

    def cylinder(self, center, radius, height, cls, instance, color, texture=None, axis="z",
                 yaw=0.0, pivot=None, sections=16) -> None:
        """Cylinder about a ``"z"`` or ``"y"`` axis through ``center``."""
        mesh = self.trimesh.creation.cylinder(radius=radius, height=height, sections=sections)
        if axis == "y":
            mesh.apply_transform(self.trimesh.transformations.rotation_matrix(math.pi / 2, [1, 0, 0]))
        mesh.apply_translation(center)
        self.add(self._turn(mesh, yaw, pivot), cls, instance, color, texture)

    def sphere(self, center, radius, cls, instance, color, texture=None, subdivisions=2) -> None:
        mesh = self.trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
        mesh.apply_translation(center)
        self.add(mesh, cls, instance, color, texture)

    def cone(self, base_center, radius, height, cls, instance, color, texture=None) -> None:
        mesh = self.trimesh.creation.cone(radius=radius, height=height, sections=16)
        mesh.apply_translation(base_center)
        self.add(mesh, cls, instance, color, texture)

    def _turn(self, mesh, yaw, pivot):
        if yaw:
            mesh.apply_transform(self.trimesh.transformations.rotation_matrix(yaw, [0, 0, 1], pivot))
        return mesh


CAR_PAINTS = np.array([[0.85, 0.85, 0.85], [0.1, 0.1, 0.12], [0.55, 0.57, 0.6], [0.6, 0.08, 0.06],
                       [0.1, 0.2, 0.5], [0.85, 0.8, 0.7], [0.2, 0.35, 0.25]])
FACADES = np.array([[0.75, 0.68, 0.58], [0.62, 0.38, 0.3], [0.8, 0.8, 0.78], [0.55, 0.55, 0.6],
                    [0.85, 0.75, 0.55], [0.45, 0.42, 0.4]])
GLASS = (0.12, 0.15, 0.2)
TYRE = (0.06, 0.06, 0.06)


def _vehicle(b: _Builder, rng: np.random.Generator, kind: str, x: float, y: float, yaw: float) -> float:
    """A car, truck or bus centred at ``(x, y)`` heading ``yaw``; returns its length in metres."""
    inst = b.new_instance(kind)
    paint = np.clip(CAR_PAINTS[rng.integers(len(CAR_PAINTS))] + rng.normal(0, 0.03, 3), 0, 1)
    length, width, wheel_r = {"car": (rng.uniform(4.0, 4.8), rng.uniform(1.75, 1.95), 0.32),
                              "truck": (rng.uniform(6.5, 8.5), 2.4, 0.5),
                              "bus": (rng.uniform(10.0, 12.0), 2.5, 0.5)}[kind]
    pivot = [x, y, 0.0]
    x0, x1, y0, y1 = x - length / 2, x + length / 2, y - width / 2, y + width / 2
    if kind == "car":
        b.box([x0, y0, 0.3], [x1, y1, 0.95], kind, inst, paint, "noise", yaw, pivot)
        b.box([x0 + 0.25 * length, y0 + 0.1, 0.95], [x1 - 0.2 * length, y1 - 0.1, 1.45], kind, inst, GLASS,
              None, yaw, pivot)
    elif kind == "truck":
        b.box([x1 - 2.0, y0 + 0.05, 0.5], [x1, y1 - 0.05, 2.8], kind, inst, paint, "noise", yaw, pivot)
        b.box([x1 - 1.0, y0, 1.6], [x1 + 0.03, y1, 2.4], kind, inst, GLASS, None, yaw, pivot)
        b.box([x0, y0, 0.9], [x1 - 2.2, y1, rng.uniform(3.0, 3.6)], kind, inst, (0.8, 0.8, 0.78), "noise",
              yaw, pivot)
    else:
        b.box([x0, y0, 0.35], [x1, y1, 3.1], kind, inst, paint, "noise", yaw, pivot)
        b.box([x0 + 0.3, y0 - 0.02, 1.3], [x1 + 0.02, y1 + 0.02, 2.5], kind, inst, GLASS, None, yaw, pivot)
    for wx in (x0 + 0.2 * length, x1 - 0.2 * length):
        for wy in (y0 + 0.12, y1 - 0.12):
            b.cylinder([wx, wy, wheel_r], wheel_r, 0.26, kind, inst, TYRE, None, "y", yaw, pivot)
    return length


def _pedestrian(b: _Builder, rng: np.random.Generator, x: float, y: float, z: float) -> None:
    inst = b.new_instance("pedestrian")
    height = rng.uniform(1.55, 1.9)
    yaw = rng.uniform(0, 2 * math.pi)
    clothes = rng.uniform(0.1, 0.8, 3)
    b.box([x - 0.12, y - 0.18, z], [x + 0.12, y + 0.18, z + 0.47 * height], "pedestrian", inst,
          rng.uniform(0.1, 0.4, 3), None, yaw, [x, y, z])
    b.cylinder([x, y, z + 0.66 * height], 0.2, 0.38 * height, "pedestrian", inst, clothes, "noise")
    b.sphere([x, y, z + 0.92 * height], 0.1, "pedestrian", inst, (0.8, 0.62, 0.5), None, 1)


def _tree(b: _Builder, rng: np.random.Generator, x: float, y: float, z: float) -> None:
    trunk = rng.uniform(2.2, 3.2)
    crown = rng.uniform(1.3, 2.2)
    b.cylinder([x, y, z + trunk / 2], rng.uniform(0.12, 0.2), trunk, "vegetation", 0, (0.35, 0.25, 0.15),
               "noise", sections=10)
    green = np.array([0.2, 0.42, 0.15]) + rng.normal(0, 0.04, 3)
    b.sphere([x, y, z + trunk + 0.6 * crown], crown, "vegetation", 0, green, "foliage")


def build_street_scene(seed: int, length_m: float = 80.0, *, lane_width_m: float = 3.5,
                       sidewalk_width_m: float = 2.5, vehicle_density: float = 0.6,
                       pedestrians: int | None = None) -> SyntheticScene:
    """A straight two-lane street with parked vehicles, pedestrians, trees, lamps and buildings.

    The street runs along x from ``-length_m / 4`` to ``3 length_m / 4`` (so an ego that drives
    forward from the origin stays on it). Across it (y left): the ego lane ``|y| <= lane_width_m/2``,
    the oncoming lane, a 2.6 m parking strip on each side, a 0.15 m kerb, the sidewalk, a 2 m grass
    strip with trees, then buildings; a large terrain plane 2 cm below z = 0 fills the rest.
    Vehicles and pedestrians are never put in the ego lane, and the right parking strip is kept
    clear for ``|x| < 6`` m (so the ego's side cameras are not blocked at the start). Deterministic
    for a ``seed``.

    Args:
        seed: seed of the ``numpy.random.Generator`` that draws every size, position and colour.
        length_m: street length in metres.
        lane_width_m, sidewalk_width_m: cross-section widths in metres.
        vehicle_density: fraction of parking slots that hold a vehicle, in [0, 1].
        pedestrians: number of pedestrians (default: 4..9, drawn).

    Returns:
        The scene; ``scene.metadata`` records the seed and the arguments.
    """
    rng = np.random.default_rng(seed)
    sun_az, sun_el = rng.uniform(0, 2 * math.pi), math.radians(rng.uniform(35, 65))
    scene = SyntheticScene(sun_direction=[math.cos(sun_el) * math.cos(sun_az),
                                          math.cos(sun_el) * math.sin(sun_az), math.sin(sun_el)])
    scene.metadata = {"generator": "build_street_scene", "seed": int(seed), "length_m": float(length_m),
                      "lane_width_m": float(lane_width_m), "sidewalk_width_m": float(sidewalk_width_m),
                      "vehicle_density": float(vehicle_density), "pedestrians": pedestrians}
    b = _Builder(scene)
    num_cones = int(rng.integers(3, 6))
    cones_x0 = rng.uniform(5.0, length_m / 2)
    cones_x1 = cones_x0 + 2.0 * (num_cones - 1)
    kept_clear = [(-6.0, 6.0), (cones_x0 - 1.0, cones_x1 + 1.0)]  # right parking strip: ego start, cones
    xa, xb = -length_m / 4, 3 * length_m / 4
    half, park = lane_width_m / 2, 2.6
    road_r, road_l = -half - park, 3 * half + park
    b.box([xa - 120, road_r - 120, -0.12], [xb + 120, road_l + 120, -0.02], "terrain", 0, (0.36, 0.42, 0.25),
          "grass")
    b.box([xa, road_r, -0.1], [xb, road_l, 0.0], "driveable_surface", 0, (0.3, 0.3, 0.32), "asphalt")
    white = (0.9, 0.9, 0.88)
    for y in (-half, 3 * half):  # solid lines between the lanes and the parking strips
        b.box([xa, y - 0.06, 0.0], [xb, y + 0.06, 0.005], "driveable_surface", 0, white)
    for x in np.arange(xa + 1.0, xb - 3.0, 9.0):  # dashed centre line
        b.box([x, half - 0.06, 0.0], [x + 3.0, half + 0.06, 0.005], "driveable_surface", 0, white)

    for side in (-1.0, 1.0):
        edge = road_l if side > 0 else road_r

        def span(a: float, c: float) -> tuple[float, float]:
            return min(edge + side * a, edge + side * c), max(edge + side * a, edge + side * c)

        y0, y1 = span(0.0, 0.2)
        b.box([xa, y0, -0.1], [xb, y1, 0.15], "sidewalk", 0, (0.62, 0.62, 0.6), "noise")
        y0, y1 = span(0.2, 0.2 + sidewalk_width_m)
        b.box([xa, y0, -0.1], [xb, y1, 0.15], "sidewalk", 0, (0.7, 0.68, 0.64), "paving")
        grass_in = 0.2 + sidewalk_width_m
        y0, y1 = span(grass_in, grass_in + 2.0)
        b.box([xa, y0, -0.1], [xb, y1, 0.1], "terrain", 0, (0.3, 0.45, 0.2), "grass")
        x = xa + rng.uniform(1, 6)
        while x < xb - 1:  # trees on the grass strip
            _tree(b, rng, x, edge + side * (grass_in + 1.0), 0.1)
            x += rng.uniform(7, 13)
        for x in np.arange(xa + rng.uniform(2, 10), xb - 1, 25.0):  # street lamps by the kerb
            y, y_arm = edge + side * 0.6, edge - side * 0.8
            b.cylinder([x, y, 0.15 + 3.0], 0.08, 6.0, "manmade", 0, (0.3, 0.32, 0.3), sections=10)
            b.box([x - 0.06, min(y, y_arm), 5.9], [x + 0.06, max(y, y_arm), 6.0], "manmade", 0,
                  (0.3, 0.32, 0.3))
        x = xa - 10.0
        while x < xb + 10.0:  # buildings
            width, depth = rng.uniform(8, 20), rng.uniform(8, 16)
            front = grass_in + 2.0 + rng.uniform(0.0, 3.0)
            y0, y1 = span(front, front + depth)
            color = FACADES[rng.integers(len(FACADES))] + rng.normal(0, 0.03, 3)
            b.box([x, y0, -0.05], [x + width, y1, rng.uniform(5, 24)], "manmade", 0, color, "facade")
            x += width + rng.uniform(0.0, 4.0)
        x = xa + rng.uniform(0.5, 4.0)
        while True:  # parked vehicles, leaving room for the cones and the barriers
            kind = str(rng.choice(["car", "truck", "bus"], p=[0.78, 0.14, 0.08]))
            size = {"car": 4.8, "truck": 8.5, "bus": 12.0}[kind]
            if x + size > xb - 2.5:
                break
            blocked = [(lo, hi) for lo, hi in kept_clear if x + size > lo and x < hi] if side < 0 else []
            if blocked:
                x = blocked[0][1]
            elif rng.uniform() < vehicle_density:
                yaw = (0.0 if side < 0 else math.pi) + math.radians(rng.normal(0, 1))
                y = edge - side * ({"car": 0.98, "truck": 1.2, "bus": 1.25}[kind] + rng.uniform(0.2, 0.35))
                _vehicle(b, rng, kind, x + size / 2, y, yaw)
                x += size + rng.uniform(0.8, 3.0)
            else:
                x += rng.uniform(4.0, 9.0)
    placed: list[float] = []
    for x in rng.uniform(xa + 10, xb - 10, rng.integers(0, 3)):  # oncoming traffic, apart
        if not any(abs(x - other) < 8.0 for other in placed):
            _vehicle(b, rng, "car", float(x), 2 * half, math.pi + math.radians(rng.normal(0, 1)))
            placed.append(x)
    for k in range(num_cones):  # traffic cones in the right parking strip
        b.cone([cones_x0 + 2.0 * k, -half - 0.6, 0.0], 0.17, 0.7, "traffic_cone",
               b.new_instance("traffic_cone"), (0.95, 0.35, 0.05), "stripes")
    for k in range(rng.integers(2, 5)):  # barriers closing the far end of the road
        y = road_r + 0.5 + 2.2 * k
        b.box([xb - 2.0, y, 0.0], [xb - 1.4, y + 2.0, 0.85], "barrier", b.new_instance("barrier"),
              (0.85, 0.85, 0.82), "stripes")
    count = int(rng.integers(4, 10)) if pedestrians is None else pedestrians
    for _ in range(count):
        side = rng.choice([-1.0, 1.0])
        edge = road_l if side > 0 else road_r
        y = edge + side * rng.uniform(1.0, sidewalk_width_m)
        _pedestrian(b, rng, rng.uniform(xa + 2, xb - 2), y, 0.15)
    return scene
