"""``geo3d train sdf``: fit a neural SDF to a watertight mesh (or a built-in analytic shape), extract
its mesh and draw a preview.

``geo3d train sdf --mesh bunny_watertight.ply --out DIR`` samples DeepSDF-style signed distances of
the mesh (:func:`geo3d.sdf.mesh.sample_sdf_points`), fits a :class:`geo3d.sdf.neural.NeuralSDF`
(grid encoding + MLP, geometric init) with :func:`geo3d.sdf.neural.fit_sdf_samples`, extracts the
zero level set by chunked, narrow-band marching cubes (:func:`geo3d.sdf.extract.extract_mesh`) and
writes, atomically::

    model.pt        NeuralSDF.checkpoint() plus the command's options ("options")
    mesh.ply        the extracted mesh
    metrics.json    timings, and Chamfer-L1 / normal consistency / F-score against the input mesh
    preview.png     the sphere-traced, normal-shaded SDF from a 3/4 view | an SDF slice, zero level in black

Without ``--mesh`` the shape is a built-in analytic union of a sphere and a box (exact distances,
no reference mesh, no quality metrics). ``--resume`` reuses ``OUT/model.pt`` when it was fitted
with the same options (the fit is skipped; extraction and preview are redone). A missing or
non-watertight mesh, or bad options, exit non-zero with a one-line message.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see apps/train.py: idle OpenMP threads sleep

MODEL_OPTIONS = ("encoding", "num_levels", "features_per_level", "base_resolution", "max_resolution",
                 "log2_hashmap_size", "num_frequencies", "hidden_dim", "num_layers", "activation", "seed")
FIT_OPTIONS = ("steps", "batch_size", "learning_rate", "final_learning_rate_factor", "clamp_distance",
               "eikonal_weight")
NOT_IDENTITY = ("out", "resume", "threads", "resolution", "coarse_factor", "preview_size", "up_axis",
                "metric_samples")
"""Options that do not change the fitted model: --resume reuses a model.pt that differs only in them."""


@dataclass
class SDFConfig:
    """Fit a neural SDF to a watertight mesh; write model.pt, mesh.ply, metrics.json and preview.png."""

    mesh: Path | None = None
    """Watertight mesh to fit (PLY/OBJ/STL/OFF); default: a built-in analytic shape."""
    out: Path = Path("out/sdf")
    """Output folder."""
    resume: bool = False
    """Reuse OUT/model.pt when it was fitted with the same options (skip the fit)."""
    num_samples: int = 500_000
    """SDF samples drawn from the shape (near-surface and uniform)."""
    near_surface_fraction: float = 0.8
    """Share of the samples near the surface."""
    padding: float = 0.1
    """Margin of the box around the shape (fraction of its largest side): grid bounds and extraction box."""
    encoding: Literal["grid", "frequency", "none"] = "grid"
    """Input encoding."""
    num_levels: int = 8
    """Grid levels."""
    features_per_level: int = 2
    """Grid features per level."""
    base_resolution: int = 16
    """Grid: coarsest cells per side."""
    max_resolution: int = 256
    """Grid: finest cells per side."""
    log2_hashmap_size: int = 16
    """Grid: at most 2^this entries per level."""
    num_frequencies: int = 6
    """Frequency encoding octaves."""
    hidden_dim: int = 64
    """MLP width."""
    num_layers: int = 2
    """MLP hidden layers."""
    activation: Literal["relu", "softplus"] = "softplus"
    """MLP activation."""
    seed: int = 0
    """Seed of the samples, the initial weights and the batches."""
    steps: int = 1000
    """Optimisation steps."""
    batch_size: int = 8192
    """Samples per step."""
    learning_rate: float = 0.01
    """Adam's initial learning rate."""
    final_learning_rate_factor: float = 0.03
    """Final rate as a fraction of the initial one (exponential decay)."""
    clamp_distance: float = 0.1
    """DeepSDF clamp of the L1 loss (world units)."""
    eikonal_weight: float = 0.0
    """Weight of an eikonal term on uniform points (0: off)."""
    resolution: int = 256
    """Marching-cubes samples per axis of the extraction box."""
    coarse_factor: int = 4
    """Narrow-band extraction: coarse lattice factor (1: evaluate the dense lattice)."""
    preview_size: int = 384
    """Height and width of each of the two preview panels, pixels."""
    up_axis: int = 1
    """World axis drawn upwards in the preview (1: y-up meshes such as the Stanford bunny; 2: z-up)."""
    metric_samples: int = 100_000
    """Surface samples per mesh for the metrics."""
    threads: int | None = 2
    """torch CPU threads (None: torch's choice)."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _check(config: SDFConfig) -> None:
    from geo3d.errors import SDFError

    for name in ("num_samples", "resolution", "coarse_factor", "preview_size", "metric_samples"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SDFError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
    if config.resolution < 8:
        raise SDFError(f"--resolution must be >= 8, got {config.resolution}")
    if not 0 <= config.near_surface_fraction <= 1:
        raise SDFError(f"--near-surface-fraction must lie in [0, 1], got {config.near_surface_fraction}")
    if not 0 <= config.padding <= 1:
        raise SDFError(f"--padding must lie in [0, 1], got {config.padding}")
    if config.up_axis not in (0, 1, 2):
        raise SDFError(f"--up-axis must be 0, 1 or 2, got {config.up_axis}")
    if config.threads is not None and config.threads < 1:
        raise SDFError(f"--threads must be >= 1, got {config.threads}")
    from geo3d.sdf.neural import NeuralSDFConfig, SDFFitConfig

    NeuralSDFConfig(**{k: getattr(config, k) for k in MODEL_OPTIONS}).check()
    SDFFitConfig(seed=config.seed, **{k: getattr(config, k) for k in FIT_OPTIONS}).check()
    if config.mesh is not None and not config.mesh.is_file():
        raise SDFError(f"--mesh {config.mesh}: file not found")
    if config.out.exists() and not config.out.is_dir():
        raise SDFError(f"--out {config.out} is a file, not a folder")


def builtin_shape():
    """The analytic shape fitted without --mesh: a sphere fused with a box (world units, ~1 m)."""
    from geo3d.sdf.analytic import Box, Sphere, union

    return union(Sphere(0.3, (0.12, 0.0, 0.05)), Box((0.28, 0.18, 0.14), (-0.15, 0.02, -0.08)))


def _box_around(low, high, padding: float):
    import numpy as np

    centre, half = (low + high) / 2, float(np.max(high - low)) / 2 * (1 + 2 * padding)
    return np.stack((centre - half, centre + half))


def _samples(config: SDFConfig):
    """(points, sdf, reference mesh or None, bounds [2, 3] ndarray)."""
    import numpy as np
    import torch

    generator = torch.Generator().manual_seed(config.seed)
    if config.mesh is not None:
        from geo3d.sdf.mesh import MeshSDF, sample_sdf_points
        from geo3d.structures.mesh import read_mesh

        reference = read_mesh(config.mesh)
        mesh_sdf = MeshSDF(reference)  # MeshError when not watertight
        samples = sample_sdf_points(mesh_sdf, config.num_samples, config.near_surface_fraction, generator=generator)
        bounds = reference.bounds()
        return samples.points, samples.sdf, reference, _box_around(bounds[0], bounds[1], config.padding)
    shape = builtin_shape()
    bounds = shape.bounds().numpy()
    box = _box_around(bounds[0], bounds[1], config.padding)
    near = round(config.num_samples * config.near_surface_fraction)
    # near-surface samples: uniform points projected onto the surface along the gradient, then jittered
    seeds = torch.from_numpy(box[0]) + torch.rand(near, 3, generator=generator, dtype=torch.float64) * \
        torch.from_numpy(box[1] - box[0])
    for _ in range(3):
        seeds = seeds.requires_grad_(True)
        values = shape(seeds)
        (grad,) = torch.autograd.grad(values.sum(), seeds)
        seeds = (seeds - values[:, None] * grad).detach()
    scale = float(np.linalg.norm(bounds[1] - bounds[0]))
    sigmas = torch.where(torch.arange(near) % 2 == 0, 0.0025 * scale, 0.025 * scale).double()
    near_points = seeds + sigmas[:, None] * torch.randn(near, 3, generator=generator, dtype=torch.float64)
    uniform = torch.from_numpy(box[0]) + torch.rand(config.num_samples - near, 3, generator=generator,
                                                    dtype=torch.float64) * torch.from_numpy(box[1] - box[0])
    points = torch.cat((near_points, uniform))
    with torch.no_grad():
        sdf = shape(points)
    return points.float(), sdf.float(), None, box


def _identity(config: SDFConfig) -> dict:
    values = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    return {k: v for k, v in values.items() if k not in NOT_IDENTITY}


def _fit(config: SDFConfig, points, sdf, bounds):
    from tqdm import tqdm

    from geo3d.sdf.neural import NeuralSDF, NeuralSDFConfig, SDFFitConfig, fit_sdf_samples

    model_config = NeuralSDFConfig(bounds=tuple(tuple(float(v) for v in row) for row in bounds),
                                   init_radius=float(bounds[1, 0] - bounds[0, 0]) / 4,
                                   **{k: getattr(config, k) for k in MODEL_OPTIONS})
    fit_config = SDFFitConfig(seed=config.seed, **{k: getattr(config, k) for k in FIT_OPTIONS})
    model = NeuralSDF(model_config)
    with tqdm(total=config.steps, desc="fitting SDF", unit="step", file=sys.stderr, mininterval=1.0) as bar:
        def progress(step: int, loss: float) -> None:
            bar.update(1)
            if step % 50 == 0 or step == config.steps:
                bar.set_postfix(loss=f"{loss:.2e}")

        result = fit_sdf_samples(model, points, sdf, fit_config, progress=progress)
    return model, result


def _colour_slice(values, zero_level_px: int = 1):
    """``[H, W]`` SDF slice -> ``[H, W, 3]`` uint8: blue inside, red outside (fading with |sdf| to white
    at 0), iso-lines every tenth of the range in grey, the zero level in black."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    scale = max(float(np.abs(v).max()), 1e-12)
    t = np.clip(np.abs(v) / scale, 0, 1) ** 0.5
    white = np.ones(v.shape + (3,))
    inside, outside = np.array([0.17, 0.35, 0.75]), np.array([0.8, 0.25, 0.15])
    colour = np.where((v < 0)[..., None], white * (1 - t[..., None]) + inside * t[..., None],
                      white * (1 - t[..., None]) + outside * t[..., None])
    bands = np.floor(v / (scale / 10))
    contour = np.zeros(v.shape, dtype=bool)
    contour[:-1] |= bands[:-1] != bands[1:]
    contour[:, :-1] |= bands[:, :-1] != bands[:, 1:]
    colour[contour] *= 0.75
    sign = v < 0
    zero = np.zeros(v.shape, dtype=bool)
    zero[:-1] |= sign[:-1] != sign[1:]
    zero[:, :-1] |= sign[:, :-1] != sign[:, 1:]
    for _ in range(zero_level_px - 1):
        zero[1:] |= zero[:-1].copy()
        zero[:, 1:] |= zero[:, :-1].copy()
    colour[zero] = 0.0
    return (colour * 255).round().astype(np.uint8)


