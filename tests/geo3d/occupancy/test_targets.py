"""LiDAR occupancy targets against an exact brute-force reference (every voxel box against every segment)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geo3d.occupancy import OccupancyError, lidar_occupancy_targets

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def crossed_voxels(origin, end, grid_origin, voxel_size, shape):
    """Voxels whose OPEN interior the segment origin -> end meets (slab test per voxel box, NumPy)."""
    o = (np.asarray(origin, float) - grid_origin) / voxel_size
    d = (np.asarray(end, float) - grid_origin) / voxel_size - o
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1).reshape(-1, 3)
    lo, hi = np.zeros(len(ijk)), np.ones(len(ijk))
    ok = np.ones(len(ijk), bool)
    for a in range(3):
        if d[a] == 0:
            ok &= (ijk[:, a] < o[a]) & (o[a] < ijk[:, a] + 1)
            continue
        ta, tb = (ijk[:, a] - o[a]) / d[a], (ijk[:, a] + 1 - o[a]) / d[a]
        lo, hi = np.maximum(lo, np.minimum(ta, tb)), np.minimum(hi, np.maximum(ta, tb))
    return {tuple(v) for v in ijk[ok & (lo < hi)]}


def reference_targets(points, origins, grid_origin, voxel_size, shape, max_range=None, min_hits=1, chunk_size=None):
    hits, free = np.zeros(shape, int), np.zeros(shape, int)
    for p, o in zip(points, origins):
        length = np.linalg.norm(p - o)
        end, is_hit = p, True
        if max_range is not None and length > max_range:
            end, is_hit = o + (p - o) * (max_range / length), False
        cell = tuple(np.floor((p - grid_origin) / voxel_size).astype(int))
        inside = all(0 <= c < n for c, n in zip(cell, shape))
        for v in crossed_voxels(o, end, grid_origin, voxel_size, shape):
            if not (is_hit and v == cell):
                free[v] += 1
        if is_hit and inside:
            hits[cell] += 1
    state = np.where(hits >= min_hits, 1, np.where(free > 0, 0, -1))
    return state, hits, free


def check(points, origins, grid_origin, voxel_size, shape, **kwargs):
    points, origins = np.asarray(points, float), np.asarray(origins, float)
    per_point = np.broadcast_to(origins, points.shape)
    got = lidar_occupancy_targets(torch.from_numpy(points), torch.from_numpy(origins), grid_origin, voxel_size,
                                  shape, **kwargs)
    state, hits, free = reference_targets(points, per_point, np.asarray(grid_origin, float), voxel_size, shape,
                                          **kwargs)
    np.testing.assert_array_equal(got.hits.numpy(), hits)
    np.testing.assert_array_equal(got.free_counts.numpy(), free)
    np.testing.assert_array_equal(got.state.numpy(), state)
    assert got.state.dtype == torch.int8 and got.state.shape == tuple(shape)
    return got


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_rays_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    shape, grid_origin, voxel = (7, 6, 5), np.array([-1.0, -0.5, 0.2]), 0.3
    extent = np.array(shape) * voxel
    points = grid_origin - 0.5 + rng.uniform(size=(150, 3)) * (extent + 1.0)  # inside and outside the grid
    origins = grid_origin - 0.5 + rng.uniform(size=(150, 3)) * (extent + 1.0)  # per-point origins
    check(points, origins, grid_origin, voxel, shape)
    check(points, origins[0], grid_origin, voxel, shape, chunk_size=7)  # one origin, many chunks


def test_axis_aligned_rays_and_rays_from_outside():
    rng = np.random.default_rng(3)
    shape, grid_origin, voxel = (6, 5, 4), np.zeros(3), 1.0
    origins, points = [], []
    for axis in range(3):
        for sign in (1, -1):
            for _ in range(6):
                o = rng.uniform(0.05, 0.95, 3) * np.array(shape)
                o[axis] = -2.0 if sign > 0 else shape[axis] + 2.0  # start outside the grid
                p = o.copy()
                p[axis] = rng.uniform(-1.0, shape[axis] + 1.0)
                origins.append(o)
                points.append(p)
    check(np.array(points), np.array(origins), grid_origin, voxel, shape)


def test_returns_on_voxel_faces_and_corners():
    # Returns at lattice points (on faces, edges and corners, the grid's outer faces included), rays from
    # generic origins: the own-voxel rule must hold whichever side the ray arrives from.
    rng = np.random.default_rng(5)
    shape, grid_origin, voxel = (5, 4, 3), np.array([-1.0, -1.0, 0.0]), 0.5
    lattice = rng.integers(-1, np.array(shape) + 2, size=(200, 3))
    lattice[::4, 0] = rng.uniform(0, shape[0], size=50)  # returns on an edge or face only
    points = grid_origin + lattice * voxel
    origins = grid_origin - 0.5 + rng.uniform(size=(200, 3)) * (np.array(shape) * voxel + 1.0)
    check(points, origins, grid_origin, voxel, shape)


def test_max_range_truncates_and_min_hits_filters():
    rng = np.random.default_rng(4)
    shape, grid_origin, voxel = (8, 8, 3), np.array([-4.0, -4.0, -0.6]), 1.0
    points = rng.uniform(-6, 6, size=(120, 3)) * np.array([1, 1, 0.2])
    points[:40] = points[:40] * 0.3  # several returns per voxel near the sensor
    for kwargs in ({"max_range": 3.0}, {"min_hits": 2}, {"max_range": 2.5, "min_hits": 3}):
        check(points, np.array([0.1, 0.2, 0.05]), grid_origin, voxel, shape, **kwargs)


def test_hand_made_ray():
    # Sensor at the centre of voxel (0, 0, 0); return in voxel (3, 0, 0): voxels 0..2 free, 3 occupied.
    got = lidar_occupancy_targets(torch.tensor([[3.5, 0.5, 0.5]]), torch.tensor([0.5, 0.5, 0.5]), [0, 0, 0], 1.0,
                                  (5, 2, 2))
    expected = -np.ones((5, 2, 2), np.int8)
    expected[:3, 0, 0] = 0
    expected[3, 0, 0] = 1
    np.testing.assert_array_equal(got.state.numpy(), expected)
    # A diagonal ray through the voxel corners (1, 1, 1), (2, 2, 2): exactly the diagonal voxels.
    got = lidar_occupancy_targets(torch.tensor([[3.5, 3.5, 3.5]]), torch.tensor([0.5, 0.5, 0.5]), [0, 0, 0], 1.0,
                                  (4, 4, 4))
    assert {tuple(v) for v in torch.nonzero(got.state == 0).tolist()} == {(0, 0, 0), (1, 1, 1), (2, 2, 2)}
    assert got.state[3, 3, 3] == 1 and int((got.state == -1).sum()) == 64 - 4
    assert int(got.free_counts.sum()) == 3  # each crossed once, though entered through a corner
    # The same diagonal backwards, from a list origin, ending on the corner (1, 1, 1) of the grid (0.5 m voxels).
    got = lidar_occupancy_targets(torch.tensor([[0.5, 0.5, 0.5]]), [1.75, 1.75, 1.75], [0, 0, 0], 0.5, (4, 4, 4))
    assert int(got.free_counts.sum()) == 2 and got.free_counts[3, 3, 3] == 1 and got.free_counts[2, 2, 2] == 1
    assert got.hits[1, 1, 1] == 1 and int(got.hits.sum()) == 1


def test_occupied_wins_over_crossing_rays():
    # Ray A ends in voxel 2; ray B passes through voxel 2 to end in voxel 4: voxel 2 stays occupied.
    points = torch.tensor([[2.5, 0.5, 0.5], [4.5, 0.5, 0.5]])
    got = lidar_occupancy_targets(points, torch.tensor([0.5, 0.5, 0.5]), [0, 0, 0], 1.0, (5, 1, 1))
    assert got.state.flatten().tolist() == [0, 0, 1, 0, 1]
    assert got.free_counts.flatten().tolist() == [2, 2, 1, 1, 0]
    assert got.hits.flatten().tolist() == [0, 0, 1, 0, 1]


def test_grid_spec_and_empty_points():
    from geo3d.synthetic import OccupancyGridSpec

    spec = OccupancyGridSpec(lower=(-2.0, -2.0, -1.0), upper=(2.0, 2.0, 1.0), voxel_size=0.5)
    got = lidar_occupancy_targets(torch.zeros(0, 3), torch.zeros(3), spec.origin, spec.voxel_size, spec.shape)
    assert got.state.shape == spec.shape and bool((got.state == -1).all())


@pytest.mark.parametrize("kwargs, match", [
    ({"points": torch.zeros(4, 2)}, "points"),
    ({"points": torch.tensor([[0.0, float("nan"), 0.0]])}, "points"),
    ({"sensor_origins": torch.zeros(2, 3)}, "sensor_origins"),
    ({"voxel_size": 0.0}, "voxel_size"),
    ({"shape": (4, 4)}, "shape"),
    ({"grid_origin": [0.0, float("inf"), 0.0]}, "grid_origin"),
    ({"max_range": -1.0}, "max_range"),
    ({"min_hits": 0}, "min_hits"),
])
def test_errors(kwargs, match):
    args = {"points": torch.zeros(3, 3), "sensor_origins": torch.zeros(3), "grid_origin": [0, 0, 0],
            "voxel_size": 1.0, "shape": (4, 4, 4)}
    args.update(kwargs)
    with pytest.raises(OccupancyError, match=match):
        lidar_occupancy_targets(**args)
