"""Tests of geo3d.nerf.estimator: the occupancy grid of an analytic sphere against exact cell-vs-sphere tests,
the samples of rays against an exact march through the occupied cells (cell-boundary crossings), pruning by
alpha and by transmittance against a brute-force per-ray loop, and input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geo3d.nerf.estimator import OccupancyGridEstimator

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64
# a box of extent 2 m on every axis and 16 cells of exactly 0.125 m (all exact in float32), off-centre
AABB = (-1.0, -0.75, -0.875, 1.0, 1.25, 1.125)
R = 16
CELL = 0.125
CENTRE = np.array([0.15, 0.3, -0.05])
RADIUS, SIGMA = 0.3, 50.0


def sphere_density(x: torch.Tensor) -> torch.Tensor:
    """SIGMA inside the ball, 0 outside (in the points' dtype)."""
    inside = (x.double() - torch.from_numpy(CENTRE)).norm(dim=-1) < RADIUS
    return (SIGMA * inside).to(x.dtype)


def blob_density(x: torch.Tensor) -> torch.Tensor:
    """A smooth Gaussian blob (peak 30 / m, width 0.15 m): alphas take every value, for the pruning tests."""
    r2 = ((x.double() - torch.from_numpy(CENTRE)) ** 2).sum(-1)
    return (30.0 * torch.exp(-r2 / (2 * 0.15**2))).to(x.dtype)


def cell_boxes() -> tuple[np.ndarray, np.ndarray]:
    """``[R^3, 3]`` low and high corners of every cell, in the estimator's cell order ``i + R (j + R k)``."""
    k, j, i = np.meshgrid(np.arange(R), np.arange(R), np.arange(R), indexing="ij")
    ijk = np.stack([i, j, k], -1).reshape(-1, 3)
    low = np.array(AABB[:3]) + ijk * CELL
    return low, low + CELL


def sphere_cells() -> tuple[np.ndarray, np.ndarray]:
    """Exact tests: ``(fully_inside, intersecting)`` [R^3] bool (a cell intersects the open ball when its
    nearest point is closer than the radius; it lies inside when its farthest corner does)."""
    low, high = cell_boxes()
    nearest = np.clip(CENTRE, low, high)
    farthest = np.where(np.abs(low - CENTRE) > np.abs(high - CENTRE), low, high)
    return (np.linalg.norm(farthest - CENTRE, axis=1) < RADIUS, np.linalg.norm(nearest - CENTRE, axis=1) < RADIUS)


def sphere_estimator(updates: int = 1, seed: int = 0) -> OccupancyGridEstimator:
    estimator = OccupancyGridEstimator(AABB, R)
    gen = torch.Generator().manual_seed(seed)
    for step in range(updates):
        estimator.update(step, sphere_density, 0.01, threshold=0.01, generator=gen)
    return estimator


def test_update_marks_the_cells_of_a_sphere():
    estimator = sphere_estimator()
    inside, intersecting = sphere_cells()
    binary = estimator.binary.numpy()
    assert binary.shape == (R**3,) and binary.dtype == bool
    assert inside.sum() >= 10 and (intersecting & ~inside).sum() >= 100  # the test has cells of both kinds
    # A cell takes the alpha 1 - exp(-50 * 0.01) = 0.39 when its random point falls in the ball, else 0; the
    # cut-off min(0.01, mean alpha) lies in (0, 0.39] as some cells are hit, so cells inside the ball are
    # certainly occupied, cells that miss it certainly empty, and the cells on its surface by chance.
    alpha = 1 - math.exp(-SIGMA * 0.01)
    assert binary[inside].all() and not binary[~intersecting].any()
    occupancy = estimator.occupancy.numpy()
    np.testing.assert_allclose(occupancy[inside], alpha, rtol=1e-6)
    assert (occupancy[~intersecting] == 0).all()
    boundary = intersecting & ~inside
    assert {round(float(v), 6) for v in np.unique(occupancy[boundary])} == {0.0, round(alpha, 6)}
    assert 0.1 < binary[boundary].mean() < 0.9  # the jittered points fall inside a part of them
    np.testing.assert_array_equal(binary, occupancy >= 0.01)


def test_occupied_box_bounds_the_sphere():
    inside, intersecting = sphere_cells()
    low, high = cell_boxes()
    # tight: the box of the cells the ball touches, loose: the box of the cells inside it
    outer = np.concatenate([low[intersecting].min(0), high[intersecting].max(0)])
    inner = np.concatenate([low[inside].min(0), high[inside].max(0)])
    box = sphere_estimator().occupied_box().double().numpy()
    assert (box[:3] >= outer[:3] - 1e-6).all() and (box[3:] <= outer[3:] + 1e-6).all()
    assert (box[:3] <= inner[:3] + 1e-6).all() and (box[3:] >= inner[3:] - 1e-6).all()
    # Repeated updates draw new points; a cell keeps its alpha (x 0.95 per update) for 70 updates, so after 20
    # every cell the ball touches by a reasonable fraction is occupied, and the box is exactly the tight one
    # (the ball's extreme points lie 0.05 m deep in their cells).
    box = sphere_estimator(updates=20).occupied_box().double().numpy()
    np.testing.assert_allclose(box, outer, atol=1e-6)
    assert (box[:3] <= CENTRE - RADIUS).all() and (box[3:] >= CENTRE + RADIUS).all()
    # no occupied cell: the whole box
    empty = OccupancyGridEstimator(AABB, R)
    empty.binary.zero_()
    np.testing.assert_allclose(empty.occupied_box().numpy(), AABB)


def test_update_after_warmup_decays_and_refreshes():
    estimator = sphere_estimator()
    before = estimator.occupancy.clone()
    gen = torch.Generator().manual_seed(1)
    estimator.update(1000, lambda x: torch.zeros(len(x)), 0.01, warmup_steps=10, decay=0.5, generator=gen)
    changed = estimator.occupancy != before
    # a quarter of the cells at random plus up to as many occupied ones are halved, the others untouched
    assert changed.any() and (estimator.occupancy[changed] == before[changed] * 0.5).all()
    assert int(changed.sum()) <= R**3 // 4 + int((before > 0).sum())
    occupied_before = before >= 0.01
    assert changed[occupied_before].float().mean() > 0.9  # (R^3 / 4 draws over ~300 occupied cells)


# ------------------------------------------------------------------------------------------ sampling


def slab(origin: np.ndarray, direction: np.ndarray, box) -> tuple[float, float]:
    """Where the ray ``o + t d``, ``t >= 0``, is inside ``box`` (t_in > t_out: it misses)."""
    low, high = np.array(box[:3]), np.array(box[3:])
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = (low - origin) / direction, (high - origin) / direction
    in_slab = (origin >= low) & (origin <= high)
    enter = np.where(direction == 0, np.where(in_slab, -np.inf, np.inf), np.minimum(t0, t1))
    leave = np.where(direction == 0, np.where(in_slab, np.inf, -np.inf), np.maximum(t0, t1))
    return max(enter.max(), 0.0), leave.min()


def occupied_segments(origin: np.ndarray, direction: np.ndarray, binary: np.ndarray) -> list[tuple[float, float]]:
    """The exact (merged) parts of the ray inside occupied cells: split the ray at every cell-boundary plane it
    crosses and look up the cell of each piece's midpoint."""
    t_in, t_out = slab(origin, direction, AABB)
    if not t_in < t_out:
        return []
    cuts = [t_in, t_out]
    for axis in range(3):
        if direction[axis] != 0:
            planes = AABB[axis] + CELL * np.arange(R + 1)
            t = (planes - origin[axis]) / direction[axis]
            cuts += list(t[(t > t_in) & (t < t_out)])
    cuts = np.unique(cuts)
    segments: list[tuple[float, float]] = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        ijk = np.clip(np.floor((origin + direction * (a + b) / 2 - np.array(AABB[:3])) / CELL).astype(int), 0, R - 1)
        if binary[ijk[0] + R * (ijk[1] + R * ijk[2])]:
            if segments and segments[-1][1] == a:
                segments[-1] = (segments[-1][0], b)
            else:
                segments.append((a, b))
    return segments


def merge(intervals) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for a, b in intervals:
        if merged and a <= merged[-1][1] + 1e-12:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def make_rays(count: int, seed: int, dtype=F64) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays from 2-3 m away aimed near the sphere (most hit it, some only graze its cells), rays starting inside
    the box, and rays that miss the box."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.from_numpy(CENTRE)
    towards = centre + (torch.rand(count, 3, generator=gen, dtype=F64) * 2 - 1) * 0.35
    origins = centre + torch.nn.functional.normalize(torch.randn(count, 3, generator=gen, dtype=F64), dim=-1) * (
        2 + torch.rand(count, 1, generator=gen, dtype=F64))
    directions = torch.nn.functional.normalize(towards - origins, dim=-1)
    inner = centre + (torch.rand(8, 3, generator=gen, dtype=F64) * 2 - 1) * 0.4  # start inside the box
    inner_dir = torch.nn.functional.normalize(torch.randn(8, 3, generator=gen, dtype=F64), dim=-1)
    miss_o = torch.tensor([[3.0, 3.0, 3.0], [0.0, 0.0, 5.0], [-3.0, 0.0, 0.0]], dtype=F64)
    miss_d = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2, 0.1], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]],
                                                        dtype=F64), dim=-1)
    axis_o = torch.tensor([[0.2, 0.31, -2.0]], dtype=F64)  # parallel to an axis (zero direction components)
    axis_d = torch.tensor([[0.0, 0.0, 1.0]], dtype=F64)
    origins = torch.cat([origins, inner, miss_o, axis_o]).to(dtype)
    directions = torch.cat([directions, inner_dir, miss_d, axis_d]).to(dtype)
    return origins, directions



