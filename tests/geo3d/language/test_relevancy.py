"""Cosine similarity, softmax classification and LERF relevancy against direct NumPy computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geo3d.language import (
    CANONICAL_NEGATIVES,
    LanguageError,
    TextEncoder,
    canonical_negatives,
    cosine_similarity,
    relevancy,
    softmax_classify,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def np_cosine(features, text):
    f = features / np.linalg.norm(features, axis=-1, keepdims=True)
    t = text / np.linalg.norm(text, axis=-1, keepdims=True)
    return f @ t.T


def data(seed=0, shape=(2, 5), dim=6, queries=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(*shape, dim)), rng.normal(size=(queries, dim)) * 4.0


def test_cosine_similarity_matches_numpy():
    features, text = data()
    got = cosine_similarity(torch.tensor(features, dtype=torch.float32), torch.tensor(text))
    assert got.shape == (2, 5, 3) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), np_cosine(features, text), atol=1e-6)
    one = cosine_similarity(torch.tensor(features), torch.tensor(text[0]))
    np.testing.assert_allclose(one.numpy()[..., 0], np_cosine(features, text)[..., 0], atol=1e-6)


def test_zero_feature_rows_score_zero_and_half_precision_works():
    features, text = data(shape=(4,))
    features[2] = 0.0
    got = cosine_similarity(torch.tensor(features, dtype=torch.float16), torch.tensor(text))
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got[2].numpy(), 0.0)
    np.testing.assert_allclose(got[[0, 1, 3]].numpy(), np_cosine(features[[0, 1, 3]], text), atol=2e-3)


@pytest.mark.parametrize("temperature", [0.01, 0.5])
def test_softmax_classify_matches_numpy(temperature):
    features, classes = data(seed=1, shape=(7,), queries=4)
    got = softmax_classify(torch.tensor(features), torch.tensor(classes), temperature)
    logits = np_cosine(features, classes) / temperature
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(got.probs.numpy(), probs, atol=1e-5)
    np.testing.assert_array_equal(got.labels.numpy(), logits.argmax(-1))
    assert got.labels.dtype == torch.int64 and got.probs.shape == (7, 4)


@pytest.mark.parametrize("temperature", [0.05, 0.1, 1.0])
def test_relevancy_matches_the_lerf_formula(temperature):
    features, text = data(seed=2, shape=(3, 4), queries=6)
    queries, negatives = text[:2], text[2:]
    sims_q = np_cosine(features, queries)  # [3, 4, 2]
    sims_n = np_cosine(features, negatives)  # [3, 4, 4]
    eq, en = np.exp(sims_q / temperature)[..., :, None], np.exp(sims_n / temperature)[..., None, :]
    expected = (eq / (eq + en)).min(-1)  # min over negatives of the pairwise softmax, [3, 4, 2]
    t = torch.tensor
    got = relevancy(t(features), t(queries), t(negatives), temperature)
    assert got.shape == (3, 4, 2)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    single = relevancy(t(features), t(queries[1]), t(negatives), temperature)
    assert single.shape == (3, 4)
    np.testing.assert_allclose(single.numpy(), expected[..., 1], atol=1e-6)


def test_relevancy_of_the_query_itself_beats_the_negatives():
    rng = np.random.default_rng(3)
    query, negatives = rng.normal(size=8), rng.normal(size=(4, 8))
    features = torch.tensor(np.stack([query * 2.0, negatives[0]]))
    scores = relevancy(features, torch.tensor(query), torch.tensor(negatives))
    assert scores[0] > 0.5 > scores[1]


class ConstEncoder(TextEncoder):
    name, space, dim = "const", "const:test", 3

    def _encode_batch(self, texts):
        return torch.tensor([[len(t), 1.0, 0.0] for t in texts])


def test_canonical_negatives_are_encoded_as_they_are():
    got = canonical_negatives(ConstEncoder())
    assert CANONICAL_NEGATIVES == ("object", "things", "stuff", "texture")
    expected = np.array([[len(p), 1.0, 0.0] for p in CANONICAL_NEGATIVES])
    np.testing.assert_allclose(got.numpy(), expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6)
    with pytest.raises(LanguageError, match="encoder must be"):
        canonical_negatives("minilm")


def test_bad_inputs():
    f, t = torch.randn(5, 4), torch.randn(2, 4)
    with pytest.raises(LanguageError, match="features have D = 4 but the text embeddings have D = 3"):
        cosine_similarity(f, torch.randn(2, 3))
    with pytest.raises(LanguageError, match="features contain NaN"):
        cosine_similarity(torch.full((2, 4), float("nan")), t)
    with pytest.raises(LanguageError, match="features must be a floating-point"):
        cosine_similarity(torch.ones(2, 4, dtype=torch.int64), t)
    with pytest.raises(LanguageError, match="features must be a torch.Tensor"):
        cosine_similarity(np.ones((2, 4)), t)
    with pytest.raises(LanguageError, match="text has rows of norm 0"):
        cosine_similarity(f, torch.zeros(1, 4))
    with pytest.raises(LanguageError, match="text contains NaN"):
        cosine_similarity(f, torch.tensor([[float("inf"), 0, 0, 0]]))
    with pytest.raises(LanguageError, match=r"class_embeddings must be \[Q, D\]"):
        softmax_classify(f, torch.randn(4))
    with pytest.raises(LanguageError, match=r"negatives must be \[Q, D\]"):
        relevancy(f, t[0], torch.randn(4))
    with pytest.raises(LanguageError, match="negatives have D = 3 but query has D = 4"):
        relevancy(f, t[0], torch.randn(2, 3))
    with pytest.raises(LanguageError, match=r"query must be \[D\] or \[Q, D\]"):
        relevancy(f, torch.randn(1, 2, 4), t)
    for temperature in (0.0, -1.0, float("inf"), float("nan"), True, "0.1"):
        with pytest.raises(LanguageError, match="temperature"):
            relevancy(f, t[0], t, temperature)
