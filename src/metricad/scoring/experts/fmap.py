"""The k-NN distance of the feature maps, projected to a few dimensions."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from metricad.scoring.experts.base import MAP_DIM, register_expert
from metricad.scoring.experts.knn import KnnDistance


@register_expert("fmap")
class FeatureMapKnn(KnnDistance):
    """k-NN on the mid-level and last feature maps, after PatchCore (Roth et al. 2022): the mid-level map pooled
    to the last map's grid, both averaged over each position's 3x3 neighbourhood and concatenated, flattened,
    then projected to ``dim`` values by a seeded Gaussian random projection (distances kept within a few percent,
    Johnson-Lindenstrauss) so that the anchors' memory and the k-NN cost stay bounded. The maps keep where each
    part of the object sits, which the pooled embedding compresses away."""

    state_keys = ("anchors", "projection")

    @classmethod
    def from_params(cls, k=1, fmap_dim=MAP_DIM, seed=0, index="exact", **_):
        return cls(k, fmap_dim, seed, index)

    def __init__(self, k: int = 1, dim: int = MAP_DIM, seed: int = 0, index: str = "exact"):
        super().__init__(k, index)
        self.dim, self.seed = dim, seed
        self.register_buffer("projection", None)

    def prepare(self, model):
        from sklearn.random_projection import GaussianRandomProjection

        with torch.no_grad():
            example = model.forward_views(torch.zeros(1, model.in_channels, *model.input_size,
                                                      device=next(model.parameters()).device))
        width = self._maps(example).shape[1]
        # sklearn draws the matrix (entries N(0, 1/dim)); fitting reads only the number of columns.
        projection = GaussianRandomProjection(self.dim, random_state=self.seed).fit(np.zeros((1, width)))
        self.projection = torch.as_tensor(projection.components_.T, dtype=torch.float32,
                                          device=example["features"].device).contiguous()

    @staticmethod
    def _maps(views) -> torch.Tensor:
        local, last = views["local"], views["features"]
        # Python ints, so that ONNX gets constant kernel sizes (a model's input size is fixed; only N varies).
        grid = (int(last.shape[2]), int(last.shape[3]))
        if int(local.shape[2]) % grid[0] == 0 and int(local.shape[3]) % grid[1] == 0:
            local = F.avg_pool2d(local, (int(local.shape[2]) // grid[0], int(local.shape[3]) // grid[1]))
        else:
            local = F.adaptive_avg_pool2d(local, grid)
        maps = torch.cat([local, last], 1)
        return F.avg_pool2d(maps, 3, stride=1, padding=1, count_include_pad=False).flatten(1)

    def vectors(self, views):
        return self._maps(views) @ self.projection
