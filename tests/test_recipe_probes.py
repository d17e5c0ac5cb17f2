"""The probe that chooses the default recipe (benchmarks/recipe_probes.py): its scores on saved embeddings."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import recipe_probes  # noqa: E402  (a script, importable from its folder)


@pytest.fixture
def separable_probe() -> dict:
    """Saved-probe arrays where every score can tell: normal embeddings point along e0 (the normal class's
    centre), anomalies along e1 (the reference class's centre); feature maps likewise."""
    rng = np.random.default_rng(0)
    dim = 8
    along = lambda axis, n: (np.eye(dim)[axis] * rng.uniform(2, 5, (n, 1))
                             + rng.normal(0, 0.05, (n, dim))).astype(np.float32)  # as the probe saves them
    test = np.concatenate([along(0, 20), along(1, 20)])
    fmap = lambda embeddings: np.repeat(embeddings[:, :4, None, None], 2, axis=2).repeat(2, axis=3)
    anchors = along(0, 50)
    return {"raw_anchors": anchors, "raw_test": test, "is_anomaly": np.r_[np.zeros(20), np.ones(20)],
            "normal_label": np.array(0), "centres": np.eye(dim, dtype=np.float32)[:, :2],
            "pca_anchors": rng.normal(size=50), "pca_test": rng.normal(size=40),
            "fmap_anchors": fmap(anchors), "fmap_test": fmap(test)}


def test_every_score_separates_a_separable_probe(separable_probe):
    aucs = recipe_probes.score_arrays(separable_probe)
    for name in ("cos", "raw", "margin", "cos+margin", "cos+excess-margin", "feature_map", "patch"):
        assert aucs[name] == 1.0, name
    assert "pca" not in aucs and "cos+pca" in aucs  # a baseline of its own; here only a part of cos+pca


def test_the_margins_excess_only_adds_suspicion(separable_probe):
    """Anomalies the classifier takes for normal (a negative margin z-score) lose nothing under the one-sided
    rule: its score ranks like the k-NN distance alone, while the whole margin's sum pulls them down."""
    probe = dict(separable_probe)
    probe["centres"] = np.eye(8, dtype=np.float32)[:, [1, 0]]  # the normal class's centre now points at the anomalies
    aucs = recipe_probes.score_arrays(probe)
    assert aucs["margin"] == 0.0
    assert aucs["cos+excess-margin"] == aucs["cos"] == 1.0
    assert aucs["cos+margin"] < 1.0


def test_rescore_prints_the_saved_probes_and_the_means_they_share(separable_probe, tmp_path, capsys):
    np.savez(tmp_path / "a.npz", **separable_probe)
    older = {key: value for key, value in separable_probe.items() if not key.startswith("fmap_")}
    np.savez(tmp_path / "b.npz", **older)  # saved before the feature-map scores existed
    recipe_probes.rescore([tmp_path / "a.npz", tmp_path / "b.npz"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line.get("file") for line in lines[:2]] == ["a.npz", "b.npz"]
    assert lines[0] == {"file": "a.npz", **recipe_probes.score_arrays(separable_probe)}
    means = lines[2]["mean"]
    assert "feature_map" not in means and means["cos"] == 1.0
