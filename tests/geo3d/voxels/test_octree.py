"""Sparse octree against dense-grid brute force: structure, point location, neighbour and k-nearest
leaves, pooling, ray intervals (vs dense ray marching and a per-leaf slab test), Open3D's octree,
permutation invariance, memory and errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from geo3d.errors import VoxelError
from geo3d.voxels.morton import morton_encode
from geo3d.voxels.octree import Octree

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sphere_cloud(count: int = 3000, seed: int = 0, noise: float = 0.02) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(count, 3))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return torch.from_numpy(points * 0.7 + rng.normal(scale=noise, size=points.shape) + [0.3, -0.2, 0.1])


def dense_leaf_table(tree: Octree) -> np.ndarray:
    """Dense ``[2^d]^3`` array of leaf rows (-1 empty), filled from floor((p - origin) / leaf) of the
    tree's own leaves' centres."""
    cells = 1 << tree.depth
    table = np.full((cells,) * 3, -1, dtype=np.int64)
    centres = tree.node_centers().numpy()
    ijk = np.floor((centres - tree.origin.numpy()) / tree.leaf_size).astype(np.int64)
    table[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = np.arange(len(ijk))
    return table


def brute_locate(tree: Octree, table: np.ndarray, points: np.ndarray) -> np.ndarray:
    cells = table.shape[0]
    ijk = np.floor((points - tree.origin.numpy()) / tree.leaf_size).astype(np.int64)
    inside = ((ijk >= 0) & (ijk < cells)).all(1)
    out = np.full(len(points), -1, dtype=np.int64)
    out[inside] = table[ijk[inside, 0], ijk[inside, 1], ijk[inside, 2]]
    return out


@pytest.fixture(scope="module")
def tree_and_points():
    points = sphere_cloud()
    return Octree.from_points(points, 0.05, features=points[:, :2] * 10), points


def test_levels_masks_and_pointers_match_recomputation(tree_and_points):
    tree, points = tree_and_points
    ijk = np.floor((points.numpy() - tree.origin.numpy()) / tree.leaf_size).astype(np.int64)
    unique_cells, counts = np.unique(ijk, axis=0, return_counts=True)
    assert tree.depth == 5 and len(tree.codes) == tree.depth + 1 and len(tree.children_start) == tree.depth
    leaf_codes = morton_encode(torch.from_numpy(unique_cells))
    order = torch.argsort(leaf_codes)
    assert torch.equal(tree.codes[-1], leaf_codes[order])
    assert torch.equal(tree.point_counts, torch.from_numpy(counts)[order])
    for level in range(tree.depth + 1):
        cells = {tuple(c) for c in (unique_cells >> (tree.depth - level)).tolist()}
        expected = sorted(int(morton_encode(torch.tensor([c]))[0]) for c in cells)
        assert tree.codes[level].tolist() == expected
    for level in range(tree.depth):
        codes, children = tree.codes[level].tolist(), tree.codes[level + 1].tolist()
        for row, code in enumerate(codes):
            slots = [c & 7 for c in children if c >> 3 == code]
            assert int(tree.child_masks[level][row]) == sum(1 << s for s in slots)
            start = int(tree.children_start[level][row])
            assert [c & 7 for c in children[start:start + len(slots)]] == slots
    assert int(tree.child_masks[-1].sum()) == 0
    assert tree.num_nodes == sum(len(c) for c in tree.codes)
    parent = tree.parent_index(tree.depth)
    assert torch.equal(tree.codes[tree.depth - 1][parent], tree.codes[tree.depth] >> 3)


def test_leaf_features_are_reduced_per_leaf(tree_and_points):
    tree, points = tree_and_points
    leaf = tree.locate(points)
    features = points[:, :2] * 10
    for row in [0, 7, tree.num_leaves // 2, tree.num_leaves - 1]:
        torch.testing.assert_close(tree.features[row], features[leaf == row].mean(0))
    maxed = Octree.from_points(points, 0.05, features=features, reduce="max")
    torch.testing.assert_close(maxed.features[3], features[leaf == 3].amax(0))


def test_locate_matches_dense_lookup(tree_and_points):
    tree, points = tree_and_points
    table = dense_leaf_table(tree)
    rng = np.random.default_rng(3)
    queries = np.concatenate([points.numpy(), rng.uniform(-1.5, 2.5, size=(5000, 3))])
    got = tree.locate(torch.from_numpy(queries)).numpy()
    np.testing.assert_array_equal(got, brute_locate(tree, table, queries))
    assert bool((got[: len(points)] >= 0).all())  # every build point is in a leaf
    assert (got == -1).sum() > 1000  # outside the cube or in empty cells
    got32 = tree.locate(torch.from_numpy(queries[:100]).float())
    np.testing.assert_array_equal(got32.numpy(), brute_locate(tree, table, queries[:100].astype(np.float32)
                                                              .astype(np.float64)))
    # coarser level: the node holding the point's leaf cell, by the codes of the halved coordinates
    level = 2
    nodes = tree.locate(points, level=level)
    ijk = torch.floor((points - tree.origin) / tree.leaf_size).long() >> (tree.depth - level)
    assert torch.equal(tree.codes[level][nodes], morton_encode(ijk))
    assert tree.locate(torch.zeros((0, 3))).shape == (0,)


def test_neighbor_leaves_match_dense_offsets(tree_and_points, monkeypatch):
    tree, points = tree_and_points
    table = dense_leaf_table(tree)
    cells = table.shape[0]
    rng = np.random.default_rng(4)
    queries = np.concatenate([points.numpy()[:300], rng.uniform(-1.2, 2.2, size=(300, 3))])
    for radius in (1, 2):
        got = tree.neighbor_leaves(torch.from_numpy(queries), radius_cells=radius).numpy()
        assert got.shape == (600, (2 * radius + 1) ** 3)
        ijk = np.floor((queries - tree.origin.numpy()) / tree.leaf_size).astype(np.int64)
        span = range(-radius, radius + 1)
        for column, offset in enumerate(itertools.product(span, span, span)):
            cell = ijk + np.array(offset)
            inside = ((cell >= 0) & (cell < cells)).all(1)
            expected = np.full(len(cell), -1)
            expected[inside] = table[cell[inside, 0], cell[inside, 1], cell[inside, 2]]
            np.testing.assert_array_equal(got[:, column], expected)
    import geo3d.voxels.octree as octree_module

    monkeypatch.setattr(octree_module, "NEIGHBOR_CHUNK", 100)  # a few queries per chunk: same answer
    np.testing.assert_array_equal(tree.neighbor_leaves(torch.from_numpy(queries), 2).numpy(), got)
    assert tree.neighbor_leaves(torch.zeros((0, 3))).shape == (0, 27)
    by_index = tree.neighbor_leaves(torch.arange(tree.num_leaves))
    assert torch.equal(by_index[:, 13], torch.arange(tree.num_leaves))  # the cell itself in the middle
    assert torch.equal(by_index, tree.neighbor_leaves(tree.node_centers()))


def test_knn_leaves_match_brute_force_centre_distances(tree_and_points):
    tree, _ = tree_and_points
    rng = np.random.default_rng(5)
    queries = rng.uniform(-1.0, 1.5, size=(200, 3))
    result = tree.knn_leaves(torch.from_numpy(queries), 6)
    centres = tree.node_centers().numpy()
    distances = np.linalg.norm(queries[:, None] - centres[None], axis=-1)
    np.testing.assert_allclose(result.distances.numpy(), np.sort(distances, axis=1)[:, :6], rtol=1e-12)
    np.testing.assert_allclose(np.take_along_axis(distances, result.leaf_indices.numpy(), 1),
                               result.distances.numpy(), rtol=1e-12)
    small = Octree.from_points(torch.tensor([[0.0, 0, 0], [1.0, 1, 1]]), 0.5)
    padded = small.knn_leaves(torch.zeros((1, 3)), 3)
    assert padded.leaf_indices[0, 2] == -1 and math.isinf(float(padded.distances[0, 2]))


@pytest.mark.parametrize("reduce", ["mean", "max", "sum", "min"])
def test_pool_matches_per_parent_loops(reduce):
    points = sphere_cloud(400, seed=6)
    tree = Octree.from_points(points, 0.1, features=points)
    levels = tree.pool(reduce=reduce)
    assert [lv.shape[0] for lv in levels] == [len(c) for c in tree.codes]
    leaf = tree.locate(points)
    for level in range(tree.depth + 1):
        node = tree.codes[level] if level < tree.depth else tree.codes[-1]
        point_node = tree.codes[-1][leaf] >> (3 * (tree.depth - level))
        for row, code in enumerate(node.tolist()):
            if reduce == "mean":  # a parent's mean is the mean over all its points
                expected = points[point_node == code].mean(0)
            else:
                # max/min/sum over the leaf values under the node (one per leaf, not per point)
                leaves = (tree.codes[-1] >> (3 * (tree.depth - level))) == code
                values = tree.features[leaves]
                expected = {"max": values.amax(0), "min": values.amin(0), "sum": values.sum(0)}[reduce]
            torch.testing.assert_close(levels[level][row], expected)


def test_pool_gradients_follow_point_weights():
    points = sphere_cloud(300, seed=13)
    tree = Octree.from_points(points, 0.1)
    leaf_values = torch.zeros(tree.num_leaves, 1, dtype=torch.float64, requires_grad=True)
    root_mean = tree.pool(leaf_values, reduce="mean")[0]
    root_mean.sum().backward()  # d mean / d leaf = its share of the points
    expected = tree.point_counts.double() / tree.point_counts.sum()
    torch.testing.assert_close(leaf_values.grad[:, 0], expected)
    leaf_values.grad = None
    tree.pool(leaf_values, reduce="sum")[1].sum().backward()
    torch.testing.assert_close(leaf_values.grad, torch.ones_like(leaf_values))


def test_permutation_invariance():
    points = sphere_cloud(2000, seed=7)
    features = torch.arange(2000, dtype=torch.float64)[:, None]
    a = Octree.from_points(points, 0.05, features=features, reduce="max")
    perm = torch.randperm(2000, generator=torch.Generator().manual_seed(0))
    b = Octree.from_points(points[perm], 0.05, features=features[perm], reduce="max")
    assert torch.equal(a.origin, b.origin) and a.depth == b.depth
    for name in ("codes", "child_masks", "children_start"):
        for x, y in zip(getattr(a, name), getattr(b, name), strict=True):
            assert torch.equal(x, y)
    assert torch.equal(a.point_counts, b.point_counts)
    assert torch.equal(a.features, b.features)
    mean_a = Octree.from_points(points, 0.05, features=points).features
    torch.testing.assert_close(mean_a, Octree.from_points(points[perm], 0.05, features=points[perm]).features)


def test_memory_grows_with_occupied_leaves_not_the_box():
    rng = np.random.default_rng(8)
    sparse = torch.from_numpy(rng.uniform(0, 1000.0, size=(500, 3)))  # 1 km box, 1 cm leaves
    tree = Octree.from_points(sparse, 0.01)
    assert tree.depth == 17  # a dense grid would hold 2^51 cells
    assert tree.num_leaves == 500 and tree.num_nodes <= 500 * (tree.depth + 1)
    assert tree.memory_bytes() < 500 * (tree.depth + 1) * 17 + 1000
    bigger = Octree.from_points(torch.from_numpy(rng.uniform(0, 1000.0, size=(5000, 3))), 0.01)
    assert 5 < bigger.memory_bytes() / tree.memory_bytes() < 11
    assert "leaves=500" in repr(tree)


def test_bounds_depth_and_upper_faces():
    points = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.25, 1.0]])
    tree = Octree.from_points(points, 0.125, bounds=[[0, 0, 0], [1, 1, 1]])
    assert tree.depth == 3 and tree.size == 1.0
    rows = tree.locate(points)
    assert bool((rows >= 0).all())  # points on the upper faces fall into the last cells
    assert tree.node_coords()[rows].tolist() == [[0, 0, 0], [7, 7, 7], [4, 2, 7]]
    deeper = Octree.from_points(points, 0.125, depth=5, bounds=[[0, 0, 0], [1, 1, 1]])
    assert deeper.size == 4.0  # 1.0 is no longer on the cube's face: it starts cell 8
    assert deeper.node_coords()[deeper.locate(points)].tolist() == [[0, 0, 0], [8, 8, 8], [4, 2, 8]]
    for size in np.random.default_rng(12).uniform(0.01, 10.0, size=50):  # no depth + 1 from rounding
        exact = Octree.from_points(torch.full((1, 3), size, dtype=torch.float64), size / 2**8,
                                   bounds=[[0, 0, 0], [size] * 3])
        assert exact.depth == 8 and int(exact.locate(torch.full((1, 3), size, dtype=torch.float64))[0]) == 0
    auto = Octree.from_points(points + 10.03, 0.125)
    assert torch.allclose(auto.origin, torch.full((3,), 10.0, dtype=torch.float64))  # aligned to the leaf grid


def test_float32_points_rounded_past_float64_bounds_are_snapped_onto_them():
    exact = np.array([[0.7, 0.0, 0.0], [0.9, 0.1, 0.05]])
    bounds = [[0.7, 0.0, 0.0], [1.0, 0.1, 0.1]]
    points = torch.from_numpy(exact).float()  # 0.7 rounds to 0.69999999, 0.1 to 0.10000000149
    assert float(points[0, 0]) < 0.7 and float(points[1, 1]) > 0.1
    tree = Octree.from_points(points, 0.05, bounds=bounds)
    assert tree.node_coords()[tree.locate(points)].tolist() == [[0, 0, 0], [3, 2, 1]]  # floor of the float32 values
    with pytest.raises(VoxelError, match="outside bounds"):  # float64 points get no float32 slack
        Octree.from_points(points.double(), 0.05, bounds=bounds)


def test_open3d_octree_locates_the_same_leaf_cells():
    o3d = pytest.importorskip("open3d")
    points = sphere_cloud(2000, seed=9).numpy()
    depth = 6
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    reference = o3d.geometry.Octree(max_depth=depth)
    reference.convert_from_point_cloud(cloud, size_expand=0.01)
    origin, size = np.asarray(reference.origin), reference.size
    tree = Octree.from_points(torch.from_numpy(points), size / 2**depth, bounds=[origin, origin + size])
    assert tree.depth == depth
    rng = np.random.default_rng(10)
    queries = np.concatenate([points[:300], rng.uniform(origin, origin + size, size=(300, 3))])
    rows = tree.locate(torch.from_numpy(queries))
    cells = tree.node_coords()[rows.clamp(min=0)].numpy()
    for query, row, cell in zip(queries, rows.tolist(), cells, strict=True):
        node, info = reference.locate_leaf_node(query)
        assert (node is None) == (row == -1)
        if node is not None:  # Open3D's node origins carry ~1e-7 relative rounding: compare cell indices
            reference_cell = (np.asarray(info.origin) - origin) / tree.leaf_size
            np.testing.assert_allclose(reference_cell, cell, atol=1e-3)
            assert info.depth == depth


def test_from_voxel_grid_and_back():
    grid_module = pytest.importorskip("geo3d.voxels.grid")
    indices = torch.tensor([[0, 0, 0], [5, 2, 1], [5, 3, 1], [9, 0, 4]])
    values = torch.arange(8, dtype=torch.float32).reshape(4, 2)
    grid = grid_module.VoxelGrid(torch.tensor([1.0, 2.0, 3.0]), 0.5, (10, 4, 5), indices=indices, values=values)
    tree = Octree.from_voxel_grid(grid)
    assert tree.depth == 4 and tree.leaf_size == 0.5 and tree.num_leaves == 4
    centres = grid.centers(indices)
    torch.testing.assert_close(tree.features[tree.locate(centres)], values)
    dense_tree = Octree.from_voxel_grid(grid.to_dense())
    assert torch.equal(dense_tree.codes[-1], tree.codes[-1])
    occupancy = grid_module.VoxelGrid(torch.zeros(3), 1.0, (4, 4, 4), indices=indices[:2] // 4,
                                      values=torch.ones(2, 1, dtype=torch.bool))
    assert Octree.from_voxel_grid(occupancy).features.dtype == torch.bool  # any dtype, kept as is
    back = tree.to_voxel_grid()
    assert back.shape == (16, 16, 16)
    torch.testing.assert_close(back.values[back.lookup(indices)], values)


@pytest.mark.parametrize("kwargs, message", [
    ({"points": torch.tensor([[0.0, math.nan, 0.0]])}, "NaN"),
    ({"points": torch.zeros((0, 3))}, "empty"),
    ({"points": torch.zeros((4, 2))}, r"\[N, 3\]"),
    ({"points": torch.zeros((4, 3), dtype=torch.int64)}, "floating"),
    ({"leaf_size": 0.0}, "leaf_size"),
    ({"leaf_size": -0.1}, "leaf_size"),
    ({"leaf_size": math.nan}, "leaf_size"),
    ({"depth": 22}, "depth"),
    ({"depth": 1}, "too small"),
    ({"bounds": [[0, 0, 0], [0.5, 0.5, 0.5]]}, "outside bounds"),
    ({"bounds": [[0, 0, 0], [-1, 1, 1]]}, "bounds"),
    ({"features": torch.zeros(3, 2)}, "features"),
    ({"features": torch.zeros(4, 2), "reduce": "median"}, "reduce"),
    ({"leaf_size": 1e-9}, "larger leaf_size"),
])
def test_build_errors(kwargs, message):
    args = {"points": torch.tensor([[0.0, 0, 0], [1, 1, 1], [0.2, 0.9, 0.1], [0.9, 0.1, 0.4]]),
            "leaf_size": 0.1}
    args.update(kwargs)
    with pytest.raises(VoxelError, match=message):
        Octree.from_points(args.pop("points"), args.pop("leaf_size"), **args)


def test_query_errors():
    tree = Octree.from_points(sphere_cloud(100), 0.1)
    with pytest.raises(VoxelError, match="NaN"):
        tree.locate(torch.tensor([[math.inf, 0.0, 0.0]]))
    with pytest.raises(VoxelError, match="level"):
        tree.locate(torch.zeros((1, 3)), level=tree.depth + 1)
    with pytest.raises(VoxelError, match="leaf indices"):
        tree.neighbor_leaves(torch.tensor([tree.num_leaves]))
    with pytest.raises(VoxelError, match="radius_cells"):
        tree.neighbor_leaves(torch.tensor([0]), radius_cells=-1)
    with pytest.raises(VoxelError, match="k must"):
        tree.knn_leaves(torch.zeros((1, 3)), 0)
    with pytest.raises(VoxelError, match="features"):
        tree.pool()
    with pytest.raises(VoxelError, match="empty"):
        Octree.from_voxel_indices(torch.zeros((0, 3), dtype=torch.int64), (0, 0, 0), 1.0)
    with pytest.raises(VoxelError, match="2\\^21"):
        Octree.from_voxel_indices(torch.tensor([[2**21, 0, 0]]), (0, 0, 0), 1.0)
    with pytest.raises(VoxelError, match=">= 0"):
        Octree.from_voxel_indices(torch.tensor([[-1, 0, 0]]), (0, 0, 0), 1.0)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    points = sphere_cloud(3000, seed=11)
    cpu = Octree.from_points(points, 0.05, features=points)
    gpu = Octree.from_points(points.cuda(), 0.05, features=points.cuda())
    for x, y in zip(cpu.codes + cpu.children_start + cpu.child_masks, gpu.codes + gpu.children_start
                    + gpu.child_masks, strict=True):
        assert torch.equal(x, y.cpu())
    queries = points + 0.03
    assert torch.equal(cpu.locate(queries), gpu.locate(queries.cuda()).cpu())
    assert torch.equal(cpu.neighbor_leaves(queries), gpu.neighbor_leaves(queries.cuda()).cpu())
    torch.testing.assert_close(cpu.pool()[1], gpu.pool()[1].cpu())
    origins, directions = queries * 3, -queries
    a, b = cpu.ray_intervals(origins, directions), gpu.ray_intervals(origins.cuda(), directions.cuda())
    assert torch.equal(a.ray_indices, b.ray_indices.cpu()) and torch.equal(a.leaf_indices, b.leaf_indices.cpu())
    torch.testing.assert_close(a.t_starts, b.t_starts.cpu())
