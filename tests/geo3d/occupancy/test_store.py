"""Prepared samples: round trip (uint8 images, float16 features), distillation subsets, corrupt and
foreign files, and resumable preparation keyed by the manifest's identity."""

from __future__ import annotations

import json

import pytest
import torch

from geo3d.language.label_teacher import LabelTeacher
from geo3d.occupancy.dataset import SyntheticOccupancyDataset
from geo3d.occupancy.store import (
    PreparedSamples,
    load_sample,
    prepare_samples,
    save_sample,
    subsample_distillation,
)
from geo3d.occupancy.targets import OccupancyError
from geo3d.synthetic.classes import CLASS_NAMES
from geo3d.synthetic.generate import SynthConfig
from text_encoder_stub import HashEncoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = SynthConfig(seed=0, frames=2, width=64, height=36, lidar_beams=8, lidar_azimuth_steps=240,
                    occupancy_lower=(-12.0, -12.0, -1.0), occupancy_upper=(12.0, 12.0, 3.0), voxel_size_m=0.8,
                    shadows=False)


@pytest.fixture(scope="module")
def dataset():
    teacher = LabelTeacher(HashEncoder(dim=16), CLASS_NAMES, patch_size=8)
    return SyntheticOccupancyDataset([4], SMALL, None, teacher, (32, 48))


def test_round_trip(dataset, tmp_path):
    sample = dataset[0]
    save_sample(tmp_path / "s.pt", sample)
    back = load_sample(tmp_path / "s.pt")
    assert float((back.images - sample.images).abs().max()) <= 0.5 / 255 + 1e-6
    cos = (back.distill_features * sample.distill_features).sum(-1)
    assert float(cos.min()) > 1 - 1e-3 and torch.allclose(back.distill_features.norm(dim=-1), torch.ones(len(cos)))
    for name in ("K", "cam2ego", "lidar_points_ego", "occupancy_state", "distill_points_ego", "distill_index",
                 "distill_camera", "gt_semantics", "gt_visible", "lidar_labels"):
        assert torch.equal(getattr(back, name), getattr(sample, name)), name
    assert (back.camera_names, back.frame_id, back.capture_id) == (sample.camera_names, sample.frame_id,
                                                                    sample.capture_id)


def test_subsample_keeps_rows_together(dataset):
    sample = dataset[0]
    small = subsample_distillation(sample, 100, seed=3)
    assert len(small.distill_points_ego) == 100 and bool((small.distill_index.diff() > 0).all())
    # each kept row is the original row of its LiDAR index
    rows = {int(i): r for r, i in enumerate(sample.distill_index)}
    picked = torch.tensor([rows[int(i)] for i in small.distill_index])
    assert torch.equal(small.distill_features, sample.distill_features[picked])
    assert torch.equal(small.distill_points_ego, sample.lidar_points_ego[small.distill_index])
    assert torch.equal(subsample_distillation(sample, 100, seed=3).distill_index, small.distill_index)
    assert subsample_distillation(sample, None) is sample
    with pytest.raises(OccupancyError):
        subsample_distillation(sample, 0)


def test_corrupt_truncated_and_foreign_files(dataset, tmp_path):
    path = save_sample(tmp_path / "s.pt", dataset[0])
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(OccupancyError, match="cut.pt"):
        load_sample(tmp_path / "cut.pt")
    torch.save({"format": "something else"}, tmp_path / "foreign.pt")
    with pytest.raises(OccupancyError, match="not a geo3d prepared"):
        load_sample(tmp_path / "foreign.pt")
    with pytest.raises(OccupancyError, match="not found"):
        load_sample(tmp_path / "missing.pt")


def test_prepare_resumes_and_refuses_another_identity(dataset, tmp_path):
    folder = tmp_path / "prepared"
    samples = prepare_samples(dataset, folder, {"what": "a"}, max_distill_points=50)
    assert isinstance(samples, PreparedSamples) and len(samples) == 2
    assert len(samples[1].distill_points_ego) == 50
    first = (folder / "sample_000001.pt").stat().st_mtime_ns
    (folder / "sample_000000.pt").unlink()  # an interrupted run: only the missing file is made again
    again = prepare_samples(dataset, folder, {"what": "a"}, max_distill_points=50)
    assert (folder / "sample_000001.pt").stat().st_mtime_ns == first
    assert torch.equal(again[0].distill_index, samples[0].distill_index)
    assert json.loads((folder / "manifest.json").read_text())["identity"] == {"what": "a"}
    with pytest.raises(OccupancyError, match="prepared differently"):
        prepare_samples(dataset, folder, {"what": "b"}, max_distill_points=50)
    (folder / "sample_000001.pt").unlink()
    with pytest.raises(OccupancyError, match="missing"):
        PreparedSamples(folder)
