from dataclasses import replace

import numpy as np
import pytest
import torch

from metricad.compare.comparison import LOFScorer, method_config, summarize
from metricad.models import create_model
from metricad.recipe import PRESETS


def test_lof_scorer_flags_outliers():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    normal = rng.integers(0, 40, (100, 28, 28)).astype(np.uint8)
    model = create_model("compact-cnn", widths=(4, 4, 4), embedding_dim=8)
    outliers = normal[80:90].copy()  # new images, as the LOF meets them when scoring: none it was fitted on
    outliers[:, 5:23, 5:23] = 255
    scores = LOFScorer(model, normal[:80]).score_samples(np.concatenate([normal[90:], outliers]))
    assert scores[10:].min() > np.median(scores[:10])


def test_summary_mean_and_std_over_seeds():
    rows = [{"method": "m", "auc": a, "train_seconds": 1.0, "ms_per_image_batch1": 2.0, "ms_per_image_batch20": 0.5}
            for a in (0.90, 0.94)]
    (s,) = summarize(rows)
    assert s["auc_mean"] == pytest.approx(0.92) and s["auc_std"] == pytest.approx(0.028284, abs=1e-6)
    assert s["seeds"] == 2


def test_baselines_train_without_metricads_shifted_negatives():
    base = replace(PRESETS["default"], negatives=["rot90", "rot180"], epochs=3)
    assert method_config("metricad", base).negatives == ["rot90", "rot180"]
    for method in ("doc", "binary", "seed"):
        config = method_config(method, base)
        assert config.negatives == [] and config.epochs == 3, method  # the same budget, not the same extra data


def test_baselines_train_on_raw_features_and_keep_the_other_model_options():
    base = replace(PRESETS["default"], model_kwargs={"normalize": True, "embedding_dim": 16})
    assert method_config("metricad", base).model_kwargs == {"normalize": True, "embedding_dim": 16}
    for method in ("doc", "binary", "seed"):
        assert method_config(method, base).model_kwargs == {"embedding_dim": 16}, method


def test_baselines_are_scored_by_knn_as_one_model_and_metricad_by_its_recipe():
    base = replace(PRESETS["default"], ensemble=3)
    assert method_config("metricad", base).score == PRESETS["default"].score
    assert method_config("metricad", base).ensemble == 3
    for method in ("doc", "binary", "seed"):
        assert (method_config(method, base).score, method_config(method, base).ensemble) == ("knn", 1), method
