"""``geo3d eval nerf RUN``: render held-out views of a trained radiance field, score them, export geometry.

RUN is a run folder of ``geo3d train nerf`` (its ``checkpoints/last.pt``) or a checkpoint file. The views
are the capture's held-out images (Blender: ``--split test``; other captures: every ``--holdout-every``-th
image, as in training). Prints PSNR, SSIM and LPIPS (LPIPS only where the ``lpips`` package and its
backbone weights are installed: they cannot be downloaded here, so it is reported as unavailable) and the
render time per image. ``--out DIR`` writes, atomically::

    metrics.json              per-image and mean metrics, render seconds
    images/NNN.png            rendered | ground truth side by side (``--max-images`` of them)
    depth/NNN.npy             z-depth maps in metres (--depth)
    points.ply                back-projected depth of the rendered views, coloured (--points)
    mesh.ply                  marching cubes on the density grid (--mesh; level --mesh-alpha as an alpha)
    occupancy.npz             occupancy grid of the density (--occupancy)
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see apps/train.py

import tyro  # noqa: E402


@dataclass
class NerfConfig:
    """Render and score held-out views of a radiance field; export depth, points, mesh, occupancy."""

    run: tyro.conf.Positional[Path]
    """A run folder of geo3d train nerf, or a checkpoint file."""
    capture: Path | None = None
    """The capture to evaluate on (default: the one the run was trained on)."""
    split: str = "test"
    """Blender captures: the split to evaluate (test, val, train)."""
    holdout_every: int = 8
    """Other captures: every n-th image is held out (as in training)."""
    out: Path | None = None
    """Folder for metrics.json, images and exports (default: only print)."""
    max_images: int = 10
    """Side-by-side pictures written to OUT/images."""
    depth: bool = False
    """Write z-depth maps (metres, .npy) of the evaluated views."""
    points: bool = False
    """Write a coloured point cloud from the evaluated views' depth (opacity > 0.5)."""
    mesh: bool = False
    """Write a marching-cubes mesh of the density."""
    occupancy: bool = False
    """Write the occupancy grid of the density."""
    grid_resolution: int = 256
    """Cells per axis of the density grid for --mesh / --occupancy."""
    mesh_alpha: float = 0.5
    """Level of the mesh and occupancy: alpha over one grid cell (density = -ln(1 - alpha) / cell)."""
    lpips: bool = False
    """Require LPIPS (fail when unavailable instead of skipping it)."""
    threads: int = 0
    """torch CPU threads (0: torch's choice)."""


def load_run(path: Path):
    """``(trainer, checkpoint)`` of a run folder or checkpoint file, the field and grid restored."""
    from geo3d.nerf.data import RayBank
    from geo3d.nerf.trainer import NerfTrainConfig, NerfTrainer
    from geo3d.training.checkpoint import CheckpointError, load_checkpoint, restore

    file = path / "checkpoints" / "last.pt" if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"{path}: no checkpoint (expected a run folder of geo3d train nerf or a .pt file)")
    checkpoint = load_checkpoint(file)
    if checkpoint.extra.get("task") != "train/nerf":
        raise CheckpointError(f"{file}: not a checkpoint of geo3d train nerf (task {checkpoint.extra.get('task')!r})")
    known = NerfTrainConfig.__dataclass_fields__
    values = {k: v for k, v in checkpoint.config.items() if k in known}
    for name in ("aabb", "upsample_steps"):
        values[name] = tuple(values.get(name, ()))
    try:
        config = NerfTrainConfig(**values)
        config.check()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{file}: invalid training options in the checkpoint ({exc})") from None
    import torch

    empty = RayBank(torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.uint8), None,
                    torch.ones(1), 1, 1)
    trainer = NerfTrainer(config, empty, checkpoint.extra["aabb"])
    trainer.load_state(checkpoint.extra["trainer"])
    restore(checkpoint, trainer.model)
    trainer.field.eval()
    return trainer, checkpoint


