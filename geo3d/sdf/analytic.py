"""Analytic signed distance functions, transforms and constructive solid geometry, in PyTorch.

**Sign convention: negative inside, zero on the surface, positive outside** (the value is the
Euclidean distance to the surface with that sign). All functions take ``points [..., 3]`` and return
``[...]`` in the points' dtype and device; they are differentiable with respect to the points *and*
the shape parameters, which may be Python floats or tensors (e.g. ``requires_grad=True`` to fit a
shape by gradient descent).

Two layers:

- functional ops ``sphere_sdf``, ``box_sdf``, ``rounded_box_sdf``, ``capsule_sdf``, ``cylinder_sdf``,
  ``torus_sdf``, ``plane_sdf``: **exact** Euclidean distances inside and outside;
- composable :class:`SDF` objects (``Sphere``, ``Box``, ... ``Plane``) with rigid transforms
  (``.translate``, ``.rotate``, ``.scale`` -- uniform only: a non-uniform scale does not map distances
  to distances, so it is not offered) and CSG (``union``/``|``, ``intersection``/``&``,
  ``difference``/``-``, and polynomial ``smooth_*`` blends).

Exactness of CSG (Quilez's well-known caveats): ``min`` is the exact distance *outside* a union but
only a bound inside it; ``max`` is exact *inside* an intersection but a bound outside; a difference
is a bound. Bounds keep the sign right and never overestimate ``|distance|`` outside (a union) or
inside (an intersection), so sphere tracing stays safe. Smooth blends are within ``k / 4`` of the
hard result and equal to it where the operands differ by more than ``k``.

``SDF.bounds()`` returns a ``[2, 3]`` box that contains the solid; more precisely, for every
``t >= 0`` the set ``{sdf <= t}`` lies inside the box grown by ``t`` (so a grid over the box, padded
by a voxel, captures the zero level set). It is None for unbounded shapes (planes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from geo3d.errors import SDFError
from geo3d.sdf._inputs import check_query_points as _check_points
from geo3d.geometry.rotations import quaternion_to_matrix

Scalar = float | torch.Tensor
Vector = Sequence[float] | torch.Tensor


# -- validation ------------------------------------------------------------------------------------
def _param(value, name: str, *, vector: bool = False, positive: bool = False, nonnegative: bool = False,
           single: bool = False):
    """Validate a shape parameter (float / sequence / tensor); returns it as given (tensors keep grad).
    ``single``: exactly one value (``[3]`` for vectors, ``[]`` for scalars), as the SDF objects need."""
    try:
        data = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as error:
        raise SDFError(f"{name} must be a number or a tensor, got {value!r}") from error
    if not data.is_floating_point() and data.dtype not in (torch.int32, torch.int64):
        raise SDFError(f"{name} must hold real numbers, got dtype {data.dtype}")
    if vector and (data.ndim < 1 or data.shape[-1] != 3):
        raise SDFError(f"{name} must have shape [3] (or [..., 3]), got {list(data.shape)}")
    if single and tuple(data.shape) != ((3,) if vector else ()):
        raise SDFError(f"{name} must have shape {[3] if vector else []}, got {list(data.shape)}")
    if not bool(torch.isfinite(data).all()):
        raise SDFError(f"{name} must be finite, got {value!r}")
    if positive and bool((data <= 0).any()):
        raise SDFError(f"{name} must be > 0, got {value!r}")
    if nonnegative and bool((data < 0).any()):
        raise SDFError(f"{name} must be >= 0, got {value!r}")
    return value if isinstance(value, torch.Tensor) else data


def _like(value, points: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(value, dtype=points.dtype, device=points.device)


def _local(points: torch.Tensor, center) -> torch.Tensor:
    return points if center is None else points - _like(center, points)


def _norm(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x, dim=-1)  # zero (not NaN) gradient at the origin


# -- kernels (no validation; tensors already on the points' device) --------------------------------
def _box(q: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    d = q.abs() - half
    return _norm(d.clamp(min=0)) + d.amax(-1).clamp(max=0)


def _capsule(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    pa, ba = p - a, b - a
    length_sq = (ba * ba).sum(-1, keepdim=True)
    t = torch.where(length_sq > 0, (pa * ba).sum(-1, keepdim=True) / length_sq.clamp(min=torch.finfo(p.dtype).tiny),
                    torch.zeros_like(length_sq)).clamp(0, 1)
    return _norm(pa - t * ba) - radius


def _cylinder(q: torch.Tensor, radius: torch.Tensor, half_height: torch.Tensor) -> torch.Tensor:
    d = torch.stack([_norm(q[..., :2]) - radius, q[..., 2].abs() - half_height], -1)
    return _norm(d.clamp(min=0)) + d.amax(-1).clamp(max=0)


def _torus(q: torch.Tensor, major: torch.Tensor, minor: torch.Tensor) -> torch.Tensor:
    ring = torch.stack([_norm(q[..., :2]) - major, q[..., 2]], -1)
    return _norm(ring) - minor


def _plane(p: torch.Tensor, normal: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    return (p * (normal / _norm(normal)[..., None])).sum(-1) - offset


# -- functional API --------------------------------------------------------------------------------
def sphere_sdf(points: torch.Tensor, radius: Scalar, center: Vector | None = None) -> torch.Tensor:
    """Sphere: ``|p - center| - radius``.

    Args:
        points: ``[..., 3]`` query points.
        radius: > 0, float or tensor broadcastable to ``[...]``.
        center: ``[3]`` (default origin).

    Returns:
        ``[...]`` exact signed distances, negative inside.
    """
    _check_points(points)
    radius = _param(radius, "radius", positive=True)
    center = None if center is None else _param(center, "center", vector=True)
    return _norm(_local(points, center)) - _like(radius, points)


def box_sdf(points: torch.Tensor, half_extents: Vector, center: Vector | None = None) -> torch.Tensor:
    """Axis-aligned box ``|p - center|_i <= half_extents_i`` (rotate it with :class:`Box`).

    Args:
        points: ``[..., 3]``.
        half_extents: ``[3]`` half side lengths, each > 0.
        center: ``[3]`` (default origin).

    Returns:
        ``[...]`` exact signed distances: the distance to the nearest face / edge / corner outside, minus
        the distance to the nearest face inside.
    """
    _check_points(points)
    half = _param(half_extents, "half_extents", vector=True, positive=True)
    center = None if center is None else _param(center, "center", vector=True)
    return _box(_local(points, center), _like(half, points))


def rounded_box_sdf(points: torch.Tensor, half_extents: Vector, radius: Scalar,
                    center: Vector | None = None) -> torch.Tensor:
    """Box with edges and corners rounded by ``radius``; ``half_extents`` are the *outer* half sizes.

    It is the box of half extents ``half_extents - radius`` dilated by ``radius``, so
    ``0 <= radius <= min(half_extents)`` (``radius = min`` gives a capsule-like or spherical shape).

    Returns:
        ``[...]`` exact signed distances.
    """
    _check_points(points)
    half = _param(half_extents, "half_extents", vector=True, positive=True)
    radius = _param(radius, "radius", nonnegative=True)
    _check_rounding(half, radius)
    center = None if center is None else _param(center, "center", vector=True)
    radius_t = _like(radius, points)
    return _box(_local(points, center), _like(half, points) - radius_t[..., None]) - radius_t


def _check_rounding(half, radius) -> None:
    h = half.detach() if isinstance(half, torch.Tensor) else torch.as_tensor(half)
    r = radius.detach() if isinstance(radius, torch.Tensor) else torch.as_tensor(radius)
    if bool((r.double()[..., None] > h.double()).any()):
        raise SDFError(f"radius ({radius!r}) must not exceed the smallest half extent ({half!r})")


def capsule_sdf(points: torch.Tensor, a: Vector, b: Vector, radius: Scalar) -> torch.Tensor:
    """Capsule: the segment ``a``-``b`` dilated by ``radius`` (a sphere when ``a == b``).

    Args:
        points: ``[..., 3]``.
        a, b: ``[3]`` end points of the axis segment.
        radius: > 0.

    Returns:
        ``[...]`` exact signed distances.
    """
    _check_points(points)
    a = _param(a, "a", vector=True)
    b = _param(b, "b", vector=True)
    radius = _param(radius, "radius", positive=True)
    return _capsule(points, _like(a, points), _like(b, points), _like(radius, points))


def cylinder_sdf(points: torch.Tensor, radius: Scalar, half_height: Scalar,
                 center: Vector | None = None) -> torch.Tensor:
    """Capped cylinder with axis +z through ``center``: ``x^2 + y^2 <= radius^2``, ``|z| <= half_height``.

    Returns:
        ``[...]`` exact signed distances (to the side, the caps, or the rim circles).
    """
    _check_points(points)
    radius = _param(radius, "radius", positive=True)
    half_height = _param(half_height, "half_height", positive=True)
    center = None if center is None else _param(center, "center", vector=True)
    return _cylinder(_local(points, center), _like(radius, points), _like(half_height, points))


def torus_sdf(points: torch.Tensor, major_radius: Scalar, minor_radius: Scalar,
              center: Vector | None = None) -> torch.Tensor:
    """Torus in the local xy plane (axis z): a tube of radius ``minor_radius`` around the circle of
    radius ``major_radius``; ``0 < minor_radius`` (a self-intersecting "spindle" torus when
    ``minor_radius > major_radius`` is still a valid distance to that tube).

    Returns:
        ``[...]`` exact signed distances.
    """
    _check_points(points)
    major_radius = _param(major_radius, "major_radius", nonnegative=True)
    minor_radius = _param(minor_radius, "minor_radius", positive=True)
    center = None if center is None else _param(center, "center", vector=True)
    return _torus(_local(points, center), _like(major_radius, points), _like(minor_radius, points))


def plane_sdf(points: torch.Tensor, normal: Vector, offset: Scalar = 0.0) -> torch.Tensor:
    """Half-space ``{p : n . p <= offset}`` with ``n = normal / |normal|``: ``n . p - offset``.

    The normal points to the outside (positive side); ``offset`` is the plane's signed distance from
    the origin along ``n``.

    Returns:
        ``[...]`` exact signed distances.
    """
    _check_points(points)
    normal = _param(normal, "normal", vector=True)
    _check_nonzero(normal)
    offset = _param(offset, "offset")
    return _plane(points, _like(normal, points), _like(offset, points))


def _check_nonzero(normal) -> None:
    data = normal.detach() if isinstance(normal, torch.Tensor) else torch.as_tensor(normal)
    if bool((torch.linalg.vector_norm(data.double(), dim=-1) == 0).any()):
        raise SDFError(f"normal must be non-zero, got {normal!r}")


# -- composable shapes -----------------------------------------------------------------------------
def _box_bounds(center, half) -> torch.Tensor:
    c = torch.zeros(3, dtype=torch.float64) if center is None else torch.as_tensor(center).detach().double().cpu()
    h = torch.as_tensor(half).detach().double().cpu().expand(3)
    return torch.stack([c - h, c + h])


class SDF:
    """A signed distance field: ``sdf(points [..., 3]) -> [...]``, negative inside.

    Subclasses implement :meth:`evaluate` (no input checks) and optionally :meth:`bounds`.
    ``__call__`` validates the points once and evaluates the whole expression tree.
    """

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        return self.evaluate(_check_points(points))

    def evaluate(self, points: torch.Tensor) -> torch.Tensor:
        """Distances for already validated ``points [..., 3]``."""
        raise NotImplementedError

    def bounds(self) -> torch.Tensor | None:
        """``[2, 3]`` float64 CPU min / max corners containing the solid (module docstring), or None."""
        return None

    # transforms
    def translate(self, offset: Vector) -> SDF:
        """The shape moved by ``offset [3]``: ``sdf'(p) = sdf(p - offset)``."""
        return Translated(self, offset)

    def rotate(self, rotation: Vector) -> SDF:
        """The shape rotated about the origin by a unit quaternion ``(w, x, y, z) [4]`` or a rotation
        matrix ``[3, 3]``: ``sdf'(p) = sdf(R^T p)``. Rotate before translating to spin in place."""
        return Rotated(self, rotation)

    def scale(self, factor: Scalar) -> SDF:
        """The shape scaled uniformly about the origin by ``factor > 0``: ``sdf'(p) = factor * sdf(p / factor)``."""
        return Scaled(self, factor)

    # CSG operators
    def __or__(self, other: SDF) -> SDF:
        return union(self, other)

    def __and__(self, other: SDF) -> SDF:
        return intersection(self, other)

    def __sub__(self, other: SDF) -> SDF:
        return difference(self, other)


