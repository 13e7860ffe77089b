"""Tests of geo3d.nerf.fields: output shapes and ranges, zero density outside the box, the feature head, view
dependence, gradients to every parameter, the dense field's initial density and its resampling, input errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from geo3d.nerf.fields import FIELDS, DenseGridField, FieldOutput, HashGridField, MLPField

pytestmark = pytest.mark.usefixtures("one_torch_thread")

AABB = (-0.5, -1.0, 0.0, 1.5, 0.5, 1.25)  # off-centre, a different extent per axis
LOW, HIGH = torch.tensor(AABB[:3]), torch.tensor(AABB[3:])


def make_field(kind: str, feature_dim: int = 0, view: bool = True):
    """Small fields (a fraction of a second per test); ``view=False`` removes the direction input."""
    torch.manual_seed(0)
    if kind == "dense":
        return DenseGridField(AABB, resolution=9, appearance_channels=6, hidden=16, sh_degree=2 if view else None,
                              feature_dim=feature_dim, feature_hidden=8)
    if kind == "hash":
        return HashGridField(AABB, num_levels=4, base_resolution=4, max_resolution=32, log2_hashmap_size=10,
                             hidden=16, sh_degree=3 if view else None, feature_dim=feature_dim, feature_hidden=8)
    return MLPField(AABB, position_frequencies=4, direction_frequencies=2, hidden=32, depth=3, view_dependent=view,
                    feature_dim=feature_dim)


def points_and_directions(count: int, seed: int, outside: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = LOW + torch.rand(count, 3, generator=gen) * (HIGH - LOW)
    if outside:  # just outside each face, and far away
        far = LOW - 1 + torch.rand(outside, 3, generator=gen) * (HIGH - LOW + 2)
        axis = torch.arange(outside) % 3
        far[torch.arange(outside), axis] = torch.where(torch.arange(outside) % 2 == 0, LOW[axis] - 0.01,
                                                       HIGH[axis] + 0.01)
        x = torch.cat([x, far])
    d = F.normalize(torch.randn(len(x), 3, generator=gen), dim=-1)
    return x, d


KINDS = ["dense", "hash", "mlp"]


def test_registry():
    assert FIELDS == {"dense": DenseGridField, "hash": HashGridField, "mlp": MLPField}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("feature_dim", [0, 5])
def test_outputs_shapes_ranges_and_box(kind, feature_dim):
    field = make_field(kind, feature_dim)
    x, d = points_and_directions(300, seed=1, outside=60)
    out = field(x, d)
    assert isinstance(out, FieldOutput) and field.feature_dim == feature_dim
    assert out.density.shape == (360,) and out.rgb.shape == (360, 3)
    assert out.density.dtype == out.rgb.dtype == torch.float32
    assert (out.density >= 0).all() and torch.isfinite(out.density).all()
    assert (out.rgb >= 0).all() and (out.rgb <= 1).all()
    assert (out.density[:300] > 0).all() and (out.density[300:] == 0).all()  # zero outside the box only
    assert field.inside(x).tolist() == [True] * 300 + [False] * 60
    if feature_dim:
        assert out.features.shape == (360, feature_dim) and out.features.dtype == torch.float32
        assert out.features.std(0).min() > 0  # the head depends on the point
    else:
        assert out.features is None and field.feature_net is None
    # the cheap density path agrees with forward
    torch.testing.assert_close(field.density(x), out.density)
    # in float64 after .double()
    out64 = field.double()(x.double(), d.double())
    assert out64.density.dtype == torch.float64
    torch.testing.assert_close(out64.rgb, out.rgb.double(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_view_dependence(kind):
    x, d = points_and_directions(200, seed=2)
    other = F.normalize(torch.randn(200, 3, generator=torch.Generator().manual_seed(3)), dim=-1)
    with_view = make_field(kind, feature_dim=3)
    a, b = with_view(x, d), with_view(x, other)
    assert (a.rgb - b.rgb).abs().max() > 1e-3  # the colour depends on the direction ...
    torch.testing.assert_close(a.density, b.density, atol=0, rtol=0)  # ... the density and features do not
    torch.testing.assert_close(a.features, b.features, atol=0, rtol=0)
    without = make_field(kind, feature_dim=3, view=False)
    a, b = without(x, d), without(x, other)
    torch.testing.assert_close(a.rgb, b.rgb, atol=0, rtol=0)
    assert a.rgb.std(0).min() > 0  # not a constant either


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("feature_dim", [0, 4])
def test_gradients_reach_every_parameter(kind, feature_dim):
    field = make_field(kind, feature_dim)
    x, d = points_and_directions(400, seed=4, outside=20)
    out = field(x, d)
    loss = out.rgb.square().sum() + out.density.sum()
    if feature_dim:
        loss = loss + out.features.square().sum()
    loss.backward()
    for name, parameter in field.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    grid = field.grid_parameters()
    assert all(any(g is p for p in field.parameters()) for g in grid)
    assert len(grid) == (0 if kind == "mlp" else 1)


def test_dense_field_initial_density_and_grid_gradient():
    for init in (0.1, 2.5, 40.0):
        field = DenseGridField(AABB, resolution=7, appearance_channels=4, hidden=8, init_density=init)
        x, d = points_and_directions(100, seed=5)
        torch.testing.assert_close(field.density(x), torch.full((100,), init), rtol=1e-6, atol=0)
        assert F.softplus(torch.tensor(field.shift, dtype=torch.float64)).item() == pytest.approx(init, rel=1e-12)
    # density = softplus(interpolated raw + shift): a raw value r at every vertex gives softplus(r + shift)
    with torch.no_grad():
        field.grid.table[:, 0] = 1.5
    torch.testing.assert_close(field.density(x), F.softplus(torch.tensor(1.5 + field.shift)).expand(100))
    # only the density channel reaches density(): the gradient of the appearance channels is zero
    field.density(x).sum().backward()
    assert field.grid.table.grad[:, 0].abs().sum() > 0 and field.grid.table.grad[:, 1:].abs().sum() == 0
    # the density is interpolated before the activation (sharp edges inside a cell): one vertex at +20
    # gives softplus(20 w + shift) at a point of trilinear weight w, not the interpolated activations
    field = DenseGridField((0, 0, 0, 1, 1, 1), resolution=2, appearance_channels=1, hidden=4, init_density=1.0)
    with torch.no_grad():
        field.grid.table[:, 0] = 0.0
        field.grid.table[7, 0] = 20.0  # vertex (1, 1, 1)
    p = torch.tensor([[0.5, 0.5, 0.5], [0.9, 0.8, 0.7]])
    w = p.prod(-1)
    torch.testing.assert_close(field.density(p), F.softplus(20 * w + field.shift))


def test_dense_field_resample_keeps_the_field():
    field = DenseGridField(AABB, resolution=5, appearance_channels=3, hidden=8)
    with torch.no_grad():  # an affine raw density: resampling it is exact
        vertices = field.grid.table.new_tensor(
            [[i, j, k] for k in range(5) for j in range(5) for i in range(5)]) / 4 * (HIGH - LOW) + LOW
        field.grid.table[:, 0] = vertices @ torch.tensor([0.5, -1.0, 2.0])
    x, d = points_and_directions(200, seed=6)
    before = field(x, d)
    field.resample(9)
    assert field.grid.resolution == (9, 9, 9) and field.grid_parameters()[0] is field.grid.table
    after = field(x, d)
    torch.testing.assert_close(after.density, before.density, atol=1e-5, rtol=1e-5)
    # a smaller box: the density becomes 0 outside it
    box = (0.0, -0.5, 0.25, 1.0, 0.25, 1.0)
    field.resample(9, box)
    inside = ((x >= torch.tensor(box[:3])) & (x <= torch.tensor(box[3:]))).all(-1)
    assert 10 < int(inside.sum()) < 190
    shrunk = field.density(x)
    assert (shrunk[~inside] == 0).all()
    torch.testing.assert_close(shrunk[inside], before.density[inside], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_fields_reject_bad_points(kind):
    field = make_field(kind)
    x, d = points_and_directions(4, seed=7)
    bad = [
        ((x[:, :2], d), "x"),
        ((x, d[:, :2]), "d"),
        ((x[None], d[None]), "x"),
        ((x.long(), d), "x"),
        ((x.numpy(), d), "x"),
        ((x, d[:3]), "d"),
    ]
    for args, name in bad:
        with pytest.raises(ValueError, match=f"^{name} must"):
            field(*args)
    for points in (x[:, :2], x[0], x.long()):
        with pytest.raises(ValueError, match="^x must"):
            field.density(points)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"aabb": (0, 0, 0, 1, 1)}, "aabb"),
        ({"aabb": (0, 0, 0, 1, -1, 1)}, "aabb"),
        ({"aabb": (0, 0, 0, 1, math.inf, 1)}, "aabb"),
        ({"feature_dim": -1}, "feature_dim"),
        ({"feature_dim": 2.0}, "feature_dim"),
    ],
)
def test_fields_reject_bad_arguments(kind, kwargs, name):
    with pytest.raises(ValueError, match=name):
        FIELDS[kind](**({"aabb": AABB} | kwargs))


@pytest.mark.parametrize("init", [0.0, -1.0, math.nan, math.inf])
def test_dense_field_rejects_bad_initial_density(init):
    with pytest.raises(ValueError, match="init_density"):
        DenseGridField(AABB, resolution=4, init_density=init)


@pytest.mark.parametrize("kind", ["dense", "hash", "mlp"])
def test_fields_accept_zero_samples(kind):
    # a render chunk whose rays all miss (or are all pruned) evaluates the field on no points
    field = FIELDS[kind]((-1.0, -1.0, -1.0, 1.0, 1.0, 1.0), feature_dim=4)
    empty = torch.zeros(0, 3)
    out = field(empty, empty)
    assert out.density.shape == (0,) and out.rgb.shape == (0, 3) and out.features.shape == (0, 4)
    assert field.density(empty).shape == (0,)
