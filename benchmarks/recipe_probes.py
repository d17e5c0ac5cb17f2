"""Probes for choosing the default recipe: train one configuration, print its AUC under several scores.

    .venv/bin/python benchmarks/recipe_probes.py --split val:5 --set epochs=10 --set lr_schedule=onecycle
    .venv/bin/python benchmarks/recipe_probes.py --split test --synthetic cutmix

``--split val:C`` trains and scores on the validation split (10 % of the training images of the normal class
against reference class C, both left out of training): that is the split settings are chosen on. ``--split
test`` uses the real test split, for reporting only. ``--suite`` runs every validation split the default recipe
is chosen on (``SUITE``: five (normal, anomaly) pairs, each with a close stand-in) and prints the mean AUC of
each score. ``--curve`` adds the k-NN AUC after every epoch.

Scores printed (higher = more anomalous for each): ``knn`` (the default: distance to the nearest anchor, on the
embeddings as the model outputs them), ``knn5`` (mean over 5), ``cos`` and ``cos5`` (the same on unit-length
embeddings; equal to ``knn`` and ``knn5`` when the model normalises, as the default does), ``raw`` (1-NN on
the embeddings before any normalisation), ``raw+cos`` (both, z-scored on the anchors), ``feature_map`` (1-NN
on the flattened last feature map), ``margin`` (CosFace: the best other class's cosine minus the normal
class's), ``knn+margin`` and ``knn+pca`` (sums of scores z-scored on the anchors; ``pca`` = raw-pixel PCA
reconstruction error). ``--synthetic cutmix|maxmix`` adds, as one extra class,
as many synthetic anomalies as there are normal images: a normal image with a random box (4 px to half the
image per side) replaced by (cutmix) or maxed with (maxmix) the same box of a random reference image.
Prints one JSON line per split.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from metricad import Detector
from metricad.baselines import PCAReconstruction
from metricad.cli import _setting
from metricad.compare import MarginScorer, anchor_score_stats
from metricad.data import load_fashion_mnist, make_split, validation_split
from metricad.index import ExactIndex
from metricad.preprocessing import to_model_input
from metricad.training import PRESETS, TrainConfig, train_embedding


def synthetic_anomalies(split, kind: str, rng: np.random.Generator) -> np.ndarray:
    normals = split.anchor_images
    references = split.train_images[split.train_classes != split.normal_class]
    out = normals[rng.integers(0, len(normals), len(normals))].copy()
    donors = references[rng.integers(0, len(references), len(out))]
    height, width = out.shape[1:]
    for image, donor in zip(out, donors):
        h, w = rng.integers(4, height // 2 + 1), rng.integers(4, width // 2 + 1)
        y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        box = (slice(y, y + h), slice(x, x + w))
        image[box] = donor[box] if kind == "cutmix" else np.maximum(image[box], donor[box])
    return out


def nearest_distance(anchors: torch.Tensor, queries: torch.Tensor, k: int = 1) -> np.ndarray:
    """Mean euclidean distance of each query to its k nearest anchors."""
    index = ExactIndex()
    index.add(anchors)
    return index.search(queries, k)[0].mean(1).numpy()


# (normal, anomaly, stand-in) triples the default recipe is chosen on: the five pairs of BENCHMARKS section 2c
# with a close stand-in each (a far one, e.g. bag or shirt for sneakers, scores 1.000 for every candidate and
# tells nothing), and sneaker vs boot with sandal. Each trains without its anomaly and its stand-in.
SUITE = ((7, 9, 5), (0, 6, 2), (2, 4, 6), (5, 7, 9), (9, 5, 7))


def probe(config: TrainConfig, data, normal: int, anomaly: int, stand_in: int | None, synthetic: str = "none",
          curve: bool = False, limit: int | None = None) -> dict:
    """Train ``config`` on one split of ``data`` (``load_fashion_mnist()``): the validation split against
    ``stand_in``, or the test split if None. Return each score's AUC."""
    split = make_split(*data, normal=normal, anomaly=anomaly, limit=limit)
    if stand_in is not None:
        split = validation_split(split, stand_in, seed=0)
    labels, normal_label = split.training_labels(config.labels), split.normal_label(config.labels)
    images = split.train_images
    if synthetic != "none":
        extra = synthetic_anomalies(split, synthetic, np.random.default_rng(config.seed))
        images, labels = np.concatenate([images, extra]), np.r_[labels, np.full(len(extra), labels.max() + 1)]
    y = split.test_is_anomaly
    aucs_by_epoch = []

    def follow(record, model):
        detector = Detector(model, device="cpu").fit(split.anchor_images)
        aucs_by_epoch.append(round(roc_auc_score(y, detector.score_samples(split.test_images)), 4))

    start = time.perf_counter()
    model, _, criterion = train_embedding(config, images, labels, device="cpu", progress=False, return_loss=True,
                                          normal_label=normal_label, on_epoch_end=follow if curve else None)
    seconds = time.perf_counter() - start

    detector = Detector(model, device="cpu").fit(split.anchor_images)
    knn = detector.score_samples(split.test_images)
    with torch.no_grad():
        maps = [model.forward_features(to_model_input(x)).flatten(1) for x in (split.anchor_images, split.test_images)]
    scores = {"knn": knn, "knn5": Detector(model, k=5, device="cpu").fit(split.anchor_images).score_samples(
                  split.test_images), "feature_map": nearest_distance(*maps)}
    # raw: 1-NN on the embeddings before any normalisation, length included; cos, cos5: the same on unit-length
    # embeddings, i.e. by angle, the only thing CosFace trains; raw+cos: both, z-scored on the anchors.
    normalize = getattr(model, "normalize", False)
    model.normalize = False  # read at every forward pass: these embeddings keep their length
    raw_detector = Detector(model, device="cpu").fit(split.anchor_images)
    raw_test = raw_detector.embed(split.test_images)
    model.normalize = normalize
    scores["raw"] = raw_detector.score_embeddings(raw_test)
    unit = [torch.nn.functional.normalize(e, dim=1) for e in (raw_detector.anchor_embeddings_, raw_test)]
    scores["cos"], scores["cos5"] = nearest_distance(*unit), nearest_distance(*unit, k=5)
    if normalize:  # the detector's own k-NN is then the unit-length one
        (raw_mean, raw_std), (unit_mean, unit_std) = anchor_score_stats(raw_detector), anchor_score_stats(detector)
        scores["raw+cos"] = (scores["raw"] - raw_mean) / raw_std + (knn - unit_mean) / unit_std
    centres = getattr(getattr(criterion, "loss", None), "W", None)  # CosFace / ArcFace class centres
    if centres is not None:
        margin = MarginScorer(detector, centres, normal_label)
        scores["margin"] = margin.margin(detector.embed(split.test_images))
        scores["knn+margin"] = margin.score_samples(split.test_images)
    # knn + PCA: each z-scored on the anchors, as metricad+margin does with its two scores.
    (knn_mean, knn_std), pca = anchor_score_stats(detector), PCAReconstruction().fit(split.anchor_images)
    pca_anchors = pca.score_samples(split.anchor_images)
    scores["knn+pca"] = ((knn - knn_mean) / knn_std
                         + (pca.score_samples(split.test_images) - pca_anchors.mean()) / pca_anchors.std())
    return {"split": "test" if stand_in is None else f"val:{stand_in}", "normal": normal, "anomaly": anomaly,
            "train_seconds": round(seconds),
            **{name: round(float(roc_auc_score(y, s)), 4) for name, s in scores.items()},
            **({"curve": aucs_by_epoch} if curve else {})}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--split", default="val:5", help="val:CLASS or test")
    parser.add_argument("--normal", type=int, default=7)
    parser.add_argument("--anomaly", type=int, default=9)
    parser.add_argument("--suite", action="store_true",
                        help="every validation triple of SUITE in turn, then the mean AUC of each score")
    parser.add_argument("--set", type=_setting, action="append", metavar="KEY=VALUE", help="a TrainConfig option")
    parser.add_argument("--synthetic", choices=("none", "cutmix", "maxmix"), default="none")
    parser.add_argument("--curve", action="store_true", help="k-NN AUC after every epoch")
    parser.add_argument("--limit", type=int, help="at most this many training images per class (quick runs)")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = PRESETS["default"].with_options(dict(args.set or []))
    options = {"set": dict(args.set or []), "synthetic": args.synthetic}
    stand_in = None if args.split == "test" else int(args.split.split(":")[1])
    triples = SUITE if args.suite else ((args.normal, args.anomaly, stand_in),)
    results, data = [], load_fashion_mnist()
    for normal, anomaly, stand_in in triples:
        results.append(probe(config, data, normal, anomaly, stand_in, args.synthetic, args.curve, args.limit))
        print(json.dumps(results[-1] | options), flush=True)
    if args.suite:
        names = [name for name in results[0] if name not in ("split", "normal", "anomaly", "train_seconds", "curve")]
        print(json.dumps({"suite_mean": {name: round(float(np.mean([r[name] for r in results])), 4)
                                         for name in names}} | options))


if __name__ == "__main__":
    main()
