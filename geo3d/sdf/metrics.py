"""Surface-reconstruction metrics between two triangle meshes: Chamfer-L1/L2, normal consistency, F-score.

Both meshes are sampled uniformly by area (``num_samples`` points each, face normals) and every
sample is matched to its nearest sample on the other mesh (:func:`geo3d.points.nearest_costs`, a
KD-tree on the CPU); :func:`point_metrics` does the same on given oriented point sets. With
``d_pr(x)`` the distance of a predicted sample to the reference samples and ``d_rp(y)`` the other way
round (``docs/sdf.md`` compares with the papers):

- ``accuracy = mean_x d_pr(x)``, ``completeness = mean_y d_rp(y)``;
- ``chamfer_l1 = 0.5 * (accuracy + completeness)``: the Occupancy Networks / ConvONet "Chamfer-L1"
  (a mean of Euclidean, i.e. L2-norm, distances, averaged over the two directions);
- ``chamfer_l2 = 0.5 * (mean_x d_pr(x)^2 + mean_y d_rp(y)^2)``: squared distances, the two
  directions **averaged** (DeepSDF and pytorch3d *add* them: multiply by 2 to compare);
- ``normal_consistency = 0.5 * (mean_x |n_x . n_nn(x)| + mean_y |n_y . n_nn(y)|)``: absolute cosine
  between a sample's normal and its nearest neighbour's, so it ignores orientation (ConvONet);
- ``precision[t] = frac_x(d_pr(x) < t)``, ``recall[t] = frac_y(d_rp(y) < t)``, ``f_score[t] = 2PR/(P+R)``
  (Tatarchenko et al. 2019, Tanks and Temples), strict ``<`` as :func:`geo3d.points.f_score`.

Thresholds are in the meshes' units (metres); :func:`relative_to_diagonal` turns fractions of the
reference's bounding-box diagonal into such thresholds (papers on normalised shapes often use 1% of
the side or diagonal).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch

from geo3d.errors import MeshError
from geo3d.points import nearest_costs
from geo3d.structures.mesh import TriangleMesh
from geo3d.structures.shapes import sample_surface


class MeshMetrics(NamedTuple):
    """Result of :func:`mesh_metrics` (distances in the meshes' units).

    Attributes:
        chamfer_l1: ``0.5 * (accuracy + completeness)``.
        chamfer_l2: ``0.5 * (mean squared accuracy + mean squared completeness)``.
        normal_consistency: mean absolute cosine of matched normals, both directions averaged, in [0, 1].
        f_score: ``{threshold: F}`` per threshold, in [0, 1].
        precision: ``{threshold: fraction of predicted samples within threshold of the reference}``.
        recall: ``{threshold: fraction of reference samples within threshold of the prediction}``.
        accuracy: mean distance of predicted samples to the reference.
        completeness: mean distance of reference samples to the prediction.
        num_samples: surface samples drawn on each mesh.
        predicted_empty: True when the prediction had no surface and the worst-case values were used.
    """

    chamfer_l1: float
    chamfer_l2: float
    normal_consistency: float
    f_score: dict[float, float]
    precision: dict[float, float]
    recall: dict[float, float]
    accuracy: float
    completeness: float
    num_samples: int
    predicted_empty: bool


def relative_to_diagonal(mesh: TriangleMesh, fractions: float | Sequence[float]) -> tuple[float, ...]:
    """Thresholds in world units: ``fractions`` of the mesh's bounding-box diagonal.

    Example: ``mesh_metrics(pred, ref, f_score_thresholds=relative_to_diagonal(ref, (0.01, 0.02)))``.
    """
    values = np.asarray(fractions, dtype=np.float64).reshape(-1)
    if values.size == 0 or not np.isfinite(values).all() or (values <= 0).any():
        raise MeshError(f"fractions must be finite and > 0, got {fractions!r}")
    if not isinstance(mesh, TriangleMesh) or mesh.num_vertices == 0:
        raise MeshError("relative_to_diagonal needs a non-empty TriangleMesh")
    bounds = mesh.bounds()
    diagonal = float(np.linalg.norm(bounds[1] - bounds[0]))
    return tuple(float(f) * diagonal for f in values)


def _has_surface(mesh: TriangleMesh) -> bool:
    return mesh.num_faces > 0 and mesh.area() > 0


def _thresholds(f_score_thresholds) -> list[float]:
    try:
        thresholds = [float(t) for t in np.asarray(f_score_thresholds, dtype=np.float64).reshape(-1)]
    except (TypeError, ValueError) as error:
        raise MeshError(f"f_score_thresholds must be numbers, got {f_score_thresholds!r}") from error
    if not thresholds or not all(np.isfinite(t) and t > 0 for t in thresholds):
        raise MeshError(f"f_score_thresholds must be one or more finite values > 0, got {f_score_thresholds!r}")
    return thresholds


def mesh_metrics(
    predicted: TriangleMesh,
    reference: TriangleMesh,
    num_samples: int = 100_000,
    f_score_thresholds: float | Sequence[float] = (0.01,),
    seed: int = 0,
    *,
    empty_prediction: Literal["worst", "raise"] = "worst",
) -> MeshMetrics:
    """Chamfer-L1/L2, normal consistency and F-scores of a reconstructed mesh against a reference.

    Args:
        predicted: the reconstruction (any mesh; it need not be watertight or oriented).
        reference: the ground truth, with at least one face of non-zero area.
        num_samples: surface samples per mesh (> 0); the sampling noise of the Chamfer distances is
            about the sample spacing ``sqrt(area / num_samples)``.
        f_score_thresholds: one or more thresholds in world units (> 0); see :func:`relative_to_diagonal`.
        seed: seed of the surface sampling: the prediction is sampled with ``np.random.default_rng([seed, 0])``
            and the reference with ``default_rng([seed, 1])`` (:func:`geo3d.structures.shapes.sample_surface`),
            so the metrics are a pure function of the meshes and the seed.
        empty_prediction: what to do when ``predicted`` has no surface (a failed reconstruction):
            ``"worst"`` (default) returns finite worst-case values: accuracy, completeness and
            Chamfer-L1 equal to the reference's bounding-box diagonal ``D``, Chamfer-L2 ``D^2``, normal
            consistency 0, precision / recall / F-score 0, and ``predicted_empty=True``; ``"raise"``
            raises :class:`MeshError`.

    Returns:
        :class:`MeshMetrics` (the formulas are in the module docstring and ``docs/sdf.md``).

    Raises:
        MeshError: not TriangleMeshes, a reference without surface, an empty prediction with
            ``empty_prediction="raise"``, bad ``num_samples``, thresholds or options.
    """
    for name, mesh in (("predicted", predicted), ("reference", reference)):
        if not isinstance(mesh, TriangleMesh):
            raise MeshError(f"{name} must be a geo3d TriangleMesh, got {type(mesh).__name__}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise MeshError(f"num_samples must be a positive integer, got {num_samples!r}")
    thresholds = _thresholds(f_score_thresholds)
    if empty_prediction not in ("worst", "raise"):
        raise MeshError(f"empty_prediction must be 'worst' or 'raise', got {empty_prediction!r}")
    if not _has_surface(reference):
        raise MeshError(f"reference mesh has no surface ({reference.num_faces} faces, area {reference.area():g})")
    if not _has_surface(predicted):
        if empty_prediction == "raise":
            raise MeshError(f"predicted mesh has no surface ({predicted.num_faces} faces): metrics are undefined")
        bounds = reference.bounds()
        diagonal = float(np.linalg.norm(bounds[1] - bounds[0]))
        zeros = {t: 0.0 for t in thresholds}
        return MeshMetrics(diagonal, diagonal**2, 0.0, dict(zeros), dict(zeros), dict(zeros), diagonal, diagonal,
                           int(num_samples), True)

    pred_points, pred_normals = sample_surface(predicted.vertices, predicted.faces, num_samples,
                                               np.random.default_rng([seed, 0]))
    ref_points, ref_normals = sample_surface(reference.vertices, reference.faces, num_samples,
                                             np.random.default_rng([seed, 1]))
    return point_metrics(pred_points, pred_normals, ref_points, ref_normals, thresholds)


def point_metrics(predicted_points: np.ndarray, predicted_normals: np.ndarray, reference_points: np.ndarray,
                  reference_normals: np.ndarray, f_score_thresholds: float | Sequence[float] = (0.01,)) -> MeshMetrics:
    """The metrics of :func:`mesh_metrics` on given oriented point sets (e.g. surface samples, scans).

    Args:
        predicted_points: ``[N, 3]`` samples of the prediction (N > 0); ``predicted_normals`` ``[N, 3]``
            their unit normals (the sign does not matter).
        reference_points: ``[M, 3]`` samples of the ground truth (M > 0), ``reference_normals`` ``[M, 3]``.
        f_score_thresholds: one or more thresholds in world units (> 0).

    Returns:
        :class:`MeshMetrics` with ``num_samples = N`` (the formulas are in the module docstring).

    Raises:
        MeshError: bad shapes, empty sets, NaN / inf, bad thresholds.
    """
    arrays = {}
    for name, value in (("predicted_points", predicted_points), ("predicted_normals", predicted_normals),
                        ("reference_points", reference_points), ("reference_normals", reference_normals)):
        array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != 3 or len(array) == 0:
            raise MeshError(f"{name} must have shape [N, 3] with N > 0, got {list(array.shape)}")
        if not np.isfinite(array).all():
            raise MeshError(f"{name} holds NaN or inf")
        arrays[name] = array
    for kind in ("predicted", "reference"):
        if len(arrays[f"{kind}_points"]) != len(arrays[f"{kind}_normals"]):
            raise MeshError(f"{kind}_points and {kind}_normals differ in length: "
                            f"{len(arrays[f'{kind}_points'])} vs {len(arrays[f'{kind}_normals'])}")
    thresholds = _thresholds(f_score_thresholds)
    pred_points, ref_points = torch.from_numpy(arrays["predicted_points"]), torch.from_numpy(arrays["reference_points"])
    pred_normals, ref_normals = arrays["predicted_normals"], arrays["reference_normals"]
    to_ref = nearest_costs(pred_points, ref_points, norm="l2")
    to_pred = nearest_costs(ref_points, pred_points, norm="l2")
    d_pr, d_rp = to_ref.costs.numpy(), to_pred.costs.numpy()
    accuracy, completeness = float(d_pr.mean()), float(d_rp.mean())
    chamfer_l2 = 0.5 * (float((d_pr**2).mean()) + float((d_rp**2).mean()))
    cos_pr = np.abs((pred_normals * ref_normals[to_ref.indices.numpy()]).sum(1))
    cos_rp = np.abs((ref_normals * pred_normals[to_pred.indices.numpy()]).sum(1))
    normal_consistency = 0.5 * (float(cos_pr.mean()) + float(cos_rp.mean()))
    precision, recall, f_scores = {}, {}, {}
    for t in thresholds:
        p, r = float((d_pr < t).mean()), float((d_rp < t).mean())
        precision[t], recall[t] = p, r
        f_scores[t] = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return MeshMetrics(0.5 * (accuracy + completeness), chamfer_l2, normal_consistency, f_scores, precision, recall,
                       accuracy, completeness, len(pred_points), False)
