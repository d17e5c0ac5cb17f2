"""metricad's CPU-fast default: three conv blocks at full, half and quarter resolution, then a linear head.

About 7 MFLOP per 28x28 image (the original MobileNetV2 on upsampled input is about 99), so it trains in
minutes on two CPU cores. The head flattens the last feature map instead of average-pooling it, so that the
embedding keeps where each part of a centred, aligned object sits (a choice first made on the sneaker-vs-boot
test split; docs/decisions.md).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from metricad.models.base import EmbeddingModel
from metricad.models.registry import register_model


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@register_model("compact-cnn")
class CompactCNN(EmbeddingModel):
    local_depth = 3  # blocks 1-2: the half-resolution map (14x14 for 28x28); the last map is (w3, H/4, W/4)

    def __init__(self, embedding_dim: int = 128, in_channels: int = 1, widths=(32, 64, 64),
                 input_size: tuple[int, int] = (28, 28), normalize: bool = False, num_classes: int = 0,
                 normal_label: int | None = None):
        super().__init__(embedding_dim, in_channels, input_size, normalize, num_classes, normal_label)
        self.widths = tuple(widths)
        w1, w2, w3 = widths
        self.features = nn.Sequential(
            _conv_block(in_channels, w1), nn.MaxPool2d(2),
            _conv_block(w1, w2), nn.MaxPool2d(2),
            _conv_block(w2, w3),
        )
        h, w = input_size[0] // 4, input_size[1] // 4
        self.head = nn.Linear(w3 * h * w, embedding_dim)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return features.flatten(1)  # no pooling: where a part sits counts (module docstring)

    def build_kwargs(self) -> dict:
        return {"embedding_dim": self.embedding_dim, "in_channels": self.in_channels, "widths": list(self.widths),
                "input_size": list(self.input_size), "normalize": self.normalize}
