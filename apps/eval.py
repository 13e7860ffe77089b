"""``geo3d eval TASK``: evaluate a trained model. Tasks: ``pointnet``.

``geo3d eval pointnet --checkpoint RUN_DIR_OR_FILE`` loads a checkpoint of ``geo3d train pointnet``
(a run folder means its ``checkpoints/last.pt``), evaluates it on a split of the data it was trained
on (or of ``--data``) and prints the overall accuracy, the mean class accuracy and a per-class table;
``--json FILE`` also writes them (atomically).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as geo3d train does (see apps/train.py)


@dataclass
class PointNetConfig:
    """Evaluate a PointNet checkpoint: overall, mean class and per-class accuracy."""

    checkpoint: Path
    """A checkpoint file, or a run folder of geo3d train pointnet (its checkpoints/last.pt)."""
    data: Path | None = None
    """A folder with train.npz / test.npz or a ModelNet40 root (default: the data the run was trained on)."""
    split: Literal["test", "train"] = "test"
    """The split to evaluate."""
    json: Path | None = None
    """Also write the results to this JSON file (atomically)."""
    batch_size: int = 64
    """Shapes per evaluation batch."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)."""


def _checkpoint_file(path: Path) -> Path:
    if path.is_dir():
        last = path / "checkpoints" / "last.pt"
        if not last.is_file():
            from geo3d.training.checkpoint import CheckpointError

            raise CheckpointError(f"{path}: a folder without checkpoints/last.pt (not a geo3d train run)")
        return last
    return path


def run_pointnet(config: PointNetConfig) -> int:
    """Evaluate and print the accuracy table."""
    if config.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {config.batch_size}")
    import torch

    from geo3d.training.checkpoint import CheckpointError, load_checkpoint
    from geo3d.training.pointnet import (
        PointNetTrainConfig,
        PointNetTrainer,
        load_shape_split,
        shape_set_tensors,
    )
    from geo3d.utils.atomic import atomic_write_text

    if config.threads is not None:
        torch.set_num_threads(max(1, config.threads))
    path = _checkpoint_file(config.checkpoint)
    checkpoint = load_checkpoint(path)
    if checkpoint.extra.get("task") != "train/pointnet":
        raise CheckpointError(f"{path}: not a PointNet checkpoint of geo3d train pointnet "
                              f"(task {checkpoint.extra.get('task')!r})")
    known = {f.name for f in fields(PointNetTrainConfig)}
    try:
        train_config = PointNetTrainConfig(**{k: v for k, v in checkpoint.config.items() if k in known})
        train_config.eval_batch_size = config.batch_size
        train_config.check()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid training config in the checkpoint ({exc})") from None
    data = config.data if config.data is not None else Path(checkpoint.extra.get("data", ""))
    stored_points = checkpoint.config.get("shape_points", train_config.num_points)
    shapes = load_shape_split(data, config.split, stored_points)
    class_names = list(checkpoint.extra.get("class_names", []))
    if list(shapes.class_names) != class_names:
        raise ValueError(f"{data}: the data's classes {list(shapes.class_names)} differ from the "
                         f"checkpoint's {class_names}")
    trainer = PointNetTrainer(train_config, len(class_names))
    trainer.resume(checkpoint, weights_only=True)
    metrics, _ = trainer.evaluate(shape_set_tensors(shapes, train_config.use_normals))

    width = max(len(n) for n in class_names)
    print(f"{path} (epoch {checkpoint.epoch}) on {data} [{config.split}, {len(shapes)} shapes]")
    print(f"{'class':<{width}}  {'shapes':>6}  accuracy")
    for name, count, accuracy in zip(class_names, metrics.class_counts, metrics.per_class_accuracy):
        shown = "-" if math.isnan(accuracy) else f"{accuracy:.4f}"
        print(f"{name:<{width}}  {int(count):>6}  {shown}")
    print(f"overall accuracy {metrics.overall_accuracy:.4f}, "
          f"mean class accuracy {metrics.mean_class_accuracy:.4f}")
    if config.json is not None:
        result = {"checkpoint": str(path), "epoch": checkpoint.epoch, "data": str(data),
                  "split": config.split, "shapes": len(shapes), **metrics.to_dict(class_names)}
        atomic_write_text(config.json, json.dumps(result, indent=1))
    return 0
