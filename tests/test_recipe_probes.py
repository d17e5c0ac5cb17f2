"""The validation-suite probe (benchmarks/recipe_probes.py) scores with the product's objects: its score of a
recipe equals the detector's, computed from the parts it saves."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from metricad.data import load_fashion_mnist, make_split
from metricad.recipe import PRESETS
from metricad.train.pipeline import fit_detector, train_members

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import recipe_probes  # noqa: E402  (a script, importable from its folder)


@pytest.fixture(scope="module")
def trained(fake_fashion_dir):
    split = make_split(*load_fashion_mnist(fake_fashion_dir), normal=7, anomaly=9, holdout=0.25)
    config = replace(PRESETS["default"], epochs=1, batch_size=32, ensemble=2, holdout=0.25,
                     model_kwargs={"normalize": True, "widths": [4, 8, 8], "embedding_dim": 16})
    models, _ = train_members(config, split, device="cpu", progress=False)
    return models, split


@pytest.mark.parametrize("score", ["knn+excess-margin", "knn+fmap+excess-margin", "fmap+pca"])
def test_a_probes_score_equals_the_detectors_on_the_same_models(trained, score):
    models, split = trained
    arrays = recipe_probes.probe_arrays(models, split)
    detector = fit_detector(models, split, score)
    np.testing.assert_allclose(recipe_probes.score_from_parts(arrays, score),
                               detector.score_samples(split.test_images), rtol=1e-4, atol=1e-4)
    first = fit_detector(models[:1], split, score)  # the first member alone
    np.testing.assert_allclose(recipe_probes.score_from_parts(arrays, score, members=[0]),
                               first.score_samples(split.test_images), rtol=1e-4, atol=1e-4)


def test_rescore_prints_the_saved_probes_and_their_means(trained, tmp_path, capsys):
    models, split = trained
    arrays = recipe_probes.probe_arrays(models, split)
    np.savez(tmp_path / "a.npz", **arrays)
    np.savez(tmp_path / "b.npz", **recipe_probes.probe_arrays(models[1:], split))
    results = recipe_probes.rescore([tmp_path / "a.npz", tmp_path / "b.npz"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == results[0] and lines[0]["file"] == "a.npz"
    assert "member0:knn" in lines[0] and "member0:knn" not in lines[1]  # an ensemble's first member, alone
    assert lines[2]["mean"]["knn"] == pytest.approx((lines[0]["knn"] + lines[1]["knn"]) / 2, abs=1e-4)
    assert "member0:knn" not in lines[2]["mean"]
