"""``geo3d train bev``: OccFeat's few-label experiment, BEV segmentation fine-tuned from an occupancy network.

OccFeat (Sirko-Galouchenko et al., CVPR-W 2024) pre-trains a camera-to-BEV network with 3D occupancy and
feature-distillation losses and fine-tunes it for BEV segmentation; the pre-training pays off most when
few frames are labelled. This command fine-tunes a :class:`geo3d.occupancy.bev.BevSegmentationNet`
(vehicle and drivable-surface BEV segmentation, :data:`~geo3d.occupancy.bev.BEV_CLASSES`) on a
deterministic ``--label-fraction`` of the prepared training frames (:func:`~geo3d.occupancy.bev.label_subset`)
and reports the per-class IoU on every validation frame::

    geo3d train bev --train-samples DIR --val-samples DIR --pretrained occ.pt --compare --out OUT

- ``--train-samples`` / ``--val-samples``: folders of prepared samples (``sample_*.pt``,
  :mod:`geo3d.occupancy.store`, as ``geo3d train occupancy`` prepares them) with ground truth.
- ``--pretrained CKPT``: an occupancy checkpoint (``geo3d train occupancy``); the backbone is rebuilt
  from its ``net_config`` and its weights loaded strictly. Without it, a fresh ``--net default|tiny``.
- ``--compare``: both arms, ``pretrained`` and ``scratch`` (the same architecture and initial seed,
  randomly initialised), on the same labelled frames with the same steps, schedule and seed; a table
  of IoUs is printed on stdout.

``OUT`` receives ``bev_<arm>.pt`` (a :mod:`geo3d.training.checkpoint` of the fine-tuned network,
``extra["task"] == "train/bev"``) and ``metrics.json`` (atomic): the options, the labelled frames, and
per arm the IoUs, losses, timings and the per-step history. Progress bars go to stderr.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see apps/train.py: idle OpenMP threads sleep

from geo3d.occupancy.bev import BevTrainConfig  # noqa: E402  (imports torch)

TRAIN_OPTIONS = tuple(f.name for f in fields(BevTrainConfig))
"""Options that are :class:`geo3d.occupancy.bev.BevTrainConfig` fields (inherited by :class:`BevConfig`)."""
ARMS = ("pretrained", "scratch")


@dataclass(frozen=True)
class BevConfig(BevTrainConfig):
    """Fine-tune an occupancy network for BEV segmentation on a few labelled frames (OccFeat)."""

    train_samples: Path | None = None
    """Folder of prepared training samples (sample_*.pt with ground truth); required."""
    val_samples: Path | None = None
    """Folder of prepared validation samples (sample_*.pt with ground truth); required."""
    pretrained: Path | None = None
    """Occupancy checkpoint (geo3d train occupancy) whose backbone is fine-tuned; default: a fresh --net."""
    net: Literal["default", "tiny"] = "default"
    """Architecture without --pretrained: OccupancyNetConfig() or OccupancyNetConfig.tiny()."""
    label_fraction: float = 0.05
    """Share of the training frames that are labelled (at least one frame), drawn with --seed."""
    compare: bool = False
    """Run both arms (pretrained and from scratch) and print a table; needs --pretrained."""
    pos_weight: tuple[float, ...] = (2.13, 1.0)
    """BCE weight of positive cells per class (vehicle, drivable); 2.13 is LSS / Simple-BEV's vehicle weight."""
    max_val_frames: int | None = None
    """Evaluate on the first N validation frames only (default: all)."""
    out: Path = Path("out/bev")
    """Output folder: metrics.json and bev_<arm>.pt."""
    threads: int | None = 2
    """torch CPU threads (None: torch's choice)."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train_config(config: BevConfig):
    """The :class:`~geo3d.occupancy.bev.BevTrainConfig` part of the options."""
    values = {name: getattr(config, name) for name in TRAIN_OPTIONS}
    weights = tuple(values["pos_weight"])
    values["pos_weight"] = float(weights[0]) if len(weights) == 1 else (weights or None)
    return BevTrainConfig(**values)


def _check(config: BevConfig) -> None:
    from geo3d.occupancy.bev import BEV_CLASSES
    from geo3d.occupancy.targets import OccupancyError

    for name in ("train_samples", "val_samples"):
        if getattr(config, name) is None:
            raise ValueError(f"--{name.replace('_', '-')} is required (a folder of prepared sample_*.pt files)")
    if isinstance(config.label_fraction, bool) or not 0 < config.label_fraction <= 1:
        raise ValueError(f"--label-fraction must lie in (0, 1], got {config.label_fraction}")
    if config.compare and config.pretrained is None:
        raise ValueError("--compare needs --pretrained (the pre-trained arm's occupancy checkpoint)")
    if config.pretrained is not None and not config.pretrained.is_file():
        raise ValueError(f"--pretrained {config.pretrained}: file not found")
    if config.pos_weight and len(config.pos_weight) not in (1, len(BEV_CLASSES)):
        raise ValueError(f"--pos-weight takes 1 or {len(BEV_CLASSES)} numbers ({', '.join(BEV_CLASSES)}), "
                         f"got {len(config.pos_weight)}")
    if config.max_val_frames is not None and config.max_val_frames < 1:
        raise ValueError(f"--max-val-frames must be >= 1, got {config.max_val_frames}")
    if config.threads is not None and config.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {config.threads}")
    if config.out.exists() and not config.out.is_dir():
        raise ValueError(f"--out {config.out} is a file, not a folder")
    try:
        train_config(config).check()
    except OccupancyError as exc:  # messages start with the field name: report it as the option
        name, _, rest = str(exc).partition(" ")
        raise ValueError(f"--{name.replace('_', '-')} {rest}") from None


def sample_files(folder: Path, option: str) -> list[Path]:
    """The ``sample_*.pt`` files of a prepared-sample folder, sorted by name."""
    if not folder.is_dir():
        raise ValueError(f"{option} {folder}: folder not found")
    files = sorted(folder.glob("sample_*.pt"))
    if not files:
        inside = sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.glob("sample_*.pt")))
        hint = f" (prepared splits inside: {', '.join(inside)})" if inside else ""
        raise ValueError(f"{option} {folder}: no sample_*.pt prepared samples{hint}")
    return files


def load_backbone(path: Path):
    """``(OccupancyNet, Checkpoint)`` of an occupancy checkpoint written by ``geo3d train occupancy``
    (:func:`geo3d.occupancy.training.load_occupancy_net`), refusing checkpoints of other tasks."""
    from geo3d.occupancy.targets import OccupancyError
    from geo3d.occupancy.training import load_occupancy_net
    from geo3d.training.checkpoint import CheckpointError, load_checkpoint

    task = load_checkpoint(path).extra.get("task")
    if task is not None and task != "train/occupancy":
        raise OccupancyError(f"--pretrained {path}: a {task!r} checkpoint, not an occupancy network "
                             "(geo3d train occupancy)")
    try:
        net, checkpoint = load_occupancy_net(path)
    except CheckpointError as exc:
        raise OccupancyError(f"--pretrained {exc}") from None
    return net.train(), checkpoint


def _backbone(config: BevConfig, arm: str, pretrained):
    """The arm's backbone: a copy of the loaded pre-trained network, or a fresh one of the pre-trained
    architecture and initial seed (of ``--net`` without ``--pretrained``)."""
    import copy

    from geo3d.occupancy.network import OccupancyNet, OccupancyNetConfig

    if arm == "pretrained":
        return copy.deepcopy(pretrained)
    if pretrained is not None:
        return OccupancyNet(pretrained.config)
    return OccupancyNet(OccupancyNetConfig.tiny() if config.net == "tiny" else OccupancyNetConfig())


def _plain(value):
    """JSON-safe: NaN / inf -> None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _run_arm(config: BevConfig, arm: str, pretrained, labelled, val_files, classes) -> dict:
    from tqdm import tqdm

    from geo3d.occupancy.bev import BevSegmentationNet, evaluate_bev, train_bev_head
    from geo3d.training.checkpoint import save_checkpoint
    from geo3d_apps.config import to_dict

    backbone = _backbone(config, arm, pretrained)
    net = BevSegmentationNet(backbone, len(classes), seed=config.seed)
    train = train_config(config)
    with tqdm(total=config.steps, desc=f"fine-tuning ({arm})", unit="step", file=sys.stderr,
              mininterval=1.0) as bar:
        def progress(step: int, loss: float) -> None:
            bar.update(1)
            if step % 10 == 0 or step == config.steps:
                bar.set_postfix(loss=f"{loss:.3f}")

        result = train_bev_head(net, labelled, train, classes=classes, progress=progress)
    start = time.perf_counter()
    with tqdm(total=len(val_files), desc=f"evaluating ({arm})", unit="frame", file=sys.stderr,
              mininterval=1.0) as bar:
        evaluation = evaluate_bev(net, val_files, classes=classes, pos_weight=train.pos_weight,
                                  lovasz_weight=train.lovasz_weight, progress=lambda done: bar.update(done - bar.n))
    eval_seconds = time.perf_counter() - start
    last = [h["loss"] for h in result.history[-10:]]
    metrics = {"iou": evaluation.iou, "mean_iou": evaluation.mean_iou, "val_loss": evaluation.loss,
               "val_frames": evaluation.frames, "intersection": evaluation.intersection.tolist(),
               "union": evaluation.union.tolist(), "final_train_loss": sum(last) / len(last),
               "train_seconds": result.seconds, "eval_seconds": eval_seconds,
               "pretrained": str(config.pretrained) if arm == "pretrained" else None}
    checkpoint = config.out / f"bev_{arm}.pt"
    passes = config.steps * config.batch_size // len(labelled)
    save_checkpoint(checkpoint, net, epoch=passes, config=to_dict(config), metrics=_plain(metrics),
                    extra={"task": "train/bev", "arm": arm, "net_config": backbone.config.to_dict(),
                           "num_classes": len(classes), "classes": {k: list(v) for k, v in classes.items()},
                           "steps": config.steps, "pretrained": metrics["pretrained"]})
    metrics.update(checkpoint=checkpoint.name,
                   history=[{k: h[k] for k in ("step", "loss", "bce", "lovasz", "lr")} for h in result.history])
    return metrics


