"""Why an image scored high: heat-maps of where it differs from its nearest normal anchor, and their figure.

Two methods (measured by the pointing game in BENCHMARKS.md):
- ``"gradcam"``: the score is a distance in embedding space, so it is differentiable w.r.t. the input: weight
  each channel of the last feature map by the mean gradient of that distance, sum, keep the positive part
  (Grad-CAM, Selvaraju et al. 2017, with the distance to the nearest anchor in place of a class logit).
- ``"feature-diff"`` (default): at every location, the distance between the image's early, high-resolution
  feature map (``model.local_features``, 14x14 for compact-cnn) and its nearest anchor's, lightly blurred.
  The last map is only 7x7 for a 28x28 input, too coarse to point at a small defect.
Written here because Grad-CAM packages explain a classifier's class score; ours has only a distance to an anchor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn


@dataclass
class Explanation:
    """Per image: ``heatmaps`` (N, H, W) in [0, 1] (1 = most responsible for the distance), ``scores`` (the
    detector's), ``nearest_anchor`` (index into the detector's anchors) and the distance it was taken to."""

    heatmaps: np.ndarray
    scores: np.ndarray
    nearest_anchor: np.ndarray
    nearest_distance: np.ndarray


def distance_gradcam(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Grad-CAM maps ``(N, H, W)`` in [0, 1] of ``||model(x) - targets||`` at the input resolution."""
    model.eval()
    with torch.enable_grad():
        features = model.forward_features(x).detach().requires_grad_(True)
        distance = (model.forward_head(features) - targets).norm(dim=1)
        (grads,) = torch.autograd.grad(distance.sum(), features)
    cam = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * features).sum(1, keepdim=True)).detach()
    cam = nn.functional.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp(min=1e-12)
    return cam / peak[:, None, None]


def _gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(3 * sigma))
    kernel = torch.exp(-torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device) ** 2 / (2 * sigma ** 2))
    kernel = (kernel / kernel.sum()).view(1, 1, 1, -1)
    out = nn.functional.conv2d(maps[:, None], kernel, padding=(0, radius))
    return nn.functional.conv2d(out, kernel.transpose(2, 3), padding=(radius, 0))[:, 0]


@torch.no_grad()
def feature_difference(model: nn.Module, x: torch.Tensor, anchors_x: torch.Tensor) -> torch.Tensor:
    """Maps ``(N, H, W)`` in [0, 1]: per-location distance of ``model.local_features`` of ``x`` and of its
    nearest anchors ``anchors_x``, at the input resolution, blurred by a sigma of 1 px per 28 px of input."""
    model.eval()
    diff = (model.local_features(x) - model.local_features(anchors_x)).norm(dim=1, keepdim=True)
    diff = nn.functional.interpolate(diff, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    diff = _gaussian_blur(diff, max(1.0, max(x.shape[2:]) / 28))
    return diff / diff.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]


EXPLAIN_METHODS = ("feature-diff", "gradcam")


def explanation_figure(image: np.ndarray, heatmap: np.ndarray, anchor_image: np.ndarray, score: float,
                       threshold: float, title: str, path: str | Path | None = None):
    """Image | heat-map overlaid on the image | nearest normal anchor, with the score; saved if ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def show(ax, img):
        img = np.asarray(img)
        ax.imshow(img if img.ndim == 2 else img.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=255)
        ax.axis("off")

    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.9))
    show(axes[0], image)
    axes[0].set_title(title, fontsize=8)
    show(axes[1], image)
    axes[1].imshow(heatmap, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    label = "anomaly" if score > threshold else "normal"
    axes[1].set_title(f"score {score:.3f} ({label})\nthreshold {threshold:.3f}", fontsize=8)
    show(axes[2], anchor_image)
    axes[2].set_title("nearest normal anchor", fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig
