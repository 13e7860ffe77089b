import numpy as np
import pytest

from geo3d.errors import CaptureError
from geo3d.geometry.poses import transform_points
from geo3d.structures import ArraySource, Frame, SemanticOccupancy

SHAPE = (4, 3, 2)


def _grid(**kwargs):
    rng = np.random.default_rng(0)
    args = dict(semantics=ArraySource.of(rng.integers(0, 17, SHAPE).astype(np.uint8)),
                origin=np.array([-40.0, -40.0, -1.0]), voxel_size=np.array([0.4, 0.5, 0.25]))  # fmt: skip
    args.update(kwargs)
    return SemanticOccupancy(**args)


def test_geometry_maps_indices_to_voxel_centres():
    occ = _grid()
    centres = occ.voxel_centers()
    assert centres.shape == (*SHAPE, 3) and centres.dtype == np.float64
    np.testing.assert_allclose(centres[0, 0, 0], [-39.8, -39.75, -0.875])
    np.testing.assert_allclose(centres[3, 2, 1], [-40 + 3.5 * 0.4, -40 + 2.5 * 0.5, -1 + 1.5 * 0.25])
    ijk = np.stack(np.meshgrid(*map(np.arange, SHAPE), indexing="ij"), -1).reshape(-1, 3).astype(float)
    np.testing.assert_allclose(transform_points(occ.grid_to_frame(), ijk), centres.reshape(-1, 3))
    # the min corner of the grid is at index coordinates -0.5 (voxel (0, 0, 0) spans [-0.5, 0.5])
    np.testing.assert_allclose(transform_points(occ.grid_to_frame(), np.full((1, 3), -0.5))[0], occ.origin)

    angle = 0.3
    ego2world = np.eye(4)
    ego2world[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    ego2world[:3, 3] = [100.0, -5.0, 2.0]
    np.testing.assert_allclose(
        transform_points(occ.grid_to_world(ego2world), ijk), transform_points(ego2world, centres.reshape(-1, 3))
    )
    with pytest.raises(ValueError, match="needs ego2world"):
        occ.grid_to_world()
    world = _grid(frame="world")
    np.testing.assert_array_equal(world.grid_to_world(ego2world), world.grid_to_frame())


def test_arrays_masks_and_occupied():
    semantics = np.zeros(SHAPE, np.uint8)
    semantics[1, 2, 0], semantics[3, 0, 1] = 5, 17
    lidar = np.zeros(SHAPE, np.uint8)
    lidar[0] = 1
    occ = _grid(semantics=ArraySource.of(semantics), mask_lidar=ArraySource.of(lidar),
                instances=ArraySource.of(np.ones(SHAPE, np.int32)))  # fmt: skip
    assert occ.shape == SHAPE and occ.load_semantics() is semantics
    assert occ.occupied().sum() == 2
    assert _grid(semantics=ArraySource.of(semantics), free_label=17).occupied().sum() == SHAPE[0] * SHAPE[1] * SHAPE[2] - 1
    mask = occ.load_mask("lidar")
    assert mask.dtype == np.bool_ and mask.sum() == SHAPE[1] * SHAPE[2] and mask[0].all()
    assert occ.load_mask("camera") is None and occ.load_instances().dtype == np.int32
    with pytest.raises(ValueError, match="mask must be one of"):
        occ.load_mask("radar")
    np.testing.assert_array_equal(_grid(voxel_size=0.5).voxel_size, [0.5, 0.5, 0.5])
    assert "SemanticOccupancy(shape=[4, 3, 2]" in repr(occ) and "mask_lidar" in repr(occ)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"origin": np.array([0.0, 0.0])}, "origin must be 3 finite"),
        ({"origin": np.array([0.0, np.nan, 0.0])}, "origin must be 3 finite"),
        ({"voxel_size": np.array([0.4, 0.0, 0.4])}, "voxel_size must be positive"),
        ({"voxel_size": np.inf}, "voxel_size must be positive"),
        ({"frame": "lidar"}, "frame must be one of"),
        ({"shape": (4, 3)}, "shape must be 3 positive"),
        ({"mask_camera": ArraySource.of(np.ones((4, 3, 3), bool))}, r"mask_camera of shape \[4, 3, 2\]"),
        ({"mask_camera": ArraySource.of(np.ones(SHAPE, np.int32))}, "must be bool or uint8"),
        ({"semantics": ArraySource.of(np.zeros(SHAPE, np.float32))}, "must be an integer dtype"),
        ({"instances": ArraySource.of(np.zeros((4, 3), np.int32))}, "instances of shape"),
    ],
)
def test_invalid_grids_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _grid(**kwargs)


def test_file_backed_grid_stays_lazy_and_is_checked_on_load(tmp_path):
    calls = []

    def loader():
        calls.append(1)
        return np.zeros((4, 3, 3), np.uint8)  # not the declared shape

    path = tmp_path / "labels.npz"
    occ = _grid(semantics=ArraySource(path=path, loader=loader), shape=SHAPE)
    assert occ.shape == SHAPE and calls == []  # shape known without decoding
    with pytest.raises(CaptureError, match=r"labels.npz: expected semantics of shape \[4, 3, 2\], got \[4, 3, 3\]"):
        occ.load_semantics()
    # without an explicit shape, a file-backed grid is decoded once to find it
    occ = _grid(semantics=ArraySource(path=path, loader=loader))
    assert occ.shape == (4, 3, 3) and len(calls) == 2


def test_frame_carries_occupancy():
    assert Frame(index=0).occupancy is None
    occ = _grid()
    assert Frame(index=0, occupancy=occ).occupancy is occ
