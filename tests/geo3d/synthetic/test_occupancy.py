"""Semantic occupancy and visibility masks against independent references: analytic and mesh volumes,
exact box-voxel overlaps, rasterised cross-sections, analytic depth images, and rays marched voxel by
voxel."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from geo3d.geometry import intrinsics_from_fov, make_pose
from geo3d.synthetic.occupancy import (
    OccupancyGridSpec,
    OccupancyLabels,
    camera_visibility_mask,
    lidar_range_image,
    lidar_visibility_mask,
    semantic_occupancy,
)
from geo3d.synthetic.scene import LabelledMesh
from geo3d.synthetic.sensors import LidarSpec, camera_rotation_from_yaw

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("open3d")

SMALL = OccupancyGridSpec((-4.0, -4.0, -2.0), (4.0, 4.0, 2.0), 0.4)  # 20 x 20 x 10
CAR, MANMADE, SIDEWALK, VEGETATION = 4, 15, 13, 16


def rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def labelled(mesh, semantic: int, instance: int = 0, pose: np.ndarray | None = None) -> LabelledMesh:
    """A trimesh as a LabelledMesh, moved by the 4x4 ``pose`` (default identity)."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    if pose is not None:
        vertices = vertices @ pose[:3, :3].T + pose[:3, 3]
    return LabelledMesh(vertices, np.asarray(mesh.faces), semantic, instance)


