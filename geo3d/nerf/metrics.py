"""Image-quality metrics of novel-view synthesis: PSNR, SSIM and (when available offline) LPIPS.

Images follow ``docs/conventions.md``: ``[H, W, 3]`` float RGB in ``[0, max_value]`` (``[0, 1]`` by
default), channels last. Every metric compares a rendered ``pred`` with a ground-truth ``target`` of
the same shape and returns a 0-dim tensor (higher is better for PSNR and SSIM, lower for LPIPS).

- :func:`psnr`: ``10 log10(max_value^2 / MSE)`` in dB, the MSE taken over all elements (pixels and
  channels) at once, as NeRF and its successors report it (``inf`` for identical images).
- :func:`ssim`: mean SSIM with an 11-tap Gaussian window of sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``,
  population (not sample) covariances and only the *valid* window positions (no padding), computed by
  ``kornia.metrics.ssim(padding="valid")``. This is the SSIM of the NeRF / mip-NeRF evaluation code and
  of ``skimage.metrics.structural_similarity(channel_axis=-1, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1.0)``: scikit-image filters with reflected borders and then
  crops ``(11 - 1) // 2 = 5`` pixels per side before averaging, which leaves exactly the valid window
  positions, so the two agree to float rounding (tests/geo3d/nerf/test_metrics.py).
- :func:`lpips`: the learned perceptual metric of Zhang et al. 2018 through the ``lpips`` package. It
  needs ``lpips`` (not a geo3d extra: ``pip install lpips``), ``torchvision`` (no CPU build matches this
  project's torch, docs/setup.md) and the ImageNet backbone weights of torchvision already in the
  torch hub cache (``<torch.hub.get_dir()>/checkpoints/alexnet-owt-7be5be79.pth`` for ``net="alex"``).
  Nothing is ever downloaded: :func:`lpips_available` says what is missing, :func:`lpips` raises.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from geo3d.errors import MissingDependencyError

LPIPS_BACKBONE_WEIGHTS = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
"""LPIPS network name -> file name of torchvision's ImageNet weights in ``<torch hub dir>/checkpoints``."""

LPIPS_VERSION = "0.1"
_LPIPS_MODELS: dict[tuple[str, str], torch.nn.Module] = {}  # (net, device) -> loaded model


def _check_pair(pred: Tensor, target: Tensor) -> None:
    """Raise ValueError (naming the argument) unless both are non-empty finite float tensors of one shape."""
    for name, value in (("pred", pred), ("target", target)):
        if not isinstance(value, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise ValueError(f"{name} must be a floating-point image, got dtype {value.dtype}")
        if value.numel() == 0:
            raise ValueError(f"{name} is empty (shape {list(value.shape)})")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got pred {list(pred.shape)} "
                         f"and target {list(target.shape)}")
    for name, value in (("pred", pred), ("target", target)):
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} holds {int((~torch.isfinite(value)).sum())} NaN/inf values")


def _check_max_value(max_value: float) -> float:
    value = float(max_value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"max_value must be finite and > 0, got {max_value!r}")
    return value


def _check_image(pred: Tensor, name: str = "pred") -> None:
    if pred.ndim != 3:
        raise ValueError(f"{name} must have shape [H, W, C] (channels last), got {list(pred.shape)}")


