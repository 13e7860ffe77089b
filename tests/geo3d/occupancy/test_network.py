"""OccupancyNet: shapes, gradients of both heads, camera-order invariance, seeding, sampling, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geo3d.occupancy import feature_distillation_loss, occupancy_loss
from geo3d.occupancy.lifting import scale_intrinsics
from geo3d.occupancy.network import OccupancyNet, OccupancyNetConfig, OccupancyOutput
from geo3d.occupancy.targets import OccupancyError
from geo3d.synthetic.occupancy import OccupancyGridSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def surround_rig(batch: int, cams: int, size: tuple[int, int], focal_fraction: float = 0.42):
    """``cams`` horizontal cameras 1.5 m above the ego origin, evenly spread in yaw (OpenCV axes)."""
    height, width = size
    focal = focal_fraction * width
    K = torch.tensor([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]])
    poses = []
    for c in range(cams):
        yaw = 2 * math.pi * c / cams
        pose = torch.eye(4)
        pose[:3, 0] = torch.tensor([math.sin(yaw), -math.cos(yaw), 0.0])  # x right
        pose[:3, 1] = torch.tensor([0.0, 0.0, -1.0])                      # y down
        pose[:3, 2] = torch.tensor([math.cos(yaw), math.sin(yaw), 0.0])   # z forward
        pose[:3, 3] = torch.tensor([0.5, 0.0, 1.5])
        poses.append(pose)
    return K.expand(batch, cams, 3, 3).clone(), torch.stack(poses).expand(batch, cams, 4, 4).clone()


@pytest.fixture(scope="module")
def tiny_case():
    config = OccupancyNetConfig.tiny()
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 4, 3, *config.image_size, generator=generator)
    K, cam2ego = surround_rig(2, 4, config.image_size)
    return config, images, K, cam2ego


def test_default_config_shapes():
    config = OccupancyNetConfig()
    assert config.lifting_grid.shape == (100, 100, 8) and config.output_grid.shape == (200, 200, 16)
    net = OccupancyNet(config).eval()
    K, cam2ego = surround_rig(1, 6, config.image_size)
    with torch.no_grad():
        out = net(torch.rand(1, 6, 3, *config.image_size), K, cam2ego)
        points = torch.tensor([[5.0, 3.0, 0.5], [-20.0, 10.0, 2.0]])
        feats = net.language_features(out, points)
    assert out.occupancy_logits.shape == (1, 200, 200, 16)
    assert out.volume.shape == (1, config.volume_dim, 100, 100, 8)
    assert out.camera_count.shape == (1, 100, 100, 8)
    assert feats.shape == (1, 2, 384)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(1, 2))
    assert bool((out.camera_count > 0).float().mean() > 0.5)  # the six cameras see most of the grid


def test_tiny_shapes_and_unit_features(tiny_case):
    config, images, K, cam2ego = tiny_case
    net = OccupancyNet(config)
    out = net(images, K, cam2ego)
    assert isinstance(out, OccupancyOutput)
    assert out.occupancy_logits.shape == (2, 32, 32, 8)
    assert out.volume.shape == (2, 8, 16, 16, 4)
    assert out.camera_count.dtype == torch.int64 and int(out.camera_count.max()) >= 1
    points = torch.randn(2, 5, 3)
    feats = net.language_features(out, points)
    assert feats.shape == (2, 5, 12)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(2, 5))
    shared = net.language_features(out, points[0])
    torch.testing.assert_close(shared[0], feats[0])
    assert net.language_features(out, torch.zeros(0, 3)).shape == (2, 0, 12)


def test_gradients_reach_every_parameter(tiny_case):
    config, images, K, cam2ego = tiny_case
    net = OccupancyNet(config)
    out = net(images, K, cam2ego)
    generator = torch.Generator().manual_seed(3)
    target = torch.randint(-1, 2, out.occupancy_logits.shape, generator=generator)
    points = torch.rand(2, 40, 3, generator=generator) * 14.0 - torch.tensor([7.0, 7.0, 1.0])
    student = net.language_features(out, points).reshape(-1, config.language_dim)
    teacher = F.normalize(torch.randn(80, config.language_dim, generator=generator), dim=-1)
    loss = occupancy_loss(out.occupancy_logits, target).total + feature_distillation_loss(student, teacher)
    loss.backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, name
        assert bool(parameter.grad.abs().sum() > 0), name


def test_camera_order_does_not_matter(tiny_case):
    config, images, K, cam2ego = tiny_case
    net = OccupancyNet(config).eval()
    order = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        out = net(images, K, cam2ego)
        permuted = net(images[:, order], K[:, order], cam2ego[:, order])
    torch.testing.assert_close(permuted.occupancy_logits, out.occupancy_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(permuted.volume, out.volume, atol=1e-5, rtol=1e-5)
    assert torch.equal(permuted.camera_count, out.camera_count)


def test_seed_determinism(tiny_case):
    config, images, K, cam2ego = tiny_case
    first, second = OccupancyNet(config), OccupancyNet(config)
    other = OccupancyNet(OccupancyNetConfig.tiny(seed=1))
    for (name, a), b, c in zip(first.state_dict().items(), second.state_dict().values(),
                               other.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, c) for a, c in zip(first.parameters(), other.parameters()))
    with torch.no_grad():
        torch.testing.assert_close(first(images, K, cam2ego).occupancy_logits,
                                   second(images, K, cam2ego).occupancy_logits, atol=0, rtol=0)
    before = torch.rand(3)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    OccupancyNet(config)
    assert torch.equal(torch.rand(3), expected) and before.shape == (3,)  # global RNG left untouched


def test_resizing_scales_intrinsics(tiny_case):
    config, images, K, cam2ego = tiny_case
    net = OccupancyNet(config).eval()
    big_size = (config.image_size[0] * 2 + 8, config.image_size[1] * 3)
    generator = torch.Generator().manual_seed(5)
    big = torch.rand(2, 4, 3, *big_size, generator=generator)
    K_big = scale_intrinsics(K, config.image_size, big_size)
    small = F.interpolate(big.reshape(-1, 3, *big_size), size=config.image_size, mode="bilinear",
                          align_corners=False, antialias=True).reshape(2, 4, 3, *config.image_size)
    with torch.no_grad():
        direct = net(small, K, cam2ego)
        resized = net(big, K_big, cam2ego)
    # The net resizes the images and maps K_big back to K: the same result as resizing outside.
    torch.testing.assert_close(resized.occupancy_logits, direct.occupancy_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(resized.volume, direct.volume, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        wrong = net(big, K, cam2ego)  # the image K without rescaling projects elsewhere
    assert not torch.allclose(wrong.volume, direct.volume, atol=1e-3)


def test_language_features_at_voxel_centres_and_dense(tiny_case):
    config, images, K, cam2ego = tiny_case
    net = OccupancyNet(config).eval()
    with torch.no_grad():
        out = net(images, K, cam2ego)
        lift = config.lifting_grid
        index = torch.tensor([[3, 7, 1], [0, 15, 3], [10, 2, 2]])
        centres = torch.as_tensor(lift.voxel_centers(), dtype=torch.float32)[index[:, 0], index[:, 1], index[:, 2]]
        sampled = net.language_features(out, centres)[1]
        values = out.volume[1][:, index[:, 0], index[:, 1], index[:, 2]].T  # [3, F']
        torch.testing.assert_close(sampled, F.normalize(net.language_head(values), dim=-1), atol=1e-5, rtol=1e-5)
        # Halfway between two centres along y: the mean of their volume values.
        midpoint = centres[:1] + torch.tensor([[0.0, 0.5 * lift.voxel_size, 0.0]])
        mean_value = 0.5 * (out.volume[1][:, 3, 7, 1] + out.volume[1][:, 3, 8, 1])
        torch.testing.assert_close(net.language_features(out, midpoint)[1, 0],
                                   F.normalize(net.language_head(mean_value), dim=-1), atol=1e-5, rtol=1e-5)

        mask = out.occupancy_logits > out.occupancy_logits.median()
        dense = net.dense_language_features(out, mask)
        where = torch.nonzero(mask)
        grid_centres = torch.as_tensor(config.output_grid.voxel_centers(), dtype=torch.float32)
        expected = torch.cat([net.language_features(out, grid_centres[tuple(where[where[:, 0] == b, 1:].T)])[b]
                              for b in range(2)])
    assert dense.shape == (int(mask.sum()), config.language_dim)
    torch.testing.assert_close(dense, expected)
    with pytest.raises(OccupancyError, match="mask"):
        net.dense_language_features(out, mask.float())
    with pytest.raises(OccupancyError, match="points_ego"):
        net.language_features(out, torch.zeros(3, 5, 3))


def test_config_validation():
    with pytest.raises(OccupancyError, match="divisible by the encoder stride"):
        OccupancyNetConfig(image_size=(100, 400))
    with pytest.raises(OccupancyError, match="image_size"):
        OccupancyNetConfig(image_size=(224,))
    with pytest.raises(OccupancyError, match="encoder_widths"):
        OccupancyNetConfig(encoder_widths=(32, 0))
    with pytest.raises(OccupancyError, match="bev_widths"):
        OccupancyNetConfig(bev_widths=())
    with pytest.raises(OccupancyError, match="feature_dim"):
        OccupancyNetConfig(feature_dim=-4)
    with pytest.raises(OccupancyError, match="language_dim"):
        OccupancyNetConfig(language_dim=0)
    with pytest.raises(OccupancyError, match="near"):
        OccupancyNetConfig(near=0.0)
    with pytest.raises(OccupancyError, match="seed"):
        OccupancyNetConfig(seed=-1)
    with pytest.raises(OccupancyError, match="bounds"):
        OccupancyNetConfig(output_grid=OccupancyGridSpec((-40.0, -40.0, -1.0), (40.0, 40.0, 6.2), 0.4))
    with pytest.raises(OccupancyError, match="integer factor"):
        OccupancyNetConfig(output_grid=OccupancyGridSpec(voxel_size=0.32))
    with pytest.raises(OccupancyError, match="divisible by 4"):
        OccupancyNetConfig(bev_widths=(32, 32, 32), lifting_grid=OccupancyGridSpec(voxel_size=1.6),
                           output_grid=OccupancyGridSpec(voxel_size=0.8))
    with pytest.raises(OccupancyError, match="lifting_grid must be an OccupancyGridSpec"):
        OccupancyNetConfig(lifting_grid=(100, 100, 8))
    with pytest.raises(OccupancyError, match="config"):
        OccupancyNet({"image_size": (64, 96)})


def test_config_dict_round_trip():
    config = OccupancyNetConfig.tiny(seed=4)
    data = config.to_dict()
    assert data["image_size"] == [64, 96] and data["output_grid"]["voxel_size"] == 0.5
    assert OccupancyNetConfig.from_dict(data) == config
    with pytest.raises(OccupancyError, match="unknown"):
        OccupancyNetConfig.from_dict({**data, "dropout": 0.1})


def test_forward_input_errors(tiny_case):
    config, images, K, cam2ego = tiny_case
    net = OccupancyNet(config)
    with pytest.raises(OccupancyError, match=r"images must be \[B, C, 3"):
        net(images[:, :, :2], K, cam2ego)
    with pytest.raises(OccupancyError, match=r"\[0, 1\]"):
        net(images * 255.0, K, cam2ego)
    with pytest.raises(OccupancyError, match="NaN"):
        net(torch.full_like(images, float("nan")), K, cam2ego)
    with pytest.raises(OccupancyError, match="K must be"):
        net(images, K[:, :3], cam2ego)
    with pytest.raises(OccupancyError, match="cam2ego must be"):
        net(images, K, cam2ego[:1])
    with pytest.raises(OccupancyError, match="output"):
        net.language_features(np.zeros(3), torch.zeros(2, 3))