def check_samples(estimator, origins, directions, samples, step: float) -> None:
    """Structure of packed samples and exact coverage of the occupied part of every ray."""
    ray_indices, t_starts, t_ends = samples
    assert ray_indices.dtype == torch.int64 and t_starts.dtype == origins.dtype == t_ends.dtype
    assert (ray_indices[1:] >= ray_indices[:-1]).all()  # sorted
    assert (t_starts < t_ends).all() and (t_ends - t_starts <= step * (1 + 1e-9)).all()
    binary = estimator.binary.numpy()
    o, d = origins.double().numpy(), directions.double().numpy()
    starts, ends, rays = t_starts.double().numpy(), t_ends.double().numpy(), ray_indices.numpy()
    # every midpoint lies in an occupied cell of the box
    mid = o[rays] + d[rays] * ((starts + ends) / 2)[:, None]
    ijk = np.floor((mid - np.array(AABB[:3])) / CELL).astype(int)
    assert ((ijk >= 0) & (ijk < R)).all()
    assert binary[ijk[:, 0] + R * (ijk[:, 1] + R * ijk[:, 2])].all()
    half = step / 2 + 1e-9
    for ray in range(len(o)):
        mine = rays == ray
        s, e = starts[mine], ends[mine]
        assert (e[:-1] <= s[1:] + 1e-12).all()  # in order along the ray, disjoint
        assert (np.abs(e - s - step) > 1e-9).sum() <= 2  # full steps except where the ray enters / leaves the box
        covered = merge(zip(s, e))
        occupied = occupied_segments(o[ray], d[ray], binary)
        # a sample is kept iff its midpoint is in an occupied cell and it is at most one step long: the covered
        # part of the ray lies within half a step of the occupied part, and covers it but for half a step at
        # each end of each occupied run
        for a, b in zip(s, e):
            assert any(lo - 1e-9 <= (a + b) / 2 <= hi + 1e-9 for lo, hi in occupied), (ray, a, b, occupied)
        for lo, hi in occupied:
            if hi - lo > step:
                assert any(a <= lo + half and b >= hi - half for a, b in covered), (ray, lo, hi, covered)
        assert abs(sum(b - a for a, b in covered) - sum(b - a for a, b in occupied)) <= step * len(occupied) + 1e-9


