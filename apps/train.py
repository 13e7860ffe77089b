"""``geo3d train TASK``: train a model. Tasks: ``pointnet``.

``geo3d train pointnet --out DIR`` trains a PointNet shape classifier (:mod:`geo3d.training.pointnet`)
on the shape set of ``geo3d synth --kind shapes`` (``--data DIR`` with ``train.npz`` / ``test.npz``;
without ``--data`` the set is generated into ``DIR/data`` once and reused) or on ModelNet40
(``--data ROOT``, either layout of :mod:`geo3d.io.modelnet`). The run folder ``DIR`` holds::

    config.yaml             the run's options (a rerun with other options is refused without --overwrite)
    checkpoints/last.pt     after every epoch (geo3d.training.checkpoint; atomic)
    checkpoints/best.pt     the epoch with the best test overall accuracy so far
    metrics.json            per-epoch history and the final results (atomic)
    data/                   the generated shape set (without --data)

Rerunning the same command resumes from ``checkpoints/last.pt`` (said on stderr); ``--overwrite``
starts over (keeping a generated shape set that matches). At the end it prints the overall and mean
class accuracy on the test split (of the last epoch, and the best epoch) and the wall time.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On a 2-core CPU shared
# with another job, spinning made a training step 5x slower with 2 threads; alone, both policies
# are as fast (benchmarks/bench_pointnet.py, docs/pointnet.md). A value set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from geo3d.training.pointnet import PointNetTrainConfig  # noqa: E402  (imports torch)

DATA_FILES = ("train.npz", "test.npz")
NOT_IDENTITY = ("out", "overwrite", "threads", "eval_batch_size")
"""Options that do not change what a run computes: a rerun may change them and still resume."""


@dataclass
class PointNetConfig(PointNetTrainConfig):
    """Train a PointNet shape classifier (resumable)."""

    out: Path = Path("out/pointnet")
    """Run folder: config.yaml, checkpoints/, metrics.json (and data/ for the generated shape set)."""
    data: Path | None = None
    """A folder with train.npz / test.npz (geo3d synth --kind shapes) or a ModelNet40 root; default:
    generate the synthetic shape set into OUT/data (once)."""
    overwrite: bool = False
    """Start over: discard the run folder's checkpoints and metrics (a matching OUT/data is kept)."""
    shapes_per_class: int = 100
    """Generated shape set (no --data): training shapes per class."""
    test_shapes_per_class: int = 30
    """Generated shape set: held-out test shapes per class (disjoint instance seeds)."""
    shape_points: int = 1024
    """Generated shape set / ModelNet40: points stored per shape (>= num_points)."""
    shape_seed: int = 0
    """Generated shape set: seed (the same seed gives the same shapes)."""
    shape_classes: tuple[str, ...] = ()
    """Generated shape set: the classes to generate (default: all 16 of geo3d.synthetic.shapes)."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice, one per core)."""


def train_config(config: PointNetConfig) -> PointNetTrainConfig:
    """The library's hyper-parameters part of the command's options."""
    return PointNetTrainConfig(**{f.name: getattr(config, f.name) for f in fields(PointNetTrainConfig)})


