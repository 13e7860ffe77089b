"""Tests of geo3d.nerf.metrics: PSNR against NumPy, SSIM against scikit-image, LPIPS availability."""

from __future__ import annotations

import importlib.util
import math
import sys
import types

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from geo3d.errors import MissingDependencyError
from geo3d.nerf import metrics
from geo3d.nerf.metrics import ImageMetrics, image_metrics, lpips, lpips_available, psnr, ssim

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny convolutions; spinning threads stall under load


def _pair(seed: int, shape=(40, 52, 3), noise=0.08, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=gen, dtype=torch.float64)
    pred = (target + noise * torch.randn(shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    return pred.to(dtype), target.to(dtype)


def _structured(height=48, width=64):
    """A smooth gradient plus stripes and a bright square, and a blurred, shifted, darkened copy."""
    v, u = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    base = np.stack([u / width, v / height, 0.5 + 0.4 * np.sin(u / 3.0) * np.cos(v / 5.0)], -1)
    base[10:25, 20:40] = [0.95, 0.9, 0.1]
    other = 0.85 * np.roll(base, shift=(1, 2), axis=(0, 1))
    other = 0.5 * (other + np.roll(other, 1, axis=1))
    return torch.from_numpy(other), torch.from_numpy(base)


def _skimage_ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(structural_similarity(pred.double().numpy(), target.double().numpy(), channel_axis=-1,
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                       data_range=1.0))


# ----------------------------------------------------------------------------------------------- PSNR


def test_psnr_matches_numpy_and_known_case():
    pred, target = _pair(0)
    mse = np.mean((pred.numpy() - target.numpy()) ** 2)
    assert float(psnr(pred, target)) == pytest.approx(10 * np.log10(1.0 / mse), abs=1e-9)
    assert float(psnr(2 * pred, 2 * target, max_value=2.0)) == pytest.approx(10 * np.log10(1.0 / mse), abs=1e-9)
    target = torch.full((8, 6, 3), 0.5)
    assert float(psnr(target + 0.1, target)) == pytest.approx(20.0, abs=1e-4)  # MSE 0.01 -> 20 dB
    rays = torch.rand(100, 3, generator=torch.Generator().manual_seed(1))
    assert float(psnr(rays, rays)) == math.inf
    assert psnr(rays.float(), rays.float() * 0.9).ndim == 0


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((torch.zeros(4, 4, 3), torch.zeros(4, 5, 3)), "same shape"),
        ((torch.full((4, 4, 3), math.nan), torch.zeros(4, 4, 3)), "pred"),
        ((torch.zeros(4, 4, 3), torch.full((4, 4, 3), math.inf)), "target"),
        ((np.zeros((4, 4, 3)), torch.zeros(4, 4, 3)), "pred"),
        ((torch.zeros(4, 4, 3, dtype=torch.uint8), torch.zeros(4, 4, 3)), "pred"),
        ((torch.zeros(0, 3), torch.zeros(0, 3)), "pred"),
    ],
)
def test_psnr_rejects_bad_inputs(args, name):
    with pytest.raises(ValueError, match=name):
        psnr(*args)


def test_psnr_rejects_bad_max_value():
    with pytest.raises(ValueError, match="max_value"):
        psnr(torch.zeros(3), torch.ones(3), max_value=0.0)


# ----------------------------------------------------------------------------------------------- SSIM


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_matches_skimage_on_random_images(seed):
    # Same window, constants, population covariances and averaging region (skimage crops 5 px per side
    # after reflect-padded filtering = kornia's "valid" positions), so float64 agrees to rounding.
    pred, target = _pair(seed, noise=0.05 + 0.1 * seed)
    assert float(ssim(pred, target)) == pytest.approx(_skimage_ssim(pred, target), abs=1e-10)
    # float32 filtering: measured differences ~1e-7; 1e-5 leaves room for other BLAS/oneDNN paths
    assert float(ssim(pred.float(), target.float())) == pytest.approx(_skimage_ssim(pred, target), abs=1e-5)


def test_ssim_matches_skimage_on_structured_images():
    pred, target = _structured()
    expected = _skimage_ssim(pred, target)
    assert 0.2 < expected < 0.95  # a non-trivial case
    assert float(ssim(pred, target)) == pytest.approx(expected, abs=1e-10)
    assert float(ssim(pred.float(), target.float())) == pytest.approx(expected, abs=1e-5)


def test_ssim_of_identical_images_is_one():
    _, target = _pair(3)
    assert float(ssim(target, target)) == pytest.approx(1.0, abs=1e-12)
    flat = torch.zeros(16, 16, 3)  # eps=0: a black image still scores exactly 1 (C1, C2 > 0)
    assert float(ssim(flat, flat)) == pytest.approx(1.0, abs=1e-6)