class Sphere(SDF):
    """Sphere of ``radius`` at ``center`` (:func:`sphere_sdf`)."""

    def __init__(self, radius: Scalar, center: Vector | None = None) -> None:
        self.radius = _param(radius, "radius", positive=True, single=True)
        self.center = None if center is None else _param(center, "center", vector=True, single=True)

    def evaluate(self, points):
        return _norm(_local(points, self.center)) - _like(self.radius, points)

    def bounds(self):
        return _box_bounds(self.center, torch.as_tensor(self.radius).detach().double().cpu().expand(3))


class Box(SDF):
    """Box of ``half_extents [3]`` centred at ``center`` (:func:`box_sdf`)."""

    def __init__(self, half_extents: Vector, center: Vector | None = None) -> None:
        self.half_extents = _param(half_extents, "half_extents", vector=True, positive=True, single=True)
        self.center = None if center is None else _param(center, "center", vector=True, single=True)

    def evaluate(self, points):
        return _box(_local(points, self.center), _like(self.half_extents, points))

    def bounds(self):
        return _box_bounds(self.center, self.half_extents)


class RoundedBox(SDF):
    """Box of outer ``half_extents`` with edges rounded by ``radius`` (:func:`rounded_box_sdf`)."""

    def __init__(self, half_extents: Vector, radius: Scalar, center: Vector | None = None) -> None:
        self.half_extents = _param(half_extents, "half_extents", vector=True, positive=True, single=True)
        self.radius = _param(radius, "radius", nonnegative=True, single=True)
        _check_rounding(self.half_extents, self.radius)
        self.center = None if center is None else _param(center, "center", vector=True, single=True)

    def evaluate(self, points):
        radius = _like(self.radius, points)
        return _box(_local(points, self.center), _like(self.half_extents, points) - radius[..., None]) - radius

    def bounds(self):
        return _box_bounds(self.center, self.half_extents)


