"""The ray-casting renderer against analytic geometry computed here in NumPy, and its sensors
against each other (LiDAR returns on the meshes per trimesh, LiDAR vs camera depth)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geo3d.geometry import intrinsics_from_fov, make_pose, transform_points
from geo3d.synthetic import (
    CLASS_IDS,
    LabelledMesh,
    LidarSpec,
    SceneRaycaster,
    SyntheticScene,
    camera_rotation_from_yaw,
    render_camera,
    render_capture,
    simulate_lidar,
)

W, H = 160, 120


def quad(z: float = 0.0, half: float = 500.0, semantic: int = 11, color=(0.5, 0.5, 0.5)) -> LabelledMesh:
    """A horizontal square at height z (two triangles)."""
    vertices = [[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]]
    return LabelledMesh(vertices, [[0, 1, 2], [0, 2, 3]], semantic, 0, color)


def box(lo, hi, semantic: int, instance: int, color=(0.5, 0.5, 0.5)) -> LabelledMesh:
    """An axis-aligned box between corners lo and hi (12 triangles, written out here)."""
    (x0, y0, z0), (x1, y1, z1) = lo, hi
    vertices = [[x, y, z] for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)]
    faces = [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
             [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]  # fmt: skip
    return LabelledMesh(vertices, faces, semantic, instance, color)


def pixel_rays(K, cam2world, width=W, height=H):
    """World origin [3] and directions [H*W, 3] with camera z = 1 through integer pixel centres."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    rays_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    return cam2world[:3, 3], rays_cam.reshape(-1, 3) @ cam2world[:3, :3].T


def test_frontal_plane_depth_is_constant():
    d = 7.25
    K = intrinsics_from_fov(W, H, math.radians(80))
    scene = SyntheticScene([quad(z=d, semantic=CLASS_IDS["manmade"])])
    render = render_camera(scene, K, np.eye(4), W, H)  # camera looks along world +z at the plane
    np.testing.assert_allclose(render.depth, d, rtol=2e-6)
    assert render.depth.dtype == np.float32 and (render.semantic == CLASS_IDS["manmade"]).all()
    assert render.rgb.shape == (H, W, 3) and render.rgb.dtype == np.uint8


def test_oblique_plane_depth_matches_ray_plane_intersection():
    K = np.array([[150.0, 0.0, 70.3], [0.0, 140.0, 66.8], [0.0, 0.0, 1.0]])
    rotation = camera_rotation_from_yaw(math.radians(33.0), pitch=math.radians(55.0))
    cam2world = make_pose(rotation, [3.0, -2.0, 10.0])
    scene = SyntheticScene([quad(z=0.0)])
    render = render_camera(scene, K, cam2world, W, H)
    origin, directions = pixel_rays(K, cam2world)
    t = -origin[2] / directions[:, 2]  # ray-plane z = 0; t is the z-depth since ray_cam z = 1
    assert (t > 0).all()
    np.testing.assert_allclose(render.depth.ravel(), t, rtol=1e-5)
    # the camera z of the hit points is their depth, independently of the ray parametrisation
    hits_world = origin + t[:, None] * directions
    z_cam = transform_points(np.linalg.inv(cam2world), hits_world)[:, 2]
    np.testing.assert_allclose(render.depth.ravel(), z_cam, rtol=1e-5)


def test_horizon_row_follows_integer_pixel_centres():
    """A level camera 1.5 m over a ground plane: rows below the principal point see the ground at
    z = 1.5 fy / (v - cy), the row through it and those above see the sky (depth 0, label 0)."""
    K = intrinsics_from_fov(W, H + 1, math.radians(70))  # odd height: cy = 60 is a pixel row
    cam2world = make_pose(camera_rotation_from_yaw(0.3), [0.0, 0.0, 1.5])
    render = render_camera(SyntheticScene([quad()]), K, cam2world, W, H + 1)
    rows = np.arange(H + 1)
    below = rows > K[1, 2]
    expected = np.where(below, 1.5 * K[1, 1] / np.where(below, rows - K[1, 2], 1.0), 0.0)
    np.testing.assert_allclose(render.depth, np.broadcast_to(expected[:, None], (H + 1, W)), rtol=1e-5)
    assert (render.semantic[~below] == 0).all() and (render.semantic[below] == 11).all()


