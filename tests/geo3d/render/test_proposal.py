"""Tests of geo3d.render.proposal: proposal sampling of an analytic slab (samples where the weights are, with a bound
derived from the histogram padding, and against a fine brute-force histogram), the interlevel loss and the
distortion loss against O(S * S_k) / O(S^2) brute force (and nerfacc's reference), gradients, training the
proposal fields, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from geo3d.render import (
    ProposalConfig,
    ProposalNetworkSampler,
    RenderError,
    disparity_samples,
    distortion_loss,
    importance_samples,
    interlevel_loss,
    normalized_distance,
    proposal_samples,
    render_weights_from_density,
    uniform_samples,
)
from geo3d.render.proposal import outer_measure

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64
SLAB_START, SLAB_END, SLAB_SIGMA = 2.0, 2.3, 20.0  # metres, metres, 1/metre: opacity 1 - exp(-6) = 0.9975
NEAR, FAR = 0.5, 4.5


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def slab_density(points):
    """A slab ``SLAB_START <= x <= SLAB_END`` of constant density, empty elsewhere."""
    x = points[:, 0]
    inside = (x >= SLAB_START) & (x <= SLAB_END)
    return torch.where(inside, torch.full_like(x, SLAB_SIGMA), torch.zeros_like(x))


def slab_rays(count: int, dtype=F64):
    """Rays along +x from x = 0 (small y, z offsets), ``t`` in metres, crossing the slab at ``t in [2, 2.3]``."""
    origins = torch.zeros(count, 3, dtype=dtype)
    origins[:, 1:] = (torch.rand(count, 2, generator=seeded(0), dtype=dtype) - 0.5) * 0.4
    directions = torch.zeros(count, 3, dtype=dtype)
    directions[:, 0] = 1.0
    return origins, directions, torch.full((count,), NEAR, dtype=dtype), torch.full((count,), FAR, dtype=dtype)


def exact_slab_weights(t_starts, t_ends):
    """Weights of bins under the slab, from the exact optical depth of each bin (no quadrature error)."""
    depth = SLAB_SIGMA * (t_ends.clamp(SLAB_START, SLAB_END) - t_starts.clamp(SLAB_START, SLAB_END))
    return render_weights_from_density(t_starts, t_ends, depth / (t_ends - t_starts)).weights


def edges_of(t_starts, t_ends):
    return torch.cat([t_starts, t_ends[..., -1:]], dim=-1)


def random_bins(rays: int, count: int, seed: int, near=0.0, far=1.0):
    """``[rays, count]`` contiguous bins with random (sorted) interior edges, sharing the ends near and far."""
    interior = torch.rand(rays, count - 1, generator=seeded(seed), dtype=F64).sort(-1).values * (far - near) + near
    edges = torch.cat([torch.full((rays, 1), near, dtype=F64), interior, torch.full((rays, 1), far, dtype=F64)], -1)
    return edges[:, :-1], edges[:, 1:]


def brute_outer(t_starts, t_ends, p_starts, p_ends, p_weights):
    """O(S * S_k): sum of the weights of the proposal bins sharing more than a point with each bin."""
    overlap = (p_starts[..., None, :] < t_ends[..., :, None]) & (p_ends[..., None, :] > t_starts[..., :, None])
    return (overlap * p_weights[..., None, :]).sum(-1)


def brute_interlevel(t_starts, t_ends, weights, proposals):
    eps = torch.finfo(weights.dtype).eps
    total = 0.0
    for proposal in proposals:
        outer = brute_outer(t_starts, t_ends, *proposal)
        total = total + (torch.relu(weights - outer) ** 2 / (weights + eps)).mean()
    return total


# ----------------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("spacing", ["uniform", "disparity"])
@pytest.mark.parametrize("stratified", [False, True])
def test_samples_concentrate_in_the_slab(spacing, stratified):
    """Bound: the last proposal's weights live on bins whose midpoints are in the slab; resampling gives its
    padding (total ``p = 0.01``) at most the share ``eps = p / (W + p)`` of the CDF, ``W`` that proposal's opacity.
    The other >= 1 - eps is one contiguous range of the CDF (the support, a run of consecutive bins), so at least
    ``floor(M (1 - eps))`` of the ``M + 1`` unit edges ``k / M`` land in it, and at least ``floor(M (1 - eps)) - 1``
    of the ``M`` final bins lie inside the support. The support overhangs the slab by at most one level-0 bin
    ``delta`` (a bin whose midpoint is in the slab; stratified bins are at most two regular bins long): checked
    below, so those bins lie in ``[a - delta, b + delta]`` (30 of 32 here, 94%)."""
    rays, count = 48, 32
    origins, directions, near, far = slab_rays(rays)
    out = proposal_samples(origins, directions, near, far, [slab_density, slab_density], [128, 64], count,
                           spacing=spacing, stratified=stratified, generator=seeded(3))
    assert out.t_starts.shape == (rays, count) and len(out.proposals) == 2
    assert [p[0].shape[-1] for p in out.proposals] == [128, 64]
    assert torch.equal(out.t_starts[:, 1:], out.t_ends[:, :-1]) and (out.t_ends >= out.t_starts).all()
    assert not out.t_starts.requires_grad and not out.proposals[-1][2].requires_grad
    regular = (uniform_samples if spacing == "uniform" else disparity_samples)(near, far, 128)
    overlapping = (regular.t_ends > SLAB_START) & (regular.t_starts < SLAB_END)
    delta = (regular.t_ends - regular.t_starts)[overlapping].max().item()
    margin_low, margin_high = SLAB_START - delta, SLAB_END + delta
    p_starts, p_ends, p_weights = out.proposals[-1]
    support = p_weights > 0
    assert (p_starts[support] >= margin_low).all() and (p_ends[support] <= margin_high).all()
    eps = 0.01 / (p_weights.sum(-1) + 0.01)
    assert (eps < 0.011).all()  # the proposals found the slab: W > 0.9
    inside = ((out.t_starts >= margin_low) & (out.t_ends <= margin_high)).sum(-1)
    bound = torch.floor(count * (1 - eps)) - 1
    assert (inside >= bound).all() and (inside >= 0.9 * count).all()


@pytest.mark.parametrize("spacing", ["uniform", "disparity"])
def test_samples_match_a_fine_brute_force_histogram(spacing):
    """The final bins are the inverse CDF of the proposal's histogram, which approximates the slab's weights: their
    interior edges lie within half a level-0 bin (the resolution at which level 0 saw the slab) of the inverse CDF
    of a 4096-bin histogram of the exact weights, and the true CDF at each edge is within 2% of ``k / M`` (1% of
    padding plus the midpoint quadrature of the proposals)."""
    origins, directions, near, far = slab_rays(8)
    out = proposal_samples(origins, directions, near, far, [slab_density] * 2, [128, 64], 32, spacing=spacing)
    fine = uniform_samples(near, far, 4096)
    reference = importance_samples(*fine, exact_slab_weights(*fine), 32, padding=0.0)
    edges, reference_edges = edges_of(*out[:2]), edges_of(*reference)
    half_bin = (FAR - NEAR) / 128 / 2
    assert (edges - reference_edges)[:, 1:-1].abs().max() < half_bin
    true_cdf = (1 - torch.exp(-SLAB_SIGMA * (edges.clamp(SLAB_START, SLAB_END) - SLAB_START)))
    true_cdf = true_cdf / (1 - math.exp(-SLAB_SIGMA * (SLAB_END - SLAB_START)))
    assert (true_cdf - torch.arange(33, dtype=F64) / 32).abs().max() < 0.02


def test_level_zero_bins_and_gradients():
    origins, directions, near, far = slab_rays(4)
    calls = []

    def recording(points):
        calls.append(points)
        return slab_density(points)

    out = proposal_samples(origins, directions, near, far, [recording], [16], 8, spacing="disparity")
    torch.testing.assert_close(out.proposals[0][:2], tuple(disparity_samples(near, far, 16)), rtol=1e-14, atol=0)
    midpoints = (out.proposals[0][0] + out.proposals[0][1]) / 2
    torch.testing.assert_close(calls[0], (origins[:, None] + midpoints[..., None] * directions[:, None]).reshape(-1, 3))
    assert not calls[0].requires_grad

    scale = torch.tensor(1.0, dtype=F64, requires_grad=True)
    fns = [lambda x: slab_density(x) * scale, lambda x: slab_density(x) * scale ** 2]
    for requires_grad in (False, True):
        out = proposal_samples(origins, directions, near, far, fns, [32, 16], 8, requires_grad=requires_grad)
        assert [w.requires_grad for _, _, w in out.proposals] == [requires_grad] * 2
        assert not out.t_starts.requires_grad and not out.proposals[1][0].requires_grad
    same = proposal_samples(origins, directions, near, far, fns, [32, 16], 8, stratified=True, generator=seeded(5))
    again = proposal_samples(origins, directions, near, far, fns, [32, 16], 8, stratified=True, generator=seeded(5))
    assert torch.equal(same.t_starts, again.t_starts)


def test_normalized_distance_inverts_the_spacing():
    near, far = torch.tensor([0.5, 1.0, 2.0], dtype=F64), torch.tensor([4.5, 1.0, 1e3], dtype=F64)
    for spacing, sampler in (("uniform", uniform_samples), ("disparity", disparity_samples)):
        t_starts, t_ends = sampler(near, far, 10)
        s = normalized_distance(edges_of(t_starts, t_ends), near, far, spacing)
        expected = torch.arange(11, dtype=F64) / 10 * (far > near)[:, None]  # 0 on the zero-length ray
        torch.testing.assert_close(s, expected.expand(3, 11), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------- interlevel


def test_outer_measure_and_interlevel_loss_match_brute_force():
    t_starts, t_ends = random_bins(20, 48, seed=1)
    weights = torch.rand(20, 48, generator=seeded(2), dtype=F64) / 24
    proposals = []
    for k, count in enumerate((7, 33, 48)):
        p_starts, p_ends = random_bins(20, count, seed=10 + k)
        proposals.append((p_starts, p_ends, torch.rand(20, count, generator=seeded(20 + k), dtype=F64) / count))
    # shared edges: a proposal on the same bins (touching neighbours must not count), and coarser bins
    proposals.append((t_starts, t_ends, weights * 0.7))
    proposals.append((t_starts[:, ::4], t_ends[:, 3::4], weights.reshape(20, 12, 4).sum(-1) * 0.9))
    for proposal in proposals:
        torch.testing.assert_close(outer_measure(t_starts, t_ends, proposal), brute_outer(t_starts, t_ends, *proposal),
                                   rtol=1e-12, atol=1e-15)
    loss = interlevel_loss(t_starts, t_ends, weights, proposals)
    torch.testing.assert_close(loss, brute_interlevel(t_starts, t_ends, weights, proposals), rtol=1e-12, atol=0)
    # zero-length fine bins (padding of short rays) inside a proposal bin and on its edge
    short = (torch.tensor([[0.2, 0.5]], dtype=F64), torch.tensor([[0.2, 0.5]], dtype=F64))
    coarse = (torch.tensor([[0.0, 0.5]], dtype=F64), torch.tensor([[0.5, 1.0]], dtype=F64),
              torch.tensor([[0.3, 0.6]], dtype=F64))
    torch.testing.assert_close(outer_measure(*short, coarse), brute_outer(*short, *coarse))


def test_interlevel_loss_matches_nerfacc_reference():
    prop_net = pytest.importorskip("nerfacc.estimators.prop_net")
    t_starts, t_ends = random_bins(16, 40, seed=3)
    weights = torch.rand(16, 40, generator=seeded(4), dtype=F64) / 20
    p_starts, p_ends = random_bins(16, 24, seed=5)
    p_weights = torch.rand(16, 24, generator=seeded(6), dtype=F64) / 12
    theirs = prop_net._lossfun_outer(edges_of(t_starts, t_ends), weights, edges_of(p_starts, p_ends), p_weights)
    ours = interlevel_loss(t_starts, t_ends, weights, [(p_starts, p_ends, p_weights)])
    torch.testing.assert_close(ours, theirs.mean(), rtol=1e-12, atol=0)


def test_interlevel_loss_is_zero_for_an_upper_bound_and_positive_for_missed_mass():
    origins, directions, near, far = slab_rays(6)
    t_starts, t_ends = uniform_samples(near, far, 64)
    weights = exact_slab_weights(t_starts, t_ends)
    same = (t_starts, t_ends, weights.clone())
    coarse = (t_starts[:, ::2], t_ends[:, 1::2], weights.reshape(6, 32, 2).sum(-1))
    assert interlevel_loss(t_starts, t_ends, weights, [same, coarse]) < 1e-25
    assert interlevel_loss(t_starts, t_ends, weights, []) == 0
    shifted = (t_starts, t_ends, torch.roll(weights, 6, dims=-1))  # the proposal puts the slab 0.375 m too far
    halved = (t_starts, t_ends, weights / 2)
    expected_halved = (weights / 4).mean()  # (w - w/2)^2 / w = w / 4
    torch.testing.assert_close(interlevel_loss(t_starts, t_ends, weights, [halved]), expected_halved)
    assert interlevel_loss(t_starts, t_ends, weights, [shifted]) > 0.5 * weights.mean()


def test_interlevel_gradients_reach_proposal_weights_only():
    t_starts, t_ends = random_bins(5, 16, seed=7)
    weights = (torch.rand(5, 16, generator=seeded(8), dtype=F64) / 8).requires_grad_()
    p_starts, p_ends = random_bins(5, 8, seed=9)
    p_weights = (torch.rand(5, 8, generator=seeded(10), dtype=F64) / 16).requires_grad_()
    loss = interlevel_loss(t_starts, t_ends, weights * 1.0, [(p_starts, p_ends, p_weights)])
    loss.backward()
    assert weights.grad is None
    assert p_weights.grad is not None and (p_weights.grad <= 0).all() and (p_weights.grad < 0).any()
    # the slope matches brute force: d/dp of sum relu(w - outer)^2 / (w + eps)
    p_weights.grad = None
    brute = brute_interlevel(t_starts, t_ends, weights.detach(), [(p_starts, p_ends, p_weights)])
    expected = torch.autograd.grad(brute, p_weights)[0]
    torch.testing.assert_close(torch.autograd.grad(interlevel_loss(t_starts, t_ends, weights,
                                                                   [(p_starts, p_ends, p_weights)]), p_weights)[0],
                               expected)


# ---------------------------------------------------------------------------------------- distortion


def brute_distortion(t_starts, t_ends, weights):
    midpoints = (t_starts + t_ends) / 2
    inter = (weights[..., :, None] * weights[..., None, :]
             * (midpoints[..., :, None] - midpoints[..., None, :]).abs()).sum((-1, -2))
    return inter + (weights ** 2 * (t_ends - t_starts)).sum(-1) / 3


def test_distortion_loss_matches_brute_force_and_gradcheck():
    t_starts, t_ends = random_bins(6, 30, seed=11, near=2.0, far=50.0)
    weights = torch.rand(6, 30, generator=seeded(12), dtype=F64) / 15
    torch.testing.assert_close(distortion_loss(t_starts, t_ends, weights), brute_distortion(t_starts, t_ends, weights),
                               rtol=1e-12, atol=1e-12)
    # a single bin: only the intra term w^2 delta / 3; a delta of weight: 0 whatever the distance
    one = distortion_loss(torch.tensor([[1.0]]), torch.tensor([[4.0]]), torch.tensor([[0.5]]))
    torch.testing.assert_close(one, torch.tensor([0.25]))
    tiny = (t_starts[:2, :8].clone().requires_grad_(), t_ends[:2, :8].clone().requires_grad_(),
            weights[:2, :8].clone().requires_grad_())
    assert torch.autograd.gradcheck(distortion_loss, tiny)
    torch.testing.assert_close(torch.autograd.grad(distortion_loss(*tiny).sum(), tiny),
                               torch.autograd.grad(brute_distortion(*tiny).sum(), tiny))


# -------------------------------------------------------------------------------------------- module


def test_sampler_fields_learn_to_bound_the_slab():
    """Train the proposal fields on a bundle of rays through the slab with the interlevel loss against the exact
    weights on 256 fixed bins: the loss (deterministic samples) must drop by more than 20x (about 200x here)."""
    torch.manual_seed(0)
    config = ProposalConfig(num_samples_per_proposal=(64, 32), num_samples=32, aabb=(0.0, -0.5, -0.5, 5.0, 0.5, 0.5),
                            num_levels=4, base_resolution=8, max_resolutions=(32, 32), log2_hashmap_size=12)
    sampler = ProposalNetworkSampler(config)
    assert sampler.num_proposals == 2
    origins, directions, near, far = slab_rays(32, torch.float32)
    t_starts, t_ends = uniform_samples(near, far, 256)
    target = exact_slab_weights(t_starts, t_ends)

    def evaluate():
        with torch.no_grad():
            return sampler.loss(t_starts, t_ends, target, sampler.sample(origins, directions, near, far).proposals)

    before = evaluate()
    optimizer = torch.optim.Adam(sampler.parameters(), lr=1e-2, eps=1e-15)
    generator = seeded(1)
    for _ in range(100):
        out = sampler.sample(origins, directions, near, far, stratified=True, generator=generator, requires_grad=True)
        loss = sampler.loss(t_starts, t_ends, target, out.proposals)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = evaluate()
    assert before > 20 * after
    out = sampler.sample(origins, directions, near, far)
    inside = ((out.t_starts >= SLAB_START - 0.1) & (out.t_ends <= SLAB_END + 0.1)).float().mean()
    assert inside > 0.8


def test_sampler_contraction_and_default_config():
    sampler = ProposalNetworkSampler(ProposalConfig(contraction="linf", spacing="disparity", log2_hashmap_size=10,
                                                    max_resolutions=(32, 32)))
    assert sampler.fields[0].encoding.bounds.tolist() == [[-2.0] * 3, [2.0] * 3]
    far_points = torch.tensor([[100.0, 0.0, 0.0], [0.0, -1e4, 3.0]])
    assert (sampler.fields[1](far_points) > 0).all()  # contracted into the grid: density everywhere
    bounded = ProposalNetworkSampler()
    assert bounded.fields[0](far_points).eq(0).all()  # outside the aabb
    origins, directions = torch.zeros(3, 3), torch.nn.functional.normalize(torch.randn(3, 3), dim=-1)
    out = sampler(origins, directions, torch.full((3,), 0.1), torch.full((3,), 100.0))
    assert out.t_starts.shape == (3, 32) and [p[0].shape[-1] for p in out.proposals] == [128, 64]


# --------------------------------------------------------------------------------------------- errors


def _bad_calls():
    origins, directions, near, far = slab_rays(3)
    fns = [slab_density]
    bins = uniform_samples(near, far, 4)
    weights = torch.ones(3, 4, dtype=F64)
    return [
        (lambda: proposal_samples(origins[:, :2], directions[:, :2], near, far, fns, [8], 4), "origins must have"),
        (lambda: proposal_samples(origins, directions[:2], near, far, fns, [8], 4), "directions must match"),
        (lambda: proposal_samples(origins, directions, near[:2], far[:2], fns, [8], 4), "near must have the shape"),
        (lambda: proposal_samples(origins, directions, far, near, fns, [8], 4), "far must be >= near"),
        (lambda: proposal_samples(origins, directions, near * 0, far, fns, [8], 4, spacing="disparity"),
         "near must be > 0"),
        (lambda: proposal_samples(origins, directions, near, far, fns, [8], 4, spacing="log"), "spacing must be"),
        (lambda: proposal_samples(origins, directions, near, far, [], [], 4), "density_fns must be a non-empty"),
        (lambda: proposal_samples(origins, directions, near, far, [1.0], [8], 4), "density_fns must be"),
        (lambda: proposal_samples(origins, directions, near, far, fns, [8, 4], 4), "num_samples_per_proposal must"),
        (lambda: proposal_samples(origins, directions, near, far, fns, [0], 4), r"num_samples_per_proposal\[0\]"),
        (lambda: proposal_samples(origins, directions, near, far, fns, [8], 0), "num_samples must be"),
        (lambda: proposal_samples(origins, directions, near, far, fns, [8], 4, padding=-1.0), "padding must be"),
        (lambda: proposal_samples(origins * math.nan, directions, near, far, fns, [8], 4), "origins holds NaN"),
        (lambda: proposal_samples(origins, directions, near, far, [lambda x: x], [8], 4),
         r"density_fns\[0\] must return a float tensor \[N\]"),
        (lambda: proposal_samples(origins, directions, near, far, [slab_density, lambda x: -slab_density(x)],
                                  [8, 8], 4), r"density_fns\[1\] output must be >= 0"),
        (lambda: interlevel_loss(*bins, weights[:, :3], []), "weights must match t_starts"),
        (lambda: interlevel_loss(*bins, weights, [bins]), r"proposals\[0\] must be a tuple"),
        (lambda: interlevel_loss(*bins, weights, (*bins, weights)), r"proposals\[0\] must be a tuple"),
        (lambda: interlevel_loss(*bins, weights, [(bins[0], bins[1], weights[:, :2])]),
         r"proposals\[0\] weights must match"),
        (lambda: interlevel_loss(*bins, weights, [(bins[0][:2], bins[1][:2], weights[:2])]),
         r"proposals\[0\] t_starts must have the leading shape"),
        (lambda: distortion_loss(bins[0][:, :0], bins[1][:, :0], weights[:, :0]), "S >= 1"),
        (lambda: normalized_distance(bins[0], near[:2], far[:2]), "t must have shape"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_bad_inputs_raise_render_error_naming_the_argument(case):
    call, message = _bad_calls()[case]
    with pytest.raises(RenderError, match=message):
        call()


@pytest.mark.parametrize("field, value", [
    ("num_samples_per_proposal", ()), ("num_samples_per_proposal", (64, 0)), ("num_samples", 0),
    ("spacing", "log"), ("contraction", "l1"), ("aabb", (0, 0, 0, 1, 1)), ("aabb", (0, 0, 0, 1, -1, 1)),
    ("max_resolutions", (128,)), ("max_resolutions", (8, 128)), ("log2_hashmap_size", 31), ("hidden_dim", 0),
    ("padding", -0.1), ("num_levels", True),
])
def test_config_check_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ProposalConfig(**{field: value}).check()
    with pytest.raises(ValueError, match=field):
        ProposalNetworkSampler(ProposalConfig(**{field: value}))
