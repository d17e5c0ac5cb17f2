"""The threshold: choosing it from calibration scores, and the one rule that compares a score with it.

Higher score = more anomalous; an image is an anomaly when its score is above the threshold. Numpy only: the
torch-free bundle runtime decides with the same functions as the detector.
"""

from __future__ import annotations

import numpy as np

THRESHOLD_MODES = ("contamination", "fpr", "tail", "f1")
HELD_OUT_MODES = ("contamination", "tail")  # set on held-out normal images; the others on labelled --val-dir images
TAIL_SHARE = 0.2  # the "tail" mode fits the top fifth of the normal scores (peaks over a threshold)
TAIL_MIN = 5  # ... and needs at least this many of them
# How a run's image threshold is set when nothing else is said: the 99th percentile of held-out normal scores.
DEFAULT_THRESHOLD = {"mode": "contamination", "contamination": 0.01, "target_fpr": 0.01}


def threshold_request(mode: str | None = None, contamination: float | None = None,
                      target_fpr: float | None = None) -> dict:
    """The threshold a run is asked for, ``DEFAULT_THRESHOLD`` where a value is not given, each value checked
    (a clear error naming the option, before anything is trained)."""
    given = {"mode": mode, "contamination": contamination, "target_fpr": target_fpr}
    request = DEFAULT_THRESHOLD | {key: value for key, value in given.items() if value is not None}
    if request["mode"] not in THRESHOLD_MODES:
        raise ValueError(f"threshold mode must be one of {', '.join(THRESHOLD_MODES)}, got {request['mode']!r}")
    if not 0.0 < request["contamination"] < 0.5:
        raise ValueError(f"--contamination must be in (0, 0.5), got {request['contamination']}")
    if not 0.0 <= request["target_fpr"] < 1.0:
        raise ValueError(f"--target-fpr must be in [0, 1), got {request['target_fpr']}")
    return request


def refuse_unused_options(mode: str | None, contamination: float | None, target_fpr: float | None) -> None:
    """A threshold option the mode would not use is an error naming it (the command line's options as given)."""
    mode = mode or DEFAULT_THRESHOLD["mode"]
    if contamination is not None and mode != "contamination":
        raise ValueError(f"--contamination {contamination}: threshold mode {mode!r} does not use it")
    if target_fpr is not None and mode not in ("fpr", "tail"):
        raise ValueError(f"--target-fpr {target_fpr}: threshold mode {mode!r} does not use it (fpr and tail do)")


def is_anomalous(scores, threshold: float) -> np.ndarray:
    """True where a score is above the threshold: the decision, for the detector, the bundle and the service."""
    return np.asarray(scores) > threshold


def defect_masks(scores, maps, threshold: float, pixel_threshold: float) -> np.ndarray:
    """Boolean defect masks ``(N, H, W)``: the pixels whose map value is above ``pixel_threshold`` in the images
    whose score is above ``threshold`` (a normal-looking image has no defect pixel, whatever its map)."""
    maps = np.asarray(maps)
    flagged = is_anomalous(scores, threshold).reshape((-1,) + (1,) * (maps.ndim - 1))
    return flagged & is_anomalous(maps, pixel_threshold)


class Decisions:
    """The decisions of a scorer holding ``offset_`` (and ``pixel_offset_`` for masks), from scores it computed:
    what the torch-free bundle and the tiled scorer share (the detector decides with the same functions)."""

    offset_: float
    pixel_offset_: float | None = None

    def predict_scores(self, scores) -> np.ndarray:
        return is_anomalous(scores, self.offset_).astype(np.int64)

    def predict(self, images) -> np.ndarray:
        return self.predict_scores(self.score_samples(images))

    def normalized_score(self, scores) -> np.ndarray:
        return normalized_score(scores, self.offset_)

    def predict_masks(self, scores, maps) -> np.ndarray:
        return defect_masks(scores, maps, self.offset_, self.pixel_offset_)


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
    if mode == "tail":
        return tail_threshold(normal, target_fpr)
    if mode == "f1":
        if len(normal) == 0 or not is_anomaly.any():
            raise ValueError("threshold mode 'f1' needs labelled calibration images of both kinds (a --val-dir "
                             "with good/ and anomalous sub-folders)")
        return best_f1_threshold(scores, is_anomaly)
    raise ValueError(f"threshold mode must be one of {', '.join(THRESHOLD_MODES)}, got {mode!r}")


def tail_threshold(normal, rate: float) -> float:
    """The score that a normal image exceeds with probability ``rate``, from an exponential tail fitted to the top
    ``TAIL_SHARE`` of ``normal`` scores (peaks over a threshold: the excesses over the highest score below them).
    An image score is its worst patch, a maximum of many, so its distribution lies in the Gumbel domain, whose
    excesses are exponential (a generalized Pareto tail of shape 0); fixing the shape, rather than fitting it, keeps
    the estimate steady on 50-100 held-out images (on 200 exponential scores and a 1-in-1000 target the realised
    rate is 1.2x the target, the empirical quantile's 3.8x; tests/test_thresholds.py). Below the rate of one image
    the empirical quantile can only return the highest score; a rate at or above the tail's share is that quantile.
    Closed form (the excesses' mean is the scale's maximum-likelihood estimate), numpy only."""
    normal = np.sort(np.asarray(normal, dtype=np.float64))
    if not 0.0 < rate < 1.0:
        raise ValueError(f"threshold mode 'tail' needs a target false-alarm rate in (0, 1), got {rate}")
    n_tail = int(np.floor(TAIL_SHARE * len(normal)))
    if n_tail < TAIL_MIN:
        raise ValueError(f"threshold mode 'tail' fits the top {TAIL_SHARE:.0%} of the normal scores and needs "
                         f"{TAIL_MIN} of them: {int(np.ceil(TAIL_MIN / TAIL_SHARE))} normal images or more, got "
                         f"{len(normal)}")
    share = n_tail / len(normal)
    if rate >= share:
        return float(np.quantile(normal, 1.0 - rate, method="higher"))
    start = normal[-n_tail - 1]
    scale = float(np.mean(normal[-n_tail:] - start))
    return float(start + scale * np.log(share / rate))


def calibrated(scores, is_anomaly, mode: str, contamination: float, target_fpr: float) -> tuple[float, dict]:
    """``(threshold, record)``: ``threshold_for`` the scores, and the record of how and on how many images."""
    labels = np.zeros(len(scores), np.int64) if is_anomaly is None else np.asarray(is_anomaly).astype(np.int64)
    if len(labels) != len(scores):
        raise ValueError(f"is_anomaly has {len(labels)} labels for {len(scores)} images")
    threshold = threshold_for(scores, labels, mode, contamination=contamination, target_fpr=target_fpr)
    record = {"mode": mode, "n_normal": int(np.sum(labels == 0)), "n_anomaly": int(np.sum(labels == 1))}
    record.update({"contamination": contamination} if mode == "contamination" else
                  {"target_fpr": target_fpr} if mode in ("fpr", "tail") else {})
    return threshold, record


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