def test_sphere_silhouette_and_depth_match_ray_sphere_intersection():
    trimesh = pytest.importorskip("trimesh")
    center, radius = np.array([0.4, -0.3, 6.0]), 1.5
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=radius)
    sphere.apply_translation(center)
    tessellation = radius - np.linalg.norm(sphere.triangles_center - center, axis=1).min()
    K = np.array([[130.0, 0.0, 85.0], [0.0, 125.0, 55.0], [0.0, 0.0, 1.0]])
    render = render_camera(SyntheticScene([LabelledMesh.from_trimesh(sphere, 4, 1)]), K, np.eye(4), W, H)
    _, d = pixel_rays(K, np.eye(4))
    # |t d - c|^2 = r^2  ->  a t^2 - 2 b t + (|c|^2 - r^2) = 0
    a, b, c = (d * d).sum(1), d @ center, center @ center - radius**2
    disc = b * b - a * c
    t_near = (b - np.sqrt(np.clip(disc, 0, None))) / a
    miss_distance = np.sqrt(np.clip(c + radius**2 - b * b / a, 0, None))  # ray-to-centre distance
    hit = render.depth.ravel() > 0
    assert hit.sum() > 1000
    ambiguous = np.abs(miss_distance - radius) < tessellation + 1e-4
    np.testing.assert_array_equal(hit[~ambiguous], (disc > 0)[~ambiguous])
    # away from the rim (incidence cosine >= 0.25) the facets are within 4x their sag of the sphere
    inside = hit & (miss_distance < radius * 0.968)
    np.testing.assert_allclose(render.depth.ravel()[inside], t_near[inside], atol=4 * tessellation + 1e-5)
    assert (render.instance.ravel()[hit] == 1).all() and (render.instance.ravel()[~hit] == 0).all()


def test_labels_of_two_objects_at_projected_pixels():
    K = intrinsics_from_fov(W, H, math.radians(90))
    car = box([-2.0, -1.0, 8.0], [-0.5, 1.0, 9.0], CLASS_IDS["car"], 3)  # left, nearer
    cone = box([0.2, -0.5, 12.0], [1.8, 0.5, 13.0], CLASS_IDS["traffic_cone"], 9)  # right, behind
    occluder = box([-1.0, 1.5, 4.0], [1.0, 2.5, 5.0], CLASS_IDS["pedestrian"], 5)  # low, in front
    wall = box([-0.5, 0.0, 20.0], [0.5, 12.0, 21.0], CLASS_IDS["manmade"], 0)  # partly behind it
    render = render_camera(SyntheticScene([car, cone, occluder, wall]), K, np.eye(4), W, H)

    def pixel(point):
        u = K[0, 0] * point[0] / point[2] + K[0, 2]
        v = K[1, 1] * point[1] / point[2] + K[1, 2]
        return int(round(v)), int(round(u))

    assert render.semantic[pixel([-1.25, 0.0, 8.0])] == CLASS_IDS["car"]
    assert render.instance[pixel([-1.25, 0.0, 8.0])] == 3
    assert render.semantic[pixel([1.0, 0.0, 12.0])] == CLASS_IDS["traffic_cone"]
    assert render.instance[pixel([1.0, 0.0, 12.0])] == 9
    assert render.depth[pixel([1.0, 0.0, 12.0])] == pytest.approx(12.0, rel=1e-5)
    assert render.semantic[pixel([0.0, 2.0, 4.0])] == CLASS_IDS["pedestrian"]
    assert render.semantic[pixel([0.0, 8.0, 20.0])] == CLASS_IDS["pedestrian"]  # wall hidden here
    assert render.instance[pixel([0.0, 8.0, 20.0])] == 5
    assert render.semantic[pixel([0.0, 0.5, 20.0])] == CLASS_IDS["manmade"]  # and seen here
    assert render.depth[pixel([0.0, 0.5, 20.0])] == pytest.approx(20.0, rel=1e-5)
    assert render.semantic[pixel([0.0, -3.0, 8.0])] == 0 and render.depth[pixel([0.0, -3.0, 8.0])] == 0


