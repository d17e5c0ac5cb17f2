"""The real-images table (BENCHMARKS.md, first page): ELPV solar cells, mono and poly apart, good images only.

metricad runs as a user runs it, through the command line with the default settings:

    metricad export-dataset --dataset elpv --out DIR
    metricad train --out RUN --normal-dir DIR/<type>/train/good
    metricad evaluate RUN --test-dir DIR/<type>/test
    metricad export RUN --out RUN/model.onnx

beside the raw-pixel baselines on 64x64 grey pixels (bilinear) of the same split: 1-NN and PCA with 32 components.
Also measured: training seconds, peak resident memory of the training process (the memory bank included), the
bundle's ms/image at batch 1 and 20 on this machine's threads (median of 3 passes over 40 test images).
Protocol: no anomaly seen; the test defects are read only for the AUROC.

    python benchmarks/elpv_benchmark.py --out elpv.json [--elpv DIR] [--types mono,poly]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from result_rows import keep
from sklearn.metrics import roc_auc_score

from metricad.compare.baselines import PCAReconstruction, RawPixelKNN
from metricad.data.folders import read_images
from metricad.data.images import list_image_files
from metricad.deploy.bundle import Bundle
from metricad.evaluate.timing import time_scoring

METRICAD = [sys.executable, "-m", "metricad"]


def _run(args: list[str]) -> float:
    """Run a metricad command; its wall seconds. Fails loudly with the command's own error."""
    start = time.perf_counter()
    subprocess.run([*METRICAD, *args], check=True)
    return time.perf_counter() - start


def _peak_child_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def baselines(elpv: Path, kind: str) -> dict[str, float]:
    def load(part):
        return read_images(list_image_files([elpv / kind / part]), (64, 64), 1)[0]

    train, good, bad = load("train/good"), load("test/good"), load("test/defect")
    truth = np.r_[np.zeros(len(good)), np.ones(len(bad))]
    test = np.concatenate([good, bad])
    return {name: round(float(roc_auc_score(truth, model.fit(train).score_samples(test))), 4)
            for name, model in (("raw-pixel 1-NN", RawPixelKNN(1)), ("PCA-32", PCAReconstruction(32)))}


def bundle_speed(bundle: Path, elpv: Path, kind: str, batch: int) -> float:
    scorer = Bundle(bundle)
    channels, size = scorer.input_spec
    images = read_images(list_image_files([elpv / kind / "test" / "good"])[:40], size, channels)[0]
    return statistics.median(1000 * time_scoring(scorer, images, batch)[1] / len(images) for _ in range(3))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--elpv", type=Path, help="an export-dataset --dataset elpv folder (default: made here)")
    parser.add_argument("--types", default="mono,poly")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        elpv = args.elpv
        if elpv is None:
            elpv = Path(tmp) / "elpv"
            _run(["export-dataset", "--dataset", "elpv", "--out", str(elpv)])
        for kind in args.types.split(","):
            run = Path(tmp) / f"run-{kind}"
            train_seconds = _run(["train", "--out", str(run), "--normal-dir", str(elpv / kind / "train" / "good")])
            peak = _peak_child_mb()
            _run(["evaluate", str(run), "--test-dir", str(elpv / kind / "test")])
            metrics = json.loads((run / "metrics.json").read_text())
            _run(["export", str(run), "--out", str(run / "model.onnx")])
            config = json.loads((run / "config.json").read_text())
            row = {"type": kind, "train_images": len(list_image_files([elpv / kind / "train" / "good"])),
                   "metricad": round(metrics["auc"], 4), **baselines(elpv, kind),
                   "train_seconds": round(train_seconds, 1), "peak_memory_mb_so_far": round(peak),
                   "bundle_ms_b1": round(bundle_speed(run / "model.onnx", elpv, kind, 1), 2),
                   "bundle_ms_b20": round(bundle_speed(run / "model.onnx", elpv, kind, 20), 2),
                   "input": config["models"][0]["kwargs"]["input_size"], "score": config["detector"]["score"],
                   "bank_size": config["detector"].get("bank_size")}
            keep(rows, row, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
