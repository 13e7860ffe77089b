"""Scores between feature vectors (of pixels, points, voxels) and text embeddings.

All functions compare directions: features and text embeddings are L2-normalised inside, so the
similarity ``s = <f / |f|, t / |t|>`` is the cosine in [-1, 1]. A feature row of norm 0 (e.g. a voxel
that no view saw) has similarity 0 to every text. Computations run in float32 whatever the input
dtype; features may have any leading shape ``[..., D]``.

- :func:`cosine_similarity`: ``[..., D] x [Q, D] -> [..., Q]``.
- :func:`softmax_classify`: zero-shot classification, ``p_c = softmax_c(s_c / temperature)``
  (CLIP's logit scale 100 is ``temperature = 0.01``), label = argmax.
- :func:`relevancy`: LERF's relevancy score (Kerr et al., ICCV 2023) of a query against canonical
  negative phrases (``"object"``, ``"things"``, ``"stuff"``, ``"texture"``). For each negative ``k``
  the pairwise softmax gives the probability of the query over that negative, and the score is the
  worst case over the negatives::

      r = min_k  exp(s_q / T) / (exp(s_q / T) + exp(s_k / T))  =  sigmoid((s_q - max_k s_k) / T)

  ``r`` lies in (0, 1); ``r > 0.5`` means the feature is closer to the query than to every negative.
  LERF uses ``T = 0.1`` (a factor 10 on the cosines).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from geo3d.language.prompts import encode_unit
from geo3d.language.text import LanguageError, TextEncoder, check_texts

CANONICAL_NEGATIVES: tuple[str, ...] = ("object", "things", "stuff", "texture")
"""LERF's canonical phrases: generic words every query is compared against."""

_EPS = 1e-12


class ClassPrediction(NamedTuple):
    """Result of :func:`softmax_classify`.

    Attributes:
        labels: ``[...]`` int64 index of the most probable class (into the class embeddings).
        probs: ``[..., C]`` float32 class probabilities (rows sum to 1).
    """

    labels: torch.Tensor
    probs: torch.Tensor