def test_lambert_shading_and_cast_shadow():
    """Overhead sun: ground under a floating slab is lit by the ambient term only."""
    albedo, ambient, sun = 0.5, 0.45, 0.7
    slab = box([-1.0, -1.0, 3.0], [1.0, 1.0, 3.2], CLASS_IDS["manmade"], 0)
    scene = SyntheticScene([quad(color=(albedo,) * 3), slab], sun_direction=[0, 0, 1], ambient=ambient,
                           sun_intensity=sun)
    cam2world = make_pose(camera_rotation_from_yaw(0.0, pitch=math.radians(50)), [-6.0, 0.0, 4.0])
    K = intrinsics_from_fov(W, H, math.radians(70))
    render = render_camera(scene, K, cam2world, W, H)
    origin, directions = pixel_rays(K, cam2world)
    ground = render.semantic.ravel() == 11
    points = origin + render.depth.ravel()[:, None] * directions
    offset = np.abs(points[:, :2]).max(axis=1)  # Chebyshev distance from the slab's axis
    rgb = render.rgb.reshape(-1, 3).astype(int)
    shadowed, lit = ground & (offset < 0.95), ground & (offset > 1.05)
    assert shadowed.sum() > 50 and lit.sum() > 1000
    assert (rgb[shadowed] == round(255 * albedo * ambient)).all()
    assert (rgb[lit] == round(255 * albedo * (ambient + sun))).all()
    unlit = render_camera(scene, K, cam2world, W, H, shadows=False).rgb.reshape(-1, 3)
    assert (unlit[shadowed] == round(255 * albedo * (ambient + sun))).all()


def test_lidar_on_a_plane_lies_on_it_with_the_spec_elevations():
    spec = LidarSpec(azimuth_steps=360)
    tilt = np.array([[1, 0, 0], [0, math.cos(0.05), -math.sin(0.05)], [0, math.sin(0.05), math.cos(0.05)]])
    lidar2world = make_pose(tilt @ np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]), [2.0, -1.0, 1.84])
    sweep = simulate_lidar(SyntheticScene([quad(color=(0.4, 0.4, 0.4))]), lidar2world, spec)
    points = sweep.points
    assert points.dtype == np.float32 and points.shape[1] == 5
    points_world = transform_points(lidar2world, points[:, :3].astype(np.float64))
    assert np.abs(points_world[:, 2]).max() < 1e-4
    ring = points[:, 4].astype(int)
    np.testing.assert_array_equal(points[:, 4], ring)
    elevation = np.degrees(np.arctan2(points[:, 2], np.hypot(points[:, 0], points[:, 1])))
    nominal = np.linspace(-30.67, 10.67, 32)[ring]
    assert np.abs(elevation - nominal).max() < 1e-4
    azimuth = np.degrees(np.arctan2(points[:, 1], points[:, 0])) % 360.0
    assert np.abs(azimuth - np.round(azimuth)).max() < 1e-4  # 360 steps: whole degrees
    # expected returns: every beam direction whose ray reaches z = 0 within 70 m
    elevations = np.radians(np.linspace(-30.67, 10.67, 32))
    az, el = np.meshgrid(np.radians(np.arange(360)), elevations, indexing="ij")
    dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)
    dz = (dirs @ lidar2world[:3, :3].T)[:, 2]
    reach = -1.84 / np.where(dz < 0, dz, -1e-12)
    assert len(points) == int(((dz < 0) & (reach <= 70.0)).sum())
    ranges = np.linalg.norm(points[:, :3], axis=1)
    assert ranges.max() <= 70.0 + 1e-4
    cosine = 1.84 / ranges  # |cos| of the incidence on a horizontal plane from height 1.84
    np.testing.assert_allclose(points[:, 3], 255 * 0.4 * cosine, rtol=1e-4)
    assert (sweep.semantic == 11).all() and (sweep.instance == 0).all()


