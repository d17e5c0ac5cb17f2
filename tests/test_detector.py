import json

import numpy as np
import pytest
import torch

from metricad import Detector, NotFittedError
from metricad.class_margin import ClassMargin
from metricad.models import create_model


@pytest.fixture
def normal_and_anomalous():
    rng = np.random.default_rng(0)
    normal = rng.integers(0, 60, size=(120, 28, 28)).astype(np.uint8)
    anomalous = normal[:30].copy()
    anomalous[:, 8:20, 8:20] = 255  # a bright defect
    return normal, anomalous


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("compact-cnn", widths=(8, 8, 8), embedding_dim=16)


def test_scores_anomalies_higher_and_signs_agree(model, normal_and_anomalous):
    normal, anomalous = normal_and_anomalous
    det = Detector(model, device="cpu").fit(normal[:100])
    held_out, bad = det.score_samples(normal[100:]), det.score_samples(anomalous)
    assert bad.mean() > held_out.mean()
    np.testing.assert_allclose(det.decision_function(anomalous), bad - det.offset_, rtol=1e-6)
    np.testing.assert_array_equal(det.predict(anomalous), (bad > det.offset_).astype(int))
    # An anchor's own score is 0 (it is its own nearest neighbour).
    np.testing.assert_allclose(det.score_samples(normal[:5]), 0.0, atol=1e-3)


def test_k_is_mean_of_k_nearest_distances(model, normal_and_anomalous):
    normal, anomalous = normal_and_anomalous
    det = Detector(model, k=3, device="cpu").fit(normal)
    emb_anchor, emb_query = det.embed(normal).numpy(), det.embed(anomalous).numpy()
    d = np.sqrt(((emb_query[:, None] - emb_anchor[None]) ** 2).sum(-1))
    np.testing.assert_allclose(det.score_samples(anomalous), np.sort(d, 1)[:, :3].mean(1), rtol=1e-4, atol=1e-4)


