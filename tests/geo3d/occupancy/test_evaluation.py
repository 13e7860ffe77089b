"""OccupancyEvaluator / evaluate_occupancy: perfect predictions, a confusion computed by hand, pooled
retrieval AP (POP-3D) against per-frame averaging and a brute-force pooled reference, the projection
baseline's voxels and the oracle's nearest-point transfer against brute-force loops, frames without
ground truth, the report, bad inputs, and an end-to-end run of a tiny OccupancyNet on synthetic frames."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from text_encoder_stub import HashEncoder

from geo3d.language.label_teacher import LabelTeacher
from geo3d.occupancy.dataset import SyntheticOccupancyDataset
from geo3d.occupancy.evaluation import METHODS, FramePrediction, OccupancyEvaluator, evaluate_occupancy, predict_frame
from geo3d.occupancy.report import format_report
from geo3d.occupancy.voxel_features import nearest_point_features, voxelize_point_features, zero_shot_volume
from geo3d.occupancy.metrics import (
    QUERY_SET,
    SEMANTIC_CLASSES,
    average_precision,
    occupancy_iou,
    query_relevance,
    retrieval_map,
    semantic_miou,
)
from geo3d.occupancy.network import OccupancyNet, OccupancyNetConfig
from geo3d.occupancy.samples import OccupancySample
from geo3d.occupancy.targets import OccupancyError
from geo3d.synthetic.classes import CLASS_IDS, CLASS_NAMES
from geo3d.synthetic.generate import SynthConfig
from geo3d.synthetic.occupancy import OccupancyGridSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CAR, TRUCK, VEG, TERRAIN = (CLASS_IDS[n] for n in ("car", "truck", "vegetation", "terrain"))
ONE_HOT = torch.eye(16)  # class c (1..16) embedded as basis vector c - 1
QUERIES = {"automobile": ("car",), "vehicle": QUERY_SET["vehicle"], "greenery": ("terrain", "vegetation"),
           "two-wheeler": ("bicycle", "motorcycle")}


def one_hot(labels: torch.Tensor) -> torch.Tensor:
    return ONE_HOT[labels.long() - 1]


def query_embeddings(queries, class_embeddings=ONE_HOT) -> torch.Tensor:
    """Each query: the normalised sum of its classes' embeddings."""
    rows = [class_embeddings[[CLASS_IDS[n] - 1 for n in names]].sum(0) for names in queries.values()]
    return F.normalize(torch.stack(rows), dim=1)


def hand_sample(grid: OccupancyGridSpec, points: torch.Tensor, features: torch.Tensor, *, gt=None, visible=None,
                labels=None, state=None) -> OccupancySample:
    """An OccupancySample with only what the evaluator reads filled in meaningfully."""
    count = len(points)
    if state is None:
        state = torch.zeros(grid.shape, dtype=torch.int8) if gt is None else (gt > 0).to(torch.int8)
    return OccupancySample(
        images=torch.zeros(1, 3, 4, 4), K=torch.eye(3)[None], cam2ego=torch.eye(4)[None], camera_names=("cam",),
        lidar_points_ego=points.float(), lidar_origin_ego=torch.zeros(count, 3), occupancy_state=state,
        distill_points_ego=points.float(), distill_features=features.float(), distill_index=torch.arange(count),
        distill_camera=torch.zeros(count, dtype=torch.int64), distill_uv=torch.zeros(count, 2),
        gt_semantics=gt, gt_visible=visible, lidar_labels=labels, frame_id=0, capture_id="hand")


def centres(grid: OccupancyGridSpec, index: torch.Tensor) -> torch.Tensor:
    return torch.tensor(grid.lower) + (index.float() + 0.5) * grid.voxel_size


def perfect_frame(grid, seed):
    """Random ground truth; two LiDAR points inside every occupied voxel carrying their class's embedding."""
    gen = torch.Generator().manual_seed(seed)
    gt = torch.tensor([0, CAR, TRUCK, VEG, TERRAIN])[torch.randint(0, 5, grid.shape, generator=gen)]
    index = torch.nonzero(gt > 0).repeat(2, 1)
    points = centres(grid, index) + (torch.rand(len(index), 3, generator=gen) - 0.5) * 0.9 * grid.voxel_size
    labels = gt[tuple(index.T)]
    sample = hand_sample(grid, points, one_hot(labels), gt=gt, visible=torch.ones(grid.shape, dtype=torch.bool),
                         labels=labels)
    occupied = gt > 0
    prediction = FramePrediction(occupied, one_hot(gt[occupied]), one_hot(labels), seconds=0.01)
    return sample, prediction


