"""Each expert and the combiner, by hand on small examples."""

import numpy as np
import pytest
import torch

from metricad import Detector
from metricad.compare.baselines import PCAReconstruction
from metricad.models import create_model
from metricad.scoring.combine import ZScoreMean
from metricad.scoring.experts import EXPERT_CLASSES, ClassMargin, FeatureMapKnn, KnnDistance, PixelPCA, build_expert
from metricad.scoring.spec import EXPERT_NAMES, ScoreSpec


def test_knn_is_the_mean_distance_to_the_k_nearest_anchors():
    anchors = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [10.0, 10.0]])
    knn = KnnDistance(k=2).fit(None, anchors)
    # (0, 1): distances 1, sqrt(10), 3, ... -> the two nearest 1 and 3.
    assert knn({"embedding": torch.tensor([[0.0, 1.0]])}).item() == pytest.approx(2.0)
    # Each anchor against the others: (0,0): 3 and 4; (3,0): 3 and 5; (0,4): 4 and 5; (10,10): 10.63 and 11.66.
    far = (np.hypot(7, 10) + np.hypot(10, 6)) / 2
    np.testing.assert_allclose(knn.anchor_scores().numpy(), [3.5, 4.0, 4.5, far], rtol=1e-6)


class ShuffledIndex:
    """An approximate index as the detector may meet one: each anchor's own entry comes second or not at all."""

    def __init__(self, anchors):
        self.anchors = anchors

    def search(self, queries, k):
        d = torch.cdist(queries, self.anchors)
        order = d.argsort(1)
        order = torch.cat([order[:, 1:2], order[:, :1], order[:, 2:]], 1)  # the second nearest first
        order[0] = torch.tensor([1, 2, 3, 0])[: order.shape[1]]  # anchor 0 does not find itself among the first
        order = order[:, :k]
        return d.gather(1, order), order


def test_leave_one_out_drops_the_anchor_by_id_whatever_the_index_returns():
    anchors = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [0.0, 2.0]])
    knn = KnnDistance(k=1).fit(None, anchors)
    exact = knn.anchor_scores()
    knn.search_index_ = ShuffledIndex(anchors)
    # Anchor 0's search (k + 1 = 2) returns anchors 1 and 2: nearest other 1. Anchor 1 gets itself second: dropped.
    np.testing.assert_allclose(knn.anchor_scores().numpy(), exact.numpy())
    np.testing.assert_allclose(exact.numpy(), [1.0, 1.0, 4.0, 2.0])


def test_feature_map_expert_pools_concatenates_and_projects():
    torch.manual_seed(0)
    local, last = torch.rand(3, 2, 4, 4), torch.rand(3, 5, 2, 2)
    expert = FeatureMapKnn(k=1, dim=4)
    expert.projection = torch.rand(2 * 4 + 5 * 4, 4)
    vectors = expert.vectors({"local": local, "features": last})
    # The local map averaged over 2x2 blocks to the last map's 2x2 grid; on a 2x2 grid every 3x3 neighbourhood
    # holds all four positions, so each position becomes the map's mean.
    pooled = torch.cat([local.reshape(3, 2, 2, 2, 2, 2).mean((3, 5)), last], 1)
    smoothed = pooled.mean((2, 3), keepdim=True).expand(-1, -1, 2, 2)
    np.testing.assert_allclose(vectors.numpy(), (smoothed.flatten(1) @ expert.projection).numpy(), rtol=1e-5)
    expert.fit(None, vectors[:2])
    assert expert({"local": local[2:], "features": last[2:]}).item() == pytest.approx(
        torch.cdist(vectors[2:], vectors[:2]).min().item(), rel=1e-4)  # the matmul form, float32


def test_feature_map_projection_is_seeded_and_sized_from_the_model():
    model = create_model("compact-cnn", widths=(4, 8, 6), embedding_dim=8)
    a, b, c = FeatureMapKnn(dim=16, seed=1), FeatureMapKnn(dim=16, seed=1), FeatureMapKnn(dim=16, seed=2)
    for expert in (a, b, c):
        expert.prepare(model)
    assert tuple(a.projection.shape) == ((8 + 6) * 7 * 7, 16)  # 28x28 input: both maps on the 7x7 grid
    assert torch.equal(a.projection, b.projection) and not torch.equal(a.projection, c.projection)
    # Gaussian entries of variance 1/dim: distances are kept on average.
    assert a.projection.var().item() == pytest.approx(1 / 16, rel=0.1)


