"""Scoring a detector on a split: AUC, the original's speed tables, and its figure."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from metricad.detector import Detector


def evaluate(detector: Detector, images: np.ndarray, is_anomaly: np.ndarray) -> tuple[dict, np.ndarray]:
    """Threshold-free metrics (ROC AUC, average precision) and the confusion counts at the detector's threshold."""
    scores = detector.score_samples(images)
    predicted = scores > detector.offset_
    truth = np.asarray(is_anomaly).astype(bool)
    tp, fp = int(np.sum(predicted & truth)), int(np.sum(predicted & ~truth))
    fn, tn = int(np.sum(~predicted & truth)), int(np.sum(~predicted & ~truth))
    metrics = {
        "auc": float(roc_auc_score(truth, scores)),
        "average_precision": float(average_precision_score(truth, scores)),
        "n_test_normal": int(np.sum(~truth)), "n_test_anomaly": int(np.sum(truth)),
        "n_anchors": int(detector.index_.ntotal), "k": detector.k, "score": detector.score,
        "threshold": detector.offset_,
        "at_threshold": {"tp": tp, "fp": fp, "fn": fn, "tn": tn,
                         "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
                         "f1": 2 * tp / max(2 * tp + fp + fn, 1),
                         "false_positive_rate": fp / max(fp + tn, 1)},
    }
    return metrics, scores


def time_scoring(detector: Detector, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, float]:
    """Score ``images`` in consecutive batches as a camera loop would; return scores and wall seconds.

    Timed per batch: preprocessing, embedding and the k-NN search. One untimed batch warms up first.
    """
    detector.score_samples(images[:batch_size])
    scores, start = [], time.perf_counter()
    for i in range(0, len(images), batch_size):
        scores.append(detector.score_samples(images[i:i + batch_size]))
    return np.concatenate(scores), time.perf_counter() - start


def benchmark(detector: Detector, images: np.ndarray, is_anomaly: np.ndarray, anchor_counts, batch_sizes,
              model_name: str, runtime: str = "torch", progress=None) -> list[dict]:
    """The original's tables: for each anchor count (the first N, as the original) and batch size, the total
    seconds to score all test images, the AUC and ms/image, k-NN included."""
    rows = []
    for batch_size in batch_sizes:
        for n in anchor_counts:
            sub = detector.subset_anchors(n_anchors=n, anchor_sampling="first")
            scores, seconds = time_scoring(sub, images, batch_size)
            rows.append({"runtime": runtime, "model": model_name, "anchors": n, "batch_size": batch_size,
                         "seconds_total": seconds, "auc": float(roc_auc_score(is_anomaly, scores)),
                         "ms_per_image": 1000.0 * seconds / len(images)})
            if progress:
                progress(rows[-1])
    return rows


def benchmark_markdown(rows: list[dict], n_images: int) -> str:
    lines = []
    groups = dict.fromkeys((r["runtime"], r["batch_size"]) for r in rows)  # first-seen order
    for runtime, batch_size in groups:
        sub = [r for r in rows if (r["runtime"], r["batch_size"]) == (runtime, batch_size)]
        lines += [f"Batch size {batch_size} ({sub[0]['model']}, {runtime} runtime):", "",
                  f"| anchors | seconds for {n_images} images | AUC | ms/image |", "|---:|---:|---:|---:|"]
        lines += [f"| {r['anchors']} | {r['seconds_total']:.2f} | {r['auc']:.4f} | {r['ms_per_image']:.3f} |"
                  for r in sub]
        lines.append("")
    return "\n".join(lines)


def plot_extremes(images: np.ndarray, is_anomaly: np.ndarray, scores: np.ndarray, path: Path,
                  per_group: int = 8) -> Path:
    """The original's figure: the anomalies least like the normal class (highest scores, top two rows) and the
    ones most like it (lowest scores, bottom two rows), each titled with its score."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    anomalies = np.flatnonzero(np.asarray(is_anomaly) == 1)
    ranked = anomalies[np.argsort(scores[anomalies])]
    chosen = list(ranked[::-1][:per_group]) + list(ranked[:per_group])
    cols = 4
    rows = (len(chosen) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2, rows * 2.2))
    for ax, i in zip(np.ravel(axes), chosen):
        ax.imshow(np.squeeze(images[i]), cmap="gray")
        ax.set_title(f"score={scores[i]:.4g}", fontsize=9)
    for ax in np.ravel(axes):
        ax.axis("off")
    fig.suptitle("Anomalies least (top) and most (bottom) like the normal class")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