class Capsule(SDF):
    """Segment ``a``-``b`` dilated by ``radius`` (:func:`capsule_sdf`)."""

    def __init__(self, a: Vector, b: Vector, radius: Scalar) -> None:
        self.a, self.b = _param(a, "a", vector=True, single=True), _param(b, "b", vector=True, single=True)
        self.radius = _param(radius, "radius", positive=True, single=True)

    def evaluate(self, points):
        return _capsule(points, _like(self.a, points), _like(self.b, points), _like(self.radius, points))

    def bounds(self):
        a, b = (torch.as_tensor(v).detach().double().cpu() for v in (self.a, self.b))
        r = float(torch.as_tensor(self.radius).detach())
        return torch.stack([torch.minimum(a, b) - r, torch.maximum(a, b) + r])


class Cylinder(SDF):
    """Capped cylinder, axis z, ``radius`` and ``half_height`` (:func:`cylinder_sdf`)."""

    def __init__(self, radius: Scalar, half_height: Scalar, center: Vector | None = None) -> None:
        self.radius = _param(radius, "radius", positive=True, single=True)
        self.half_height = _param(half_height, "half_height", positive=True, single=True)
        self.center = None if center is None else _param(center, "center", vector=True, single=True)

    def evaluate(self, points):
        return _cylinder(_local(points, self.center), _like(self.radius, points), _like(self.half_height, points))

    def bounds(self):
        r, h = (float(torch.as_tensor(v).detach()) for v in (self.radius, self.half_height))
        return _box_bounds(self.center, torch.tensor([r, r, h], dtype=torch.float64))


