"""The threshold: choosing it from calibration scores, and the one rule that compares a score with it.

Higher score = more anomalous; an image is an anomaly when its score is above the threshold. Numpy only: the
torch-free bundle runtime decides with the same functions as the detector.
"""

from __future__ import annotations

import numpy as np

THRESHOLD_MODES = ("contamination", "fpr", "f1")


def is_anomalous(scores, threshold: float) -> np.ndarray:
    """True where a score is above the threshold: the decision, for the detector, the bundle and the service."""
    return np.asarray(scores) > threshold


def normalized_score(scores, threshold: float) -> np.ndarray:
    """Scores mapped monotonically to (0, 1), 0.5 at the threshold: ``1 / (1 + exp(threshold - score))``. A
    score is a mean of z-scores, so one unit is one standard deviation of normal images."""
    scores = np.asarray(scores, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(np.clip(threshold - scores, -700, 700)))


def threshold_for(scores, is_anomaly, mode: str, contamination: float = 0.01, target_fpr: float = 0.01) -> float:
    scores, is_anomaly = np.asarray(scores, dtype=np.float64), np.asarray(is_anomaly).astype(bool)
    normal = scores[~is_anomaly]
    if mode in ("contamination", "fpr"):
        rate = contamination if mode == "contamination" else target_fpr
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{'contamination' if mode == 'contamination' else 'target_fpr'} must be in [0, 1), "
                             f"got {rate}")
        if len(normal) == 0:
            raise ValueError(f"threshold mode {mode!r} needs normal calibration images, got none")
        # 'higher': at most rate * n normal scores lie strictly above the threshold.
        return float(np.quantile(normal, 1.0 - rate, method="higher"))
    if mode == "f1":
        if len(normal) == 0 or not is_anomaly.any():
            raise ValueError("threshold mode 'f1' needs labelled calibration images of both kinds (a --val-dir "
                             "with good/ and anomalous sub-folders)")
        return best_f1_threshold(scores, is_anomaly)
    raise ValueError(f"threshold mode must be one of {', '.join(THRESHOLD_MODES)}, got {mode!r}")


def best_f1_threshold(scores: np.ndarray, is_anomaly: np.ndarray) -> float:
    """The threshold of best F1, halfway between the lowest score flagged and the highest one not flagged.

    By hand rather than sklearn's ``precision_recall_curve``: its thresholds mean ``score >= t`` and sit on a
    score, where we flag ``score > t`` and want a margin on both sides.
    """
    order = np.argsort(-scores, kind="stable")
    ranked, labels = scores[order], is_anomaly[order]
    true_positives = np.cumsum(labels)  # flagging the top j+1 scores
    f1 = 2 * true_positives / (np.arange(1, len(ranked) + 1) + labels.sum())
    f1[np.r_[ranked[:-1] == ranked[1:], False]] = -1.0  # a cut cannot split tied scores
    j = int(np.argmax(f1))
    below = ranked[j + 1] if j + 1 < len(ranked) else ranked[j] - 1.0
    return float((ranked[j] + below) / 2)
