"""The image-level metrics of a scorer on labelled test images: ROC AUC, average precision, the confusion counts
at its threshold (the images that set the threshold are never these: ``metricad.evaluate.evaluation``)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def evaluate(detector, images: np.ndarray, is_anomaly: np.ndarray, scores=None) -> tuple[dict, np.ndarray]:
    """Threshold-free metrics (ROC AUC, average precision) and the confusion counts at the detector's threshold
    (``scores``: the images' scores when already computed)."""
    scores = detector.score_samples(images) if scores is None else np.asarray(scores)
    predicted = detector.predict_scores(scores).astype(bool)
    truth = np.asarray(is_anomaly).astype(bool)
    tp, fp = int(np.sum(predicted & truth)), int(np.sum(predicted & ~truth))
    fn, tn = int(np.sum(~predicted & truth)), int(np.sum(~predicted & ~truth))
    metrics = {
        "auc": float(roc_auc_score(truth, scores)),
        "average_precision": float(average_precision_score(truth, scores)),
        "n_test_normal": int(np.sum(~truth)), "n_test_anomaly": int(np.sum(truth)),
        "n_anchors": len(detector.anchor_indices_), "k": detector.k, "score": detector.score,
        "threshold": detector.offset_, "threshold_set_on": detector.threshold_set_on_,
        "at_threshold": {"tp": tp, "fp": fp, "fn": fn, "tn": tn,
                         "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
                         "f1": 2 * tp / max(2 * tp + fp + fn, 1),
                         "false_positive_rate": fp / max(fp + tn, 1)},
    }
    return metrics, scores
