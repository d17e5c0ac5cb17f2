"""One interface for everything that scores: a fitted Detector, a run directory's scorer and a model bundle all
satisfy ``Scorer`` (the two loaded from files also ``DeployedScorer``), score the same images alike and decide by
the one rule."""

import numpy as np
import pytest

from metricad.deploy.bundle import Bundle
from metricad.deploy.scorer import DeployedScorer, RunScorer, Scorer, load_scorer
from metricad.run import open_run
from metricad.thresholds import is_anomalous, normalized_score


@pytest.fixture(scope="module")
def scorers(trained_run, tmp_path_factory):
    from metricad.cli import main

    bundle = tmp_path_factory.mktemp("bundle") / "part.onnx"
    assert main(["export", str(trained_run), "--out", str(bundle)]) == 0
    return {"detector": open_run(trained_run, device="cpu").detector, "run": load_scorer(trained_run, "cpu"),
            "bundle": load_scorer(bundle)}


def test_every_scorer_satisfies_the_interface(scorers):
    assert isinstance(scorers["run"], RunScorer) and isinstance(scorers["bundle"], Bundle)
    for name, scorer in scorers.items():
        assert isinstance(scorer, Scorer), name
        assert isinstance(scorer, DeployedScorer) == (name != "detector"), name  # a Detector has no model id


def test_every_scorer_scores_and_decides_alike(scorers):
    images = np.random.default_rng(7).integers(0, 256, (12, 28, 28), dtype=np.uint8)
    reference = scorers["detector"].score_samples(images)
    assert np.ptp(reference) > 0.1
    for name, scorer in scorers.items():
        assert scorer.input_spec == (1, (28, 28)), name
        assert scorer.offset_ == pytest.approx(scorers["detector"].offset_, rel=1e-6), name
        scores = scorer.score_samples(images)
        np.testing.assert_allclose(scores, reference, rtol=1e-4, atol=1e-4 * np.ptp(reference), err_msg=name)
        np.testing.assert_array_equal(scorer.predict_scores(scores), is_anomalous(scores, scorer.offset_))
        np.testing.assert_allclose(scorer.normalized_score(scores), normalized_score(scores, scorer.offset_))
    assert scorers["run"].model_id == scorers["bundle"].model_id
