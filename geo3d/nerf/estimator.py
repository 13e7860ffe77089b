"""Empty-space skipping for ray marching: an occupancy grid kept up to date from the field's density.

:class:`OccupancyGridEstimator` is geo3d's CPU counterpart of nerfacc's ``OccGridEstimator`` (whose
sampling is a CUDA kernel): a ``resolution^3`` grid over the scene box holding, per cell, an exponential
moving average of the alpha ``1 - exp(-sigma * step)`` the field gives at random points of the cell; a
cell is occupied while that value is at least ``min(threshold, mean over cells)``.

Sampling marches every ray through the box at a fixed step (``step_size`` metres, a random offset per
ray when ``stratified``), restricted to the box around the occupied cells, and keeps the steps whose
midpoint falls in an occupied cell. With a ``density_fn`` it then drops, like nerfacc, the samples whose
alpha is below ``alpha_threshold`` and those behind a transmittance below ``early_stop_eps`` (evaluated
without gradients: the pruned samples are those that contribute almost nothing to the image).

Samples come out packed: ``ray_indices [N]`` (sorted), ``t_starts [N]``, ``t_ends [N]`` in metres along
unit directions, ready for :func:`geo3d.render.render_rays`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from geo3d.nn.grids import check_box
from geo3d.render import packed_exclusive_cumsum, ray_aabb_intersect

DensityFn = Callable[[Tensor], Tensor]
"""``density_fn(x [N, 3] world points in metres) -> [N]`` density in 1/m."""


class PackedSamples(NamedTuple):
    """Packed ray samples: ``ray_indices [N]`` int64 (sorted), ``t_starts [N]``, ``t_ends [N]`` (metres)."""

    ray_indices: Tensor
    t_starts: Tensor
    t_ends: Tensor


class OccupancyGridEstimator(nn.Module):
    """A binary occupancy grid over ``aabb`` for sampling rays in occupied space only.

    Args:
        aabb: ``[6]`` box (min xyz, max xyz) in metres.
        resolution: cells per axis.

    State (buffers, saved with checkpoints): ``occupancy [R^3]`` the running alpha per cell (cell
    ``i + R (j + R k)``), ``binary [R^3]`` bool.
    """

    def __init__(self, aabb: Sequence[float] | Tensor, resolution: int = 128) -> None:
        super().__init__()
        aabb = check_box(aabb, "aabb").float()
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
            raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}")
        self.resolution = resolution
        self.register_buffer("aabb", aabb)
        self.register_buffer("occupancy", torch.zeros(resolution**3))
        self.register_buffer("binary", torch.ones(resolution**3, dtype=torch.bool))

    @property
    def cell_size(self) -> Tensor:
        """``[3]`` cell edge lengths in metres."""
        return (self.aabb[3:] - self.aabb[:3]) / self.resolution

    def cell_index(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x [..., 3]`` -> ``(cell [...] int64, inside [...] bool)`` (outside points get a clamped cell)."""
        cell = ((x - self.aabb[:3]) / self.cell_size).floor().long()
        inside = ((cell >= 0) & (cell < self.resolution)).all(dim=-1)
        cell = cell.clamp(0, self.resolution - 1)
        R = self.resolution
        return cell[..., 0] + R * (cell[..., 1] + R * cell[..., 2]), inside

    def _cell_centres(self, cells: Tensor, jitter: bool, generator=None) -> Tensor:
        R = self.resolution
        ijk = torch.stack((cells % R, (cells // R) % R, cells // (R * R)), dim=-1).to(self.aabb.dtype)
        offset = (torch.rand(ijk.shape, generator=generator, device=ijk.device, dtype=ijk.dtype)
                  if jitter else torch.full_like(ijk, 0.5))
        return self.aabb[:3] + (ijk + offset) * self.cell_size

    @torch.no_grad()
    def update(self, step: int, density_fn: DensityFn, step_size: float, *, threshold: float = 0.01,
               decay: float = 0.95, warmup_steps: int = 256, chunk: int = 1 << 17, generator=None) -> None:
        """Refresh the grid (call every few training steps).

        Before ``warmup_steps`` every cell is evaluated; after, a quarter of the cells drawn at random plus
        up to as many occupied cells. Each chosen cell takes ``max(decay * old, alpha at a random point
        of the cell)`` with ``alpha = 1 - exp(-sigma * step_size)``.
        """
        n = self.resolution**3
        device = self.occupancy.device
        if step < warmup_steps:
            cells = torch.arange(n, device=device)
        else:
            cells = torch.randint(0, n, (n // 4,), device=device, generator=generator)
            occupied = torch.nonzero(self.binary).squeeze(1)
            if len(occupied) > n // 4:
                occupied = occupied[torch.randint(0, len(occupied), (n // 4,), device=device, generator=generator)]
            cells = torch.cat([cells, occupied])
        points = self._cell_centres(cells, jitter=True, generator=generator)
        sigma = torch.cat([density_fn(part).float() for part in points.split(chunk)])
        alpha = -torch.expm1(-sigma.clamp_min(0) * step_size)
        self.occupancy.index_put_((cells,), torch.maximum(self.occupancy[cells] * decay, alpha))
        cutoff = min(float(self.occupancy.mean()), threshold)
        self.binary = self.occupancy >= cutoff

    def occupied_box(self) -> Tensor:
        """``[6]`` the box around the occupied cells (the whole box when none is)."""
        cells = torch.nonzero(self.binary).squeeze(1)
        if len(cells) == 0:
            return self.aabb.clone()
        R = self.resolution
        ijk = torch.stack((cells % R, (cells // R) % R, cells // (R * R)), dim=-1)
        low = self.aabb[:3] + ijk.min(0).values * self.cell_size
        high = self.aabb[:3] + (ijk.max(0).values + 1) * self.cell_size
        return torch.cat([low, high])

    @torch.no_grad()
    def sample(self, origins: Tensor, directions: Tensor, step_size: float, *, near: float = 0.0,
               far: float = float("inf"), stratified: bool = False, density_fn: DensityFn | None = None,
               alpha_threshold: float = 0.0, early_stop_eps: float = 1e-4, generator=None) -> PackedSamples:
        """Samples of ``origins, directions [R, 3]`` (unit directions) in occupied space.

        Returns :class:`PackedSamples` (``t`` in metres); intervals are ``step_size`` long except where the
        ray enters or leaves the box. Rays that miss every occupied cell get no sample.
        """
        if origins.ndim != 2 or origins.shape[1] != 3 or directions.shape != origins.shape:
            raise ValueError(f"origins and directions must both be [R, 3], got {list(origins.shape)} and "
                             f"{list(directions.shape)}")
        if not step_size > 0:
            raise ValueError(f"step_size must be > 0, got {step_size}")
        hit = ray_aabb_intersect(origins, directions, self.occupied_box().to(origins.dtype), near=near, far=far,
                                 check=False)
        t_near, t_far = hit.t_near, torch.where(hit.hit, hit.t_far, hit.t_near)
        span = float((t_far - t_near).max()) if len(origins) else 0.0
        empty = origins.new_zeros(0)
        if span <= 0:
            return PackedSamples(empty.long(), empty, empty)
        num_steps = int(span / step_size) + 2
        offset = (torch.rand(len(origins), 1, generator=generator, device=origins.device, dtype=origins.dtype)
                  if stratified else torch.full((len(origins), 1), 0.5, dtype=origins.dtype, device=origins.device))
        steps = torch.arange(num_steps, device=origins.device, dtype=origins.dtype)
        starts = t_near[:, None] + (steps + offset - 1.0) * step_size  # the first step straddles t_near
        ends = torch.minimum(starts + step_size, t_far[:, None])
        starts = torch.maximum(starts, t_near[:, None])
        valid = ends > starts
        midpoints = origins[:, None] + directions[:, None] * ((starts + ends) / 2)[..., None]
        cells, inside = self.cell_index(midpoints)
        valid &= inside & self.binary[cells]
        ray_indices, column = torch.nonzero(valid, as_tuple=True)
        t_starts, t_ends = starts[ray_indices, column], ends[ray_indices, column]
        if density_fn is not None and len(ray_indices) and (alpha_threshold > 0 or early_stop_eps > 0):
            points = origins[ray_indices] + directions[ray_indices] * ((t_starts + t_ends) / 2)[:, None]
            optical_depth = density_fn(points).to(t_starts.dtype).clamp_min(0) * (t_ends - t_starts)
            alpha = -torch.expm1(-optical_depth)
            transmittance = torch.exp(-packed_exclusive_cumsum(optical_depth, ray_indices, len(origins)))
            keep = (alpha > alpha_threshold) & (transmittance > early_stop_eps)
            ray_indices, t_starts, t_ends = ray_indices[keep], t_starts[keep], t_ends[keep]
        return PackedSamples(ray_indices, t_starts, t_ends)
