"""CPU cost of the official training pipelines (eclipse_seg.data.pipelines) per sample, and of a
batch made by the sample thread pool (eclipse_seg.data.prefetch) with 1 vs. N threads.

Inputs are synthetic but of the real sizes: an ADE20K-like 512 x 683 image with a 20-segment
panoptic id map (and the matching label map), a COCO-like 480 x 640 image. Each pipeline draws
its records from a seeded generator (short sides spread over the official lists).

  python -m benchmarks.data_pipelines [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import numpy as np
import torch

from benchmarks._common import describe, table, write_json


class _Fake:
    """A dataset giving the same image for every index (no disk I/O in the measurement)."""

    def __init__(self, h: int, w: int):
        rng = np.random.default_rng(0)
        self.image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        cuts = np.sort(rng.choice(np.arange(1, w), 19, replace=False))
        self.id_map = np.searchsorted(cuts, np.arange(w), side="right")[None].repeat(h, 0) + 1
        self.segments = [{"id": i, "category_id": i, "iscrowd": 0} for i in range(1, 21)]

    def image_size(self, i):
        return self.image.shape[:2]

    def panoptic_inputs(self, i):
        return self.image, self.id_map, self.segments

    def semantic_inputs(self, i):
        return self.image, self.id_map - 1


def main() -> None:
    from eclipse_seg.data.pipelines import TrainingPipeline, pipeline_spec
    from eclipse_seg.data.prefetch import Prefetcher, default_workers

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    n = 8 if args.quick else 32
    batch = 8
    workers = default_workers()
    rows, results = [], {}
    for name, size in (
        ("ade20k_panoptic", (512, 683)),
        ("ade20k_semantic", (512, 683)),
        ("coco_panoptic", (480, 640)),
    ):
        pipeline = TrainingPipeline(pipeline_spec(name), _Fake(*size))
        wall, cpu = [], []
        for k in range(n):
            t0, c0 = time.perf_counter(), time.process_time()
            pipeline.sample(0, np.random.default_rng(k))
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        row = [
            name,
            f"{size[0]}x{size[1]}",
            1000 * statistics.median(wall),
            1000 * statistics.median(cpu),
        ]
        for threads in (1, workers):
            pool = Prefetcher(threads)
            jobs = [partial(pipeline.sample, 0, np.random.default_rng(k)) for k in range(batch)]
            pool.run(-1, jobs[:1])  # start the threads
            t0, c0 = time.perf_counter(), time.process_time()
            pool.run(0, jobs)
            w, c = time.perf_counter() - t0, time.process_time() - c0
            pool.close()
            row += [1000 * w, c / w]
        rows.append(row)
        results[name] = dict(
            zip(
                [
                    "input",
                    "sample_wall_ms",
                    "sample_cpu_ms",
                    "batch_wall_ms_1_thread",
                    "cpu_per_wall_1_thread",
                    f"batch_wall_ms_{workers}_threads",
                    f"cpu_per_wall_{workers}_threads",
                ],
                [size, *row[2:]],
            )
        )
    print(f"device: {describe(torch.device('cpu'))}; samples per pipeline: {n}; batch {batch}")
    print("(cpu/wall: process CPU seconds per wall second, i.e. the cores the batch kept busy)")
    print(
        table(
            [
                "pipeline",
                "input HxW",
                "ms/sample wall",
                "ms/sample CPU",
                "batch ms, 1 thread",
                "cpu/wall",
                f"batch ms, {workers} threads",
                "cpu/wall",
            ],
            rows,
        )
    )
    write_json(args.json, {"device": describe(torch.device("cpu")), "results": results})


if __name__ == "__main__":
    main()
