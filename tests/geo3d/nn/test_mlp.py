"""MLP: shapes, skip connections, and the geometric initialisation (output ~ |x| - r at init)."""

from __future__ import annotations

import math

import pytest
import torch

from geo3d.nn.mlp import MLP

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_shapes_and_layers():
    mlp = MLP(5, 32, 3, 4, skip_connections=(2,))
    assert len(mlp.layers) == 4 and mlp.layers[2].in_features == 32 + 5
    assert mlp(torch.randn(2, 7, 5)).shape == (2, 7, 4)


def test_skip_connection_matches_manual_forward():
    torch.manual_seed(0)
    mlp = MLP(3, 8, 2, 1, activation="relu", skip_connections=(1,))
    x = torch.randn(10, 3)
    h = torch.relu(mlp.layers[0](x))
    h = torch.relu(mlp.layers[1](torch.cat((h, x), -1) / math.sqrt(2)))
    torch.testing.assert_close(mlp(x), mlp.layers[2](h))


def init_inputs(count: int = 4000, max_radius: float = 1.2):
    x = torch.randn(count, 3)
    x = x / x.norm(dim=1, keepdim=True) * torch.rand(count, 1) * max_radius  # |x| uniform in [0, 1.2]
    return x, torch.cat((x, torch.randn(count, 12) * 10), -1)  # encoding columns start switched off


@pytest.mark.parametrize("skips", [(), (2,)])
def test_geometric_init_relu_is_a_sphere_sdf(skips):
    torch.manual_seed(0)
    radius = 0.4
    mlp = MLP(3 + 12, 256, 3, 1, activation="relu", skip_connections=skips, geometric_init=True,
              geometric_init_radius=radius, coordinate_dims=3)
    x, features = init_inputs()
    with torch.no_grad():
        out = mlp(features)[:, 0]
    expected = x.norm(dim=1) - radius
    # SAL's init is exact in expectation over the weights; a finite width leaves ~10 % of |x| of noise
    assert (out - expected).abs().mean() < 0.15 * x.norm(dim=1).mean()
    far = expected.abs() > 0.3
    assert (torch.sign(out[far]) == torch.sign(expected[far])).float().mean() > 0.97
    # the non-coordinate inputs do not change the output at init
    torch.testing.assert_close(mlp(torch.cat((x, torch.zeros(4000, 12)), -1))[:, 0], out)


@pytest.mark.parametrize("skips", [(), (2,)])
def test_geometric_init_softplus_is_radial_with_the_centre_at_minus_r(skips):
    torch.manual_seed(0)
    radius = 0.4
    mlp = MLP(3 + 12, 256, 3, 1, activation="softplus", skip_connections=skips, geometric_init=True,
              geometric_init_radius=radius, coordinate_dims=3)
    torch.testing.assert_close(mlp(torch.zeros(15))[0], torch.tensor(-radius))
    x, features = init_inputs()
    with torch.no_grad():
        out = mlp(features)[:, 0]
        outer = mlp(torch.cat((x * 1.1, features[:, 3:]), -1))[:, 0]
    assert (outer > out).float().mean() > 0.97  # increases along rays from the centre
    inside, outside = x.norm(dim=1) < 0.3, x.norm(dim=1) > 1.1
    assert (out[inside] < 0).all() and (out[outside] > 0).float().mean() > 0.95


def test_default_init_is_not_a_sphere():
    torch.manual_seed(0)
    x = torch.randn(1000, 3)
    out = MLP(3, 256, 3, 1)(x)[:, 0].detach()
    assert (out - (x.norm(dim=1) - 0.5)).abs().mean() > 0.3


@pytest.mark.parametrize("kwargs, match", [
    (dict(in_dim=0), "in_dim"), (dict(num_layers=0), "num_layers"), (dict(activation="tanh"), "activation"),
    (dict(skip_connections=(0,)), "skip_connections"), (dict(skip_connections=(3,)), "skip_connections"),
    (dict(geometric_init=True, geometric_init_radius=0.0), "radius"),
    (dict(geometric_init=True, coordinate_dims=9), "coordinate_dims"),
])
def test_rejects_bad_arguments(kwargs, match):
    options = dict(in_dim=3, hidden_dim=8, num_layers=3, out_dim=1)
    options.update(kwargs)
    with pytest.raises(ValueError, match=match):
        MLP(**options)


def test_rejects_bad_input_width():
    with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
        MLP(3, 8, 1, 1)(torch.zeros(2, 4))