def run_nerf(config: NerfConfig) -> int:
    import numpy as np
    import torch

    from geo3d.io.blender import read_blender
    from geo3d.io.detect import read_capture
    from geo3d.nerf import export
    from geo3d.nerf.metrics import image_metrics, lpips_available
    from geo3d.nerf.renderer import render_image
    from geo3d.utils.atomic import atomic_write_bytes, atomic_write_text
    from geo3d_apps.train_nerf import ground_truth, split_cameras

    if config.threads:
        torch.set_num_threads(config.threads)
    if config.grid_resolution < 2 or not 0 < config.mesh_alpha < 1 or config.max_images < 0:
        raise ValueError("grid_resolution must be >= 2, mesh_alpha in (0, 1), max_images >= 0")
    if config.lpips:
        available, reason = lpips_available()
        if not available:
            raise RuntimeError(f"--lpips: LPIPS is unavailable ({reason})")
    trainer, checkpoint = load_run(config.run)
    capture_path = Path(config.capture or checkpoint.extra.get("capture", ""))
    capture = read_capture(capture_path)
    if capture.source_format == "blender":
        from geo3d.nerf.data import capture_cameras

        cameras = capture_cameras(read_blender(capture_path, config.split))
    else:
        cameras = split_cameras(capture, config.holdout_every)[1]
    if not cameras:
        raise ValueError(f"{capture_path}: no held-out images to evaluate")
    out = Path(config.out) if config.out is not None else None
    rows, points, colours = [], [], []
    for index, camera in enumerate(cameras):
        K, cam2world = torch.from_numpy(camera.K), torch.from_numpy(camera.cam2world)
        start = time.perf_counter()
        image = render_image(trainer.field, trainer.estimator, K, cam2world, camera.height, camera.width,
                             step_size=trainer.step_size, background=1.0, with_features=False,
                             alpha_threshold=trainer.config.alpha_threshold,
                             early_stop_eps=trainer.config.early_stop_eps)
        seconds = time.perf_counter() - start
        truth = ground_truth(camera)
        metrics = image_metrics(image.rgb, truth, with_lpips=True if config.lpips else None).as_dict()
        rows.append({"image": index, **{k: v for k, v in metrics.items() if v is not None},
                     "render_seconds": round(seconds, 4)})
        print(f"view {index:3d}: PSNR {metrics['psnr']:.2f} dB  SSIM {metrics['ssim']:.4f}  {seconds:.2f} s",
              file=sys.stderr)
        if out is not None and index < config.max_images:
            from geo3d.io.images import encode_png

            side = torch.cat([image.rgb, truth], dim=1).mul(255).round().byte().numpy()
            atomic_write_bytes(out / "images" / f"{index:03d}.png", encode_png(side))
        if out is not None and config.depth:
            buffer = io.BytesIO()
            np.save(buffer, image.depth.numpy().astype(np.float32))
            atomic_write_bytes(out / "depth" / f"{index:03d}.npy", buffer.getvalue())
        if config.points:
            p, c = export.points_from_depth(image.depth, K.float(), cam2world.float(), image.rgb, image.opacity)
            points.append(p)
            colours.append(c)
    summary = {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key != "image"}
    available, reason = lpips_available()
    print(f"{len(rows)} views: PSNR {summary['psnr']:.2f} dB, SSIM {summary['ssim']:.4f}, "
          + (f"LPIPS {summary['lpips']:.4f}, " if "lpips" in summary else f"LPIPS unavailable ({reason}), ")
          + f"{summary['render_seconds']:.2f} s per image")
    if out is None:
        return 0
    if config.points:
        export.write_point_cloud_ply(out / "points.ply", torch.cat(points), torch.cat(colours))
    if config.mesh or config.occupancy:
        aabb = trainer.field.aabb
        cells = (aabb[3:] - aabb[:3]) / config.grid_resolution
        density = export.density_grid(trainer.field.density, aabb, config.grid_resolution)
        level = export.density_for_alpha(config.mesh_alpha, float(cells.min()))
        if config.mesh:
            vertices, faces = export.mesh_from_density(density, aabb, level)
            export.write_mesh_ply(out / "mesh.ply", vertices, faces)
        if config.occupancy:
            occupied = export.occupancy_from_density(density, density_threshold=level)
            export.save_occupancy_npz(out / "occupancy.npz", occupied, aabb, density=density)
    result = {"run": str(config.run), "capture": str(capture_path), "views": len(rows), "mean": summary,
              "lpips": "computed" if "lpips" in summary else f"unavailable: {reason}", "per_view": rows}
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=1))
    return 0
