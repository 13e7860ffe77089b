"""Chamfer distance and F-score between point clouds.

Conventions (``docs/points.md`` has the full table, with pytorch3d's and kaolin's defaults):

- For every point ``x_i`` its cost is the distance to its nearest neighbour in ``y``, measured with
  ``norm``: ``"squared_l2"`` ``|x_i - y_j|^2`` (the common training loss; pytorch3d's ``norm=2`` and
  kaolin's ``squared=True``), ``"l2"`` ``|x_i - y_j|`` (the "CD-L1" of the point-completion papers
  before their division by 2), or ``"l1"`` ``sum_d |x_id - y_jd|`` with the neighbour also chosen
  under L1 (pytorch3d's ``norm=1``).
- A direction reduces these costs over the cloud: ``"mean"`` (weighted mean ``sum w d / sum w``) or
  ``"sum"`` (``sum w d``). ``direction="bi"`` adds both directions, ``x->y + y->x``, as pytorch3d and
  kaolin do; papers that *average* the two directions report half of it.
- ``batch_reduction`` then averages (``"mean"``) or adds (``"sum"``) the per-cloud values, or keeps
  them (``None``: a ``[B]`` tensor).

Nearest neighbours come from :mod:`geo3d.points.neighbors` (KD-tree on the CPU, chunked brute force
on CUDA) without gradients; the costs are then recomputed in torch from the matched coordinates, so
the result is differentiable with respect to both clouds (and the weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch

from geo3d.errors import PointCloudError
from geo3d.points._inputs import PointBatch, PointsLike, as_point_batch, check_pair, check_weights
from geo3d.points.neighbors import Backend, nearest_indices

ChamferNorm = Literal["squared_l2", "l2", "l1"]
Lengths = torch.Tensor | Sequence[int] | None


class NearestCosts(NamedTuple):
    """Per-point nearest-neighbour costs of one direction.

    Attributes:
        costs: ``[B, N]`` cost of each point of the source cloud (0 at padding).
        indices: ``[B, N]`` int64 row of its nearest neighbour in the target cloud (-1 at padding).
    """

    costs: torch.Tensor
    indices: torch.Tensor


class FScore(NamedTuple):
    """Result of :func:`f_score`; each field is ``[B]`` (scalar for unbatched input), or ``[B, T]`` /
    ``[T]`` for ``T`` thresholds. Values lie in [0, 1].

    Attributes:
        f_score: harmonic mean ``2 P R / (P + R)`` (0 when both are 0).
        precision: fraction of predicted points closer than the threshold to the ground truth.
        recall: fraction of ground-truth points closer than the threshold to the prediction.
    """

    f_score: torch.Tensor
    precision: torch.Tensor
    recall: torch.Tensor


def _check_options(norm: str, point_reduction: str, batch_reduction: str | None, direction: str) -> None:
    if norm not in ("squared_l2", "l2", "l1"):
        raise PointCloudError(f"norm must be 'squared_l2', 'l2' or 'l1', got {norm!r}")
    if point_reduction not in ("mean", "sum"):
        raise PointCloudError(f"point_reduction must be 'mean' or 'sum', got {point_reduction!r}")
    if batch_reduction not in ("mean", "sum", None):
        raise PointCloudError(f"batch_reduction must be 'mean', 'sum' or None, got {batch_reduction!r}")
    if direction not in ("bi", "x_to_y", "y_to_x"):
        raise PointCloudError(f"direction must be 'bi', 'x_to_y' or 'y_to_x', got {direction!r}")


def _nearest_costs(src: PointBatch, dst: PointBatch, norm: ChamferNorm, backend: Backend) -> NearestCosts:
    indices = nearest_indices(src, dst, 1, 1 if norm == "l1" else 2, None, backend)[..., 0]
    if dst.points.shape[1] == 0:  # every target cloud empty (so is every source, by the checks)
        return NearestCosts(src.points.new_zeros(src.points.shape[:2]), indices)
    safe = indices.clamp(min=0)
    neighbour = torch.gather(dst.points, 1, safe[..., None].expand(-1, -1, dst.points.shape[-1]))
    source = src.points
    if not src.is_full:  # padding rows (whatever they hold, NaN included) cost 0 and get no gradient
        source = torch.where(src.valid[..., None], source, neighbour.detach())
    diff = source - neighbour
    if norm == "l1":
        cost = diff.abs().sum(-1)
    else:
        cost = diff.square().sum(-1)
        if norm == "l2":  # sqrt with a zero (not NaN) gradient where a point sits on its neighbour
            positive = cost > 0
            cost = torch.where(positive, torch.where(positive, cost, torch.ones_like(cost)).sqrt(),
                               torch.zeros_like(cost))
    return NearestCosts(cost, indices)


def nearest_costs(x: PointsLike, y: PointsLike, x_lengths: Lengths = None, y_lengths: Lengths = None, *,
                  norm: ChamferNorm = "squared_l2", backend: Backend = "auto") -> NearestCosts:
    """Cost of every point of ``x`` to its nearest neighbour in ``y`` (one Chamfer direction).

    Args:
        x: source points ``[N, 3]``, ``[B, N, 3]`` (+ ``x_lengths``) or a list of clouds.
        y: target points in the same form; every target cloud needs at least one point.
        norm: ``"squared_l2"``, ``"l2"`` or ``"l1"`` (module docstring).
        backend: neighbour search back-end (:func:`geo3d.points.knn`).

    Returns:
        :class:`NearestCosts` with ``costs`` and ``indices`` of shape ``[B, N]`` (``[N]`` unbatched).
    """
    _check_options(norm, "mean", None, "bi")
    xb = as_point_batch(x, x_lengths, name="x")
    yb = as_point_batch(y, y_lengths, name="y")
    check_pair(xb, yb)
    _check_not_empty(yb, "y", xb)
    result = _nearest_costs(xb, yb, norm, backend)
    return NearestCosts(result.costs[0], result.indices[0]) if xb.unbatched else result


def _check_not_empty(target: PointBatch, name: str, source: PointBatch) -> None:
    empty = (target.lengths == 0) & (source.lengths > 0)
    if bool(empty.any()):
        b = int(empty.nonzero()[0, 0])
        raise PointCloudError(f"{name}: cloud {b} is empty, so its nearest-neighbour distances are undefined")


def _reduce_direction(costs: torch.Tensor, weights: torch.Tensor | None, batch: PointBatch,
                      point_reduction: str) -> torch.Tensor:
    if weights is None:
        total = costs.sum(1)
        if point_reduction == "sum":
            return total
        return total / batch.lengths.clamp(min=1).to(costs.dtype)
    total = (weights * costs).sum(1)
    if point_reduction == "sum":
        return total
    norm = weights.sum(1)
    return torch.where(norm > 0, total / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(total))


def chamfer_distance(
    x: PointsLike,
    y: PointsLike,
    x_lengths: Lengths = None,
    y_lengths: Lengths = None,
    *,
    x_weights: torch.Tensor | Sequence[torch.Tensor] | None = None,
    y_weights: torch.Tensor | Sequence[torch.Tensor] | None = None,
    norm: ChamferNorm = "squared_l2",
    point_reduction: Literal["mean", "sum"] = "mean",
    batch_reduction: Literal["mean", "sum"] | None = "mean",
    direction: Literal["bi", "x_to_y", "y_to_x"] = "bi",
    backend: Backend = "auto",
) -> torch.Tensor:
    """Chamfer distance between two point clouds or two batches of clouds.

    ``chamfer = reduce_i w_i min_j c(x_i, y_j) + reduce_j v_j min_i c(y_j, x_i)`` with the cost ``c``
    set by ``norm`` and the reductions by ``point_reduction`` / ``batch_reduction`` (module docstring).
    With the defaults it equals pytorch3d's ``chamfer_distance(x, y)[0]`` and the batch mean of
    kaolin's ``chamfer_distance(x, y)``.

    Args:
        x: ``[N, 3]``, a padded batch ``[B, N, 3]`` (+ ``x_lengths [B]``), or a list of ``[N_b, 3]``
            tensors; metres.
        y: ``[M, 3]`` / ``[B, M, 3]`` (+ ``y_lengths``) / list, same batch size as ``x``.
        x_lengths, y_lengths: valid points per cloud of a padded batch; the padding is ignored.
        x_weights: optional per-point weights of ``x``, ``[N]`` / ``[B, N]`` / list of ``[N_b]``,
            finite and >= 0: the ``x -> y`` term becomes ``sum w d / sum w`` (``"mean"``) or
            ``sum w d`` (``"sum"``). Differentiable.
        y_weights: the same for ``y`` and the ``y -> x`` term.
        norm: ``"squared_l2"`` (default), ``"l2"`` or ``"l1"``.
        point_reduction: ``"mean"`` or ``"sum"`` over the points of each cloud.
        batch_reduction: ``"mean"``, ``"sum"`` or None (one value per cloud).
        direction: ``"bi"`` (both terms added), ``"x_to_y"`` or ``"y_to_x"`` (one term).
        backend: neighbour search back-end, see :func:`geo3d.points.knn`.

    Returns:
        A scalar, or ``[B]`` with ``batch_reduction=None`` and batched input. Units: metres^2 for
        ``"squared_l2"``, metres otherwise.

    Raises:
        PointCloudError: bad shapes, NaN/inf, mismatched batch sizes, an empty cloud whose partner is
            not empty (its nearest-neighbour distances are undefined), unknown options.
    """
    _check_options(norm, point_reduction, batch_reduction, direction)
    xb = as_point_batch(x, x_lengths, name="x")
    yb = as_point_batch(y, y_lengths, name="y")
    check_pair(xb, yb)
    xw = check_weights(x_weights, xb, "x_weights")
    yw = check_weights(y_weights, yb, "y_weights")
    _check_not_empty(yb, "y", xb)
    _check_not_empty(xb, "x", yb)
    per_cloud = xb.points.new_zeros(xb.points.shape[0])
    if direction in ("bi", "x_to_y"):
        costs = _nearest_costs(xb, yb, norm, backend).costs
        per_cloud = per_cloud + _reduce_direction(costs, xw, xb, point_reduction)
    if direction in ("bi", "y_to_x"):
        costs = _nearest_costs(yb, xb, norm, backend).costs
        per_cloud = per_cloud + _reduce_direction(costs, yw, yb, point_reduction)
    if xb.unbatched and yb.unbatched:
        return per_cloud[0]
    if batch_reduction == "mean":
        return per_cloud.mean()
    if batch_reduction == "sum":
        return per_cloud.sum()
    return per_cloud


def f_score(prediction: PointsLike, target: PointsLike, threshold: float | Sequence[float],
            prediction_lengths: Lengths = None, target_lengths: Lengths = None, *,
            backend: Backend = "auto") -> FScore:
    """F-score of a predicted point cloud against a ground-truth one at a distance threshold.

    Precision is the fraction of predicted points whose nearest ground-truth point is closer than
    ``threshold`` (Euclidean distance, strict ``<`` as in the Tanks and Temples evaluation), recall the
    fraction of ground-truth points whose nearest predicted point is; F is their harmonic mean.

    Args:
        prediction: ``[N, 3]``, ``[B, N, 3]`` (+ lengths) or a list of clouds; metres.
        target: the ground truth, in the same form.
        threshold: distance in metres (> 0), or a sequence of ``T`` thresholds.
        prediction_lengths, target_lengths: valid points per cloud of padded batches.
        backend: neighbour search back-end, see :func:`geo3d.points.knn`.

    Returns:
        :class:`FScore` of ``[B]`` tensors (``[B, T]`` for several thresholds; batch dim dropped for
        unbatched input). An empty prediction has precision 0 and recall 0 (likewise an empty target).
    """
    thresholds = torch.as_tensor(threshold, dtype=torch.float64).reshape(-1)
    if thresholds.numel() == 0 or not bool(torch.isfinite(thresholds).all()) or bool((thresholds <= 0).any()):
        raise PointCloudError(f"threshold must be finite and > 0, got {threshold!r}")
    pb = as_point_batch(prediction, prediction_lengths, name="prediction")
    tb = as_point_batch(target, target_lengths, name="target")
    check_pair(pb, tb, ("prediction", "target"))

    def fraction_within(src: PointBatch, dst: PointBatch) -> torch.Tensor:
        costs = _nearest_costs(src, dst, "l2", backend).costs.detach()
        t = thresholds.to(device=costs.device, dtype=costs.dtype)
        hit = (costs[..., None] < t) & src.valid[..., None] & (dst.lengths > 0)[:, None, None]
        return hit.sum(1).to(costs.dtype) / src.lengths.clamp(min=1)[:, None].to(costs.dtype)

    precision = fraction_within(pb, tb)
    recall = fraction_within(tb, pb)
    denom = precision + recall
    f = torch.where(denom > 0, 2 * precision * recall / torch.where(denom > 0, denom, torch.ones_like(denom)),
                    torch.zeros_like(denom))
    squeeze_t = isinstance(threshold, (int, float))
    out = [v[..., 0] if squeeze_t else v for v in (f, precision, recall)]
    if pb.unbatched and tb.unbatched:
        out = [v[0] for v in out]
    return FScore(*out)
