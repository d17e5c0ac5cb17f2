"""Fewer anchors that still cover the normal images: the greedy k-center coreset PatchCore uses for its memory
bank (Roth et al. 2022). Written out because it is a short loop on tensors that neither faiss nor scikit-learn
offers."""

from __future__ import annotations

import numpy as np
import torch


def k_center(points: torch.Tensor, n: int, seed: int = 0, project_to: int | None = None) -> np.ndarray:
    """Indices of ``n`` of ``points`` ``(N, D)``: from a seeded first point, each next one the point farthest from
    those kept (sorted). Memory O(N): one distance per point, updated as points are kept.

    Each step is one matrix-vector product (|p|^2 - 2 p.c + |c|^2), which reads the points once: for a patch bank
    of 300,000 points that read is the whole cost, so ``project_to`` first maps them to that many dimensions by a
    seeded Gaussian random projection (distances kept within a few percent, Johnson-Lindenstrauss), as PatchCore
    does for its coreset."""
    if not 1 <= n <= len(points):
        raise ValueError(f"a coreset of {n} needs between 1 and the {len(points)} points")
    points = points.float()
    if project_to is not None and points.shape[1] > project_to:
        generator = torch.Generator().manual_seed(seed)
        projection = torch.randn(points.shape[1], project_to, generator=generator) / project_to ** 0.5
        points = points @ projection.to(points.device)
    sq_norms = points.pow(2).sum(1)
    kept = [int(np.random.default_rng(seed).integers(len(points)))]
    distance = torch.full((len(points),), float("inf"), device=points.device)
    from metricad.progress import progress

    for _ in progress(range(n - 1), "coreset", unit="point"):
        latest = points[kept[-1]]
        candidate = torch.addmv(sq_norms + sq_norms[kept[-1]], points, latest, alpha=-2.0)
        torch.minimum(distance, candidate, out=distance)
        distance[kept[-1]] = 0.0  # exactly: the expansion may leave a rounding residue on the point itself
        kept.append(int(distance.argmax()))
    return np.sort(np.array(kept))
