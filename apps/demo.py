"""``geo3d demo``: the main job, end to end, on the built-in synthetic capture.

1. render a procedural street scene from a fixed seed with a six-camera surround rig and a 32-beam
   LiDAR (RGB, depth, labels, Occ3D-style occupancy ground truth);
2. write it as a geo3d capture (atomically) and read it back with format detection;
3. reconstruct it into open-vocabulary fields with each method of ``--methods`` (default ``fusion``
   and ``pop3d``);
4. ask every field the text queries (in-vocabulary words and words outside the class vocabulary such
   as "vehicle" and "greenery") and score the answers against the ground truth: IoU of the retrieved
   voxels with the voxels of the classes a query stands for (:data:`geo3d.occupancy.metrics.QUERY_SET`),
   over the camera-visible voxels; the method with the best mean IoU is the demo's answer;
5. write the fields, PLY exports and Open3D screenshots of the best one, and a markdown report that
   embeds the pictures (``report.md``) with ``summary.json``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_QUERIES = ("car", "vehicle", "greenery", "road", "building", "person")


@dataclass
class Config:
    """Render the built-in synthetic capture, reconstruct it into open-vocabulary fields, query them
    with text, score the answers against the ground truth and write a report with pictures."""

    out: Path = Path("out/demo")
    """Output folder (files in it are replaced)."""
    seed: int = 0
    """Scene seed: the same seed gives the same scene, images and points."""
    width: int = 400
    """Camera image width in pixels."""
    height: int = 225
    """Camera image height in pixels."""
    methods: tuple[str, ...] = ("fusion", "pop3d")
    """Reconstruction methods to run and compare (geo3d reconstruct --method)."""
    queries: tuple[str, ...] = DEFAULT_QUERIES
    """Text queries; those in geo3d.occupancy.metrics.QUERY_SET (or class names) are scored."""
    geometry: str = "depth"
    """fusion's geometry: depth (the synthetic cameras have depth maps), lidar or auto."""
    picture_width: int = 960
    """Screenshot width in pixels (height 3/4 of it)."""


def _step(index: int, total: int, text: str) -> float:
    print(f"[{index}/{total}] {text}", flush=True)
    return time.perf_counter()


def _relevant_classes(query: str) -> tuple[str, ...] | None:
    from geo3d.occupancy.metrics import QUERY_SET
    from geo3d.synthetic.classes import CLASS_NAMES

    if query in QUERY_SET:
        return tuple(QUERY_SET[query])
    name = query.replace(" ", "_")
    return (name,) if name in CLASS_NAMES[1:] else None


def score_queries(field, encoder, queries, gt, visible) -> tuple[list, dict[str, Any]]:
    """``(QueryResults, {query: scores dict or None})`` of one field (IoU over the visible voxels)."""
    from geo3d.fields.query import FieldQuery
    from geo3d.fields.scoring import query_voxel_scores
    from geo3d.synthetic.classes import CLASS_IDS

    results = FieldQuery(field, encoder)(list(queries))
    scores = {}
    for result in results:
        classes = _relevant_classes(result.text)
        scores[result.text] = None if classes is None or gt is None else query_voxel_scores(
            field, result.selected, gt, [CLASS_IDS[c] for c in classes], visible).to_dict()
    return results, scores


def _mean_iou(scores: dict[str, Any]) -> float:
    import math

    values = [s["iou"] for s in scores.values() if s is not None and s["iou"] is not None]
    return sum(values) / len(values) if values else math.nan


def _picture(path: Path, field, size: tuple[int, int], *, color_by: str, preset: str, result=None) -> Path:
    from geo3d.fields.view import camera_view, field_colors, legend_image, render_field, save_screenshot

    colors = field_colors(field, color_by, relevance=None if result is None else result.scores,
                          selected=None if result is None else result.selected)
    camera = camera_view(field, preset, aspect=size[0] / size[1], fit="content")
    image = render_field(field, colors=colors, camera=camera, size=size)
    label = None if result is None else f'relevance to "{result.text}"'
    return save_screenshot(path, image, legend_image(field, colors, size[1], label=label))


