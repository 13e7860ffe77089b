"""Tests of geo3d.render.samplers: uniform and disparity bins against closed forms, stratified bins inside their
strata, importance sampling against an independent NumPy CDF (exactly for fixed edges, by a histogram within a
tolerance from the sample count for stratified ones), the contraction and its inverse, ray-box intersection
against brute-force marching and nerfacc, packed == padded rendering after masking, CPU == CUDA, bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geo3d.errors import Geo3dError
from geo3d.render import RenderError, render_rays
from geo3d.render.samplers import (
    contract,
    disparity_samples,
    importance_samples,
    packed_from_padded,
    ray_aabb_intersect,
    uncontract,
    uniform_samples,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64
BOX = torch.tensor([-1.0, -0.5, -0.8, 1.2, 0.7, 0.9], dtype=F64)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def edges_of(t_starts, t_ends):
    return torch.cat([t_starts, t_ends[..., -1:]], dim=-1)


def assert_contiguous_sorted(t_starts, t_ends):
    assert torch.equal(t_starts[..., 1:], t_ends[..., :-1])
    assert (t_ends >= t_starts).all()


def numpy_cdf(t, t_starts, t_ends, masses):
    """CDF of the piecewise-constant PDF with ``masses`` spread evenly over the intervals (flat across gaps)."""
    cdf = np.cumsum(masses) / np.sum(masses)
    points = np.stack([t_starts, t_ends], -1).ravel()
    values = np.stack([np.concatenate([[0.0], cdf[:-1]]), cdf], -1).ravel()
    return np.interp(t, points, values)


# ------------------------------------------------------------------------------------ uniform bins


def test_uniform_bins_exact_and_differentiable():
    near = torch.tensor([0.0, 0.5, 2.0, 3.0], dtype=F64, requires_grad=True)
    far = torch.tensor([1.0, 6.5, 2.0, 100.0], dtype=F64, requires_grad=True)  # a zero-length range included
    t_starts, t_ends = uniform_samples(near, far, 7)
    assert t_starts.shape == (4, 7)
    k = torch.arange(8, dtype=F64)
    expected = near[:, None] + (far - near)[:, None] * k / 7
    torch.testing.assert_close(edges_of(t_starts, t_ends), expected, atol=1e-14, rtol=0)
    assert torch.equal(t_starts[:, 0], near) and torch.equal(t_ends[:, -1], far)
    assert_contiguous_sorted(t_starts, t_ends)
    # check=False: gradcheck's perturbations put far below near on the zero-length ray
    assert torch.autograd.gradcheck(lambda n, f: uniform_samples(n, f, 5, check=False), (near, far))
    positive = (near[1:].detach().requires_grad_(), far[1:].detach().requires_grad_())
    assert torch.autograd.gradcheck(lambda n, f: disparity_samples(n, f, 5, check=False), positive)


@pytest.mark.parametrize("sampler", [uniform_samples, disparity_samples])
def test_stratified_bins_stay_in_their_strata_and_are_reproducible(sampler):
    rays, count = 2000, 8
    near, far = torch.full((rays,), 2.0, dtype=F64), torch.full((rays,), 10.0, dtype=F64)
    t_starts, t_ends = sampler(near, far, count, stratified=True, generator=seeded(0))
    assert_contiguous_sorted(t_starts, t_ends)
    assert t_starts[:, 0].eq(2.0).all() and t_ends[:, -1].eq(10.0).all()
    again = sampler(near, far, count, stratified=True, generator=seeded(0))
    other = sampler(near, far, count, stratified=True, generator=seeded(1))
    assert torch.equal(again.t_starts, t_starts) and not torch.equal(other.t_starts, t_starts)
    # the midpoint of bin i (in t for uniform bins, in 1/t for disparity bins) lies in the i-th regular stratum
    warp = (lambda t: t) if sampler is uniform_samples else (lambda t: 1 / t)
    regular = warp(edges_of(*sampler(near[:1], far[:1], count)))[0]
    low, high = torch.minimum(regular[:-1], regular[1:]), torch.maximum(regular[:-1], regular[1:])
    midpoints = (warp(t_starts) + warp(t_ends)) / 2
    assert ((midpoints >= low - 1e-12) & (midpoints <= high + 1e-12)).all()
    # and spreads over it (interior bins: over all of it; end bins: over its middle half)
    spread = (midpoints.amax(0) - midpoints.amin(0)) / (high - low)
    assert (spread[1:-1] > 0.9).all() and (spread[[0, -1]] > 0.45).all()
    fixed = sampler(near, far, count)
    assert not torch.equal(fixed.t_starts, t_starts)


def test_disparity_bins_are_uniform_in_inverse_distance():
    near, far = torch.tensor([0.1, 1.0, 5.0], dtype=F64), torch.tensor([1000.0, 2.0, 5.0], dtype=F64)
    t_starts, t_ends = disparity_samples(near, far, 16)
    edges = edges_of(t_starts, t_ends)
    assert torch.equal(edges[:, 0], near) and torch.equal(edges[:, -1], far)
    assert_contiguous_sorted(t_starts, t_ends)
    k = torch.arange(17, dtype=F64)
    expected = 1 / near[:, None] + (1 / far - 1 / near)[:, None] * k / 16
    torch.testing.assert_close(1 / edges, expected, rtol=1e-13, atol=1e-14)
    steps = torch.diff(1 / edges, dim=-1)
    torch.testing.assert_close(steps, steps[:, :1].expand_as(steps), rtol=1e-10, atol=1e-15)
    assert (t_ends - t_starts)[0].diff().gt(0).all()  # bins grow with distance


# ---------------------------------------------------------------------------------------- importance


def test_importance_edges_are_the_inverse_cdf_of_the_weights():
    gen = seeded(2)
    near, far = torch.tensor([0.5, 1.0, 2.0], dtype=F64), torch.tensor([4.0, 50.0, 3.0], dtype=F64)
    t_starts, t_ends = disparity_samples(near, far, 12)  # unequal bins
    t_starts, t_ends = t_starts + 0.01 * torch.arange(12), t_ends + 0.01 * torch.arange(12)  # with gaps
    weights = torch.rand(3, 12, generator=gen, dtype=F64) ** 4
    weights[1] = 0.0
    weights[2, 5] = 1.0
    new_starts, new_ends = importance_samples(t_starts, t_ends, weights, 20, padding=0.01)
    assert new_starts.shape == (3, 20)
    assert_contiguous_sorted(new_starts, new_ends)
    edges = edges_of(new_starts, new_ends).numpy()
    for ray in range(3):
        masses = weights[ray].numpy() + 0.01
        cdf = numpy_cdf(edges[ray], t_starts[ray].numpy(), t_ends[ray].numpy(), masses)
        np.testing.assert_allclose(cdf, np.arange(21) / 20, atol=1e-12, rtol=0)
        # every edge lies in an input interval, never strictly inside a gap
        inside = (edges[ray][:, None] >= t_starts[ray].numpy()) & (edges[ray][:, None] <= t_ends[ray].numpy())
        assert inside.any(1).all()
    assert edges[:, 0].tolist() == t_starts[:, 0].tolist() and edges[:, -1].tolist() == t_ends[:, -1].tolist()


def test_importance_histogram_matches_the_pdf():
    rays, bins, count = 2000, 16, 32
    t_starts, t_ends = uniform_samples(torch.full((rays,), 1.0, dtype=F64), torch.full((rays,), 5.0, dtype=F64), bins)
    weights = torch.zeros(bins, dtype=F64)
    weights[5:8] = torch.tensor([0.2, 0.5, 0.2], dtype=F64)  # a surface: 0.9 of the ray stops here
    weights[12] = 0.05
    new_starts, new_ends = importance_samples(t_starts, t_ends, weights.expand(rays, bins), count, stratified=True,
                                              generator=seeded(3))
    assert_contiguous_sorted(new_starts, new_ends)
    # interior edge k is the inverse CDF of u uniform in [(k - 1/2) / M, (k + 1/2) / M): pooled over k, u is
    # uniform in [1/2M, 1 - 1/2M], so bin i receives the share of that range its CDF interval covers
    samples = new_starts[:, 1:].reshape(-1).numpy()
    masses = weights.numpy() + 0.01
    cdf = np.concatenate([[0.0], np.cumsum(masses) / masses.sum()])
    low, high = 0.5 / count, 1 - 0.5 / count
    share = (np.clip(cdf[1:], low, high) - np.clip(cdf[:-1], low, high)) / (high - low)
    counts = np.histogram(samples, bins=np.linspace(1.0, 5.0, bins + 1))[0]
    total = len(samples)
    tolerance = 5 * np.sqrt(total * share * (1 - share)) + 2  # 5 binomial sigmas (stratification only lowers it)
    assert np.all(np.abs(counts - total * share) <= tolerance), (counts, total * share, tolerance)
    assert counts[5:8].sum() > 0.75 * total  # concentrated where the weights are


def test_importance_zero_weights_fall_back_to_the_coarse_spacing():
    near, far = torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([3.0, 200.0], dtype=F64)
    for sampler in (uniform_samples, disparity_samples):
        coarse = sampler(near, far, 8)
        coarse_edges = edges_of(*coarse)
        for padding in (0.01, 0.0):  # two new bins per coarse bin, splitting it in its middle
            fine_edges = edges_of(*importance_samples(*coarse, torch.zeros(2, 8, dtype=F64), 16, padding=padding))
            torch.testing.assert_close(fine_edges[:, ::2], coarse_edges, atol=1e-12, rtol=1e-12)
            torch.testing.assert_close(fine_edges[:, 1::2], (coarse.t_starts + coarse.t_ends) / 2)
            if sampler is uniform_samples:
                torch.testing.assert_close(fine_edges, edges_of(*uniform_samples(near, far, 16)))
    # zero-length padding at the end of a short ray holds no mass; a ray of zero length stays in place
    t_starts = torch.tensor([[0.0, 1.0, 2.0, 2.0], [7.0, 7.0, 7.0, 7.0]], dtype=F64)
    t_ends = torch.tensor([[1.0, 2.0, 2.0, 2.0], [7.0, 7.0, 7.0, 7.0]], dtype=F64)
    out = importance_samples(t_starts, t_ends, torch.zeros(2, 4, dtype=F64), 4)
    torch.testing.assert_close(edges_of(*out)[0], torch.linspace(0.0, 2.0, 5, dtype=F64))
    assert edges_of(*out)[1].eq(7.0).all()


def test_importance_samples_follow_rendering_weights_without_gradient():
    near, far = torch.full((64,), 2.0), torch.full((64,), 6.0)
    t_starts, t_ends = uniform_samples(near, far, 64, stratified=True, generator=seeded(4))
    sigmas = torch.where(((t_starts + t_ends) / 2 - 4.0).abs() < 0.2, 50.0, 0.0).requires_grad_(True)
    weights = render_rays(t_starts, t_ends, sigmas, torch.ones(64, 64, 1)).weights
    fine = importance_samples(t_starts, t_ends, weights, 32, stratified=True, generator=seeded(5))
    assert not fine.t_starts.requires_grad and fine.t_starts.dtype == torch.float32
    assert_contiguous_sorted(*fine)
    midpoints = (fine.t_starts + fine.t_ends) / 2
    assert ((midpoints - 3.8).abs() < 0.3).float().mean() > 0.5  # uniform: 0.15; the surface is at t = 3.8


# ---------------------------------------------------------------------------------------- contraction


@pytest.mark.parametrize("kind", ["l2", "linf"])
def test_contraction_and_its_inverse(kind):
    def norm(x):
        return x.norm(dim=-1) if kind == "l2" else x.abs().amax(-1)

    gen = seeded(6)
    directions = torch.randn(500, 3, generator=gen, dtype=F64)
    directions = directions / norm(directions)[:, None]
    radii = torch.cat([torch.rand(250, generator=gen, dtype=F64), 1 + torch.rand(240, generator=gen, dtype=F64) * 30,
                       torch.logspace(2, 6, 10, dtype=F64)])
    points = directions * radii[:, None]
    contracted = contract(points, kind)
    inside = radii <= 1
    assert torch.equal(contracted[inside], points[inside])
    torch.testing.assert_close(norm(contracted[~inside]), 2 - 1 / radii[~inside])
    assert (norm(contracted) < 2).all() and (norm(contracted[~inside]) > 1).all()
    # same direction; uncontract undoes it
    torch.testing.assert_close(contracted / norm(contracted)[:, None], directions)
    torch.testing.assert_close(uncontract(contracted, kind)[:-5], points[:-5], rtol=1e-10, atol=1e-12)
    assert torch.equal(contract(uncontract(contracted, kind), kind)[inside], contracted[inside])
    # continuous, with a continuous Jacobian, at |x| = 1
    for eps in (1e-6, 1e-9):
        below, above = directions[:20] * (1 - eps), directions[:20] * (1 + eps)
        assert (contract(above, kind) - contract(below, kind)).abs().max() < 3 * eps
    jacobians = [torch.autograd.functional.jacobian(lambda x: contract(x, kind), directions[0] * s) for s in
                 (1 - 1e-7, 1 + 1e-7)]
    torch.testing.assert_close(jacobians[0], jacobians[1], atol=1e-5, rtol=0)
    probe = torch.cat([torch.zeros(1, 3, dtype=F64), points[245:255] * 0.9]).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: contract(x, kind), (probe,))
    assert torch.autograd.gradcheck(lambda y: uncontract(y, kind), (contract(probe, kind).detach().requires_grad_(),))
    grad = torch.autograd.grad(contract(probe, kind).sum(), probe)[0]
    assert torch.isfinite(grad).all()  # finite at the origin


# ---------------------------------------------------------------------------------------- ray and box


def random_rays(seed: int, count: int):
    gen = seeded(seed)
    origins = (torch.rand(count, 3, generator=gen, dtype=F64) - 0.5) * 4  # some start inside the box
    targets = (torch.rand(count, 3, generator=gen, dtype=F64) - 0.5) * 3  # about half the rays hit it
    directions = targets - origins + 0.3 * torch.randn(count, 3, generator=gen, dtype=F64)
    directions = directions * (0.3 + 2.7 * torch.rand(count, 1, generator=gen, dtype=F64)) / directions.norm(
        dim=-1, keepdim=True)  # lengths in [0.3, 3]
    return origins, directions


def brute_force(origins, directions, box, step=2e-3, t_max=30.0):
    t = torch.arange(0.0, t_max, step, dtype=F64)
    found = []
    for o, d in zip(origins, directions):
        points = o + t[:, None] * d
        inside = ((points >= box[:3]) & (points <= box[3:])).all(-1)
        found.append((t[inside].min().item(), t[inside].max().item()) if inside.any() else None)
    return found


def test_ray_aabb_matches_brute_force_marching():
    origins, directions = random_rays(7, 150)
    axis = torch.tensor([[1.0, 0, 0], [0, -2.0, 0], [0, 0, 0.5], [1.0, 1.0, 0], [1.0, 0, 0], [0, 1.0, 0]], dtype=F64)
    starts = torch.tensor([[-3.0, 0.2, 0.1], [0.1, 2.0, 0.3], [0.5, 0.0, -0.3], [-2.0, -1.0, 0.9],
                           [-3.0, 0.7, 0.9], [0.2, -3.0, 1.5]], dtype=F64)  # inside, on faces/edges, outside
    origins, directions = torch.cat([origins, starts]), torch.cat([directions, axis])
    t_near, t_far, hit = ray_aabb_intersect(origins, directions, BOX)
    step = 2e-3
    for i, found in enumerate(brute_force(origins, directions, BOX, step)):
        if found is None:
            assert not hit[i] or t_far[i] - t_near[i] < 2 * step, i
            continue
        assert hit[i], i
        assert abs(t_near[i].item() - found[0]) <= step + 1e-9 and abs(t_far[i].item() - found[1]) <= step + 1e-9, i
    assert hit[-6:].tolist() == [True, True, True, True, True, False]
    torch.testing.assert_close(t_near[-6:-1], torch.tensor([2.0, 0.65, 0.0, 1.0, 2.0], dtype=F64))
    torch.testing.assert_close(t_far[-6:-1], torch.tensor([4.2, 1.25, 2.4, 1.7, 4.2], dtype=F64))
    inside = ((origins >= BOX[:3]) & (origins <= BOX[3:])).all(-1)
    assert inside.any() and (t_near[inside] == 0).all() and hit[inside].all()
    assert (t_near[~hit] == 0).all() and (t_far[~hit] == 0).all()


def test_ray_aabb_near_far_and_gradients():
    origins, directions = random_rays(8, 64)
    full = ray_aabb_intersect(origins, directions, BOX)
    clipped = ray_aabb_intersect(origins, directions, BOX, near=0.5, far=torch.full((64,), 2.0, dtype=F64))
    expected_near, expected_far = full.t_near.clamp(min=0.5), full.t_far.clamp(max=2.0)
    expected_hit = full.hit & (expected_far > expected_near)
    assert torch.equal(clipped.hit, expected_hit)
    torch.testing.assert_close(clipped.t_near[expected_hit], expected_near[expected_hit])
    torch.testing.assert_close(clipped.t_far[expected_hit], expected_far[expected_hit])
    assert (clipped.t_near[~expected_hit] == 0.5).all()
    hits = full.hit & (full.t_near > 0)
    inputs = (origins[hits][:8].requires_grad_(), directions[hits][:8].requires_grad_(), BOX.clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda o, d, b: ray_aabb_intersect(o, d, b)[:2], inputs)


def test_ray_aabb_matches_nerfacc_cpu():
    nerfacc = pytest.importorskip("nerfacc", reason="nerfacc not installed (pip install -e .[gpu])")
    origins, directions = random_rays(9, 200)
    try:
        theirs = nerfacc.ray_aabb_intersect(origins, directions, BOX[None], near_plane=0.0)
    except Exception as exc:  # its CUDA extension: JIT-compiled on first use, no CPU kernel
        pytest.skip(f"nerfacc.ray_aabb_intersect does not run on CPU tensors ({type(exc).__name__}: {exc})"[:300])
    ours = ray_aabb_intersect(origins, directions, BOX)
    assert torch.equal(ours.hit, theirs[2][:, 0])
    torch.testing.assert_close(ours.t_near[ours.hit], theirs[0][ours.hit, 0])


def test_ray_aabb_matches_nerfacc_torch_reference():
    nerfacc_grid = pytest.importorskip("nerfacc.grid", reason="nerfacc not installed (pip install -e .[gpu])")
    reference = getattr(nerfacc_grid, "_ray_aabb_intersect", None)
    if reference is None:
        pytest.skip("this nerfacc has no pure-PyTorch _ray_aabb_intersect (a private function of nerfacc 0.5.3)")
    origins, directions = random_rays(10, 500)
    t_mins, t_maxs, hits = reference(origins, directions, BOX[None], near_plane=0.0)
    ours = ray_aabb_intersect(origins, directions, BOX)
    assert torch.equal(ours.hit, hits[:, 0]) and ours.hit.any() and not ours.hit.all()
    torch.testing.assert_close(ours.t_near[ours.hit], t_mins[ours.hit, 0])
    torch.testing.assert_close(ours.t_far[ours.hit], t_maxs[ours.hit, 0])


# ------------------------------------------------------------------------------------------- packing


def test_packed_from_padded_renders_like_padded():
    origins, directions = random_rays(11, 40)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    box_hits = ray_aabb_intersect(origins, directions, BOX)
    near, far = torch.zeros(40, dtype=F64), torch.full((40,), 8.0, dtype=F64)
    t_starts, t_ends = uniform_samples(near, far, 96, stratified=True, generator=seeded(12))
    midpoints = (t_starts + t_ends) / 2
    sigmas = torch.where((midpoints > box_hits.t_near[:, None]) & (midpoints < box_hits.t_far[:, None]), 3.0, 0.0)
    values = torch.rand(40, 96, 3, generator=seeded(13), dtype=F64)
    mask = sigmas > 0
    assert mask.any(1).any() and not mask.any(1).all()  # some rays keep no sample
    packed = packed_from_padded(t_starts, t_ends, mask)
    assert packed.ray_indices.dtype == torch.int64 and packed.ray_indices.diff().ge(0).all()
    assert torch.equal(torch.bincount(packed.ray_indices, minlength=40), mask.sum(1))
    assert (packed.t_starts.diff()[packed.ray_indices.diff() == 0] > 0).all()  # each ray's samples in order
    background = torch.tensor([0.1, 0.2, 0.3], dtype=F64)
    padded_out = render_rays(t_starts, t_ends, sigmas, values, background=background, normalize_distance=True)
    packed_out = render_rays(packed.t_starts, packed.t_ends, sigmas[mask], values[mask], packed.ray_indices, 40,
                             background=background, normalize_distance=True)
    for a, b in zip(padded_out[:3], packed_out[:3]):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(packed_out.weights, padded_out.weights[mask])
    # leading dimensions are flattened: [2, 20, S] -> ray indices 0..39
    again = packed_from_padded(t_starts.reshape(2, 20, 96), t_ends.reshape(2, 20, 96), mask.reshape(2, 20, 96))
    assert torch.equal(again.ray_indices, packed.ray_indices) and torch.equal(again.t_ends, packed.t_ends)


# ----------------------------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
def test_cuda_matches_cpu():
    near, far = torch.linspace(0.5, 1.0, 8, dtype=F64), torch.linspace(3.0, 9.0, 8, dtype=F64)
    for sampler in (uniform_samples, disparity_samples):
        cpu = sampler(near, far, 16)
        gpu = sampler(near.cuda(), far.cuda(), 16, stratified=True, generator=torch.Generator("cuda").manual_seed(0))
        assert gpu.t_starts.device.type == "cuda"
        torch.testing.assert_close(sampler(near.cuda(), far.cuda(), 16).t_starts.cpu(), cpu.t_starts)
        weights = torch.rand(8, 16, generator=seeded(14), dtype=F64)
        fine = importance_samples(*cpu, weights, 24)
        torch.testing.assert_close(importance_samples(*(t.cuda() for t in cpu), weights.cuda(), 24).t_ends.cpu(),
                                   fine.t_ends)
    origins, directions = random_rays(15, 100)
    cpu = ray_aabb_intersect(origins, directions, BOX)
    gpu = ray_aabb_intersect(origins.cuda(), directions.cuda(), BOX.cuda())
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a)
    points = origins * 5
    torch.testing.assert_close(contract(points.cuda(), "linf").cpu(), contract(points, "linf"))


@pytest.mark.cuda
def test_ray_aabb_matches_nerfacc_cuda():
    nerfacc = pytest.importorskip("nerfacc", reason="nerfacc not installed (pip install -e .[gpu])")
    origins, directions = (t.float().cuda() for t in random_rays(16, 1000))
    box = BOX.float().cuda()
    try:
        t_mins, t_maxs, hits = nerfacc.ray_aabb_intersect(origins, directions, box[None], near_plane=0.0)
    except Exception as exc:
        pytest.skip(f"nerfacc's CUDA extension does not load ({type(exc).__name__}: {exc})"[:300])
    ours = ray_aabb_intersect(origins, directions, box)
    assert (ours.hit != hits[:, 0]).sum() <= 2  # float32 ties at grazing rays
    both = ours.hit & hits[:, 0]
    torch.testing.assert_close(ours.t_near[both], t_mins[both, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.t_far[both], t_maxs[both, 0], atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------- errors


def _bad_inputs():
    near, far = torch.ones(3, dtype=F64), torch.full((3,), 2.0, dtype=F64)
    t_starts, t_ends = uniform_samples(near, far, 4)
    weights = torch.ones(3, 4, dtype=F64)
    overlapping = t_starts.clone()
    overlapping[0, 2] -= 0.3
    origins, directions = torch.zeros(2, 3, dtype=F64), torch.ones(2, 3, dtype=F64)
    return [
        (lambda: uniform_samples(near, far[:2], 4), "far must match near"),
        (lambda: uniform_samples(near, far.float(), 4), "far must match near"),
        (lambda: uniform_samples(near, far, 0), "num_samples must be a positive int"),
        (lambda: uniform_samples(near, far, 2.0), "num_samples must be a positive int"),
        (lambda: uniform_samples(far, near, 4), "far must be >= near"),
        (lambda: uniform_samples(near * math.nan, far, 4), "near holds NaN or inf"),
        (lambda: uniform_samples(near.long(), far.long(), 4), "near must be a floating-point"),
        (lambda: uniform_samples([1.0], far, 4), "near must be a torch.Tensor"),
        (lambda: disparity_samples(near * 0, far, 4), "near must be > 0"),
        (lambda: disparity_samples(near, far * math.inf, 4), "far holds NaN or inf"),
        (lambda: importance_samples(t_starts, t_ends, -weights, 4), "weights must be >= 0"),
        (lambda: importance_samples(t_starts, t_ends, weights[:, :3], 4), "weights must match t_starts"),
        (lambda: importance_samples(t_ends, t_starts, weights, 4), "t_ends must be >= t_starts"),
        (lambda: importance_samples(overlapping, t_ends, weights, 4), "t_starts must not precede"),
        (lambda: importance_samples(t_starts, t_ends, weights, 4, padding=-1.0), "padding must be"),
        (lambda: importance_samples(t_starts[:, :0], t_ends[:, :0], weights[:, :0], 4), "S >= 1"),
        (lambda: importance_samples(t_starts, t_ends, weights, -1), "num_samples must be a positive int"),
        (lambda: contract(torch.ones(4, 2)), r"points must have shape \[..., 3\]"),
        (lambda: contract(torch.ones(4, 3), kind="l1"), "kind must be one of"),
        (lambda: uncontract(torch.full((2, 3), 1.5)), "l2 norm < 2"),
        (lambda: uncontract(torch.full((2, 3), 2.0), "linf"), "linf norm < 2"),
        (lambda: packed_from_padded(t_starts, t_ends, weights), "mask must be a bool tensor"),
        (lambda: packed_from_padded(t_starts, t_ends, weights[:, :3] > 0), "mask must have the shape"),
        (lambda: packed_from_padded(t_starts, t_ends[:2], weights > 0), "t_ends must match t_starts"),
        (lambda: ray_aabb_intersect(origins, directions, [1, 1, 1, 0, 0, 0]), "aabb must have min < max"),
        (lambda: ray_aabb_intersect(origins, directions, BOX[:4]), r"aabb must have shape \[6\]"),
        (lambda: ray_aabb_intersect(origins, directions, "box"), "aabb must be a tensor or a sequence"),
        (lambda: ray_aabb_intersect(origins, directions * 0, BOX), "directions must be non-zero"),
        (lambda: ray_aabb_intersect(origins[:, :2], directions[:, :2], BOX), r"origins must have shape \[..., 3\]"),
        (lambda: ray_aabb_intersect(origins, directions * math.nan, BOX), "directions holds NaN"),
        (lambda: ray_aabb_intersect(origins, directions, BOX, near=math.nan), "near holds NaN"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_inputs())))
def test_bad_inputs_raise_render_error_naming_the_argument(case):
    call, message = _bad_inputs()[case]
    with pytest.raises(RenderError, match=message) as info:
        call()
    assert isinstance(info.value, Geo3dError) and isinstance(info.value, ValueError)


def test_check_false_skips_value_checks():
    near, far = torch.ones(2), torch.zeros(2)
    assert uniform_samples(near, far, 3, check=False).t_starts.shape == (2, 3)
    assert uncontract(torch.full((1, 3), 3.0), "linf", check=False).shape == (1, 3)
