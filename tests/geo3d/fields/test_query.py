"""geo3d.fields.query: scores against geo3d.language's relevancy / softmax_classify, connected components
against a flood fill written here, FieldQuery on a hand-built street field (metric boxes, occupancy
filtering, softmax argmax, segmentation), the errors and format_results."""

from __future__ import annotations

from collections import deque
from itertools import product

import numpy as np
import pytest
import torch
from text_encoder_stub import HashEncoder

from geo3d.fields import FieldQuery, connected_components, format_results, score_field
from geo3d.language import CANONICAL_NEGATIVES, encode_prompts, relevancy, softmax_classify
from geo3d.structures import OpenVocabField
from geo3d.structures.field import FieldError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIM = 16  # the stub's road / car / tree / sky embeddings are far apart at D = 16 (checked in `street`)
ORIGIN, VOXEL = np.array([-6.0, -4.0, -1.0]), 0.5
SHAPE = (24, 16, 6)
# a ground slab (k = 1) and, standing on it, a big car, a small car and a tree (index ranges, end exclusive)
BIG_CAR = ((2, 8), (2, 6), (2, 4))
SMALL_CAR = ((14, 17), (2, 4), (2, 3))
TREE = ((10, 12), (10, 12), (2, 6))
LOW_ON_CAR = (2, 2, 4)  # a "car" voxel on top of the big car with occupancy 0.3: ignored
LOW_ALONE = (20, 12, 3)  # an isolated "car" voxel with occupancy 0.2: ignored


def _unit(rng, n, d):
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def random_field(rng, shape=(7, 6, 5), fraction=0.6, dim=16, voxel_size=(0.5, 0.4, 0.25), origin=(-1.0, 2.0, -0.5)):
    """Feature voxels at a random ``fraction`` of the grid with random unit features, all occupied."""
    occupancy = np.ones(shape, np.float32)
    indices = np.argwhere(rng.uniform(size=shape) < fraction)
    features = _unit(rng, len(indices), dim).astype(np.float32)
    return OpenVocabField(origin, voxel_size, "ego", occupancy, indices, features, "random:test")


def _in_box(idx, box):
    return np.all([(idx[:, a] >= box[a][0]) & (idx[:, a] < box[a][1]) for a in range(3)], axis=0)


def _box_metres(box):
    lower = ORIGIN + np.array([b[0] for b in box]) * VOXEL
    upper = ORIGIN + np.array([b[1] for b in box]) * VOXEL
    return lower, upper


@pytest.fixture(scope="module")
def encoder():
    return HashEncoder(dim=DIM)


@pytest.fixture(scope="module")
def street(encoder):
    """The hand-built field: ground "road", two "car" boxes, a "tree", two low-occupancy "car" voxels."""
    occ = np.zeros(SHAPE, np.float32)
    occ[:, :, 1] = 0.9
    for box in (BIG_CAR, SMALL_CAR, TREE):
        occ[tuple(slice(*b) for b in box)] = 1.0
    occ[LOW_ON_CAR], occ[LOW_ALONE] = 0.3, 0.2
    idx = np.argwhere(occ > 0)
    words = encode_prompts(encoder, ["road", "car", "tree", "sky"])
    cross = relevancy(words[:3], words, encode_prompts(encoder, list(CANONICAL_NEGATIVES))).numpy()
    assert (cross[~np.eye(3, 4, dtype=bool)] < 0.45).all()  # precondition: no word is relevant to another
    road, car, tree = words[:3].numpy()
    is_car = (_in_box(idx, BIG_CAR) | _in_box(idx, SMALL_CAR) | np.all(idx == LOW_ON_CAR, 1)
              | np.all(idx == LOW_ALONE, 1))
    is_tree = _in_box(idx, TREE)
    feats = np.where(is_car[:, None], car, np.where(is_tree[:, None], tree, road)).astype(np.float32)
    return OpenVocabField(ORIGIN, VOXEL, "ego", occ, idx, feats, encoder.space)


def _rows_in(field_, box):
    return np.flatnonzero(_in_box(field_.indices.astype(np.int64), box))


def _row_of(field_, ijk):
    return int(np.flatnonzero(np.all(field_.indices == ijk, axis=1))[0])


# ------------------------------------------------------------------------------------------ score_field