class Torus(SDF):
    """Torus in the local xy plane (:func:`torus_sdf`)."""

    def __init__(self, major_radius: Scalar, minor_radius: Scalar, center: Vector | None = None) -> None:
        self.major_radius = _param(major_radius, "major_radius", nonnegative=True, single=True)
        self.minor_radius = _param(minor_radius, "minor_radius", positive=True, single=True)
        self.center = None if center is None else _param(center, "center", vector=True, single=True)

    def evaluate(self, points):
        return _torus(_local(points, self.center), _like(self.major_radius, points),
                      _like(self.minor_radius, points))

    def bounds(self):
        big, small = (float(torch.as_tensor(v).detach()) for v in (self.major_radius, self.minor_radius))
        return _box_bounds(self.center, torch.tensor([big + small, big + small, small], dtype=torch.float64))


class Plane(SDF):
    """Half-space ``n . p <= offset`` (:func:`plane_sdf`); unbounded, so ``bounds()`` is None."""

    def __init__(self, normal: Vector, offset: Scalar = 0.0) -> None:
        self.normal = _param(normal, "normal", vector=True, single=True)
        _check_nonzero(self.normal)
        self.offset = _param(offset, "offset", single=True)

    def evaluate(self, points):
        return _plane(points, _like(self.normal, points), _like(self.offset, points))