def box(lo, hi, semantic: int = CAR, instance: int = 0, yaw: float = 0.0) -> LabelledMesh:
    """A closed box between corners ``lo`` and ``hi``, turned by ``yaw`` about its centre."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    return labelled(trimesh.creation.box(extents=hi - lo), semantic, instance,
                    make_pose(rot_z(yaw), (lo + hi) / 2))


def exact_box_fraction(spec: OccupancyGridSpec, lo, hi) -> np.ndarray:
    """``[X, Y, Z]`` exact fraction of each voxel inside the axis-aligned box ``[lo, hi]``."""
    overlaps = []
    for axis in range(3):
        edges = spec.lower[axis] + np.arange(spec.shape[axis] + 1) * spec.voxel_size
        overlap = np.minimum(edges[1:], hi[axis]) - np.maximum(edges[:-1], lo[axis])
        overlaps.append(np.where(overlap > 1e-9, overlap / spec.voxel_size, 0.0))  # edges are rounded
    return overlaps[0][:, None, None] * overlaps[1][None, :, None] * overlaps[2][None, None, :]


# ------------------------------------------------------------------------------------ grid spec


def test_grid_spec_defaults_centres_and_round_trip():
    spec = OccupancyGridSpec()
    assert spec.shape == (200, 200, 16)
    np.testing.assert_array_equal(spec.origin, [-40.0, -40.0, -1.0])
    centres = spec.voxel_centers()
    assert centres.shape == (200, 200, 16, 3) and centres.dtype == np.float64
    np.testing.assert_allclose(centres[0, 0, 0], [-39.8, -39.8, -0.8])
    np.testing.assert_allclose(centres[199, 10, 15], [39.8, -35.8, 5.2])
    assert OccupancyGridSpec.from_dict(spec.to_dict()) == spec
    assert OccupancyGridSpec(voxel_size=0.2).shape == (400, 400, 32)


@pytest.mark.parametrize("kwargs, match", [
    ({"upper": (40.0, 40.0, -2.0)}, "exceed"),
    ({"voxel_size": 0.0}, "voxel_size"),
    ({"voxel_size": 0.3}, "multiple"),
    ({"lower": (0.0, 0.0)}, "3 finite"),
])  # fmt: skip
def test_grid_spec_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OccupancyGridSpec(**kwargs)


# ------------------------------------------------------------------------------- known solids


def _solid(name: str):
    if name == "box":
        return box((-1.37, -0.93, -0.71), (1.19, 1.01, 0.83)), (2.56, 1.94, 1.54)
    if name == "yawed_box":
        return box((-1.6, -0.7, -0.8), (1.4, 1.1, 0.9), yaw=math.radians(30.0)), (3.0, 1.8, 1.7)
    if name == "sphere":
        sphere = trimesh.creation.icosphere(4, radius=1.45)
        return labelled(sphere, VEGETATION, pose=make_pose(np.eye(3), (0.11, -0.07, 0.13))), None
    cylinder = trimesh.creation.cylinder(radius=1.1, height=2.6, sections=64)
    return labelled(cylinder, MANMADE, pose=make_pose(np.eye(3), (0.05, 0.17, -0.06))), None


@pytest.mark.parametrize("name", ["box", "yawed_box", "sphere", "cylinder"])
def test_volume_of_known_solids(name):
    mesh, extents = _solid(name)
    volume = trimesh.Trimesh(mesh.vertices, mesh.faces).volume
    labels = semantic_occupancy([mesh], np.eye(4), SMALL)
    assert isinstance(labels, OccupancyLabels) and labels.odd_rays == 0
    assert labels.semantics.dtype == np.uint8 and labels.instances.dtype == np.int32
    assert labels.fraction.dtype == np.float32 and labels.fraction.shape == SMALL.shape
    voxel_volume = SMALL.voxel_size**3
    assert labels.fraction.sum() * voxel_volume == pytest.approx(volume, rel=0.02)
    occupied = labels.semantics > 0
    assert set(np.unique(labels.semantics[occupied])) == {mesh.semantic}
    assert (labels.fraction[~occupied] < 1e-3).all()
    if extents is not None:  # between the box eroded and dilated by one voxel on every side
        eroded = np.prod(np.clip(np.asarray(extents) - 2 * SMALL.voxel_size, 0, None))
        dilated = np.prod(np.asarray(extents) + 2 * SMALL.voxel_size)
        assert eroded <= occupied.sum() * voxel_volume <= dilated


def test_axis_aligned_box_occupies_exactly_its_voxels():
    lo, hi = (-1.37, -0.93, -0.71), (1.19, 1.01, 0.83)
    labels = semantic_occupancy([box(lo, hi)], np.eye(4), SMALL)
    exact = exact_box_fraction(SMALL, lo, hi)
    np.testing.assert_array_equal(labels.semantics > 0, exact > 0)  # every overlap here is >= 2 %
    assert np.abs(labels.fraction - exact).max() < 0.15
    np.testing.assert_allclose(labels.fraction[exact == 1.0], 1.0, atol=1e-5)


def test_random_boxes_against_exact_overlaps():
    rng = np.random.default_rng(3)
    spec = OccupancyGridSpec((0.0, 0.0, 0.0), (4.0, 4.0, 2.4), 0.4)
    meshes, exact = [], np.zeros((*spec.shape, 4))
    for index, (x, y) in enumerate([(0.2, 0.2), (2.1, 0.3), (0.3, 2.2), (2.2, 2.1)]):  # disjoint quadrants
        lo = np.array([x, y, 0.1]) + rng.uniform(0.0, 0.3, 3)
        hi = lo + rng.uniform(0.7, 1.5, 3)
        semantic = (CAR, MANMADE, SIDEWALK, CAR)[index]
        meshes.append(box(lo, hi, semantic, instance=index + 1 if semantic == CAR else 0))
        exact[..., index] = exact_box_fraction(spec, lo, hi)
    labels = semantic_occupancy(meshes, np.eye(4), spec, rays_per_voxel=(6, 6, 6))
    error = labels.fraction - exact.sum(-1)
    assert np.abs(error).mean() < 0.01 and np.abs(error).max() < 0.12
    assert labels.fraction.sum() == pytest.approx(exact.sum(), rel=0.01)
    winner = exact.argmax(-1)
    clear = exact.max(-1) > 0.05
    semantic_of_box = np.array([CAR, MANMADE, SIDEWALK, CAR])
    np.testing.assert_array_equal(labels.semantics[clear], semantic_of_box[winner[clear]])
    np.testing.assert_array_equal(labels.instances[clear], np.array([1, 0, 0, 4])[winner[clear]])
    empty = exact.sum(-1) == 0
    assert (labels.semantics[empty] == 0).all() and (labels.fraction[empty] == 0).all()


def exact_union_fraction(spec: OccupancyGridSpec, boxes) -> np.ndarray:
    """``[X, Y, Z]`` exact fraction of each voxel inside a union of axis-aligned boxes ``[(lo, hi), ...]``
    (inclusion-exclusion: the intersection of boxes is a box)."""
    total = np.zeros(spec.shape)
    for size in range(1, len(boxes) + 1):
        for subset in itertools.combinations(boxes, size):
            lo, hi = np.max([b[0] for b in subset], axis=0), np.min([b[1] for b in subset], axis=0)
            if (hi > lo).all():
                total += (-1) ** (size + 1) * exact_box_fraction(spec, lo, hi)
    return total


def test_overlapping_meshes_count_once():
    corners = [((-1.5, -0.9, -0.5), (1.5, 0.9, 0.5), CAR, 7),  # body
               ((-1.03, -0.8, 0.2), (0.97, 0.8, 1.1), CAR, 7),  # cabin, a third inside the body
               ((-0.31, -1.3, -0.3), (0.29, 1.3, 0.3), MANMADE, 0)]  # a slab through the body
    meshes = [box(lo, hi, semantic, instance) for lo, hi, semantic, instance in corners]
    labels = semantic_occupancy(meshes, np.eye(4), SMALL, rays_per_voxel=(8, 8, 8))
    exact = exact_union_fraction(SMALL, [(np.array(lo), np.array(hi)) for lo, hi, *_ in corners])
    assert labels.fraction.sum() == pytest.approx(exact.sum(), rel=0.005)  # the sum of volumes is +25 %
    assert np.abs(labels.fraction - exact).max() < 0.08  # a sum of fractions would be 0.16 off
    inside_body = exact_box_fraction(SMALL, (-1.5, -0.9, -0.5), (1.5, 0.9, 0.5)) == 1.0
    np.testing.assert_allclose(labels.fraction[inside_body], 1.0, atol=1e-5)
    assert (labels.semantics[inside_body] == CAR).all() and (labels.instances[inside_body] == 7).all()


def test_overlapping_meshes_of_a_class_do_not_outvote_another():
    # in the voxels x in [0, 0.4]: two copies of one car cover 0.16 m, a wall the other 0.24 m
    car = box((-0.84, -0.77, -0.81), (0.16, 0.77, 0.81), CAR, 3)
    copy = box((-0.83, -0.77, -0.81), (0.15, 0.77, 0.81), CAR, 3)
    wall = box((0.16, -0.77, -0.81), (1.06, 0.77, 0.81), MANMADE)
    labels = semantic_occupancy([car, copy, wall], np.eye(4), SMALL)
    np.testing.assert_array_equal(labels.semantics[10, 9:11, 4:6], MANMADE)
    np.testing.assert_array_equal(labels.semantics[9, 9:11, 4:6], CAR)
    np.testing.assert_allclose(labels.fraction[10, 9:11, 4:6], 1.0, atol=1e-5)


def test_instance_is_the_largest_contributor_of_the_winning_class():
    body = box((-1.47, -0.9, -0.5), (1.5, 0.9, 0.5), CAR, 7)
    neighbour = box((1.5, -0.9, -0.5), (1.62, 0.9, 0.5), CAR, 9)  # touches the body's end face
    labels = semantic_occupancy([body, neighbour], np.eye(4), SMALL)
    assert labels.odd_rays == 0
    i_shared, i_own = 13, 14  # voxels x in [1.2, 1.6]: 0.3 m body, 0.1 m neighbour; [1.6, 2.0]: neighbour
    np.testing.assert_array_equal(labels.instances[i_shared, 8:12, 4:6], 7)  # y, z inside both boxes
    np.testing.assert_array_equal(labels.instances[i_own, 8:12, 4:6], 9)
    np.testing.assert_array_equal(labels.semantics[i_own, 8:12, 4:6], CAR)


def test_touching_slabs_of_different_classes():
    road = box((-3.03, -3.01, -0.12), (1.0, 3.07, 0.0), 11)
    sidewalk = box((1.0, -3.01, -0.12), (3.1, 3.07, 0.15), SIDEWALK)  # shares a face and a plane
    labels = semantic_occupancy([road, sidewalk], np.eye(4), SMALL)
    assert labels.odd_rays == 0
    volume = 4.03 * 6.08 * 0.12 + 2.1 * 6.08 * 0.27
    assert labels.fraction.sum() * SMALL.voxel_size**3 == pytest.approx(volume, rel=0.02)
    exact_road = exact_box_fraction(SMALL, (-3.03, -3.01, -0.12), (1.0, 3.07, 0.0))
    exact_sidewalk = exact_box_fraction(SMALL, (1.0, -3.01, -0.12), (3.1, 3.07, 0.15))
    clear = np.abs(exact_road - exact_sidewalk) > 0.05
    expected = np.where(exact_road > exact_sidewalk, 11, SIDEWALK)
    np.testing.assert_array_equal(labels.semantics[clear], expected[clear])


def test_open_mesh_is_dropped_and_counted():
    triangle = [[-1.03, -1.01, 0.13], [1.07, -1.01, 0.13], [1.07, 1.02, 0.13]]
    quad = LabelledMesh(triangle, [[0, 1, 2]], SIDEWALK)
    above = box((-0.51, -0.47, 1.03), (0.53, 0.49, 1.77))  # lines cross the triangle, then the box
    labels = semantic_occupancy([quad, above], np.eye(4), SMALL)
    assert labels.odd_rays > 0
    assert set(np.unique(labels.semantics)) == {0, CAR}
    assert labels.fraction.sum() * SMALL.voxel_size**3 == pytest.approx(1.04 * 0.96 * 0.74, rel=0.02)


# ------------------------------------------------------------------------------ frames, thin things


def test_grid_moves_with_the_ego():
    meshes = [box((0.31, -1.13, -0.4), (2.23, 0.37, 1.1), CAR, 2),
              box((-3.1, -2.3, -1.2), (-1.7, 2.9, 0.3), MANMADE, yaw=0.3)]
    reference = semantic_occupancy(meshes, np.eye(4), SMALL)
    ego2world = make_pose(rot_z(0.7), (812.5, -305.25, 3.0))
    moved = [LabelledMesh(m.vertices @ ego2world[:3, :3].T + ego2world[:3, 3], m.faces, m.semantic,
                          m.instance) for m in meshes]
    labels = semantic_occupancy(moved, ego2world, SMALL)
    np.testing.assert_allclose(labels.fraction, reference.fraction, atol=1e-4)
    np.testing.assert_array_equal(labels.semantics, reference.semantics)
    np.testing.assert_array_equal(labels.instances, reference.instances)
    assert (semantic_occupancy(moved, np.eye(4), SMALL).semantics == 0).all()  # far from the world origin


def _circle_area_per_column(spec: OccupancyGridSpec, centre, radius: float, step: float = 0.002):
    """``[X, Y]`` area of a disc inside each voxel column (raster of ``step`` squares), m^2."""
    offsets = np.arange(-radius, radius, step) + step / 2
    x, y = np.meshgrid(centre[0] + offsets, centre[1] + offsets, indexing="ij")
    keep = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= radius**2
    i = np.floor((x[keep] - spec.lower[0]) / spec.voxel_size).astype(int)
    j = np.floor((y[keep] - spec.lower[1]) / spec.voxel_size).astype(int)
    area = np.zeros(spec.shape[:2])
    np.add.at(area, (i, j), step**2)
    return area


def test_thin_pole_and_sign_plates_are_occupied():
    spec = OccupancyGridSpec()
    pole = labelled(trimesh.creation.cylinder(radius=0.08, height=6.0, sections=32), MANMADE,
                    pose=make_pose(np.eye(3), (1.23, -0.57, 3.0)))
    plates = [((2.51, 0.93, 2.07), (2.55, 1.53, 2.67), MANMADE),  # vertical, facing x
              ((-3.13, 4.07, 2.31), (-2.53, 4.67, 2.35), VEGETATION),  # horizontal
              ((-0.43, 3.11, 0.67), (0.17, 3.15, 1.27), SIDEWALK)]  # vertical, facing y
    yawed = box((5.7, -4.3, 1.2), (5.74, -3.7, 1.8), CAR, yaw=math.radians(40.0))
    labels = semantic_occupancy([pole, yawed] + [box(lo, hi, semantic) for lo, hi, semantic in plates],
                                np.eye(4), spec)
    column_area = _circle_area_per_column(spec, (1.23, -0.57), 0.08) / spec.voxel_size**2
    pole_fraction = column_area[:, :, None] * exact_box_fraction(spec, (-40, -40, 0.0), (40, 40, 6.0))[:1, :1]
    assert (labels.semantics[pole_fraction > 0.01] == MANMADE).all()
    assert (pole_fraction > 0.01).sum() >= 2 * 14  # two columns over 6 m (the disc crosses x = 1.2)
    allowed = pole_fraction > 0
    for lo, hi, semantic in plates:
        exact = exact_box_fraction(spec, lo, hi)
        assert (labels.semantics[exact > 0] == semantic).all()
        allowed |= exact > 0
    centre = np.floor((np.array([5.72, -4.0, 1.5]) - spec.origin) / spec.voxel_size).astype(int)
    assert labels.semantics[tuple(centre)] == CAR
    yawed_box = exact_box_fraction(spec, yawed.vertices.min(0), yawed.vertices.max(0)) > 0
    assert (labels.semantics[yawed_box & (labels.semantics > 0)] == CAR).all()
    assert not (labels.semantics[~(allowed | yawed_box)]).any()  # nothing outside the objects


# --------------------------------------------------------------------------------------- cameras

W, H = 80, 60


def _front_camera(height_m: float = 1.0):
    K = intrinsics_from_fov(W, H, math.radians(70.0))
    cam2ego = make_pose(camera_rotation_from_yaw(0.0), (0.0, 0.0, height_m))
    return K, cam2ego


def _pixel_rays(K, cam2world):
    """World origin [3], directions [H*W, 3] with camera z = 1 (so t = z-depth), pixel centres."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    return cam2world[:3, 3], rays @ cam2world[:3, :3].T


