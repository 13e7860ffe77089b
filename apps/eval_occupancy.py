"""``geo3d eval occupancy``: the metric table of an occupancy checkpoint on held-out frames.

``geo3d eval occupancy --checkpoint assets/occupancy/occupancy.pt`` prepares held-out synthetic scenes
(seeds from 9000, never used for training or validation), runs the network, POP-3D's training-free
projection baseline and the ground-truth-geometry oracle on the same frames
(:mod:`geo3d.occupancy.evaluation`) and prints occupancy IoU, zero-shot mIoU over the 16 classes and
text-retrieval mAP, with per-class and per-query tables. ``--data CAPTURE`` evaluates captures
instead (a nuScenes info pickle: geometry against the LiDAR, and retrieval of the points inside the
annotated 3D boxes). ``--json FILE`` also writes the results (atomically).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as geo3d train does (see apps/train.py)


@dataclass
class OccupancyConfig:
    """Evaluate an occupancy checkpoint: IoU, zero-shot mIoU, retrieval mAP, baseline and oracle."""

    checkpoint: Path | None = None
    """A checkpoint of geo3d train occupancy, or its run folder (checkpoints/last.pt); default: the
    shipped assets/occupancy/occupancy.pt."""
    data: tuple[Path, ...] = ()
    """Captures to evaluate (geo3d capture folders, nuScenes info pickles); default: synthetic scenes."""
    seed_start: int = 9000
    """First seed of the held-out synthetic scenes."""
    scenes: int = 4
    """Held-out synthetic scenes."""
    frames: int = 5
    """Frames per synthetic scene."""
    teacher: str | None = None
    """Dense teacher of the baseline and oracle: 'label', 'maskclip:/path' or 'none'; default: the
    checkpoint's ('label'), or 'none' for captures without semantic images (--data)."""
    threshold: float | None = None
    """Occupancy-logit threshold (> threshold: occupied); default: the checkpoint's, chosen on its
    validation frames by geo3d train occupancy (0 when it has none)."""
    samples_dir: Path = Path("out/occupancy-eval/samples")
    """Where prepared frames are kept (reused by later evaluations)."""
    json: Path | None = None
    """Also write the results to this JSON file (atomically)."""
    workers: int = 2
    """Processes preparing frames in parallel."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "occupancy" / "occupancy.pt"
"""The checkpoint shipped in the repository (assets/occupancy/README.md says how it was made)."""


def checkpoint_file(path: Path | None) -> Path:
    """A checkpoint file, ``checkpoints/last.pt`` of a run folder, or the shipped one (None)."""
    from geo3d_apps.eval import _checkpoint_file

    return _checkpoint_file(SHIPPED_CHECKPOINT if path is None else path)


def run_occupancy(config: OccupancyConfig) -> int:
    """Prepare the frames, evaluate, print the report."""
    for name in ("scenes", "frames"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    for path in config.data:
        if not Path(path).exists():
            raise ValueError(f"capture {path} not found")
    import torch
    from tqdm import tqdm

    from geo3d.occupancy.evaluation import evaluate_occupancy
    from geo3d.occupancy.report import format_report
    from geo3d.occupancy.training import load_occupancy_net
    from geo3d.training.checkpoint import CheckpointError
    from geo3d.utils.atomic import atomic_write_text
    from geo3d_apps.occupancy_data import class_and_query_embeddings, make_teacher, prepare_split, text_encoder
    from geo3d_apps.train_occupancy import OccupancyConfig as TrainConfig

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    path = checkpoint_file(config.checkpoint)
    net, checkpoint = load_occupancy_net(path)
    if checkpoint.extra.get("task") != "train/occupancy":
        raise CheckpointError(f"{path}: not a checkpoint of geo3d train occupancy")
    run = TrainConfig(**{k: v for k, v in checkpoint.config.items() if k in TrainConfig.__dataclass_fields__
                         and k not in ("out", "data", "val_data", "samples_dir")})
    encoder = text_encoder(checkpoint.extra.get("text_encoder", run.text_encoder))
    if encoder.space != checkpoint.extra.get("text_space", encoder.space):
        raise CheckpointError(f"{path}: trained in text space {checkpoint.extra.get('text_space')!r}, the text "
                              f"encoder {run.text_encoder!r} gives {encoder.space!r}")
    teacher_spec = config.teacher or ("none" if config.data else run.teacher)
    teacher = None if teacher_spec == "none" else make_teacher(
        teacher_spec, encoder, patch_size=run.teacher_patch_size, confusion_rate=run.teacher_confusion_rate)
    run.frames = config.frames
    from geo3d_apps.occupancy_data import synth_config

    seeds = list(range(config.seed_start, config.seed_start + config.scenes))
    trained = set(range(run.train_seed_start, run.train_seed_start + run.train_scenes)) | set(
        range(run.val_seed_start, run.val_seed_start + run.val_scenes))
    if not config.data and trained & set(seeds):
        raise ValueError(f"seeds {sorted(trained & set(seeds))[:5]} were used for training or validation; "
                         "choose --seed-start outside them")
    samples = prepare_split(config.samples_dir, name="eval", teacher=teacher,
                            image_size=tuple(net.config.image_size), seeds=seeds, synth=synth_config(run),
                            captures=list(config.data) or None, max_distill_points=None,
                            workers=config.workers)
    threshold = config.threshold if config.threshold is not None else float(checkpoint.extra.get("threshold", 0.0))
    classes, queries_emb, _ = class_and_query_embeddings(encoder)
    bar = tqdm(total=len(samples), desc="evaluating", unit="frame", file=sys.stderr)
    start = time.perf_counter()
    result = evaluate_occupancy(net, (samples[i] for i in range(len(samples))), classes, queries_emb,
                                threshold=threshold, progress=lambda done, seconds: bar.update(1))
    bar.close()
    what = ", ".join(map(str, config.data)) if config.data else f"synthetic seeds {seeds[0]}-{seeds[-1]}"
    print(f"{path} (step {checkpoint.extra.get('step')}) on {what}: {len(samples)} frames "
          f"({time.perf_counter() - start:.0f} s)")
    print(format_report(result))
    if config.json is not None:
        atomic_write_text(config.json, result.to_json())
    return 0
