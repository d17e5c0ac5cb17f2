"""Issue 35's operating point: recall and false-alarm rate on ELPV's real test cells at thresholds set on a run's
held-out good training cells only (the default's 99th percentile, ``tail`` at 1 % and 5 %, the quantile at 5 %).
Protocol: no anomaly seen; the test cells are read for the figures alone.

    python benchmarks/operating_point.py --elpv DIR --mono RUN --poly RUN --out r.json

``RUN``: ``metricad train --out RUN --normal-dir DIR/<type>/train/good`` (the folder default).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from metricad.data.folders import read_images
from metricad.data.images import list_image_files
from metricad.run import open_run
from metricad.thresholds import tail_threshold, threshold_for


def rates(run: Path, test: Path) -> dict:
    detector = open_run(run, device="cpu").detector
    held = detector.score_samples(detector.holdout_images_)
    size = detector.input_spec[1]
    good = detector.score_samples(read_images(sorted(list_image_files([test / "good"])), size, 1)[0])
    bad = detector.score_samples(read_images(sorted(list_image_files([test / "defect"])), size, 1)[0])
    thresholds = {"quantile 1% (the default)": detector.offset_, "tail 1%": tail_threshold(held, 0.01),
                  "quantile 5%": threshold_for(held, np.zeros(len(held)), "fpr", target_fpr=0.05),
                  "tail 5%": tail_threshold(held, 0.05)}
    return {"n_held_out": len(held), "n_good": len(good), "n_defect": len(bad),
            "rows": {name: {"threshold": float(t), "recall": float(np.mean(bad > t)),
                            "false_alarm_rate": float(np.mean(good > t))} for name, t in thresholds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elpv", type=Path, required=True)
    parser.add_argument("--mono", type=Path, required=True)
    parser.add_argument("--poly", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = {kind: rates(getattr(args, kind), args.elpv / kind / "test") for kind in ("mono", "poly")}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