def _in_frustum(spec, K, cam2ego):
    """Voxels whose centre lies in front of the camera within the image's angular extent."""
    centres = spec.voxel_centers().reshape(-1, 3)
    cam = (centres - cam2ego[:3, 3]) @ cam2ego[:3, :3]
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = (cam[:, 2] > 0) & (np.abs(cam[:, 0] / cam[:, 2]) < (W / 2) / K[0, 0])
        inside &= np.abs(cam[:, 1] / cam[:, 2]) < (H / 2) / K[1, 1]
    return inside.reshape(spec.shape), cam[:, 2].reshape(spec.shape)


def test_camera_mask_wall_and_sky():
    spec = OccupancyGridSpec((-2.0, -6.0, -1.0), (10.0, 6.0, 3.0), 0.4)
    K, cam2ego = _front_camera()
    ego2world = make_pose(rot_z(-0.4), (30.0, 12.0, 0.0))
    cam2world = ego2world @ cam2ego
    wall = np.full((1, H, W), 4.9, np.float32)  # a frontal wall 4.9 m ahead fills the image
    mask = camera_visibility_mask(spec, ego2world, K[None], cam2world[None], wall)
    frustum, depth = _in_frustum(spec, K, cam2ego)
    margin = 0.5 * math.sqrt(3) * spec.voxel_size
    np.testing.assert_array_equal(mask, frustum & (depth <= 4.9 + margin))
    assert mask[frustum & (depth < 4.9)].all() and not mask[~frustum].any() and not mask[depth > 5.3].any()
    wall_voxel = np.floor((np.array([4.9, 0.01, 1.01]) - spec.origin) / spec.voxel_size).astype(int)
    assert mask[tuple(wall_voxel)] and not mask[tuple(wall_voxel + [1, 0, 0])]
    sky = camera_visibility_mask(spec, ego2world, K[None], cam2world[None], np.zeros((1, H, W)))
    np.testing.assert_array_equal(sky, frustum)
    two = camera_visibility_mask(spec, ego2world, np.stack([K, K]), np.stack([cam2world, cam2world]),
                                 np.concatenate([wall, np.zeros((1, H, W))]))
    np.testing.assert_array_equal(two, sky)


