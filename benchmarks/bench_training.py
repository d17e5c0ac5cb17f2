"""Training throughput per model: images/second and the seconds one epoch of the 54,000-image split would take.

    .venv/bin/python benchmarks/bench_training.py [--models compact-cnn,seed-mobilenetv2] [--steps 10]

Random uint8 images, batch 128, each model with its preset's loss and optimizer (compact-cnn: the default
recipe; seed-mobilenetv2: the seed recipe). Median step time over ``--steps`` steps after 2 warm-up steps.
Prints markdown, then JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from metricad.losses import build_loss
from metricad.models import create_model
from metricad.recipe import PRESETS
from metricad.train.loop import make_optimizer, random_shift

EPOCH_IMAGES = 54_000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="compact-cnn,seed-mobilenetv2")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    presets = {"compact-cnn": PRESETS["default"], "seed-mobilenetv2": PRESETS["seed"]}
    rows = []
    for name in args.models.split(","):
        config = presets.get(name, PRESETS["default"])
        torch.manual_seed(0)
        model = create_model(name).train()
        criterion = build_loss(config.loss, 2, model.embedding_dim, config.margin)
        optimizer = make_optimizer(config, list(model.parameters()) + list(criterion.parameters()))
        gen = torch.Generator().manual_seed(0)
        x = torch.from_numpy(np.random.default_rng(0).random((args.batch_size, 1, 28, 28), dtype=np.float32))
        y = torch.randint(0, 2, (args.batch_size,), generator=gen)
        times = []
        for step in range(args.steps + 2):
            start = time.perf_counter()
            loss = criterion(model(random_shift(x, config.shift, gen)), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step >= 2:
                times.append(time.perf_counter() - start)
        step_s = statistics.median(times)
        rows.append({"model": name, "loss": config.loss, "batch_size": args.batch_size,
                     "images_per_second": args.batch_size / step_s,
                     "seconds_per_epoch": EPOCH_IMAGES / args.batch_size * step_s})
        print(json.dumps(rows[-1]), flush=True)
    print()
    print("| model | loss | images/s | s per epoch (54,000 images) |")
    print("|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['loss']} | {r['images_per_second']:.0f} | {r['seconds_per_epoch']:.0f} |")
    print()
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
