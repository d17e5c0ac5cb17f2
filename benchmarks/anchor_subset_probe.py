"""Fewer anchors, on the validation suite: random subsets and a k-center (greedy coreset) subset.

    .venv/bin/python benchmarks/anchor_subset_probe.py runs/suite-v5/*-val*.npz

Reads the probes ``recipe_probes.py --save`` wrote (unit-length embeddings of the anchors and the validation
images) and prints the 1-NN AUC with all anchors, with random subsets (mean over 3 draws) and with a k-center
subset of each size, one JSON line per probe, then the means.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from recipe_probes import nearest_distance
from sklearn.metrics import roc_auc_score

SIZES = (50, 200, 1000)


def k_center(points: torch.Tensor, n: int, seed: int = 0) -> np.ndarray:
    """Greedy k-center (PatchCore's coreset): each next anchor is the point farthest from those kept.
    Written out because it is a ten-line loop; no library here offers it for plain tensors."""
    kept = [int(np.random.default_rng(seed).integers(len(points)))]
    distance = torch.cdist(points, points[kept]).squeeze(1)
    for _ in range(n - 1):
        kept.append(int(distance.argmax()))
        distance = torch.minimum(distance, torch.cdist(points, points[kept[-1:]]).squeeze(1))
    return np.array(kept)


def subset_aucs(anchors: torch.Tensor, test: torch.Tensor, is_anomaly: np.ndarray) -> dict:
    def auc(keep):
        return float(roc_auc_score(is_anomaly, nearest_distance(anchors[keep], test)))

    result = {"all": auc(np.arange(len(anchors)))}
    for n in SIZES:
        draws = [np.random.default_rng(i).choice(len(anchors), n, replace=False) for i in range(3)]
        result[f"random{n}"] = float(np.mean([auc(keep) for keep in draws]))
        result[f"kcenter{n}"] = auc(k_center(anchors, n))
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("probes", nargs="+", type=Path, help=".npz files written by recipe_probes.py --save")
    results = []
    for path in parser.parse_args().probes:
        with np.load(path) as saved:
            anchors, test = (torch.nn.functional.normalize(torch.as_tensor(saved[f"raw_{key}"]), dim=1)
                             for key in ("anchors", "test"))
            results.append(subset_aucs(anchors, test, saved["is_anomaly"]))
        print(json.dumps({"file": path.name, **{k: round(v, 4) for k, v in results[-1].items()}}))
    print(json.dumps({"mean": {k: round(float(np.mean([r[k] for r in results])), 4) for k in results[0]}}))


if __name__ == "__main__":
    main()
