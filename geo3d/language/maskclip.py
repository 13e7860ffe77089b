"""MaskCLIP-style dense CLIP features from a local transformers CLIP checkpoint.

CLIP's image embedding is the class token of the last transformer block, pooled by attention from
every patch, so its patch tokens are not aligned with text. MaskCLIP (Zhou, Loy and Dai, "Extract
Free Dense Labels from CLIP", ECCV 2022) observed that the *value* embeddings of the last attention
block are: each patch token, passed through the last block as if it attended only to itself, then
through the final layer norm and CLIP's visual projection, lands in the joint image-text space.

What :class:`MaskCLIPTeacher` computes, with the transformers module names (``x`` = tokens entering
the last encoder layer, ``[B, 1 + h w, width]``)::

    y = layer_norm1(x)                                # the last layer's pre-attention norm
    a = out_proj(v_proj(y))                           # value path; query/key attention skipped
    t = x + a                   if residual else a    # attention residual (MaskCLIP keeps it)
    t = t + mlp(layer_norm2(t)) if ffn                # feed-forward with its residual (MaskCLIP keeps it)
    f = visual_projection(post_layernorm(t))[:, 1:]   # final norm and projection, patch tokens only
    features = f / |f|                                # [B, h, w, D]

This is the ViT path of the MaskCLIP reference implementation (its backbone keeps the attention
residual and the feed-forward block of the value path, then applies the final norm; its head applies
the visual projection as a 1x1 convolution). ``residual=False, ffn=False`` gives the variant of
later training-free methods (e.g. ClearCLIP) that drop both. The layers before the last run
unchanged, with the class token, as in CLIP.

Resolution: images are resized (bicubic, antialiased, in torch) to ``h * P x w * P`` with ``P`` the
patch size, normalised with CLIP's mean and std (or those of the checkpoint's
``preprocessor_config.json``); no crop, so the ``h x w`` patch grid covers the whole image and
``stride = (W / w, H / h)`` original pixels per cell. Position embeddings are resampled from the
native ``g x g`` grid to ``h x w`` by bicubic interpolation (``align_corners=False``, class position
unchanged) when the grid differs.

Checkpoints: a folder written by ``CLIPModel.save_pretrained`` (``config.json`` plus
``model.safetensors`` or ``pytorch_model.bin``), e.g. on a machine with internet
``huggingface-cli download openai/clip-vit-base-patch16 --local-dir /data/clip-vit-base-patch16``.
Nothing is downloaded: loading uses ``local_files_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch
from torch import Tensor

from geo3d.language.teachers import DenseTeacher, TeacherError, as_image_batch, check_batch_size
from geo3d.language.text import clip_space_id
from geo3d.utils.optional import require

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
"""Per-channel RGB mean of CLIP's image preprocessing (pixels in [0, 1])."""
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""Per-channel RGB standard deviation of CLIP's image preprocessing."""

WEIGHT_FILES = (
    "model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json",
)  # fmt: skip
"""Weight files a transformers checkpoint folder holds (one of them)."""

_DOWNLOAD_HINT = (
    "put a transformers CLIP checkpoint there (config.json and model.safetensors), e.g. on a machine with "
    "internet: `huggingface-cli download openai/clip-vit-base-patch16 --local-dir <folder>`"
)


