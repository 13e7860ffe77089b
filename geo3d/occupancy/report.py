"""Plain-text report of an occupancy evaluation (:class:`~geo3d.occupancy.evaluation.OccupancyEvaluation`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from geo3d.occupancy.evaluation import OccupancyEvaluation
from geo3d.occupancy.targets import OccupancyError


def _percent(value: float | None) -> str:
    if value is None:
        return "-"
    return "n/a" if math.isnan(value) else f"{100.0 * value:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: Sequence[int] = (0,)) -> list[str]:
    """Aligned text table: columns in ``left`` left-justified (text), the others right-justified (numbers)."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i in left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]


def format_report(result: OccupancyEvaluation) -> str:
    """Plain-text report: methods x (IoU, mIoU, mAP) in percent, the LiDAR-geometry agreement, the
    inference time, then per-class IoU and per-query AP tables ("-": not computed; "n/a": NaN, i.e. a
    class neither present nor predicted or a query without relevant points)."""
    if not isinstance(result, OccupancyEvaluation):
        raise OccupancyError(f"result must be an OccupancyEvaluation, got {type(result).__name__}")
    methods = list(result.methods.values())
    lines = [(f"Open-vocabulary occupancy: {result.frames} frames ({result.ground_truth_frames} with occupancy "
              f"ground truth, {result.labelled_frames} with LiDAR labels)")]
    rule = "occupied = logit > " + ("?" if result.threshold is None else f"{result.threshold:g}")
    lines.append(f"{rule}; voxel metrics inside the camera-visibility mask; retrieval AP over the LiDAR points "
                 "of all frames pooled")
    lines += ["", *_table(["method", "IoU", "mIoU", "mAP", "frames", "points"],
                          [[m.method, _percent(m.occupancy_iou), _percent(m.miou), _percent(m.retrieval_map),
                            str(m.frames), str(m.points) if m.points else "-"] for m in methods])]
    lines += [f"  {m.method}: {m.note}" for m in methods if m.note]
    lines += ["", "agreement with the frames' LiDAR targets (%, all frames)",
              *_table(["method", "LiDAR recall", "LiDAR free agreement"],
                      [[m.method, _percent(m.lidar_recall), _percent(m.lidar_free_agreement)] for m in methods])]
    if result.inference_seconds:
        lines += ["", (f"model inference: median {result.median_inference_s:.3f} s, mean "
                       f"{result.mean_inference_s:.3f} s per frame ({len(result.inference_seconds)} frames)")]
    with_voxels = [m for m in methods if m.per_class_iou is not None]
    if with_voxels:
        names = list(with_voxels[0].per_class_iou)
        lines += ["", "per-class IoU (%)", *_table(["class", *(m.method for m in with_voxels)],
                                                   [[n, *(_percent(m.per_class_iou[n]) for m in with_voxels)]
                                                    for n in names])]
    with_queries = [m for m in methods if m.per_query_ap is not None]
    if with_queries:
        chance = with_queries[0].per_query_chance or {}
        header = ["query", *(m.method for m in with_queries), "chance", "relevant classes"]
        rows = [[q, *(_percent(m.per_query_ap[q]) for m in with_queries), _percent(chance.get(q)), ", ".join(names)]
                for q, names in result.queries.items()]
        lines += ["", "per-query AP (%)", *_table(header, rows, left=(0, len(header) - 1))]
    return "\n".join(lines)
