"""Losses of the one-class baselines the original compared against, over a batch mixing normal and reference images.

Both take ``(embeddings, labels)`` with **fine** labels and know which label is the normal class, so they plug into
the same training loop as the metric-learning losses. The linear classifier heads they need live in the loss
module (as ArcFace's class weights do) and are trained with the model.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from metricad.losses.registry import register_loss


def compactness_loss(normal_embeddings: torch.Tensor) -> torch.Tensor:
    """DOC's compactness: mean over the batch of ||z_i - mean of the other z_j||^2, divided by the dimension.

    With n embeddings, the mean of the others is (n * mean - z_i) / (n - 1), so z_i minus it equals
    n / (n - 1) * (z_i - mean): no n x n matrix is needed.
    """
    n, dim = normal_embeddings.shape
    if n < 2:
        return normal_embeddings.sum() * 0.0
    centred = normal_embeddings - normal_embeddings.mean(0, keepdim=True)
    return (n / (n - 1)) ** 2 * centred.pow(2).sum(1).mean() / dim


class DOCLoss(nn.Module):
    """Deep One-Class (Perera & Patel): descriptiveness + lambda * compactness.

    Descriptiveness: cross-entropy of a linear classifier over the reference classes, on the reference images of
    the batch. Compactness: ``compactness_loss`` on the normal images of the batch.
    """

    def __init__(self, num_classes: int, embedding_dim: int, normal_label: int, compactness_weight: float = 0.1):
        super().__init__()
        self.normal_label, self.compactness_weight = normal_label, compactness_weight
        self.classifier = nn.Linear(embedding_dim, num_classes)  # the normal class's logit is never a target

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        normal = labels == self.normal_label
        descriptive = (F.cross_entropy(self.classifier(embeddings[~normal]), labels[~normal])
                       if (~normal).any() else embeddings.sum() * 0.0)
        return descriptive + self.compactness_weight * compactness_loss(embeddings[normal])


class BinaryLoss(nn.Module):
    """DOC paper's "Binary" baseline: a logistic classifier, reference (anomalous, 1) vs normal (0).

    ``anomaly_probability`` scores new embeddings with the trained head.
    """

    def __init__(self, embedding_dim: int, normal_label: int):
        super().__init__()
        self.normal_label = normal_label
        self.classifier = nn.Linear(embedding_dim, 1)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        target = (labels != self.normal_label).float()
        return F.binary_cross_entropy_with_logits(self.classifier(embeddings).squeeze(1), target)

    @torch.no_grad()
    def anomaly_probability(self, embeddings: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.classifier(embeddings).squeeze(1))


def _normal_label(name: str, normal_label: int | None) -> int:
    if normal_label is None:
        raise ValueError(f"the {name} loss needs the normal class's label")
    return normal_label


@register_loss("doc")
def doc(num_classes, embedding_dim, margin, normal_label):
    if num_classes < 3:
        raise ValueError("the doc loss needs fine labels (its descriptiveness loss classifies the reference classes)")
    return DOCLoss(num_classes, embedding_dim, _normal_label("doc", normal_label))


@register_loss("binary")
def binary(num_classes, embedding_dim, margin, normal_label):
    return BinaryLoss(embedding_dim, _normal_label("binary", normal_label))
