"""Proposal-network sampling (mip-NeRF 360's online distillation): small density fields choose where the
radiance field is evaluated, and are trained only to bound the radiance field's weights from above.

One ray, ``K`` proposal levels, counts ``S_0, ..., S_{K-1}`` and ``M`` final samples:

1. level 0 bins: ``S_0`` bins on ``[near, far]``, uniform in ``t`` (``spacing="uniform"``, the bins of
   :func:`~geo3d.render.samplers.uniform_samples`) or in ``1/t`` (``"disparity"``, those of
   :func:`~geo3d.render.samplers.disparity_samples`);
2. level ``k``: evaluate ``density_fns[k]`` at the bins' midpoints ``o + t d``, turn the densities into weights
   ``w_k`` (:func:`~geo3d.render.volume.render_weights_from_density`), and draw the next level's ``S_{k+1}`` bins
   (``M`` after the last level) by inverse-CDF sampling of ``w_k`` plus a padding
   (:func:`~geo3d.render.samplers.importance_samples`);
3. the radiance field is evaluated on the ``M`` final bins; :func:`interlevel_loss` then pulls every proposal
   histogram ``(t_k, w_k)`` up to an upper bound of the radiance field's histogram ``(t, w)``.

Resampling works in the normalised coordinate ``s`` in ``[0, 1]`` of the spacing (:func:`normalized_distance`:
``s = (t - near) / (far - near)``, or the same in ``1/t``), as mip-NeRF 360 and nerfacc do: inside a bin the new
samples are uniform in ``s``, so that with disparity spacing the padding keeps the disparity spacing instead of
spreading uniformly in ``t`` over the last, huge bins. The histograms and weights do not depend on the
coordinate (the loss compares overlaps only).

Padding: the resampling of level ``k`` adds ``padding / S_k`` (``padding = 0.01`` by default) to every bin's
weight, a total mass of ``padding`` per ray: at most ``padding / (opacity_k + padding)`` of the next samples
(about 1% for an opaque ray) keep the coarse spacing, so a surface that the proposal missed can still be found,
and empty rays keep the coarse spacing. nerfstudio adds 0.01 to every bin (``S_k`` times more, ~70% of the
samples for 256 bins), mip-NeRF 0.01 per bin after a max-blur, mip-NeRF 360 none (it dilates the histograms).

``t`` is in metres along unit directions; densities in 1/metre. Proposal fields are evaluated without gradient
unless ``requires_grad`` (the training steps that update them); the final bins never carry gradient. Malformed
input raises :class:`~geo3d.render.volume.RenderError` (:class:`ProposalConfig`: ``ValueError``) naming the
argument. ``docs/render.md`` has a usage example.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import NamedTuple

import torch
import torch.nn.functional as tF
from torch import Tensor, nn

from geo3d.nn.activations import trunc_exp
from geo3d.nn.encodings import GridEncoding
from geo3d.nn.mlp import MLP
from geo3d.render.samplers import (CONTRACTIONS, _check_alike, _check_count, _check_near_far, contract,
                                   importance_samples, uniform_samples)
from geo3d.render.volume import RenderError, _check_tensor, _raise_if_any, _value_problems, render_weights_from_density

SPACINGS = ("uniform", "disparity")
"""Values of the ``spacing`` argument: bins equal in ``t`` or in ``1/t``."""

Proposal = tuple[Tensor, Tensor, Tensor]  # one level's histogram (t_starts, t_ends, weights), each [R, S_k]


class ProposalSamples(NamedTuple):
    """Result of :func:`proposal_samples`.

    Attributes:
        t_starts, t_ends: ``[R, M]`` the final bins for the radiance field (metres along unit directions),
            contiguous and sorted, without gradient.
        proposals: per proposal level ``k``, ``(t_starts [R, S_k], t_ends [R, S_k], weights [R, S_k])``; the
            weights carry gradient to the proposal fields when sampled with ``requires_grad=True``.
    """

    t_starts: Tensor
    t_ends: Tensor
    proposals: list[Proposal]


# ------------------------------------------------------------------------------------------ spacing


def _check_spacing(spacing) -> str:
    if spacing not in SPACINGS:
        raise RenderError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    return spacing


def _distance_from_unit(s: Tensor, near: Tensor, far: Tensor, spacing: str) -> Tensor:
    """``s [..., K]`` in [0, 1] -> ``t``: ``lerp(near, far, s)`` or ``1 / lerp(1/near, 1/far, s)`` (exact ends)."""
    near_, far_ = near[..., None], far[..., None]
    if spacing == "uniform":
        return torch.lerp(near_, far_, s)
    return near_ * far_ / torch.lerp(far_, near_, s)  # the formula of disparity_samples


def normalized_distance(t: Tensor, near: Tensor, far: Tensor, spacing: str = "uniform") -> Tensor:
    """The normalised coordinate ``s`` in [0, 1] of distances ``t [..., K]`` on rays ``[near, far] [...]``.

    ``s = (t - near) / (far - near)`` (uniform) or ``(1/t - 1/near) / (1/far - 1/near)`` (disparity, mip-NeRF
    360's normalised ray distance); 0 on rays with ``far == near``. Differentiable. Pass ``s`` bins to
    :func:`distortion_loss` for mip-NeRF 360's scale-free distortion loss.
    """
    _check_spacing(spacing)
    _check_alike({"near": near, "far": far})
    _check_tensor(t, "t")
    if t.ndim == 0 or t.shape[:-1] != near.shape or t.dtype != near.dtype or t.device != near.device:
        raise RenderError(f"t must have shape {list(near.shape)} + [K] (those of near plus samples), dtype and "
                          f"device of near, got {list(t.shape)}, {t.dtype}, {t.device}")
    near_, far_ = near[..., None], far[..., None]
    if spacing == "disparity":
        t, near_, far_ = 1.0 / t, 1.0 / near_, 1.0 / far_
    span = far_ - near_
    safe = torch.where(span != 0, span, torch.ones_like(span))
    return torch.where(span != 0, (t - near_) / safe, torch.zeros_like(t))


# ----------------------------------------------------------------------------------------- sampling


def _densities(density_fn, t_starts: Tensor, t_ends: Tensor, origins: Tensor, directions: Tensor, level: int,
               check: bool) -> Tensor:
    """``density_fn`` at the bins' midpoints ``o + t d``: ``[..., S]`` in the dtype of ``t``."""
    midpoints = (t_starts + t_ends) / 2
    points = origins[..., None, :] + midpoints[..., None] * directions[..., None, :]
    flat = points.reshape(-1, 3)
    sigmas = density_fn(flat)
    name = f"density_fns[{level}]"
    if not isinstance(sigmas, Tensor) or not sigmas.is_floating_point() or sigmas.shape != (len(flat),):
        got = f"{list(sigmas.shape)} {sigmas.dtype}" if isinstance(sigmas, Tensor) else type(sigmas).__name__
        raise RenderError(f"{name} must return a float tensor [N] of densities for points [N, 3] (N={len(flat)}), "
                          f"got {got}")
    if check:
        _raise_if_any(_value_problems(sigmas, f"{name} output", 0.0, what=" (densities)"))
    return sigmas.to(t_starts.dtype).reshape(t_starts.shape)


def proposal_samples(origins: Tensor, directions: Tensor, near: Tensor, far: Tensor,
                     density_fns: Sequence[Callable[[Tensor], Tensor]], num_samples_per_proposal: Sequence[int],
                     num_samples: int, *, spacing: str = "uniform", stratified: bool = False,
                     generator: torch.Generator | None = None, requires_grad: bool = False, padding: float = 0.01,
                     check: bool = True) -> ProposalSamples:
    """Bins along rays drawn through a chain of proposal density fields (module docstring).

    Args:
        origins, directions: ``[R, 3]`` rays ``o + t d`` (unit directions: ``t`` in metres).
        near, far: ``[R]`` range of each ray, ``far >= near`` (``near > 0`` for disparity spacing).
        density_fns: ``K >= 1`` callables, points ``[N, 3]`` -> densities ``[N]`` (1/metre, >= 0), e.g. the fields
            of :class:`ProposalNetworkSampler`.
        num_samples_per_proposal: ``K`` bin counts ``S_k``: level ``k`` evaluates ``density_fns[k]`` on ``S_k``
            bins.
        num_samples: ``M``, the bins returned for the radiance field.
        spacing: ``"uniform"`` (bins equal in ``t``) or ``"disparity"`` (equal in ``1/t``) for level 0 and the
            coordinate of the resampling.
        stratified: jitter the level-0 bins and every resampling (training); False: deterministic.
        generator: random generator on the device of the rays (None: the global one).
        requires_grad: evaluate the density fields with gradient (the steps that train them with
            :func:`interlevel_loss`); otherwise under ``torch.no_grad()``.
        padding: total mass added to each level's weights before resampling, ``padding / S_k`` per bin.
        check: check values (NaN/inf, ``far < near``, negative densities); one device sync per level.

    Returns:
        ``ProposalSamples(t_starts [R, M], t_ends [R, M], proposals)``, ``proposals[k] = (t_starts, t_ends,
        weights)`` each ``[R, S_k]``; only the proposal weights may carry gradient.
    """
    _check_alike({"origins": origins, "directions": directions}, trailing=3)
    _check_near_far(near, far, check, positive=spacing == "disparity")
    spacing = _check_spacing(spacing)
    if near.shape != origins.shape[:-1] or near.dtype != origins.dtype or near.device != origins.device:
        raise RenderError(f"near must have the shape {list(origins.shape[:-1])}, dtype and device of origins "
                          f"[..., 3], got {list(near.shape)}, {near.dtype}, {near.device}")
    if isinstance(density_fns, str) or not isinstance(density_fns, Sequence) or not density_fns \
            or not all(callable(fn) for fn in density_fns):
        raise RenderError(f"density_fns must be a non-empty sequence of callables, got {density_fns!r}")
    if isinstance(num_samples_per_proposal, str) or not isinstance(num_samples_per_proposal, Sequence) \
            or len(num_samples_per_proposal) != len(density_fns):
        raise RenderError(f"num_samples_per_proposal must hold one count per density function "
                          f"(len(density_fns)={len(density_fns)}), got {num_samples_per_proposal!r}")
    counts = [_check_count(n, f"num_samples_per_proposal[{k}]") for k, n in enumerate(num_samples_per_proposal)]
    counts.append(_check_count(num_samples, "num_samples"))
    if isinstance(padding, bool) or not isinstance(padding, Real) or not 0 <= padding < math.inf:
        raise RenderError(f"padding must be a finite float >= 0, got {padding!r}")
    if check:
        _raise_if_any([*_value_problems(origins, "origins"), *_value_problems(directions, "directions")])

    near, far = near.detach(), far.detach()
    s_starts, s_ends = uniform_samples(torch.zeros_like(near), torch.ones_like(far), counts[0], stratified=stratified,
                                       generator=generator, check=False)
    proposals: list[Proposal] = []
    for level, density_fn in enumerate(density_fns):
        edges = _distance_from_unit(torch.cat([s_starts, s_ends[..., -1:]], -1), near, far, spacing)
        t_starts, t_ends = edges[..., :-1], edges[..., 1:]
        with torch.set_grad_enabled(requires_grad):
            sigmas = _densities(density_fn, t_starts, t_ends, origins.detach(), directions.detach(), level, check)
            weights = render_weights_from_density(t_starts, t_ends, sigmas, check=False).weights
        proposals.append((t_starts, t_ends, weights))
        s_starts, s_ends = importance_samples(s_starts, s_ends, weights, counts[level + 1], stratified=stratified,
                                              generator=generator, padding=padding / counts[level], check=False)
    edges = _distance_from_unit(torch.cat([s_starts, s_ends[..., -1:]], -1), near, far, spacing)
    return ProposalSamples(edges[..., :-1], edges[..., 1:], proposals)


# --------------------------------------------------------------------------------------------- losses


def _check_histogram(t_starts, t_ends, weights, prefix: str = "") -> None:
    _check_alike({f"{prefix}t_starts": t_starts, f"{prefix}t_ends": t_ends, f"{prefix}weights": weights})
    if t_starts.ndim == 0 or t_starts.shape[-1] == 0:
        raise RenderError(f"{prefix}t_starts must have shape [..., S] with S >= 1, got {list(t_starts.shape)}")


def outer_measure(t_starts: Tensor, t_ends: Tensor, proposal: Proposal) -> Tensor:
    """Sum of the proposal weights of the proposal bins that overlap each bin ``[t_start_i, t_end_i]``.

    Two bins overlap when they share more than a point (``a_start < b_end`` and ``a_end > b_start``). The proposal
    bins must be sorted along the ray and not overlap (``t_starts`` and ``t_ends`` non-decreasing), as the bins of
    :func:`proposal_samples` are: the overlapping ones are then the index range ``[#(ends <= t_start_i),
    #(starts < t_end_i))``, summed as a difference of a cumulative sum found by ``searchsorted``, O((S + S_k) log S_k).

    Args:
        t_starts, t_ends: ``[..., S]`` bins.
        proposal: ``(t_starts [..., S_k], t_ends [..., S_k], weights [..., S_k])``, the same leading dimensions.

    Returns:
        ``[..., S]`` outer measure, differentiable w.r.t. the proposal weights.
    """
    p_starts, p_ends, p_weights = proposal
    cumulative = tF.pad(torch.cumsum(p_weights, dim=-1), (1, 0))  # [..., S_k + 1]
    first = torch.searchsorted(p_ends.detach().contiguous(), t_starts.detach().contiguous(), right=True)
    stop = torch.searchsorted(p_starts.detach().contiguous(), t_ends.detach().contiguous(), right=False)
    return (cumulative.gather(-1, stop) - cumulative.gather(-1, first)).clamp_min(0.0)  # empty range: 0


def interlevel_loss(t_starts: Tensor, t_ends: Tensor, weights: Tensor, proposals: Sequence[Proposal]) -> Tensor:
    """mip-NeRF 360's proposal loss: every proposal histogram must bound the radiance field's from above.

    For each proposal ``(t_k, w_k)`` and each bin ``i`` of the radiance field, ``outer_i`` is the proposal weight
    of the proposal bins that overlap bin ``i`` (:func:`outer_measure`), and

        loss = sum_k mean_{rays, i} max(0, w_i - outer_i)^2 / (w_i + eps)

    with ``eps`` the machine epsilon of the dtype. The loss is 0 when every proposal holds at least the mass of
    the radiance field around each bin (a proposal equal to the field's histogram on the same bins, or coarser
    bins holding the summed weights), and grows when a proposal misses mass. ``weights`` (and all the bins) are
    detached: the loss trains the proposal fields only, never the radiance field.

    Args:
        t_starts, t_ends: ``[R, S]`` the radiance field's bins (usually ``ProposalSamples.t_starts/t_ends``).
        weights: ``[R, S]`` the radiance field's weights ``w_i``.
        proposals: ``ProposalSamples.proposals``: ``(t_starts, t_ends, weights)`` each ``[R, S_k]``, bins sorted
            and not overlapping. An empty sequence gives 0.

    Returns:
        Scalar loss in the dtype of ``weights``.
    """
    _check_histogram(t_starts, t_ends, weights)
    if isinstance(proposals, (str, Tensor)) or not isinstance(proposals, Sequence):
        raise RenderError(f"proposals must be a sequence of (t_starts, t_ends, weights), got {type(proposals)}")
    weights = weights.detach()
    eps = torch.finfo(weights.dtype).eps
    loss = weights.new_zeros(())
    for k, proposal in enumerate(proposals):
        if not isinstance(proposal, (tuple, list)) or len(proposal) != 3:
            raise RenderError(f"proposals[{k}] must be a tuple (t_starts, t_ends, weights), got {type(proposal)}")
        _check_histogram(*proposal, prefix=f"proposals[{k}] ")
        if proposal[0].shape[:-1] != t_starts.shape[:-1] or proposal[0].dtype != t_starts.dtype \
                or proposal[0].device != t_starts.device:
            raise RenderError(f"proposals[{k}] t_starts must have the leading shape {list(t_starts.shape[:-1])}, "
                              f"dtype and device of t_starts, got {list(proposal[0].shape)}, {proposal[0].dtype}, "
                              f"{proposal[0].device}")
        outer = outer_measure(t_starts, t_ends, proposal)
        loss = loss + ((weights - outer).clamp_min(0.0).square() / (weights + eps)).mean()
    return loss


def distortion_loss(t_starts: Tensor, t_ends: Tensor, weights: Tensor) -> Tensor:
    """mip-NeRF 360's distortion regulariser of each ray, in the units of the bins given.

        L = sum_{i,j} w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 (t_end_i - t_start_i),    m_i = (t_start_i + t_end_i) / 2

    It pulls the weights of a ray together into a compact set (few, short, close bins). With metric bins (``t``
    in metres) the loss is in metres and depends on the scene scale; mip-NeRF 360 applies it to normalised
    distances ``s`` in [0, 1] (its loss weight 0.01 assumes them): pass ``normalized_distance(t, near, far,
    spacing)`` bins for that. Computed in O(S) with exclusive cumulative sums (``|m_i - m_j|`` from the sorted
    midpoints), exact up to rounding; differentiable w.r.t. the bins and the weights.

    Args:
        t_starts, t_ends: ``[..., S]`` bins sorted along the ray (midpoints non-decreasing).
        weights: ``[..., S]`` weights.

    Returns:
        ``[...]`` per-ray loss (``.mean()`` for a scalar), in the dtype of the inputs.
    """
    _check_histogram(t_starts, t_ends, weights)
    midpoints = (t_starts + t_ends) / 2
    midpoints = midpoints - midpoints[..., :1].detach()  # shift-invariant: keeps the cumulative sums small
    weight_before = torch.cumsum(weights, dim=-1) - weights
    moment_before = torch.cumsum(weights * midpoints, dim=-1) - weights * midpoints
    inter = 2.0 * (weights * (midpoints * weight_before - moment_before)).sum(-1)  # i > j terms, doubled
    intra = (weights.square() * (t_ends - t_starts)).sum(-1) / 3.0
    return inter + intra


# ----------------------------------------------------------------------------------------- the module


def _positive_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= 1


@dataclass
class ProposalConfig:
    """Parameters of :class:`ProposalNetworkSampler` (nerfstudio's defaults for the sizes).

    Attributes:
        num_samples_per_proposal: bins per proposal level ``S_k``; one density field per level.
        num_samples: ``M``, the bins returned for the radiance field.
        spacing: ``"uniform"`` or ``"disparity"`` (unbounded scenes: use ``near > 0``).
        contraction: None (bounded: the fields span ``aabb`` and have zero density outside), ``"l2"`` or ``"linf"``
            (unbounded: points are contracted by :func:`~geo3d.render.samplers.contract` and the fields span the
            contracted box ``[-2, 2]^3``; scale the scene so that the foreground fits in the unit ball / cube).
        aabb: ``(x_min, y_min, z_min, x_max, y_max, z_max)`` in metres (ignored with a contraction).
        num_levels, features_per_level, base_resolution, log2_hashmap_size: the fields' ``GridEncoding``.
        max_resolutions: the finest grid resolution of each level's field (one per level).
        hidden_dim: width of the fields' one-hidden-layer MLP.
        padding: histogram padding of the resampling (module docstring).
    """

    num_samples_per_proposal: tuple[int, ...] = (128, 64)
    num_samples: int = 32
    spacing: str = "uniform"
    contraction: str | None = None
    aabb: tuple[float, ...] = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0)
    num_levels: int = 5
    features_per_level: int = 2
    base_resolution: int = 16
    max_resolutions: tuple[int, ...] = (128, 256)
    log2_hashmap_size: int = 17
    hidden_dim: int = 16
    padding: float = 0.01

    def check(self) -> ProposalConfig:
        """Raise ``ValueError`` naming the first bad field; return ``self``."""
        counts = self.num_samples_per_proposal
        if not isinstance(counts, (tuple, list)) or not counts or not all(_positive_int(n) for n in counts):
            raise ValueError(f"num_samples_per_proposal must be a non-empty tuple of positive ints, got {counts!r}")
        for name in ("num_samples", "num_levels", "features_per_level", "base_resolution", "hidden_dim"):
            if not _positive_int(getattr(self, name)):
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.spacing not in SPACINGS:
            raise ValueError(f"spacing must be one of {SPACINGS}, got {self.spacing!r}")
        if self.contraction not in (None, *CONTRACTIONS):
            raise ValueError(f"contraction must be None or one of {CONTRACTIONS}, got {self.contraction!r}")
        aabb = self.aabb
        finite = isinstance(aabb, (tuple, list)) and all(isinstance(v, Real) and math.isfinite(v) for v in aabb)
        if not finite or len(aabb) != 6 or not all(aabb[i] < aabb[i + 3] for i in (0, 1, 2)):
            raise ValueError(f"aabb must be 6 finite numbers (min xyz, max xyz) with min < max, got {aabb!r}")
        resolutions = self.max_resolutions
        if not isinstance(resolutions, (tuple, list)) or len(resolutions) != len(counts) \
                or not all(_positive_int(r) and r >= self.base_resolution for r in resolutions):
            raise ValueError(f"max_resolutions must hold one int >= base_resolution ({self.base_resolution}) per "
                             f"proposal level ({len(counts)}), got {resolutions!r}")
        if not _positive_int(self.log2_hashmap_size) or self.log2_hashmap_size > 30:
            raise ValueError(f"log2_hashmap_size must be an int in [1, 30], got {self.log2_hashmap_size!r}")
        if isinstance(self.padding, bool) or not isinstance(self.padding, Real) or not 0 <= self.padding < math.inf:
            raise ValueError(f"padding must be a finite float >= 0, got {self.padding!r}")
        return self


