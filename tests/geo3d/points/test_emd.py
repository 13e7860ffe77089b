"""Tests of geo3d.points.emd (Earth Mover's Distance) against independent oracles: brute force over
all permutations, a generic LP solver (scipy's HiGHS on the dense transportation LP) and scipy's
linear_sum_assignment, plus the approximate methods' errors on the shared bunny meshes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment, linprog
from scipy.sparse import coo_matrix, vstack
from scipy.spatial.distance import cdist

from geo3d.errors import PointCloudError
from geo3d.points.emd import EMDMatching, earth_movers_distance, emd_matching

METRICS = ("l2", "squared_l2")


def _cost(x: np.ndarray, y: np.ndarray, metric: str) -> np.ndarray:
    return cdist(x, y, "euclidean" if metric == "l2" else "sqeuclidean")


def _lp_emd(x: np.ndarray, y: np.ndarray, metric: str) -> float:
    """EMD by the dense transportation LP (HiGHS), uniform masses 1/N and 1/M."""
    n, m = len(x), len(y)
    cost = _cost(x, y, metric).ravel()
    var = np.arange(n * m)
    a_eq = vstack([coo_matrix((np.ones(n * m), (var // m, var)), shape=(n, n * m)),
                   coo_matrix((np.ones(n * m), (var % m, var)), shape=(m, n * m))]).tocsr()
    b_eq = np.concatenate([np.full(n, 1.0 / n), np.full(m, 1.0 / m)])
    result = linprog(cost, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    assert result.status == 0
    return float(result.fun)


def _cloud(n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).uniform(-1.0, 1.0, (n, 3))).to(dtype)


# ---------------------------------------------------------------------------------------------
# Exact method against independent oracles
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("n", [1, 2, 5, 7])
def test_exact_equals_brute_force_over_permutations(n, metric):
    x, y = _cloud(n, 10 + n), _cloud(n, 20 + n)
    cost = _cost(x.numpy(), y.numpy(), metric)
    best = min(cost[np.arange(n), list(p)].mean() for p in itertools.permutations(range(n)))
    result = emd_matching(x, y, metric=metric, method="exact")
    assert result.distance.item() == pytest.approx(best, rel=1e-12, abs=1e-15)
    assert sorted(result.assignment.tolist()) == list(range(n))  # a permutation
    assert cost[np.arange(n), result.assignment.numpy()].mean() == pytest.approx(best, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("n, seed", [(20, 0), (33, 1), (40, 2)])
def test_exact_equals_lp_solver(n, seed, metric):
    x, y = _cloud(n, seed), _cloud(n, seed + 100) * 0.7 + 0.2
    reference = _lp_emd(x.numpy(), y.numpy(), metric)
    value = earth_movers_distance(x, y, metric=metric, method="exact").item()
    assert value == pytest.approx(reference, rel=1e-9)
    auto = emd_matching(x, y, metric=metric)
    assert auto.methods == ("exact",)
    assert auto.distance.item() == pytest.approx(reference, rel=1e-9)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("n, seed", [(40, 3), (300, 4)])
def test_auction_is_an_upper_bound_close_to_exact(n, seed, metric):
    x, y = _cloud(n, seed), _cloud(n, seed + 7)
    cost = _cost(x.numpy(), y.numpy(), metric)
    rows, cols = linear_sum_assignment(cost)
    exact = cost[rows, cols].mean()
    result = emd_matching(x, y, metric=metric, method="auction")
    value = result.distance.item()
    assert sorted(result.assignment.tolist()) == list(range(n))
    assert value == pytest.approx(cost[np.arange(n), result.assignment.numpy()].mean(), rel=1e-12)
    assert value >= exact * (1 - 1e-12)  # a permutation's cost can't beat the optimum
    assert value <= exact * (1 + 1e-3)  # tolerance=1e-3 bounds the error on the candidate pairs


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("n, m, seed", [(20, 30, 0), (25, 40, 1), (37, 23, 2)])
def test_unequal_sizes_against_lp_solver(n, m, seed, metric):
    x, y = _cloud(n, seed), _cloud(m, seed + 50) + torch.tensor([0.3, 0.0, -0.2], dtype=torch.float64)
    reference = _lp_emd(x.numpy(), y.numpy(), metric)
    result = emd_matching(x, y, metric=metric)
    assert result.methods == ("sinkhorn",)
    value = result.distance.item()
    assert value >= reference * (1 - 1e-9)  # a feasible plan: never below the optimum
    assert value <= reference * (1 + 1e-3)
    rows, cols, mass = (t.numpy() for t in result.plan)
    assert np.all(mass >= 0)
    np.testing.assert_allclose(np.bincount(rows, weights=mass, minlength=n), 1.0 / n, rtol=1e-9)
    np.testing.assert_allclose(np.bincount(cols, weights=mass, minlength=m), 1.0 / m, rtol=1e-9)
    assert value == pytest.approx((_cost(x.numpy(), y.numpy(), metric)[rows, cols] * mass).sum(), rel=1e-12)
    assert (result.assignment == -1).all()


@pytest.mark.parametrize("method", ["exact", "auction", "auto"])
def test_sizes_multiple_of_each_other_are_solved_exactly(method):
    x, y = _cloud(15, 5), _cloud(45, 6)
    reference = _lp_emd(x.numpy(), y.numpy(), "l2")
    for a, b in ((x, y), (y, x)):
        result = emd_matching(a, b, method=method)
        assert result.methods[0] in ("exact", "auction")
        assert result.distance.item() == pytest.approx(reference, rel=1e-3 if method == "auction" else 1e-9)
        assert result.distance.item() >= reference * (1 - 1e-9)
        rows, cols, mass = (t.numpy() for t in result.plan)
        row_sums = np.bincount(rows, weights=mass, minlength=len(a))
        col_sums = np.bincount(cols, weights=mass, minlength=len(b))
        np.testing.assert_allclose(row_sums, 1.0 / len(a), rtol=1e-12)
        np.testing.assert_allclose(col_sums, 1.0 / len(b), rtol=1e-12)


def test_sinkhorn_on_equal_sizes_matches_exact():
    x, y = _cloud(60, 8), _cloud(60, 9)
    exact = earth_movers_distance(x, y, method="exact").item()
    value = earth_movers_distance(x, y, method="sinkhorn").item()
    assert exact * (1 - 1e-9) <= value <= exact * (1 + 1e-3)


# ---------------------------------------------------------------------------------------------
# Batching, invariances, reductions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["exact", "auction", "sinkhorn"])
def test_padded_and_ragged_batches_equal_per_cloud_results(method):
    sizes = [(12, 12), (30, 30), (7, 7)] if method != "sinkhorn" else [(12, 17), (30, 22), (7, 9)]
    xs = [_cloud(n, 30 + i) for i, (n, _) in enumerate(sizes)]
    ys = [_cloud(m, 40 + i) for i, (_, m) in enumerate(sizes)]
    single = torch.stack([earth_movers_distance(a, b, method=method) for a, b in zip(xs, ys)])
    ragged = earth_movers_distance(xs, ys, method=method, reduction=None)
    torch.testing.assert_close(ragged, single, rtol=1e-12, atol=0)
    # padded with garbage that must be ignored
    n_max, m_max = max(n for n, _ in sizes), max(m for _, m in sizes)
    x_pad = torch.full((3, n_max, 3), 1e6, dtype=torch.float64)
    y_pad = torch.full((3, m_max, 3), float("nan"), dtype=torch.float64)
    for i, (a, b) in enumerate(zip(xs, ys)):
        x_pad[i, : len(a)], y_pad[i, : len(b)] = a, b
    lengths_x, lengths_y = torch.tensor([n for n, _ in sizes]), torch.tensor([m for _, m in sizes])
    padded = earth_movers_distance(x_pad, y_pad, lengths_x, lengths_y, method=method, reduction=None)
    torch.testing.assert_close(padded, single, rtol=1e-12, atol=0)
    result = emd_matching(x_pad, y_pad, lengths_x, lengths_y, method=method)
    if method != "sinkhorn":
        assert (result.assignment[2, 7:] == -1).all() and (result.assignment[2, :7] >= 0).all()
    assert (result.plan.mass[result.plan.x_index < 0] == 0).all()
    mean = earth_movers_distance(xs, ys, method=method).item()
    assert mean == pytest.approx(single.mean().item(), rel=1e-12)
    assert earth_movers_distance(xs, ys, method=method, reduction="sum").item() == pytest.approx(
        single.sum().item(), rel=1e-12)


@pytest.mark.parametrize("method", ["exact", "auction", "sinkhorn"])
def test_invariant_to_point_order(method):
    x, y = _cloud(50, 11), _cloud(50 if method != "sinkhorn" else 35, 12)
    base = earth_movers_distance(x, y, method=method).item()
    gen = torch.Generator().manual_seed(0)
    shuffled = earth_movers_distance(x[torch.randperm(len(x), generator=gen)],
                                     y[torch.randperm(len(y), generator=gen)], method=method).item()
    assert shuffled == pytest.approx(base, rel=1e-12 if method == "exact" else 1e-3)


@pytest.mark.parametrize("method", ["exact", "auction", "sinkhorn"])
def test_zero_for_identical_clouds(method):
    x = _cloud(64, 13, torch.float32).requires_grad_(True)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    y = x.detach()[order].clone().requires_grad_(True)
    value = earth_movers_distance(x, y, method=method)
    assert value.item() == 0.0
    value.backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()


def test_translation_along_an_axis_is_its_length():
    x = _cloud(40, 14)
    shift = torch.tensor([0.0, 0.0, 5.0], dtype=torch.float64)  # >> the cloud: the matching is the identity
    assert earth_movers_distance(x, x + shift).item() == pytest.approx(5.0, rel=1e-12)
    assert earth_movers_distance(x, x + shift, metric="squared_l2").item() == pytest.approx(25.0, rel=1e-12)


def test_float32_input_gives_float32_output_and_unbatched_scalar():
    x, y = _cloud(20, 15, torch.float32), _cloud(20, 16, torch.float32)
    value = earth_movers_distance(x, y, reduction=None)
    assert value.dtype == torch.float32 and value.ndim == 0
    result = emd_matching(x, y)
    assert isinstance(result, EMDMatching)
    assert result.assignment.shape == (20,) and result.plan.mass.shape == (20,)
    batched = earth_movers_distance(x[None], y[None], reduction=None)
    assert batched.shape == (1,)


def test_auto_picks_auction_above_the_exact_limit():
    x, y = _cloud(30, 17), _cloud(30, 18)
    result = emd_matching(x, y, exact_max_points=10)
    assert result.methods == ("auction",)
    assert result.distance.item() == pytest.approx(earth_movers_distance(x, y).item(), rel=1e-3)


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("method, sizes", [("exact", (6, 6)), ("auction", (6, 6)), ("sinkhorn", (5, 7)),
                                           ("exact", (4, 8))])
def test_gradcheck(method, sizes, metric):
    x = _cloud(sizes[0], 19).requires_grad_(True)
    y = (_cloud(sizes[1], 20) * 0.5 + 0.3).requires_grad_(True)

    def fn(a, b):
        return earth_movers_distance(a, b, method=method, metric=metric)

    assert torch.autograd.gradcheck(fn, (x, y), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradient_matches_finite_differences_on_batches():
    x = _cloud(25, 21).reshape(1, 25, 3).repeat(2, 1, 1)
    x[1] += 0.1
    y = _cloud(25, 22).reshape(1, 25, 3).repeat(2, 1, 1)
    x.requires_grad_(True)
    earth_movers_distance(x, y, reduction="sum").backward()
    step = 1e-6
    for b, i, k in [(0, 3, 0), (1, 10, 2), (1, 24, 1)]:
        plus, minus = x.detach().clone(), x.detach().clone()
        plus[b, i, k] += step
        minus[b, i, k] -= step
        numeric = (earth_movers_distance(plus, y, reduction="sum")
                   - earth_movers_distance(minus, y, reduction="sum"))
        assert x.grad[b, i, k].item() == pytest.approx(numeric.item() / (2 * step), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Approximate vs exact on the shared bunny meshes
# ---------------------------------------------------------------------------------------------


def _bunny_samples(meshes_dir, name: str, sizes: tuple[int, int],
                   seeds=(0, 1)) -> tuple[torch.Tensor, torch.Tensor]:
    trimesh = pytest.importorskip("trimesh")
    from geo3d.structures.shapes import sample_surface

    mesh = trimesh.load(meshes_dir / name, process=False)
    vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    a = sample_surface(vertices, faces, sizes[0], np.random.default_rng(seeds[0]))[0]
    b = sample_surface(vertices, faces, sizes[1], np.random.default_rng(seeds[1]))[0]
    return torch.from_numpy(a).float(), torch.from_numpy(b).float()


@pytest.mark.shared_data
@pytest.mark.parametrize("name, n", [("bunny_scan.ply", 1000), ("bunny_watertight.ply", 2000)])
def test_auction_within_one_percent_of_exact_on_bunny(meshes_dir, name, n):
    x, y = _bunny_samples(meshes_dir, name, (n, n))
    cost = cdist(x.double().numpy(), y.double().numpy())
    rows, cols = linear_sum_assignment(cost)
    reference = cost[rows, cols].mean()
    exact = earth_movers_distance(x, y, method="exact").item()
    approx = earth_movers_distance(x, y, method="auction").item()
    rel = (approx - reference) / reference
    print(f"\n{name} {n} pts: exact {exact:.7g} m, scipy {reference:.7g} m, auction {approx:.7g} m, "
          f"relative error {rel:.2e}")
    assert exact == pytest.approx(reference, rel=1e-6)  # float32 points: the value is summed in float32
    assert -1e-6 <= rel <= 0.01


@pytest.mark.shared_data
def test_sinkhorn_unequal_sizes_on_bunny(meshes_dir):
    x, y = _bunny_samples(meshes_dir, "bunny_scan.ply", (150, 200))
    reference = _lp_emd(x.double().numpy(), y.double().numpy(), "l2")
    value = earth_movers_distance(x.double(), y.double()).item()
    rel = (value - reference) / reference
    print(f"\nbunny_scan 150 vs 200 pts: LP {reference:.7g} m, sinkhorn {value:.7g} m, "
          f"relative error {rel:.2e}")
    assert -1e-9 <= rel <= 0.01


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_points_raise(bad):
    x, y = _cloud(10, 23), _cloud(10, 24)
    x[3, 1] = bad
    with pytest.raises(PointCloudError, match="x: 1 point.*NaN/inf"):
        earth_movers_distance(x, y)
    with pytest.raises(PointCloudError, match="y: 1 point.*NaN/inf"):
        earth_movers_distance(y, x)


@pytest.mark.parametrize("x_shape, y_shape, pattern", [
    ((10, 2), (10, 3), "x: expected 3 coordinates"),
    ((10, 3), (10, 4), "y: expected 3 coordinates"),
    ((10,), (10, 3), r"x: expected \[N, D\] or \[B, N, D\]"),
    ((2, 10, 3), (3, 10, 3), "different batch sizes: 2 vs 3"),
    ((10, 3), (1, 10, 3), "both be single"),
])
def test_bad_shapes_raise(x_shape, y_shape, pattern):
    with pytest.raises(PointCloudError, match=pattern):
        earth_movers_distance(torch.zeros(x_shape), torch.ones(y_shape))


def test_empty_clouds_raise():
    with pytest.raises(PointCloudError, match="x: cloud 0 is empty"):
        earth_movers_distance(torch.zeros(0, 3), torch.ones(4, 3))
    with pytest.raises(PointCloudError, match="y: cloud 1 is empty"):
        earth_movers_distance(torch.zeros(2, 4, 3), torch.ones(2, 4, 3), y_lengths=torch.tensor([4, 0]))


@pytest.mark.parametrize("method", ["exact", "auction"])
def test_one_to_one_methods_with_unequal_sizes_raise(method):
    pattern = f"method='{method}' needs clouds of equal size.*x has 20 points and y has 30"
    with pytest.raises(PointCloudError, match=pattern):
        earth_movers_distance(_cloud(20, 25), _cloud(30, 26), method=method)
    with pytest.raises(PointCloudError, match="cloud 1: x has 5 points and y has 7"):
        earth_movers_distance([_cloud(4, 1), _cloud(5, 2)], [_cloud(4, 3), _cloud(7, 4)], method=method)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"metric": "l1"}, "metric must be one of"),
    ({"method": "greedy"}, "method must be one of"),
    ({"reduction": "max"}, "reduction must be one of"),
    ({"tolerance": 0.0}, "tolerance must be in"),
    ({"tolerance": 1.5}, "tolerance must be in"),
    ({"blur": -1.0}, "blur must be a positive"),
    ({"blur": math.nan}, "blur must be a positive"),
    ({"scaling": 1.0}, "scaling must be in"),
])
def test_bad_options_raise(kwargs, pattern):
    with pytest.raises(PointCloudError, match=pattern):
        earth_movers_distance(_cloud(5, 27), _cloud(5, 28), **kwargs)


def test_mismatched_dtypes_raise():
    with pytest.raises(PointCloudError, match="different dtypes"):
        earth_movers_distance(_cloud(5, 29), _cloud(5, 30, torch.float32))
