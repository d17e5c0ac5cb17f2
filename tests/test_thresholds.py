import numpy as np
import pytest

from metricad.thresholds import best_f1_threshold, threshold_for


def test_contamination_and_fpr_bound_the_false_positives():
    normal = np.arange(100, dtype=float)  # scores 0..99
    t = threshold_for(normal, np.zeros(100), "contamination", contamination=0.05)
    assert t == 95.0 and np.sum(normal > t) == 4  # at most 5 % flagged
    scores = np.r_[normal, [500.0, 600.0]]
    labels = np.r_[np.zeros(100), [1, 1]]
    t = threshold_for(scores, labels, "fpr", target_fpr=0.10)  # anomalies do not move an FPR threshold
    assert t == 90.0 and np.mean(normal > t) <= 0.10


def test_f1_threshold_on_a_hand_checked_example():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    labels = np.array([0, 0, 1, 0, 1, 1])
    # Flag top 3 (0.4..0.6): TP 2, FP 1, FN 1 -> F1 2/3. Top 4 (0.3..): TP 3, FP 1 -> F1 6/7 (best). Top 2: 0.8.
    assert best_f1_threshold(scores, labels.astype(bool)) == pytest.approx(0.25)
    separable = best_f1_threshold(np.array([1.0, 2.0, 8.0, 9.0]), np.array([False, False, True, True]))
    assert separable == pytest.approx(5.0)


def test_f1_never_cuts_between_tied_scores():
    scores = np.array([1.0, 2.0, 2.0, 3.0])
    t = best_f1_threshold(scores, np.array([False, True, False, True]))
    assert t != 2.0 and np.sum(scores > t) in (1, 3)


@pytest.mark.parametrize("mode, kwargs, message", [
    ("f1", {}, "both kinds"), ("fpr", {"target_fpr": 1.5}, "target_fpr"), ("nope", {}, "must be one of")])
def test_bad_requests_are_clear(mode, kwargs, message):
    with pytest.raises(ValueError, match=message):
        threshold_for(np.arange(5.0), np.zeros(5), mode, **kwargs)
