"""Signed distances, occupancy and closest points of a triangle mesh, and DeepSDF-style sampling.

:class:`MeshSDF` wraps Open3D's ``RaycastingScene`` (an Embree BVH on the CPU) built once per mesh:

- **Distances** come from ``compute_closest_points`` (float32 in Open3D), then are *refined in
  float64*: the closest point is recomputed exactly on the triangle Open3D picked. Vertices and
  queries are centred on the mesh's bounding-box centre before they reach Open3D, so a mesh far from
  the origin (world coordinates) keeps float32 resolution relative to its own size.
- **Sign / occupancy** comes from ``compute_occupancy``: Open3D casts ``sign_rays`` rays from each
  query and counts the intersections (odd = inside), taking the majority over the rays. A single ray
  can be fooled when it grazes an edge or vertex exactly; an odd ``sign_rays > 1`` makes that
  unlikely (default 3). The parity rule is only meaningful for a closed surface, so signed queries
  require a **watertight** mesh, checked here (not by Open3D, which would silently answer garbage):
  after merging vertices at identical positions, every undirected edge is shared by exactly two
  faces and every directed edge occurs once (the two faces run through it in opposite directions,
  i.e. consistent orientation). Meshes that fail
  raise :class:`~geo3d.errors.MeshError` for signed queries; unsigned queries always work.
- Sign convention: **negative inside**, positive outside, as everywhere in :mod:`geo3d.sdf`.
- Queries are torch tensors on any device and dtype; they are evaluated on the CPU and returned on
  the input's device and (floating) dtype. They are **not differentiable** with respect to the
  points (Open3D is a black box); the gradient of the unsigned distance is the unit vector from the
  closest point to the query, available from :meth:`MeshSDF.closest_points` if needed.

:func:`sample_sdf_points` draws DeepSDF-style training samples (surface points perturbed at two
scales plus uniform points in the padded bounding box) and :func:`sample_surface_points` oriented
surface samples for fitting neural SDFs to point clouds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from geo3d.errors import MeshError, SDFError
from geo3d.sdf._inputs import check_query_points
from geo3d.structures.mesh import TriangleMesh
from geo3d.structures.shapes import sample_surface
from geo3d.utils.optional import require


class ClosestPoints(NamedTuple):
    """Closest surface points of query points (:meth:`MeshSDF.closest_points`).

    Attributes:
        points: ``[..., 3]`` closest point on the mesh surface, same frame and units as the mesh.
        face_index: ``[...]`` int64 index of the triangle that holds it.
        normals: ``[..., 3]`` unit right-hand normal of that triangle (outward for a consistently
            oriented, counter-clockwise mesh; zero for a degenerate triangle).
        distance: ``[...]`` unsigned Euclidean distance from the query to ``points``.
    """

    points: torch.Tensor
    face_index: torch.Tensor
    normals: torch.Tensor
    distance: torch.Tensor


class SDFSamples(NamedTuple):
    """Training samples of a signed distance field (:func:`sample_sdf_points`).

    Attributes:
        points: ``[N, 3]`` sample positions (float32, CPU), mesh frame and units.
        sdf: ``[N]`` signed distance at each position, negative inside.
    """

    points: torch.Tensor
    sdf: torch.Tensor


class SurfaceSamples(NamedTuple):
    """Oriented surface samples (:func:`sample_surface_points`).

    Attributes:
        points: ``[N, 3]`` points on the surface (float32, CPU).
        normals: ``[N, 3]`` unit outward normals of the faces they lie on.
    """

    points: torch.Tensor
    normals: torch.Tensor


class EdgeReport(NamedTuple):
    """Edge statistics behind :attr:`MeshSDF.is_watertight`.

    Attributes:
        boundary_edges: undirected edges used by exactly one face (holes).
        non_manifold_edges: undirected edges used by more than two faces.
        misoriented_edges: directed edges used by two or more faces (neighbours with opposite winding).
    """

    boundary_edges: int
    non_manifold_edges: int
    misoriented_edges: int

    @property
    def watertight(self) -> bool:
        return self.boundary_edges == 0 and self.non_manifold_edges == 0 and self.misoriented_edges == 0


def edge_report(faces: np.ndarray, vertices: np.ndarray | None = None) -> EdgeReport:
    """Count boundary, non-manifold and inconsistently oriented edges of a triangle list.

    Args:
        faces: ``[F, 3]`` integer vertex indices. Degenerate faces (a repeated vertex) count as they
            are, so they usually make a mesh non-watertight.
        vertices: optional ``[V, 3]`` positions; when given, vertices at exactly the same position are
            merged first (STL files and "triangle soups" repeat the vertices of every face).

    Returns:
        :class:`EdgeReport`; ``.watertight`` is True for a closed, edge-manifold, consistently
        oriented surface (the condition under which ray parity gives a well-defined inside).
    """
    faces = np.asarray(faces, dtype=np.int64)
    if faces.size == 0:
        return EdgeReport(0, 0, 0)
    if vertices is not None:
        _, merged = np.unique(np.asarray(vertices), axis=0, return_inverse=True)
        faces = merged.reshape(-1)[faces]
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    _, directed_counts = np.unique(directed, axis=0, return_counts=True)
    _, undirected_counts = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    return EdgeReport(int((undirected_counts == 1).sum()), int((undirected_counts > 2).sum()),
                      int((directed_counts > 1).sum()))


def closest_point_on_triangles(points: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Exact closest point to each ``points[i]`` on triangle ``(a[i], b[i], c[i])`` (float64 NumPy).

    Region tests on the barycentric coordinates (vertex, edge or face region), vectorised over rows;
    degenerate triangles fall back to their vertices/edges. All arguments are ``[N, 3]``.
    """
    p, a, b, c = (np.asarray(x, dtype=np.float64) for x in (points, a, b, c))
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(1), (ac * ap).sum(1)
    bp = p - b
    d3, d4 = (ab * bp).sum(1), (ac * bp).sum(1)
    cp = p - c
    d5, d6 = (ab * cp).sum(1), (ac * cp).sum(1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2

    def ratio(num, den):
        return np.divide(num, den, out=np.zeros_like(num), where=den != 0)

    denom = va + vb + vc
    v, w = ratio(vb, denom), ratio(vc, denom)
    result = a + v[:, None] * ab + w[:, None] * ac  # face region (overwritten below where outside)
    t_bc = np.clip(ratio(d4 - d3, (d4 - d3) + (d5 - d6)), 0, 1)
    on_bc = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
    result[on_bc] = (b + t_bc[:, None] * (c - b))[on_bc]
    on_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    result[on_ac] = (a + np.clip(ratio(d2, d2 - d6), 0, 1)[:, None] * ac)[on_ac]
    at_c = (d6 >= 0) & (d5 <= d6)
    result[at_c] = c[at_c]
    on_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    result[on_ab] = (a + np.clip(ratio(d1, d1 - d3), 0, 1)[:, None] * ab)[on_ab]
    at_b = (d3 >= 0) & (d4 <= d3)
    result[at_b] = b[at_b]
    at_a = (d1 <= 0) & (d2 <= 0)
    result[at_a] = a[at_a]
    return result


def _query_array(points: torch.Tensor, name: str = "points") -> np.ndarray:
    """Checked query points as a float64 ``[N, 3]`` NumPy array (Open3D's input)."""
    check_query_points(points, name, allow_empty=False)
    return points.detach().to("cpu", torch.float64).numpy().reshape(-1, 3)


class MeshSDF:
    """Signed / unsigned distance, occupancy and closest points of a triangle mesh (Open3D ray casting).

    Args:
        mesh: the surface; counter-clockwise faces seen from outside for outward normals.
        require_watertight: raise at construction when the mesh is not watertight (default). With
            False the object is still built; signed queries then raise and unsigned ones work.
        sign_rays: odd number of rays Open3D casts per query for the inside test (majority vote of
            ray parities); 1 is fastest, 3 (default) is robust against rays grazing edges.

    Raises:
        MeshError: the mesh has no faces, zero area, or (with ``require_watertight``) is not watertight.
        SDFError: ``sign_rays`` is not a positive odd integer.

    Example::

        sdf = MeshSDF(read_mesh("bunny_watertight.ply"))
        d = sdf.signed_distance(torch.rand(1000, 3) - 0.5)      # [1000], negative inside
    """

    def __init__(self, mesh: TriangleMesh, require_watertight: bool = True, sign_rays: int = 3) -> None:
        if not isinstance(mesh, TriangleMesh):
            raise MeshError(f"mesh must be a geo3d TriangleMesh, got {type(mesh).__name__}")
        if mesh.num_faces == 0:
            raise MeshError("mesh has no faces: distances to it are undefined")
        if not mesh.area() > 0:
            raise MeshError("mesh has zero surface area: distances to it are undefined")
        if isinstance(sign_rays, bool) or not isinstance(sign_rays, int) or sign_rays < 1 or sign_rays % 2 == 0:
            raise SDFError(f"sign_rays must be a positive odd integer, got {sign_rays!r}")
        self.mesh = mesh
        self.sign_rays = sign_rays
        self.edges = edge_report(mesh.faces, mesh.vertices)
        if require_watertight and not self.edges.watertight:
            raise MeshError(self._not_watertight_message())
        self._vertices = np.asarray(mesh.vertices, dtype=np.float64)
        self._face_normals = mesh.face_normals()
        bounds = mesh.bounds()
        self._centre = 0.5 * (bounds[0] + bounds[1])
        o3c = require("open3d").core
        self._scene = require("open3d").t.geometry.RaycastingScene()
        self._scene.add_triangles(
            o3c.Tensor((self._vertices - self._centre).astype(np.float32)),
            o3c.Tensor(mesh.faces.astype(np.uint32)))

    @property
    def is_watertight(self) -> bool:
        """True when signed distance and occupancy are defined (see :func:`edge_report`)."""
        return self.edges.watertight

    def bounds(self) -> torch.Tensor:
        """``[2, 3]`` float64 min / max corner of the mesh's axis-aligned bounding box."""
        return torch.from_numpy(self.mesh.bounds())

    def _not_watertight_message(self) -> str:
        e = self.edges
        return (f"mesh is not watertight ({e.boundary_edges} boundary edges, {e.non_manifold_edges} non-manifold "
                f"edges, {e.misoriented_edges} inconsistently oriented edges): signed distance / occupancy are "
                "undefined; use unsigned_distance")

    def _require_sign(self) -> None:
        if not self.edges.watertight:
            raise MeshError(self._not_watertight_message())

    def _o3d_queries(self, array: np.ndarray):
        return require("open3d").core.Tensor((array - self._centre).astype(np.float32))

    def _closest(self, array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(closest points float64 [N, 3], face index int64 [N]) refined on Open3D's triangle."""
        result = self._scene.compute_closest_points(self._o3d_queries(array))
        face = result["primitive_ids"].numpy().astype(np.int64)
        corners = self._vertices[self.mesh.faces[face]]
        closest = closest_point_on_triangles(array, corners[:, 0], corners[:, 1], corners[:, 2])
        return closest, face

    def _inside(self, array: np.ndarray) -> np.ndarray:
        occupancy = self._scene.compute_occupancy(self._o3d_queries(array), nsamples=self.sign_rays)
        return occupancy.numpy().astype(bool)

    @staticmethod
    def _out(values: np.ndarray, like: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        return torch.from_numpy(values.reshape(tuple(shape))).to(device=like.device, dtype=like.dtype)

    def unsigned_distance(self, points: torch.Tensor) -> torch.Tensor:
        """Euclidean distance from each point to the surface; works on any mesh.

        Args:
            points: ``[..., 3]`` query points (mesh frame and units), any float dtype / device.

        Returns:
            ``[...]`` distances >= 0, on the input's device and dtype (not differentiable).

        Raises:
            SDFError: not a float tensor ``[..., 3]``, empty, or NaN / inf coordinates.
        """
        array = _query_array(points)
        closest, _ = self._closest(array)
        return self._out(np.linalg.norm(array - closest, axis=1), points, points.shape[:-1])

    def occupancy(self, points: torch.Tensor) -> torch.Tensor:
        """Whether each point lies inside the (watertight) mesh.

        Args:
            points: ``[..., 3]`` query points.

        Returns:
            ``[...]`` bool, True inside, on the input's device.

        Raises:
            MeshError: the mesh is not watertight.
            SDFError: bad query points.
        """
        self._require_sign()
        array = _query_array(points)
        return torch.from_numpy(self._inside(array).reshape(tuple(points.shape[:-1]))).to(points.device)

    def signed_distance(self, points: torch.Tensor) -> torch.Tensor:
        """Signed Euclidean distance to the (watertight) mesh, negative inside.

        Args:
            points: ``[..., 3]`` query points (mesh frame and units), any float dtype / device.

        Returns:
            ``[...]`` signed distances on the input's device and dtype (not differentiable).

        Raises:
            MeshError: the mesh is not watertight.
            SDFError: bad query points.
        """
        self._require_sign()
        array = _query_array(points)
        closest, _ = self._closest(array)
        distance = np.linalg.norm(array - closest, axis=1)
        signed = np.where(self._inside(array), -distance, distance)
        return self._out(signed, points, points.shape[:-1])

    def closest_points(self, points: torch.Tensor) -> ClosestPoints:
        """Closest surface point, its triangle, the triangle's normal and the distance, per query.

        Args:
            points: ``[..., 3]`` query points.

        Returns:
            :class:`ClosestPoints` with float fields in the input's dtype, ``face_index`` int64, all on
            the input's device. ``(points - closest) / distance`` is the gradient of the unsigned
            distance.
        """
        array = _query_array(points)
        closest, face = self._closest(array)
        batch = tuple(points.shape[:-1])
        return ClosestPoints(
            self._out(closest, points, batch + (3,)),
            torch.from_numpy(face.reshape(batch)).to(points.device),
            self._out(self._face_normals[face], points, batch + (3,)),
            self._out(np.linalg.norm(array - closest, axis=1), points, batch),
        )

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`signed_distance`."""
        return self.signed_distance(points)

    def __repr__(self) -> str:
        return (f"MeshSDF({self.mesh.num_vertices} vertices, {self.mesh.num_faces} faces, "
                f"watertight={self.is_watertight}, sign_rays={self.sign_rays})")


def _numpy_rng(generator: torch.Generator | None) -> np.random.Generator:
    """A NumPy generator seeded from ``generator`` (or torch's global RNG), so results follow torch seeding."""
    device = "cpu" if generator is None else generator.device
    seed = torch.randint(0, 2**62, (2,), generator=generator, dtype=torch.int64, device=device)
    return np.random.default_rng([int(s) for s in seed])


def _check_count(num_points: int, name: str = "num_points") -> None:
    if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) or num_points < 1:
        raise SDFError(f"{name} must be a positive integer, got {num_points!r}")


def sample_sdf_points(
    mesh_sdf: MeshSDF,
    num_points: int,
    near_surface_fraction: float = 0.8,
    sigmas: Sequence[float] = (0.0025, 0.025),
    bounds_padding: float = 0.1,
    generator: torch.Generator | None = None,
) -> SDFSamples:
    """DeepSDF-style SDF training samples: perturbed surface points plus uniform points in a box.

    ``round(num_points * near_surface_fraction)`` points are area-weighted surface samples displaced
    by isotropic Gaussian noise; they are split evenly between the scales in ``sigmas`` (standard
    deviations as **fractions of the bounding-box diagonal**). The rest are uniform in the mesh's
    bounding box grown by ``bounds_padding * diagonal`` on every side. Rows are ordered near-surface
    samples (scale by scale) then uniform ones. DeepSDF (Park et al. 2019) normalises each shape into
    the unit sphere and perturbs with variances 0.0025 and 0.00025 (standard deviations 0.05 and
    ~0.016); for a shape whose bounding-box diagonal is ~2 that is ``sigmas ~ (0.008, 0.025)``. The
    defaults here put more samples very close to the surface (a thin-shell scale), which helps
    mesh extraction at high resolution.

    Args:
        mesh_sdf: a :class:`MeshSDF` of a watertight mesh.
        num_points: total number of samples (> 0).
        near_surface_fraction: share of near-surface samples, in [0, 1].
        sigmas: one or more noise standard deviations (> 0), fractions of the bbox diagonal.
        bounds_padding: padding of the uniform box, fraction of the diagonal (>= 0).
        generator: torch generator for reproducibility (torch's global RNG when None); the samples are
            a pure function of the mesh, the arguments and the generator's state.

    Returns:
        :class:`SDFSamples` with ``points [num_points, 3]`` and ``sdf [num_points]``, float32 on the CPU.

    Raises:
        MeshError: the mesh is not watertight.
        SDFError: bad counts, fractions or scales.
    """
    if not isinstance(mesh_sdf, MeshSDF):
        raise SDFError(f"mesh_sdf must be a MeshSDF, got {type(mesh_sdf).__name__}")
    mesh_sdf._require_sign()
    _check_count(num_points)
    if not 0.0 <= near_surface_fraction <= 1.0:
        raise SDFError(f"near_surface_fraction must lie in [0, 1], got {near_surface_fraction!r}")
    scales = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if scales.size == 0 or not np.isfinite(scales).all() or (scales <= 0).any():
        raise SDFError(f"sigmas must be one or more finite values > 0, got {sigmas!r}")
    if not (np.isfinite(bounds_padding) and bounds_padding >= 0):
        raise SDFError(f"bounds_padding must be finite and >= 0, got {bounds_padding!r}")
    rng = _numpy_rng(generator)
    bounds = mesh_sdf.mesh.bounds()
    diagonal = float(np.linalg.norm(bounds[1] - bounds[0]))
    num_near = int(round(num_points * near_surface_fraction))
    per_scale = np.full(scales.size, num_near // scales.size)
    per_scale[: num_near % scales.size] += 1
    surface, _ = sample_surface(mesh_sdf.mesh.vertices, mesh_sdf.mesh.faces, num_near, rng)
    noise_std = np.repeat(scales * diagonal, per_scale)[:, None]
    near = surface + rng.normal(size=surface.shape) * noise_std
    low, high = bounds[0] - bounds_padding * diagonal, bounds[1] + bounds_padding * diagonal
    uniform = low + rng.random((num_points - num_near, 3)) * (high - low)
    points = torch.from_numpy(np.concatenate([near, uniform]))
    sdf = mesh_sdf.signed_distance(points)
    return SDFSamples(points.float(), sdf.float())


def sample_surface_points(mesh: TriangleMesh | MeshSDF, num_points: int,
                          generator: torch.Generator | None = None) -> SurfaceSamples:
    """Area-weighted uniform samples of a mesh surface with their face normals (oriented point cloud).

    Args:
        mesh: a :class:`TriangleMesh` (or a :class:`MeshSDF`, whose mesh is used); any mesh, watertight
            or not. Normals point outward when the faces are counter-clockwise seen from outside.
        num_points: number of samples (> 0).
        generator: torch generator (torch's global RNG when None).

    Returns:
        :class:`SurfaceSamples` ``(points [N, 3], normals [N, 3])``, float32 on the CPU.

    Raises:
        MeshError: the mesh has no faces of non-zero area.
        SDFError: bad ``num_points``.
    """
    mesh = mesh.mesh if isinstance(mesh, MeshSDF) else mesh
    if not isinstance(mesh, TriangleMesh):
        raise MeshError(f"mesh must be a geo3d TriangleMesh or MeshSDF, got {type(mesh).__name__}")
    _check_count(num_points)
    if mesh.num_faces == 0 or not mesh.area() > 0:
        raise MeshError("mesh has no faces of non-zero area: cannot sample its surface")
    points, normals = sample_surface(mesh.vertices, mesh.faces, num_points, _numpy_rng(generator))
    return SurfaceSamples(torch.from_numpy(points).float(), torch.from_numpy(normals).float())
