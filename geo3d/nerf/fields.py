"""Radiance fields: density ``sigma(x)`` (1/m), view-dependent colour ``c(x, d)`` and an optional feature
vector ``f(x)`` of any width (the language features the apps distil), all at world points in metres.

Every field has the same interface (:class:`RadianceField`):

- ``density(x [N, 3]) -> [N]`` (cheap: what the occupancy grid and the sample pruning call);
- ``forward(x [N, 3], d [N, 3] unit directions) -> FieldOutput(density [N], rgb [N, 3] in [0, 1],
  features [N, F] or None)``.

Three fields (the choice between them was measured: ``docs/nerf.md``):

- :class:`DenseGridField` (the default): a DVGO-style voxel grid of one density channel plus ``C``
  appearance channels, interpolated trilinearly; density ``softplus(raw + shift)`` applied *after*
  interpolation (sharp surfaces inside a cell); colour from a small MLP on the appearance channels and
  the SH-encoded view direction. One 8-corner gather per sample: the cheapest field per sample on a CPU.
- :class:`HashGridField`: Instant-NGP's multi-resolution hash encoding (``geo3d.nn.GridEncoding``) with
  a one-layer density MLP and a colour MLP; ~16x the gathers of the dense grid per sample, fewer
  parameters, resolution-free.
- :class:`MLPField`: the original NeRF (frequency encoding + MLP), the slow reference.

Feature heads (``feature_dim > 0``) read the same geometry features as colour but not the view
direction: a feature is a property of the point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geo3d.nn.activations import trunc_exp
from geo3d.nn.encodings import FrequencyEncoding, GridEncoding
from geo3d.nn.grids import DenseGrid, check_box, spherical_harmonics


class FieldOutput(NamedTuple):
    """A field's values at ``N`` samples: ``density [N]`` (1/m), ``rgb [N, 3]`` in [0, 1], ``features [N, F]``
    or None."""

    density: Tensor
    rgb: Tensor
    features: Tensor | None


def _mlp(in_dim: int, hidden: int, layers: int, out_dim: int) -> nn.Sequential:
    modules: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        width = hidden
    modules.append(nn.Linear(width, out_dim))
    return nn.Sequential(*modules)


def _check_points(x: Tensor, name: str = "x", like: Tensor | None = None) -> None:
    if (not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != 3 or not x.is_floating_point()
            or (like is not None and len(x) != len(like))):
        expected = "[N, 3]" if like is None else f"[{len(like)}, 3] (one per point)"
        raise ValueError(f"{name} must be a floating-point tensor of shape {expected}, got "
                         f"{getattr(x, 'shape', type(x).__name__)}")


class RadianceField(nn.Module):
    """Base class: ``aabb [6]`` (metres) is the box the field models; outside it the density is 0."""

    feature_dim: int = 0

    def __init__(self, aabb: Sequence[float] | Tensor, feature_dim: int = 0) -> None:
        super().__init__()
        aabb = check_box(aabb, "aabb").float()
        if isinstance(feature_dim, bool) or not isinstance(feature_dim, int) or feature_dim < 0:
            raise ValueError(f"feature_dim must be an integer >= 0, got {feature_dim!r}")
        self.register_buffer("aabb", aabb)
        self.feature_dim = feature_dim

    def inside(self, x: Tensor) -> Tensor:
        """``[N]`` bool: the points in the field's box."""
        return ((x >= self.aabb[:3]) & (x <= self.aabb[3:])).all(dim=-1)

    def density(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor, d: Tensor) -> FieldOutput:  # pragma: no cover - abstract
        raise NotImplementedError


