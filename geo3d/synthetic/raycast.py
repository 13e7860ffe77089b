"""Ray-casting renderer: a :class:`SyntheticScene` -> camera images, depth, labels and LiDAR sweeps.

Rays are traced with Open3D's ``RaycastingScene`` (Embree, CPU, float32), imported on first use.
Cameras are ideal pinholes (``docs/conventions.md``: OpenCV axes, ``K`` in pixels, rays through
pixel centres at integer coordinates); depth is z-depth in metres with 0 where nothing is hit;
labels are class ids of :data:`~geo3d.synthetic.classes.CLASS_NAMES` (0 = no hit) and instance ids
(0 = none). Colour is Lambertian shading of each mesh's (textured) albedo under the scene's sun
(with cast shadows) and ambient light; rays that hit nothing get the sky gradient.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from geo3d.structures.capture import ArraySource, CameraFrame, Capture, Frame, LidarSweep
from geo3d.synthetic.classes import CLASS_NAMES
from geo3d.synthetic.scene import SyntheticScene
from geo3d.synthetic.sensors import LidarSpec, SurroundRig
from geo3d.synthetic.textures import apply_textures
from geo3d.utils.optional import require

SHADOW_OFFSET_M = 1e-3
"""Shadow rays start this far off the surface (along its normal) so they do not hit it again."""

LIDAR_COLUMNS = ("x", "y", "z", "intensity", "ring")
"""Columns of :attr:`LidarRender.points` (and of the capture's ``LIDAR_TOP`` sweeps)."""


class RayHits(NamedTuple):
    """First hits of ``R`` rays.

    Attributes:
        t: ``[R]`` float64 hit distance in units of the ray direction's length; inf = no hit.
        mesh_index: ``[R]`` int64 index into the raycaster's ``meshes`` of the hit mesh; -1 = no hit.
        normals: ``[R, 3]`` float64 unit normal of the hit triangle as stored (its winding), world.
    """

    t: np.ndarray
    mesh_index: np.ndarray
    normals: np.ndarray


class CameraRender(NamedTuple):
    """One rendered camera image and its ground truth, all ``[H, W, ...]``.

    Attributes:
        rgb: ``[H, W, 3]`` uint8 colour.
        depth: ``[H, W]`` float32 z-depth along the optical axis, metres; 0 = no hit.
        semantic: ``[H, W]`` int32 class id; 0 = no hit (sky).
        instance: ``[H, W]`` int32 instance id; 0 = none.
    """

    rgb: np.ndarray
    depth: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray


class LidarRender(NamedTuple):
    """One simulated LiDAR sweep (returns within range only).

    Attributes:
        points: ``[N, 5]`` float32 in the sensor frame, columns :data:`LIDAR_COLUMNS`: x, y, z metres,
            intensity in [0, 255] (albedo times ``|cos|`` of the incidence angle), ring (beam index).
        semantic: ``[N]`` int32 class id of each return.
        instance: ``[N]`` int32 instance id of each return (0 = none).
    """

    points: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray


class SceneRaycaster:
    """A scene posed at one time, loaded into Open3D's ``RaycastingScene``; build once, cast many rays.

    All meshes go into one Open3D geometry (a face -> mesh lookup recovers which mesh a ray hit),
    which builds fast enough to rebuild per frame when actors move. Open3D traces in float32: keep
    scenes within a few km of the world origin (1e-7 relative).

    Attributes:
        scene: the :class:`SyntheticScene`.
        meshes: the posed meshes in the raycaster (static ones first, then the actors').
        semantic, instance: ``[M + 1]`` int32 labels per mesh, with a trailing 0 for "no hit" (so
            ``semantic[mesh_index]`` is 0 where ``mesh_index == -1``).
        colors: ``[M + 1, 3]`` float64 base albedo per mesh (trailing row unused).
    """

    def __init__(self, scene: SyntheticScene, time_s: float = 0.0, *, center=None,
                 radius_m: float | None = None) -> None:
        """Pose ``scene`` at ``time_s``; with ``center [3]`` and ``radius_m``, keep only the meshes
        whose bounding box comes within ``radius_m`` of ``center`` (world, metres)."""
        o3d = require("open3d")
        self.scene = scene
        self._o3d = o3d
        meshes = scene.meshes_at(time_s)
        if center is not None and radius_m is not None and meshes:
            lo = np.array([m.vertices.min(axis=0) for m in meshes])
            hi = np.array([m.vertices.max(axis=0) for m in meshes])
            gap = np.maximum(np.maximum(lo - center, np.asarray(center) - hi), 0.0)
            meshes = [m for m, g in zip(meshes, np.linalg.norm(gap, axis=1)) if g <= radius_m]
        self.meshes = meshes
        self._raycasting = o3d.t.geometry.RaycastingScene()
        counts = np.array([len(m.faces) for m in meshes], dtype=np.int64)
        self._face_mesh = np.repeat(np.arange(len(meshes)), counts)
        if meshes:
            offsets = np.cumsum([0] + [len(m.vertices) for m in meshes])[:-1]
            vertices = np.concatenate([m.vertices for m in meshes]).astype(np.float32)
            faces = np.concatenate([m.faces + o for m, o in zip(meshes, offsets)]).astype(np.uint32)
            self._raycasting.add_triangles(o3d.core.Tensor(vertices), o3d.core.Tensor(faces))
        self.semantic = np.array([m.semantic for m in meshes] + [0], dtype=np.int32)
        self.instance = np.array([m.instance for m in meshes] + [0], dtype=np.int32)
        self.colors = np.array([m.color for m in meshes] + [(0.0, 0.0, 0.0)], dtype=np.float64)
        self._textures = [m.texture for m in meshes]

    def _rays(self, origins: np.ndarray, directions: np.ndarray):
        origins = np.broadcast_to(origins, directions.shape)
        rays = np.concatenate([origins, directions], axis=-1).astype(np.float32)
        return self._o3d.core.Tensor(np.ascontiguousarray(rays))

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> RayHits:
        """First hits of rays ``origins [R, 3]`` (or ``[3]``) + t ``directions [R, 3]`` (world)."""
        directions = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
        if not self.meshes or len(directions) == 0:
            count = len(directions)
            return RayHits(np.full(count, np.inf), np.full(count, -1, np.int64), np.zeros((count, 3)))
        result = self._raycasting.cast_rays(self._rays(origins, directions))
        geometry = result["geometry_ids"].numpy().astype(np.int64)
        hit = geometry != self._raycasting.INVALID_ID
        primitive = result["primitive_ids"].numpy().astype(np.int64)
        mesh_index = np.where(hit, self._face_mesh[np.where(hit, primitive, 0)], -1)
        t = np.where(hit, result["t_hit"].numpy().astype(np.float64), np.inf)
        return RayHits(t, mesh_index, result["primitive_normals"].numpy().astype(np.float64))

    def occluded(self, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """``[R]`` bool: whether each ray ``origins [R, 3]`` + t ``directions [R, 3]`` (t > 0) hits
        anything."""
        if not self.meshes or len(directions) == 0:
            return np.zeros(len(directions), dtype=bool)
        return self._raycasting.test_occlusions(self._rays(origins, directions)).numpy().astype(bool)

    def albedo(self, points: np.ndarray, normals: np.ndarray, mesh_index: np.ndarray) -> np.ndarray:
        """``[N, 3]`` textured albedo at world hit ``points [N, 3]`` (normals as in :class:`RayHits`)."""
        return apply_textures(self._textures, mesh_index, points, normals, self.colors[mesh_index])

    def shade(self, points: np.ndarray, normals: np.ndarray, mesh_index: np.ndarray,
              view_directions: np.ndarray, shadows: bool = True) -> np.ndarray:
        """``[N, 3]`` float64 Lambert-shaded colour of hits seen along ``view_directions [N, 3]``.

        Shading is two-sided: each normal is turned towards the viewer first.
        """
        albedo = self.albedo(points, normals, mesh_index)
        facing = np.where((normals * view_directions).sum(axis=1, keepdims=True) > 0, -normals, normals)
        sun = self.scene.sun_direction
        cosine = np.clip(facing @ sun, 0.0, None)
        if shadows and cosine.any():
            lit = np.flatnonzero(cosine > 0)
            origins = points[lit] + SHADOW_OFFSET_M * facing[lit]
            cosine[lit[self.occluded(origins, np.broadcast_to(sun, origins.shape))]] = 0.0
        light = self.scene.ambient + self.scene.sun_intensity * cosine
        return np.clip(albedo * light[:, None], 0.0, 1.0)

    def sky(self, directions: np.ndarray) -> np.ndarray:
        """``[N, 3]`` sky colour for unit world ``directions [N, 3]`` (horizon -> zenith gradient)."""
        up = np.sqrt(np.clip(directions[:, 2], 0.0, 1.0))[:, None]
        return (1.0 - up) * np.asarray(self.scene.sky_horizon) + up * np.asarray(self.scene.sky_zenith)


def _raycaster(scene: SyntheticScene | SceneRaycaster) -> SceneRaycaster:
    return scene if isinstance(scene, SceneRaycaster) else SceneRaycaster(scene)


def render_camera(scene: SyntheticScene | SceneRaycaster, K: np.ndarray, cam2world: np.ndarray, width: int,
                  height: int, *, shadows: bool = True) -> CameraRender:
    """Render one pinhole camera.

    Args:
        scene: the scene, or a :class:`SceneRaycaster` of it (to reuse across calls).
        K: ``[3, 3]`` intrinsics in pixels (pixel centres at integers).
        cam2world: ``[4, 4]`` camera-to-world pose, OpenCV axes.
        width, height: image size in pixels.
        shadows: cast shadow rays towards the sun (otherwise every surface facing it is lit).

    Returns:
        :class:`CameraRender` of ``[H, W]`` arrays. The ray of pixel ``(u, v)`` (column, row) goes
        through ``K^-1 [u, v, 1]``; its hit distance in units of that vector is the z-depth.
    """
    caster = _raycaster(scene)
    K = np.asarray(K, dtype=np.float64)
    cam2world = np.asarray(cam2world, dtype=np.float64)
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pixels = np.stack([u, v, np.ones_like(u)], axis=-1).reshape(-1, 3)
    directions_cam = pixels @ np.linalg.inv(K).T  # z = 1: hit distance = z-depth
    directions_world = directions_cam @ cam2world[:3, :3].T
    origin = cam2world[:3, 3]
    hits = caster.cast(origin, directions_world)
    hit = hits.mesh_index >= 0
    unit = directions_world / np.linalg.norm(directions_world, axis=1, keepdims=True)
    rgb = caster.sky(unit)
    points = origin + hits.t[hit, None] * directions_world[hit]
    rgb[hit] = caster.shade(points, hits.normals[hit], hits.mesh_index[hit], unit[hit], shadows)
    depth = np.where(hit, hits.t, 0.0)
    shape = (height, width)
    return CameraRender(
        rgb=np.round(rgb * 255.0).astype(np.uint8).reshape(height, width, 3),
        depth=depth.astype(np.float32).reshape(shape),
        semantic=caster.semantic[hits.mesh_index].reshape(shape),
        instance=caster.instance[hits.mesh_index].reshape(shape),
    )


def simulate_lidar(scene: SyntheticScene | SceneRaycaster, lidar2world: np.ndarray,
                   spec: LidarSpec | None = None, rng: np.random.Generator | None = None) -> LidarRender:
    """Simulate one revolution of a spinning LiDAR (all beams fired at the same instant).

    Args:
        scene: the scene, or a :class:`SceneRaycaster` of it.
        lidar2world: ``[4, 4]`` sensor-to-world pose.
        spec: the sensor (default :class:`LidarSpec`, an HDL-32E).
        rng: draws the range noise and dropout when the spec asks for them (default: seed 0).

    Returns:
        :class:`LidarRender` with the returns closer than ``spec.max_range_m``, in firing order
        (azimuth-major), coordinates in the sensor frame.
    """
    caster = _raycaster(scene)
    spec = spec or LidarSpec()
    lidar2world = np.asarray(lidar2world, dtype=np.float64)
    directions, ring = spec.directions()
    directions_world = directions @ lidar2world[:3, :3].T
    origin = lidar2world[:3, 3]
    hits = caster.cast(origin, directions_world)
    keep = (hits.mesh_index >= 0) & (hits.t <= spec.max_range_m)
    t = hits.t
    rng = rng or np.random.default_rng(0)
    if spec.range_noise_std_m > 0:
        t = t + rng.normal(0.0, spec.range_noise_std_m, len(t))
    if spec.dropout > 0:
        keep &= rng.uniform(size=len(t)) >= spec.dropout
    t, mesh_index, normals = t[keep], hits.mesh_index[keep], hits.normals[keep]
    points_world = origin + t[:, None] * directions_world[keep]
    albedo = caster.albedo(points_world, normals, mesh_index).mean(axis=1)
    cosine = np.abs((normals * directions_world[keep]).sum(axis=1))
    points = np.concatenate([t[:, None] * directions[keep], (255.0 * albedo * cosine)[:, None],
                             ring[keep, None].astype(np.float64)], axis=1)
    return LidarRender(points.astype(np.float32), caster.semantic[mesh_index], caster.instance[mesh_index])


CULL_RADIUS_M = 250.0
"""Per-frame ray casting keeps only the meshes within this distance of the ego (metres)."""


def render_frame(scene: SyntheticScene | SceneRaycaster, rig: SurroundRig, ego2world: np.ndarray, index: int,
                 timestamp: float, lidar_spec: LidarSpec | None = None, rng: np.random.Generator | None = None,
                 *, lidar: bool = True, shadows: bool = True) -> Frame:
    """Render the cameras of ``rig`` and (with ``lidar``) a ``LIDAR_TOP`` sweep at one ego pose.

    Args:
        scene: the scene, posed at ``timestamp`` (seconds) here, or a :class:`SceneRaycaster`
            already posed at that time.
        rig: the cameras; ``cam2world = ego2world @ rig.cam2ego[c]``.
        ego2world: ``[4, 4]`` ego-to-world pose.
        index, timestamp: the frame's index and time (seconds).
        lidar_spec: the LiDAR (default :class:`LidarSpec`); ``sensor2world = ego2world @ lidar2ego``.
        rng: draws the LiDAR's range noise and dropout, if the spec has them.

    Returns:
        A :class:`Frame` with in-memory uint8 images, float32 depth, uint8 semantic and int32
        instance maps, and ``[N, 5]`` LiDAR points (:data:`LIDAR_COLUMNS`) with uint8 / int32 labels.
    """
    ego2world = np.asarray(ego2world, dtype=np.float64)
    caster = scene if isinstance(scene, SceneRaycaster) else SceneRaycaster(
        scene, timestamp, center=ego2world[:3, 3], radius_m=CULL_RADIUS_M)
    frame = Frame(index=index, timestamp=timestamp, ego2world=ego2world.copy())
    for name, K, cam2ego in zip(rig.names, rig.K, rig.cam2ego):
        cam2world = ego2world @ cam2ego
        render = render_camera(caster, K, cam2world, rig.width, rig.height, shadows=shadows)
        frame.cameras[name] = CameraFrame(
            camera=name, K=np.array(K, dtype=np.float64), cam2world=cam2world, width=rig.width,
            height=rig.height, image=ArraySource.of(render.rgb), timestamp=timestamp,
            depth=ArraySource.of(render.depth), semantic=ArraySource.of(render.semantic.astype(np.uint8)),
            instance=ArraySource.of(render.instance))
    if lidar:
        spec = lidar_spec or LidarSpec()
        lidar2world = ego2world @ spec.lidar2ego
        sweep = simulate_lidar(caster, lidar2world, spec, rng)
        frame.lidar["LIDAR_TOP"] = LidarSweep(
            sensor="LIDAR_TOP", points=ArraySource.of(sweep.points), columns=LIDAR_COLUMNS,
            sensor2world=lidar2world, timestamp=timestamp, semantic=ArraySource.of(sweep.semantic.astype(np.uint8)),
            instance=ArraySource.of(sweep.instance))
    return frame


def render_capture(scene: SyntheticScene, rig: SurroundRig, ego2world_list,
                   lidar_spec: LidarSpec | None = None, seed: int = 0, *, lidar: bool = True,
                   frame_interval_s: float = 0.5, shadows: bool = True) -> Capture:
    """Render a multi-camera + LiDAR capture of ``scene`` along an ego trajectory (no occupancy;
    :func:`geo3d.synthetic.generate.generate_capture` makes the full ground truth).

    Args:
        scene: the scene; frame ``i`` sees it at time ``i * frame_interval_s`` (actors move).
        rig, lidar_spec, lidar, shadows: as in :func:`render_frame`.
        ego2world_list: ``T`` ``[4, 4]`` ego-to-world poses (a list or a ``[T, 4, 4]`` array).
        seed: recorded in the metadata; seeds the LiDAR's range noise and dropout (frame ``i`` uses
            ``numpy.random.default_rng([seed, i])``), which are off by default.
        frame_interval_s: time between frames; frame ``i`` has timestamp ``i * frame_interval_s``.

    Returns:
        A :class:`Capture` (``source_format="synthetic"``) of :func:`render_frame` frames;
        ``metadata`` has the seed, the class names, the scene's own metadata and the LiDAR spec.
    """
    spec = lidar_spec or LidarSpec()
    static = None if scene.actors else SceneRaycaster(scene)
    frames = [render_frame(static or scene, rig, ego2world, index, index * frame_interval_s, spec,
                           np.random.default_rng([seed, index]), lidar=lidar, shadows=shadows)
              for index, ego2world in enumerate(ego2world_list)]
    metadata = {"seed": int(seed), "class_names": list(CLASS_NAMES), "scene": dict(scene.metadata),
                "lidar": spec.to_dict() if lidar else None, "frame_interval_s": frame_interval_s}
    return Capture(frames, source_format="synthetic", world_frame="synthetic (z up, metres)",
                   metadata=metadata)
