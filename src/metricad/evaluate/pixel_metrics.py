"""Where-the-defect-is metrics over all pixels of a test set: pixel ROC AUC and AUPRO, MVTec AD's (Bergmann et al.,
IJCV 2021; anomalib's ``AUPRO`` computes the same).

PRO at a threshold is the mean, over every connected defect region of every mask (4-connected, as in the MVTec
AD evaluation code), of the fraction of the region's pixels above the threshold; the false-positive rate is
taken over every defect-free pixel (of good and of defective images). AUPRO integrates PRO over the
false-positive rate from 0 to 0.3 (the curve interpolated at 0.3) and divides by 0.3, so 1 is perfect.

By hand rather than torchmetrics/anomalib (neither is a dependency, and anomalib pulls in Lightning): both curves
come from one sort of all pixel scores, exactly (every distinct score is a threshold), about 30 bytes a pixel.
"""

from __future__ import annotations

import numpy as np

FPR_LIMIT = 0.3


def pixel_curves(maps, masks) -> dict[str, np.ndarray]:
    """``{"fpr", "tpr", "pro", "thresholds"}`` at every distinct map value (descending), starting at (0, 0, 0),
    and the number of defect ``regions``; ``maps`` and ``masks`` are sequences of arrays, one pair per image."""
    from scipy import ndimage

    if len(maps) != len(masks) or not len(maps):
        raise ValueError(f"pixel metrics need one mask per map, got {len(maps)} maps and {len(masks)} masks")
    scores = np.concatenate([np.asarray(m, np.float32).ravel() for m in maps])
    truth = np.concatenate([np.asarray(k, bool).ravel() for k in masks])
    if truth.all() or not truth.any():
        raise ValueError("pixel metrics need defect pixels and defect-free pixels (masks of the defect images)")
    weights, regions = np.zeros(len(scores), np.float32), 0
    start = 0
    for mask in masks:
        labels, n = ndimage.label(np.asarray(mask, bool))
        if n:
            sizes = np.bincount(labels.ravel())
            inside = labels.ravel() > 0
            weights[start:start + labels.size][inside] = 1.0 / sizes[labels.ravel()[inside]]
        regions += n
        start += labels.size
    order = np.argsort(-scores, kind="stable")
    ranked, truth_ranked, weights = scores[order], truth[order], weights[order]
    del order
    last = np.r_[np.flatnonzero(ranked[1:] != ranked[:-1]), len(ranked) - 1]  # the last pixel of each score
    positives = np.cumsum(truth_ranked)[last]
    negatives = (last + 1) - positives
    pro = np.cumsum(weights, dtype=np.float64)[last] / regions
    return {"fpr": np.r_[0.0, negatives / (~truth).sum()], "tpr": np.r_[0.0, positives / truth.sum()],
            "pro": np.r_[0.0, pro], "thresholds": np.r_[np.inf, ranked[last]], "regions": regions}


def area_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """The trapezoid area under ``y(x)`` (``x`` non-decreasing from 0) up to ``x = limit``, ``y`` interpolated
    there."""
    keep = x <= limit
    xs, ys = x[keep], y[keep]
    if xs[-1] < limit and keep.sum() < len(x):
        following = np.argmax(~keep)
        ys = np.r_[ys, np.interp(limit, [x[following - 1], x[following]], [y[following - 1], y[following]])]
        xs = np.r_[xs, limit]
    return float(np.trapezoid(ys, xs))


def pixel_metrics(maps, masks, fpr_limit: float = FPR_LIMIT) -> tuple[dict, dict]:
    """``({"pixel_auroc", "aupro", "aupro_fpr_limit", "n_defect_regions", "n_pixels"}, curves)``."""
    curves = pixel_curves(maps, masks)
    metrics = {"pixel_auroc": float(np.trapezoid(curves["tpr"], curves["fpr"])),
               "aupro": area_to(curves["fpr"], curves["pro"], fpr_limit) / fpr_limit,
               "aupro_fpr_limit": fpr_limit, "n_defect_regions": curves["regions"],
               "n_pixels": int(sum(np.asarray(m).size for m in maps))}
    return metrics, curves


def mask_overlap(predicted, masks) -> dict:
    """Pixel precision, recall, F1 and IoU of predicted defect masks against the true ones, over all pixels."""
    tp = sum(int(np.sum(p & t)) for p, t in zip(predicted, masks))
    fp = sum(int(np.sum(p & ~t)) for p, t in zip(predicted, masks))
    fn = sum(int(np.sum(~p & t)) for p, t in zip(predicted, masks))
    return {"precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
            "f1": 2 * tp / max(2 * tp + fp + fn, 1), "iou": tp / max(tp + fp + fn, 1)}
