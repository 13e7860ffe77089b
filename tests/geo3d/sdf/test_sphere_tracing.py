"""Sphere tracing against closed-form ray-sphere and ray-box (slab) intersections; rendered depth
is z-depth through the camera model; normals are analytic; misses are flagged."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geo3d.cameras.functional import generate_rays
from geo3d.errors import SDFError
from geo3d.sdf.analytic import box_sdf, sphere_sdf
from geo3d.sdf.sphere_tracing import look_at, ray_box_intersection, render_sdf, shade_normals, sphere_trace

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CENTER = torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64)
RADIUS = 0.7
HALF = torch.tensor([0.5, 0.3, 0.4], dtype=torch.float64)


def ray_sphere(origins, directions):
    """Closed-form first intersection t (inf when missed), unit directions."""
    oc = origins - CENTER
    b = (oc * directions).sum(-1)
    c = (oc * oc).sum(-1) - RADIUS**2
    disc = b * b - c
    t = -b - torch.sqrt(disc.clamp_min(0))
    return torch.where(disc >= 0, t, torch.full_like(t, math.inf))


def grazing(origins, directions, tolerance=1e-3):
    """Rays passing within ``tolerance`` of the sphere's silhouette: hit or miss is ill-conditioned."""
    oc = origins - CENTER
    closest = (oc - (oc * directions).sum(-1, keepdim=True) * directions).norm(dim=-1)
    return (closest - RADIUS).abs() < tolerance


def random_rays(count, seed=0):
    generator = torch.Generator().manual_seed(seed)
    origins = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator, dtype=torch.float64), dim=-1) * 3
    targets = 0.9 * (torch.rand(count, 3, generator=generator, dtype=torch.float64) - 0.5) * 2
    return origins, torch.nn.functional.normalize(targets - origins, dim=-1)


def test_sphere_hits_match_closed_form():
    origins, directions = random_rays(3000)
    result = sphere_trace(lambda p: sphere_sdf(p, RADIUS, CENTER), origins, directions, far=10.0, epsilon=1e-7,
                          max_steps=200)
    expected = ray_sphere(origins, directions)
    clear = ~grazing(origins, directions)
    assert torch.equal(result.hit[clear], torch.isfinite(expected)[clear]) and clear.float().mean() > 0.99
    assert result.hit.float().mean() > 0.5 and (~result.hit).any()
    # t error = epsilon / cos(incidence): larger near the silhouette
    torch.testing.assert_close(result.t[result.hit], expected[result.hit], atol=1e-5, rtol=0)
    assert torch.isinf(result.t[~result.hit]).all() and (result.normals[~result.hit] == 0).all()
    analytic_normals = torch.nn.functional.normalize(result.points[result.hit] - CENTER, dim=-1)
    torch.testing.assert_close(result.normals[result.hit], analytic_normals, atol=1e-5, rtol=0)
    assert result.steps.max() <= 200 and result.steps.dtype == torch.int64


def ray_box(origins, directions):
    enter, leave = ray_box_intersection(origins, directions, torch.stack((CENTER - HALF, CENTER + HALF)))
    return torch.where((enter <= leave) & (leave > 0), enter, torch.full_like(enter, math.inf))


def test_box_hits_match_slab_intersection_and_autograd_normals():
    origins, directions = random_rays(2000, seed=1)
    result = sphere_trace(lambda p: box_sdf(p, HALF, CENTER), origins, directions, far=10.0, epsilon=1e-7,
                          max_steps=300, normal_method="autograd")
    expected = ray_box(origins, directions)
    # rays grazing an edge within epsilon may go either way; all others must agree
    agree = result.hit == torch.isfinite(expected)
    assert agree.float().mean() > 0.995
    both = result.hit & torch.isfinite(expected)
    torch.testing.assert_close(result.t[both], expected[both], atol=1e-5, rtol=0)
    # box normals are the axis of the face hit
    local = (result.points[both] - CENTER) / HALF
    axis = local.abs().argmax(-1)
    analytic = torch.nn.functional.one_hot(axis, 3).double() * torch.sign(local.gather(1, axis[:, None]))
    interior = (local.abs().sort(-1).values[:, 1] < 0.99)  # away from edges
    torch.testing.assert_close(result.normals[both][interior], analytic[interior], atol=1e-6, rtol=0)


