"""Tests of geo3d.nerf.renderer on an analytic field (a ball of constant density and colour): opacity, colour
and expected distance against closed forms within the derived quadrature error, z-depth of an opaque ball against
ray-sphere intersections, features, chunking, and gradients (exact for this field)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from geo3d.nerf.estimator import OccupancyGridEstimator
from geo3d.nerf.fields import DenseGridField, FieldOutput, RadianceField
from geo3d.nerf.renderer import render_field_rays, render_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

AABB = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0)
CENTRE = torch.tensor([0.1, -0.15, 0.05])
RADIUS = 0.5
COLOR = (0.9, 0.3, 0.15)
FEATURE = (0.5, -2.0, 1.0, 3.0)


class BallField(RadianceField):
    """Density ``sigma`` inside the ball, 0 outside; constant colour and features (learnable, to check the
    gradients); the direction is ignored."""

    def __init__(self, sigma: float, feature_dim: int = 0) -> None:
        super().__init__(AABB, feature_dim)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))
        self.color_logit = nn.Parameter(torch.logit(torch.tensor(COLOR)))
        self.feature = nn.Parameter(torch.tensor(FEATURE[:feature_dim])) if feature_dim else None

    def density(self, x: torch.Tensor) -> torch.Tensor:
        inside = (x - CENTRE.to(x.dtype)).norm(dim=-1) < RADIUS
        return self.log_sigma.exp() * inside

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> FieldOutput:
        rgb = torch.sigmoid(self.color_logit).expand(len(x), 3)
        features = self.feature.expand(len(x), self.feature_dim) if self.feature is not None else None
        return FieldOutput(self.density(x), rgb, features)


def chords(origins: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry distance and chord length of unit rays through the ball (0 length where they miss), float64."""
    oc = origins.double() - CENTRE.double()
    b = (oc * directions.double()).sum(-1)
    disc = b**2 - (oc**2).sum(-1) + RADIUS**2
    root = disc.clamp_min(0).sqrt()
    return -b - root, 2 * root