def test_perfect_predictions_score_one_for_every_method():
    grid = OccupancyGridSpec((0.0, 0.0, 0.0), (4.0, 3.0, 2.0), 1.0)
    evaluator = OccupancyEvaluator(grid, ONE_HOT, query_embeddings(QUERIES), QUERIES, threshold=0.0)
    for seed in range(3):
        evaluator.update(*perfect_frame(grid, seed))
    result = evaluator.result()
    assert list(result.methods) == list(METHODS)
    assert (result.frames, result.ground_truth_frames, result.labelled_frames) == (3, 3, 3)
    for name in METHODS:
        method = result.methods[name]
        assert method.occupancy_iou == 1.0 and method.miou == 1.0 and method.frames == 3, name
        for cls in ("car", "truck", "vegetation", "terrain"):
            assert method.per_class_iou[cls] == 1.0
        assert math.isnan(method.per_class_iou["bus"])  # neither present nor predicted
        assert method.lidar_recall == 1.0 and method.lidar_free_agreement == 1.0
    for name in ("model", "projection baseline"):
        method = result.methods[name]
        assert method.retrieval_map == 1.0
        assert [method.per_query_ap[q] for q in ("automobile", "vehicle", "greenery")] == [1.0, 1.0, 1.0]
        assert math.isnan(method.per_query_ap["two-wheeler"])  # no relevant point: excluded from the mean
        assert method.points == sum(2 * int((perfect_frame(grid, s)[0].gt_semantics > 0).sum()) for s in range(3))
    oracle = result.methods["oracle"]
    assert oracle.retrieval_map is None and oracle.per_query_ap is None and "baseline" in oracle.note
    data = json.loads(result.to_json())
    assert data["methods"]["model"]["per_query_ap"]["two-wheeler"] is None
    assert data["methods"]["model"]["excluded_queries"] == ["two-wheeler"]


def test_confusion_by_hand_accumulates_over_frames():
    grid = OccupancyGridSpec((0.0, 0.0, 0.0), (6.0, 1.0, 1.0), 1.0)

    def column(values, dtype=torch.int64):
        return torch.tensor(values, dtype=dtype).reshape(6, 1, 1)

    evaluator = OccupancyEvaluator(grid, ONE_HOT, query_embeddings(QUERIES), QUERIES)
    no_points = (torch.zeros(0, 3), torch.zeros(0, 16))
    # frame 1: voxel 5 is outside the visibility mask (its false positive must not count)
    frame1 = hand_sample(grid, *no_points, gt=column([0, CAR, CAR, TRUCK, TRUCK, 0]),
                         visible=column([1, 1, 1, 1, 1, 0], torch.bool), state=column([1, 1, -1, 0, 1, 0], torch.int8))
    occupied1 = column([1, 1, 0, 1, 1, 1], torch.bool)
    evaluator.update(frame1, FramePrediction(occupied1, one_hot(torch.tensor([CAR, CAR, CAR, TRUCK, TRUCK])), None))
    first = evaluator.result().methods["model"]
    # occupancy: TP {1, 3, 4}, FP {0}, FN {2} -> 3 / 5; car: TP {1}, union {0, 1, 2, 3}; truck: TP {4}, union {3, 4}
    assert first.occupancy_iou == pytest.approx(0.6)
    assert first.per_class_iou["car"] == pytest.approx(0.25) and first.per_class_iou["truck"] == pytest.approx(0.5)
    assert first.miou == pytest.approx(0.375)
    frame2 = hand_sample(grid, *no_points, gt=column([CAR, 0, 0, 0, 0, 0]), visible=torch.ones(grid.shape).bool(),
                         state=column([1, 0, 0, 0, 0, 0], torch.int8))
    evaluator.update(frame2, FramePrediction(column([1, 0, 0, 0, 0, 0], torch.bool), one_hot(torch.tensor([CAR])),
                                             None))
    result = evaluator.result()
    model = result.methods["model"]
    # totals: TP 4, FP 1, FN 1 -> 4 / 6, not the mean of the per-frame IoUs (0.6 + 1) / 2
    assert model.occupancy_iou == pytest.approx(4 / 6)
    assert model.per_class_iou["car"] == pytest.approx(2 / 5) and model.miou == pytest.approx((2 / 5 + 1 / 2) / 2)
    # LiDAR geometry: occupied {0, 1, 4} + {0} all predicted; free {3, 5} predicted occupied, {1..5} free
    assert model.lidar_recall == 1.0 and model.lidar_free_agreement == pytest.approx(5 / 7)
    assert model.retrieval_map is None and "LiDAR labels" in model.note
    # without any visible point the baseline predicts nothing, and the oracle cannot name its voxels
    baseline, oracle = result.methods["projection baseline"], result.methods["oracle"]
    assert baseline.occupancy_iou == 0.0 and baseline.miou == 0.0 and baseline.lidar_recall == 0.0
    assert oracle.occupancy_iou == 1.0 and oracle.miou == 0.0


