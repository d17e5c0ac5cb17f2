"""Score a saved run's test split by its own score, by k-NN on its raw embeddings as well as on the unit-length
ones it was saved with, and by the embedding length alone (for understanding a run; nothing is chosen from it).

    .venv/bin/python benchmarks/embedding_length_probe.py runs/reproduce

For a CosFace model the training is the same function with or without the normalisation, so one training
gives both scores. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sklearn.metrics import roc_auc_score

from metricad import Detector
from metricad.detector import read_config
from metricad.runs import load_split
from metricad.scores import MARGIN_SCORES


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    saved = Detector.load(args.run, device="cpu")
    detector = saved.with_score("knn")  # the k-NN part alone, whatever the run's score
    if not getattr(detector.model, "normalize", False):
        raise SystemExit(f"{args.run}: its model already keeps the embedding length (normalize is off)")
    split = load_split(read_config(Path(args.run))["data"], args.data_dir)
    y = split.test_is_anomaly
    unit = detector.score_samples(split.test_images)
    run_score = saved.score_samples(split.test_images)
    others = {}  # the run's other margin score, from the same model
    for score in MARGIN_SCORES if saved.class_margin_ is not None else ():
        if score != saved.score:
            others[f"{score} (same run)"] = round(roc_auc_score(y, saved.with_score(score).score_samples(
                split.test_images)), 4)
    detector.model.normalize = False  # shared by every detector above: they are done
    raw = Detector(detector.model, device="cpu").fit(split.anchor_images)
    lengths = raw.embed(split.test_images).norm(dim=1).numpy()
    anchor_lengths = raw.anchor_embeddings_.norm(dim=1).numpy()
    print(json.dumps({f"run_score ({saved.score})": round(roc_auc_score(y, run_score), 4), **others,
                      "unit_length_knn": round(roc_auc_score(y, unit), 4),
                      "raw_knn": round(roc_auc_score(y, raw.score_samples(split.test_images)), 4),
                      "length_alone_short_is_anomalous": round(roc_auc_score(y, -lengths), 4),
                      "mean_length": {"anchors": round(float(anchor_lengths.mean()), 2),
                                      "test_normal": round(float(lengths[y == 0].mean()), 2),
                                      "test_anomaly": round(float(lengths[y == 1].mean()), 2)}}))


if __name__ == "__main__":
    main()
