"""Tests of geo3d.nn.grids: DenseGrid against grid_sample and against exact linear tables, TrilinearGather's
gradients (float64 gradcheck, F.embedding autograd, points through grid_sample autograd), upsampling, and the
real spherical harmonics (exact Gauss-Legendre orthonormality, scipy's complex harmonics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geo3d.nn.grids import SH_MAX_DEGREE, DenseGrid, TrilinearGather, spherical_harmonics

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64
BOUNDS = (-0.75, 0.25, -1.25, 0.875, 1.375, 0.5)  # off-centre, a different extent per axis (exact in float32)
RESOLUTION = (5, 7, 4)  # non-cubic: X, Y, Z vertices
LOW, HIGH = torch.tensor(BOUNDS[:3], dtype=F64), torch.tensor(BOUNDS[3:], dtype=F64)


def vertex_positions(resolution, dtype=F64) -> torch.Tensor:
    """``[X * Y * Z, 3]`` world positions of the lattice vertices in table-row order (x fastest)."""
    X, Y, Z = resolution
    k, j, i = torch.meshgrid(torch.arange(Z), torch.arange(Y), torch.arange(X), indexing="ij")
    ijk = torch.stack([i, j, k], -1).reshape(-1, 3).to(F64)
    return (LOW + ijk / (torch.tensor(resolution, dtype=F64) - 1) * (HIGH - LOW)).to(dtype)


def sample_points(count: int, seed: int, dtype=F64) -> torch.Tensor:
    """Random points in a box 1.4x the grid's (about 60 % outside it), plus points exactly on every face,
    on the box's corners and on lattice vertices."""
    gen = torch.Generator().manual_seed(seed)
    centre, half = (LOW + HIGH) / 2, (HIGH - LOW) / 2
    inner = centre + (torch.rand(count, 3, generator=gen, dtype=F64) * 2 - 1) * half * 1.4
    faces = centre + (torch.rand(6 * 20, 3, generator=gen, dtype=F64) * 2 - 1) * half
    for face in range(6):
        axis = face % 3
        faces[face * 20:(face + 1) * 20, axis] = (LOW if face < 3 else HIGH)[axis]
    corners = torch.stack([torch.where(torch.tensor([(c >> a) & 1 for a in range(3)], dtype=torch.bool), HIGH, LOW)
                           for c in range(8)])
    vertices = vertex_positions(RESOLUTION)[torch.randperm(math.prod(RESOLUTION), generator=gen)[:30]]
    return torch.cat([inner, faces, corners, vertices]).to(dtype)




def linear_function(points: torch.Tensor) -> torch.Tensor:
    """Two channels, each affine in the point."""
    a = torch.tensor([[0.3, -1.2], [2.0, 0.5], [-0.7, 1.1]], dtype=points.dtype)
    return points @ a + torch.tensor([0.25, -0.4], dtype=points.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_forward_matches_grid_sample_reference(dtype):
    torch.manual_seed(0)
    grid = DenseGrid(RESOLUTION, 3, BOUNDS, init=(-1.0, 1.0)).to(dtype)
    assert grid.table.shape == (5 * 7 * 4, 3) and grid.volume().shape == (3, 4, 7, 5)
    x = sample_points(400, seed=1, dtype=dtype)
    assert ((x < LOW.to(dtype)) | (x > HIGH.to(dtype))).any(-1).float().mean() > 0.4  # many points outside
    out = grid(x)
    assert out.shape == (len(x), 3) and out.dtype == dtype
    # float32: coordinates rounded at ~1e-7 of the box, times slopes <= 2 * (cells per axis) per unit box
    atol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out, grid.reference(x), atol=atol, rtol=0)
    # batch dimensions and channel slices
    torch.testing.assert_close(grid(x[:60].reshape(3, 4, 5, 3)), out[:60].reshape(3, 4, 5, 3))
    torch.testing.assert_close(grid(x, channels=slice(1, 3)), out[:, 1:3])


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_forward_reproduces_linear_tables_exactly(dtype):
    """Trilinear interpolation is exact for affine functions: a second reference, independent of grid_sample.
    Outside the box the value is that of the nearest box point (each coordinate clamped)."""
    grid = DenseGrid(RESOLUTION, 2, BOUNDS).to(dtype)
    with torch.no_grad():
        grid.table.copy_(linear_function(vertex_positions(RESOLUTION, dtype)))
    x = sample_points(400, seed=2, dtype=dtype)
    clamped = torch.maximum(torch.minimum(x, HIGH.to(dtype)), LOW.to(dtype))
    atol = 2e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(grid(x), linear_function(clamped), atol=atol, rtol=0)


