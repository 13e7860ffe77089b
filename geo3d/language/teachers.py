"""Dense 2D teachers: images in, per-patch features in a text encoder's embedding space out.

A teacher turns a camera batch into a feature map per image; distillation (POP-3D, OccFeat) then
samples the map at the pixels where LiDAR points project and trains a 3D network to reproduce the
sampled vectors. Two teachers ship with geo3d:

- :class:`geo3d.language.maskclip.MaskCLIPTeacher`: MaskCLIP-style dense CLIP features from a local
  transformers CLIP checkpoint (the real teacher);
- :class:`geo3d.language.label_teacher.LabelTeacher`: a stand-in for synthetic captures that embeds
  each pixel's ground-truth class prompt and degrades it like real dense CLIP features.

Feature grid and pixels (the one convention every teacher follows): a map ``[h, w, D]`` covers the
whole image, cell ``(i, j)`` (row, column) spanning ``stride_v`` rows and ``stride_u`` columns of
pixels. With geo3d's pixel-centre convention (``docs/conventions.md``: pixel ``(u, v)`` has its centre
at integer coordinates, the image spans ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``) the continuous cell
coordinates of pixel ``(u, v)`` are::

    x = (u + 0.5) / stride_u - 0.5        y = (v + 0.5) / stride_v - 0.5

so cell ``(i, j)`` has its centre at pixel ``((j + 0.5) stride_u - 0.5, (i + 0.5) stride_v - 0.5)``.
:func:`sample_features` interpolates bilinearly in these coordinates (PyTorch's
``grid_sample(align_corners=False)``), which is what distillation uses.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from geo3d.language.text import LanguageError


class TeacherError(LanguageError):
    """A dense-teacher or feature-cache argument is malformed: wrong image or label shapes, NaN/inf,
    empty inputs, unknown options, a missing checkpoint, or features that do not match. The message
    names the argument and the problem."""


class DenseFeatures(NamedTuple):
    """Dense teacher features of a camera batch.

    Attributes:
        features: ``[C, h, w, D]`` float32, unit-norm along ``D``; cell ``(i, j)`` is row ``i``,
            column ``j`` of the feature grid.
        stride: ``(stride_u, stride_v)`` pixels per cell along the image columns (u, x) and rows
            (v, y), floats; pixel ``(u, v)`` lies at cell coordinates
            ``((u + 0.5) / stride_u - 0.5, (v + 0.5) / stride_v - 0.5)``.
        image_size: ``(H, W)`` of the images the features were computed from, pixels.
    """

    features: Tensor
    stride: tuple[float, float]
    image_size: tuple[int, int]

    def pixel_to_cell(self, uv: Tensor) -> Tensor:
        """``[..., 2]`` pixels ``(u, v)`` -> ``[..., 2]`` continuous cell coordinates ``(x, y)``
        (column, row; cell centres at integers)."""
        stride = torch.tensor(self.stride, dtype=uv.dtype, device=uv.device)
        return (uv + 0.5) / stride - 0.5


def sample_features(dense: DenseFeatures, uv: Tensor, normalize: bool = True) -> Tensor:
    """Bilinearly sample teacher features at pixel coordinates.

    Args:
        dense: the teacher's output for ``C`` cameras.
        uv: ``[C, N, 2]`` pixel coordinates ``(u, v)`` per camera (e.g. LiDAR points projected into
            each camera), or ``[N, 2]`` when ``dense`` holds a single camera. Float.
        normalize: renormalise the interpolated vectors to unit length (a blend of unit vectors is
            shorter than 1); ``False`` returns the raw bilinear blend.

    Returns:
        ``[C, N, D]`` float32 features (``[N, D]`` for ``[N, 2]`` input). Pixels outside the feature
        grid take the features of the nearest border cells (``padding_mode="border"``): mask them
        out with the camera frustum first.
    """
    features = dense.features
    if not isinstance(features, Tensor) or features.ndim != 4:
        raise TeacherError(f"dense.features must be a [C, h, w, D] tensor, got {_describe(features)}")
    if not isinstance(uv, Tensor) or uv.shape[-1:] != (2,) or uv.ndim not in (2, 3):
        raise TeacherError(f"uv must be a [C, N, 2] or [N, 2] tensor of pixels, got {_describe(uv)}")
    single = uv.ndim == 2
    if single:
        if features.shape[0] != 1:
            raise TeacherError(f"uv is [N, 2] but dense holds {features.shape[0]} cameras: pass uv as [C, N, 2]")
        uv = uv[None]
    if uv.shape[0] != features.shape[0]:
        raise TeacherError(f"uv has {uv.shape[0]} cameras but dense.features has {features.shape[0]}")
    if not uv.is_floating_point():
        uv = uv.float()
    if not bool(torch.isfinite(uv).all()):
        raise TeacherError("uv contains NaN or inf pixel coordinates")
    num_cams, height, width, dim = features.shape
    if uv.shape[1] == 0:
        out = features.new_zeros(num_cams, 0, dim)
        return out[0] if single else out
    cells = dense.pixel_to_cell(uv.to(features.device, torch.float32))
    size = torch.tensor([width, height], dtype=cells.dtype, device=cells.device)
    grid = (2.0 * cells + 1.0) / size - 1.0  # align_corners=False: cell centres at (2i + 1) / n - 1
    sampled = torch.nn.functional.grid_sample(
        features.permute(0, 3, 1, 2).float(), grid[:, :, None, :], mode="bilinear",
        padding_mode="border", align_corners=False,
    )[..., 0].transpose(1, 2)
    if normalize:
        sampled = torch.nn.functional.normalize(sampled, dim=-1)
    return sampled[0] if single else sampled


class DenseTeacher(abc.ABC):
    """A dense 2D teacher: a camera batch in, a :class:`DenseFeatures` map per image out.

    Subclasses implement :meth:`_check_inputs` (turns the user's input into a tensor and validates
    it), :meth:`_grid` (feature grid size and stride for an image size) and :meth:`_compute` (one
    batch of at most :attr:`batch_size` images -> ``[B, h, w, D]``). ``__call__`` validates, splits
    the cameras into batches and concatenates, so results do not depend on ``batch_size``.

    Attributes:
        batch_size: images per forward pass.
    """

    batch_size: int = 8

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Feature dimension ``D``."""

    @property
    @abc.abstractmethod
    def space(self) -> str:
        """Identity of the embedding space; equals the ``space`` of the text encoder whose queries
        make sense against these features."""

    @property
    @abc.abstractmethod
    def identity(self) -> str:
        """Everything that determines the features (teacher type, checkpoint, config hash,
        resolution, degradation parameters): the key of :class:`geo3d.language.cache.FeatureCache`."""

    @abc.abstractmethod
    def _check_inputs(self, images) -> Tensor:
        """Validate the input batch; return it as a tensor with cameras first."""

    @abc.abstractmethod
    def _grid(self, height: int, width: int) -> tuple[tuple[int, int], tuple[float, float]]:
        """``((h, w), (stride_u, stride_v))`` of the feature map of an ``height x width`` image."""

    @abc.abstractmethod
    def _compute(self, batch: Tensor) -> Tensor:
        """``[B, ...]`` inputs -> ``[B, h, w, D]`` float32 unit-norm features."""

    def __call__(self, images) -> DenseFeatures:
        """Dense features of a camera batch.

        Args:
            images: ``[C, H, W, ...]`` camera batch (see the subclass for the dtype and channels).

        Returns:
            :class:`DenseFeatures` with ``features [C, h, w, D]``.
        """
        batch = self._check_inputs(images)
        height, width = int(batch.shape[1]), int(batch.shape[2])
        (grid_h, grid_w), stride = self._grid(height, width)
        outputs = []
        with torch.inference_mode():
            for start in range(0, batch.shape[0], self.batch_size):
                out = self._compute(batch[start:start + self.batch_size])
                if out.shape[1:3] != (grid_h, grid_w):  # pragma: no cover - a subclass bug
                    raise RuntimeError(f"teacher produced a {tuple(out.shape[1:3])} grid, expected {(grid_h, grid_w)}")
                outputs.append(out.float())
        features = torch.cat(outputs).clone()  # leave inference mode: callers may use them in autograd
        return DenseFeatures(features, (float(stride[0]), float(stride[1])), (height, width))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity})"


