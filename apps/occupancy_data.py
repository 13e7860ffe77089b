"""What ``geo3d train occupancy`` and ``geo3d eval occupancy`` share: the text encoder and teacher
from their option strings, the synthetic scene config, and the prepared-sample folders.

Data of a run: either synthetic street scenes (seeds ``seed_start .. seed_start + scenes - 1``,
``frames`` frames each, rendered on the fly once) or capture paths (``--data``, any format
:func:`geo3d.io.read_capture` reads: a geo3d capture folder, a nuScenes info pickle). Every frame is
prepared once into a folder of :mod:`geo3d.occupancy.store` files (resumable; the folder's manifest
records what made it, so other options never reuse it).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def text_encoder(spec: str):
    """``"minilm"`` (offline default), ``"clip:/checkpoint/folder"``, ``"open_clip:MODEL:/file"``."""
    from geo3d.language.text import get_text_encoder

    return get_text_encoder(spec)


def make_teacher(spec: str, encoder, *, patch_size: int = 16, blur_sigma: float = 1.0, noise_std: float = 0.1,
                 confusion_rate: float = 0.1):
    """The dense teacher: ``"label"`` (synthetic stand-in: degraded class-prompt embeddings of the
    label images, in ``encoder``'s space) or ``"maskclip:/checkpoint/folder"`` (MaskCLIP from a local
    transformers CLIP checkpoint; pair it with ``--text-encoder clip:<same folder>``)."""
    from geo3d.language.label_teacher import LabelTeacher
    from geo3d.language.prompts import SYNTHETIC_CLASS_PHRASES, PromptTemplates

    if spec == "label":
        phrases = ["free"] + [synonyms[0] for synonyms in SYNTHETIC_CLASS_PHRASES.values()]
        return LabelTeacher(encoder, phrases, templates=PromptTemplates.default(), patch_size=patch_size,
                            blur_sigma=blur_sigma, noise_std=noise_std, confusion_rate=confusion_rate)
    if spec.startswith("maskclip:"):
        from geo3d.language.maskclip import MaskCLIPTeacher

        teacher = MaskCLIPTeacher(spec.split(":", 1)[1])
        if getattr(encoder, "space", None) != teacher.space:
            raise ValueError(f"teacher {spec!r} lives in space {teacher.space!r} but the text encoder in "
                             f"{getattr(encoder, 'space', None)!r}; use --text-encoder clip:<the same folder>")
        return teacher
    raise ValueError(f"unknown teacher {spec!r} (use 'label' or 'maskclip:/path/to/clip/checkpoint')")


def synth_config(options):
    """The :class:`~geo3d.synthetic.SynthConfig` of the generated scenes (seed set per scene) from a
    command's options (``frames``, ``frame_interval_s``, ``width``, ``height``, ``lidar_beams``,
    ``voxel_size``, ``grid_lower``, ``grid_upper``)."""
    from geo3d.synthetic.generate import SynthConfig

    return SynthConfig(frames=options.frames, frame_interval_s=options.frame_interval_s, width=options.width,
                       height=options.height, lidar_beams=options.lidar_beams, voxel_size_m=options.voxel_size,
                       occupancy_lower=tuple(options.grid_lower), occupancy_upper=tuple(options.grid_upper))


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def prepare_split(folder: Path, *, name: str, teacher, image_size: tuple[int, int], seeds: list[int] | None,
                  synth, captures: list[Path] | None, max_distill_points: int | None, workers: int):
    """Prepared samples of one split in ``folder / <digest of what makes them>`` (made once, with a
    progress bar; reused by later runs with the same data, teacher and image size)."""
    from tqdm import tqdm

    from geo3d.occupancy.dataset import CaptureOccupancyDataset, SyntheticOccupancyDataset
    from geo3d.occupancy.store import prepare_samples

    identity = {"teacher": None if teacher is None else teacher.identity, "image_size": list(image_size),
                "max_distill_points": max_distill_points}
    if captures:
        identity["captures"] = [str(Path(c).resolve()) for c in captures]
        dataset = CaptureOccupancyDataset([str(c) for c in captures], synth.grid_spec(), teacher, image_size)
    else:
        identity.update(seeds=list(seeds), synth=synth.to_dict())
        dataset = SyntheticOccupancyDataset(list(seeds), synth, None, teacher, image_size)
    target = folder / f"{name}-{_digest(identity)}"

    def progress(items, total):
        return tqdm(items, total=total, desc=f"preparing {name} frames", unit="frame", file=sys.stderr)

    samples = prepare_samples(dataset, target, identity, max_distill_points=max_distill_points, seed=0,
                              workers=workers, progress=progress)
    return samples


def class_and_query_embeddings(encoder):
    """``([16, D] class embeddings of classes 1..16, [Q, D] query embeddings, query names)``, with the
    default prompt templates (class synonyms ensembled)."""
    from geo3d.language.prompts import SYNTHETIC_CLASS_PHRASES, PromptTemplates, encode_classes, encode_prompts
    from geo3d.occupancy.metrics import QUERY_SET

    templates = PromptTemplates.default()
    queries = list(QUERY_SET)
    return (encode_classes(encoder, SYNTHETIC_CLASS_PHRASES, templates),
            encode_prompts(encoder, queries, templates), queries)
