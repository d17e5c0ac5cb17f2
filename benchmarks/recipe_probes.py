"""Probes for choosing the default recipe: train one configuration, print its AUC under several scores.

    .venv/bin/python benchmarks/recipe_probes.py --split val:5 --set epochs=10 --set lr_schedule=onecycle
    .venv/bin/python benchmarks/recipe_probes.py --split test --synthetic cutmix

``--split val:C`` trains and scores on the validation split (10 % of the training images of the normal class
against reference class C, both left out of training): that is the split settings are chosen on. ``--split
test`` uses the real test split, for reporting only. ``--suite`` runs every validation split the default recipe
is chosen on (``SUITE``: five (normal, anomaly) pairs, each with a close stand-in) and prints the mean AUC of
each score. ``--curve`` adds the k-NN AUC after every epoch.

Scores printed (higher = more anomalous for each; see ``score_arrays``): ``cos`` (1-NN on the unit-length
embeddings: ``metricad-knn``), ``cos5`` (mean over 5), ``raw`` (1-NN on the embeddings before normalisation,
length included), ``margin`` (CosFace: the best other class's cosine minus the normal class's), sums of z-scored
scores (``raw+cos``, ``cos+margin``, ``cos5+margin``, ``raw+margin``, ``raw+cos+margin``, ``cos+pca`` with
``pca`` the raw-pixel PCA reconstruction error), ``cos+excess-margin`` (the default's score: the z-scored
margin added only where it is positive), scores on the last feature map (``feature_map``: 1-NN on it
flattened; ``patch``: per position; their sums with ``cos`` and the margin's excess: see
``_feature_map_scores``) and, for a recipe with shifted negatives, scores through their views (``rotcos``,
``jointcos``, ``rotmargin`` and their sums: see ``_view_scores``). Both families were tried for the default and
not adopted (BENCHMARKS.md section 2d). ``--save DIR`` keeps each probe's embeddings and feature maps, so that
``--rescore DIR/*.npz`` prints the scores again without training.

``--synthetic cutmix|maxmix`` adds, as one extra class, as many synthetic anomalies as there are normal images:
a normal image with a random box (4 px to half the image per side) replaced by (cutmix) or maxed with (maxmix)
the same box of a random reference image.
Prints one JSON line per split.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from metricad import Detector
from metricad.baselines import PCAReconstruction
from metricad.class_margin import ClassMargin, class_centres
from metricad.cli import _setting
from metricad.data import load_fashion_mnist, make_split, validation_split
from metricad.data.negatives import SHIFTS, negative_label
from metricad.index import ExactIndex
from metricad.preprocessing import to_model_input
from metricad.scores import excess
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
          curve: bool = False, limit: int | None = None, save_dir: Path | None = None) -> dict:
    """Train ``config`` on one split of ``data`` (``load_fashion_mnist()``): the validation split against
    ``stand_in``, or the test split if None. Return each score's AUC. With ``save_dir``, the embeddings and
    everything else the scores need are saved there (``--rescore`` scores them again without training)."""
    split = make_split(*data, normal=normal, anomaly=anomaly, limit=limit)
    if stand_in is not None:
        split = validation_split(split, stand_in, seed=0)
    labels, normal_label = split.training_labels(config.labels), split.normal_label(config.labels)
    images = split.train_images
    if synthetic != "none":
        extra = synthetic_anomalies(split, synthetic, np.random.default_rng(config.seed))
        images, labels = np.concatenate([images, extra]), np.r_[labels, np.full(len(extra), labels.max() + 1)]
    aucs_by_epoch = []

    def follow(record, model):
        detector = Detector(model, device="cpu").fit(split.anchor_images)
        aucs_by_epoch.append(_auc(split.test_is_anomaly, detector.score_samples(split.test_images)))

    start = time.perf_counter()
    model, _, criterion = train_embedding(config, images, labels, device="cpu", progress=False, return_loss=True,
                                          normal_label=normal_label, on_epoch_end=follow if curve else None)
    seconds = time.perf_counter() - start

    # Everything below is scored from the embeddings before any normalisation (length included).
    model.normalize = False  # read at every forward pass
    raw = Detector(model, device="cpu").fit(split.anchor_images)
    pca = PCAReconstruction().fit(split.anchor_images)
    centres = class_centres(criterion)
    arrays = {"raw_anchors": raw.anchor_embeddings_.numpy(), "raw_test": raw.embed(split.test_images).numpy(),
              "is_anomaly": split.test_is_anomaly, "normal_label": np.array(normal_label),
              "pca_anchors": pca.score_samples(split.anchor_images), "pca_test": pca.score_samples(split.test_images),
              **({"centres": centres.detach().numpy()} if centres is not None else {})}
    # Each shifted negative's view: the anchors and test images so transformed, and the class it trained as.
    for i, view in enumerate(config.negatives):
        for key, x in (("anchors", split.anchor_images), ("test", split.test_images)):
            arrays[f"view{i}_{key}"] = raw.embed(SHIFTS[view](to_model_input(x))).numpy()
        arrays[f"view{i}_label"] = np.array(negative_label(labels, i))
    with torch.no_grad():  # the last feature map, (N, C, H, W), for the feature-map scores
        for key, x in (("anchors", split.anchor_images), ("test", split.test_images)):
            arrays[f"fmap_{key}"] = model.forward_features(to_model_input(x)).numpy()
    name = f"{normal}-{anomaly}-{'test' if stand_in is None else f'val{stand_in}'}-seed{config.seed}"
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        np.savez(save_dir / f"{name}.npz", **arrays)
    aucs = score_arrays(arrays)
    return {"split": "test" if stand_in is None else f"val:{stand_in}", "normal": normal, "anomaly": anomaly,
            "seed": config.seed, "train_seconds": round(seconds), **aucs,
            **({"curve": aucs_by_epoch} if curve else {})}


def _auc(is_anomaly, scores) -> float:
    return round(float(roc_auc_score(is_anomaly, scores)), 4)


def _zscored(anchor_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    return (scores - anchor_scores.mean()) / (anchor_scores.std() or 1.0)


def _knn(anchors: torch.Tensor, queries: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k-NN distances of the queries, and the anchors' own leave-one-out ones (to z-score against)."""
    index = ExactIndex()
    index.add(anchors)
    return index.search(queries, k)[0].mean(1).numpy(), index.search(anchors, k + 1)[0][:, 1:].mean(1).numpy()


