"""Morton (z-order) codes of integer 3D cell coordinates, as int64 torch tensors.

Bit order: the code interleaves the bits of ``(i, j, k)`` with ``i`` (x) in the lowest bit, so bit
``3 b`` is bit ``b`` of ``i``, bit ``3 b + 1`` is bit ``b`` of ``j`` and bit ``3 b + 2`` is bit ``b`` of
``k``. Each coordinate has 21 bits (0 <= i, j, k < 2^21), so codes fill 63 bits and stay non-negative
in int64. Sorting codes orders cells along the z-order curve; in an octree the code of a cell's parent
is ``code >> 3`` and the cell's slot among its parent's 8 children is ``code & 7``
(``slot = x + 2 y + 4 z`` with ``x, y, z`` the lowest bits of ``i, j, k``).

Encoding and decoding use the "split by 3" magic-number trick (shifts and masks over the whole
tensor, no loop over points), on any device.
"""

from __future__ import annotations

import torch

from geo3d.errors import VoxelError

MORTON_BITS = 21
"""Bits per coordinate: coordinates lie in ``[0, 2^21)`` and codes in ``[0, 2^63)``."""

MAX_COORDINATE = (1 << MORTON_BITS) - 1

_SPLIT_STEPS = (  # (shift, mask) spreading 21 bits of a coordinate to every third bit
    (32, 0x1F00000000FFFF),
    (16, 0x1F0000FF0000FF),
    (8, 0x100F00F00F00F00F),
    (4, 0x10C30C30C30C30C3),
    (2, 0x1249249249249249),
)


def _split_by_3(values: torch.Tensor) -> torch.Tensor:
    """Spread the low 21 bits of ``values`` (int64) so bit ``b`` moves to bit ``3 b``."""
    x = values & MAX_COORDINATE
    for shift, mask in _SPLIT_STEPS:
        x = (x | (x << shift)) & mask
    return x


def _compact_by_3(codes: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_split_by_3`: gather every third bit (from bit 0) into the low 21 bits."""
    x = codes & 0x1249249249249249
    for shift, mask in zip((2, 4, 8, 16, 32), (0x10C30C30C30C30C3, 0x100F00F00F00F00F, 0x1F0000FF0000FF,
                                               0x1F00000000FFFF, MAX_COORDINATE)):
        x = (x ^ (x >> shift)) & mask
    return x


def _check_integer(name: str, values: torch.Tensor) -> None:
    if not isinstance(values, torch.Tensor):
        raise VoxelError(f"{name} must be a torch.Tensor, got {type(values).__name__}")
    if values.dtype.is_floating_point or values.dtype.is_complex or values.dtype == torch.bool:
        raise VoxelError(f"{name} must hold integers, got dtype {values.dtype}")


def morton_encode_unchecked(ijk: torch.Tensor) -> torch.Tensor:
    """:func:`morton_encode` without the input checks, for callers that have validated ``ijk``."""
    ijk = ijk.to(torch.int64)
    return _split_by_3(ijk[..., 0]) | (_split_by_3(ijk[..., 1]) << 1) | (_split_by_3(ijk[..., 2]) << 2)


def morton_encode(ijk: torch.Tensor) -> torch.Tensor:
    """Morton codes of integer cell coordinates.

    Args:
        ijk: ``[..., 3]`` integer tensor (any integer dtype) of cell coordinates ``(i, j, k)`` along
            ``(x, y, z)``, each in ``[0, 2^21)``.

    Returns:
        ``[...]`` int64 codes in ``[0, 2^63)``, on the device of ``ijk`` (bit order: module docstring).

    Raises:
        VoxelError: not an integer tensor, last dimension not 3, or a coordinate out of ``[0, 2^21)``.
    """
    _check_integer("ijk", ijk)
    if ijk.ndim == 0 or ijk.shape[-1] != 3:
        raise VoxelError(f"ijk must have shape [..., 3], got {tuple(ijk.shape)}")
    if ijk.numel() and (bool((ijk < 0).any()) or bool((ijk > MAX_COORDINATE).any())):
        low, high = int(ijk.min()), int(ijk.max())
        raise VoxelError(f"ijk coordinates must lie in [0, {MAX_COORDINATE}] (21 bits), got values in "
                         f"[{low}, {high}]")
    return morton_encode_unchecked(ijk)


def morton_decode(codes: torch.Tensor) -> torch.Tensor:
    """Integer cell coordinates of Morton codes (inverse of :func:`morton_encode`).

    Args:
        codes: ``[...]`` integer tensor of codes in ``[0, 2^63)``.

    Returns:
        ``[..., 3]`` int64 coordinates ``(i, j, k)``.

    Raises:
        VoxelError: not an integer tensor, or a negative code.
    """
    _check_integer("codes", codes)
    codes = codes.to(torch.int64)
    if codes.numel() and bool((codes < 0).any()):
        raise VoxelError(f"codes must be non-negative 63-bit Morton codes, got minimum {int(codes.min())}")
    return torch.stack([_compact_by_3(codes), _compact_by_3(codes >> 1), _compact_by_3(codes >> 2)], dim=-1)


def morton_decode_unchecked(codes: torch.Tensor) -> torch.Tensor:
    """:func:`morton_decode` without the input checks (``codes`` int64, non-negative)."""
    return torch.stack([_compact_by_3(codes), _compact_by_3(codes >> 1), _compact_by_3(codes >> 2)], dim=-1)
