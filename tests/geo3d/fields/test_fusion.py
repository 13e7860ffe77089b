"""geo3d.fields.fusion on a tiny synthetic street: occupancy from LiDAR returns counted here, feature
voxels and features recomputed by projecting every point by hand and sampling the teacher, colours and
labels, depth-map geometry from a hand back-projection, several frames fused into one ego frame, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from text_encoder_stub import HashEncoder

from geo3d.fields.fusion import FusionMethod, FusionOptions
from geo3d.fields.methods import Resources
from geo3d.language import DenseFeatures, LabelTeacher, encode_classes, sample_features
from geo3d.structures import ArraySource, Capture
from geo3d.structures.field import FieldError
from geo3d.synthetic.classes import CLASS_NAMES
from geo3d.synthetic.generate import SynthConfig, generate_capture

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = SynthConfig(seed=3, frames=2, width=96, height=54, lidar_beams=16, lidar_azimuth_steps=360, occupancy=False,
                    shadows=False)
LOWER, UPPER, VOXEL = np.array([-16.0, -16.0, -1.0]), np.array([16.0, 16.0, 3.0]), 0.8
SHAPE = (40, 40, 5)


def options(**changes) -> FusionOptions:
    return FusionOptions(**{"lower": tuple(LOWER), "upper": tuple(UPPER), "voxel_size": VOXEL,
                            "feature_dtype": "float32", **changes})


@pytest.fixture(scope="module")
def capture() -> Capture:
    return generate_capture(SMALL)


@pytest.fixture(scope="module")
def encoder():
    return HashEncoder(dim=16)


@pytest.fixture(scope="module")
def teacher(encoder):
    return LabelTeacher(encoder, CLASS_NAMES, patch_size=8)


def fuse(capture, encoder, teacher, frame_index=0, **changes):
    resources = Resources(text_encoder=encoder, teacher=teacher, text_encoder_spec="hash")
    method = FusionMethod(options(**changes), resources)
    return method.reconstruct(capture, frame_index)


@pytest.fixture(scope="module")
def lidar_field(capture, encoder, teacher):
    return fuse(capture, encoder, teacher, geometry="lidar")


# ---------------------------------------------------------------------------------------- references


def to_ego(points_world: np.ndarray, ego2world: np.ndarray) -> np.ndarray:
    world2ego = np.linalg.inv(ego2world)
    return points_world @ world2ego[:3, :3].T + world2ego[:3, 3]


def voxel_of(points_ego: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[N, 3]`` int voxel index of each point and ``[N]`` bool inside the grid."""
    ijk = np.floor((points_ego - LOWER) / VOXEL).astype(np.int64)
    return ijk, ((ijk >= 0) & (ijk < SHAPE)).all(1)


def hit_counts(points_ego: np.ndarray) -> np.ndarray:
    ijk, inside = voxel_of(points_ego)
    hits = np.zeros(SHAPE, np.int64)
    np.add.at(hits, tuple(ijk[inside].T), 1)
    return hits


