"""What every embedding model shares: ``forward = forward_head(forward_features(x))`` and the unit-length option."""

from __future__ import annotations

import torch
import torch.nn as nn


class EmbeddingModel(nn.Module):
    """A subclass builds ``self.features`` and ``self.head`` and defines ``forward_features`` and ``pool`` (the
    last feature map to one vector per image, the head's input)."""

    def __init__(self, embedding_dim: int, in_channels: int, input_size: tuple[int, int], normalize: bool):
        super().__init__()
        self.embedding_dim, self.in_channels, self.input_size = embedding_dim, in_channels, tuple(input_size)
        self.normalize = normalize  # unit-length embeddings: euclidean k-NN then ranks like cosine similarity

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        embedding = self.head(self.pool(features))
        return nn.functional.normalize(embedding, dim=1) if self.normalize else embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