def check_batch_size(batch_size) -> int:
    """Validate a ``batch_size`` argument (a positive int)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise TeacherError(f"batch_size must be a positive int, got {batch_size!r}")
    return int(batch_size)


def as_image_batch(images, name: str = "images") -> Tensor:
    """Validate a camera batch of RGB(A) images and return it as ``[C, H, W, 3]`` float32 in [0, 1].

    Args:
        images: ``[C, H, W, 3|4]`` NumPy array or tensor, uint8 (0..255) or float in [0, 1]; an
            alpha channel is dropped.
        name: argument name for error messages.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, Tensor):
        raise TeacherError(f"{name} must be a [C, H, W, 3] array or tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[-1] not in (3, 4):
        raise TeacherError(f"{name} must be [C, H, W, 3] (a camera batch of RGB images), got {list(images.shape)}")
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise TeacherError(f"{name} is empty: {list(images.shape)}")
    images = images[..., :3]
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise TeacherError(f"{name} must be uint8 or float in [0, 1], got {images.dtype}")
    images = images.float()
    if not bool(torch.isfinite(images).all()):
        raise TeacherError(f"{name} contains NaN or inf")
    if float(images.min()) < 0.0 or float(images.max()) > 1.0:
        raise TeacherError(
            f"{name} must be float in [0, 1] (or uint8), got values in "
            f"[{float(images.min()):.3g}, {float(images.max()):.3g}]"
        )
    return images


def _describe(value) -> str:
    if isinstance(value, (Tensor, np.ndarray)):
        return f"{type(value).__name__}{list(value.shape)}"
    return type(value).__name__


def check_text_encoder(encoder, name: str = "text_encoder") -> None:
    """Check that ``encoder`` looks like a :class:`geo3d.language.text.TextEncoder` (``encode``,
    ``dim``, ``space``)."""
    for attr in ("encode", "dim", "space"):
        if not hasattr(encoder, attr):
            raise TeacherError(f"{name} must be a text encoder with encode(), dim and space; it has no {attr!r}")
    if not isinstance(encoder.space, str) or not encoder.space:
        raise TeacherError(f"{name}.space must be a non-empty string, got {encoder.space!r}")


def check_names(names: Sequence[str], name: str) -> tuple[str, ...]:
    """Validate a non-empty sequence of non-empty strings."""
    if isinstance(names, str) or not isinstance(names, Sequence) or len(names) == 0:
        raise TeacherError(f"{name} must be a non-empty sequence of strings, got {names!r}")
    for i, item in enumerate(names):
        if not isinstance(item, str) or not item.strip():
            raise TeacherError(f"{name}[{i}] must be a non-empty string, got {item!r}")
    return tuple(names)
