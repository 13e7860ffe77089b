"""NeuralSDF: fitting an analytic sphere from SDF samples and from an oriented point cloud (IGR),
against the exact SDF; determinism, checkpoints, gradients and config validation."""

from __future__ import annotations

import pytest
import torch

from geo3d.errors import SDFError
from geo3d.sdf.neural import (
    FitResult,
    IGRFitConfig,
    NeuralSDF,
    NeuralSDFConfig,
    SDFFitConfig,
    fit_oriented_points,
    fit_sdf_samples,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RADIUS = 0.35
CENTER = torch.tensor([0.05, -0.03, 0.02])
BOUNDS = ((-0.6, -0.6, -0.6), (0.6, 0.6, 0.6))


def exact_sdf(points: torch.Tensor) -> torch.Tensor:
    return (points - CENTER).norm(dim=-1) - RADIUS


def sphere_samples(count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator), dim=-1)
    near = CENTER + directions * (RADIUS + 0.02 * torch.randn(count, 1, generator=generator))
    uniform = -0.6 + 1.2 * torch.rand(count // 4, 3, generator=generator)
    points = torch.cat((near, uniform))
    return points, exact_sdf(points)


def small_model(**overrides) -> NeuralSDF:
    options = dict(bounds=BOUNDS, num_levels=4, base_resolution=4, max_resolution=32, log2_hashmap_size=12,
                   hidden_dim=32, num_layers=2, init_radius=0.3)
    options.update(overrides)
    return NeuralSDF(NeuralSDFConfig(**options))


def surface_error(model: NeuralSDF, count: int = 2000) -> torch.Tensor:
    """|f| at exact surface points of the sphere."""
    generator = torch.Generator().manual_seed(9)
    directions = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator), dim=-1)
    with torch.no_grad():
        return model(CENTER + RADIUS * directions).abs()


@pytest.mark.parametrize("encoding", ["grid", "frequency"])
def test_fit_samples_recovers_the_sphere(encoding):
    points, sdf = sphere_samples(20_000)
    model = small_model(encoding=encoding, num_frequencies=4)
    calls = []
    result = fit_sdf_samples(model, points, sdf, SDFFitConfig(steps=300, batch_size=2048, learning_rate=5e-3),
                             progress=lambda step, loss: calls.append((step, loss)))
    assert isinstance(result, FitResult) and result.steps == 300 and result.losses.shape == (300,)
    assert [c[0] for c in calls] == list(range(1, 301))
    assert result.losses[-20:].mean() < 0.2 * result.losses[:20].mean()
    assert surface_error(model).mean() < 0.006  # 0.5 % of the box side
    test_points = sphere_samples(4000, seed=1)[0]
    near = exact_sdf(test_points).abs() < 0.05
    with torch.no_grad():
        error = (model(test_points) - exact_sdf(test_points)).abs()
    assert error[near].mean() < 0.01


def test_fit_with_eikonal_term_gives_unit_gradients():
    points, sdf = sphere_samples(10_000)
    model = small_model()
    fit_sdf_samples(model, points, sdf, SDFFitConfig(steps=150, batch_size=1024, learning_rate=5e-3,
                                                     eikonal_weight=0.1, eikonal_batch_size=512))
    probe = CENTER + torch.nn.functional.normalize(torch.randn(500, 3), dim=-1) * (RADIUS + 0.03)
    _, grad = model.gradient(probe)
    assert (grad.norm(dim=-1) - 1).abs().mean() < 0.15
    assert surface_error(model).mean() < 0.01


def test_igr_fit_of_oriented_points_finds_the_zero_level_set():
    generator = torch.Generator().manual_seed(3)
    normals = torch.nn.functional.normalize(torch.randn(5000, 3, generator=generator), dim=-1)
    points = CENTER + RADIUS * normals
    model = NeuralSDF(NeuralSDFConfig(encoding="none", bounds=BOUNDS, hidden_dim=64, num_layers=3, init_radius=0.2))
    result = fit_oriented_points(model, points, normals, IGRFitConfig(steps=300, batch_size=512, learning_rate=5e-3))
    assert result.losses[-10:].mean() < result.losses[:10].mean()
    assert surface_error(model).mean() < 0.01
    # the zero crossing along rays from the centre lies at the radius
    radii = torch.linspace(0.05, 0.55, 501)
    direction = torch.nn.functional.normalize(torch.tensor([[0.3, -0.5, 0.8], [-1.0, 0.2, 0.1]]), dim=-1)
    with torch.no_grad():
        values = model(CENTER + radii[:, None, None] * direction)  # [R, 2]
    crossing = radii[(values > 0).float().argmax(0)]
    torch.testing.assert_close(crossing, torch.full((2,), RADIUS), atol=0.01, rtol=0)
    _, grad = model.gradient(points[:200])
    cosine = (torch.nn.functional.normalize(grad, dim=-1) * normals[:200]).sum(-1)
    assert cosine.mean() > 0.98


