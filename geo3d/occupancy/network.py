"""An open-vocabulary occupancy network (POP-3D / OccFeat style), sized for a CPU by default.

``images -> 2D encoder -> parameter-free lifting -> BEV decoder -> occupancy head + language head``:

1. **Image encoder** (trained from scratch: no pretrained weights offline): a small ResNet-style CNN with
   GroupNorm. Every downsampling is a 4x4 convolution of stride 2 and padding 1, whose output pixel ``j``
   is centred on input ``2 j + 0.5``, i.e. exactly the area convention of :func:`scale_intrinsics`, so the
   feature intrinsics are the image intrinsics scaled to the feature size. Stride ``2 ** len(widths)``.
2. **Lifting** (:func:`~geo3d.occupancy.lifting.lift_image_features`): the voxel centres of the coarse
   lifting grid (default 100 x 100 x 8 at 0.8 m) are projected into every camera and the bilinearly
   sampled features averaged over the cameras that see them (Simple-BEV): ``[B, F, X', Y', Z']``.
3. **BEV decoder**: height folded into channels (``F * Z'``), a 2D residual U-Net over the ground plane
   (one level per entry of ``bev_widths``, each halving ``X', Y'``; the deeper levels are upsampled and
   added back), a CPU-friendly alternative to 3D convolutions.
4. **Occupancy head** (FlashOcc-style channel-to-height): a 3x3 convolution to ``Z * s * s`` channels,
   pixel-shuffled to the output grid (``s`` = output / lifting resolution in x and y), one logit per voxel.
5. **Language head**: a 1x1 convolution unfolds the BEV features into a volume ``[B, F', X', Y', Z']``;
   :meth:`OccupancyNet.language_features` samples it trilinearly at any ego points (LiDAR points for
   distillation, occupied voxel centres at query time) and a small MLP maps to ``D`` unit-norm features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from geo3d.occupancy.lifting import DEFAULT_NEAR_M, lift_image_features, scale_intrinsics, voxel_centers
from geo3d.occupancy.targets import OccupancyError, check_finite_tensor
from geo3d.synthetic.occupancy import OccupancyGridSpec

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
"""Per-channel normalisation of RGB images in [0, 1] (ImageNet statistics, a conventional choice)."""

OCCUPIED_PRIOR = 0.1
"""Initial occupancy probability of every voxel (the bias of the last occupancy layer), as most are free."""


def _positive_ints(values, name: str, *, length: int | None = None) -> tuple[int, ...]:
    items = tuple(values) if isinstance(values, Sequence) and not isinstance(values, str) else None
    if items is None or not items or (length is not None and len(items) != length) \
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items):
        count = f"{length} " if length is not None else "one or more "
        raise OccupancyError(f"{name} must be {count}positive ints, got {values!r}")
    return items


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise OccupancyError(f"{name} must be a positive int, got {value!r}")
    return value


@dataclass(frozen=True)
class OccupancyNetConfig:
    """Hyper-parameters of :class:`OccupancyNet` (defaults: the CPU preset, see docs/occupancy.md)."""

    image_size: tuple[int, int] = (224, 400)
    """``(H, W)`` the images are resized to (K follows); divisible by the encoder stride."""
    encoder_widths: tuple[int, ...] = (32, 64, 128)
    """Channels of the encoder stages; each halves the resolution (stride ``2 ** len``)."""
    encoder_blocks: int = 1
    """Residual blocks per encoder stage."""
    feature_dim: int = 32
    """``F``: channels of the image features that are lifted."""
    lifting_grid: OccupancyGridSpec = field(default_factory=lambda: OccupancyGridSpec(voxel_size=0.8))
    """Grid (ego frame) whose voxel centres are lifted: ``X' x Y' x Z'``."""
    bev_widths: tuple[int, ...] = (96, 128)
    """Channels of the BEV U-Net levels; level ``l`` works at ``X' / 2**l x Y' / 2**l``."""
    bev_blocks: int = 1
    """Residual blocks per BEV level."""
    volume_dim: int = 32
    """``F'``: channels of the decoded volume sampled by the language head."""
    output_grid: OccupancyGridSpec = field(default_factory=OccupancyGridSpec)
    """Grid of the occupancy logits: same bounds as ``lifting_grid``, ``X = s X'``, ``Y = s Y'``, any ``Z``."""
    occupancy_hidden: int = 64
    """Channels of the occupancy head's hidden layer."""
    language_dim: int = 384
    """``D``: language feature size (384 for MiniLM, 512 for CLIP ViT-B)."""
    language_hidden: int = 128
    """Hidden units of the language MLP."""
    near: float = DEFAULT_NEAR_M
    """Near plane of the lifting, metres of camera z."""
    seed: int = 0
    """Seed of the parameter initialisation."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", _positive_ints(self.image_size, "image_size", length=2))
        for name in ("encoder_widths", "bev_widths"):
            object.__setattr__(self, name, _positive_ints(getattr(self, name), name))
        for name in ("encoder_blocks", "bev_blocks", "feature_dim", "volume_dim", "occupancy_hidden",
                     "language_dim", "language_hidden"):
            _positive_int(getattr(self, name), name)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise OccupancyError(f"seed must be an int >= 0, got {self.seed!r}")
        if not (isinstance(self.near, (int, float)) and 0 < float(self.near) < float("inf")):
            raise OccupancyError(f"near must be finite and > 0, got {self.near!r}")
        stride = self.encoder_stride
        if any(s % stride for s in self.image_size):
            raise OccupancyError(f"image_size {self.image_size} must be divisible by the encoder stride {stride}")
        for name in ("lifting_grid", "output_grid"):
            if not isinstance(getattr(self, name), OccupancyGridSpec):
                raise OccupancyError(f"{name} must be an OccupancyGridSpec, got {type(getattr(self, name)).__name__}")
        lift, out = self.lifting_grid, self.output_grid
        if any(abs(a - b) > 1e-6 for a, b in zip(lift.lower + lift.upper, out.lower + out.upper)):
            raise OccupancyError(f"output_grid bounds {out.lower}..{out.upper} must equal lifting_grid bounds "
                                 f"{lift.lower}..{lift.upper}")
        (lx, ly, _), (ox, oy, _) = lift.shape, out.shape
        if ox % lx or oy % ly or ox // lx != oy // ly:
            raise OccupancyError(f"output_grid {out.shape} must refine lifting_grid {lift.shape} by one integer "
                                 "factor in x and y")
        levels = 2 ** (len(self.bev_widths) - 1)
        if lx % levels or ly % levels:
            raise OccupancyError(f"lifting_grid {lift.shape} x and y must be divisible by {levels} for "
                                 f"{len(self.bev_widths)} BEV levels")

    @property
    def encoder_stride(self) -> int:
        """Image pixels per feature pixel."""
        return 2 ** len(self.encoder_widths)

    @property
    def upsample(self) -> int:
        """``s``: output voxels per lifting voxel along x and y."""
        return self.output_grid.shape[0] // self.lifting_grid.shape[0]

    @classmethod
    def tiny(cls, **overrides) -> OccupancyNetConfig:
        """A very small preset for tests and smoke runs (64 x 96 images, 16 x 16 x 4 lifting grid)."""
        values = dict(image_size=(64, 96), encoder_widths=(8, 16), encoder_blocks=1, feature_dim=8,
                      lifting_grid=OccupancyGridSpec((-8.0, -8.0, -1.0), (8.0, 8.0, 3.0), 1.0),
                      bev_widths=(16, 16), bev_blocks=1, volume_dim=8,
                      output_grid=OccupancyGridSpec((-8.0, -8.0, -1.0), (8.0, 8.0, 3.0), 0.5),
                      occupancy_hidden=8, language_dim=12, language_hidden=16)
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict:
        """JSON-serialisable description (grids as :meth:`OccupancyGridSpec.to_dict`)."""
        data = asdict(self)
        data["lifting_grid"] = self.lifting_grid.to_dict()
        data["output_grid"] = self.output_grid.to_dict()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict) -> OccupancyNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise OccupancyError(f"unknown OccupancyNetConfig keys: {unknown}")
        values = dict(data)
        for name in ("lifting_grid", "output_grid"):
            if name in values and isinstance(values[name], dict):
                values[name] = OccupancyGridSpec.from_dict(values[name])
        for name in ("image_size", "encoder_widths", "bev_widths"):
            if name in values and isinstance(values[name], list):
                values[name] = tuple(values[name])
        return replace(cls(), **values)


class OccupancyOutput(NamedTuple):
    """Result of :meth:`OccupancyNet.forward`.

    Attributes:
        occupancy_logits: ``[B, X, Y, Z]`` occupancy logit per voxel of the output grid (> 0: occupied).
        volume: ``[B, F', X', Y', Z']`` decoded features on the lifting grid (input of the language head).
        camera_count: ``[B, X', Y', Z']`` int64 cameras that see each lifting voxel centre.
        bev: ``[B, W0, X', Y']`` the BEV decoder's output (``W0 = bev_widths[0]``), input of both
            heads; a BEV segmentation head (OccFeat pre-training) reads it.
    """

    occupancy_logits: torch.Tensor
    volume: torch.Tensor
    camera_count: torch.Tensor
    bev: torch.Tensor


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class _ResidualBlock(nn.Module):
    """``relu(x + GN(conv3x3(relu(GN(conv3x3(x))))))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = _group_norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = _group_norm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        return F.relu(x + self.norm2(self.conv2(y)))


def _down(in_channels: int, out_channels: int) -> nn.Sequential:
    """Stride-2 4x4 convolution (output pixel ``j`` centred on input ``2 j + 0.5``), GN, ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False),
                         _group_norm(out_channels), nn.ReLU(inplace=True))


class ImageEncoder(nn.Module):
    """Small ResNet-style CNN: ``[N, 3, H, W]`` in [0, 1] -> ``[N, F, H / s, W / s]``, ``s = 2 ** len(widths)``."""

    def __init__(self, widths: Sequence[int], blocks: int, feature_dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).reshape(1, 3, 1, 1), persistent=False)
        stages, previous = [], 3
        for width in widths:
            stages.append(nn.Sequential(_down(previous, width), *(_ResidualBlock(width) for _ in range(blocks))))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Conv2d(previous, feature_dim, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages((images - self.mean) / self.std))


class BevDecoder(nn.Module):
    """2D residual U-Net over the ground plane: ``[B, C_in, X', Y'] -> [B, widths[0], X', Y']``."""

    def __init__(self, in_channels: int, widths: Sequence[int], blocks: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 1, bias=False), _group_norm(widths[0]),
                                  nn.ReLU(inplace=True))
        self.down = nn.ModuleList()
        self.encode = nn.ModuleList([nn.Sequential(*(_ResidualBlock(widths[0]) for _ in range(blocks)))])
        for previous, width in zip(widths[:-1], widths[1:]):
            self.down.append(_down(previous, width))
            self.encode.append(nn.Sequential(*(_ResidualBlock(width) for _ in range(blocks))))
        self.lateral = nn.ModuleList(nn.Conv2d(deep, shallow, 1) for shallow, deep in zip(widths[:-1], widths[1:]))
        self.fuse = nn.ModuleList(_ResidualBlock(width) for width in widths[:-1])

    def forward(self, bev: torch.Tensor) -> torch.Tensor:
        skips = [self.encode[0](self.stem(bev))]
        for down, encode in zip(self.down, self.encode[1:]):
            skips.append(encode(down(skips[-1])))
        x = skips[-1]
        for level in range(len(skips) - 2, -1, -1):
            up = F.interpolate(x, size=skips[level].shape[-2:], mode="bilinear", align_corners=False)
            x = self.fuse[level](skips[level] + self.lateral[level](up))
        return x


class OccupancyNet(nn.Module):
    """Surround images -> occupancy logits on the output grid and a feature volume for the language head.

    Args:
        config: :class:`OccupancyNetConfig` (default: the CPU preset).
    """

    def __init__(self, config: OccupancyNetConfig | None = None) -> None:
        super().__init__()
        config = OccupancyNetConfig() if config is None else config
        if not isinstance(config, OccupancyNetConfig):
            raise OccupancyError(f"config must be an OccupancyNetConfig, got {type(config).__name__}")
        self.config = config
        lift_x, lift_y, lift_z = config.lifting_grid.shape
        out_z = config.output_grid.shape[2]
        scale = config.upsample
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.encoder = ImageEncoder(config.encoder_widths, config.encoder_blocks, config.feature_dim)
            self.decoder = BevDecoder(config.feature_dim * lift_z, config.bev_widths, config.bev_blocks)
            width = config.bev_widths[0]
            self.occupancy_head = nn.Sequential(
                nn.Conv2d(width, config.occupancy_hidden, 3, padding=1, bias=False),
                _group_norm(config.occupancy_hidden), nn.ReLU(inplace=True),
                nn.Conv2d(config.occupancy_hidden, out_z * scale * scale, 1))
            self.volume_head = nn.Conv2d(width, config.volume_dim * lift_z, 1)
            self.language_head = nn.Sequential(nn.Linear(config.volume_dim, config.language_hidden),
                                               nn.ReLU(inplace=True),
                                               nn.Linear(config.language_hidden, config.language_dim))
            nn.init.constant_(self.occupancy_head[-1].bias, math.log(OCCUPIED_PRIOR / (1.0 - OCCUPIED_PRIOR)))
        points = voxel_centers(config.lifting_grid).reshape(-1, 3)
        self.register_buffer("lifting_points_ego", points, persistent=False)
        self._lift_shape = (lift_x, lift_y, lift_z)

    def _check_inputs(self, images, K, cam2ego) -> None:
        images = check_finite_tensor(images, "images", ndim=5)
        batch, cams = images.shape[:2]
        if images.shape[2] != 3 or batch == 0 or cams == 0 or images.shape[3] == 0 or images.shape[4] == 0:
            raise OccupancyError(f"images must be [B, C, 3, H, W] with B, C, H, W >= 1, got {list(images.shape)}")
        if float(images.min()) < 0.0 or float(images.max()) > 1.0:
            raise OccupancyError("images must hold values in [0, 1]")
        check_finite_tensor(K, "K", ndim=4)
        if K.shape != (batch, cams, 3, 3):
            raise OccupancyError(f"K must be [{batch}, {cams}, 3, 3] to match images, got {list(K.shape)}")
        check_finite_tensor(cam2ego, "cam2ego", ndim=4)
        if cam2ego.shape != (batch, cams, 4, 4):
            raise OccupancyError(f"cam2ego must be [{batch}, {cams}, 4, 4] to match images, got {list(cam2ego.shape)}")

    def forward(self, images: torch.Tensor, K: torch.Tensor, cam2ego: torch.Tensor) -> OccupancyOutput:
        """Occupancy logits and the decoded volume of a batch of camera rigs.

        Args:
            images: ``[B, C, 3, H, W]`` float RGB in [0, 1] of ``C`` cameras; resized to
                ``config.image_size`` (bilinear, antialiased) when they differ, ``K`` following.
            K: ``[B, C, 3, 3]`` intrinsics of the images in pixels (OpenCV, pixel centres at integers).
            cam2ego: ``[B, C, 4, 4]`` camera-to-ego poses (OpenCV camera axes), metres.

        Returns:
            :class:`OccupancyOutput` (``occupancy_logits [B, X, Y, Z]``, ``volume [B, F', X', Y', Z']``,
            ``camera_count [B, X', Y', Z']``).
        """
        self._check_inputs(images, K, cam2ego)
        config = self.config
        batch, cams, _, height, width = images.shape
        images = images.to(self.lifting_points_ego.dtype)
        flat = images.reshape(batch * cams, 3, height, width)
        if (height, width) != config.image_size:
            flat = F.interpolate(flat, size=config.image_size, mode="bilinear", align_corners=False, antialias=True)
            K = scale_intrinsics(K, (height, width), config.image_size)
        features = self.encoder(flat)
        feature_size = tuple(features.shape[-2:])
        features = features.reshape(batch, cams, *features.shape[1:])
        K_feat = scale_intrinsics(K.to(features.dtype), config.image_size, feature_size)
        lifted = lift_image_features(features, K_feat, cam2ego.to(features.dtype), self.lifting_points_ego,
                                     near=config.near)
        lift_x, lift_y, lift_z = self._lift_shape
        volume = lifted.volume.reshape(batch, config.feature_dim, lift_x, lift_y, lift_z)
        bev = volume.permute(0, 1, 4, 2, 3).reshape(batch, config.feature_dim * lift_z, lift_x, lift_y)
        bev = self.decoder(bev)
        logits = F.pixel_shuffle(self.occupancy_head(bev), config.upsample)  # [B, Z, X, Y]
        decoded = self.volume_head(bev).reshape(batch, config.volume_dim, lift_z, lift_x, lift_y)
        return OccupancyOutput(logits.permute(0, 2, 3, 1), decoded.permute(0, 1, 3, 4, 2),
                               lifted.count.reshape(batch, lift_x, lift_y, lift_z), bev)

    def _check_volume(self, output) -> torch.Tensor:
        if not isinstance(output, OccupancyOutput):
            raise OccupancyError(f"output must be an OccupancyOutput, got {type(output).__name__}")
        volume = output.volume
        expected = (self.config.volume_dim, *self._lift_shape)
        if volume.ndim != 5 or tuple(volume.shape[1:]) != expected:
            raise OccupancyError(f"output.volume must be [B, {', '.join(map(str, expected))}], "
                                 f"got {list(volume.shape)}")
        return volume

    def language_features(self, output: OccupancyOutput, points_ego: torch.Tensor) -> torch.Tensor:
        """Unit-norm language features at arbitrary ego points (LiDAR points, voxel centres).

        The volume is sampled trilinearly (its values sit at the lifting voxel centres; points beyond the
        outermost centres take the border values), then the language MLP maps ``F' -> D``.

        Args:
            output: the :class:`OccupancyOutput` of :meth:`forward`.
            points_ego: ``[B, N, 3]`` or ``[N, 3]`` (shared by the batch) points, ego frame, metres.

        Returns:
            ``[B, N, D]`` features of unit L2 norm.
        """
        volume = self._check_volume(output)
        batch = volume.shape[0]
        points = check_finite_tensor(points_ego, "points_ego", last=3)
        if points.ndim == 2:
            points = points.unsqueeze(0).expand(batch, -1, -1)
        if points.ndim != 3 or points.shape[0] != batch:
            raise OccupancyError(f"points_ego must be [N, 3] or [{batch}, N, 3], got {list(points_ego.shape)}")
        if points.shape[1] == 0:
            return volume.new_zeros(batch, 0, self.config.language_dim) + 0.0 * volume.sum()
        grid = self.config.lifting_grid
        lower = points.new_tensor(grid.lower)
        extent = points.new_tensor(grid.upper) - lower
        normalised = 2.0 * (points.to(volume.dtype) - lower) / extent - 1.0  # align_corners=False convention
        # grid_sample's last axis is (W, H, D) = (z, y, x) of the volume [B, F', X', Y', Z'].
        sample_grid = normalised.flip(-1).reshape(batch, 1, 1, -1, 3)
        sampled = F.grid_sample(volume, sample_grid, mode="bilinear", padding_mode="border",
                                align_corners=False)  # [B, F', 1, 1, N]
        features = self.language_head(sampled.reshape(batch, volume.shape[1], -1).transpose(1, 2))
        return F.normalize(features, dim=-1)

    def dense_language_features(self, output: OccupancyOutput, mask: torch.Tensor) -> torch.Tensor:
        """Language features at the centres of the selected voxels of the output grid.

        Args:
            output: the :class:`OccupancyOutput` of :meth:`forward`.
            mask: ``[B, X, Y, Z]`` bool, e.g. ``output.occupancy_logits > 0``.

        Returns:
            ``[M, D]`` unit-norm features, in the order of ``torch.nonzero(mask)`` (batch, x, y, z).
        """
        volume = self._check_volume(output)
        expected = (volume.shape[0], *self.config.output_grid.shape)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != expected:
            raise OccupancyError(f"mask must be a bool tensor {list(expected)}, got "
                                 f"{getattr(mask, 'dtype', type(mask).__name__)} {list(getattr(mask, 'shape', []))}")
        spec = self.config.output_grid
        lower = volume.new_tensor(spec.lower)
        parts = []
        for b in range(volume.shape[0]):
            index = torch.nonzero(mask[b])
            centres = lower + (index.to(volume.dtype) + 0.5) * spec.voxel_size
            single = output._replace(volume=volume[b:b + 1])
            parts.append(self.language_features(single, centres)[0])
        return torch.cat(parts, 0) if parts else volume.new_zeros(0, self.config.language_dim)