def psnr(pred: Tensor, target: Tensor, max_value: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB: ``10 log10(max_value^2 / mean((pred - target)^2))``.

    Args:
        pred: ``[..., 3]`` (e.g. ``[H, W, 3]`` or ``[R, 3]`` rays) rendered colours in ``[0, max_value]``.
        target: ground truth of the same shape.
        max_value: the peak value of the images (1.0 for ``[0, 1]`` images).

    Returns:
        0-dim tensor (dtype of the inputs, differentiable): ``inf`` when the images are identical.

    Raises:
        ValueError: a non-tensor, non-float, empty or non-finite argument, different shapes, or a
            ``max_value`` that is not finite and > 0; the message names the argument.
    """
    _check_pair(pred, target)
    peak = _check_max_value(max_value)
    mse = torch.mean((pred - target) ** 2)
    return 10.0 * torch.log10(peak**2 / mse)


def ssim(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5, max_value: float = 1.0) -> Tensor:
    """Mean structural similarity over the valid window positions (``kornia.metrics.ssim``).

    Gaussian window of ``window`` taps and standard deviation ``sigma`` (pixels), ``C1 = (0.01 L)^2``,
    ``C2 = (0.03 L)^2`` with ``L = max_value``, population covariances, averaged over every channel and
    every window position that lies fully inside the image (``H - window + 1`` by ``W - window + 1``).

    Args:
        pred: ``[H, W, C]`` rendered image (C = 3 for RGB) in ``[0, max_value]``; ``H, W >= window``.
        target: ``[H, W, C]`` ground truth.
        window: odd number of taps of the Gaussian window (11 in the NeRF papers).
        sigma: the window's standard deviation in pixels; kornia fixes it to 1.5, so only 1.5 is accepted.
        max_value: data range ``L`` of the images.

    Returns:
        0-dim tensor in ``[-1, 1]`` (1 for identical images), dtype of the inputs.

    Raises:
        ValueError: bad shapes or values (see :func:`psnr`), an image smaller than the window, an even
            or non-positive ``window``, or ``sigma != 1.5``.
    """
    _check_pair(pred, target)
    _check_image(pred)
    peak = _check_max_value(max_value)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd int, got {window!r}")
    if float(sigma) != 1.5:
        raise ValueError(f"sigma must be 1.5 (kornia.metrics.ssim's fixed Gaussian), got {sigma!r}")
    height, width = pred.shape[:2]
    if min(height, width) < window:
        raise ValueError(f"pred is {height}x{width} pixels, smaller than the {window}-pixel SSIM window")
    from kornia.metrics import ssim as kornia_ssim

    to_bchw = lambda image: image.permute(2, 0, 1)[None]  # noqa: E731
    ssim_map = kornia_ssim(to_bchw(pred), to_bchw(target), window, max_val=peak, eps=0.0, padding="valid")
    return ssim_map.mean()


# ---------------------------------------------------------------------------------------------- LPIPS


def _check_net(net: str) -> None:
    if net not in LPIPS_BACKBONE_WEIGHTS:
        raise ValueError(f"net must be one of {sorted(LPIPS_BACKBONE_WEIGHTS)}, got {net!r}")


def _lpips_status(net: str) -> tuple[str, str]:
    """``(kind, reason)``: kind is ``"ok"``, ``"package"`` (a package is missing) or ``"weights"``."""
    _check_net(net)
    missing = [name for name in ("lpips", "torchvision") if importlib.util.find_spec(name) is None]
    if missing:
        return "package", (f"package(s) {' and '.join(missing)} not installed: LPIPS needs `pip install lpips` "
                           "(not a geo3d extra) and a torchvision build matching this torch (there is no CPU "
                           "torchvision for every torch, docs/setup.md)")
    spec = importlib.util.find_spec("lpips")
    package_dir = Path(spec.origin).parent if spec is not None and spec.origin else None
    linear = None if package_dir is None else package_dir / "weights" / f"v{LPIPS_VERSION}" / f"{net}.pth"
    if linear is None or not linear.is_file():
        return "weights", f"the lpips package has no linear-layer weights for net={net!r} (expected {linear})"
    backbone = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE_WEIGHTS[net]
    if not backbone.is_file():
        return "weights", (f"torchvision's ImageNet weights for the LPIPS backbone net={net!r} are not in the torch "
                           f"hub cache (expected {backbone}); geo3d never downloads them: copy the file there")
    return "ok", f"lpips, torchvision and the {net} weights ({backbone}) are available"


def lpips_available(net: str = "alex") -> tuple[bool, str]:
    """Whether :func:`lpips` can run offline with ``net``, and why (or why not).

    Checks, without importing either package or touching the network, that ``lpips`` and
    ``torchvision`` are installed (``importlib.util.find_spec``), that the lpips package ships its
    linear-layer weights ``weights/v0.1/<net>.pth``, and that torchvision's backbone weights
    (:data:`LPIPS_BACKBONE_WEIGHTS`) are already in ``<torch.hub.get_dir()>/checkpoints``.

    Args:
        net: ``"alex"`` (the NeRF papers' choice), ``"vgg"`` or ``"squeeze"``.

    Returns:
        ``(available, reason)``; the reason names the missing package or weights file.
    """
    kind, reason = _lpips_status(net)
    return kind == "ok", reason


def _lpips_model(net: str, device: torch.device) -> torch.nn.Module:
    key = (net, str(device))
    if key not in _LPIPS_MODELS:
        kind, reason = _lpips_status(net)
        if kind == "package":
            raise MissingDependencyError(f"LPIPS is unavailable: {reason}")
        if kind == "weights":
            raise RuntimeError(f"LPIPS is unavailable: {reason}")
        try:
            import lpips as lpips_package
        except ImportError as exc:  # e.g. a torchvision built for another torch
            raise MissingDependencyError(f"LPIPS is unavailable: importing lpips failed: {exc}") from exc
        model = lpips_package.LPIPS(net=net, version=LPIPS_VERSION, verbose=False)
        _LPIPS_MODELS[key] = model.eval().requires_grad_(False).to(device)
    return _LPIPS_MODELS[key]


def lpips(pred: Tensor, target: Tensor, net: str = "alex") -> Tensor:
    """LPIPS distance (v0.1) between images in ``[0, 1]``; 0 for identical images, lower is better.

    Args:
        pred: ``[H, W, 3]`` or ``[B, H, W, 3]`` rendered images in ``[0, 1]`` (scaled to ``[-1, 1]``
            for the network).
        target: ground truth of the same shape.
        net: backbone, ``"alex"`` (default, as reported by NeRF papers), ``"vgg"`` or ``"squeeze"``.

    Returns:
        0-dim tensor: the LPIPS distance averaged over the batch (no gradient).

    Raises:
        MissingDependencyError: (an ImportError) ``lpips`` or ``torchvision`` is not installed.
        RuntimeError: the lpips linear weights or torchvision's backbone weights are not on disk
            (the message names the expected file; nothing is downloaded).
        ValueError: bad shapes or values, or an unknown ``net``.
    """
    _check_net(net)
    _check_pair(pred, target)
    if pred.ndim not in (3, 4) or pred.shape[-1] != 3:
        raise ValueError(f"pred must have shape [H, W, 3] or [B, H, W, 3], got {list(pred.shape)}")
    model = _lpips_model(net, pred.device)
    to_bchw = lambda image: (image if image.ndim == 4 else image[None]).permute(0, 3, 1, 2).float()  # noqa: E731
    with torch.no_grad():
        return model(to_bchw(pred), to_bchw(target), normalize=True).mean()


# -------------------------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class ImageMetrics:
    """Metrics of one rendered image against its ground truth.

    Attributes:
        psnr: dB (``inf`` for identical images).
        ssim: mean SSIM in ``[-1, 1]``.
        lpips: LPIPS (AlexNet) distance, or None when not computed or unavailable.
    """

    psnr: float
    ssim: float
    lpips: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        """``{"psnr": ..., "ssim": ..., "lpips": ...}``."""
        return asdict(self)


def image_metrics(pred: Tensor, target: Tensor, with_lpips: bool | None = None) -> ImageMetrics:
    """PSNR, SSIM and optionally LPIPS of ``pred`` ``[H, W, 3]`` against ``target`` ``[H, W, 3]`` in ``[0, 1]``.

    Args:
        pred, target: see :func:`ssim` (``H, W >= 11``).
        with_lpips: True: compute LPIPS (raise when unavailable); False: skip it; None: compute it
            when :func:`lpips_available` says so, else leave it None.

    Returns:
        :class:`ImageMetrics` of Python floats.
    """
    _check_pair(pred, target)
    _check_image(pred)
    use_lpips = lpips_available()[0] if with_lpips is None else bool(with_lpips)
    return ImageMetrics(
        psnr=float(psnr(pred, target)),
        ssim=float(ssim(pred, target)),
        lpips=float(lpips(pred, target)) if use_lpips else None,
    )
