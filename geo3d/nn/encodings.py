"""Input encodings for coordinate networks (SDF, NeRF): NeRF's frequency encoding and an
Instant-NGP-style multi-resolution grid encoding, both pure PyTorch.

- :class:`FrequencyEncoding` maps ``x [..., D]`` to ``[x, sin(2^0 pi x), cos(2^0 pi x), ...,
  sin(2^(L-1) pi x), cos(2^(L-1) pi x)]`` (NeRF's positional encoding; the input is kept first when
  ``include_input``).
- :class:`GridEncoding` holds ``num_levels`` grids of learned ``features_per_level``-dimensional
  vectors at resolutions growing geometrically from ``base_resolution`` to ``max_resolution``
  cells per side of the ``bounds`` box. A level whose ``(N + 1)^3`` vertices fit in
  ``2^log2_hashmap_size`` entries is a dense table; a finer one hashes its vertices into that many
  entries (Instant-NGP's spatial hash ``(i * 1) xor (j * 2654435761) xor (k * 805459861)``).
  The features of a point are the trilinear interpolation of its cell's 8 corner vectors, at every
  level, concatenated level by level (``out_dim = num_levels * features_per_level``).

Speed on the CPU: all levels are evaluated at once (one index computation over ``[N, L, 8]``
corners, one gather from a single concatenated table, one weighted sum), so a forward/backward
costs a handful of large tensor ops rather than ``8 L`` small ones (``benchmarks/bench_sdf.py``).

Differentiability: the output is differentiable with respect to the table and to the input (the
interpolation weights are polynomials in the input), and twice differentiable in the sense needed
by an eikonal loss: ``d/d(table) of |d out / d x|`` exists and autograd computes it (double backward
through the gather), checked by ``gradgradcheck`` in the tests. Inside a cell the encoding is
trilinear, so its input gradient jumps across cell faces; that is inherent to grid encodings.

Out-of-bounds inputs: points outside ``bounds`` are clamped onto the box before encoding, so the
features are constant along directions leaving the box and their input gradient there is zero in
the clamped coordinates. Callers that need fields outside the box should enlarge ``bounds``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

HASH_PRIMES = (1, 2654435761, 805459861)
"""Instant-NGP's per-axis primes of the spatial hash (the first axis is not multiplied)."""


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_input(x: Tensor, in_dim: int, name: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[-1] != in_dim:
        raise ValueError(f"{name} must have shape [..., {in_dim}], got {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")


class FrequencyEncoding(nn.Module):
    """NeRF positional encoding ``gamma(x) = [x, sin(2^k pi x), cos(2^k pi x)]_{k < num_frequencies}``.

    Args:
        in_dim: input dimension ``D``.
        num_frequencies: number of octaves ``L`` (frequencies ``2^0 pi ... 2^(L-1) pi``); 0 keeps only
            the input (needs ``include_input``).
        include_input: put ``x`` itself first in the output.

    ``forward(x [..., D]) -> [..., out_dim]`` with ``out_dim = D * (include_input + 2 L)``, ordered
    ``[x, sin(f0 x), cos(f0 x), sin(f1 x), ...]`` (each block ``D`` wide), in the dtype of ``x``.
    """

    def __init__(self, in_dim: int, num_frequencies: int, include_input: bool = True) -> None:
        super().__init__()
        self.in_dim = _check_positive_int(in_dim, "in_dim")
        if isinstance(num_frequencies, bool) or not isinstance(num_frequencies, int) or num_frequencies < 0:
            raise ValueError(f"num_frequencies must be an integer >= 0, got {num_frequencies!r}")
        if num_frequencies == 0 and not include_input:
            raise ValueError("FrequencyEncoding with num_frequencies=0 needs include_input=True")
        self.num_frequencies = num_frequencies
        self.include_input = bool(include_input)

    @property
    def out_dim(self) -> int:
        """Output feature dimension."""
        return self.in_dim * (int(self.include_input) + 2 * self.num_frequencies)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.in_dim)
        frequencies = math.pi * 2.0 ** torch.arange(self.num_frequencies, dtype=x.dtype, device=x.device)
        scaled = x[..., None, :] * frequencies[:, None]  # [..., L, D]
        parts = torch.stack((torch.sin(scaled), torch.cos(scaled)), dim=-2).flatten(-3)  # [..., L*2*D]
        return torch.cat((x, parts), dim=-1) if self.include_input else parts

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, num_frequencies={self.num_frequencies}, include_input={self.include_input}"


