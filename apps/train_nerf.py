"""``geo3d train nerf CAPTURE``: fit a radiance field to the posed images of a capture (resumable).

CAPTURE is anything ``geo3d info`` reads: a NeRF/Blender folder (``transforms_{train,test}.json``; the
train split is used, RGBA images are composited over ``--background``), a COLMAP model, a geo3d
capture. Other than Blender, every ``--holdout-every``-th image is held out for evaluation. The run
folder ``--out`` holds::

    checkpoints/last.pt   field + occupancy grid + optimizer + step (every --checkpoint-every steps; atomic)
    metrics.json          options, the PSNR-vs-time history, the held-out PSNR at the end (atomic)

Rerunning the same command resumes from ``checkpoints/last.pt``; a run folder made with other options
is refused unless ``--overwrite``. ``--minutes`` bounds the training time (the learning-rate schedule
still spans ``--steps``). Progress: a bar with the batch PSNR, rays and samples per step.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see apps/train.py: idle OpenMP threads sleep

import tyro  # noqa: E402

from geo3d.nerf.trainer import NerfTrainConfig  # noqa: E402  (imports torch)

NOT_IDENTITY = ("out", "overwrite", "minutes", "threads", "checkpoint_every", "eval_every", "eval_views")
"""Options that do not change what a run computes: a rerun may change them and still resume."""


@dataclass
class NerfConfig(NerfTrainConfig):
    """Train a radiance field on a capture's posed images (resumable)."""

    capture: tyro.conf.Positional[Path | None] = None
    """The capture: a Blender folder (e.g. ../shared/data/lego_200), a COLMAP model, a geo3d capture."""
    out: Path = Path("out/nerf")
    """Run folder: checkpoints/, metrics.json."""
    overwrite: bool = False
    """Start over: discard the run folder's checkpoint and metrics."""
    minutes: float = 0.0
    """Stop after this many minutes of training (0: run all --steps)."""
    holdout_every: int = 8
    """Non-Blender captures: hold out every n-th image for evaluation (0: none)."""
    checkpoint_every: int = 500
    """Steps between checkpoints."""
    eval_every: float = 60.0
    """Seconds of training between held-out PSNR measurements (0: only at the end)."""
    eval_views: int = 4
    """Held-out images rendered for each PSNR measurement (all of them at the end)."""
    threads: int = 0
    """torch CPU threads (0: torch's choice)."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train_config(config: NerfConfig) -> NerfTrainConfig:
    """The library's part of the command's options."""
    return NerfTrainConfig(**{f.name: getattr(config, f.name) for f in fields(NerfTrainConfig)})


def identity(config: NerfConfig) -> dict:
    values = {f.name: getattr(config, f.name) for f in fields(config) if f.name not in NOT_IDENTITY}
    values["capture"] = str(Path(config.capture).resolve())
    values["aabb"] = list(config.aabb)
    return json.loads(json.dumps(values, default=str))


def split_cameras(capture, holdout_every: int):
    """``(train cameras, held-out cameras)``: Blender's train/test files, else every n-th image held out."""
    from geo3d.io.blender import read_blender
    from geo3d.nerf.data import capture_cameras

    if capture.source_format == "blender":
        train = capture_cameras(capture)
        try:
            held_out = capture_cameras(read_blender(capture.source, "test"))
        except Exception:  # noqa: BLE001 - a Blender folder without a test split evaluates on nothing
            held_out = []
        return train, held_out
    cameras = capture_cameras(capture)
    if holdout_every <= 0 or len(cameras) < 2:
        return cameras, []
    return ([c for i, c in enumerate(cameras) if i % holdout_every],
            [c for i, c in enumerate(cameras) if i % holdout_every == 0])


def held_out_psnr(trainer, cameras, background: float = 1.0) -> tuple[float, float]:
    """Mean PSNR (dB) of ``cameras`` rendered over a white background, and seconds per image."""
    import numpy as np
    import torch

    from geo3d.nerf.metrics import psnr
    from geo3d.nerf.renderer import render_image

    values, start = [], time.perf_counter()
    for camera in cameras:
        image = render_image(trainer.field, trainer.estimator, torch.from_numpy(camera.K),
                             torch.from_numpy(camera.cam2world), camera.height, camera.width,
                             step_size=trainer.step_size, background=background, with_features=False,
                             alpha_threshold=trainer.config.alpha_threshold,
                             early_stop_eps=trainer.config.early_stop_eps)
        values.append(float(psnr(image.rgb, ground_truth(camera, background))))
    return float(np.mean(values)), (time.perf_counter() - start) / max(1, len(cameras))


def ground_truth(camera, background: float = 1.0):
    """``[H, W, 3]`` float image of ``camera`` (RGBA composited over ``background``)."""
    import numpy as np
    import torch

    image = torch.from_numpy(np.array(camera.load_image_uint8())).float() / 255.0
    if image.shape[-1] == 4:
        image = image[..., :3] * image[..., 3:] + background * (1.0 - image[..., 3:])
    return image


