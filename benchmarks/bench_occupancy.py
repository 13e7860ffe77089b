"""Benchmark of the occupancy pipeline: LiDAR targets, and the network's inference and training step.

1. ``lidar_occupancy_targets`` (exact voxel traversal) on real sweeps: one frame of the default
   synthetic capture (32-beam LiDAR) and the shared nuScenes keyframe (34,688 points), on the Occ3D grid
   (200 x 200 x 16, 0.4 m). Reference in the same process: the common sampling approach (points every
   ``voxel / 4`` along each ray mark voxels free, NumPy, vectorised per chunk), with its agreement with the
   exact states (the fraction of voxels in the same state; sampling misses voxels a ray only clips).
2. ``OccupancyNet`` (default preset, six 224 x 400 cameras): inference per frame as ``geo3d eval``
   times it with the shipped checkpoint and its threshold (forward, language features of the
   predicted-occupied voxels and of ~27k LiDAR points; the issue's budget is 1 s), the forward pass
   alone, and one training step (forward, both losses with
   4096 distillation points, backward, AdamW) on a prepared synthetic frame.

Usage::

    python benchmarks/bench_occupancy.py --repeats 5 --out benchmarks/results/occupancy.json
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from benchutil import machine_info, median_seconds, write_report

from geo3d.occupancy.targets import lidar_occupancy_targets
from geo3d.synthetic.occupancy import OccupancyGridSpec

SHARED = Path(os.environ.get("GEO3D_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def sampled_targets(points: np.ndarray, origins: np.ndarray, spec: OccupancyGridSpec, step: float) -> np.ndarray:
    """Reference: occupied where returns fall, free where samples every ``step`` metres along the rays
    fall (before the return), unknown elsewhere; occupied wins."""
    shape = np.array(spec.shape)
    lower, voxel = np.array(spec.lower), spec.voxel_size
    state = np.full(spec.shape, -1, dtype=np.int8)
    for start in range(0, len(points), 4096):
        p, o = points[start:start + 4096], origins[start:start + 4096]
        length = np.linalg.norm(p - o, axis=1)
        count = int(np.ceil(length.max() / step))
        t = (np.arange(count) * step)[None, :] / np.maximum(length[:, None], 1e-9)  # fraction along the ray
        keep = t < 1.0
        samples = o[:, None, :] + t[..., None] * (p - o)[:, None, :]
        index = np.floor((samples[keep] - lower) / voxel).astype(np.int64)
        inside = ((index >= 0) & (index < shape)).all(1)
        index = index[inside]
        state[index[:, 0], index[:, 1], index[:, 2]] = 0
    hit = np.floor((points - lower) / voxel).astype(np.int64)
    hit = hit[((hit >= 0) & (hit < shape)).all(1)]
    state[hit[:, 0], hit[:, 1], hit[:, 2]] = 1
    return state


def bench_targets(name: str, points: np.ndarray, origins: np.ndarray, spec: OccupancyGridSpec, repeats: int) -> dict:
    points_t, origins_t = torch.from_numpy(points), torch.from_numpy(origins)

    def exact():
        return lidar_occupancy_targets(points_t, origins_t, spec.origin, spec.voxel_size, spec.shape)

    state = exact().state.numpy()
    reference = sampled_targets(points, origins, spec, spec.voxel_size / 4)
    t_exact = median_seconds(exact, repeats)
    t_ref = median_seconds(lambda: sampled_targets(points, origins, spec, spec.voxel_size / 4), max(1, repeats // 2))
    known = (state >= 0) | (reference >= 0)
    return {"data": name, "points": len(points), "grid": list(spec.shape), "exact_s": t_exact,
            "sampled_quarter_voxel_s": t_ref, "ratio_exact_over_sampled": t_exact / t_ref,
            "occupied": int((state == 1).sum()), "free": int((state == 0).sum()),
            "sampled_free": int((reference == 0).sum()),
            "agreement_on_known_voxels": float((state[known] == reference[known]).mean()),
            "free_voxels_sampling_misses": int(((state == 0) & (reference == -1)).sum())}


def synthetic_frame():
    from geo3d.synthetic.generate import SynthConfig, make_scene, synthesize_frame

    config = SynthConfig(seed=9000, frames=1)
    return config, synthesize_frame(make_scene(config), 0, config)


def lidar_in_ego(frame) -> tuple[np.ndarray, np.ndarray]:
    world2ego = np.linalg.inv(frame.ego2world)
    pts, org = [], []
    for sweep in frame.lidar.values():
        sensor2ego = world2ego @ sweep.sensor2world
        xyz = sweep.load_points()[:, :3].astype(np.float64)
        pts.append(xyz @ sensor2ego[:3, :3].T + sensor2ego[:3, 3])
        org.append(np.broadcast_to(sensor2ego[:3, 3], xyz.shape))
    return np.concatenate(pts), np.ascontiguousarray(np.concatenate(org))


def bench_network(repeats: int) -> dict:
    from geo3d.language.label_teacher import LabelTeacher
    from geo3d.language.text import get_text_encoder
    from geo3d.occupancy.evaluation import predict_frame
    from geo3d.occupancy.network import OccupancyNet
    from geo3d.occupancy.samples import collate_samples, make_sample
    from geo3d.occupancy.training import OccupancyTrainConfig, OccupancyTrainer
    from geo3d.synthetic.classes import CLASS_NAMES
    from geo3d.structures.capture import Capture

    config, frame = synthetic_frame()
    teacher = LabelTeacher(get_text_encoder("minilm"), CLASS_NAMES)
    sample = make_sample(Capture([frame], metadata={"capture_id": "bench"}), 0, config.grid_spec(), teacher,
                         image_size=(224, 400))
    from geo3d.occupancy.training import load_occupancy_net

    shipped = Path(__file__).resolve().parents[1] / "assets" / "occupancy" / "occupancy.pt"
    net, checkpoint = load_occupancy_net(shipped)  # trained: realistic counts of occupied voxels
    threshold = float(checkpoint.extra.get("threshold", 0.0))
    inference = median_seconds(lambda: predict_frame(net, sample, threshold=threshold), repeats)
    with torch.no_grad():
        forward = median_seconds(lambda: net(sample.images[None], sample.K[None], sample.cam2ego[None]), repeats)
    trainer = OccupancyTrainer(OccupancyNet(), OccupancyTrainConfig(), steps_per_epoch=100)
    batch = collate_samples([sample])
    step = median_seconds(lambda: trainer.train_step(batch), repeats)
    prediction = predict_frame(net, sample, threshold=threshold)
    return {"checkpoint": "assets/occupancy/occupancy.pt", "threshold": threshold,
            "parameters": sum(p.numel() for p in net.parameters()), "cameras": 6, "image_size": [224, 400],
            "lidar_points_scored": len(sample.distill_points_ego),
            "occupied_voxels_scored": int(prediction.occupied.sum()),
            "inference_per_frame_s": inference, "inference_budget_s": 1.0, "ratio_to_budget": inference / 1.0,
            "forward_s": forward, "train_step_s": step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    spec = OccupancyGridSpec()
    _, frame = synthetic_frame()
    targets = [bench_targets("synthetic frame (32-beam LiDAR, seed 9000)", *lidar_in_ego(frame), spec, args.repeats)]
    pkl = next((SHARED / "nuscenes_sample").glob("*.pkl"), None)
    if pkl is not None:
        from geo3d.io import read_capture

        targets.append(bench_targets("nuScenes keyframe (LIDAR_TOP)", *lidar_in_ego(read_capture(pkl).frames[0]),
                                     spec, args.repeats))
    for row in targets:
        print(f"targets, {row['data']}: exact {row['exact_s']:.3f} s, sampled {row['sampled_quarter_voxel_s']:.3f} s "
              f"(x{row['ratio_exact_over_sampled']:.2f}); agreement {row['agreement_on_known_voxels']:.4f}, "
              f"free voxels sampling misses {row['free_voxels_sampling_misses']}")
    network = bench_network(args.repeats)
    print(f"network: inference {network['inference_per_frame_s']:.3f} s/frame (budget 1 s), forward "
          f"{network['forward_s']:.3f} s, training step {network['train_step_s']:.3f} s")
    write_report({"machine": machine_info(torch_threads=torch.get_num_threads()), "repeats": args.repeats,
                  "targets": targets, "network": network}, args.out)


if __name__ == "__main__":
    main()
