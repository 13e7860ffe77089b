"""Text queries on an :class:`~geo3d.structures.OpenVocabField`: a relevance score per feature voxel,
the voxels that answer the query, and their connected components with 3D boxes.

Two scoring modes (:data:`QUERY_MODES`):

- ``"relevancy"`` (default, LERF's relevancy, Kerr et al. 2023): the query against the canonical
  negative phrases ``"object"``, ``"things"``, ``"stuff"``, ``"texture"``,
  ``r = min_k sigmoid((s_query - s_k) / T)`` with cosines ``s`` and ``T = 0.1``
  (:func:`geo3d.language.relevancy`). ``r > 0.5`` means the voxel's feature is closer to the query than
  to every negative phrase; a voxel answers the query when ``r >= threshold`` (default 0.5). Query and
  negatives are encoded with the same prompt templates, so the templates' shared direction cancels in
  the difference (LERF encodes its negatives bare; with prompt-ensembled features that would favour
  every query over every negative).
- ``"softmax"`` over a vocabulary given by the user (zero-shot segmentation): each voxel's
  probabilities ``softmax(s_c / T)`` over the classes ``c`` of the vocabulary (the queries are added
  to it when missing; ``T = 0.01``, CLIP's logit scale). A voxel answers a query when the query is its
  most probable class and its probability is ``>= threshold`` (default 0: the argmax alone).

Only feature voxels whose occupancy is ``>= occupancy_threshold`` (default 0.5) take part. Voxels that
answer a query are grouped into connected components (26-connectivity by default, ``scipy.ndimage``),
each with its axis-aligned box in the field's frame (voxel bounds, metres), voxel count and scores;
components are ranked by their summed score (large and confident first).

Shapes: ``M`` feature voxels of the field, ``Q`` queries, ``D`` feature channels.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from geo3d.language.prompts import PromptTemplates, encode_prompts
from geo3d.language.relevancy import CANONICAL_NEGATIVES
from geo3d.language.text import LanguageError, check_texts
from geo3d.structures.field import FieldError, OpenVocabField

QUERY_MODES: tuple[str, ...] = ("relevancy", "softmax")
DEFAULT_THRESHOLDS: dict[str, float] = {"relevancy": 0.5, "softmax": 0.0}
RELEVANCY_TEMPERATURE = 0.1
SOFTMAX_TEMPERATURE = 0.01


@dataclass(frozen=True)
class Component:
    """One connected group of voxels that answer a query.

    Attributes:
        voxels: number of voxels.
        box_min, box_max: ``[3]`` corners of the axis-aligned box of the voxels (outer voxel faces),
            metres, in the field's frame.
        center: ``[3]`` mean of the voxel centres, metres.
        mean_score, max_score, score_sum: relevance (or probability) statistics over its voxels.
        rows: ``[voxels]`` int64 rows of the field's feature voxels (into ``field.indices``).
    """

    voxels: int
    box_min: np.ndarray
    box_max: np.ndarray
    center: np.ndarray
    mean_score: float
    max_score: float
    score_sum: float
    rows: np.ndarray = field(repr=False)

    @property
    def size(self) -> np.ndarray:
        """``[3]`` box edge lengths, metres."""
        return self.box_max - self.box_min

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (without the rows)."""
        return {"voxels": self.voxels, "box_min": self.box_min.round(3).tolist(),
                "box_max": self.box_max.round(3).tolist(), "center": self.center.round(3).tolist(),
                "size": self.size.round(3).tolist(), "mean_score": round(self.mean_score, 4),
                "max_score": round(self.max_score, 4), "score_sum": round(self.score_sum, 3)}


@dataclass(frozen=True)
class QueryResult:
    """The answer of a field to one text query.

    Attributes:
        text: the query.
        mode: ``"relevancy"`` or ``"softmax"``; threshold: the score a voxel needs.
        scores: ``[M]`` float32 score of every feature voxel (relevancy in (0, 1) or the query's softmax
            probability; NaN for voxels below the occupancy threshold).
        selected: ``[M]`` bool, the voxels that answer the query.
        components: all components, ranked by ``score_sum`` (descending).
        seconds: time to score and group (text encoding excluded), seconds.
    """

    text: str
    mode: str
    threshold: float
    scores: np.ndarray = field(repr=False)
    selected: np.ndarray = field(repr=False)
    components: list[Component]
    seconds: float = 0.0

    @property
    def num_selected(self) -> int:
        return int(self.selected.sum())

    def to_dict(self, top_k: int | None = None) -> dict[str, Any]:
        """JSON-ready summary: the query, counts and the first ``top_k`` components (all when None)."""
        shown = self.components if top_k is None else self.components[:top_k]
        return {"query": self.text, "mode": self.mode, "threshold": self.threshold,
                "voxels": self.num_selected, "components": len(self.components),
                "objects": [c.to_dict() for c in shown], "seconds": round(self.seconds, 5)}


