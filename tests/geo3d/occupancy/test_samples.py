"""make_sample / collate_samples: distillation points and features against an independent projection,
occupancy targets against lidar_occupancy_targets, K scaling, labels carried to 3D by the label
teacher, the feature cache, collation, the nuScenes sample, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from geo3d.cameras.functional import world_to_pixels
from geo3d.language.cache import FeatureCache
from geo3d.language.label_teacher import LabelTeacher
from geo3d.language.teachers import DenseFeatures, DenseTeacher, as_image_batch, sample_features
from geo3d.occupancy.samples import (
    OccupancyBatch, OccupancySample, box_point_labels, capture_id_of, collate_samples, make_sample, scale_intrinsics,
    select_views, teacher_inputs,
)
from geo3d.occupancy.targets import OccupancyError, lidar_occupancy_targets
from geo3d.structures.capture import Capture
from geo3d.synthetic.classes import CLASS_NAMES
from geo3d.synthetic.generate import SynthConfig, generate_capture
from geo3d.synthetic.occupancy import OccupancyGridSpec
from text_encoder_stub import HashEncoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLEAN = dict(blur_sigma=0.0, noise_std=0.0, confusion_rate=0.0)
SMALL = SynthConfig(seed=3, frames=1, width=96, height=54, lidar_beams=16, lidar_azimuth_steps=360,
                    occupancy_lower=(-16.0, -16.0, -1.0), occupancy_upper=(16.0, 16.0, 3.0), voxel_size_m=0.8,
                    shadows=False)
IMAGE_SIZE = (40, 72)


class ColourTeacher(DenseTeacher):
    """An RGB teacher: per 16-pixel patch, the mean colour and a few fixed functions of it (D = 6)."""

    patch = 16

    @property
    def dim(self):
        return 6

    @property
    def space(self):
        return "colour:test"

    @property
    def identity(self):
        return "colour-teacher(patch=16)"

    def _check_inputs(self, images):
        return as_image_batch(images)

    def _grid(self, height, width):
        return (-(-height // self.patch), -(-width // self.patch)), (float(self.patch), float(self.patch))

    def _compute(self, batch):
        b, h, w, _ = batch.shape
        (gh, gw), _ = self._grid(h, w)
        padded = torch.nn.functional.pad(batch.permute(0, 3, 1, 2), (0, gw * 16 - w, 0, gh * 16 - h), mode="replicate")
        mean = torch.nn.functional.avg_pool2d(padded, 16).permute(0, 2, 3, 1)
        return torch.nn.functional.normalize(torch.cat([mean, 1.0 - mean], -1) + 0.01, dim=-1)


@pytest.fixture(scope="module")
def capture():
    return generate_capture(SMALL)


@pytest.fixture(scope="module")
def teacher():
    return LabelTeacher(HashEncoder(), CLASS_NAMES, patch_size=8, **CLEAN)


@pytest.fixture(scope="module")
def sample(capture, teacher):
    return make_sample(capture, 0, SMALL.grid_spec(), teacher, image_size=IMAGE_SIZE)


def _world_points(sample, frame):
    ego2world = torch.from_numpy(frame.ego2world)
    pts = sample.lidar_points_ego.double()
    return pts @ ego2world[:3, :3].T + ego2world[:3, 3]


def test_shapes_and_frames(sample, capture):
    frame = capture.frames[0]
    assert sample.images.shape == (6, 3, *IMAGE_SIZE) and sample.images.dtype == torch.float32
    assert 0.0 <= float(sample.images.min()) and float(sample.images.max()) <= 1.0
    assert sample.camera_names == tuple(frame.cameras)
    assert sample.occupancy_state.shape == SMALL.grid_spec().shape
    # LiDAR points: sensor -> world -> ego by hand
    sweep = frame.lidar["LIDAR_TOP"]
    world = sweep.points_world()
    ego = (world - frame.ego2world[:3, 3]) @ frame.ego2world[:3, :3]
    np.testing.assert_allclose(sample.lidar_points_ego.numpy(), ego, atol=1e-4)
    lidar_in_ego = np.linalg.inv(frame.ego2world) @ sweep.sensor2world
    np.testing.assert_allclose(sample.lidar_origin_ego.numpy(), np.broadcast_to(lidar_in_ego[:3, 3], ego.shape),
                               atol=1e-5)
    cam = frame.cameras["CAM_BACK"]
    np.testing.assert_allclose(sample.cam2ego[3].numpy(), np.linalg.inv(frame.ego2world) @ cam.cam2world, atol=1e-5)
    assert sample.lidar_labels.tolist() == sweep.load_labels().astype(np.int64).tolist()
    assert sample.gt_semantics.tolist() == frame.occupancy.load_semantics().astype(np.int64).tolist()
    assert sample.gt_visible.tolist() == frame.occupancy.load_mask("camera").tolist()
    assert sample.capture_id == capture_id_of(capture) and sample.frame_id == 0


def test_images_are_resized_bilinear_antialiased(sample, capture):
    cam = capture.frames[0].cameras["CAM_FRONT_LEFT"]
    pixels = torch.from_numpy(cam.load_image_uint8()[..., :3]).permute(2, 0, 1)[None].float() / 255
    expected = torch.nn.functional.interpolate(pixels, size=IMAGE_SIZE, mode="bilinear", antialias=True)[0]
    torch.testing.assert_close(sample.images[2], expected.clamp(0, 1))


def test_distill_points_match_brute_force_projection(sample, capture, teacher):
    frame = capture.frames[0]
    cams = list(frame.cameras.values())
    world = _world_points(sample, frame)
    seen = np.zeros(len(world), bool)
    best = np.full(len(world), -1)
    best_offset = np.full(len(world), np.inf)
    for c, cam in enumerate(cams):  # camera by camera, with NumPy
        w2c = np.linalg.inv(cam.cam2world)
        pc = world.numpy() @ w2c[:3, :3].T + w2c[:3, 3]
        z = pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = cam.K[0, 0] * pc[:, 0] / z + cam.K[0, 2]
            v = cam.K[1, 1] * pc[:, 1] / z + cam.K[1, 2]
        inside = (z > 0.1) & (u >= -0.5) & (u < cam.width - 0.5) & (v >= -0.5) & (v < cam.height - 0.5)
        offset = np.maximum(np.abs(u - (cam.width - 1) / 2) / (cam.width / 2),
                            np.abs(v - (cam.height - 1) / 2) / (cam.height / 2))
        better = inside & (offset < best_offset)
        best[better], best_offset[better] = c, offset[better]
        seen |= inside
    assert seen.sum() > 1000
    assert sample.distill_index.tolist() == np.flatnonzero(seen).tolist()
    assert sample.distill_camera.tolist() == best[seen].tolist()
    torch.testing.assert_close(sample.distill_points_ego, sample.lidar_points_ego[sample.distill_index])
    # features: sample_features at world_to_pixels of each point in its camera
    labels = np.stack([cam.load_semantic() for cam in cams])
    dense = teacher(labels)
    for c, cam in enumerate(cams):
        rows = torch.nonzero(sample.distill_camera == c).squeeze(1)
        if not len(rows):
            continue
        points = world[sample.distill_index[rows]]
        proj = world_to_pixels(points, torch.from_numpy(cam.K), torch.from_numpy(cam.cam2world))
        assert bool((proj.depth > 0.1).all())
        uv = proj.uv.float()
        assert bool(((uv >= -0.5) & (uv < torch.tensor([cam.width - 0.5, cam.height - 0.5]))).all())
        torch.testing.assert_close(sample.distill_uv[rows], uv, atol=1e-3, rtol=0)
        single = DenseFeatures(dense.features[c:c + 1], dense.stride, dense.image_size)
        torch.testing.assert_close(sample.distill_features[rows], sample_features(single, uv), atol=1e-4, rtol=0)


def test_occupancy_state_equals_lidar_targets(sample):
    spec = SMALL.grid_spec()
    direct = lidar_occupancy_targets(sample.lidar_points_ego.double(), sample.lidar_origin_ego[0].double(),
                                     spec.origin, spec.voxel_size, spec.shape)
    assert torch.equal(sample.occupancy_state, direct.state)
    assert (direct.state == 1).sum() > 50 and (direct.state == 0).sum() > 50


def test_scaled_K_maps_pixels_by_the_pixel_centre_convention(sample, capture):
    frame = capture.frames[0]
    world = _world_points(sample, frame).float()
    sy, sx = IMAGE_SIZE[0] / SMALL.height, IMAGE_SIZE[1] / SMALL.width
    for c, cam in enumerate(frame.cameras.values()):
        original = world_to_pixels(world, torch.from_numpy(cam.K).float(), torch.from_numpy(cam.cam2world).float())
        resized = world_to_pixels(world, sample.K[c], torch.from_numpy(cam.cam2world).float())
        front = original.depth > 1.0
        expected = (original.uv[front] + 0.5) * torch.tensor([sx, sy]) - 0.5
        torch.testing.assert_close(resized.uv[front], expected, atol=2e-3, rtol=1e-5)
    # the image corners map onto the corners
    K = torch.tensor([[50.0, 0.0, 47.5], [0.0, 50.0, 26.5], [0.0, 0.0, 1.0]])
    scaled = scale_intrinsics(K, (54, 96), (27, 48))
    assert scaled[0, 2].item() == pytest.approx(23.5) and scaled[1, 2].item() == pytest.approx(13.0)
    assert scaled[0, 0].item() == pytest.approx(25.0) and scaled[1, 1].item() == pytest.approx(25.0)


def test_label_teacher_carries_car_labels_to_3d(sample, capture, teacher):
    cams = list(capture.frames[0].cameras.values())
    car = CLASS_NAMES.index("car")
    majority = teacher.patch_labels(np.stack([cam.load_semantic() for cam in cams]))  # [C, h, w]
    labels = sample.lidar_labels[sample.distill_index]
    cell = (sample.distill_uv + 0.5) / 8 - 0.5  # cell coordinates (x, y)
    lo = cell.floor().long()
    h, w = majority.shape[1:]
    pure = torch.ones(len(cell), dtype=torch.bool)
    for dx in (0, 1):  # the 2 x 2 cells bilinear sampling reads (clamped at the border)
        for dy in (0, 1):
            x = (lo[:, 0] + dx).clamp(0, w - 1)
            y = (lo[:, 1] + dy).clamp(0, h - 1)
            pure &= majority[sample.distill_camera, y, x] == car
    chosen = pure & (labels == car)
    assert int(chosen.sum()) >= 10
    expected = teacher.class_embeddings[car].expand(int(chosen.sum()), -1)
    torch.testing.assert_close(sample.distill_features[chosen], expected, atol=1e-5, rtol=0)
    # most car points land in car patches: the pipeline carries labels to 3D
    nearest = majority[sample.distill_camera, cell[:, 1].round().long().clamp(0, h - 1),
                       cell[:, 0].round().long().clamp(0, w - 1)]
    assert float((nearest[labels == car] == car).float().mean()) > 0.8


def test_feature_cache_is_hit_the_second_time(capture, teacher, sample, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    first = make_sample(capture, 0, SMALL.grid_spec(), teacher, image_size=IMAGE_SIZE, cache=cache)
    assert (cache.misses, cache.hits) == (6, 0)
    second = make_sample(capture, 0, SMALL.grid_spec(), teacher, image_size=IMAGE_SIZE, cache=cache)
    assert (cache.misses, cache.hits) == (6, 6)
    assert torch.equal(first.distill_features, second.distill_features)
    torch.testing.assert_close(first.distill_features, sample.distill_features, atol=2e-3, rtol=0)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 6


def test_teacher_inputs_protocol(capture, teacher):
    cams = list(capture.frames[0].cameras.values())
    labels = teacher_inputs(teacher, cams)
    assert labels.shape == (6, SMALL.height, SMALL.width) and labels.dtype == np.int64
    rgb = teacher_inputs(ColourTeacher(), cams[:2])
    assert rgb.shape == (2, SMALL.height, SMALL.width, 3) and rgb.dtype == np.uint8

    class Custom(ColourTeacher):
        def inputs_from_frames(self, frames):
            return np.zeros((len(frames), 20, 20, 3), np.uint8)

    assert teacher_inputs(Custom(), cams).shape == (6, 20, 20, 3)
    bad = ColourTeacher()
    bad.input_kind = "depth"
    with pytest.raises(OccupancyError, match="input_kind"):
        teacher_inputs(bad, cams)


def test_rgb_teacher_and_native_size(capture):
    out = make_sample(capture, 0, SMALL.grid_spec(), ColourTeacher(), image_size=None, with_ground_truth=False)
    assert out.images.shape == (6, 3, SMALL.height, SMALL.width)
    Ks = np.stack([cam.K for cam in capture.frames[0].cameras.values()])
    np.testing.assert_allclose(out.K.numpy(), Ks, rtol=1e-6, atol=1e-5)
    assert out.distill_features.shape[1] == 6 and out.gt_semantics is None and out.lidar_labels is None


def test_select_views_ties_go_to_first_camera():
    uv = torch.tensor([[[4.5, 4.5], [0.0, 0.0], [20.0, 1.0]], [[4.5, 4.5], [5.0, 5.0], [1.0, 1.0]]])
    depth = torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, 1.0]])
    seen, camera = select_views(uv, depth, [(10, 10), (10, 10)], 0.1)
    assert seen.tolist() == [True, True, True]
    assert camera.tolist() == [0, 0, 1]  # tie; camera 1 is behind; camera 0 does not contain u = 20


def test_collate_pads_and_stacks(capture, teacher, sample):
    other = make_sample(capture, 0, SMALL.grid_spec(), teacher, image_size=IMAGE_SIZE, min_depth=5.0)
    batch = collate_samples([sample, other])
    assert isinstance(batch, OccupancyBatch)
    assert batch.images.shape == (2, 6, 3, *IMAGE_SIZE)
    m0, m1 = len(sample.distill_index), len(other.distill_index)
    assert m1 < m0 and batch.distill_lengths.tolist() == [m0, m1]
    assert torch.equal(batch.distill_features[1, :m1], other.distill_features)
    assert bool((batch.distill_features[1, m1:] == 0).all()) and batch.distill_mask.sum().item() == m0 + m1
    assert torch.equal(batch.lidar_labels[0], sample.lidar_labels)
    assert batch.gt_semantics.shape == (2, *SMALL.grid_spec().shape)
    assert batch.to("cpu").frame_ids.tolist() == [0, 0]
    no_gt = dataclasses.replace(other, gt_semantics=None, lidar_labels=None)
    assert collate_samples([sample, no_gt]).gt_semantics is None
    with pytest.raises(OccupancyError, match="non-empty"):
        collate_samples([])
    smaller = dataclasses.replace(other, images=other.images[:, :, :20])
    with pytest.raises(OccupancyError, match="images"):
        collate_samples([sample, smaller])


def test_errors(capture, teacher):
    spec = SMALL.grid_spec()
    frame = capture.frames[0]

    def one(**changes):
        return Capture([dataclasses.replace(frame, **changes)], metadata=dict(capture.metadata))

    with pytest.raises(OccupancyError, match="no LiDAR"):
        make_sample(one(lidar={}), 0, spec, teacher, image_size=IMAGE_SIZE)
    with pytest.raises(OccupancyError, match="ego2world"):
        make_sample(one(ego2world=None), 0, spec, teacher, image_size=IMAGE_SIZE)
    bad_cam = dataclasses.replace(frame.cameras["CAM_BACK"], K=np.full((3, 3), np.nan))
    with pytest.raises(OccupancyError, match="CAM_BACK.*K"):
        make_sample(one(cameras={**frame.cameras, "CAM_BACK": bad_cam}), 0, spec, teacher, image_size=IMAGE_SIZE)
    with pytest.raises(OccupancyError, match="feature dim"):
        make_sample(capture, 0, spec, teacher, image_size=IMAGE_SIZE, feature_dim=512)
    with pytest.raises(OccupancyError, match="image_size"):
        make_sample(capture, 0, spec, teacher, image_size=(0, 10))
    with pytest.raises(OccupancyError, match="frame_index"):
        make_sample(capture, 5, spec, teacher, image_size=IMAGE_SIZE)
    with pytest.raises(OccupancyError, match="grid_spec"):
        make_sample(capture, 0, OccupancyGridSpec(), teacher, image_size=IMAGE_SIZE)
    assert make_sample(capture, 0, OccupancyGridSpec((-8, -8, -1), (8, 8, 3), 1.0), teacher, image_size=IMAGE_SIZE,
                       with_ground_truth=False).occupancy_state.shape == (16, 16, 4)
    with pytest.raises(OccupancyError, match="teacher"):
        make_sample(capture, 0, spec, object(), image_size=IMAGE_SIZE)
    with pytest.raises(OccupancyError, match="min_depth"):
        make_sample(capture, 0, spec, teacher, image_size=IMAGE_SIZE, min_depth=float("nan"))
    small = dataclasses.replace(frame.cameras["CAM_BACK"], width=48, height=27,
                                image=type(frame.cameras["CAM_BACK"].image).of(np.zeros((27, 48, 3), np.uint8)))
    mixed = one(cameras={**frame.cameras, "CAM_BACK": small})
    with pytest.raises(OccupancyError, match="different image sizes"):
        make_sample(mixed, 0, spec, ColourTeacher(), image_size=None)
    assert make_sample(mixed, 0, spec, ColourTeacher(), image_size=IMAGE_SIZE).images.shape[-2:] == IMAGE_SIZE
    no_labels = dataclasses.replace(frame.cameras["CAM_BACK"], semantic=None)
    with pytest.raises(OccupancyError, match="semantic"):
        make_sample(one(cameras={**frame.cameras, "CAM_BACK": no_labels}), 0, spec, teacher, image_size=IMAGE_SIZE)
    with pytest.raises(OccupancyError, match="capture_id"):
        capture_id_of(Capture([frame]))
    with pytest.raises(OccupancyError, match="capture_id"):
        make_sample(capture, 0, spec, teacher, image_size=IMAGE_SIZE, capture_id="  ")
    named = make_sample(Capture([frame]), 0, spec, teacher, image_size=IMAGE_SIZE, capture_id="street-7")
    assert named.capture_id == "street-7"


def test_nuscenes_sample_with_an_rgb_teacher(nuscenes_dir):
    from geo3d.io import read_capture

    pkl = next(nuscenes_dir.glob("*.pkl"))
    capture = read_capture(pkl)
    spec = OccupancyGridSpec((-20.0, -20.0, -2.0), (20.0, 20.0, 4.0), 0.5)
    out = make_sample(capture, 0, spec, ColourTeacher(), image_size=(90, 160))
    assert isinstance(out, OccupancySample)
    assert out.images.shape == (6, 3, 90, 160) and out.K.shape == (6, 3, 3)
    assert out.lidar_points_ego.shape == (34688, 3) and out.occupancy_state.shape == (80, 80, 12)
    assert out.gt_semantics is None
    # no lidarseg: points take the class of the annotated box holding them (LiDAR frame), 0 elsewhere
    sweep = capture.frames[0].lidar["LIDAR_TOP"]
    boxes = capture.metadata["samples"][0]["boxes"]
    assert torch.equal(out.lidar_labels, torch.from_numpy(box_point_labels(sweep.load_points()[:, :3], boxes)))
    labelled = {CLASS_NAMES[int(c)] for c in out.lidar_labels.unique() if c > 0}
    assert {"car", "pedestrian", "barrier"} <= labelled
    assert int((out.lidar_labels == 0).sum()) > 0.8 * len(out.lidar_labels)
    no_truth = make_sample(capture, 0, spec, ColourTeacher(), image_size=(90, 160), with_ground_truth=False)
    assert no_truth.lidar_labels is None
    assert 5000 < len(out.distill_index) < 34688
    assert int((out.occupancy_state == 1).sum()) > 100
    frame = capture.frames[0]
    world = _world_points(out, frame)[out.distill_index]
    for c, cam in enumerate(frame.cameras.values()):
        rows = out.distill_camera == c
        proj = world_to_pixels(world[rows], torch.from_numpy(cam.K), torch.from_numpy(cam.cam2world))
        assert bool((proj.depth > 0.1).all())
        assert bool(((proj.uv >= -0.5) & (proj.uv < torch.tensor([cam.width - 0.5, cam.height - 0.5]))).all())
        # and in the resized image, through the scaled K and cam2ego
        pts_ego = out.distill_points_ego[rows].double()
        resized = world_to_pixels(pts_ego, out.K[c].double(), out.cam2ego[c].double())
        assert bool(((resized.uv >= -0.5 - 1e-3) & (resized.uv < torch.tensor([159.5, 89.5]) + 1e-3)).all())


def test_without_a_teacher_the_points_stay_and_features_are_empty(capture, sample):
    bare = make_sample(capture, 0, SMALL.grid_spec(), None, image_size=IMAGE_SIZE)
    assert bare.distill_features.shape == (len(sample.distill_points_ego), 0)
    assert torch.equal(bare.distill_points_ego, sample.distill_points_ego)
    assert torch.equal(bare.occupancy_state, sample.occupancy_state)


def test_box_point_labels_against_a_brute_force_box_test():
    rng = np.random.default_rng(0)
    points = rng.uniform(-6, 6, (4000, 3))
    boxes = [{"label": "car", "box": [1.0, 2.0, 0.5, 4.0, 2.0, 1.5, 0.7]},
             {"label": "pedestrian", "box": [-3.0, -1.0, 0.0, 0.8, 0.6, 1.8, -2.0]},
             {"label": "unknown thing", "box": [0.0, 0.0, 0.0, 50.0, 50.0, 50.0, 0.0]}]  # skipped
    labels = box_point_labels(points, boxes)
    expected = np.zeros(len(points), dtype=np.int64)
    for box, cls in zip(boxes[:2], (CLASS_NAMES.index("car"), CLASS_NAMES.index("pedestrian"))):
        x, y, z, length, width, height, yaw = box["box"]
        to_box = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])  # box->frame
        local = (points - [x, y, z]) @ to_box  # row-vector form of to_box.T @ (p - c)
        expected[(np.abs(local) <= [length / 2, width / 2, height / 2]).all(1)] = cls
    assert np.array_equal(labels, expected)
    assert (labels == CLASS_NAMES.index("car")).sum() > 10 and (labels == CLASS_NAMES.index("pedestrian")).sum() > 0