@pytest.mark.parametrize("stratified", [False, True])
def test_samples_cover_exactly_the_occupied_cells(stratified):
    estimator = sphere_estimator()
    origins, directions = make_rays(60, seed=2)
    step = 0.02
    gen = torch.Generator().manual_seed(3)
    samples = estimator.sample(origins, directions, step, stratified=stratified, generator=gen)
    check_samples(estimator, origins, directions, samples, step)
    counts = torch.bincount(samples.ray_indices, minlength=len(origins))
    assert (counts[-4:-1] == 0).all()  # the rays that miss the box
    assert (counts[:60] > 0).float().mean() > 0.6 and len(samples.ray_indices) > 600
    if stratified:  # a random offset per ray: reproducible with the generator, different without it
        again = estimator.sample(origins, directions, step, stratified=True,
                                 generator=torch.Generator().manual_seed(3))
        assert all(torch.equal(a, b) for a, b in zip(samples, again))
        plain = estimator.sample(origins, directions, step)
        assert len(plain.t_starts) != len(samples.t_starts) or not torch.equal(plain.t_starts, samples.t_starts)


def test_samples_of_an_all_occupied_grid_tile_the_box():
    estimator = OccupancyGridEstimator(AABB, R)
    assert estimator.binary.all()
    origins, directions = make_rays(20, seed=4)
    step = 0.05
    samples = estimator.sample(origins, directions, step)
    check_samples(estimator, origins, directions, samples, step)
    for ray in range(len(origins)):
        t_in, t_out = slab(origins[ray].numpy(), directions[ray].numpy(), AABB)
        covered = merge(zip(*(x[samples.ray_indices == ray].numpy() for x in samples[1:])))
        if t_in < t_out:
            assert len(covered) == 1 and covered[0] == pytest.approx((t_in, t_out), abs=1e-9)
        else:
            assert covered == []


