"""Every method on the same split, the same backbone and training budget, the same k-NN scoring: one table.

Methods: ``raw-pixels``, ``pca``, ``iforest`` (no deep training), ``doc`` (Perera & Patel; also reported as
``doc-lof``, scored by LOF as the cited Keras version did), ``binary`` (a normal-vs-reference classifier; scored
by k-NN on its features, and as ``binary-prob`` by its probability), ``seed`` (the original triplet
configuration: seed loss, binary labels) and ``metricad`` (the default recipe: k-NN distance plus the CosFace class
margin's excess; also reported as ``metricad-knn``, the same model scored by the k-NN distance alone, and
``metricad+margin``, scored with the whole margin).
The trained methods share everything in the default recipe (backbone, epochs, schedule, augmentation) but the
loss, the labels and metricad's shifted negatives.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from metricad.baselines import BASELINES
from metricad.class_margin import ClassMargin
from metricad.data import AnomalySplit
from metricad.detector import Detector
from metricad.scores import MARGIN_SCORES
from metricad.training import PRESETS, TrainConfig, train_embedding

METHODS = ("raw-pixels", "pca", "iforest", "doc", "binary", "seed", "metricad")
# The baselines train as their papers define them: on the normal and reference images alone, without the
# shifted negatives (rotated normal images as extra classes) that are part of metricad's own recipe.
# They are scored by the k-NN distance alone ("the same k-NN scoring"), as metricad-knn is.
_TRAINED = {"metricad": {}, "seed": {"loss": "seed", "labels": "binary", "negatives": [], "score": "knn"},
            "doc": {"loss": "doc", "labels": "fine", "negatives": [], "score": "knn"},
            "binary": {"loss": "binary", "labels": "fine", "negatives": [], "score": "knn"}}
TIMING_IMAGES = 200  # ms/image is measured on this many test images (enough for a median-free mean)


def method_config(method: str, base: TrainConfig | None = None) -> TrainConfig:
    base = base or PRESETS["default"]
    if method == "metricad":
        return base
    # The baselines keep raw (not unit-length) features: the unit length suits metricad's angular CosFace loss,
    # while DOC's compactness and the classifiers' linear heads are defined on the raw features.
    kwargs = {k: v for k, v in base.model_kwargs.items() if k != "normalize"}
    return replace(base, model_kwargs=kwargs, **_TRAINED[method])


class ProbabilityScorer:
    """The binary classifier's own score: its probability that an image is not normal."""

    def __init__(self, detector: Detector, head):
        self.detector, self.head = detector, head

    def score_samples(self, images) -> np.ndarray:
        embeddings = self.detector.embed(images)
        return self.head.anomaly_probability(embeddings.to(next(self.head.parameters()).device)).cpu().numpy()


class LOFScorer:
    """How the cited Keras DOC scored: Local Outlier Factor (k=5) on min-max scaled features of the normal images."""

    def __init__(self, detector: Detector, n_neighbors: int = 5):
        from sklearn.neighbors import LocalOutlierFactor
        from sklearn.preprocessing import MinMaxScaler

        self.detector = detector
        features = detector.anchor_embeddings_.cpu().numpy()
        self.scaler = MinMaxScaler().fit(features)
        self.lof = LocalOutlierFactor(n_neighbors=n_neighbors, novelty=True).fit(self.scaler.transform(features))

    def score_samples(self, images) -> np.ndarray:
        features = self.scaler.transform(self.detector.embed(images).cpu().numpy())
        return -self.lof.score_samples(features)  # sklearn: higher = more normal


def _ms_per_image(scorer, images: np.ndarray, batch_size: int) -> float:
    scorer.score_samples(images[:batch_size])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        scorer.score_samples(images[i:i + batch_size])
    return 1000 * (time.perf_counter() - start) / len(images)


def fit_method(method: str, split: AnomalySplit, seed: int, base: TrainConfig | None = None, device=None) -> dict:
    """Fit one method; return ``{name: scorer}`` (``binary``, ``doc`` and ``metricad`` yield two) and the training
    seconds."""
    start = time.perf_counter()
    if method in BASELINES:
        scorers = {method: BASELINES[method](seed=seed).fit(split.anchor_images)}
    elif method in _TRAINED:
        config = replace(method_config(method, base), seed=seed)
        normal_label = split.normal_label(config.labels)
        model, _, head = train_embedding(config, split.train_images, split.training_labels(config.labels),
                                         device=device, progress=False, return_loss=True, normal_label=normal_label)
        margin = ClassMargin.from_loss(head, normal_label) if config.score in MARGIN_SCORES else None
        detector = Detector(model, device=device, score=config.score).fit(split.anchor_images, margin)
        scorers = {method: detector}
        if method == "binary":
            scorers["binary-prob"] = ProbabilityScorer(detector, head)
        if method == "doc":
            scorers["doc-lof"] = LOFScorer(detector)
        if margin is not None:  # the default's parts, from the same model and anchors
            scorers[f"{method}-knn"] = detector.with_score("knn")
            if config.score == "knn+excess-margin":
                scorers[f"{method}+margin"] = detector.with_score("knn+margin")
    else:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    return {"scorers": scorers, "train_seconds": time.perf_counter() - start}


