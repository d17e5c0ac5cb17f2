"""The one timing loop of every speed figure (``metricad benchmark``, ``metricad compare``, reproduce)."""

from __future__ import annotations

import time

import numpy as np


def time_scoring(scorer, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, float]:
    """Score ``images`` in consecutive batches as a camera loop would; return the scores and the wall seconds.

    Timed per batch: preprocessing, the model(s) and every expert, k-NN included. One untimed batch warms up
    first. ``scorer``: anything with ``score_samples(images)``."""
    scorer.score_samples(images[:batch_size])
    scores, start = [], time.perf_counter()
    for i in range(0, len(images), batch_size):
        scores.append(np.asarray(scorer.score_samples(images[i:i + batch_size])))
    return np.concatenate(scores), time.perf_counter() - start


def ms_per_image(scorer, images: np.ndarray, batch_size: int) -> float:
    return 1000.0 * time_scoring(scorer, images, batch_size)[1] / len(images)
