"""knn / ball_query against NumPy brute force, on both back-ends, with padded and degenerate input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geo3d.errors import PointCloudError
from geo3d.points import ball_query, knn
from geo3d.points.neighbors import pairwise_distances

BACKENDS = ["brute", "kdtree"]


def numpy_knn(query: np.ndarray, ref: np.ndarray, k: int, norm: int = 2, radius: float | None = None):
    """Distances [Q, k] (inf padded) and the set of admissible distances, by full sorting."""
    diff = query[:, None, :] - ref[None, :, :]
    dist = np.abs(diff).sum(-1) if norm == 1 else np.sqrt((diff**2).sum(-1))
    out = np.full((query.shape[0], k), np.inf)
    if ref.shape[0]:
        srt = np.sort(dist, axis=1)[:, :k]
        if radius is not None:
            srt = np.where(srt <= radius, srt, np.inf)
        out[:, : srt.shape[1]] = srt
    return out, dist


def check_against_numpy(result, query, ref, k, norm=2, radius=None, atol=1e-5):
    dist = result.distances.detach().numpy()
    idx = result.indices.numpy()
    expected, full = numpy_knn(query, ref, k, norm, radius)
    np.testing.assert_allclose(dist, expected, rtol=1e-5, atol=atol)
    # indices are valid rows whose true distance is the reported one (ties may pick either row)
    assert ((idx >= 0) == np.isfinite(expected)).all()
    rows, cols = np.nonzero(idx >= 0)
    np.testing.assert_allclose(full[rows, idx[rows, cols]], expected[rows, cols], rtol=1e-5, atol=atol)
    for row in idx:  # no reference point twice in one query's list
        found = row[row >= 0]
        assert len(np.unique(found)) == len(found)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm", [1, 2])
def test_knn_matches_brute_force(backend, norm):
    rng = np.random.default_rng(0)
    query, ref = rng.normal(size=(300, 3)), rng.normal(size=(500, 3))
    result = knn(torch.from_numpy(query), torch.from_numpy(ref), 8, norm=norm, backend=backend)
    assert result.distances.shape == (300, 8) and result.indices.dtype == torch.int64
    check_against_numpy(result, query, ref, 8, norm)
    assert (np.diff(result.distances.numpy(), axis=1) >= 0).all()  # nearest first


def test_backends_agree_on_a_large_cloud_and_auto_uses_the_tree():
    gen = torch.Generator().manual_seed(1)
    query, ref = torch.rand(4000, 3, generator=gen), torch.rand(5000, 3, generator=gen)
    tree = knn(query, ref, 4, backend="kdtree")
    brute = knn(query, ref, 4, backend="brute")
    auto = knn(query, ref, 4)
    torch.testing.assert_close(tree.distances, brute.distances)
    torch.testing.assert_close(auto.distances, tree.distances)
    same = (tree.indices == brute.indices).float().mean()
    assert same > 0.999  # only exact ties may differ


@pytest.mark.parametrize("backend", BACKENDS)
def test_padded_batch_with_empty_clouds_and_k_larger_than_cloud(backend):
    rng = np.random.default_rng(2)
    query = torch.from_numpy(rng.normal(size=(4, 30, 3)))
    ref = torch.from_numpy(rng.normal(size=(4, 20, 3)))
    q_len, r_len = [30, 0, 12, 7], [20, 5, 0, 3]  # empty query cloud, empty ref cloud, ref smaller than k
    query[1:, 25:] = float("nan")  # padding may hold anything
    result = knn(query, ref, 6, torch.tensor(q_len), torch.tensor(r_len), backend=backend)
    assert result.distances.shape == (4, 30, 6)
    for b in range(4):
        check_against_numpy(type(result)(result.distances[b, : q_len[b]], result.indices[b, : q_len[b]]),
                            query[b, : q_len[b]].numpy(), ref[b, : r_len[b]].numpy(), 6)
        assert (result.indices[b, q_len[b]:] == -1).all()
        assert torch.isinf(result.distances[b, q_len[b]:]).all()
    assert (result.indices[3, :7, 3:] == -1).all()
    # gradients of the valid reference points stay finite despite the NaN padding of the queries
    ref_grad = ref.clone().requires_grad_()
    found = knn(query, ref_grad, 6, torch.tensor(q_len), torch.tensor(r_len), backend=backend)
    found.distances[torch.isfinite(found.distances)].sum().backward()
    assert torch.isfinite(ref_grad.grad).all()


def test_list_input_equals_padded_input():
    gen = torch.Generator().manual_seed(3)
    clouds_q = [torch.rand(n, 3, generator=gen) for n in (5, 17, 9)]
    clouds_r = [torch.rand(n, 3, generator=gen) for n in (11, 4, 30)]
    listed = knn(clouds_q, clouds_r, 3)
    for b in range(3):
        single = knn(clouds_q[b], clouds_r[b], 3)
        torch.testing.assert_close(listed.distances[b, : len(clouds_q[b])], single.distances)


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicate_points(backend):
    ref = torch.tensor([[0.0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 0, 0]], dtype=torch.float64)
    query = torch.tensor([[0.0, 0, 0], [0.9, 0, 0]], dtype=torch.float64)
    result = knn(query, ref, 4, backend=backend)
    torch.testing.assert_close(result.distances[0], torch.tensor([0.0, 0, 0, 1], dtype=torch.float64))
    assert sorted(result.indices[0, :3].tolist()) == [0, 1, 2]
    assert result.indices[1, 0] == 3
    check_against_numpy(result, query.numpy(), ref.numpy(), 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ball_query_matches_brute_force_and_closed_ball(backend):
    rng = np.random.default_rng(4)
    query, ref = rng.uniform(size=(200, 3)), rng.uniform(size=(400, 3))
    result = ball_query(torch.from_numpy(query), torch.from_numpy(ref), 0.15, 10, backend=backend)
    check_against_numpy(result, query, ref, 10, radius=0.15)
    # a point exactly on the sphere is inside (0.5 is exact in binary)
    on_sphere = ball_query(torch.zeros(1, 3, dtype=torch.float64),
                           torch.tensor([[0.5, 0, 0], [0.6, 0, 0]], dtype=torch.float64), 0.5, 2, backend=backend)
    assert on_sphere.indices.tolist() == [[0, -1]]


def test_distances_are_differentiable_for_both_clouds():
    gen = torch.Generator().manual_seed(5)
    query = torch.rand(6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    ref = torch.rand(9, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    for norm in (1, 2):
        torch.autograd.gradcheck(lambda q, r: knn(q, r, 3, norm=norm).distances, (query, ref))


def test_zero_distance_has_a_finite_gradient():
    pts = torch.rand(5, 3, dtype=torch.float64, requires_grad=True)
    knn(pts, pts.detach(), 1).distances.sum().backward()
    assert torch.isfinite(pts.grad).all()


def test_pairwise_distances_exact_for_close_points():
    a = torch.tensor([[1000.0, 1000.0, 1000.0]])
    b = torch.tensor([[1000.0, 1000.0, 1000.001]])
    assert abs(float(pairwise_distances(a, b)) - 0.001) < 1e-4  # the |a|^2+|b|^2-2ab expansion gives ~0.03


@pytest.mark.cuda
def test_cuda_brute_force_matches_cpu_tree():
    gen = torch.Generator().manual_seed(6)
    query, ref = torch.rand(3000, 3, generator=gen), torch.rand(2000, 3, generator=gen)
    cpu = knn(query, ref, 5, backend="kdtree")
    gpu = knn(query.cuda(), ref.cuda(), 5)
    torch.testing.assert_close(gpu.distances.cpu(), cpu.distances, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: knn(torch.rand(5, 3), torch.rand(5, 3), 0), "k must be"),
        (lambda: knn(torch.rand(5, 3), torch.rand(5, 2), 1), "point dimensions"),
        (lambda: knn(torch.rand(2, 5, 3), torch.rand(3, 5, 3), 1), "batch sizes"),
        (lambda: knn(torch.rand(5), torch.rand(5, 3), 1), "expected"),
        (lambda: knn(torch.tensor([[0.0, float("inf"), 0]]), torch.rand(5, 3), 1), "NaN/inf"),
        (lambda: knn(torch.rand(2, 5, 3), torch.rand(2, 5, 3), 1, torch.tensor([6, 1])), "lengths"),
        (lambda: knn(torch.rand(5, 3), torch.rand(5, 3), 1, norm=3), "norm"),
        (lambda: knn(torch.rand(5, 3), torch.rand(5, 3), 1, backend="faiss"), "backend"),
        (lambda: knn(torch.ones(5, 3, dtype=torch.int64), torch.rand(5, 3), 1), "floating point"),
        (lambda: ball_query(torch.rand(5, 3), torch.rand(5, 3), -1.0, 2), "radius"),
        (lambda: ball_query(torch.rand(5, 3), torch.rand(5, 3), float("nan"), 2), "radius"),
    ],
)
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(PointCloudError, match=message):
        call()
