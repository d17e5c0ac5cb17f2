"""metricad's Python API, end to end: load -> train -> fit anchors -> score -> threshold -> save. Runnable:

    .venv/bin/python docs/examples/python_api.py [--data-dir DIR] [--limit 1000] [--epochs 2]
"""

import argparse
from dataclasses import replace

import numpy as np
from sklearn.metrics import roc_auc_score

from metricad import PRESETS, Detector, open_run
from metricad.data import load_split
from metricad.evaluate.explain import explain
from metricad.run import write_run
from metricad.train.pipeline import train_members


def main(data_dir=None, limit=None, epochs=None, out="runs/api-example"):
    config = PRESETS["default"] if epochs is None else replace(PRESETS["default"], epochs=epochs)
    # Sneakers are normal, ankle boots the anomaly (never trained on); 10 % of the sneakers are held out.
    split = load_split({"normal": 7, "anomaly": 9, "limit": limit, "holdout": config.holdout}, data_dir)

    models, seconds = train_members(config, split)  # the recipe's ensemble: one model per seed
    detector = Detector(models, score=config.score)  # experts averaged, e.g. "knn+fmap+excess-margin"
    detector.fit(split.anchor_images, split.holdout_images)  # anchors; normalised and thresholded on held-out

    scores = detector.score_samples(split.test_images)  # higher = more anomalous
    flags = detector.predict(split.test_images)  # 1 = anomaly, 0 = normal (score > detector.offset_)
    print(f"trained in {seconds:.0f} s; AUC {roc_auc_score(split.test_is_anomaly, scores):.4f}; "
          f"{flags.mean():.1%} of the test images flagged at the threshold {detector.offset_:.3f}")
    knn_only = detector.with_score("knn")  # the same models and anchors, scored another way
    print(f"k-NN alone: AUC {roc_auc_score(split.test_is_anomaly, knn_only.score_samples(split.test_images)):.4f}")

    why = explain(detector, split.test_images[:4])  # heat-maps (N, H, W) and each image's nearest anchor
    print(f"heat-maps {why.heatmaps.shape}, nearest anchors {why.nearest_anchor.tolist()}")
    patch = detector.with_score("patch")  # patch by patch against a bank of normal patches: a map per image
    patch_scores, maps = patch.score_with_maps(split.test_images[:4])  # maps (N, H, W), z-units
    masks = patch.predict_masks(patch_scores, maps)  # defect pixels: image and pixel thresholds both exceeded
    print(f"anomaly maps {maps.shape}, defect pixels {masks.sum(axis=(1, 2)).tolist()}")

    write_run(out, detector, {"training": config.to_dict()})  # a run directory ...
    reopened = open_run(out).detector  # ... that scores the same after reopening
    five = split.test_images[:5]
    assert np.allclose(reopened.score_samples(five), detector.score_samples(five), rtol=1e-5, atol=1e-5)
    return detector


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--epochs", type=int)
    args = parser.parse_args()
    main(args.data_dir, args.limit, args.epochs)