def test_retrieval_pools_points_across_frames():
    grid = OccupancyGridSpec((0.0, 0.0, 0.0), (2.0, 2.0, 1.0), 1.0)
    queries = {"automobile": ("car",)}
    classes = F.normalize(torch.randn(16, 2, generator=torch.Generator().manual_seed(0)), dim=1)

    def at_cosine(values):  # unit features whose cosine to the query [1, 0] is each value
        values = torch.tensor(values)
        return torch.stack([values, (1 - values**2).sqrt()], 1)

    evaluator = OccupancyEvaluator(grid, classes, torch.tensor([[1.0, 0.0]]), queries)
    labels = torch.tensor([CAR, VEG])
    for cosines in ([0.9, 0.8], [0.3, 0.2]):  # each frame alone ranks its car first: AP 1
        features = at_cosine(cosines)
        sample = hand_sample(grid, torch.full((2, 3), 0.5), features, labels=labels)
        evaluator.update(sample, FramePrediction(torch.zeros(grid.shape, dtype=torch.bool), None, features))
    relevant = torch.tensor([True, False])
    per_frame = [average_precision(torch.tensor(c), relevant) for c in ([0.9, 0.8], [0.3, 0.2])]
    pooled = average_precision(torch.tensor([0.9, 0.8, 0.3, 0.2]), relevant.repeat(2))
    assert per_frame == [1.0, 1.0] and pooled == pytest.approx(5 / 6)
    for name in ("model", "projection baseline"):
        method = evaluator.result().methods[name]
        # pooled ranking: car 0.9, veg 0.8, car 0.3, veg 0.2 -> AP (1 + 2/3) / 2, not the per-frame mean 1
        assert method.per_query_ap["automobile"] == pytest.approx(pooled, abs=1e-6) and method.points == 4
        assert method.per_query_chance == {"automobile": 0.5}  # 2 of the 4 pooled points are cars
        assert method.miou is None and method.occupancy_iou is None


def test_pooled_retrieval_matches_brute_force_reference():
    grid = OccupancyGridSpec((0.0, 0.0, 0.0), (2.0, 2.0, 1.0), 1.0)
    gen = torch.Generator().manual_seed(1)
    classes = F.normalize(torch.randn(16, 8, generator=gen), dim=1)
    queries = dict(QUERY_SET)
    query_embs = torch.randn(len(queries), 8, generator=gen)
    evaluator = OccupancyEvaluator(grid, classes, query_embs, queries)
    kept, per_frame = [], []
    for count in (60, 9, 35):
        labels = torch.randint(1, 17, (count,), generator=gen)
        teacher = F.normalize(torch.randn(count, 8, generator=gen), dim=1)
        predicted = torch.randn(count, 8, generator=gen)  # any scale: retrieval uses the cosine
        points = torch.rand(count, 3, generator=gen) * torch.tensor([2.0, 2.0, 1.5])  # a third above the grid
        evaluator.update(hand_sample(grid, points, teacher, labels=labels),
                         FramePrediction(torch.zeros(grid.shape, dtype=torch.bool), None, predicted))
        inside = points[:, 2] < 1.0
        kept.append((predicted[inside], teacher[inside], labels[inside]))
        per_frame.append(retrieval_map(predicted[inside], query_embs, query_relevance(labels[inside], queries)[1]).map)
    result = evaluator.result()
    relevance = query_relevance(torch.cat([k[2] for k in kept]), queries)[1]
    for name, column in (("model", 0), ("projection baseline", 1)):
        reference = retrieval_map(torch.cat([k[column] for k in kept]), query_embs, relevance)
        got = result.methods[name]
        assert got.points == relevance.shape[1] < 104
        np.testing.assert_allclose([got.per_query_ap[q] for q in queries], reference.per_query_ap.numpy(),
                                   atol=1e-6)
        assert got.retrieval_map == pytest.approx(reference.map, abs=1e-6)
    assert abs(result.methods["model"].retrieval_map - float(np.mean(per_frame))) > 1e-3


