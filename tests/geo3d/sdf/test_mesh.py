"""MeshSDF against independent references: trimesh inside tests, exact analytic box / sphere distances and
a brute-force point-to-triangle distance; the DeepSDF-style sampler's distribution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from geo3d.errors import MeshError, SDFError
from geo3d.sdf.analytic import box_sdf
from geo3d.sdf.mesh import (
    MeshSDF,
    closest_point_on_triangles,
    edge_report,
    sample_sdf_points,
    sample_surface_points,
)
from geo3d.structures.mesh import TriangleMesh, read_mesh

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def brute_force_distance(points: np.ndarray, mesh: TriangleMesh) -> np.ndarray:
    """Distance from each point to the nearest triangle: the projection onto the triangle's plane when it
    falls inside (barycentric test), else the nearest of the three edge segments; over all faces."""
    tri = mesh.vertices[mesh.faces]  # [F, 3, 3]
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    normal = np.cross(b - a, c - a)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    out = np.empty(len(points))
    for i, p in enumerate(points):
        height = ((p - a) * normal).sum(1)
        foot = p - height[:, None] * normal
        # barycentric coordinates of the foot point through signed sub-triangle areas
        inside = np.ones(len(a), dtype=bool)
        for u, v in ((a, b), (b, c), (c, a)):
            inside &= (np.cross(v - u, foot - u) * normal).sum(1) >= 0
        best = np.where(inside, np.abs(height), np.inf)
        for u, v in ((a, b), (b, c), (c, a)):
            edge = v - u
            s = np.clip(((p - u) * edge).sum(1) / (edge * edge).sum(1), 0, 1)
            best = np.minimum(best, np.linalg.norm(p - (u + s[:, None] * edge), axis=1))
        out[i] = best.min()
    return out


@pytest.fixture(scope="module")
def icosphere() -> TriangleMesh:
    return TriangleMesh.from_trimesh(trimesh.creation.icosphere(subdivisions=3, radius=0.5))


@pytest.fixture
def bunny(meshes_dir) -> TriangleMesh:
    return read_mesh(meshes_dir / "bunny_watertight.ply")


def random_queries(mesh: TriangleMesh, count: int, seed: int, padding: float = 0.2) -> torch.Tensor:
    bounds = mesh.bounds()
    rng = np.random.default_rng(seed)
    low, high = bounds[0] - padding, bounds[1] + padding
    return torch.from_numpy(low + rng.random((count, 3)) * (high - low))


def test_box_mesh_matches_exact_box_sdf():
    extents = np.array([0.6, 1.0, 1.4])
    mesh = TriangleMesh.from_trimesh(trimesh.creation.box(extents=extents))
    sdf = MeshSDF(mesh)
    queries = random_queries(mesh, 2000, seed=0)
    expected = box_sdf(queries, torch.from_numpy(extents / 2))
    torch.testing.assert_close(sdf.signed_distance(queries), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(sdf.occupancy(queries), expected < 0)


@pytest.mark.parametrize("which", ["icosphere", "bunny"])
def test_sign_agrees_with_trimesh_contains(which, request):
    mesh = request.getfixturevalue(which)
    sdf = MeshSDF(mesh)
    queries = random_queries(mesh, 1500, seed=1, padding=0.05)
    signed = sdf.signed_distance(queries)
    inside = mesh.to_trimesh().contains(queries.numpy())
    assert 0.1 < inside.mean() < 0.9
    np.testing.assert_array_equal((signed < 0).numpy(), inside)
    np.testing.assert_array_equal(sdf.occupancy(queries).numpy(), inside)
    torch.testing.assert_close(signed.abs(), sdf.unsigned_distance(queries))


@pytest.mark.parametrize("which", ["icosphere", "bunny"])
def test_unsigned_distance_matches_brute_force(which, request):
    mesh = request.getfixturevalue(which)
    sdf = MeshSDF(mesh)
    queries = random_queries(mesh, 200, seed=2)
    # the float64 refinement on Open3D's (float32) choice of triangle makes the distance exact
    np.testing.assert_allclose(sdf.unsigned_distance(queries).numpy(), brute_force_distance(queries.numpy(), mesh),
                               atol=1e-9, rtol=0)


def test_mesh_far_from_the_origin_keeps_its_precision(icosphere):
    offset = np.array([1000.0, -500.0, 200.0])  # float32 spacing at 1000 m is 6e-5
    moved = MeshSDF(TriangleMesh(icosphere.vertices + offset, icosphere.faces))
    queries = random_queries(icosphere, 500, seed=6)
    expected = MeshSDF(icosphere).signed_distance(queries)
    torch.testing.assert_close(moved.signed_distance(queries + torch.from_numpy(offset)), expected, atol=1e-9, rtol=0)


def test_closest_points_lie_on_surface_at_reported_distance(bunny):
    sdf = MeshSDF(bunny)
    queries = random_queries(bunny, 300, seed=3)
    result = sdf.closest_points(queries)
    torch.testing.assert_close(result.distance, (queries - result.points).norm(dim=1))
    torch.testing.assert_close(result.distance, sdf.unsigned_distance(queries))
    assert float(sdf.unsigned_distance(result.points).max()) < 1e-7
    # the closest point lies on the reported face, whose normal is returned
    corners = bunny.vertices[bunny.faces[result.face_index.numpy()]]
    on_face = closest_point_on_triangles(result.points.numpy(), corners[:, 0], corners[:, 1], corners[:, 2])
    np.testing.assert_allclose(on_face, result.points.numpy(), atol=1e-12)
    np.testing.assert_allclose(result.normals.numpy(), bunny.face_normals()[result.face_index.numpy()])
    # away from edges, the unit offset from the closest point is the signed normal
    signed = sdf.signed_distance(queries)
    offset = (queries - result.points) / signed[:, None]
    interior = (offset * result.normals).sum(1) > 0.999
    assert interior.float().mean() > 0.3


def test_non_watertight_scan_raises_for_signed_queries(meshes_dir):
    scan = read_mesh(meshes_dir / "bunny_scan.ply")
    with pytest.raises(MeshError, match="not watertight"):
        MeshSDF(scan)
    sdf = MeshSDF(scan, require_watertight=False)
    assert not sdf.is_watertight and sdf.edges.boundary_edges > 0
    queries = random_queries(scan, 30, seed=4, padding=0.02)
    for method in (sdf.signed_distance, sdf.occupancy, sdf):
        with pytest.raises(MeshError, match=r"not watertight \(\d+ boundary edges.*use unsigned_distance"):
            method(queries)
    with pytest.raises(MeshError, match="not watertight"):
        sample_sdf_points(sdf, 100)
    np.testing.assert_allclose(sdf.unsigned_distance(queries).numpy(), brute_force_distance(queries.numpy(), scan),
                               atol=1e-7, rtol=0)


def test_edge_report_detects_holes_and_flipped_faces(icosphere):
    assert edge_report(icosphere.faces).watertight
    holed = edge_report(icosphere.faces[1:])
    assert holed.boundary_edges == 3 and not holed.watertight
    flipped = icosphere.faces.copy()
    flipped[0] = flipped[0, ::-1]
    report = edge_report(flipped)
    assert report.boundary_edges == 0 and report.misoriented_edges == 3 and not report.watertight
    with pytest.raises(MeshError, match="3 inconsistently oriented edges"):
        MeshSDF(TriangleMesh(icosphere.vertices, flipped))
    # a triangle soup (every face with its own vertices, as in STL files) is merged by position
    soup = TriangleMesh(icosphere.vertices[icosphere.faces].reshape(-1, 3),
                        np.arange(3 * icosphere.num_faces).reshape(-1, 3))
    assert edge_report(soup.faces).boundary_edges == 3 * soup.num_faces
    assert edge_report(soup.faces, soup.vertices).watertight and MeshSDF(soup).is_watertight


def test_dtype_device_and_shape_follow_the_input(icosphere):
    sdf = MeshSDF(icosphere, sign_rays=1)
    queries = random_queries(icosphere, 24, seed=5).float().reshape(2, 12, 3)
    out = sdf.signed_distance(queries)
    assert out.shape == (2, 12) and out.dtype == torch.float32
    assert sdf.occupancy(queries).dtype == torch.bool
    cp = sdf.closest_points(queries)
    assert cp.points.shape == (2, 12, 3) and cp.face_index.shape == (2, 12) and cp.face_index.dtype == torch.int64
    # the tessellated sphere is inside the analytic one, within the chord sag
    radius = queries.norm(dim=-1) - 0.5
    assert bool((out >= radius - 1e-6).all()) and bool((out <= radius + 0.01).all())


@pytest.mark.parametrize(
    "points, message",
    [
        (torch.tensor([[0.0, float("nan"), 0.0]]), "NaN or inf"),
        (torch.zeros(5, 2), r"shape \[\.\.\., 3\]"),
        (torch.zeros(0, 3), "empty"),
        (torch.zeros(4, 3, dtype=torch.int32), "floating-point"),
        (np.zeros((4, 3)), "torch tensor"),
    ],
)
def test_bad_queries_raise(icosphere, points, message):
    sdf = MeshSDF(icosphere)
    for method in (sdf.signed_distance, sdf.unsigned_distance, sdf.occupancy, sdf.closest_points):
        with pytest.raises(SDFError, match=message):
            method(points)


def test_bad_meshes_and_options_raise(icosphere):
    with pytest.raises(MeshError, match="no faces"):
        MeshSDF(TriangleMesh(np.zeros((3, 3)), np.zeros((0, 3), dtype=np.int64)))
    with pytest.raises(MeshError, match="zero surface area"):
        MeshSDF(TriangleMesh(np.zeros((3, 3)), np.array([[0, 1, 2]])))
    with pytest.raises(MeshError, match="TriangleMesh"):
        MeshSDF(icosphere.to_trimesh())
    for rays in (0, 2, 1.0):
        with pytest.raises(SDFError, match="sign_rays"):
            MeshSDF(icosphere, sign_rays=rays)
    sdf = MeshSDF(icosphere)
    for kwargs, message in [({"num_points": 0}, "num_points"), ({"near_surface_fraction": 1.5}, "near_surface"),
                            ({"sigmas": (0.01, -1.0)}, "sigmas"), ({"sigmas": ()}, "sigmas"),
                            ({"bounds_padding": -0.1}, "bounds_padding")]:
        with pytest.raises(SDFError, match=message):
            sample_sdf_points(sdf, **{"num_points": 100, **kwargs})


def test_sdf_samples_distribution(bunny):
    sdf = MeshSDF(bunny)
    sigmas, padding, count = (0.0025, 0.025), 0.1, 20000
    samples = sample_sdf_points(sdf, count, sigmas=sigmas, bounds_padding=padding,
                                generator=torch.Generator().manual_seed(0))
    assert samples.points.shape == (count, 3) and samples.sdf.shape == (count,)
    assert samples.points.dtype == samples.sdf.dtype == torch.float32
    torch.testing.assert_close(samples.sdf, sdf.signed_distance(samples.points.double()).float(), atol=1e-6, rtol=0)
    bounds = bunny.bounds()
    diagonal = float(np.linalg.norm(bounds[1] - bounds[0]))
    distance = samples.sdf.abs().numpy()
    # rows: 8000 at the fine scale, 8000 at the coarse scale, then 4000 uniform in the padded box
    fine, coarse, uniform = distance[:8000], distance[8000:16000], samples.points[16000:].numpy()
    # |sdf| <= |noise| (a surface point is that close); a 3D Gaussian's norm rarely exceeds 5 sigma
    assert np.quantile(fine, 0.999) < 5 * sigmas[0] * diagonal
    assert np.quantile(coarse, 0.999) < 5 * sigmas[1] * diagonal
    assert np.median(fine) < np.median(coarse) / 4
    low, high = bounds[0] - padding * diagonal, bounds[1] + padding * diagonal
    assert bool(((uniform >= low) & (uniform <= high)).all())
    assert (uniform < bounds[0]).any() and (uniform > bounds[1]).any()  # the padding is used
    assert np.median(distance[16000:]) > 5 * np.median(coarse)
    inside_fraction = (samples.sdf[16000:] < 0).float().mean()
    volume_fraction = 0.2004 / np.prod(high - low)  # bunny volume / box volume
    assert abs(float(inside_fraction) - volume_fraction) < 0.03


def test_samplers_are_deterministic_given_the_generator(icosphere):
    sdf = MeshSDF(icosphere)

    def draw(seed):
        return sample_sdf_points(sdf, 500, generator=torch.Generator().manual_seed(seed))

    torch.testing.assert_close(draw(3), draw(3))
    assert not torch.equal(draw(3).points, draw(4).points)
    torch.manual_seed(7)
    first = sample_surface_points(icosphere, 100)
    torch.manual_seed(7)
    torch.testing.assert_close(sample_surface_points(icosphere, 100), first)


def test_surface_samples_lie_on_the_surface_with_outward_normals(icosphere):
    samples = sample_surface_points(MeshSDF(icosphere), 2000, generator=torch.Generator().manual_seed(1))
    assert samples.points.shape == samples.normals.shape == (2000, 3)
    assert float(MeshSDF(icosphere).unsigned_distance(samples.points.double()).max()) < 1e-6
    torch.testing.assert_close(samples.normals.norm(dim=1), torch.ones(2000))
    radial = samples.points / samples.points.norm(dim=1, keepdim=True)
    assert float((samples.normals * radial).sum(1).min()) > 0.98
    with pytest.raises(SDFError, match="num_points"):
        sample_surface_points(icosphere, -1)
    with pytest.raises(MeshError, match="non-zero area"):
        sample_surface_points(TriangleMesh(np.zeros((3, 3)), np.array([[0, 1, 2]])), 10)


@pytest.mark.cuda
def test_cuda_queries_come_back_on_cuda(icosphere):
    sdf = MeshSDF(icosphere)
    queries = random_queries(icosphere, 100, seed=7)
    out = sdf.signed_distance(queries.cuda())
    assert out.device.type == "cuda" and out.dtype == torch.float64
    torch.testing.assert_close(out.cpu(), sdf.signed_distance(queries))
    assert sdf.closest_points(queries.cuda().float()).face_index.device.type == "cuda"