def score_arrays(arrays: dict) -> dict:
    """Each score's AUC from one probe's embeddings (higher score = more anomalous for each).

    ``cos``/``cos5``: 1-NN / mean of 5-NN on unit-length embeddings (``cos`` is the k-NN part of the default's
    ``cos+margin``); ``raw``: 1-NN on the embeddings as the network outputs them, length included; ``margin``:
    ``ClassMargin`` of the CosFace centres; ``a+b``: sums of the named scores, each z-scored on the anchors (k-NN
    scores leave-one-out, as the detector's ``knn+margin`` score); ``cos+excess-margin``: the margin's z-score
    only where positive (the detector's ``knn+excess-margin``); ``pca``: raw-pixel PCA reconstruction error.
    """
    raw = {key: torch.as_tensor(arrays[f"raw_{key}"]) for key in ("anchors", "test")}
    unit = {key: torch.nn.functional.normalize(value, dim=1) for key, value in raw.items()}
    z = {}
    for name, embeddings, k in (("cos", unit, 1), ("cos5", unit, 5), ("raw", raw, 1)):
        test, anchors = _knn(embeddings["anchors"], embeddings["test"], k)
        z[name] = _zscored(anchors, test)
    z["pca"] = _zscored(arrays["pca_anchors"], arrays["pca_test"])
    if "centres" in arrays:
        margin = ClassMargin(torch.as_tensor(arrays["centres"]), int(arrays["normal_label"]))
        z["margin"] = _zscored(margin(unit["anchors"]).numpy(), margin(unit["test"]).numpy())
    combos = ["raw+cos", "cos+pca", "cos+margin", "cos5+margin", "raw+margin", "raw+cos+margin"]
    scores = dict(z)
    for combo in combos:
        parts = combo.split("+")
        if all(part in z for part in parts):
            scores[combo] = sum(z[part] for part in parts)
    if "fmap_anchors" in arrays:
        map_scores = _feature_map_scores(arrays)
        z.update(map_scores)
        scores.update(map_scores)
        for combo in ("cos+feature_map", "cos+patch"):
            scores[combo] = sum(z[part] for part in combo.split("+"))
    if "margin" in z:
        for base in ("cos", "feature_map", "patch", "cos+feature_map", "cos+patch"):
            if base in scores:
                scores[f"{base}+excess-margin"] = scores[base] + excess(z["margin"])
    views = sorted(key[:-len("_label")] for key in arrays if key.startswith("view") and key.endswith("_label"))
    if views and "centres" in arrays:
        scores.update(_view_scores(arrays, views, z))
    del scores["pca"]  # a baseline of its own (compare's ``pca``), here only as a part of ``cos+pca``
    # A z-score is a monotone map of its score: each AUC is that of the score itself.
    return {name: _auc(arrays["is_anomaly"], s) for name, s in scores.items()}


