"""Nearest-neighbour search: :func:`knn` and :func:`ball_query`.

Two exact back-ends give the same answer (up to ties between equidistant points):

- ``"kdtree"``: scipy's ``cKDTree`` built on the reference cloud and queried on all cores
  (``workers=-1``); CPU tensors only. It wins from a few hundred points on (``docs/points.md``).
- ``"brute"``: chunked brute force in torch (all pairwise distances of a chunk of queries, then
  ``topk``), on any device; the CUDA path and the reference of the tests.

``backend="auto"`` picks brute force for CUDA tensors and for tiny CPU problems
(``queries x references <= BRUTE_MAX_PAIRS``), the KD-tree otherwise.

Returned distances are recomputed in torch from the neighbours' coordinates, so they carry
gradients with respect to both the queries and the reference points (the neighbour *choice* is
piecewise constant and has none). Units are those of the coordinates (metres in geo3d).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch

from geo3d.errors import PointCloudError
from geo3d.points._inputs import PointBatch, PointsLike, as_point_batch, check_pair

Backend = Literal["auto", "kdtree", "brute"]

#: CPU problems with at most this many (query, reference) pairs per cloud use brute force under "auto".
BRUTE_MAX_PAIRS = 64 * 1024
#: Pairwise distances computed at once by the brute-force back-end (bounds its memory).
BRUTE_CHUNK_PAIRS = 4 * 1024 * 1024


class Neighbors(NamedTuple):
    """Result of :func:`knn` / :func:`ball_query`, nearest first.

    Attributes:
        distances: ``[B, Q, K]`` (or ``[Q, K]`` for an unbatched query) distance to each neighbour in
            the chosen norm (Euclidean for ``norm=2``, metres); ``inf`` where there is no neighbour.
        indices: ``[B, Q, K]`` / ``[Q, K]`` int64 row of each neighbour in its reference cloud; ``-1``
            where there is none (reference cloud smaller than ``k``, outside the ball, padding query).
    """

    distances: torch.Tensor
    indices: torch.Tensor


def _check_norm(norm: int) -> None:
    if norm not in (1, 2):
        raise PointCloudError(f"norm must be 1 (L1) or 2 (Euclidean), got {norm!r}")


def pairwise_distances(a: torch.Tensor, b: torch.Tensor, norm: int = 2) -> torch.Tensor:
    """All distances between two point sets, computed from coordinate differences (no
    ``|a|^2 + |b|^2 - 2ab`` expansion, so exact to rounding even for nearby points).

    Args:
        a: ``[..., P, D]`` points.
        b: ``[..., R, D]`` points.
        norm: 1 (L1) or 2 (Euclidean).

    Returns:
        ``[..., P, R]`` distances.
    """
    if a.is_cuda:  # the expansion is much faster on GPUs; the chosen pairs are re-measured exactly
        return torch.cdist(a, b, p=float(norm))
    return torch.cdist(a, b, p=float(norm), compute_mode="donot_use_mm_for_euclid_dist")


def _point_distance(query: torch.Tensor, neighbour: torch.Tensor, norm: int) -> torch.Tensor:
    """``[..., D]`` x ``[..., D]`` -> ``[...]`` distance with a gradient that is zero (not NaN) at 0."""
    diff = query - neighbour
    if norm == 1:
        return diff.abs().sum(-1)
    sq = diff.square().sum(-1)
    positive = sq > 0
    return torch.where(positive, torch.where(positive, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


def _brute_knn(query: torch.Tensor, ref: torch.Tensor, k: int, norm: int,
               radius: float | None) -> torch.Tensor:
    """Indices ``[Q, K']`` (``K' = min(k, R)``) of the nearest reference points, -1 outside ``radius``."""
    num_query, num_ref = query.shape[0], ref.shape[0]
    kk = min(k, num_ref)
    out = torch.full((num_query, kk), -1, dtype=torch.int64, device=query.device)
    if kk == 0 or num_query == 0:
        return out
    chunk = max(1, BRUTE_CHUNK_PAIRS // max(num_ref, 1))
    for start in range(0, num_query, chunk):
        dist = pairwise_distances(query[start:start + chunk], ref, norm)
        best, idx = dist.topk(kk, dim=1, largest=False, sorted=True)
        if radius is not None:
            idx = torch.where(best <= radius, idx, torch.full_like(idx, -1))
        out[start:start + chunk] = idx
    return out


def _kdtree_knn(query: torch.Tensor, ref: torch.Tensor, k: int, norm: int,
                radius: float | None) -> torch.Tensor:
    """Same contract as :func:`_brute_knn`, with scipy's cKDTree on all cores."""
    from scipy.spatial import cKDTree

    num_query, num_ref = query.shape[0], ref.shape[0]
    kk = min(k, num_ref)
    if kk == 0 or num_query == 0:
        return torch.full((num_query, kk), -1, dtype=torch.int64)
    ref_np = ref.detach().to(torch.float64).numpy()
    query_np = query.detach().to(torch.float64).numpy()
    # scipy's default (median-split, compact) build: the sliding-midpoint build is faster on uniform
    # clouds but degrades badly on dense surface scans (2.3x slower queries at 1M bunny points)
    tree = cKDTree(ref_np, leafsize=16)
    # scipy keeps neighbours strictly closer than distance_upper_bound; the ball is closed (<= radius)
    bound = np.inf if radius is None else float(np.nextafter(radius, np.inf))
    _, idx = tree.query(query_np, k=kk, p=norm, distance_upper_bound=bound, workers=-1)
    idx = np.asarray(idx, dtype=np.int64).reshape(num_query, kk)
    idx[idx >= num_ref] = -1  # scipy marks missing neighbours with index R
    return torch.from_numpy(idx)


