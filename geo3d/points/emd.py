"""Earth Mover's Distance (EMD, Wasserstein-1 optimal transport) between point clouds.

Definition: for clouds ``x [N, 3]`` and ``y [M, 3]`` (metres, any common frame) with uniform masses,

    EMD(x, y) = min over plans P >= 0 with rows summing to 1/N and columns to 1/M of sum_ij P_ij c(x_i, y_j)

with ``c = |x_i - y_j|`` (``metric="l2"``, metres; the default and the convention of the point-cloud
papers: Fan et al. 2017, PCN, PointFlow) or ``c = |x_i - y_j|^2`` (``metric="squared_l2"``, m^2).
For ``N == M`` an optimal plan is a permutation (Birkhoff), so EMD is the mean matched distance of the
optimal one-to-one assignment. See ``docs/emd.md``.

Methods (``method=``):

- ``"exact"`` (N == M): the optimal assignment, from :func:`scipy.optimize.linear_sum_assignment`
  on the dense ``[N, N]`` cost, warm-started with the auction's prices (the optimum does not depend on
  them, only the solver's time does). Memory ``8 N^2`` bytes; ``"auto"`` uses it up to
  :data:`EXACT_MAX_POINTS` points.
- ``"auction"`` (N == M, approximate): an epsilon-scaling auction (Bertsekas) on sparse candidate
  pairs (nearest neighbours, neighbours of the current partner, and, twice, the best pairs by reduced
  cost over all of ``y``). It returns a permutation, so the value is a feasible plan's cost: an upper
  bound of the exact EMD, never below it. ``tolerance`` is the accuracy/speed knob.
- ``"sinkhorn"`` (any sizes, approximate): entropic optimal transport (log-domain Sinkhorn with
  epsilon scaling, :mod:`geo3d.points.sinkhorn`), its plan rounded onto the exact marginals and
  re-optimised exactly over its support (a sparse LP), so again an upper bound (in practice exact or
  within 1e-4 relative). ``"auto"`` uses it when the sizes differ.

When one size is a multiple of the other (``M = k N``), ``"exact"`` and ``"auction"`` also apply:
each point of the smaller cloud is repeated ``k`` times, which turns the uniform-mass transport
problem into an assignment problem of size ``M`` with the same optimum.

Gradients flow to both ``x`` and ``y`` through the (detached) matching or plan: the value is
``sum P_ij c(x_i, y_j)`` computed in torch on the plan's sparse support; by the envelope theorem this
is the gradient of the optimal-transport value wherever the optimal plan is unique. Batches are
solved cloud by cloud (a Python loop); the solvers run on the CPU (NumPy/Numba/SciPy) whatever the
device, the value and its gradient on the points' device. Numba (a dependency) compiles the auction
kernels on first use (cached on disk); without it they run as plain Python, correct but slow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from geo3d.errors import PointCloudError
from geo3d.points._inputs import PointsLike, as_point_batch, check_pair

EXACT_MAX_POINTS = 4096
"""Largest equal cloud size for which ``method="auto"`` picks the exact solver (its dense float64
cost matrix then takes 134 MB; at 2k points it runs in ~0.1 s, see docs/emd.md)."""

METRICS = ("l2", "squared_l2")
METHODS = ("auto", "exact", "auction", "sinkhorn")
REDUCTIONS = ("mean", "sum", None)

_KNN_X = 8          # candidates of x_i: its nearest y's
_KNN_PARTNER = 8    # ... the nearest y's of its current partner
_TOPK_REDUCED = 8   # ... and (after each refresh) its best y's by reduced cost c_ij + price_j over all y
_THETA = 6.0        # epsilon-scaling factor of the auction
_REFRESH_AT = 0.05  # refresh the candidates once when epsilon <= 5% of the mean matched cost, and at the end


class TransportPlan(NamedTuple):
    """A sparse transport plan in coordinate form (entry ``k`` moves ``mass[..., k]`` from
    ``x[x_index[..., k]]`` to ``y[y_index[..., k]]``).

    Attributes:
        x_index: ``[B, K]`` int64 row (x point) indices; -1 on padding entries.
        y_index: ``[B, K]`` int64 column (y point) indices; -1 on padding entries.
        mass: ``[B, K]`` float64 masses, >= 0; per cloud they sum to 1 (rows to ``1/N``, columns to
            ``1/M``); 0 on padding entries. The batch dimension is dropped for an unbatched call.
    """

    x_index: torch.Tensor
    y_index: torch.Tensor
    mass: torch.Tensor


class EMDMatching(NamedTuple):
    """Result of :func:`emd_matching`.

    Attributes:
        distance: ``[B]`` EMD per cloud (metres for ``"l2"``, m^2 for ``"squared_l2"``), differentiable
            w.r.t. both clouds; a scalar for an unbatched call.
        assignment: ``[B, N]`` int64, index of the y point matched to ``x_i`` by a one-to-one method
            (``"exact"``/``"auction"``); -1 on padding rows and for clouds solved by ``"sinkhorn"``.
        plan: :class:`TransportPlan`, the plan behind ``distance`` for every method (an assignment is
            the plan ``x_i -> y_assignment[i]`` with mass ``1/N``).
        methods: solver used per cloud (``"exact"``, ``"auction"`` or ``"sinkhorn"``).
    """

    distance: torch.Tensor
    assignment: torch.Tensor
    plan: TransportPlan
    methods: tuple[str, ...]


def earth_movers_distance(x: PointsLike, y: PointsLike, x_lengths: torch.Tensor | Sequence[int] | None = None,
                          y_lengths: torch.Tensor | Sequence[int] | None = None, *, metric: str = "l2",
                          method: str = "auto", reduction: str | None = "mean", tolerance: float = 1e-3,
                          blur: float | None = None, scaling: float = 0.8,
                          exact_max_points: int = EXACT_MAX_POINTS) -> torch.Tensor:
    """Earth Mover's Distance between point clouds (see the module docstring for the definition).

    Args:
        x: ``[N, 3]`` cloud, ``[B, N, 3]`` padded batch, or list of ``[N_b, 3]`` clouds (metres).
        y: the same for the other cloud(s): ``[M, 3]``, ``[B, M, 3]`` or a list; same batch size,
            dtype and device as ``x``.
        x_lengths, y_lengths: ``[B]`` valid points per cloud of a padded batch (padding is ignored).
        metric: ``"l2"`` (Euclidean distance, metres) or ``"squared_l2"`` (m^2).
        method: ``"auto"`` (exact when both clouds have the same size, or one size is a multiple of
            the other, and the larger is ``<= exact_max_points``; ``"auction"`` for such sizes above
            it; ``"sinkhorn"`` for other sizes), ``"exact"``, ``"auction"`` or ``"sinkhorn"``.
        reduction: ``"mean"`` or ``"sum"`` over the batch, or None for the ``[B]`` per-cloud values.
            An unbatched call (``[N, 3]`` inputs) returns a scalar whatever the reduction.
        tolerance: auction accuracy knob in (0, 1): its final epsilon relative to the mean matched
            cost. The measured error is far below it (docs/emd.md: ~1e-5 relative at the default).
        blur: Sinkhorn's final entropic scale in metres (epsilon = blur for ``"l2"``, blur^2 for
            ``"squared_l2"``); None: half the mean nearest-neighbour distance from x to y.
        scaling: Sinkhorn's epsilon-scaling factor in (0, 1); closer to 1 is slower and more accurate.
        exact_max_points: size limit of the exact solver under ``method="auto"``.

    Returns:
        The reduced distance (scalar) or ``[B]`` per-cloud distances; float dtype of the inputs.

    Raises:
        PointCloudError: bad points (NaN/inf, wrong dimensionality, mismatched batch sizes, empty
            clouds), an unknown metric/method/reduction, an exact/auction call on clouds whose sizes
            differ (and neither is a multiple of the other), or a knob out of range.
    """
    if reduction not in REDUCTIONS:
        raise PointCloudError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    result = emd_matching(x, y, x_lengths, y_lengths, metric=metric, method=method, tolerance=tolerance,
                          blur=blur, scaling=scaling, exact_max_points=exact_max_points)
    dist = result.distance
    if dist.ndim == 0 or reduction is None:
        return dist
    return dist.mean() if reduction == "mean" else dist.sum()


def emd_matching(x: PointsLike, y: PointsLike, x_lengths: torch.Tensor | Sequence[int] | None = None,
                 y_lengths: torch.Tensor | Sequence[int] | None = None, *, metric: str = "l2",
                 method: str = "auto", tolerance: float = 1e-3, blur: float | None = None,
                 scaling: float = 0.8, exact_max_points: int = EXACT_MAX_POINTS) -> EMDMatching:
    """EMD per cloud together with the matching / transport plan that achieves it.

    Arguments as :func:`earth_movers_distance` (without ``reduction``).

    Returns:
        :class:`EMDMatching`: ``distance [B]``, ``assignment [B, N]``, sparse ``plan`` (``[B, K]``
        fields), ``methods``; batch dims dropped for an unbatched call.
    """
    xb = as_point_batch(x, x_lengths, name="x", dim=3)
    yb = as_point_batch(y, y_lengths, name="y", dim=3)
    check_pair(xb, yb)
    if xb.unbatched != yb.unbatched:
        raise PointCloudError("x and y must both be single [N, 3] clouds or both be batches, got "
                              f"x {'unbatched' if xb.unbatched else 'batched'} and "
                              f"y {'unbatched' if yb.unbatched else 'batched'}")
    _check_options(metric, method, tolerance, blur, scaling, exact_max_points)
    squared = metric == "squared_l2"
    nx, ny = xb.lengths.tolist(), yb.lengths.tolist()
    for name, lens in (("x", nx), ("y", ny)):
        empty = [b for b, n in enumerate(lens) if n == 0]
        if empty:
            raise PointCloudError(f"{name}: cloud {empty[0]} is empty "
                                  "(the EMD of an empty cloud is undefined)")
    methods = []
    for b, (n, m) in enumerate(zip(nx, ny)):
        divisible = max(n, m) % min(n, m) == 0
        chosen = method
        if method == "auto":
            chosen = ("exact" if max(n, m) <= exact_max_points else "auction") if divisible else "sinkhorn"
        elif method in ("exact", "auction") and not divisible:
            where = "" if xb.unbatched else f"cloud {b}: "
            raise PointCloudError(f"method={method!r} needs clouds of equal size (or one size a multiple of "
                                  f"the other), {where}x has {n} points and y has {m} (use method='sinkhorn' "
                                  "or 'auto' for these sizes)")
        methods.append(chosen)

    batch, npts = xb.points.shape[:2]
    device = xb.points.device
    assignment = torch.full((batch, npts), -1, dtype=torch.int64, device=device)
    plans, values = [], []
    for b, chosen in enumerate(methods):
        xs = xb.points[b, : nx[b]]
        ys = yb.points[b, : ny[b]]
        x_np = xs.detach().to("cpu", torch.float64).numpy()
        y_np = ys.detach().to("cpu", torch.float64).numpy()
        if chosen == "sinkhorn":
            from geo3d.points.sinkhorn import sinkhorn_transport

            rows, cols, mass = sinkhorn_transport(x_np, y_np, squared=squared, blur=blur, scaling=scaling)
        else:
            rows, cols, mass, match = _matching_plan(x_np, y_np, chosen, squared, tolerance)
            if match is not None:
                assignment[b, : nx[b]] = torch.from_numpy(match).to(device)
        plans.append((rows, cols, mass))
        values.append(_plan_cost(xs, ys, rows, cols, mass, squared))
    distance = torch.stack(values)
    width = max(len(p[0]) for p in plans)
    x_index = torch.full((batch, width), -1, dtype=torch.int64)
    y_index = torch.full((batch, width), -1, dtype=torch.int64)
    plan_mass = torch.zeros((batch, width), dtype=torch.float64)
    for b, (rows, cols, mass) in enumerate(plans):
        x_index[b, : len(rows)] = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        y_index[b, : len(rows)] = torch.from_numpy(np.asarray(cols, dtype=np.int64))
        plan_mass[b, : len(rows)] = torch.from_numpy(np.asarray(mass, dtype=np.float64))
    plan = TransportPlan(x_index.to(device), y_index.to(device), plan_mass.to(device))
    if xb.unbatched:
        return EMDMatching(distance[0], assignment[0], TransportPlan(*(t[0] for t in plan)), tuple(methods))
    return EMDMatching(distance, assignment, plan, tuple(methods))


def _matching_plan(x: np.ndarray, y: np.ndarray, method: str, squared: bool, tolerance: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Plan ``(rows, cols, mass)`` of an optimal (``"exact"``) or near-optimal (``"auction"``)
    assignment, and the assignment itself when ``N == M`` (else None). When one size is ``k`` times the
    other, the smaller cloud's points are repeated ``k`` times: with uniform masses the transport
    problem is then an assignment problem of the larger size (an optimal plan of the transportation
    polytope with integral marginals is integral), so the value is still exact."""
    n, m = len(x), len(y)
    xr = np.repeat(x, m // n, axis=0) if m > n else x
    yr = np.repeat(y, n // m, axis=0) if n > m else y
    if method == "exact":
        match = exact_assignment(xr, yr, squared=squared)
    else:
        match, _ = auction_assignment(xr, yr, squared=squared, tolerance=tolerance)
    size = len(xr)
    if n == m:
        return np.arange(n), match, np.full(n, 1.0 / n), match
    key = np.unique((np.arange(size) // (size // n)) * m + match // (size // m), return_counts=True)
    return key[0] // m, key[0] % m, key[1] / size, None


def _check_options(metric: str, method: str, tolerance: float, blur: float | None, scaling: float,
                   exact_max_points: int) -> None:
    if metric not in METRICS:
        raise PointCloudError(f"metric must be one of {METRICS}, got {metric!r}")
    if method not in METHODS:
        raise PointCloudError(f"method must be one of {METHODS}, got {method!r}")
    if not (isinstance(tolerance, (int, float)) and 0.0 < tolerance < 1.0):
        raise PointCloudError(f"tolerance must be in (0, 1), got {tolerance!r}")
    if blur is not None and not (isinstance(blur, (int, float)) and math.isfinite(blur) and blur > 0):
        raise PointCloudError(f"blur must be a positive distance in metres or None, got {blur!r}")
    if not (isinstance(scaling, (int, float)) and 0.0 < scaling < 1.0):
        raise PointCloudError(f"scaling must be in (0, 1), got {scaling!r}")
    if int(exact_max_points) < 0:
        raise PointCloudError(f"exact_max_points must be >= 0, got {exact_max_points!r}")


def _pair_cost(a: torch.Tensor, b: torch.Tensor, squared: bool) -> torch.Tensor:
    """Cost between paired rows ``a [K, 3]``, ``b [K, 3]``: ``[K]``; the gradient of the Euclidean
    norm is taken as 0 where two points coincide (instead of NaN)."""
    sq = (a - b).square().sum(-1)
    if squared:
        return sq
    positive = sq > 0
    return torch.where(positive, sq.clamp_min(torch.finfo(sq.dtype).tiny).sqrt(), torch.zeros_like(sq))


def _plan_cost(xs: torch.Tensor, ys: torch.Tensor, rows: np.ndarray, cols: np.ndarray, mass: np.ndarray,
               squared: bool) -> torch.Tensor:
    """``sum_k mass_k c(x[rows_k], y[cols_k])`` in torch (differentiable in ``xs [N, 3]``, ``ys [M, 3]``;
    the plan is a constant), as a scalar of the points' dtype."""
    device = xs.device
    r = torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(device)
    c = torch.from_numpy(np.asarray(cols, dtype=np.int64)).to(device)
    w = torch.from_numpy(np.asarray(mass, dtype=np.float64)).to(device)
    cost = _pair_cost(xs.index_select(0, r), ys.index_select(0, c), squared)
    return (cost.to(torch.float64) * w).sum().to(xs.dtype)


# ----------------------------------------------------------------------------------------------
# Exact solver
# ----------------------------------------------------------------------------------------------


def exact_assignment(x: np.ndarray, y: np.ndarray, *, squared: bool = False) -> np.ndarray:
    """Optimal assignment between equal-size clouds.

    Args:
        x, y: ``[N, 3]`` float64 arrays.
        squared: cost ``|x_i - y_j|^2`` instead of ``|x_i - y_j|``.

    Returns:
        ``[N]`` int64, ``y`` index matched to each ``x_i``; it minimises ``sum_i c(x_i, y_match[i])``.

    The dense cost ``C`` is solved by :func:`scipy.optimize.linear_sum_assignment`. Its
    shortest-augmenting-path search is much faster when good column potentials are subtracted;
    ``C_ij + price_j`` has the same optimal assignments as ``C`` (every assignment's total shifts by
    the same ``sum_j price_j``), so the auction's prices are used for that and exactness holds for any
    prices.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    n = len(x)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    _, price = auction_assignment(x, y, squared=squared, tolerance=1e-3)
    cost = cdist(x, y, "sqeuclidean" if squared else "euclidean")
    cost += price[None, :]
    rows, cols = linear_sum_assignment(cost)
    match = np.empty(n, dtype=np.int64)
    match[rows] = cols
    return match


# ----------------------------------------------------------------------------------------------
# Auction (Bertsekas' forward auction with epsilon scaling) on sparse candidate pairs
#
# Minimisation form: person i (a point of x) pays c_ij + price_j for object j (a point of y). An
# unassigned person bids for its best candidate j1, raising its price by (second best - best) + eps,
# which evicts j1's previous owner. At the end of a phase every person is "eps-happy": its object is
# within eps of its best candidate; the assignment is then within N * eps of the optimum over the
# candidate pairs. Candidates always contain the current partner, so a perfect matching exists and
# every phase terminates.
# ----------------------------------------------------------------------------------------------


def _auction_phase(indptr, idx, cost, price, owner, obj_of, eps):  # pragma: no cover - numba kernel
    n = obj_of.shape[0]
    stack = np.empty(n, np.int64)
    top = 0
    for i in range(n):
        if obj_of[i] < 0:
            stack[top] = i
            top += 1
    bids = 0
    while top > 0:
        top -= 1
        i = stack[top]
        best = np.inf
        second = np.inf
        best_j = -1
        for q in range(indptr[i], indptr[i + 1]):
            v = cost[q] + price[idx[q]]
            if v < best:
                second = best
                best = v
                best_j = idx[q]
            elif v < second:
                second = v
        if second == np.inf:
            second = best
        price[best_j] += second - best + eps
        prev = owner[best_j]
        owner[best_j] = i
        obj_of[i] = best_j
        bids += 1
        if prev >= 0:
            obj_of[prev] = -1
            stack[top] = prev
            top += 1
    return bids


def _unassign_unhappy(indptr, idx, cost, price, owner, obj_of, eps):  # pragma: no cover - numba kernel
    """Unassign the persons whose object is more than eps worse than their best candidate."""
    count = 0
    for i in range(obj_of.shape[0]):
        s = obj_of[i]
        if s < 0:
            continue
        best = np.inf
        current = np.inf
        for q in range(indptr[i], indptr[i + 1]):
            v = cost[q] + price[idx[q]]
            if v < best:
                best = v
            if idx[q] == s:
                current = v
        if current > best + eps:
            owner[s] = -1
            obj_of[i] = -1
            count += 1
    return count


def _build_candidates(x, y, knn_x, knn_yy, partner, best_reduced, squared):  # pragma: no cover - numba kernel
    """CSR candidate lists: knn_x[i], best_reduced[i], knn_yy[partner[i]] and partner[i], deduplicated,
    with their costs."""
    n = x.shape[0]
    m = y.shape[0]
    k1 = knn_x.shape[1]
    k2 = knn_yy.shape[1]
    k3 = best_reduced.shape[1]
    total = k1 + k3 + k2 + 1
    indptr = np.zeros(n + 1, np.int64)
    idx = np.empty(n * total, np.int64)
    cost = np.empty(n * total, np.float64)
    seen = np.full(m, -1, np.int64)
    pos = 0
    for i in range(n):
        indptr[i] = pos
        s = partner[i]
        for t in range(total):
            if t < k1:
                j = knn_x[i, t]
            elif t < k1 + k3:
                j = best_reduced[i, t - k1]
            elif s < 0:
                continue
            elif t < total - 1:
                j = knn_yy[s, t - k1 - k3]
            else:
                j = s
            if j >= 0 and seen[j] != i:
                seen[j] = i
                d = 0.0
                for a in range(x.shape[1]):
                    e = x[i, a] - y[j, a]
                    d += e * e
                idx[pos] = j
                cost[pos] = d if squared else np.sqrt(d)
                pos += 1
    indptr[n] = pos
    return indptr, idx[:pos], cost[:pos]


def _dense_topk(x, y, price, k, squared):  # pragma: no cover - numba kernel
    """[N, k] indices of the k smallest c(x_i, y_j) + price_j over all j (3-D points; one thread, no
    [N, M] array: a vectorisable pass over y per row, then a scan for the k best)."""
    n = x.shape[0]
    m = y.shape[0]
    y0 = np.ascontiguousarray(y[:, 0])
    y1 = np.ascontiguousarray(y[:, 1])
    y2 = np.ascontiguousarray(y[:, 2])
    out = np.empty((n, k), np.int64)
    reduced = np.empty(m, np.float64)
    vals = np.empty(k, np.float64)
    ids = np.empty(k, np.int64)
    for i in range(n):
        a0, a1, a2 = x[i, 0], x[i, 1], x[i, 2]
        for j in range(m):
            e0, e1, e2 = a0 - y0[j], a1 - y1[j], a2 - y2[j]
            d = e0 * e0 + e1 * e1 + e2 * e2
            reduced[j] = (d if squared else np.sqrt(d)) + price[j]
        for t in range(k):
            vals[t] = np.inf
            ids[t] = -1
        worst = np.inf
        for j in range(m):
            v = reduced[j]
            if v < worst:
                t = k - 1
                while t > 0 and vals[t - 1] > v:
                    vals[t] = vals[t - 1]
                    ids[t] = ids[t - 1]
                    t -= 1
                vals[t] = v
                ids[t] = j
                worst = vals[k - 1]
        for t in range(k):
            out[i, t] = ids[t]
    return out


_KERNELS: dict[str, object] = {}


def _kernel(name: str):
    """The Numba-compiled kernel (compiled on first use, cached on disk), or None for ``"topk"`` and
    the plain Python function for the others when Numba is not installed."""
    if not _KERNELS:
        funcs = {"phase": _auction_phase, "unhappy": _unassign_unhappy, "candidates": _build_candidates,
                 "topk": _dense_topk}
        try:
            from numba import njit
        except ImportError:  # pragma: no cover - numba is a dependency
            _KERNELS.update(funcs, topk=None)
        else:
            _KERNELS.update({k: njit(cache=True, nogil=True)(f) for k, f in funcs.items()})
    return _KERNELS[name]


def _best_reduced(x: np.ndarray, y: np.ndarray, price: np.ndarray, k: int, squared: bool,
                  chunk: int = 2048) -> np.ndarray:
    """``[N, k]`` indices of the ``k`` smallest reduced costs ``c(x_i, y_j) + price_j`` over all ``j``
    (a dense ``O(N M)`` scan: Numba, or torch in row chunks of ``chunk x M`` without it)."""
    kernel = _kernel("topk")
    if kernel is not None:
        return kernel(x, y, price, k, squared)
    xt, yt, pt = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(price)  # pragma: no cover
    out = []  # pragma: no cover
    for start in range(0, len(x), chunk):  # pragma: no cover
        d = torch.cdist(xt[start: start + chunk], yt)
        reduced = (d.square_() if squared else d).add_(pt)
        out.append(reduced.topk(k, dim=1, largest=False).indices)
    return torch.cat(out).numpy().astype(np.int64, copy=False)  # pragma: no cover


def auction_assignment(x: np.ndarray, y: np.ndarray, *, squared: bool = False,
                       tolerance: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Near-optimal assignment between equal-size clouds by an epsilon-scaling auction.

    Args:
        x, y: ``[N, 3]`` float64 arrays.
        squared: cost ``|x_i - y_j|^2`` instead of ``|x_i - y_j|``.
        tolerance: final epsilon relative to the mean matched cost (the assignment is within
            ``tolerance`` (relative) of the best one over its candidate pairs).

    Returns:
        ``(match [N] int64, price [N] float64)``: ``y`` index per ``x_i`` (a permutation) and the
        objects' final prices (approximate dual potentials, ``-v_j``).
    """
    from scipy.spatial import cKDTree

    n = len(x)
    if n == 1:
        return np.zeros(1, dtype=np.int64), np.zeros(1)
    phase, unhappy, candidates = _kernel("phase"), _kernel("unhappy"), _kernel("candidates")
    tree = cKDTree(y)
    knn_x = tree.query(x, k=min(_KNN_X, n))[1].reshape(n, -1).astype(np.int64)
    knn_yy = tree.query(y, k=min(_KNN_PARTNER + 1, n))[1].reshape(n, -1)[:, 1:].astype(np.int64)
    knn_yy = np.ascontiguousarray(knn_yy)
    # A first perfect matching (rank pairing along the principal axis) keeps the candidate graph
    # matchable; the auction starts from scratch but may use these pairs.
    both = np.concatenate([x, y])
    centred = both - both.mean(axis=0)
    axis = np.linalg.svd(centred, full_matrices=False)[2][0]
    partner = np.empty(n, dtype=np.int64)
    partner[np.argsort(x @ axis, kind="stable")] = np.argsort(y @ axis, kind="stable")
    extent = float(np.linalg.norm(centred.max(axis=0) - centred.min(axis=0)))
    scale = extent * extent if squared else extent
    if scale == 0.0:  # all points coincide
        return partner, np.zeros(n)
    k_reduced = min(_TOPK_REDUCED, n)
    best_reduced = np.full((n, k_reduced), -1, dtype=np.int64)
    price = np.zeros(n)
    owner = np.full(n, -1, dtype=np.int64)
    obj_of = np.full(n, -1, dtype=np.int64)
    indptr, idx, cost = candidates(x, y, knn_x, knn_yy, partner, best_reduced, squared)
    first_cost = cost[indptr[:-1]]  # cost of each x_i's nearest y
    floor = 1e-9 * scale  # keeps eps meaningful next to the prices in float64
    eps = max(2.0 * float(first_cost.mean()), floor)
    refreshes = 0
    while True:
        phase(indptr, idx, cost, price, owner, obj_of, eps)
        diff = x - y[obj_of]
        sq = np.einsum("ij,ij->i", diff, diff)
        mean_cost = float(sq.mean() if squared else np.sqrt(sq).mean())
        final_eps = max(tolerance * mean_cost, floor)
        done = eps <= final_eps * (1 + 1e-12) or mean_cost == 0.0
        if done and refreshes == 2:
            return obj_of.copy(), price
        if done or (refreshes == 0 and eps <= _REFRESH_AT * mean_cost):
            best_reduced = _best_reduced(x, y, price, k_reduced, squared)
            refreshes = 2 if done else 1
        eps = max(eps / _THETA, final_eps)
        indptr, idx, cost = candidates(x, y, knn_x, knn_yy, obj_of, best_reduced, squared)
        unhappy(indptr, idx, cost, price, owner, obj_of, eps)
