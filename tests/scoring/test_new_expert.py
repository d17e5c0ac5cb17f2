"""ARCHITECTURE.md's example expert, run as written: one class and its declaration give a score that fits,
saves, reopens and exports to ONNX like the built-in ones, with the value computed by hand."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from metricad.deploy.bundle import Bundle
from metricad.deploy.export import export_run
from metricad.detector import Detector
from metricad.models import create_model
from metricad.run import open_run, write_run
from metricad.scoring.experts import EXPERT_CLASSES
from metricad.scoring.spec import EXPERT_NAMES, ScoreSpec, declare_expert

ARCHITECTURE = Path(__file__).resolve().parents[2] / "ARCHITECTURE.md"


@pytest.fixture
def mean_distance():
    code = re.search(r"```python\n(.*?)```", ARCHITECTURE.read_text(), re.S).group(1)
    namespace = {}
    exec(compile(code, str(ARCHITECTURE), "exec"), namespace)  # noqa: S102 - our own documentation
    declare_expert("mean-distance")
    yield namespace["MeanDistance"]
    EXPERT_CLASSES.pop("mean-distance")
    EXPERT_NAMES.pop("mean-distance")


def test_the_documented_expert_scores_saves_and_exports(mean_distance, tmp_path):
    rng = np.random.default_rng(0)
    normal = rng.integers(0, 60, (40, 28, 28)).astype(np.uint8)
    held = rng.integers(0, 60, (20, 28, 28)).astype(np.uint8)
    test = np.concatenate([rng.integers(0, 60, (5, 28, 28)), rng.integers(150, 255, (5, 28, 28))]).astype(np.uint8)
    model = create_model("compact-cnn", normalize=True).eval()
    detector = Detector(model, score="mean-distance", device="cpu").fit(normal, held)
    assert ScoreSpec.parse("knn+mean-distance").keys == ("knn", "mean-distance")

    with torch.no_grad():  # by hand: the distance of each embedding to the normal images' mean embedding
        test_embeddings = model(torch.from_numpy(test).float().div(255).unsqueeze(1))
        centre = model(torch.from_numpy(normal).float().div(255).unsqueeze(1)).mean(0)
    by_hand = (test_embeddings - centre).norm(dim=1).numpy()
    np.testing.assert_allclose(detector.score_parts(test)[1][:, 0], by_hand, rtol=1e-4, atol=1e-5)
    assert np.ptp(by_hand) > 0  # the images differ

    run = write_run(tmp_path / "run", detector, {})
    expected = detector.score_samples(test)
    np.testing.assert_allclose(open_run(run).detector.score_samples(test), expected, rtol=1e-5, atol=1e-6)
    export_run(run, tmp_path / "bundle.onnx")
    np.testing.assert_allclose(Bundle(tmp_path / "bundle.onnx").score_samples(test), expected, rtol=1e-4, atol=1e-4)