def test_score_field_equals_the_language_references():
    rng = np.random.default_rng(0)
    field_ = random_field(rng, shape=(6, 5, 4), fraction=0.8, dim=16)
    feats = torch.from_numpy(field_.features).float()
    queries = torch.from_numpy(_unit(rng, 3, 16)).float()
    negatives = torch.from_numpy(_unit(rng, 4, 16)).float()
    scores = score_field(field_, 2.5 * queries, mode="relevancy", negative_embeddings=negatives)  # scale: ignored
    assert scores.shape == (field_.num_features, 3) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, relevancy(feats, queries, negatives).numpy(), atol=1e-6, rtol=0)
    # the features passed in are used instead of the field's (here: the same numbers)
    again = score_field(field_, queries, mode="relevancy", negative_embeddings=negatives, features=feats)
    np.testing.assert_allclose(again, scores, atol=1e-6, rtol=0)
    # softmax over a vocabulary whose first rows are the queries
    vocabulary = torch.cat([queries, torch.from_numpy(_unit(rng, 3, 16)).float()])
    probs = score_field(field_, queries, mode="softmax", vocabulary_embeddings=vocabulary)
    reference = softmax_classify(feats, vocabulary).probs[:, :3].numpy()
    np.testing.assert_allclose(probs, reference, atol=1e-6, rtol=0)
    assert np.all(probs.sum(1) <= 1 + 1e-6)


def test_score_field_errors():
    rng = np.random.default_rng(1)
    field_ = random_field(rng, dim=8)
    q = torch.from_numpy(_unit(rng, 2, 8)).float()
    with pytest.raises(FieldError, match="negative_embeddings"):
        score_field(field_, q, mode="relevancy")
    with pytest.raises(FieldError, match="vocabulary_embeddings"):
        score_field(field_, q, mode="softmax", vocabulary_embeddings=q[:1])
    with pytest.raises(FieldError, match="unknown query mode"):
        score_field(field_, q, mode="cosine")
    with pytest.raises(FieldError, match=r"\[Q, 8\]"):
        score_field(field_, torch.ones(2, 5), negative_embeddings=q)
    with pytest.raises(FieldError, match="NaN/inf or all-zero"):
        score_field(field_, torch.zeros(1, 8), negative_embeddings=q)


# ------------------------------------------------------------------------------- connected components


def flood_fill(index: np.ndarray, connectivity: int) -> list[set[int]]:
    """Components of the voxels ``index [S, 3]`` (positions into it) by breadth-first search."""
    offsets = [d for d in product((-1, 0, 1), repeat=3) if 0 < sum(map(abs, d)) <= {6: 1, 18: 2, 26: 3}[connectivity]]
    where = {tuple(int(v) for v in ijk): s for s, ijk in enumerate(index)}
    label = {}
    parts = []
    for start in range(len(index)):
        if start in label:
            continue
        part, queue = {start}, deque([start])
        label[start] = len(parts)
        while queue:
            i, j, k = index[queue.popleft()]
            for di, dj, dk in offsets:
                other = where.get((int(i) + di, int(j) + dj, int(k) + dk))
                if other is not None and other not in label:
                    label[other] = len(parts)
                    part.add(other)
                    queue.append(other)
        parts.append(part)
    return parts


@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_connected_components_match_a_flood_fill(seed, connectivity):
    rng = np.random.default_rng(seed)
    field_ = random_field(rng, shape=(9, 8, 6))
    scores = rng.uniform(size=field_.num_features).astype(np.float32)
    density = {6: 0.5, 18: 0.25, 26: 0.15}[connectivity]  # below percolation: many components
    rows = np.flatnonzero(rng.uniform(size=field_.num_features) < density)
    components = connected_components(field_, rows, scores, connectivity)
    index = field_.indices[rows].astype(np.int64)
    expected = flood_fill(index, connectivity)
    assert len(expected) > 3  # several components
    # the same partition of the selected rows
    got = sorted(tuple(sorted(c.rows.tolist())) for c in components)
    assert got == sorted(tuple(sorted(rows[list(p)].tolist())) for p in expected)
    for comp in components:
        part = np.searchsorted(rows, comp.rows)
        ijk = index[part]
        assert comp.voxels == len(comp.rows) == len(part)
        np.testing.assert_allclose(comp.box_min, field_.origin + ijk.min(0) * field_.voxel_size, atol=1e-12)
        np.testing.assert_allclose(comp.box_max, field_.origin + (ijk.max(0) + 1) * field_.voxel_size, atol=1e-12)
        np.testing.assert_allclose(comp.size, comp.box_max - comp.box_min)
        np.testing.assert_allclose(comp.center, (field_.origin + (ijk + 0.5) * field_.voxel_size).mean(0), atol=1e-12)
        s = scores[comp.rows].astype(np.float64)
        assert comp.score_sum == pytest.approx(s.sum()) and comp.max_score == pytest.approx(s.max())
        assert comp.mean_score == pytest.approx(s.mean())
    sums = [c.score_sum for c in components]
    assert sums == sorted(sums, reverse=True)


