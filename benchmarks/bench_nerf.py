"""NeRF benchmarks (issue 8): field throughput on a CPU, and training on the lego scene against time.

    python benchmarks/bench_nerf.py fields --repeats 5 --out benchmarks/results/nerf_fields.json
    python benchmarks/bench_nerf.py lego --minutes 10 --out benchmarks/results/nerf_lego.json \\
        --plot docs/images/nerf_psnr.png --picture docs/images/nerf_lego_test.png

``fields``: forward and forward+backward of the position encodings that a grid field evaluates per sample
(65,536 samples; medians over repeats): geo3d's dense voxel grid (one 8-corner gather), the Instant-NGP hash
grid (16 levels), a TensoRF vector-matrix factorisation (3 planes + 3 lines by ``grid_sample``, written here
as the measured alternative) and NeRF's frequency encoding + 4x128 MLP; ratios against the dense grid.

``lego``: ``geo3d train nerf``'s trainer on ``../shared/data/lego_200`` (80 training views, 200x200, white
background for testing) for a wall-clock budget of training time (evaluation excluded); the held-out PSNR
on 4 test views every ``--every`` seconds, then PSNR / SSIM on all 10 test views and the render time per
200x200 image (median). Writes JSON, a PSNR-vs-time plot and a test view next to its ground truth.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from benchutil import machine_info, median_seconds, write_report  # noqa: E402

LEGO = Path(__file__).resolve().parents[2] / "shared" / "data" / "lego_200"


class VectorMatrix(torch.nn.Module):
    """TensoRF's VM factorisation (3 planes x 3 lines, ``channels`` components each), by grid_sample."""

    def __init__(self, resolution: int, channels: int) -> None:
        super().__init__()
        self.planes = torch.nn.Parameter(torch.randn(3, channels, resolution, resolution) * 0.1)
        self.lines = torch.nn.Parameter(torch.randn(3, channels, resolution, 1) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x in [-1, 1]^3
        plane_xy = torch.stack([x[:, [0, 1]], x[:, [0, 2]], x[:, [1, 2]]])[:, None]  # [3, 1, N, 2]
        line_z = torch.stack([x[:, 2], x[:, 1], x[:, 0]])
        line_xy = torch.stack([torch.zeros_like(line_z), line_z], dim=-1)[:, None]
        planes = torch.nn.functional.grid_sample(self.planes, plane_xy, align_corners=True)[:, :, 0]
        lines = torch.nn.functional.grid_sample(self.lines, line_xy, align_corners=True)[:, :, 0]
        return (planes * lines).permute(2, 0, 1).reshape(len(x), -1)


def bench_fields(args) -> dict:
    from geo3d.nn.encodings import FrequencyEncoding, GridEncoding
    from geo3d.nn.grids import DenseGrid

    torch.manual_seed(0)
    n = 65536
    x = torch.rand(n, 3) * 2 - 1
    box = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0)
    mlp = torch.nn.Sequential(torch.nn.Linear(63, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128), torch.nn.ReLU(),
                              torch.nn.Linear(128, 128), torch.nn.ReLU(), torch.nn.Linear(128, 16))
    frequency = FrequencyEncoding(3, 10)
    encoders = {
        "dense grid 160^3 x 13": DenseGrid(160, 13, box),
        "hash grid 16 levels x 2, 2^17": GridEncoding(num_levels=16, features_per_level=2, max_resolution=512,
                                                      log2_hashmap_size=17, bounds=(box[:3], box[3:])),
        "TensoRF VM 192^2 x 64": VectorMatrix(192, 64),
        "NeRF frequency + 4x128 MLP": lambda p: mlp(frequency(p)),
    }
    params = {"NeRF frequency + 4x128 MLP": mlp}
    results = {}
    for name, encoder in encoders.items():
        module = params.get(name, encoder)

        def forward(encoder=encoder):
            with torch.no_grad():
                encoder(x)

        def forward_backward(encoder=encoder, module=module):
            module.zero_grad(set_to_none=True)
            encoder(x).square().sum().backward()

        results[name] = {"forward_s": median_seconds(forward, args.repeats),
                         "forward_backward_s": median_seconds(forward_backward, args.repeats)}
        print(f"{name:32s} fwd {results[name]['forward_s'] * 1e3:7.1f} ms   "
              f"fwd+bwd {results[name]['forward_backward_s'] * 1e3:7.1f} ms", flush=True)
    base = results["dense grid 160^3 x 13"]["forward_backward_s"]
    for value in results.values():
        value["forward_backward_vs_dense"] = round(value["forward_backward_s"] / base, 2)
    return {"samples": n, "repeats": args.repeats, "encoders": results}


