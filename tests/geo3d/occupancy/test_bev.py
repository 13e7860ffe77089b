"""OccFeat mode (geo3d.occupancy.bev): BEV labels against a brute-force loop, the labelled subset, the
head's shapes / pixel-shuffle layout / gradients / prior, the loss against hand-computed BCE, IoU
accumulation on a known case, and a short deterministic fine-tuning on tiny synthetic samples."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from geo3d.language.label_teacher import LabelTeacher
from geo3d.occupancy.bev import (
    BEV_CLASSES, BevIoUAccumulator, BevSegmentationNet, BevTrainConfig, bev_labels, bev_segmentation_loss,
    evaluate_bev, label_frequencies, label_subset, train_bev_head,
)
from geo3d.occupancy.dataset import SyntheticOccupancyDataset
from geo3d.occupancy.losses import lovasz_hinge
from geo3d.occupancy.network import OccupancyNet, OccupancyNetConfig
from geo3d.occupancy.store import load_sample, save_sample
from geo3d.occupancy.targets import OccupancyError
from geo3d.synthetic.classes import CLASS_IDS, CLASS_NAMES
from geo3d.synthetic.generate import SynthConfig
from geo3d.synthetic.occupancy import OccupancyGridSpec
from text_encoder_stub import HashEncoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The tiny network's output grid: 32 x 32 x 8 voxels of 0.5 m over [-8, 8] x [-8, 8] x [-1, 3].
TINY_SYNTH = SynthConfig(seed=0, frames=3, width=96, height=54, lidar_beams=16, lidar_azimuth_steps=360,
                         occupancy_lower=(-8.0, -8.0, -1.0), occupancy_upper=(8.0, 8.0, 3.0), voxel_size_m=0.5,
                         shadows=False)
FAST = BevTrainConfig(steps=60, lr=1e-2, seed=0)


def surround_rig(batch: int, cams: int, size: tuple[int, int]):
    """``cams`` horizontal cameras 1.5 m above the ego origin, evenly spread in yaw (OpenCV axes)."""
    height, width = size
    focal = 0.42 * width
    K = torch.tensor([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]])
    poses = []
    for c in range(cams):
        yaw = 2 * math.pi * c / cams
        pose = torch.eye(4)
        pose[:3, 0] = torch.tensor([math.sin(yaw), -math.cos(yaw), 0.0])
        pose[:3, 1] = torch.tensor([0.0, 0.0, -1.0])
        pose[:3, 2] = torch.tensor([math.cos(yaw), math.sin(yaw), 0.0])
        pose[:3, 3] = torch.tensor([0.5, 0.0, 1.5])
        poses.append(pose)
    return K.expand(batch, cams, 3, 3).clone(), torch.stack(poses).expand(batch, cams, 4, 4).clone()


@pytest.fixture(scope="module")
def samples():
    """Six tiny synthetic frames (two streets) with ground truth on the tiny network's output grid."""
    teacher = LabelTeacher(HashEncoder(dim=12), CLASS_NAMES, patch_size=8)
    data = SyntheticOccupancyDataset([0, 1], TINY_SYNTH, None, teacher, OccupancyNetConfig.tiny().image_size)
    return [data[i] for i in range(len(data))]


def tiny_net(seed: int = 0) -> BevSegmentationNet:
    return BevSegmentationNet(OccupancyNet(OccupancyNetConfig.tiny(seed=seed)), len(BEV_CLASSES), seed=seed)


# ------------------------------------------------------------------------------------------------ labels


def brute_force_labels(semantics, visible, groups):
    X, Y, Z = semantics.shape
    targets = torch.zeros(len(groups), X, Y, dtype=torch.bool)
    valid = torch.zeros(X, Y, dtype=torch.bool)
    for x in range(X):
        for y in range(Y):
            for z in range(Z):
                valid[x, y] |= bool(visible[x, y, z])
                for k, names in enumerate(groups.values()):
                    if CLASS_NAMES[int(semantics[x, y, z])] in names:
                        targets[k, x, y] = True
    return targets, valid


@pytest.mark.parametrize("groups", [BEV_CLASSES, {"person": ("pedestrian",), "stuff": ("manmade", "vegetation"),
                                                  "car": ("car",)}])
