"""Chamfer distance and F-score against a brute-force NumPy reference (values and gradients)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geo3d.errors import PointCloudError
from geo3d.points import chamfer_distance, f_score, nearest_costs


def numpy_direction(src: np.ndarray, dst: np.ndarray, norm: str) -> np.ndarray:
    """Per-point cost of src -> dst by evaluating every pair."""
    diff = src[:, None, :] - dst[None, :, :]
    if norm == "l1":
        return np.abs(diff).sum(-1).min(1)
    sq = (diff**2).sum(-1).min(1)
    return sq if norm == "squared_l2" else np.sqrt(sq)


def numpy_chamfer(x, y, norm="squared_l2", point_reduction="mean", xw=None, yw=None, direction="bi"):
    def term(src, dst, w):
        d = numpy_direction(src, dst, norm)
        w = np.ones(len(src)) if w is None else w
        return (w * d).sum() / (w.sum() if point_reduction == "mean" else 1.0)

    total = 0.0
    if direction in ("bi", "x_to_y"):
        total += term(x, y, xw)
    if direction in ("bi", "y_to_x"):
        total += term(y, x, yw)
    return total


@pytest.mark.parametrize("norm", ["squared_l2", "l2", "l1"])
@pytest.mark.parametrize("point_reduction", ["mean", "sum"])
@pytest.mark.parametrize("direction", ["bi", "x_to_y", "y_to_x"])
def test_matches_brute_force(norm, point_reduction, direction):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(400, 3)), rng.normal(size=(300, 3)) + 0.2
    got = chamfer_distance(torch.from_numpy(x), torch.from_numpy(y), norm=norm, point_reduction=point_reduction,
                           direction=direction)
    assert got.shape == ()
    np.testing.assert_allclose(float(got), numpy_chamfer(x, y, norm, point_reduction, direction=direction),
                               rtol=1e-10)


@pytest.mark.parametrize("backend", ["brute", "kdtree"])
def test_ragged_and_padded_batches_with_weights(backend):
    rng = np.random.default_rng(1)
    sizes_x, sizes_y = [50, 8, 120], [70, 30, 9]
    xs = [rng.normal(size=(n, 3)) for n in sizes_x]
    ys = [rng.normal(size=(n, 3)) for n in sizes_y]
    xws = [rng.uniform(size=n) for n in sizes_x]
    yws = [rng.uniform(size=n) for n in sizes_y]
    expected = np.array([numpy_chamfer(x, y, "l2", "mean", xw, yw) for x, y, xw, yw in zip(xs, ys, xws, yws)])
    t = torch.from_numpy
    listed = chamfer_distance([t(a) for a in xs], [t(a) for a in ys], x_weights=[t(w) for w in xws],
                              y_weights=[t(w) for w in yws], norm="l2", batch_reduction=None, backend=backend)
    np.testing.assert_allclose(listed.numpy(), expected, rtol=1e-10)
    padded_x = torch.full((3, 120, 3), 7.0, dtype=torch.float64)  # padding far away must not matter
    padded_y = torch.full((3, 70, 3), -7.0, dtype=torch.float64)
    wx, wy = torch.full((3, 120), 5.0, dtype=torch.float64), torch.full((3, 70), 5.0, dtype=torch.float64)
    for b in range(3):
        padded_x[b, : sizes_x[b]], padded_y[b, : sizes_y[b]] = t(xs[b]), t(ys[b])
        wx[b, : sizes_x[b]], wy[b, : sizes_y[b]] = t(xws[b]), t(yws[b])
    padded = chamfer_distance(padded_x, padded_y, torch.tensor(sizes_x), torch.tensor(sizes_y), x_weights=wx,
                              y_weights=wy, norm="l2", batch_reduction=None, backend=backend)
    np.testing.assert_allclose(padded.numpy(), expected, rtol=1e-10)
    for reduction, op in (("mean", np.mean), ("sum", np.sum)):
        value = chamfer_distance([t(a) for a in xs], [t(a) for a in ys], x_weights=[t(w) for w in xws],
                                 y_weights=[t(w) for w in yws], norm="l2", batch_reduction=reduction)
        np.testing.assert_allclose(float(value), op(expected), rtol=1e-10)


def test_zero_for_identical_clouds_and_invariant_to_order():
    gen = torch.Generator().manual_seed(2)
    x, y = torch.rand(500, 3, generator=gen), torch.rand(400, 3, generator=gen)
    assert float(chamfer_distance(x, x)) == 0.0
    base = chamfer_distance(x, y, norm="l2")
    shuffled = chamfer_distance(x[torch.randperm(500, generator=gen)], y[torch.randperm(400, generator=gen)],
                                norm="l2")
    torch.testing.assert_close(shuffled, base)
    # symmetric in its two arguments when both directions are added
    torch.testing.assert_close(chamfer_distance(y, x, norm="l2"), base)


@pytest.mark.parametrize("norm", ["squared_l2", "l2", "l1"])
def test_gradcheck_both_clouds_and_weights(norm):
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, 9, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.rand(2, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([7, 5])
    torch.autograd.gradcheck(
        lambda a, b, wa: chamfer_distance(a, b, lengths, None, x_weights=wa, norm=norm, batch_reduction=None),
        (x, y, w))


def test_gradient_matches_the_analytic_formula():
    """d/dx_i of mean_i |x_i - y_nn(i)|^2 is 2 (x_i - y_nn(i)) / N for the x -> y term."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(200, 3)), rng.normal(size=(150, 3))
    xt = torch.from_numpy(x).requires_grad_()
    chamfer_distance(xt, torch.from_numpy(y), direction="x_to_y").backward()
    nn = ((x[:, None] - y[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_allclose(xt.grad.numpy(), 2 * (x - y[nn]) / len(x), rtol=1e-10)


def test_nearest_costs_reports_the_neighbour():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(60, 3)), rng.normal(size=(80, 3))
    result = nearest_costs(torch.from_numpy(x), torch.from_numpy(y), norm="l1")
    full = np.abs(x[:, None] - y[None]).sum(-1)
    np.testing.assert_array_equal(result.indices.numpy(), full.argmin(1))
    np.testing.assert_allclose(result.costs.numpy(), full.min(1), rtol=1e-12)


def test_f_score_matches_counting():
    rng = np.random.default_rng(6)
    pred, gt = rng.uniform(size=(300, 3)), rng.uniform(size=(250, 3))
    thresholds = [0.04, 0.07, 0.1]
    result = f_score(torch.from_numpy(pred), torch.from_numpy(gt), thresholds)
    d_pred, d_gt = numpy_direction(pred, gt, "l2"), numpy_direction(gt, pred, "l2")
    for i, t in enumerate(thresholds):
        p, r = (d_pred < t).mean(), (d_gt < t).mean()
        assert 0 < p < 1 and 0 < r < 1, (p, r)
        np.testing.assert_allclose(float(result.precision[i]), p)
        np.testing.assert_allclose(float(result.recall[i]), r)
        np.testing.assert_allclose(float(result.f_score[i]), 2 * p * r / (p + r))
    single = f_score(torch.from_numpy(pred), torch.from_numpy(gt), 0.07)
    assert single.f_score.shape == () and float(single.f_score) == float(result.f_score[1])
    perfect = f_score(torch.from_numpy(pred), torch.from_numpy(pred), 1e-6)
    assert float(perfect.f_score) == 1.0


def test_f_score_batched_with_an_empty_prediction():
    gt = torch.rand(2, 50, 3)
    pred = torch.rand(2, 40, 3)
    result = f_score(pred, gt, 0.1, prediction_lengths=torch.tensor([40, 0]))
    assert result.f_score.shape == (2,)
    assert float(result.precision[1]) == 0.0 and float(result.recall[1]) == 0.0 and float(result.f_score[1]) == 0.0
    expected = f_score(pred[0], gt[0], 0.1)
    torch.testing.assert_close(result.f_score[0], expected.f_score)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: chamfer_distance(torch.rand(5, 3), torch.rand(5, 2)), "expected 3 coordinates"),
        (lambda: chamfer_distance(torch.rand(2, 5, 3), torch.rand(3, 5, 3)), "batch sizes"),
        (lambda: chamfer_distance(torch.tensor([[float("nan"), 0, 0]]), torch.rand(5, 3)), "NaN/inf"),
        (lambda: chamfer_distance(torch.rand(5, 3), torch.zeros(0, 3)), "empty"),
        (lambda: chamfer_distance(torch.rand(5, 3), torch.rand(5, 3), norm="l3"), "norm"),
        (lambda: chamfer_distance(torch.rand(5, 3), torch.rand(5, 3), point_reduction="max"), "point_reduction"),
        (lambda: chamfer_distance(torch.rand(5, 3), torch.rand(5, 3), direction="both"), "direction"),
        (lambda: chamfer_distance(torch.rand(5, 3), torch.rand(5, 3), x_weights=torch.rand(4)), "x_weights"),
        (lambda: chamfer_distance(torch.rand(5, 3), torch.rand(5, 3), x_weights=-torch.ones(5)), "non-negative"),
        (lambda: chamfer_distance(torch.rand(5, 3), torch.rand(5, 3).double()), "dtypes"),
        (lambda: f_score(torch.rand(5, 3), torch.rand(5, 3), 0.0), "threshold"),
    ],
)
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(PointCloudError, match=message):
        call()


