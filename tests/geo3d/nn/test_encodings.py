"""Frequency and multi-resolution grid encodings: exact interpolation of linear tables, gradients
(gradcheck / gradgradcheck in float64), hash index range, shapes and out-of-bounds behaviour."""

from __future__ import annotations

import math

import pytest
import torch

from geo3d.nn.encodings import HASH_PRIMES, FrequencyEncoding, GridEncoding

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BOUNDS = ((-1.0, -0.5, 0.0), (1.0, 1.5, 3.0))


def test_frequency_encoding_values_and_shape():
    encoding = FrequencyEncoding(3, 4)
    x = torch.randn(5, 7, 3, dtype=torch.float64)
    out = encoding(x)
    assert encoding.out_dim == 3 * (1 + 8) and out.shape == (5, 7, 27) and out.dtype == torch.float64
    assert torch.equal(out[..., :3], x)
    for k in range(4):
        block = out[..., 3 + 6 * k: 3 + 6 * (k + 1)]
        torch.testing.assert_close(block[..., :3], torch.sin(2**k * math.pi * x))
        torch.testing.assert_close(block[..., 3:], torch.cos(2**k * math.pi * x))
    assert FrequencyEncoding(2, 3, include_input=False).out_dim == 12


@pytest.mark.parametrize("kwargs", [dict(in_dim=0, num_frequencies=2), dict(in_dim=3, num_frequencies=-1),
                                    dict(in_dim=3, num_frequencies=0, include_input=False)])
def test_frequency_encoding_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        FrequencyEncoding(**kwargs)


def test_frequency_encoding_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
        FrequencyEncoding(3, 2)(torch.zeros(4, 2))


def small_grid(**overrides) -> GridEncoding:
    options = dict(num_levels=4, features_per_level=2, base_resolution=3, max_resolution=24, log2_hashmap_size=8,
                   bounds=BOUNDS)
    options.update(overrides)
    return GridEncoding(3, **options)


def test_grid_levels_dense_then_hashed_and_shapes():
    grid = small_grid()
    assert grid.resolutions == (3, 6, 12, 24)
    # (N + 1)^3 vertices: 64, 343 > 256 -> hashed from level 1 on
    assert grid.hashed_levels == (False, True, True, True)
    assert grid.level_sizes == (64, 256, 256, 256)
    assert grid.table.shape == (64 + 3 * 256, 2)
    out = grid(torch.rand(2, 5, 3))
    assert grid.out_dim == 8 and out.shape == (2, 5, 8)
    assert GridEncoding(3, 3, 4, 4, per_level_scale=2.0, log2_hashmap_size=12).resolutions == (4, 8, 16)


def lattice_vertices(resolution: int) -> torch.Tensor:
    axis = torch.arange(resolution + 1)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)


def test_fast_corner_indexing_matches_reference_and_hash_range():
    grid = small_grid()
    x = torch.rand(500, 3) * 2.4 - 0.2  # some outside the box
    cells = torch.minimum((grid.normalize(x)[:, :, None] * grid._resolution).floor().long(), grid._resolution - 1)
    fast = grid._corner_rows(cells.transpose(1, 2)).reshape(500, 8, grid.num_levels)
    corners = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    reference = grid.level_indices(cells.transpose(1, 2)[:, None] + corners[None, :, None])  # [N, 8, L]
    assert torch.equal(fast, reference)
    # every row of a level stays inside that level's slice of the table
    for level, (offset, size) in enumerate(zip(grid._offset.tolist(), grid.level_sizes)):
        vertices = lattice_vertices(grid.resolutions[level])
        rows = grid.level_indices(vertices[:, None, :].expand(-1, grid.num_levels, 3))[:, level]
        assert rows.min() >= offset and rows.max() < offset + size
        if not grid.hashed_levels[level]:  # dense: a bijection onto the level's rows
            assert torch.equal(rows.sort().values, torch.arange(offset, offset + size))
        else:  # the documented hash
            i, j, k = vertices.unbind(-1)
            expected = ((i * HASH_PRIMES[0]) ^ (j * HASH_PRIMES[1]) ^ (k * HASH_PRIMES[2])) % size + offset
            assert torch.equal(rows, expected)


