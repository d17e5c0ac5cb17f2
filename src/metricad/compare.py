"""Every method on the same split, the same backbone and training budget, the same k-NN scoring: one table.

Methods: ``raw-pixels``, ``pca``, ``iforest`` (no deep training), ``doc`` (Perera & Patel; also reported as
``doc-lof``, scored by LOF as the cited Keras version did), ``binary`` (a normal-vs-reference classifier; scored
by k-NN on its features, and as ``binary-prob`` by its probability), ``seed`` (the original triplet
configuration: seed loss, binary labels) and ``metricad`` (the default recipe; also reported as
``metricad+margin``, its k-NN distance plus its CosFace class margin).
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
from metricad.data import AnomalySplit
from metricad.detector import Detector
from metricad.training import PRESETS, TrainConfig, train_embedding

METHODS = ("raw-pixels", "pca", "iforest", "doc", "binary", "seed", "metricad")
# The baselines train as their papers define them: on the normal and reference images alone, without the
# shifted negatives (rotated normal images as extra classes) that are part of metricad's own recipe.
_TRAINED = {"metricad": {}, "seed": {"loss": "seed", "labels": "binary", "negatives": []},
            "doc": {"loss": "doc", "labels": "fine", "negatives": []},
            "binary": {"loss": "binary", "labels": "fine", "negatives": []}}
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


class MarginScorer:
    """k-NN distance plus the CosFace class margin, each z-scored on the anchors (reported as ``metricad+margin``).

    The margin is the best reference class's cosine minus the normal class's, to the loss's learned class centres:
    the classifier's view, strong where the anomaly resembles a reference class. The k-NN distance is the
    anchors' view, strong where the anomaly is new to every class. A probe, not the default: see BENCHMARKS.md.
    """

    def __init__(self, detector: Detector, centres: torch.Tensor, normal_label: int):
        self.detector, self.normal_label = detector, normal_label
        self.centres = torch.nn.functional.normalize(centres.detach().to(detector.device_), dim=0)  # dim x classes
        self.knn_stats = anchor_score_stats(detector)
        self.margin_stats = _mean_std(self.margin(detector.anchor_embeddings_))

    def margin(self, embeddings: torch.Tensor) -> np.ndarray:
        """Best reference class's cosine minus the normal class's: higher = less like the normal class."""
        cosines = torch.nn.functional.normalize(embeddings, dim=1) @ self.centres
        others = torch.cat([cosines[:, :self.normal_label], cosines[:, self.normal_label + 1:]], 1)
        return (others.max(1).values - cosines[:, self.normal_label]).cpu().numpy()

    def score_samples(self, images) -> np.ndarray:
        embeddings = self.detector.embed(images)
        (knn_mean, knn_std), (margin_mean, margin_std) = self.knn_stats, self.margin_stats
        return ((self.detector.score_embeddings(embeddings) - knn_mean) / knn_std
                + (self.margin(embeddings) - margin_mean) / margin_std)


def anchor_score_stats(detector: Detector) -> tuple[float, float]:
    """Mean and std of the anchors' own k-NN scores, leave-one-out (each anchor's zero distance to itself dropped):
    what a z-score of the detector's score is taken against."""
    distances, _ = detector.index_.search(detector.anchor_embeddings_, detector.k + 1)
    return _mean_std(distances[:, 1:].mean(1).cpu().numpy())


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std()) or 1.0


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
        model, _, head = train_embedding(config, split.train_images, split.training_labels(config.labels),
                                         device=device, progress=False, return_loss=True,
                                         normal_label=split.normal_label(config.labels))
        detector = Detector(model, device=device).fit(split.anchor_images)
        scorers = {method: detector}
        if method == "binary":
            scorers["binary-prob"] = ProbabilityScorer(detector, head)
        if method == "doc":
            scorers["doc-lof"] = LOFScorer(detector)
        centres = getattr(getattr(head, "loss", None), "W", None)  # CosFace / ArcFace class centres
        if method == "metricad" and centres is not None:
            scorers["metricad+margin"] = MarginScorer(detector, centres, split.normal_label(config.labels))
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