def _feature_map_scores(arrays: dict) -> dict:
    """z-scored scores on the last feature map ``(N, C, H, W)``: ``feature_map``, the 1-NN distance on the
    flattened map (one anchor must match everywhere); ``patch``, each position's 1-NN distance among the anchors'
    same position (each position its own nearest anchor, as PatchCore's memory bank but position-aligned), the
    image's score the largest over positions."""
    anchors, test = (torch.as_tensor(arrays[f"fmap_{key}"]) for key in ("anchors", "test"))
    test_d, anchor_d = _knn(anchors.flatten(1), test.flatten(1), 1)
    by_position = lambda t: t.flatten(2).permute(2, 0, 1)  # (positions, N, C)
    per_position = [_knn(a, t, 1) for a, t in zip(by_position(anchors), by_position(test))]
    patch_test, patch_anchors = (np.max([d[i] for d in per_position], axis=0) for i in (0, 1))
    return {"feature_map": _zscored(anchor_d, test_d), "patch": _zscored(patch_anchors, patch_test)}


def _view_scores(arrays: dict, views: list[str], z: dict) -> dict:
    """Scores over the shifted-negative views (after GEOM, Golan & El-Yaniv 2018): each view ``T`` of an image
    should look like class ``T`` of the normal images. ``rotmargin``: the sum over views (the identity included)
    of the margin of ``T(x)`` against its own class; ``rotcos``: the sum of each view's z-scored unit-length 1-NN
    distance to the anchors' same view (each view its own nearest anchor); ``jointcos``: 1-NN on all views'
    embeddings side by side (one anchor for every view); sums with a margin use the default's excess rule."""
    unit = lambda key: torch.nn.functional.normalize(torch.as_tensor(arrays[key]), dim=1)
    parts = [("raw_anchors", "raw_test", int(arrays["normal_label"]))]
    parts += [(f"{v}_anchors", f"{v}_test", int(arrays[f"{v}_label"])) for v in views]
    margin_sum, cos_sum = [0.0, 0.0], [0.0, 0.0]  # (anchors, test)
    for anchors_key, test_key, label in parts:
        margin = ClassMargin(torch.as_tensor(arrays["centres"]), label)
        anchors, test = unit(anchors_key), unit(test_key)
        margin_sum = [margin_sum[0] + margin(anchors).numpy(), margin_sum[1] + margin(test).numpy()]
        test_d, anchor_d = _knn(anchors, test, 1)
        cos_sum = [cos_sum[0] + _zscored(anchor_d, anchor_d), cos_sum[1] + _zscored(anchor_d, test_d)]
    rotmargin, rotcos = _zscored(*margin_sum), _zscored(*cos_sum)
    # One nearest anchor for all views at once: 1-NN on the views' unit-length embeddings side by side.
    joint = [torch.cat([unit(part[i]) for part in parts], 1) for i in (0, 1)]  # (anchors, test)
    jointcos = _zscored(*_knn(*joint, 1)[::-1])
    return {"rotmargin": rotmargin, "rotcos": rotcos, "jointcos": jointcos,
            "jointcos+excess-margin": jointcos + excess(z["margin"]), "cos+rotmargin": z["cos"] + rotmargin,
            "cos+excess-rotmargin": z["cos"] + excess(rotmargin),
            "rotcos+excess-margin": rotcos + excess(z["margin"]),
            "rotcos+excess-rotmargin": rotcos + excess(rotmargin)}


def rescore(paths) -> None:
    """Print each saved probe's AUCs (``--save``), and their means when there are several."""
    results = []
    for path in paths:
        with np.load(path) as saved:
            results.append({"file": Path(path).name, **score_arrays(dict(saved))})
        print(json.dumps(results[-1]))
    if len(results) > 1:
        print(json.dumps({"mean": _means(results)}))


def _means(results: list[dict]) -> dict:
    """Each score's mean over the results, for the scores every result has (probes saved before the view
    scores existed have none)."""
    names = [name for name, value in results[0].items()
             if isinstance(value, float) and all(name in r for r in results)]
    return {name: round(float(np.mean([r[name] for r in results])), 4) for name in names}


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
    parser.add_argument("--save", type=Path, metavar="DIR", help="save each probe's embeddings here (one .npz)")
    parser.add_argument("--rescore", nargs="+", metavar="NPZ", help="score saved probes again; no training")
    args = parser.parse_args()
    if args.rescore:
        return rescore(args.rescore)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = PRESETS["default"].with_options(dict(args.set or []))
    options = {"set": dict(args.set or []), "synthetic": args.synthetic}
    stand_in = None if args.split == "test" else int(args.split.split(":")[1])
    triples = SUITE if args.suite else ((args.normal, args.anomaly, stand_in),)
    results, data = [], load_fashion_mnist()
    for normal, anomaly, stand_in in triples:
        results.append(probe(config, data, normal, anomaly, stand_in, args.synthetic, args.curve, args.limit,
                             args.save))
        print(json.dumps(results[-1] | options), flush=True)
    if args.suite:
        print(json.dumps({"suite_mean": _means(results)} | options))


if __name__ == "__main__":
    main()