def test_bev_labels_match_brute_force(groups):
    generator = torch.Generator().manual_seed(1)
    semantics = torch.randint(0, len(CLASS_NAMES), (2, 7, 5, 4), generator=generator)
    semantics[semantics > 11] = 0  # plenty of free voxels
    visible = torch.rand(2, 7, 5, 4, generator=generator) < 0.3
    visible[0, 0, 0] = False  # a column nobody sees
    batched = bev_labels(semantics, visible, groups)
    assert batched.targets.shape == (2, len(groups), 7, 5) and batched.valid.shape == (2, 7, 5)
    for b in range(2):
        single = bev_labels(semantics[b], visible[b].clone(), groups)
        targets, valid = brute_force_labels(semantics[b], visible[b], groups)
        assert torch.equal(single.targets, targets) and torch.equal(single.valid, valid)
        assert torch.equal(batched.targets[b], targets) and torch.equal(batched.valid[b], valid)
    assert not batched.valid[0, 0, 0]


def test_bev_labels_of_a_hand_made_column():
    semantics = torch.zeros(2, 1, 3, dtype=torch.uint8)
    semantics[0, 0] = torch.tensor([CLASS_IDS["driveable_surface"], CLASS_IDS["truck"], 0])  # truck on the road
    semantics[1, 0] = torch.tensor([CLASS_IDS["sidewalk"], CLASS_IDS["pedestrian"], 0])
    visible = torch.tensor([[[False, False, True]], [[False, False, False]]])
    labels = bev_labels(semantics, visible)
    assert labels.targets[:, :, 0].tolist() == [[True, False], [True, False]]  # vehicle, drivable per column
    assert labels.valid[:, 0].tolist() == [True, False]


def test_bev_labels_errors():
    semantics = torch.zeros(3, 3, 2, dtype=torch.int64)
    visible = torch.ones(3, 3, 2, dtype=torch.bool)
    with pytest.raises(OccupancyError, match="gt_semantics must be an integer"):
        bev_labels(semantics.float(), visible)
    with pytest.raises(OccupancyError, match="gt_visible must be a bool"):
        bev_labels(semantics, visible[..., :1])
    with pytest.raises(OccupancyError, match="gt_visible must be a bool"):
        bev_labels(semantics, visible.long())
    with pytest.raises(OccupancyError, match=r"\['lorry'\] are not"):
        bev_labels(semantics, visible, {"vehicle": ("car", "lorry")})
    with pytest.raises(OccupancyError, match="are not"):
        bev_labels(semantics, visible, {"nothing": ("free",)})
    with pytest.raises(OccupancyError, match="non-empty sequence"):
        bev_labels(semantics, visible, {"vehicle": "car"})
    with pytest.raises(OccupancyError, match="ids must lie in"):
        bev_labels(semantics + 17, visible)


def test_label_subset():
    subset = label_subset(240, 0.05, seed=3)
    assert len(subset) == 12 and subset.dtype == torch.int64
    assert torch.equal(subset, label_subset(240, 0.05, seed=3))
    assert torch.equal(subset, subset.sort().values) and len(set(subset.tolist())) == 12
    assert 0 <= int(subset.min()) and int(subset.max()) < 240
    assert not torch.equal(subset, label_subset(240, 0.05, seed=4))
    assert set(subset.tolist()) <= set(label_subset(240, 0.1, seed=3).tolist())  # nested fractions
    assert len(label_subset(10, 0.01)) == 1 and len(label_subset(10, 0.25)) == 3  # round(2.5) -> 3
    assert label_subset(5, 1.0).tolist() == [0, 1, 2, 3, 4]
    for bad in (0.0, -0.1, 1.5, True):
        with pytest.raises(OccupancyError, match="fraction"):
            label_subset(10, bad)
    with pytest.raises(OccupancyError, match="num_frames"):
        label_subset(0, 0.5)


# ------------------------------------------------------------------------------------------------ network