def _table(arms: dict, classes, labelled: int, total: int) -> str:
    names = list(classes)
    header = ["arm", "labelled frames", *(f"{name} IoU" for name in names), "mean"]
    rows = []
    for arm, metrics in arms.items():
        values = [metrics["iou"][name] for name in names] + [metrics["mean_iou"]]
        rows.append([arm, f"{labelled}/{total}",
                     *("n/a" if v is None or not math.isfinite(v) else f"{100 * v:.1f}" for v in values)])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header, *rows]]
    return "\n".join([*lines, "(IoU in %, on the valid cells of the validation frames)"])


def run_bev(config: BevConfig) -> int:
    """Fine-tune (one arm, or both with --compare), evaluate, write metrics.json and checkpoints."""
    _check(config)
    import torch

    from geo3d.occupancy.bev import BEV_CLASSES, label_subset
    from geo3d.occupancy.store import load_sample
    from geo3d.utils.atomic import atomic_write_text
    from geo3d_apps.config import to_dict

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    start = time.perf_counter()
    pretrained = load_backbone(config.pretrained)[0] if config.pretrained is not None else None
    train_files = sample_files(config.train_samples, "--train-samples")
    val_files = sample_files(config.val_samples, "--val-samples")[:config.max_val_frames]
    subset = label_subset(len(train_files), float(config.label_fraction), config.seed).tolist()
    labelled = [load_sample(train_files[i]) for i in subset]
    _log(f"{len(subset)} labelled frames of {len(train_files)} ({100 * config.label_fraction:g} %), "
         f"{len(val_files)} validation frames")
    arms = list(ARMS) if config.compare else ["pretrained" if config.pretrained is not None else "scratch"]
    config.out.mkdir(parents=True, exist_ok=True)
    results = {arm: _run_arm(config, arm, pretrained, labelled, val_files, BEV_CLASSES) for arm in arms}
    metrics = {"task": "train/bev", "options": to_dict(config),
               "classes": {k: list(v) for k, v in BEV_CLASSES.items()}, "train_frames": len(train_files),
               "labelled_frames": len(subset), "labelled_indices": subset,
               "labelled_files": [train_files[i].name for i in subset], "val_frames": len(val_files),
               "arms": results, "seconds": time.perf_counter() - start}
    atomic_write_text(config.out / "metrics.json", json.dumps(_plain(metrics), indent=1) + "\n")
    print(_table(results, BEV_CLASSES, len(subset), len(train_files)))
    if len(results) == 2:
        gain = results["pretrained"]["mean_iou"] - results["scratch"]["mean_iou"]
        if math.isfinite(gain):
            print(f"pre-training gain: {100 * gain:+.1f} mean IoU points")
    _log(f"metrics and checkpoints in {config.out} ({time.perf_counter() - start:.0f} s)")
    return 0
