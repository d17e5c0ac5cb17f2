"""Pixel ROC AUC and AUPRO against a case computed by hand, and against scikit-learn's ROC AUC."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from metricad.evaluate.pixel_metrics import mask_overlap, pixel_curves, pixel_metrics


def _case():
    """Two images; defect region A (2 pixels) in the first, region B (1 pixel) in the second.
    Ranked: 0.9 A, 0.8 A, 0.7 ok, 0.6 B, 0.4 ok, 0.3 ok, 0.2 ok, 0.1 ok (5 defect-free pixels)."""
    maps = [np.array([[0.9, 0.8], [0.3, 0.1]]), np.array([[0.7, 0.2], [0.6, 0.4]])]
    masks = [np.array([[1, 1], [0, 0]], bool), np.array([[0, 0], [1, 0]], bool)]
    return maps, masks


def test_the_curves_by_hand():
    curves = pixel_curves(*_case())
    # after 0.9: half of A found -> PRO (0.5 + 0) / 2 = 0.25 while the pixel TPR is 1/3; after 0.8: A whole; 0.7
    # is the first false positive (1/5); 0.6 finds B
    np.testing.assert_allclose(curves["fpr"][:6], [0, 0, 0, 0.2, 0.2, 0.4])
    np.testing.assert_allclose(curves["tpr"][:6], [0, 1 / 3, 2 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(curves["pro"][:6], [0, 0.25, 0.5, 0.5, 1, 1])
    assert curves["regions"] == 2


def test_auroc_and_aupro_by_hand():
    maps, masks = _case()
    metrics, _ = pixel_metrics(maps, masks)
    # 14 of the 15 (defect, defect-free) pairs ranked right: 0.6 is below 0.7
    assert metrics["pixel_auroc"] == pytest.approx(14 / 15)
    assert metrics["pixel_auroc"] == pytest.approx(roc_auc_score(np.r_[1, 1, 0, 0, 0, 0, 1, 0],
                                                                 np.r_[0.9, 0.8, 0.3, 0.1, 0.7, 0.2, 0.6, 0.4]))
    # PRO over FPR: 0.5 on [0, 0.2], 1 on [0.2, 0.3] -> (0.1 + 0.1) / 0.3
    assert metrics["aupro"] == pytest.approx(0.2 / 0.3)
    # to FPR 0.1 only the 0.5 step counts: 0.05 / 0.1
    assert pixel_metrics(maps, masks, fpr_limit=0.1)[0]["aupro"] == pytest.approx(0.5)
    assert metrics["n_defect_regions"] == 2 and metrics["n_pixels"] == 8
    binned, _ = pixel_metrics(maps, masks, exact_pixels=0)  # the histogram path: each value in a bin of its own
    assert binned["pixel_auroc"] == pytest.approx(14 / 15) and binned["aupro"] == pytest.approx(0.2 / 0.3)


def test_regions_are_four_connected_and_weigh_alike():
    """Two diagonal defect pixels are two regions (MVTec AD's 4-connectivity): finding one of them is PRO 0.5."""
    maps = [np.array([[1.0, 0.0], [0.2, 0.5]])]
    masks = [np.array([[1, 0], [0, 1]], bool)]
    curves = pixel_curves(maps, masks)
    assert curves["regions"] == 2 and curves["pro"][1] == pytest.approx(0.5)


def test_the_auroc_equals_scikit_learns_on_random_maps():
    rng = np.random.default_rng(0)
    maps = [rng.random((9, 7)) for _ in range(4)]
    masks = [rng.random((9, 7)) > 0.8 for _ in range(4)]
    maps[1][masks[1]] += 0.3  # ties and an uneven mix
    expected = roc_auc_score(np.concatenate([m.ravel() for m in masks]),
                             np.concatenate([np.float32(m).ravel() for m in maps]))
    assert pixel_metrics(maps, masks)[0]["pixel_auroc"] == pytest.approx(expected, abs=1e-12)


def test_pixel_metrics_need_both_kinds_of_pixel():
    with pytest.raises(ValueError, match="defect pixels and defect-free pixels"):
        pixel_metrics([np.zeros((2, 2))], [np.zeros((2, 2), bool)])


def test_mask_overlap():
    predicted = [np.array([[1, 1], [0, 0]], bool)]
    truth = [np.array([[1, 0], [1, 0]], bool)]
    assert mask_overlap(predicted, truth) == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "iou": 1 / 3}


def test_the_binned_curves_of_large_sets_agree_with_the_exact_ones():
    """Above EXACT_PIXELS the curves come from histograms at quantile thresholds: within 1e-3 of the exact."""
    rng = np.random.default_rng(1)
    masks = [np.zeros((64, 64), bool) for _ in range(12)]
    for k, mask in enumerate(masks[:8]):
        mask[5 + 3 * k:15 + 3 * k, 10:14 + 4 * k] = True
        mask[50:52, 50:53] = k % 2 == 0  # small regions weigh as much as large ones
    maps = [rng.normal(0, 1, (64, 64)) + 1.5 * m + rng.normal(0, 0.5) for m in masks]
    exact, _ = pixel_metrics(maps, masks)
    binned, curves = pixel_metrics(maps, masks, exact_pixels=0)
    assert exact["exact"] and not binned["exact"] and binned["n_defect_regions"] == exact["n_defect_regions"] == 12
    assert binned["pixel_auroc"] == pytest.approx(exact["pixel_auroc"], abs=1e-3)
    assert binned["aupro"] == pytest.approx(exact["aupro"], abs=1e-3)
    assert curves["fpr"][-1] == pytest.approx(1.0) and curves["pro"][-1] == pytest.approx(1.0)