def test_head_shapes_layout_and_gradients():
    net = tiny_net()
    config = net.backbone.config
    images = torch.rand(2, 4, 3, *config.image_size, generator=torch.Generator().manual_seed(0))
    K, cam2ego = surround_rig(2, 4, config.image_size)
    logits = net(images, K, cam2ego)
    assert logits.shape == (2, 2, 32, 32) and net.grid_xy == (32, 32)
    # pixel-shuffle layout: channel k s^2 + i s + j of lifting cell (x', y') -> output cell (s x' + i, s y' + j)
    bev = net.backbone(images, K, cam2ego).bev
    raw = net.head(bev)
    s = config.upsample
    assert s == 2
    for k, i, j, x, y in [(0, 0, 1, 3, 5), (1, 1, 0, 15, 0), (1, 1, 1, 7, 9)]:
        assert torch.allclose(logits[1, k, s * x + i, s * y + j], raw[1, k * s * s + i * s + j, x, y])
    targets = torch.rand(2, 2, 32, 32) < 0.3
    valid = torch.ones(2, 32, 32, dtype=torch.bool)
    bev_segmentation_loss(logits, targets, valid).total.backward()
    trained = {id(p) for p in net.segmentation_parameters()}
    for name, parameter in net.named_parameters():
        if id(parameter) in trained:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:  # the occupancy and language heads do not feed the BEV logits
            assert parameter.grad is None, name
            assert name.startswith(("backbone.occupancy_head", "backbone.volume_head", "backbone.language_head"))
    head_only = {id(p) for p in net.segmentation_parameters(include_backbone=False)}
    assert head_only == {id(p) for p in net.head.parameters()}


def test_prior_and_seeded_head():
    net = tiny_net()
    net.set_prior([0.3, 0.05])
    bev = torch.zeros(1, net.backbone.config.bev_widths[0], 16, 16)  # zero features: the logits are the bias
    probabilities = torch.sigmoid(net.head_logits(bev))
    torch.testing.assert_close(probabilities[0, 0], torch.full((32, 32), 0.3))
    torch.testing.assert_close(probabilities[0, 1], torch.full((32, 32), 0.05))
    a, b = tiny_net(), tiny_net()
    assert all(torch.equal(p, q) for p, q in zip(a.head.parameters(), b.head.parameters()))
    c = BevSegmentationNet(OccupancyNet(OccupancyNetConfig.tiny()), 2, seed=1)
    assert not torch.equal(a.head[0].weight, c.head[0].weight)
    with pytest.raises(OccupancyError, match="prior must be one probability"):
        net.set_prior([0.3])
    with pytest.raises(OccupancyError, match="prior must be one probability"):
        net.set_prior(1.0)
    with pytest.raises(OccupancyError, match="backbone must be an OccupancyNet"):
        BevSegmentationNet(torch.nn.Linear(2, 2), 2)
    with pytest.raises(OccupancyError, match="num_classes"):
        BevSegmentationNet(OccupancyNet(OccupancyNetConfig.tiny()), 0)


# ------------------------------------------------------------------------------------------------ loss, IoU


def test_loss_matches_hand_computed_bce():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, 3.0]], [[-2.0, 1.5], [0.0, -0.5]]]], requires_grad=True)
    targets = torch.tensor([[[[True, False], [True, False]], [[False, True], [True, True]]]])
    valid = torch.tensor([[[True, True], [False, True]]])  # cell (1, 0) does not count
    weights = (3.0, 0.5)
    expected = []
    for k in range(2):
        for x, y in [(0, 0), (0, 1), (1, 1)]:
            p = 1 / (1 + math.exp(-logits[0, k, x, y].item()))
            t = float(targets[0, k, x, y])
            expected.append(-(weights[k] * t * math.log(p) + (1 - t) * math.log(1 - p)))
    loss = bev_segmentation_loss(logits, targets, valid, pos_weight=weights)
    assert loss.bce.item() == pytest.approx(sum(expected) / len(expected), rel=1e-6)
    assert loss.lovasz.item() == 0.0 and loss.total.item() == pytest.approx(loss.bce.item())
    # torch's own BCE on the valid cells, one number for both classes
    keep = valid[:, None].expand_as(logits)
    reference = F.binary_cross_entropy_with_logits(logits[keep], targets[keep].float(), pos_weight=torch.tensor(2.0))
    assert bev_segmentation_loss(logits, targets, valid, pos_weight=2.0).bce.item() == pytest.approx(reference.item())
    # the Lovasz term: mean over classes of the hinge on each class's valid cells
    with_lovasz = bev_segmentation_loss(logits, targets, valid, lovasz_weight=0.5)
    hinge = [lovasz_hinge(logits[0, k][valid[0]], targets[0, k][valid[0]].long()) for k in range(2)]
    assert with_lovasz.lovasz.item() == pytest.approx(sum(h.item() for h in hinge) / 2)
    assert with_lovasz.total.item() == pytest.approx(with_lovasz.bce.item() + 0.5 * with_lovasz.lovasz.item())
    with_lovasz.total.backward()
    assert logits.grad[0, :, 1, 0].abs().sum() == 0 and logits.grad[0, :, 0, 0].abs().sum() > 0


