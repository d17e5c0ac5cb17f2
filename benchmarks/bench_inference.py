"""End-to-end scoring speed: preprocessing + every ensemble member's model + every expert of the score (k-NN
over the anchors included), per model x runtime x batch size.

    .venv/bin/python benchmarks/bench_inference.py [--anchors 6000] [--batch-sizes 1,20,256] [--repeats 5]
                                                   [--score knn+excess-margin] [--members 2]

Decoding is excluded (images are already uint8 arrays); weights are random (speed does not depend on them). The
score and the number of ensemble members are the default preset's unless given; the class centres are random
too, as many as the default trains (the normal class, "other" and the three turns).
Each cell scores the same test images in consecutive batches; the median over ``--repeats`` passes is reported,
after one warm-up pass. Also prints each model's FLOPs per image (torch's flop counter) and the GFLOP/s reached.
Prints markdown, then JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from metricad import Detector
from metricad.models import create_model
from metricad.recipe import PRESETS, RUNTIMES

DEFAULT = PRESETS["default"]
CLASSES = 2 + len(DEFAULT.negatives)  # the default's training classes: normal, other, one per shifted negative


def flops_per_image(model) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, model.in_channels, *model.input_size))
    return float(counter.get_total_flops())


def time_pass(detector: Detector, images: np.ndarray, batch_size: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        detector.score_samples(images[i:i + batch_size])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="compact-cnn,seed-mobilenetv2")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES))
    parser.add_argument("--anchors", type=int, default=6000)
    parser.add_argument("--batch-sizes", default="1,20,256")
    parser.add_argument("--images", type=int, default=512, help="test images scored per pass")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--score", default=DEFAULT.score)
    parser.add_argument("--members", type=int, default=DEFAULT.ensemble, help="ensemble members (models)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    anchors = rng.integers(0, 256, (args.anchors, 28, 28), dtype=np.uint8)
    images = rng.integers(0, 256, (args.images, 28, 28), dtype=np.uint8)
    rows = []
    for name in args.models.split(","):
        models = []
        for seed in range(args.members):
            torch.manual_seed(seed)
            models.append(create_model(name, **(DEFAULT.model_kwargs if name == DEFAULT.model else {})).eval())
            models[-1].set_class_centres(torch.randn(models[-1].embedding_dim, CLASSES), normal_label=0)
        flops = args.members * flops_per_image(models[0])
        for runtime in args.runtimes.split(","):
            detector = Detector(models, device="cpu", runtime=runtime, score=args.score).fit(anchors)
            for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
                time_pass(detector, images[:max(batch_size, 32)], batch_size)  # warm-up
                seconds = statistics.median(time_pass(detector, images, batch_size) for _ in range(args.repeats))
                ms = 1000 * seconds / len(images)
                rows.append({"model": name, "members": args.members, "runtime": runtime, "score": args.score,
                             "batch_size": batch_size,
                             "anchors": args.anchors, "ms_per_image": ms, "images_per_second": 1000 / ms,
                             "mflops_per_image": flops / 1e6,
                             "model_gflops_per_second": flops / 1e6 / ms})
                print(json.dumps(rows[-1]), flush=True)
    print()
    print("| model | runtime | batch | ms/image | images/s | MFLOP/image | GFLOP/s reached |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['runtime']} | {r['batch_size']} | {r['ms_per_image']:.3f} | "
              f"{r['images_per_second']:.0f} | {r['mflops_per_image']:.1f} | {r['model_gflops_per_second']:.1f} |")
    print()
    print("| model | batch | torch ms/image | onnx ms/image | onnx speed-up |")
    print("|---|---:|---:|---:|---:|")
    by_key = {(r["model"], r["runtime"], r["batch_size"]): r["ms_per_image"] for r in rows}
    for (model, runtime, batch_size), ms in by_key.items():
        if runtime == "torch" and (model, "onnx", batch_size) in by_key:
            onnx_ms = by_key[(model, "onnx", batch_size)]
            print(f"| {model} | {batch_size} | {ms:.3f} | {onnx_ms:.3f} | {ms / onnx_ms:.2f}x |")
    print()
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
