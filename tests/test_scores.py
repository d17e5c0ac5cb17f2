import numpy as np
import pytest

from metricad.scores import combine, excess


def test_a_lone_knn_distance_is_the_score_itself():
    knn = np.array([0.5, 2.0])
    assert combine("knn", {"knn": knn}, {"knn": (1.0, 2.0)}) is knn


def test_parts_are_summed_as_z_scores_on_the_anchors():
    parts = {"knn": np.array([1.0, 3.0]), "margin": np.array([-0.4, 0.6])}
    stats = {"knn": (1.0, 0.5), "margin": (0.1, 0.25)}
    # knn z: 0, 4; margin z: -2, 2
    np.testing.assert_allclose(combine("knn+margin", parts, stats), [-2.0, 6.0])
    # the excess rule drops the margin's z-score below the anchors' mean, and keeps it above
    np.testing.assert_allclose(combine("knn+excess-margin", parts, stats), [0.0, 6.0])


def test_excess_is_zero_below_the_mean_only():
    assert excess(np.array([-1.5, 0.0, 0.7])).tolist() == pytest.approx([0.0, 0.0, 0.7])