def test_frames_without_a_model_prediction_score_the_baseline_only():
    grid = OccupancyGridSpec((0.0, 0.0, 0.0), (4.0, 3.0, 2.0), 1.0)
    evaluator = OccupancyEvaluator(grid, ONE_HOT, query_embeddings(QUERIES), QUERIES)
    sample, _ = perfect_frame(grid, 5)
    evaluator.update(sample)
    result = evaluator.result()
    model = result.methods["model"]
    assert model.frames == 0 and model.miou is None and model.retrieval_map is None and model.lidar_recall is None
    assert "no frame" in model.note and result.inference_seconds == () and result.median_inference_s is None
    assert result.methods["projection baseline"].miou == 1.0 and result.methods["oracle"].miou == 1.0


def random_frame(grid, seed, count=300, dim=6):
    gen = torch.Generator().manual_seed(seed)
    lower, upper = torch.tensor(grid.lower), torch.tensor(grid.upper)
    points = lower - 0.5 + torch.rand(count, 3, generator=gen) * (upper - lower + 1.0)  # some outside the grid
    features = F.normalize(torch.randn(count, dim, generator=gen), dim=1)
    gt = torch.randint(0, 17, grid.shape, generator=gen) * (torch.rand(grid.shape, generator=gen) < 0.5)
    visible = torch.rand(grid.shape, generator=gen) < 0.8
    classes = F.normalize(torch.randn(16, dim, generator=gen), dim=1)
    return points, features, gt, visible, classes


def test_baseline_voxels_match_brute_force():
    grid = OccupancyGridSpec((-2.0, -1.0, 0.0), (2.0, 2.0, 1.5), 0.5)
    points, features, gt, visible, classes = random_frame(grid, 3)
    sums, counts = {}, {}
    for p, f in zip(points.double().numpy(), features.double().numpy()):
        ijk = tuple(int(v) for v in np.floor((p - np.array(grid.lower)) / grid.voxel_size))
        if all(0 <= v < n for v, n in zip(ijk, grid.shape)):
            sums[ijk] = sums.get(ijk, 0.0) + f
            counts[ijk] = counts.get(ijk, 0) + 1
    expected_labels = torch.zeros(grid.shape, dtype=torch.int64)
    for ijk, total in sums.items():
        mean = total / np.linalg.norm(total)
        expected_labels[ijk] = 1 + int(np.argmax(classes.double().numpy() @ mean))
    voxels = voxelize_point_features(points, features, grid)
    keys = [tuple(v) for v in torch.nonzero(voxels.occupied).tolist()]
    assert keys == sorted(sums) and voxels.counts.tolist() == [counts[k] for k in keys]
    expected = np.stack([sums[k] / np.linalg.norm(sums[k]) for k in keys])
    np.testing.assert_allclose(voxels.features.numpy(), expected, atol=1e-6)
    assert torch.equal(zero_shot_volume(voxels.occupied, voxels.features, classes), expected_labels)
    # through the evaluator: the baseline's confusion is that of the brute-force volume
    evaluator = OccupancyEvaluator(grid, classes, classes[:2], {"a": ("car",), "b": ("bus",)})
    evaluator.update(hand_sample(grid, points, features, gt=gt, visible=visible))
    baseline = evaluator.result().methods["projection baseline"]
    reference = semantic_miou(expected_labels, gt, 17, mask=visible, classes=SEMANTIC_CLASSES)
    assert baseline.miou == pytest.approx(reference.miou, rel=1e-12)
    np.testing.assert_allclose(list(baseline.per_class_iou.values()), reference.per_class[1:].numpy())
    assert baseline.occupancy_iou == pytest.approx(occupancy_iou(expected_labels > 0, gt > 0, visible))


