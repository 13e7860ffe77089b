"""``geo3d query FIELD "text" ["more text" ...]``: which voxels of a field answer each text, grouped into
objects with 3D boxes; printed for people, or as JSON (``--json``); ``--export`` writes PLYs coloured
by relevance. ``--vocabulary a,b,c`` switches to a softmax over that vocabulary (zero-shot
segmentation; without queries it prints the segmentation). Scoring rules: geo3d/fields/query.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import tyro


@dataclass
class Config:
    """Query an open-vocabulary field with free text: relevant voxels, objects and their 3D boxes."""

    field: tyro.conf.Positional[Path]
    """Field file written by 'geo3d reconstruct' (.npz)."""
    queries: tyro.conf.Positional[tuple[str, ...]] = ()
    """Text queries, e.g. "parked truck" greenery (quote multi-word queries)."""
    top_k: int = 5
    """Objects listed per query (the JSON lists them too)."""
    threshold: float | None = None
    """Score a voxel needs: relevancy default 0.5 (closer to the query than to every canonical negative);
    softmax default 0 (the query is the voxel's most probable class)."""
    vocabulary: str | None = None
    """Comma-separated class phrases: softmax over them (queries join the vocabulary) instead of relevancy."""
    export: Path | None = None
    """Write the field's voxels coloured by relevance to this PLY (one file per query: NAME.<query>.ply)."""
    cubes: bool = False
    """--export voxel cubes instead of points."""
    json: bool = False
    """Print the results as JSON (stdout) instead of text."""
    text_encoder: str | None = None
    """Text encoder spec; default the one recorded in the field (it must give the field's space)."""
    negatives: str = "object,things,stuff,texture"
    """Relevancy mode: comma-separated negative phrases every query is compared against (LERF's canonical set)."""
    occupancy_threshold: float = 0.5
    """Occupancy probability a voxel needs to be considered."""
    connectivity: int = 26
    """Voxel adjacency of the objects: 6, 18 or 26."""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "query"


def unique_slugs(texts: list[str]) -> list[str]:
    """A file-name-safe slug per text, distinct even when texts differ only in case or punctuation."""
    slugs, seen = [], set()
    for text in texts:
        slug, number = _slug(text), 2
        while slug in seen:
            slug, number = f"{_slug(text)}-{number}", number + 1
        seen.add(slug)
        slugs.append(slug)
    return slugs


def export_paths(export: Path, texts: list[str]) -> list[Path]:
    """One PLY path per query: ``export`` itself for one query, ``stem.<slug>.ply`` for several (distinct)."""
    if len(texts) == 1:
        return [export]
    return [export.with_name(f"{export.stem}.{slug}{export.suffix}") for slug in unique_slugs(texts)]


def open_query(config: Config):
    """``(field, FieldQuery)`` of a command line (loads the field and its text encoder)."""
    from geo3d.fields.query import FieldQuery
    from geo3d.language.text import get_text_encoder
    from geo3d.structures.field import OpenVocabField

    field = OpenVocabField.load(config.field)
    spec = config.text_encoder or field.metadata.get("text_encoder") or "minilm"
    encoder = get_text_encoder(spec)
    vocabulary = None
    if config.vocabulary is not None:
        vocabulary = [v.strip() for v in config.vocabulary.split(",")]
    mode = "softmax" if vocabulary is not None else "relevancy"
    negatives = [n.strip() for n in config.negatives.split(",")]
    query = FieldQuery(field, encoder, mode=mode, vocabulary=vocabulary, threshold=config.threshold,
                       negatives=negatives, occupancy_threshold=config.occupancy_threshold,
                       connectivity=config.connectivity)
    return field, query


def recoloured(field, rows, rgb):
    """A copy of ``field`` whose feature voxels ``rows`` have the colours ``rgb`` (the others grey)."""
    import numpy as np

    colors = np.full((field.num_features, 3), 200, np.uint8)
    colors[rows] = rgb
    return type(field)(field.origin, field.voxel_size, field.frame, field.occupancy, field.indices, field.features,
                       field.space, colors, field.labels, field.metadata)


def _export(config: Config, field, query, results, texts, labels, mode: str) -> None:
    """PLY files: per query the field coloured as ``geo3d view --query`` shows it (answering voxels in
    viridis over their score range, the others grey); without queries, the segmentation's classes."""
    from geo3d.fields.view import field_colors
    from geo3d_apps.outputs import Outputs

    with Outputs() as outputs:
        if results:
            for result, path in zip(results, export_paths(Path(config.export), texts)):
                shown = field_colors(field, "relevance", result.scores, selected=result.selected,
                                     occupancy_threshold=query.occupancy_threshold)
                outputs.add(recoloured(field, shown.rows, shown.rgb).export_ply(
                    path, mode=mode, color_by="rgb", threshold=query.occupancy_threshold))
        else:  # segmentation: colour by vocabulary class (palette colours 1..C)
            from geo3d.structures.field import class_colors

            shown = labels >= 0
            outputs.add(recoloured(field, shown.nonzero()[0], class_colors(labels[shown] + 1)).export_ply(
                config.export, mode=mode, color_by="rgb", threshold=query.occupancy_threshold))


def run(config: Config) -> int:
    import numpy as np

    from geo3d.fields.query import format_results
    from geo3d.structures.field import FieldError, class_colors

    texts = list(config.queries)
    if not texts and config.vocabulary is None:
        raise FieldError("give at least one query (geo3d query FIELD \"text\"), or --vocabulary a,b,c to segment")
    if config.top_k < 1:
        raise FieldError(f"--top-k must be >= 1, got {config.top_k}")
    if any(not t.strip() for t in texts):
        raise FieldError("a query is empty: give some text")
    if config.export is not None:
        from geo3d_apps.outputs import check_output

        for path in export_paths(Path(config.export), texts or ["segmentation"]):
            check_output(path, "--export", (".ply",))
    field, query = open_query(config)
    results = query(texts) if texts else []
    output: dict = {"field": str(config.field), "mode": query.mode, "threshold": query.threshold,
                    "queries": [r.to_dict(config.top_k) for r in results],
                    "encode_seconds": round(query.last_encode_seconds, 5)}
    segmentation = None
    if query.mode == "softmax":
        labels, _ = query.segment()
        counts = np.bincount(labels[labels >= 0], minlength=len(query.vocabulary))
        segmentation = {name: int(n) for name, n in zip(query.vocabulary, counts)}
        output["segmentation_voxels"] = segmentation
    mode = "cubes" if config.cubes else "points"
    if config.export is not None:
        _export(config, field, query, results, texts, labels if query.mode == "softmax" else None, mode)
        output["exported"] = [str(p) for p in export_paths(Path(config.export), texts or ["segmentation"])]
    if config.json:
        print(json.dumps(output, indent=2))
        return 0
    if results:
        print(format_results(results, config.top_k))
    if segmentation is not None:
        palette = class_colors(np.arange(1, len(query.vocabulary) + 1))
        print("zero-shot segmentation (voxels per class): " + ", ".join(
            f"{name} {n:,} (#{r:02x}{g:02x}{b:02x})" for (name, n), (r, g, b) in zip(segmentation.items(), palette)))
    if config.export is not None:
        print("wrote " + ", ".join(output["exported"]))
    return 0
