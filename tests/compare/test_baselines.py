import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from metricad.compare.baselines import BASELINES, IsolationForestDetector, PCAReconstruction, RawPixelKNN


def raw_pixel_knn(normal, test, k=1):
    return RawPixelKNN(k).fit(normal).score_samples(test)


def pca_reconstruction(normal, test):
    return PCAReconstruction().fit(normal).score_samples(test)


def isolation_forest(normal, test, seed):
    return IsolationForestDetector(seed).fit(normal).score_samples(test)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    normal = rng.integers(0, 30, (200, 28, 28)).astype(np.uint8)
    normal[:, 10:18, 4:24] = 200  # normal images: a horizontal bar
    anomalous = rng.integers(0, 30, (20, 28, 28)).astype(np.uint8)
    anomalous[:, 4:24, 10:18] = 200  # anomalies: a vertical bar
    return normal, anomalous


@pytest.mark.parametrize("name", list(BASELINES))
def test_baselines_score_anomalies_higher(name, data):
    normal, anomalous = data
    scores = BASELINES[name]().fit(normal[:150]).score_samples(np.concatenate([normal[150:], anomalous]))
    assert roc_auc_score(np.r_[np.zeros(50), np.ones(20)], scores) > 0.95


def test_raw_pixel_knn_by_hand():
    normal = np.zeros((2, 2, 2), np.uint8)
    normal[1] = 255
    test = np.full((1, 2, 2), 51, np.uint8)  # 0.2 per pixel: distances 0.4 and 1.6 over 4 pixels
    assert raw_pixel_knn(normal, test)[0] == pytest.approx(0.4)
    assert raw_pixel_knn(normal, test, k=2)[0] == pytest.approx(1.0)


def test_pca_reconstruction_by_hand():
    # Normal images vary along one pixel only: one component explains everything.
    normal = np.zeros((10, 1, 3), np.uint8)
    normal[:, 0, 0] = np.arange(10) * 20
    test = np.zeros((1, 1, 3), np.uint8)
    test[0, 0, 2] = 255  # off the normal subspace by 1.0 in [0, 1] units
    assert pca_reconstruction(normal, test)[0] == pytest.approx(1.0, abs=1e-6)


def test_isolation_forest_honours_its_seed(data):
    normal, anomalous = data
    np.testing.assert_array_equal(isolation_forest(normal, anomalous, seed=1),
                                  isolation_forest(normal, anomalous, seed=1))
    assert not np.array_equal(isolation_forest(normal, anomalous, seed=1), isolation_forest(normal, anomalous, seed=2))


def test_only_the_randomised_baselines_take_a_seed():
    """A deterministic baseline has no seed to ignore: compare fits it once, not once per seed."""
    import inspect

    for name, baseline in BASELINES.items():
        takes_seed = "seed" in inspect.signature(baseline).parameters
        assert takes_seed == (not baseline.deterministic), name
    assert [name for name, b in BASELINES.items() if not b.deterministic] == ["iforest"]
