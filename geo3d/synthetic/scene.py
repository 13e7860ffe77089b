"""Synthetic scenes: labelled triangle meshes, moving actors, lighting and the ego's drive.

World axes are those of driving data (``docs/conventions.md``): z up, metres, ground at z = 0.
Static meshes are in world coordinates; an :class:`Actor` is an object model that moves along a
road path at constant speed, posed at any time with :meth:`SyntheticScene.meshes_at`. Class ids
are those of :data:`geo3d.synthetic.classes.CLASS_NAMES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geo3d.geometry.poses import make_pose
from geo3d.synthetic.classes import CLASS_NAMES, class_id
from geo3d.synthetic.primitives import ObjectModel, place_vertices, yaw_matrix
from geo3d.synthetic.road import RoadPath
from geo3d.synthetic.textures import TEXTURES


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
    """Labelled meshes, moving actors and a directional light (sun + ambient + sky), world frame,
    and optionally the ego vehicle's drive (a lane of a road path at constant speed).

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
        actors: moving objects (posed at a time by :meth:`meshes_at`).
        ego_path: the road path the ego drives along, or None (then :meth:`ego2world` is unavailable).
        ego_lane_offset_m: the ego's lateral offset from ``ego_path`` (metres, + = left).
        ego_start_s: the ego's arc length on ``ego_path`` at time 0, metres.
        ego_speed_mps: the ego's speed, metres per second.
    """

    meshes: list[LabelledMesh] = field(default_factory=list)
    sun_direction: np.ndarray = field(default_factory=lambda: _unit([-0.4, 0.35, 0.85]))
    sun_intensity: float = 0.7
    ambient: float = 0.45
    sky_horizon: tuple[float, float, float] = (0.84, 0.88, 0.94)
    sky_zenith: tuple[float, float, float] = (0.33, 0.52, 0.82)
    metadata: dict[str, Any] = field(default_factory=dict)
    actors: list[Actor] = field(default_factory=list)
    ego_path: RoadPath | None = None
    ego_lane_offset_m: float = 0.0
    ego_start_s: float = 0.0
    ego_speed_mps: float = 0.0

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
        """``[2, 3]`` axis-aligned min and max corner of all static vertices, metres."""
        vertices = self.merged()[0]
        return np.stack([vertices.min(axis=0), vertices.max(axis=0)])

    def meshes_at(self, time_s: float) -> list[LabelledMesh]:
        """The static meshes followed by every actor's meshes posed at ``time_s`` seconds."""
        return list(self.meshes) + [mesh for actor in self.actors for mesh in actor.meshes_at(time_s)]

    def ego2world(self, time_s: float) -> np.ndarray:
        """``[4, 4]`` float64 pose of the ego vehicle at ``time_s``: on the ground (z = 0), x along
        its lane's heading, y left, z up."""
        if self.ego_path is None:
            raise ValueError("this scene has no ego drive (ego_path is None)")
        s = self.ego_start_s + self.ego_speed_mps * time_s
        x, y, heading = self.ego_path.pose(s, self.ego_lane_offset_m)
        return make_pose(yaw_matrix(float(heading)), [float(x), float(y), 0.0])




def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def place_model(model: ObjectModel, x: float, y: float, yaw: float, instance: int = 0, z: float = 0.0
                ) -> list[LabelledMesh]:
    """World meshes of ``model`` turned by ``yaw`` (radians about z) and moved to ``(x, y, z)``;
    every part gets the model's class and ``instance``."""
    semantic = class_id(model.semantic)
    return [LabelledMesh(place_vertices(p.vertices, x, y, yaw, z), p.faces, semantic, instance, p.color, p.texture)
            for p in model.parts]


@dataclass(eq=False)
class Actor:
    """An object moving along a road path at constant speed.

    At time ``t`` it is at arc length ``s0 + direction * speed_mps * t`` on ``path``, lateral offset
    ``lateral_m``, facing the direction of travel (``direction = -1``: against the path).

    Attributes:
        model: the object model (local frame).
        instance: its instance id (the same in every frame).
        path, s0, lateral_m, speed_mps, direction: the motion.
        z: height of its local origin above z = 0 (0.15 m for people on a sidewalk).
    """

    model: ObjectModel
    instance: int
    path: RoadPath
    s0: float
    lateral_m: float
    speed_mps: float
    direction: int = 1
    z: float = 0.0

    def pose_at(self, time_s: float) -> tuple[float, float, float]:
        """``(x, y, yaw)`` in the world at ``time_s`` seconds."""
        s = self.s0 + self.direction * self.speed_mps * time_s
        x, y, heading = self.path.pose(s, self.lateral_m)
        return float(x), float(y), float(heading) + (0.0 if self.direction > 0 else np.pi)

    def meshes_at(self, time_s: float) -> list[LabelledMesh]:
        """The actor's world meshes at ``time_s``."""
        return place_model(self.model, *self.pose_at(time_s), instance=self.instance, z=self.z)
