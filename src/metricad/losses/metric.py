"""pytorch-metric-learning's losses, each fed by its in-batch miner: triplets (batch-all, batch-hard, semi-hard)
and the class-centre losses (ArcFace, CosFace)."""

from __future__ import annotations

import torch
import torch.nn as nn
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from metricad.losses.registry import register_loss


class MinedLoss(nn.Module):
    """A pytorch-metric-learning loss fed by an optional in-batch miner: ``loss(emb, labels, miner(emb, labels))``."""

    def __init__(self, loss: nn.Module, miner: nn.Module | None = None):
        super().__init__()
        self.loss, self.miner = loss, miner

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        tuples = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss(embeddings, labels, tuples)


@register_loss("batch-all", pairs=True)
def batch_all(num_classes, embedding_dim, margin, normal_label):
    """Every valid (anchor, positive, negative), averaged over the non-zero ones."""
    return MinedLoss(pml_losses.TripletMarginLoss(margin=margin))


@register_loss("batch-hard", pairs=True)
def batch_hard(num_classes, embedding_dim, margin, normal_label):
    """The hardest positive and the hardest negative of each anchor."""
    return MinedLoss(pml_losses.TripletMarginLoss(margin=margin), pml_miners.BatchHardMiner())


@register_loss("semi-hard", pairs=True)
def semi_hard(num_classes, embedding_dim, margin, normal_label):
    """Negatives farther than the positive but inside the margin (FaceNet)."""
    return MinedLoss(pml_losses.TripletMarginLoss(margin=margin),
                     pml_miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard"))


@register_loss("arcface", centres=True)
def arcface(num_classes, embedding_dim, margin, normal_label):
    return MinedLoss(pml_losses.ArcFaceLoss(num_classes, embedding_dim))


@register_loss("cosface", centres=True)
def cosface(num_classes, embedding_dim, margin, normal_label):
    return MinedLoss(pml_losses.CosFaceLoss(num_classes, embedding_dim))