class ProposalDensityField(nn.Module):
    """A small density field: ``GridEncoding`` -> MLP (one hidden layer, ReLU) -> ``trunc_exp(raw - 1)``.

    The activation is Instant-NGP's truncated exponential (``exp`` with its gradient clamped at ``exp(15)``):
    densities span orders of magnitude from a few steps, as a proposal needs (``softplus`` grows only linearly).

    ``forward(points [N, 3] metres) -> [N]`` densities (1/metre) in the dtype of ``points``; zero outside the box
    ``bounds`` when there is no contraction.
    """

    def __init__(self, bounds: Sequence[Sequence[float]], contraction: str | None, *, num_levels: int,
                 features_per_level: int, base_resolution: int, max_resolution: int, log2_hashmap_size: int,
                 hidden_dim: int) -> None:
        super().__init__()
        self.contraction = contraction
        self.encoding = GridEncoding(num_levels=num_levels, features_per_level=features_per_level,
                                     base_resolution=base_resolution, max_resolution=max_resolution,
                                     log2_hashmap_size=log2_hashmap_size, bounds=bounds)
        self.mlp = MLP(self.encoding.out_dim, hidden_dim, 1, 1)

    def forward(self, points: Tensor) -> Tensor:
        if self.contraction is not None:
            points = contract(points, self.contraction)
        raw = self.mlp(self.encoding(points))[..., 0]
        sigmas = trunc_exp(raw - 1.0).to(points.dtype)
        if self.contraction is None:
            low, high = self.encoding.bounds.to(points.dtype)
            sigmas = sigmas * ((points >= low) & (points <= high)).all(-1)
        return sigmas


