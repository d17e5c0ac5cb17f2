"""The validation suite: train a recipe on a split, keep every expert's raw scores, print the AUC of scores.

    .venv/bin/python benchmarks/recipe_probes.py --suite --set seed=0 --save runs/suite      # the default recipe
    .venv/bin/python benchmarks/recipe_probes.py --split test --normal 7 --anomaly 9 --set seed=0
    .venv/bin/python benchmarks/recipe_probes.py --rescore runs/suite/*.npz                 # no training

``--split val:C`` trains and scores on the validation split (10 % of the normal class's training images against
reference class C, both left out of training); ``--suite`` runs the five validation splits of ``SUITE`` in turn.
``--split test`` uses the real test split, for reporting only. Neither ever sees the anomaly class.

Each probe fits the detector with every expert (``PROBED``) on the trained model(s) and keeps their raw scores
on the test images and on the normal images they are normalised on (``--save DIR``: one ``.npz`` per probe). A
score is then computed from those parts exactly as the detector computes it (``metricad.scoring.combine``), so
the printed AUCs are the product's. Prints one JSON line per probe, then (with several) the means.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from metricad.data import load_fashion_mnist, make_split, validation_split
from metricad.losses import loss_entry
from metricad.recipe import PRESETS, TrainConfig, parse_setting
from metricad.scoring.combine import ZScoreMean
from metricad.scoring.spec import ScoreSpec
from metricad.train.pipeline import fit_detector, train_members

# (normal, anomaly, stand-in) triples: five pairs, each with a close stand-in from its own reference classes (a
# far one scores 1.000 for every candidate and tells nothing). Each trains without its anomaly and its stand-in.
SUITE = ((7, 9, 5), (0, 6, 2), (2, 4, 6), (5, 7, 9), (9, 5, 7))
PROBED = "knn+fmap+margin+pca"  # every expert, fitted once; any score of them is computed from their parts
SCORES = ("knn", "fmap", "margin", "pca", "knn+excess-margin", "knn+fmap", "knn+fmap+excess-margin",
          "knn+fmap+excess-margin+pca")


def probe_arrays(models, split, probed: str = PROBED) -> dict:
    """Every expert's raw scores on ``split``'s test images and on the normal images the detector normalises
    on (held-out ones, else the anchors left out of their own search)."""
    detector = fit_detector(models, split, probed)
    return {"test_parts": detector.score_parts(split.test_images)[1],
            "normal_parts": detector.normal_parts_.numpy(), "is_anomaly": split.test_is_anomaly,
            "experts": np.array(ScoreSpec.parse(probed).keys), "members": np.array(len(models))}


def score_from_parts(arrays: dict, score: str, members=None) -> np.ndarray:
    """``score`` of the probed images, computed from their saved parts as the detector computes it; ``members``
    (indices) keeps only those ensemble members."""
    experts = [str(name) for name in arrays["experts"]]
    spec = ScoreSpec.parse(score)
    kept = range(int(arrays["members"])) if members is None else members
    columns = [m * len(experts) + experts.index(key) for m in kept for key in spec.keys]
    combiner = ZScoreMean(list(spec.one_sided) * len(kept))
    combiner.fit(torch.as_tensor(arrays["normal_parts"][:, columns], dtype=torch.float32))
    with torch.no_grad():
        return combiner(torch.as_tensor(arrays["test_parts"][:, columns], dtype=torch.float32)).numpy()


def score_arrays(arrays: dict) -> dict:
    """The AUC of each of ``SCORES`` the probe can compute, with every member and, for an ensemble, with its
    first member alone (``member0:``)."""
    experts = {str(name) for name in arrays["experts"]}
    usable = [s for s in SCORES if set(ScoreSpec.parse(s).keys) <= experts]
    aucs = {s: _auc(arrays["is_anomaly"], score_from_parts(arrays, s)) for s in usable}
    if int(arrays["members"]) > 1:
        aucs |= {f"member0:{s}": _auc(arrays["is_anomaly"], score_from_parts(arrays, s, [0])) for s in usable}
    return aucs


def _auc(is_anomaly, scores) -> float:
    return round(float(roc_auc_score(is_anomaly, scores)), 4)


def probe(config: TrainConfig, data, normal: int, anomaly: int, stand_in: int | None, limit: int | None = None,
          save_dir: Path | None = None) -> dict:
    """Train ``config`` on one split of ``data`` (``load_fashion_mnist()``): the validation split against
    ``stand_in``, or the test split if None. Return each score's AUC; with ``save_dir``, save the parts."""
    split = make_split(*data, normal=normal, anomaly=anomaly, limit=limit,
                       holdout=config.holdout if stand_in is None else 0.0)
    if stand_in is not None:
        split = validation_split(split, stand_in, seed=0, holdout=config.holdout)
    start = time.perf_counter()
    models, _ = train_members(config, split, device="cpu", progress=False)
    seconds = time.perf_counter() - start
    probed = PROBED if loss_entry(config.loss).centres else PROBED.replace("+margin", "")
    arrays = probe_arrays(models, split, probed)
    name = f"{normal}-{anomaly}-{'test' if stand_in is None else f'val{stand_in}'}-seed{config.seed}"
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        np.savez(save_dir / f"{name}.npz", **arrays)
    return {"split": "test" if stand_in is None else f"val:{stand_in}", "normal": normal, "anomaly": anomaly,
            "seed": config.seed, "train_seconds": round(seconds), **score_arrays(arrays)}


def means(results: list[dict]) -> dict:
    """Each score's mean over the results, for the scores every result has."""
    names = [name for name, value in results[0].items()
             if isinstance(value, float) and all(name in r for r in results)]
    return {name: round(float(np.mean([r[name] for r in results])), 4) for name in names}


def rescore(paths) -> list[dict]:
    results = []
    for path in paths:
        with np.load(path) as saved:
            results.append({"file": Path(path).name, **score_arrays(dict(saved))})
        print(json.dumps(results[-1]))
    if len(results) > 1:
        print(json.dumps({"mean": means(results)}))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="val:5", help="val:CLASS or test")
    parser.add_argument("--normal", type=int, default=7)
    parser.add_argument("--anomaly", type=int, default=9)
    parser.add_argument("--suite", action="store_true", help="every validation triple of SUITE, then the means")
    parser.add_argument("--set", type=parse_setting, action="append", metavar="KEY=VALUE", help="a TrainConfig option")
    parser.add_argument("--limit", type=int, help="at most this many training images per class (quick runs)")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--save", type=Path, metavar="DIR", help="save each probe's expert scores here (.npz)")
    parser.add_argument("--rescore", nargs="+", metavar="NPZ", help="score saved probes again; no training")
    args = parser.parse_args()
    if args.rescore:
        rescore(args.rescore)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    config = PRESETS["default"].with_options(dict(args.set or []))
    stand_in = None if args.split == "test" else int(args.split.split(":")[1])
    triples = SUITE if args.suite else ((args.normal, args.anomaly, stand_in),)
    results, data = [], load_fashion_mnist()
    for normal, anomaly, stand_in in triples:
        results.append(probe(config, data, normal, anomaly, stand_in, args.limit, args.save))
        print(json.dumps(results[-1] | {"set": dict(args.set or [])}), flush=True)
    if len(results) > 1:
        print(json.dumps({"suite_mean": means(results), "set": dict(args.set or [])}))


if __name__ == "__main__":
    main()
