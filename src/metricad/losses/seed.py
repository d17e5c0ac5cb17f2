"""The original post's triplet loss, computed exactly in O((P + N) log N) instead of O(P * N).

Over a batch: squared euclidean distances between all ordered pairs; every same-label pair (the diagonal
included, as the original did) is a positive, every different-label pair a negative, and the loss is the mean
over all (positive, negative) combinations of ``max(d_pos - d_neg + margin, 0)``. No library implements this
all-pairs-against-all-pairs form (pytorch-metric-learning's triplets share an anchor), hence this module.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from metricad.losses.registry import register_loss


def _pair_distances(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Gram form |a|^2 + |b|^2 - 2ab: one matmul instead of a B x B x D difference tensor. The diagonal is set to
    # an exact zero (no gradient), as the difference form gives it.
    sq_norms = embeddings.pow(2).sum(1)
    sq_dist = (sq_norms.unsqueeze(0) + sq_norms.unsqueeze(1) - 2.0 * embeddings @ embeddings.T).clamp(min=0.0)
    sq_dist = sq_dist.masked_fill(torch.eye(len(embeddings), dtype=torch.bool, device=embeddings.device), 0.0)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    return sq_dist[same], sq_dist[~same]


def seed_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """The loss value, differentiable, without materialising the P x N matrix.

    For a positive p, the negatives n with n < p + margin contribute ``(p + margin) - n`` each; with the
    negatives sorted, their count is a searchsorted and their sum a prefix sum. Autograd through the sort,
    cumulative sum and gather gives exactly the brute-force gradient.
    """
    pos, neg = _pair_distances(embeddings, labels)
    if pos.numel() == 0 or neg.numel() == 0:
        return embeddings.sum() * 0.0  # a batch of one label has no triplet
    neg_sorted, _ = torch.sort(neg)
    prefix = torch.cat([neg_sorted.new_zeros(1), torch.cumsum(neg_sorted, 0)])
    threshold = pos + margin
    count = torch.searchsorted(neg_sorted.detach(), threshold.detach())  # negatives strictly below p + margin
    total = (count.to(pos.dtype) * threshold - prefix[count]).sum()
    return total / (pos.numel() * neg.numel())


def seed_triplet_loss_bruteforce(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """The same loss by its definition (the P x N matrix): the reference for tests and benchmarks."""
    pos, neg = _pair_distances(embeddings, labels)
    if pos.numel() == 0 or neg.numel() == 0:
        return embeddings.sum() * 0.0
    return torch.clamp(pos.unsqueeze(1) - neg.unsqueeze(0) + margin, min=0.0).mean()


class SeedTripletLoss(nn.Module):
    def __init__(self, margin: float = 0.2):
        super().__init__()
        self.margin = margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return seed_triplet_loss(embeddings, labels, self.margin)


@register_loss("seed", pairs=True)
def seed(num_classes, embedding_dim, margin, normal_label):
    return SeedTripletLoss(margin)
