"""Benchmark of the apps' library: reconstruction per method, text queries on a field, peak memory.

1. Query latency on Occ3D-sized fields (200 x 200 x 16 voxels, 384-d float16 features) with
   ``M`` feature voxels: 7k (what ``fusion`` / ``pop3d`` write for one frame), 100k, and all 640k voxels.
   Timed: :class:`geo3d.fields.FieldQuery` answering one query (relevancy of every voxel + connected
   components with boxes), the text encoding apart (MiniLM, 8 prompt templates, first call and cached).
   Reference in the same process: the same relevancy through the checked generic
   :func:`geo3d.language.relevancy` (input checks on every call) plus the same components.
2. Reconstruction of the default synthetic frame (seed 0, six 400 x 225 cameras, 32-beam LiDAR) with
   ``fusion`` (LiDAR and depth geometry) and ``pop3d`` (shipped checkpoint), and ``pop3d`` on the
   shared nuScenes keyframe; each method in a fresh process (spawn) so that its peak resident memory
   (``VmHWM``) is its own; the text encoder / teacher / network loading is timed apart.

Usage::

    python benchmarks/bench_fields.py --repeats 5 --out benchmarks/results/fields.json
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import torch

from benchutil import machine_info, median_seconds, write_report

SHARED = Path(os.environ.get("GEO3D_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "occupancy" / "occupancy.pt"


def random_field(num_features: int, encoder, seed: int = 0):
    """A 200 x 200 x 16 field whose features are noisy mixtures of street-class prompt embeddings."""
    from geo3d.language.prompts import SYNTHETIC_CLASS_PHRASES, encode_classes
    from geo3d.structures.field import OpenVocabField

    rng = np.random.default_rng(seed)
    shape = (200, 200, 16)
    linear = np.sort(rng.choice(np.prod(shape), size=num_features, replace=False))
    index = np.stack(np.unravel_index(linear, shape), 1)
    classes = encode_classes(encoder, SYNTHETIC_CLASS_PHRASES).numpy()
    # spatially coherent classes: one per 4 x 4 x 16 column block
    block = (index[:, 0] // 4) * 50 + index[:, 1] // 4
    features = classes[rng.integers(0, len(classes), 2500)[block]] + 0.05 * rng.standard_normal((num_features, 384))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    occupancy = np.zeros(shape, np.float32)
    occupancy[tuple(index.T)] = 1.0
    return OpenVocabField(origin=(-40, -40, -1), voxel_size=0.4, frame="ego", occupancy=occupancy, indices=index,
                          features=features.astype(np.float16), space=encoder.space)


def bench_queries(repeats: int) -> list[dict]:
    from geo3d.fields.query import FieldQuery, connected_components
    from geo3d.language import encode_prompts, get_text_encoder, relevancy

    encoder = get_text_encoder("minilm")
    rows = []
    for count in (7_000, 100_000, 640_000):
        field = random_field(count, encoder)
        query = FieldQuery(field, encoder)
        start = time.perf_counter()
        query(["parked truck"])  # first call: text encoding (8 templates) uncached
        first = time.perf_counter() - start
        answer = median_seconds(lambda: query(["parked truck"]), repeats)
        negatives = encode_prompts(encoder, ["object", "things", "stuff", "texture"])
        text = encode_prompts(encoder, ["parked truck"])

        def reference():
            scores = relevancy(torch.from_numpy(field.features), text[0], negatives).numpy()
            return connected_components(field, np.flatnonzero(scores >= 0.5), scores)

        reference_s = median_seconds(reference, repeats)
        timed, encode = [], []
        for _ in range(repeats):
            timed.append(query(["parked truck"])[0].seconds)
            encode.append(query.last_encode_seconds)
        rows.append({"feature_voxels": count, "first_query_s": first, "query_s": answer,
                     "score_and_group_s": float(np.median(timed)), "encode_cached_s": float(np.median(encode)),
                     "reference_checked_relevancy_s": reference_s,
                     "speedup_vs_reference": reference_s / float(np.median(timed))})
        print(f"queries, {count:,} feature voxels: {answer * 1e3:.1f} ms per query", flush=True)
    return rows


def _reconstruct_worker(name: str, options: dict, capture_path: str, repeats: int, queue) -> None:
    torch.set_num_threads(int(os.environ.get("GEO3D_BENCH_THREADS", torch.get_num_threads())))
    from geo3d.fields.methods import Resources, get_method
    from geo3d.io import read_capture
    from geo3d_apps.occupancy_data import make_teacher, text_encoder
    from geo3d_apps.reconstruct import peak_memory_mb

    start = time.perf_counter()
    capture = read_capture(capture_path)
    encoder = text_encoder("minilm")
    method_cls = get_method(name)
    teacher = make_teacher("label", encoder) if name == "fusion" else None
    method = method_cls(method_cls.Options(**options), Resources(text_encoder=encoder, teacher=teacher,
                                                                 checkpoint=CHECKPOINT))
    if name == "pop3d":
        method.load()
    setup = time.perf_counter() - start
    times, field = [], None
    for _ in range(repeats + 1):  # the first run warms up (and JIT-compiles the ray traversal)
        t = time.perf_counter()
        field = method.reconstruct(capture, 0)
        times.append(time.perf_counter() - t)
    queue.put({"setup_s": setup, "reconstruct_s": float(np.median(times[1:])), "first_run_s": times[0],
               "occupied_voxels": field.num_occupied(), "feature_voxels": field.num_features,
               "peak_rss_mb": peak_memory_mb()})


def bench_reconstruct(repeats: int, workdir: Path) -> list[dict]:
    from geo3d.synthetic.generate import SynthConfig, write_synthetic_capture

    synthetic = workdir / "synthetic-seed0"
    if not synthetic.exists():
        write_synthetic_capture(SynthConfig(seed=0, frames=1), synthetic)
    runs = [("fusion", {"geometry": "lidar"}, synthetic), ("fusion", {"geometry": "depth"}, synthetic),
            ("pop3d", {}, synthetic)]
    nuscenes = SHARED / "nuscenes_sample"
    if nuscenes.exists():
        runs.append(("pop3d", {}, nuscenes))
    context = mp.get_context("spawn")
    rows = []
    for name, options, path in runs:
        queue = context.Queue()
        process = context.Process(target=_reconstruct_worker, args=(name, options, str(path), repeats, queue))
        process.start()
        result = queue.get()
        process.join()
        row = {"method": name, "options": options, "capture": path.name, **result}
        rows.append(row)
        print(f"reconstruct {name} {options} on {path.name}: {result['reconstruct_s']:.2f} s, "
              f"peak {result['peak_rss_mb']:.0f} MB", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/geo3d-bench-fields"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "fields", "machine": machine_info(), "repeats": args.repeats,
              "queries": bench_queries(args.repeats),
              "reconstruct": bench_reconstruct(max(1, args.repeats // 2), args.workdir)}
    write_report(report, args.out)


if __name__ == "__main__":
    main()
