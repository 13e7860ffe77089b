"""Evaluation of open-vocabulary occupancy over frames: the network, POP-3D's training-free projection
baseline and a ground-truth-geometry oracle, on the same frames, with the metrics of
:mod:`geo3d.occupancy.metrics` (docs/occupancy.md, "Evaluation").

Methods (:data:`METHODS`):

- ``"model"`` (:class:`FramePrediction`, from :func:`predict_frame`): a voxel is occupied when its
  occupancy logit exceeds a threshold (default 0) and takes the zero-shot class of the language feature at
  its centre; retrieval ranks the visible LiDAR points (``sample.distill_points_ego``) by their features.
- ``"projection baseline"`` (POP-3D's MaskCLIP+ baseline): the visible LiDAR points carry the teacher's
  features (``sample.distill_features``) and are ranked by them; a voxel holding at least one of them is
  occupied and takes the zero-shot class of their mean feature (renormalised); other voxels are free.
- ``"oracle"``: ground-truth geometry (``gt_semantics > 0``) with teacher features: each occupied voxel
  takes the feature of the visible LiDAR point nearest to its centre (exact 3D search), hence a class.
  Its occupancy IoU is 1 by construction (computed anyway, a check of the bookkeeping); its retrieval
  is the baseline's (same points, same features), reported as None with a note. It bounds what
  distilling the teacher can give on perfect geometry.

Protocol. Occupancy IoU and semantic mIoU come from confusion matrices summed over all frames (2 x 2,
and 17 x 17 over :data:`~geo3d.synthetic.classes.CLASS_NAMES`) over the voxels of the camera-visibility
mask ``gt_visible`` (all voxels of a sample without a mask): the IoU of the totals, not a mean of
per-frame IoUs. Predicted-free voxels are class 0; the mIoU averages the classes 1..16
(:data:`SEMANTIC_CLASSES`) present or predicted. Retrieval follows POP-3D: per text query the points of
ALL frames are pooled and ranked by the cosine of their feature to the query embedding, and the AP of
that one ranking is taken against ground-truth membership (:func:`query_relevance`); the mAP averages
the queries with a relevant point. The ranked points are the visible LiDAR points inside the grid's box
(beyond it the network's features are its border values), the same for every method; per point only
its ``[Q]`` float32 cosines and its label are kept.

Frames without ground truth (real sweeps: ``gt_semantics is None``) are accepted: the voxel metrics and
the oracle use the frames that have it, retrieval the frames with ``lidar_labels``. Every frame also
compares each method's geometry with its own LiDAR targets (``sample.occupancy_state``): **LiDAR
recall** is the fraction of LiDAR-occupied voxels predicted occupied, **LiDAR free agreement** the
fraction of LiDAR-free voxels (crossed by a ray) predicted free; unknown voxels do not count. These need
no annotation: they are all a frame without labels or ground truth contributes.

Timing: :func:`predict_frame` times the forward pass and the language features of the predicted-occupied
voxels and of the LiDAR points (``time.perf_counter``, copies to the CPU included).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F

from geo3d.occupancy.metrics import (
    QUERY_SET,
    SEMANTIC_CLASSES,
    ConfusionAccumulator,
    average_precision,
    query_relevance,
)
from geo3d.occupancy.network import OccupancyNet
from geo3d.occupancy.samples import OccupancySample
from geo3d.occupancy.targets import OccupancyError, check_finite_tensor
from geo3d.synthetic.classes import CLASS_NAMES
from geo3d.occupancy.voxel_features import (
    _check_grid, _check_points_features, _check_voxel_mask, _nearest, _voxel_index, _voxelize, _zero_shot,
)  # fmt: skip
from geo3d.synthetic.occupancy import OccupancyGridSpec
from geo3d.utils.jsonable import json_ready

METHODS: tuple[str, ...] = ("model", "projection baseline", "oracle")
"""The evaluated methods, in report order (module docstring)."""

ORACLE_RETRIEVAL_NOTE = "retrieval is the projection baseline's (same points, same teacher features)"



# ----------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class MethodResult:
    """The metrics of one method over the evaluated frames (None: not computable on these frames).

    Attributes:
        method: one of :data:`METHODS`.
        occupancy_iou: IoU of the occupied class over the visible voxels of the ground-truth frames
            (NaN: nothing occupied in either).
        miou: zero-shot semantic mIoU over the classes 1..16 present or predicted.
        per_class_iou: class name -> IoU (NaN: neither present nor predicted), classes 1..16.
        retrieval_map: mean over the queries with a relevant point of the pooled AP.
        per_query_ap: query text -> AP on the pooled points (NaN: no relevant point, excluded).
        frames: frames the method ran on; ground_truth_frames / retrieval_frames: those that fed
            the voxel metrics / the retrieval.
        points: LiDAR points pooled for retrieval.
        lidar_recall: fraction of LiDAR-occupied voxels predicted occupied (all frames it ran on).
        lidar_free_agreement: fraction of LiDAR-free voxels predicted free.
        note: what was left out and why ("" when nothing).
        per_query_chance: query text -> fraction of the pooled points that are relevant: the AP of a
            random ranking, the level a method must beat.
    """

    method: str
    occupancy_iou: float | None
    miou: float | None
    per_class_iou: dict[str, float] | None
    retrieval_map: float | None
    per_query_ap: dict[str, float] | None
    frames: int
    ground_truth_frames: int
    retrieval_frames: int
    points: int
    lidar_recall: float | None
    lidar_free_agreement: float | None
    note: str = ""
    per_query_chance: dict[str, float] | None = None

    def to_dict(self) -> dict:
        """JSON-ready dict of the fields (NaN written as null), plus ``excluded_queries``: the queries
        without any relevant point."""
        excluded = None if self.per_query_ap is None else [q for q, v in self.per_query_ap.items() if math.isnan(v)]
        return json_ready({**asdict(self), "excluded_queries": excluded})


@dataclass(frozen=True)
class OccupancyEvaluation:
    """Result of :meth:`OccupancyEvaluator.result` / :func:`evaluate_occupancy`.

    Attributes:
        methods: method name -> :class:`MethodResult`, in the order of :data:`METHODS`.
        frames: frames evaluated; ground_truth_frames / labelled_frames: with ``gt_semantics`` / ``lidar_labels``.
        queries: query text -> relevant class names, in order.
        threshold: the occupancy-logit threshold of the model (None when the caller did not say).
        inference_seconds: per-frame inference time of the model, seconds (empty when not given).
    """

    methods: dict[str, MethodResult]
    frames: int
    ground_truth_frames: int
    labelled_frames: int
    queries: dict[str, tuple[str, ...]]
    threshold: float | None
    inference_seconds: tuple[float, ...]

    @property
    def median_inference_s(self) -> float | None:
        """Median per-frame inference time, seconds (None without timings)."""
        return statistics.median(self.inference_seconds) if self.inference_seconds else None

    @property
    def mean_inference_s(self) -> float | None:
        """Mean per-frame inference time, seconds (None without timings)."""
        return statistics.fmean(self.inference_seconds) if self.inference_seconds else None

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN written as null): the fields, ``inference`` (median, mean, frames) instead of
        the per-frame times, each method as :meth:`MethodResult.to_dict`."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("methods", "inference_seconds")}
        data["inference"] = None if not self.inference_seconds else {
            "median_s": self.median_inference_s, "mean_s": self.mean_inference_s, "frames": len(self.inference_seconds)}
        return {**json_ready(data), "methods": {name: m.to_dict() for name, m in self.methods.items()}}

    def to_json(self, indent: int = 2) -> str:
        """:meth:`to_dict` as strict JSON text."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


