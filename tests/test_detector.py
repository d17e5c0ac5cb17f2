import numpy as np
import pytest
import torch
from sklearn.base import clone

from metricad import Detector, NotFittedError
from metricad.models import create_model
from metricad.recipe import PRESETS


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


def _embed(model, images) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(images).float().div(255).unsqueeze(1)).numpy().astype(np.float64)


def _loo_nearest(embeddings: np.ndarray, k: int = 1) -> np.ndarray:
    d = np.sqrt(((embeddings[:, None] - embeddings[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return np.sort(d, 1)[:, :k].mean(1)


def test_scores_anomalies_higher_and_signs_agree(model, normal_and_anomalous):
    normal, anomalous = normal_and_anomalous
    det = Detector(model, score="knn", device="cpu").fit(normal[:100])
    held_out, bad = det.score_samples(normal[100:]), det.score_samples(anomalous)
    assert bad.mean() > held_out.mean()
    np.testing.assert_allclose(det.decision_function(anomalous), bad - det.offset_, rtol=1e-6)
    np.testing.assert_array_equal(det.predict(anomalous), (bad > det.offset_).astype(int))
    np.testing.assert_array_equal(det.predict_scores(bad), det.predict(anomalous))


def test_a_lone_knn_score_is_the_distance_z_scored_on_the_anchors_left_out(model, normal_and_anomalous):
    normal, anomalous = normal_and_anomalous
    det = Detector(model, score="knn", k=3, contamination=0.1, device="cpu").fit(normal)
    anchors, queries = _embed(model, normal), _embed(model, anomalous)
    distances = np.sqrt(((queries[:, None] - anchors[None]) ** 2).sum(-1))
    knn = np.sort(distances, 1)[:, :3].mean(1)
    loo = _loo_nearest(anchors, 3)  # each anchor against the others: the normal scores the z-score is taken on
    np.testing.assert_allclose(det.score_samples(anomalous), (knn - loo.mean()) / loo.std(), rtol=1e-3, atol=1e-3)
    assert det.offset_ == pytest.approx(np.quantile((loo - loo.mean()) / loo.std(), 0.9), rel=1e-3)


def test_held_out_normal_images_normalise_and_set_the_threshold(model, normal_and_anomalous):
    normal, anomalous = normal_and_anomalous
    det = Detector(model, score="knn", contamination=0.05, device="cpu").fit(normal[:80], normal[80:])
    anchors, held_out = _embed(model, normal[:80]), _embed(model, normal[80:])
    held_knn = np.sqrt(((held_out[:, None] - anchors[None]) ** 2).sum(-1)).min(1)
    z = (held_knn - held_knn.mean()) / held_knn.std()
    np.testing.assert_allclose(det.score_samples(normal[80:]), z, atol=1e-3)
    # 'higher': at most 5 % of the held-out normal images score above the threshold.
    assert det.offset_ == pytest.approx(np.quantile(z, 0.95, method="higher"), abs=1e-4)
    assert det.threshold_set_on_["images"] == "held-out normal images" and det.threshold_set_on_["n_normal"] == 40


def test_anchor_selection_first_and_seeded_random(model, normal_and_anomalous):
    normal, _ = normal_and_anomalous
    first = Detector(model, score="knn", n_anchors=10, device="cpu").fit(normal)
    np.testing.assert_array_equal(first.anchor_indices_, np.arange(10))
    r1 = Detector(model, score="knn", n_anchors=10, anchor_sampling="random", random_state=3).fit(normal)
    r2 = Detector(model, score="knn", n_anchors=10, anchor_sampling="random", random_state=3).fit(normal)
    np.testing.assert_array_equal(r1.anchor_indices_, r2.anchor_indices_)
    assert not np.array_equal(r1.anchor_indices_, np.arange(10))
    assert len(r1.graph_.members[0].experts["knn"].anchors) == 10


def test_not_fitted_and_bad_parameters(model, normal_and_anomalous):
    normal, _ = normal_and_anomalous
    with pytest.raises(NotFittedError):
        Detector(model).score_samples(normal)
    for bad, message in (({"k": 0}, "k must be a positive integer, got 0"),
                         ({"n_anchors": 1000}, "n_anchors must be between 1 and the 120 normal images, got 1000"),
                         ({"anchor_sampling": "best"}, "anchor_sampling must be 'first', 'random' or 'coreset', got "
                                                       "'best'"),
                         ({"contamination": 0.7}, r"contamination must be in \(0, 0.5\), got 0.7"),
                         ({"runtime": "tpu"}, "runtime must be one of torch, onnx, got 'tpu'"),
                         ({"score": "knn+magic"}, "unknown expert\\(s\\) 'magic' in score 'knn\\+magic'")):
        with pytest.raises(ValueError, match=message):  # each value refused, by its own message
            Detector(model, device="cpu", **({"score": "knn"} | bad)).fit(normal)
    with pytest.raises(ValueError, match="needs the exact index"):
        Detector(model, score="knn", runtime="onnx", index="faiss-flat", device="cpu").fit(normal)
    with pytest.raises(ValueError, match="class centres"):  # this model was not trained with a CosFace loss
        Detector(model, score="knn+excess-margin", device="cpu").fit(normal)
    det = Detector(model, score="knn", device="cpu").fit(normal)
    with pytest.raises(ValueError, match="channel"):
        det.score_samples(np.zeros((2, 3, 28, 28), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        det.score_samples(np.full((2, 28, 28), 7.0, np.float32))


def test_parameters_clone_and_the_default_score_is_the_presets(model, normal_and_anomalous):
    normal, anomalous = normal_and_anomalous
    assert Detector(model).score == PRESETS["default"].score
    det = Detector(model, score="knn+pca", k=2, device="cpu")
    params = det.get_params()
    assert {k: params[k] for k in ("score", "k", "runtime", "index")} == {"score": "knn+pca", "k": 2,
                                                                          "runtime": "torch", "index": "exact"}
    copy = clone(det)
    assert copy.get_params()["k"] == 2 and copy.model is not model  # an unfitted copy with its own model
    det.set_params(k=3)
    assert det.k == 3 and not hasattr(det, "graph_")
    fitted = det.fit(normal)
    np.testing.assert_allclose(clone(fitted).fit(normal).score_samples(anomalous), fitted.score_samples(anomalous),
                               rtol=1e-5)


def test_an_ensemble_averages_its_members_normalised_scores(normal_and_anomalous):
    normal, anomalous = normal_and_anomalous
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(create_model("compact-cnn", widths=(8, 8, 8), embedding_dim=16))
    both = Detector(models, score="knn+pca", device="cpu").fit(normal[:90], normal[90:])
    alone = [Detector(m, score="knn+pca", device="cpu").fit(normal[:90], normal[90:]) for m in models]
    expected = np.mean([a.score_samples(anomalous) for a in alone], axis=0)
    np.testing.assert_allclose(both.score_samples(anomalous), expected, rtol=1e-4, atol=1e-4)
    assert both.score_parts(anomalous)[1].shape == (30, 4)  # two members x two experts


def test_with_score_shares_fitted_experts_and_refit_changes_parameters(model, normal_and_anomalous):
    normal, anomalous = normal_and_anomalous
    det = Detector(model, score="knn+pca", device="cpu").fit(normal[:90], normal[90:])
    knn = det.with_score("knn")
    assert knn.graph_.members[0].experts["knn"] is det.graph_.members[0].experts["knn"]  # nothing embedded again
    fresh = Detector(model, score="knn", device="cpu").fit(normal[:90], normal[90:])
    np.testing.assert_allclose(knn.score_samples(anomalous), fresh.score_samples(anomalous), rtol=1e-5)
    assert knn.offset_ == pytest.approx(fresh.offset_, rel=1e-5)
    fmap = det.with_score("fmap")  # an expert it has not fitted: fitted now, on the same images
    assert fmap.score == "fmap" and len(fmap.graph_.members[0].experts["fmap"].anchors) == 90
    subset = det.refit(n_anchors=50)
    assert subset.n_anchors == 50 and len(subset.graph_.members[0].experts["knn"].anchors) == 50


class TwoPixels(torch.nn.Module):
    """A 'model' whose embedding is the first two pixels in [0, 1], with class centres chosen by hand: the
    normal class (1, 0) and another class (0, 1)."""

    in_channels, input_size, embedding_dim, normal_label = 1, (2, 2), 2, 0

    def __init__(self):
        super().__init__()
        self.register_buffer("class_centres", torch.eye(2))

    def forward_views(self, x):
        return {"embedding": x.flatten(1)[:, :2]}


def _pixels(*pairs):
    return np.array([[[a, b], [0, 0]] for a, b in pairs], dtype=np.uint8)


# Anchor embeddings (1, 0), (1, 0.2), (1, 1). Leave-one-out 1-NN distances 0.2, 0.2, 0.8: mean 0.4, std sqrt(0.08).
# Margins (other cosine - normal cosine): -1, 0.19612 - 0.98058 = -0.78446, 0: mean -0.59482, std 0.42971.
ANCHORS = _pixels((255, 0), (255, 51), (255, 255))
KNN_Z = (np.array([0.2, 0.2, 0.8]) - 0.4) / 0.08 ** 0.5
MARGIN_Z = (np.array([-1, -0.78446, 0]) + 0.59482) / 0.42971


def test_knn_plus_margin_averages_the_z_scored_distance_and_margin():
    det = Detector(TwoPixels(), score="knn+margin", device="cpu").fit(ANCHORS)
    # Query (0, 1): nearest anchor (1, 1) at distance 1, margin 1 - 0 = 1.
    expected = ((1.0 - 0.4) / 0.08 ** 0.5 + (1.0 + 0.59482) / 0.42971) / 2
    assert det.score_samples(_pixels((0, 255)))[0] == pytest.approx(expected, abs=1e-3)
    # The anchors' own leave-one-out scores set the threshold, on the same scale.
    assert det.offset_ == pytest.approx(np.quantile((KNN_Z + MARGIN_Z) / 2, 0.99), abs=1e-3)
    # A mean of z-scores has any sign: the normalised score is a logistic centred on the threshold.
    assert det.normalized_score([det.offset_, det.offset_ + 2.0, -50.0]) == pytest.approx(
        [0.5, 1 / (1 + np.exp(-2.0)), 0.0], abs=1e-6)


def test_excess_margin_adds_only_the_margin_above_the_anchors_mean():
    det = Detector(TwoPixels(), score="knn+excess-margin", device="cpu").fit(ANCHORS)
    # (0, 1): nearest (1, 1) at 1, margin 1 (z > 0: counted). (1, 0): an anchor itself, distance 0, margin -1
    # (z < 0: counted as 0, so the mean is half the k-NN part).
    expected = [((1.0 - 0.4) / 0.08 ** 0.5 + (1.0 + 0.59482) / 0.42971) / 2, (0.0 - 0.4) / 0.08 ** 0.5 / 2]
    np.testing.assert_allclose(det.score_samples(_pixels((0, 255), (255, 0))), expected, atol=1e-3)
    assert det.offset_ == pytest.approx(np.quantile((KNN_Z + np.maximum(MARGIN_Z, 0)) / 2, 0.99), abs=1e-3)
    whole = det.with_score("knn+margin")  # the same fitted margin expert, counted whole
    assert whole.score_samples(_pixels((255, 0)))[0] == pytest.approx(
        ((0.0 - 0.4) / 0.08 ** 0.5 + (-1.0 + 0.59482) / 0.42971) / 2, abs=1e-3)
    knn = det.with_score("knn")
    assert knn.score_samples(_pixels((0, 255)))[0] == pytest.approx((1.0 - 0.4) / 0.08 ** 0.5, abs=1e-3)
