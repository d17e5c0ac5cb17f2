"""Where-the-defect-is metrics over all pixels of a test set: pixel ROC AUC and AUPRO, MVTec AD's (Bergmann et al.,
IJCV 2021; anomalib's ``AUPRO`` computes the same).

PRO at a threshold is the mean, over every connected defect region of every mask (4-connected, as in the MVTec
AD evaluation code), of the fraction of the region's pixels above the threshold; the false-positive rate is
taken over every defect-free pixel (of good and of defective images). AUPRO integrates PRO over the
false-positive rate from 0 to 0.3 (the curve interpolated at 0.3) and divides by 0.3, so 1 is perfect.

By hand rather than torchmetrics/anomalib (neither is a dependency, and anomalib pulls in Lightning). PRO is a
weighted count: each defect pixel weighs 1 / (its region's area x the number of regions), so one pass over the
pixels gives it, like the ROC's counts. Up to ``EXACT_PIXELS`` pixels both curves come from one sort of all pixel
scores, exactly (every distinct score a threshold; about 30 bytes a pixel); above, from histograms over
``BINS`` thresholds at quantiles of the scores (memory independent of the pixel count; off by about 1e-4,
tests/evaluate/test_pixel_metrics.py).
"""

from __future__ import annotations

import numpy as np

FPR_LIMIT = 0.3
EXACT_PIXELS = 1 << 25  # 33 M pixels: e.g. 370 images of 300x300; an MVTec AD category at 1024x1024 is binned
BINS = 1 << 16


def _region_weights(mask) -> tuple[np.ndarray, int]:
    """Each pixel's weight in PRO before dividing by the number of regions: 1 / its region's area (0 outside),
    flattened; and the mask's number of 4-connected regions."""
    from scipy import ndimage

    labels, n = ndimage.label(np.asarray(mask, bool))
    weights = np.zeros(labels.size, np.float32)
    if n:
        flat = labels.ravel()
        weights[flat > 0] = 1.0 / np.bincount(flat)[flat[flat > 0]]
    return weights, n


def _check(maps, masks) -> int:
    if len(maps) != len(masks) or not len(maps):
        raise ValueError(f"pixel metrics need one mask per map, got {len(maps)} maps and {len(masks)} masks")
    defect = sum(int(np.count_nonzero(k)) for k in masks)
    total = sum(int(np.size(k)) for k in masks)
    if defect == 0 or defect == total:
        raise ValueError("pixel metrics need defect pixels and defect-free pixels (masks of the defect images)")
    return total


def pixel_curves(maps, masks, exact_pixels: int = EXACT_PIXELS) -> dict[str, np.ndarray]:
    """``{"fpr", "tpr", "pro", "thresholds"}`` at every distinct map value (descending; above ``exact_pixels``
    pixels, at ``BINS`` quantiles), starting at (0, 0, 0), and the number of defect ``regions``; ``maps`` and
    ``masks`` are sequences of arrays, one pair per image."""
    if _check(maps, masks) > exact_pixels:
        return binned_pixel_curves(maps, masks)
    scores = np.concatenate([np.asarray(m, np.float32).ravel() for m in maps])
    truth = np.concatenate([np.asarray(k, bool).ravel() for k in masks])
    parts = [_region_weights(mask) for mask in masks]
    weights, regions = np.concatenate([w for w, _ in parts]), sum(n for _, n in parts)
    order = np.argsort(-scores, kind="stable")
    ranked, truth_ranked, weights = scores[order], truth[order], weights[order]
    del order
    last = np.r_[np.flatnonzero(ranked[1:] != ranked[:-1]), len(ranked) - 1]  # the last pixel of each score
    positives = np.cumsum(truth_ranked)[last]
    negatives = (last + 1) - positives
    pro = np.cumsum(weights, dtype=np.float64)[last] / regions
    return {"fpr": np.r_[0.0, negatives / (~truth).sum()], "tpr": np.r_[0.0, positives / truth.sum()],
            "pro": np.r_[0.0, pro], "thresholds": np.r_[np.inf, ranked[last]], "regions": regions}


def binned_pixel_curves(maps, masks, bins: int = BINS) -> dict[str, np.ndarray]:
    """``pixel_curves`` from histograms: thresholds at ``bins`` quantiles of the map values (a strided sample of
    at most 4 M of them), each image counted into them in turn."""
    _check(maps, masks)
    total = sum(np.size(m) for m in maps)
    step = max(1, total // (1 << 22))
    sample = np.concatenate([np.asarray(m, np.float32).ravel()[::step] for m in maps])
    edges = np.unique(np.quantile(sample, np.linspace(0, 1, bins)[1:-1]).astype(np.float32))
    negatives, positives, pro = np.zeros(len(edges) + 1), np.zeros(len(edges) + 1), np.zeros(len(edges) + 1)
    regions = 0
    for anomaly_map, mask in zip(maps, masks):
        level = np.searchsorted(edges, np.asarray(anomaly_map, np.float32).ravel(), side="right")
        truth = np.asarray(mask, bool).ravel()
        weights, n = _region_weights(mask)
        regions += n
        negatives += np.bincount(level[~truth], minlength=len(edges) + 1)
        positives += np.bincount(level[truth], minlength=len(edges) + 1)
        pro += np.bincount(level, weights=weights, minlength=len(edges) + 1)
    # descending thresholds: the highest level first; "above level j" = levels j..end
    cumulative = [np.cumsum(counts[::-1]) for counts in (negatives, positives, pro)]
    return {"fpr": np.r_[0.0, cumulative[0] / negatives.sum()], "tpr": np.r_[0.0, cumulative[1] / positives.sum()],
            "pro": np.r_[0.0, cumulative[2] / max(regions, 1)],
            "thresholds": np.r_[np.inf, edges[::-1], -np.inf], "regions": regions}


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


def pixel_metrics(maps, masks, fpr_limit: float = FPR_LIMIT, exact_pixels: int = EXACT_PIXELS
                  ) -> tuple[dict, dict]:
    """``({"pixel_auroc", "aupro", "aupro_fpr_limit", "n_defect_regions", "n_pixels", "exact"}, curves)``."""
    curves = pixel_curves(maps, masks, exact_pixels)
    metrics = {"pixel_auroc": float(np.trapezoid(curves["tpr"], curves["fpr"])),
               "aupro": area_to(curves["fpr"], curves["pro"], fpr_limit) / fpr_limit,
               "aupro_fpr_limit": fpr_limit, "n_defect_regions": curves["regions"],
               "n_pixels": int(sum(np.asarray(m).size for m in maps)),
               "exact": bool(sum(np.asarray(m).size for m in maps) <= exact_pixels)}
    return metrics, curves


def mask_overlap(predicted, masks) -> dict:
    """Pixel precision, recall, F1 and IoU of predicted defect masks against the true ones, over all pixels."""
    tp = sum(int(np.sum(p & t)) for p, t in zip(predicted, masks))
    fp = sum(int(np.sum(p & ~t)) for p, t in zip(predicted, masks))
    fn = sum(int(np.sum(~p & t)) for p, t in zip(predicted, masks))
    return {"precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
            "f1": 2 * tp / max(2 * tp + fp + fn, 1), "iou": tp / max(tp + fp + fn, 1)}
