"""An expert on the raw pixels, whatever the network learned."""

from __future__ import annotations

import torch

from metricad.scoring.experts.base import Expert, register_expert


@register_expert("pca")
class PixelPCA(Expert):
    """Squared reconstruction error of the raw pixels from the normal images' principal components keeping
    ``variance`` of their variance: sees material where no normal image has any, whatever the network learned."""

    uses_model = False
    state_keys = ("mean", "components", "anchor_errors")

    def __init__(self, variance: float = 0.99):
        super().__init__()
        self.variance = variance
        for key in self.state_keys:
            self.register_buffer(key, None)

    def vectors(self, views):
        return views["pixels"].flatten(1)

    def fit(self, model, anchor_vectors):
        from sklearn.decomposition import PCA

        pca = PCA(self.variance, svd_solver="full").fit(anchor_vectors.cpu().numpy())
        device = anchor_vectors.device
        self.mean = torch.as_tensor(pca.mean_, dtype=torch.float32, device=device)
        self.components = torch.as_tensor(pca.components_, dtype=torch.float32, device=device).contiguous()
        with torch.no_grad():
            self.anchor_errors = self.error(anchor_vectors)
        return self

    def error(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - self.mean
        return (centred - (centred @ self.components.T) @ self.components).pow(2).sum(1)

    def forward(self, views):
        return self.error(self.vectors(views))

    def anchor_scores(self):
        return self.anchor_errors
