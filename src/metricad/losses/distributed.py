"""The losses across ranks. A loss on pairs of embeddings must see the global batch: pytorch-metric-learning's
wrappers gather its embeddings (and the miner's) from every rank; the original's all-pairs loss, which is not one
of that library's, gathers them the same way here. A loss on single embeddings (CosFace, ArcFace, DOC, binary)
needs nothing: DistributedDataParallel, which wraps the model and the loss together, averages the gradients of
its parameters (the class centres) with the model's, as the library's maintainers advise."""

from __future__ import annotations

import torch
import torch.nn as nn
from pytorch_metric_learning.utils import distributed as pml_distributed

from metricad.distributed import gather_with_grad, world
from metricad.losses.metric import MinedLoss
from metricad.losses.registry import loss_entry


class GatheredLoss(nn.Module):
    """``loss`` on every rank's embeddings, this rank's keeping their gradient, times the world size: averaged by
    DistributedDataParallel, the gradient of the loss on the global batch."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(gather_with_grad(embeddings), gather_with_grad(labels)) * world()


def for_ranks(criterion: nn.Module, name: str) -> nn.Module:
    """``criterion`` (a ``build_loss`` module) as it must run on one rank of several."""
    if not loss_entry(name).pairs:
        return criterion
    if isinstance(criterion, MinedLoss):  # the library's own wrappers, for its losses and miners
        criterion.loss = pml_distributed.DistributedLossWrapper(criterion.loss)
        if criterion.miner is not None:
            criterion.miner = pml_distributed.DistributedMinerWrapper(criterion.miner)
        return criterion
    return GatheredLoss(criterion)