class GridEncoding(nn.Module):
    """Multi-resolution dense/hashed feature grids with trilinear interpolation (Instant-NGP style).

    Args:
        in_dim: input dimension (only 3 is supported: trilinear interpolation in a box).
        num_levels: number of resolution levels ``L``.
        features_per_level: feature width ``F`` of every level.
        base_resolution: cells per side of the coarsest level.
        max_resolution: cells per side of the finest level; the levels' resolutions are
            ``floor(base_resolution * per_level_scale^l)`` with ``per_level_scale =
            (max_resolution / base_resolution)^(1 / (L - 1))``.
        per_level_scale: growth factor between levels (``>= 1``); when given it replaces ``max_resolution``.
        log2_hashmap_size: a level holds at most ``2^log2_hashmap_size`` feature vectors; levels with
            more lattice vertices are hashed.
        bounds: ``[2, 3]`` box (min corner, max corner) in world units that the grids cover.
        init_scale: table entries start uniform in ``[-init_scale, init_scale]`` (Instant-NGP: 1e-4).

    ``forward(x [..., 3]) -> [..., L * F]`` in the table's dtype (float32 unless converted); ``x`` is
    clamped to ``bounds`` first (see the module docstring).
    """

    def __init__(self, in_dim: int = 3, num_levels: int = 16, features_per_level: int = 2,
                 base_resolution: int = 16, max_resolution: int | None = 2048,
                 per_level_scale: float | None = None, log2_hashmap_size: int = 19,
                 bounds: Sequence[Sequence[float]] | Tensor = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0)),
                 init_scale: float = 1e-4) -> None:
        super().__init__()
        if in_dim != 3:
            raise ValueError(f"GridEncoding supports in_dim=3 only, got {in_dim!r}")
        self.in_dim = 3
        self.num_levels = _check_positive_int(num_levels, "num_levels")
        self.features_per_level = _check_positive_int(features_per_level, "features_per_level")
        self.base_resolution = _check_positive_int(base_resolution, "base_resolution")
        self.log2_hashmap_size = _check_positive_int(log2_hashmap_size, "log2_hashmap_size")
        if self.log2_hashmap_size > 30:
            raise ValueError(f"log2_hashmap_size must be <= 30, got {log2_hashmap_size}")
        if per_level_scale is None:
            if max_resolution is None:
                raise ValueError("give max_resolution or per_level_scale")
            max_resolution = _check_positive_int(max_resolution, "max_resolution")
            if max_resolution < base_resolution:
                raise ValueError(f"max_resolution ({max_resolution}) must be >= base_resolution ({base_resolution})")
            per_level_scale = ((max_resolution / base_resolution) ** (1.0 / (num_levels - 1))
                               if num_levels > 1 else 1.0)
        if not (isinstance(per_level_scale, (int, float)) and math.isfinite(per_level_scale) and per_level_scale >= 1):
            raise ValueError(f"per_level_scale must be a finite number >= 1, got {per_level_scale!r}")
        self.per_level_scale = float(per_level_scale)
        if not (isinstance(init_scale, (int, float)) and math.isfinite(init_scale) and init_scale >= 0):
            raise ValueError(f"init_scale must be a finite number >= 0, got {init_scale!r}")
        bounds = torch.as_tensor(bounds, dtype=torch.float64)
        if bounds.shape != (2, 3) or not torch.isfinite(bounds).all() or not (bounds[1] > bounds[0]).all():
            raise ValueError(f"bounds must be a finite [2, 3] box with max > min, got {bounds.tolist()}")

        resolutions, sizes, hashed = [], [], []
        for level in range(num_levels):
            resolution = int(math.floor(base_resolution * self.per_level_scale**level + 1e-9))
            dense_size = (resolution + 1) ** 3
            capacity = 2**self.log2_hashmap_size
            resolutions.append(resolution)
            sizes.append(min(dense_size, capacity))
            hashed.append(dense_size > capacity)
        offsets = [0]
        for size in sizes:
            offsets.append(offsets[-1] + size)
        self.resolutions = tuple(resolutions)
        self.level_sizes = tuple(sizes)
        self.hashed_levels = tuple(hashed)
        self.register_buffer("bounds", bounds.float())
        self.register_buffer("_resolution", torch.tensor(resolutions, dtype=torch.int64), persistent=False)
        self.register_buffer("_size", torch.tensor(sizes, dtype=torch.int64), persistent=False)
        self.register_buffer("_offset", torch.tensor(offsets[:-1], dtype=torch.int64), persistent=False)
        self.register_buffer("_hashed", torch.tensor(hashed, dtype=torch.bool), persistent=False)
        self._num_dense = sum(not h for h in hashed)
        self.register_buffer("_dense_strides", torch.stack(
            [torch.ones(num_levels, dtype=torch.int64), self._resolution + 1, (self._resolution + 1) ** 2], dim=1
        )[: self._num_dense], persistent=False)
        self.register_buffer("_bit_values", torch.tensor([0, 1], dtype=torch.int64)[:, None], persistent=False)
        self.table = nn.Parameter(torch.empty(offsets[-1], self.features_per_level).uniform_(-init_scale, init_scale))

    @property
    def out_dim(self) -> int:
        """Output feature dimension ``num_levels * features_per_level``."""
        return self.num_levels * self.features_per_level

    def normalize(self, x: Tensor) -> Tensor:
        """``x [..., 3]`` world points to ``[0, 1]^3`` box coordinates (clamped), in ``x``'s dtype."""
        low, high = self.bounds[0].to(x.dtype), self.bounds[1].to(x.dtype)
        return ((x - low) / (high - low)).clamp(0.0, 1.0)

    def level_indices(self, cells: Tensor) -> Tensor:
        """Table rows of integer lattice vertices (the plain reference of the corner indexing that
        :meth:`forward` computes axis by axis): ``cells [..., L, 3]`` int64, vertex ``(i, j, k)`` of
        level ``l`` in ``[0, resolution_l]^3`` -> ``[..., L]`` int64 rows of the concatenated table."""
        resolution = self._resolution + 1  # vertices per side
        dense = cells[..., 0] + resolution * (cells[..., 1] + resolution * cells[..., 2])
        hashed = (cells[..., 0] * HASH_PRIMES[0]) ^ (cells[..., 1] * HASH_PRIMES[1]) ^ (cells[..., 2] * HASH_PRIMES[2])
        local = torch.where(self._hashed, hashed % self._size, dense)
        return local + self._offset

    def _corner_rows(self, cell: Tensor) -> Tensor:
        """``cell [N, L, 3]`` int64 lower corners -> ``[N, 2, 2, 2, L]`` table rows of the 8 corners
        (corner bit of axis a at dim a + 1). Per-axis terms are formed once for both bits and combined
        by broadcasting, which costs a quarter of the integer work of indexing 8 corners directly."""
        pieces = []
        num_dense = self._num_dense
        if num_dense:
            stride = self._dense_strides  # [Ld, 3]: 1, R+1, (R+1)^2
            terms = [(cell[:, None, :num_dense, a] + self._bit_values) * stride[:, a] for a in range(3)]  # [N,2,Ld]
            pieces.append(terms[0][:, :, None, None] + terms[1][:, None, :, None] + terms[2][:, None, None, :]
                          + self._offset[:num_dense])
        if num_dense < self.num_levels:
            terms = [(cell[:, None, num_dense:, a] + self._bit_values) * HASH_PRIMES[a] for a in range(3)]
            mask = self._size[num_dense:] - 1  # hashed levels hold 2^log2_hashmap_size entries
            hashed = (terms[0][:, :, None, None] ^ terms[1][:, None, :, None] ^ terms[2][:, None, None, :]) & mask
            pieces.append(hashed + self._offset[num_dense:])
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, 3)
        batch_shape = x.shape[:-1]
        x = x.reshape(-1, 3)
        scaled = self.normalize(x)[:, :, None] * self._resolution.to(x.dtype)  # [N, 3, L]
        # cell of each point (a point on the far face belongs to the last cell)
        cell = torch.minimum(scaled.detach().floor().long(), self._resolution - 1)  # [N, 3, L]
        frac = scaled - cell.to(x.dtype)  # [N, 3, L] in [0, 1]
        rows = self._corner_rows(cell.transpose(1, 2))  # [N, 2, 2, 2, L]
        # trilinear weights: product over axes of (1 - frac, frac) for corner bit (0, 1)
        w = torch.stack((1.0 - frac, frac), dim=2)  # [N, 3, 2, L]
        weights = w[:, 0, :, None, None] * w[:, 1, None, :, None] * w[:, 2, None, None, :]  # [N, 2, 2, 2, L]
        rows = rows.reshape(len(x), 8, self.num_levels)
        weights = weights.reshape(len(x), 8, self.num_levels, 1).to(self.table.dtype)
        width = self.features_per_level
        features = self.table.index_select(0, rows.reshape(-1)).view(len(x), 8, self.num_levels, width)
        encoded = (features * weights).sum(dim=1)  # [N, L, F]
        return encoded.reshape(*batch_shape, self.out_dim)

    def extra_repr(self) -> str:
        return (f"num_levels={self.num_levels}, features_per_level={self.features_per_level}, "
                f"resolutions={self.resolutions[0]}..{self.resolutions[-1]}, "
                f"log2_hashmap_size={self.log2_hashmap_size}, hashed_levels={sum(self.hashed_levels)}, "
                f"parameters={self.table.numel()}")
