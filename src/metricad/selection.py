"""The few-anomaly protocol: a handful of labelled anomalies choose the score and set the threshold.

Opt-in (``--score auto``) and always reported apart from the zero-anomaly default. The validation set is held-out
normal images plus K anomalies (a ``--val-dir`` of defects, or, on Fashion-MNIST, ``--val-anomalies K`` drawn from
the anomaly class's *training* images); it never trains the model and is never a test image. The choice is among
a small fixed list, so that five images cannot overfit it: each candidate's validation AUC, ties to the earlier
candidate (the zero-anomaly default comes first); the threshold is then the best F1 on the same images.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from metricad.scoring.spec import EXPERT_NAMES, ScoreSpec

# Fixed before any run (docs/decisions.md, 2026-11-30); the first is the zero-anomaly default.
CANDIDATES = ("knn+fmap+excess-margin", "knn", "fmap", "margin", "pca", "knn+fmap", "knn+excess-margin",
              "knn+fmap+excess-margin+pca")
UNION = "knn+fmap+margin+pca"  # every expert the candidates read, fitted once
_SPECS = {text: ScoreSpec.parse(text) for text in (*CANDIDATES, UNION)}  # parsed once


def _with_centres(models) -> bool:
    return all(getattr(model, "class_centres", None) is not None for model in models)


def candidates_for(models) -> tuple[str, ...]:
    """The candidates these models can score (the margin experts need class centres)."""
    return tuple(c for c in CANDIDATES if _with_centres(models) or not _SPECS[c].needs_centres)


def union_for(models) -> str:
    """Every expert the candidates for these models read."""
    if _with_centres(models):
        return UNION
    return "+".join(name for name in _SPECS[UNION].names if not EXPERT_NAMES[name].needs_centres)


def select(union, images, is_anomaly, candidates=None) -> tuple[object, dict]:
    """Choose among ``candidates`` by AUC on the labelled validation ``images``; ``union`` is a detector fitted
    with every expert they read. Returns the chosen detector (thresholded at the best validation F1) and what
    was chosen, how, and on how many images."""
    is_anomaly = np.asarray(is_anomaly).astype(np.int64)
    if len(np.unique(is_anomaly)) < 2:
        raise ValueError("--score auto needs validation images of both kinds: normal ones and anomalies (a --val-dir "
                         "with good/ and defect sub-folders, or --val-anomalies K)")
    candidates = candidates or candidates_for(union.models)
    aucs = {}
    for name in candidates:
        aucs[name] = float(roc_auc_score(is_anomaly, union.with_score(name).score_samples(images)))
    chosen = max(candidates, key=lambda name: (aucs[name], -candidates.index(name)))
    detector = union.with_score(chosen).calibrate(images, is_anomaly, mode="f1")
    detector.selection_ = {"protocol": "few labelled anomalies choose", "chosen": chosen, "validation_auc": aucs,
                           "n_normal": int(np.sum(is_anomaly == 0)), "n_anomaly": int(np.sum(is_anomaly == 1)),
                           "threshold": "best F1 on the validation images"}
    return detector, detector.selection_


def few_anomaly_rows(split, scorers: dict, union, ks, draws: int, row: dict, test_scores: dict) -> list[dict]:
    """Every scorer under the few-anomaly protocol on ``split``: for each K in ``ks`` and each of ``draws``
    seeded draws of K training anomalies, the validation set (held-out normals + the K anomalies) sets each
    scorer's threshold (best F1), and, for ``union`` (a metricad detector with every expert), also chooses its
    score (``metricad-auto``). The test images then give the AUC and the F1 at that threshold. ``test_scores``:
    each scorer's scores of the test images, already computed (the draw changes only the threshold)."""
    from metricad.thresholds import best_f1_threshold, is_anomalous

    truth, rows = split.test_is_anomaly.astype(bool), []
    cache = dict(test_scores)
    for k in ks:
        for draw in range(draws):
            images, is_anomaly = split.validation_set(k, seed=draw)
            chosen = {} if union is None else {"metricad-auto": select(union, images, is_anomaly)[0]}
            for name, scorer in (scorers | chosen).items():
                if name in chosen:
                    threshold, key = scorer.offset_, f"auto:{scorer.score}"
                else:
                    threshold = best_f1_threshold(scorer.score_samples(images), is_anomaly.astype(bool))
                    key = name
                if key not in cache:
                    cache[key] = scorer.score_samples(split.test_images)
                flagged = is_anomalous(cache[key], threshold)
                rows.append(row | {"method": name, "K": k, "draw": draw,
                                   "auc": float(roc_auc_score(truth, cache[key])),
                                   "f1": float(2 * np.sum(flagged & truth) / max(flagged.sum() + truth.sum(), 1)),
                                   **({"chosen": scorer.selection_["chosen"]} if name in chosen else {})})
    return rows