def rays_at_ball(count: int, seed: int, miss: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit rays from 1.5-2 m away (outside the box), aimed at the ball with impact parameters up to 0.99 R;
    ``miss`` more rays pass it at 1.1-1.3 R."""
    gen = torch.Generator().manual_seed(seed)
    n = count + miss
    towards = -F.normalize(torch.randn(n, 3, generator=gen, dtype=torch.float64), dim=-1)
    origins = CENTRE.double() - towards * (1.5 + 0.5 * torch.rand(n, 1, generator=gen, dtype=torch.float64)) * 1.2
    side = F.normalize(torch.linalg.cross(towards, torch.randn(n, 3, generator=gen, dtype=torch.float64)), dim=-1)
    impact = torch.cat([torch.rand(count, generator=gen, dtype=torch.float64) * 0.99,
                        1.1 + 0.2 * torch.rand(miss, generator=gen, dtype=torch.float64)]) * RADIUS
    target = CENTRE.double() + side * impact[:, None]
    directions = F.normalize(target - origins, dim=-1)
    return origins.float(), directions.float()


def truncated_mean(t_in: torch.Tensor, length: torch.Tensor, sigma: float) -> torch.Tensor:
    """Expected stopping distance of a ray that stops inside ``[t_in, t_in + length]`` of density ``sigma``."""
    e = torch.exp(-sigma * length)
    return t_in + 1 / sigma - length * e / (1 - e)


def test_opacity_colour_and_distance_of_a_ball():
    sigma, step = 2.5, 0.004
    field = BallField(sigma)
    estimator = OccupancyGridEstimator(AABB, 8)
    estimator.update(0, field.density, step, threshold=0.0)  # threshold 0: every cell stays occupied
    assert estimator.binary.all()
    origins, directions = rays_at_ball(150, seed=0, miss=10)
    background = torch.rand(160, 3, generator=torch.Generator().manual_seed(1))
    out = render_field_rays(field, estimator, origins, directions, step_size=step, background=background)
    assert out.rgb.shape == (160, 3) and out.opacity.shape == (160, 1) and out.distance.shape == (160, 1)
    assert out.features is None and out.num_samples > 150 * 50
    t_in, length = chords(origins, directions)
    opacity = out.opacity[:, 0].double()
    # The sampled optical depth is sigma * L_s, L_s the total length of the steps whose midpoint is in the ball:
    # each end of the chord moves by at most half a step, so |L_s - L| <= step, and |dO/dL| = sigma exp(-sigma L)
    sampled_length = -torch.log1p(-opacity[:150]) / sigma
    assert (sampled_length - length[:150]).abs().max() <= step + 1e-5
    expected = 1 - torch.exp(-sigma * length[:150])
    bound = sigma * step * torch.exp(-sigma * (length[:150] - step).clamp_min(0))
    assert ((opacity[:150] - expected).abs() <= bound + 1e-6).all()
    assert opacity[:150].max() > 0.85 and opacity[:150].min() < 0.6  # a range of chords
    assert (out.opacity[150:] == 0).all() and (out.distance[150:] == 0).all()
    # colour: the constant colour over the opacity, then the background
    color = torch.tensor(COLOR)
    torch.testing.assert_close(out.rgb, out.opacity * color + (1 - out.opacity) * background, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.rgb[150:], background[150:])
    # Expected distance: the entry moves by <= step / 2, the chord by <= step (d mean / dL <= 1/2), and the
    # midpoint stands for a step whose weight decays by at most sigma step = 1 % (<< step / 2): <= 1.5 steps
    distance = out.distance[:150, 0].double()
    error = (distance - truncated_mean(t_in[:150], length[:150], sigma)).abs()
    assert error.max() <= 1.5 * step
    # scalar and [3] backgrounds
    white = render_field_rays(field, estimator, origins, directions, step_size=step, background=1.0)
    torch.testing.assert_close(white.rgb, out.opacity * color + 1 - out.opacity, atol=1e-6, rtol=0)
    grey = render_field_rays(field, estimator, origins, directions, step_size=step,
                             background=torch.tensor([0.5, 0.5, 0.5]))
    torch.testing.assert_close(grey.rgb, out.opacity * color + 0.5 * (1 - out.opacity), atol=1e-6, rtol=0)


def test_features_are_composited_without_background():
    field = BallField(3.0, feature_dim=4)
    estimator = OccupancyGridEstimator(AABB, 8)
    origins, directions = rays_at_ball(40, seed=2, miss=5)
    out = render_field_rays(field, estimator, origins, directions, step_size=0.01, background=1.0)
    assert out.features.shape == (45, 4)
    torch.testing.assert_close(out.features, out.opacity * torch.tensor(FEATURE), atol=1e-5, rtol=0)
    assert (out.features[40:] == 0).all()
    skipped = render_field_rays(field, estimator, origins, directions, step_size=0.01, with_features=False)
    assert skipped.features is None
    torch.testing.assert_close(skipped.rgb, out.rgb)


def test_gradients_are_exact_for_the_ball():
    """With the samples fixed, O = 1 - exp(-sigma L_s), so dO / d log(sigma) = -(1 - O) log(1 - O); the colour
    c = sigmoid(l) enters as O c, so d rgb_k / d l_k = O c_k (1 - c_k)."""
    field = BallField(2.0)
    estimator = OccupancyGridEstimator(AABB, 8)
    origins, directions = rays_at_ball(60, seed=3, miss=4)
    out = render_field_rays(field, estimator, origins, directions, step_size=0.01, background=0.3)
    (out.opacity.sum() + out.rgb.sum()).backward()
    o = out.opacity.detach()[:, 0].double()
    c = torch.tensor(COLOR, dtype=torch.float64)
    # d rgb / d log sigma = (c - background) dO / d log sigma, summed over channels
    d_opacity = -(1 - o) * torch.log1p(-o)
    expected_sigma = (d_opacity * (1 + (c - 0.3).sum())).sum()
    assert field.log_sigma.grad.item() == pytest.approx(expected_sigma.item(), rel=1e-4)
    torch.testing.assert_close(field.color_logit.grad.double(), o.sum() * c * (1 - c), rtol=1e-5, atol=0)


def test_gradients_reach_a_dense_field():
    torch.manual_seed(0)
    field = DenseGridField(AABB, resolution=8, appearance_channels=4, hidden=8, sh_degree=1, feature_dim=2,
                           feature_hidden=4, init_density=2.0)
    estimator = OccupancyGridEstimator(AABB, 8)
    origins, directions = rays_at_ball(50, seed=4)
    out = render_field_rays(field, estimator, origins, directions, step_size=0.02, stratified=True,
                            generator=torch.Generator().manual_seed(0))
    (out.rgb.sum() + out.distance.sum() + out.features.sum()).backward()
    for name, parameter in field.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    # only the vertices that the samples touch get a gradient
    touched = field.grid.table.grad.abs().sum(-1) > 0
    assert 0 < int(touched.sum()) < len(touched)


def look_at(eye: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """OpenCV camera-to-world (x right, y down, z forward) at ``eye`` looking at ``target``, float64."""
    forward = F.normalize(target - eye, dim=0)
    right = F.normalize(torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)), dim=0)
    down = torch.linalg.cross(forward, right)
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, eye
    return pose


def pixel_rays(K: torch.Tensor, cam2world: torch.Tensor, height: int, width: int):
    """Brute force: unit world directions of the pixel centres (integer coordinates) and their z per unit."""
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                          indexing="ij")
    camera = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], -1)  # z = 1
    norm = camera.norm(dim=-1, keepdim=True)
    directions = (camera / norm) @ cam2world[:3, :3].T
    return cam2world[:3, 3].expand_as(directions), directions, 1 / norm[..., 0]


def test_render_image_depth_of_an_opaque_ball():
    sigma, step = 1000.0, 0.01  # alpha of one step inside 1 - e^-10: the first sample inside stops the ray
    field = BallField(sigma, feature_dim=2)
    estimator = OccupancyGridEstimator(AABB, 16)
    estimator.update(0, field.density, step, threshold=0.0)
    K = torch.tensor([[40.0, 0.0, 19.5], [0.0, 42.0, 15.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    cam2world = look_at(torch.tensor([1.8, -1.2, 0.9], dtype=torch.float64), CENTRE.double() + 0.05)
    height, width = 32, 40
    image = render_image(field, estimator, K, cam2world, height, width, step_size=step, background=0.25, chunk=300)
    assert image.rgb.shape == (height, width, 3) and image.depth.shape == (height, width)
    assert image.opacity.shape == (height, width) and image.features.shape == (height, width, 2)
    origins, directions, z_per_unit = pixel_rays(K, cam2world, height, width)
    t_in, length = chords(origins.reshape(-1, 3), directions.reshape(-1, 3))
    t_in, length = t_in.reshape(height, width), length.reshape(height, width)
    z_true = t_in * z_per_unit
    # Rays with a chord over 2 steps have a step midpoint inside within one step of the surface, whose weight is
    # 1 - e^-10: |distance - t_in| <= step (+ e^-10 L), and z = distance * z_per_unit with z_per_unit <= 1.
    solid = length > 2 * step
    empty = length == 0
    assert solid.sum() > 200 and empty.sum() > 200
    assert (image.opacity[solid] > 1 - 1e-4).all()
    assert (image.depth[solid].double() - z_true[solid]).abs().max() <= step
    assert (image.depth[solid].double() >= z_true[solid] - 1e-5).all()  # never in front of the surface
    assert (image.opacity[empty] == 0).all() and (image.depth[empty] == 0).all()
    torch.testing.assert_close(image.rgb[solid], torch.tensor(COLOR).expand(int(solid.sum()), 3), atol=1e-4, rtol=0)
    torch.testing.assert_close(image.rgb[empty], torch.full((int(empty.sum()), 3), 0.25))
    torch.testing.assert_close(image.features[solid], torch.tensor(FEATURE[:2]).expand(int(solid.sum()), 2),
                               atol=1e-3, rtol=0)
    # chunking changes nothing; no features when not asked for
    whole = render_image(field, estimator, K, cam2world, height, width, step_size=step, background=0.25,
                         with_features=False)
    assert whole.features is None
    torch.testing.assert_close(whole.depth, image.depth)
    torch.testing.assert_close(whole.rgb, image.rgb)