def test_near_far_and_float32():
    estimator = sphere_estimator()
    origins, directions = make_rays(30, seed=5, dtype=torch.float32)
    near, far = 2.2, 2.6
    samples = estimator.sample(origins, directions, 0.02, near=near, far=far)
    assert samples.t_starts.dtype == torch.float32 and len(samples.t_starts) > 0
    assert samples.t_starts.min() >= near - 1e-6 and samples.t_ends.max() <= far + 1e-6
    full = estimator.sample(origins, directions, 0.02)
    assert full.t_starts.min() < near and full.t_ends.max() > far


def test_early_stop_matches_a_brute_force_transmittance():
    estimator = OccupancyGridEstimator(AABB, R)  # every cell occupied: the pruning alone decides
    origins, directions = make_rays(40, seed=6)
    step = 0.01
    everything = estimator.sample(origins, directions, step)
    eps = 1e-3
    pruned = estimator.sample(origins, directions, step, density_fn=sphere_density, alpha_threshold=0.0,
                              early_stop_eps=eps)
    expected_keep = []
    stopped = 0
    for ray in range(len(origins)):
        mine = everything.ray_indices == ray
        s, e = everything.t_starts[mine], everything.t_ends[mine]
        x = origins[ray] + directions[ray] * ((s + e) / 2)[:, None]
        depth = 0.0
        for i, sigma in enumerate(sphere_density(x).tolist()):
            transmittance = math.exp(-depth)  # before this sample
            alpha = 1 - math.exp(-sigma * float(e[i] - s[i]))
            expected_keep.append(transmittance > eps and alpha > 0.0)
            depth += sigma * float(e[i] - s[i])
        stopped += depth > -math.log(eps)
    keep = torch.tensor(expected_keep)
    assert stopped > 10  # most rays become opaque (a chord of 0.14 m reaches an optical depth of 7)
    assert torch.equal(pruned.ray_indices, everything.ray_indices[keep])
    assert torch.equal(pruned.t_starts, everything.t_starts[keep])
    assert torch.equal(pruned.t_ends, everything.t_ends[keep])
    # the samples of a ray stop once its transmittance is below eps: at most ~ -ln(eps) / (SIGMA step) + 1 of them
    # per ray, all inside the ball
    counts = torch.bincount(pruned.ray_indices, minlength=len(origins))
    assert counts.max() <= math.ceil(-math.log(eps) / (SIGMA * step)) + 1
    rays = pruned.ray_indices
    mid = origins[rays] + directions[rays] * ((pruned.t_starts + pruned.t_ends) / 2)[:, None]
    assert (sphere_density(mid) > 0).all()