def run_nerf(config: NerfConfig) -> int:
    """Train (or resume) and report the held-out PSNR."""
    import torch
    from tqdm import tqdm

    from geo3d.io.detect import read_capture
    from geo3d.nerf.data import rays_from_cameras, scene_box
    from geo3d.nerf.trainer import NerfTrainer
    from geo3d.training.checkpoint import CheckpointError, load_checkpoint, restore, save_checkpoint
    from geo3d.utils.atomic import atomic_write_text

    if config.capture is None:
        raise ValueError("give the CAPTURE to train on (e.g. geo3d train nerf ../shared/data/lego_200)")
    train_config(config).check()
    if config.minutes < 0 or not math.isfinite(config.minutes):
        raise ValueError(f"minutes must be a finite number >= 0, got {config.minutes}")
    for name in ("checkpoint_every", "eval_views"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    last = out / "checkpoints" / "last.pt"
    metrics_path = out / "metrics.json"
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    if config.overwrite and out.is_dir():
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        metrics_path.unlink(missing_ok=True)

    capture = read_capture(config.capture)
    train_cameras, held_out = split_cameras(capture, config.holdout_every)
    bank = rays_from_cameras(train_cameras)
    aabb = config.aabb or scene_box(capture)
    trainer = NerfTrainer(train_config(config), bank, aabb)
    history: list[dict] = []
    elapsed = 0.0
    if last.is_file():
        checkpoint = load_checkpoint(last)
        if checkpoint.config != identity(config):
            changed = sorted(k for k in set(checkpoint.config) | set(identity(config))
                             if checkpoint.config.get(k) != identity(config).get(k))
            raise CheckpointError(f"{last}: made with other options ({', '.join(changed)}); "
                                  f"use --overwrite to start over or another --out")
        trainer.load_state(checkpoint.extra["trainer"])  # first: the dense grid takes its saved size
        restore(checkpoint, trainer.model, trainer.optimizer)
        history = list(checkpoint.metrics.get("history", []))
        elapsed = float(checkpoint.metrics.get("train_seconds", 0.0))
        _log(f"resuming {last} at step {trainer.step} ({elapsed:.0f} s trained)")
    _log(f"{config.capture}: {len(train_cameras)} training images ({len(bank)} rays), {len(held_out)} held out; "
         f"field {config.field}, box {[round(v, 3) for v in aabb]}, step {trainer.step_size:.4f} m")

    def save() -> None:
        save_checkpoint(last, trainer.model, epoch=trainer.step, optimizer=trainer.optimizer,
                        config=identity(config), metrics={"history": history, "train_seconds": elapsed},
                        extra={"task": "train/nerf", "trainer": trainer.state(), "aabb": list(map(float, aabb)),
                               "capture": str(Path(config.capture).resolve())})

    budget = config.minutes * 60.0 if config.minutes else math.inf
    next_eval = (elapsed // config.eval_every + 1) * config.eval_every if config.eval_every else math.inf
    with tqdm(total=config.steps, initial=trainer.step, desc="training nerf", unit="step", file=sys.stderr,
              mininterval=1.0) as bar:
        while trainer.step < config.steps and elapsed < budget:
            start = time.perf_counter()
            stats = trainer.train_step()
            elapsed += time.perf_counter() - start
            bar.update(1)
            bar.set_postfix(psnr=f"{stats.psnr:.2f}", rays=stats.rays, samples=stats.samples, refresh=False)
            if elapsed >= next_eval and held_out:
                value, seconds = held_out_psnr(trainer, held_out[: config.eval_views])
                history.append({"seconds": round(elapsed, 2), "step": trainer.step, "psnr": round(value, 3),
                                "render_seconds": round(seconds, 3)})
                bar.write(f"{elapsed:7.0f} s  step {trainer.step}  held-out PSNR {value:.2f} dB", file=sys.stderr)
                next_eval += config.eval_every
            if trainer.step % config.checkpoint_every == 0:
                save()
    save()
    result: dict = {"steps": trainer.step, "train_seconds": round(elapsed, 2), "history": history}
    if held_out:
        value, seconds = held_out_psnr(trainer, held_out)
        result.update(psnr=round(value, 3), render_seconds=round(seconds, 3), held_out_images=len(held_out))
        print(f"held-out PSNR {value:.2f} dB over {len(held_out)} images ({seconds:.2f} s per image); "
              f"{trainer.step} steps in {elapsed:.0f} s")
    else:
        print(f"{trainer.step} steps in {elapsed:.0f} s (no held-out images)")
    atomic_write_text(metrics_path, json.dumps({"options": identity(config), **result}, indent=1))
    return 0