def preview_image(sdf_fn, bounds, size: int, up_axis: int = 1):
    """``[size, 2 * size + 4, 3]`` uint8: the sphere-traced SDF seen from a 3/4 view (world axis
    ``up_axis`` up; 1 for y-up meshes such as the Stanford bunny, 2 for z-up), clay-coloured, tinted by
    its world normals and lit from the upper left (left), and the vertical slice through the box
    centre facing the camera's side (right, :func:`_colour_slice`: up is up, zero level in black)."""
    import numpy as np
    import torch

    from geo3d.sdf.extract import evaluate_slice
    from geo3d.sdf.sphere_tracing import look_at, render_sdf, shade_normals

    low, high = np.asarray(bounds[0], dtype=np.float64), np.asarray(bounds[1], dtype=np.float64)
    centre, radius = (low + high) / 2, float(np.linalg.norm(high - low)) / 2
    up = np.eye(3)[up_axis]
    view = np.array([0.6, 0.0, 0.75]) if up_axis == 1 else np.array([0.6, -0.75, 0.0])
    view = (view + 0.45 * up) / np.linalg.norm(view + 0.45 * up)
    cam2world = look_at(centre + radius * 1.7 * view, centre, up=tuple(up))[None].float()
    focal = size / (2 * np.tan(np.radians(40) / 2))
    K = torch.tensor([[[focal, 0, (size - 1) / 2], [0, focal, (size - 1) / 2], [0, 0, 1]]], dtype=torch.float32)
    render = render_sdf(sdf_fn, K, cam2world, size, size, near=0.0, far=4 * radius, bounds=(low, high),
                        max_steps=128, epsilon=3e-4, step_scale=0.9, normal_eps=2e-3)
    # clay colour tinted by the world normal, lit by a head light from the upper left
    normals_cam = render.normals[0] @ cam2world[0, :3, :3]
    light = torch.nn.functional.normalize(torch.tensor([-0.4, -0.6, -1.0]), dim=0)
    diffuse = (normals_cam * light).sum(-1).clamp_min(0)[..., None]
    tint = torch.from_numpy(shade_normals(render.normals[0], render.hit[0])).float() / 255
    albedo = 0.55 * torch.tensor([0.93, 0.9, 0.85]) + 0.45 * tint
    shaded = (albedo * (0.25 + 0.75 * diffuse)).clamp(0, 1)
    left = np.where(render.hit[0, ..., None].numpy(), (shaded.numpy() * 255).round(), 255).astype(np.uint8)
    slice_axis = 2 if up_axis == 1 else 1
    right = _colour_slice(evaluate_slice(sdf_fn, (low, high), axis=slice_axis, position=float(centre[slice_axis]),
                                         resolution=size).numpy())
    gap = np.full((size, 4, 3), 255, dtype=np.uint8)
    return np.concatenate((left, gap, right), axis=1)


