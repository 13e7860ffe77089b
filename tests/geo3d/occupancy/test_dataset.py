"""SyntheticOccupancyDataset / CaptureOccupancyDataset: indexing, determinism by seed, agreement with
make_sample on the generated capture, captures on disk, the feature cache, DataLoader collation, errors."""

from __future__ import annotations

import pytest
import torch

from geo3d.language.label_teacher import LabelTeacher
from geo3d.occupancy.dataset import CaptureOccupancyDataset, SyntheticOccupancyDataset
from geo3d.occupancy.samples import OccupancyBatch, collate_samples, make_sample
from geo3d.occupancy.targets import OccupancyError
from geo3d.synthetic.classes import CLASS_NAMES
from geo3d.synthetic.generate import SynthConfig, generate_capture, write_synthetic_capture
from text_encoder_stub import HashEncoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = SynthConfig(seed=0, frames=2, width=64, height=36, lidar_beams=8, lidar_azimuth_steps=240,
                    occupancy_lower=(-12.0, -12.0, -1.0), occupancy_upper=(12.0, 12.0, 3.0), voxel_size_m=0.8,
                    shadows=False)
IMAGE_SIZE = (32, 48)


@pytest.fixture(scope="module")
def teacher():
    return LabelTeacher(HashEncoder(dim=16), CLASS_NAMES, patch_size=8, noise_std=0.2, confusion_rate=0.1)


def assert_same(a, b):
    for name in ("images", "K", "cam2ego", "lidar_points_ego", "occupancy_state", "distill_points_ego",
                 "distill_features", "distill_index", "gt_semantics", "gt_visible", "lidar_labels"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert (a.frame_id, a.capture_id) == (b.frame_id, b.capture_id)


def test_synthetic_dataset_is_deterministic_and_matches_the_generated_capture(teacher):
    data = SyntheticOccupancyDataset([5, 9], SMALL, None, teacher, IMAGE_SIZE)
    assert len(data) == 4
    item = data[3]  # seed 9, frame 1
    assert item.frame_id == 1 and item.capture_id.startswith("synthetic-seed9-")
    again = SyntheticOccupancyDataset([9], SMALL, None, teacher, IMAGE_SIZE)[1]
    assert_same(item, again)
    # equals make_sample on the capture generate_capture makes for that seed
    capture = generate_capture(data.config_of(9))
    assert_same(item, make_sample(capture, 1, SMALL.grid_spec(), teacher, image_size=IMAGE_SIZE))
    other = data[1]  # seed 5, frame 1: another street
    assert other.capture_id != item.capture_id
    assert not torch.equal(other.images, item.images)


def test_cache_and_dataloader(teacher, tmp_path):
    data = SyntheticOccupancyDataset([1], SMALL, None, teacher, IMAGE_SIZE, cache_dir=tmp_path / "features")
    first = data[0]
    assert (data.cache.misses, data.cache.hits) == (6, 0)
    second = data[0]
    assert (data.cache.misses, data.cache.hits) == (6, 6)
    assert torch.equal(first.distill_features, second.distill_features)
    loader = torch.utils.data.DataLoader(data, batch_size=2, collate_fn=collate_samples)
    batch = next(iter(loader))
    assert isinstance(batch, OccupancyBatch)
    assert batch.images.shape == (2, 6, 3, *IMAGE_SIZE) and batch.frame_ids.tolist() == [0, 1]
    assert batch.distill_features.shape[-1] == 16 and batch.distill_lengths.tolist()[0] == len(first.distill_index)


def test_capture_dataset_from_disk_and_memory(teacher, tmp_path):
    config = SynthConfig(**{**SMALL.to_dict(), "seed": 2, "frames": 1,
                            "occupancy_lower": tuple(SMALL.occupancy_lower),
                            "occupancy_upper": tuple(SMALL.occupancy_upper)})
    path = write_synthetic_capture(config, tmp_path / "capture")
    memory = generate_capture(config)
    data = CaptureOccupancyDataset([path, memory], SMALL.grid_spec(), teacher, IMAGE_SIZE)
    assert len(data) == 2
    on_disk, in_memory = data[0], data[1]
    assert on_disk.capture_id == in_memory.capture_id  # same generator config
    assert torch.equal(on_disk.occupancy_state, in_memory.occupancy_state)
    assert torch.equal(on_disk.gt_semantics, in_memory.gt_semantics)
    assert torch.allclose(on_disk.images, in_memory.images, atol=1 / 255)
    with pytest.raises(IndexError):
        data[2]


def test_errors(teacher):
    with pytest.raises(OccupancyError, match="seeds"):
        SyntheticOccupancyDataset([], SMALL, None, teacher, IMAGE_SIZE)
    with pytest.raises(OccupancyError, match="seeds\\[1\\]"):
        SyntheticOccupancyDataset([1, "2"], SMALL, None, teacher, IMAGE_SIZE)
    with pytest.raises(OccupancyError, match="synth_config"):
        SyntheticOccupancyDataset([1], {"frames": 2}, None, teacher, IMAGE_SIZE)
    with pytest.raises(OccupancyError, match="feature dim"):
        SyntheticOccupancyDataset([1], SMALL, None, teacher, IMAGE_SIZE, feature_dim=512)
    with pytest.raises(OccupancyError, match="image_size"):
        SyntheticOccupancyDataset([1], SMALL, None, teacher, (32,))
    with pytest.raises(OccupancyError, match="grid_spec"):
        CaptureOccupancyDataset([generate_capture(SMALL)], "grid", teacher, IMAGE_SIZE)
    with pytest.raises(OccupancyError, match="captures"):
        CaptureOccupancyDataset("some/path", SMALL.grid_spec(), teacher, IMAGE_SIZE)
    with pytest.raises(OccupancyError, match="captures\\[0\\]"):
        CaptureOccupancyDataset([3], SMALL.grid_spec(), teacher, IMAGE_SIZE)
    with pytest.raises(IndexError):
        SyntheticOccupancyDataset([1], SMALL, None, teacher, IMAGE_SIZE)[2]
