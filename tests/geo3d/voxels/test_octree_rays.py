"""Octree ray traversal against dense ray marching and an exact per-leaf slab test: oblique and
axis-aligned rays, rays from inside, near/far clipping, coarse levels, merging, first hits, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geo3d.errors import VoxelError
from geo3d.voxels.octree import Octree

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEP = 2e-3


@pytest.fixture(scope="module")
def tree():
    rng = np.random.default_rng(0)
    cells = rng.choice(8**3, size=90, replace=False)
    indices = torch.from_numpy(np.stack(np.unravel_index(cells, (8, 8, 8)), 1))
    return Octree.from_voxel_indices(indices, (-2.0, -1.0, 0.5), 1.0)


def marched(tree: Octree, origins: torch.Tensor, directions: torch.Tensor, t_max: float) -> list[dict]:
    """Per ray, {leaf: length} from samples every STEP (at the step midpoints) located in the tree."""
    t = (torch.arange(int(t_max / STEP), dtype=torch.float64) + 0.5) * STEP
    result = []
    for origin, direction in zip(origins.double(), directions.double(), strict=True):
        rows = tree.locate(origin + t[:, None] * direction)
        leaves, counts = torch.unique(rows[rows >= 0], return_counts=True)
        result.append({int(leaf): int(c) * STEP for leaf, c in zip(leaves, counts, strict=True)})
    return result


def packed_lengths(intervals, rays: int) -> list[dict]:
    result = [{} for _ in range(rays)]
    for ray, start, end, leaf in zip(*(x.tolist() for x in intervals), strict=True):
        result[ray][leaf] = result[ray].get(leaf, 0.0) + end - start
    return result


def assert_same_lengths(got: list[dict], expected: list[dict], tolerance: float) -> None:
    for ray, (a, b) in enumerate(zip(got, expected, strict=True)):
        for leaf in set(a) | set(b):
            assert abs(a.get(leaf, 0.0) - b.get(leaf, 0.0)) <= tolerance, (ray, leaf, a.get(leaf), b.get(leaf))


def slab_reference(tree: Octree, origins: np.ndarray, directions: np.ndarray, near: float, far: float):
    """Every (ray, leaf, t0, t1) from a slab test of every ray against every leaf box (no zero
    direction components)."""
    low = tree.origin.numpy() + tree.node_coords().numpy() * tree.leaf_size
    high = low + tree.leaf_size
    rows = []
    for ray, (o, d) in enumerate(zip(origins, directions, strict=True)):
        t1, t2 = (low - o) / d, (high - o) / d
        enter = np.maximum(np.minimum(t1, t2).max(1), near)
        leave = np.minimum(np.maximum(t1, t2).min(1), far)
        for leaf in np.nonzero(leave > enter)[0]:
            rows.append((ray, enter[leaf], leave[leaf], leaf))
    rows.sort(key=lambda r: (r[0], r[1]))
    return [np.array(c) for c in zip(*rows, strict=True)]


def random_rays(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    origins = rng.uniform(-6.0, 12.0, size=(count, 3))
    targets = rng.uniform(-1.0, 7.0, size=(count, 3))  # mostly through the tree
    directions = targets - origins
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return torch.from_numpy(origins), torch.from_numpy(directions)


def test_oblique_rays_match_exact_slab_test_and_marching(tree):
    origins, directions = random_rays(40, seed=1)
    got = tree.ray_intervals(origins, directions, near=0.5, far=25.0)
    expected = slab_reference(tree, origins.numpy(), directions.numpy(), 0.5, 25.0)
    assert got.ray_indices.tolist() == expected[0].tolist()
    np.testing.assert_allclose(got.t_starts.numpy(), expected[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.t_ends.numpy(), expected[2], rtol=1e-12, atol=1e-12)
    assert got.leaf_indices.tolist() == expected[3].tolist()
    assert len(got.ray_indices) > 40 and len(set(got.ray_indices.tolist())) > 20
    # dense marching from t = 0 (near = 0 here), leaf sets and lengths to the step precision
    full = tree.ray_intervals(origins, directions, far=25.0)
    assert_same_lengths(packed_lengths(full, 40), marched(tree, origins, directions, 25.0), 2 * STEP)


def test_sorted_by_ray_then_t_and_clipped_to_per_ray_near_far(tree):
    origins, directions = random_rays(64, seed=2)
    near = torch.linspace(0.0, 5.0, 64, dtype=torch.float64)
    far = near + 6.0
    got = tree.ray_intervals(origins.float(), directions.float(), near=near, far=far)
    assert got.t_starts.dtype == torch.float32
    key = got.ray_indices.double() * 1e3 + got.t_starts.double()
    assert bool((key[1:] >= key[:-1]).all())
    assert bool((got.t_ends > got.t_starts).all())
    assert bool((got.t_starts >= near[got.ray_indices].float() - 1e-6).all())
    assert bool((got.t_ends <= far[got.ray_indices].float() + 1e-6).all())


@pytest.mark.parametrize("direction", [(1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0),
                                       (1.0, 1.0, 0.0), (0.0, -1.0, 1.0)])
def test_axis_aligned_rays_including_origins_on_cell_faces(tree, direction):
    rng = np.random.default_rng(3)
    d = np.array(direction) / np.linalg.norm(direction)
    # origins on a grid of cell faces (integer offsets from the tree origin) and random ones,
    # started outside the tree against the direction so that they cross it
    face = tree.origin.numpy() + rng.integers(0, 8, size=(30, 3)).astype(np.float64)
    inner = tree.origin.numpy() + rng.uniform(0, 8, size=(30, 3))
    origins = np.concatenate([face, inner]) - 10.0 * d
    directions = np.repeat(d[None], len(origins), 0)
    o, dirs = torch.from_numpy(origins), torch.from_numpy(directions)
    got = tree.ray_intervals(o, dirs, far=30.0)
    assert len(got.ray_indices) > 20
    assert bool(torch.isfinite(got.t_starts).all() & torch.isfinite(got.t_ends).all())
    assert_same_lengths(packed_lengths(got, len(origins)), marched(tree, o, dirs, 30.0), 2 * STEP)


def test_ray_on_the_cube_upper_face_is_inside_like_locate():
    tree = Octree.from_voxel_indices(torch.tensor([[3, 3, 0], [0, 0, 0]]), (0.0, 0.0, 0.0), 1.0, depth=2)
    hit = tree.ray_intervals(torch.tensor([[-1.0, 4.0, 0.5]]), torch.tensor([[1.0, 0.0, 0.0]]))
    assert int(tree.locate(torch.tensor([[3.5, 4.0, 0.5]]))[0]) == int(hit.leaf_indices[0])
    assert hit.t_starts.tolist() == [4.0] and hit.t_ends.tolist() == [5.0]
    # a face shared by two cells belongs to the upper one (half-open cells)
    shared = tree.ray_intervals(torch.tensor([[-1.0, 1.0, 0.5]]), torch.tensor([[1.0, 0.0, 0.0]]))
    assert shared.ray_indices.numel() == 0


def test_rays_from_inside_start_at_near(tree):
    centres = tree.node_centers()[:20]
    directions = torch.nn.functional.normalize(torch.randn(20, 3, dtype=torch.float64,
                                                           generator=torch.Generator().manual_seed(4)), dim=1)
    hits = tree.ray_first_hit(centres, directions)
    assert torch.equal(hits.leaf_indices, torch.arange(20))
    assert hits.t.tolist() == [0.0] * 20
    got = tree.ray_intervals(centres, directions, far=20.0)
    assert_same_lengths(packed_lengths(got, 20), marched(tree, centres, directions, 20.0), 2 * STEP)


def test_first_hit_and_misses(tree):
    origins, directions = random_rays(50, seed=5)
    directions[0] = -directions[0]  # points away from the tree: misses
    origins[0] = torch.tensor([-30.0, -30.0, -30.0])
    directions[0] = torch.tensor([-1.0, 0.0, 0.0])
    packed = tree.ray_intervals(origins, directions)
    hits = tree.ray_first_hit(origins, directions)
    assert hits.leaf_indices[0] == -1 and math.isinf(float(hits.t[0]))
    for ray in range(1, 50):
        mine = packed.ray_indices == ray
        if bool(mine.any()):
            assert float(hits.t[ray]) == float(packed.t_starts[mine].min())
            inside = origins[ray] + (hits.t[ray] + 1e-6) * directions[ray]
            assert int(tree.locate(inside[None])[0]) == int(hits.leaf_indices[ray])
        else:
            assert hits.leaf_indices[ray] == -1


def test_coarse_level_intervals_cover_leaf_intervals(tree):
    origins, directions = random_rays(30, seed=6)
    leaves = tree.ray_intervals(origins, directions)
    for level in (0, 1, 2):
        coarse = tree.ray_intervals(origins, directions, level=level)
        assert int(coarse.leaf_indices.max()) < len(tree.codes[level])
        for ray, start, end in zip(leaves.ray_indices.tolist(), leaves.t_starts.tolist(),
                                   leaves.t_ends.tolist(), strict=True):
            mine = coarse.ray_indices == ray
            assert bool(((coarse.t_starts[mine] <= start + 1e-12) & (coarse.t_ends[mine] >= end - 1e-12)).any())


def test_merge_joins_touching_intervals(tree):
    origins, directions = random_rays(60, seed=7)
    split = tree.ray_intervals(origins, directions)
    merged = tree.ray_intervals(origins, directions, merge=True)
    assert len(merged.ray_indices) < len(split.ray_indices)
    for ray in range(60):
        a, b = split.ray_indices == ray, merged.ray_indices == ray
        total_split = float((split.t_ends[a] - split.t_starts[a]).sum())
        assert abs(total_split - float((merged.t_ends[b] - merged.t_starts[b]).sum())) < 1e-9
        starts, ends = merged.t_starts[b], merged.t_ends[b]
        assert bool((starts[1:] > ends[:-1] + 1e-9).all())  # separated by empty space
    assert merged.ray_indices.tolist() == sorted(merged.ray_indices.tolist())


def test_chunked_traversal_gives_the_same_result(tree, monkeypatch):
    import geo3d.voxels.octree_rays as octree_rays

    origins, directions = random_rays(100, seed=8)
    whole = tree.ray_intervals(origins, directions)
    monkeypatch.setattr(octree_rays, "RAY_CHUNK", 7)
    chunked = tree.ray_intervals(origins, directions)
    for a, b in zip(whole, chunked, strict=True):
        assert torch.equal(a, b)


def test_empty_ray_batch_and_errors(tree):
    empty = tree.ray_intervals(torch.zeros((0, 3)), torch.zeros((0, 3)))
    assert empty.ray_indices.shape == (0,) and empty.t_starts.dtype == torch.float32
    good_o, good_d = torch.zeros((2, 3)), torch.ones((2, 3))
    with pytest.raises(VoxelError, match="zero vector"):
        tree.ray_intervals(good_o, torch.tensor([[1.0, 0, 0], [0, 0, 0]]))
    with pytest.raises(VoxelError, match="NaN"):
        tree.ray_intervals(torch.tensor([[math.nan, 0, 0], [0, 0, 0]]), good_d)
    with pytest.raises(VoxelError, match="differ"):
        tree.ray_intervals(good_o, torch.ones((3, 3)))
    with pytest.raises(VoxelError, match="far must be >= near"):
        tree.ray_intervals(good_o, good_d, near=2.0, far=1.0)
    with pytest.raises(VoxelError, match="near"):
        tree.ray_intervals(good_o, good_d, near=torch.zeros(5))
    with pytest.raises(VoxelError, match="level"):
        tree.ray_intervals(good_o, good_d, level=-1)