def test_oracle_nearest_point_transfer_matches_brute_force():
    grid = OccupancyGridSpec((-2.0, -1.0, 0.0), (2.0, 2.0, 1.5), 0.5)
    points, features, gt, visible, classes = random_frame(grid, 4, count=80)
    scored = (gt > 0) & visible
    index = torch.nonzero(scored)
    centre = torch.tensor(grid.lower, dtype=torch.float64) + (index.double() + 0.5) * grid.voxel_size
    nearest = torch.cdist(centre, points.double()).argmin(1)
    transferred = nearest_point_features(scored, points, features, grid)
    assert torch.equal(transferred, features[nearest])
    expected_labels = torch.zeros(grid.shape, dtype=torch.int64)
    expected_labels[tuple(index.T)] = 1 + (features[nearest] @ classes.T).argmax(1)
    evaluator = OccupancyEvaluator(grid, classes, classes[:1], {"a": ("car",)})
    evaluator.update(hand_sample(grid, points, features, gt=gt, visible=visible))
    oracle = evaluator.result().methods["oracle"]
    reference = semantic_miou(expected_labels, gt, 17, mask=visible, classes=SEMANTIC_CLASSES)
    assert oracle.occupancy_iou == 1.0 and oracle.miou == pytest.approx(reference.miou, rel=1e-12)
    np.testing.assert_allclose(list(oracle.per_class_iou.values()), reference.per_class[1:].numpy())


def test_frames_without_ground_truth():
    grid = OccupancyGridSpec((0.0, 0.0, 0.0), (4.0, 3.0, 2.0), 1.0)
    with_gt, prediction = perfect_frame(grid, 0)
    evaluator = OccupancyEvaluator(grid, ONE_HOT, query_embeddings(QUERIES), QUERIES)
    # labels but no occupancy ground truth (e.g. nuScenes lidarseg without Occ3D): retrieval only
    labelled = hand_sample(grid, with_gt.distill_points_ego, with_gt.distill_features, labels=with_gt.lidar_labels,
                           state=with_gt.occupancy_state)
    evaluator.update(labelled, prediction._replace(occupied_features=None))
    result = evaluator.result()
    for name in ("model", "projection baseline"):
        method = result.methods[name]
        assert method.occupancy_iou is None and method.miou is None and method.retrieval_map == 1.0
        assert method.lidar_recall == 1.0 and "ground truth" in method.note
    assert result.methods["oracle"].frames == 0 and result.methods["oracle"].miou is None
    # neither ground truth nor labels: geometry against the LiDAR targets only
    bare = OccupancyEvaluator(grid, ONE_HOT, query_embeddings(QUERIES), QUERIES)
    state = torch.full(grid.shape, -1, dtype=torch.int8)
    state[0] = 1   # 6 LiDAR-occupied voxels (x = 0)
    state[1] = 0   # 6 LiDAR-free voxels (x = 1)
    occupied = torch.zeros(grid.shape, dtype=torch.bool)
    occupied[0, :2] = True      # 4 of the 6 occupied ones found
    occupied[1, 0, 0] = True    # 1 of the 6 free ones predicted occupied
    occupied[3] = True          # unknown voxels do not count
    sample = hand_sample(grid, torch.tensor([[0.5, 0.5, 0.5], [3.5, 0.5, 0.5]]), one_hot(torch.tensor([CAR, CAR])),
                         state=state)
    bare.update(sample, FramePrediction(occupied, None, None, seconds=0.5))
    result = bare.result()
    model, baseline = result.methods["model"], result.methods["projection baseline"]
    assert model.lidar_recall == pytest.approx(4 / 6) and model.lidar_free_agreement == pytest.approx(5 / 6)
    assert baseline.lidar_recall == pytest.approx(1 / 6) and baseline.lidar_free_agreement == 1.0
    assert model.retrieval_map is None and model.miou is None and result.labelled_frames == 0
    # a frame with ground truth joins the voxel metrics; the other frames keep counting elsewhere
    evaluator.update(with_gt, prediction)
    mixed = evaluator.result()
    assert (mixed.frames, mixed.ground_truth_frames) == (2, 1) and mixed.methods["model"].ground_truth_frames == 1
    assert mixed.methods["model"].miou == 1.0 and mixed.methods["oracle"].frames == 1
    text = format_report(result)
    assert "LiDAR recall" in text and "66.7" in text and "83.3" in text


