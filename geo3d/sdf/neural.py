"""Neural signed distance functions: an encoding plus an MLP, fitted to SDF samples (DeepSDF) or to
an oriented point cloud (IGR).

- :class:`NeuralSDF` (configured by :class:`NeuralSDFConfig`) maps ``points [..., 3]`` (world units)
  to ``sdf [...]``: the MLP reads ``[x, encoding(x)]`` where the encoding is a multi-resolution grid
  (:class:`geo3d.nn.encodings.GridEncoding`), a frequency encoding or none. With ``geometric_init``
  the network starts as the SDF of a sphere of radius ``init_radius`` (encoding columns at zero), so
  fitting starts from a valid SDF and converges in far fewer steps.
- :func:`fit_sdf_samples` minimises DeepSDF's ``|clamp(f(x), -d, d) - clamp(s, -d, d)|`` over random
  batches of ``(points, sdf)`` samples, optionally plus an eikonal term ``(|grad f| - 1)^2`` on
  uniform points of the box (``SDFFitConfig``).
- :func:`fit_oriented_points` fits an oriented point cloud alone, IGR-style: on the cloud ``|f|`` and
  ``|grad f - n|``; on points near the cloud (Gaussian offsets) and uniform in the box the eikonal
  term (``IGRFitConfig``). The eikonal term differentiates the input gradient (double backward,
  supported by both encodings).

Both fitting functions use Adam with an exponentially decaying rate, draw every batch from a
``torch.Generator`` seeded by the config (the caller's global random state is untouched), report
progress through an optional ``progress(step, loss)`` callback and return a :class:`FitResult`.
A model is saved with :meth:`NeuralSDF.checkpoint` (config + state dict) and rebuilt with
:meth:`NeuralSDF.from_checkpoint`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from geo3d.errors import SDFError
from geo3d.sdf._inputs import check_bounds
from geo3d.nn.encodings import FrequencyEncoding, GridEncoding
from geo3d.nn.mlp import MLP

Progress = Callable[[int, float], None]
"""``progress(step, loss)``, called after every optimisation step (steps count from 1)."""


def _check_fields(config, positive_ints=(), positive=(), non_negative=()) -> None:
    name = type(config).__name__
    for field in positive_ints:
        value = getattr(config, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SDFError(f"{name}.{field} must be a positive integer, got {value!r}")
    for field in positive + non_negative:
        value = getattr(config, field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SDFError(f"{name}.{field} must be a finite number, got {value!r}")
        if field in positive and value <= 0:
            raise SDFError(f"{name}.{field} must be > 0, got {value!r}")
        if value < 0:
            raise SDFError(f"{name}.{field} must be >= 0, got {value!r}")


@dataclass
class NeuralSDFConfig:
    """Architecture of a :class:`NeuralSDF`."""

    encoding: Literal["grid", "frequency", "none"] = "grid"
    """Input encoding: multi-resolution grid (Instant-NGP), NeRF frequencies, or the raw coordinates."""
    bounds: tuple[tuple[float, float, float], tuple[float, float, float]] = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
    """Box (min corner, max corner), world units, covered by the grid and used for uniform samples."""
    num_levels: int = 8
    """Grid: resolution levels."""
    features_per_level: int = 2
    """Grid: features per level."""
    base_resolution: int = 16
    """Grid: cells per box side of the coarsest level."""
    max_resolution: int = 256
    """Grid: cells per box side of the finest level."""
    log2_hashmap_size: int = 16
    """Grid: at most 2^this feature vectors per level (finer levels are hashed)."""
    num_frequencies: int = 6
    """Frequency encoding: octaves."""
    hidden_dim: int = 64
    """MLP width."""
    num_layers: int = 2
    """MLP hidden layers."""
    activation: Literal["relu", "softplus"] = "softplus"
    """MLP activation (softplus: smooth gradients for normals and the eikonal term)."""
    skip_connections: tuple[int, ...] = ()
    """MLP hidden layers that re-read the input (DeepSDF-style)."""
    geometric_init: bool = True
    """Start as the SDF of a sphere of radius init_radius centred at the origin (SAL/IGR)."""
    init_radius: float = 0.5
    """Radius of that sphere, world units."""
    seed: int = 0
    """Seed of the initial weights."""

    def check(self) -> None:
        """Raise :class:`SDFError` naming the first bad field."""
        if self.encoding not in ("grid", "frequency", "none"):
            raise SDFError(f"NeuralSDFConfig.encoding must be 'grid', 'frequency' or 'none', got {self.encoding!r}")
        if self.activation not in ("relu", "softplus"):
            raise SDFError(f"NeuralSDFConfig.activation must be 'relu' or 'softplus', got {self.activation!r}")
        _check_fields(self, positive_ints=("num_levels", "features_per_level", "base_resolution", "max_resolution",
                                           "log2_hashmap_size", "hidden_dim", "num_layers"),
                      positive=("init_radius",))
        frequencies = self.num_frequencies
        if isinstance(frequencies, bool) or not isinstance(frequencies, int) or frequencies < 0:
            raise SDFError(f"NeuralSDFConfig.num_frequencies must be an integer >= 0, got {self.num_frequencies!r}")
        if self.max_resolution < self.base_resolution:
            raise SDFError(f"NeuralSDFConfig.max_resolution ({self.max_resolution}) must be >= base_resolution "
                           f"({self.base_resolution})")
        check_bounds(self.bounds, "NeuralSDFConfig.bounds")
        if any(not 1 <= s < self.num_layers for s in self.skip_connections):
            raise SDFError(f"NeuralSDFConfig.skip_connections must lie in [1, num_layers={self.num_layers}), "
                           f"got {list(self.skip_connections)}")


class NeuralSDF(nn.Module):
    """A signed distance field ``f(x) = MLP([x, encoding(x)])`` (negative inside, world units).

    ``forward(points [..., 3]) -> sdf [...]`` in float32 (the parameters' dtype).
    """

    def __init__(self, config: NeuralSDFConfig | None = None) -> None:
        super().__init__()
        config = NeuralSDFConfig() if config is None else config
        config.check()
        self.config = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            if config.encoding == "grid":
                self.encoding = GridEncoding(3, config.num_levels, config.features_per_level, config.base_resolution,
                                             config.max_resolution, log2_hashmap_size=config.log2_hashmap_size,
                                             bounds=config.bounds)
                encoded_dim = self.encoding.out_dim
            elif config.encoding == "frequency" and config.num_frequencies > 0:
                self.encoding = FrequencyEncoding(3, config.num_frequencies, include_input=False)
                encoded_dim = self.encoding.out_dim
            else:
                self.encoding, encoded_dim = None, 0
            self.mlp = MLP(3 + encoded_dim, config.hidden_dim, config.num_layers, 1, config.activation,
                           config.skip_connections, geometric_init=config.geometric_init,
                           geometric_init_radius=config.init_radius, coordinate_dims=3)

    def forward(self, points: Tensor) -> Tensor:
        if not isinstance(points, Tensor) or points.ndim < 1 or points.shape[-1] != 3:
            shape = list(points.shape) if isinstance(points, Tensor) else type(points).__name__
            raise SDFError(f"points must be a [..., 3] tensor, got {shape}")
        points = points.to(self.mlp.layers[0].weight.dtype)
        features = points if self.encoding is None else torch.cat((points, self.encoding(points)), dim=-1)
        return self.mlp(features)[..., 0]

    def gradient(self, points: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
        """``(sdf [...], grad [..., 3])``: values and their gradient with respect to the points (autograd;
        ``create_graph`` keeps the graph for a loss on the gradient). Works under ``torch.no_grad``."""
        with torch.enable_grad():
            points = points.detach().requires_grad_(True)
            sdf = self(points)
            (grad,) = torch.autograd.grad(sdf.sum(), points, create_graph=create_graph)
        return (sdf, grad) if create_graph else (sdf.detach(), grad.detach())

    def checkpoint(self) -> dict[str, Any]:
        """``{"config": dict, "state_dict": ...}``: what :meth:`from_checkpoint` needs (``torch.save`` it)."""
        return {"config": asdict(self.config), "state_dict": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> NeuralSDF:
        """Rebuild a model saved with :meth:`checkpoint`."""
        if not isinstance(checkpoint, dict) or "config" not in checkpoint or "state_dict" not in checkpoint:
            raise SDFError("a NeuralSDF checkpoint must be a dict with 'config' and 'state_dict'")
        known = {f.name for f in fields(NeuralSDFConfig)}
        unknown = set(checkpoint["config"]) - known
        if unknown:
            raise SDFError(f"NeuralSDF checkpoint config has unknown keys {sorted(unknown)}")
        values = dict(checkpoint["config"])
        values["bounds"] = tuple(tuple(float(v) for v in row) for row in values.get("bounds", NeuralSDFConfig.bounds))
        values["skip_connections"] = tuple(values.get("skip_connections", ()))
        model = cls(NeuralSDFConfig(**values))
        model.load_state_dict(checkpoint["state_dict"])
        return model


@dataclass
class SDFFitConfig:
    """Fitting a :class:`NeuralSDF` to ``(point, signed distance)`` samples (DeepSDF's clamped L1)."""

    steps: int = 2000
    """Optimisation steps."""
    batch_size: int = 8192
    """Samples per step (drawn with replacement)."""
    learning_rate: float = 1e-2
    """Adam's initial learning rate."""
    final_learning_rate_factor: float = 0.03
    """The rate decays exponentially to this fraction of the initial one at the last step."""
    clamp_distance: float = 0.1
    """DeepSDF's clamp ``d`` (world units): errors beyond |sdf| > d do not count."""
    eikonal_weight: float = 0.0
    """Weight of the eikonal term (|grad f| - 1)^2 on uniform box points (0: off, no double backward)."""
    eikonal_batch_size: int = 2048
    """Uniform points per step for the eikonal term."""
    seed: int = 0
    """Seed of the batches."""

    def check(self) -> None:
        """Raise :class:`SDFError` naming the first bad field."""
        _check_fields(self, positive_ints=("steps", "batch_size", "eikonal_batch_size"),
                      positive=("learning_rate", "final_learning_rate_factor", "clamp_distance"),
                      non_negative=("eikonal_weight",))


@dataclass
class IGRFitConfig:
    """Fitting a :class:`NeuralSDF` to an oriented point cloud alone (IGR, Gropp et al. 2020)."""

    steps: int = 2000
    """Optimisation steps."""
    batch_size: int = 4096
    """Cloud points per step (and as many near-surface points, plus batch_size / 4 uniform ones)."""
    learning_rate: float = 5e-3
    """Adam's initial learning rate."""
    final_learning_rate_factor: float = 0.05
    """The rate decays exponentially to this fraction of the initial one at the last step."""
    surface_weight: float = 1.0
    """Weight of |f| on the cloud."""
    normal_weight: float = 1.0
    """Weight of |grad f - n| on the cloud."""
    eikonal_weight: float = 0.1
    """Weight of (|grad f| - 1)^2 on near-surface and uniform points."""
    local_sigma: float = 0.01
    """Standard deviation (world units) of the Gaussian offsets of the near-surface points."""
    seed: int = 0
    """Seed of the batches."""

    def check(self) -> None:
        """Raise :class:`SDFError` naming the first bad field."""
        _check_fields(self, positive_ints=("steps", "batch_size"),
                      positive=("learning_rate", "final_learning_rate_factor", "local_sigma"),
                      non_negative=("surface_weight", "normal_weight", "eikonal_weight"))


class FitResult(NamedTuple):
    """Result of a fitting function.

    Attributes:
        losses: ``[steps]`` float64 total loss of every step.
        seconds: wall time of the optimisation.
        steps: steps run.
    """

    losses: Tensor
    seconds: float
    steps: int


def _check_samples(points: Tensor, values: Tensor, points_name: str, values_name: str, value_dims: int) -> None:
    if not isinstance(points, Tensor) or points.ndim != 2 or points.shape[1] != 3:
        shape = list(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise SDFError(f"{points_name} must be a [N, 3] tensor, got {shape}")
    expected = (len(points),) if value_dims == 0 else (len(points), value_dims)
    if not isinstance(values, Tensor) or tuple(values.shape) != expected:
        shape = list(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise SDFError(f"{values_name} must have shape {list(expected)} to match {points_name}, got {shape}")
    if len(points) == 0:
        raise SDFError(f"{points_name} is empty")
    for name, tensor in ((points_name, points), (values_name, values)):
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise SDFError(f"{name} must be finite floating-point values")


def _optimizer(model: NeuralSDF, learning_rate: float, final_factor: float, steps: int):
    # Instant-NGP: Adam with a tiny epsilon (sparse grid rows get small second moments)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, betas=(0.9, 0.99), eps=1e-15)
    gamma = final_factor ** (1.0 / max(steps - 1, 1))
    return optimizer, torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)


def _uniform(bounds: Tensor, count: int, generator: torch.Generator, like: Tensor) -> Tensor:
    low, high = bounds[0].to(like), bounds[1].to(like)
    return low + (high - low) * torch.rand(count, 3, generator=generator, dtype=like.dtype).to(like.device)


def _eikonal(model: NeuralSDF, points: Tensor) -> Tensor:
    _, grad = model.gradient(points, create_graph=True)
    return (grad.norm(dim=-1) - 1.0).square().mean()


def fit_sdf_samples(model: NeuralSDF, points: Tensor, sdf: Tensor, config: SDFFitConfig | None = None,
                    progress: Progress | None = None) -> FitResult:
    """Fit ``model`` in place to signed-distance samples.

    Args:
        model: the network (its device and dtype are used).
        points: ``[N, 3]`` sample positions, world units.
        sdf: ``[N]`` signed distances at them (negative inside), world units.
        config: :class:`SDFFitConfig` (defaults when None).
        progress: optional ``progress(step, loss)`` callback.

    Loss per step: ``mean |clamp(f(x), -d, d) - clamp(s, -d, d)|`` over a random batch, plus
    ``eikonal_weight * mean (|grad f(u)| - 1)^2`` over uniform points ``u`` of the model's box.
    """
    config = SDFFitConfig() if config is None else config
    config.check()
    _check_samples(points, sdf, "points", "sdf", 0)
    parameter = next(model.parameters())
    points = points.to(parameter)
    sdf = sdf.to(parameter)
    generator = torch.Generator().manual_seed(config.seed)
    bounds = torch.as_tensor(model.config.bounds, dtype=torch.float64)
    optimizer, scheduler = _optimizer(model, config.learning_rate, config.final_learning_rate_factor, config.steps)
    clamp = config.clamp_distance
    losses = torch.zeros(config.steps, dtype=torch.float64)
    model.train()
    start = time.perf_counter()
    for step in range(config.steps):
        index = torch.randint(0, len(points), (config.batch_size,), generator=generator).to(points.device)
        predicted = model(points[index])
        loss = (predicted.clamp(-clamp, clamp) - sdf[index].clamp(-clamp, clamp)).abs().mean()
        if config.eikonal_weight > 0:
            uniform = _uniform(bounds, config.eikonal_batch_size, generator, points)
            loss = loss + config.eikonal_weight * _eikonal(model, uniform)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses[step] = loss.item()
        if progress is not None:
            progress(step + 1, losses[step].item())
    model.eval()
    return FitResult(losses, time.perf_counter() - start, config.steps)


def fit_oriented_points(model: NeuralSDF, points: Tensor, normals: Tensor, config: IGRFitConfig | None = None,
                        progress: Progress | None = None) -> FitResult:
    """Fit ``model`` in place to an oriented point cloud (IGR), with no distance samples.

    Args:
        model: the network; its ``config.bounds`` box holds the uniform eikonal samples.
        points: ``[N, 3]`` surface points, world units.
        normals: ``[N, 3]`` outward normals at them (normalised here).
        config: :class:`IGRFitConfig` (defaults when None).
        progress: optional ``progress(step, loss)`` callback.

    Loss per step, over a random batch ``x_i`` of the cloud, near points ``x_i + sigma * N(0, I)`` and
    uniform points ``u`` of the box: ``surface_weight * mean |f(x_i)| + normal_weight * mean |grad
    f(x_i) - n_i| + eikonal_weight * mean (|grad f(y)| - 1)^2`` over the near and uniform points ``y``.
    """
    config = IGRFitConfig() if config is None else config
    config.check()
    _check_samples(points, normals, "points", "normals", 3)
    parameter = next(model.parameters())
    points = points.to(parameter)
    lengths = normals.to(parameter).norm(dim=-1, keepdim=True)
    if not (lengths > 0).all():
        raise SDFError("normals must be non-zero vectors")
    normals = normals.to(parameter) / lengths
    generator = torch.Generator().manual_seed(config.seed)
    bounds = torch.as_tensor(model.config.bounds, dtype=torch.float64)
    optimizer, scheduler = _optimizer(model, config.learning_rate, config.final_learning_rate_factor, config.steps)
    losses = torch.zeros(config.steps, dtype=torch.float64)
    batch = config.batch_size
    model.train()
    start = time.perf_counter()
    for step in range(config.steps):
        index = torch.randint(0, len(points), (batch,), generator=generator).to(points.device)
        surface = points[index]
        near = surface + config.local_sigma * torch.randn(batch, 3, generator=generator).to(points)
        uniform = _uniform(bounds, max(batch // 4, 1), generator, points)
        queries = torch.cat((surface, near, uniform))
        sdf, grad = model.gradient(queries, create_graph=True)
        surface_term = sdf[:batch].abs().mean()
        normal_term = (grad[:batch] - normals[index]).norm(dim=-1).mean()
        eikonal_term = (grad[batch:].norm(dim=-1) - 1.0).square().mean()
        loss = (config.surface_weight * surface_term + config.normal_weight * normal_term
                + config.eikonal_weight * eikonal_term)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses[step] = loss.item()
        if progress is not None:
            progress(step + 1, losses[step].item())
    model.eval()
    return FitResult(losses, time.perf_counter() - start, config.steps)
