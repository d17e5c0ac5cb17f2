"""Classic detectors on raw pixels, fitted on the normal training images: the bar a learned embedding must clear.

Each returns anomaly scores for ``test`` (higher = more anomalous, as everywhere in metricad).
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest

from metricad.index import ExactIndex


def _flat(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def raw_pixel_knn(normal: np.ndarray, test: np.ndarray, k: int = 1, seed: int = 0) -> np.ndarray:
    """Mean euclidean distance to the k nearest normal images in pixel space."""
    index = ExactIndex()
    index.add(_flat(normal))
    return index.search(_flat(test), k)[0].mean(1).numpy()


def pca_reconstruction(normal: np.ndarray, test: np.ndarray, variance: float = 0.99, seed: int = 0) -> np.ndarray:
    """Squared reconstruction error from the principal components keeping ``variance`` of the normal images."""
    pca = PCA(variance, random_state=seed).fit(_flat(normal))
    x = _flat(test)
    return ((x - pca.inverse_transform(pca.transform(x))) ** 2).sum(1)


def isolation_forest(normal: np.ndarray, test: np.ndarray, seed: int = 0) -> np.ndarray:
    """scikit-learn's Isolation Forest (100 trees); its score_samples is higher for normal, hence the minus."""
    return -IsolationForest(random_state=seed).fit(_flat(normal)).score_samples(_flat(test))


BASELINES = {"raw-pixels 1-NN": raw_pixel_knn, "PCA reconstruction": pca_reconstruction,
             "Isolation Forest": isolation_forest}