def test_report_and_timing():
    grid = OccupancyGridSpec((0.0, 0.0, 0.0), (4.0, 3.0, 2.0), 1.0)
    evaluator = OccupancyEvaluator(grid, ONE_HOT, query_embeddings(QUERIES), QUERIES, threshold=0.25)
    for seed, seconds in zip(range(3), (0.1, 0.2, 0.6)):
        sample, prediction = perfect_frame(grid, seed)
        evaluator.update(sample, prediction._replace(seconds=seconds))
    result = evaluator.result()
    assert result.median_inference_s == pytest.approx(0.2) and result.mean_inference_s == pytest.approx(0.3)
    data = json.loads(result.to_json())
    assert data["inference"] == {"median_s": pytest.approx(0.2), "mean_s": pytest.approx(0.3), "frames": 3}
    assert data["threshold"] == 0.25 and data["methods"]["oracle"]["retrieval_map"] is None
    assert set(data["methods"]["model"]["per_class_iou"]) == set(CLASS_NAMES[1:])
    text = format_report(result)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("method") and "mIoU" in line)
    assert header.split() == ["method", "IoU", "mIoU", "mAP", "frames", "points"]
    oracle_row = next(line for line in lines if line.startswith("oracle "))
    assert oracle_row.split()[1:4] == ["100.0", "100.0", "-"]
    assert "logit > 0.25" in text and "median 0.200 s" in text
    assert any(line.startswith("two-wheeler") and "n/a" in line and "bicycle, motorcycle" in line for line in lines)
    assert any(line.startswith("bus ") and line.split()[1:] == ["n/a"] * 3 for line in lines)


def test_bad_inputs():
    grid = OccupancyGridSpec((0.0, 0.0, 0.0), (4.0, 3.0, 2.0), 1.0)
    embs = query_embeddings(QUERIES)
    with pytest.raises(OccupancyError, match="class_embeddings must have 16 rows"):
        OccupancyEvaluator(grid, ONE_HOT[:15], embs, QUERIES)
    with pytest.raises(OccupancyError, match="query_embeddings have D = 8"):
        OccupancyEvaluator(grid, ONE_HOT, torch.ones(4, 8), QUERIES)
    with pytest.raises(OccupancyError, match="query_embeddings has 3 rows for 4 queries"):
        OccupancyEvaluator(grid, ONE_HOT, embs[:3], QUERIES)
    with pytest.raises(OccupancyError, match="queries must map query texts"):
        OccupancyEvaluator(grid, ONE_HOT, embs, list(QUERIES))
    with pytest.raises(OccupancyError, match="must name classes"):
        OccupancyEvaluator(grid, ONE_HOT, embs[:1], {"unicorn": ("unicorn",)})
    with pytest.raises(OccupancyError, match="grid_spec"):
        OccupancyEvaluator((4, 3, 2), ONE_HOT, embs, QUERIES)
    evaluator = OccupancyEvaluator(grid, ONE_HOT, embs, QUERIES)
    with pytest.raises(OccupancyError, match="no frame was evaluated"):
        evaluator.result()
    sample, prediction = perfect_frame(grid, 0)
    with pytest.raises(OccupancyError, match="sample must be an OccupancySample"):
        evaluator.update("frame")
    with pytest.raises(OccupancyError, match="distill_features have D = 8"):
        evaluator.update(hand_sample(grid, torch.zeros(2, 3), torch.ones(2, 8)))
    other_grid = OccupancyGridSpec((0.0, 0.0, 0.0), (2.0, 2.0, 2.0), 1.0)
    with pytest.raises(OccupancyError, match="occupancy_state"):
        evaluator.update(hand_sample(other_grid, torch.zeros(1, 3), torch.ones(1, 16)))
    with pytest.raises(OccupancyError, match="prediction.occupied must be a bool tensor"):
        evaluator.update(sample, prediction._replace(occupied=prediction.occupied.long()))
    with pytest.raises(OccupancyError, match=r"prediction.occupied_features must be \["):
        evaluator.update(sample, prediction._replace(occupied_features=prediction.occupied_features[1:]))
    with pytest.raises(OccupancyError, match="prediction.point_features is None"):
        evaluator.update(sample, prediction._replace(point_features=None))
    with pytest.raises(OccupancyError, match="prediction.seconds"):
        evaluator.update(sample, prediction._replace(seconds=-1.0))
    assert evaluator.frames == 0  # rejected frames leave nothing behind
    with pytest.raises(OccupancyError, match="features has 1 rows for 2 points_ego"):
        voxelize_point_features(torch.zeros(2, 3), torch.zeros(1, 4), grid)
    with pytest.raises(OccupancyError, match="points_ego is empty"):
        nearest_point_features(torch.ones(grid.shape, dtype=torch.bool), torch.zeros(0, 3), torch.zeros(0, 4), grid)
    net = OccupancyNet(OccupancyNetConfig.tiny(language_dim=16))
    tiny_embs = torch.eye(16)
    with pytest.raises(OccupancyError, match="samples is empty"):
        evaluate_occupancy(net, [], tiny_embs, query_embeddings(QUERIES), QUERIES)
    with pytest.raises(OccupancyError, match="language_dim = 16 but the text embeddings have D = 8"):
        evaluate_occupancy(net, [], torch.ones(16, 8), torch.ones(4, 8), QUERIES)
    with pytest.raises(OccupancyError, match="net must be an OccupancyNet"):
        evaluate_occupancy(object(), [sample], tiny_embs, query_embeddings(QUERIES), QUERIES)