def test_class_margin_is_best_other_cosine_minus_normal_cosine():
    model = torch.nn.Module()
    model.class_centres, model.normal_label = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 1.0]]), 0
    margin = ClassMargin().fit(model, torch.tensor([[1.0, 0.0]]))
    got = margin({"embedding": torch.tensor([[1.0, 0.0], [0.0, 5.0], [1.0, 1.0]])})
    # (1, 0): others 0 and 0.70711, normal 1; (0, 5): others 1 and 0.70711, normal 0; (1, 1): 0.70711 each.
    np.testing.assert_allclose(got.numpy(), [0.70711 - 1.0, 1.0, 1.0 - 0.70711], atol=1e-5)
    np.testing.assert_allclose(margin.anchor_scores().numpy(), [0.70711 - 1.0], atol=1e-5)


def test_pixel_pca_is_the_baselines_reconstruction_error():
    rng = np.random.default_rng(0)
    normal = rng.integers(0, 80, (60, 6, 6)).astype(np.uint8)
    queries = rng.integers(0, 255, (5, 6, 6)).astype(np.uint8)
    pixels = lambda x: torch.from_numpy(x).float().div(255).unsqueeze(1)  # noqa: E731 - the model input
    expert = PixelPCA().fit(None, pixels(normal).flatten(1))
    np.testing.assert_allclose(expert({"pixels": pixels(queries)}).numpy(),
                               PCAReconstruction().fit(normal).score_samples(queries), rtol=1e-4)


def test_combiner_z_scores_clips_one_sided_columns_and_averages():
    combiner = ZScoreMean([False, True]).fit(torch.tensor([[1.0, 0.0], [3.0, 2.0]]))  # means 2, 1; stds 1, 1
    got = combiner(torch.tensor([[2.0, -3.0], [4.0, 5.0]]))
    # row 1: z 0 and -4 (clipped to 0) -> 0; row 2: z 2 and 4 -> 3
    np.testing.assert_allclose(got.numpy(), [0.0, 3.0])
    constant = ZScoreMean([False]).fit(torch.tensor([[5.0], [5.0]]))
    assert constant.std.item() == 1.0  # a constant column is centred, not divided by zero
    with pytest.raises(ValueError, match="at least two normal images"):
        ZScoreMean([False]).fit(torch.tensor([[1.0]]))


def test_a_score_spec_is_parsed_once_into_what_it_reads():
    spec = ScoreSpec.parse("knn+fmap+excess-margin")
    assert spec.names == ("knn", "fmap", "excess-margin") and str(spec) == "knn+fmap+excess-margin"
    assert spec.keys == ("knn", "fmap", "margin") and spec.one_sided == (False, False, True) and spec.needs_centres
    assert not ScoreSpec.parse("knn+pca").needs_centres
    # Two members, fitted experts laid out as [knn, margin, fmap, pca] each: where knn, fmap, margin sit.
    assert spec.columns(["knn", "margin", "fmap", "pca"], 2) == [0, 2, 1, 4, 6, 5]
    for bad, message in (("knn+nope", "unknown expert"), ("knn+knn", "twice"), ("margin+excess-margin", "twice"),
                         ("", "expert names")):
        with pytest.raises(ValueError, match=message):
            ScoreSpec.parse(bad)


def test_every_declared_name_reads_a_registered_expert():
    assert {name.reads for name in EXPERT_NAMES.values()} == set(EXPERT_CLASSES)
    assert isinstance(build_expert(ScoreSpec.parse("excess-margin").keys[0]), ClassMargin)
    assert all(build_expert(key).name == key for key in EXPERT_CLASSES)
    with pytest.raises(ValueError, match="unknown expert 'nope'"):
        build_expert("nope")


def test_an_approximate_index_scores_like_the_exact_one_through_the_detector():
    pytest.importorskip("faiss")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    normal = rng.integers(0, 60, (300, 28, 28)).astype(np.uint8)
    queries = rng.integers(0, 255, (20, 28, 28)).astype(np.uint8)
    model = create_model("compact-cnn", widths=(4, 4, 4), embedding_dim=8)
    exact = Detector(model, score="knn", device="cpu").fit(normal)
    for index in ("faiss-ivf", "faiss-hnsw"):
        approximate = Detector(model, score="knn", index=index, device="cpu").fit(normal)
        np.testing.assert_allclose(approximate.score_samples(queries), exact.score_samples(queries), rtol=1e-3,
                                   atol=1e-3)
        assert approximate.offset_ == pytest.approx(exact.offset_, rel=1e-3)
