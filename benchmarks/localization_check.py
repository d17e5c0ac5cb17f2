"""Issue 29's localisation check, as anyone can run it: synthetic defects with exact masks (``metricad
make-defects``) pasted on half of the good *test* images that no run trained on, scored by a run trained with
the folder default (ELPV mono and poly) or the inspection preset (Fashion-MNIST sneakers), through ``metricad
evaluate --test-dir --mask-dir``. Protocol: no anomaly seen (nothing here chooses anything).

    python benchmarks/localization_check.py --elpv DIR --out results.json [--fashion-limit 1000]

``DIR``: ``metricad export-dataset --dataset elpv --out DIR``. Each step is the command line's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from result_rows import keep

from metricad.cli import main as metricad

# The kinds issue 29's figures were measured with (make-defects now has more: issue 35's inspection kinds).
ISSUE_29_KINDS = ("cutpaste", "scar", "blend", "intensity")


def check(name: str, train_args: list[str], good_dir: Path, work: Path, real_test: Path | None = None) -> dict:
    """The check on one data set; ``real_test``: also the run's image AUROC on the real test defects (ELPV),
    which the check's run is the same as the real-images benchmark's."""
    run, check_set = work / f"{name}-run", work / f"{name}-check"
    kinds = ",".join(ISSUE_29_KINDS)
    assert metricad(["make-defects", str(good_dir), "--out", str(check_set), "--defects", kinds]) == 0
    start = time.perf_counter()
    assert metricad(["train", "--out", str(run), *train_args]) == 0
    seconds = time.perf_counter() - start
    assert metricad(["evaluate", str(run), "--test-dir", str(check_set / "test"), "--mask-dir",
                     str(check_set / "masks")]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    row = {"check": name, "train_args": " ".join(train_args), "training_seconds": round(seconds, 1),
           "protocol": "no anomaly seen", **{key: metrics[key] for key in (
               "pixel_auroc", "aupro", "auc", "auc_by_type", "pixel_at_threshold", "n_test_normal",
               "n_test_anomaly", "n_defect_regions", "n_pixels", "score")}}
    if real_test is not None:
        assert metricad(["evaluate", str(run), "--test-dir", str(real_test)]) == 0
        row["real_test_auc"] = json.loads((run / "metrics.json").read_text())["auc"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elpv", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fashion-limit", type=int, default=1000, help="sneakers trained on (Fashion-MNIST)")
    parser.add_argument("--data-dir", help="the Fashion-MNIST .gz files")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        for kind in ("mono", "poly"):
            keep(rows, check(f"elpv-{kind}", ["--normal-dir", str(args.elpv / kind / "train" / "good")],
                             args.elpv / kind / "test" / "good", work, args.elpv / kind / "test"), args.out)
        fashion = work / "fashion"
        data = ["--data-dir", args.data_dir] if args.data_dir else []
        assert metricad(["export-dataset", "--out", str(fashion), *data]) == 0
        keep(rows, check("fashion-mnist-sneaker", ["--preset", "inspection", "--limit", str(args.fashion_limit),
                                                   *data], fashion / "test" / "good", work), args.out)


if __name__ == "__main__":
    main()