def test_lidar_noise_and_dropout_follow_the_rng():
    scene, pose = SyntheticScene([quad()]), make_pose(np.eye(3), [0, 0, 2.0])
    spec = LidarSpec(azimuth_steps=200, range_noise_std_m=0.02, dropout=0.3)
    a = simulate_lidar(scene, pose, spec, np.random.default_rng(1))
    b = simulate_lidar(scene, pose, spec, np.random.default_rng(1))
    exact = simulate_lidar(scene, pose, LidarSpec(azimuth_steps=200))
    np.testing.assert_array_equal(a.points, b.points)
    assert 0.6 < len(a.points) / len(exact.points) < 0.8
    residual = transform_points(pose, a.points[:, :3].astype(np.float64))[:, 2]
    assert 0.005 < np.abs(residual).max() < 0.5


def test_raycaster_reuse_and_empty_scene():
    K = intrinsics_from_fov(W, H, 1.0)
    empty = render_camera(SyntheticScene([]), K, np.eye(4), W, H)
    assert (empty.depth == 0).all() and (empty.semantic == 0).all()
    assert (empty.rgb[..., 2] > empty.rgb[..., 0] + 50).all()  # blue sky
    scene = SyntheticScene([quad(z=5.0)])
    caster = SceneRaycaster(scene)
    np.testing.assert_array_equal(render_camera(caster, K, np.eye(4), W, H).rgb,
                                  render_camera(scene, K, np.eye(4), W, H).rgb)


# --- the street scene: sensors against each other --------------------------------------------

def test_street_lidar_returns_lie_on_the_meshes_with_their_labels(street_scene, street_capture):
    trimesh = pytest.importorskip("trimesh")
    posed = SyntheticScene(street_scene.meshes_at(0.0))  # the actors where frame 0 saw them
    vertices, faces, mesh_index = posed.merged()
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    sweep = street_capture.frames[0].lidar["LIDAR_TOP"]
    points_world = sweep.points_world()
    pick = np.random.default_rng(0).choice(len(points_world), 1500, replace=False)
    _, distance, triangle = trimesh.proximity.closest_point(mesh, points_world[pick])
    assert distance.max() < 1e-3
    semantic = np.array([m.semantic for m in posed.meshes])[mesh_index[triangle]]
    assert (semantic == sweep.load_labels("semantic")[pick]).mean() > 0.99  # edges may go either way


