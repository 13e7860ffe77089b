"""``geo3d reconstruct [CAPTURE] --method M --out FIELD``: a capture -> an open-vocabulary field.

Without CAPTURE the built-in synthetic street scene (``--seed``) is rendered in memory. Methods come
from :mod:`geo3d.fields.methods` (``fusion``, ``pop3d``; NeRF and splatting register there too); each
method takes the options below that it knows (``--geometry`` is fusion's, ``--checkpoint`` pop3d's).
The field is written atomically; a summary (time, voxels, peak memory) ends the run.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import tyro

def _default_checkpoints() -> dict:
    from geo3d_apps.eval_occupancy import SHIPPED_CHECKPOINT

    return {"pop3d": SHIPPED_CHECKPOINT}


CLIP_HELP = ("real images need a dense vision-language teacher: on a machine with internet, save a CLIP "
             "ViT-B/16 checkpoint in transformers format (e.g. `CLIPModel.from_pretrained("
             "'openai/clip-vit-base-patch16').save_pretrained(DIR)` plus its processor/tokenizer files), copy "
             "DIR here and pass --teacher maskclip:DIR --text-encoder clip:DIR (docs/language.md)")


@dataclass
class Config:
    """Reconstruct a capture (or the built-in synthetic scene) into an open-vocabulary 3D field."""

    capture: tyro.conf.Positional[Path | None] = None
    """Capture to read (any format geo3d reads); none: the built-in synthetic scene of --seed."""
    method: str = "fusion"
    """Reconstruction method: fusion (training-free: LiDAR/depth geometry + a dense 2D teacher averaged over
    views) | pop3d (the feed-forward occupancy network, images only). docs/apps.md."""
    out: Path = Path("out/field.npz")
    """Field file to write (.npz, atomically)."""
    overwrite: bool = False
    """Replace an existing --out file."""
    frame: int = 0
    """Reference frame: the field lives in its ego frame."""
    seed: int = 0
    """Built-in synthetic scene: its seed."""
    text_encoder: str = "minilm"
    """Text encoder of the features' space: minilm (offline default) | clip:DIR (pop3d: the checkpoint's)."""
    teacher: str = "auto"
    """fusion: dense teacher, auto (synthetic label stand-in when the cameras have label images) | label |
    maskclip:DIR (MaskCLIP from a local transformers CLIP checkpoint)."""
    label_noise_std: float = 0.1
    """fusion with the synthetic label teacher: Gaussian noise per feature channel (its degradation)."""
    label_confusion_rate: float = 0.1
    """fusion with the synthetic label teacher: fraction of patches given another class's embedding."""
    checkpoint: Path | None = None
    """pop3d: network checkpoint; default the shipped assets/occupancy/occupancy.pt."""
    geometry: str = "auto"
    """fusion: where points come from, auto | lidar | depth."""
    fuse_frames: tuple[int, ...] = ()
    """fusion: frames fused into the reference frame (default: the reference frame alone)."""
    lower: tuple[float, float, float] = (-40.0, -40.0, -1.0)
    """fusion: grid min corner, metres, ego frame."""
    upper: tuple[float, float, float] = (40.0, 40.0, 5.4)
    """fusion: grid max corner, metres, ego frame."""
    voxel_size: float = 0.4
    """fusion: voxel edge, metres."""
    threshold: float | None = None
    """pop3d: occupancy-logit threshold; default the checkpoint's calibrated one."""
    features_on: str = "visible"
    """pop3d: voxels that get features, visible | surface | all."""
    feature_dtype: str = "float16"
    """Stored feature precision, float16 | float32."""
    device: str = "cpu"
    """Torch device of the network (pop3d); fusion runs on the CPU."""
    option: tuple[str, ...] = ()
    """Method options as KEY=VALUE (YAML values), e.g. --option ray_stride=4 depth_stride=1; for options a
    method has that this command does not list (a method added to geo3d.fields.methods)."""
    ply: Path | None = None
    """Also export the field's occupied feature voxels as a point PLY coloured by RGB."""
    summary_json: Path | None = None
    """Also write the run summary as JSON."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_capture(config: Config):
    """The capture of ``config.capture`` or the built-in synthetic scene (one frame, seed ``config.seed``)."""
    from geo3d.structures.field import FieldError

    if config.capture is None:
        from geo3d.synthetic.generate import SynthConfig, generate_capture

        from tqdm import tqdm

        _log(f"rendering the built-in synthetic street scene (seed {config.seed}): 6 cameras, 32-beam LiDAR")
        return generate_capture(SynthConfig(seed=config.seed, frames=1),
                                progress=lambda frames: tqdm(frames, desc="rendering", unit="frame", file=sys.stderr,
                                                             leave=False))
    from geo3d.io import read_capture

    if not Path(config.capture).exists():
        raise FieldError(f"capture {config.capture} does not exist")
    return read_capture(config.capture)


def make_resources(config: Config, capture):
    """The :class:`~geo3d.fields.methods.Resources` of a run: text encoder, teacher (fusion), checkpoint."""
    from geo3d.fields.inputs import frame_at
    from geo3d.fields.methods import Resources, get_method
    from geo3d.structures.field import FieldError
    from geo3d_apps.occupancy_data import make_teacher, text_encoder

    method_cls = get_method(config.method)
    encoder_spec = absolute_spec(config.text_encoder)
    encoder = text_encoder(encoder_spec)
    teacher = None
    if "teacher" in method_cls.needs:
        spec = config.teacher
        if spec in ("auto", "label"):
            frame = frame_at(capture, config.frame)
            if any(cam.semantic is None for cam in frame.cameras.values()):
                raise FieldError(f"teacher {spec!r}: the cameras of frame {config.frame} have no label images "
                                 f"(the synthetic stand-in teacher needs them); {CLIP_HELP}")
            spec = "label"
        try:
            teacher = make_teacher(spec, encoder, noise_std=config.label_noise_std,
                                   confusion_rate=config.label_confusion_rate)
        except ValueError as error:
            raise FieldError(str(error)) from None
    checkpoint = None
    if "checkpoint" in method_cls.needs:
        checkpoint = config.checkpoint or _default_checkpoints().get(config.method)
    return Resources(text_encoder=encoder, text_encoder_spec=encoder_spec, teacher=teacher,
                     checkpoint=checkpoint, device=config.device)


def absolute_spec(spec: str) -> str:
    """A text encoder spec with its checkpoint folder made absolute (``clip:./x`` -> ``clip:/abs/x``), so a
    field's metadata still finds it from another working directory."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        return spec
    head, sep2, path = rest.rpartition(":") if kind == "open_clip" else ("", "", rest)
    return f"{kind}:{head}{sep2}{Path(path).expanduser().resolve()}"