# -- transforms ------------------------------------------------------------------------------------
class Translated(SDF):
    """``shape`` moved by ``offset [3]``."""

    def __init__(self, shape: SDF, offset: Vector) -> None:
        self.shape = _check_shape(shape, "shape")
        self.offset = _param(offset, "offset", vector=True, single=True)

    def evaluate(self, points):
        return self.shape.evaluate(points - _like(self.offset, points))

    def bounds(self):
        inner = self.shape.bounds()
        return None if inner is None else inner + torch.as_tensor(self.offset).detach().double().cpu()


class Rotated(SDF):
    """``shape`` rotated about the origin by ``rotation`` (quaternion ``(w, x, y, z)`` or ``[3, 3]``)."""

    def __init__(self, shape: SDF, rotation: Vector) -> None:
        self.shape = _check_shape(shape, "shape")
        rotation = rotation if isinstance(rotation, torch.Tensor) else torch.as_tensor(rotation, dtype=torch.float64)
        if rotation.shape == (4,):
            _param(rotation, "rotation")
            if float(torch.linalg.vector_norm(rotation.detach().double())) < 1e-12:
                raise SDFError("rotation quaternion must be non-zero")
            self.matrix = quaternion_to_matrix(rotation)
        elif rotation.shape == (3, 3):
            _param(rotation, "rotation")
            r = rotation.detach().double()
            error = float((r @ r.T - torch.eye(3, dtype=torch.float64)).abs().max())
            if error > 1e-4 or float(torch.linalg.det(r)) < 0:
                raise SDFError(f"rotation matrix must be orthonormal with det +1 (|R R^T - I| = {error:.2g}, "
                               f"det = {float(torch.linalg.det(r)):.4g})")
            self.matrix = rotation
        else:
            raise SDFError(f"rotation must be a quaternion (w, x, y, z) [4] or a matrix [3, 3], "
                           f"got shape {list(rotation.shape)}")

    def evaluate(self, points):
        return self.shape.evaluate(points @ _like(self.matrix, points))  # rows: R^T p

    def bounds(self):
        inner = self.shape.bounds()
        if inner is None:
            return None
        corners = torch.cartesian_prod(*(inner[:, k] for k in range(3)))
        rotated = corners @ torch.as_tensor(self.matrix).detach().double().cpu().T
        return torch.stack([rotated.amin(0), rotated.amax(0)])


class Scaled(SDF):
    """``shape`` scaled uniformly about the origin by ``factor``."""

    def __init__(self, shape: SDF, factor: Scalar) -> None:
        self.shape = _check_shape(shape, "shape")
        self.factor = _param(factor, "factor", positive=True, single=True)

    def evaluate(self, points):
        factor = _like(self.factor, points)
        return factor * self.shape.evaluate(points / factor)

    def bounds(self):
        inner = self.shape.bounds()
        return None if inner is None else inner * float(torch.as_tensor(self.factor).detach())


# -- CSG -------------------------------------------------------------------------------------------
def _check_shape(shape, name: str) -> SDF:
    if not isinstance(shape, SDF):
        raise SDFError(f"{name} must be an SDF object, got {type(shape).__name__}")
    return shape