def lidar_vs_camera(cam, points_world, semantic, instance, pixel_shift=0.0):
    """Project LiDAR points into a camera; returns (nearest-pixel label agreement [M] bool,
    |LiDAR z - rendered z| [M] metres, checked [M] bool) for the M points inside the image.

    Rendered z at the projection is interpolated between the 4 surrounding pixel centres in 1/z,
    which is exact on a plane. Checked points: closer than 30 m, and all 4 pixels show the point's
    own object (same class and instance), i.e. not at an occlusion edge or a silhouette.
    """
    depth, sem_map, inst_map = cam.load_depth(), cam.load_semantic(), cam.load_instance()
    points_cam = transform_points(np.linalg.inv(cam.cam2world), points_world)
    z = points_cam[:, 2]
    u = cam.K[0, 0] * points_cam[:, 0] / z + cam.K[0, 2] + pixel_shift
    v = cam.K[1, 1] * points_cam[:, 1] / z + cam.K[1, 2] + pixel_shift
    inside = (z > 0.5) & (u >= 0) & (u <= cam.width - 1) & (v >= 0) & (v <= cam.height - 1)
    u, v, z, semantic, instance = u[inside], v[inside], z[inside], semantic[inside], instance[inside]
    same_label = sem_map[np.round(v).astype(int), np.round(u).astype(int)] == semantic
    u0 = np.minimum(np.floor(u).astype(int), cam.width - 2)
    v0 = np.minimum(np.floor(v).astype(int), cam.height - 2)
    fu, fv = u - u0, v - v0
    corners = [(v0, u0), (v0, u0 + 1), (v0 + 1, u0), (v0 + 1, u0 + 1)]
    weights = [(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv]
    own = np.all([(sem_map[c] == semantic) & (inst_map[c] == instance) & (depth[c] > 0) for c in corners],
                 axis=0)
    inverse = sum(w / np.where(depth[c] > 0, depth[c], np.inf) for w, c in zip(weights, corners))
    error = np.abs(1.0 / np.where(own, inverse, 1.0) - z)
    return same_label, error, own & (z < 30.0)


def test_street_lidar_agrees_with_camera_depth(street_capture):
    """> 95 % of the LiDAR returns a camera sees land on its rendered depth within 3 cm."""
    frame = street_capture.frames[0]
    sweep = frame.lidar["LIDAR_TOP"]
    points_world = sweep.points_world()
    semantic, instance = sweep.load_labels("semantic"), sweep.load_labels("instance")
    all_same_label, shifted_ok = [], []
    for cam in frame.cameras.values():
        same_label, error, checked = lidar_vs_camera(cam, points_world, semantic, instance)
        all_same_label.append(same_label)
        # enough returns are checked (the rest are beyond 30 m or on silhouettes: how many depends on
        # the scene, e.g. 64 % checked in CAM_FRONT at seed 7 with a junction ahead)
        assert checked.sum() > 2000 and checked.mean() > 0.5, (cam.camera, checked.sum(), checked.mean())
        assert (error[checked] < 0.03).mean() > 0.95, (cam.camera, (error[checked] < 0.03).mean())
        _, shifted, shifted_checked = lidar_vs_camera(cam, points_world, semantic, instance, pixel_shift=0.5)
        shifted_ok.append(shifted[shifted_checked] < 0.03)
    assert np.concatenate(all_same_label).mean() > 0.95  # the class at the nearest pixel
    # the same check fails for a camera model off by half a pixel (pooled over the cameras: a camera
    # facing a wall square-on sees almost no depth change from the shift)
    assert np.concatenate(shifted_ok).mean() < 0.9, np.concatenate(shifted_ok).mean()
    print(f"\nhalf-pixel-shifted camera: {np.concatenate(shifted_ok).mean():.1%} within 3 cm")


def test_street_capture_structure(street_scene, street_capture):
    assert street_capture.source_format == "synthetic" and len(street_capture) == 1
    assert street_capture.metadata["class_names"][0] == "free" and street_capture.metadata["seed"] == 7
    frame = street_capture.frames[0]
    assert frame.timestamp == 0.0
    np.testing.assert_array_equal(frame.ego2world, street_scene.ego2world(0.0))
    seen = set()
    for name, cam in frame.cameras.items():
        assert cam.load_image_uint8().shape == (225, 400, 3)
        assert cam.load_depth().dtype == np.float32 and cam.load_instance().dtype == np.int32
        assert cam.load_semantic().dtype == np.uint8
        seen |= set(np.unique(cam.load_semantic()).tolist())
    sweep = frame.lidar["LIDAR_TOP"]
    np.testing.assert_allclose(sweep.sensor2world, frame.ego2world @ LidarSpec().lidar2ego)
    assert sweep.columns == ("x", "y", "z", "intensity", "ring") and len(sweep.load_points()) > 20000
    for name in ("driveable_surface", "sidewalk", "terrain", "manmade", "vegetation", "car"):
        assert CLASS_IDS[name] in seen, name
    print(f"\nsix 225x400 cameras + LiDAR: {street_capture.metadata['test_render_seconds']:.2f} s")


def test_rendering_is_deterministic(street_scene):
    from geo3d.synthetic import nuscenes_like_rig

    rig = nuscenes_like_rig(120, 68)
    poses = [make_pose(np.eye(3), [1.0, 0.0, 0.0])]
    a, b = (render_capture(street_scene, rig, poses, seed=3) for _ in range(2))
    for cam_a, cam_b in zip(a.camera_frames(), b.camera_frames()):
        np.testing.assert_array_equal(cam_a.load_image_uint8(), cam_b.load_image_uint8())
        np.testing.assert_array_equal(cam_a.load_depth(), cam_b.load_depth())
    np.testing.assert_array_equal(a.frames[0].lidar["LIDAR_TOP"].load_points(),
                                  b.frames[0].lidar["LIDAR_TOP"].load_points())