class DenseGridField(RadianceField):
    """Voxel-grid radiance field (DVGO-style post-activated density + appearance grid + colour MLP).

    Args:
        aabb: the box in metres.
        resolution: lattice vertices per axis (the voxel size is ``extent / (resolution - 1)``).
        appearance_channels: ``C``, the appearance vector per vertex.
        hidden: width of the colour MLP (two hidden layers).
        sh_degree: degree of the view-direction encoding (``None``: no view dependence).
        feature_dim, feature_hidden: the feature head (``feature_dim`` outputs from the appearance vector;
            0 disables it).
        init_density: initial density in 1/m everywhere (its alpha over a step of ``s`` metres is
            ``1 - exp(-init_density * s)``); must be > 0 so that every cell starts in the occupancy grid.
    """

    def __init__(self, aabb: Sequence[float] | Tensor, resolution: int = 160, appearance_channels: int = 12,
                 hidden: int = 64, sh_degree: int | None = 3, feature_dim: int = 0, feature_hidden: int = 64,
                 init_density: float = 0.1) -> None:
        super().__init__(aabb, feature_dim)
        if not (isinstance(init_density, (int, float)) and math.isfinite(init_density) and init_density > 0):
            raise ValueError(f"init_density must be a positive number, got {init_density!r}")
        self.grid = DenseGrid(resolution, 1 + appearance_channels, self.aabb, init=0.0)
        with torch.no_grad():
            self.grid.table[:, 1:].uniform_(-1e-1, 1e-1)
        self.shift = float(math.log(math.expm1(init_density)))  # softplus(0 + shift) = init_density
        self.sh_degree = sh_degree
        view_dim = 0 if sh_degree is None else (sh_degree + 1) ** 2
        self.rgb_net = _mlp(appearance_channels + view_dim, hidden, 2, 3)
        self.feature_net = _mlp(appearance_channels, feature_hidden, 1, feature_dim) if feature_dim else None

    def inside(self, x: Tensor) -> Tensor:
        """``[N]`` bool: the points in the grid's box (the field's box, or the part it was shrunk to)."""
        return ((x >= self.grid.bounds[:3]) & (x <= self.grid.bounds[3:])).all(dim=-1)

    def density(self, x: Tensor) -> Tensor:
        _check_points(x)
        raw = self.grid(x, channels=slice(0, 1))[:, 0]
        return F.softplus(raw + self.shift) * self.inside(x)

    def forward(self, x: Tensor, d: Tensor) -> FieldOutput:
        _check_points(x)
        _check_points(d, "d", x)
        values = self.grid(x)
        density = F.softplus(values[:, 0] + self.shift) * self.inside(x)
        appearance = values[:, 1:]
        inputs = appearance if self.sh_degree is None else torch.cat(
            [appearance, spherical_harmonics(d, self.sh_degree)], dim=-1)
        rgb = torch.sigmoid(self.rgb_net(inputs))
        features = self.feature_net(appearance) if self.feature_net is not None else None
        return FieldOutput(density, rgb, features)

    def grid_parameters(self) -> list[nn.Parameter]:
        """The voxel table (trained with a larger learning rate than the MLPs)."""
        return [self.grid.table]

    def resample(self, resolution: int, bounds: Sequence[float] | Tensor | None = None) -> None:
        """Coarse-to-fine: re-grid to ``resolution`` vertices per axis, optionally over a smaller ``bounds``
        inside the field's box (outside it the density becomes 0). Rebuild the optimizer afterwards."""
        self.grid.resample(resolution, bounds)