def method_options(method_cls, config):
    """The method's ``Options`` from the command's options of the same names, then ``config.option``
    (``KEY=VALUE`` strings, YAML values) for the others."""
    import yaml

    from geo3d.structures.field import FieldError

    names = {f.name for f in fields(method_cls.Options)}
    values = {name: getattr(config, name) for name in names if hasattr(config, name)}
    for item in getattr(config, "option", ()):
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in names:
            raise FieldError(f"--option {item!r}: expected KEY=VALUE with KEY one of the {method_cls.name!r} "
                             f"options {sorted(names)}")
        values[key] = yaml.safe_load(text)
    try:
        return method_cls.Options(**values)
    except TypeError as error:
        raise FieldError(f"invalid {method_cls.name!r} options: {error}") from None


def peak_memory_mb() -> float:
    """Peak resident memory of this process, MB: ``VmHWM`` of /proc/self/status on Linux (reset by exec,
    unlike ``ru_maxrss``, which a spawned process inherits from its parent), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reconstruct(config: Config, capture=None):
    """Run the method of ``config`` on ``capture`` (loaded from ``config`` when None): ``(field, summary dict)``."""
    from tqdm import tqdm

    from geo3d.fields.methods import get_method

    method_cls = get_method(config.method)  # unknown method: a clear error before any work
    options = method_options(method_cls, config)
    if callable(getattr(options, "check", None)):
        options.check()  # bad options too
    start = time.perf_counter()
    capture = load_capture(config) if capture is None else capture
    loaded = time.perf_counter()
    method = method_cls(options, make_resources(config, capture))
    bars: dict[str, Any] = {}

    def progress(step: str, done: int, total: int) -> None:
        bar = bars.get(step)
        if bar is None:
            bar = bars[step] = tqdm(total=total, desc=step, unit="step", file=sys.stderr, leave=False)
        bar.update(done - bar.n)

    _log(f"reconstructing frame {config.frame} with method {config.method!r}")
    field = method.reconstruct(capture, config.frame, progress=progress)
    for bar in bars.values():
        bar.close()
    done = time.perf_counter()
    summary = {
        "method": config.method, "capture": str(config.capture) if config.capture else f"synthetic seed {config.seed}",
        "frame": config.frame, "grid": list(field.shape), "voxel_size_m": field.voxel_size.tolist(),
        "occupied_voxels": field.num_occupied(), "feature_voxels": field.num_features,
        "feature_dim": field.feature_dim, "space": field.space,
        "seconds": {"load": round(loaded - start, 3), "reconstruct": round(done - loaded, 3),
                    "total": round(done - start, 3)},
        "peak_memory_mb": round(peak_memory_mb(), 1),
    }
    return field, summary


def run(config: Config) -> int:
    from geo3d.utils import atomic_write_text
    from geo3d_apps.outputs import Outputs, check_output

    out = check_output(config.out, "--out", (".npz",), overwrite=config.overwrite)
    ply = None if config.ply is None else check_output(config.ply, "--ply", (".ply",), overwrite=config.overwrite)
    summary_json = None if config.summary_json is None else check_output(config.summary_json, "--summary-json",
                                                                         (".json",), overwrite=True)
    field, summary = reconstruct(config)
    with Outputs() as outputs:  # a failed write removes what this run wrote
        out.parent.mkdir(parents=True, exist_ok=True)
        outputs.add(field.save(out))
        summary["file"] = str(out)
        summary["file_mb"] = round(out.stat().st_size / 1e6, 2)
        if ply is not None:
            ply.parent.mkdir(parents=True, exist_ok=True)
            outputs.add(field.export_ply(ply, color_by="rgb" if field.colors is not None else "class"))
            summary["ply"] = str(ply)
        if summary_json is not None:
            summary_json.parent.mkdir(parents=True, exist_ok=True)
            outputs.add(atomic_write_text(summary_json, json.dumps(summary, indent=2)))
    seconds = summary["seconds"]
    print(f"{out}: {summary['occupied_voxels']:,} occupied voxels, {summary['feature_voxels']:,} with "
          f"{field.feature_dim}-d features ({field.space}); {summary['file_mb']} MB; reconstruct "
          f"{seconds['reconstruct']:.1f} s, total {seconds['total']:.1f} s; "
          f"peak memory {summary['peak_memory_mb']:.0f} MB")
    return 0