def test_connected_components_edge_cases():
    field_ = random_field(np.random.default_rng(3))
    scores = np.ones(field_.num_features)
    assert connected_components(field_, np.zeros(0, np.int64), scores) == []
    single = connected_components(field_, [4], scores)
    assert len(single) == 1 and single[0].voxels == 1 and single[0].rows.tolist() == [4]
    np.testing.assert_allclose(single[0].size, field_.voxel_size)
    with pytest.raises(FieldError, match="connectivity"):
        connected_components(field_, [0], scores, connectivity=8)


# ----------------------------------------------------------------------------------------- FieldQuery


def test_relevancy_query_finds_the_cars_with_their_boxes(street, encoder):
    query = FieldQuery(street, encoder)
    (car,) = query("car")
    # independent: relevancy of every feature against the prompt-ensembled query and negatives
    feats = torch.from_numpy(street.features).float()
    negatives = encode_prompts(encoder, list(CANONICAL_NEGATIVES))
    expected = relevancy(feats, encode_prompts(encoder, ["car"])[0], negatives).numpy()
    occupied = street.occupancy[tuple(street.indices.T.astype(np.int64))] >= 0.5
    np.testing.assert_allclose(car.scores[occupied], expected[occupied], atol=1e-6, rtol=0)
    low = [_row_of(street, LOW_ON_CAR), _row_of(street, LOW_ALONE)]
    assert np.isnan(car.scores[low]).all() and np.isnan(car.scores[~occupied]).all() and not car.selected[low].any()
    assert np.array_equal(car.selected, occupied & (expected >= 0.5))
    assert len(car.components) == 2  # the road and the tree are not cars; the low voxels are ignored
    big, small = car.components
    assert sorted(big.rows.tolist()) == _rows_in(street, BIG_CAR).tolist() and big.voxels == 6 * 4 * 2
    assert sorted(small.rows.tolist()) == _rows_in(street, SMALL_CAR).tolist()
    for comp, box in ((big, BIG_CAR), (small, SMALL_CAR)):
        lower, upper = _box_metres(box)
        np.testing.assert_allclose(comp.box_min, lower, atol=1e-9)
        np.testing.assert_allclose(comp.box_max, upper, atol=1e-9)  # not raised by the 0.3 voxel on top
        assert comp.mean_score > 0.99
    # the tree query: one component, the tree's box
    (tree,) = query(["tree"])
    assert len(tree.components) == 1
    np.testing.assert_allclose(tree.components[0].box_min, _box_metres(TREE)[0], atol=1e-9)
    np.testing.assert_allclose(tree.components[0].box_max, _box_metres(TREE)[1], atol=1e-9)
    assert car.to_dict(top_k=1)["components"] == 2 and len(car.to_dict(top_k=1)["objects"]) == 1


def test_occupancy_threshold_and_connectivity(street, encoder):
    # with occupancy_threshold 0.25, the 0.3 voxel joins the big car (raising its box), 0.2 stays out
    (car,) = FieldQuery(street, encoder, occupancy_threshold=0.25)("car")
    assert car.selected[_row_of(street, LOW_ON_CAR)] and not car.selected[_row_of(street, LOW_ALONE)]
    assert car.components[0].voxels == 6 * 4 * 2 + 1
    assert car.components[0].box_max[2] == pytest.approx(ORIGIN[2] + 5 * VOXEL)
    # a stricter relevancy threshold than any score: nothing
    (none,) = FieldQuery(street, encoder, threshold=1.0)("car")
    assert none.num_selected == 0 and none.components == []