def test_ssim_rejects_bad_inputs():
    pred, target = _pair(0)
    with pytest.raises(ValueError, match="smaller than the 11-pixel"):
        ssim(pred[:8], target[:8])
    with pytest.raises(ValueError, match="window"):
        ssim(pred, target, window=10)
    with pytest.raises(ValueError, match="sigma"):
        ssim(pred, target, sigma=2.0)
    with pytest.raises(ValueError, match=r"pred must have shape \[H, W, C\]"):
        ssim(pred[0], target[0])
    with pytest.raises(ValueError, match="pred and target"):
        ssim(pred, target[:, :-1])


# ---------------------------------------------------------------------------------------------- LPIPS


def test_lpips_unavailable_here_names_the_missing_package():
    available, reason = lpips_available()
    assert isinstance(available, bool) and isinstance(reason, str) and reason
    if importlib.util.find_spec("lpips") is None:  # this project's CPU set-up (no lpips, no torchvision)
        assert not available and "lpips" in reason
        with pytest.raises(ImportError, match="pip install lpips"):
            lpips(*_pair(0, dtype=torch.float32))


def _fake_install(monkeypatch, tmp_path, missing=(), weights=("alex",), backbone=False):
    """Pretend lpips / torchvision are installed (a fake package dir and torch hub dir under tmp_path)."""
    package = tmp_path / "site" / "lpips"
    (package / "weights" / "v0.1").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for net in weights:
        (package / "weights" / "v0.1" / f"{net}.pth").write_bytes(b"")
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    if backbone:
        (hub / "checkpoints" / "alexnet-owt-7be5be79.pth").write_bytes(b"")
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        if name in missing:
            return None
        if name in ("lpips", "torchvision"):
            return importlib.machinery.ModuleSpec(name, None, origin=str(package / "__init__.py"))
        return real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr(metrics, "_LPIPS_MODELS", {})


def test_lpips_missing_torchvision_raises_import_error(monkeypatch, tmp_path):
    _fake_install(monkeypatch, tmp_path, missing=("torchvision",))
    available, reason = lpips_available()
    assert not available and "torchvision" in reason and "lpips and" not in reason
    with pytest.raises(MissingDependencyError, match="torchvision"):
        lpips(*_pair(0, dtype=torch.float32))


def test_lpips_missing_weights_raises_runtime_error(monkeypatch, tmp_path):
    _fake_install(monkeypatch, tmp_path)
    available, reason = lpips_available()
    assert not available and "alexnet-owt-7be5be79.pth" in reason and str(tmp_path / "hub") in reason
    with pytest.raises(RuntimeError, match="alexnet-owt-7be5be79.pth"):
        lpips(*_pair(0, dtype=torch.float32))
    available, reason = lpips_available("vgg")  # lpips' own linear weights for vgg are absent
    assert not available and "vgg.pth" in reason
    with pytest.raises(ValueError, match="net"):
        lpips_available("resnet")


def test_lpips_runs_the_model_when_everything_is_there(monkeypatch, tmp_path):
    _fake_install(monkeypatch, tmp_path, backbone=True)
    assert lpips_available()[0]
    calls = []

    class FakeLPIPS(torch.nn.Module):  # stands in for lpips.LPIPS: checks the layout it is given
        def __init__(self, net, version, verbose):
            super().__init__()
            calls.append((net, version, verbose))

        def forward(self, in0, in1, normalize=False):
            assert normalize and in0.shape[1:] == (3, 20, 24) and in0.dtype == torch.float32
            return (in0 - in1).abs().mean(dim=(1, 2, 3), keepdim=True)

    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=FakeLPIPS))
    pred, target = _pair(0, shape=(2, 20, 24, 3), dtype=torch.float32)
    value = lpips(pred, target)
    assert float(value) == pytest.approx(float((pred - target).abs().mean()), rel=1e-5)
    lpips(pred[0], target[0])  # [H, W, 3] too; the model is built once
    assert calls == [("alex", "0.1", False)]
    result = image_metrics(pred[0], target[0])  # with_lpips=None: used because available
    assert result.lpips is not None


# -------------------------------------------------------------------------------------------- summary


def test_image_metrics():
    pred, target = _pair(4, dtype=torch.float32)
    result = image_metrics(pred, target, with_lpips=False)
    assert isinstance(result, ImageMetrics) and result.lpips is None
    assert result.psnr == pytest.approx(float(psnr(pred, target)))
    assert result.ssim == pytest.approx(float(ssim(pred, target)))
    assert set(result.as_dict()) == {"psnr", "ssim", "lpips"}
    if not lpips_available()[0]:
        assert image_metrics(pred, target).lpips is None
        with pytest.raises(ImportError):
            image_metrics(pred, target, with_lpips=True)
