"""Morton codes against a naive per-bit implementation, round trips and z-order."""

from __future__ import annotations

import pytest
import torch

from geo3d.errors import VoxelError
from geo3d.voxels.morton import MAX_COORDINATE, morton_decode, morton_encode

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def naive_code(i: int, j: int, k: int) -> int:
    """Interleave bit by bit: bit b of i -> 3b, of j -> 3b + 1, of k -> 3b + 2."""
    code = 0
    for bit in range(21):
        code |= ((i >> bit) & 1) << (3 * bit)
        code |= ((j >> bit) & 1) << (3 * bit + 1)
        code |= ((k >> bit) & 1) << (3 * bit + 2)
    return code


def test_matches_naive_bit_interleaving():
    generator = torch.Generator().manual_seed(0)
    ijk = torch.randint(0, MAX_COORDINATE + 1, (500, 3), generator=generator)
    ijk[0] = torch.tensor([MAX_COORDINATE] * 3)
    ijk[1] = torch.tensor([0, 0, 0])
    ijk[2] = torch.tensor([MAX_COORDINATE, 0, 1])
    codes = morton_encode(ijk)
    assert codes.dtype == torch.int64
    assert codes.tolist() == [naive_code(*row) for row in ijk.tolist()]
    assert int(codes[0]) == 2**63 - 1


def test_round_trip_random_up_to_21_bits():
    generator = torch.Generator().manual_seed(1)
    ijk = torch.randint(0, MAX_COORDINATE + 1, (100_000, 3), generator=generator)
    codes = morton_encode(ijk)
    assert bool((codes >= 0).all())
    assert torch.equal(morton_decode(codes), ijk)
    assert torch.equal(morton_encode(ijk.to(torch.int32)), codes)  # any integer dtype


def test_batched_shapes():
    ijk = torch.randint(0, 100, (4, 5, 3))
    codes = morton_encode(ijk)
    assert codes.shape == (4, 5)
    assert torch.equal(morton_decode(codes), ijk)
    assert morton_encode(torch.zeros((0, 3), dtype=torch.int64)).shape == (0,)


def test_order_is_z_order_and_parent_child_relation():
    # on a 4^3 grid, sorting by code visits each 2^3 block completely before the next one
    grid = torch.stack(torch.meshgrid(*[torch.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    codes = morton_encode(grid)
    assert sorted(codes.tolist()) == list(range(64))
    ordered = grid[torch.argsort(codes)]
    assert ordered[:8].tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0],
                                    [0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]]
    blocks = (ordered // 2).tolist()
    for start in range(0, 64, 8):
        assert len({tuple(b) for b in blocks[start:start + 8]}) == 1
    # parent = code >> 3 is the code of the coordinates halved, slot = code & 7 = x + 2y + 4z
    assert torch.equal(codes >> 3, morton_encode(grid // 2))
    assert torch.equal(codes & 7, (grid % 2 * torch.tensor([1, 2, 4])).sum(1))


@pytest.mark.parametrize("bad, message", [
    (torch.tensor([[-1, 0, 0]]), "lie in"),
    (torch.tensor([[0, 2**21, 0]]), "lie in"),
    (torch.zeros((5, 2), dtype=torch.int64), "shape"),
    (torch.zeros((5, 3)), "integers"),
])
def test_encode_errors(bad, message):
    with pytest.raises(VoxelError, match=message):
        morton_encode(bad)


def test_decode_errors():
    with pytest.raises(VoxelError, match="non-negative"):
        morton_decode(torch.tensor([-5]))
    with pytest.raises(VoxelError, match="integers"):
        morton_decode(torch.tensor([1.0]))
    with pytest.raises(VoxelError, match="Tensor"):
        morton_encode([[1, 2, 3]])