def test_nan_padding_leaves_values_and_gradients_of_valid_points_alone():
    gen = torch.Generator().manual_seed(7)
    x = torch.full((2, 10, 3), float("nan"), dtype=torch.float64)
    y = torch.full((2, 12, 3), float("nan"), dtype=torch.float64)
    x[0, :6], x[1, :10] = torch.rand(6, 3, generator=gen, dtype=torch.float64), torch.rand(10, 3, generator=gen,
                                                                                          dtype=torch.float64)
    y[0, :12], y[1, :4] = torch.rand(12, 3, generator=gen, dtype=torch.float64), torch.rand(4, 3, generator=gen,
                                                                                           dtype=torch.float64)
    lx, ly = torch.tensor([6, 10]), torch.tensor([12, 4])
    for norm in ("squared_l2", "l2", "l1"):
        xp, yp = x.clone().requires_grad_(), y.clone().requires_grad_()
        chamfer_distance(xp, yp, lx, ly, norm=norm, batch_reduction="sum").backward()
        for b in range(2):
            xs = x[b, : lx[b]].clone().requires_grad_()
            ys = y[b, : ly[b]].clone().requires_grad_()
            chamfer_distance(xs, ys, norm=norm).backward()
            torch.testing.assert_close(xp.grad[b, : lx[b]], xs.grad)
            torch.testing.assert_close(yp.grad[b, : ly[b]], ys.grad)
        assert (xp.grad[0, 6:] == 0).all() and (yp.grad[1, 4:] == 0).all()
