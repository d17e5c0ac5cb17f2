import numpy as np
import pytest
import torch

from metricad import Detector
from metricad.compare import LOFScorer, summarize
from metricad.models import create_model


def test_lof_scorer_flags_outliers():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    normal = rng.integers(0, 40, (100, 28, 28)).astype(np.uint8)
    outliers = normal[:10].copy()
    outliers[:, 5:23, 5:23] = 255
    detector = Detector(create_model("compact-cnn", widths=(4, 4, 4), embedding_dim=8), device="cpu").fit(normal)
    scores = LOFScorer(detector).score_samples(np.concatenate([normal[:20], outliers]))
    assert scores[20:].min() > np.median(scores[:20])


def test_summary_mean_and_std_over_seeds():
    rows = [{"method": "m", "auc": a, "train_seconds": 1.0, "ms_per_image_batch1": 2.0, "ms_per_image_batch20": 0.5}
            for a in (0.90, 0.94)]
    (s,) = summarize(rows)
    assert s["auc_mean"] == pytest.approx(0.92) and s["auc_std"] == pytest.approx(0.028284, abs=1e-6)
    assert s["seeds"] == 2