def test_loss_without_valid_cells_and_errors():
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    targets = torch.zeros(1, 2, 3, 3, dtype=torch.bool)
    loss = bev_segmentation_loss(logits, targets, torch.zeros(1, 3, 3, dtype=torch.bool), lovasz_weight=1.0)
    assert loss.total.item() == 0.0
    loss.total.backward()  # attached to the graph
    valid = torch.ones(1, 3, 3, dtype=torch.bool)
    with pytest.raises(OccupancyError, match="targets must be a bool"):
        bev_segmentation_loss(logits, targets.float(), valid)
    with pytest.raises(OccupancyError, match=r"valid must be a bool \[1, 3, 3\]"):
        bev_segmentation_loss(logits, targets, valid[:, :2])
    with pytest.raises(OccupancyError, match="pos_weight must be one positive"):
        bev_segmentation_loss(logits, targets, valid, pos_weight=(1.0, 2.0, 3.0))
    with pytest.raises(OccupancyError, match="pos_weight must be one positive"):
        bev_segmentation_loss(logits, targets, valid, pos_weight=-1.0)
    with pytest.raises(OccupancyError, match="lovasz_weight"):
        bev_segmentation_loss(logits, targets, valid, lovasz_weight=-1.0)
    with pytest.raises(OccupancyError, match="NaN"):
        bev_segmentation_loss(torch.full((1, 2, 3, 3), float("nan")), targets, valid)


def test_iou_accumulates_over_frames():
    accumulator = BevIoUAccumulator(3)
    gt = torch.zeros(1, 3, 2, 3, dtype=torch.bool)
    logits = torch.full((1, 3, 2, 3), -1.0)
    valid = torch.ones(1, 2, 3, dtype=torch.bool)
    valid[0, 1, 2] = False
    # frame 1, class 0: gt {(0,0), (0,1)}, predicted {(0,1), (1,1)} and (1,2) (invalid): I = 1, U = 3
    gt[0, 0, 0, 0] = gt[0, 0, 0, 1] = True
    logits[0, 0, 0, 1] = logits[0, 0, 1, 1] = logits[0, 0, 1, 2] = 2.0
    logits[0, 1, 0, 0] = 0.0  # class 1: a logit of exactly 0 is not a prediction
    accumulator.update(logits, gt, valid)
    # frame 2, class 0: gt {(1,0)}, predicted {(1,0)}: I = 1, U = 1; class 1: predicted {(0,2)}, no gt
    gt2 = torch.zeros_like(gt)
    gt2[0, 0, 1, 0] = True
    pred2 = torch.zeros_like(gt)
    pred2[0, 0, 1, 0] = pred2[0, 1, 0, 2] = True
    accumulator.update(pred2, gt2, torch.ones(1, 2, 3, dtype=torch.bool))  # bool predictions
    assert accumulator.intersection.tolist() == [2, 0, 0] and accumulator.union.tolist() == [4, 1, 0]
    iou = accumulator.iou()
    assert iou[0].item() == pytest.approx(0.5) and iou[1].item() == 0.0 and math.isnan(iou[2].item())
    accumulator.reset()
    assert accumulator.union.sum() == 0
    with pytest.raises(OccupancyError, match=r"logits must be a \[B, 3, X, Y\]"):
        accumulator.update(logits[:, :2], gt[:, :2], valid)


# ------------------------------------------------------------------------------------------------ training


