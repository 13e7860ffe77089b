"""Farthest point sampling vs a NumPy loop and Open3D; voxel downsampling vs Open3D and counting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geo3d.errors import PointCloudError
from geo3d.points import farthest_point_sampling, voxel_downsample


def numpy_fps(points: np.ndarray, n: int, start: int) -> list[int]:
    chosen = [start]
    dist = np.full(len(points), np.inf)
    for _ in range(n - 1):
        dist = np.minimum(dist, ((points - points[chosen[-1]]) ** 2).sum(1))
        chosen.append(int(np.argmax(dist)))
    return chosen


@pytest.mark.parametrize("start", [0, 17])
def test_fps_matches_numpy_loop(start):
    pts = np.random.default_rng(0).normal(size=(500, 3))
    result = farthest_point_sampling(torch.from_numpy(pts), 64, start_index=start)
    assert result.indices.tolist() == numpy_fps(pts, 64, start)
    np.testing.assert_array_equal(result.points.numpy(), pts[result.indices.numpy()])


def test_fps_matches_open3d():
    o3d = pytest.importorskip("open3d")
    pts = np.random.default_rng(1).uniform(size=(2000, 3))
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    picked = np.asarray(cloud.farthest_point_down_sample(100).points)  # Open3D starts at index 0
    ours = farthest_point_sampling(torch.from_numpy(pts), 100).points.numpy()
    np.testing.assert_allclose(np.sort(ours, axis=0), np.sort(picked, axis=0))


def test_fps_padded_batch_short_cloud_and_per_cloud_start():
    rng = np.random.default_rng(2)
    clouds = [rng.normal(size=(n, 3)) for n in (40, 5, 0)]
    padded = torch.full((3, 40, 3), float("nan"), dtype=torch.float64)  # padding may hold anything
    for b, c in enumerate(clouds):
        padded[b, : len(c)] = torch.from_numpy(c)
    result = farthest_point_sampling(padded, 8, torch.tensor([40, 5, 0]), start_index=torch.tensor([3, 1, 0]))
    assert result.indices[0].tolist() == numpy_fps(clouds[0], 8, 3)
    assert sorted(result.indices[1, :5].tolist()) == [0, 1, 2, 3, 4] and result.indices[1, 0] == 1
    assert (result.indices[1, 5:] == -1).all() and (result.indices[2] == -1).all()
    assert (result.points[1, 5:] == 0).all()
    listed = farthest_point_sampling([torch.from_numpy(c) for c in clouds[:2]], 8, start_index=torch.tensor([3, 1]))
    torch.testing.assert_close(listed.indices, result.indices[:2])


def test_fps_spreads_points_evenly():
    """On a line of points, FPS from one end halves the largest gap at every power of two."""
    line = torch.linspace(0, 1, 1025, dtype=torch.float64)[:, None].expand(-1, 3).contiguous()
    picked = farthest_point_sampling(line, 9).points[:, 0].sort().values
    torch.testing.assert_close(picked, torch.linspace(0, 1, 9, dtype=torch.float64))


def test_voxel_downsample_matches_open3d():
    o3d = pytest.importorskip("open3d")
    rng = np.random.default_rng(3)
    pts = rng.uniform(-2, 3, size=(5000, 3))
    colors = rng.uniform(size=(5000, 3))
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    cloud.colors = o3d.utility.Vector3dVector(colors)
    size = 0.37
    down = cloud.voxel_down_sample(size)
    origin = pts.min(0) - size / 2  # Open3D's grid corner
    ours = voxel_downsample(torch.from_numpy(pts), size, torch.from_numpy(colors), origin=origin.tolist())
    theirs = np.asarray(down.points)
    assert ours.points.shape == theirs.shape
    order_o = np.lexsort(theirs.T[::-1])
    order_g = np.lexsort(ours.points.numpy().T[::-1])
    np.testing.assert_allclose(ours.points.numpy()[order_g], theirs[order_o], atol=1e-12)
    np.testing.assert_allclose(ours.features.numpy()[order_g], np.asarray(down.colors)[order_o], atol=1e-12)


def test_voxel_downsample_counts_inverse_and_reductions():
    rng = np.random.default_rng(4)
    pts = rng.uniform(0, 2, size=(3000, 3))
    result = voxel_downsample(torch.from_numpy(pts), [0.5, 0.25, 1.0])
    keys = np.floor(pts / [0.5, 0.25, 1.0]).astype(np.int64)
    unique, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    np.testing.assert_array_equal(result.voxels.numpy(), unique)  # lexicographic order
    np.testing.assert_array_equal(result.counts.numpy(), counts)
    np.testing.assert_array_equal(result.inverse.numpy(), inverse.reshape(-1))
    for v in range(len(unique)):
        np.testing.assert_allclose(result.points[v].numpy(), pts[inverse.reshape(-1) == v].mean(0))
    first = voxel_downsample(torch.from_numpy(pts), [0.5, 0.25, 1.0], reduce="first")
    for v in range(len(unique)):
        np.testing.assert_array_equal(first.points[v].numpy(), pts[np.nonzero(inverse.reshape(-1) == v)[0][0]])
    center = voxel_downsample(torch.from_numpy(pts), [0.5, 0.25, 1.0], reduce="center")
    np.testing.assert_allclose(center.points.numpy(), (unique + 0.5) * [0.5, 0.25, 1.0])


def test_voxel_downsample_is_differentiable_and_handles_negative_and_empty():
    pts = (torch.rand(100, 3, dtype=torch.float64) - 0.5).requires_grad_()
    result = voxel_downsample(pts, 0.1)
    assert (result.voxels.min(0).values < 0).all()
    (result.points.sum()).backward()
    np.testing.assert_allclose(pts.grad.numpy(), 1.0 / result.counts[result.inverse].numpy()[:, None].repeat(3, 1))
    empty = voxel_downsample(torch.zeros(0, 3), 0.1)
    assert empty.points.shape == (0, 3) and empty.counts.shape == (0,)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: farthest_point_sampling(torch.rand(10, 3), 0), "n must be"),
        (lambda: farthest_point_sampling(torch.rand(10, 3), 4, start_index=10), "start_index"),
        (lambda: farthest_point_sampling(torch.tensor([[float("nan"), 0, 0]]), 1), "NaN/inf"),
        (lambda: voxel_downsample(torch.rand(10, 3), 0.0), "voxel_size"),
        (lambda: voxel_downsample(torch.rand(10, 3), 1e-30), "too small"),
        (lambda: voxel_downsample(torch.rand(2, 10, 3), 0.1), "one \\[N, 3\\] cloud"),
        (lambda: voxel_downsample(torch.rand(10, 3), 0.1, torch.rand(9, 2)), "features"),
        (lambda: voxel_downsample(torch.rand(10, 3), 0.1, reduce="median"), "reduce"),
        (lambda: voxel_downsample(torch.rand(10, 2), 0.1), "3 coordinates"),
    ],
)
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(PointCloudError, match=message):
        call()