def _check_mode(mode: str) -> str:
    if mode not in QUERY_MODES:
        raise FieldError(f"unknown query mode {mode!r} (modes: {', '.join(QUERY_MODES)})")
    return mode


def _check_threshold(threshold: float | None, mode: str) -> float:
    if threshold is None:
        return DEFAULT_THRESHOLDS[mode]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise FieldError(f"threshold must be a number in [0, 1], got {threshold!r}")
    return float(threshold)


def _active_rows(field_: OpenVocabField, occupancy_threshold: float) -> np.ndarray:
    if not 0.0 <= float(occupancy_threshold) <= 1.0:
        raise FieldError(f"occupancy_threshold must lie in [0, 1], got {occupancy_threshold}")
    occupancy = field_.occupancy[tuple(field_.indices.T.astype(np.int64))]
    return occupancy >= occupancy_threshold


def score_field(field_: OpenVocabField, query_embeddings: torch.Tensor, *, mode: str = "relevancy",
                negative_embeddings: torch.Tensor | None = None,
                vocabulary_embeddings: torch.Tensor | None = None,
                features: torch.Tensor | None = None) -> np.ndarray:
    """Scores ``[M, Q]`` float32 of every feature voxel for every query (no occupancy filtering).

    The same numbers as :func:`geo3d.language.relevancy` / :func:`geo3d.language.softmax_classify`,
    without their input checks (the field's features are finite unit rows by construction).

    Args:
        field_: the field.
        query_embeddings: ``[Q, D]`` text embeddings of the queries (in the field's space).
        mode: ``"relevancy"`` (needs ``negative_embeddings [K, D]``) or ``"softmax"`` (needs
            ``vocabulary_embeddings [C, D]`` whose first ``Q`` rows are the queries).
        features: ``[M, D]`` float32 copy of ``field_.features`` to reuse across calls (optional).

    Returns:
        ``[M, Q]`` relevancy in (0, 1), or the softmax probability of each query over the vocabulary.
    """
    _check_mode(mode)
    queries = _unit_text(query_embeddings, field_.feature_dim, "query embeddings")
    feats = torch.from_numpy(field_.features).float() if features is None else features
    if mode == "relevancy":
        if negative_embeddings is None:
            raise FieldError("mode 'relevancy' needs negative_embeddings [K, D]")
        negatives = _unit_text(negative_embeddings, field_.feature_dim, "negative embeddings")
        sims = feats @ torch.cat([queries, negatives]).T  # [M, Q + K]
        hardest = sims[:, len(queries):].amax(dim=1, keepdim=True)
        return torch.sigmoid((sims[:, : len(queries)] - hardest) / RELEVANCY_TEMPERATURE).numpy()
    if vocabulary_embeddings is None or len(vocabulary_embeddings) < len(queries):
        raise FieldError("mode 'softmax' needs vocabulary_embeddings [C, D] starting with the Q queries")
    vocabulary = _unit_text(vocabulary_embeddings, field_.feature_dim, "vocabulary embeddings")
    probs = torch.softmax(feats @ vocabulary.T / SOFTMAX_TEMPERATURE, dim=1)
    return probs[:, : len(queries)].numpy()


def _unit_text(embeddings: torch.Tensor, dim: int, name: str) -> torch.Tensor:
    if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2 or embeddings.shape[1] != dim \
            or len(embeddings) == 0:
        raise FieldError(f"{name} must be a [Q, {dim}] tensor (the field's D), got "
                         f"{list(getattr(embeddings, 'shape', [])) or type(embeddings).__name__}")
    embeddings = embeddings.detach().float().cpu()
    norms = embeddings.norm(dim=1, keepdim=True)
    if not torch.isfinite(embeddings).all() or (norms < 1e-12).any():
        raise FieldError(f"{name} hold NaN/inf or all-zero rows")
    return embeddings / norms


