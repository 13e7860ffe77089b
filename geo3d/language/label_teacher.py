"""A label teacher for synthetic captures: class-prompt embeddings degraded like dense CLIP features.

Synthetic captures have exact per-pixel class labels but no real image statistics a CLIP model would
recognise, so distilling MaskCLIP on them teaches nothing. :class:`LabelTeacher` is a **stand-in**
for a real dense teacher on such data: per pixel it takes the text embedding of the pixel's class
prompt, then degrades it the way real dense CLIP features are degraded, so that a student cannot
read the labels back perfectly:

1. **patch resolution**: the image is cut into ``patch_size x patch_size`` patches (the last row /
   column of patches may be partial); a patch gets the embedding of its majority label
   (``pooling="majority"``, ties to the smaller id) or the pixel-fraction-weighted mean of its
   labels' embeddings (``pooling="mixed"``, renormalised);
2. **confusions**: a fraction ``confusion_rate`` of the patches (each independently) gets the
   embedding of another class, drawn uniformly among the other ``K - 1``, like MaskCLIP's patch-level
   misclassifications;
3. **blur**: a separable Gaussian over the patch grid (``blur_sigma`` in patches, replicated border),
   mixing features across class boundaries as the coarse attention of real features does;
4. **noise**: additive isotropic Gaussian noise whose expected norm is ``noise_std`` (per component
   ``noise_std / sqrt(D)``), then every feature is renormalised to unit length.

Randomness is deterministic: each image draws from a generator seeded with ``seed`` and a hash of
the image's labels, so a frame gives the same features whatever its batch or call order.

Label 0 ("free": sky or no hit in rendered labels, ``geo3d.synthetic.classes``) gets the embedding of
``free_prompt`` (default ``"sky"``): in a real camera image those pixels show sky or far background,
which a real CLIP teacher embeds as such, not as a neutral zero vector.

This teacher says nothing about how well a real teacher works: numbers obtained with it measure the
3D pipeline's ability to lift and distil 2D features, not open-vocabulary recognition.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from geo3d.language.teachers import DenseTeacher, TeacherError, check_batch_size, check_names, check_text_encoder


class LabelTeacher(DenseTeacher):
    """Dense features from semantic label images: degraded class-prompt embeddings (module docstring).

    Args:
        text_encoder: a :class:`geo3d.language.text.TextEncoder` (``encode``, ``dim``, ``space``);
            the features live in its space.
        class_names: ``K`` class names or phrases, the index being the label id (e.g.
            ``geo3d.synthetic.classes.CLASS_NAMES``); underscores are read as spaces.
        templates: prompt templates with ``{}`` for prompt ensembling through
            ``geo3d.language.prompts.encode_prompts`` (a sequence of strings or a
            ``PromptTemplates``); None embeds the bare phrases.
        patch_size: pixels per feature cell along both axes (int >= 1).
        blur_sigma: Gaussian blur over the patch grid, in patches (>= 0; 0 disables it).
        noise_std: expected norm of the additive noise relative to the unit features (>= 0).
        confusion_rate: fraction of patches replaced by another class's embedding, in [0, 1).
        seed: base seed of the deterministic degradation.
        free_label: label id of free space / no hit, embedded as ``free_prompt`` (None: no special case).
        free_prompt: phrase whose embedding the free label gets.
        pooling: ``"majority"`` or ``"mixed"`` (module docstring, step 1).
        batch_size: label images per batch.

    Input to ``__call__``: ``[C, H, W]`` integer labels in ``[0, K)`` (NumPy or torch), e.g. from
    ``CameraFrame.load_semantic()`` stacked over cameras. Output: ``features [C, ceil(H / P),
    ceil(W / P), D]`` with ``stride = (P, P)``.
    """

    def __init__(
        self,
        text_encoder,
        class_names: Sequence[str],
        templates: Sequence[str] | None = None,
        patch_size: int = 16,
        blur_sigma: float = 1.0,
        noise_std: float = 0.1,
        confusion_rate: float = 0.1,
        seed: int = 0,
        free_label: int | None = 0,
        free_prompt: str = "sky",
        pooling: str = "majority",
        batch_size: int = 8,
    ) -> None:
        check_text_encoder(text_encoder)
        names = check_names(class_names, "class_names")
        if len(names) < 2:
            raise TeacherError(f"class_names must hold at least 2 classes (confusions need another class), got {names}")
        if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)) or patch_size < 1:
            raise TeacherError(f"patch_size must be a positive int, got {patch_size!r}")
        self.patch_size = int(patch_size)
        self.blur_sigma = _check_real(blur_sigma, "blur_sigma", 0.0, math.inf)
        self.noise_std = _check_real(noise_std, "noise_std", 0.0, math.inf)
        self.confusion_rate = _check_real(confusion_rate, "confusion_rate", 0.0, 1.0, upper_open=True)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TeacherError(f"seed must be an int, got {seed!r}")
        self.seed = int(seed)
        if pooling not in ("majority", "mixed"):
            raise TeacherError(f"pooling must be 'majority' or 'mixed', got {pooling!r}")
        self.pooling = pooling
        self.batch_size = check_batch_size(batch_size)
        if free_label is not None and not (isinstance(free_label, (int, np.integer)) and 0 <= free_label < len(names)):
            raise TeacherError(f"free_label must be None or a label id in [0, {len(names)}), got {free_label!r}")
        if free_label is not None and (not isinstance(free_prompt, str) or not free_prompt.strip()):
            raise TeacherError(f"free_prompt must be a non-empty string, got {free_prompt!r}")
        self.free_label = None if free_label is None else int(free_label)
        self.class_names = names
        self.phrases = tuple(
            free_prompt if i == self.free_label else name.replace("_", " ") for i, name in enumerate(names)
        )
        if isinstance(templates, str):
            raise TeacherError(f"templates must be a sequence of template strings, got a single str {templates!r}")
        self.templates = None if templates is None else check_names(
            tuple(templates) if isinstance(templates, Iterable) else templates, "templates"
        )
        self.text_encoder = text_encoder
        self.class_embeddings = self._embed_classes()
        phrase_text = "\n".join(self.phrases + ("|",) + (self.templates or ()))
        phrase_hash = hashlib.sha256(phrase_text.encode()).hexdigest()[:12]
        self._identity = (
            f"label-teacher(space={text_encoder.space}, phrases={phrase_hash}, classes={len(names)}, "
            f"patch={self.patch_size}, pooling={self.pooling}, blur={self.blur_sigma:g}, noise={self.noise_std:g}, "
            f"confusion={self.confusion_rate:g}, seed={self.seed})"
        )

    def _embed_classes(self) -> Tensor:
        if self.templates is None:
            embeddings = self.text_encoder.encode(list(self.phrases))
        else:
            from geo3d.language.prompts import encode_prompts

            embeddings = encode_prompts(self.text_encoder, list(self.phrases), list(self.templates))
        embeddings = torch.as_tensor(embeddings).detach().float().cpu()
        if embeddings.shape != (len(self.phrases), self.dim):
            raise TeacherError(
                f"text_encoder returned {list(embeddings.shape)} embeddings for {len(self.phrases)} phrases, "
                f"expected [{len(self.phrases)}, {self.dim}]"
            )
        if not bool(torch.isfinite(embeddings).all()):
            raise TeacherError("text_encoder returned NaN or inf embeddings")
        return torch.nn.functional.normalize(embeddings, dim=-1)

    @property
    def dim(self) -> int:
        return int(self.text_encoder.dim)

    @property
    def space(self) -> str:
        return str(self.text_encoder.space)

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _grid(self, height: int, width: int) -> tuple[tuple[int, int], tuple[float, float]]:
        patch = self.patch_size
        return (-(-height // patch), -(-width // patch)), (float(patch), float(patch))

    def _check_inputs(self, images) -> Tensor:
        labels = images
        if isinstance(labels, np.ndarray):
            labels = torch.from_numpy(np.ascontiguousarray(labels))
        if not isinstance(labels, Tensor):
            raise TeacherError(f"labels must be a [C, H, W] integer array or tensor, got {type(labels).__name__}")
        if labels.ndim != 3:
            raise TeacherError(f"labels must be [C, H, W] (a camera batch of label images), got {list(labels.shape)}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TeacherError(f"labels must be integers, got {labels.dtype}")
        if labels.numel() == 0:
            raise TeacherError(f"labels is empty: {list(labels.shape)}")
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= self.num_classes:
            raise TeacherError(f"labels must lie in [0, {self.num_classes}) (class ids), got values in [{low}, {high}]")
        return labels.long()

    def patch_label_counts(self, labels: Tensor) -> Tensor:
        """Pixels of each class in each patch.

        Args:
            labels: ``[B, H, W]`` int64 class ids in ``[0, K)``.

        Returns:
            ``[B, h, w, K]`` int64 counts (partial border patches count only their pixels).
        """
        batch, height, width = labels.shape
        (grid_h, grid_w), _ = self._grid(height, width)
        patch = self.patch_size
        rows = torch.arange(height) // patch
        cols = torch.arange(width) // patch
        cell = (rows[:, None] * grid_w + cols[None, :]).reshape(-1)
        images = torch.arange(batch)[:, None] * (grid_h * grid_w)
        index = ((images + cell[None]) * self.num_classes + labels.reshape(batch, -1)).reshape(-1)
        counts = torch.bincount(index, minlength=batch * grid_h * grid_w * self.num_classes)
        return counts.reshape(batch, grid_h, grid_w, self.num_classes)

    def patch_labels(self, labels) -> Tensor:
        """``[C, H, W]`` labels -> ``[C, h, w]`` int64 majority label of each patch (ties: smaller id),
        the label the clean feature of a patch encodes with ``pooling="majority"``."""
        return self.patch_label_counts(self._check_inputs(labels)).argmax(-1)

    def _generator(self, labels: Tensor) -> torch.Generator:
        digest = hashlib.sha256()
        digest.update(f"{self.seed}:{tuple(labels.shape)}:".encode())
        digest.update(labels.to(torch.int32).contiguous().numpy().tobytes())
        return torch.Generator().manual_seed(int.from_bytes(digest.digest()[:8], "little") >> 1)

    def _compute(self, batch: Tensor) -> Tensor:
        counts = self.patch_label_counts(batch)
        majority = counts.argmax(-1)  # [B, h, w]
        if self.pooling == "majority":
            features = self.class_embeddings[majority]
        else:
            weights = counts.float() / counts.sum(-1, keepdim=True).clamp(min=1)
            features = torch.nn.functional.normalize(weights @ self.class_embeddings, dim=-1)
        out = []
        for image, image_features, image_majority in zip(batch, features, majority):
            out.append(self._degrade(image_features, image_majority, self._generator(image)))
        return torch.stack(out)

    def _degrade(self, features: Tensor, majority: Tensor, generator: torch.Generator) -> Tensor:
        """``[h, w, D]`` clean features -> confused, blurred, noisy, unit features."""
        grid_h, grid_w, dim = features.shape
        num = self.num_classes
        confused = torch.rand(grid_h, grid_w, generator=generator) < self.confusion_rate
        offsets = torch.randint(1, num, (grid_h, grid_w), generator=generator)
        other = (majority + offsets) % num  # uniform over the K - 1 other classes
        features = torch.where(confused[..., None], self.class_embeddings[other], features)
        if self.blur_sigma > 0:
            features = gaussian_blur_grid(features, self.blur_sigma)
        noise = torch.randn(grid_h, grid_w, dim, generator=generator)
        if self.noise_std > 0:
            features = features + noise * (self.noise_std / math.sqrt(dim))
        return torch.nn.functional.normalize(features, dim=-1)


def gaussian_blur_grid(features: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of a feature grid.

    Args:
        features: ``[h, w, D]`` (or ``[B, h, w, D]``) float.
        sigma: standard deviation in cells (> 0); the kernel spans ``+-ceil(3 sigma)`` cells, borders
            are replicated.

    Returns:
        Blurred features, same shape (not renormalised).
    """
    squeeze = features.ndim == 3
    grid = (features[None] if squeeze else features).permute(0, 3, 1, 2)  # [B, D, h, w]
    radius = max(1, math.ceil(3.0 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(grid.dtype)
    channels = grid.shape[1]
    grid = torch.nn.functional.pad(grid, (radius, radius, radius, radius), mode="replicate")
    grid = torch.nn.functional.conv2d(grid, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    grid = torch.nn.functional.conv2d(grid, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    out = grid.permute(0, 2, 3, 1)
    return out[0] if squeeze else out


def _check_real(value, name: str, low: float, high: float, upper_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TeacherError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < low or value > high or (upper_open and value >= high):
        bracket = ")" if upper_open else "]"
        raise TeacherError(f"{name} must lie in [{low:g}, {high:g}{bracket}, got {value!r}")
    return value
