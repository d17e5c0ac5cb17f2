"""Losses by name. Everything but ``seed`` comes from pytorch-metric-learning, combined with its miners."""

from __future__ import annotations

import torch
import torch.nn as nn
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from metricad.losses.one_class import BinaryLoss, DOCLoss
from metricad.losses.seed import SeedTripletLoss
from metricad.recipe import LOSSES, LOSSES_WITH_CENTRES


class MinedLoss(nn.Module):
    """A pytorch-metric-learning loss fed by an optional in-batch miner: ``loss(emb, labels, miner(emb, labels))``."""

    def __init__(self, loss: nn.Module, miner: nn.Module | None = None):
        super().__init__()
        self.loss, self.miner = loss, miner

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        tuples = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss(embeddings, labels, tuples)


def build_loss(name: str, num_classes: int, embedding_dim: int, margin: float = 0.2,
               normal_label: int | None = None) -> nn.Module:
    """Return ``module(embeddings, labels) -> scalar``. ArcFace/CosFace/DOC/binary carry weights: train its
    parameters too. ``doc`` and ``binary`` need ``normal_label``, the label of the normal class."""
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
    if name in ("doc", "binary"):
        if normal_label is None:
            raise ValueError(f"the {name} loss needs the normal class's label")
        if name == "doc":
            if num_classes < 3:
                raise ValueError("the doc loss needs fine labels (its descriptiveness loss classifies the "
                                 "reference classes)")
            return DOCLoss(num_classes, embedding_dim, normal_label)
        return BinaryLoss(embedding_dim, normal_label)
    raise ValueError(f"unknown loss {name!r}; available: {', '.join(LOSSES)}")
