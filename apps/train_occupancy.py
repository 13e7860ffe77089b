"""``geo3d train occupancy``: train the open-vocabulary occupancy network (POP-3D style, no labels).

``geo3d train occupancy --config default --out DIR`` prepares the training and validation frames once
(:mod:`geo3d_apps.occupancy_data`: synthetic street scenes of held-out seed ranges, or ``--data``
captures), then trains :class:`geo3d.occupancy.OccupancyNet` with the occupancy (LiDAR) and feature-
distillation (teacher) losses (:mod:`geo3d.occupancy.training`). The run folder ``DIR`` holds::

    config.yaml            the run's options (a rerun with other options is refused without --overwrite)
    checkpoints/last.pt    every --checkpoint-every steps and at each epoch's end (atomic)
    checkpoints/best.pt    the validation with the best occupancy IoU (or target IoU without ground truth)
    model.pt               the final network without optimiser state, with the calibrated occupancy
                           threshold (what assets/occupancy/occupancy.pt is)
    metrics.json           per-epoch losses and validation metrics (atomic)
    samples/               prepared frames (unless --samples-dir points elsewhere)

Rerunning the same command resumes from ``last.pt`` at the step it stopped (the same batches follow:
the order of an epoch depends only on the seed and the epoch). Launched with ``torchrun
--nproc-per-node N -m geo3d_apps train occupancy ...``, it trains data-parallel with PyTorch's
DistributedDataParallel (gloo on CPUs, NCCL on GPUs): rank 0 prepares the data and writes the files.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see apps/train.py: idle OpenMP threads sleep

from geo3d.occupancy.training import OccupancyTrainConfig  # noqa: E402  (imports torch)

NOT_IDENTITY = ("out", "overwrite", "threads", "workers", "samples_dir", "checkpoint_every", "device")
"""Options that do not change what a run computes: a rerun may change them and still resume."""


@dataclass
class OccupancyConfig(OccupancyTrainConfig):
    """Train the open-vocabulary occupancy network (resumable; DDP under torchrun)."""

    out: Path = Path("out/occupancy")
    """Run folder: config.yaml, checkpoints/, metrics.json, samples/."""
    overwrite: bool = False
    """Start over: discard the run folder's checkpoints and metrics (prepared samples are kept)."""
    data: tuple[Path, ...] = ()
    """Training captures (geo3d capture folders, nuScenes info pickles); default: synthetic scenes."""
    val_data: tuple[Path, ...] = ()
    """Validation captures (with --data); default: synthetic validation scenes."""
    samples_dir: Path | None = None
    """Where prepared frames are kept (default OUT/samples); shared between runs."""
    train_seed_start: int = 1000
    """First seed of the synthetic training scenes (evaluation uses seeds from 9000: never trained on)."""
    train_scenes: int = 48
    """Synthetic training scenes."""
    val_seed_start: int = 5000
    """First seed of the synthetic validation scenes."""
    val_scenes: int = 2
    """Synthetic validation scenes."""
    frames: int = 5
    """Frames per synthetic scene."""
    frame_interval_s: float = 1.0
    """Time between the frames of a scene, seconds."""
    width: int = 400
    """Rendered camera width, pixels."""
    height: int = 225
    """Rendered camera height, pixels."""
    lidar_beams: int = 32
    """LiDAR beams of the synthetic sensor."""
    voxel_size: float = 0.4
    """Occupancy grid voxel size, metres (the network's output grid; lifting at twice this size)."""
    grid_lower: tuple[float, float, float] = (-40.0, -40.0, -1.0)
    """Occupancy grid lower corner in the ego frame, metres (Occ3D-nuScenes)."""
    grid_upper: tuple[float, float, float] = (40.0, 40.0, 5.4)
    """Occupancy grid upper corner in the ego frame, metres."""
    teacher: str = "label"
    """Dense teacher: 'label' (synthetic stand-in) or 'maskclip:/path/to/clip/checkpoint'."""
    text_encoder: str = "minilm"
    """Text encoder of the teacher's space: 'minilm' or 'clip:/path' (the MaskCLIP checkpoint)."""
    teacher_patch_size: int = 16
    """Label teacher: pixels per feature cell."""
    teacher_confusion_rate: float = 0.1
    """Label teacher: fraction of patches given another class's embedding."""
    max_distill_points: int = 8192
    """Distillation points kept per prepared training frame."""
    net: Literal["default", "tiny"] = "default"
    """Network preset (geo3d.occupancy.OccupancyNetConfig)."""
    image_height: int = 224
    """Network input height, pixels."""
    image_width: int = 400
    """Network input width, pixels."""
    val_every: int = 1
    """Validate every N epochs (and after the last)."""
    checkpoint_every: int = 100
    """Write checkpoints/last.pt every N steps (and at each epoch's end)."""
    workers: int = 2
    """Processes preparing frames in parallel."""
    threads: int | None = None
    """torch CPU threads per process (default: torch's choice)."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda[:i]'."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train_config(config: OccupancyConfig) -> OccupancyTrainConfig:
    """The library's optimisation options of the command's options."""
    return OccupancyTrainConfig(**{f.name: getattr(config, f.name) for f in fields(OccupancyTrainConfig)})


def _check(config: OccupancyConfig) -> None:
    train_config(config).check()
    for name in ("train_scenes", "val_scenes", "frames", "val_every", "checkpoint_every", "width", "height",
                 "lidar_beams", "image_height", "image_width", "max_distill_points"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.workers < 0:
        raise ValueError(f"workers must be >= 0, got {config.workers}")
    if config.threads is not None and config.threads < 1:
        raise ValueError(f"threads must be >= 1, got {config.threads}")
    if bool(config.data) != bool(config.val_data):
        raise ValueError("--data and --val-data go together (training and validation captures)")
    for path in (*config.data, *config.val_data):
        if not Path(path).exists():
            raise ValueError(f"capture {path} not found")


def net_config(config: OccupancyConfig, language_dim: int):
    """The network's config: the preset with the run's image size, grid and teacher dimension."""
    from dataclasses import replace

    from geo3d.occupancy.network import OccupancyNetConfig

    from geo3d.synthetic.occupancy import OccupancyGridSpec

    base = OccupancyNetConfig() if config.net == "default" else OccupancyNetConfig.tiny()
    output = OccupancyGridSpec(tuple(config.grid_lower), tuple(config.grid_upper), config.voxel_size)
    lifting = OccupancyGridSpec(tuple(config.grid_lower), tuple(config.grid_upper), 2 * config.voxel_size)
    return replace(base, image_size=(config.image_height, config.image_width), language_dim=language_dim,
                   output_grid=output, lifting_grid=lifting)


def _device(name: str, local_rank: int):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device(name)


def _init_distributed(device_name: str) -> tuple[int, int, int]:
    """``(rank, world size, local rank)``; initialises the process group under torchrun."""
    import datetime

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    import torch

    backend = "nccl" if device_name != "cpu" and torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=3))
    return dist.get_rank(), dist.get_world_size(), local_rank


def _prepare_run_folder(config: OccupancyConfig, config_path: Path) -> None:
    from geo3d_apps.train import _prepare_run_folder as prepare

    prepare(config, config_path, identity_keys=NOT_IDENTITY, keep=("samples",))


def _prepare_data(config: OccupancyConfig, teacher):
    from geo3d_apps.occupancy_data import prepare_split, synth_config

    folder = config.samples_dir or (config.out / "samples")
    synth = synth_config(config)
    size = (config.image_height, config.image_width)
    common = dict(teacher=teacher, image_size=size, synth=synth, workers=config.workers)
    train = prepare_split(folder, name="train", seeds=list(range(config.train_seed_start,
                                                                 config.train_seed_start + config.train_scenes)),
                          captures=list(config.data) or None, max_distill_points=config.max_distill_points,
                          **common)
    val = prepare_split(folder, name="val", seeds=list(range(config.val_seed_start,
                                                             config.val_seed_start + config.val_scenes)),
                        captures=list(config.val_data) or None, max_distill_points=None, **common)
    return train, val


def run_occupancy(config: OccupancyConfig) -> int:
    """Prepare the frames, train (or resume), validate; print the validation metrics."""
    _check(config)
    import torch
    import yaml
    from tqdm import tqdm

    from geo3d.occupancy.network import OccupancyNet
    from geo3d.occupancy.samples import collate_samples
    from geo3d.occupancy.training import OccupancyTrainer, validation_metrics
    from geo3d.training.checkpoint import load_checkpoint
    from geo3d.utils.atomic import atomic_write_text
    from geo3d_apps.config import to_dict
    from geo3d_apps.occupancy_data import class_and_query_embeddings, make_teacher, text_encoder

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    rank, world, local_rank = _init_distributed(config.device)
    device = _device(config.device, local_rank)
    out = config.out
    config_path, metrics_path = out / "config.yaml", out / "metrics.json"
    last_path, best_path = out / "checkpoints" / "last.pt", out / "checkpoints" / "best.pt"
    encoder = text_encoder(config.text_encoder)
    teacher = make_teacher(config.teacher, encoder, patch_size=config.teacher_patch_size,
                           confusion_rate=config.teacher_confusion_rate)
    if rank == 0:
        _prepare_run_folder(config, config_path)
        train_set, val_set = _prepare_data(config, teacher)
        atomic_write_text(config_path, yaml.safe_dump(to_dict(config), sort_keys=False))
    if world > 1:
        torch.distributed.barrier()
        if rank != 0:
            train_set, val_set = _prepare_data(config, teacher)  # all there: only reads the manifests
    class_embeddings = class_and_query_embeddings(encoder)[0] if val_set[0].gt_semantics is not None else None

    sampler = None
    if world > 1:
        sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True,
                                                      seed=config.seed, drop_last=True)
        steps_per_epoch = len(sampler) // config.batch_size
    else:
        steps_per_epoch = len(train_set) // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(train_set)} training frames give no full batch of {config.batch_size} per process")
    net = OccupancyNet(net_config(config, teacher.dim))
    trainer = OccupancyTrainer(net, train_config(config), steps_per_epoch, device=device)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    if last_path.is_file():
        checkpoint = load_checkpoint(last_path, map_location=device)
        trainer.resume(checkpoint)
        history, best = list(checkpoint.metrics.get("history", [])), checkpoint.metrics.get("best")
        if rank == 0:
            _log(f"resuming from {last_path} (step {trainer.step} of {trainer.total_steps})")
    extra = {"text_encoder": config.text_encoder, "text_space": encoder.space, "teacher": teacher.identity,
             "train_frames": len(train_set), "val_frames": len(val_set), "world_size": world}
    if last_path.is_file():  # a calibrated threshold survives a rerun
        extra.update({k: v for k, v in checkpoint.extra.items() if k.startswith("threshold")})
    params = sum(p.numel() for p in net.parameters())
    if rank == 0:
        print(f"occupancy: {len(train_set)} training / {len(val_set)} validation frames, {params:,} parameters, "
              f"{trainer.total_steps} steps ({config.epochs} epochs x {steps_per_epoch}), {world} process(es) "
              f"on {device}", flush=True)

    def save(path: Path) -> None:
        if rank == 0:
            trainer.save(path, config=to_dict(config), metrics={"history": history, "best": best}, extra=extra)

    session_start = time.perf_counter()
    while trainer.step < trainer.total_steps:
        epoch = trainer.epoch
        if sampler is not None:
            sampler.set_epoch(epoch)
            order = list(sampler)
        else:
            order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
            order = order.tolist()
        done_in_epoch = trainer.step - epoch * steps_per_epoch
        batches = [order[i * config.batch_size:(i + 1) * config.batch_size] for i in range(steps_per_epoch)]
        sums: dict[str, float] = {}
        epoch_start = time.perf_counter()
        bar = tqdm(batches[done_in_epoch:], desc=f"epoch {epoch + 1}/{config.epochs}", unit="step", leave=False,
                   file=sys.stderr, disable=rank != 0)
        for indices in bar:
            parts = trainer.train_step(collate_samples([train_set[i] for i in indices]))
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.set_postfix(loss=f"{parts['total']:.3f}", occ=f"{parts['occupancy']:.3f}",
                            dist=f"{parts['distill']:.3f}")
            if trainer.step % config.checkpoint_every == 0 and trainer.step % steps_per_epoch:
                save(last_path)
        steps = max(len(batches) - done_in_epoch, 1)
        record = {"epoch": epoch + 1, "step": trainer.step, "train_seconds": time.perf_counter() - epoch_start,
                  **{f"train_{k}": v / steps for k, v in sums.items()}}
        if (epoch + 1) % config.val_every == 0 or trainer.step >= trainer.total_steps:
            val_start = time.perf_counter()
            if rank == 0:
                record.update({f"val_{k}": v for k, v in validation_metrics(
                    net, (val_set[i] for i in range(len(val_set))), class_embeddings, device).items()})
            record["val_seconds"] = time.perf_counter() - val_start
        history.append(record)
        key = "val_occupancy_iou" if "val_occupancy_iou" in record else "val_target_iou"
        if key in record and (best is None or record[key] > best.get(key, -1.0)):
            best = record
            save(best_path)
        save(last_path)
        if rank == 0:
            atomic_write_text(metrics_path, json.dumps({"history": history, "best": best}, indent=1))
            shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k.startswith("val_") and k != "val_seconds")
            tqdm.write(f"epoch {epoch + 1}/{config.epochs}: loss {record.get('train_total', float('nan')):.4f} "
                       f"(occupancy {record.get('train_occupancy', float('nan')):.4f}, distillation "
                       f"{record.get('train_distill', float('nan')):.4f}); {shown} ({record['train_seconds']:.0f} s)",
                       file=sys.stdout)
    if rank == 0 and class_embeddings is not None and "threshold" not in extra:
        # the occupancy threshold with the best validation IoU, recorded for geo3d eval occupancy
        from geo3d.occupancy.training import calibrate_threshold

        threshold, ious = calibrate_threshold(net, (val_set[i] for i in range(len(val_set))), device=device)
        extra.update(threshold=threshold, threshold_val_iou=ious[threshold], threshold_val_iou_at_0=ious[0.0])
        print(f"occupancy threshold {threshold:+.2f} (validation IoU {ious[threshold]:.4f}; at 0: "
              f"{ious[0.0]:.4f})", flush=True)
        save(last_path)
    if rank == 0:  # the trained network alone (no optimiser state): what assets/occupancy/ ships
        from geo3d.training.checkpoint import save_checkpoint

        info = {"task": "train/occupancy", "net_config": net.config.to_dict(), "step": trainer.step, **extra}
        save_checkpoint(out / "model.pt", net, epoch=trainer.epoch, config=to_dict(config),
                        metrics={"history": history, "best": best}, extra=info)
        final = history[-1] if history else {}
        print(f"done: {trainer.step} steps; last validation "
              + ", ".join(f"{k[4:]} {v:.4f}" for k, v in final.items() if k.startswith("val_") and k != "val_seconds")
              + f"; this session {time.perf_counter() - session_start:.0f} s; checkpoint {last_path}", flush=True)
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0