def _ray_box_t(origin, directions, lo, hi):
    """Entry t of rays into the box [lo, hi] (inf on a miss), slab method."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = (np.asarray(lo) - origin) / directions, (np.asarray(hi) - origin) / directions
    near = np.nanmax(np.minimum(t0, t1), axis=1)
    far = np.nanmin(np.maximum(t0, t1), axis=1)
    return np.where((far >= near) & (near > 0), near, np.inf)


def _marched_voxels(spec, origin, directions, t_end, step=0.01):
    """Voxels crossed by each ray from its origin to ``t_end`` (sampled every ``step`` of t)."""
    hit = np.zeros(spec.shape, bool)
    for t in np.arange(0.0, t_end.max(), step):
        alive = t <= t_end
        points = origin + t * directions[alive]
        index = np.floor((points - spec.origin) / spec.voxel_size).astype(int)
        valid = ((index >= 0) & (index < spec.shape)).all(1)
        hit[tuple(index[valid].T)] = True
    return hit


def test_camera_mask_agrees_with_marched_pixel_rays():
    """Two definitions of "observed": mask = voxel centre projects into a pixel whose surface is no
    nearer than the centre minus half a voxel diagonal; reference = voxel crossed by a pixel ray before
    the ray's surface. They differ only at frustum and silhouette boundaries (voxels partly seen), which
    make up much of this small grid."""
    spec = OccupancyGridSpec((-1.2, -4.0, -0.8), (8.0, 4.0, 2.4), 0.4)
    K, cam2ego = _front_camera(1.3)
    origin, directions = _pixel_rays(K, cam2ego)
    down = directions[:, 2] < 0
    ground = np.where(down, -origin[2] / np.where(down, directions[:, 2], -1.0), np.inf)
    car = _ray_box_t(origin, directions, (3.1, -1.9, 0.0), (5.3, -0.1, 1.5))
    pole = _ray_box_t(origin, directions, (2.5, 1.1, 0.0), (2.7, 1.3, 4.0))
    t = np.minimum(np.minimum(ground, car), pole)
    depth = np.where(np.isfinite(t), t, 0.0).reshape(1, H, W)
    mask = camera_visibility_mask(spec, np.eye(4), K[None], cam2ego[None], depth)
    reference = _marched_voxels(spec, origin, directions, np.where(np.isfinite(t), t, 15.0))
    assert (mask == reference).mean() >= 0.9 and (mask & reference).sum() / (mask | reference).sum() >= 0.7
    near = np.ones((3, 3, 3), bool)  # the two differ only next to each other's boundary
    assert not (mask & ~binary_dilation(reference, near)).any()
    assert (reference & ~binary_dilation(mask, near)).sum() <= 0.01 * reference.sum()
    behind_car = exact_box_fraction(spec, (5.7, -1.7, 0.1), (7.9, -0.3, 1.1)) == 1.0
    assert not mask[behind_car].any() and not reference[behind_car].any()


# ----------------------------------------------------------------------------------------- LiDAR

LIDAR = LidarSpec(beams=32, azimuth_steps=720, max_range_m=30.0,
                  lidar2ego=make_pose(np.eye(3), (0.3, 0.0, 1.8)))


def test_range_image_round_trip():
    directions, ring = LIDAR.directions()
    rng = np.random.default_rng(0)
    ranges = rng.uniform(1.0, 29.0, len(ring))
    keep = rng.uniform(size=len(ring)) < 0.7
    image = lidar_range_image(directions[keep] * ranges[keep, None], ring[keep], LIDAR)
    assert image.shape == (32, 720) and image.dtype == np.float64
    expected = np.full(len(ring), np.inf)
    expected[keep] = ranges[keep]
    step = np.arange(len(ring)) // LIDAR.beams  # directions() is azimuth-major
    np.testing.assert_allclose(image[ring, step], expected, rtol=1e-12)
    first = np.flatnonzero(keep)[0]
    two_returns = np.stack([directions[first] * 9.0, directions[first] * 4.0])
    doubled = lidar_range_image(two_returns, [ring[first]] * 2, LIDAR)
    assert doubled[ring[first], step[first]] == pytest.approx(4.0)
    assert np.isinf(doubled).sum() == 32 * 720 - 1


def test_lidar_mask_wall():
    spec = OccupancyGridSpec((-2.0, -6.0, -1.0), (10.0, 6.0, 3.8), 0.4)
    ego2world = make_pose(rot_z(0.9), (-50.0, 20.0, 0.5))
    lidar2world = ego2world @ LIDAR.lidar2ego
    directions, ring = LIDAR.directions()
    wall_x = 6.1 - 0.3  # sensor frame: the wall at ego x = 6.1
    with np.errstate(divide="ignore"):
        ranges = np.where(directions[:, 0] > 0.05, wall_x / directions[:, 0], np.inf)
    ranges[ranges > LIDAR.max_range_m] = np.inf
    hit = np.isfinite(ranges)
    image = lidar_range_image(directions[hit] * ranges[hit, None], ring[hit], LIDAR)
    mask = lidar_visibility_mask(spec, ego2world, lidar2world, LIDAR, image)
    centres = spec.voxel_centers()
    assert not mask[centres[..., 0] > 6.1 + 0.5 * math.sqrt(3) * spec.voxel_size].any()  # behind the wall
    sensor_voxel = tuple(np.floor((np.array([0.3, 0.0, 1.8]) - spec.origin) / spec.voxel_size).astype(int))
    assert mask[sensor_voxel]
    # reference: voxels crossed by the beams up to their return (or max range)
    origin = np.array([0.3, 0.0, 1.8])
    t_end = np.where(hit, ranges, LIDAR.max_range_m)
    reference = _marched_voxels(spec, origin, directions, t_end, step=0.04)
    assert mask[reference].mean() >= 0.97
    wall_voxels = reference & (np.abs(centres[..., 0] - 6.2) < 0.1)  # the voxels holding the returns
    assert wall_voxels.any() and mask[wall_voxels].all()
    assert (mask & ~reference).sum() <= 0.1 * reference.sum()  # a cone per voxel, not everything
    short = LidarSpec(beams=32, azimuth_steps=720, max_range_m=5.0, lidar2ego=LIDAR.lidar2ego)
    nothing = lidar_visibility_mask(spec, ego2world, lidar2world, short, np.full((32, 720), np.inf))
    within = _marched_voxels(spec, origin, directions, np.full(len(ring), 5.0), step=0.04)
    distance = np.linalg.norm(centres - origin, axis=-1)
    assert not nothing[distance > 5.0].any() and nothing[within & (distance < 4.6)].all()  # no returns


# -------------------------------------------------------------------------------------- bad input


def test_bad_inputs_name_the_argument():
    K, cam2ego = _front_camera()
    depth = np.zeros((1, H, W))
    with pytest.raises(ValueError, match="ego2world"):
        semantic_occupancy([], np.eye(3), SMALL)
    with pytest.raises(ValueError, match="ego2world"):
        semantic_occupancy([], np.full((4, 4), np.nan), SMALL)
    with pytest.raises(ValueError, match="rays_per_voxel"):
        semantic_occupancy([], np.eye(4), SMALL, rays_per_voxel=(4, 0, 2))
    with pytest.raises(ValueError, match="K"):
        camera_visibility_mask(SMALL, np.eye(4), K, cam2ego[None], depth)
    with pytest.raises(ValueError, match="cam2world"):
        camera_visibility_mask(SMALL, np.eye(4), K[None], cam2ego, depth)
    bad_pose = cam2ego.copy()
    bad_pose[0, 3] = np.inf
    with pytest.raises(ValueError, match="cam2world"):
        camera_visibility_mask(SMALL, np.eye(4), K[None], bad_pose[None], depth)
    with pytest.raises(ValueError, match="depth"):
        camera_visibility_mask(SMALL, np.eye(4), K[None], cam2ego[None], np.zeros((H, W)))
    with pytest.raises(ValueError, match="points_sensor"):
        lidar_range_image(np.zeros((5, 2)), np.zeros(5, int), LIDAR)
    with pytest.raises(ValueError, match="ring"):
        lidar_range_image(np.ones((5, 3)), np.full(5, 32), LIDAR)
    with pytest.raises(ValueError, match="range_image"):
        lidar_visibility_mask(SMALL, np.eye(4), np.eye(4), LIDAR, np.zeros((32, 10)))
    with pytest.raises(ValueError, match="lidar2world"):
        lidar_visibility_mask(SMALL, np.eye(4), np.zeros((4, 3)), LIDAR, np.zeros((32, 720)))


def test_empty_scene_is_free():
    labels = semantic_occupancy([box((50.0, 50.0, 0.0), (51.0, 51.0, 1.0))], np.eye(4), SMALL)
    assert not labels.semantics.any() and not labels.fraction.any() and labels.odd_rays == 0
