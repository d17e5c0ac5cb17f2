"""Classic detectors on raw pixels, fitted on the normal training images: the bar a learned embedding must clear.

Each is a small estimator: ``fit(normal_images)``, then ``score_samples(images)`` with higher = more anomalous,
as everywhere in metricad. ``deterministic`` ones have no randomness (and no seed); the others honour theirs.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest

from metricad.index import ExactIndex


def _flat(images: np.ndarray) -> np.ndarray:
    return np.asarray(images).reshape(len(images), -1).astype(np.float32) / 255.0


class RawPixelKNN:
    """Mean euclidean distance to the k nearest normal images in pixel space."""

    deterministic = True

    def __init__(self, k: int = 1):
        self.k = k

    def fit(self, normal: np.ndarray) -> "RawPixelKNN":
        self.index_ = ExactIndex()
        self.index_.add(_flat(normal))
        return self

    def score_samples(self, images: np.ndarray) -> np.ndarray:
        return self.index_.search(_flat(images), self.k)[0].mean(1).numpy()


class PCAReconstruction:
    """Squared reconstruction error from the principal components keeping ``variance`` of the normal images (an
    exact SVD; ``metricad.scoring.experts.PixelPCA`` is the same error as an expert of the detector)."""

    deterministic = True

    def __init__(self, variance: float = 0.99):
        self.variance = variance

    def fit(self, normal: np.ndarray) -> "PCAReconstruction":
        self.pca_ = PCA(self.variance, svd_solver="full").fit(_flat(normal))
        return self

    def score_samples(self, images: np.ndarray) -> np.ndarray:
        x = _flat(images)
        return ((x - self.pca_.inverse_transform(self.pca_.transform(x))) ** 2).sum(1)


class IsolationForestDetector:
    """scikit-learn's Isolation Forest (100 trees); its score_samples is higher for normal, hence the minus."""

    deterministic = False

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, normal: np.ndarray) -> "IsolationForestDetector":
        self.forest_ = IsolationForest(random_state=self.seed).fit(_flat(normal))
        return self

    def score_samples(self, images: np.ndarray) -> np.ndarray:
        return -self.forest_.score_samples(_flat(images))


BASELINES = {"raw-pixels": RawPixelKNN, "pca": PCAReconstruction, "iforest": IsolationForestDetector}