def project(points_world: np.ndarray, cam) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``[N, 2]`` and ``[N]`` bool seen (z > 0.1, inside the image) of world points in ``cam``."""
    world2cam = np.linalg.inv(cam.cam2world)
    p = points_world @ world2cam[:3, :3].T + world2cam[:3, 3]
    z = p[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (p @ np.asarray(cam.K).T)[:, :2] / z[:, None]
        seen = (z > 0.1) & (uv[:, 0] >= -0.5) & (uv[:, 0] < cam.width - 0.5) & (uv[:, 1] >= -0.5) \
            & (uv[:, 1] < cam.height - 0.5)
    return uv, seen


def point_features(points_world: np.ndarray, frame, teacher):
    """Per point: the normalised sum over the cameras that see it of the teacher feature at its pixel,
    the mean pixel colour over those cameras, and the number of cameras."""
    cams = list(frame.cameras.values())
    dense = teacher(np.stack([cam.load_semantic() for cam in cams]))
    feature_sum = np.zeros((len(points_world), teacher.dim))
    color_sum = np.zeros((len(points_world), 3))
    views = np.zeros(len(points_world), np.int64)
    for c, cam in enumerate(cams):
        uv, seen = project(points_world, cam)
        rows = np.flatnonzero(seen)
        single = DenseFeatures(dense.features[c:c + 1], dense.stride, dense.image_size)
        feature_sum[rows] += sample_features(single, torch.from_numpy(uv[rows]).float()).numpy()
        pixel = np.round(uv[rows]).astype(np.int64)
        image = cam.load_image_uint8()[..., :3]
        color_sum[rows] += image[np.clip(pixel[:, 1], 0, cam.height - 1), np.clip(pixel[:, 0], 0, cam.width - 1)]
        views[rows] += 1
    seen = views > 0
    features = np.zeros_like(feature_sum)
    features[seen] = feature_sum[seen] / np.linalg.norm(feature_sum[seen], axis=1, keepdims=True)
    colors = color_sum / np.maximum(views, 1)[:, None]
    return features, colors, seen


def voxel_means(points_ego, values, seen):
    """``{voxel: mean of values}`` over the seen points inside the grid."""
    ijk, inside = voxel_of(points_ego)
    groups: dict[tuple[int, int, int], list[np.ndarray]] = {}
    for key, value in zip(map(tuple, ijk[inside & seen].tolist()), values[inside & seen]):
        groups.setdefault(key, []).append(value)
    return {key: np.mean(rows, axis=0) for key, rows in groups.items()}


# --------------------------------------------------------------------------------------------- tests


def test_lidar_occupancy_is_one_minus_two_to_the_minus_hits(capture, lidar_field):
    frame = capture.frames[0]
    points_ego = to_ego(frame.lidar["LIDAR_TOP"].points_world(), frame.ego2world)
    hits = hit_counts(points_ego)
    assert lidar_field.shape == SHAPE and lidar_field.frame == "ego"
    np.testing.assert_allclose(lidar_field.origin, LOWER)
    np.testing.assert_allclose(lidar_field.voxel_size, VOXEL)
    assert (hits >= 2).sum() > 100 and (hits == 1).sum() > 20  # the check covers several hit counts
    np.testing.assert_allclose(lidar_field.occupancy, 1.0 - 2.0 ** -hits, atol=1e-6, rtol=0)
    assert lidar_field.metadata["points"] == len(points_ego)


def test_features_are_view_averaged_teacher_features(capture, lidar_field, encoder, teacher):
    frame = capture.frames[0]
    points_world = frame.lidar["LIDAR_TOP"].points_world()
    points_ego = to_ego(points_world, frame.ego2world)
    features, colors, seen = point_features(points_world, frame, teacher)
    assert lidar_field.metadata["points_seen"] == int(seen.sum())
    expected_features = voxel_means(points_ego, features, seen)
    expected_colors = voxel_means(points_ego, colors, seen)
    # feature voxels = voxels holding a point a camera sees
    got = [tuple(ijk) for ijk in lidar_field.indices.tolist()]
    assert set(got) == set(expected_features) and len(got) > 200
    ijk, inside = voxel_of(points_ego)
    unseen_only = set(map(tuple, ijk[inside & ~seen].tolist())) - set(expected_features)
    assert unseen_only and all(lidar_field.occupancy[v] > 0 for v in unseen_only)  # occupied, no feature
    for row, key in enumerate(got):
        mean = expected_features[key]
        np.testing.assert_allclose(lidar_field.features[row], mean / np.linalg.norm(mean), atol=2e-5, rtol=0)
        np.testing.assert_allclose(lidar_field.colors[row], np.round(expected_colors[key]), atol=1, rtol=0)
    assert lidar_field.colors.dtype == np.uint8 and lidar_field.colors.std() > 5  # real colours, not constant
    # labels: the zero-shot class among the 16 Occ3D classes (ids 1..16)
    classes = encode_classes(encoder).numpy()
    assert np.array_equal(lidar_field.labels, (lidar_field.features @ classes.T).argmax(1) + 1)
    assert lidar_field.space == encoder.space and lidar_field.metadata["method"] == "fusion"
    assert lidar_field.metadata["text_encoder"] == "hash" and lidar_field.metadata["frames_fused"] == [0]


def test_default_geometry_and_precision(capture, lidar_field, encoder, teacher):
    # "auto" takes the LiDAR of a frame that has a sweep; float16 storage by default; a callable teacher_for
    method = FusionMethod(FusionOptions(lower=tuple(LOWER), upper=tuple(UPPER), voxel_size=VOXEL),
                          Resources(text_encoder=encoder, teacher=lambda capture_: teacher))
    field_ = method.reconstruct(capture, 0)
    assert field_.features.dtype == np.float16
    np.testing.assert_array_equal(field_.occupancy, lidar_field.occupancy)
    np.testing.assert_array_equal(field_.indices, lidar_field.indices)
    np.testing.assert_allclose(field_.features.astype(np.float32), lidar_field.features, atol=1e-3)


def test_depth_geometry_back_projects_the_strided_pixels(capture, encoder, teacher):
    stride, max_depth = 3, 25.0
    field_ = fuse(capture, encoder, teacher, geometry="depth", depth_stride=stride, max_depth=max_depth)
    frame = capture.frames[0]
    points = []
    for cam in frame.cameras.values():
        depth = cam.load_depth()
        v, u = np.mgrid[0:cam.height:stride, 0:cam.width:stride]
        d = depth[v, u]
        keep = (d > 0) & (d <= max_depth)
        rays = np.linalg.inv(cam.K) @ np.stack([u[keep], v[keep], np.ones(keep.sum())])  # [3, n], z = 1
        p_cam = (rays * d[keep]).T
        points.append(p_cam @ np.asarray(cam.cam2world)[:3, :3].T + np.asarray(cam.cam2world)[:3, 3])
    points_world = np.concatenate(points)
    assert field_.metadata["points"] == len(points_world)
    assert field_.metadata["points_seen"] == len(points_world)  # each pixel is seen by its own camera
    points_ego = to_ego(points_world, frame.ego2world)
    np.testing.assert_allclose(field_.occupancy, 1.0 - 2.0 ** -hit_counts(points_ego), atol=1e-6, rtol=0)
    ijk, inside = voxel_of(points_ego)
    assert {tuple(v) for v in field_.indices.tolist()} == set(map(tuple, ijk[inside].tolist()))
    # a larger stride and a closer cut keep fewer points
    fewer = fuse(capture, encoder, teacher, geometry="depth", depth_stride=4, max_depth=10.0)
    assert 0 < fewer.metadata["points"] < field_.metadata["points"]


def test_fused_frames_land_in_the_reference_ego_frame(capture, lidar_field, encoder, teacher):
    f0, f1 = capture.frames
    assert not np.allclose(f0.ego2world, f1.ego2world)  # the ego moved
    both = fuse(capture, encoder, teacher, geometry="lidar", fuse_frames=(0, 1))
    hits = hit_counts(to_ego(f0.lidar["LIDAR_TOP"].points_world(), f0.ego2world)) \
        + hit_counts(to_ego(f1.lidar["LIDAR_TOP"].points_world(), f0.ego2world))
    np.testing.assert_allclose(both.occupancy, 1.0 - 2.0 ** -hits, atol=1e-6, rtol=0)
    assert both.metadata["frames_fused"] == [0, 1] and both.metadata["frame"] == 0
    # frame 1 alone, seen from frame 0's ego frame: the static street above the road (z >= 0.6 m; the
    # LiDAR's rings on the road move with the ego) lands where frame 0 saw it, not 3 m off as in frame 1's
    moved = fuse(capture, encoder, teacher, geometry="lidar", fuse_frames=(1,))
    own = fuse(capture, encoder, teacher, frame_index=1, geometry="lidar")

    def iou(a, b):
        a, b = a.occupancy[:, :, 2:] > 0.5, b.occupancy[:, :, 2:] > 0.5
        return (a & b).sum() / (a | b).sum()

    assert iou(moved, lidar_field) > 0.6 and iou(moved, lidar_field) > iou(own, lidar_field) + 0.2
    np.testing.assert_allclose(own.metadata["ego2world"], f1.ego2world)


def test_errors(capture, encoder, teacher):
    frame = capture.frames[0]
    sweep = dataclasses.replace(frame.lidar["LIDAR_TOP"], points=ArraySource.of(np.zeros((0, 5), np.float32)))
    empty = Capture([dataclasses.replace(frame, lidar={"LIDAR_TOP": sweep})])
    with pytest.raises(FieldError, match="empty"):
        fuse(empty, encoder, teacher, geometry="lidar")
    fuse(empty, encoder, teacher, geometry="depth")  # the depth maps do not need the sweep

    class OtherSpace(HashEncoder):
        space = "hash:other"

    with pytest.raises(FieldError, match="space 'hash:test' but the text encoder's in 'hash:other'"):
        fuse(capture, OtherSpace(dim=16), teacher)
    with pytest.raises(FieldError, match="invalid grid.*not a whole multiple"):
        fuse(capture, encoder, teacher, voxel_size=0.7)
    with pytest.raises(FieldError, match="unknown geometry 'radar'"):
        fuse(capture, encoder, teacher, geometry="radar")
    with pytest.raises(FieldError, match="feature_dtype"):
        fuse(capture, encoder, teacher, feature_dtype="float64")
    with pytest.raises(FieldError, match="depth_stride"):
        fuse(capture, encoder, teacher, geometry="depth", depth_stride=0)
    with pytest.raises(FieldError, match="min_depth < max_depth"):
        FusionMethod(options(min_depth=70.0, max_depth=60.0))  # bad options fail when the method is built
    with pytest.raises(FieldError, match="needs a dense teacher"):
        fuse(capture, encoder, None)
    with pytest.raises(FieldError, match="needs the text encoder"):
        fuse(capture, None, teacher)
    with pytest.raises(FieldError, match="out of range"):
        fuse(capture, encoder, teacher, frame_index=2)
    with pytest.raises(FieldError, match="out of range"):
        fuse(capture, encoder, teacher, fuse_frames=(0, 5))
    no_depth = {name: dataclasses.replace(cam, depth=None) for name, cam in frame.cameras.items()}
    with pytest.raises(FieldError, match="needs a depth map for every camera"):
        fuse(Capture([dataclasses.replace(frame, cameras=no_depth)]), encoder, teacher, geometry="depth")
