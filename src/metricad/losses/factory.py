"""Losses by name. Everything but ``seed`` comes from pytorch-metric-learning, combined with its miners."""

from __future__ import annotations

import torch
import torch.nn as nn
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from metricad.losses.seed import SeedTripletLoss

LOSSES = ("seed", "batch-all", "batch-hard", "semi-hard", "arcface", "cosface")


class MinedLoss(nn.Module):
    """A pytorch-metric-learning loss fed by an optional in-batch miner: ``loss(emb, labels, miner(emb, labels))``."""

    def __init__(self, loss: nn.Module, miner: nn.Module | None = None):
        super().__init__()
        self.loss, self.miner = loss, miner

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        tuples = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss(embeddings, labels, tuples)


def build_loss(name: str, num_classes: int, embedding_dim: int, margin: float = 0.2) -> nn.Module:
    """Return ``module(embeddings, labels) -> scalar``. ArcFace/CosFace carry class weights: train its parameters."""
    if name == "seed":
        return SeedTripletLoss(margin)
    if name == "batch-all":  # every valid (anchor, positive, negative), averaged over the non-zero ones
        return MinedLoss(pml_losses.TripletMarginLoss(margin=margin))
    if name == "batch-hard":  # hardest positive and hardest negative per anchor
        return MinedLoss(pml_losses.TripletMarginLoss(margin=margin), pml_miners.BatchHardMiner())
    if name == "semi-hard":  # negatives farther than the positive but inside the margin (FaceNet)
        return MinedLoss(pml_losses.TripletMarginLoss(margin=margin),
                         pml_miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard"))
    if name == "arcface":
        return MinedLoss(pml_losses.ArcFaceLoss(num_classes, embedding_dim))
    if name == "cosface":
        return MinedLoss(pml_losses.CosFaceLoss(num_classes, embedding_dim))
    raise ValueError(f"unknown loss {name!r}; available: {', '.join(LOSSES)}")
