"""Fewer anchors that still cover the normal images: the greedy k-center coreset PatchCore uses for its memory
bank (Roth et al. 2022). Written out because it is a short loop on tensors that neither faiss nor scikit-learn
offers."""

from __future__ import annotations

import numpy as np
import torch


def k_center(points: torch.Tensor, n: int, seed: int = 0, batch: int = 65536) -> np.ndarray:
    """Indices of ``n`` of ``points`` ``(N, D)``: from a seeded first point, each next one the point farthest from
    those kept (sorted). Memory O(N): one distance per point, updated as points are kept."""
    if not 1 <= n <= len(points):
        raise ValueError(f"a coreset of {n} needs between 1 and the {len(points)} points")
    points = points.float()
    kept = [int(np.random.default_rng(seed).integers(len(points)))]
    distance = torch.full((len(points),), float("inf"), device=points.device)
    for _ in range(n - 1):
        latest = points[kept[-1]]
        for i in range(0, len(points), batch):  # in slices: a million anchors need no N x D temporary
            distance[i:i + batch] = torch.minimum(distance[i:i + batch], (points[i:i + batch] - latest).norm(dim=1))
        kept.append(int(distance.argmax()))
    return np.sort(np.array(kept))
