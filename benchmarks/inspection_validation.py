"""Issue 28's bounded research: the folder-default candidates on held-out good ELPV cells with synthetic defects
(no anomaly seen), each trained through ``train_run`` as ``metricad train --normal-dir`` does. The rule and the
split are in docs/decisions.md (2026-12-02); the real ELPV test AUROC is printed beside, never used to choose.

    python benchmarks/inspection_validation.py --elpv DIR --out results.json [--candidates A,B,...]

``DIR``: ``metricad export-dataset --dataset elpv --out DIR``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image
from result_rows import keep
from sklearn.metrics import roc_auc_score

from metricad.data.defects import DEFECTS
from metricad.data.folders import read_images
from metricad.data.images import list_image_files
from metricad.data.sources import ImageFolders
from metricad.deploy.bundle import Bundle
from metricad.deploy.export import export_run
from metricad.evaluate.timing import time_scoring
from metricad.recipe import PRESETS
from metricad.run import open_run
from metricad.train.pipeline import train_run

VAL_FRACTION, SPLIT_SEED = 0.2, 1
BASE = PRESETS["inspection"]
CANDIDATES = {
    "A": (BASE, {}, 224),
    "B": (BASE, {"bank_size": 16384}, 224),
    "C": (BASE, {}, 320),
    "D": (replace(BASE, epochs=2, defects=["cutpaste", "scar"], lr=1e-4, batch_size=32, lr_schedule="onecycle"),
          {}, 224),
    "E": (replace(BASE, score="patch+knn"), {}, 224),
}


def validation_defects(images: np.ndarray) -> np.ndarray:
    """One synthetic defect per validation good image, alternating blend and intensity (seeded)."""
    rng = np.random.default_rng(SPLIT_SEED)
    out = []
    for i, image in enumerate(images):
        if i % 2 == 0:
            out.append(DEFECTS["blend"](image, rng, images[(i + 1) % len(images)])[0])
        else:
            out.append(DEFECTS["intensity"](image, rng)[0])
    return np.stack(out)


def resized(images: np.ndarray, size: int) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images])


def run_candidate(name: str, kind: str, elpv: Path, work: Path) -> dict:
    config, detector_params, size = CANDIDATES[name]
    paths = [Path(p) for p in list_image_files([elpv / kind / "train" / "good"])]
    order = np.random.default_rng(SPLIT_SEED).permutation(len(paths))
    n_val = int(round(VAL_FRACTION * len(paths)))
    fit_dir = work / f"{kind}-fit"
    if not fit_dir.exists():  # the 80 %, as a folder of links: trained exactly as the CLI trains a folder
        fit_dir.mkdir(parents=True)
        for i in order[n_val:]:
            (fit_dir / paths[i].name).symlink_to(paths[i])
    native = read_images([paths[i] for i in sorted(order[:n_val])], (300, 300), 1)[0]
    val_good, val_bad = resized(native, size), resized(validation_defects(native), size)
    out = work / f"{name}-{kind}"
    start = time.perf_counter()
    train_run(out, config, ImageFolders(fit_dir, image_size=(size, size), channels=1), detector_params=detector_params,
              device="cpu", progress=False)
    seconds = time.perf_counter() - start
    detector = open_run(out).detector
    val_scores = detector.score_samples(np.concatenate([val_good, val_bad]))
    val_auc = roc_auc_score(np.r_[np.zeros(len(val_good)), np.ones(len(val_bad))], val_scores)
    test_good = read_images(list_image_files([elpv / kind / "test" / "good"]), (size, size), 1)[0]
    test_bad = read_images(list_image_files([elpv / kind / "test" / "defect"]), (size, size), 1)[0]
    test_auc = roc_auc_score(np.r_[np.zeros(len(test_good)), np.ones(len(test_bad))],
                             detector.score_samples(np.concatenate([test_good, test_bad])))
    export_run(out, work / f"{name}-{kind}.onnx")
    bundle = Bundle(work / f"{name}-{kind}.onnx", threads=2)
    ms = statistics.median(1000 * time_scoring(bundle, test_good[:20], 1)[1] / 20 for _ in range(3))
    return {"candidate": name, "type": kind, "fit_images": len(paths) - n_val, "train_seconds": round(seconds, 1),
            "val_auc": round(float(val_auc), 4), "test_auc": round(float(test_auc), 4), "bundle_ms_b1": round(ms, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elpv", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--types", default="mono,poly")
    args = parser.parse_args(argv)
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["candidate"], r["type"]) for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.candidates.split(","):
            for kind in args.types.split(","):
                if (name, kind) in done:
                    continue
                keep(rows, run_candidate(name, kind, args.elpv, Path(tmp)), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