def _fmt(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def write_report(path: Path, summary: dict[str, Any], pictures: dict[str, str]) -> None:
    """``report.md``: scene, methods, the per-query IoU table, the best field's pictures."""
    from geo3d.utils import atomic_write_text

    methods, queries, best = summary["methods"], summary["queries"], summary["best_method"]
    lines = [
        "# geo3d demo report", "",
        f"Built-in synthetic street scene, seed {summary['config']['seed']}: six cameras at "
        f"{summary['config']['width']}x{summary['config']['height']}, a 32-beam LiDAR, Occ3D-style ground truth "
        "(200 x 200 x 16 voxels of 0.4 m around the ego car, x forward, y left). Each method turned the frame "
        "into an open-vocabulary field; each text query selects the voxels whose feature is closer to it "
        "than to every canonical negative phrase (LERF relevancy >= 0.5). Scores: IoU (%) of the retrieved "
        "voxels with the ground-truth voxels of the classes the query stands for, over the camera-visible "
        "voxels.", "",
        "| query | relevant classes | " + " | ".join(f"{m} IoU" for m in methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for query in queries:
        classes = _relevant_classes(query)
        cells = []
        for m in methods:
            s = methods[m]["queries"][query]["scores"]
            cells.append("n/a" if s is None else _fmt(s["iou"]))
        lines.append(f"| {query} | {', '.join(classes) if classes else '(not scored)'} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | | " + " | ".join(f"**{_fmt(methods[m]['mean_iou'])}**" for m in methods) + " |")
    lines += ["", "| method | reconstruct (s) | occupied voxels | feature voxels | field file (MB) |",
              "|---|---|---|---|---|"]
    for m, info in methods.items():
        lines.append(f"| {m} | {info['reconstruct_s']:.1f} | {info['occupied_voxels']:,} | "
                     f"{info['feature_voxels']:,} | {info['file_mb']:.1f} |")
    lines += ["", f"Best method on this scene: **{best}** (highest mean IoU). Its field: `{best}.field.npz` "
              f"(`geo3d query {best}.field.npz \"parked truck\"`, `geo3d view {best}.field.npz`).", ""]
    for title, file in pictures.items():
        lines += [f"### {title}", "", f"![{title}]({file})", ""]
    lines += [f"Total time {summary['timings_s']['total']:.0f} s; peak memory {summary['peak_memory_mb']:.0f} MB.", ""]
    atomic_write_text(path, "\n".join(lines))


def run(config: Config) -> int:
    from geo3d.fields.methods import Resources, get_method
    from geo3d.io import read_capture, write_capture
    from geo3d.synthetic.generate import SynthConfig, generate_capture
    from geo3d.utils import atomic_write_text, json_ready
    from geo3d_apps.occupancy_data import make_teacher, text_encoder
    from geo3d_apps.eval_occupancy import SHIPPED_CHECKPOINT
    from geo3d_apps.info import format_summary, summarize_capture
    from geo3d.fields.view import field_colors
    from geo3d_apps.query import recoloured, unique_slugs
    from geo3d_apps.reconstruct import method_options, peak_memory_mb

    if config.width < 32 or config.height < 32:
        raise ValueError("width and height must be >= 32 pixels")
    if not config.methods:
        raise ValueError("give at least one method (--methods fusion pop3d)")
    if not config.queries or any(not q.strip() for q in config.queries):
        raise ValueError("give non-empty --queries")
    method_classes = {name: get_method(name) for name in config.methods}  # unknown names fail here
    method_settings = {name: method_options(cls, config) for name, cls in method_classes.items()}
    for settings in method_settings.values():
        settings.check()  # bad options too, before any work
    total, timings = 5, {}
    start = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)

    t = _step(1, total, f"rendering the built-in street scene (seed {config.seed}): 6 cameras at "
                        f"{config.width}x{config.height}, 32-beam LiDAR")  # fmt: skip
    capture = generate_capture(SynthConfig(seed=config.seed, frames=1, width=config.width, height=config.height))
    timings["render_s"] = time.perf_counter() - t

    t = _step(2, total, f"writing the capture to {out / 'capture'} and reading it back")
    write_capture(capture, out / "capture", overwrite=True)
    capture = read_capture(out / "capture")
    info = summarize_capture(capture)
    print(format_summary(info))
    occupancy = capture.frames[0].occupancy
    gt = None if occupancy is None else occupancy.load_semantics()
    visible = None if occupancy is None else occupancy.load_mask("camera")
    timings["write_read_s"] = time.perf_counter() - t

    t = _step(3, total, f"reconstructing open-vocabulary fields: {', '.join(config.methods)}")
    encoder = text_encoder("minilm")
    resources = Resources(text_encoder=encoder, text_encoder_spec="minilm", teacher=make_teacher("label", encoder),
                          checkpoint=SHIPPED_CHECKPOINT)
    fields, methods = {}, {}
    for name, method_cls in method_classes.items():
        m_start = time.perf_counter()
        options = method_settings[name]
        method = method_cls(options, resources)
        field = method.reconstruct(capture, 0)
        seconds = time.perf_counter() - m_start
        path = field.save(out / f"{name}.field.npz")
        fields[name] = field
        methods[name] = {"reconstruct_s": seconds, "occupied_voxels": field.num_occupied(),
                         "feature_voxels": field.num_features, "file_mb": path.stat().st_size / 1e6,
                         "options": method.options_dict()}
        print(f"    {name}: {field.num_occupied():,} occupied voxels, {field.num_features:,} with features, "
              f"{seconds:.1f} s")
    timings["reconstruct_s"] = time.perf_counter() - t

    t = _step(4, total, f"asking {len(config.queries)} text queries and scoring the answers against the ground truth")
    results = {}
    for name, field in fields.items():
        results[name], scores = score_queries(field, encoder, config.queries, gt, visible)
        methods[name]["queries"] = {r.text: {"answer": r.to_dict(3), "scores": scores[r.text]} for r in results[name]}
        methods[name]["mean_iou"] = _mean_iou(scores)
        methods[name]["query_seconds_median"] = sorted(r.seconds for r in results[name])[len(results[name]) // 2]
        print(f"    {name}: " + ", ".join(f"{q} {_fmt(s['iou']) if s else 'n/a'}" for q, s in scores.items())
              + f"; mean IoU {_fmt(methods[name]['mean_iou'])} %")
    scored = {m: v["mean_iou"] for m, v in methods.items() if v["mean_iou"] == v["mean_iou"]}
    best = max(scored, key=scored.get) if scored else config.methods[0]
    timings["query_s"] = time.perf_counter() - t

    t = _step(5, total, f"exporting PLY files and screenshots of the best field ({best}); writing the report")
    field, size = fields[best], (config.picture_width, config.picture_width * 3 // 4)
    field.export_ply(out / f"{best}.rgb.ply", color_by="rgb")
    field.export_ply(out / f"{best}.class.ply", color_by="class")
    pictures = {
        f"{best}: camera colours (oblique view)": _picture(out / "rgb.png", field, size, color_by="rgb",
                                                           preset="oblique").name,
        f"{best}: zero-shot classes (bird's-eye view)": _picture(out / "classes.png", field, size, color_by="class",
                                                                  preset="bev").name,
    }
    for result, slug in zip(results[best], unique_slugs([r.text for r in results[best]])):
        shown = field_colors(field, "relevance", result.scores, selected=result.selected)
        recoloured(field, shown.rows, shown.rgb).export_ply(out / f"{best}.{slug}.ply", color_by="rgb")
        pictures[f'{best}: "{result.text}" (bird\'s-eye view, answer in colour)'] = _picture(
            out / f"query-{slug}.png", field, size, color_by="relevance", preset="bev", result=result).name
    timings["export_s"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    summary = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(config).items()},
        "capture": {"frames": info["frames"], "cameras": list(info["cameras"])},
        "queries": list(config.queries), "methods": methods, "best_method": best,
        "timings_s": timings,
        "peak_memory_mb": peak_memory_mb(),
    }
    write_report(out / "report.md", summary, pictures)
    atomic_write_text(out / "summary.json", json.dumps(json_ready(summary), indent=2))
    print(f"done in {timings['total']:.0f} s: {out / 'report.md'} (fields, PLY files and pictures in {out})",
          file=sys.stdout)
    return 0