# --------------------------------------------------------------------------------------- evaluator


class FramePrediction(NamedTuple):
    """The network's output for one frame, as the evaluator needs it (:func:`predict_frame`).

    Attributes:
        occupied: ``[X, Y, Z]`` bool predicted occupancy (``logits > threshold``).
        occupied_features: ``[V, D]`` language features at the centres of the predicted-occupied voxels,
            order of ``torch.nonzero(occupied)``; may be None on frames without ground truth.
        point_features: ``[M, D]`` language features at ``sample.distill_points_ego``; may be None on
            frames without ``lidar_labels``.
        seconds: inference time of the frame, seconds, or None.
    """

    occupied: torch.Tensor
    occupied_features: torch.Tensor | None
    point_features: torch.Tensor | None
    seconds: float | None = None


class _Tally:
    """What one method accumulates: confusions, LiDAR-geometry counts, pooled retrieval scores."""

    def __init__(self, num_classes: int) -> None:
        self.frames = self.voxel_frames = 0
        self.occupancy = ConfusionAccumulator(2)
        self.semantic = ConfusionAccumulator(num_classes)
        self.geometry = torch.zeros(2, 2, dtype=torch.int64)  # rows LiDAR free / occupied, cols predicted
        self.scores: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def add_geometry(self, occupied: torch.Tensor, state: torch.Tensor) -> None:
        self.frames += 1
        known = state >= 0
        self.geometry += torch.bincount(state[known].long() * 2 + occupied[known].long(), minlength=4).reshape(2, 2)

    def add_voxels(self, occupied, labels, gt, visible) -> None:
        self.voxel_frames += 1
        self.occupancy.update(occupied, gt > 0, visible)
        self.semantic.update(labels, gt, visible)

    def lidar_rates(self) -> tuple[float | None, float | None]:
        if self.frames == 0:
            return None, None
        g = self.geometry.double()
        free, occupied = float(g[0].sum()), float(g[1].sum())
        return (float(g[1, 1]) / occupied if occupied else float("nan"),
                float(g[0, 0]) / free if free else float("nan"))


