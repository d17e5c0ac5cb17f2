"""Issue 36's check of ``metricad update``: a run learns 20 good ELPV *test* cells (as an operator marking false
alarms good would teach it), and the real defects' image AUROC on the remaining test cells must stay within 0.01.
Protocol: no anomaly seen; the defects are read for the figures alone. The 20 cells are chosen before any score is
read: a seeded random draw (seed 36) of the test's good cells.

    python benchmarks/update_elpv.py --elpv DIR --run RUN --type mono --out r.json

``RUN`` (left unchanged; the update runs on a copy): ``metricad train --out RUN --normal-dir DIR/<type>/train/good``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from metricad.data.folders import read_images
from metricad.data.images import list_image_files
from metricad.deploy.update import update_run
from metricad.run import open_run

ADDED, SEED = 20, 36


def scores(run: Path, files: list[str]) -> np.ndarray:
    detector = open_run(run, device="cpu").detector
    return detector.score_samples(read_images([Path(f) for f in files], detector.input_spec[1], 1)[0])


def measure(elpv: Path, run: Path, kind: str) -> dict:
    good = sorted(list_image_files([elpv / kind / "test" / "good"]))
    defect = sorted(list_image_files([elpv / kind / "test" / "defect"]))
    chosen = set(np.random.default_rng(SEED).choice(len(good), ADDED, replace=False).tolist())
    added = [f for i, f in enumerate(good) if i in chosen]
    rest = [f for i, f in enumerate(good) if i not in chosen]
    labels = np.r_[np.zeros(len(rest)), np.ones(len(defect))]
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "run"
        shutil.copytree(run, copy)
        before, added_before = scores(copy, rest + defect), scores(copy, added)
        offset_before = open_run(copy, device="cpu").detector.offset_
        start = time.perf_counter()
        summary = update_run(copy, added, by="benchmarks/update_elpv.py")
        seconds = time.perf_counter() - start
        after, added_after = scores(copy, rest + defect), scores(copy, added)
    row = {"type": kind, "added": len(added), "rest_good": len(rest), "defect": len(defect),
           "auroc_before": float(roc_auc_score(labels, before)), "auroc_after": float(roc_auc_score(labels, after)),
           "threshold_before": offset_before, "threshold_after": summary["threshold"],
           "flagged_added_before": int(np.sum(added_before > offset_before)),
           "flagged_added_after": int(np.sum(added_after > summary["threshold"])),
           "false_alarm_rate_before": float(np.mean(before[:len(rest)] > offset_before)),
           "false_alarm_rate_after": float(np.mean(after[:len(rest)] > summary["threshold"])),
           "recall_before": float(np.mean(before[len(rest):] > offset_before)),
           "recall_after": float(np.mean(after[len(rest):] > summary["threshold"])),
           "update_seconds": round(seconds, 1)}
    row["auroc_change"] = row["auroc_after"] - row["auroc_before"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elpv", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--type", choices=("mono", "poly"), default="mono")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    row = measure(args.elpv, args.run, args.type)
    print(json.dumps(row, indent=2))
    args.out.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