def run_sdf(config: SDFConfig) -> int:
    import numpy as np
    import torch

    from geo3d.io.images import write_png
    from geo3d.sdf.extract import extract_mesh
    from geo3d.sdf.neural import NeuralSDF
    from geo3d.utils.atomic import atomic_write_bytes, atomic_write_text

    _check(config)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    start = time.perf_counter()
    points, sdf, reference, bounds = _samples(config)
    sample_seconds = time.perf_counter() - start
    _log(f"{len(points)} SDF samples of {config.mesh or 'the built-in shape'} in {sample_seconds:.1f} s")
    config.out.mkdir(parents=True, exist_ok=True)
    model_path = config.out / "model.pt"
    model, fit_seconds, losses = None, 0.0, []
    if config.resume and model_path.is_file():
        saved = torch.load(model_path, map_location="cpu", weights_only=False)
        if saved.get("options") == _identity(config):
            model = NeuralSDF.from_checkpoint(saved["model"])
            fit_seconds, losses = saved.get("fit_seconds", 0.0), saved.get("losses", [])
            _log(f"resuming: reusing the fitted model {model_path}")
        else:
            _log(f"{model_path} was fitted with other options: fitting again")
    if model is None:
        model, result = _fit(config, points, sdf, bounds)
        fit_seconds, losses = result.seconds, result.losses.tolist()
        buffer = io.BytesIO()
        torch.save({"model": model.checkpoint(), "options": _identity(config), "fit_seconds": fit_seconds,
                    "losses": losses}, buffer)
        atomic_write_bytes(model_path, buffer.getvalue())
    model.eval()
    start = time.perf_counter()
    mesh = extract_mesh(model, bounds, config.resolution, coarse_factor=config.coarse_factor)
    extract_seconds = time.perf_counter() - start
    if mesh.num_faces == 0:
        _log("warning: the fitted SDF has no zero level set inside the box (empty mesh)")
    else:
        mesh.save(config.out / "mesh.ply")
    metrics = {"mesh": str(config.mesh) if config.mesh else "builtin", "samples": len(points),
               "sample_seconds": sample_seconds, "fit_seconds": fit_seconds, "extract_seconds": extract_seconds,
               "final_loss": losses[-1] if losses else None, "resolution": config.resolution,
               "vertices": mesh.num_vertices, "faces": mesh.num_faces}
    if reference is not None:
        from geo3d.sdf.metrics import mesh_metrics

        low, high = reference.bounds()
        diagonal = float(np.linalg.norm(high - low))
        quality = mesh_metrics(mesh, reference, num_samples=config.metric_samples,
                               f_score_thresholds=(0.01 * diagonal,), seed=config.seed)
        metrics.update(diagonal=diagonal, chamfer_l1=quality.chamfer_l1,
                       chamfer_l1_percent_diagonal=100 * quality.chamfer_l1 / diagonal,
                       normal_consistency=quality.normal_consistency,
                       f_score_1pct=next(iter(quality.f_score.values())))
    atomic_write_text(config.out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    with torch.no_grad():
        image = preview_image(model, bounds, config.preview_size, config.up_axis)
    write_png(config.out / "preview.png", image)
    summary = f"fit {fit_seconds:.1f} s, extraction {extract_seconds:.1f} s, {mesh.num_faces} faces"
    if reference is not None:
        summary += (f"; Chamfer-L1 {metrics['chamfer_l1_percent_diagonal']:.3f} % of the diagonal, "
                    f"normal consistency {metrics['normal_consistency']:.4f}, F@1% {metrics['f_score_1pct']:.4f}")
    print(f"{summary} -> {config.out}")
    return 0