def test_lr_schedule():
    config = BevTrainConfig(steps=20, warmup_fraction=0.2, final_lr_factor=0.1)
    factors = [config.lr_factor(step) for step in range(20)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))
    assert factors[4 + 15 // 2] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 15)))
    for bad, match in [(dict(steps=0), "steps"), (dict(lr=0.0), "lr"), (dict(warmup_fraction=1.5), "warmup"),
                       (dict(grad_clip=-1.0), "grad_clip"), (dict(batch_size=True), "batch_size")]:
        with pytest.raises(OccupancyError, match=match):
            BevTrainConfig(**bad).check()


def test_training_lowers_the_loss_deterministically(samples):
    train = samples[:3]
    net = tiny_net()
    before = evaluate_bev(net, train)
    result = train_bev_head(net, train, FAST)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == FAST.steps and all(math.isfinite(v) for v in losses)
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    after = evaluate_bev(net, train)
    assert after.loss < 0.5 * before.loss
    assert after.iou["drivable"] > 0.8 and after.iou["vehicle"] > before.iou["vehicle"]
    assert after.mean_iou == pytest.approx((after.iou["drivable"] + after.iou["vehicle"]) / 2)
    assert [h["lr"] for h in result.history[:3]] == pytest.approx([FAST.lr * FAST.lr_factor(s) for s in range(3)])
    frames = [f for h in result.history[:6] for f in h["frames"]]
    assert sorted(frames[:3]) == [0, 1, 2] and sorted(frames[3:6]) == [0, 1, 2]  # epochs are permutations
    again = tiny_net()
    repeat = train_bev_head(again, train, FAST)
    assert [h["loss"] for h in repeat.history] == losses
    assert all(torch.equal(p, q) for p, q in zip(net.state_dict().values(), again.state_dict().values()))


def test_prior_from_labels_and_frozen_backbone(samples):
    train = samples[:3]
    frequencies = label_frequencies(train)
    labels = [bev_labels(s.gt_semantics, s.gt_visible) for s in train]
    cells = sum(int(lab.valid.sum()) for lab in labels)
    drivable = sum(int((lab.targets[1] & lab.valid).sum()) for lab in labels)
    assert frequencies[1].item() == pytest.approx(drivable / cells)
    net = tiny_net()
    backbone = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    head = {k: v.clone() for k, v in net.head.state_dict().items()}
    config = BevTrainConfig(steps=1, lr=1e-9, freeze_backbone=True, warmup_fraction=0.0)
    train_bev_head(net, train, config)
    bias = net.head[-1].bias.detach().reshape(2, 4)  # K x s^2
    expected = torch.logit(frequencies.clamp(0.01, 0.99)).float()
    torch.testing.assert_close(bias, expected[:, None].expand(2, 4), atol=1e-6, rtol=0)
    train_bev_head(net, train, BevTrainConfig(steps=5, lr=1e-2, freeze_backbone=True))
    assert all(torch.equal(v, backbone[k]) for k, v in net.backbone.state_dict().items())
    assert not torch.equal(net.head[0].weight, head["0.weight"])


def test_evaluate_reads_prepared_samples(samples, tmp_path):
    paths = [save_sample(tmp_path / f"sample_{i:06d}.pt", s) for i, s in enumerate(samples[3:])]
    net = tiny_net(seed=2)
    from_paths = evaluate_bev(net, paths, batch_size=2)
    loaded = evaluate_bev(net, [load_sample(p) for p in paths], batch_size=1)
    assert from_paths.frames == 3 and from_paths.iou == loaded.iou
    assert torch.equal(from_paths.union, loaded.union) and from_paths.loss == pytest.approx(loaded.loss)


def test_training_errors(samples):
    net = tiny_net()
    no_truth = samples[0].__class__(**{**vars(samples[0]), "gt_semantics": None})
    with pytest.raises(OccupancyError, match=r"samples\[1\] has no ground truth"):
        train_bev_head(net, [samples[0], no_truth], FAST)
    with pytest.raises(OccupancyError, match="non-empty sequence"):
        train_bev_head(net, [], FAST)
    with pytest.raises(OccupancyError, match="classes has 1 groups"):
        train_bev_head(net, samples[:1], FAST, classes={"vehicle": ("car",)})
    with pytest.raises(OccupancyError, match="lr must be"):
        train_bev_head(net, samples[:1], BevTrainConfig(lr=-1.0))
    coarse = OccupancyNetConfig.tiny(output_grid=OccupancyGridSpec((-8.0, -8.0, -1.0), (8.0, 8.0, 3.0), 1.0))
    other = BevSegmentationNet(OccupancyNet(coarse), 2)
    with pytest.raises(OccupancyError, match=r"samples\[0\]: ground-truth grid \(32, 32, 8\) does not match"):
        evaluate_bev(other, samples[:1])