def test_trilinear_gather_gradcheck():
    gen = torch.Generator().manual_seed(3)
    table = torch.randn(11, 4, generator=gen, dtype=F64, requires_grad=True)
    rows = torch.randint(0, 11, (9, 8), generator=gen)  # 72 draws from 11 rows: repeated rows accumulate
    weights = torch.rand(9, 8, generator=gen, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(TrilinearGather.apply, (table, rows, weights))
    # only the table, only the weights
    assert torch.autograd.gradcheck(lambda t: TrilinearGather.apply(t, rows, weights.detach()), (table,))
    assert torch.autograd.gradcheck(lambda w: TrilinearGather.apply(table.detach(), rows, w), (weights,))


def test_gradients_match_embedding_and_grid_sample_autograd():
    torch.manual_seed(4)
    grid = DenseGrid(RESOLUTION, 3, BOUNDS, init=(-1.0, 1.0)).double()
    gen = torch.Generator().manual_seed(5)
    # interior points (on a lattice plane the one-sided derivatives differ and the two methods may pick
    # different sides), plus points outside the box whose gradient is 0 by the clamp
    x = LOW + (0.02 + 0.96 * torch.rand(200, 3, generator=gen, dtype=F64)) * (HIGH - LOW)
    x = torch.cat([x, (LOW - 0.5)[None], (HIGH + torch.tensor([0.3, 0.1, 0.2], dtype=F64))[None]]).requires_grad_()
    upstream = torch.randn(len(x), 3, generator=gen, dtype=F64)

    (grid(x) * upstream).sum().backward()
    grad_x, grad_table = x.grad.clone(), grid.table.grad.clone()
    assert grad_x[-2:].abs().max() == 0 and grad_x[:-2].abs().min() > 0

    # points: grid_sample's own autograd
    x.grad, grid.table.grad = None, None
    (grid.reference(x) * upstream).sum().backward()
    torch.testing.assert_close(grad_x, x.grad, atol=1e-10, rtol=0)
    torch.testing.assert_close(grad_table, grid.table.grad, atol=1e-10, rtol=0)

    # table: autograd of F.embedding on the same corners and weights
    rows, weights = grid.corners(x.detach())
    table = grid.table.detach().clone().requires_grad_()
    ((F.embedding(rows, table) * weights[..., None]).sum(1) * upstream).sum().backward()
    torch.testing.assert_close(grad_table, table.grad, atol=1e-12, rtol=0)
    # the interpolation weights are a partition of unity
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(x), dtype=F64))


@pytest.mark.parametrize("new", [(9, 13, 7), (3, 4, 2), 6])
def test_resample_keeps_linear_functions(new):
    grid = DenseGrid(RESOLUTION, 2, BOUNDS)
    with torch.no_grad():
        grid.table.copy_(linear_function(vertex_positions(RESOLUTION, torch.float32)))
    old_table = grid.table
    grid.resample(new)
    new = (new,) * 3 if isinstance(new, int) else new
    assert grid.resolution == new and grid.table.shape == (math.prod(new), 2)
    assert grid.table is not old_table and any(p is grid.table for p in grid.parameters())
    assert grid.volume().shape == (2, new[2], new[1], new[0])
    torch.testing.assert_close(grid.bounds, torch.tensor(BOUNDS))
    torch.testing.assert_close(grid.table, linear_function(vertex_positions(new, torch.float32)), atol=1e-5, rtol=0)
    # the corner bookkeeping follows the new lattice: lookups agree with the reference and the linear function
    x = sample_points(300, seed=6, dtype=torch.float32)
    clamped = torch.maximum(torch.minimum(x, HIGH.float()), LOW.float())
    torch.testing.assert_close(grid(x), linear_function(clamped), atol=2e-5, rtol=0)
    torch.testing.assert_close(grid(x), grid.reference(x), atol=1e-5, rtol=0)


def test_resample_to_a_smaller_box():
    grid = DenseGrid(RESOLUTION, 2, BOUNDS)
    with torch.no_grad():
        grid.table.copy_(linear_function(vertex_positions(RESOLUTION, torch.float32)))
    box = (-0.5, 0.5, -1.0, 0.25, 1.0, 0.0)
    grid.resample((6, 5, 4), box)
    assert grid.resolution == (6, 5, 4)
    torch.testing.assert_close(grid.bounds, torch.tensor(box))
    low, high = torch.tensor(box[:3]), torch.tensor(box[3:])
    gen = torch.Generator().manual_seed(10)
    x = low - 0.2 + torch.rand(300, 3, generator=gen) * (high - low + 0.4)  # also outside the new box
    torch.testing.assert_close(grid(x), linear_function(torch.maximum(torch.minimum(x, high), low)), atol=2e-5,
                               rtol=0)
    with pytest.raises(ValueError, match="bounds"):
        grid.resample(4, (0, 0, 0, 1, 1))