def test_render_depth_is_z_depth_and_misses_are_zero():
    K = torch.tensor([[[50.0, 0.0, 31.5], [0.0, 55.0, 23.5], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    cam2world = torch.stack((look_at((0.0, -3.0, 0.5), (0.0, 0.0, 0.0)), look_at((2.5, 1.0, 1.0), (0.1, 0.0, 0.0))))
    K = K.expand(2, 3, 3)
    render = render_sdf(lambda p: sphere_sdf(p, RADIUS, CENTER), K, cam2world, 48, 64, far=8.0, epsilon=1e-7,
                        max_steps=200, bounds=((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5)))
    assert render.depth.shape == (2, 48, 64) and render.normals.shape == (2, 48, 64, 3)
    rays = generate_rays(K, cam2world, 48, 64)
    t = ray_sphere(rays.origins, rays.directions)
    clear = ~grazing(rays.origins, rays.directions)
    assert torch.equal(render.hit[clear], torch.isfinite(t)[clear]) and render.hit.sum() > 500
    t = torch.where(render.hit, t, torch.full_like(t, math.inf))
    torch.testing.assert_close(render.depth[render.hit], (t * rays.z_per_unit)[render.hit], atol=1e-5, rtol=0)
    assert (render.depth[~render.hit] == 0).all()
    # independent check of z-depth: the hit point's z in the camera frame
    world = rays.origins + t[..., None].nan_to_num(posinf=0) * rays.directions
    world2cam = torch.linalg.inv(cam2world)
    cam = torch.einsum("cij,chwj->chwi", world2cam[:, :3, :3], world) + world2cam[:, None, None, :3, 3]
    torch.testing.assert_close(render.depth[render.hit], cam[..., 2][render.hit], atol=1e-5, rtol=0)
    image = shade_normals(render.normals[0], render.hit[0])
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert (image[~render.hit[0].numpy()] == 255).all() and len(np.unique(image.reshape(-1, 3), axis=0)) > 50


def test_look_at_uses_opencv_axes():
    pose = look_at((0.0, -2.0, 0.0), (0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0))
    torch.testing.assert_close(pose[:3, 2], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))  # z forward
    torch.testing.assert_close(pose[:3, 1], torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64))  # y down
    torch.testing.assert_close(pose[:3, 0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))  # x right
    with pytest.raises(SDFError):
        look_at((0, 0, 0), (0, 0, 0))
    with pytest.raises(SDFError):
        look_at((0, 0, 0), (0, 0, 1), up=(0, 0, 1))


def test_bounds_skip_rays_missing_the_box():
    origins = torch.tensor([[0.0, -3.0, 0.0], [0.0, -3.0, 2.0]], dtype=torch.float64)
    directions = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    calls = []

    def counting(p):
        calls.append(len(p))
        return sphere_sdf(p, RADIUS, CENTER)

    result = sphere_trace(counting, origins, directions, bounds=((-1, -1, -1), (1, 1, 1)))
    assert result.hit.tolist() == [True, False] and result.steps[1] == 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(origins=torch.zeros(4, 2)), "origins"), (dict(directions=torch.zeros(4, 3)), "non-zero"),
    (dict(max_steps=0), "max_steps"), (dict(epsilon=0.0), "epsilon"), (dict(step_scale=1.5), "step_scale"),
    (dict(far=math.inf), "finite"), (dict(normal_method="sobel"), "normal"),
    (dict(origins=torch.full((4, 3), math.nan)), "finite"),
])
def test_bad_arguments(kwargs, match):
    options = dict(origins=torch.zeros(4, 3) - torch.tensor([0.0, 3.0, 0.0]),
                   directions=torch.tensor([[0.0, 1.0, 0.0]]).expand(4, 3))
    options.update(kwargs)
    with pytest.raises(SDFError, match=match):
        sphere_trace(lambda p: sphere_sdf(p, 0.5), **options)


def test_shade_normals_bad_input():
    with pytest.raises(SDFError, match="normals"):
        shade_normals(torch.zeros(4, 4), torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(SDFError, match="hit"):
        shade_normals(torch.zeros(4, 4, 3), torch.zeros(3, 4, dtype=torch.bool))
