"""Analytic SDFs: exact values, eikonal gradients, CSG rules, transforms, and a brute-force comparison with
dense parametric samples of each surface."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from geo3d.errors import SDFError
from geo3d.geometry.rotations import quaternion_to_matrix
from geo3d.sdf.analytic import (
    SDF,
    Box,
    Capsule,
    Cylinder,
    Plane,
    RoundedBox,
    Sphere,
    Torus,
    box_sdf,
    capsule_sdf,
    cylinder_sdf,
    difference,
    intersection,
    plane_sdf,
    rounded_box_sdf,
    smooth_difference,
    smooth_intersection,
    smooth_union,
    sphere_sdf,
    torus_sdf,
    union,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# -- exact values ------------------------------------------------------------------------------------
def test_sphere_exact_values():
    points = t([[0, 0, 0], [1, 0, 0], [2, 0, 0], [1, 1, 1], [3, 4, 0]])
    expected = t([-1, 0, 1, math.sqrt(3) - 1, 4])
    torch.testing.assert_close(sphere_sdf(points, 1.0), expected)
    torch.testing.assert_close(sphere_sdf(points + t([1, 2, 3]), 1.0, center=[1, 2, 3]), expected)


def test_box_exact_values_faces_edges_corners():
    half = [1.0, 2.0, 3.0]
    points = t([
        [0, 0, 0],        # centre: nearest face is x = +-1
        [0.5, 0, 0],      # inside, 0.5 to the x face
        [0, 1.9, 0],      # inside, 0.1 to the y face
        [1, 0, 0],        # on a face
        [1, 2, 3],        # on a corner
        [3, 0, 0],        # outside a face
        [2, 3, 0],        # outside an edge: (1, 1) away
        [2, 4, 5],        # outside a corner: (1, 2, 2) away
    ])  # fmt: skip
    expected = t([-1, -0.5, -0.1, 0, 0, 2, math.sqrt(2), 3])
    torch.testing.assert_close(box_sdf(points, half), expected)
    torch.testing.assert_close(Box(half, center=[1, 1, 1])(points + 1), expected)


def test_rounded_box_exact_values():
    half, r = [1.0, 1.0, 1.0], 0.25
    points = t([[0, 0, 0], [1, 0, 0], [2, 0, 0], [1, 1, 0], [2, 2, 2], [0.9, 0, 0]])
    corner = math.sqrt(3) * 1.25 - 0.25  # distance to the corner sphere of radius r at (0.75,)*3
    expected = t([-1, 0, 1, math.sqrt(2) * 0.25 - 0.25, corner, -0.1])
    expected[5] = -0.1
    torch.testing.assert_close(rounded_box_sdf(points, half, r), expected)
    torch.testing.assert_close(RoundedBox(half, r)(points), expected)
    # radius 0 is the sharp box, radius = half extent of a cube is the inscribed sphere
    torch.testing.assert_close(rounded_box_sdf(points, half, 0.0), box_sdf(points, half))
    torch.testing.assert_close(rounded_box_sdf(points, half, 1.0), sphere_sdf(points, 1.0))


def test_capsule_exact_values():
    a, b = [0.0, 0.0, -1.0], [0.0, 0.0, 1.0]
    points = t([[0, 0, 0], [0.5, 0, 0], [2, 0, 0.7], [0, 0, 3], [0, 0, -1.5], [3, 4, 1]])
    expected = t([-0.5, 0, 1.5, 1.5, 0, 4.5])
    torch.testing.assert_close(capsule_sdf(points, a, b, 0.5), expected)
    torch.testing.assert_close(Capsule(a, b, 0.5)(points), expected)
    # a degenerate segment is a sphere
    torch.testing.assert_close(capsule_sdf(points, a, a, 0.5), sphere_sdf(points, 0.5, center=a))


def test_cylinder_exact_values():
    r, h = 1.0, 2.0
    points = t([[0, 0, 0], [0.5, 0, 0], [0, 0, 1.8], [1, 0, 0], [1, 0, 2], [3, 0, 0], [0, 0, 4],
                [0, 2, 3], [0.5, 0, 3]])
    expected = t([-1, -0.5, -0.2, 0, 0, 2, 2, math.sqrt(2), 1])
    torch.testing.assert_close(cylinder_sdf(points, r, h), expected)
    torch.testing.assert_close(Cylinder(r, h)(points), expected)


def test_torus_exact_values():
    big, small = 2.0, 0.5
    points = t([[2, 0, 0], [0, 2, 0.5], [0, 0, 0], [2.25, 0, 0], [0, 0, 3], [4, 0, 0], [0, -3, 1]])
    expected = t([-0.5, 0, 1.5, -0.25, math.sqrt(13) - 0.5, 1.5, math.sqrt(2) - 0.5])
    torch.testing.assert_close(torus_sdf(points, big, small), expected)
    torch.testing.assert_close(Torus(big, small)(points), expected)


def test_plane_exact_values():
    points = t([[0, 0, 0], [0, 0, 1], [5, -3, 2], [1, 1, -4]])
    expected = t([-1, 0, 1, -5])
    torch.testing.assert_close(plane_sdf(points, [0, 0, 2.0], 1.0), expected)  # normal need not be unit
    torch.testing.assert_close(Plane([0, 0, 1.0], 1.0)(points), expected)
    assert Plane([0, 0, 1.0]).bounds() is None


# -- gradients ---------------------------------------------------------------------------------------
SHAPES = {
    "sphere": Sphere(0.7, center=[0.1, -0.2, 0.3]),
    "box": Box([0.5, 0.8, 0.3], center=[0.1, 0.0, -0.1]),
    "rounded_box": RoundedBox([0.5, 0.8, 0.3], 0.1),
    "capsule": Capsule([-0.4, 0.1, 0.2], [0.5, -0.3, 0.0], 0.3),
    "cylinder": Cylinder(0.6, 0.4, center=[0.0, 0.2, 0.0]),
    "torus": Torus(0.7, 0.2),
    "plane": Plane([1.0, 2.0, -0.5], 0.3),
    "rotated_box": Box([0.5, 0.8, 0.3]).rotate([0.9, 0.2, -0.3, 0.1]).translate([0.2, 0.1, 0.0]),
    "scaled_torus": Torus(0.7, 0.2).rotate([0.5, 0.5, 0.5, 0.5]).scale(1.7),
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_eikonal_gradient_norm_is_one(name):
    generator = torch.Generator().manual_seed(0)
    points = (torch.rand(2000, 3, generator=generator, dtype=torch.float64) * 3 - 1.5).requires_grad_()
    (grad,) = torch.autograd.grad(SHAPES[name](points).sum(), points)
    # random float64 points never fall exactly on a medial axis, so every gradient is a unit vector
    torch.testing.assert_close(grad.norm(dim=-1), torch.ones(2000, dtype=torch.float64), atol=1e-9, rtol=0)


def test_gradients_are_finite_on_the_medial_axis():
    points = t([[0, 0, 0], [0, 0, 0.3], [0.1, 0.1, 0.0]]).requires_grad_()
    for shape in (Sphere(0.5), Torus(0.7, 0.2), Box([0.5, 0.5, 0.8]), Cylinder(0.5, 0.5),
                  Capsule([0, 0, 0], [0, 0, 0], 0.5), RoundedBox([0.5, 0.5, 0.5], 0.5)):
        (grad,) = torch.autograd.grad(shape(points).sum(), points)
        assert bool(torch.isfinite(grad).all()), type(shape).__name__


@pytest.mark.parametrize("op", [sphere_sdf, box_sdf, rounded_box_sdf, capsule_sdf, cylinder_sdf, torus_sdf, plane_sdf])
def test_gradcheck_points_and_parameters(op):
    generator = torch.Generator().manual_seed(1)
    points = (torch.rand(20, 3, generator=generator, dtype=torch.float64) * 3 - 1.5).requires_grad_()
    params = {
        sphere_sdf: (t(0.6), t([0.1, 0.2, 0.0])),
        box_sdf: (t([0.5, 0.6, 0.7]), t([0.1, 0.0, 0.0])),
        rounded_box_sdf: (t([0.5, 0.6, 0.7]), t(0.2)),
        capsule_sdf: (t([0.0, 0.0, -0.5]), t([0.2, 0.3, 0.5]), t(0.25)),
        cylinder_sdf: (t(0.5), t(0.7)),
        torus_sdf: (t(0.8), t(0.3)),
        plane_sdf: (t([0.3, -1.0, 0.5]), t(0.2)),
    }[op]
    params = tuple(p.clone().requires_grad_() for p in params)
    assert torch.autograd.gradcheck(lambda x, *p: op(x, *p), (points, *params))


def test_parameter_gradients_match_analytic_sphere():
    radius, center = t(0.5).requires_grad_(), t([0.1, 0.2, 0.3]).requires_grad_()
    point = t([[1.0, 2.0, 2.0]])
    Sphere(radius, center)(point).sum().backward()
    direction = (point[0] - center.detach()) / (point[0] - center.detach()).norm()
    torch.testing.assert_close(radius.grad, t(-1.0))
    torch.testing.assert_close(center.grad, -direction)


def test_dtype_device_and_batch_shape_are_kept():
    points = torch.rand(4, 5, 3)
    for shape in SHAPES.values():
        out = shape(points)
        assert out.shape == (4, 5) and out.dtype == torch.float32
    assert sphere_sdf(torch.empty(0, 3), 1.0).shape == (0,)


# -- CSG ---------------------------------------------------------------------------------------------
def _random_points(n=500, seed=2):
    return torch.rand(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3 - 1.5


def test_csg_rules():
    a, b, c = Sphere(0.6), Box([0.3, 0.8, 0.4], center=[0.4, 0, 0]), Cylinder(0.2, 1.0)
    p = _random_points()
    da, db, dc = a(p), b(p), c(p)
    torch.testing.assert_close((a | b)(p), torch.minimum(da, db))
    torch.testing.assert_close((a & b)(p), torch.maximum(da, db))
    torch.testing.assert_close((a - b)(p), torch.maximum(da, -db))
    torch.testing.assert_close(union(a, b, c)(p), torch.minimum(torch.minimum(da, db), dc))
    torch.testing.assert_close(intersection(a, b, c)(p), torch.maximum(torch.maximum(da, db), dc))
    torch.testing.assert_close(difference(a, b, c)(p), torch.maximum(torch.maximum(da, -db), -dc))
    # nested hard unions flatten; tensors combine directly
    assert len(((a | b) | c).shapes) == 3
    torch.testing.assert_close(union(da, db), torch.minimum(da, db))
    torch.testing.assert_close(difference(da, db), torch.maximum(da, -db))


def test_smooth_csg_close_to_hard_and_equal_far_from_blend():
    a, b, k = Sphere(0.6), Box([0.3, 0.8, 0.4], center=[0.4, 0, 0]), 0.2
    p = _random_points(2000)
    da, db = a(p), b(p)
    cases = [
        (smooth_union(a, b, k)(p), torch.minimum(da, db), -1, (da - db).abs()),
        (smooth_intersection(a, b, k)(p), torch.maximum(da, db), 1, (da - db).abs()),
        (smooth_difference(a, b, k)(p), torch.maximum(da, -db), 1, (da + db).abs()),
    ]
    for smooth, hard, side, gap in cases:
        deviation = (smooth - hard) * side
        assert bool((deviation >= -1e-12).all()) and bool((deviation <= k / 4 + 1e-12).all())
        far = gap >= k
        assert far.sum() > 100 and bool((~far).sum() > 20)
        torch.testing.assert_close(smooth[far], hard[far])
        assert float(deviation[~far].max()) > 1e-3  # the blend really does something
    torch.testing.assert_close(smooth_union(da, db, k), smooth_union(a, b, k)(p))


def test_bounds_contain_sublevel_sets():
    shapes = dict(SHAPES)
    del shapes["plane"]
    shapes["csg"] = smooth_union(Sphere(0.5), Box([0.2, 0.2, 0.6], center=[0.5, 0, 0]), 0.3) - Cylinder(0.1, 2.0)
    shapes["intersection"] = Sphere(0.5) & Box([0.2, 0.9, 0.9], center=[0.4, 0, 0])
    shapes["smooth3"] = smooth_union(Sphere(0.2), Sphere(0.2, center=[0.45, 0, 0]), 0.5,
                                     Sphere(0.2, center=[0.9, 0, 0]))
    p = _random_points(20000, seed=3) * 1.5
    for name, shape in shapes.items():
        box = shape.bounds()
        assert box.shape == (2, 3), name
        for level in (0.0, 0.2):
            inside = p[shape(p) <= level]
            assert len(inside) > 0, name
            assert bool(((inside >= box[0] - level - 1e-9) & (inside <= box[1] + level + 1e-9)).all()), name


# -- transforms --------------------------------------------------------------------------------------
def test_transforms():
    p = _random_points()
    torch.testing.assert_close(Sphere(0.5).translate([0.1, -0.2, 0.3])(p), sphere_sdf(p, 0.5, center=[0.1, -0.2, 0.3]))
    quaternion = t([0.8, 0.3, -0.2, 0.4])
    rotation = quaternion_to_matrix(quaternion / quaternion.norm())
    box = Box([0.3, 0.5, 0.2])
    torch.testing.assert_close(box.rotate(quaternion)(p), box_sdf(p @ rotation, [0.3, 0.5, 0.2]))  # R^T p
    torch.testing.assert_close(box.rotate(rotation)(p), box.rotate(quaternion)(p))
    # rotating the box maps its surface points to the rotated box's surface
    corner = t([0.3, 0.5, 0.2])
    torch.testing.assert_close(box.rotate(rotation)((rotation @ corner)[None]), t([0.0]), atol=1e-12, rtol=0)
    torch.testing.assert_close(Sphere(0.5).scale(3.0)(p), sphere_sdf(p, 1.5))
    torch.testing.assert_close(box.scale(2.0)(p), box_sdf(p, [0.6, 1.0, 0.4]))
    torch.testing.assert_close(Sphere(0.5).translate([1, 0, 0]).scale(2.0)(p), sphere_sdf(p, 1.0, center=[2, 0, 0]))


# -- brute force against dense surface samples -------------------------------------------------------
def _grid(n_u, n_v):
    u, v = np.meshgrid(np.linspace(0, 1, n_u), np.linspace(0, 1, n_v), indexing="ij")
    return u.ravel(), v.ravel()


def _sphere_samples(radius, n=400):
    u, v = _grid(n, n)
    theta, phi = np.arccos(1 - 2 * u), 2 * np.pi * v
    return radius * np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], 1)


def _box_surface(half, n=150):
    faces = []
    u, v = _grid(n, n)
    for axis in range(3):
        others = [k for k in range(3) if k != axis]
        for sign in (-1, 1):
            face = np.zeros((len(u), 3))
            face[:, axis] = sign * half[axis]
            face[:, others[0]] = (2 * u - 1) * half[others[0]]
            face[:, others[1]] = (2 * v - 1) * half[others[1]]
            faces.append(face)
    return np.concatenate(faces)


def _cylinder_samples(radius, half_height, n=300):
    u, v = _grid(n, n)
    side = np.stack([radius * np.cos(2 * np.pi * u), radius * np.sin(2 * np.pi * u), (2 * v - 1) * half_height], 1)
    rho, angle = radius * np.sqrt(u), 2 * np.pi * v
    caps = [np.stack([rho * np.cos(angle), rho * np.sin(angle), np.full_like(u, s * half_height)], 1) for s in (-1, 1)]
    return np.concatenate([side, *caps])


def _torus_samples(big, small, n=400):
    u, v = _grid(n, n)
    a, b = 2 * np.pi * u, 2 * np.pi * v
    ring = big + small * np.cos(b)
    return np.stack([ring * np.cos(a), ring * np.sin(a), small * np.sin(b)], 1)


def _capsule_samples(half_length, radius, n=300):
    sphere = _sphere_samples(radius, n)
    tops = [sphere[sphere[:, 2] * s >= 0] + [0, 0, s * half_length] for s in (-1, 1)]
    u, v = _grid(n, n)
    side = np.stack([radius * np.cos(2 * np.pi * u), radius * np.sin(2 * np.pi * u), (2 * v - 1) * half_length], 1)
    return np.concatenate([side, *tops])


@pytest.mark.parametrize("name", ["sphere", "box", "rounded_box", "cylinder", "torus", "capsule"])
def test_distance_matches_dense_surface_samples(name):
    """|sdf| is the distance to the nearest surface point, so the nearest of many samples is at most one
    sample spacing farther (and never nearer)."""
    if name == "sphere":
        shape, samples, spacing = Sphere(0.6), _sphere_samples(0.6), 2 * np.pi * 0.6 / 400
    elif name == "box":
        shape, samples, spacing = Box([0.3, 0.5, 0.7]), _box_surface([0.3, 0.5, 0.7]), 1.4 / 150
    elif name == "rounded_box":  # surface = points at distance r from the inner box: compare |sdf + r|
        shape, samples, spacing = RoundedBox([0.4, 0.5, 0.7], 0.2), _box_surface([0.2, 0.3, 0.5]), 1.0 / 150
    elif name == "cylinder":
        shape, samples, spacing = Cylinder(0.5, 0.4), _cylinder_samples(0.5, 0.4), 2 * np.pi * 0.5 / 300
    elif name == "torus":
        shape, samples, spacing = Torus(0.6, 0.2), _torus_samples(0.6, 0.2), 2 * np.pi * 0.8 / 400
    else:
        shape = Capsule([0.0, 0.0, -0.4], [0.0, 0.0, 0.4], 0.3)
        samples, spacing = _capsule_samples(0.4, 0.3), 2 * np.pi * 0.3 / 300
    queries = _random_points(300, seed=4)
    sdf = shape(queries).numpy()
    if name == "rounded_box":
        sdf = sdf + 0.2
    nearest, _ = cKDTree(samples).query(queries.numpy())
    gap = nearest - np.abs(sdf)
    assert gap.min() >= -1e-9, f"{name}: a surface sample is nearer than |sdf|"
    assert gap.max() <= spacing, f"{name}: |sdf| is {gap.max():.4f} smaller than the nearest sample"


# -- errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: sphere_sdf(torch.rand(4, 2), 1.0), r"points must have shape \[\.\.\., 3\]"),
        (lambda: sphere_sdf(torch.ones(4, 3, dtype=torch.int64), 1.0), "floating-point"),
        (lambda: sphere_sdf(t([[0, 0, float("nan")]]), 1.0), "NaN or inf"),
        (lambda: sphere_sdf([[0.0, 0.0, 0.0]], 1.0), "torch tensor"),
        (lambda: sphere_sdf(torch.rand(3, 3), -1.0), "radius must be > 0"),
        (lambda: box_sdf(torch.rand(3, 3), [1.0, 0.0, 1.0]), "half_extents must be > 0"),
        (lambda: box_sdf(torch.rand(3, 3), [1.0, 1.0]), r"half_extents must have shape \[3\]"),
        (lambda: rounded_box_sdf(torch.rand(3, 3), [1.0, 0.2, 1.0], 0.5), "must not exceed the smallest half extent"),
        (lambda: plane_sdf(torch.rand(3, 3), [0.0, 0.0, 0.0]), "normal must be non-zero"),
        (lambda: torus_sdf(torch.rand(3, 3), 1.0, float("inf")), "minor_radius must be finite"),
        (lambda: Sphere(t([0.5, 0.6])), r"radius must have shape \[\]"),
        (lambda: Box([1.0, 1.0, 1.0]).rotate(t([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 1.0]])), "orthonormal"),
        (lambda: Box([1.0, 1.0, 1.0]).rotate(t([[-1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])), "det"),
        (lambda: Box([1.0, 1.0, 1.0]).rotate([1.0, 0.0]), "quaternion"),
        (lambda: Box([1.0, 1.0, 1.0]).scale(0.0), "factor must be > 0"),
        (lambda: union(Sphere(1.0)), "at least two"),
        (lambda: union(Sphere(1.0), 3.0), "must be an SDF"),
        (lambda: smooth_union(Sphere(1.0), Sphere(0.5), -0.1), "k must be > 0"),
    ],
)
def test_bad_input_raises(call, message):
    with pytest.raises(SDFError, match=message):
        call()


def test_sdf_base_class_is_abstract():
    with pytest.raises(NotImplementedError):
        SDF()(torch.zeros(1, 3))


@pytest.mark.cuda
def test_cuda_matches_cpu():
    points = _random_points(1000).float()
    for name, shape in SHAPES.items():
        cpu = shape(points)
        gpu = shape(points.cuda())
        assert gpu.device.type == "cuda", name
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=0)
