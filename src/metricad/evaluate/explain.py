"""Why an image scored high: heat-maps of where it differs from its nearest normal anchor, and their figure.

Two methods (measured by the pointing game in BENCHMARKS.md):
- ``"gradcam"``: the score is a distance in embedding space, so it is differentiable w.r.t. the input: weight
  each channel of the last feature map by the mean gradient of that distance, sum, keep the positive part
  (Grad-CAM, Selvaraju et al. 2017, with the distance to the nearest anchor in place of a class logit).
- ``"feature-diff"`` (default): at every location, the distance between the image's early, high-resolution
  feature map (``model.forward_local``, 14x14 for compact-cnn) and its nearest anchor's, lightly blurred.
  The last map is only 7x7 for a 28x28 input, too coarse to point at a small defect.
Written here because Grad-CAM packages explain a classifier's class score; ours has only a distance to an anchor.
The nearest anchor is found by the first ensemble member's embedding, whatever experts the score averages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from metricad.index import knn_search
from metricad.recipe import EXPLAIN_METHODS


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
    """Maps ``(N, H, W)`` in [0, 1]: per-location distance of ``model.forward_local`` of ``x`` and of its
    nearest anchors ``anchors_x``, at the input resolution, blurred by a sigma of 1 px per 28 px of input."""
    model.eval()
    diff = (model.forward_local(x) - model.forward_local(anchors_x)).norm(dim=1, keepdim=True)
    diff = nn.functional.interpolate(diff, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    diff = _gaussian_blur(diff, max(1.0, max(x.shape[2:]) / 28))
    return diff / diff.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]




@torch.no_grad()
def _anchor_embeddings(detector) -> torch.Tensor:
    """The first member's anchor embeddings: its knn expert's, or embedded now for a score without one."""
    member = detector.graph_.members[0]
    if "knn" in member.experts:
        return member.experts["knn"].anchors
    x = detector.model_input(detector.anchor_images_)
    return torch.cat([member.model(x[i:i + detector.batch_size].to(detector.device_))
                      for i in range(0, len(x), detector.batch_size)])


def explain(detector, images, method: str = "feature-diff") -> "Explanation":
    """Heat-maps of where each image differs from its nearest normal anchor, with the detector's scores. Runs the
    torch model whatever the detector's runtime."""
    if method not in EXPLAIN_METHODS:
        raise ValueError(f"method must be one of {', '.join(EXPLAIN_METHODS)}, got {method!r}")
    scores = detector.score_samples(images)
    model, device, batch = detector.graph_.members[0].model.eval(), detector.device_, detector.batch_size
    x = detector.model_input(images).to(device)
    anchors = _anchor_embeddings(detector)
    with torch.no_grad():
        distances, indices = knn_search(anchors, model(x), 1)
    nearest = indices[:, 0]
    maps = []
    for i in range(0, len(x), batch):
        part, idx = x[i:i + batch], nearest[i:i + batch]
        if method == "gradcam":
            maps.append(distance_gradcam(model, part, anchors[idx]))
        else:
            anchor_x = detector.model_input(detector.anchor_images_[idx.cpu().numpy()]).to(device)
            maps.append(feature_difference(model, part, anchor_x))
    heatmaps = torch.cat(maps) if maps else torch.empty(0, *detector.input_spec[1])
    return Explanation(heatmaps.cpu().numpy(), scores, nearest.cpu().numpy(), distances[:, 0].cpu().numpy())


def explanation_figure(image: np.ndarray, heatmap: np.ndarray, anchor_image: np.ndarray, score: float,
                       threshold: float, label: str, title: str, path: str | Path | None = None):
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
    axes[1].set_title(f"score {score:.3f} ({label})\nthreshold {threshold:.3f}", fontsize=8)
    show(axes[2], anchor_image)
    axes[2].set_title("nearest normal anchor", fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def explain_files(path, files, out, method: str = "feature-diff", device=None) -> list[str]:
    """One figure per image file (image | heat-map | nearest anchor) and ``explanations.csv`` in ``out``; returns
    the CSV's lines."""
    import matplotlib.pyplot as plt

    from metricad.data import load_images
    from metricad.files import atomic_write, write_text
    from metricad.run import open_run

    detector = open_run(path, device=device).detector
    channels, size = detector.input_spec
    names, images = load_images(files, size, channels)
    explanation = explain(detector, images, method)
    labels = np.where(detector.predict_scores(explanation.scores) == 1, "anomaly", "normal")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["path,score,label,nearest_anchor,figure"]
    for i, name in enumerate(names):
        figure = out / f"{i:04d}-{Path(name.split('[')[0]).stem}.png"
        fig = explanation_figure(images[i], explanation.heatmaps[i],
                                 detector.anchor_images_[explanation.nearest_anchor[i]], explanation.scores[i],
                                 detector.offset_, labels[i], Path(name).name)
        atomic_write(figure, lambda p, fig=fig: fig.savefig(p, format="png", dpi=110))
        plt.close(fig)
        lines.append(f"{name},{explanation.scores[i]:.6f},{labels[i]},{int(explanation.nearest_anchor[i])},{figure}")
    write_text(out / "explanations.csv", "\n".join(lines) + "\n")
    return lines