def test_alpha_threshold_matches_a_brute_force_loop():
    estimator = OccupancyGridEstimator(AABB, R)
    origins, directions = make_rays(30, seed=7)
    step, threshold = 0.01, 0.05
    everything = estimator.sample(origins, directions, step)
    pruned = estimator.sample(origins, directions, step, density_fn=blob_density, alpha_threshold=threshold,
                              early_stop_eps=0.0)
    mid = origins[everything.ray_indices] + directions[everything.ray_indices] * (
        (everything.t_starts + everything.t_ends) / 2)[:, None]
    alpha = 1 - torch.exp(-blob_density(mid) * (everything.t_ends - everything.t_starts))
    keep = alpha > threshold
    assert 100 < int(keep.sum()) < int((alpha > 0.001).sum())  # the threshold removes a real part of the blob
    assert torch.equal(pruned.ray_indices, everything.ray_indices[keep])
    assert torch.equal(pruned.t_starts, everything.t_starts[keep])
    # no density_fn, or neither threshold: nothing is pruned
    for kwargs in ({}, {"density_fn": blob_density, "alpha_threshold": 0.0, "early_stop_eps": 0.0}):
        same = estimator.sample(origins, directions, step, **kwargs)
        assert torch.equal(same.t_starts, everything.t_starts)


def test_rays_missing_everything_get_no_samples():
    estimator = sphere_estimator()
    origins = torch.tensor([[5.0, 5.0, 5.0], [0.15, 0.3, 3.0]])
    directions = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # away from the box
    for samples in (estimator.sample(origins, directions, 0.01), estimator.sample(origins[:0], directions[:0], 0.01)):
        assert all(len(x) == 0 for x in samples) and samples.ray_indices.dtype == torch.int64
    # a ray through the box that passes no occupied cell (the corner region far from the ball)
    corner = estimator.sample(torch.tensor([[-0.99, -0.74, -2.0]]), torch.tensor([[0.0, 0.0, 1.0]]), 0.01)
    assert len(corner.ray_indices) == 0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"aabb": (0, 0, 0, 1, 1)}, "aabb"),
        ({"aabb": (0, 0, 0, 1, -1, 1)}, "aabb"),
        ({"aabb": (0, 0, 0, 1, math.nan, 1)}, "aabb"),
        ({"resolution": 1}, "resolution"),
        ({"resolution": 8.0}, "resolution"),
        ({"resolution": True}, "resolution"),
    ],
)
def test_estimator_rejects_bad_arguments(kwargs, name):
    args = {"aabb": AABB, "resolution": 8} | kwargs
    with pytest.raises(ValueError, match=name):
        OccupancyGridEstimator(**args)


@pytest.mark.parametrize(
    ("origins", "directions", "step", "name"),
    [
        (torch.zeros(4, 2), torch.zeros(4, 2), 0.1, "origins"),
        (torch.zeros(4, 3), torch.zeros(5, 3), 0.1, "directions"),
        (torch.zeros(3), torch.zeros(3), 0.1, "origins"),
        (torch.zeros(4, 3), torch.ones(4, 3), 0.0, "step_size"),
        (torch.zeros(4, 3), torch.ones(4, 3), -0.1, "step_size"),
        (torch.zeros(4, 3), torch.ones(4, 3), math.nan, "step_size"),
    ],
)
def test_sample_rejects_bad_inputs(origins, directions, step, name):
    with pytest.raises(ValueError, match=name):
        OccupancyGridEstimator(AABB, 8).sample(origins, directions, step)