def _identity(values: dict[str, Any], ignored: tuple[str, ...] = NOT_IDENTITY) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in ignored}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _check(config: PointNetConfig) -> None:
    config.check()
    for name in ("shapes_per_class", "test_shapes_per_class", "shape_points"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.shape_points < config.num_points:
        raise ValueError(f"shape_points ({config.shape_points}) must be >= num_points ({config.num_points})")
    if config.threads is not None and config.threads < 1:
        raise ValueError(f"threads must be >= 1, got {config.threads}")


def synthetic_shapes(folder: Path, config: PointNetConfig):
    """The generated shape set in ``folder`` (train, test), made with progress bars unless a matching
    one is there already."""
    from tqdm import tqdm

    from geo3d.errors import CaptureError
    from geo3d.structures import ShapeSet
    from geo3d.synthetic.shapes import SHAPE_CLASSES, make_shape_set

    classes = tuple(config.shape_classes) or SHAPE_CLASSES
    wanted = {"train": config.shapes_per_class, "test": config.test_shapes_per_class}
    sets = {}
    for split, per_class in wanted.items():
        path = folder / f"{split}.npz"
        expected = {"seed": config.shape_seed, "per_class": per_class, "num_points": config.shape_points}
        if path.is_file():
            try:
                cached = ShapeSet.load(path)
                meta = {k: cached.metadata.get(k) for k in expected}
                if meta == expected and cached.class_names == classes:
                    sets[split] = cached
                    _log(f"using the cached shape set {path}")
                    continue
            except CaptureError as exc:
                _log(f"regenerating {path} ({exc})")
        start = time.perf_counter()
        def progress(todo, split=split):
            return tqdm(todo, desc=f"generating {split} shapes", unit="shape", file=sys.stderr)

        shapes = make_shape_set(split, per_class, config.shape_points, config.shape_seed, classes, progress)
        shapes.save(path)
        _log(f"{split}: {len(shapes)} shapes x {config.shape_points} points -> {path} "
             f"({time.perf_counter() - start:.1f} s)")
        sets[split] = shapes
    return sets["train"], sets["test"]


def load_shapes(data: Path, num_points: int, split: str):
    """One split of ``--data``: ``<data>/<split>.npz`` or a ModelNet40 root (read with a message)."""
    from geo3d.io.modelnet import detect_modelnet_layout
    from geo3d.training.pointnet import load_shape_split

    if not (data / f"{split}.npz").is_file() and detect_modelnet_layout(data) is not None:
        _log(f"reading ModelNet ({detect_modelnet_layout(data)} layout) {split} split from {data} ...")
    return load_shape_split(data, split, num_points)


def _prepare_run_folder(config, config_path: Path, identity_keys: tuple[str, ...] = NOT_IDENTITY,
                        keep: tuple[str, ...] = ("data", "samples")) -> None:
    """Refuse a folder made with other options (or holding something else) unless --overwrite.

    ``identity_keys``: options that do not change the run; ``keep``: entries of a run folder that
    ``--overwrite`` keeps (generated data)."""
    import yaml

    from geo3d_apps.config import to_dict

    out = config.out
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a run folder")
    if config.overwrite:
        for name in ("checkpoints", "metrics.json", "config.yaml"):
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        return
    if config_path.is_file():
        try:
            saved = yaml.safe_load(config_path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            message = f"{config_path}: unreadable run config ({exc}); pass --overwrite to start over"
            raise ValueError(message) from None
        ours = _identity(to_dict(config), identity_keys)
        saved = _identity(saved if isinstance(saved, dict) else {}, identity_keys)
        differ = sorted(k for k in set(ours) | set(saved) if ours.get(k) != saved.get(k))
        if differ:
            detail = ", ".join(f"{k}: {saved.get(k)!r} -> {ours.get(k)!r}" for k in differ[:6])
            raise FileExistsError(f"{out} holds a run made with other options ({detail}); pass --overwrite "
                                  "to start over, or choose another --out")
    elif out.is_dir() and any(p.name not in keep for p in out.iterdir()):
        raise FileExistsError(f"{out} exists and is not a geo3d train run folder (no config.yaml); choose "
                              "another --out or pass --overwrite")


def run_pointnet(config: PointNetConfig) -> int:
    """Train (or resume training) and print the test split's overall and mean class accuracy."""
    _check(config)
    import torch
    import yaml
    from tqdm import tqdm

    from geo3d.training.checkpoint import load_checkpoint
    from geo3d.training.pointnet import PointNetTrainer, shape_set_tensors
    from geo3d.utils.atomic import atomic_write_text
    from geo3d_apps.config import to_dict

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    out = config.out
    config_path, metrics_path = out / "config.yaml", out / "metrics.json"
    last_path, best_path = out / "checkpoints" / "last.pt", out / "checkpoints" / "best.pt"
    _prepare_run_folder(config, config_path)

    if config.data is None:
        data_dir = out / "data"
        train_set, test_set = synthetic_shapes(data_dir, config)
    else:
        data_dir = config.data
        train_set, test_set = (load_shapes(data_dir, config.shape_points, s) for s in ("train", "test"))
    if train_set.class_names != test_set.class_names:
        raise ValueError(f"{data_dir}: train and test splits have different class names")
    atomic_write_text(config_path, yaml.safe_dump(to_dict(config), sort_keys=False))
    train_data = shape_set_tensors(train_set, config.use_normals)
    test_data = shape_set_tensors(test_set, config.use_normals)
    class_names = list(train_set.class_names)

    trainer = PointNetTrainer(train_config(config), len(class_names))
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    if last_path.is_file():
        checkpoint = load_checkpoint(last_path)
        trained_on = checkpoint.extra.get("class_names")
        if trained_on != class_names:
            raise ValueError(f"{last_path}: trained on classes {trained_on}, the data has {class_names}; "
                             "pass --overwrite to start over")
        trainer.resume(checkpoint)
        history, best = list(checkpoint.metrics.get("history", [])), checkpoint.metrics.get("best")
        _log(f"resuming from {last_path} (epoch {trainer.epoch} of {config.epochs} done)")
    extra = {"task": "train/pointnet", "data": str(data_dir.resolve()), "class_names": class_names,
             "train_shapes": len(train_set), "test_shapes": len(test_set)}
    print(f"PointNet: {len(train_set)} training / {len(test_set)} test shapes, {len(class_names)} classes, "
          f"{config.num_points} points, {sum(p.numel() for p in trainer.model.parameters()):,} parameters",
          flush=True)

    session_start, metrics = time.perf_counter(), None
    if trainer.epoch >= config.epochs:
        _log(f"{out}: already trained ({trainer.epoch} epochs); evaluating the last checkpoint")
    while trainer.epoch < config.epochs:
        epoch = trainer.epoch + 1
        stats = trainer.train_epoch(train_data, progress=lambda batches, e=epoch: tqdm(
            batches, desc=f"epoch {e}/{config.epochs}", unit="batch", leave=False, file=sys.stderr))
        eval_start = time.perf_counter()
        metrics, _ = trainer.evaluate(test_data)
        record = {"epoch": epoch, "loss": stats.loss, "train_accuracy": stats.accuracy,
                  "learning_rate": stats.learning_rate, "train_seconds": stats.seconds,
                  "eval_seconds": time.perf_counter() - eval_start,
                  "test_overall_accuracy": metrics.overall_accuracy,
                  "test_mean_class_accuracy": metrics.mean_class_accuracy}
        history.append(record)
        is_best = best is None or metrics.overall_accuracy > best["test_overall_accuracy"]
        if is_best:
            best = record
        summary = {"history": history, "best": best}
        if is_best:  # before last.pt: a resumed run redoes this epoch unless both are written
            trainer.save(best_path, to_dict(config), summary, extra)
        trainer.save(last_path, to_dict(config), summary, extra)
        atomic_write_text(metrics_path, json.dumps(_results(history, best, metrics, class_names), indent=1))
        tqdm.write(f"epoch {epoch}/{config.epochs}: loss {stats.loss:.4f}, train acc {stats.accuracy:.4f}, "
                   f"test OA {metrics.overall_accuracy:.4f}, mAcc {metrics.mean_class_accuracy:.4f} "
                   f"({stats.seconds:.1f} s + eval {record['eval_seconds']:.1f} s)", file=sys.stdout)
    if not history or best is None:
        raise ValueError(f"{last_path}: the checkpoint records no epochs; pass --overwrite to start over")
    if metrics is None:
        metrics, _ = trainer.evaluate(test_data)
    results = _results(history, best, metrics, class_names)
    atomic_write_text(metrics_path, json.dumps(results, indent=1))
    print(f"test split ({len(test_set)} shapes): overall accuracy {metrics.overall_accuracy:.4f}, "
          f"mean class accuracy {metrics.mean_class_accuracy:.4f} (epoch {trainer.epoch}); best epoch "
          f"{best['epoch']}: {best['test_overall_accuracy']:.4f} / {best['test_mean_class_accuracy']:.4f}")
    session_s = time.perf_counter() - session_start
    print(f"training time {results['train_seconds']:.1f} s + evaluation {results['eval_seconds']:.1f} s "
          f"over {len(history)} epochs; this session {session_s:.1f} s; run folder {out}")
    return 0


def _results(history, best, metrics, class_names) -> dict[str, Any]:
    return {
        "epochs": len(history),
        "overall_accuracy": metrics.overall_accuracy,
        "mean_class_accuracy": metrics.mean_class_accuracy,
        "best": best,
        "train_seconds": sum(r["train_seconds"] for r in history),
        "eval_seconds": sum(r["eval_seconds"] for r in history),
        "first_epoch_at_90": next((r["epoch"] for r in history if r["test_overall_accuracy"] >= 0.9), None),
        "test": metrics.to_dict(class_names),
        "history": history,
    }
