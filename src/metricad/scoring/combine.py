"""One score from several experts: each expert's raw score as a z-score against normal images, a one-sided
expert (``excess-margin``) counted only where it is above its normal mean, then the plain mean over experts.

Equal weights on purpose: with no anomaly to learn weights from, a normalised mean of complementary experts is
the robust choice (docs/decisions.md); the z-scores make experts of different units comparable.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class ZScoreMean(nn.Module):
    """``forward(raw (N, E)) -> (N,)``; ``fit(raw_normal (N, E))`` learns each column's mean and spread."""

    def __init__(self, one_sided: list[bool]):
        super().__init__()
        self.register_buffer("one_sided", torch.tensor(list(one_sided), dtype=torch.bool))
        self.register_buffer("mean", torch.zeros(len(one_sided)))
        self.register_buffer("std", torch.ones(len(one_sided)))

    def fit(self, raw_normal: torch.Tensor) -> "ZScoreMean":
        if raw_normal.ndim != 2 or raw_normal.shape[1] != len(self.one_sided) or len(raw_normal) < 2:
            raise ValueError(f"normalising {len(self.one_sided)} expert score(s) needs at least two normal images, "
                             f"got scores of shape {tuple(raw_normal.shape)}")
        raw_normal = raw_normal.double()  # float64 statistics: z-scores of thousands of float32 scores
        std = raw_normal.std(0, unbiased=False)
        self.mean = raw_normal.mean(0).float().to(self.mean.device)
        self.std = torch.where(std > 0, std, torch.ones_like(std)).float().to(self.std.device)
        return self

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """Each column as the combiner counts it: z-scored, one-sided columns clipped at zero."""
        z = (raw - self.mean) / self.std
        return torch.where(self.one_sided, z.clamp(min=0.0), z)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return self.normalize(raw).mean(1)

    def subset(self, columns: list[int], one_sided: list[bool]) -> "ZScoreMean":
        """The combiner of some columns (with their one-sidedness set anew), keeping their fitted statistics."""
        combiner = ZScoreMean(one_sided).to(self.mean.device)
        combiner.mean, combiner.std = self.mean[columns].clone(), self.std[columns].clone()
        return combiner
