"""The patch-level expert (PatchCore, Roth et al. 2022): every patch of an image against a memory bank of normal
patches; the image scores as its worst patch, so a defect covering 1 % of the image is not averaged away.

A patch is a position of the model's ``local`` (stride-8) map with the ``features`` (stride-16) map upsampled
onto it, both averaged over the position's 3x3 neighbourhood (PatchCore's locally aware features). The bank keeps
at most ``bank_size`` of the normal images' patches, chosen by the greedy k-center coreset so that it still
covers them; scoring is one exact nearest-neighbour search per patch (``metricad.index.knn_search``), which the
ONNX graph carries like every other expert. ``anomaly_map`` gives the per-patch distances.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metricad.index import knn_search
from metricad.scoring.coreset import k_center
from metricad.scoring.experts.base import Expert, register_expert

BANK_SIZE = 4096  # default bank: the bundle's batch-1 budget at 224 px on two cores (docs/decisions.md)
CORESET_DIM = 64  # the coreset's distances are taken on a random projection to this many dimensions
SEARCH_BYTES = 256 * 2**20  # the distance matrix of one scoring batch is kept under this


def patch_maps(views) -> torch.Tensor:
    """``(N, C, H, W)``: the local map with the last one upsampled onto it, 3x3-averaged."""
    local, last = views["local"], views["features"]
    size = (int(local.shape[2]), int(local.shape[3]))  # Python ints: constant sizes in the ONNX graph
    # align_corners=False whatever the backbone: the patches the issue-28 default was chosen with (the map's own
    # upsampling to pixels is where cell alignment is corrected, scoring.maps.upsample)
    if tuple(last.shape[2:]) != size:
        last = F.interpolate(last, size=size, mode="bilinear", align_corners=False)
    maps = torch.cat([local, last], 1)
    return F.avg_pool2d(maps, 3, stride=1, padding=1, count_include_pad=False)


@register_expert("patch")
class PatchKnn(Expert):
    has_map = True
    state_keys = ("bank", "grid")  # the bank, and the patch grid (H, W) of the model's input

    @classmethod
    def from_params(cls, bank_size=BANK_SIZE, seed=0, **_):
        return cls(bank_size, seed)

    def __init__(self, bank_size: int = BANK_SIZE, seed: int = 0):
        super().__init__()
        self.bank_size, self.seed = bank_size, seed
        self.register_buffer("bank", None)
        self.register_buffer("grid", None)
        self.register_buffer("bank_sq_norms", None, persistent=False)
        self._anchor_patches = self._owners = None  # kept from fit for anchor_scores only, never saved

    def vectors(self, views):
        return patch_maps(views)

    def fit(self, model, anchor_vectors):
        n_images, channels, height, width = anchor_vectors.shape
        patches = anchor_vectors.permute(0, 2, 3, 1).reshape(-1, channels).float().contiguous()
        owners = torch.arange(n_images, device=patches.device).repeat_interleave(height * width)
        if len(patches) <= self.bank_size:
            keep = torch.arange(len(patches), device=patches.device)
        else:
            keep = torch.as_tensor(k_center(patches, self.bank_size, self.seed, CORESET_DIM), device=patches.device)
        self.bank, self._bank_owners = patches[keep].contiguous(), owners[keep]
        self.bank_sq_norms = self.bank.pow(2).sum(1)
        self.grid = torch.tensor([height, width])
        self._anchor_patches, self._owners = patches, owners
        return self

    def load_fitted_state(self, state):
        super().load_fitted_state(state)
        self.bank_sq_norms = self.bank.pow(2).sum(1)
        return self

    @property
    def max_batch(self) -> int:
        """Images per scoring batch that keep the patch-to-bank distances under ``SEARCH_BYTES``."""
        per_image = int(self.grid.prod()) * len(self.bank) * 4
        return max(1, SEARCH_BYTES // per_image)

    def anomaly_map(self, views) -> torch.Tensor:
        """``(N, H, W)``: each patch's distance to its nearest normal patch in the bank."""
        maps = self.vectors(views)
        n, channels, height, width = maps.shape
        queries = maps.permute(0, 2, 3, 1).reshape(-1, channels)
        distances = knn_search(self.bank, queries, 1, self.bank_sq_norms)[0][:, 0]
        return distances.reshape(n, height, width)

    def score_and_map(self, views):
        maps = self.anomaly_map(views)
        return maps.flatten(1).amax(1), maps

    def forward(self, views):
        return self.score_and_map(views)[0]

    def anchor_maps(self):
        """Each anchor image's patch distances to the bank without that image's own patches, ``(N, h, w)``."""
        if self._anchor_patches is None:
            raise ValueError("the patch expert's anchor scores exist only while it is fitted (hold out normal "
                             "images to normalise a reopened run)")
        height, width = (int(v) for v in self.grid)
        maps = []
        for image in range(int(self._owners.max()) + 1):
            queries = self._anchor_patches[image * height * width:(image + 1) * height * width]
            sq = (queries.pow(2).sum(1, keepdim=True) + self.bank_sq_norms - 2 * queries @ self.bank.T)
            sq = sq.masked_fill((self._bank_owners == image).unsqueeze(0), float("inf"))
            maps.append(sq.min(1).values.clamp_min(0).sqrt().reshape(height, width))
        return torch.stack(maps)

    def anchor_scores(self):
        """Each anchor image's worst patch against the bank without that image's own patches."""
        return self.anchor_maps().flatten(1).amax(1)