def _smooth_min(a: torch.Tensor, b: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Polynomial smooth minimum: <= min(a, b), >= min(a, b) - k / 4, equal when |a - b| >= k."""
    h = (0.5 + 0.5 * (b - a) / k).clamp(0, 1)
    return b + h * (a - b) - k * h * (1 - h)


class _Combination(SDF):
    def __init__(self, shapes: Sequence[SDF], k: Scalar | None = None) -> None:
        if len(shapes) < 2:
            raise SDFError(f"{type(self).__name__} needs at least two shapes, got {len(shapes)}")
        self.shapes = tuple(_check_shape(s, f"shape {i}") for i, s in enumerate(shapes))
        self.k = None if k is None else _param(k, "k", positive=True, single=True)

    @staticmethod
    def _step(a: torch.Tensor, b: torch.Tensor, k: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def _fold(cls, values: Sequence[torch.Tensor], k: torch.Tensor | None) -> torch.Tensor:
        result = values[0]
        for value in values[1:]:
            result = cls._step(result, value, k)
        return result

    def evaluate(self, points):
        k = None if self.k is None else _like(self.k, points)
        return self._fold([s.evaluate(points) for s in self.shapes], k)


class Union(_Combination):
    """Union ``min(a, b, ...)`` (or the smooth minimum with blend radius ``k``)."""

    @staticmethod
    def _step(a, b, k):
        return torch.minimum(a, b) if k is None else _smooth_min(a, b, k)

    def bounds(self):
        boxes = [s.bounds() for s in self.shapes]
        if any(b is None for b in boxes):
            return None
        box = torch.stack([torch.stack([b[0] for b in boxes]).amin(0), torch.stack([b[1] for b in boxes]).amax(0)])
        # each smooth step lies at most k / 4 below the hard minimum
        pad = 0.0 if self.k is None else 0.25 * float(torch.as_tensor(self.k).detach()) * (len(boxes) - 1)
        return box + torch.tensor([-pad, pad], dtype=torch.float64)[:, None]


class Intersection(_Combination):
    """Intersection ``max(a, b, ...)`` (or the smooth maximum with blend radius ``k``)."""

    @staticmethod
    def _step(a, b, k):
        return torch.maximum(a, b) if k is None else -_smooth_min(-a, -b, k)

    def bounds(self):
        boxes = [b for b in (s.bounds() for s in self.shapes) if b is not None]
        if not boxes:
            return None
        low, high = torch.stack([b[0] for b in boxes]).amax(0), torch.stack([b[1] for b in boxes]).amin(0)
        return torch.stack([low, torch.maximum(low, high)])  # empty intersection: a degenerate box


class Difference(_Combination):
    """``a`` minus ``b`` (minus ``c`` ...): ``max(a, -b)`` (or its smooth version with blend radius ``k``)."""

    @staticmethod
    def _step(a, b, k):
        return torch.maximum(a, -b) if k is None else -_smooth_min(-a, b, k)

    def bounds(self):
        return self.shapes[0].bounds()  # the result lies inside a (smax >= max)


def _combine(kind: type[_Combination], operands: tuple, k=None):
    if operands and all(isinstance(x, torch.Tensor) for x in operands):  # plain distance tensors
        if len(operands) < 2:
            raise SDFError(f"{kind.__name__.lower()} needs at least two operands, got {len(operands)}")
        try:
            operands = torch.broadcast_tensors(*operands)
        except RuntimeError as error:
            raise SDFError(f"{kind.__name__.lower()}: distance tensors do not broadcast: {error}") from error
        return kind._fold(operands, None if k is None else _like(_param(k, "k", positive=True), operands[0]))
    if k is None and kind is not Difference:  # flatten nested hard unions / intersections
        operands = [part for shape in operands
                    for part in (shape.shapes if type(shape) is kind and shape.k is None else (shape,))]
    return kind(operands, k)


def union(*shapes):
    """Union of two or more :class:`SDF` objects (``a | b``): ``min``; exact outside, a bound inside.

    Also accepts distance tensors (broadcast together) and then returns the combined tensor.
    """
    return _combine(Union, shapes)


def intersection(*shapes):
    """Intersection (``a & b``): ``max``; exact inside, a bound outside. Accepts tensors like :func:`union`."""
    return _combine(Intersection, shapes)


def difference(a, b, *more):
    """``a`` minus ``b`` (and ``more``) (``a - b``): ``max(a, -b)``, a bound. Accepts tensors like :func:`union`."""
    return _combine(Difference, (a, b, *more))


def smooth_union(a, b, k: Scalar, *more):
    """Blended union with blend radius ``k > 0`` (polynomial smooth min): within ``k / 4`` below
    ``min(a, b)``, equal to it where ``|a - b| >= k``. Folds left over ``more`` shapes."""
    return _combine(Union, (a, b, *more), k)


def smooth_intersection(a, b, k: Scalar, *more):
    """Blended intersection: ``-smooth_min(-a, -b)``, within ``k / 4`` above ``max(a, b)``."""
    return _combine(Intersection, (a, b, *more), k)


def smooth_difference(a, b, k: Scalar, *more):
    """Blended difference: ``-smooth_min(-a, b)``, within ``k / 4`` above ``max(a, -b)``."""
    return _combine(Difference, (a, b, *more), k)
