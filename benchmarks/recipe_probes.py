"""Probes for choosing the default recipe: train one configuration, print its AUC under several scores.

    .venv/bin/python benchmarks/recipe_probes.py --split val:5 --set epochs=10 --set lr_schedule=onecycle
    .venv/bin/python benchmarks/recipe_probes.py --split test --synthetic cutmix

``--split val:C`` trains and scores on the validation split (10 % of the training images of the normal class
against reference class C, both left out of training): that is the split settings are chosen on. ``--split
test`` uses the real test split, for reporting only. ``--curve`` adds the k-NN AUC after every epoch.

Scores printed (higher = more anomalous for each): ``knn`` (the default: distance to the nearest anchor),
``knn5`` (mean over 5), ``feature_map`` (1-NN on the flattened last feature map), ``margin`` (CosFace: the best
other class's cosine minus the normal class's), ``knn+margin`` and ``knn+pca`` (sums of scores z-scored on the
anchors; ``pca`` = raw-pixel PCA reconstruction error). ``--synthetic cutmix|maxmix`` adds, as one extra class,
as many synthetic anomalies as there are normal images: a normal image with a random box (4 px to half the
image per side) replaced by (cutmix) or maxed with (maxmix) the same box of a random reference image.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

from metricad.cli import _setting
from metricad.data import load_fashion_mnist, make_split, validation_split
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


def nearest(anchors: torch.Tensor, queries: torch.Tensor, k: int = 1, leave_one_out: bool = False) -> np.ndarray:
    distances = torch.cdist(queries, anchors)
    if leave_one_out:
        distances.fill_diagonal_(float("inf"))
    return distances.topk(k, largest=False).values.mean(1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--split", default="val:5", help="val:CLASS or test")
    parser.add_argument("--normal", type=int, default=7)
    parser.add_argument("--anomaly", type=int, default=9)
    parser.add_argument("--set", type=_setting, action="append", metavar="KEY=VALUE", help="a TrainConfig option")
    parser.add_argument("--synthetic", choices=("none", "cutmix", "maxmix"), default="none")
    parser.add_argument("--curve", action="store_true", help="k-NN AUC after every epoch")
    parser.add_argument("--limit", type=int, help="at most this many training images per class (quick runs)")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig.from_dict(PRESETS["default"].to_dict() | dict(args.set or []))

    split = make_split(*load_fashion_mnist(), normal=args.normal, anomaly=args.anomaly, limit=args.limit)
    if args.split != "test":
        split = validation_split(split, int(args.split.split(":")[1]), seed=0)
    labels, normal_label = split.training_labels(config.labels), split.normal_label(config.labels)
    images = split.train_images
    if args.synthetic != "none":
        extra = synthetic_anomalies(split, args.synthetic, np.random.default_rng(config.seed))
        images, labels = np.concatenate([images, extra]), np.r_[labels, np.full(len(extra), labels.max() + 1)]
    anchors, queries, y = to_model_input(split.anchor_images), to_model_input(split.test_images), split.test_is_anomaly

    curve = []

    def follow(record, model):
        curve.append(round(roc_auc_score(y, nearest(model(anchors), model(queries))), 4))

    start = time.perf_counter()
    model, _, criterion = train_embedding(config, images, labels, device="cpu", progress=False, return_loss=True,
                                          normal_label=normal_label, on_epoch_end=follow if args.curve else None)
    seconds = time.perf_counter() - start

    def z(scores, reference):  # z-score on the anchors, so that two scores can be added
        return (scores - reference.mean()) / reference.std()

    with torch.no_grad():
        maps_a, maps_q = model.forward_features(anchors), model.forward_features(queries)
        emb_a, emb_q = model.forward_head(maps_a), model.forward_head(maps_q)
        knn, knn_anchors = nearest(emb_a, emb_q), nearest(emb_a, emb_a, leave_one_out=True)
        scores = {"knn": knn, "knn5": nearest(emb_a, emb_q, 5), "feature_map": nearest(maps_a.flatten(1), maps_q.flatten(1))}
        centres = getattr(getattr(criterion, "loss", None), "W", None)
        if centres is not None:  # CosFace / ArcFace class centres, one column per class
            def margin(embeddings):
                cosines = F.normalize(embeddings, dim=1) @ F.normalize(centres, dim=0)
                others = torch.cat([cosines[:, :normal_label], cosines[:, normal_label + 1:]], 1)
                return (others.max(1).values - cosines[:, normal_label]).numpy()
            scores["margin"] = margin(emb_q)
            scores["knn+margin"] = z(knn, knn_anchors) + z(scores["margin"], margin(emb_a))
    pixels_a = split.anchor_images.reshape(len(split.anchor_images), -1) / 255.0
    pixels_q = split.test_images.reshape(len(split.test_images), -1) / 255.0
    pca = PCA(0.99, random_state=0).fit(pixels_a)

    def reconstruction_error(x):
        return ((x - pca.inverse_transform(pca.transform(x))) ** 2).sum(1)

    scores["knn+pca"] = z(knn, knn_anchors) + z(reconstruction_error(pixels_q), reconstruction_error(pixels_a))
    print(json.dumps({"split": args.split, "normal": args.normal, "set": dict(args.set or []),
                      "synthetic": args.synthetic, "train_seconds": round(seconds),
                      **{name: round(float(roc_auc_score(y, s)), 4) for name, s in scores.items()},
                      **({"curve": curve} if args.curve else {})}))


if __name__ == "__main__":
    main()
