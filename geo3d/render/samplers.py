"""Ray samplers and scene contraction: where along a ray to evaluate a field (the NeRF issue, issue 8).

Samplers return intervals ``[t_start, t_end]`` along rays ``o + t d`` in the padded layout of
:mod:`geo3d.render.volume` (``[..., S]``, contiguous: ``t_starts[..., i + 1] == t_ends[..., i]``, sorted), ready
for :func:`~geo3d.render.volume.render_rays`; ``t`` is in metres for unit directions.

* :func:`uniform_samples`: ``S`` equal bins in ``[near, far]`` (bounded scenes);
* :func:`disparity_samples`: bins equal in ``1/t`` (unbounded scenes, mip-NeRF 360's spacing);
* :func:`importance_samples`: inverse-CDF sampling of the piecewise-constant PDF given by per-interval weights
  (the hierarchical / proposal sampler of NeRF and mip-NeRF 360);
* :func:`packed_from_padded`: keep the masked samples (after empty-space skipping) as packed ``[N]`` samples;
* :func:`ray_aabb_intersect`: where rays enter and leave a box (slab method), to set ``near`` and ``far``;
* :func:`contract` / :func:`uncontract`: mip-NeRF 360's scene contraction (L2) and its L-inf variant.

Stratified sampling moves each interior bin edge uniformly by up to half a bin (the ends stay at ``near`` and
``far``): the bins stay contiguous and cover ``[near, far]``, and each bin's midpoint, where a field is evaluated,
stays inside its regular stratum. Pure PyTorch, any device; uniform and disparity samples and the contraction are
differentiable, importance samples are not (stop-gradient, as in NeRF and mip-NeRF 360). Malformed input raises
:class:`~geo3d.render.volume.RenderError` naming the argument; ``check=False`` skips the value checks (one device
sync each call).
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import NamedTuple

import torch
import torch.nn.functional as tF
from torch import Tensor

from geo3d.render.volume import RenderError, _check_tensor, _raise_if_any, _value_problems

CONTRACTIONS = ("l2", "linf")
"""Values of the ``kind`` argument of :func:`contract` and :func:`uncontract`."""


class Intervals(NamedTuple):
    """Padded samples along rays: ``t_starts [..., S]`` and ``t_ends [..., S]``, contiguous and sorted."""

    t_starts: Tensor
    t_ends: Tensor


class PackedIntervals(NamedTuple):
    """Packed samples: ``t_starts [N]``, ``t_ends [N]`` and ``ray_indices [N]`` (int64, sorted)."""

    t_starts: Tensor
    t_ends: Tensor
    ray_indices: Tensor


class AABBIntersection(NamedTuple):
    """Where rays cross a box (see :func:`ray_aabb_intersect`).

    Attributes:
        t_near: ``[...]`` where the ray enters the box (``near`` when it starts inside), in units of ``t``.
        t_far: ``[...]`` where it leaves the box (at most ``far``).
        hit: ``[...]`` bool, whether ``t_far > t_near``; misses get ``t_near = t_far = near``.
    """

    t_near: Tensor
    t_far: Tensor
    hit: Tensor


# --------------------------------------------------------------------------------------------- checks


def _check_count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise RenderError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_alike(tensors: dict, trailing: int | None = None) -> None:
    """Floating tensors of one shape, dtype and device (``trailing``: the size of the last dimension)."""
    first_name, first = next(iter(tensors.items()))
    for name, tensor in tensors.items():
        _check_tensor(tensor, name)
        if tensor.shape != first.shape or tensor.dtype != first.dtype or tensor.device != first.device:
            raise RenderError(f"{name} must match {first_name} (shape {list(first.shape)}, {first.dtype}, "
                              f"{first.device}), got {list(tensor.shape)}, {tensor.dtype}, {tensor.device}")
    if trailing is not None and (first.ndim == 0 or first.shape[-1] != trailing):
        raise RenderError(f"{first_name} must have shape [..., {trailing}], got {list(first.shape)}")


def _check_near_far(near: Tensor, far: Tensor, check: bool, positive: bool) -> None:
    _check_alike({"near": near, "far": far})
    if check:
        problems = [*_value_problems(near, "near"), *_value_problems(far, "far")]
        if positive and near.numel():
            problems.append(("near must be > 0 (disparity samples are uniform in 1/t)", near.detach().amin() <= 0))
        if near.numel():
            problems.append(("far must be >= near", (far.detach() < near.detach()).any()))
        _raise_if_any(problems)


# ------------------------------------------------------------------------------------ uniform bins


def _unit_edges(batch_shape, num_samples: int, stratified: bool, generator, like: Tensor) -> Tensor:
    """``[*batch_shape, S + 1]`` bin edges ``k / S`` in [0, 1]; stratified: interior edges moved uniformly by up to
    half a bin, so that edge ``k`` lies in ``[(k - 1/2) / S, (k + 1/2) / S)`` and the edges stay sorted."""
    steps = torch.arange(num_samples + 1, dtype=like.dtype, device=like.device)
    edges = (steps / num_samples).expand(*batch_shape, num_samples + 1)
    if stratified and num_samples > 1:
        jitter = torch.rand(*batch_shape, num_samples - 1, generator=generator, dtype=like.dtype, device=like.device)
        interior = (steps[1:-1] + jitter - 0.5) / num_samples
        edges = torch.cat([edges[..., :1], interior, edges[..., -1:]], dim=-1)
    return edges


def uniform_samples(near: Tensor, far: Tensor, num_samples: int, *, stratified: bool = False,
                    generator: torch.Generator | None = None, check: bool = True) -> Intervals:
    """``S`` equal bins in ``[near, far]`` per ray.

    Args:
        near, far: ``[...]`` (usually ``[R]``) start and end of each ray's range, ``far >= near``, finite.
        num_samples: ``S``, the number of bins.
        stratified: move the interior edges by up to half a bin at random (module docstring): the bins stay
            contiguous and cover ``[near, far]``; bin ``i``'s midpoint stays in ``near + [i, i + 1] (far - near) / S``.
        generator: random generator on the device of ``near`` (None: the global one).
        check: check values (NaN/inf, ``far < near``); one device sync.

    Returns:
        ``Intervals(t_starts [..., S], t_ends [..., S])``: two views of the ``S + 1`` edges, so that
        ``t_starts[..., i + 1] == t_ends[..., i]`` exactly, ``t_starts[..., 0] == near`` and
        ``t_ends[..., -1] == far``; differentiable w.r.t. ``near`` and ``far``.
    """
    _check_near_far(near, far, check, positive=False)
    num_samples = _check_count(num_samples, "num_samples")
    unit = _unit_edges(near.shape, num_samples, stratified, generator, near)
    edges = torch.lerp(near[..., None], far[..., None], unit)  # exact at both ends
    return Intervals(edges[..., :-1], edges[..., 1:])


def disparity_samples(near: Tensor, far: Tensor, num_samples: int, *, stratified: bool = False,
                      generator: torch.Generator | None = None, check: bool = True) -> Intervals:
    """``S`` bins equal in disparity ``1/t`` between ``near`` and ``far`` (dense near the camera, sparse far away:
    mip-NeRF 360's spacing for unbounded scenes).

    Edge ``k`` is ``t_k = 1 / lerp(1/near, 1/far, k/S)``, computed as ``near far / lerp(far, near, k/S)``.

    Args:
        near, far: ``[...]`` (usually ``[R]``), ``0 < near <= far``, finite (a large ``far`` such as 1e3 m
            stands for infinity).
        num_samples, stratified, generator, check: as in :func:`uniform_samples`; stratified moves the edges in
            disparity, so each bin's midpoint in ``1/t`` stays in its stratum.

    Returns:
        ``Intervals(t_starts [..., S], t_ends [..., S])``, contiguous, ``t_starts[..., 0] == near`` and
        ``t_ends[..., -1] == far``; differentiable w.r.t. ``near`` and ``far``.
    """
    _check_near_far(near, far, check, positive=True)
    num_samples = _check_count(num_samples, "num_samples")
    unit = _unit_edges(near.shape, num_samples, stratified, generator, near)[..., 1:-1]
    near_, far_ = near[..., None], far[..., None]
    interior = near_ * far_ / torch.lerp(far_, near_, unit)  # 1/t = (1 - u)/near + u/far
    edges = torch.cat([near_, interior, far_], dim=-1)
    return Intervals(edges[..., :-1], edges[..., 1:])


# ---------------------------------------------------------------------------------------- importance


def _check_sorted_bins(t_starts: Tensor, t_ends: Tensor) -> list[tuple[str, Tensor]]:
    """Bins of positive length must follow each other along the ray without overlapping (zero-length bins,
    e.g. padding, hold no probability and may sit anywhere)."""
    if t_starts.shape[-1] < 2 or t_starts.numel() == 0:
        return []
    real = t_ends > t_starts
    ends = torch.where(real, t_ends, torch.full_like(t_ends, -math.inf))
    previous_end = tF.pad(torch.cummax(ends, dim=-1).values[..., :-1], (1, 0), value=-math.inf)
    overlap = (real & (t_starts < previous_end)).any()
    return [("t_starts must not precede the t_end of an earlier interval (intervals sorted, not overlapping)",
             overlap)]


def importance_samples(t_starts: Tensor, t_ends: Tensor, weights: Tensor, num_samples: int, *,
                       stratified: bool = False, generator: torch.Generator | None = None, padding: float = 0.01,
                       check: bool = True) -> Intervals:
    """Inverse-CDF sampling of the piecewise-constant PDF that gives interval ``i`` the probability mass
    ``w_i + padding`` (normalised per ray), spread evenly over ``[t_start_i, t_end_i]``.

    The unit edges of :func:`uniform_samples` (``k / M``, interior ones jittered when stratified) are mapped through
    the inverse CDF, so the ``M + 1`` new edges crowd where the weights are, the first and last ones are the start
    of the first and the end of the last interval that holds mass, and gaps between the input intervals get no
    samples (a new interval may span a gap). ``padding`` mixes in a share of the coarse sampling, so that every
    interval keeps some samples and a ray whose weights are all zero falls back to spreading its samples evenly over
    its intervals (uniformly in ``t`` for uniform bins, in disparity for disparity bins). Zero-length intervals
    (padding of short rays) hold no mass.

    Args:
        t_starts, t_ends: ``[..., S]`` (usually ``[R, S]``) intervals, sorted along each ray, not overlapping
            (they need not be contiguous), ``t_ends >= t_starts``.
        weights: ``[..., S]`` non-negative weights (usually ``render_weights_from_density(...).weights``).
        num_samples: ``M``, the number of new intervals.
        stratified, generator: as in :func:`uniform_samples`.
        padding: non-negative mass added to every interval of positive length (mip-NeRF and nerfstudio use
            0.01, NeRF 1e-5).
        check: check values (NaN/inf, negative weights, order of the intervals); one device sync.

    Returns:
        ``Intervals(t_starts [..., M], t_ends [..., M])``, contiguous and sorted, without gradient.
    """
    _check_alike({"t_starts": t_starts, "t_ends": t_ends, "weights": weights})
    if t_starts.ndim == 0 or t_starts.shape[-1] == 0:
        raise RenderError(f"t_starts must have shape [..., S] with S >= 1, got {list(t_starts.shape)}")
    num_samples = _check_count(num_samples, "num_samples")
    if isinstance(padding, bool) or not isinstance(padding, Real) or not 0 <= padding < math.inf:
        raise RenderError(f"padding must be a finite float >= 0, got {padding!r}")
    t_starts, t_ends, weights = t_starts.detach(), t_ends.detach(), weights.detach()
    if check:
        lengths_ok = ("t_ends must be >= t_starts", (t_ends < t_starts).any())
        _raise_if_any([*_value_problems(t_starts, "t_starts"), *_value_problems(t_ends, "t_ends"), lengths_ok,
                       *_value_problems(weights, "weights", 0.0, what=" (sample weights)"),
                       *_check_sorted_bins(t_starts, t_ends)])
    real = (t_ends > t_starts).to(weights.dtype)
    masses = (weights + padding) * real
    fallback = torch.where(real.sum(-1, keepdim=True) > 0, real, torch.ones_like(real))
    masses = torch.where(masses.sum(-1, keepdim=True) > 0, masses, fallback)
    cumulative = torch.cumsum(masses, dim=-1)
    cdf = cumulative / cumulative[..., -1:]  # [..., S]: the CDF at each t_end, exactly 1 from the last mass on
    cdf_before = tF.pad(cdf[..., :-1], (1, 0))  # at each t_start
    unit = _unit_edges(t_starts.shape[:-1], num_samples, stratified, generator, t_starts).contiguous()
    # interval of each u: the first whose CDF at its end exceeds u (it holds mass); u = 1 takes the last with mass
    index = torch.searchsorted(cdf, unit, right=True)
    last_with_mass = torch.searchsorted(cdf, torch.ones_like(unit[..., :1]))
    index = torch.minimum(index, last_with_mass)
    low, high = cdf_before.gather(-1, index), cdf.gather(-1, index)
    fraction = ((unit - low) / (high - low)).clamp(0.0, 1.0)  # high > low: the interval holds mass
    edges = torch.lerp(t_starts.gather(-1, index), t_ends.gather(-1, index), fraction)
    edges = torch.cummax(edges, dim=-1).values  # sorted despite rounding at interval boundaries
    return Intervals(edges[..., :-1], edges[..., 1:])


# ------------------------------------------------------------------------------------------ layouts


def packed_from_padded(t_starts: Tensor, t_ends: Tensor, mask: Tensor) -> PackedIntervals:
    """Keep the samples where ``mask`` is true (e.g. not in empty space), as packed samples in ray order.

    Args:
        t_starts, t_ends: ``[..., S]`` (usually ``[R, S]``) padded samples.
        mask: ``[..., S]`` bool, the samples to keep.

    Returns:
        ``PackedIntervals(t_starts [N], t_ends [N], ray_indices [N])``: ``N = mask.sum()``, each ray's samples
        consecutive and in their order, ``ray_indices`` int64 sorted, indexing the flattened leading dimensions
        (``n_rays = t_starts.shape[:-1].numel()``). Other per-sample tensors pack the same way: ``sigmas[mask]``.
        Differentiable w.r.t. ``t_starts`` and ``t_ends``.
    """
    _check_alike({"t_starts": t_starts, "t_ends": t_ends})
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise RenderError(f"mask must be a bool tensor, got {getattr(mask, 'dtype', type(mask).__name__)}")
    if t_starts.ndim == 0 or mask.shape != t_starts.shape or mask.device != t_starts.device:
        raise RenderError(f"mask must have the shape [..., S] of t_starts {list(t_starts.shape)} on "
                          f"{t_starts.device}, got {list(mask.shape)} on {mask.device}")
    rows = mask.reshape(t_starts.shape[:-1].numel(), t_starts.shape[-1])
    ray_indices = torch.nonzero(rows, as_tuple=True)[0]
    return PackedIntervals(t_starts[mask], t_ends[mask], ray_indices)


# --------------------------------------------------------------------------------------- ray and box


def ray_aabb_intersect(origins: Tensor, directions: Tensor, aabb: Tensor, *, near: Tensor | float = 0.0,
                       far: Tensor | float = math.inf, check: bool = True) -> AABBIntersection:
    """Where rays ``o + t d`` (``t >= near``) enter and leave an axis-aligned box, by the slab method.

    Directions may have any non-zero length (``t`` is then in units of ``|d|``; metres for unit directions).
    A ray that starts inside the box enters at ``near``; a direction component of 0 (a ray parallel to a pair of
    faces) keeps the ray inside that slab forever when its origin is in the slab (faces included) and outside
    otherwise. The box is closed: a ray that runs along a face hits it, one that only touches an edge or a corner
    (``t_far == t_near``) misses.

    Args:
        origins, directions: ``[..., 3]`` (usually ``[R, 3]``).
        aabb: ``[6]`` box ``(x_min, y_min, z_min, x_max, y_max, z_max)`` (nerfacc's order), min < max; a
            sequence of 6 numbers is accepted.
        near, far: float or ``[...]`` tensor, the part of the ray to consider (``near`` finite).
        check: check values (NaN/inf, zero directions, an empty box); one device sync.

    Returns:
        ``AABBIntersection(t_near [...], t_far [...], hit [...])``; misses get ``t_near = t_far = near``.
        Differentiable w.r.t. ``origins``, ``directions`` and ``aabb`` where it hits.
    """
    _check_alike({"origins": origins, "directions": directions}, trailing=3)
    if not isinstance(aabb, Tensor):
        try:
            aabb = torch.as_tensor(aabb, dtype=origins.dtype, device=origins.device)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise RenderError(f"aabb must be a tensor or a sequence of 6 numbers, got {aabb!r}") from exc
    _check_tensor(aabb, "aabb")
    if aabb.shape != (6,) or aabb.device != origins.device:
        raise RenderError(f"aabb must have shape [6] (min xyz, max xyz) on {origins.device}, "
                          f"got {list(aabb.shape)} on {aabb.device}")
    near = torch.as_tensor(near, dtype=origins.dtype, device=origins.device)
    far = torch.as_tensor(far, dtype=origins.dtype, device=origins.device)
    if check:
        problems = [*_value_problems(origins, "origins"), *_value_problems(directions, "directions"),
                    *_value_problems(aabb, "aabb"), *_value_problems(near, "near"),
                    ("aabb must have min < max on every axis (x_min, y_min, z_min, x_max, y_max, z_max)",
                     (aabb[:3] >= aabb[3:]).any())]
        if directions.numel():
            problems.append(("directions must be non-zero", (directions.detach() == 0).all(-1).any()))
        _raise_if_any(problems)
    box_min, box_max = aabb[:3], aabb[3:]
    moving = directions != 0
    safe = torch.where(moving, directions, torch.ones_like(directions))  # no 0/0: finite gradients
    t_min_face, t_max_face = (box_min - origins) / safe, (box_max - origins) / safe
    inf = origins.new_tensor(math.inf)
    in_slab = (origins >= box_min) & (origins <= box_max)
    enter = torch.where(moving, torch.minimum(t_min_face, t_max_face), torch.where(in_slab, -inf, inf))
    leave = torch.where(moving, torch.maximum(t_min_face, t_max_face), torch.where(in_slab, inf, -inf))
    t_near = torch.maximum(enter.amax(dim=-1), near)
    t_far = torch.minimum(leave.amin(dim=-1), far)
    hit = t_far > t_near
    near = near.expand_as(t_near)
    return AABBIntersection(torch.where(hit, t_near, near), torch.where(hit, t_far, near), hit)


# ---------------------------------------------------------------------------------------- contraction


def _clamped_norm(points: Tensor, kind: str) -> Tensor:
    """``[..., 1]`` L2 or L-inf norm, clamped to >= 1 (before the square root: finite gradients at 0)."""
    if kind not in CONTRACTIONS:
        raise RenderError(f"kind must be one of {CONTRACTIONS}, got {kind!r}")
    if kind == "l2":
        return points.square().sum(-1, keepdim=True).clamp_min(1.0).sqrt()
    return points.abs().amax(-1, keepdim=True).clamp_min(1.0)


def contract(points: Tensor, kind: str = "l2") -> Tensor:
    """mip-NeRF 360's scene contraction: ``x`` if ``|x| <= 1``, else ``(2 - 1/|x|) x/|x|``.

    Maps all of R^3 into the ball (``kind="l2"``) or the cube (``"linf"``, ``|x| = max_i |x_i|``, the variant of
    Instant-NGP / nerfacc) of radius 2, keeping the unit ball (cube) unchanged: scale the scene first so that the
    foreground fits in it. Continuous with a continuous first derivative at ``|x| = 1``; points at infinity reach
    the radius 2.

    Args:
        points: ``[..., 3]`` points (usually ``[N, 3]``), scene units divided by the foreground radius.
        kind: ``"l2"`` or ``"linf"``.

    Returns:
        ``[..., 3]`` contracted points, norm < 2; differentiable.
    """
    _check_alike({"points": points}, trailing=3)
    norm = _clamped_norm(points, kind)
    return points * ((2.0 - 1.0 / norm) / norm)


def uncontract(points: Tensor, kind: str = "l2", *, check: bool = True) -> Tensor:
    """Inverse of :func:`contract`: ``y`` if ``|y| <= 1``, else ``y / (|y| (2 - |y|))``.

    Args:
        points: ``[..., 3]`` contracted points, norm < 2 (in the norm of ``kind``).
        kind: ``"l2"`` or ``"linf"``.
        check: check that the norms are below 2 and finite; one device sync.

    Returns:
        ``[..., 3]`` points with ``contract(uncontract(y)) == y``; differentiable.
    """
    _check_alike({"points": points}, trailing=3)
    norm = _clamped_norm(points, kind)
    if check and points.numel():
        _raise_if_any([*_value_problems(points, "points"),
                       (f"points must have {kind} norm < 2 (the contracted space)", norm.detach().amax() >= 2)])
    return points / (norm * (2.0 - norm))