def _check_features(features: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    if not isinstance(features, torch.Tensor):
        raise LanguageError(f"features must be a torch.Tensor [..., D], got {type(features).__name__}")
    if features.ndim < 1 or features.shape[-1] == 0:
        raise LanguageError(f"features must be [..., D] with D >= 1, got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise LanguageError(f"features must be a floating-point tensor, got {features.dtype}")
    if dim is not None and features.shape[-1] != dim:
        raise LanguageError(f"features have D = {features.shape[-1]} but the text embeddings have D = {dim}")
    if not torch.isfinite(features).all():
        raise LanguageError("features contain NaN or inf")
    return features


def _check_text(text: torch.Tensor, name: str, allow_vector: bool = True) -> torch.Tensor:
    """``[Q, D]`` (or ``[D]`` when allowed) finite, non-zero rows -> ``[Q, D]`` float32 unit rows."""
    if not isinstance(text, torch.Tensor):
        raise LanguageError(f"{name} must be a torch.Tensor, got {type(text).__name__}")
    if text.ndim == 1 and allow_vector:
        text = text[None]
    if text.ndim != 2 or text.shape[0] == 0 or text.shape[1] == 0:
        shape = "[D] or [Q, D]" if allow_vector else "[Q, D]"
        raise LanguageError(f"{name} must be {shape} with Q, D >= 1, got shape {tuple(text.shape)}")
    if not text.is_floating_point():
        raise LanguageError(f"{name} must be a floating-point tensor, got {text.dtype}")
    if not torch.isfinite(text).all():
        raise LanguageError(f"{name} contains NaN or inf")
    norms = text.float().norm(dim=-1, keepdim=True)
    if (norms < 1e-8).any():
        raise LanguageError(f"{name} has rows of norm 0; text embeddings must be non-zero")
    return text.float() / norms


def _cosine(features: torch.Tensor, text_unit: torch.Tensor) -> torch.Tensor:
    """``[..., D]`` x unit ``[Q, D]`` -> ``[..., Q]`` cosines, without a normalised copy of the features."""
    feats = features.float()
    text_unit = text_unit.to(feats.device)
    norms = feats.norm(dim=-1, keepdim=True).clamp(min=_EPS)
    return (feats @ text_unit.T) / norms


def cosine_similarity(features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every feature with every text embedding.

    Args:
        features: ``[..., D]`` float features (any leading shape, e.g. ``[M, D]`` points or ``[H, W, D]``).
        text: ``[Q, D]`` (or ``[D]``) text embeddings; need not be normalised.

    Returns:
        ``[..., Q]`` float32 cosines in [-1, 1] on ``features.device`` (0 for zero feature rows); a
        ``[D]`` text gives ``[..., 1]``.
    """
    text_unit = _check_text(text, "text")
    return _cosine(_check_features(features, text_unit.shape[-1]), text_unit)


def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise LanguageError(f"temperature must be a positive number, got {temperature!r}")
    if temperature == float("inf"):
        raise LanguageError("temperature must be finite")
    return float(temperature)


def softmax_classify(
    features: torch.Tensor, class_embeddings: torch.Tensor, temperature: float = 0.01
) -> ClassPrediction:
    """Zero-shot classification of features against class text embeddings.

    Args:
        features: ``[..., D]`` float features.
        class_embeddings: ``[C, D]`` text embeddings of the classes (e.g. from :func:`encode_classes`).
        temperature: softmax temperature on the cosines; 0.01 is CLIP's logit scale 100.

    Returns:
        :class:`ClassPrediction` with ``labels [...]`` (argmax of the cosines) and ``probs [..., C]``
        = ``softmax(cos / temperature)``.
    """
    temperature = _check_temperature(temperature)
    classes = _check_text(class_embeddings, "class_embeddings", allow_vector=False)
    logits = _cosine(_check_features(features, classes.shape[-1]), classes) / temperature
    probs = torch.softmax(logits, dim=-1)
    return ClassPrediction(logits.argmax(dim=-1), probs)


def relevancy(
    features: torch.Tensor, query: torch.Tensor, negatives: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """LERF relevancy of features to a query against negative phrases (formula in the module docstring).

    Args:
        features: ``[..., D]`` float features.
        query: ``[D]`` embedding of one query, or ``[Q, D]`` for several.
        negatives: ``[K, D]`` embeddings of the negative phrases (e.g. :func:`canonical_negatives`).
        temperature: temperature ``T`` of the pairwise softmax (LERF: 0.1).

    Returns:
        ``[...]`` float32 scores in (0, 1) for a ``[D]`` query, ``[..., Q]`` for a ``[Q, D]`` one.
    """
    temperature = _check_temperature(temperature)
    single = isinstance(query, torch.Tensor) and query.ndim == 1
    query_unit = _check_text(query, "query")
    negatives_unit = _check_text(negatives, "negatives", allow_vector=False)
    if negatives_unit.shape[-1] != query_unit.shape[-1]:
        raise LanguageError(f"negatives have D = {negatives_unit.shape[-1]} but query has D = {query_unit.shape[-1]}")
    features = _check_features(features, query_unit.shape[-1])
    sims = _cosine(features, torch.cat([query_unit, negatives_unit]))
    query_sims = sims[..., : query_unit.shape[0]]  # [..., Q]
    hardest_negative = sims[..., query_unit.shape[0] :].amax(dim=-1, keepdim=True)  # [..., 1]
    scores = torch.sigmoid((query_sims - hardest_negative) / temperature)
    return scores[..., 0] if single else scores


def canonical_negatives(encoder: TextEncoder, phrases: Sequence[str] = CANONICAL_NEGATIVES) -> torch.Tensor:
    """Embeddings ``[K, D]`` of the negative phrases of :func:`relevancy` (encoded as they are, as in LERF)."""
    return encode_unit(encoder, check_texts(phrases, "phrases"))
