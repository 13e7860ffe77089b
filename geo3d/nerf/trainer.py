"""Training a radiance field on posed images: the configuration, one optimisation step, the schedule.

One step draws random rays from the :class:`~geo3d.nerf.data.RayBank`, renders them through the occupancy
grid (pruned samples, stratified steps), and minimises the mean squared colour error against the pixels
composited over the batch's background. The number of rays adapts so that a step evaluates about
``target_samples`` samples (nerfacc's dynamic batch). Grids learn with Adam at ``grid_lr`` (eps 1e-15: the
per-cell gradients are tiny and a larger eps would swallow them), MLPs at ``lr``; both decay
exponentially to ``final_lr_factor`` of their start over ``steps`` after a linear warm-up.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from geo3d.nerf.data import BACKGROUNDS, RayBank, background_colors
from geo3d.nerf.estimator import OccupancyGridEstimator
from geo3d.nerf.fields import FIELDS, DenseGridField, HashGridField, MLPField, RadianceField
from geo3d.nerf.renderer import render_field_rays


@dataclass
class NerfTrainConfig:
    """Hyper-parameters of a radiance-field run (``configs/nerf/*.yaml`` hold presets)."""

    field: str = "dense"
    """Field kind: dense (voxel grid, the CPU default), hash (Instant-NGP hash grid) or mlp (NeRF)."""
    aabb: tuple[float, ...] = ()
    """Scene box (min xyz, max xyz) in metres; empty: from the capture (Blender: [-1.5, 1.5]^3)."""
    resolution: int = 128
    """dense: grid size at the end of the coarse-to-fine schedule, as the cube root of its vertex count
    (vertices per axis are proportional to the box's extents: cubic voxels)."""
    coarse_resolution: int = 64
    """dense: grid vertices per axis at the start (the grid grows geometrically at --upsample-steps)."""
    upsample_steps: tuple[int, ...] = (200, 500, 1000)
    """dense: steps at which the grid grows (the first also shrinks its box to the occupied cells)."""
    shrink_box: bool = True
    """dense: at the first upsampling, fit the grid's box to the occupancy grid's occupied cells."""
    appearance_channels: int = 12
    """dense: appearance channels per vertex."""
    log2_hashmap_size: int = 17
    """hash: entries per level (log2)."""
    max_resolution: int = 512
    """hash: finest level's cells per side."""
    hidden: int = 64
    """Width of the colour MLP."""
    sh_degree: int = 3
    """View-direction encoding degree (-1: no view dependence)."""
    feature_dim: int = 0
    """Width of the feature head (0: none)."""
    steps: int = 5000
    """Optimisation steps (the learning-rate schedule spans them)."""
    target_samples: int = 1 << 16
    """Samples per step; the number of rays adapts to it."""
    initial_rays: int = 1024
    """Rays of the first step."""
    max_rays: int = 16384
    """Upper bound on rays per step."""
    step_size: float = 0.0
    """Marching step in metres (0: the box diagonal / 512)."""
    occupancy_resolution: int = 64
    """Occupancy grid cells per axis."""
    occupancy_every: int = 16
    """Refresh the occupancy grid every this many steps."""
    occupancy_warmup: int = 64
    """Steps during which every occupancy cell is refreshed."""
    occupancy_threshold: float = 0.01
    """Alpha below which a cell counts as empty."""
    alpha_threshold: float = 1e-4
    """Drop samples of lower alpha (also when rendering)."""
    early_stop_eps: float = 1e-4
    """Drop samples behind a lower transmittance."""
    lr: float = 1e-3
    """MLP learning rate."""
    grid_lr: float = 0.1
    """Grid learning rate (dense; hash uses 1e-2 in its preset)."""
    warmup_steps: int = 100
    """Linear learning-rate warm-up."""
    final_lr_factor: float = 0.1
    """Learning rate at the last step, relative to the start."""
    weight_decay: float = 1e-6
    """MLP weight decay."""
    background: str = "random"
    """Background behind RGBA training images: white, black or random."""
    seed: int = 0
    """Random seed (initialisation and ray batches)."""

    def check(self) -> None:
        """Raise ValueError naming the first invalid option."""
        if self.field not in FIELDS:
            raise ValueError(f"field must be one of {sorted(FIELDS)}, got {self.field!r}")
        if self.aabb and (len(self.aabb) != 6 or not all(math.isfinite(v) for v in self.aabb)
                          or not all(self.aabb[i + 3] > self.aabb[i] for i in range(3))):
            raise ValueError(f"aabb must be 6 finite numbers (min xyz, max xyz) with max > min, got {self.aabb}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {self.background!r}")
        positive = ("resolution", "appearance_channels", "hidden", "steps", "target_samples", "initial_rays",
                    "max_rays", "occupancy_resolution", "occupancy_every", "log2_hashmap_size", "max_resolution")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "grid_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("step_size", "alpha_threshold", "early_stop_eps", "weight_decay", "occupancy_threshold"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if not 0 < self.final_lr_factor <= 1:
            raise ValueError(f"final_lr_factor must be in (0, 1], got {self.final_lr_factor}")
        if not -1 <= self.sh_degree <= 4:
            raise ValueError(f"sh_degree must be in [-1, 4], got {self.sh_degree}")
        if self.feature_dim < 0 or self.warmup_steps < 0 or self.occupancy_warmup < 0:
            raise ValueError("feature_dim, warmup_steps and occupancy_warmup must be >= 0")
        if self.resolution < 2 or self.occupancy_resolution < 2 or self.coarse_resolution < 2:
            raise ValueError("resolution, coarse_resolution and occupancy_resolution must be >= 2")
        if list(self.upsample_steps) != sorted(set(self.upsample_steps)) or any(s < 1 for s in self.upsample_steps):
            raise ValueError(f"upsample_steps must be increasing positive steps, got {self.upsample_steps}")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["aabb"] = list(self.aabb)
        values["upsample_steps"] = list(self.upsample_steps)
        return values

    def grid_resolutions(self) -> list[int]:
        """dense: the grid's resolution from step 0 and after each of ``upsample_steps``."""
        count = len(self.upsample_steps)
        if count == 0:
            return [self.resolution]
        ratio = (self.resolution / self.coarse_resolution) ** (1.0 / count)
        return [int(round(self.coarse_resolution * ratio**i)) for i in range(count)] + [self.resolution]


def build_field(config: NerfTrainConfig, aabb) -> RadianceField:
    """The field ``config.field`` over ``aabb``."""
    sh = None if config.sh_degree < 0 else config.sh_degree
    if config.field == "dense":
        return DenseGridField(aabb, resolution=config.grid_resolutions()[0],
                              appearance_channels=config.appearance_channels, hidden=config.hidden,
                              sh_degree=sh, feature_dim=config.feature_dim)
    if config.field == "hash":
        return HashGridField(aabb, log2_hashmap_size=config.log2_hashmap_size, max_resolution=config.max_resolution,
                             hidden=config.hidden, sh_degree=sh, feature_dim=config.feature_dim)
    return MLPField(aabb, hidden=max(config.hidden, 64), view_dependent=sh is not None, feature_dim=config.feature_dim)


@dataclass
class StepStats:
    """One step's numbers: loss (MSE), PSNR of the batch (dB), rays and samples used."""

    loss: float
    psnr: float
    rays: int
    samples: int


class NerfTrainer:
    """Owns the field, the occupancy grid, the optimizer and the ray sampler of one run."""

    def __init__(self, config: NerfTrainConfig, bank: RayBank, aabb) -> None:
        config.check()
        self.config = config
        self.bank = bank
        torch.manual_seed(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.field = build_field(config, aabb)
        self.estimator = OccupancyGridEstimator(self.field.aabb, config.occupancy_resolution)
        box = self.field.aabb
        diagonal = float(torch.linalg.vector_norm(box[3:] - box[:3]))
        self.step_size = config.step_size or diagonal / 512
        self.model = torch.nn.ModuleDict({"field": self.field, "estimator": self.estimator})
        grids = self.field.grid_parameters()
        grid_ids = {id(p) for p in grids}
        others = [p for p in self.field.parameters() if id(p) not in grid_ids]
        groups = [{"params": others, "lr": config.lr, "weight_decay": config.weight_decay, "eps": 1e-15}]
        if grids:
            groups.append({"params": grids, "lr": config.grid_lr, "weight_decay": 0.0, "eps": 1e-15})
        self.optimizer = torch.optim.Adam(groups, fused=True)
        self.base_lrs = [g["lr"] for g in groups]
        self.step = 0
        self.num_rays = config.initial_rays

    def learning_rate_factor(self, step: int) -> float:
        """Linear warm-up to 1, then exponential decay to ``final_lr_factor`` at ``steps``."""
        config = self.config
        warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
        progress = min(1.0, step / max(1, config.steps))
        return warm * config.final_lr_factor ** progress

    def train_step(self) -> StepStats:
        """One optimisation step (refreshes the occupancy grid when due)."""
        config = self.config
        if self.step % config.occupancy_every == 0:
            self.estimator.update(self.step, self.field.density, self.step_size, threshold=config.occupancy_threshold,
                                  warmup_steps=config.occupancy_warmup, generator=self.generator)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * self.learning_rate_factor(self.step)
        index = torch.randint(0, len(self.bank), (self.num_rays,), generator=self.generator)
        background = background_colors(config.background, self.num_rays, self.generator)
        target = self.bank.targets(index, background)
        out = render_field_rays(self.field, self.estimator, self.bank.origins[index], self.bank.directions[index],
                                step_size=self.step_size, background=background, stratified=True,
                                alpha_threshold=config.alpha_threshold, early_stop_eps=config.early_stop_eps,
                                with_features=False, generator=self.generator)
        loss = F.mse_loss(out.rgb, target)
        self.optimizer.zero_grad(set_to_none=True)
        if out.num_samples:
            loss.backward()
            self.optimizer.step()
        rays = self.num_rays
        self.num_rays = int(min(config.max_rays, max(256, rays * config.target_samples / max(out.num_samples, 1))))
        self.step += 1
        if isinstance(self.field, DenseGridField) and self.step in config.upsample_steps:
            self._grow_grid(config.upsample_steps.index(self.step) + 1)
        mse = float(loss.detach())
        return StepStats(mse, -10.0 * math.log10(max(mse, 1e-10)), rays, out.num_samples)

    def _grow_grid(self, stage: int) -> None:
        """Move the dense grid to the resolution of ``stage`` (and, at the first, to the occupied box)."""
        bounds = None
        if stage == 1 and self.config.shrink_box:
            cell = self.estimator.cell_size
            box = self.estimator.occupied_box()
            low = torch.maximum(box[:3] - 2 * cell, self.field.aabb[:3])
            high = torch.minimum(box[3:] + 2 * cell, self.field.aabb[3:])
            bounds = torch.cat([low, high])
        self._set_grid(self.config.grid_resolutions()[stage], bounds)

    def _set_grid(self, resolution: int | tuple[int, ...], bounds) -> None:
        old = self.field.grid.table
        if isinstance(resolution, int):
            box = self.field.grid.bounds if bounds is None else torch.as_tensor(bounds, dtype=torch.float32)
            extent = box[3:] - box[:3]
            scale = resolution / float(extent.prod()) ** (1.0 / 3.0)
            resolution = tuple(max(2, int(round(float(e) * scale))) for e in extent)
        self.field.resample(resolution, bounds)
        group = self.optimizer.param_groups[1]
        self.optimizer.state.pop(old, None)
        group["params"] = [self.field.grid.table]

    def state(self) -> dict[str, Any]:
        """What a checkpoint needs besides the model and optimizer states."""
        state = {"step": self.step, "num_rays": self.num_rays, "step_size": self.step_size,
                 "generator": self.generator.get_state().tolist()}
        if isinstance(self.field, DenseGridField):
            state["grid"] = {"resolution": list(self.field.grid.resolution),
                             "bounds": [float(v) for v in self.field.grid.bounds]}
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` (call before loading the model's and optimizer's state dicts: the dense grid
        takes the saved resolution and box first)."""
        grid = state.get("grid")
        if grid is not None and isinstance(self.field, DenseGridField):
            if list(self.field.grid.resolution) != grid["resolution"]:
                self._set_grid(tuple(grid["resolution"]), grid["bounds"])
        self.step = int(state["step"])
        self.num_rays = int(state["num_rays"])
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