GRID_LOWER, GRID_UPPER = (-12.8, -12.8, -1.0), (12.8, 12.8, 2.2)
SYNTH = SynthConfig(seed=11, frames=2, width=64, height=36, lidar_beams=8, lidar_azimuth_steps=240,
                    occupancy_lower=GRID_LOWER, occupancy_upper=GRID_UPPER, voxel_size_m=0.8, shadows=False)
IMAGE_SIZE = (32, 48)


def test_end_to_end_with_a_tiny_network():
    encoder = HashEncoder(dim=16)
    teacher = LabelTeacher(encoder, CLASS_NAMES, patch_size=8, noise_std=0.2, confusion_rate=0.1)
    samples = SyntheticOccupancyDataset([11], SYNTH, None, teacher, IMAGE_SIZE)
    config = OccupancyNetConfig.tiny(image_size=IMAGE_SIZE, language_dim=16,
                                     lifting_grid=OccupancyGridSpec(GRID_LOWER, GRID_UPPER, 1.6),
                                     output_grid=OccupancyGridSpec(GRID_LOWER, GRID_UPPER, 0.8))
    net = OccupancyNet(config).train()
    class_embs = encoder.encode([name.replace("_", " ") for name in CLASS_NAMES[1:]])
    query_embs = encoder.encode(list(QUERY_SET))
    seen = []
    result = evaluate_occupancy(net, samples, class_embs, query_embs, progress=lambda done, s: seen.append(done))
    assert net.training and seen == [1, 2]  # mode restored, progress per frame
    assert (result.frames, result.ground_truth_frames, result.labelled_frames) == (2, 2, 2)
    assert len(result.inference_seconds) == 2 and all(s > 0 for s in result.inference_seconds)
    for name in METHODS:
        method = result.methods[name]
        assert method.frames == 2 and 0.0 <= method.occupancy_iou <= 1.0 and 0.0 <= method.miou <= 1.0
    assert result.methods["oracle"].occupancy_iou == 1.0
    lower, upper = torch.tensor(GRID_LOWER), torch.tensor(GRID_UPPER)
    points = sum(int(((s.distill_points_ego >= lower) & (s.distill_points_ego < upper)).all(1).sum())
                 for s in (samples[0], samples[1]))  # retrieval ranks the visible points inside the grid
    for name in ("model", "projection baseline"):
        method = result.methods[name]
        assert method.points == points and 0.0 < method.retrieval_map <= 1.0
        assert list(method.per_query_ap) == list(QUERY_SET)
    # the model's numbers are those of its own prediction, scored directly
    net.eval()
    first, second = samples[0], samples[1]
    predictions = [predict_frame(net, s) for s in (first, second)]
    assert predictions[0].occupied_features.shape == (int(predictions[0].occupied.sum()), 16)
    assert predictions[0].point_features.shape == (len(first.distill_index), 16)
    with torch.no_grad():
        logits = net(first.images[None], first.K[None], first.cam2ego[None]).occupancy_logits[0]
    assert torch.equal(predictions[0].occupied, logits > 0)
    pred = torch.cat([p.occupied.flatten() for p in predictions])
    gt = torch.cat([(s.gt_semantics > 0).flatten() for s in (first, second)])
    mask = torch.cat([s.gt_visible.flatten() for s in (first, second)])
    assert result.methods["model"].occupancy_iou == pytest.approx(occupancy_iou(pred, gt, mask), rel=1e-12)
    text = format_report(result)
    assert all(name in text for name in METHODS) and "per-query AP" in text and "per-class IoU" in text
    json.loads(result.to_json())
