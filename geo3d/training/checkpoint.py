"""Training checkpoints: one file holding everything needed to evaluate or resume a run.

A checkpoint is a ``torch.save`` archive (a zip file) of a dictionary::

    format: "geo3d-checkpoint", version: 1
    model: the model's state_dict         optimizer / scheduler: their state_dicts, or None
    epoch: epochs completed               config / metrics / extra: JSON-like dicts

It is written atomically (:func:`geo3d.utils.atomic.atomic_write_bytes`: a reader sees the old file
or the complete new one, never a partial one) and read with ``torch.load(weights_only=True)`` (no
arbitrary pickles), after checking the zip's CRC-32 of every entry, so truncated or corrupted files
are reported as such instead of loading wrong weights. ``config``, ``metrics`` and ``extra`` must
be plain JSON values (dicts, lists, strings, numbers, booleans, None).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from geo3d.errors import Geo3dError
from geo3d.utils.atomic import atomic_write_bytes

FORMAT_NAME = "geo3d-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(Geo3dError):
    """A checkpoint is missing, truncated, corrupt, of another format, or does not fit the model,
    optimizer or scheduler it is loaded into. The message names the file and the problem."""


@dataclass
class Checkpoint:
    """The contents of a checkpoint file (see the module docstring)."""

    model: dict[str, torch.Tensor]
    epoch: int
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def _check_json(value: Any, what: str) -> None:
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint {what} must be plain JSON values ({exc})") from None


def save_checkpoint(path: str | Path, model: torch.nn.Module, *, epoch: int,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    config: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint of ``model`` (and optimizer / scheduler states) to ``path`` atomically.

    Args:
        path: the file to write (its folder is created).
        model: the module whose ``state_dict`` is saved.
        epoch: number of epochs completed.
        optimizer, scheduler: saved with their ``state_dict`` when given.
        config, metrics, extra: plain JSON dicts (the run's configuration, its results, anything else).

    Returns:
        ``path``.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
    config, metrics, extra = dict(config or {}), dict(metrics or {}), dict(extra or {})
    for what, value in (("config", config), ("metrics", metrics), ("extra", extra)):
        _check_json(value, what)
    payload = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "config": config, "metrics": metrics, "extra": extra,
    }  # fmt: skip
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: the file is missing, not a geo3d checkpoint, truncated or corrupt (a CRC
            mismatch), or written by a newer version; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found" if not path.exists() else f"{path}: not a file")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile:
        message = "not a checkpoint, or truncated (not a complete zip archive)"
        raise CheckpointError(f"{path}: {message}") from None
    except (OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read ({exc})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: corrupt checkpoint (CRC mismatch in entry {bad!r})")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError / UnpicklingError / OSError for bad archives
        message = f"cannot load checkpoint ({type(exc).__name__}: {str(exc)[:200]})"
        raise CheckpointError(f"{path}: {message}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not a geo3d checkpoint (format != {FORMAT_NAME!r})")
    version = data.get("version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: invalid checkpoint version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {version} is newer than this geo3d reads "
                              f"({FORMAT_VERSION}); update geo3d")
    missing = sorted({"model", "epoch", "optimizer", "scheduler", "config", "metrics", "extra"} - set(data))
    if missing:
        raise CheckpointError(f"{path}: checkpoint misses entries {missing}")
    if not isinstance(data["model"], dict) or not isinstance(data["epoch"], int):
        raise CheckpointError(f"{path}: checkpoint entries 'model' / 'epoch' have the wrong type")
    return Checkpoint(model=data["model"], epoch=data["epoch"], optimizer=data["optimizer"],
                      scheduler=data["scheduler"], config=data["config"], metrics=data["metrics"],
                      extra=data["extra"], path=path)


def restore(checkpoint: Checkpoint, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
            scheduler: Any = None) -> int:
    """Load a checkpoint's states into ``model`` (strictly) and, when given, ``optimizer`` and
    ``scheduler``; returns the epoch it was saved at (the next epoch to run).

    Raises:
        CheckpointError: missing or unexpected parameters, shape mismatches, or no optimizer /
            scheduler state in the checkpoint when one is asked for; the message names the file.
    """
    where = str(checkpoint.path) if checkpoint.path is not None else "checkpoint"
    own = model.state_dict()
    missing = sorted(set(own) - set(checkpoint.model))
    unexpected = sorted(set(checkpoint.model) - set(own))
    mismatched = [f"{k} {tuple(checkpoint.model[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                  if k in checkpoint.model and tuple(checkpoint.model[k].shape) != tuple(v.shape)]
    if missing or unexpected or mismatched:
        parts = [f"missing {missing[:5]}" * bool(missing), f"unexpected {unexpected[:5]}" * bool(unexpected),
                 f"shape mismatch {mismatched[:5]}" * bool(mismatched)]
        problems = "; ".join(p for p in parts if p)
        raise CheckpointError(f"{where}: the checkpoint does not fit the model ({problems})")
    model.load_state_dict(checkpoint.model)
    for name, target, state in (("optimizer", optimizer, checkpoint.optimizer),
                                ("scheduler", scheduler, checkpoint.scheduler)):
        if target is None:
            continue
        if state is None:
            raise CheckpointError(f"{where}: the checkpoint holds no {name} state")
        try:
            target.load_state_dict(state)
        except (ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise CheckpointError(f"{where}: the {name} state does not fit ({exc})") from None
    return checkpoint.epoch
