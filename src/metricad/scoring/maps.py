"""Anomaly maps at the model input's resolution: the patch experts' per-patch distances, z-scored like their image
scores, averaged over experts and members, upsampled and Gaussian-smoothed as PatchCore does (``map_sigma``).

Plain torch ops (interpolate, pad, conv2d), so the map is part of the scoring graph and of its ONNX export.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# The Gaussian's sigma as a fraction of the model input's shorter side: 8 pixels at the folder default's 320,
# chosen over 4 (PatchCore's and anomalib's, at 224) and 2 on synthetic defects pasted on held-out ELPV training
# cells (docs/decisions.md, 2026-12-02; benchmarks/map_validation.py). A fraction, so that a 28x28 or a 48x64
# input is not blurred flat by 8 pixels.
MAP_SIGMA_FRACTION = 8.0 / 320


@dataclass(frozen=True)
class MapSmoothing:
    """How a graph's raw patch maps become its anomaly map: where each cell's receptive field is centred
    (``aligned_cells``, ``upsample``) and the Gaussian's sigma as a share of the input's shorter side. A run
    records both and reopens with them, whatever this version's defaults or its model class say."""

    sigma_fraction: float = MAP_SIGMA_FRACTION
    aligned_cells: bool = False

    def __call__(self, maps: torch.Tensor, size) -> torch.Tensor:
        return smooth(maps, size, self.aligned_cells, self.sigma_fraction * min(int(size[0]), int(size[1])))


def map_sigma(size: tuple[int, int]) -> float:
    """The smoothing's sigma in pixels for a model input of ``size``."""
    return MAP_SIGMA_FRACTION * min(int(size[0]), int(size[1]))


def gaussian_kernel(sigma: float, radius: int) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def upsample(maps: torch.Tensor, size: tuple[int, int], aligned: bool) -> torch.Tensor:
    """``(N, C, h, w)`` -> ``(N, C, *size)`` bilinearly, each cell's value placed where its receptive field is
    centred. ``aligned``: cell i is centred on input pixel ``stride * i``, as after convolutions padded
    symmetrically (a stride-2 3x3 convolution with padding 1 centres output j on input 2j; timm's and
    torchvision's networks); else on ``stride * i + (stride - 1) / 2``, as after un-padded 2x2 pooling, which is
    ``interpolate``'s ``align_corners=False``. Measured on EfficientNet-Lite0 at 128 px (sigma 4): a defect
    centred on pixel 63.5 peaked at 76 with every upsampling of the patch path taken the second way, at 69 with
    this one and the patch features' taken the first; only this one is (docs/decisions.md, 2026-12-02)."""
    size = (int(size[0]), int(size[1]))
    if tuple(maps.shape[2:]) == size:
        return maps
    if not aligned:
        return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    height, width = int(maps.shape[2]), int(maps.shape[3])
    # corners on cell centres 0 and stride * (n - 1), then the last stride - 1 pixels repeat the edge (or are cut)
    inner = [int(round(size[0] / height * (height - 1))) + 1, int(round(size[1] / width * (width - 1))) + 1]
    maps = F.interpolate(maps, size=(min(inner[0], size[0]), min(inner[1], size[1])), mode="bilinear",
                         align_corners=True)
    return F.pad(maps, (0, size[1] - int(maps.shape[3]), 0, size[0] - int(maps.shape[2])), mode="replicate")


def smooth(maps: torch.Tensor, size: tuple[int, int], aligned: bool = False, sigma: float | None = None
           ) -> torch.Tensor:
    """``(N, h, w)`` patch maps -> ``(N, H, W)``: ``upsample``d to ``size``, then a separable Gaussian blur of
    ``sigma`` pixels (default ``map_sigma(size)``; reflected edges; the radius, 4 sigma as anomalib's, is cut to
    fit a small input)."""
    size = (int(size[0]), int(size[1]))
    sigma = map_sigma(size) if sigma is None else sigma
    maps = upsample(maps.unsqueeze(1), size, aligned)
    radius = min(int(math.ceil(4 * sigma)), size[0] - 1, size[1] - 1)
    if sigma > 0 and radius > 0:
        kernel = gaussian_kernel(sigma, radius).to(maps)
        maps = F.pad(maps, (radius, radius, radius, radius), mode="reflect")
        maps = F.conv2d(maps, kernel.view(1, 1, 1, -1))
        maps = F.conv2d(maps, kernel.view(1, 1, -1, 1))
    return maps[:, 0]