def test_resample_of_a_nonlinear_table_is_trilinear_interpolation():
    """Same box: the new table is ``F.interpolate(trilinear, align_corners=True)`` of the old volume (an
    independent reference), and vertices of the finer lattice that coincide with old vertices keep their values."""
    torch.manual_seed(7)
    grid = DenseGrid((3, 4, 5), 2, BOUNDS, init=(-1.0, 1.0))
    old = grid.table.detach().clone()
    expected = F.interpolate(grid.volume().detach()[None], size=(9, 7, 5), mode="trilinear", align_corners=True)[0]
    grid.resample((5, 7, 9))  # (n - 1) doubled: every old vertex is a new vertex
    torch.testing.assert_close(grid.volume(), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(grid.table.reshape(9, 7, 5, 2)[::2, ::2, ::2].reshape(-1, 2), old, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"resolution": 1}, "resolution"),
        ({"resolution": (4, 4)}, "resolution"),
        ({"resolution": (4, 4.0, 4)}, "resolution"),
        ({"resolution": True}, "resolution"),
        ({"channels": 0}, "channels"),
        ({"channels": 2.0}, "channels"),
        ({"bounds": (0, 0, 0, 1, 1)}, "bounds"),
        ({"bounds": (0, 0, 0, 1, 0, 1)}, "bounds"),
        ({"bounds": (0, 0, 0, 1, math.inf, 1)}, "bounds"),
    ],
)
def test_dense_grid_rejects_bad_arguments(kwargs, name):
    args = {"resolution": 4, "channels": 2, "bounds": (0, 0, 0, 1, 1, 1)} | kwargs
    with pytest.raises(ValueError, match=name):
        DenseGrid(**args)


def test_dense_grid_rejects_bad_points_and_resolutions():
    grid = DenseGrid(4, 2, (0, 0, 0, 1, 1, 1))
    for x in (torch.zeros(5, 2), torch.zeros(5, 3, dtype=torch.int64), torch.zeros(()), np.zeros((5, 3))):
        with pytest.raises(ValueError, match="x must be"):
            grid(x)
    with pytest.raises(ValueError, match="resolution"):
        grid.resample(1)
    assert grid.resolution == (4, 4, 4)  # unchanged by the failed call


# ------------------------------------------------------------------------------------------ spherical harmonics


