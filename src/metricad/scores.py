"""A detector's score from its parts: the score names, and the one rule that sums the parts.

Parts: ``knn`` (the mean distance to the k nearest anchors) and, for the margin scores, ``margin`` (the class
margin of ``class_margin``). Higher = more anomalous for every part and every score.
"""

from __future__ import annotations

import numpy as np

SCORES = ("knn", "knn+margin", "knn+excess-margin")
MARGIN_SCORES = ("knn+margin", "knn+excess-margin")  # the scores that need the training loss's class centres


def excess(margin_z: np.ndarray) -> np.ndarray:
    """The z-scored margin where it is above the anchors' mean, else 0.

    A margin below the mean says "clearly the normal class", but so can an unseen anomaly the classifier takes
    for the normal class (a boot for a sneaker): it must not cancel the k-NN distance. Chosen on the validation
    suite (BENCHMARKS.md section 2d)."""
    return np.maximum(margin_z, 0.0)


def combine(score: str, parts: dict[str, np.ndarray], stats: dict[str, tuple[float, float]]) -> np.ndarray:
    """Score ``score`` from its ``parts``: a lone k-NN distance as it is; several parts as the sum of their
    z-scores, each by its ``(mean, std)`` on the anchors in ``stats`` (so that no part dominates)."""
    if len(parts) == 1:
        return parts["knn"]
    z = {name: (values - stats[name][0]) / stats[name][1] for name, values in parts.items()}
    if score == "knn+excess-margin":
        z["margin"] = excess(z["margin"])
    return sum(z.values())
