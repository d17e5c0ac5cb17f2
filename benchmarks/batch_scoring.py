"""Batch scoring at scale: throughput of the local engine against a local Ray, and peak memory as the number of
images grows tenfold.

    .venv/bin/python benchmarks/batch_scoring.py runs/x.onnx [--images 2000,20000] [--engines local,ray]

Writes the images once (PNG files, Fashion-MNIST test images with seeded noise so that no two are the same) into
a temporary folder, then for each image count and engine runs ``metricad score BUNDLE FOLDER --out DIR`` in a
fresh process: the wall time (process start to exit, Ray's start-up included), images/s, and the peak resident
memory (``getrusage`` of the process and the children it waited for: the whole job for the local engine; for
Ray, the largest of the driver and the Ray processes it started). Prints markdown, then JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def write_images(folder: Path, n: int) -> None:
    from PIL import Image

    from metricad.data import load_fashion_mnist

    _, (test_x, _) = load_fashion_mnist()
    rng = np.random.default_rng(0)
    for i in range(n):
        noisy = np.clip(test_x[i % len(test_x)].astype(np.int16) + rng.integers(-8, 9, (28, 28)), 0, 255)
        (folder / f"{i // 1000:04d}").mkdir(exist_ok=True)
        Image.fromarray(noisy.astype(np.uint8)).save(folder / f"{i // 1000:04d}" / f"{i:07d}.png")


# A fresh watcher process per run: its RUSAGE_CHILDREN peak is this run's alone (ru_maxrss: KB on Linux).
WATCH = ("import resource, subprocess, sys, time; t = time.perf_counter(); subprocess.run(sys.argv[1:], check=True, "
         "capture_output=True); print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def run(bundle: str, folder: Path, out: Path, engine: str) -> dict:
    command = [sys.executable, "-m", "metricad", "score", bundle, str(folder), "--out", str(out), "--engine", engine]
    seconds, peak_kb = subprocess.run([sys.executable, "-c", WATCH, *command], check=True, capture_output=True,
                                      text=True).stdout.split()
    return {"seconds": float(seconds), "peak_rss_mb": int(peak_kb) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--images", default="2000,20000")
    parser.add_argument("--engines", default="local,ray")
    args = parser.parse_args()
    counts = [int(n) for n in args.images.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        for n in counts:  # each count in its own folder: the first n images of the same sequence
            folder = images / str(n)
            folder.mkdir(parents=True)
            write_images(folder, n)
            for engine in args.engines.split(","):
                result = run(args.bundle, folder, Path(tmp) / f"out-{engine}-{n}", engine)
                rows.append({"images": n, "engine": engine, **result, "images_per_second": n / result["seconds"]})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print("| images | engine | seconds (start-up included) | images/s | peak RSS MB |")
    print("|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['images']:,} | {r['engine']} | {r['seconds']:.1f} | {r['images_per_second']:.0f} | "
              f"{r['peak_rss_mb']:.0f} |")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
