"""Prompt templates and prompt ensembling (Radford et al., CLIP, 2021, section 3.1.4).

A phrase ``p`` is embedded through ``T`` templates (``"a photo of a {}."``, ...) and the embedding is
the renormalised mean of the ``T`` unit embeddings::

    e(p) = normalise( (1 / T) * sum_t  normalise(encode(template_t.format(p))) )

A class with synonyms ``s_1 .. s_S`` averages over every (synonym, template) pair the same way, with
equal weights: ``e(c) = normalise( mean_{s, t} normalise(encode(template_t.format(s))) )``.

:data:`SYNTHETIC_CLASS_PHRASES` gives readable phrasings (with synonyms) of the 16 classes of
:data:`geo3d.synthetic.classes.CLASS_NAMES` (``driveable_surface`` -> "drivable road surface", ...).
"""

from __future__ import annotations

import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from geo3d.language.text import LanguageError, TextEncoder, check_texts


def _placeholders(template: str) -> list[str | None]:
    try:
        return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise LanguageError(f"template {template!r} is not a valid format string: {exc}") from None


@dataclass(frozen=True)
class PromptTemplates:
    """An ordered set of prompt templates, each holding exactly one empty placeholder ``{}``.

    Attributes:
        templates: the templates, e.g. ``("a photo of a {}.", "a {} in a street scene.")``.
    """

    templates: tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.templates, str):
            raise LanguageError("templates must be a sequence of strings, got a single str: wrap it in a tuple")
        templates = tuple(check_texts(self.templates, "templates"))
        for i, template in enumerate(templates):
            fields = _placeholders(template)
            if fields != [""]:
                raise LanguageError(
                    f"templates[{i}] = {template!r} must hold exactly one empty placeholder '{{}}', found {fields}"
                )
        if len(set(templates)) != len(templates):
            raise LanguageError(f"templates has duplicates: {templates}")
        object.__setattr__(self, "templates", templates)

    @classmethod
    def default(cls) -> PromptTemplates:
        """The driving-scene templates of :data:`DEFAULT_TEMPLATES`."""
        return DEFAULT_TEMPLATES

    @classmethod
    def identity(cls) -> PromptTemplates:
        """The single template ``"{}"``: phrases are encoded as they are."""
        return cls(("{}",))

    def format(self, phrase: str) -> list[str]:
        """The ``T`` prompts of one phrase, in template order."""
        return [template.format(phrase) for template in self.templates]

    def __len__(self) -> int:
        return len(self.templates)

    def __iter__(self) -> Iterator[str]:
        return iter(self.templates)


DEFAULT_TEMPLATES = PromptTemplates(
    (
        "a photo of a {}.",
        "a photo of the {} in a street scene.",
        "a {} seen from a car's camera.",
        "a {} on a city street.",
        "a blurry photo of a {}.",
        "a close-up photo of a {}.",
        "a photo of a {} far away.",
        "a dashcam image of a {}.",
    )
)
"""Default templates for outdoor driving scenes (camera images of streets)."""

SYNTHETIC_CLASS_PHRASES: dict[str, tuple[str, ...]] = {
    "barrier": ("traffic barrier", "road barrier", "concrete jersey barrier"),
    "bicycle": ("bicycle", "bike"),
    "bus": ("bus", "city bus"),
    "car": ("car", "automobile", "passenger car"),
    "construction_vehicle": ("construction vehicle", "excavator", "bulldozer"),
    "motorcycle": ("motorcycle", "motorbike", "scooter"),
    "pedestrian": ("pedestrian", "person walking", "person"),
    "traffic_cone": ("traffic cone", "orange safety cone"),
    "trailer": ("trailer", "semi-trailer"),
    "truck": ("truck", "lorry", "delivery truck"),
    "driveable_surface": ("drivable road surface", "road", "asphalt street"),
    "other_flat": ("traffic island", "flat paved area", "median strip"),
    "sidewalk": ("sidewalk", "pavement for pedestrians"),
    "terrain": ("grass", "terrain", "soil"),
    "manmade": ("building", "wall", "pole", "man-made structure"),
    "vegetation": ("tree", "bush", "vegetation"),
}
"""Readable phrasings (first = main phrase, then synonyms) of the classes of
:data:`geo3d.synthetic.classes.CLASS_NAMES`, in id order, without ``"free"`` (empty space is not a
visible thing a prompt can name)."""


def _check_encoder(encoder: TextEncoder) -> None:
    if isinstance(encoder, (str, bytes)) or not callable(getattr(encoder, "encode", None)):
        raise LanguageError(
            f"encoder must be a text encoder with encode(texts) -> [N, D] (geo3d.language.TextEncoder), "
            f"got {type(encoder).__name__}"
        )


