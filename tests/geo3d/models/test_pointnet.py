"""PointNet: permutation invariance / equivariance, padded batches, the fused pooled layer against
its plain reference (values and gradients), the orthogonality regulariser against NumPy, bad inputs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from geo3d.errors import PointCloudError
from geo3d.models import (
    MaxPooledPointLayer,
    PointNetClassifier,
    PointNetEncoder,
    PointNetSegmenter,
    TransformNet,
    max_pooled_point_layer_reference,
    orthogonality_regularizer,
)
from geo3d.models.pointnet import point_layout

# tiny models: one torch thread is as fast as two and does not stall beside other jobs
pytestmark = pytest.mark.usefixtures("one_torch_thread")




def _trained_like(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BatchNorm statistics and affine parameters (some negative scales), and non-zero T-Net
    outputs, so that eval mode is not a near-identity and the max/min branches are both exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=generator))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=generator))
            if isinstance(m, TransformNet):
                m.out.weight.copy_(0.05 * torch.randn(m.out.weight.shape, generator=generator))
    return module


def _clouds(batch: int, points: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, points, channels, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("training", [False, True])
def test_global_feature_is_invariant_to_point_order(training):
    """Exact up to rounding: in train mode BatchNorm's sums run in another order, so use float64."""
    torch.manual_seed(0)
    dtype = torch.float64 if training else torch.float32
    encoder = _trained_like(PointNetEncoder(width=16)).to(dtype).train(training)
    points = _clouds(4, 50).to(dtype)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        perm = torch.stack([torch.randperm(50, generator=generator) for _ in range(4)])
        permuted = torch.gather(points, 1, perm[:, :, None].expand(-1, -1, 3))
        a = encoder(points).global_feature
        b = encoder(permuted).global_feature
        assert a.shape == (4, 256)
        tolerance = 1e-10 if training else 1e-6
        torch.testing.assert_close(a, b, rtol=tolerance, atol=tolerance)