def _choose_backend(backend: str, device: torch.device, pairs: int) -> str:
    if backend not in ("auto", "kdtree", "brute"):
        raise PointCloudError(f"backend must be 'auto', 'kdtree' or 'brute', got {backend!r}")
    if backend == "kdtree" and device.type != "cpu":
        raise PointCloudError(f"backend 'kdtree' needs CPU tensors, got {device}; use 'brute' or 'auto'")
    if backend != "auto":
        return backend
    return "brute" if device.type != "cpu" or pairs <= BRUTE_MAX_PAIRS else "kdtree"


def nearest_indices(q: PointBatch, r: PointBatch, k: int, norm: int = 2, radius: float | None = None,
                    backend: Backend = "auto") -> torch.Tensor:
    """Indices ``[B, Q, k]`` of the ``k`` nearest valid reference points of every query point
    (nearest first), -1 where there is none; no gradients. The building block of :func:`knn`,
    :func:`ball_query` and the Chamfer distance."""
    num_batch, num_query = q.points.shape[:2]
    q_lengths, r_lengths = q.lengths.tolist(), r.lengths.tolist()
    if num_batch == 1 and q_lengths[0] == num_query and r_lengths[0] >= k:  # one full cloud: no padding
        with torch.no_grad():
            chosen = _choose_backend(backend, q.points.device, num_query * r_lengths[0])
            search = _brute_knn if chosen == "brute" else _kdtree_knn
            return search(q.points[0], r.points[0, : r_lengths[0]], k, norm, radius).to(q.points.device)[None]
    out = torch.full((num_batch, num_query, k), -1, dtype=torch.int64, device=q.points.device)
    with torch.no_grad():
        for b in range(num_batch):
            nq, nr = q_lengths[b], r_lengths[b]
            if nq == 0 or nr == 0:
                continue
            query, ref = q.points[b, :nq], r.points[b, :nr]
            chosen = _choose_backend(backend, query.device, nq * nr)
            search = _brute_knn if chosen == "brute" else _kdtree_knn
            idx = search(query, ref, k, norm, radius)
            out[b, :nq, : idx.shape[1]] = idx.to(out.device)
    return out


def gather_neighbors(q: PointBatch, r: PointBatch, indices: torch.Tensor, norm: int = 2) -> Neighbors:
    """Distances ``[B, Q, K]`` (differentiable) of the neighbours ``indices [B, Q, K]`` (-1 -> inf)."""
    found = indices >= 0
    safe = indices.clamp(min=0)
    num_batch, num_query, k = indices.shape
    dim = r.points.shape[-1]
    if r.points.shape[1] == 0:
        neighbour = q.points.new_zeros((num_batch, num_query, k, dim))
    else:
        neighbour = torch.gather(r.points, 1, safe.reshape(num_batch, -1, 1).expand(-1, -1, dim))
        neighbour = neighbour.reshape(num_batch, num_query, k, dim)
    query = q.points[:, :, None, :]
    if not bool(found.all()):  # no neighbour (or a padding query, maybe NaN): distance 0, no gradient
        query = torch.where(q.valid[:, :, None, None], query, torch.zeros_like(query))
        neighbour = torch.where(found[..., None], neighbour, query.detach())
    dist = _point_distance(query, neighbour, norm)
    dist = torch.where(found, dist, torch.full_like(dist, float("inf")))
    return Neighbors(dist, indices)