def compare(split: AnomalySplit, methods, seeds, base: TrainConfig | None = None, device=None,
            progress=None, reuse: dict | None = None) -> list[dict]:
    """One row per (method, seed): AUC, training seconds, ms/image at batch 1 and 20. ``reuse`` (from
    ``reusable_rows``) holds rows measured before with the same configuration: those methods are not refitted."""
    rows = []
    timing_images = split.test_images[:TIMING_IMAGES]
    for seed in seeds:
        for method in methods:
            earlier = (reuse or {}).get((split.normal_class, split.anomaly_class, method, seed))
            if earlier:
                for row in earlier:
                    rows.append(row)
                    if progress:
                        progress(row)
                continue
            torch.manual_seed(seed)
            fitted = fit_method(method, split, seed, base, device)
            for name, scorer in fitted["scorers"].items():
                scores = scorer.score_samples(split.test_images)
                rows.append({"method": name, "fit": method, "seed": seed, "normal": split.normal_class,
                             "anomaly": split.anomaly_class, "auc": float(roc_auc_score(split.test_is_anomaly, scores)),
                             "train_seconds": fitted["train_seconds"],
                             "ms_per_image_batch1": _ms_per_image(scorer, timing_images, 1),
                             "ms_per_image_batch20": _ms_per_image(scorer, timing_images, 20)})
                if progress:
                    progress(rows[-1])
    return rows


def reusable_rows(previous: dict, source: str, base: TrainConfig, split_kind, limit) -> dict:
    """The rows of an earlier ``compare.json`` (``previous``, read from ``source``) that this comparison would
    measure again: same split kind (``"test"`` or the validation stand-ins) and ``limit``, and for trained
    methods the same training configuration but the seed. Keyed ``(normal, anomaly, method, seed)``."""
    for key, wanted in (("split", split_kind), ("limit", limit)):
        if key not in previous:
            raise ValueError(f"{source} does not record its {key!r}: it was written by an older metricad and "
                             "cannot be reused")
        if previous[key] != wanted:
            raise ValueError(f"{source} was measured with {key} {previous[key]!r}, this comparison uses {wanted!r}")
    earlier_base = TrainConfig.from_dict(previous["training"])
    changed = {method for method in _TRAINED if replace(method_config(method, earlier_base), seed=0)
               != replace(method_config(method, base), seed=0)}
    reusable = {}
    for row in (r for p in previous.get("pairs", [previous]) for r in p["rows"]):
        if row["fit"] not in changed:
            reusable.setdefault((row["normal"], row["anomaly"], row["fit"], row["seed"]), []).append(
                row | {"reused_from": row.get("reused_from", source)})
    return reusable


def summarize(rows: list[dict]) -> list[dict]:
    summary = []
    for method in dict.fromkeys(r["method"] for r in rows):
        sub = [r for r in rows if r["method"] == method]
        aucs = [r["auc"] for r in sub]
        sources = sorted({r["reused_from"] for r in sub if "reused_from" in r})
        summary.append({"method": method, "seeds": len(sub), "auc_mean": statistics.mean(aucs),
                        "auc_std": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
                        "train_seconds": statistics.mean(r["train_seconds"] for r in sub),
                        "ms_per_image_batch1": statistics.median(r["ms_per_image_batch1"] for r in sub),
                        "ms_per_image_batch20": statistics.median(r["ms_per_image_batch20"] for r in sub),
                        **({"reused_from": sources} if sources else {})})
    return summary


def summary_markdown(summary: list[dict], title: str) -> str:
    lines = [f"{title}", "", "| method | AUC mean ± std | seeds | training s | ms/image b1 | ms/image b20 |",
             "|---|---:|---:|---:|---:|---:|"]
    for s in sorted(summary, key=lambda s: -s["auc_mean"]):
        lines.append(f"| {s['method']} | {s['auc_mean']:.4f} ± {s['auc_std']:.4f} | {s['seeds']} | "
                     f"{s['train_seconds']:.1f} | {s['ms_per_image_batch1']:.3f} | {s['ms_per_image_batch20']:.3f} |")
    reused = [f"{s['method']} ({', '.join(s['reused_from'])})" for s in summary if s.get("reused_from")]
    if reused:
        lines += ["", "Rows reused from earlier runs of the same configuration: " + "; ".join(reused) + "."]
    return "\n".join(lines) + "\n"