def bench_lego(args) -> dict:
    from geo3d.io.blender import read_blender
    from geo3d.nerf.data import capture_cameras, rays_from_cameras, scene_box
    from geo3d.nerf.metrics import psnr, ssim
    from geo3d.nerf.renderer import render_image
    from geo3d.nerf.trainer import NerfTrainConfig, NerfTrainer
    from geo3d_apps.config import load_preset, resolve_preset
    from geo3d_apps.train_nerf import NerfConfig, ground_truth, train_config

    capture = read_blender(args.data, "train")
    test = capture_cameras(read_blender(args.data, "test"))
    bank = rays_from_cameras(capture_cameras(capture))
    config = (train_config(load_preset(NerfConfig, resolve_preset("train/nerf", args.preset))) if args.preset
              else NerfTrainConfig())
    if args.field:
        config.field = args.field
    if args.grid_lr:
        config.grid_lr = args.grid_lr
    trainer = NerfTrainer(config, bank, scene_box(capture))

    def render(camera):
        return render_image(trainer.field, trainer.estimator, torch.from_numpy(camera.K),
                            torch.from_numpy(camera.cam2world), camera.height, camera.width,
                            step_size=trainer.step_size, background=1.0, with_features=False)

    history, elapsed, next_eval = [], 0.0, args.every
    budget = args.minutes * 60
    while elapsed < budget and trainer.step < config.steps:
        start = time.perf_counter()
        trainer.train_step()
        elapsed += time.perf_counter() - start
        if elapsed >= next_eval or elapsed >= budget or trainer.step >= config.steps:
            value = float(np.mean([float(psnr(render(c).rgb, ground_truth(c))) for c in test[:4]]))
            history.append({"seconds": round(elapsed, 1), "step": trainer.step, "psnr_4_views": round(value, 2)})
            print(f"{elapsed:6.0f} s  step {trainer.step:5d}  PSNR (4 test views) {value:.2f} dB", flush=True)
            next_eval += args.every
    scores, times, pictures = [], [], []
    for camera in test:
        start = time.perf_counter()
        image = render(camera)
        times.append(time.perf_counter() - start)
        truth = ground_truth(camera)
        scores.append((float(psnr(image.rgb, truth)), float(ssim(image.rgb, truth))))
        pictures.append((image, truth))
    result = {"data": str(args.data), "config": config.to_dict(), "train_seconds": round(elapsed, 1),
              "steps": trainer.step, "history": history,
              "test_psnr": round(float(np.mean([s[0] for s in scores])), 3),
              "test_ssim": round(float(np.mean([s[1] for s in scores])), 4),
              "render_seconds_median": round(statistics.median(times), 3), "test_views": len(test)}
    print(f"test PSNR {result['test_psnr']:.2f} dB, SSIM {result['test_ssim']:.4f} over {len(test)} views; "
          f"render {result['render_seconds_median']:.2f} s per 200x200 image (median)")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(5, 3.2), dpi=120)
        axis.plot([h["seconds"] / 60 for h in history], [h["psnr_4_views"] for h in history], marker="o")
        axis.axhline(28.0, color="grey", linestyle="--", linewidth=1, label="target 28 dB")
        axis.set(xlabel="training time (min, 2-core CPU)", ylabel="test PSNR (dB)", title="lego 200x200, dense grid")
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right")
        figure.tight_layout()
        figure.savefig(args.plot)
    if args.picture:
        from geo3d.io.images import write_png

        image, truth = pictures[0]
        depth = image.depth / max(float(image.depth.max()), 1e-6)
        panel = torch.cat([image.rgb, truth, depth[..., None].expand(-1, -1, 3)], dim=1)
        write_png(args.picture, (panel.clamp(0, 1) * 255).round().byte().numpy())
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", nargs="?", default="fields", choices=("fields", "lego"),
                        help="fields (default; what run_all.py runs) or lego (10 minutes of training)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=60.0)
    parser.add_argument("--data", type=Path, default=LEGO)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--field", default="")
    parser.add_argument("--grid-lr", type=float, default=0.0)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--picture", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.which == "lego" and not args.data.is_dir():
        print(f"{args.data}: lego_200 not found (../shared/data)", file=sys.stderr)
        return 1
    result = bench_fields(args) if args.which == "fields" else bench_lego(args)
    write_report({"benchmark": f"nerf {args.which}", "machine": machine_info(), "date": time.strftime("%Y-%m-%d"),
                  **result}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