def test_segmentation_is_permutation_equivariant_and_shaped():
    torch.manual_seed(0)
    model = _trained_like(PointNetSegmenter(5, width=16)).eval()
    points = _clouds(3, 40)
    perm = torch.randperm(40)
    logits = model(points)
    assert logits.shape == (3, 40, 5)
    torch.testing.assert_close(model(points[:, perm]), logits[:, perm], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_cls", [PointNetClassifier, PointNetSegmenter])
def test_padded_batch_equals_clouds_one_by_one(model_cls):
    torch.manual_seed(0)
    model = _trained_like(model_cls(4, in_channels=6, width=16)).eval()
    lengths = torch.tensor([30, 7, 18])
    padded = _clouds(3, 30, 6)
    padded[1, 7:] = 1e6  # padding is ignored whatever it holds...
    padded[2, 18:] = float("nan")  # ...even NaN
    out = model(padded, lengths)
    for b, n in enumerate(lengths.tolist()):
        alone = model(padded[b : b + 1, :n])
        if model_cls is PointNetClassifier:
            torch.testing.assert_close(out[b : b + 1], alone, rtol=1e-5, atol=1e-5)
        else:
            torch.testing.assert_close(out[b : b + 1, :n], alone, rtol=1e-5, atol=1e-5)
            assert (out[b, n:] == 0).all()


def test_padded_training_batch_uses_only_valid_points_for_batchnorm():
    """In train mode BatchNorm statistics of a padded batch equal those of the packed valid points."""
    torch.manual_seed(0)
    encoder = PointNetEncoder(width=8, input_transform=False, feature_transform=False).train()
    lengths = torch.tensor([5, 9])
    padded = _clouds(2, 9)
    twin = copy.deepcopy(encoder)
    a = encoder(padded, lengths).global_feature
    # the same valid points in a padded batch whose padding is different
    other = padded.clone()
    other[0, 5:] = 100.0
    b = twin(other, lengths).global_feature
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(encoder.pool.norm.running_mean, twin.pool.norm.running_mean)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("lengths", [None, [6, 11, 2]])
def test_fused_pooled_layer_matches_reference_values_and_gradients(training, lengths):
    torch.manual_seed(0)
    lengths = None if lengths is None else torch.tensor(lengths)
    x = torch.randn(3, 11, 5, dtype=torch.float64)
    layout = point_layout(x, lengths, 5)
    fused = _trained_like(MaxPooledPointLayer(5, 7).double()).train(training)
    plain = copy.deepcopy(fused)
    plain.fused = False
    xa = layout.pack(x).clone().requires_grad_()
    xb = xa.detach().clone().requires_grad_()
    ya, yb = fused(xa, layout), plain(xb, layout)
    torch.testing.assert_close(ya, yb, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(ya)
    params_a = [xa, fused.linear.weight, fused.norm.weight, fused.norm.bias]
    params_b = [xb, plain.linear.weight, plain.norm.weight, plain.norm.bias]
    for ga, gb in zip(torch.autograd.grad(ya, params_a, grad), torch.autograd.grad(yb, params_b, grad)):
        torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(fused.norm, name), getattr(plain.norm, name))
    assert torch.equal(max_pooled_point_layer_reference(plain, xb, layout), yb)


def test_fused_pooled_layer_passes_gradcheck():
    torch.manual_seed(0)
    layer = _trained_like(MaxPooledPointLayer(4, 6).double()).train()
    x = torch.randn(2, 9, 4, dtype=torch.float64)
    layout = point_layout(x, torch.tensor([9, 5]), 4)
    packed = layout.pack(x).requires_grad_()

    def run(xp, w, g, b):
        params = {"linear.weight": w, "norm.weight": g, "norm.bias": b}
        return torch.func.functional_call(layer, params, (xp, layout))

    originals = (layer.linear.weight, layer.norm.weight, layer.norm.bias)
    params = [p.detach().clone().requires_grad_() for p in originals]
    assert torch.autograd.gradcheck(lambda *a: run(*a), (packed, *params), eps=1e-6, atol=1e-6)


def test_transforms_start_at_identity_and_models_have_the_paper_sizes():
    model = PointNetClassifier(40)
    points = _clouds(2, 64)
    logits, features = model.forward_with_features(points)
    assert logits.shape == (2, 40)
    assert features.global_feature.shape == (2, 1024) and features.point_features.shape == (2, 64, 64)
    torch.testing.assert_close(features.input_transform, torch.eye(3).expand(2, 3, 3))
    torch.testing.assert_close(features.feature_transform, torch.eye(64).expand(2, 64, 64))
    # the paper's classification network: about 3.5 M parameters
    assert 3.4e6 < sum(p.numel() for p in model.parameters()) < 3.6e6
    vanilla = PointNetEncoder(input_transform=False, feature_transform=False)(points)
    assert vanilla.input_transform is None and vanilla.feature_transform is None
    assert PointNetSegmenter(13)(points).shape == (2, 64, 13)


def test_orthogonality_regularizer_matches_numpy_and_vanishes_for_rotations():
    rng = np.random.default_rng(0)
    matrices = rng.normal(size=(5, 4, 4))
    expected = np.mean([np.sum((np.eye(4) - a @ a.T) ** 2) for a in matrices])
    got = orthogonality_regularizer(torch.from_numpy(matrices))
    assert abs(float(got) - expected) < 1e-9 * expected
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rotation = q * np.sign(np.linalg.det(q))
    assert float(orthogonality_regularizer(torch.from_numpy(rotation[None]))) < 1e-12
    with pytest.raises(ValueError, match="square"):
        orthogonality_regularizer(torch.zeros(2, 3, 4))


def test_bad_inputs_raise_clear_errors():
    model = PointNetClassifier(3, width=8).eval()
    with pytest.raises(PointCloudError, match=r"\[B, N, C\]"):
        model(torch.zeros(10, 3))
    with pytest.raises(PointCloudError, match="expected 3 channels"):
        model(torch.zeros(1, 10, 4))
    bad = torch.zeros(2, 10, 3)
    bad[1, 4, 2] = float("nan")
    with pytest.raises(PointCloudError, match="NaN or inf.*cloud 1, point 4"):
        model(bad)
    with pytest.raises(PointCloudError, match="lengths must lie in"):
        model(torch.zeros(2, 10, 3), torch.tensor([10, 0]))
    with pytest.raises(PointCloudError, match="lengths must be"):
        model(torch.zeros(2, 10, 3), torch.tensor([1.0, 2.0]))
    with pytest.raises(PointCloudError, match="floating-point"):
        model(torch.zeros(1, 10, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="num_classes"):
        PointNetClassifier(1)
