"""Prepared occupancy samples on disk: one compact file per frame, written once, read every epoch.

Making a sample (:func:`~geo3d.occupancy.samples.make_sample`) renders or decodes the frame, traces
every LiDAR ray through the grid and runs the teacher: seconds per frame, more than a training step.
Training therefore prepares each frame once with :func:`save_sample` and reads it back with
:func:`load_sample` (about 10 ms).

What the file holds, and how it differs from the sample it was made from:

- ``images`` are stored as uint8 (``round(255 x)``): at most 1/510 off the float images, the
  resolution of the rendered or decoded pixels they were resized from;
- ``distill_*``: at most ``max_distill_points`` of the distillation points are kept, drawn
  uniformly without replacement by a generator seeded with ``seed`` (None keeps them all, as
  evaluation needs); features are stored as float16 and renormalised on load (cosines move by
  < 1e-3, as in :class:`~geo3d.language.cache.FeatureCache`);
- ``gt_semantics`` as uint8, ``lidar_labels`` as int16 (class ids < 256); everything else as is.

Files are written atomically (temporary file + rename) with a format tag and version; a truncated,
corrupt or foreign file raises :class:`~geo3d.occupancy.targets.OccupancyError` naming it.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch
import torch.utils.data

from geo3d.occupancy.samples import OccupancySample
from geo3d.occupancy.targets import OccupancyError
from geo3d.utils.atomic import atomic_write_bytes

FORMAT_NAME = "geo3d-occupancy-sample"
FORMAT_VERSION = 1
_TENSORS = ("K", "cam2ego", "lidar_points_ego", "lidar_origin_ego", "occupancy_state", "distill_points_ego",
            "distill_index", "distill_camera", "distill_uv", "gt_visible")


def subsample_distillation(sample: OccupancySample, max_points: int | None, seed: int = 0) -> OccupancySample:
    """The sample with at most ``max_points`` distillation points (uniform, without replacement,
    seeded; the kept points stay in their original order). None or enough points: unchanged."""
    count = sample.distill_points_ego.shape[0]
    if max_points is None or count <= max_points:
        return sample
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1:
        raise OccupancyError(f"max_points must be a positive int or None, got {max_points!r}")
    generator = torch.Generator().manual_seed(int(seed))
    keep = torch.randperm(count, generator=generator)[:max_points].sort().values
    fields = dict(vars(sample))
    for name in ("distill_points_ego", "distill_features", "distill_index", "distill_camera", "distill_uv"):
        fields[name] = fields[name][keep]
    return OccupancySample(**fields)


def save_sample(path: str | Path, sample: OccupancySample, *, max_distill_points: int | None = None,
                seed: int = 0) -> Path:
    """Write ``sample`` to ``path`` atomically (module docstring); returns ``path``."""
    if not isinstance(sample, OccupancySample):
        raise OccupancyError(f"sample must be an OccupancySample, got {type(sample).__name__}")
    sample = subsample_distillation(sample, max_distill_points, seed)
    payload = {name: getattr(sample, name).contiguous() for name in _TENSORS if getattr(sample, name) is not None}
    payload["images"] = (sample.images.clamp(0, 1) * 255).round().to(torch.uint8)
    payload["distill_features"] = sample.distill_features.to(torch.float16)
    if sample.gt_semantics is not None:
        if sample.gt_semantics.numel() and int(sample.gt_semantics.max()) > 255:
            raise OccupancyError("gt_semantics holds class ids > 255, which this format does not store")
        payload["gt_semantics"] = sample.gt_semantics.to(torch.uint8)
    if sample.lidar_labels is not None:
        payload["lidar_labels"] = sample.lidar_labels.to(torch.int16)
    payload.update(format=FORMAT_NAME, version=FORMAT_VERSION, camera_names=list(sample.camera_names),
                   frame_id=int(sample.frame_id), capture_id=str(sample.capture_id))
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_sample(path: str | Path) -> OccupancySample:
    """Read a sample written by :func:`save_sample` (float32 images in [0, 1], unit float32 features).

    Raises:
        OccupancyError: missing, truncated, corrupt or foreign file, or a newer format version.
    """
    path = Path(path)
    if not path.is_file():
        raise OccupancyError(f"{path}: prepared sample not found")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            raise OccupancyError(f"{path}: corrupt prepared sample (CRC mismatch in {bad!r})")
        data = torch.load(path, map_location="cpu", weights_only=True)
    except OccupancyError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, OSError, RuntimeError, UnpicklingError
        raise OccupancyError(f"{path}: not a prepared sample, or truncated ({type(exc).__name__}: "
                             f"{str(exc)[:160]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise OccupancyError(f"{path}: not a geo3d prepared occupancy sample")
    if not isinstance(data.get("version"), int) or data["version"] > FORMAT_VERSION:
        raise OccupancyError(f"{path}: prepared-sample version {data.get('version')!r} is not readable by this "
                             f"geo3d (reads <= {FORMAT_VERSION})")
    missing = [name for name in (*_TENSORS[:-1], "images", "distill_features") if name not in data]
    if missing:
        raise OccupancyError(f"{path}: prepared sample misses {missing}")
    features = data["distill_features"].float()
    features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    semantics, labels = data.get("gt_semantics"), data.get("lidar_labels")
    return OccupancySample(
        images=data["images"].float() / 255.0, K=data["K"], cam2ego=data["cam2ego"],
        camera_names=tuple(data["camera_names"]), lidar_points_ego=data["lidar_points_ego"],
        lidar_origin_ego=data["lidar_origin_ego"], occupancy_state=data["occupancy_state"],
        distill_points_ego=data["distill_points_ego"], distill_features=features,
        distill_index=data["distill_index"], distill_camera=data["distill_camera"], distill_uv=data["distill_uv"],
        gt_semantics=None if semantics is None else semantics.long(), gt_visible=data.get("gt_visible"),
        lidar_labels=None if labels is None else labels.long(), frame_id=int(data["frame_id"]),
        capture_id=str(data["capture_id"]),
    )


SAMPLE_PATTERN = "sample_{:06d}.pt"
MANIFEST = "manifest.json"


class PreparedSamples(torch.utils.data.Dataset):
    """The prepared samples of a folder written by :func:`prepare_samples` (item ``i`` is
    ``sample_<i>.pt``, read with :func:`load_sample`).

    Raises:
        OccupancyError: no manifest, or a sample file missing.
    """

    def __init__(self, folder: str | Path) -> None:
        import json

        self.folder = Path(folder)
        manifest = self.folder / MANIFEST
        if not manifest.is_file():
            raise OccupancyError(f"{self.folder}: no prepared samples ({MANIFEST} missing)")
        try:
            self.manifest = json.loads(manifest.read_text())
            self.count = int(self.manifest["count"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OccupancyError(f"{manifest}: unreadable manifest ({exc})") from None
        missing = [i for i in range(self.count) if not (self.folder / SAMPLE_PATTERN.format(i)).is_file()]
        if missing:
            raise OccupancyError(f"{self.folder}: {len(missing)} of {self.count} samples missing "
                                 f"(first {SAMPLE_PATTERN.format(missing[0])}); prepare them again")

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> OccupancySample:
        if isinstance(index, bool) or not 0 <= int(index) < self.count:
            raise IndexError(f"index must be in [0, {self.count}), got {index!r}")
        return load_sample(self.folder / SAMPLE_PATTERN.format(int(index)))


def _identity_collate(sample):
    return sample


def _readable(path: Path) -> bool:
    try:
        load_sample(path)
    except OccupancyError:
        return False
    return True


def prepare_samples(dataset, folder: str | Path, identity: dict, *, max_distill_points: int | None = None,
                    seed: int = 0, workers: int = 0, progress=None) -> PreparedSamples:
    """Write every item of ``dataset`` (:class:`OccupancySample` items) to ``folder`` once.

    Resumable: samples already there (and readable) are kept when the folder's manifest records the
    same ``identity`` (a JSON dict saying what made them: data, teacher, image size, ...); a folder
    of another identity is an error (choose another folder or delete it). The manifest is written
    first (with the count) and each sample atomically, so an interrupted run resumes where it stopped.

    Args:
        dataset: a map-style dataset of :class:`OccupancySample` (``SyntheticOccupancyDataset``,
            ``CaptureOccupancyDataset``).
        folder: where the ``sample_<i>.pt`` files and ``manifest.json`` go.
        identity: JSON dict identifying the content.
        max_distill_points: passed to :func:`save_sample` (item ``i`` draws with ``seed + i``).
        workers: ``DataLoader`` worker processes making samples in parallel (0: in this process).
        progress: optional wrapper of an iterable (e.g. ``tqdm``) for a progress bar.
    """
    import json

    from geo3d.utils.atomic import atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / MANIFEST
    wanted = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "count": len(dataset),
              "max_distill_points": max_distill_points, "seed": seed, "identity": identity}
    wanted = json.loads(json.dumps(wanted))
    if manifest.is_file():
        try:
            saved = json.loads(manifest.read_text())
        except (OSError, ValueError):
            saved = None
        if saved != wanted:
            raise OccupancyError(f"{folder} holds samples prepared differently ({MANIFEST} differs); delete the "
                                 "folder or choose another one")
    elif any(folder.glob("sample_*.pt")):
        raise OccupancyError(f"{folder} holds sample files but no {MANIFEST}; delete them or choose another folder")
    atomic_write_text(manifest, json.dumps(wanted, indent=1))
    todo = [i for i in range(len(dataset)) if not _readable(folder / SAMPLE_PATTERN.format(i))]
    if todo:
        # spawn, not fork: a worker forked after torch's OpenMP pool started can deadlock
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, todo), batch_size=None,
                                             num_workers=workers, collate_fn=_identity_collate,
                                             multiprocessing_context="spawn" if workers > 0 else None)
        items = zip(todo, loader)
        for index, sample in (progress(items, len(todo)) if progress is not None else items):
            save_sample(folder / SAMPLE_PATTERN.format(index), sample, max_distill_points=max_distill_points,
                        seed=seed + index)
    return PreparedSamples(folder)