def connected_components(field_: OpenVocabField, rows: np.ndarray, scores: np.ndarray,
                         connectivity: int = 26) -> list[Component]:
    """Connected components of the feature voxels ``rows``, ranked by summed score.

    Args:
        field_: the field.
        rows: ``[S]`` int rows of the selected feature voxels.
        scores: ``[M]`` float score per feature voxel (the components' statistics).
        connectivity: 6 (faces), 18 (faces and edges) or 26 (faces, edges and corners).

    Returns:
        :class:`Component` list, ``score_sum`` descending.
    """
    from scipy import ndimage

    if connectivity not in (6, 18, 26):
        raise FieldError(f"connectivity must be 6, 18 or 26, got {connectivity!r}")
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return []
    index = field_.indices[rows].astype(np.int64)
    mask = np.zeros(field_.shape, dtype=bool)
    mask[tuple(index.T)] = True
    structure = ndimage.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])
    labelled, count = ndimage.label(mask, structure=structure)
    comp = labelled[tuple(index.T)] - 1  # [S] component of each selected row
    row_scores = scores[rows].astype(np.float64)
    counts = np.bincount(comp, minlength=count)
    sums = np.bincount(comp, row_scores, minlength=count)
    maxima = np.full(count, -np.inf)
    np.maximum.at(maxima, comp, row_scores)
    lower = np.full((count, 3), np.iinfo(np.int64).max)
    upper = np.full((count, 3), -1)
    for axis in range(3):
        np.minimum.at(lower[:, axis], comp, index[:, axis])
        np.maximum.at(upper[:, axis], comp, index[:, axis])
    centers = np.stack([np.bincount(comp, index[:, a] + 0.5, minlength=count) for a in range(3)], 1)
    centers = field_.origin + centers / counts[:, None] * field_.voxel_size
    order = np.argsort(-sums, kind="stable")
    by_component = np.argsort(comp, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    components = []
    for c in order:
        components.append(Component(
            voxels=int(counts[c]), box_min=field_.origin + lower[c] * field_.voxel_size,
            box_max=field_.origin + (upper[c] + 1) * field_.voxel_size, center=centers[c],
            mean_score=float(sums[c] / counts[c]), max_score=float(maxima[c]), score_sum=float(sums[c]),
            rows=rows[by_component[starts[c]:starts[c + 1]]]))
    return components


class FieldQuery:
    """Text queries against one field with one text encoder (the negatives / vocabulary encoded once).

    Args:
        field_: the field to query.
        encoder: a :class:`~geo3d.language.TextEncoder` in the field's space (``field_.check_space``).
        mode: ``"relevancy"`` or ``"softmax"`` (module docstring).
        vocabulary: the class phrases of ``"softmax"`` mode (zero-shot segmentation); required there.
        threshold: score a voxel needs to answer a query (default 0.5 relevancy, 0 softmax).
        occupancy_threshold: occupancy a feature voxel needs to take part.
        connectivity: 6, 18 or 26 (see :func:`connected_components`).
        templates: prompt templates of queries, negatives and vocabulary (default: geo3d's street set).
        negatives: the negative phrases of ``"relevancy"`` mode.

    Raises:
        FieldError / LanguageError: unknown mode, bad threshold, a space mismatch, blank texts.
    """

    def __init__(self, field_: OpenVocabField, encoder, *, mode: str = "relevancy",
                 vocabulary: Sequence[str] | None = None, threshold: float | None = None,
                 occupancy_threshold: float = 0.5, connectivity: int = 26,
                 templates: PromptTemplates | Sequence[str] | None = None,
                 negatives: Sequence[str] = CANONICAL_NEGATIVES) -> None:
        if not isinstance(field_, OpenVocabField):
            raise FieldError(f"field must be an OpenVocabField, got {type(field_).__name__}")
        self.field = field_
        self.mode = _check_mode(mode)
        field_.check_space(getattr(encoder, "space", None))
        self.encoder, self.templates = encoder, templates
        self.threshold = _check_threshold(threshold, mode)
        if connectivity not in (6, 18, 26) or isinstance(connectivity, bool):
            raise FieldError(f"connectivity must be 6, 18 or 26, got {connectivity!r}")
        if isinstance(occupancy_threshold, bool) or not isinstance(occupancy_threshold, (int, float)):
            raise FieldError(f"occupancy_threshold must be a number in [0, 1], got {occupancy_threshold!r}")
        self.connectivity = connectivity
        self.active = _active_rows(field_, occupancy_threshold)
        self.occupancy_threshold = float(occupancy_threshold)
        self.vocabulary: list[str] = []
        self._negatives = self._vocabulary = None
        self.last_encode_seconds = 0.0
        self._features = torch.from_numpy(field_.features).float()  # [M, D], reused by every query
        if mode == "relevancy":
            if vocabulary:
                raise FieldError("a vocabulary is only used by mode 'softmax'")
            self._negatives = encode_prompts(encoder, check_texts(list(negatives), "negatives"), templates).cpu()
        else:
            if not vocabulary:
                raise FieldError("mode 'softmax' needs a vocabulary of at least one class phrase")
            self.vocabulary = check_texts(list(vocabulary), "vocabulary")
            self._vocabulary = encode_prompts(encoder, self.vocabulary, templates).float().cpu()

    def _embed(self, texts: list[str]) -> torch.Tensor:
        return encode_prompts(self.encoder, texts, self.templates).detach().float().cpu()

    def _scores(self, texts: list[str], queries: torch.Tensor) -> np.ndarray:
        vocabulary = None
        if self.mode == "softmax":
            extra = [i for i, v in enumerate(self.vocabulary) if v not in texts]
            vocabulary = torch.cat([queries, self._vocabulary[extra]])
        scores = score_field(self.field, queries, mode=self.mode, negative_embeddings=self._negatives,
                             vocabulary_embeddings=vocabulary, features=self._features)
        scores[~self.active] = np.nan
        return scores

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """``[M, Q]`` float32 scores of the feature voxels for ``texts`` (NaN below the occupancy threshold)."""
        texts = _check_queries(texts)
        return self._scores(texts, self._embed(texts))

    def __call__(self, texts: Sequence[str] | str) -> list[QueryResult]:
        """Answer each text: scores, selected voxels and ranked components (:class:`QueryResult`).

        ``QueryResult.seconds`` is the scoring (shared equally by the queries) and grouping time; the
        text encoding is timed apart in :attr:`last_encode_seconds`.
        """
        texts = _check_queries([texts] if isinstance(texts, str) else texts)
        start = time.perf_counter()
        queries = self._embed(texts)
        scored = time.perf_counter()
        self.last_encode_seconds = scored - start
        scores = self._scores(texts, queries)
        share = (time.perf_counter() - scored) / len(texts)
        if self.mode == "softmax":  # the argmax over the whole vocabulary (queries first)
            vocabulary = torch.cat([queries, self._vocabulary[[i for i, v in enumerate(self.vocabulary)
                                                               if v not in texts]]])
            best = _argmax_class(self._features, vocabulary)
        results = []
        for q, text in enumerate(texts):
            t0 = time.perf_counter()
            column = scores[:, q]
            with np.errstate(invalid="ignore"):
                selected = self.active & (column >= self.threshold)
            if self.mode == "softmax":
                selected &= best == q
            components = connected_components(self.field, np.flatnonzero(selected), np.nan_to_num(column),
                                              self.connectivity)
            results.append(QueryResult(text, self.mode, self.threshold, column, selected, components,
                                       share + time.perf_counter() - t0))
        return results

    def segment(self) -> tuple[np.ndarray, np.ndarray]:
        """Zero-shot segmentation over the vocabulary (``"softmax"`` mode): ``[M]`` int64 class index
        into :attr:`vocabulary` (-1 below the occupancy threshold, or where the class's probability is
        below :attr:`threshold`) and ``[M]`` float32 its probability."""
        if self.mode != "softmax":
            raise FieldError("segment() needs mode 'softmax' with a vocabulary")
        probs = torch.softmax(self._features @ self._vocabulary.float().T / SOFTMAX_TEMPERATURE, dim=1)
        best, labels = probs.max(dim=1) if len(probs) else (torch.zeros(0), torch.zeros(0, dtype=torch.int64))
        keep = self.active & (best.numpy() >= self.threshold)
        return (np.where(keep, labels.numpy(), -1).astype(np.int64),
                np.where(self.active, best.numpy(), np.nan).astype(np.float32))


def _argmax_class(features: torch.Tensor, vocabulary: torch.Tensor) -> np.ndarray:
    """``[M]`` index of the most similar vocabulary row (the softmax's argmax)."""
    return (features @ vocabulary.float().T).argmax(dim=1).numpy()


def _check_queries(texts) -> list[str]:
    try:
        texts = check_texts(list(texts), "queries")
    except LanguageError as error:
        raise FieldError(f"{error}; a query must be non-empty text") from None
    if len(set(texts)) != len(texts):
        raise FieldError(f"queries must be distinct, got {texts}")
    return texts


def format_results(results: Sequence[QueryResult], top_k: int = 5, units: str = "m") -> str:
    """People-readable lines: per query the number of objects and the first ``top_k`` with boxes."""
    lines = []
    for result in results:
        n = len(result.components)
        lines.append(f'"{result.text}": {n} object{"s" if n != 1 else ""} found '
                     f"({result.num_selected} voxels, {result.mode} >= {result.threshold:g})"
                     + (":" if n else ""))
        for rank, comp in enumerate(result.components[:top_k], 1):
            size = "x".join(f"{s:.1f}" for s in comp.size)
            center = ", ".join(f"{c:.1f}" for c in comp.center)
            lines.append(f"  {rank}. centre ({center}) {units}, box {size} {units}, {comp.voxels} voxels, "
                         f"mean score {comp.mean_score:.3f}")
        if n > top_k:
            lines.append(f"  ... {n - top_k} more")
    return "\n".join(lines)

