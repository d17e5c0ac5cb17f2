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


def test_the_tail_threshold_reaches_beyond_the_highest_normal_score():
    """200 exponential normal scores, a 1-in-1000 target: the fitted tail lands near the true quantile (ln 1000);
    the empirical quantile cannot pass the highest score (about 1 in 200), the control that must miss."""
    from metricad.thresholds import tail_threshold

    rng = np.random.default_rng(0)
    samples = [rng.standard_exponential(200) for _ in range(100)]
    tail = np.array([np.exp(-tail_threshold(x, 0.001)) for x in samples])  # the true exceedance at each threshold
    quantile = np.array([np.exp(-np.quantile(x, 0.999, method="higher")) for x in samples])
    assert 0.0007 <= np.median(tail) <= 0.0015
    assert np.median(quantile) > 0.003


def test_the_tail_threshold_falls_back_and_refuses_clearly():
    from metricad.thresholds import refuse_unused_options, tail_threshold

    normal = np.arange(100.0)
    assert tail_threshold(normal, 0.3) == threshold_for(normal, np.zeros(100), "fpr", target_fpr=0.3)
    with pytest.raises(ValueError, match="25 normal images or more, got 20"):
        tail_threshold(np.arange(20.0), 0.01)
    with pytest.raises(ValueError, match="--contamination 0.05: threshold mode 'tail' does not use it"):
        refuse_unused_options("tail", 0.05, None)
    with pytest.raises(ValueError, match="--target-fpr 0.05: threshold mode 'contamination' does not use it"):
        refuse_unused_options(None, None, 0.05)