class HashGridField(RadianceField):
    """Instant-NGP-style field: hash-grid encoding -> one-layer MLP -> (density, 15 geometry features);
    colour MLP on the geometry features and SH-encoded direction.

    Args:
        aabb: the box in metres (the hash grid spans it).
        num_levels, features_per_level, base_resolution, max_resolution, log2_hashmap_size: the
            :class:`geo3d.nn.GridEncoding` (resolutions in cells per side of the box).
        hidden: width of the MLPs.
        sh_degree: view-direction encoding (None: no view dependence).
        feature_dim, feature_hidden: the feature head.
    """

    geometry_dim = 15

    def __init__(self, aabb: Sequence[float] | Tensor, num_levels: int = 16, features_per_level: int = 2,
                 base_resolution: int = 16, max_resolution: int = 512, log2_hashmap_size: int = 17,
                 hidden: int = 64, sh_degree: int | None = 3, feature_dim: int = 0, feature_hidden: int = 64) -> None:
        super().__init__(aabb, feature_dim)
        bounds = (self.aabb[:3].tolist(), self.aabb[3:].tolist())
        self.encoding = GridEncoding(num_levels=num_levels, features_per_level=features_per_level,
                                     base_resolution=base_resolution, max_resolution=max_resolution,
                                     log2_hashmap_size=log2_hashmap_size, bounds=bounds)
        self.density_net = _mlp(self.encoding.out_dim, hidden, 1, 1 + self.geometry_dim)
        self.sh_degree = sh_degree
        view_dim = 0 if sh_degree is None else (sh_degree + 1) ** 2
        self.rgb_net = _mlp(1 + self.geometry_dim + view_dim, hidden, 2, 3)
        self.feature_net = _mlp(1 + self.geometry_dim, feature_hidden, 1, feature_dim) if feature_dim else None

    def _geometry(self, x: Tensor) -> Tensor:
        return self.density_net(self.encoding(x))

    def density(self, x: Tensor) -> Tensor:
        _check_points(x)
        return trunc_exp(self._geometry(x)[:, 0] - 1.0) * self.inside(x)

    def forward(self, x: Tensor, d: Tensor) -> FieldOutput:
        _check_points(x)
        _check_points(d, "d", x)
        geometry = self._geometry(x)
        density = trunc_exp(geometry[:, 0] - 1.0) * self.inside(x)
        inputs = geometry if self.sh_degree is None else torch.cat(
            [geometry, spherical_harmonics(d, self.sh_degree)], dim=-1)
        rgb = torch.sigmoid(self.rgb_net(inputs))
        features = self.feature_net(geometry) if self.feature_net is not None else None
        return FieldOutput(density, rgb, features)

    def grid_parameters(self) -> list[nn.Parameter]:
        """The hash tables."""
        return [self.encoding.table]


class MLPField(RadianceField):
    """The original NeRF field: frequency-encoded position -> ``depth`` ReLU layers -> density and a
    feature vector; frequency-encoded direction joins for colour.

    Args:
        aabb: the box in metres (positions are mapped to [-1, 1]^3 before encoding).
        position_frequencies, direction_frequencies: octaves of the encodings (NeRF: 10 and 4).
        hidden, depth: the trunk (NeRF: 256 and 8; smaller by default, it is a reference).
        view_dependent: feed the direction to the colour branch.
        feature_dim: the feature head.
    """

    def __init__(self, aabb: Sequence[float] | Tensor, position_frequencies: int = 10, direction_frequencies: int = 4,
                 hidden: int = 128, depth: int = 4, view_dependent: bool = True, feature_dim: int = 0) -> None:
        super().__init__(aabb, feature_dim)
        self.position_encoding = FrequencyEncoding(3, position_frequencies)
        self.direction_encoding = FrequencyEncoding(3, direction_frequencies) if view_dependent else None
        self.trunk = _mlp(self.position_encoding.out_dim, hidden, depth - 1, hidden + 1)
        view_dim = self.direction_encoding.out_dim if self.direction_encoding is not None else 0
        self.rgb_net = _mlp(hidden + view_dim, hidden // 2, 1, 3)
        self.feature_net = _mlp(hidden, hidden // 2, 1, feature_dim) if feature_dim else None

    def _trunk(self, x: Tensor) -> Tensor:
        low, high = self.aabb[:3], self.aabb[3:]
        return self.trunk(self.position_encoding((x - low) / (high - low) * 2 - 1))

    def density(self, x: Tensor) -> Tensor:
        _check_points(x)
        return F.softplus(self._trunk(x)[:, 0]) * self.inside(x)

    def forward(self, x: Tensor, d: Tensor) -> FieldOutput:
        _check_points(x)
        _check_points(d, "d", x)
        h = self._trunk(x)
        density = F.softplus(h[:, 0]) * self.inside(x)
        geometry = F.relu(h[:, 1:])
        inputs = geometry if self.direction_encoding is None else torch.cat(
            [geometry, self.direction_encoding(d)], dim=-1)
        rgb = torch.sigmoid(self.rgb_net(inputs))
        features = self.feature_net(geometry) if self.feature_net is not None else None
        return FieldOutput(density, rgb, features)

    def grid_parameters(self) -> list[nn.Parameter]:
        """No grid: every parameter is an MLP weight."""
        return []


FIELDS = {"dense": DenseGridField, "hash": HashGridField, "mlp": MLPField}
"""Field kinds by name (``geo3d train nerf --field``)."""
