"""Render rays and images from a radiance field: occupancy-grid sampling -> field -> volume rendering.

``render_field_rays`` is the differentiable training path; ``render_image`` renders a whole camera in
chunks without gradients and returns colour, z-depth, opacity and (when the field has them) features.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from geo3d.cameras.functional import generate_rays
from geo3d.nerf.estimator import OccupancyGridEstimator
from geo3d.nerf.fields import RadianceField
from geo3d.render import accumulate_along_rays, render_weights_from_density


class FieldRender(NamedTuple):
    """Per-ray results: ``rgb [R, 3]`` (background composited), ``opacity [R, 1]``, ``distance [R, 1]``
    (expected distance along the ray in metres, normalised by the opacity; 0 where nothing is hit),
    ``features [R, F]`` or None (not composited with any background), ``num_samples`` (int)."""

    rgb: Tensor
    opacity: Tensor
    distance: Tensor
    features: Tensor | None
    num_samples: int


def render_field_rays(field: RadianceField, estimator: OccupancyGridEstimator, origins: Tensor, directions: Tensor,
                      *, step_size: float, background: Tensor | float = 1.0, stratified: bool = False,
                      alpha_threshold: float = 1e-4, early_stop_eps: float = 1e-4,
                      with_features: bool = True, generator=None) -> FieldRender:
    """Volume-render ``origins, directions [R, 3]`` (unit directions, metres) through ``field``.

    Args:
        step_size: marching step in metres.
        background: ``[3]``, ``[R, 3]`` or a float, composited behind the colour.
        stratified: random offset of the steps per ray (training).
        alpha_threshold, early_stop_eps: sample pruning (see :class:`OccupancyGridEstimator`).
        with_features: evaluate and composite the field's feature head (when it has one).
    """
    samples = estimator.sample(origins, directions, step_size, stratified=stratified, density_fn=field.density,
                               alpha_threshold=alpha_threshold, early_stop_eps=early_stop_eps, generator=generator)
    n_rays = len(origins)
    ray_indices, t_starts, t_ends = samples
    points = origins[ray_indices] + directions[ray_indices] * ((t_starts + t_ends) / 2)[:, None]
    out = field(points, directions[ray_indices])
    weights = render_weights_from_density(t_starts, t_ends, out.density, ray_indices, n_rays, check=False).weights
    rgb = accumulate_along_rays(weights, out.rgb, ray_indices, n_rays, check=False)
    opacity = accumulate_along_rays(weights, None, ray_indices, n_rays, check=False)
    distance = accumulate_along_rays(weights, ((t_starts + t_ends) / 2)[:, None], ray_indices, n_rays, check=False)
    distance = distance / opacity.clamp_min(1e-10)
    if not isinstance(background, Tensor):
        background = torch.tensor(float(background), dtype=rgb.dtype, device=rgb.device)
    rgb = rgb + (1.0 - opacity) * background
    features = None
    if with_features and out.features is not None:
        features = accumulate_along_rays(weights, out.features, ray_indices, n_rays, check=False)
    return FieldRender(rgb, opacity, distance, features, len(ray_indices))


class RenderedImage(NamedTuple):
    """One camera's render: ``rgb [H, W, 3]``, ``depth [H, W]`` z-depth in metres (0 where the opacity is
    0), ``opacity [H, W]``, ``features [H, W, F]`` or None."""

    rgb: Tensor
    depth: Tensor
    opacity: Tensor
    features: Tensor | None


@torch.no_grad()
def render_image(field: RadianceField, estimator: OccupancyGridEstimator, K: Tensor, cam2world: Tensor,
                 height: int, width: int, *, step_size: float, background: Tensor | float = 1.0,
                 chunk: int = 16384, with_features: bool = True, alpha_threshold: float = 1e-4,
                 early_stop_eps: float = 1e-4) -> RenderedImage:
    """Render the ``height x width`` image of the camera ``K [3, 3]``, ``cam2world [4, 4]`` (OpenCV axes)."""
    rays = generate_rays(K.float(), cam2world.float(), height, width)
    origins = rays.origins.reshape(-1, 3).contiguous()
    directions = rays.directions.reshape(-1, 3)
    parts = [render_field_rays(field, estimator, origins[i:i + chunk], directions[i:i + chunk], step_size=step_size,
                               background=background, with_features=with_features,
                               alpha_threshold=alpha_threshold, early_stop_eps=early_stop_eps)
             for i in range(0, len(origins), chunk)]
    rgb = torch.cat([p.rgb for p in parts]).reshape(height, width, 3)
    opacity = torch.cat([p.opacity for p in parts]).reshape(height, width)
    distance = torch.cat([p.distance for p in parts]).reshape(height, width)
    depth = distance * rays.z_per_unit * (opacity > 0)
    features = None
    if parts and parts[0].features is not None:
        features = torch.cat([p.features for p in parts]).reshape(height, width, -1)
    return RenderedImage(rgb.clamp(0, 1), depth, opacity, features)