def check_clip_checkpoint(checkpoint: str | os.PathLike) -> Path:
    """Validate a local transformers CLIP checkpoint folder and return its resolved path.

    Raises:
        TeacherError: the folder, its ``config.json`` or its weights are missing, or the config is not
            a CLIP config; the message says what to put there.
    """
    if checkpoint is None or (isinstance(checkpoint, str) and not checkpoint.strip()):
        raise TeacherError(f"checkpoint must be a CLIP checkpoint folder, got {checkpoint!r}")
    folder = Path(checkpoint).expanduser()
    if not folder.is_dir():
        raise TeacherError(f"checkpoint folder {folder} does not exist: {_DOWNLOAD_HINT}")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise TeacherError(f"checkpoint folder {folder} has no config.json: {_DOWNLOAD_HINT}")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise TeacherError(
            f"checkpoint folder {folder} has no weights (one of {', '.join(WEIGHT_FILES)}): {_DOWNLOAD_HINT}"
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise TeacherError(f"{config_path}: cannot read the config: {exc}") from exc
    if config.get("model_type") != "clip":
        raise TeacherError(
            f"{config_path}: model_type is {config.get('model_type')!r}, expected 'clip' (a full CLIPModel checkpoint "
            "with both towers and their projections)"
        )
    return folder.resolve()


def _weights_fingerprint(folder: Path) -> str:
    """sha256 over the names, sizes and first/last MiB of the weight files (cheap for GB files)."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        path = folder / name
        if not path.is_file() or not (name.endswith((".safetensors", ".bin", ".json"))):
            continue
        size = path.stat().st_size
        digest.update(f"{name}:{size};".encode())
        with open(path, "rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), os.SEEK_END)
                digest.update(handle.read())
    return digest.hexdigest()[:16]


def interpolate_position_embeddings(position: Tensor, grid_size: tuple[int, int]) -> Tensor:
    """Resample ViT position embeddings to another patch grid.

    Args:
        position: ``[1 + g * g, width]`` position embeddings of a square ``g x g`` patch grid, the class
            token's first.
        grid_size: ``(h, w)`` target patch grid.

    Returns:
        ``[1 + h * w, width]``: the class position unchanged, the patch positions resampled by bicubic
        interpolation (``align_corners=False``) over the grid; ``position`` itself when ``(h, w) == (g, g)``.
    """
    num_patches = position.shape[0] - 1
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise TeacherError(f"position embeddings hold {num_patches} patches, not a square grid")
    height, width = grid_size
    if (height, width) == (side, side):
        return position
    grid = position[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid.float(), size=(height, width), mode="bicubic", align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(height * width, -1).to(position.dtype)
    return torch.cat([position[:1], patches])


class MaskCLIPTeacher(DenseTeacher):
    """MaskCLIP dense features from a local transformers CLIP checkpoint (module docstring: the exact
    operations).

    Args:
        checkpoint: folder written by ``CLIPModel.save_pretrained`` (config.json + weights).
        input_size: resolution the ViT sees: an int sets the short image side (the long side keeps
            the aspect ratio), ``(height, width)`` sets both; each is rounded to a multiple of the
            patch size (at least one patch). None: the checkpoint's native ``image_size`` short side.
        residual: keep the attention residual of the last block's value path (MaskCLIP: True).
        ffn: keep the last block's feed-forward layer on the value path (MaskCLIP: True).
        batch_size: images per forward pass.
        device: torch device to run on.

    Input to ``__call__``: ``[C, H, W, 3]`` uint8 or float in [0, 1] RGB images (alpha dropped).
    Output: ``features [C, h, w, D]`` with ``D`` the CLIP projection dimension.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        input_size: int | tuple[int, int] | None = None,
        residual: bool = True,
        ffn: bool = True,
        batch_size: int = 8,
        device: str | torch.device = "cpu",
    ) -> None:
        self.checkpoint = check_clip_checkpoint(checkpoint)
        self.batch_size = check_batch_size(batch_size)
        self.residual = bool(residual)
        self.ffn = bool(ffn)
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise TeacherError(f"device {device!r} is not a torch device: {exc}") from exc
        transformers = require("transformers")
        try:
            model = transformers.CLIPModel.from_pretrained(str(self.checkpoint), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise TeacherError(
                f"checkpoint {self.checkpoint}: transformers cannot load it as a CLIPModel: {exc}"
            ) from exc
        text_config = model.config.text_config
        text_config.projection_dim = model.config.projection_dim  # the text sub-config keeps its own default
        self._space = clip_space_id(self.checkpoint.name, text_config, model.text_projection.weight)
        self.vision = model.vision_model.to(self.device).eval()
        self.projection = model.visual_projection.to(self.device).eval()
        del model  # the text tower is not needed
        config = self.vision.config
        self.patch_size = int(config.patch_size)
        self.native_size = int(config.image_size)
        self.input_size = self._check_input_size(input_size)
        self.mean, self.std = self._read_normalisation()
        self._identity = (
            f"maskclip(checkpoint={self.checkpoint.name}, space={self._space}, "
            f"weights={_weights_fingerprint(self.checkpoint)}, "
            f"input_size={self.input_size}, residual={self.residual}, ffn={self.ffn}, "
            f"mean={tuple(round(m, 6) for m in self.mean)}, std={tuple(round(s, 6) for s in self.std)})"
        )

    @property
    def dim(self) -> int:
        return int(self.projection.out_features)

    @property
    def space(self) -> str:
        return self._space

    @property
    def identity(self) -> str:
        return self._identity

    def _check_input_size(self, input_size) -> int | tuple[int, int]:
        if input_size is None:
            return self.native_size
        if isinstance(input_size, bool):
            raise TeacherError(f"input_size must be an int or (height, width), got {input_size!r}")
        if isinstance(input_size, int):
            if input_size < 1:
                raise TeacherError(f"input_size must be positive, got {input_size}")
            return input_size
        if isinstance(input_size, (tuple, list)) and len(input_size) == 2 and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in input_size
        ):
            return (int(input_size[0]), int(input_size[1]))
        raise TeacherError(
            f"input_size must be an int (short side) or (height, width) of positive ints, got {input_size!r}"
        )

    def _read_normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        path = self.checkpoint / "preprocessor_config.json"
        if not path.is_file():
            return CLIP_MEAN, CLIP_STD
        try:
            config = json.loads(path.read_text())
            mean = tuple(float(m) for m in config.get("image_mean", CLIP_MEAN))
            std = tuple(float(s) for s in config.get("image_std", CLIP_STD))
        except (OSError, ValueError, TypeError) as exc:
            raise TeacherError(f"{path}: cannot read image_mean / image_std: {exc}") from exc
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise TeacherError(f"{path}: image_mean and image_std must hold 3 values (std > 0), got {mean}, {std}")
        return mean, std

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` patch grid the ViT sees for an ``height x width`` image."""
        patch = self.patch_size
        if isinstance(self.input_size, tuple):
            target_h, target_w = self.input_size
        else:
            scale = self.input_size / min(height, width)
            target_h, target_w = height * scale, width * scale
        return max(1, round(target_h / patch)), max(1, round(target_w / patch))

    def _grid(self, height: int, width: int) -> tuple[tuple[int, int], tuple[float, float]]:
        grid_h, grid_w = self.grid_size(height, width)
        return (grid_h, grid_w), (width / grid_w, height / grid_h)

    def _check_inputs(self, images) -> Tensor:
        return as_image_batch(images)

    def preprocess(self, images: Tensor) -> Tensor:
        """``[B, H, W, 3]`` float in [0, 1] -> ``[B, 3, h P, w P]`` resized, CLIP-normalised pixels."""
        grid_h, grid_w = self.grid_size(images.shape[1], images.shape[2])
        pixels = images.to(self.device).permute(0, 3, 1, 2)
        size = (grid_h * self.patch_size, grid_w * self.patch_size)
        if tuple(pixels.shape[-2:]) != size:
            pixels = torch.nn.functional.interpolate(
                pixels, size=size, mode="bicubic", align_corners=False, antialias=True
            )
            pixels = pixels.clamp(0.0, 1.0)  # bicubic overshoots
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        return (pixels - mean) / std

    def encode_to_last_layer(self, pixel_values: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Run the ViT up to the input of its last encoder layer.

        Args:
            pixel_values: ``[B, 3, h P, w P]`` normalised pixels.

        Returns:
            ``(tokens [B, 1 + h w, width], (h, w))``: class token first, patches in row-major order.
        """
        embeddings = self.vision.embeddings
        weight = embeddings.patch_embedding.weight
        patches = embeddings.patch_embedding(pixel_values.to(weight.dtype))  # [B, width, h, w]
        grid = (int(patches.shape[2]), int(patches.shape[3]))
        patches = patches.flatten(2).transpose(1, 2)
        cls = embeddings.class_embedding.view(1, 1, -1).expand(patches.shape[0], 1, -1)
        position = interpolate_position_embeddings(embeddings.position_embedding.weight, grid)
        tokens = torch.cat([cls, patches], dim=1) + position[None]
        tokens = self.vision.pre_layrnorm(tokens)
        for layer in self.vision.encoder.layers[:-1]:
            tokens = _layer_output(layer(tokens, None))
        return tokens, grid

    def dense_from_tokens(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """MaskCLIP value path of the last layer: ``[B, 1 + h w, width]`` -> ``[B, h, w, D]`` unit features."""
        last = self.vision.encoder.layers[-1]
        attn = last.self_attn
        values = attn.out_proj(attn.v_proj(last.layer_norm1(tokens)))
        if self.residual:
            values = tokens + values
        if self.ffn:
            values = values + last.mlp(last.layer_norm2(values))
        projected = self.projection(self.vision.post_layernorm(values[:, 1:]))
        projected = torch.nn.functional.normalize(projected.float(), dim=-1)
        return projected.reshape(tokens.shape[0], grid[0], grid[1], -1)

    def image_embeddings(self, images) -> Tensor:
        """CLIP's global image embeddings through the same encoder code path (the class token of the
        full last layer, ``post_layernorm``, ``visual_projection``), unit-normalised.

        Args:
            images: ``[C, H, W, 3]`` uint8 or float in [0, 1].

        Returns:
            ``[C, D]`` float32.
        """
        batch = as_image_batch(images)
        outputs = []
        with torch.inference_mode():
            for start in range(0, batch.shape[0], self.batch_size):
                tokens, _ = self.encode_to_last_layer(self.preprocess(batch[start:start + self.batch_size]))
                tokens = _layer_output(self.vision.encoder.layers[-1](tokens, None))
                pooled = self.projection(self.vision.post_layernorm(tokens[:, 0]))
                outputs.append(torch.nn.functional.normalize(pooled.float(), dim=-1))
        return torch.cat(outputs).clone()

    def _compute(self, batch: Tensor) -> Tensor:
        tokens, grid = self.encode_to_last_layer(self.preprocess(batch))
        return self.dense_from_tokens(tokens, grid).cpu()


def _layer_output(output) -> Tensor:
    """transformers encoder layers return a tensor (v5) or a tuple whose first item is the tensor (v4)."""
    return output[0] if isinstance(output, tuple) else output