def test_offset_is_leave_one_out_quantile(model, normal_and_anomalous):
    normal, _ = normal_and_anomalous
    det = Detector(model, contamination=0.1, device="cpu").fit(normal)
    emb = det.embed(normal).numpy().astype(np.float64)
    d = np.sqrt(((emb[:, None] - emb[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    assert det.offset_ == pytest.approx(np.quantile(d.min(1), 0.9), rel=1e-3)


def test_anchor_selection_first_and_seeded_random(model, normal_and_anomalous):
    normal, _ = normal_and_anomalous
    first = Detector(model, n_anchors=10, device="cpu").fit(normal)
    np.testing.assert_array_equal(first.anchor_indices_, np.arange(10))
    r1 = Detector(model, n_anchors=10, anchor_sampling="random", random_state=3, device="cpu").fit(normal)
    r2 = Detector(model, n_anchors=10, anchor_sampling="random", random_state=3, device="cpu").fit(normal)
    np.testing.assert_array_equal(r1.anchor_indices_, r2.anchor_indices_)
    assert not np.array_equal(r1.anchor_indices_, np.arange(10))
    assert r1.index_.ntotal == 10


def test_not_fitted_and_bad_parameters(model, normal_and_anomalous):
    normal, _ = normal_and_anomalous
    with pytest.raises(NotFittedError):
        Detector(model).score_samples(normal)
    for bad in ({"k": 0}, {"n_anchors": 1000}, {"anchor_sampling": "best"}, {"contamination": 0.7}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Detector(model, device="cpu", **bad).fit(normal)
    det = Detector(model, device="cpu").fit(normal)
    with pytest.raises(ValueError, match="channel"):
        det.score_samples(np.zeros((2, 3, 28, 28), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        det.score_samples(np.full((2, 28, 28), 7.0, np.float32))


def test_save_load_round_trip(tmp_path, model, normal_and_anomalous):
    normal, anomalous = normal_and_anomalous
    det = Detector(model, k=2, device="cpu").fit(normal).set_threshold(1.25)
    det.save(tmp_path / "run")
    loaded = Detector.load(tmp_path / "run", device="cpu")
    np.testing.assert_allclose(loaded.score_samples(anomalous), det.score_samples(anomalous), rtol=1e-6)
    assert loaded.offset_ == 1.25 and loaded.k == 2
    subset = Detector.load(tmp_path / "run", device="cpu", n_anchors=50)
    assert subset.index_.ntotal == 50 and subset.offset_ != 1.25
    assert not list(tmp_path.glob("run/.*tmp*"))  # no temporary files left


def test_load_rejects_broken_runs(tmp_path, model, normal_and_anomalous):
    normal, _ = normal_and_anomalous
    run = Detector(model, device="cpu").fit(normal).save(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        Detector.load(tmp_path / "missing")
    config = json.loads((run / "config.json").read_text())
    config["model"]["kwargs"]["embedding_dim"] = 32
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="weights.safetensors: weights do not match"):
        Detector.load(run)
    (run / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        Detector.load(run)
    (run / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json: missing"):
        Detector.load(run)


def test_load_rejects_corrupt_weights(tmp_path, model, normal_and_anomalous):
    normal, _ = normal_and_anomalous
    run = Detector(model, device="cpu").fit(normal).save(tmp_path / "run")
    (run / "anchors.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="anchors.safetensors: not a readable safetensors"):
        Detector.load(run)
    (run / "weights.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="weights.safetensors: missing"):
        Detector.load(run)


def test_saved_files_are_ordinary_files(tmp_path, model, normal_and_anomalous):
    import os
    import stat

    run = Detector(model, device="cpu").fit(normal_and_anomalous[0]).save(tmp_path / "run")
    mask = os.umask(0)
    os.umask(mask)
    for name in ("config.json", "weights.safetensors", "anchors.safetensors"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o666 & ~mask, name


class FirstTwoPixels(torch.nn.Module):
    """A 'model' whose embedding is the first two pixels in [0, 1]: embeddings chosen by hand."""

    in_channels, input_size, embedding_dim = 1, (2, 2), 2

    def forward(self, x):
        return x.flatten(1)[:, :2]


def _pixels(*pairs):
    return np.array([[[a, b], [0, 0]] for a, b in pairs], dtype=np.uint8)


def test_class_margin_is_best_other_cosine_minus_normal_cosine():
    margin = ClassMargin(torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 1.0]]), normal_label=0)  # centres as columns
    got = margin(torch.tensor([[1.0, 0.0], [0.0, 5.0], [1.0, 1.0]]))
    # (1, 0): others 0 and 0.70711, normal 1; (0, 5): others 1 and 0.70711, normal 0; (1, 1): 0.70711 each.
    np.testing.assert_allclose(got.numpy(), [0.70711 - 1.0, 1.0, 1.0 - 0.70711], atol=1e-5)
    with pytest.raises(ValueError, match="classes >= 2"):
        ClassMargin(torch.ones(4, 1), 0)
    with pytest.raises(ValueError, match="normal_label 3"):
        ClassMargin(torch.ones(4, 2), 3)


def test_knn_plus_margin_adds_the_z_scored_distance_and_margin():
    # Anchor embeddings (1, 0), (1, 0.2), (1, 1); class centres: normal = (1, 0), the other class = (0, 1).
    det = Detector(FirstTwoPixels(), score="knn+margin", device="cpu").fit(
        _pixels((255, 0), (255, 51), (255, 255)), ClassMargin(torch.eye(2), normal_label=0))
    # Leave-one-out 1-NN distances of the anchors: 0.2, 0.2, 0.8 -> mean 0.4, std sqrt(0.08).
    # Margins (other cosine - normal cosine): -1, 0.19612 - 0.98058 = -0.78446, 0 -> mean -0.59482, std 0.42971.
    # Query (0, 1): nearest anchor (1, 1) at distance 1, margin 1 - 0 = 1.
    expected = (1.0 - 0.4) / 0.08 ** 0.5 + (1.0 + 0.59482) / 0.42971
    assert det.score_samples(_pixels((0, 255)))[0] == pytest.approx(expected, abs=1e-3)
    # The anchors' own leave-one-out scores set the threshold, on the same scale.
    loo = (np.array([0.2, 0.2, 0.8]) - 0.4) / 0.08 ** 0.5 + (np.array([-1, -0.78446, 0]) + 0.59482) / 0.42971
    assert det.offset_ == pytest.approx(np.quantile(loo, 0.99), abs=1e-3)
    # A sum of z-scores has any sign: the normalised score is a logistic centred on the threshold.
    assert det.normalized_score([det.offset_, det.offset_ + 2.0, -50.0]) == pytest.approx(
        [0.5, 1 / (1 + np.exp(-2.0)), 0.0], abs=1e-6)
    with pytest.raises(ValueError, match="needs the class margin"):
        Detector(FirstTwoPixels(), score="knn+margin", device="cpu").fit(_pixels((255, 0), (0, 255)))
    with pytest.raises(ValueError, match="score must be one of"):
        Detector(FirstTwoPixels(), score="margin", device="cpu").fit(_pixels((255, 0), (0, 255)))


def test_knn_plus_excess_margin_adds_only_the_margin_above_the_anchors_mean():
    # The anchors and centres of the test above: k-NN z = (d - 0.4) / sqrt(0.08); margin z = (m + 0.59482) / 0.42971.
    det = Detector(FirstTwoPixels(), score="knn+excess-margin", device="cpu").fit(
        _pixels((255, 0), (255, 51), (255, 255)), ClassMargin(torch.eye(2), normal_label=0))
    # (0, 1): nearest (1, 1) at 1, margin 1 (z > 0: added). (1, 0): an anchor itself, distance 0, margin -1
    # (z < 0: dropped, so the score is the k-NN part alone).
    expected = [(1.0 - 0.4) / 0.08 ** 0.5 + (1.0 + 0.59482) / 0.42971, (0.0 - 0.4) / 0.08 ** 0.5]
    np.testing.assert_allclose(det.score_samples(_pixels((0, 255), (255, 0))), expected, atol=1e-3)
    loo = (np.array([0.2, 0.2, 0.8]) - 0.4) / 0.08 ** 0.5 + np.maximum(
        (np.array([-1, -0.78446, 0]) + 0.59482) / 0.42971, 0)
    assert det.offset_ == pytest.approx(np.quantile(loo, 0.99), abs=1e-3)
    # The same model and anchors under the other scores, without embedding them again.
    whole = det.with_score("knn+margin")
    assert whole.score_samples(_pixels((255, 0)))[0] == pytest.approx(
        (0.0 - 0.4) / 0.08 ** 0.5 + (-1.0 + 0.59482) / 0.42971, abs=1e-3)
    knn = det.with_score("knn")
    assert knn.class_margin_ is None and knn.score_samples(_pixels((0, 255)))[0] == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="needs the class margin"):
        knn.with_score("knn+margin")


def test_knn_plus_margin_survives_save_load_and_anchor_subsets(tmp_path, model, normal_and_anomalous):
    normal, anomalous = normal_and_anomalous
    margin = ClassMargin(torch.randn(16, 3, generator=torch.Generator().manual_seed(0)), normal_label=1)
    det = Detector(model, score="knn+margin", device="cpu").fit(normal, margin)
    knn_only = Detector(model, device="cpu").fit(normal)
    assert not np.allclose(det.score_samples(anomalous), knn_only.score_samples(anomalous))
    det.save(tmp_path / "run")
    loaded = Detector.load(tmp_path / "run", device="cpu")
    assert loaded.score == "knn+margin" and loaded.class_margin_.normal_label == 1
    np.testing.assert_allclose(loaded.score_samples(anomalous), det.score_samples(anomalous), rtol=1e-5)
    assert loaded.offset_ == det.offset_
    subset = det.subset_anchors(n_anchors=50)
    assert subset.score == "knn+margin" and subset.index_.ntotal == 50
    scored_by_knn = Detector.load(tmp_path / "run", device="cpu", score="knn")
    np.testing.assert_allclose(scored_by_knn.score_samples(anomalous), knn_only.score_samples(anomalous), rtol=1e-5)
    assert scored_by_knn.offset_ == pytest.approx(knn_only.offset_, rel=1e-5)  # its own threshold, not the run's
    # A run whose centres are gone says so.
    from safetensors.torch import load_file, save_file

    anchors = load_file(str(tmp_path / "run" / "anchors.safetensors"))
    del anchors["class_centres"]
    save_file(anchors, str(tmp_path / "run" / "anchors.safetensors"))
    with pytest.raises(ValueError, match="needs the class centres"):
        Detector.load(tmp_path / "run", device="cpu")