def test_dense_level_reproduces_linear_function_exactly():
    grid = GridEncoding(3, 1, 2, base_resolution=5, max_resolution=5, log2_hashmap_size=10, bounds=BOUNDS).double()
    low, high = torch.tensor(BOUNDS[0], dtype=torch.float64), torch.tensor(BOUNDS[1], dtype=torch.float64)
    vertices = lattice_vertices(5)
    world = low + vertices.double() / 5 * (high - low)
    coefficients = torch.tensor([[0.3, -1.2], [2.0, 0.5], [-0.7, 1.1]], dtype=torch.float64)
    bias = torch.tensor([0.25, -3.0], dtype=torch.float64)
    with torch.no_grad():
        rows = grid.level_indices(vertices[:, None, :])[:, 0]
        grid.table[rows] = world @ coefficients + bias
    x = low + torch.rand(1000, 3, dtype=torch.float64) * (high - low)
    torch.testing.assert_close(grid(x), x @ coefficients + bias, rtol=0, atol=1e-12)


def test_gradcheck_input_and_table():
    grid = small_grid(init_scale=1.0).double()
    x = (torch.rand(20, 3, dtype=torch.float64) * torch.tensor([2.0, 2.0, 3.0]) + torch.tensor(BOUNDS[0]))
    x.requires_grad_(True)
    table = grid.table

    def encode(points, values):
        grid.table = torch.nn.Parameter(values) if not isinstance(values, torch.nn.Parameter) else values
        return torch.func.functional_call(grid, {"table": values}, (points,))

    assert torch.autograd.gradcheck(encode, (x, table.detach().clone().requires_grad_(True)), eps=1e-6, atol=1e-6)
    # double backward (eikonal losses): d/d(table, x) of the input gradient
    assert torch.autograd.gradgradcheck(encode, (x, table.detach().clone().requires_grad_(True)), eps=1e-6,
                                        atol=1e-5)


def test_out_of_bounds_inputs_are_clamped_to_the_box():
    grid = small_grid(init_scale=1.0)
    inside = torch.tensor([[1.0, 0.2, 3.0], [-1.0, -0.5, 1.0]])
    outside = torch.tensor([[4.0, 0.2, 7.0], [-3.0, -2.0, 1.0]])
    torch.testing.assert_close(grid(outside), grid(inside), rtol=0, atol=0)
    x = outside.clone().requires_grad_(True)
    grid(x).sum().backward()
    assert torch.equal(x.grad[0, [0, 2]], torch.zeros(2)) and torch.equal(x.grad[1, :2], torch.zeros(2))


@pytest.mark.parametrize("kwargs, match", [
    (dict(in_dim=2), "in_dim"), (dict(num_levels=0), "num_levels"), (dict(max_resolution=2), "max_resolution"),
    (dict(max_resolution=None), "max_resolution or per_level_scale"),
    (dict(max_resolution=None, per_level_scale=0.5), "per_level_scale"),
    (dict(log2_hashmap_size=31), "log2_hashmap_size"), (dict(bounds=((0, 0, 0), (1, 0, 1))), "bounds"),
    (dict(bounds=((0, 0), (1, 1))), "bounds"),
])
def test_grid_rejects_bad_arguments(kwargs, match):
    options = dict(num_levels=2, base_resolution=4, max_resolution=8, log2_hashmap_size=10)
    options.update(kwargs)
    with pytest.raises(ValueError, match=match):
        GridEncoding(**options)


def test_grid_rejects_bad_input():
    with pytest.raises(ValueError, match="floating"):
        small_grid()(torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="shape"):
        small_grid()(torch.zeros(4, 2))
