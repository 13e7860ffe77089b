"""Mesh metrics against brute-force NumPy nearest neighbours and analytic cases (concentric spheres)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from geo3d.errors import MeshError
from geo3d.points import f_score
from geo3d.sdf.metrics import mesh_metrics, point_metrics, relative_to_diagonal
from geo3d.structures.mesh import TriangleMesh, read_mesh
from geo3d.structures.shapes import sample_surface

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sphere(radius: float, subdivisions: int = 4) -> TriangleMesh:
    return TriangleMesh.from_trimesh(trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius))


def brute_force_metrics(pred, pred_n, ref, ref_n, thresholds):
    """The documented formulas with all-pairs distances."""
    pair = np.linalg.norm(pred[:, None] - ref[None], axis=-1)
    nn_pr, nn_rp = pair.argmin(1), pair.argmin(0)
    d_pr, d_rp = pair.min(1), pair.min(0)
    nc = 0.5 * (np.abs((pred_n * ref_n[nn_pr]).sum(1)).mean() + np.abs((ref_n * pred_n[nn_rp]).sum(1)).mean())
    precision = {t: (d_pr < t).mean() for t in thresholds}
    recall = {t: (d_rp < t).mean() for t in thresholds}
    f = {t: 2 * precision[t] * recall[t] / (precision[t] + recall[t]) if precision[t] + recall[t] else 0.0
         for t in thresholds}
    return {
        "chamfer_l1": 0.5 * (d_pr.mean() + d_rp.mean()),
        "chamfer_l2": 0.5 * ((d_pr**2).mean() + (d_rp**2).mean()),
        "normal_consistency": nc,
        "accuracy": d_pr.mean(),
        "completeness": d_rp.mean(),
        "precision": precision,
        "recall": recall,
        "f_score": f,
    }


def check_against(result, expected):
    for key, value in expected.items():
        got = getattr(result, key)
        if isinstance(value, dict):
            assert got.keys() == value.keys()
            for t in value:
                assert got[t] == pytest.approx(value[t], abs=1e-12), (key, t)
        else:
            assert got == pytest.approx(value, rel=1e-10), key


def test_mesh_metrics_match_brute_force_on_small_meshes():
    predicted = TriangleMesh.from_trimesh(trimesh.creation.box(extents=[1.0, 0.8, 0.6]))
    reference = sphere(0.5, subdivisions=2)
    thresholds = (0.02, 0.05, 0.1)
    result = mesh_metrics(predicted, reference, num_samples=700, f_score_thresholds=thresholds, seed=5)
    # mesh_metrics samples with the documented streams: default_rng([seed, 0]) / default_rng([seed, 1])
    pred, pred_n = sample_surface(predicted.vertices, predicted.faces, 700, np.random.default_rng([5, 0]))
    ref, ref_n = sample_surface(reference.vertices, reference.faces, 700, np.random.default_rng([5, 1]))
    check_against(result, brute_force_metrics(pred, pred_n, ref, ref_n, thresholds))
    assert result.num_samples == 700 and not result.predicted_empty
    # the F-score agrees with geo3d.points.f_score on the same samples
    reference_f = f_score(torch.from_numpy(pred), torch.from_numpy(ref), list(thresholds))
    np.testing.assert_allclose([result.f_score[t] for t in thresholds], reference_f.f_score.numpy(), atol=1e-12)


def test_point_metrics_match_brute_force_and_accept_tensors():
    rng = np.random.default_rng(0)
    pred, ref = rng.normal(size=(300, 3)), rng.normal(size=(250, 3)) + 0.1
    pred_n = rng.normal(size=(300, 3))
    ref_n = rng.normal(size=(250, 3))
    pred_n /= np.linalg.norm(pred_n, axis=1, keepdims=True)
    ref_n /= np.linalg.norm(ref_n, axis=1, keepdims=True)
    result = point_metrics(torch.from_numpy(pred), pred_n, ref, torch.from_numpy(ref_n), f_score_thresholds=0.3)
    check_against(result, brute_force_metrics(pred, pred_n, ref, ref_n, [0.3]))


def test_identical_meshes():
    mesh = sphere(0.5)
    result = mesh_metrics(mesh, mesh, num_samples=20000, f_score_thresholds=(0.05,))
    spacing = np.sqrt(mesh.area() / 20000)
    assert 0 < result.chamfer_l1 < spacing  # only sampling noise: the two sample sets differ
    assert result.normal_consistency > 0.99
    assert result.f_score[0.05] == 1.0 and result.precision[0.05] == 1.0 and result.recall[0.05] == 1.0
    # deterministic given the seed
    assert mesh_metrics(mesh, mesh, num_samples=2000) == mesh_metrics(mesh, mesh, num_samples=2000)
    assert mesh_metrics(mesh, mesh, num_samples=2000, seed=1) != mesh_metrics(mesh, mesh, num_samples=2000)


def test_concentric_spheres_match_analytic_values():
    outer, inner = sphere(0.5, 5), sphere(0.4, 5)
    result = mesh_metrics(outer, inner, num_samples=30000, f_score_thresholds=(0.09, 0.12))
    # every sample of one sphere is |r1 - r2| = 0.1 from the other (up to tessellation and sampling)
    assert result.chamfer_l1 == pytest.approx(0.1, rel=0.02)
    assert result.accuracy == pytest.approx(0.1, rel=0.02) and result.completeness == pytest.approx(0.1, rel=0.02)
    assert result.chamfer_l2 == pytest.approx(0.01, rel=0.04)
    assert result.normal_consistency > 0.99
    assert result.f_score[0.09] == 0.0 and result.precision[0.09] == 0.0 and result.recall[0.09] == 0.0
    assert result.f_score[0.12] == 1.0


def test_flipped_normals_keep_normal_consistency():
    mesh = sphere(0.5)
    flipped = TriangleMesh(mesh.vertices, mesh.faces[:, ::-1].copy())
    assert np.allclose(flipped.face_normals(), -mesh.face_normals())
    result = mesh_metrics(flipped, mesh, num_samples=10000)
    assert result.normal_consistency > 0.99
    # a badly wrong shape has clearly lower consistency (a box against a sphere)
    box = TriangleMesh.from_trimesh(trimesh.creation.box(extents=[1.0, 1.0, 1.0]))
    assert mesh_metrics(box, mesh, num_samples=10000).normal_consistency < 0.95


def test_scaled_bunny(meshes_dir):
    bunny = read_mesh(meshes_dir / "bunny_watertight.ply")
    scaled = TriangleMesh(bunny.vertices * 1.02, bunny.faces)
    result = mesh_metrics(scaled, bunny, num_samples=20000, f_score_thresholds=relative_to_diagonal(bunny, 0.01))
    assert 0.002 < result.chamfer_l1 < 0.012
    assert 0.0 < list(result.f_score.values())[0] < 1.0


def test_empty_prediction():
    reference = sphere(0.5, 1)
    empty = TriangleMesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64))
    worst = mesh_metrics(empty, reference, f_score_thresholds=(0.01, 0.02))
    diagonal = np.linalg.norm(np.ptp(reference.vertices, axis=0))
    assert worst.predicted_empty
    assert worst.chamfer_l1 == pytest.approx(diagonal) and worst.chamfer_l2 == pytest.approx(diagonal**2)
    assert worst.normal_consistency == 0.0 and worst.f_score == {0.01: 0.0, 0.02: 0.0}
    with pytest.raises(MeshError, match="predicted mesh has no surface"):
        mesh_metrics(empty, reference, empty_prediction="raise")


def test_relative_to_diagonal():
    box = TriangleMesh.from_trimesh(trimesh.creation.box(extents=[1.0, 2.0, 2.0]))
    assert relative_to_diagonal(box, (0.01, 0.1)) == pytest.approx((0.03, 0.3))
    with pytest.raises(MeshError, match="fractions"):
        relative_to_diagonal(box, -0.1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_samples": 0}, "num_samples"),
        ({"f_score_thresholds": (0.01, 0.0)}, "f_score_thresholds"),
        ({"f_score_thresholds": ()}, "f_score_thresholds"),
        ({"empty_prediction": "zero"}, "empty_prediction"),
    ],
)
def test_bad_options_raise(kwargs, message):
    with pytest.raises(MeshError, match=message):
        mesh_metrics(sphere(0.5, 1), sphere(0.4, 1), **kwargs)


def test_bad_inputs_raise():
    mesh = sphere(0.5, 1)
    with pytest.raises(MeshError, match="reference mesh has no surface"):
        mesh_metrics(mesh, TriangleMesh(np.zeros((3, 3)), np.array([[0, 1, 2]])))
    with pytest.raises(MeshError, match="predicted must be a geo3d TriangleMesh"):
        mesh_metrics(mesh.to_trimesh(), mesh)
    points = np.zeros((5, 3))
    with pytest.raises(MeshError, match="reference_points must have shape"):
        point_metrics(points, points, np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(MeshError, match="predicted_points holds NaN"):
        point_metrics(np.full((5, 3), np.nan), points, points, points)
    with pytest.raises(MeshError, match="differ in length"):
        point_metrics(points, points[:4], points, points)