def test_fitting_is_deterministic_and_leaves_global_rng_alone():
    points, sdf = sphere_samples(2000)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    runs = []
    for _ in range(2):
        model = small_model()
        runs.append(fit_sdf_samples(model, points, sdf, SDFFitConfig(steps=20, batch_size=256)).losses)
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(torch.get_rng_state(), state)
    other = fit_sdf_samples(small_model(), points, sdf, SDFFitConfig(steps=20, batch_size=256, seed=1)).losses
    assert not torch.equal(runs[0], other)


def test_checkpoint_round_trip(tmp_path):
    model = small_model(skip_connections=(1,))
    points = torch.rand(100, 3) - 0.5
    path = tmp_path / "model.pt"
    torch.save(model.checkpoint(), path)
    restored = NeuralSDF.from_checkpoint(torch.load(path, weights_only=False))
    assert restored.config == model.config
    with torch.no_grad():
        assert torch.equal(restored(points), model(points))
    with pytest.raises(SDFError, match="config"):
        NeuralSDF.from_checkpoint({"state_dict": {}})
    with pytest.raises(SDFError, match="unknown keys"):
        NeuralSDF.from_checkpoint({"config": {"width": 3}, "state_dict": {}})


def test_gradient_matches_finite_differences_and_shapes():
    model = small_model(activation="softplus").double()
    points = (torch.rand(4, 5, 3, dtype=torch.float64) - 0.5)
    sdf, grad = model.gradient(points)
    assert sdf.shape == (4, 5) and grad.shape == (4, 5, 3) and not grad.requires_grad
    eps = 1e-6
    for axis in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[axis] = eps
        with torch.no_grad():
            numeric = (model(points + step) - model(points - step)) / (2 * eps)
        torch.testing.assert_close(grad[..., axis], numeric, atol=1e-5, rtol=1e-4)


def test_geometric_init_starts_near_a_sphere():
    model = small_model(init_radius=0.3, activation="relu", hidden_dim=256)
    x = torch.nn.functional.normalize(torch.randn(1000, 3), dim=-1) * 0.5
    with torch.no_grad():
        values = model(x)
    assert (values - 0.2).abs().mean() < 0.06


@pytest.mark.parametrize("overrides, match", [
    (dict(encoding="hash"), "encoding"), (dict(activation="tanh"), "activation"), (dict(hidden_dim=0), "hidden_dim"),
    (dict(max_resolution=2, base_resolution=8), "max_resolution"), (dict(bounds=((0, 0, 0), (1, 1, 0))), "bounds"),
    (dict(init_radius=-1.0), "init_radius"), (dict(skip_connections=(5,)), "skip_connections"),
    (dict(num_frequencies=-2), "num_frequencies"),
])
def test_model_config_validation(overrides, match):
    with pytest.raises(SDFError, match=match):
        small_model(**overrides)


@pytest.mark.parametrize("config, match", [
    (SDFFitConfig(steps=0), "steps"), (SDFFitConfig(learning_rate=0.0), "learning_rate"),
    (SDFFitConfig(clamp_distance=float("nan")), "clamp_distance"), (SDFFitConfig(eikonal_weight=-1), "eikonal_weight"),
])
def test_fit_config_validation(config, match):
    with pytest.raises(SDFError, match=match):
        fit_sdf_samples(small_model(), torch.zeros(4, 3), torch.zeros(4), config)


def test_fit_input_validation():
    model = small_model()
    with pytest.raises(SDFError, match="points"):
        fit_sdf_samples(model, torch.zeros(4, 2), torch.zeros(4))
    with pytest.raises(SDFError, match="sdf"):
        fit_sdf_samples(model, torch.zeros(4, 3), torch.zeros(5))
    with pytest.raises(SDFError, match="empty"):
        fit_sdf_samples(model, torch.zeros(0, 3), torch.zeros(0))
    with pytest.raises(SDFError, match="finite"):
        fit_sdf_samples(model, torch.full((4, 3), float("nan")), torch.zeros(4))
    with pytest.raises(SDFError, match="normals"):
        fit_oriented_points(model, torch.zeros(4, 3), torch.zeros(4, 3), IGRFitConfig(steps=1))
    with pytest.raises(SDFError, match="IGRFitConfig.local_sigma"):
        fit_oriented_points(model, torch.zeros(4, 3), torch.ones(4, 3), IGRFitConfig(local_sigma=0))
    with pytest.raises(SDFError, match="points"):
        model(torch.zeros(3, 2))