def encode_unit(encoder: TextEncoder, texts: list[str]) -> torch.Tensor:
    """``encoder.encode(texts)`` checked (``[N, D]``, finite, non-zero rows) and L2-normalised, float32.

    Works with any object with an ``encode`` method (a :class:`TextEncoder` or a duck-typed one).
    """
    _check_encoder(encoder)
    embeddings = torch.as_tensor(encoder.encode(texts)).detach()
    if embeddings.ndim != 2 or embeddings.shape[0] != len(texts) or not embeddings.is_floating_point():
        raise LanguageError(
            f"encoder returned {embeddings.dtype} of shape {tuple(embeddings.shape)} for {len(texts)} texts, "
            f"expected float [{len(texts)}, D]"
        )
    embeddings = embeddings.float()
    norms = embeddings.norm(dim=-1, keepdim=True)
    if not torch.isfinite(embeddings).all() or (norms < 1e-12).any():
        raise LanguageError("encoder returned NaN/inf or all-zero embeddings")
    return embeddings / norms


def _as_templates(templates: PromptTemplates | Sequence[str] | None) -> PromptTemplates:
    if templates is None:
        return DEFAULT_TEMPLATES
    if isinstance(templates, PromptTemplates):
        return templates
    return PromptTemplates(tuple(templates) if not isinstance(templates, str) else templates)


def _mean_direction(embeddings: torch.Tensor) -> torch.Tensor:
    """``[..., K, D]`` unit rows -> ``[..., D]`` normalised mean (rows that cancel exactly raise)."""
    mean = embeddings.mean(dim=-2)
    norm = mean.norm(dim=-1, keepdim=True)
    if (norm < 1e-6).any():
        raise LanguageError("the prompts of a phrase cancel out (mean embedding of norm ~0); use other templates")
    return mean / norm


def encode_prompts(
    encoder: TextEncoder, phrases: Sequence[str], templates: PromptTemplates | Sequence[str] | None = None
) -> torch.Tensor:
    """Prompt-ensembled embeddings of phrases.

    Args:
        encoder: a :class:`TextEncoder` (or any object with ``encode(texts) -> [N, D]``).
        phrases: ``N`` non-blank phrases (class names or free text), e.g. ``["car", "traffic cone"]``.
        templates: :class:`PromptTemplates` or a sequence of template strings with one ``{}`` each;
            ``None`` uses :data:`DEFAULT_TEMPLATES`. ``PromptTemplates.identity()`` encodes phrases as is.

    Returns:
        ``[N, D]`` float32 unit rows on ``encoder.device``: row ``i`` is the renormalised mean over the
        ``T`` templates of the unit embeddings of ``template.format(phrases[i])``.
    """
    _check_encoder(encoder)
    phrases = check_texts(phrases, "phrases")
    templates = _as_templates(templates)
    prompts = [prompt for phrase in phrases for prompt in templates.format(phrase)]
    embeddings = encode_unit(encoder, prompts).reshape(len(phrases), len(templates), -1)
    return _mean_direction(embeddings)


def encode_classes(
    encoder: TextEncoder,
    classes: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
    templates: PromptTemplates | Sequence[str] | None = None,
) -> torch.Tensor:
    """Embeddings of classes, each ensembled over its synonyms and the templates.

    Args:
        encoder: a :class:`TextEncoder` (or any object with ``encode(texts) -> [N, D]``).
        classes: ``{class_name: [synonym, ...]}`` (``C`` classes, in mapping order; each with at least
            one non-blank synonym), or a sequence of phrases (one synonym each), or ``None`` for
            :data:`SYNTHETIC_CLASS_PHRASES` (the 16 synthetic classes, ids 1..16).
        templates: as in :func:`encode_prompts`.

    Returns:
        ``[C, D]`` float32 unit rows on ``encoder.device``: row ``c`` is the renormalised mean, with
        equal weights, of the unit embeddings of every ``template.format(synonym)`` of class ``c``.
    """
    _check_encoder(encoder)
    if classes is None:
        classes = SYNTHETIC_CLASS_PHRASES
    if isinstance(classes, Mapping):
        if not classes:
            raise LanguageError("classes is empty: give at least one class")
        synonyms = [check_texts(words, f"classes[{name!r}]") for name, words in classes.items()]
    else:
        synonyms = [[phrase] for phrase in check_texts(classes, "classes")]
    templates = _as_templates(templates)
    prompts = [prompt for words in synonyms for word in words for prompt in templates.format(word)]
    embeddings = encode_unit(encoder, prompts)
    rows, start = [], 0
    for words in synonyms:
        count = len(words) * len(templates)
        rows.append(_mean_direction(embeddings[start : start + count]))
        start += count
    return torch.stack(rows)
