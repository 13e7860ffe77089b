"""Occupancy and distillation losses: Lovász values against their definition, exact cases, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geo3d.occupancy import (
    OccupancyError, feature_distillation_loss, lovasz_hinge, lovasz_softmax, occupancy_loss,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def jaccard_loss_of_set(mistakes: set, foreground: set) -> float:
    """Delta(M) = |M| / |G u M| (0 for M empty)."""
    union = foreground | mistakes
    return len(mistakes) / len(union) if union else 0.0


def lovasz_by_definition(errors: np.ndarray, foreground: np.ndarray) -> float:
    """Lovász extension as the interpolation sum_i (m_(i) - m_(i+1)) Delta({first i}) over sorted errors."""
    order = sorted(range(len(errors)), key=lambda i: -errors[i])
    fg = {i for i in range(len(errors)) if foreground[i]}
    total = 0.0
    for rank in range(len(order)):
        nxt = errors[order[rank + 1]] if rank + 1 < len(order) else 0.0
        total += (errors[order[rank]] - nxt) * jaccard_loss_of_set(set(order[:rank + 1]), fg)
    return total


def test_lovasz_softmax_matches_definition():
    rng = np.random.default_rng(0)
    probs = torch.softmax(torch.from_numpy(rng.normal(size=(60, 4))), 1)
    labels = torch.from_numpy(rng.choice([0, 1, 3], size=60))
    p, y = probs.numpy(), labels.numpy()
    expected = {c: lovasz_by_definition(np.abs((y == c) - p[:, c]), y == c) for c in range(4)}
    got = lovasz_softmax(probs, labels)
    assert float(got) == pytest.approx(np.mean([expected[c] for c in (0, 1, 3)]), rel=1e-12)
    got_all = lovasz_softmax(probs, labels, classes="all")
    assert float(got_all) == pytest.approx(np.mean(list(expected.values())), rel=1e-12)
    assert float(lovasz_softmax(probs, labels, classes=[2])) == pytest.approx(expected[2], rel=1e-12)


def test_lovasz_on_binary_predictions_is_one_minus_iou():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=200)
    pred = np.where(rng.uniform(size=200) < 0.7, y, rng.integers(0, 3, size=200))
    probs = torch.from_numpy(np.eye(3)[pred])
    ious = [((y == c) & (pred == c)).sum() / ((y == c) | (pred == c)).sum() for c in range(3)]
    got = lovasz_softmax(probs, torch.from_numpy(y))
    assert float(got) == pytest.approx(1.0 - np.mean(ious), abs=1e-12)
    assert float(lovasz_softmax(torch.from_numpy(np.eye(3)[y]), torch.from_numpy(y))) == 0.0


def test_lovasz_hinge_matches_definition_and_perfect_is_zero():
    rng = np.random.default_rng(2)
    logits = torch.from_numpy(rng.normal(size=50) * 2)
    labels = torch.from_numpy(rng.integers(0, 2, size=50))
    errors = np.maximum(0.0, 1.0 - logits.numpy() * (2 * labels.numpy() - 1))
    assert float(lovasz_hinge(logits, labels)) == pytest.approx(lovasz_by_definition(errors, labels.numpy() == 1),
                                                               rel=1e-12)
    assert float(lovasz_hinge((2 * labels - 1).double() * 3.0, labels)) == 0.0  # margins > 1: no error


def test_ignore_index_excludes_elements():
    rng = np.random.default_rng(3)
    probs = torch.softmax(torch.from_numpy(rng.normal(size=(40, 2))), 1)
    labels = torch.from_numpy(rng.integers(0, 2, size=40))
    masked = labels.clone()
    masked[::3] = -1
    keep = masked >= 0
    assert float(lovasz_softmax(probs, masked, ignore_index=-1)) == float(lovasz_softmax(probs[keep], labels[keep]))
    logits = torch.from_numpy(rng.normal(size=40))
    assert float(lovasz_hinge(logits, masked, ignore_index=-1)) == float(lovasz_hinge(logits[keep], labels[keep]))


def test_gradients_finite_and_gradcheck():
    rng = np.random.default_rng(4)
    probs = torch.softmax(torch.from_numpy(rng.normal(size=(25, 3))), 1).requires_grad_(True)
    labels = torch.from_numpy(rng.integers(0, 3, size=25))
    assert torch.autograd.gradcheck(lambda p: lovasz_softmax(p, labels), (probs,))
    logits = torch.from_numpy(rng.normal(size=25)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: lovasz_hinge(x, labels.clamp(max=1)), (logits,))
    grid = torch.from_numpy(rng.normal(size=(2, 3, 4, 2))).requires_grad_(True)
    target = torch.from_numpy(rng.integers(-1, 2, size=(2, 3, 4, 2)))
    assert torch.autograd.gradcheck(lambda x: occupancy_loss(x, target, pos_weight=2.0).total, (grid,))
    student = torch.from_numpy(rng.normal(size=(6, 5))).requires_grad_(True)
    teacher = torch.from_numpy(rng.normal(size=(6, 5)))
    assert torch.autograd.gradcheck(lambda s: feature_distillation_loss(s, teacher, "cosine+l2"), (student,))
    loss = occupancy_loss(grid.float().detach().requires_grad_(True), target)
    loss.total.backward()


def test_occupancy_loss_values_and_two_logit_form():
    rng = np.random.default_rng(5)
    logits = torch.from_numpy(rng.normal(size=(2, 4, 3, 2)))
    target = torch.from_numpy(rng.integers(-1, 2, size=(2, 4, 3, 2)))
    known = target >= 0
    x, y = logits[known], target[known].double()
    w = torch.where(y == 1, 3.0, 1.0).double()
    ce = (w * -(y * torch.log(torch.sigmoid(x)) + (1 - y) * torch.log(1 - torch.sigmoid(x)))).mean()
    p = torch.sigmoid(x).numpy()
    lov = np.mean([lovasz_by_definition(np.abs((y.numpy() == c) - (p if c else 1 - p)), y.numpy() == c)
                   for c in (0, 1)])
    got = occupancy_loss(logits, target, pos_weight=3.0, lovasz_weight=0.5)
    assert float(got.ce) == pytest.approx(float(ce), rel=1e-12)
    assert float(got.lovasz) == pytest.approx(lov, rel=1e-12)
    assert float(got.total) == pytest.approx(float(ce) + 0.5 * lov, rel=1e-12)
    two = occupancy_loss(torch.stack([torch.zeros_like(logits), logits], 1), target, pos_weight=3.0,
                         lovasz_weight=0.5)
    assert torch.allclose(torch.stack(list(two)), torch.stack(list(got)), rtol=1e-12)
    hinge = occupancy_loss(logits, target, lovasz="hinge")
    assert float(hinge.lovasz) == pytest.approx(float(lovasz_hinge(x, y.long())), rel=1e-12)
    unweighted = occupancy_loss(logits, target)
    assert float(unweighted.ce) == pytest.approx(float(F.binary_cross_entropy_with_logits(x, y)), rel=1e-12)


def test_occupancy_loss_all_unknown_is_zero_with_graph():
    logits = torch.randn(1, 2, 2, 2, requires_grad=True)
    got = occupancy_loss(logits, torch.full((1, 2, 2, 2), -1))
    assert float(got.total.detach()) == 0.0
    got.total.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_feature_distillation_hand_made_values():
    student = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    teacher = torch.tensor([[0.0, 1.0], [0.0, 5.0], [-3.0, -4.0]])
    cosine = torch.tensor([1.0, 0.0, 2.0])  # 1 - cos: orthogonal, parallel, opposite
    l2 = torch.tensor([(1 + 1) / 2, 9 / 2, (36 + 64) / 2])
    assert float(feature_distillation_loss(student, teacher)) == pytest.approx(1.0)
    assert float(feature_distillation_loss(student, teacher, "l2")) == pytest.approx(float(l2.mean()))
    assert float(feature_distillation_loss(student, teacher, "cosine+l2")) == pytest.approx(float((cosine + l2).mean()))
    weights = torch.tensor([1.0, 0.0, 3.0])
    assert float(feature_distillation_loss(student, teacher, weights=weights)) == pytest.approx((1 + 6) / 4)
    s = student.clone().requires_grad_(True)
    t = teacher.clone().requires_grad_(True)
    feature_distillation_loss(s, t, "l2").backward()
    assert t.grad is None and s.grad is not None  # no gradient into the teacher
    empty = torch.zeros(0, 4, requires_grad=True)
    assert float(feature_distillation_loss(empty, torch.zeros(0, 4)).detach()) == 0.0


@pytest.mark.parametrize("call, match", [
    (lambda: lovasz_softmax(torch.rand(4, 2), torch.tensor([0, 1, 2, 0])), "labels"),
    (lambda: lovasz_softmax(torch.rand(4, 2), torch.tensor([0.0, 1, 0, 0])), "labels"),
    (lambda: lovasz_softmax(torch.rand(4, 2), torch.tensor([0, 1, 0, 0]), classes="some"), "classes"),
    (lambda: lovasz_softmax(torch.full((2, 2), float("nan")), torch.tensor([0, 1])), "probs"),
    (lambda: lovasz_hinge(torch.rand(3), torch.tensor([0, 2, 1])), "labels"),
    (lambda: occupancy_loss(torch.rand(1, 3, 2, 2, 2), torch.zeros(1, 2, 2, 2, dtype=torch.long)), "logits"),
    (lambda: occupancy_loss(torch.rand(1, 2, 2, 2), torch.zeros(1, 2, 2, 3, dtype=torch.long)), "target"),
    (lambda: occupancy_loss(torch.rand(1, 2, 2, 2), torch.full((1, 2, 2, 2), 2)), "target"),
    (lambda: occupancy_loss(torch.rand(1, 2, 2, 2), torch.zeros(1, 2, 2, 2)), "target"),
    (lambda: occupancy_loss(torch.rand(1, 2, 2, 2), torch.zeros(1, 2, 2, 2, dtype=torch.long), pos_weight=-1),
     "pos_weight"),
    (lambda: occupancy_loss(torch.rand(1, 2, 2, 2), torch.zeros(1, 2, 2, 2, dtype=torch.long), lovasz="x"),
     "lovasz"),
    (lambda: feature_distillation_loss(torch.rand(3, 4), torch.rand(3, 5)), "differ"),
    (lambda: feature_distillation_loss(torch.rand(3, 4), torch.rand(3, 4), kind="l1"), "kind"),
    (lambda: feature_distillation_loss(torch.rand(3, 4), torch.rand(3, 4), weights=torch.zeros(3)), "weights"),
    (lambda: feature_distillation_loss(torch.rand(3, 4), torch.rand(3, 4), weights=torch.ones(2)), "weights"),
])
def test_errors(call, match):
    with pytest.raises(OccupancyError, match=match):
        call()