def gauss_legendre_sphere(n_theta: int, n_phi: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Product rule on the unit sphere: Gauss-Legendre in z = cos(theta), uniform in phi. It integrates
    ``z^c * (trigonometric polynomial of degree < n_phi in phi)`` exactly when ``c <= 2 n_theta - 1``."""
    z, wz = np.polynomial.legendre.leggauss(n_theta)
    phi = (np.arange(n_phi) + 0.5) * 2 * np.pi / n_phi
    z, phi = np.meshgrid(z, phi, indexing="ij")
    s = np.sqrt(1 - z**2)
    directions = np.stack([s * np.cos(phi), s * np.sin(phi), z], -1).reshape(-1, 3)
    weights = (wz[:, None] * np.full(n_phi, 2 * np.pi / n_phi)).reshape(-1)
    return torch.from_numpy(directions), torch.from_numpy(weights)


@pytest.mark.parametrize("degree", range(SH_MAX_DEGREE + 1))
def test_spherical_harmonics_are_orthonormal(degree):
    """The products Y_a Y_b are polynomials of degree <= 2 * degree <= 8 in (x, y, z). After the exact phi sum
    (trig degree <= 8 < 17 points) only monomials with even powers of x and y survive, i.e. polynomials of degree
    <= 8 in z, which 5 Gauss-Legendre nodes already integrate exactly: with 8 x 17 nodes the Gram matrix is the
    identity up to float64 rounding (~1e-15 per term), hence the 1e-12 tolerance."""
    directions, weights = gauss_legendre_sphere(8, 17)
    Y = spherical_harmonics(directions, degree)
    assert Y.shape == (len(directions), (degree + 1) ** 2) and Y.dtype == F64
    gram = Y.T @ (Y * weights[:, None])
    torch.testing.assert_close(gram, torch.eye((degree + 1) ** 2, dtype=F64), atol=1e-12, rtol=0)


def test_coarse_quadrature_would_catch_a_wrong_normalisation():
    """The check above has teeth: scaling one coefficient by 1.001 moves its diagonal entry by 2e-3."""
    directions, weights = gauss_legendre_sphere(8, 17)
    Y = spherical_harmonics(directions, 4)
    Y[:, 20] *= 1.001
    gram = Y.T @ (Y * weights[:, None])
    assert abs(float(gram[20, 20]) - 1) > 1e-3


def test_spherical_harmonics_degree_zero_and_prefixes():
    gen = torch.Generator().manual_seed(8)
    d = F.normalize(torch.randn(2, 50, 3, generator=gen, dtype=F64), dim=-1)
    full = spherical_harmonics(d, SH_MAX_DEGREE)
    assert full.shape == (2, 50, 25)
    torch.testing.assert_close(full[..., 0], torch.full((2, 50), 0.5 / math.sqrt(math.pi), dtype=F64))
    assert 0.5 / math.sqrt(math.pi) == pytest.approx(0.28209479177387814, abs=1e-16)
    for degree in range(SH_MAX_DEGREE):
        torch.testing.assert_close(spherical_harmonics(d, degree), full[..., :(degree + 1) ** 2], atol=0, rtol=0)
    single = spherical_harmonics(d.float()[0, 0], 2)  # one direction [3] -> [9], float32 kept
    assert single.shape == (9,) and single.dtype == torch.float32


def scipy_real_harmonics(directions: np.ndarray, max_degree: int) -> np.ndarray:
    """Real SH from scipy's complex ones (which carry the Condon-Shortley phase), in the 3DGS convention:
    ``Y_l0 = Y_l^0``, ``Y_lm = sqrt(2) Re Y_l^m`` and ``Y_l(-m) = sqrt(2) Im Y_l^m`` for ``m > 0`` (the textbook
    real basis has an extra ``(-1)^m``, i.e. the opposite sign for odd ``m``), ordered ``m = -l..l``."""
    special = pytest.importorskip("scipy.special")
    theta = np.arccos(np.clip(directions[:, 2], -1, 1))
    phi = np.mod(np.arctan2(directions[:, 1], directions[:, 0]), 2 * np.pi)
    if hasattr(special, "sph_harm_y"):  # scipy >= 1.15: (degree, order, polar, azimuth)
        def complex_sh(degree, order):
            return special.sph_harm_y(degree, order, theta, phi)
    else:  # older scipy: sph_harm(order, degree, azimuth, polar)
        def complex_sh(degree, order):
            return special.sph_harm(order, degree, phi, theta)
    columns = []
    for n in range(max_degree + 1):
        for m in range(-n, n + 1):
            value = complex_sh(n, abs(m))
            columns.append(value.real if m == 0 else math.sqrt(2) * (value.imag if m < 0 else value.real))
    return np.stack(columns, -1)


def test_spherical_harmonics_match_scipy():
    gen = torch.Generator().manual_seed(9)
    d = F.normalize(torch.randn(500, 3, generator=gen, dtype=F64), dim=-1)
    d = torch.cat([d, torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]],
                                   dtype=F64)])  # poles and axes
    ours = spherical_harmonics(d, SH_MAX_DEGREE).numpy()
    np.testing.assert_allclose(ours, scipy_real_harmonics(d.numpy(), SH_MAX_DEGREE), atol=1e-12, rtol=0)
    # the convention matters: degree 1 is (-C y, C z, -C x), C = sqrt(3 / 4 pi)
    c1 = math.sqrt(3 / (4 * math.pi))
    np.testing.assert_allclose(ours[:, 1:4], c1 * np.stack([-d[:, 1], d[:, 2], -d[:, 0]], -1), atol=1e-15)


@pytest.mark.parametrize(
    ("directions", "degree", "name"),
    [
        (torch.zeros(4, 3), 5, "degree"),
        (torch.zeros(4, 3), -1, "degree"),
        (torch.zeros(4, 3), 2.0, "degree"),
        (torch.zeros(4, 3), True, "degree"),
        (torch.zeros(4, 2), 2, "directions"),
        (torch.zeros(()), 2, "directions"),
        (np.zeros((4, 3)), 2, "directions"),
    ],
)
def test_spherical_harmonics_reject_bad_inputs(directions, degree, name):
    with pytest.raises(ValueError, match=name):
        spherical_harmonics(directions, degree)
