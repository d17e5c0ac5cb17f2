"""Issue 29: a 4000x1000 image scored with tiling, its peak memory measured. A tiled folder run (the folder
default, ``--tile 320 --tile-overlap 32``) is trained on synthetic 4000x1000 line-scan textures; one test image
with a small defect is then scored with its map by ``metricad score RUN FILE --maps DIR`` (the run, torch) and by
the exported bundle (torch-free), each in a fresh process whose peak resident memory is read from the kernel
(``ru_maxrss`` of the finished child).

    python benchmarks/tiling_memory.py --out results.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (1000, 4000)  # height, width


def texture(rng, defect: bool = False) -> np.ndarray:
    image = np.clip(rng.normal(128, 10, SIZE) + 20 * np.sin(np.arange(SIZE[1]) / 40.0), 0, 255).astype(np.uint8)
    if defect:
        image[500:530, 2500:2530] = 250
    return image


def peak_of(command: list[str]) -> tuple[float, float, str]:
    """``(peak resident GB, seconds, stdout)`` of ``command`` run alone in a child process."""
    code = ("import resource, subprocess, sys, time\n"
            "start = time.perf_counter()\n"
            "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
            "assert done.returncode == 0, done.stderr\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - start)\n"
            "print(done.stdout, end='')\n")
    out = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True, check=True).stdout
    first, rest = out.split("\n", 1)
    kilobytes, seconds = first.split()
    return int(kilobytes) / 2**20, float(seconds), rest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--normal", type=int, default=8, help="good 4000x1000 images to train on")
    args = parser.parse_args()
    metricad = [sys.executable, "-m", "metricad.cli"]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        (work / "normal").mkdir()
        for i in range(args.normal):
            Image.fromarray(texture(rng)).save(work / "normal" / f"{i}.png")
        Image.fromarray(texture(rng, defect=True)).save(work / "line.png")
        start = time.perf_counter()
        train_peak, train_seconds, _ = peak_of([*metricad, "train", "--out", str(work / "run"), "--normal-dir",
                                                str(work / "normal"), "--tile", "320", "--tile-overlap", "32",
                                                "--holdout", "0.25"])
        subprocess.run([*metricad, "export", str(work / "run"), "--out", str(work / "run.onnx")], check=True,
                       capture_output=True)
        rows = [{"what": "train", "peak_gb": round(train_peak, 2), "seconds": round(train_seconds, 1),
                 "images": args.normal}]
        for target in ("run", "run.onnx"):
            peak, seconds, csv = peak_of([*metricad, "score", str(work / target), str(work / "line.png"), "--maps",
                                          str(work / f"maps-{target}")])
            row = csv.splitlines()[1].split(",")
            anomaly_map = np.asarray(Image.open(row[4]))
            y, x = np.unravel_index(anomaly_map.argmax(), anomaly_map.shape)
            rows.append({"what": f"score 4000x1000 with its map ({'bundle' if target.endswith('onnx') else 'run'})",
                         "peak_gb": round(peak, 2), "seconds": round(seconds, 1), "score": float(row[1]),
                         "label": row[2], "map_size": list(anomaly_map.shape), "map_peak_at": [int(y), int(x)],
                         "defect_at": [515, 2515]})
        print(f"all in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    for row in rows:
        print(json.dumps(row))
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