def _finish(result: Neighbors, unbatched: bool) -> Neighbors:
    return Neighbors(result.distances[0], result.indices[0]) if unbatched else result


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise PointCloudError(f"k must be a positive integer, got {k!r}")


def knn(query: PointsLike, ref: PointsLike, k: int, query_lengths: torch.Tensor | Sequence[int] | None = None,
        ref_lengths: torch.Tensor | Sequence[int] | None = None, *, norm: int = 2,
        backend: Backend = "auto") -> Neighbors:
    """The ``k`` nearest reference points of every query point, nearest first.

    Args:
        query: ``[Q, D]`` points, a padded batch ``[B, Q, D]``, or a list of ``[Q_b, D]`` tensors.
        ref: reference points in the same form as ``query`` (same batch size ``B``).
        k: neighbours per query; when a reference cloud has fewer than ``k`` points the missing
            slots hold index -1 and distance ``inf``.
        query_lengths: ``[B]`` valid queries per cloud of a padded batch (rows beyond get -1 / inf).
        ref_lengths: ``[B]`` valid reference points per cloud (the padding is never returned).
        norm: 2 for Euclidean distance, 1 for L1 (Manhattan) distance.
        backend: ``"auto"``, ``"kdtree"`` (CPU) or ``"brute"`` (any device), see the module docstring.

    Returns:
        :class:`Neighbors` with ``distances`` and ``indices`` of shape ``[B, Q, k]`` (``[Q, k]`` for an
        unbatched query). Ties between equidistant reference points are broken arbitrarily.

    Raises:
        PointCloudError: bad shapes, NaN/inf coordinates, mismatched batches, ``k < 1``.
    """
    _check_k(k)
    _check_norm(norm)
    q = as_point_batch(query, query_lengths, name="query", dim=None)
    r = as_point_batch(ref, ref_lengths, name="ref", dim=None)
    check_pair(q, r, ("query", "ref"))
    indices = nearest_indices(q, r, int(k), norm, None, backend)
    return _finish(gather_neighbors(q, r, indices, norm), q.unbatched and r.unbatched)


def ball_query(query: PointsLike, ref: PointsLike, radius: float, k: int,
               query_lengths: torch.Tensor | Sequence[int] | None = None,
               ref_lengths: torch.Tensor | Sequence[int] | None = None, *, norm: int = 2,
               backend: Backend = "auto") -> Neighbors:
    """Up to ``k`` reference points within ``radius`` of every query point, nearest first.

    The ball is closed (``distance <= radius``). Unlike pytorch3d's ``ball_query``, which returns the
    first ``k`` points in index order that fall inside the ball, this returns the ``k`` *nearest* ones,
    so the result does not depend on the order of the reference cloud.

    Args:
        query: ``[Q, D]``, ``[B, Q, D]`` or a list of clouds, as in :func:`knn`.
        ref: reference points in the same form.
        radius: ball radius, in the units of the coordinates (metres); must be finite and >= 0.
        k: maximum neighbours per query; empty slots hold index -1 and distance ``inf``.
        query_lengths, ref_lengths, norm, backend: as in :func:`knn`.

    Returns:
        :class:`Neighbors` of shape ``[B, Q, k]`` (``[Q, k]`` unbatched).
    """
    _check_k(k)
    _check_norm(norm)
    if not isinstance(radius, (int, float)) or not np.isfinite(radius) or radius < 0:
        raise PointCloudError(f"radius must be a finite number >= 0, got {radius!r}")
    q = as_point_batch(query, query_lengths, name="query", dim=None)
    r = as_point_batch(ref, ref_lengths, name="ref", dim=None)
    check_pair(q, r, ("query", "ref"))
    indices = nearest_indices(q, r, int(k), norm, float(radius), backend)
    found = gather_neighbors(q, r, indices, norm)
    # the ball test on the re-measured distances keeps every back-end consistent at the boundary
    inside = found.distances.detach() <= radius
    result = Neighbors(torch.where(inside, found.distances, torch.full_like(found.distances, float("inf"))),
                       torch.where(inside, found.indices, torch.full_like(found.indices, -1)))
    return _finish(result, q.unbatched and r.unbatched)