class ProposalNetworkSampler(nn.Module):
    """Proposal-network sampler: ``num_proposals`` :class:`ProposalDensityField` s and :func:`proposal_samples`.

    Train the fields with ``sampler.loss(...)`` (:func:`interlevel_loss`) on the radiance field's weights, sampled
    with ``requires_grad=True``; the radiance field's own loss does not reach them.

    Args:
        config: :class:`ProposalConfig` (None: the defaults); checked.
    """

    def __init__(self, config: ProposalConfig | None = None) -> None:
        super().__init__()
        self.config = (ProposalConfig() if config is None else config).check()
        cfg = self.config
        bounds = (tuple(cfg.aabb[:3]), tuple(cfg.aabb[3:])) if cfg.contraction is None else ((-2.0,) * 3, (2.0,) * 3)
        self.fields = nn.ModuleList(
            ProposalDensityField(bounds, cfg.contraction, num_levels=cfg.num_levels,
                                 features_per_level=cfg.features_per_level, base_resolution=cfg.base_resolution,
                                 max_resolution=resolution, log2_hashmap_size=cfg.log2_hashmap_size,
                                 hidden_dim=cfg.hidden_dim)
            for resolution in cfg.max_resolutions)

    @property
    def num_proposals(self) -> int:
        """Number of proposal levels (density fields)."""
        return len(self.fields)

    def sample(self, origins: Tensor, directions: Tensor, near: Tensor, far: Tensor, *, stratified: bool = False,
               generator: torch.Generator | None = None, requires_grad: bool = False) -> ProposalSamples:
        """:func:`proposal_samples` with this sampler's fields and config (``[R, 3]`` rays, ``[R]`` near/far)."""
        cfg = self.config
        return proposal_samples(origins, directions, near, far, list(self.fields), cfg.num_samples_per_proposal,
                                cfg.num_samples, spacing=cfg.spacing, stratified=stratified, generator=generator,
                                requires_grad=requires_grad, padding=cfg.padding)

    forward = sample

    def loss(self, t_starts: Tensor, t_ends: Tensor, weights: Tensor, proposals: Sequence[Proposal]) -> Tensor:
        """:func:`interlevel_loss` of the radiance field's ``[R, M]`` bins and weights against ``proposals``."""
        return interlevel_loss(t_starts, t_ends, weights, proposals)