class OccupancyEvaluator:
    """Accumulates the metrics of the three :data:`METHODS` over frames (module docstring).

    Args:
        grid_spec: the occupancy grid of the samples (ego frame), e.g. ``net.config.output_grid``.
        class_embeddings: ``[16, D]`` text embeddings of the classes 1..16 of ``CLASS_NAMES``, in id order
            (``geo3d.language.encode_classes``).
        query_embeddings: ``[Q, D]`` text embeddings of the queries, in the order of ``queries``.
        queries: query text -> the class names of its relevant points (default :data:`QUERY_SET`).
        threshold: the model's occupancy-logit threshold, only recorded for the report.

    Use: :meth:`update` once per frame, then :meth:`result` (which may be called again after more updates).
    """

    def __init__(self, grid_spec: OccupancyGridSpec, class_embeddings: torch.Tensor, query_embeddings: torch.Tensor,
                 queries: Mapping[str, Sequence[str]] = QUERY_SET, *, threshold: float | None = None) -> None:
        self.grid_spec = _check_grid(grid_spec)
        self.class_embeddings = check_finite_tensor(class_embeddings, "class_embeddings", ndim=2).detach().cpu()
        num_semantic = len(SEMANTIC_CLASSES)
        if len(self.class_embeddings) != num_semantic:
            raise OccupancyError(f"class_embeddings must have {num_semantic} rows (classes 1..{num_semantic} of "
                                 f"CLASS_NAMES), got {len(self.class_embeddings)}")
        self.dim = self.class_embeddings.shape[1]
        self.query_embeddings = check_finite_tensor(query_embeddings, "query_embeddings", ndim=2).detach().cpu()
        if self.query_embeddings.shape[1] != self.dim:
            raise OccupancyError(f"query_embeddings have D = {self.query_embeddings.shape[1]} but class_embeddings "
                                 f"D = {self.dim}")
        if not isinstance(queries, Mapping):
            raise OccupancyError(f"queries must map query texts to class names, got {type(queries).__name__}")
        query_relevance(torch.zeros(0, dtype=torch.int64), queries)  # checks the texts and class names
        self.queries = {q: tuple(c) for q, c in queries.items()}
        if len(self.query_embeddings) != len(self.queries):
            raise OccupancyError(f"query_embeddings has {len(self.query_embeddings)} rows for {len(self.queries)} "
                                 "queries")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or not math.isfinite(threshold)):
            raise OccupancyError(f"threshold must be a finite number or None, got {threshold!r}")
        self.threshold = None if threshold is None else float(threshold)
        self._queries_unit = F.normalize(self.query_embeddings.double(), dim=1, eps=1e-12)
        self._tallies = {name: _Tally(len(CLASS_NAMES)) for name in METHODS}
        self._seconds: list[float] = []
        self.frames = self.ground_truth_frames = self.labelled_frames = 0

    # ---------------------------------------------------------------------------- inputs
    def _check_sample(self, sample) -> None:
        if not isinstance(sample, OccupancySample):
            raise OccupancyError(f"sample must be an OccupancySample, got {type(sample).__name__} (iterate over "
                                 "the dataset itself, or a DataLoader with batch_size=None)")
        shape = self.grid_spec.shape
        if tuple(sample.occupancy_state.shape) != shape:
            raise OccupancyError(f"sample.occupancy_state {list(sample.occupancy_state.shape)} does not match the "
                                 f"grid {list(shape)}")
        points, features = _check_points_features(sample.distill_points_ego, sample.distill_features,
                                                   "sample.distill_points_ego", "sample.distill_features")
        if features.shape[1] not in (0, self.dim):
            raise OccupancyError(f"sample.distill_features have D = {features.shape[1]} but the text embeddings "
                                 f"D = {self.dim} (teacher and text encoder must share a space)")
        if len(sample.distill_index) != len(points):
            raise OccupancyError(f"sample.distill_index has {len(sample.distill_index)} entries for {len(points)} "
                                 "distillation points")
        if sample.gt_semantics is not None:
            gt = sample.gt_semantics
            if tuple(gt.shape) != shape or gt.dtype.is_floating_point or gt.dtype == torch.bool:
                raise OccupancyError(f"sample.gt_semantics must be an int tensor {list(shape)}, got {gt.dtype} "
                                     f"{list(gt.shape)}")
            if gt.numel() and (int(gt.min()) < 0 or int(gt.max()) >= len(CLASS_NAMES)):
                raise OccupancyError(f"sample.gt_semantics must hold class ids in [0, {len(CLASS_NAMES)})")
            if sample.gt_visible is not None:
                _check_voxel_mask(sample.gt_visible, self.grid_spec, "sample.gt_visible")
        if sample.lidar_labels is not None and len(sample.lidar_labels) != len(sample.lidar_points_ego):
            raise OccupancyError(f"sample.lidar_labels has {len(sample.lidar_labels)} entries for "
                                 f"{len(sample.lidar_points_ego)} LiDAR points")

    def _check_prediction(self, prediction, sample: OccupancySample, has_gt: bool, labelled: bool) -> None:
        if not isinstance(prediction, FramePrediction):
            raise OccupancyError(f"prediction must be a FramePrediction or None, got {type(prediction).__name__}")
        occupied = _check_voxel_mask(prediction.occupied, self.grid_spec, "prediction.occupied")
        for name, rows, needed in (("occupied_features", int(occupied.sum()), has_gt),
                                   ("point_features", len(sample.distill_points_ego), labelled)):
            value = getattr(prediction, name)
            if value is None:
                if needed:
                    raise OccupancyError(f"prediction.{name} is None but the sample has the ground truth it is "
                                         "scored against")
                continue
            check_finite_tensor(value, f"prediction.{name}", ndim=2)
            if tuple(value.shape) != (rows, self.dim):
                raise OccupancyError(f"prediction.{name} must be [{rows}, {self.dim}], got {list(value.shape)}")
        seconds = prediction.seconds
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                    or not 0 <= seconds < math.inf):
            raise OccupancyError(f"prediction.seconds must be a finite number >= 0 or None, got {seconds!r}")

    def _scores(self, features: torch.Tensor) -> torch.Tensor:
        """``[M, Q]`` float32 cosine of each point feature to each query."""
        return (F.normalize(features.detach().cpu().double(), dim=1, eps=1e-12) @ self._queries_unit.T).float()

    def _classes(self, occupied: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return _zero_shot(occupied, features.detach().cpu(), self.class_embeddings)

    # ---------------------------------------------------------------------------- update
    def update(self, sample: OccupancySample, prediction: FramePrediction | None = None) -> None:
        """Add one frame: the baseline and (with ground truth) the oracle always, the model when
        ``prediction`` is given (its ``seconds``, when set, join the timing statistics).

        Args:
            sample: the frame (:class:`OccupancySample` on ``grid_spec``).
            prediction: the model's :class:`FramePrediction` for it, or None to skip the model.
        """
        self._check_sample(sample)
        gt = None if sample.gt_semantics is None else sample.gt_semantics.cpu().long()
        visible = None if gt is None else (torch.ones_like(gt, dtype=torch.bool) if sample.gt_visible is None
                                           else sample.gt_visible.cpu())
        labels = None
        if sample.lidar_labels is not None:
            index = sample.distill_index.cpu().long()
            if len(index) and (int(index.min()) < 0 or int(index.max()) >= len(sample.lidar_labels)):
                raise OccupancyError(f"sample.distill_index must index the {len(sample.lidar_labels)} LiDAR points")
            labels = sample.lidar_labels.cpu().long()[index]
        if prediction is not None:
            self._check_prediction(prediction, sample, gt is not None, labels is not None)
        state = sample.occupancy_state.cpu()
        points = sample.distill_points_ego.detach().cpu().float()
        teacher = sample.distill_features.detach().cpu().float()
        self.frames += 1
        self.ground_truth_frames += gt is not None
        self.labelled_frames += labels is not None

        has_teacher = teacher.shape[1] > 0  # D = 0: a frame prepared without a teacher (model only)
        if labels is not None:  # retrieval: the points inside the grid, where the network predicts
            inside = _voxel_index(points, self.grid_spec)[1]
            labels = labels[inside]
        baseline = self._tallies["projection baseline"]
        if has_teacher:
            voxels = _voxelize(points, teacher, self.grid_spec)
            baseline.add_geometry(voxels.occupied, state)
            if gt is not None:
                baseline.add_voxels(voxels.occupied, self._classes(voxels.occupied, voxels.features), gt, visible)
            if labels is not None:
                baseline.scores.append(self._scores(teacher[inside]))
                baseline.labels.append(labels)

        if gt is not None and has_teacher:
            oracle = self._tallies["oracle"]
            occupied = gt > 0
            scored = occupied & visible  # the only voxels the confusion counts
            oracle_labels = torch.zeros_like(gt)
            if len(points):  # without any visible point the GT-occupied voxels stay class 0 (misses)
                oracle_labels = self._classes(scored, _nearest(scored, points, teacher, self.grid_spec))
            oracle.add_geometry(occupied, state)
            oracle.add_voxels(occupied, oracle_labels, gt, visible)

        if prediction is not None:
            model = self._tallies["model"]
            occupied = prediction.occupied.cpu()
            model.add_geometry(occupied, state)
            if gt is not None:
                model.add_voxels(occupied, self._classes(occupied, prediction.occupied_features), gt, visible)
            if labels is not None:
                model.scores.append(self._scores(prediction.point_features.cpu()[inside]))
                model.labels.append(labels)
            if prediction.seconds is not None:
                self._seconds.append(float(prediction.seconds))

    # ---------------------------------------------------------------------------- result
    def _retrieval(self, tally: _Tally) -> tuple[float, dict[str, float], int, dict[str, float]]:
        scores, labels = torch.cat(tally.scores), torch.cat(tally.labels)
        relevance = query_relevance(labels, self.queries)[1]
        per_query, chance = {}, {}
        for q, text in enumerate(self.queries):
            chance[text] = float(relevance[q].double().mean()) if len(labels) else float("nan")
            per_query[text] = average_precision(scores[:, q], relevance[q]) if bool(relevance[q].any()) \
                else float("nan")
        evaluated = [v for v in per_query.values() if not math.isnan(v)]
        return (statistics.fmean(evaluated) if evaluated else float("nan")), per_query, len(labels), chance

    def _method_result(self, name: str) -> MethodResult:
        tally = self._tallies[name]
        occupancy_iou = miou = per_class = None
        if tally.voxel_frames:
            occupancy_iou = float(tally.occupancy.iou()[1])
            miou = tally.semantic.miou(SEMANTIC_CLASSES)
            ious = tally.semantic.iou()
            per_class = {CLASS_NAMES[c]: float(ious[c]) for c in SEMANTIC_CLASSES}
        retrieval = per_query = chance = None
        points = 0
        if tally.scores:
            retrieval, per_query, points, chance = self._retrieval(tally)
        notes = []
        if tally.frames == 0:
            notes.append("no frame with occupancy ground truth and teacher features" if name == "oracle"
                         else "no frame evaluated (the baseline needs teacher features)")
        elif tally.voxel_frames == 0:
            notes.append("no frame with occupancy ground truth: voxel metrics not computed")
        if name == "oracle":
            notes.append(ORACLE_RETRIEVAL_NOTE)
        elif tally.frames and not tally.scores:
            notes.append("no frame with LiDAR labels: retrieval not computed")
        recall, free = tally.lidar_rates()
        return MethodResult(name, occupancy_iou, miou, per_class, retrieval, per_query, tally.frames,
                            tally.voxel_frames, len(tally.scores), points, recall, free, "; ".join(notes), chance)

    def result(self) -> OccupancyEvaluation:
        """The metrics of every method over the frames added so far.

        Raises:
            OccupancyError: no frame was added.
        """
        if self.frames == 0:
            raise OccupancyError("no frame was evaluated: call update() with at least one sample")
        return OccupancyEvaluation({name: self._method_result(name) for name in METHODS}, self.frames,
                                   self.ground_truth_frames, self.labelled_frames, dict(self.queries),
                                   self.threshold, tuple(self._seconds))


# ------------------------------------------------------------------------------------- the network


def predict_frame(net: OccupancyNet, sample: OccupancySample, *, threshold: float = 0.0) -> FramePrediction:
    """Run ``net`` on one frame (batch of 1, ``torch.no_grad``) and time it.

    The time covers the forward pass, the language features of the predicted-occupied voxels and of the
    visible LiDAR points (``sample.distill_points_ego``), and their transfer to the CPU.

    Args:
        net: the network (in eval mode for meaningful results; its device is used).
        sample: the frame.
        threshold: a voxel is occupied when its occupancy logit is ``> threshold``.

    Returns:
        :class:`FramePrediction` on the CPU.
    """
    if not isinstance(net, OccupancyNet):
        raise OccupancyError(f"net must be an OccupancyNet, got {type(net).__name__}")
    if not isinstance(sample, OccupancySample):
        raise OccupancyError(f"sample must be an OccupancySample, got {type(sample).__name__}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise OccupancyError(f"threshold must be a finite number, got {threshold!r}")
    device = net.lifting_points_ego.device
    start = time.perf_counter()
    with torch.no_grad():
        out = net(sample.images[None].to(device), sample.K[None].to(device), sample.cam2ego[None].to(device))
        occupied = out.occupancy_logits > threshold
        voxel_features = net.dense_language_features(out, occupied).cpu()
        point_features = net.language_features(out, sample.distill_points_ego.to(device))[0].cpu()
        occupied = occupied[0].cpu()
    return FramePrediction(occupied, voxel_features, point_features, time.perf_counter() - start)


def evaluate_occupancy(net: OccupancyNet, samples: Iterable[OccupancySample], class_embeddings: torch.Tensor,
                       query_embeddings: torch.Tensor, queries: Mapping[str, Sequence[str]] = QUERY_SET, *,
                       threshold: float = 0.0,
                       progress: Callable[[int, float], None] | None = None) -> OccupancyEvaluation:
    """Evaluate ``net``, the projection baseline and the oracle on ``samples``, one frame at a time.

    Args:
        net: the :class:`OccupancyNet`; its ``config.output_grid`` is the samples' grid. It is put in eval
            mode for the run and restored afterwards.
        samples: frames (e.g. a ``SyntheticOccupancyDataset`` of held-out seeds), on the net's output grid.
        class_embeddings: ``[16, D]`` text embeddings of the classes 1..16 (``encode_classes``).
        query_embeddings: ``[Q, D]`` text embeddings of the queries (``encode_prompts(encoder, list(queries))``).
        queries: query text -> the class names of its relevant points (default :data:`QUERY_SET`).
        threshold: occupancy-logit threshold of the model.
        progress: called after each frame with (frames done, that frame's inference seconds).

    Returns:
        :class:`OccupancyEvaluation` (:func:`format_report` prints it).

    Raises:
        OccupancyError: bad inputs, or ``samples`` yields no frame.
    """
    if not isinstance(net, OccupancyNet):
        raise OccupancyError(f"net must be an OccupancyNet, got {type(net).__name__}")
    evaluator = OccupancyEvaluator(net.config.output_grid, class_embeddings, query_embeddings, queries,
                                   threshold=threshold)
    if net.config.language_dim != evaluator.dim:
        raise OccupancyError(f"the net's language_dim = {net.config.language_dim} but the text embeddings have "
                             f"D = {evaluator.dim}")
    if progress is not None and not callable(progress):
        raise OccupancyError(f"progress must be callable or None, got {type(progress).__name__}")
    was_training = net.training
    net.eval()
    try:
        for sample in samples:
            prediction = predict_frame(net, sample, threshold=threshold)
            evaluator.update(sample, prediction)
            if progress is not None:
                progress(evaluator.frames, prediction.seconds)
    finally:
        net.train(was_training)
    if evaluator.frames == 0:
        raise OccupancyError("samples is empty: nothing to evaluate")
    return evaluator.result()
