"""Tests of geo3d.render.volume: closed forms (constant-density slab and sphere), packed == padded on ragged
rays, float64 gradcheck, precision of the packed cumulative sum on long rays, nerfacc's CPU functions as a
second reference, CPU == CUDA, and input errors."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from geo3d.errors import Geo3dError, MissingDependencyError
from geo3d.render import (
    RenderError,
    accumulate_along_rays,
    packed_exclusive_cumsum,
    render_rays,
    render_weights_from_alpha,
    render_weights_from_density,
    transmittance_from_alpha,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64

# ------------------------------------------------------------------------------------------ helpers


def uniform_intervals(near: float, far: float, count: int, rays: int = 1, dtype=F64):
    edges = torch.linspace(near, far, count + 1, dtype=dtype)
    return edges[:-1].expand(rays, count).clone(), edges[1:].expand(rays, count).clone()


def ragged(seed: int, counts: list[int], channels: int = 3, dtype=F64) -> tuple[dict, dict, torch.Tensor]:
    """The same rays padded ``[R, S]`` (padding: zero density and length) and packed ``[N]`` (the keyword
    arguments of ``render_rays``), and the ``[R, S]`` mask of real samples. The intervals have gaps between
    them, as after empty-space skipping."""
    gen = torch.Generator().manual_seed(seed)
    counts_t = torch.tensor(counts)
    rays, samples = len(counts), max(max(counts), 1)
    mask = torch.arange(samples)[None] < counts_t[:, None]
    deltas = (torch.rand(rays, samples, generator=gen, dtype=dtype) * 0.2 + 0.01) * mask
    gaps = torch.rand(rays, samples, generator=gen, dtype=dtype) * 0.1 * mask
    t_starts = 0.5 + torch.cumsum(deltas + gaps, -1) - deltas
    padded = {
        "t_starts": t_starts,
        "t_ends": t_starts + deltas,
        "sigmas": torch.rand(rays, samples, generator=gen, dtype=dtype) * 4 * mask,
        "values": torch.rand(rays, samples, channels, generator=gen, dtype=dtype),
    }
    packed = {name: tensor[mask] for name, tensor in padded.items()}
    packed["ray_indices"] = torch.arange(rays)[:, None].expand(rays, samples)[mask]
    packed["n_rays"] = rays
    return padded, packed, mask


def truncated_exponential_mean(sigma: float, start: float, length: float) -> float:
    """Mean of the stopping distance of a ray stopping inside ``[start, start + length]`` of density ``sigma``:
    ``start + 1/sigma - L e^(-sigma L) / (1 - e^(-sigma L))``."""
    return start + 1.0 / sigma - length * math.exp(-sigma * length) / -math.expm1(-sigma * length)


# ------------------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("packed", [False, True])
def test_constant_density_slab_closed_forms(packed):
    sigma, a, b, color = 2.5, 1.0, 2.2, torch.tensor([0.2, 0.5, 0.9], dtype=F64)
    errors = []
    for count in (300, 3000):  # [0, 3] m: a and b fall on interval boundaries
        t_starts, t_ends = uniform_intervals(0.0, 3.0, count)
        midpoints = (t_starts + t_ends) / 2
        sigmas = torch.where((midpoints > a) & (midpoints < b), sigma, 0.0)
        values = color.expand(1, count, 3)
        if packed:  # keep only the samples inside the slab: skipping empty space changes nothing
            keep = sigmas[0] > 0
            args = (t_starts[0, keep], t_ends[0, keep], sigmas[0, keep], values[0, keep])
            out = render_rays(*args, torch.zeros(int(keep.sum()), dtype=torch.int64), 1, normalize_distance=True)
        else:
            out = render_rays(t_starts, t_ends, sigmas, values, normalize_distance=True)
        opacity = -math.expm1(-sigma * (b - a))
        assert out.opacity.item() == pytest.approx(opacity, abs=1e-12)
        torch.testing.assert_close(out.features[0], color * opacity, atol=1e-12, rtol=0)
        errors.append(abs(out.distance.item() - truncated_exponential_mean(sigma, a, b - a)))
    # midpoint rule inside each interval: error ~ sigma delta^2 / 12, so 100x smaller for 10x the samples
    assert errors[1] < 1e-6 and errors[1] < errors[0] / 50, errors


def test_sphere_of_constant_density_chord_lengths():
    sigma, radius, centre = 0.8, 1.5, torch.tensor([0.0, 0.0, 5.0], dtype=F64)
    impact = torch.tensor([0.0, 0.3, 0.9, 1.2, 1.45, 1.6], dtype=F64)  # the last ray misses
    directions = torch.stack([impact, torch.zeros_like(impact), (25 - impact**2).sqrt()], -1) / 5  # unit
    count, near, far = 4000, 0.0, 10.0
    t_starts, t_ends = uniform_intervals(near, far, count, rays=len(impact))
    midpoints = directions[:, None, :] * ((t_starts + t_ends) / 2)[..., None]
    sigmas = torch.where((midpoints - centre).norm(dim=-1) < radius, sigma, 0.0)
    values = torch.ones(len(impact), count, 1, dtype=F64)
    out = render_rays(t_starts, t_ends, sigmas, values, normalize_distance=True)

    half_chord = (radius**2 - impact**2).clamp(min=0).sqrt()
    expected = -torch.expm1(-sigma * 2 * half_chord)
    delta = (far - near) / count
    torch.testing.assert_close(out.opacity[:, 0], expected, atol=2 * sigma * delta, rtol=0)
    hits = half_chord > 0
    entry = 5 * (directions[:, 2] * 1.0) - half_chord  # |c| cos(theta) - half chord (c on the z axis)
    mean = [truncated_exponential_mean(sigma, entry[i].item(), 2 * half_chord[i].item()) for i in range(len(impact))
            if hits[i]]
    torch.testing.assert_close(out.distance[hits, 0], torch.tensor(mean, dtype=F64), atol=2 * delta, rtol=0)
    assert out.distance[~hits].eq(0).all() and out.opacity[~hits].eq(0).all()


def test_weights_sum_to_opacity_and_transmittance_is_what_is_left():
    padded, packed, _ = ragged(0, [5, 0, 17, 1, 9])
    for args in (padded, packed):
        keys = ("t_starts", "t_ends", "sigmas", "ray_indices", "n_rays")
        sample = {k: args[k] for k in keys if k in args}
        weights, transmittance, alphas = render_weights_from_density(**sample)
        opacity = accumulate_along_rays(weights, None, args.get("ray_indices"), args.get("n_rays"))[:, 0]
        optical = accumulate_along_rays(args["sigmas"] * (args["t_ends"] - args["t_starts"]), None,
                                        args.get("ray_indices"), args.get("n_rays"))[:, 0]
        torch.testing.assert_close(opacity, -torch.expm1(-optical), atol=1e-13, rtol=0)
        torch.testing.assert_close(weights, transmittance * alphas)
        assert ((transmittance >= 0) & (transmittance <= 1)).all()


def test_alpha_and_density_paths_agree():
    padded, packed, _ = ragged(1, [7, 3, 0, 12])
    for args in (padded, packed):
        index = {k: args[k] for k in ("ray_indices", "n_rays") if k in args}
        from_density = render_weights_from_density(args["t_starts"], args["t_ends"], args["sigmas"], **index)
        from_alpha = render_weights_from_alpha(from_density.alphas, **index)
        torch.testing.assert_close(from_alpha.weights, from_density.weights, atol=1e-14, rtol=1e-12)
        torch.testing.assert_close(transmittance_from_alpha(from_density.alphas, **index), from_density.transmittance)


def test_opaque_sample_blocks_the_rest_of_the_ray():
    alphas = torch.tensor([[0.3, 1.0, 0.5, 0.2]], dtype=F64, requires_grad=True)
    transmittance = transmittance_from_alpha(alphas)
    assert transmittance[0, 2:].eq(0).all()
    transmittance.sum().backward()
    # exact cumprod gradient through the opaque sample: dT_2/da_1 + dT_3/da_1 = -0.7 - 0.7 * 0.5
    assert alphas.grad[0, 1].item() == pytest.approx(-1.05) and torch.isfinite(alphas.grad).all()
    packed = transmittance_from_alpha(alphas.detach()[0], torch.zeros(4, dtype=torch.int64), 1)
    assert packed[2:].max() < 1e-15
    torch.testing.assert_close(packed[:2], transmittance[0, :2].detach())


def test_empty_rays_and_samples():
    empty = torch.zeros(0, dtype=F64)
    out = render_rays(empty, empty, empty, torch.zeros(0, 3, dtype=F64), torch.zeros(0, dtype=torch.int64), 4,
                      background=torch.tensor([0.1, 0.2, 0.3], dtype=F64))
    assert out.features.shape == (4, 3) and out.opacity.eq(0).all() and out.distance.eq(0).all()
    torch.testing.assert_close(out.features, torch.tensor([[0.1, 0.2, 0.3]], dtype=F64).expand(4, 3))
    zero_samples = torch.zeros(2, 0, dtype=F64)
    out = render_rays(zero_samples, zero_samples, zero_samples, torch.zeros(2, 0, 5, dtype=F64))
    assert out.features.shape == (2, 5) and out.opacity.eq(0).all()


def test_background_and_depth_normalisation():
    t_starts, t_ends = uniform_intervals(1.0, 2.0, 4, rays=3)
    sigmas = torch.tensor([[0.0] * 4, [1e4] * 4, [0.5] * 4], dtype=F64)  # empty, opaque, half-transparent
    values = torch.full((3, 4, 3), 0.5, dtype=F64)
    background = torch.tensor([1.0, 0.0, 0.25], dtype=F64)
    out = render_rays(t_starts, t_ends, sigmas, values, background=background, normalize_distance=True)
    torch.testing.assert_close(out.features[0], background)
    torch.testing.assert_close(out.features[1], values[1, 0])
    torch.testing.assert_close(out.features[2], 0.5 * out.opacity[2] + (1 - out.opacity[2]) * background)
    assert out.distance[0] == 0 and out.distance[1].item() == pytest.approx(1.125)
    scalar = render_rays(t_starts, t_ends, sigmas, values, background=1.0)
    torch.testing.assert_close(scalar.features[0], torch.ones(3, dtype=F64))
    unnormalised = render_rays(t_starts, t_ends, sigmas, values).distance
    torch.testing.assert_close(unnormalised, out.distance * out.opacity)


# ------------------------------------------------------------------------------- packed == padded


@pytest.mark.parametrize("seed", [2, 3])
def test_packed_equals_padded_with_ragged_counts(seed):
    counts = torch.randint(0, 24, (12,), generator=torch.Generator().manual_seed(seed)).tolist() + [0, 30]
    padded, packed, mask = ragged(seed, counts)
    for args in (padded, packed):
        for name in ("sigmas", "values", "t_ends"):
            args[name].requires_grad_(True)
    background = torch.tensor([0.3, 0.6, 0.9], dtype=F64)
    outs = [render_rays(**args, background=background, normalize_distance=True) for args in (padded, packed)]
    weights = [render_weights_from_density(a["t_starts"], a["t_ends"], a["sigmas"], a.get("ray_indices"),
                                           a.get("n_rays")) for a in (padded, packed)]
    for field in ("features", "opacity", "distance"):
        torch.testing.assert_close(getattr(outs[1], field), getattr(outs[0], field), atol=1e-12, rtol=1e-10)
    for a, b in zip(weights[0], weights[1]):
        torch.testing.assert_close(b, a[mask], atol=1e-12, rtol=1e-10)
    gen = torch.Generator().manual_seed(7)
    probes = [torch.randn(outs[0].features.shape, generator=gen, dtype=F64), torch.randn(len(counts), 1, dtype=F64)]
    grads = []
    for args, out in zip((padded, packed), outs):
        loss = (out.features * probes[0]).sum() + (out.opacity * probes[1]).sum() + (out.distance * probes[1]).sum()
        grads.append(torch.autograd.grad(loss, [args["sigmas"], args["values"], args["t_ends"]]))
    for padded_grad, packed_grad in zip(*grads):
        torch.testing.assert_close(packed_grad, padded_grad[mask], atol=1e-11, rtol=1e-9)


def test_packed_cumsum_keeps_precision_on_long_rays():
    gen = torch.Generator().manual_seed(4)
    long_ray = torch.rand(200_000, generator=gen) * 10  # a running sum of ~1e6 before the short ray
    short_ray = torch.rand(1000, generator=gen) * 1e-3
    values = torch.cat([long_ray, short_ray])
    ray_indices = torch.cat([torch.zeros(200_000, dtype=torch.int64), torch.ones(1000, dtype=torch.int64)])
    reference = torch.cat([torch.cumsum(part.double(), 0) - part.double() for part in (long_ray, short_ray)])
    precise = packed_exclusive_cumsum(values, ray_indices, 2)
    assert precise.dtype == torch.float32
    torch.testing.assert_close(precise.double(), reference, rtol=1e-6, atol=1e-7)
    # float32 running sums lose the short ray to the long one (float32 resolves 0.06 at 1e6)
    naive = packed_exclusive_cumsum(values, ray_indices, 2, accumulate_dtype=None)
    assert (naive[200_000:].double() - reference[200_000:]).abs().max() > 1e-3
    # the transmittance of the short ray stays exact in float32
    t_starts = torch.ones(len(values))
    weights = render_weights_from_density(t_starts, t_starts + 1.0, values, ray_indices, 2)
    torch.testing.assert_close(weights.transmittance[200_000:].double(), torch.exp(-reference[200_000:]),
                               rtol=1e-6, atol=0)


# ---------------------------------------------------------------------------------------- gradcheck


def test_gradcheck_padded_and_packed():
    padded, packed, _ = ragged(5, [3, 0, 4, 2], channels=2)
    for args in (padded, packed):
        index = (args.get("ray_indices"), args.get("n_rays"))
        inputs = [args[k].clone().requires_grad_(True) for k in ("t_starts", "t_ends", "sigmas", "values")]
        background = torch.tensor([0.2, 0.7], dtype=F64, requires_grad=True)

        def rendered(t_starts, t_ends, sigmas, values, background):
            # check=False: gradcheck moves the zero-length padding intervals to t_end < t_start
            out = render_rays(t_starts, t_ends, sigmas, values, *index, background=background, normalize_distance=True,
                              check=False)
            return out.features, out.opacity, out.distance

        assert torch.autograd.gradcheck(rendered, (*inputs, background))
        alphas = (args["sigmas"] / 5 + 0.1).requires_grad_(True)
        assert torch.autograd.gradcheck(lambda a: render_weights_from_alpha(a, *index)[:2], (alphas,))
    values = packed["sigmas"].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: packed_exclusive_cumsum(v, packed["ray_indices"], 4), (values,))


# ----------------------------------------------------------------------------------------- back-ends


def _nerfacc():
    return pytest.importorskip("nerfacc", reason="nerfacc not installed (pip install -e .[gpu]): no second reference")


def test_matches_nerfacc_cpu_padded_functions():
    nerfacc = _nerfacc()
    padded, _, _ = ragged(6, [8, 3, 0, 11])
    sigmas = padded["sigmas"].clone().requires_grad_(True)
    ours = render_weights_from_density(padded["t_starts"], padded["t_ends"], sigmas)
    theirs = nerfacc.render_weight_from_density(padded["t_starts"], padded["t_ends"], sigmas)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    probe = torch.randn_like(sigmas)
    grads = [torch.autograd.grad((w * probe).sum(), sigmas)[0] for w in (ours.weights, theirs[0])]
    torch.testing.assert_close(*grads)
    alphas = ours.alphas.detach()
    torch.testing.assert_close(transmittance_from_alpha(alphas), nerfacc.render_transmittance_from_alpha(alphas))
    torch.testing.assert_close(render_weights_from_alpha(alphas).weights, nerfacc.render_weight_from_alpha(alphas)[0])
    values = padded["values"]
    torch.testing.assert_close(accumulate_along_rays(ours.weights, values),
                               nerfacc.accumulate_along_rays(theirs[0], values))
    via_backend = render_weights_from_density(padded["t_starts"], padded["t_ends"], sigmas, backend="nerfacc")
    torch.testing.assert_close(via_backend.weights, ours.weights)


def test_backend_choice_and_errors(monkeypatch):
    padded, packed, _ = ragged(8, [4, 2])
    args = (packed["t_starts"], packed["t_ends"], packed["sigmas"], packed["ray_indices"], 2)
    auto = render_weights_from_density(*args, backend="auto")  # CPU: always the torch path
    torch.testing.assert_close(auto.weights, render_weights_from_density(*args).weights)
    with pytest.raises(RenderError, match="backend must be one of"):
        render_weights_from_density(*args, backend="cuda")
    with pytest.raises(RenderError, match="only on CUDA"):
        render_weights_from_density(*args, backend="nerfacc")
    monkeypatch.setitem(sys.modules, "nerfacc", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"\[gpu\]"):
        transmittance_from_alpha(padded["sigmas"] / 10, backend="nerfacc")


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["torch", "nerfacc"])
def test_cuda_matches_cpu(backend):
    if backend == "nerfacc":
        _nerfacc()
    padded, packed, mask = ragged(9, [5, 0, 40, 7, 1], dtype=torch.float32)
    for args in (padded, packed):
        cpu = render_rays(**args, normalize_distance=True)
        cuda_args = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in args.items()}
        gpu = render_rays(**cuda_args, normalize_distance=True, backend=backend)
        assert gpu.features.device.type == "cuda"
        for a, b in zip(cpu, gpu):
            torch.testing.assert_close(b.cpu(), a, atol=1e-5, rtol=1e-5)
    alphas = packed["sigmas"] / 5
    index = (packed["ray_indices"], packed["n_rays"])
    gpu = transmittance_from_alpha(alphas.cuda(), index[0].cuda(), index[1], backend=backend)
    torch.testing.assert_close(gpu.cpu(), transmittance_from_alpha(alphas, *index), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------- errors


def _bad_inputs():
    t0, t1 = uniform_intervals(0.0, 1.0, 4, rays=2)
    sigmas, values = torch.ones(2, 4, dtype=F64), torch.ones(2, 4, 3, dtype=F64)
    flat = torch.ones(5, dtype=F64)
    idx = torch.tensor([0, 0, 1, 1, 1])
    return [
        (lambda: render_weights_from_density(t0, t1, sigmas[:, :3]), "sigmas must have the shape of t_starts"),
        (lambda: render_weights_from_density(t0, t1, sigmas.clone().fill_(float("nan"))), "sigmas holds NaN"),
        (lambda: render_weights_from_density(t0, t1, -sigmas), "sigmas must be >= 0"),
        (lambda: render_weights_from_density(t1, t0, sigmas), "t_ends must be >= t_starts"),
        (lambda: render_weights_from_density(t0, t1, sigmas.long()), "sigmas must be a floating-point"),
        (lambda: render_weights_from_density(t0, t1, sigmas, n_rays=2), "n_rays is only used with ray_indices"),
        (lambda: render_weights_from_density(flat, flat, flat, idx.flip(0), 2), "ray_indices must be sorted"),
        (lambda: render_weights_from_density(flat, flat, flat, idx, 1), r"ray_indices must be in \[0, n_rays=1\)"),
        (lambda: render_weights_from_density(flat, flat, flat, idx.int(), 2), "ray_indices must be int64"),
        (lambda: render_weights_from_density(flat, flat, flat, idx[:4], 2), "packed samples need"),
        (lambda: render_weights_from_density(flat, flat, flat, idx, None), "n_rays must be a non-negative int"),
        (lambda: render_weights_from_alpha(sigmas * 2), r"alphas must be <= 1.0"),
        (lambda: transmittance_from_alpha(-sigmas), r"alphas must be >= 0.0"),
        (lambda: transmittance_from_alpha([0.5]), "alphas must be a torch.Tensor"),
        (lambda: accumulate_along_rays(sigmas, values[:, :3]), "values must have shape"),
        (lambda: accumulate_along_rays(sigmas, values * float("inf")), "values holds NaN or inf"),
        (lambda: render_rays(t0, t1, sigmas, values, background=torch.ones(4)), "background must broadcast"),
        (lambda: packed_exclusive_cumsum(flat, None, 2), "ray_indices is required"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_inputs())))
def test_bad_inputs_raise_render_error_naming_the_argument(case):
    call, message = _bad_inputs()[case]
    with pytest.raises(RenderError, match=message) as info:
        call()
    assert isinstance(info.value, Geo3dError) and isinstance(info.value, ValueError)


def test_check_false_skips_value_checks():
    t0, t1 = uniform_intervals(0.0, 1.0, 4)
    weights = render_weights_from_density(t0, t1, -torch.ones(1, 4, dtype=F64), check=False).weights
    assert weights.shape == (1, 4)
