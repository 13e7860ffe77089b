"""The bird's-eye view of an occupancy grid: top voxel's class colour, ego-forward up, left left."""

from __future__ import annotations

import numpy as np

from geo3d.synthetic import CLASS_IDS, CLASS_PALETTE
from geo3d.synthetic.preview import occupancy_bev


def test_bev_takes_the_top_voxel_and_orients_forward_up():
    grid = np.zeros((4, 3, 5), dtype=np.uint8)
    grid[3, 0, 1] = CLASS_IDS["driveable_surface"]  # front-most row, right-most column (y smallest)
    grid[3, 0, 4] = CLASS_IDS["car"]  # above it: the car is what a top view shows
    grid[0, 2, 0] = CLASS_IDS["terrain"]  # back row, left column, lowest layer
    mask = np.ones_like(grid, dtype=bool)
    mask[0, 2, 0] = False
    bev = occupancy_bev(grid, mask)
    assert bev.shape == (4, 3, 3)
    np.testing.assert_array_equal(bev[0, 2], CLASS_PALETTE[CLASS_IDS["car"]])  # top layer: full shade
    expected = np.round(CLASS_PALETTE[CLASS_IDS["terrain"]] * 0.4 * (0.55 + 0.45 * 1 / 5))  # unobserved, low
    np.testing.assert_array_equal(bev[3, 0], expected)
    assert bev.sum() == bev[0, 2].sum() + bev[3, 0].sum()  # free columns are black