def test_softmax_mode_selects_the_argmax_voxels(street, encoder):
    vocabulary = ["road", "car", "tree"]
    query = FieldQuery(street, encoder, mode="softmax", vocabulary=vocabulary)
    assert query.threshold == 0.0
    car, sky = query(["car", "sky"])  # "sky" is not in the vocabulary: it joins it
    feats = torch.from_numpy(street.features).float()
    classes = encode_prompts(encoder, ["car", "sky", "road", "tree"])
    reference = softmax_classify(feats, classes)
    active = street.occupancy[tuple(street.indices.T.astype(np.int64))] >= 0.5
    np.testing.assert_allclose(car.scores[active], reference.probs[active, 0].numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(sky.scores[active], reference.probs[active, 1].numpy(), atol=1e-6, rtol=0)
    assert np.isnan(car.scores[~active]).all()
    labels = reference.labels.numpy()
    assert np.array_equal(car.selected, active & (labels == 0))
    assert np.array_equal(sky.selected, active & (labels == 1))
    is_car = _in_box(street.indices.astype(np.int64), BIG_CAR) | _in_box(street.indices.astype(np.int64), SMALL_CAR)
    assert np.array_equal(car.selected, is_car) and sky.num_selected == 0
    assert [c.voxels for c in car.components] == [48, 6]
    # a high probability threshold keeps only confident argmax voxels (all of them here)
    (strict,) = FieldQuery(street, encoder, mode="softmax", vocabulary=vocabulary, threshold=0.9)(["car"])
    assert np.array_equal(strict.selected, active & (labels == 0) & (np.nan_to_num(strict.scores) >= 0.9))


def test_segment_labels_every_active_voxel(street, encoder):
    query = FieldQuery(street, encoder, mode="softmax", vocabulary=["road", "car", "tree"])
    labels, probs = query.segment()
    idx = street.indices.astype(np.int64)
    active = street.occupancy[tuple(idx.T)] >= 0.5
    expected = np.where(_in_box(idx, BIG_CAR) | _in_box(idx, SMALL_CAR), 1, np.where(_in_box(idx, TREE), 2, 0))
    assert labels.dtype == np.int64 and np.array_equal(labels, np.where(active, expected, -1))
    reference = softmax_classify(torch.from_numpy(street.features).float(),
                                 encode_prompts(encoder, ["road", "car", "tree"])).probs.max(1).values.numpy()
    np.testing.assert_allclose(probs[active], reference[active], atol=1e-6, rtol=0)
    assert np.isnan(probs[~active]).all()
    with pytest.raises(FieldError, match="segment"):
        FieldQuery(street, encoder).segment()


class OtherSpaceEncoder(HashEncoder):
    space = "hash:other"


def test_field_query_errors(street, encoder):
    query = FieldQuery(street, encoder)
    with pytest.raises(FieldError, match="non-empty"):
        query("")
    with pytest.raises(FieldError, match="non-empty"):
        query(["car", "  "])
    with pytest.raises(FieldError, match="distinct"):
        query(["car", "car"])
    with pytest.raises(FieldError, match="distinct"):
        query.scores(["tree", "tree"])
    with pytest.raises(FieldError, match="unknown query mode"):
        FieldQuery(street, encoder, mode="cosine")
    for bad in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(FieldError, match="threshold"):
            FieldQuery(street, encoder, threshold=bad)
    with pytest.raises(FieldError, match="occupancy_threshold"):
        FieldQuery(street, encoder, occupancy_threshold=2.0)
    with pytest.raises(FieldError, match="same text encoder"):
        FieldQuery(street, OtherSpaceEncoder(dim=DIM))
    with pytest.raises(FieldError, match="vocabulary is only used"):
        FieldQuery(street, encoder, vocabulary=["car", "tree"])
    with pytest.raises(FieldError, match="needs a vocabulary"):
        FieldQuery(street, encoder, mode="softmax")
    with pytest.raises(FieldError, match="OpenVocabField"):
        FieldQuery("field.npz", encoder)


def test_format_results(street, encoder):
    results = FieldQuery(street, encoder)(["car", "tree", "sky"])
    text = format_results(results, top_k=1)
    lines = text.splitlines()
    assert lines[0].startswith('"car": 2 objects found (54 voxels, relevancy >= 0.5):')
    assert lines[1].startswith("  1. centre (") and "48 voxels" in lines[1]
    big_center = results[0].components[0].center
    assert f"centre ({big_center[0]:.1f}, {big_center[1]:.1f}, {big_center[2]:.1f}) m" in lines[1]
    assert "box 3.0x2.0x1.0 m" in lines[1]
    assert lines[2] == "  ... 1 more"
    assert lines[3].startswith('"tree": 1 object found (16 voxels')
    assert any(line.startswith('"sky": 0 objects found (0 voxels') for line in lines)
    assert len(lines) == 6 and "more" not in format_results(results, top_k=2)
